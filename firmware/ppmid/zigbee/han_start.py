# What the HAN link (zigbee/han.py) runs only after each ASH reset of the module: the
# bring-up (EZSP version, payload limit, network, commissioning when an install code is
# configured), the supervisor's verdict on a failed bring-up or link, and the read of the
# trust centre's EUI-64; and its options' DEFAULTS (read by zigbee/han_init.py, the
# constructor, and by the config check at boot). Apart from han.py, and dropped again
# after each use, so that the running link does not hold this code (docs/memory.md; the
# names it interns stay). The constructor is zigbee/han_init.py's: this module is loaded
# again at every module reset, and a recovery should not load the boot's code with it.
from micropython import const

from ppmid.zigbee import ezsp as E
from ppmid.clock import wait_event_ms

_MIN_VERSION = const(8)
_MAX_VERSION = const(18)
# the bring-up's EZSP commands (UG100), sent only from here: private, so neither ezsp.py
# nor this module holds their names (a name stays interned once a module loaded it:
# docs/memory.md, session 11); the NCP's side names them in ezsp_ncp.py
_VERSION = const(0x0000)
_NETWORK_INIT = const(0x0017)
_NETWORK_STATE = const(0x0018)
_MAXIMUM_PAYLOAD_LENGTH = const(0x0033)
_JOINED_NETWORK = const(2)     # networkState's answer: joined
# the sentences of the supervisor's log lines (failed), by their keys in
# zigbee/han_errors.py (han.py's _S_UNEXPECTED too: its fallback when this module cannot load)
_S_BRING_UP = const(5)
_S_UNEXPECTED = const(6)

DEFAULTS = {
    "ezsp_version": 13,        # what we ask for first; any of v8..v18 the NCP has is accepted
    "transfer_size": 1500,     # our maxIncomingTransferSize; the CH's own is used outbound
    "max_message": 8192,       # largest GBCS message sent or reassembled
    "rx_queue": 16,            # complete incoming messages held for the relay
    "send_timeout_s": 30,      # send(): budget including waiting for the link to recover
    "sent_timeout_s": 10,      # per fragment: sendUnicast accepted -> messageSentHandler
    "network_timeout_s": 10,
    "backoff_max_s": 30,
    "unsupported_retry_s": 60,
    "resend_window_s": 10,     # how long a confirmed message is held for a TransferDataError
}


def _drop():
    # this module runs at start-up and for each bring-up only: it drops itself when either
    # is done, so that the running link does not hold it (ZigbeeHan keeps no reference)
    from ppmid.modules import unload
    unload(__name__, "ppmid.modules")


def legacy_version_frame(seq, desired):
    # the version command in the frame format every EZSP version reads (no frame id high
    # byte): the first command after a reset, before the version is known
    return bytes((seq & 0xFF, 0, 0, desired))


async def negotiate(ezsp, desired=13):
    """The EZSP version: the legacy version frame, then the extended one. Returns it or
    raises EzspError(E_MODULE_UNSUPPORTED)."""
    ezsp._legacy = True
    seq = ezsp._next_seq()
    r = await ezsp._exchange(_VERSION, legacy_version_frame(seq, desired), seq)
    if len(r) < 4:
        raise E.EzspError(E.E_EZSP, "short version response")
    v = r[0]
    ezsp.stack_type = r[1]
    ezsp.stack_version = r[2] | (r[3] << 8)
    if not _MIN_VERSION <= v <= _MAX_VERSION:
        raise E.EzspError(E.E_MODULE_UNSUPPORTED, "Zigbee module speaks EZSP v%d (stack 0x%04x); "
                          "this gateway supports v%d to v%d" % (v, ezsp.stack_version, _MIN_VERSION, _MAX_VERSION))
    ezsp._legacy = False
    r = await ezsp.command(_VERSION, bytes((v,)))
    if len(r) < 4 or r[0] != v:
        raise E.EzspError(E.E_MODULE_UNSUPPORTED, "Zigbee module refused EZSP v%d" % v)
    ezsp.version = v
    return v


def stack_version_text(stack_version):
    s = stack_version or 0
    return "%d.%d.%d.%d" % (s >> 12, (s >> 8) & 15, (s >> 4) & 15, s & 15)


async def bring_up(han, reset_code):
    """ZigbeeHan._bring_up after the module's ASH reset (reset_code: its RSTACK code); this
    module is dropped after it, whether it succeeded or failed."""
    try:
        await _bring_up(han, reset_code)
    finally:
        _drop()


