"""The EmberZNet stack behind the emulated NCP: the EZSP commands a host sends at start-up
and to read network and security state (bellows `info`, zigpy/ZHA's connect, a gateway's
diagnostics), answered the way a commissioned, joined router or end device answers them.

Frame ids and parameter layouts are UG100's (EZSP reference, v8 to v18 frame formats),
cross-checked against bellows' command tables in tests/test_bellows_info.py. Two layout
changes matter here:
  - v14 (EmberZNet 8.0) turned every EmberStatus and EzspStatus result into a 4-byte
    sl_status_t, and exportKey's response gained the context and moved status first;
  - exportKey exists from v12, getNetworkKeyInfo from v13 (earlier NCPs answer
    invalidCommand for them, as for any id they do not know).

Values come from NodeConfig (the node's identity, its network and its keys); RAM state
(configuration values, endpoints, counters) goes back to power-on defaults on every reset,
as on the chip."""
import struct

# ---- frame ids (UG100) -------------------------------------------------------------------
ADD_ENDPOINT = 0x0002
NOP = 0x0005
GET_MFG_TOKEN = 0x000B
GET_EUI64 = 0x0026
GET_NODE_ID = 0x0027
GET_NETWORK_PARAMETERS = 0x0028
CUSTOM_FRAME = 0x0047
GET_CONFIGURATION_VALUE = 0x0052
SET_CONFIGURATION_VALUE = 0x0053
READ_AND_CLEAR_COUNTERS = 0x0065
GET_CURRENT_SECURITY_STATE = 0x0069
ECHO = 0x0081
GET_VALUE = 0x00AA
SET_VALUE = 0x00AB
READ_COUNTERS = 0x00F1
EXPORT_KEY = 0x0114
GET_NETWORK_KEY_INFO = 0x0116

# the first protocol version that has the command (older NCPs: invalidCommand)
SINCE = {EXPORT_KEY: 12, GET_NETWORK_KEY_INFO: 13}

# ---- statuses ----------------------------------------------------------------------------
EZSP_SUCCESS = 0x00
EZSP_ERROR_OUT_OF_MEMORY = 0x35
EZSP_ERROR_INVALID_VALUE = 0x36
EZSP_ERROR_INVALID_ID = 0x37
EZSP_ERROR_INVALID_CALL = 0x38
EMBER_INVALID_CALL = 0x70
EMBER_NOT_JOINED = 0x93
SL_OK = 0x0000
SL_INVALID_STATE = 0x0002
SL_NOT_JOINED = 0x0017
SL_NO_MORE_RESOURCE = 0x001A
SL_INVALID_PARAMETER = 0x0021
SL_NOT_FOUND = 0x002D

# what a v14+ NCP reports instead of each EzspStatus error (the same mapping hosts apply
# when they read an older NCP)
_EZSP_TO_SL = {EZSP_SUCCESS: SL_OK, EZSP_ERROR_OUT_OF_MEMORY: SL_NO_MORE_RESOURCE,
               EZSP_ERROR_INVALID_VALUE: SL_INVALID_PARAMETER, EZSP_ERROR_INVALID_ID: SL_INVALID_PARAMETER,
               EZSP_ERROR_INVALID_CALL: SL_INVALID_PARAMETER}

# ---- ids ---------------------------------------------------------------------------------
NODE_COORDINATOR, NODE_ROUTER, NODE_END_DEVICE, NODE_SLEEPY_END_DEVICE = 1, 2, 3, 4
NODE_TYPES = {"router": NODE_ROUTER, "end-device": NODE_END_DEVICE, "sleepy-end-device": NODE_SLEEPY_END_DEVICE}
UNKNOWN_NODE_ID = 0xFFFE

VALUE_FREE_BUFFERS = 0x03
VALUE_MAXIMUM_INCOMING_TRANSFER_SIZE = 0x05
VALUE_MAXIMUM_OUTGOING_TRANSFER_SIZE = 0x06
VALUE_STACK_TOKEN_WRITING = 0x07
VALUE_VERSION_INFO = 0x11
VALUE_NWK_FRAME_COUNTER = 0x23
VALUE_APS_FRAME_COUNTER = 0x24
VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS = 0x3A

