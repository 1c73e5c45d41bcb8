# ZCL Tunneling cluster (0x0704, profile 0x0109), the PPMID as tunnel server for GB-HRGP
# (protocol 6). Pure: TunnelServer.handle() takes one received ZCL frame and returns the
# replies to send and the GBCS payload delivered, if any; it never does I/O. han.py sends.
# The client's (the CH's) RequestTunnel and CloseTunnel frames: zigbee/tunnel_host.py.
import struct
from micropython import const

from ppmid.errors import PpmidError, E_NO_TUNNEL

PROFILE_SE = const(0x0109)
CLUSTER_TUNNELING = const(0x0704)
ENDPOINT = const(1)
CH_NWK = const(0x0000)         # the CH is the HAN's coordinator, and the tunnel's only client
_PROTOCOL_GB_HRGP = const(6)
_MANUFACTURER_ANY = const(0xFFFF)

# frame control bits
_FC_CLUSTER_SPECIFIC = const(0x01)
_FC_MANUFACTURER = const(0x04)
FC_SERVER_TO_CLIENT = const(0x08)
_FC_DISABLE_DEFAULT_RESPONSE = const(0x10)

# The commands and statuses below are private: only this module reads or writes them. The
# CH's side (the NCP emulator, tests) has them by name in zigbee/tunnel_host.py; a public
# const stays in the module's dict and its name is interned (docs/memory.md).
# client -> server commands
_REQUEST_TUNNEL = const(0x00)
_CLOSE_TUNNEL = const(0x01)
_TRANSFER_DATA = const(0x02)
_TRANSFER_DATA_ERROR = const(0x03)
_ACK_TRANSFER_DATA = const(0x04)
_READY_DATA = const(0x05)
_GET_SUPPORTED_PROTOCOLS = const(0x06)
# server -> client commands
_REQUEST_TUNNEL_RESPONSE = const(0x00)
_S_TRANSFER_DATA = const(0x01)
_S_TRANSFER_DATA_ERROR = const(0x02)
_SUPPORTED_PROTOCOLS_RESPONSE = const(0x05)
_TUNNEL_CLOSURE_NOTIFICATION = const(0x06)   # not sent: the server never closes a tunnel itself

# RequestTunnelResponse status
_TUNNEL_OK = const(0)
_TUNNEL_BUSY = const(1)
_TUNNEL_NO_MORE_IDS = const(2)
_TUNNEL_PROTOCOL_UNSUPPORTED = const(3)
_TUNNEL_FLOW_CONTROL_UNSUPPORTED = const(4)
# TransferDataError status
NO_SUCH_TUNNEL = const(0)
WRONG_DEVICE = const(1)
_DATA_OVERFLOW = const(2)

E_ZCL = "E_ZCL"
# where the GBCS bytes start in a TransferData frame (ZCL header, tunnel id): a sender that
# builds them in place leaves that much room in front (TunnelServer.outgoing_into)
TRANSFER_DATA_AT = const(5)


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


