# ppmid.zigbee.timecluster and ppmid.zigbee.chclock: the ZCL Time cluster codec (every
# reason to refuse an answer) and one read of the CH's clock over a stand-in HAN (what
# sets the clock, what is ignored, backoff, the jump rule, SNTP's clock left alone), and
# ZigbeeHan handing the Time cluster's frames over. CPython and MicroPython.
import struct

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from ppmid.clock import Clock
from ppmid.errors import PpmidError
from ppmid.zigbee import timecluster as T
from ppmid.zigbee import chclock
from ppmid.zigbee.tunnel import ZclError

EPOCH_2000 = 946684800
UNIX_2026 = 1796083200            # 2026-12-01T00:00:00Z
ZCL_2026 = UNIX_2026 - EPOCH_2000
SYNCED = T.MASTER | T.SYNCHRONIZED
SETTINGS = {"enabled": True, "timeout_ms": 150, "retry_s": 5, "retry_max_s": 40, "resync_s": 10800}


def _refused(frame, word, seq=7):
    try:
        T.parse_time(frame, seq)
    except ZclError as exc:
        assert exc.code == "E_ZCL"
        assert word in exc.message, exc.message
        return
    raise AssertionError("accepted an answer that should be refused (%s)" % word)


def test_read_time_asks_for_time_and_time_status():
    assert T.read_time(7) == bytes((0x10, 7, 0x00, 0x00, 0x00, 0x01, 0x00))
    assert T.read_time(0x1FF)[1] == 0xFF
    assert T.parse_read(T.read_time(9)) == (9, [0, 1])


def test_a_good_answer_gives_zcl_seconds_and_the_status_bits():
    frame = T.time_response(7, ZCL_2026, SYNCED)
    assert frame[:3] == bytes((0x18, 7, 0x01))
    assert frame[3:] == struct.pack("<HBBI", 0, 0, 0xE2, ZCL_2026) + struct.pack("<HBBB", 1, 0, 0x18, SYNCED)
    assert T.parse_time(frame, 7) == (ZCL_2026, SYNCED)
    # the records in the other order
    assert T.parse_time(T.time_response(7, ZCL_2026, T.MASTER, attrs=(1, 0)), 7) == (ZCL_2026, T.MASTER)
    # frame control without "disable default response" is the same answer
    assert T.parse_time(b"\x08" + frame[1:], 7) == (ZCL_2026, SYNCED)


def test_bad_answers_are_refused_with_the_reason():
    good = T.time_response(7, ZCL_2026, SYNCED)
    _refused(good[:2], "too short")
    _refused(good[:-1], "truncated")
    _refused(good[:5], "truncated")
    _refused(good, "another request", seq=8)
    _refused(b"\x19" + good[1:], "frame control")                          # cluster specific
    _refused(b"\x10" + good[1:], "frame control")                          # client to server
    _refused(b"\x1c\x34\x12" + good[1:], "frame control")                  # manufacturer specific
    _refused(good[:2] + b"\x0b" + good[3:], "not a Read Attributes Response")  # Default Response
    _refused(T.time_response(7, 0, 0, status=T.STATUS_UNSUPPORTED_ATTRIBUTE), "read failed")
    _refused(T.time_response(7, ZCL_2026, SYNCED, attrs=(0,)), "lacks TimeStatus")
    _refused(T.time_response(7, ZCL_2026, SYNCED, attrs=(1,)), "lacks Time")
    _refused(T.time_response(7, ZCL_2026, SYNCED, attrs=(0, 0, 1)), "asked for once")
    _refused(good + struct.pack("<HBBI", 2, 0, 0x2B, 0), "0x0002")        # TimeZone, not asked
    _refused(good[:6] + b"\x23" + good[7:], "type 0x23")                   # uint32, not UTCTime
    _refused(T.time_response(7, 0xFFFFFFFF, SYNCED), "not set")


