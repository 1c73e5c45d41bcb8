# ZCL Time cluster (0x000A): the two frames a PPMID needs to take the HAN's time from the
# Communications Hub, the HAN's time source (docs/platform.md "Clock"): a Read Attributes
# of Time (UTCTime, seconds since 2000-01-01 00:00 UTC) and TimeStatus (bitmap8), and the
# CH's Read Attributes Response. Pure codec, no I/O: the gateway's side (read_time,
# parse_time) is loaded for each read of the CH's clock (ppmid.zigbee.chclock) and dropped
# after it; the emulated CH and tests build the other side (parse_read, time_response).
import struct
from micropython import const

from ppmid.zigbee.tunnel import ZclError, E_ZCL

CLUSTER_TIME = const(0x000A)
ATTR_TIME = const(0x0000)
ATTR_TIME_STATUS = const(0x0001)
# TimeStatus bits
MASTER = const(0x01)            # the server's clock is set from an outside standard
SYNCHRONIZED = const(0x02)      # the server's clock is synchronised with the network's master
MASTER_ZONE_DST = const(0x04)
SUPERSEDING = const(0x08)

READ_ATTRIBUTES = const(0x00)
READ_ATTRIBUTES_RESPONSE = const(0x01)
STATUS_SUCCESS = const(0x00)
STATUS_UNSUPPORTED_ATTRIBUTE = const(0x86)
TYPE_BITMAP8 = const(0x18)
TYPE_UTC = const(0xE2)
TIME_INVALID = const(0xFFFFFFFF)   # the Time attribute's "not set" value

# frame control: a global command (frame type 0), no manufacturer code; the server's answer
# has the direction bit; ours asks for no Default Response (the response is the answer)
_FC_MANUFACTURER = const(0x04)
_FC_SERVER_TO_CLIENT = const(0x08)
_FC_DISABLE_DEFAULT_RESPONSE = const(0x10)
_FC_FRAME_TYPE = const(0x03)


def read_time(seq):
    """Read Attributes of Time and TimeStatus, client to server."""
    return struct.pack("<BBBHH", _FC_DISABLE_DEFAULT_RESPONSE, seq & 0xFF, READ_ATTRIBUTES, ATTR_TIME,
                       ATTR_TIME_STATUS)


def parse_time(frame, seq):
    """The CH's answer to read_time(seq) -> (Time, TimeStatus): ZCL seconds since 2000 and
    the status bits. ZclError (E_ZCL) saying why when it is not a well-formed Read
    Attributes Response to that request with status SUCCESS for both attributes."""
    n = len(frame)
    if n < 3:
        raise ZclError(E_ZCL, "ZCL frame too short (%d bytes)" % n)
    fc = frame[0]
    if fc & _FC_FRAME_TYPE or fc & _FC_MANUFACTURER or not fc & _FC_SERVER_TO_CLIENT:
        raise ZclError(E_ZCL, "not a server's global command (frame control 0x%02X)" % fc)
    if frame[2] != READ_ATTRIBUTES_RESPONSE:
        raise ZclError(E_ZCL, "not a Read Attributes Response (command 0x%02X)" % frame[2])
    if frame[1] != seq & 0xFF:
        raise ZclError(E_ZCL, "answers another request (sequence %d, ours %d)" % (frame[1], seq & 0xFF))
    got = {}
    i = 3
    while i < n:
        if i + 3 > n:
            raise ZclError(E_ZCL, "attribute record truncated at byte %d" % i)
        attr, status = struct.unpack_from("<HB", frame, i)
        i += 3
        if attr in got or attr not in (ATTR_TIME, ATTR_TIME_STATUS):
            raise ZclError(E_ZCL, "attribute 0x%04X was not asked for once" % attr)
        if status != STATUS_SUCCESS:
            raise ZclError(E_ZCL, "attribute 0x%04X read failed (status 0x%02X)" % (attr, status))
        want, size = (TYPE_UTC, 4) if attr == ATTR_TIME else (TYPE_BITMAP8, 1)
        if i + 1 + size > n:
            raise ZclError(E_ZCL, "attribute 0x%04X truncated" % attr)
        if frame[i] != want:
            raise ZclError(E_ZCL, "attribute 0x%04X has type 0x%02X, not 0x%02X" % (attr, frame[i], want))
        got[attr] = struct.unpack_from("<I" if size == 4 else "<B", frame, i + 1)[0]
        i += 1 + size
    if len(got) != 2:
        raise ZclError(E_ZCL, "the answer lacks %s" % ("Time" if ATTR_TIME not in got else "TimeStatus"))
    if got[ATTR_TIME] == TIME_INVALID:
        raise ZclError(E_ZCL, "the CH's Time is not set (0xFFFFFFFF)")
    return got[ATTR_TIME], got[ATTR_TIME_STATUS]


# ---- the server's side: the emulated CH and tests --------------------------------------
def parse_read(frame):
    """A Read Attributes request -> (seq, [attribute ids]); ZclError when it is not one."""
    if len(frame) < 3 or frame[0] & (_FC_FRAME_TYPE | _FC_MANUFACTURER | _FC_SERVER_TO_CLIENT) \
            or frame[2] != READ_ATTRIBUTES or (len(frame) - 3) % 2:
        raise ZclError(E_ZCL, "not a Read Attributes request")
    return frame[1], [struct.unpack_from("<H", frame, i)[0] for i in range(3, len(frame), 2)]


def time_response(seq, zcl_time, time_status, attrs=(ATTR_TIME, ATTR_TIME_STATUS), status=STATUS_SUCCESS):
    """A Read Attributes Response with the records for attrs: value records when status is
    SUCCESS, status-only records (as for an unsupported attribute) otherwise."""
    out = bytearray((_FC_SERVER_TO_CLIENT | _FC_DISABLE_DEFAULT_RESPONSE, seq & 0xFF, READ_ATTRIBUTES_RESPONSE))
    for a in attrs:
        out += struct.pack("<HB", a, status)
        if status == STATUS_SUCCESS:
            if a == ATTR_TIME:
                out += struct.pack("<BI", TYPE_UTC, zcl_time)
            elif a == ATTR_TIME_STATUS:
                out += struct.pack("<BB", TYPE_BITMAP8, time_status)
    return bytes(out)
