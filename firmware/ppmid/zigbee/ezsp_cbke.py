# The EZSP commands of commissioning (UG100): security state, scan, join and the NCP's
# CBKE library for crypto suite 2 (sect283k1). The commissioning half of the EZSP codec in
# zigbee/ezsp.py, apart so that a commissioned gateway never loads it (imported only by
# zigbee/commission.py). Pure: parameter builders and result parsers; statuses are u8
# EmberStatus before v14 and u32 sl_Status from v14 (ezsp.parse_status). Ids and layouts
# are checked against bellows' command tables for v8 to v18 (tests/test_commission_reference.py).
import struct
from micropython import const

from ppmid.zigbee.ezsp import EzspError, E_EZSP, LAYOUT_V14, parse_status, _need

START_SCAN = const(0x001A)
NETWORK_FOUND_HANDLER = const(0x001B)
SCAN_COMPLETE_HANDLER = const(0x001C)
JOIN_NETWORK = const(0x001F)
LEAVE_NETWORK = const(0x0020)
FIND_AND_REJOIN_NETWORK = const(0x0021)
SET_INITIAL_SECURITY_STATE = const(0x0068)
GET_CURRENT_SECURITY_STATE = const(0x0069)
GENERATE_CBKE_KEYS_283K1 = const(0x00E8)
GENERATE_CBKE_KEYS_HANDLER_283K1 = const(0x00E9)
CALCULATE_SMACS_283K1 = const(0x00EA)
CALCULATE_SMACS_HANDLER_283K1 = const(0x00EB)
GET_CERTIFICATE_283K1 = const(0x00EC)
CLEAR_TEMPORARY_DATA_MAYBE_STORE_LINK_KEY_283K1 = const(0x00EE)

CERT_LEN = const(74)
PUBLIC_KEY_LEN = const(37)
SMAC_LEN = const(16)

# EmberInitialSecurityBitmask: joining an SE network with the install-code key as the
# preconfigured trust-centre link key; the network key must come APS-encrypted with it
HAVE_PRECONFIGURED_KEY = const(0x0100)
REQUIRE_ENCRYPTED_KEY = const(0x0800)
SE_JOIN_BITMASK = const(0x0900)

# stackStatusHandler / join results: the trust centre sent no network key (EmberStatus,
# sl_Status from v14)
EMBER_NO_NETWORK_KEY_RECEIVED = const(0xAD)
SL_NO_NETWORK_KEY_RECEIVED = const(0x0C1B)
# findAndRejoinNetwork's answer when the module holds no network to rejoin (its tokens
# were cleared: the trust centre removed it). Every other refusal (INVALID_CALL when it
# is joined already, NO_BUFFERS, a busy stack) says nothing about the network.
EMBER_NOT_JOINED = const(0x93)
SL_NOT_JOINED = const(0x0017)
REJOIN_DUE_TO_APP_EVENT_1 = const(0xFF)   # EmberRejoinReason (v14's reason argument)

ACTIVE_SCAN = const(1)            # EzspNetworkScanType
JOIN_MAC_ASSOCIATION = const(0)   # EmberJoinMethod
NODE_ROUTER = const(2)            # EmberNodeType


def _reversed(b):
    # EUI-64s and extended PAN ids go little-endian on the wire, are printed big-endian
    # (MicroPython slices have no negative step)
    return bytes(reversed(bytes(b)))


def initial_security_state(link_key, bitmask=SE_JOIN_BITMASK):
    """setInitialSecurityState parameters: bitmask u16, preconfigured key 16, network key
    16 (none: zeros, the trust centre sends it), key sequence u8, trust-centre EUI-64 8
    (not known before joining: zeros)."""
    if len(link_key) != 16:
        raise EzspError(E_EZSP, "a link key is 16 bytes, not %d" % len(link_key))
    return struct.pack("<H", bitmask) + bytes(link_key) + bytes(16) + b"\x00" + bytes(8)


def start_scan(channel_mask, duration=3, scan_type=ACTIVE_SCAN):
    return struct.pack("<BIB", scan_type, channel_mask, duration)