def test_the_server_side_refuses_what_is_not_a_read():
    for frame in (b"\x10\x01", b"\x18\x01\x00\x00\x00", b"\x11\x01\x00\x00\x00", b"\x10\x01\x00\x00"):
        try:
            T.parse_read(frame)
        except ZclError:
            continue
        raise AssertionError("parsed %r" % frame)


# ---- one read over a stand-in HAN ----------------------------------------------------
class FakeTime:
    """An ESP32's clock: seconds from 2000 (the test sets it), the port's own ticks."""

    def __init__(self, now2000=5):
        self.s = now2000

    def gmtime(self, secs=0):
        return (2000, 1, 1, 0, 0, 0, 5, 1)

    def time(self):
        return self.s

    def set_unix(self, unix, ms=0):
        self.s = unix - EPOCH_2000

    def ticks_ms(self):
        return self.s * 1000

    def ticks_add(self, a, b):
        return a + b

    def ticks_diff(self, a, b):
        return a - b


def message(frame, sender=0x0000, cluster=T.CLUSTER_TIME, profile=0x0109):
    # options: retry | APS encryption, as the module reports the CH's answer to our encrypted read
    return {"type": 0, "aps": {"profile": profile, "cluster": cluster, "options": 0x60, "group": 0},
            "sender": sender, "eui64": None, "lqi": 255, "rssi": -40, "message": frame}


class FakeHan:
    """send_zcl records the frame and hands the scripted answers (callables of the request's
    sequence number -> incoming message dict) to on_time, as ZigbeeHan._incoming does."""

    def __init__(self):
        self.status = "running"
        self.on_time = None
        self.sent = []
        self.answers = []      # per read: [fn(seq) -> message]
        self.fail = None       # a PpmidError the send raises

    async def send_zcl(self, dest, cluster, endpoint, zcl):
        self.sent.append((dest, cluster, endpoint, bytes(zcl)))
        if self.fail is not None:
            raise self.fail
        seq = zcl[1]
        for fn in self.answers.pop(0) if self.answers else ():
            self.on_time(fn(seq))


def answer(zcl_time=ZCL_2026, status=SYNCED, **kw):
    return lambda seq: message(T.time_response(seq, zcl_time, status), **kw)


def rig(source="unset"):
    t = FakeTime()
    clock = Clock(t, source)
    if source != "unset":
        t.set_unix(UNIX_2026 - 3)
    logs = []
    sets = []

    def set_time(unix, ms):
        sets.append((unix, ms))
        t.set_unix(unix, ms)

    st = {"seq": 0, "failures": 0, "ignored": 0, "held": None, "syncs": 0}
    return FakeHan(), clock, t, st, logs, sets, set_time


class Link:
    def __init__(self, state="online", fail=False):
        self.client = type("C", (), {})()
        self.client.state = state
        self.fail = fail
        self.republished = 0

    async def republish_info(self):
        self.republished += 1
        if self.fail:
            raise OSError(104)


async def test_a_good_answer_sets_an_unset_clock_and_says_ch():
    han, clock, t, st, logs, sets, set_time = rig()
    han.answers = [[answer()]]
    link = Link()
    wait = await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append, link)
    assert wait == SETTINGS["resync_s"]
    assert han.sent == [(0x0000, 0x000A, 1, T.read_time(1))]
    assert sets == [(UNIX_2026, 0)]
    assert clock.is_set() and clock.source == "ch" and clock.synced_at == UNIX_2026
    assert any("set by ch" in x and "was unset" in x for x in logs), logs
    assert link.republished == 1 and st["syncs"] == 1 and han.on_time is None


