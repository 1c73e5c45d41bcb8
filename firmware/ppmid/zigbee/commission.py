# Commissioning onto the smart-metering HAN (docs/zigbee.md "Commissioning"): the install
# code's link key as the preconfigured trust-centre key, an active scan on the configured
# channels, joinNetwork, then certificate-based key establishment (CBKE, suite 2) with the
# CH as trust centre through the NCP's CBKE library; a secured rejoin, then a trust-centre
# one, after the network stayed down; a clean re-commission when the CH forgot us or the
# host tools order one. Loaded only when the module has no network at start-up, has one but key
# establishment never completed, lost its network for longer than rejoin_after_s, or an
# order came (ZigbeeHan, relay/commission_order.py), so a commissioned gateway never holds
# this code. The config check (settings) runs at boot.
import asyncio
from micropython import const

from ppmid.errors import PpmidError, ConfigError
from ppmid.clock import wait_event_ms
from ppmid.zigbee import ezsp as E
from ppmid.zigbee import ezsp_cbke as C
from ppmid.zigbee import keyest as K
from ppmid.zigbee import installcode as IC
from ppmid.zigbee.tunnel import CH_NWK, PROFILE_SE

E_NO_NETWORK = "E_COMMISSION_NO_NETWORK"        # no joinable network on the channels
E_JOIN_REFUSED = "E_COMMISSION_JOIN_REFUSED"    # no network key: not in the CH's device log, or another key
E_MODULE = "E_COMMISSION_MODULE"                # the module refused a commissioning command
E_CBKE_TERMINATED = "E_CBKE_TERMINATED"         # the CH ended key establishment (status in the sentence)
E_CBKE_TIMEOUT = "E_CBKE_TIMEOUT"               # a step took longer than announced
E_CBKE_KEY_CONFIRM = "E_CBKE_KEY_CONFIRM"       # the CH's key confirmation does not match ours
E_CBKE_MODULE = "E_CBKE_MODULE"                 # the module's CBKE library failed (no certificate...)
E_CBKE_ISSUER = "E_CBKE_ISSUER"                 # the CH's certificate is not from our certificate's issuer
E_CBKE_SUBJECT = "E_CBKE_SUBJECT"               # the CH's certificate names a device other than the trust centre
E_NETWORKS = "E_COMMISSION_NETWORKS"            # more than one network open for joining: not guessed
E_REJOIN = "E_REJOIN_FAILED"                    # a rejoin found no network in time, or it ended otherwise
E_REJOIN_REFUSED = "E_REJOIN_REFUSED"           # nothing to rejoin, or the trust centre refused: re-commission
RETRY_NEVER = (IC.E_INSTALL_CODE, IC.E_INSTALL_CODE_CRC)

_EPHEMERAL_TIME_S = const(10)   # what we announce: our generate times, seconds
_CONFIRM_TIME_S = const(10)
_MARGIN_MS = const(2000)        # on top of a time the CH announced (air, NCP, CH)
_STEPS = const(16)              # the last steps kept for info
_KE_SLOTS = const(4)            # KE frames waiting: the exchange is lock-step, one answer due at a time
# the HAN link's counter of module resets: its index in han.counters (a list of ints), the
# place of "resets" in zigbee/han_counters.py's HAN
_C_RESETS = const(11)

KEYS = {"install_code": None, "channels": None, "ke_endpoint": 1, "scan_duration": 3,
        "join_timeout_s": 15, "ke_timeout_s": 10, "extended_pan_id": None, "rejoin_after_s": 20}


def extended_pan_id(text):
    """zigbee.extended_pan_id: 8 bytes in hex as printed (big-endian; colons, spaces and
    hyphens ignored) -> bytes, or ValueError."""
    h = "".join(c for c in text if c not in ":- ")
    if len(h) != 16:
        raise ValueError
    from binascii import unhexlify
    return unhexlify(h)


