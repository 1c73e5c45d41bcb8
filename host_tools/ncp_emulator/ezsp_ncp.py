"""The NCP's half of the EZSP frame layouts: what a module sends (responses, callbacks)
and how it reads the gateway's sendUnicast, plus the policy ids and decisions only the
emulated module acts on. The gateway's half (what it sends and parses) is
firmware/ppmid/zigbee/ezsp.py, whose constants and helpers this module reuses.

Kept to plain `struct` code that MicroPython also runs: tests/firmware/test_zigbee_ezsp.py
and bench/bench_zigbee.py load this file into the unix port to check and time the firmware
against it."""
import struct

from ppmid.zigbee import ezsp as E

SET_POLICY = 0x0055
GET_POLICY = 0x0056

# The frame ids, frame-control bits and values of the gateway's half that only one firmware
# module reads or writes: private consts there, ezsp.py's or (the bring-up's commands)
# zigbee/han_start.py's (a public one is a name and a module-dict entry the running app
# holds for nothing: docs/memory.md, session 11), so the NCP's side names them here, with
# the same values (tests/test_ncp_emulator.py checks them against the firmware's).
VERSION = 0x0000
NETWORK_INIT = 0x0017
NETWORK_STATE = 0x0018
MAXIMUM_PAYLOAD_LENGTH = 0x0033
JOINED_NETWORK = 2             # networkState's answer: joined
SEND_UNICAST = 0x0034
SEND_REPLY = 0x0039
INVALID_COMMAND = 0x0058
FC_RESPONSE = 0x80             # frame control, low byte: a response (or a callback)
FC_HIGH = 0x01                 # frame control, high byte: frame format version 1
OUTGOING_DIRECT = 0
# the callbacks and APS options only the HAN (zigbee/han.py) takes or sets: its private consts
MESSAGE_SENT_HANDLER = 0x003F
INCOMING_MESSAGE_HANDLER = 0x0045
APS_ENCRYPTED = 0x0020         # EmberApsOption APS_OPTION_ENCRYPTION
APS_RETRY = 0x0040             # APS_OPTION_RETRY
APS_ROUTE_DISCOVERY = 0x0100   # APS_OPTION_ENABLE_ROUTE_DISCOVERY
APS_FRAGMENT = 0x8000          # APS_OPTION_FRAGMENT
# stackStatusHandler's status: EmberStatus before v14, sl_Status from v14
EMBER_NETWORK_UP = 0x90
EMBER_NETWORK_DOWN = 0x91
SL_NETWORK_UP = 0x15
SL_NETWORK_DOWN = 0x16

# EzspPolicyId / EzspDecisionId (UG100). An NCP's power-on decision for this policy is
# "tag only": messageSentHandler then carries messageLength 0 and no contents (what the
# gateway expects; it never needs the contents back, only the tag and status).
POLICY_MESSAGE_CONTENTS_IN_CALLBACK = 0x04
DECISION_MESSAGE_TAG_ONLY = 0x40
DECISION_MESSAGE_TAG_AND_CONTENTS = 0x41


def response_frame(seq, frame_id, params=b"", callback=0):
    """A frame from the NCP: callback 0 (a response), 0x08 or 0x10 (a callback)."""
    return bytes((seq & 0xFF, FC_RESPONSE | callback, FC_HIGH, frame_id & 0xFF, frame_id >> 8)) + params


def parse_send_unicast_params(version, p):
    """The NCP's view of a sendUnicast request."""
    typ, dest = struct.unpack_from("<BH", p, 0)
    aps = E.parse_aps(p, 3)
    off = 14
    if version >= E.LAYOUT_V14:
        tag = struct.unpack_from("<H", p, off)[0]
        off += 2
    else:
        tag = p[off]
        off += 1
    n = p[off]
    msg = bytes(p[off + 1:off + 1 + n])
    if len(msg) != n:
        raise E.EzspError(E.E_EZSP, "sendUnicast message truncated")
    return {"type": typ, "dest": dest, "aps": aps, "tag": tag, "message": msg}


def message_sent_params(version, status, dest, aps, tag, message):
    if version >= E.LAYOUT_V14:
        return (struct.pack("<IBH", status, OUTGOING_DIRECT, dest) + aps + struct.pack("<H", tag)
                + bytes((len(message),)) + message)
    return struct.pack("<BH", OUTGOING_DIRECT, dest) + aps + bytes((tag & 0xFF, status, len(message))) + message


def message_sent_report(version, p):
    """The whole messageSentHandler report (a dict: status, type, dest, aps, tag, message),
    as a host reads it; the gateway reads the tag and the status alone (ezsp.parse_message_sent).
    "message" is empty under the NCP's power-on policy (tag only: messageLength 0), and
    when the frame ends before messageLength."""
    tag, status = E.parse_message_sent(version, p)   # (too short: an EzspError)
    at = 4 if version >= E.LAYOUT_V14 else 0          # the outgoing type, after v14's u32 status
    typ, dest = struct.unpack_from("<BH", p, at)
    aps, off = E.parse_aps(p, at + 3), at + 16
    msg = bytes(p[off + 1:off + 1 + p[off]]) if len(p) > off else b""
    return {"status": status, "type": typ, "dest": dest, "aps": aps, "tag": tag, "message": msg}


def incoming_params(version, aps, sender, message, lqi=255, rssi=-40, eui64=b"\x00" * 8):
    r = rssi & 0xFF
    if version >= E.LAYOUT_V14:
        return (bytes((0,)) + aps + struct.pack("<H", sender) + eui64 + bytes((0xFF, 0xFF, lqi, r))
                + struct.pack("<I", 0) + bytes((len(message),)) + message)
    return bytes((0,)) + aps + bytes((lqi, r)) + struct.pack("<H", sender) + bytes((0xFF, 0xFF, len(message))) + message


def status_params(version, status):
    """A status result: u32 sl_Status from v14, u8 EmberStatus before."""
    return struct.pack("<I", status) if version >= E.LAYOUT_V14 else bytes((status,))
