# The tunnel client's frames (the Communications Hub's side of zigbee/tunnel.py): what the
# NCP emulator's CH and the tests send to the gateway's tunnel server, and the names of the
# commands and statuses they read in its answers. Apart from tunnel.py because the gateway
# never sends them: no firmware module imports this one, so the running app does not hold
# it (docs/memory.md).
import struct
from micropython import const

from ppmid.zigbee.tunnel import zcl_header

# The Tunneling cluster's commands and statuses (SE 1.4 D.6), by name. tunnel.py and
# tunnel_control.py have the same values as private consts (a private const cannot be
# imported, and a public one is held by the running app for nothing): the tests of the
# server check them against these.
# client -> server commands
REQUEST_TUNNEL = const(0x00)
_CLOSE_TUNNEL = const(0x01)
TRANSFER_DATA = const(0x02)
TRANSFER_DATA_ERROR = const(0x03)
# server -> client commands
REQUEST_TUNNEL_RESPONSE = const(0x00)
S_TRANSFER_DATA = const(0x01)
S_TRANSFER_DATA_ERROR = const(0x02)
TUNNEL_CLOSURE_NOTIFICATION = const(0x06)
# RequestTunnelResponse status
TUNNEL_OK = const(0)
TUNNEL_BUSY = const(1)
TUNNEL_PROTOCOL_UNSUPPORTED = const(3)
TUNNEL_FLOW_CONTROL_UNSUPPORTED = const(4)
# TransferDataError status (NO_SUCH_TUNNEL and WRONG_DEVICE: tunnel.py's, the HAN reads them)
DATA_OVERFLOW = const(2)

# tunnel.py's, private there
_PROTOCOL_GB_HRGP = const(6)
_MANUFACTURER_ANY = const(0xFFFF)
_FC_MANUFACTURER = const(0x04)


def zcl_header_manufacturer(seq, command, server_to_client, manufacturer):
    """zcl_header() of a manufacturer-specific frame (its code after the frame control):
    the gateway sends none; the tests check the parser and the format against bellows."""
    h = zcl_header(seq, command, server_to_client)
    return struct.pack("<BHBB", h[0] | _FC_MANUFACTURER, manufacturer, h[1], h[2])


def transfer_data(seq, tunnel_id, data, server_to_client):
    """TransferData with GBCS bytes: the CH's (server_to_client False), or the gateway's as
    bytes (the gateway builds its own in place: TunnelServer.outgoing_into)."""
    cmd = S_TRANSFER_DATA if server_to_client else TRANSFER_DATA
    return zcl_header(seq, cmd, server_to_client) + struct.pack("<H", tunnel_id) + data


def request_tunnel(seq, protocol=_PROTOCOL_GB_HRGP, manufacturer=_MANUFACTURER_ANY, flow_control=0, max_in=1500):
    """RequestTunnel (client -> server) for `protocol`; max_in: the client's
    maxIncomingTransferSize."""
    return zcl_header(seq, REQUEST_TUNNEL, False) + struct.pack("<BHBH", protocol, manufacturer, flow_control, max_in)


def close_tunnel(seq, tunnel_id):
    """CloseTunnel (client -> server) for tunnel_id."""
    return zcl_header(seq, _CLOSE_TUNNEL, False) + struct.pack("<H", tunnel_id)
