# EZSP (UG100) over an ASH link, host side, protocol versions 8 and later.
# The frame codec (top half) is pure; Ezsp (bottom half) matches responses to commands by
# sequence number and hands callbacks to one synchronous handler. Layouts differ from v14
# on (u32 sl_Status, u16 message tags, EUI-64 and timestamp in incomingMessageHandler):
# each layout is data in one place, chosen by the negotiated version. The module's half
# (responses, callbacks, reading a sendUnicast) is host_tools/ncp_emulator/ezsp_ncp.py.
# The version negotiation and the bring-up's commands, run only after a module reset, are
# in zigbee/han_start.py (not held by the running link).
import asyncio
import struct
from micropython import const

from ppmid.errors import PpmidError
from ppmid.clock import wait_event_ms

E_EZSP = "E_EZSP"
E_EZSP_TIMEOUT = "E_EZSP_TIMEOUT"
E_MODULE_UNSUPPORTED = "E_MODULE_UNSUPPORTED"

# Public: the names other firmware modules read (han.py, han_start.py, the commissioning).
# The ids, bits and values only this module reads or writes are private consts, and the
# bring-up's commands (version, networkInit, networkState, maximumPayloadLength) are
# zigbee/han_start.py's, the two callbacks only the HAN dispatches (messageSentHandler,
# incomingMessageHandler) and the APS options it sets are han.py's (a public const is a
# name and a module-dict entry the running app holds; docs/memory.md, sessions 11 and 12):
# the NCP's side names them all in host_tools/ncp_emulator/ezsp_ncp.py, with the same values.
STACK_STATUS_HANDLER = const(0x0019)
_SEND_UNICAST = const(0x0034)
_SEND_REPLY = const(0x0039)
_INVALID_COMMAND = const(0x0058)

# frame control, low byte (responses)
_FC_RESPONSE = const(0x80)
_FC_CALLBACK_MASK = const(0x18)   # sync 0x08 / async 0x10 callback
_FC_HIGH = const(0x01)            # frame format version 1

# stack status values per layout
_EMBER_NETWORK_UP = const(0x90)
_EMBER_NETWORK_DOWN = const(0x91)
_SL_NETWORK_UP = const(0x15)
_SL_NETWORK_DOWN = const(0x16)

_OUTGOING_DIRECT = const(0)
# the first protocol version of the wider layouts (u32 sl_Status, u16 tags, ...): a layout
# is v14's when `version >= LAYOUT_V14` (a comparison, not a function: one raw code less)
LAYOUT_V14 = const(14)


class EzspError(PpmidError):
    on_wire = True   # see Ezsp._exchange


# The failures' and rare log lines' sentences, by their index in
# ppmid.zigbee.ezsp_errors.SENTENCES (the text)
_S_NO_RESPONSE = const(0)
_S_FRAME_SHORT = const(1)
_S_FRAME_FORMAT = const(2)
_S_TRUNCATED = const(3)
_S_UNICAST_LARGE = const(4)
_S_INCOMING_TRUNCATED = const(5)
_S_CALLBACK_DROPPED = const(6)
_S_ORPHAN = const(7)
_S_INVALID_COMMAND = const(8)
_S_WRONG_RESPONSE = const(9)
_S_NOT_NEGOTIATED = const(10)

# The driver's counters: one list of ints, by these indices; their names are
# zigbee/han_counters.py's EZSP (in this order), which only tests and reports load
_C_COMMANDS = const(0)
_C_RESPONSES = const(1)
_C_CALLBACKS = const(2)
_C_ORPHAN_RESPONSES = const(3)
_C_BAD_FRAMES = const(4)
_C_INVALID_COMMAND = const(5)
_C_TIMEOUTS = const(6)
_COUNTERS = const(7)


