# ZigbeeHan's constructor (zigbee/han.py): its attributes (what each is, said here), the
# ASH link and EZSP under it, its options from the config, the tunnel. Run once at boot and
# dropped after with zigbee/han_start.py, whose DEFAULTS it reads, so that the running link
# holds neither (docs/memory.md, "Session 14, resident code that never runs"). Apart from
# han_start.py, which the HAN loads again at every module reset: a recovery does not load
# this code.
import asyncio

from ppmid.zigbee import ezsp as E


def set_up(han, reader, writer, config, log, on_status, n_counters, ack_slots):
    """ZigbeeHan's constructor (zigbee/han.py), run once at boot: its attributes, the ASH
    link and EZSP under it, its options (_options) and the tunnel. n_counters, ack_slots:
    han.py's private consts (_COUNTERS, _ACK_SLOTS). This module, and han_start (whose
    DEFAULTS the options read), are dropped after it."""
    try:
        _set_up(han, reader, writer, config, log, on_status, n_counters, ack_slots)
    finally:
        from ppmid.modules import unload
        unload(__name__, "ppmid.zigbee.han_start", "ppmid.modules")


def _set_up(han, reader, writer, config, log, on_status, n_counters, ack_slots):
    # han.py's modules, imported here: the bring-up, which loads this module again after
    # each reset, does not need them
    from ppmid.zigbee.ashlink import AshLink
    from ppmid.zigbee import tunnel as T
    han._log = log
    han.on_status = on_status
    han.status = "starting"
    han.status_detail = ""
    han.status_changed = asyncio.Event()
    han.module = {}               # ezsp version, stack version, reset code
    han.counters = [0] * n_counters   # by han.py's _C_... index
    han._link = AshLink(reader, writer, han._on_frame, ready=han._ready, log=log,
                         on_fail=han._on_link_fail)
    han._ezsp = E.Ezsp(han._link, han._on_callback, log=log)
    # What the (synchronous) receive callback queues for the tasks that take it: complete
    # messages for receive(), tunnel replies for _reply_loop, fragment acks for _ack_loop,
    # the CH's refusals (_rejected) for _resend_loop. One event for the four: it is set
    # whenever any of them gets something, and each taker looks at its own queue before
    # it clears and waits again, so a wake-up meant for another is only a look, and none
    # is lost.
    han._queued = asyncio.Event()
    han._rxq = []
    han._sent = {}                # tag -> the fragment's Event (_send_zcl)
    han._tag = 0
    han._send_lock = asyncio.Lock()
    han._replies = []
    han._net_up = False
    han._net_event = asyncio.Event()
    han._ready_event = asyncio.Event()   # set while status == running
    han._max_payload = 0
    han._sent_tid = None
    han._sent_pieces = 1
    han._up = False               # bring-up complete on the current link
    # the incoming message arriving in APS fragments (one at a time): (key, started_ms,
    # pieces), key: sender << 8 | the APS counter every fragment of it carries; pieces
    # by index, as many as fragment 0 announced, None where not yet. None: no message
    han._frag = None
    han._frag_done = None         # (key, ticks_ms) of the message last reassembled
    han._gbt = None
    # The messages the CH confirmed lately, oldest first, each sent again if the CH
    # refuses it after all (TransferDataError; _do_resends): (tunnel id it went through,
    # message, sent_ms, pieces: the TransferData frames it took, GBT blocks or 1,
    # pace: what send() was handed to pace a resend, or None, and the message's number
    # among the sends (han.py's _sends), so that a refusal is charged only to messages
    # sent before it came).
    # message None: a send that failed once its last TransferData may have reached the
    # CH; it holds its place, never sent again. Tuples compare by value: taken out by
    # index or identity only (two could be equal)
    han._recent = []
    han._rejected = {}            # tunnel id -> [TransferDataErrors the CH sent for it, _sends then]
    # APS acknowledgements of incoming fragments: a small ring of sendReply parameter
    # blocks in one buffer, filled by the (synchronous) receive callback, sent by _ack_loop
    han._acks = memoryview(bytearray(ack_slots * E.SEND_REPLY_ACK_LEN))
    han._ack_head = 0
    han._ack_count = 0
    han._tasks = []
    # SE profile frames of clusters other than the tunnel: on_zcl(sender NWK, cluster,
    # ZCL frame), called synchronously (set by the relay's top-up road, which answers
    # for its own errors); counted and dropped while None
    han.on_zcl = None
    # Time cluster frames, while a read of the CH's clock waits for its answer
    # (zigbee/chclock.py): on_time(the incoming message's dict), synchronously
    han.on_time = None
    han.commission = None         # zigbee/commission.py's Commissioner, once needed
    # the trust centre's (the CH's) EUI-64 as a v14 module names a frame's sender
    # (little-endian), read once the network is up (zigbee/han_start.py read_trust_centre); b"": being
    # read; None: unknown. Tunnel and Time frames whose sender it is not are dropped
    han._tc_eui = None
    _options(han, config)   # han.max_message etc.
    han.tunnel = T.TunnelServer(han.transfer_size)


def _options(han, cfg):
    """Sets ZigbeeHan's options as its attributes of the same names (han.max_message, ...):
    zigbee/han_start.py's DEFAULTS, limits.transfer_size / max_gbcs, the zigbee section's own keys (a config
    without sections is taken as that section); han.commission_settings is that section
    when it has an install code, else None. Attributes and not a dict of their own: the
    running link reads them per send, and their names are interned anyway (the config's
    keys), so a dict was one more object and a key's load per read (docs/memory.md,
    session 10). set_up is its caller."""
    from ppmid.zigbee.han_start import DEFAULTS
    out = dict(DEFAULTS)
    out["commission_settings"] = None
    if cfg:
        lim = cfg.get("limits") if isinstance(cfg.get("limits"), dict) else None
        if lim:
            if "transfer_size" in lim:
                out["transfer_size"] = lim["transfer_size"]
            if "max_gbcs" in lim:
                out["max_message"] = lim["max_gbcs"]
        z = cfg.get("zigbee") if isinstance(cfg.get("zigbee"), dict) else cfg
        for k in DEFAULTS:
            if k in z:
                out[k] = z[k]
        if z.get("install_code"):
            out["commission_settings"] = z   # zigbee/commission.py reads its own keys
    for k in out:
        setattr(han, k, out[k])