def settings(section, strict=False):
    """The config's "zigbee" section, checked: install code (its CRC too), channels
    (11..26), the CH's Key Establishment endpoint; the driver's own keys pass through.
    strict (the host tools): the install code and the extended PAN id as strings only;
    the board also takes the lists earlier firmware took (as the string they stand for)."""
    from ppmid.zigbee.han_start import DEFAULTS
    if not isinstance(section, dict):
        raise ConfigError("zigbee must be an object, not %r" % (section,))
    out = {}
    for k in section:
        if k not in KEYS and k not in DEFAULTS:
            raise ConfigError("unknown zigbee key %r" % k)
        out[k] = section[k]
    code = out.get("install_code")
    if code is not None:
        # a string: IC.parse reads anything else as bytes (5 as five zero bytes) or fails with
        # TypeError/ValueError, which boot does not catch. A list of byte values commissioned
        # with earlier firmware: a gateway holding one keeps it; the host tools refuse it
        if not isinstance(code, str):
            if strict or not isinstance(code, list) or any(not isinstance(b, int) or not 0 <= b <= 255 for b in code):
                raise ConfigError("zigbee.install_code must be the code as printed (a string of hex digits), not %r"
                                  % (code,))
            code = out["install_code"] = "".join("%02X" % b for b in code)
        try:
            IC.parse(code)
        except PpmidError as exc:
            raise ConfigError("zigbee.install_code: %s (%s)" % (exc.message, exc.code))
    ch = out.get("channels")
    if ch is not None and (not isinstance(ch, list) or not ch or
                           any(isinstance(c, bool) or not isinstance(c, int) or not 11 <= c <= 26 for c in ch)):
        raise ConfigError("zigbee.channels must be a list of channels 11 to 26")
    ext = out.get("extended_pan_id")
    if ext is not None:
        try:
            if not isinstance(ext, str):
                # a list of strings joined into the digits with earlier firmware: kept on a
                # gateway that holds one; the host tools refuse it
                if strict or not isinstance(ext, list) or any(not isinstance(p, str) for p in ext):
                    raise TypeError
                ext = out["extended_pan_id"] = "".join(ext)
            extended_pan_id(ext)
        except (ValueError, TypeError):
            raise ConfigError("zigbee.extended_pan_id must be the CH's extended PAN id, 8 bytes in hex, not %r" % (ext,))
    for k, lo, hi in (("ke_endpoint", 1, 240), ("scan_duration", 0, 14), ("join_timeout_s", 1, 600),
                      ("ke_timeout_s", 1, 600), ("rejoin_after_s", 1, 3600)):
        v = out.get(k, KEYS[k])
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError("zigbee.%s must be an integer from %d to %d" % (k, lo, hi))
    return out


COMMISSIONING = "commissioning"        # ZigbeeHan statuses while this runs
COMMISSION_FAILED = "commission-failed"
REJOINING = "rejoining"
REJOIN_FAILED = "rejoin-failed"
_KIND = {True: "secured", False: "trust-centre"}
_MODULES = ("ppmid.zigbee.commission", "ppmid.zigbee.keyest", "ppmid.zigbee.ezsp_cbke", "ppmid.zigbee.installcode")


def _marked(path):
    # the mark that key establishment completed (a file written on success); no path
    # configured: a network the module resumes counts as commissioned
    if not path:
        return True
    try:
        open(path).close()
        return True
    except OSError:
        return False


def _mark(path, done):
    if not path:
        return
    if done:
        with open(path, "w") as f:
            f.write("cbke ok\n")
    else:
        try:
            import os
            os.remove(path)
        except OSError:
            pass


def _drop():
    # nothing to do: this code leaves the heap again, like ppmid.boot's boot-only modules,
    # and is collected at once. Loading it again later (a rejoin) can then meet a heap too
    # fragmented for it (MemoryError, seen on the unix port's 256K test heap): the network
    # watch in zigbee/rejoin.py tries again rather than ending (docs/zigbee.md)
    from ppmid.modules import unload
    unload("ppmid.modules", *_MODULES)
    import gc
    gc.collect()


