# ZCL Smart Energy Prepayment cluster (0x0705): the two frames a PPMID needs to apply a UTRN
# at the ESME (GBCS PECS01): Consumer Top Up (client -> server, the PPMID to the meter) and
# Consumer Top Up Response (server -> client). Pure codec, no I/O; loaded only with the
# first top-up (ppmid.relay.topups). Frame layouts and result codes: docs/utrn.md.
import struct
from micropython import const

from ppmid.zigbee.tunnel import zcl_header, parse_zcl, FC_SERVER_TO_CLIENT, ZclError, E_ZCL

CLUSTER_PREPAYMENT = const(0x0705)
CONSUMER_TOP_UP = const(0x04)           # client -> server command id
CONSUMER_TOP_UP_RESPONSE = const(0x03)  # server -> client command id
# ZCL general (profile-wide) command a device answers a command it did not carry out with,
# even when the sender set "disable default response": command id u8, status enum8
DEFAULT_RESPONSE = const(0x0B)
ZCL_SUCCESS = const(0x00)

# Originating Device (enum8): who keyed the code. A PPMID is an in-home display device.
ORIGIN_ESI = const(0x00)
ORIGIN_METER = const(0x01)
ORIGIN_IHD = const(0x02)

# Result Type (enum8) of the response
RESULT_ACCEPTED = const(0x00)
RESULT_INVALID = const(0x01)
RESULT_DUPLICATE = const(0x02)
RESULT_ERROR = const(0x03)
RESULT_MAX_CREDIT = const(0x04)
RESULT_KEYPAD_LOCK = const(0x05)
RESULT_TOO_LARGE = const(0x06)
RESULT_ACCEPTED_SUPPLY_ENABLED = const(0x10)
RESULT_ACCEPTED_SUPPLY_DISABLED = const(0x11)
RESULT_ACCEPTED_SUPPLY_ARMED = const(0x12)

# accepted results -> the supply state they report (None: not reported)
SUPPLY = {RESULT_ACCEPTED: None, RESULT_ACCEPTED_SUPPLY_ENABLED: "enabled",
          RESULT_ACCEPTED_SUPPLY_DISABLED: "disabled", RESULT_ACCEPTED_SUPPLY_ARMED: "armed"}

SOURCES = ("esi", "meter", "ihd")  # Source of Top Up (enum8, the Originating Device values)

_RESPONSE_LEN = const(10)   # result u8, value s32, source u8, credit remaining s32


def consumer_top_up(seq, code, origin=ORIGIN_IHD):
    """The Consumer Top Up frame: ZCL header (cluster specific, client to server; the
    meter's answer is its response command, so no Default Response is asked for), then
    Originating Device and the Top Up Code as an octet string (length byte, the bytes)."""
    code = bytes(code)
    if not 1 <= len(code) <= 254:
        raise ZclError(E_ZCL, "top up code of %d bytes does not fit an octet string" % len(code))
    return zcl_header(seq, CONSUMER_TOP_UP, False) + bytes((origin, len(code))) + code


class TopUpResponse:
    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, seq, result, value, source, credit):
        self.seq = seq
        self.result = result
        self.value = value       # top up value, in the meter's currency unit (int32)
        self.source = source     # Source of Top Up enum8
        self.credit = credit     # credit remaining after it (int32, may be negative)

    def accepted(self):
        return self.result in SUPPLY


def parse_response(frame):
    """A Consumer Top Up Response frame -> TopUpResponse, or ZclError (E_ZCL) when the
    frame is not one (wrong direction or command, truncated)."""
    fc, manu, seq, cmd, p = parse_zcl(frame)
    if fc & 0x03 != 0x01 or not fc & FC_SERVER_TO_CLIENT or cmd != CONSUMER_TOP_UP_RESPONSE:
        raise ZclError(E_ZCL, "not a Consumer Top Up Response (frame control 0x%02X, command 0x%02X)" % (fc, cmd))
    if len(p) < _RESPONSE_LEN:
        raise ZclError(E_ZCL, "Consumer Top Up Response truncated (%d bytes of %d)" % (len(p), _RESPONSE_LEN))
    result, value, source, credit = struct.unpack_from("<BiBi", p, 0)
    return TopUpResponse(seq, result, value, source, credit)


def parse_default_response(frame):
    """A ZCL Default Response from the server side -> (seq, command id, status), or
    ZclError (E_ZCL) when the frame is not one (cluster specific, manufacturer specific,
    wrong direction or command, shorter than its two fields)."""
    fc, manu, seq, cmd, p = parse_zcl(frame)
    if fc & 0x03 != 0x00 or manu is not None or not fc & FC_SERVER_TO_CLIENT or cmd != DEFAULT_RESPONSE:
        raise ZclError(E_ZCL, "not a Default Response (frame control 0x%02X, command 0x%02X)" % (fc, cmd))
    if len(p) < 2:
        raise ZclError(E_ZCL, "Default Response truncated (%d bytes of 2)" % len(p))
    return seq, p[0], p[1]


def default_response(seq, command, status):
    """A server's Default Response (the emulated ESME's refusal, and tests)."""
    # frame control 0x18: general command, server to client, no Default Response to it
    return bytes((0x18, seq & 0xFF, DEFAULT_RESPONSE, command, status))


def consumer_top_up_response(seq, result, value, source, credit):
    """The meter's answer (the emulated ESME and tests build it)."""
    return zcl_header(seq, CONSUMER_TOP_UP_RESPONSE, True) + struct.pack("<BiBi", result, value, source, credit)


def parse_request(frame):
    """A Consumer Top Up frame -> (seq, origin, code bytes); the meter's side."""
    fc, manu, seq, cmd, p = parse_zcl(frame)
    if fc & 0x03 != 0x01 or fc & FC_SERVER_TO_CLIENT or cmd != CONSUMER_TOP_UP:
        raise ZclError(E_ZCL, "not a Consumer Top Up (frame control 0x%02X, command 0x%02X)" % (fc, cmd))
    if len(p) < 2 or len(p) < 2 + p[1]:
        raise ZclError(E_ZCL, "Consumer Top Up truncated")
    return seq, p[0], bytes(p[2:2 + p[1]])

