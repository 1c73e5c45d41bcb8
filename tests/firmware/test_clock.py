# ppmid.clock: deadlines made with ticks_add and compared with ticks_diff survive the wrap
# of MicroPython's ticks_ms (2**30 ms on the ESP32, ~12.4 days); the CPython stand-in is a
# monotonic clock that never wraps. Runs under both interpreters.
import sys

from ppmid.clock import ticks_ms, ticks_diff, ticks_add, sleep_ms

MICROPYTHON = sys.implementation.name == "micropython"


def test_deadline_across_the_wrap():
    if MICROPYTHON:
        # 2**30 on the ESP32; the 64-bit unix port uses a longer period (2**62): the
        # test finds it, as the wrap is the same arithmetic either way
        period = ticks_add(0, -1) + 1
        assert period >= 1 << 30 and period & (period - 1) == 0
        start = period - 100                 # 100 ms before the wrap
    else:
        start = 10 ** 12
    deadline = ticks_add(start, 1000)
    if MICROPYTHON:
        assert deadline == 900               # wrapped, still a valid tick value
    assert ticks_diff(deadline, start) == 1000
    for elapsed in (0, 99, 100, 101, 999):   # before, at and after the wrap: not yet due
        now = ticks_add(start, elapsed)
        assert ticks_diff(deadline, now) == 1000 - elapsed > 0
    assert ticks_diff(deadline, ticks_add(start, 1000)) == 0
    assert ticks_diff(ticks_add(start, 1001), deadline) == 1      # due
    assert ticks_diff(ticks_add(deadline, -1000), start) == 0


def test_ticks_move_forward():
    a = ticks_ms()
    b = ticks_ms()
    assert ticks_diff(b, a) >= 0


def test_zigbee_modules_use_the_shared_ticks():
    from ppmid import clock
    from ppmid.zigbee import ashlink, han
    for mod in (ashlink, han):
        assert mod.ticks_add is clock.ticks_add and mod.ticks_diff is clock.ticks_diff
        assert mod.ticks_ms is clock.ticks_ms


def test_sleep_ms_is_only_awaited_on_the_spot():
    # the rule clock.py states for callers: awaited directly it sleeps; on MicroPython it
    # is asyncio's shared sleep generator, not a coroutine, and wait_for_ms refuses it
    # (if a MicroPython release changes that, this says the comment is out of date)
    import asyncio
    from ppmid import clock

    async def main():
        t0 = ticks_ms()
        await clock.sleep_ms(20)
        assert ticks_diff(ticks_ms(), t0) >= 15
        if MICROPYTHON:
            try:
                await clock.wait_for_ms(clock.sleep_ms(20), 300)
                raise AssertionError("wait_for_ms took sleep_ms's generator")
            except TypeError:
                pass

            async def wrapped():
                await clock.sleep_ms(20)
            await clock.wait_for_ms(wrapped(), 300)  # the way to do it
    asyncio.run(main())


# ---- unix seconds on both epochs, with fake `time` modules -------------------------------
class FakeTime:
    """A port's time module: `epoch_year` is what gmtime(0) says (1970 unix, 2000 ESP32);
    time() counts from that epoch; ticks wrap at `period` as MicroPython's do."""

    def __init__(self, epoch_year, now, period=1 << 30, tick0=0):
        self.epoch_year = epoch_year
        self.now = now
        self.period = period
        self.tick = tick0

    def gmtime(self, secs=0):
        assert secs == 0
        return (self.epoch_year, 1, 1, 0, 0, 0, 0, 1)

    def time(self):
        return self.now

    def ticks_ms(self):
        return self.tick

    def ticks_add(self, t, d):
        return (t + d) % self.period

    def ticks_diff(self, a, b):
        half = self.period // 2
        return ((a - b + half) % self.period) - half


UNIX_2026 = 1796083200          # 2026-12-01T00:00:00Z
EPOCH_2000 = 946684800


def test_unix_seconds_on_the_1970_epoch():
    from ppmid.clock import Clock
    c = Clock(FakeTime(1970, UNIX_2026))
    assert c.time() == UNIX_2026
    assert c.source == "host" and c.is_set()


def test_unix_seconds_on_the_2000_epoch():
    from ppmid.clock import Clock, epoch_offset
    t = FakeTime(2000, UNIX_2026 - EPOCH_2000)     # what an ESP32 with a set RTC reads
    assert epoch_offset(t) == EPOCH_2000
    c = Clock(t)
    assert c.time() == UNIX_2026
    assert c.is_set()


def test_a_board_that_boots_with_no_clock_is_unset_until_set():
    from ppmid.clock import Clock
    t = FakeTime(2000, 5)                           # ESP32 at boot: 2000-01-01 00:00:05
    c = Clock(t)
    assert c.time() == EPOCH_2000 + 5
    assert c.source == "unset" and not c.is_set()
    t.now = UNIX_2026 - EPOCH_2000                  # SNTP set the RTC
    c.set_source("sntp")
    assert c.is_set() and c.source == "sntp" and c.synced_at == UNIX_2026
    # a source that says "set" but reads before 2024 is still not trusted
    t.now = 10
    assert not c.is_set()


def test_injected_ticks_wrap_like_the_esp32():
    from ppmid.clock import Clock
    t = FakeTime(2000, 0, period=1 << 30, tick0=(1 << 30) - 100)
    c = Clock(t)
    start = c.ms()
    deadline = c.add(start, 1000)
    assert deadline == 900                          # wrapped
    t.tick = c.add(start, 999)
    assert c.diff(deadline, c.ms()) == 1 > 0        # not yet due across the wrap
    t.tick = c.add(start, 1001)
    assert c.diff(c.ms(), deadline) == 1            # due


async def test_sleep_and_wait_in_ms():
    from ppmid.clock import wait_for_ms, wait_event_ms
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio
    t0 = ticks_ms()
    await sleep_ms(20)
    assert ticks_diff(ticks_ms(), t0) >= 15
    ev = asyncio.Event()
    assert await wait_event_ms(ev, 10) is False
    ev.set()
    assert await wait_event_ms(ev, 10) is True
    try:
        await wait_for_ms(_slow(), 10)
        raise AssertionError("wait_for_ms did not time out")
    except asyncio.TimeoutError:
        pass
    assert await wait_for_ms(_answer(), 100) == 42


async def _slow():
    await sleep_ms(1000)


async def _answer():
    return 42