async def bring_up(han, c, init_status, resets=None):
    """ZigbeeHan's bring-up, after networkInit (init_status): commission a module with no
    network to resume, or one that joined but never completed key establishment (no mark
    of it: a power cut in the middle); retries with backoff until it succeeds (the link
    failing ends it: the supervisor resets and comes back here). resets: the driver's reset
    count when a network task (rejoin, order) runs this: a module reset since ends it."""
    from ppmid.clock import sleep_ms
    if resets is None:
        # the supervisor's bring-up after a module reset: a rejoin or order from before it
        # stops now (it would take this bring-up's stack statuses from the queue)
        t = getattr(han, "_net_task", None)
        if t is not None:
            t.cancel()
            han._net_task = None
    joined = init_status == 0
    path = c.get("state_path")
    if joined and (not han._net_up or _marked(path)):
        if han.commission is None:
            _drop()
        if not han._net_up:
            # resumed, but the network is not there (it went while the module was reset):
            # a trust-centre rejoin if it stays away (no NETWORK_DOWN will come to say so)
            from ppmid.zigbee.rejoin import network_lost
            network_lost(han)
        return
    if han.commission is None:
        han.commission = Commissioner(han, c, han._log)
    cm = han.commission
    if not joined:
        _mark(path, False)
    backoff = 1
    while resets is None or han.counters[_C_RESETS] == resets:
        han._set_status(COMMISSIONING, cm.state)
        try:
            if await cm.run(joined):
                _mark(path, True)
                return
        except PpmidError as exc:  # the install code: no retry can mend it
            han._set_status(COMMISSION_FAILED, "%s: %s" % (exc.code, exc.message))
            await sleep_ms(int(han.unsupported_retry_s * 1000))
            continue
        joined = han._net_up
        han._set_status(COMMISSION_FAILED, "%s: %s" % (cm.error, cm.detail))
        await sleep_ms(int(max(backoff, cm.retry_after_s or 0) * 1000))
        backoff = min(han.backoff_max_s, backoff * 2)


def _commissioner(han, c):
    if han.commission is None:
        han.commission = Commissioner(han, c, han._log)
    return han.commission


async def rejoin(han, c):
    """The network went down and stayed down for rejoin_after_s (ZigbeeHan): rejoins,
    backing off, until it is back (by one of them or by itself); each attempt a secured
    rejoin first (the module's network key: no trust centre involved, and none to
    rate-limit us), then a trust-centre rejoin (the network key changed while we were
    away). The module holding
    no network any more (the trust centre removed us) or the trust centre refusing the
    rejoin (the CH forgot this PPMID): a clean re-commission. The HAN statuses are this
    one's while it runs (rejoining, rejoin-failed, then commissioning's)."""
    fresh = han.commission is None
    cm = _commissioner(han, c)
    await _owning_status(han, _rejoin_until_up(han, c, cm))
    if fresh and han._net_up and cm.cbke is None:
        # rejoined on a gateway commissioned at an earlier boot: this code leaves the heap
        # again, as at such a boot (the log has the steps; info has no "commissioning")
        han.commission = None
        _drop()


def order_recommission(han, why):
    """A fresh commissioning ordered by the host tools (a changed CH: new install, change of
    tenancy; relay/commission_order.py): leave the network, forget the mark of key
    establishment, then the whole sequence as for a new module, in ZigbeeHan's network task
    (a rejoin running is replaced). False when the config has no install code, None while
    the driver brings the module up (the order is to be sent again)."""
    c = han.commission_settings
    if not c:
        return False
    from ppmid.zigbee.rejoin import network_task
    old = network_task(han)
    if not han._up and old is None:
        return None      # the module is being brought up (and maybe commissioned) right now
    han._net_task = asyncio.create_task(_ordered(han, c, why))
    if old is not None:
        old.cancel()
    return True


async def _ordered(han, c, why):
    cm = _commissioner(han, c)
    try:
        await _owning_status(han, _recommission(han, c, cm, why))
    except Exception as exc:  # a link failure: the supervisor resets (after leaveNetwork the module
        # holds no network, and that bring-up commissions it)
        cm._step("re-commission stopped: %r" % (exc,))
    finally:
        from ppmid.zigbee.rejoin import network_task
        if network_task(han) is asyncio.current_task():
            han._net_task = None