def _text(key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.zigbee.ezsp_errors', loaded when the
    # driver needs one and dropped again (as str constants here the sentences held ~0.7 KB).
    # Never raises: the link's receive loop parses frames with it, and a heap or a flash
    # that cannot load the module must not stop that loop (the text is then its key).
    try:
        from ppmid.modules import sentence
        return sentence("ppmid.zigbee.ezsp_errors", key, arg)
    except Exception:
        return "ezsp sentence %d" % key


# ---- pure codec --------------------------------------------------------------------------
def command_frame(seq, frame_id, params=b""):
    return bytes((seq & 0xFF, 0, _FC_HIGH, frame_id & 0xFF, frame_id >> 8)) + params


def parse_frame(frame, legacy=False):
    """-> (seq, fc_low, frame_id, params). Raises EzspError on a short or malformed frame."""
    if legacy:
        if len(frame) < 3:
            raise EzspError(E_EZSP, _text(_S_FRAME_SHORT, len(frame)))
        return frame[0], frame[1], frame[2], bytes(frame[3:])
    if len(frame) < 5:
        raise EzspError(E_EZSP, _text(_S_FRAME_SHORT, len(frame)))
    if frame[2] & 0x03 != _FC_HIGH:
        raise EzspError(E_EZSP, _text(_S_FRAME_FORMAT, frame[2]))
    return frame[0], frame[1], frame[3] | (frame[4] << 8), bytes(frame[5:])


def aps_frame(profile, cluster, src_ep, dst_ep, options, group=0, sequence=0):
    return struct.pack("<HHBBHHB", profile, cluster, src_ep, dst_ep, options, group, sequence)


def _need(p, n):
    # a short frame from the module is an EzspError like any malformed one, not an
    # IndexError or struct.error escaping into the link (found by tests/test_fuzz_parsers.py)
    if len(p) < n:
        raise EzspError(E_EZSP, _text(_S_TRUNCATED, (len(p), n)))


def parse_aps(b, off=0):
    """-> dict of an 11-byte EmberApsFrame."""
    _need(b, off + 11)
    p, c, s, d, o, g, q = struct.unpack_from("<HHBBHHB", b, off)
    return {"profile": p, "cluster": c, "src_ep": s, "dst_ep": d, "options": o, "group": g, "sequence": q}


def send_unicast_params(version, dest, aps, tag, message):
    if len(message) > 255:
        raise EzspError(E_EZSP, _text(_S_UNICAST_LARGE, len(message)))
    tagb = struct.pack("<H", tag & 0xFFFF) if version >= LAYOUT_V14 else bytes((tag & 0xFF,))
    return struct.pack("<BH", _OUTGOING_DIRECT, dest) + aps + tagb + bytes((len(message),)) + message


# sendReply: sender (u16), EmberApsFrame (11), messageLength (u8), message. The same
# from v8 to v18; only its response's status widens (u8 EmberStatus, u32 sl_Status from
# v14), which parse_status handles.
SEND_REPLY_ACK_LEN = const(14)


def fragment_ack_into(buf, sender, aps):
    """The APS acknowledgement of one incoming fragment, as sendReply parameters written
    into buf (SEND_REPLY_ACK_LEN bytes, reused): back to the fragment's sender, endpoints
    swapped, the fragment's options and APS counter, groupId 0xFF00 | its index and no
    payload (what EmberZNet hosts send, bellows among them)."""
    struct.pack_into("<HHHBBHHBB", buf, 0, sender, aps["profile"], aps["cluster"], aps["dst_ep"],
                     aps["src_ep"], aps["options"], 0xFF00 | (aps["group"] & 0xFF), aps["sequence"], 0)


def parse_status(version, p):
    """A status result: u32 sl_Status from v14, u8 EmberStatus before. 0 = success."""
    if version >= LAYOUT_V14:
        _need(p, 4)
        return struct.unpack_from("<I", p, 0)[0]
    _need(p, 1)
    return p[0]


def parse_send_unicast_response(version, p):
    if version >= LAYOUT_V14:
        _need(p, 5)
        return struct.unpack_from("<IB", p, 0)
    _need(p, 2)
    return p[0], p[1]


# sendUnicast refusals that say "not now" rather than "never": the stack is not on the
# network (yet), or out of buffers/message slots for a moment. Nothing went on air, so
# the message may go again once the network is back (EmberStatus before v14, sl_Status
# from v14: NO_BUFFERS 0x18 / ALLOCATION_FAILED 0x19, MAX_MESSAGE_LIMIT_REACHED 0x72 /
# 0x0C03, NETWORK_DOWN 0x91 / 0x16, NOT_JOINED 0x93 / 0x17, NETWORK_BUSY 0xA1 / BUSY 0x04,
# TRANSMIT_BUSY 0x34, NO_MORE_RESOURCE 0x1A). The two tables are the function's constants,
# not module globals: no dict entries or names for them.
def refused_for_now(version, status):
    """True when a sendUnicast status means the module may take the message later."""
    if version >= LAYOUT_V14:
        return status in (0x19, 0x0C03, 0x16, 0x17, 0x04, 0x34, 0x1A)
    return status in (0x18, 0x72, 0x91, 0x93, 0xA1)


def parse_stack_status(version, p):
    """-> True (network up), False (down) or None (another status)."""
    s = parse_status(version, p)
    up, down = (_SL_NETWORK_UP, _SL_NETWORK_DOWN) if version >= LAYOUT_V14 else (_EMBER_NETWORK_UP, _EMBER_NETWORK_DOWN)
    if s == up:
        return True
    if s == down:
        return False
    return None


def parse_message_sent(version, p):
    """The NCP's report on a sent message -> (tag, status): all the driver reads of it (the
    whole report, with the APS frame and the message, is the NCP's side's to read:
    ezsp_ncp.message_sent_report). Parsed per fragment sent, so it builds no dict."""
    if version >= LAYOUT_V14:
        _need(p, 20)
        return struct.unpack_from("<H", p, 18)[0], struct.unpack_from("<I", p, 0)[0]
    _need(p, 16)
    return p[14], p[15]


def parse_incoming(version, p):
    v14 = version >= LAYOUT_V14
    _need(p, 31 if v14 else 19)
    typ = p[0]
    aps = parse_aps(p, 1)
    if v14:
        sender = struct.unpack_from("<H", p, 12)[0]
        eui64 = bytes(p[14:22])
        lqi, rssi = p[24], p[25]
        off = 30
    else:
        lqi, rssi = p[12], p[13]
        sender = struct.unpack_from("<H", p, 14)[0]
        eui64 = None
        off = 18
    n = p[off]
    msg = bytes(p[off + 1:off + 1 + n])
    if len(msg) != n:
        raise EzspError(E_EZSP, _text(_S_INCOMING_TRUNCATED))
    return {"type": typ, "aps": aps, "sender": sender, "eui64": eui64, "lqi": lqi,
            "rssi": rssi - 256 if rssi > 127 else rssi, "message": msg}


# ---- protocol ----------------------------------------------------------------------------
class Ezsp:
    """Commands over an AshLink-like object (async send(frame)). Feed it received frames
    with on_frame(); callbacks go to on_callback(frame_id, params) synchronously."""

    def __init__(self, link, on_callback, log=None, timeout_s=5):
        self._link = link
        self._on_callback = on_callback
        self._log = log
        self._timeout_s = timeout_s
        self._seq = 0
        self._waiting = {}     # seq -> the command's Event (_exchange)
        self.version = None    # negotiated protocol version
        self.stack_type = None
        self.stack_version = None
        self._legacy = True
        self.counters = [0] * _COUNTERS   # by _C_... index (above)

    def on_frame(self, frame):
        try:
            seq, fc, fid, params = parse_frame(frame, self._legacy)
        except EzspError as exc:
            self.counters[_C_BAD_FRAMES] += 1
            if self._log:
                self._log("ezsp: %s" % exc)
            return
        if not fc & _FC_RESPONSE:
            self.counters[_C_BAD_FRAMES] += 1
            return
        if fc & _FC_CALLBACK_MASK:
            self.counters[_C_CALLBACKS] += 1
            try:
                self._on_callback(fid, params)
            except Exception as exc:  # a malformed callback must not stop the link
                self.counters[_C_BAD_FRAMES] += 1
                if self._log:
                    self._log("ezsp: " + _text(_S_CALLBACK_DROPPED, (fid, exc)))
            return
        w = self._waiting.pop(seq, None)
        if w is None:
            self.counters[_C_ORPHAN_RESPONSES] += 1
            if self._log:
                self._log("ezsp: " + _text(_S_ORPHAN, (seq, fid)))
            return
        self.counters[_C_RESPONSES] += 1
        if fid == _INVALID_COMMAND:
            self.counters[_C_INVALID_COMMAND] += 1
            w.result = EzspError(E_EZSP, _text(_S_INVALID_COMMAND, (w.fid, params[0] if params else -1)))
        elif fid != w.fid:
            w.result = EzspError(E_EZSP, _text(_S_WRONG_RESPONSE, (fid, w.fid)))
        else:
            w.result = params
        w.set()

    async def _exchange(self, fid, frame, seq):
        # Every error raised here carries on_wire: False only when the command's frame
        # never went to the UART (the NCP cannot have run it); otherwise True (it may have).
        # the command waiting for its response: an Event (set when the response came) that
        # carries the command's frame id (the response must carry the same) and the result
        # (the response's parameters, or an EzspError). No class of its own: a type object
        # and its dict less for a board to hold (docs/memory.md, session 10)
        w = asyncio.Event()
        w.fid = fid
        w.result = None
        self._waiting[seq] = w
        self.counters[_C_COMMANDS] += 1
        try:
            try:
                await self._link.send(frame)
            except PpmidError as exc:
                exc.on_wire = getattr(exc, "on_wire", True)
                raise
            if not await wait_event_ms(w, int(self._timeout_s * 1000)):
                self.counters[_C_TIMEOUTS] += 1
                err = EzspError(E_EZSP_TIMEOUT, _text(_S_NO_RESPONSE, fid))
                err.on_wire = True
                raise err
        finally:
            self._waiting.pop(seq, None)
        if isinstance(w.result, Exception):
            # the NCP acknowledged the command at the ASH level: it may have executed it
            w.result.on_wire = True
            raise w.result
        return w.result

    def _next_seq(self):
        s = self._seq
        self._seq = (s + 1) & 0xFF
        return s

    async def command(self, fid, params=b""):
        if self._legacy:
            raise EzspError(E_EZSP, _text(_S_NOT_NEGOTIATED))
        seq = self._next_seq()
        return await self._exchange(fid, command_frame(seq, fid, params), seq)

    async def send_reply(self, params):
        """params: sendReply parameters (fragment_ack_into). -> status, 0 = sent."""
        return parse_status(self.version, await self.command(_SEND_REPLY, params))

    async def send_unicast(self, dest, aps, tag, message):
        """-> (status, aps_sequence); status 0 = accepted for transmission."""
        p = await self.command(_SEND_UNICAST, send_unicast_params(self.version, dest, aps, tag, message))
        return parse_send_unicast_response(self.version, p)
