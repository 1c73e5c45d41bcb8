# ZCL Tunneling cluster (0x0704, profile 0x0109), the PPMID as tunnel server for GB-HRGP
# (protocol 6). Pure: TunnelServer.handle() takes one received ZCL frame and returns the
# replies to send and the GBCS payload delivered, if any; it never does I/O. han.py sends.
# What a running tunnel carries, the CH's TransferData into it, is handled here; every other
# frame (RequestTunnel, CloseTunnel, TransferDataError, GetSupportedProtocols, refusals,
# other nodes) by zigbee/tunnel_control.py, loaded for it and dropped after (docs/memory.md).
# The client's (the CH's) RequestTunnel and CloseTunnel frames: zigbee/tunnel_host.py.
from micropython import const

from ppmid.errors import PpmidError, E_NO_TUNNEL

PROFILE_SE = const(0x0109)
CLUSTER_TUNNELING = const(0x0704)
ENDPOINT = const(1)
CH_NWK = const(0x0000)         # the CH is the HAN's coordinator, and the tunnel's only client

# frame control bits
_FC_CLUSTER_SPECIFIC = const(0x01)
_FC_MANUFACTURER = const(0x04)
FC_SERVER_TO_CLIENT = const(0x08)
_FC_DISABLE_DEFAULT_RESPONSE = const(0x10)

# The commands below are private: only this module reads or writes them (the others are
# tunnel_control.py's). The CH's side (the NCP emulator, tests) has them by name in
# zigbee/tunnel_host.py; a public const stays in the module's dict and its name is
# interned (docs/memory.md).
_TRANSFER_DATA = const(0x02)     # client -> server
_S_TRANSFER_DATA = const(0x01)   # server -> client
# TransferDataError status: the HAN reads these in the CH's refusals
NO_SUCH_TUNNEL = const(0)
WRONG_DEVICE = const(1)

E_ZCL = "E_ZCL"
# where the GBCS bytes start in a TransferData frame (ZCL header, tunnel id): a sender that
# builds them in place leaves that much room in front (TunnelServer.outgoing_into)
TRANSFER_DATA_AT = const(5)

# The tunnel's counters: one list of ints, by these indices. Their names are
# zigbee/han_counters.py's TUNNEL (in this order), which only tests and reports load;
# zigbee/tunnel_control.py counts the others in the same list, by its own indices
# (docs/memory.md, session 10).
_C_CLOSED = const(3)
_C_RX_DATA = const(4)
_C_TX_DATA = const(5)
_C_BAD_ZCL = const(8)
_C_UNKNOWN_COMMANDS = const(9)
_C_NOT_CH = const(10)
_C_UNHANDLED = const(11)
_COUNTERS = const(12)


class ZclError(PpmidError):
    pass


def zcl_header(seq, command, server_to_client):
    """The header of a cluster-specific ZCL frame, default response disabled (every frame
    the gateway sends); a manufacturer-specific one: tunnel_host.zcl_header_manufacturer."""
    fc = _FC_CLUSTER_SPECIFIC | _FC_DISABLE_DEFAULT_RESPONSE
    if server_to_client:
        fc |= FC_SERVER_TO_CLIENT
    return bytes((fc, seq & 0xFF, command))


def parse_zcl(frame):
    """-> (frame_control, manufacturer or None, seq, command, payload)."""
    if len(frame) < 3:
        raise ZclError(E_ZCL, "ZCL frame too short (%d bytes)" % len(frame))
    fc = frame[0]
    if fc & _FC_MANUFACTURER:
        if len(frame) < 5:
            raise ZclError(E_ZCL, "ZCL frame too short for a manufacturer code")
        return fc, frame[1] | (frame[2] << 8), frame[3], frame[4], bytes(frame[5:])
    return fc, None, frame[1], frame[2], bytes(frame[3:])


class TunnelServer:
    """One GB-HRGP tunnel, opened by the CH. handle() -> (replies, gbcs_or_None) where
    replies are ZCL frames to unicast back to the sender."""

    def __init__(self, max_incoming=1500, busy=False):
        self.max_incoming = max_incoming
        self.busy = busy                 # refuse new tunnels (status busy)
        self.tunnel_id = None
        self.client = None               # NWK address of the CH
        self.client_max = None           # CH's maxIncomingTransferSize: our per-message limit
        self._next_id = 1
        self._seq = 0
        # ("open"|"closed"|"error"|"refused"|"unhandled", detail), drained by han.py
        self.events = []
        self.counters = [0] * _COUNTERS   # by _C_... index (above)

    def next_seq(self):
        s = self._seq
        self._seq = (s + 1) & 0xFF
        return s

    def close(self, why="closed"):
        if self.tunnel_id is not None:
            self.counters[_C_CLOSED] += 1
            self.events.append(("closed", why))
        self.tunnel_id = None
        self.client = None

    def outgoing_into(self, frame, n):
        """One TransferData (server -> client) frame for GBCS bytes (<= client_max) already
        in frame[TRANSFER_DATA_AT:TRANSFER_DATA_AT + n] (a bytearray): writes the header in
        front of them and returns a memoryview of the whole frame; no copy. Each call takes
        a new sequence number (a piece sent again)."""
        if self.tunnel_id is None:
            raise ZclError(E_NO_TUNNEL, "no tunnel open to the Communications Hub")
        self.counters[_C_TX_DATA] += 1
        frame[0] = _FC_CLUSTER_SPECIFIC | FC_SERVER_TO_CLIENT | _FC_DISABLE_DEFAULT_RESPONSE
        frame[1] = self.next_seq() & 0xFF
        frame[2] = _S_TRANSFER_DATA
        frame[3] = self.tunnel_id & 0xFF
        frame[4] = self.tunnel_id >> 8
        return memoryview(frame)[:TRANSFER_DATA_AT + n]

    def from_ch(self, sender):
        """False for any HAN node but the CH (counted, the first one logged): another node
        holding the network key must not open, feed or close the tunnel, or the DCC Users'
        commands would go to it (docs/zigbee.md "Tunnel server")."""
        if sender == CH_NWK:
            return True
        self.counters[_C_NOT_CH] += 1
        if self.counters[_C_NOT_CH] == 1:
            self.events.append(("refused", "0x%04x: not the CH" % sender))
        return False

    def handle(self, sender, frame):
        try:
            fc, manu, seq, cmd, p = parse_zcl(frame)
        except ZclError:
            self.counters[_C_BAD_ZCL] += 1
            return [], None
        if fc & 0x03 != _FC_CLUSTER_SPECIFIC or fc & FC_SERVER_TO_CLIENT:
            # global commands (default response...) and server->client frames: not ours
            self.counters[_C_UNKNOWN_COMMANDS] += 1
            return [], None
        # the one frame a running tunnel carries: the CH's TransferData into it, within
        # our size; anything else (opening, closing, refusals, errors, other nodes) is
        # zigbee/tunnel_control.py's, loaded for it and dropped after
        if cmd == _TRANSFER_DATA and sender == CH_NWK and sender == self.client and len(p) >= 2 \
                and (p[0] | (p[1] << 8)) == self.tunnel_id and len(p) - 2 <= self.max_incoming:
            self.counters[_C_RX_DATA] += 1
            return [], p[2:]
        try:
            from ppmid.zigbee.tunnel_control import handle
        except Exception:  # MemoryError, or a build without it: the frame is dropped, not
            # the link (the CH requests the tunnel again; a message it refused is sent again
            # by the relay when the command's budget ends unanswered)
            self.counters[_C_UNHANDLED] += 1
            self.events.append(("unhandled", cmd))
            return [], None
        return handle(self, sender, seq, cmd, p)