async def _owning_status(han, work):
    # while this runs the driver's own status updates (network up/down, tunnel) stay
    # quiet: the statuses say rejoining / commissioning; a link reset (the supervisor
    # brings the module up again) or a newer order (which replaced this task) ends it
    # without touching what came after
    from ppmid.zigbee.rejoin import network_task
    resets = han.counters[_C_RESETS]
    me = asyncio.current_task()
    han._up = False
    try:
        await work
    finally:
        if han.counters[_C_RESETS] == resets and han._link.connected and network_task(han) is me:
            han._up = True
            han._update_status()


async def _rejoin_until_up(han, c, cm):
    resets = han.counters[_C_RESETS]
    backoff = 1
    while not han._net_up and han.counters[_C_RESETS] == resets:
        han._net_event.clear()
        try:
            for secured in (True, False):
                han._set_status(REJOINING, "%s rejoin, attempt %d" % (_KIND[secured], cm.rejoins + 1))
                if await cm.rejoin(secured):
                    return
                await asyncio.sleep(0)   # a NETWORK_UP read with the answer is handled first
                if han._net_up or han.counters[_C_RESETS] != resets:
                    return    # back by itself, or the module reset (the supervisor decides)
        except PpmidError as exc:
            if exc.code != E_REJOIN_REFUSED:
                raise
            await _recommission(han, c, cm, exc.message)
            return
        han._set_status(REJOIN_FAILED, "%s: %s" % (cm.error, cm.detail))
        # back by itself in the meantime: no more rejoins
        await wait_event_ms(han._net_event, backoff * 1000)
        backoff = min(han.backoff_max_s, backoff * 2)


async def _recommission(han, c, cm, why):
    cm._step("re-commission: " + why)
    v = han._ezsp.version
    try:
        await cm._command(C.LEAVE_NETWORK, C.leave_network(v), E_MODULE, "leaveNetwork")
        cm._step("left the network")
    except PpmidError as exc:   # not joined: nothing to leave
        cm._step("leave: %s" % exc.message)
    han._net_up = False
    han.tunnel.close("re-commission")
    _mark(c.get("state_path"), False)
    cm.state = "uncommissioned"
    cm.cbke = None
    await bring_up(han, c, -1, han.counters[_C_RESETS])