async def _bring_up(han, reset_code):
    from ppmid.zigbee.han import HanError, E_HAN_DOWN
    ezsp = han._ezsp
    # the reset module expects the legacy version command again; what waited died with it
    ezsp.version = None
    for w in ezsp._waiting.values():
        w.result = E.EzspError(E.E_EZSP, "link reset")
        w.set()
    ezsp._waiting = {}
    han._tc_eui = b""   # read below once the network is up (a re-commissioning may change it)
    v = await negotiate(ezsp, han.ezsp_version)
    han.module = {"ezsp_version": v, "stack_version": stack_version_text(ezsp.stack_version),
                  "stack_type": ezsp.stack_type, "reset_code": reset_code}
    han._logf("module: EZSP v%d, stack %s", v, han.module["stack_version"])
    han._max_payload = (await ezsp.command(_MAXIMUM_PAYLOAD_LENGTH))[0]
    if han._max_payload < 10:
        raise HanError(E_HAN_DOWN, "module payload limit %d is unusable" % han._max_payload)
    han._logf("module payload limit %d", han._max_payload)
    han._net_event.clear()
    status = 0
    if (await ezsp.command(_NETWORK_STATE))[0] == _JOINED_NETWORK:
        han._net_up = True
    else:
        status = E.parse_status(ezsp.version, await ezsp.command(_NETWORK_INIT, b"\x00\x00"))
        han._logf("networkInit status 0x%x", status)
        if status == 0 and not han._net_up:
            if not await wait_event_ms(han._net_event, int(han.network_timeout_s * 1000)):
                han._logf("no network-up within %ss", han.network_timeout_s)
        if not han._net_up and (await ezsp.command(_NETWORK_STATE))[0] == _JOINED_NETWORK:
            han._net_up = True
    c = han.commission_settings
    if c:  # an install code configured: commission if the module needs it
        from ppmid.zigbee.commission import bring_up as commission
        await commission(han, c, status)
    han._tc_eui = None
    if v >= E.LAYOUT_V14 and han._net_up:
        await _trust_centre(han)
    han._up = True
    han._update_status()
    if not han._net_up:
        han._set_status("network-down", "the module is not joined to the HAN")


def failed(han, exc):
    """ZigbeeHan.run's verdict on a failed bring-up, a failed link or a bug below it: said
    in the status or the log. -> the ms to wait before the next reset when the module cannot
    be used (the status "module-unsupported"), else 0 (the supervisor's backoff). This
    module is dropped after it."""
    try:
        from ppmid.zigbee.han import HanError
        from ppmid.zigbee.ashlink import AshError
        if not isinstance(exc, (HanError, AshError, E.EzspError)):
            han._logf(_S_UNEXPECTED, exc)
        elif exc.code == E.E_MODULE_UNSUPPORTED:
            han._set_status("module-unsupported", exc.message)
            return int(han.unsupported_retry_s * 1000)
        elif isinstance(exc, HanError):
            han._logf("%s", exc)
        else:
            han._logf(_S_BRING_UP, exc)
        return 0
    finally:
        _drop()


async def read_trust_centre(han):
    """ZigbeeHan._want_tc's task: the trust centre's EUI-64 into han._tc_eui (None again if
    the module cannot say); this module is dropped after it."""
    try:
        await _trust_centre(han)
    finally:
        _drop()


async def _trust_centre(han):
    # getCurrentSecurityState names the trust centre the module joined under (kept in its
    # tokens): the CH. A v14 module names each frame's sender the same way, little-endian
    from ppmid.modules import unload
    han._tc_eui = b""
    try:
        # loaded inside the try: a load that fails leaves the read to the next frame
        from ppmid.zigbee import ezsp_cbke as C
        tc = C.parse_security_state(han._ezsp.version, await han._ezsp.command(C.GET_CURRENT_SECURITY_STATE))
        if tc[0] != 0 or tc[2] == bytes(8):
            raise E.EzspError(E.E_EZSP, "status 0x%x, trust centre %s" % (tc[0], _hex(tc[2])))
        han._tc_eui = C._reversed(tc[2])
        han._logf("trust centre %s: tunnel and Time frames from it alone", _hex(tc[2]))
    except Exception as exc:  # a task of its own: say why, and read again at the next frame
        han._tc_eui = None
        han._logf("trust centre unknown (%r): tunnel and Time frames dropped until it is read", exc)
    if han.commission is None:
        unload("ppmid.zigbee.ezsp_cbke")   # commission.py keeps it while it runs


def _hex(b):
    import binascii
    return binascii.hexlify(b).decode().upper()