async def test_refused_answers_leave_the_clock_unset_and_back_off():
    cases = [(answer(sender=0x1234), "not the CH"),
             (answer(status=0), "not synchronised"),
             (answer(status=T.MASTER_ZONE_DST | T.SUPERSEDING), "not synchronised"),
             (answer(zcl_time=5), "floor"),
             (answer(zcl_time=1704067199 - EPOCH_2000), "floor"),
             (answer(zcl_time=4102444800 - EPOCH_2000), "ceiling"),     # 2100: a broken CH
             (answer(zcl_time=0xFFFFFFFE), "ceiling"),                  # UTCTime's last, 2136
             (lambda seq: message(T.time_response(seq, ZCL_2026, SYNCED)[:-2]), "truncated"),
             (lambda seq: message(T.time_response(seq, ZCL_2026, SYNCED), cluster=0x0702), "cluster 0x0702"),
             (lambda seq: message(T.time_response(seq, ZCL_2026, SYNCED), profile=0x0104), "profile 0x0104"),
             (lambda seq: message(T.time_response(seq + 1, ZCL_2026, SYNCED)), "another request"),
             (lambda seq: message(T.time_response(seq, 0, 0, status=0x86)), "read failed")]
    for fn, word in cases:
        han, clock, t, st, logs, sets, set_time = rig()
        han.answers = [[fn]]
        wait = await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append)
        assert wait == SETTINGS["retry_s"], (word, wait)
        assert sets == [] and clock.source == "unset" and not clock.is_set(), word
        assert st["ignored"] == 1 and st["failures"] == 1, word
        assert any("ignored a time answer" in x and word in x for x in logs), (word, logs)
        assert han.on_time is None


async def test_a_forged_answer_does_not_end_the_wait_for_the_real_one():
    han, clock, t, st, logs, sets, set_time = rig()
    han.answers = [[answer(zcl_time=ZCL_2026 + 86400, sender=0x4A21), answer(status=0), answer()]]
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == SETTINGS["resync_s"]
    assert sets == [(UNIX_2026, 0)] and st["ignored"] == 2
    assert len([x for x in logs if "ignored" in x]) == 1   # one line per read


async def test_silence_and_a_han_that_cannot_send_back_off_doubling():
    han, clock, t, st, logs, sets, set_time = rig()
    waits = []
    for _ in range(5):
        waits.append(await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append))
    assert waits == [5, 10, 20, 40, 40]
    assert len(han.sent) == 5 and [s[3][1] for s in han.sent] == [1, 2, 3, 4, 5]   # a new sequence each
    han.fail = PpmidError("E_HAN_DOWN", "Zigbee HAN network is network-down ")
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == 40
    assert any("not asked: E_HAN_DOWN" in x for x in logs)
    han.fail = None
    han.answers = [[answer()]]
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == SETTINGS["resync_s"]
    assert st["failures"] == 0 and clock.source == "ch"


async def test_a_clock_sntp_set_is_never_read_nor_moved():
    for source in ("sntp", "host"):
        han, clock, t, st, logs, sets, set_time = rig(source)
        han.answers = [[answer(zcl_time=ZCL_2026 + 3600)]]
        assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == 0
        assert han.sent == [] and sets == [] and clock.source == source


async def test_a_read_that_finds_the_clock_sntps_loads_no_time_cluster_codec():
    # the loop's last read on a gateway with WAN: the codec's names would be interned for good
    import sys
    from ppmid import app
    from ppmid.modules import unload
    han, clock, t, st, logs, sets, set_time = rig("sntp")
    st.update(SETTINGS)
    unload("ppmid.zigbee.chclock", "ppmid.zigbee.timecluster")
    try:
        run = app._ch_clock_read()      # as the app's loop loads the read
        assert "ppmid.zigbee.timecluster" not in sys.modules
        assert await run(han, clock, set_time, st, None) == 0
        assert han.sent == [] and "ppmid.zigbee.timecluster" not in sys.modules
        assert "ppmid.zigbee.chclock" not in sys.modules
        # a read that goes out loads it (and run() drops it again)
        han, clock, t, st, logs, sets, set_time = rig()
        st.update(SETTINGS)
        han.answers = [[answer()]]
        assert await app._ch_clock_read()(han, clock, set_time, st, None) == SETTINGS["resync_s"]
        assert clock.source == "ch" and len(han.sent) == 1 and han.sent[0][1] == T.CLUSTER_TIME
        assert "ppmid.zigbee.timecluster" not in sys.modules
    finally:
        # the other tests' module objects back where imports find them
        for name, mod in (("chclock", chclock), ("timecluster", T)):
            sys.modules["ppmid.zigbee." + name] = mod
            setattr(sys.modules["ppmid.zigbee"], name, mod)