# EzspConfigId -> power-on value (a typical NCP image); ids not here are unknown to it
CONFIG_DEFAULTS = {
    0x01: 75,    # PACKET_BUFFER_COUNT
    0x02: 16,    # NEIGHBOR_TABLE_SIZE
    0x03: 10,    # APS_UNICAST_MESSAGE_COUNT
    0x04: 2,     # BINDING_TABLE_SIZE
    0x05: 8,     # ADDRESS_TABLE_SIZE
    0x06: 8,     # MULTICAST_TABLE_SIZE
    0x07: 16,    # ROUTE_TABLE_SIZE
    0x08: 8,     # DISCOVERY_TABLE_SIZE
    0x0C: 2,     # STACK_PROFILE (Zigbee PRO)
    0x0D: 5,     # SECURITY_LEVEL
    0x10: 30,    # MAX_HOPS
    0x11: 6,     # MAX_END_DEVICE_CHILDREN
    0x12: 7680,  # INDIRECT_TRANSMISSION_TIMEOUT (ms)
    0x13: 8,     # END_DEVICE_POLL_TIMEOUT
    0x17: 0,     # TX_POWER_MODE
    0x18: 0,     # DISABLE_RELAY
    0x19: 2,     # TRUST_CENTER_ADDRESS_CACHE_SIZE
    0x1A: 7,     # SOURCE_ROUTE_TABLE_SIZE
    0x1C: 1,     # FRAGMENT_WINDOW_SIZE (SE: one block per APS ack)
    0x1D: 50,    # FRAGMENT_DELAY_MS
    0x1E: 4,     # KEY_TABLE_SIZE
    0x1F: 1600,  # APS_ACK_TIMEOUT (ms)
    0x22: 1,     # PAN_ID_CONFLICT_REPORT_THRESHOLD
    0x24: 0,     # REQUEST_KEY_TIMEOUT
    0x29: 0,     # CERTIFICATE_TABLE_SIZE
    0x2A: 0,     # APPLICATION_ZDO_FLAGS
    0x2B: 15,    # BROADCAST_TABLE_SIZE
    0x2C: 0,     # MAC_FILTER_TABLE_SIZE
    0x2D: 1,     # SUPPORTED_NETWORKS
    0x2E: 1,     # SEND_MULTICASTS_TO_SLEEPY_ADDRESS
    0x34: 16,    # RETRY_QUEUE_SIZE
    0x35: 10,    # NEW_BROADCAST_ENTRY_THRESHOLD
    0x36: 300,   # TRANSIENT_KEY_TIMEOUT_S
    0x37: 0xFF,  # BROADCAST_MIN_ACKS_NEEDED
    0x38: 0,     # TC_REJOINS_USING_WELL_KNOWN_KEY_TIMEOUT_S
}

# EzspMfgTokenId -> size in bytes (UG100 / the token map); a blank token reads all 0xFF
MFG_STRING, MFG_BOARD_NAME, MFG_CUSTOM_EUI_64 = 0x01, 0x02, 0x0C
MFG_TOKEN_SIZES = {0x00: 2, 0x01: 16, 0x02: 16, 0x03: 2, 0x04: 2, 0x05: 16, 0x06: 40, 0x07: 8,
                   0x08: 2, 0x09: 92, 0x0A: 20, 0x0B: 1, 0x0C: 8, 0x0D: 2}

MAX_TRANSFER = 1280  # APS fragmentation limit both ways (the stack's default)
COUNTER_TYPES = 41   # EMBER_COUNTER_TYPE_COUNT: readCounters answers this many u16

# EmberCurrentSecurityBitmask: joined with a trust-centre link key (SE: from the install code)
SECURITY_HAVE_TC_LINK_KEY = 0x0010
KEY_NETWORK, KEY_TC_LINK = 1, 2     # sl_zb_sec_man_key_type_t


class NodeConfig:
    """The node's identity and its network (what a commissioned PPMID module holds in its
    tokens). All fields can be overridden as keyword arguments."""

    def __init__(self, **kw):
        self.node_type = NODE_ROUTER
        self.eui64 = bytes.fromhex("000d6f0000a1b2c3")   # big-endian, as printed
        self.node_id = 0x4A7C
        self.pan_id = 0x1A62
        self.extended_pan_id = bytes.fromhex("00124b0001c0ffee")
        self.channel = 20
        self.tx_power = 8
        self.nwk_manager_id = 0x0000
        self.nwk_update_id = 0
        self.channels = 0x07FFF800     # 11..26
        self.tc_eui64 = bytes.fromhex("0000b0d5b3ffff00")   # the CH is the trust centre
        self.network_key = bytes(range(0x10, 0x20))
        self.network_key_seq = 0
        self.tc_link_key = bytes(range(0xA0, 0xB0))
        self.mfg_string = b"PPMID emulator"
        self.board_name = b"EFR32MG21 NCP"
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError("NodeConfig has no %s" % k)
            setattr(self, k, v)


def _lv(data):
    return bytes((len(data),)) + bytes(data)


def _token(data, size):
    return (bytes(data) + b"\xff" * size)[:size]