class Commissioner:
    """One module's commissioning, driven by ZigbeeHan (which hands it the callbacks and
    Key Establishment frames, and sends for it). State and last failure: info()."""

    def __init__(self, han, opts, log=None):
        self.han = han
        self.opts = opts
        self._log = log
        self.state = "uncommissioned"
        self.cbke = None
        self.error = None
        self.detail = ""
        self.steps = []
        self.attempts = 0
        self.rejoins = 0
        self.rejoin_kind = None       # the last rejoin's: "secured" or "trust-centre"
        self.retry_after_s = None     # the CH's wait time from a Terminate
        self._q = []                  # (kind, value): the module's callbacks received
        self._ke = []                 # ("ke", frame): the CH's Key Establishment frames, apart so
        #                               that a flood of beacons cannot push them out, nor they the callbacks
        self._tc_wire = None          # the trust centre's EUI-64 as the v14 NCP gives a sender's (LE)
        self.ke_not_ch = 0            # KE frames dropped: not from the CH
        self._ev = asyncio.Event()
        self._seq = 0

    def info(self):
        d = {"state": self.state, "cbke": self.cbke, "steps": list(self.steps), "attempts": self.attempts,
             "rejoins": self.rejoins}
        if self.rejoin_kind:
            d["rejoin"] = self.rejoin_kind
        if self.ke_not_ch:
            d["ke_not_ch"] = self.ke_not_ch
        if self.error:
            d["error"] = self.error
            d["detail"] = self.detail
        return d

    def _step(self, what):
        self.steps.append(what)
        if len(self.steps) > _STEPS:
            self.steps.pop(0)
        if self._log:
            self._log("commission: " + what)

    # ---- fed by ZigbeeHan (synchronous) -------------------------------------------------------
    def on_callback(self, fid, p):
        """True when the callback is commissioning's alone."""
        if fid in (C.NETWORK_FOUND_HANDLER, C.SCAN_COMPLETE_HANDLER, C.GENERATE_CBKE_KEYS_HANDLER_283K1,
                   C.CALCULATE_SMACS_HANDLER_283K1):
            self._put(fid, bytes(p))
            return True
        if fid == E.STACK_STATUS_HANDLER:
            self._put(fid, bytes(p))   # ZigbeeHan acts on it too
        return False

    def on_ke(self, m):
        """A Key Establishment frame as ZigbeeHan received it (parse_incoming's dict). Taken
        only from the CH: NWK 0x0000 on the SE profile and, where the NCP names the sender
        (v14) and the trust centre is known, from its EUI-64. KE frames travel without APS
        encryption, so any node holding the network key could otherwise end our exchange
        (Terminate) or answer it in the CH's place; counted (ke_not_ch), the first logged."""
        eui = m.get("eui64")
        if (m["sender"] != CH_NWK or m["aps"]["profile"] != PROFILE_SE
                or (eui is not None and self._tc_wire is not None and eui != self._tc_wire)):
            self.ke_not_ch += 1
            if self.ke_not_ch == 1:
                self._step("key establishment frame from 0x%04x dropped: only the CH's are taken" % m["sender"])
            return
        self._put("ke", bytes(m["message"]), self._ke, _KE_SLOTS)

    def _put(self, kind, value, q=None, slots=32):
        q = self._q if q is None else q
        q.append((kind, value))
        if len(q) > slots:   # a flood of beacons or frames: the oldest go
            q.pop(0)
        self._ev.set()

    async def _next(self, kinds, timeout_ms, q=None):
        """The next queued item of one of kinds (in q: the callbacks' by default), or None
        after timeout_ms."""
        from ppmid.clock import ticks_ms, ticks_diff, ticks_add
        q = self._q if q is None else q
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while True:
            for i in range(len(q)):
                if q[i][0] in kinds:
                    return q.pop(i)
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return None
            self._ev.clear()
            await wait_event_ms(self._ev, left)

    def _fail(self, code, message):
        raise PpmidError(code, message)

    async def _command(self, fid, params, code, what):
        v = self.han._ezsp.version
        p = await self.han._ezsp.command(fid, params)
        status = E.parse_status(v, p)
        if status:
            self._fail(code, "the module refused %s (status 0x%x)" % (what, status))
        return p

    def _mask(self):
        mask = 0
        for c in self.opts.get("channels") or range(11, 27):
            mask |= 1 << c
        return mask

    async def rejoin(self, secured=False):
        """One rejoin, findAndRejoinNetwork on the configured channels. secured: with the
        network key the module holds (its parent admits it by that key); else a
        trust-centre rejoin (the CH sends the current network key again under our link key).
        True when the network is back; False when it did not come in time or the rejoin
        ended otherwise (kept in error/detail: a secured one fails so when the network key
        changed while we were away); PpmidError(E_REJOIN_REFUSED) when the module holds no
        network or the trust centre refused us: only a fresh commissioning can help then."""
        kind = _KIND[secured]
        self.rejoins += 1
        self.rejoin_kind = kind
        self.state = "rejoining"
        self.error = None
        v = self.han._ezsp.version
        self._q = [q for q in self._q if q[0] != E.STACK_STATUS_HANDLER]
        mask = self._mask()
        p = await self.han._ezsp.command(C.FIND_AND_REJOIN_NETWORK, C.find_and_rejoin(v, mask, secured))
        status = E.parse_status(v, p)
        if status:
            if C.holds_no_network(v, status):
                self._rejoin_failed(E_REJOIN_REFUSED, "the module refused findAndRejoinNetwork (status 0x%x): it "
                                    "holds no network (the trust centre removed it)" % status)
            # joined again already (the network came back by itself, NETWORK_UP on its way),
            # or a passing refusal: never a reason to leave; the caller re-checks and backs off
            return self._rejoin_failed(E_REJOIN, "the module refused findAndRejoinNetwork (status 0x%x)" % status)
        self._step("%s rejoin asked (channels mask 0x%08x)" % (kind, mask))
        timeout_s = self.opts.get("join_timeout_s", 15)
        item = await self._next((E.STACK_STATUS_HANDLER,), timeout_s * 1000)
        if item is None:
            return self._rejoin_failed(E_REJOIN, "no network within %d s of the %s rejoin" % (timeout_s, kind))
        if E.parse_stack_status(v, item[1]):
            self.state = "commissioned"
            self._step("rejoined (%s rejoin)" % kind)
            return True
        status = E.parse_status(v, item[1])
        if not secured and C.no_network_key(v, status):
            self._rejoin_failed(E_REJOIN_REFUSED, "the trust centre refused the rejoin (no network key): the "
                                "CH no longer holds this PPMID in its device log")
        return self._rejoin_failed(E_REJOIN, "the %s rejoin ended with status 0x%x" % (kind, status))

    def _rejoin_failed(self, code, message):
        self.state = "failed"
        self.error = code
        self.detail = message
        self._step("rejoin failed %s: %s" % (code, message))
        if code == E_REJOIN_REFUSED:
            raise PpmidError(code, message)
        return False

    # ---- the whole run ------------------------------------------------------------------------
    async def run(self, joined):
        """One attempt: join unless joined, then key establishment. True on success; a
        failure is kept in state/error (and logged), and raised only for the install code,
        which no retry can mend."""
        self.attempts += 1
        self.error = None
        self.retry_after_s = None
        self._q = []
        self._ke = []
        try:
            if not joined:
                await self._join()
            await self._key_establishment()
        except PpmidError as exc:
            self.state = "failed"
            if self.cbke == "running":
                self.cbke = "failed"
            self.error = exc.code
            self.detail = exc.message
            self._step("failed %s: %s" % (exc.code, exc.message))
            if exc.code in RETRY_NEVER:
                raise
            return False
        self.state = "commissioned"
        self.cbke = "ok"
        self._step("commissioned")
        return True

    async def _join(self):
        self.state = "joining"
        o = self.opts
        code = IC.parse(o["install_code"])
        key = IC.link_key(code)
        await self._command(C.SET_INITIAL_SECURITY_STATE, C.initial_security_state(key), E_MODULE,
                            "setInitialSecurityState")
        self._step("security state set (install-code link key)")
        mask = self._mask()
        self.state = "scanning"
        await self._command(C.START_SCAN, C.start_scan(mask, o.get("scan_duration", 3)), E_MODULE, "startScan")
        found = []
        v = self.han._ezsp.version
        while True:
            item = await self._next((C.NETWORK_FOUND_HANDLER, C.SCAN_COMPLETE_HANDLER), 30000)
            if item is None:
                self._fail(E_NO_NETWORK, "the scan did not complete within 30 s")
            if item[0] == C.SCAN_COMPLETE_HANDLER:
                break
            net = C.parse_network_found(item[1])
            if net["allowing_join"] and net["stack_profile"] == 2:
                found.append(net)
        if not found:
            self._fail(E_NO_NETWORK, "no Zigbee PRO network open for joining on channels mask 0x%08x" % mask)
        found = self._ours(found)
        found.sort(key=lambda n: -n["lqi"])
        self._step("scan: network %s open for joining (%d beacon(s))" % (_hex(found[0]["extended_pan_id"]), len(found)))
        self.state = "joining"
        for net in found:
            # the same network answering through more than one device: the best link first
            self._q = [q for q in self._q if q[0] != E.STACK_STATUS_HANDLER]
            await self._command(C.JOIN_NETWORK, C.join_network(net), E_MODULE, "joinNetwork")
            self._step("joining PAN 0x%04x on channel %d" % (net["pan_id"], net["channel"]))
            item = await self._next((E.STACK_STATUS_HANDLER,), o.get("join_timeout_s", 15) * 1000)
            if item is not None and E.parse_stack_status(v, item[1]):
                self._step("joined PAN 0x%04x" % net["pan_id"])
                return
            self._step("join refused by PAN 0x%04x (%s)" % (
                net["pan_id"], "no answer" if item is None else "status 0x%x" % E.parse_status(v, item[1])))
        self._fail(E_JOIN_REFUSED, "the trust centre gave no network key: this PPMID's EUI-64 is not in the "
                   "CH's device log, or the install code there is not this one")

    def _ours(self, found):
        """The beacons of the network to join: the one zigbee.extended_pan_id names, or the
        only one open for joining. Two CHs answering (a neighbour's, both permitting joins):
        no guess (a join attempt would offer our install-code key to a stranger's trust
        centre and, in a block of flats, could land on the wrong HAN)."""
        want = self.opts.get("extended_pan_id")
        if want:
            want = extended_pan_id(want)
            mine = [n for n in found if n["extended_pan_id"] == want]
            if not mine:
                self._fail(E_NO_NETWORK, "network %s (zigbee.extended_pan_id) is not open for joining; %s is"
                           % (_hex(want), ", ".join(_hex(x) for x in _distinct(found))))
            return mine
        nets = _distinct(found)
        if len(nets) > 1:
            self._fail(E_NETWORKS, "%d networks open for joining (%s): set zigbee.extended_pan_id to the CH's"
                       % (len(nets), ", ".join(_hex(x) for x in nets)))
        return found

    async def _send_ke(self, frame):
        await self.han._send_zcl(CH_NWK, frame, K.CLUSTER_KEY_ESTABLISHMENT, self.opts.get("ke_endpoint", 1),
                                 encrypt=False)

    async def _ke_answer(self, want, timeout_ms, what):
        item = await self._next(("ke",), timeout_ms, self._ke)
        if item is None:
            self._fail(E_CBKE_TIMEOUT, "no %s from the CH within %d ms" % (what, timeout_ms))
        try:
            f = K.parse(item[1])
        except PpmidError as exc:
            await self._terminate(K.BAD_MESSAGE)
            self._fail(K.E_KE_FRAME, exc.message)
        if f.command == K.TERMINATE:
            self.retry_after_s = f.wait_time
            self._fail(E_CBKE_TERMINATED, "the CH terminated key establishment: %s (wait %d s)"
                       % (K.TERMINATE_NAMES.get(f.status, "status %d" % f.status), f.wait_time))
        if f.command != want or not f.server_to_client:
            await self._terminate(K.BAD_MESSAGE)
            self._fail(K.E_KE_FRAME, "%s from the CH where %s was due" % (f.name(), K.COMMAND_NAMES[want]))
        return f

    async def _terminate(self, status):
        self._seq += 1
        try:
            await self._send_ke(K.terminate(self._seq, False, status, 10))
        except Exception as exc:  # the failure being reported matters more
            self._step("terminate not sent: %r" % (exc,))

    async def _trust_centre(self):
        # the trust centre's EUI-64 from the module's security state (learnt at the join, kept
        # in its tokens): the CH's certificate must name it, and at v14 its frames come from it
        self._tc_wire = None
        p = await self._command(C.GET_CURRENT_SECURITY_STATE, b"", E_CBKE_MODULE, "getCurrentSecurityState")
        tc = C.parse_security_state(self.han._ezsp.version, p)[2]
        if tc == bytes(8):
            self._fail(E_CBKE_MODULE, "the module does not know the trust centre's EUI-64")
        self._tc_wire = C._reversed(tc)
        self._ke = []    # nothing is due before our Initiate
        return tc

    async def _callback(self, fid, timeout_s, what):
        item = await self._next((fid,), timeout_s * 1000)
        if item is None:
            self._fail(E_CBKE_TIMEOUT, "the module gave no %s within %d s" % (what, timeout_s))
        return item[1]

    async def _key_establishment(self):
        self.state = "cbke"
        self.cbke = "running"
        v = self.han._ezsp.version
        p = await self._command(C.GET_CERTIFICATE_283K1, b"", E_CBKE_MODULE, "getCertificate283k1")
        cert = C.parse_certificate(v, p)[1]
        tc = await self._trust_centre()
        ok = False
        try:
            self._seq += 1
            await self._send_ke(K.initiate(self._seq, False, cert, _EPHEMERAL_TIME_S, _CONFIRM_TIME_S))
            self._step("cbke: initiate sent")
            f = await self._ke_answer(K.INITIATE, self.opts.get("ke_timeout_s", 10) * 1000, "initiate response")
            if f.suite != K.SUITE_2:
                await self._terminate(K.UNSUPPORTED_SUITE)
                self._fail(K.E_KE_FRAME, "the CH chose key establishment suite 0x%04x" % f.suite)
            ch_cert, eph_ms, conf_ms = f.certificate, f.ephemeral_time * 1000, f.confirm_time * 1000
            if K.cert_issuer(ch_cert) != K.cert_issuer(cert):
                # the CH's certificate must come from the CA that issued ours (on a real
                # module calculateSmacs would fail too; this says why, before any ECC)
                await self._terminate(K.UNKNOWN_ISSUER)
                self._fail(E_CBKE_ISSUER, "the CH's certificate is issued by %s, ours by %s"
                           % (_hex(K.cert_issuer(ch_cert)), _hex(K.cert_issuer(cert))))
            if K.cert_subject(ch_cert) != tc:
                # a certificate from the same CA (every GB HAN device's is) but another holder's:
                # an IHD or another PPMID answering in the CH's place
                await self._terminate(K.INVALID_CERTIFICATE)
                self._fail(E_CBKE_SUBJECT, "the CH's certificate is for %s, not the trust centre %s"
                           % (_hex(K.cert_subject(ch_cert)), _hex(tc)))
            self._step("cbke: CH certificate, subject %s (the trust centre)" % _hex(tc))
            await self._command(C.GENERATE_CBKE_KEYS_283K1, b"", E_CBKE_MODULE, "generateCbkeKeys283k1")
            status, ephemeral = C.parse_cbke_keys(v, await self._callback(
                C.GENERATE_CBKE_KEYS_HANDLER_283K1, _EPHEMERAL_TIME_S, "ephemeral key"))
            if status:
                self._fail(E_CBKE_MODULE, "the module could not make an ephemeral key (status 0x%x)" % status)
            self._seq += 1
            await self._send_ke(K.ephemeral_data(self._seq, False, ephemeral))
            f = await self._ke_answer(K.EPHEMERAL_DATA, eph_ms + _MARGIN_MS, "ephemeral data response")
            self._step("cbke: ephemeral data exchanged")
            await self._command(C.CALCULATE_SMACS_283K1, C.calculate_smacs(True, ch_cert, f.public_key),
                                E_CBKE_MODULE, "calculateSmacs283k1")
            status, macu, macv = C.parse_smacs(v, await self._callback(
                C.CALCULATE_SMACS_HANDLER_283K1, _CONFIRM_TIME_S, "key confirmation"))
            if status:
                await self._terminate(K.INVALID_CERTIFICATE)
                self._fail(E_CBKE_MODULE, "the module could not compute the keys (status 0x%x)" % status)
            self._seq += 1
            await self._send_ke(K.confirm_key(self._seq, False, macu))
            f = await self._ke_answer(K.CONFIRM_KEY, conf_ms + _MARGIN_MS, "confirm key response")
            if f.mac != macv:
                await self._terminate(K.BAD_KEY_CONFIRM)
                self._fail(E_CBKE_KEY_CONFIRM, "the CH's key confirmation does not match ours")
            ok = True
        finally:
            try:
                await self._command(C.CLEAR_TEMPORARY_DATA_MAYBE_STORE_LINK_KEY_283K1, C.store_link_key(ok),
                                    E_CBKE_MODULE, "clearTemporaryDataMaybeStoreLinkKey283k1")
            except PpmidError as exc:
                if ok:
                    raise
                self._step("temporary data not cleared: %s" % exc.message)
        self.cbke = "ok"
        self._step("cbke: key confirmed, link key stored")


def _hex(b):
    return "".join("%02x" % x for x in b)


def _distinct(found):
    out = []
    for n in found:
        if n["extended_pan_id"] not in out:
            out.append(n["extended_pan_id"])
    return out