async def test_sntp_setting_the_clock_during_the_read_wins():
    han, clock, t, st, logs, sets, set_time = rig()

    def sntp_first(seq):
        clock.set_source("sntp", UNIX_2026)
        return message(T.time_response(seq, ZCL_2026 + 3600, SYNCED))
    han.answers = [[sntp_first]]
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == 0
    assert sets == [] and clock.source == "sntp"


async def test_a_set_clock_takes_small_corrections_and_a_big_step_only_twice():
    han, clock, t, st, logs, sets, set_time = rig("rtc")
    han.answers = [[answer()]]                          # 3 s from the RTC's time: at once
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == SETTINGS["resync_s"]
    assert sets == [(UNIX_2026, 0)] and clock.source == "ch"
    han.answers = [[answer(zcl_time=ZCL_2026 + 3600)]]  # an hour away: held
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == SETTINGS["retry_s"]
    assert len(sets) == 1 and st["held"] is not None
    assert any("ch says +3600 s" in x and "held" in x for x in logs), logs
    han.answers = [[answer(zcl_time=ZCL_2026 + 3600)]]  # the next read agrees: applied
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append) == SETTINGS["resync_s"]
    assert sets[-1] == (UNIX_2026 + 3600, 0) and st["held"] is None


async def test_the_info_republish_failing_does_not_undo_the_set():
    han, clock, t, st, logs, sets, set_time = rig()
    han.answers = [[answer()]]
    link = Link(fail=True)
    assert await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append, link) == SETTINGS["resync_s"]
    assert clock.source == "ch" and any("not republished" in x for x in logs)
    han.answers = [[answer()]]
    offline = Link(state="connecting")
    await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append, offline)
    assert offline.republished == 0


async def test_the_loans_are_given_back():
    import sys
    from ppmid.modules import unload
    unload("ppmid.sntp")
    han, clock, t, st, logs, sets, set_time = rig()
    han.answers = [[answer()]]
    await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append)
    assert "ppmid.sntp" not in sys.modules       # the jump rule's module: loaded for the set only
    from ppmid import sntp  # noqa: F401 - loaded before the read: left loaded
    han.answers = [[answer()]]
    await chclock.sync_once(st, han, clock, set_time, SETTINGS, logs.append)
    assert "ppmid.sntp" in sys.modules


# ---- ZigbeeHan hands the Time cluster's frames over while a read waits ------------------
def test_zigbee_han_routes_time_frames_to_on_time_only_while_set():
    from ppmid.zigbee.han import ZigbeeHan
    han = ZigbeeHan(None, None)
    frame = T.time_response(3, ZCL_2026, SYNCED)
    zcl = []
    han.on_zcl = lambda sender, cluster, f, eui64=None: zcl.append(cluster)
    got = []
    han.on_time = got.append
    han._incoming(message(frame))
    assert len(got) == 1 and got[0]["message"] == frame and zcl == []
    han.on_time = None
    han._incoming(message(frame))          # no read waiting: as any other SE frame
    assert len(got) == 1 and zcl == [T.CLUSTER_TIME]


