# The tunnel server's frames other than the CH's TransferData into the open tunnel: the
# CH's RequestTunnel (the tunnel opened or refused), CloseTunnel, TransferDataError,
# GetSupportedProtocols and flow control, a TransferData that cannot be taken (answered with
# a TransferDataError), and every frame from a node that is not the CH. A tunnel is opened
# once per CH session, the rest is rare: zigbee/tunnel.py's TunnelServer.handle loads this
# module for such a frame and it drops itself after, so that the running link does not hold
# its code (docs/memory.md). Pure, as tunnel.py: no I/O.
import struct
from micropython import const

from ppmid.zigbee.tunnel import zcl_header, CH_NWK, NO_SUCH_TUNNEL, WRONG_DEVICE

_PROTOCOL_GB_HRGP = const(6)
_MANUFACTURER_ANY = const(0xFFFF)
# client -> server commands (tunnel_host.py has them by name for the CH's side and tests)
_REQUEST_TUNNEL = const(0x00)
_CLOSE_TUNNEL = const(0x01)
_TRANSFER_DATA = const(0x02)
_TRANSFER_DATA_ERROR = const(0x03)
_ACK_TRANSFER_DATA = const(0x04)
_READY_DATA = const(0x05)
_GET_SUPPORTED_PROTOCOLS = const(0x06)
# server -> client commands
_REQUEST_TUNNEL_RESPONSE = const(0x00)
_S_TRANSFER_DATA_ERROR = const(0x02)
_SUPPORTED_PROTOCOLS_RESPONSE = const(0x05)
_TUNNEL_CLOSURE_NOTIFICATION = const(0x06)   # not sent: the server never closes a tunnel itself
# RequestTunnelResponse status
_TUNNEL_OK = const(0)
_TUNNEL_BUSY = const(1)
_TUNNEL_NO_MORE_IDS = const(2)
_TUNNEL_PROTOCOL_UNSUPPORTED = const(3)
_TUNNEL_FLOW_CONTROL_UNSUPPORTED = const(4)
# TransferDataError status (NO_SUCH_TUNNEL, WRONG_DEVICE: tunnel.py's)
_DATA_OVERFLOW = const(2)

# indices into the tunnel's counters (TunnelServer.counters, a list of ints): their names
# are zigbee/han_counters.py's TUNNEL, at these places
_C_REQUESTS = const(0)
_C_OPENED = const(1)
_C_REFUSED = const(2)
_C_RX_DATA = const(4)
_C_RX_TRANSFER_ERRORS = const(6)
_C_TX_TRANSFER_ERRORS = const(7)
_C_BAD_ZCL = const(8)
_C_UNKNOWN_COMMANDS = const(9)


def _drop():
    from ppmid.modules import unload
    unload(__name__, "ppmid.modules")


def transfer_data_error(seq, tunnel_id, status, server_to_client):
    cmd = _S_TRANSFER_DATA_ERROR if server_to_client else _TRANSFER_DATA_ERROR
    return zcl_header(seq, cmd, server_to_client) + struct.pack("<HB", tunnel_id, status)


def handle(server, sender, seq, cmd, p):
    """TunnelServer.handle for a cluster-specific client -> server frame that is not the
    CH's TransferData into the open tunnel (tunnel.py takes that one itself): -> (replies,
    gbcs_or_None). This module is dropped after it (the server is its caller; one who
    needs more of it imports it again)."""
    try:
        return _handle(server, sender, seq, cmd, p)
    finally:
        _drop()


def _handle(server, sender, seq, cmd, p):
    counters = server.counters
    if cmd != _GET_SUPPORTED_PROTOCOLS and not server.from_ch(sender):
        if cmd == _REQUEST_TUNNEL:
            return _request(server, sender, seq, p), None  # answered busy
        if cmd == _TRANSFER_DATA and len(p) >= 2:
            return [transfer_data_error(server.next_seq(), p[0] | (p[1] << 8), WRONG_DEVICE, True)], None
        return [], None
    if cmd == _REQUEST_TUNNEL:
        return _request(server, sender, seq, p), None
    if cmd == _TRANSFER_DATA:
        if len(p) < 2:
            counters[_C_BAD_ZCL] += 1
            return [], None
        tid = p[0] | (p[1] << 8)
        if tid != server.tunnel_id:
            status = NO_SUCH_TUNNEL
        elif sender != server.client:
            status = WRONG_DEVICE
        elif len(p) - 2 > server.max_incoming:
            status = _DATA_OVERFLOW
        else:  # (tunnel.py delivers these itself; the same answer here)
            counters[_C_RX_DATA] += 1
            return [], p[2:]
        counters[_C_TX_TRANSFER_ERRORS] += 1
        return [transfer_data_error(server.next_seq(), tid, status, True)], None
    if cmd == _TRANSFER_DATA_ERROR:
        counters[_C_RX_TRANSFER_ERRORS] += 1
        status = p[2] if len(p) >= 3 else -1
        tid = p[0] | (p[1] << 8) if len(p) >= 2 else None
        server.events.append(("error", (status, tid)))
        if status == NO_SUCH_TUNNEL and tid is not None and tid == server.tunnel_id:
            server.close("the CH does not know our tunnel")
        return [], None
    if cmd == _CLOSE_TUNNEL:
        if len(p) >= 2 and (p[0] | (p[1] << 8)) == server.tunnel_id and sender == server.client:
            server.close("closed by the CH")
        return [], None
    if cmd == _GET_SUPPORTED_PROTOCOLS:
        r = zcl_header(seq, _SUPPORTED_PROTOCOLS_RESPONSE, True)
        return [r + struct.pack("<BBHB", 1, 1, _MANUFACTURER_ANY, _PROTOCOL_GB_HRGP)], None
    if cmd == _ACK_TRANSFER_DATA or cmd == _READY_DATA:
        return [], None  # flow control is not used by GB-HRGP
    counters[_C_UNKNOWN_COMMANDS] += 1
    return [], None


def _request(server, sender, seq, p):
    # a response carries its request's transaction sequence number (ZCL: a frame sent
    # because of a received one copies its number): the CH matches its answer by it
    counters = server.counters
    counters[_C_REQUESTS] += 1
    if len(p) < 6:
        counters[_C_BAD_ZCL] += 1
        return []
    protocol, manu, flow, max_in = struct.unpack_from("<BHBH", p, 0)
    tid = 0xFFFF
    if protocol != _PROTOCOL_GB_HRGP:
        status = _TUNNEL_PROTOCOL_UNSUPPORTED
    elif flow:
        status = _TUNNEL_FLOW_CONTROL_UNSUPPORTED
    elif server.busy or sender != CH_NWK:
        status = _TUNNEL_BUSY
    else:
        # one tunnel: a re-request (CH restarted, or it lost our tunnel) replaces the old one
        if server.tunnel_id is not None:
            server.close("replaced by a new request")
        tid = server._next_id
        server._next_id = (tid % 0xFFFE) + 1
        server.tunnel_id = tid
        server.client = sender
        server.client_max = max_in
        counters[_C_OPENED] += 1
        server.events.append(("open", tid))
        status = _TUNNEL_OK
    if status != _TUNNEL_OK:
        counters[_C_REFUSED] += 1
    return [zcl_header(seq, _REQUEST_TUNNEL_RESPONSE, True) + struct.pack("<HBH", tid, status, server.max_incoming)]
