# The gateway's clock from the Communications Hub, for homes without WAN (no SNTP): one
# read of the CH's ZCL Time cluster (ppmid.zigbee.timecluster) and what is done with the
# answer. The loop that calls it (ppmid.app._ch_clock, until SNTP sets the clock:
# docs/platform.md "Clock") loads this module for each read, and run() drops it after,
# like ppmid.sntp: between reads the gateway holds only that loop and its state.
#
# What is accepted: an answer from NWK 0x0000 alone (the CH is the HAN's coordinator and
# time source), a well-formed Read Attributes Response to our request (its sequence
# number) with SUCCESS for Time and TimeStatus, TimeStatus saying Master or Synchronized
# (a CH that does not know the time itself says neither), and a time not before the
# firmware's floor (ppmid.clock.SET_AFTER, the one that says a clock was never set).
# Anything else is ignored (counted, one console line per read) and the read keeps waiting
# for the real answer until timeout_ms. A clock SNTP set is never touched; a set clock
# (rtc, or the CH's earlier reading) is moved under SNTP's jump rule (ppmid.sntp.apply).
from ppmid.clock import ticks_ms, ticks_diff, sleep_ms, EPOCH_2000, SET_AFTER
from ppmid.errors import PpmidError
from ppmid.zigbee.tunnel import CH_NWK, ENDPOINT, PROFILE_SE, ZclError, E_ZCL
# The Time cluster's codec (ppmid.zigbee.timecluster) is imported where a frame is built or
# read, not here: a read that finds the clock SNTP's (the usual case with WAN: the loop's
# last read) then loads this module alone, and the codec's ~25 names, interned for good
# once it loads, are never interned (docs/memory.md, "Session 12, the app's reaction and
# ready").

_POLL_MS = 20
SOURCES = ("unset", "rtc", "ch")   # the clock sources the CH may set: never "sntp" (nor "host")
_SET_BEFORE = 4102444800   # 2100-01-01 UTC in unix seconds (a big int on a 32-bit port: compared, never stored)


def accept(m, seq):
    """Unix seconds from an incoming message (ZigbeeHan's dict) answering read_time(seq),
    or ZclError (E_ZCL) saying why it is not taken."""
    from ppmid.zigbee import timecluster as T
    if m["sender"] != CH_NWK:
        raise ZclError(E_ZCL, "from 0x%04X, not the CH (0x0000)" % m["sender"])
    aps = m["aps"]
    if aps["profile"] != PROFILE_SE or aps["cluster"] != T.CLUSTER_TIME:
        raise ZclError(E_ZCL, "profile 0x%04X cluster 0x%04X, not the Time cluster" % (aps["profile"], aps["cluster"]))
    zcl, status = T.parse_time(m["message"], seq)
    if not status & (T.MASTER | T.SYNCHRONIZED):
        raise ZclError(E_ZCL, "the CH's clock is not synchronised (TimeStatus 0x%02X)" % status)
    unix = zcl + EPOCH_2000
    if unix < SET_AFTER:
        raise ZclError(E_ZCL, "time %d is before the firmware's floor (2024)" % unix)
    if unix >= _SET_BEFORE:
        # a UTCTime reaches 2136: a CH saying 2100 or later is broken, and a clock set
        # there would make every command with `expires` expired (E_EXPIRED) until resynced
        raise ZclError(E_ZCL, "time %d is after the firmware's ceiling (2100)" % unix)
    return unix


async def read(han, seq, timeout_ms, log, st):
    """Unix seconds from the CH, or None: not sent (HAN down) or no usable answer within
    timeout_ms. Answers refused by accept() are counted in st["ignored"] and logged once."""
    from ppmid.zigbee import timecluster as T
    inbox = []
    han.on_time = inbox.append   # ZigbeeHan._incoming hands over the Time cluster's frames
    try:
        try:
            await han.send_zcl(CH_NWK, T.CLUSTER_TIME, ENDPOINT, T.read_time(seq))
        except PpmidError as exc:
            log("PPMID clock: the CH's time was not asked: %s %s" % (exc.code, exc.message))
            return None
        t0 = ticks_ms()
        quiet = False
        while True:
            while inbox:
                m = inbox.pop(0)
                try:
                    return accept(m, seq)
                except ZclError as exc:
                    st["ignored"] += 1
                    if not quiet:  # one line per read: a flood must not flood the console
                        log("PPMID clock: ignored a time answer: %s" % exc.message)
                        quiet = True
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return None
            await sleep_ms(_POLL_MS)
    finally:
        han.on_time = None


async def run(han, clock, set_time, st, link):
    """The app loop's read (ppmid.app._ch_clock): sync_once with st as settings and state,
    the console as log; drops this module and the codec after it. The next pause in s
    (0: SNTP set the clock, the loop ends)."""
    if "seq" not in st:  # the first read: the state joins the settings (none of it before)
        for k in ("seq", "failures", "ignored", "syncs"):
            st[k] = 0
        st["held"] = None
    try:
        return await sync_once(st, han, clock, set_time, st, print, link)
    except Exception as exc:  # noqa: BLE001 - the clock task must outlive a bug
        print("PPMID clock: ch: %r" % (exc,))
        return st["retry_max_s"]
    finally:
        from ppmid.modules import unload
        unload("ppmid.zigbee.chclock", "ppmid.zigbee.timecluster", "ppmid.modules")


class _Setter:
    # what ppmid.sntp.apply reads and updates (the SNTP client's names), for this one read
    def __init__(self, clock, set_time, log, held):
        self.clock = clock
        self.set_time = set_time
        self.log = log
        self.held = held
        self.syncs = 0


async def sync_once(st, han, clock, set_time, settings, log, link=None):
    """One read of the CH's clock; the next pause in seconds (retry_s doubling up to
    retry_max_s without a usable answer, resync_s after a set, 0 when a clock that is not
    ours any more ends the loop). st: the loop's state ({"seq", "failures", "ignored",
    "held", "syncs"}); link: the MQTT link whose info is republished after a set."""
    if clock.source not in SOURCES:
        return 0
    import sys
    before = [n for n in _LOANED if n in sys.modules]
    try:
        return await _sync(st, han, clock, set_time, settings, log, link)
    finally:
        from ppmid.modules import unload
        for n in _LOANED:
            if n not in before:
                unload(n)


# modules a read loads that the gateway holds only while it uses them otherwise: the
# direct send path (top-ups keep it once they ran) and the jump rule's module (SNTP loads it
# for each of its syncs)
_LOANED = ("ppmid.zigbee.direct", "ppmid.sntp")


async def _sync(st, han, clock, set_time, settings, log, link):
    st["seq"] = (st["seq"] + 1) & 0xFF
    unix = await read(han, st["seq"], settings["timeout_ms"], log, st)
    if clock.source not in SOURCES:   # SNTP set it while we waited
        return 0
    if unix is None:
        st["failures"] += 1
        wait = min(settings["retry_s"] << min(st["failures"] - 1, 16), settings["retry_max_s"])
        log("PPMID clock: no usable time from the CH: next read in %d s" % wait)
        return wait
    st["failures"] = 0
    from ppmid import sntp
    s = _Setter(clock, set_time, log, st["held"])
    done = sntp.apply(s, unix, 0, "ch")
    st["held"] = s.held
    if not done:
        return settings["retry_s"]   # a big step: confirmed by the next read
    st["syncs"] += 1
    if link is not None and link.client.state == "online":
        try:
            await link.republish_info()
        except Exception as exc:  # noqa: BLE001 - the clock is set; info follows on reconnect
            log("PPMID clock: info not republished: %r" % (exc,))
    return settings["resync_s"]