# ---- the app's loop --------------------------------------------------------------------
async def test_the_app_loop_waits_for_the_han_reads_and_ends_once_sntp_set_the_clock():
    import sys
    from ppmid import app
    han, clock, t, _, logs, sets, set_time = rig()
    st = dict(SETTINGS)                         # as the boot hands it over: settings only
    del st["enabled"]
    han.status = "network-down"
    slept = []
    real = app.sleep_ms

    async def fake_sleep(ms):
        slept.append(ms)
        if len(slept) == 3:
            han.status = "running"              # the HAN comes up: the next wake reads
            han.answers = [[answer()]]
        if len(slept) == 4:
            clock.set_source("sntp", UNIX_2026)  # SNTP sets it in the resync pause: the loop ends
        await asyncio.sleep(0)
    app.sleep_ms = fake_sleep
    try:
        await app._ch_clock(han, clock, set_time, st, None)
    finally:
        app.sleep_ms = real
    # the resync pause in steps of an hour (a 32-bit port's ticks), then the loop ends
    assert slept == [1000, 1000, 1000] + [3600 * 1000] * (SETTINGS["resync_s"] // 3600)
    assert len(han.sent) == 1 and sets == [(UNIX_2026, 0)] and st["syncs"] == 1
    assert "ppmid.zigbee.chclock" not in sys.modules and "ppmid.zigbee.timecluster" not in sys.modules


async def test_a_bug_in_a_read_is_logged_and_the_loop_goes_on_after_retry_max_s():
    han, clock, t, st, logs, sets, set_time = rig()
    st.update(SETTINGS)
    del st["failures"]                          # a read that fails with a KeyError
    from ppmid.zigbee import chclock as mod
    assert await mod.run(han, clock, set_time, st, None) == SETTINGS["retry_max_s"]
    assert han.on_time is None


async def test_the_app_loop_sleeps_a_long_resync_in_steps_a_32_bit_port_can_count():
    # resync_s may be a week (config allows 604800 s): one sleep of 6e8 ms is past 2**29 ms,
    # which raises OverflowError on a 32-bit port and would end the task after its first read
    from ppmid import app
    han, clock, t, _, logs, sets, set_time = rig()
    st = dict(SETTINGS)
    del st["enabled"]
    st["resync_s"] = 604800
    han.status = "running"
    han.answers = [[answer()]]
    slept = []
    real = app.sleep_ms

    async def fake_sleep(ms):
        assert ms < 2 ** 29, ms
        slept.append(ms)
        if sum(slept) >= 1000 + 604800 * 1000:
            clock.set_source("sntp", UNIX_2026)   # the loop ends at its next wake
        await asyncio.sleep(0)
    app.sleep_ms = fake_sleep
    try:
        await app._ch_clock(han, clock, set_time, st, None)
    finally:
        app.sleep_ms = real
    assert sum(slept) == 1000 + 604800 * 1000 and max(slept) == 3600 * 1000
    assert sets == [(UNIX_2026, 0)]


async def test_the_app_loop_outlives_a_read_module_that_cannot_load():
    # a MemoryError importing the read (a fragmented heap) must not end the loop for the
    # uptime: without WAN the clock would never be set
    from ppmid import app
    han, clock, t, _, logs, sets, set_time = rig()
    st = dict(SETTINGS)
    del st["enabled"]
    han.status = "running"
    han.answers = [[answer()]]
    slept = []
    loads = []
    real_sleep, real_read = app.sleep_ms, app._ch_clock_read

    def read_once_without_room():
        loads.append(1)
        if len(loads) == 1:
            raise MemoryError("memory allocation failed")
        return real_read()

    async def fake_sleep(ms):
        slept.append(ms)
        if len(slept) == 3:
            clock.set_source("sntp", UNIX_2026)   # after the read's set: the loop ends
        await asyncio.sleep(0)
    app.sleep_ms, app._ch_clock_read = fake_sleep, read_once_without_room
    try:
        await app._ch_clock(han, clock, set_time, st, None)
    finally:
        app.sleep_ms, app._ch_clock_read = real_sleep, real_read
    assert slept[:2] == [1000, 60 * 1000], slept     # the failed load waited 60 s, then read
    # loads: the failed one, the read that set the clock, and the one after the resync
    # pause that finds the clock SNTP's and ends the loop
    assert len(loads) == 3 and sets == [(UNIX_2026, 0)] and len(han.sent) == 1
