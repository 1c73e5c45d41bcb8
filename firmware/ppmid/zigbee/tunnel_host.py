# The tunnel client's frames (the Communications Hub's side of zigbee/tunnel.py): what the
# NCP emulator's CH and the tests send to the gateway's tunnel server. Apart from
# tunnel.py because the gateway never sends them: no firmware module imports this one,
# so the running app does not hold it (docs/memory.md).
import struct
from micropython import const

from ppmid.zigbee.tunnel import zcl_header, REQUEST_TUNNEL

# tunnel.py's, private there (a private const cannot be imported)
_PROTOCOL_GB_HRGP = const(6)
_MANUFACTURER_ANY = const(0xFFFF)
_CLOSE_TUNNEL = const(0x01)


def request_tunnel(seq, protocol=_PROTOCOL_GB_HRGP, manufacturer=_MANUFACTURER_ANY, flow_control=0, max_in=1500):
    """RequestTunnel (client -> server) for `protocol`; max_in: the client's
    maxIncomingTransferSize."""
    return zcl_header(seq, REQUEST_TUNNEL, False) + struct.pack("<BHBH", protocol, manufacturer, flow_control, max_in)


def close_tunnel(seq, tunnel_id):
    """CloseTunnel (client -> server) for tunnel_id."""
    return zcl_header(seq, _CLOSE_TUNNEL, False) + struct.pack("<H", tunnel_id)