class Stack:
    def __init__(self, ncp, config=None):
        self.ncp = ncp
        self.config = config or NodeConfig()
        self.nwk_frame_counter = 0x00012340
        self.aps_frame_counter = 0x00000560
        self.power_on()

    def power_on(self):
        self.initialized = False      # networkInit ran: configuration and endpoints are fixed
        self.config_values = dict(CONFIG_DEFAULTS)
        self.values = {VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS: b"\x00", VALUE_STACK_TOKEN_WRITING: b"\x01"}
        self.endpoints = {}
        self.counters = [0] * COUNTER_TYPES

    # ---- per-version result encodings ----------------------------------------------------
    @property
    def v14(self):
        return self.ncp.version >= 14

    def ezsp_status(self, code):
        """An EzspStatus result (u8), sl_status_t (u32) from v14."""
        return struct.pack("<I", _EZSP_TO_SL[code]) if self.v14 else bytes((code,))

    def ember_status(self, ember, sl):
        """An EmberStatus result (u8), sl_status_t (u32) from v14."""
        return struct.pack("<I", sl) if self.v14 else bytes((ember,))

    def sl(self, code):
        return struct.pack("<I", code)

    @property
    def joined(self):
        return self.ncp.joined

    def version_info(self):
        # EmberVersion: build u16, major, minor, patch, special, type (GA = 0xAA);
        # major.minor.patch from the stack version the version command reports
        sv = self.ncp.stack_version
        return struct.pack("<HBBBBB", 0, sv >> 12, (sv >> 8) & 0xF, (sv >> 4) & 0xF, sv & 0xF, 0xAA)

    def count(self, counter_type, n=1):
        if 0 <= counter_type < COUNTER_TYPES:
            self.counters[counter_type] = min(0xFFFF, self.counters[counter_type] + n)

    # ---- utilities ----------------------------------------------------------------------
    def nop(self, p):
        return b""

    def echo(self, p):
        n = p[0]
        if len(p) < 1 + n:
            raise ValueError("echo data cut short")
        return _lv(p[1:1 + n])

    def get_mfg_token(self, p):
        tid = p[0]
        size = MFG_TOKEN_SIZES.get(tid)
        if size is None:
            return _lv(b"")            # an id the token map does not have: no data
        c = self.config
        data = {MFG_STRING: c.mfg_string, MFG_BOARD_NAME: c.board_name}.get(tid, b"")
        return _lv(_token(data, size))

    def custom_frame(self, p):
        # a stock image has no XNCP extension: the custom-frame callback is the stub, which
        # refuses every frame
        return self.ember_status(EMBER_INVALID_CALL, SL_INVALID_STATE) + _lv(b"")

    def read_counters(self, p):
        return struct.pack("<%dH" % COUNTER_TYPES, *self.counters)

    def read_and_clear_counters(self, p):
        out = self.read_counters(p)
        self.counters = [0] * COUNTER_TYPES
        return out

    # ---- configuration ----------------------------------------------------------------------
    def get_configuration_value(self, p):
        cid = p[0]
        if cid not in self.config_values:
            return self.ezsp_status(EZSP_ERROR_INVALID_ID) + b"\x00\x00"
        return self.ezsp_status(EZSP_SUCCESS) + struct.pack("<H", self.config_values[cid])

    def set_configuration_value(self, p):
        cid, value = struct.unpack_from("<BH", p, 0)
        if cid not in self.config_values:
            return self.ezsp_status(EZSP_ERROR_INVALID_ID)
        if self.initialized:
            # the tables are allocated when the stack starts: too late to size them
            return self.ezsp_status(EZSP_ERROR_INVALID_CALL)
        self.config_values[cid] = value
        return self.ezsp_status(EZSP_SUCCESS)

    def get_value(self, p):
        vid = p[0]
        value = self._value(vid)
        if value is None:
            return self.ezsp_status(EZSP_ERROR_INVALID_ID) + _lv(b"")
        return self.ezsp_status(EZSP_SUCCESS) + _lv(value)

    def _value(self, vid):
        if vid in self.values:
            return self.values[vid]
        return {
            VALUE_VERSION_INFO: self.version_info,
            VALUE_FREE_BUFFERS: lambda: bytes((min(255, self.config_values[0x01] - 5),)),
            VALUE_MAXIMUM_INCOMING_TRANSFER_SIZE: lambda: struct.pack("<H", MAX_TRANSFER),
            VALUE_MAXIMUM_OUTGOING_TRANSFER_SIZE: lambda: struct.pack("<H", MAX_TRANSFER),
            VALUE_NWK_FRAME_COUNTER: lambda: struct.pack("<I", self.nwk_frame_counter),
            VALUE_APS_FRAME_COUNTER: lambda: struct.pack("<I", self.aps_frame_counter),
        }.get(vid, lambda: None)()

    # values a host may write, with their sizes; the others are read-only or unknown
    WRITABLE = {VALUE_FORCE_TX_AFTER_FAILED_CCA_ATTEMPTS: 1, VALUE_STACK_TOKEN_WRITING: 1}

    def set_value(self, p):
        vid, n = p[0], p[1]
        data = bytes(p[2:2 + n])
        if len(data) != n:
            raise ValueError("setValue value cut short")
        if vid not in self.WRITABLE:
            known = self._value(vid) is not None
            return self.ezsp_status(EZSP_ERROR_INVALID_CALL if known else EZSP_ERROR_INVALID_ID)
        if n != self.WRITABLE[vid]:
            return self.ezsp_status(EZSP_ERROR_INVALID_VALUE)
        self.values[vid] = data
        return self.ezsp_status(EZSP_SUCCESS)

    def add_endpoint(self, p):
        ep, profile, device, dver, n_in, n_out = struct.unpack_from("<BHHBBB", p, 0)
        if len(p) < 8 + 2 * (n_in + n_out):
            raise ValueError("addEndpoint cluster lists cut short")
        if self.initialized:
            return self.ezsp_status(EZSP_ERROR_INVALID_CALL)
        if ep in self.endpoints or ep in (0, 0xFF):
            return self.ezsp_status(EZSP_ERROR_INVALID_VALUE)
        if len(self.endpoints) >= 8:
            return self.ezsp_status(EZSP_ERROR_OUT_OF_MEMORY)
        self.endpoints[ep] = (profile, device, dver)
        return self.ezsp_status(EZSP_SUCCESS)

    # ---- network state ---------------------------------------------------------------------
    def get_eui64(self, p):
        return self.config.eui64[::-1]

    def get_node_id(self, p):
        return struct.pack("<H", self.config.node_id if self.joined else UNKNOWN_NODE_ID)

    def get_network_parameters(self, p):
        c = self.config
        if not self.joined:
            return (self.ember_status(EMBER_NOT_JOINED, SL_NOT_JOINED) + bytes((0,))
                    + bytes(8) + struct.pack("<HBBBHBI", 0, 0, 0, 0, 0, 0, 0))
        # EmberNetworkParameters: extended PAN id (LE), PAN id, tx power, channel, join
        # method (MAC association), nwk manager, nwk update id, channel mask
        return (self.ember_status(0, SL_OK) + bytes((c.node_type,)) + c.extended_pan_id[::-1]
                + struct.pack("<HbBBHBI", c.pan_id, c.tx_power, c.channel, 0, c.nwk_manager_id,
                              c.nwk_update_id, c.channels))

    # ---- security state ----------------------------------------------------------------------
    def get_current_security_state(self, p):
        if not self.joined:
            return self.ember_status(EMBER_NOT_JOINED, SL_NOT_JOINED) + struct.pack("<H", 0) + bytes(8)
        return (self.ember_status(0, SL_OK) + struct.pack("<H", SECURITY_HAVE_TC_LINK_KEY)
                + self.config.tc_eui64[::-1])

    def get_network_key_info(self, p):
        c = self.config
        return self.sl(SL_OK) + struct.pack("<BBBBI", 1, 0, c.network_key_seq, 0, self.nwk_frame_counter)

    def export_key(self, p):
        # sl_zb_sec_man_context_t: core key type, key index, derived type (u8 in v12, u16
        # from v13), EUI64, network index, flags, PSA algorithm permission u32
        size = 17 if self.ncp.version < 13 else 18
        context = bytes(p[:size])
        if len(context) != size:
            raise ValueError("exportKey context cut short")
        c = self.config
        key = {KEY_NETWORK: c.network_key, KEY_TC_LINK: c.tc_link_key}.get(context[0])
        status = SL_OK if key is not None else SL_NOT_FOUND
        key = key or bytes(16)
        if self.v14:
            return self.sl(status) + key + context
        return key + self.sl(status)


COMMANDS = {
    NOP: Stack.nop,
    ECHO: Stack.echo,
    GET_MFG_TOKEN: Stack.get_mfg_token,
    CUSTOM_FRAME: Stack.custom_frame,
    READ_COUNTERS: Stack.read_counters,
    READ_AND_CLEAR_COUNTERS: Stack.read_and_clear_counters,
    GET_CONFIGURATION_VALUE: Stack.get_configuration_value,
    SET_CONFIGURATION_VALUE: Stack.set_configuration_value,
    GET_VALUE: Stack.get_value,
    SET_VALUE: Stack.set_value,
    ADD_ENDPOINT: Stack.add_endpoint,
    GET_EUI64: Stack.get_eui64,
    GET_NODE_ID: Stack.get_node_id,
    GET_NETWORK_PARAMETERS: Stack.get_network_parameters,
    GET_CURRENT_SECURITY_STATE: Stack.get_current_security_state,
    GET_NETWORK_KEY_INFO: Stack.get_network_key_info,
    EXPORT_KEY: Stack.export_key,
}