def transfer_data_error(seq, tunnel_id, status, server_to_client):
    cmd = _S_TRANSFER_DATA_ERROR if server_to_client else _TRANSFER_DATA_ERROR
    return zcl_header(seq, cmd, server_to_client) + struct.pack("<HB", tunnel_id, status)


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
        self.events = []                 # ("open"|"closed"|"error"|"refused", detail), drained by han.py
        self.counters = {"requests": 0, "opened": 0, "refused": 0, "closed": 0, "rx_data": 0,
                         "tx_data": 0, "rx_transfer_errors": 0, "tx_transfer_errors": 0,
                         "bad_zcl": 0, "unknown_commands": 0, "not_ch": 0}

    def next_seq(self):
        s = self._seq
        self._seq = (s + 1) & 0xFF
        return s

    def close(self, why="closed"):
        if self.tunnel_id is not None:
            self.counters["closed"] += 1
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
        self.counters["tx_data"] += 1
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
        self.counters["not_ch"] += 1
        if self.counters["not_ch"] == 1:
            self.events.append(("refused", "0x%04x: not the CH" % sender))
        return False

    def handle(self, sender, frame):
        try:
            fc, manu, seq, cmd, p = parse_zcl(frame)
        except ZclError:
            self.counters["bad_zcl"] += 1
            return [], None
        if fc & 0x03 != _FC_CLUSTER_SPECIFIC or fc & FC_SERVER_TO_CLIENT:
            # global commands (default response...) and server->client frames: not ours
            self.counters["unknown_commands"] += 1
            return [], None
        if cmd != _GET_SUPPORTED_PROTOCOLS and not self.from_ch(sender):
            if cmd == _REQUEST_TUNNEL:
                return self._request(sender, seq, p), None  # answered busy
            if cmd == _TRANSFER_DATA and len(p) >= 2:
                return [transfer_data_error(self.next_seq(), p[0] | (p[1] << 8), WRONG_DEVICE, True)], None
            return [], None
        if cmd == _REQUEST_TUNNEL:
            return self._request(sender, seq, p), None
        if cmd == _TRANSFER_DATA:
            if len(p) < 2:
                self.counters["bad_zcl"] += 1
                return [], None
            tid = p[0] | (p[1] << 8)
            if tid != self.tunnel_id:
                status = NO_SUCH_TUNNEL
            elif sender != self.client:
                status = WRONG_DEVICE
            elif len(p) - 2 > self.max_incoming:
                status = _DATA_OVERFLOW
            else:
                self.counters["rx_data"] += 1
                return [], p[2:]
            self.counters["tx_transfer_errors"] += 1
            return [transfer_data_error(self.next_seq(), tid, status, True)], None
        if cmd == _TRANSFER_DATA_ERROR:
            self.counters["rx_transfer_errors"] += 1
            status = p[2] if len(p) >= 3 else -1
            tid = p[0] | (p[1] << 8) if len(p) >= 2 else None
            self.events.append(("error", (status, tid)))
            if status == NO_SUCH_TUNNEL and len(p) >= 2 and (p[0] | (p[1] << 8)) == self.tunnel_id:
                self.close("the CH does not know our tunnel")
            return [], None
        if cmd == _CLOSE_TUNNEL:
            if len(p) >= 2 and (p[0] | (p[1] << 8)) == self.tunnel_id and sender == self.client:
                self.close("closed by the CH")
            return [], None
        if cmd == _GET_SUPPORTED_PROTOCOLS:
            r = zcl_header(seq, _SUPPORTED_PROTOCOLS_RESPONSE, True)
            return [r + struct.pack("<BBHB", 1, 1, _MANUFACTURER_ANY, _PROTOCOL_GB_HRGP)], None
        if cmd == _ACK_TRANSFER_DATA or cmd == _READY_DATA:
            return [], None  # flow control is not used by GB-HRGP
        self.counters["unknown_commands"] += 1
        return [], None

    def _request(self, sender, seq, p):
        # a response carries its request's transaction sequence number (ZCL: a frame sent
        # because of a received one copies its number): the CH matches its answer by it
        self.counters["requests"] += 1
        if len(p) < 6:
            self.counters["bad_zcl"] += 1
            return []
        protocol, manu, flow, max_in = struct.unpack_from("<BHBH", p, 0)
        tid = 0xFFFF
        if protocol != _PROTOCOL_GB_HRGP:
            status = _TUNNEL_PROTOCOL_UNSUPPORTED
        elif flow:
            status = _TUNNEL_FLOW_CONTROL_UNSUPPORTED
        elif self.busy or sender != CH_NWK:
            status = _TUNNEL_BUSY
        else:
            # one tunnel: a re-request (CH restarted, or it lost our tunnel) replaces the old one
            if self.tunnel_id is not None:
                self.close("replaced by a new request")
            tid = self._next_id
            self._next_id = (tid % 0xFFFE) + 1
            self.tunnel_id = tid
            self.client = sender
            self.client_max = max_in
            self.counters["opened"] += 1
            self.events.append(("open", tid))
            status = _TUNNEL_OK
        if status != _TUNNEL_OK:
            self.counters["refused"] += 1
        return [zcl_header(seq, _REQUEST_TUNNEL_RESPONSE, True) + struct.pack("<HBH", tid, status, self.max_incoming)]