def parse_network_found(p):
    """networkFoundHandler -> dict: EmberZigbeeNetwork (channel, PAN id, extended PAN id
    little-endian on the wire, returned big-endian as printed, allowing join, stack
    profile, nwk update id), last hop LQI and RSSI."""
    _need(p, 16)
    ch, pan = struct.unpack_from("<BH", p, 0)
    return {"channel": ch, "pan_id": pan, "extended_pan_id": _reversed(p[3:11]),
            "allowing_join": bool(p[11]), "stack_profile": p[12], "nwk_update_id": p[13],
            "lqi": p[14], "rssi": p[15] - 256 if p[15] > 127 else p[15]}


def parse_scan_complete(version, p):
    """scanCompleteHandler -> (channel, status); status 0 = the scan completed."""
    _need(p, 1)
    return p[0], parse_status(version, p[1:])


def join_network(network, node_type=NODE_ROUTER, tx_power=8):
    """joinNetwork parameters: node type, then EmberNetworkParameters of the network found
    (extended PAN id LE, PAN id, tx power, channel, join method, nwk manager id, nwk
    update id, channel mask: the found channel only)."""
    return (bytes((node_type,)) + _reversed(network["extended_pan_id"])
            + struct.pack("<HbBBHBI", network["pan_id"], tx_power, network["channel"], JOIN_MAC_ASSOCIATION,
                          0, network["nwk_update_id"], 1 << network["channel"]))


def find_and_rejoin(version, channel_mask, have_current_network_key=False):
    """findAndRejoinNetwork parameters: haveCurrentNetworkKey (false: a trust-centre
    rejoin, the CH sends the network key again under our link key), channel mask; from v14
    also the rejoin reason and our node type."""
    p = struct.pack("<BI", 1 if have_current_network_key else 0, channel_mask)
    if version >= LAYOUT_V14:
        p += bytes((REJOIN_DUE_TO_APP_EVENT_1, NODE_ROUTER))
    return p


def leave_network(version):
    """leaveNetwork parameters: none before v14, then the options (none: a plain leave)."""
    return b"\x00" if version >= LAYOUT_V14 else b""


def holds_no_network(version, status):
    """True when findAndRejoinNetwork's status says the module holds no network."""
    return status == (SL_NOT_JOINED if version >= LAYOUT_V14 else EMBER_NOT_JOINED)


def no_network_key(version, status):
    """True when a join or rejoin status says the trust centre sent no network key."""
    return status == (SL_NO_NETWORK_KEY_RECEIVED if version >= LAYOUT_V14 else EMBER_NO_NETWORK_KEY_RECEIVED)


def parse_security_state(version, p):
    """getCurrentSecurityState response -> (status, EmberCurrentSecurityBitmask, the trust
    centre's EUI-64 big-endian as printed: the CH's, what its certificate's subject must be)."""
    n = 4 if version >= LAYOUT_V14 else 1
    _need(p, n + 10)
    return parse_status(version, p), struct.unpack_from("<H", p, n)[0], _reversed(p[n + 2:n + 10])


def parse_certificate(version, p):
    """getCertificate283k1 response -> (status, 74-byte certificate)."""
    n = 4 if version >= LAYOUT_V14 else 1
    _need(p, n + CERT_LEN)
    return parse_status(version, p), bytes(p[n:n + CERT_LEN])


def parse_cbke_keys(version, p):
    """generateCbkeKeysHandler283k1 -> (status, 37-byte ephemeral public key)."""
    n = 4 if version >= LAYOUT_V14 else 1
    _need(p, n + PUBLIC_KEY_LEN)
    return parse_status(version, p), bytes(p[n:n + PUBLIC_KEY_LEN])


def calculate_smacs(am_initiator, partner_certificate, partner_public_key):
    if len(partner_certificate) != CERT_LEN or len(partner_public_key) != PUBLIC_KEY_LEN:
        raise EzspError(E_EZSP, "calculateSmacs283k1 needs a %d-byte certificate and a %d-byte key"
                        % (CERT_LEN, PUBLIC_KEY_LEN))
    return bytes((1 if am_initiator else 0,)) + bytes(partner_certificate) + bytes(partner_public_key)


def parse_smacs(version, p):
    """calculateSmacsHandler283k1 -> (status, initiator SMAC, responder SMAC)."""
    n = 4 if version >= LAYOUT_V14 else 1
    _need(p, n + 2 * SMAC_LEN)
    return parse_status(version, p), bytes(p[n:n + SMAC_LEN]), bytes(p[n + SMAC_LEN:n + 2 * SMAC_LEN])


def store_link_key(store):
    return b"\x01" if store else b"\x00"
