# Time for the whole firmware, in one place: millisecond ticks for deadlines, awaitable
# sleeps and waits in milliseconds, and unix seconds that are right on every port.
#
# Ticks: on MicroPython time.ticks_ms wraps (on the ESP32 every 2**30 ms, ~12.4 days), so a
# deadline is made with ticks_add(now, ms) and compared with ticks_diff(deadline, now), never
# with + and <. On CPython (host tools and tests) a monotonic clock that does not wrap stands
# in, with the same three names.
#
# Unix seconds: the unix port (and CPython) count time.time() from 1970, the ESP32 port from
# 2000-01-01; Clock.time() adds the difference where the port needs it. A board has no clock
# until SNTP, the CH's clock or a kept RTC sets it: Clock.is_set() says whether the time
# can be trusted.
import time as _time

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

try:
    from time import ticks_ms, ticks_diff, ticks_add
except ImportError:  # CPython
    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(t, delta):
        return t + delta

EPOCH_2000 = 946684800          # unix seconds at 2000-01-01, the embedded ports' epoch
SET_AFTER = 1704067200          # unix 2024-01-01: a clock earlier than this was never set


def epoch_offset(time_module=_time):
    """Seconds to add to time_module.time() for unix time: 0 from 1970, EPOCH_2000 from 2000."""
    gm = getattr(time_module, "gmtime", None) or time_module.localtime
    return EPOCH_2000 if gm(0)[0] == 2000 else 0


# sleep_ms(ms), and wait_for_ms(aw, ms): asyncio.wait_for with a timeout in ms (raises
# asyncio.TimeoutError). On MicroPython asyncio's own, awaited directly: no wrapper
# function held, and no wrapper coroutine allocated per sleep.
# For callers: `await sleep_ms(ms)` on the spot, nothing else. On MicroPython sleep_ms is
# not a coroutine function: it hands out asyncio's one shared sleep generator, which
# wait_for_ms, create_task and gather refuse (TypeError) or a second holder would reuse;
# wrap it in an `async def` for those. The CPython stand-in below is a coroutine function
# and accepts all of them, so only a MicroPython test catches the mistake
# (tests/firmware/test_clock.py test_sleep_ms_is_only_awaited_on_the_spot).
#
# wait_event_ms(event, ms): True if event was set within ms, False if the time ran out.
# On MicroPython not through wait_for_ms: asyncio.wait_for would hold, for as long as the
# loop waits, its own coroutine, a runner task and coroutine, and a task and generator for
# event.wait() (~0.37 KB a waiting loop, docs/memory.md "Session 10, relay"). Here the
# waiting task sits on the event's own queue (put there as Event.wait puts it: this is a
# generator, awaited like Event.wait, so no second generator is held) and one small alarm
# task sleeps beside it; the first of the two to run decides, and the other is taken off
# its queue (tests/firmware/test_clock.py plays each race below in a fixed order):
# - the event is set first: Event.set moves the waiter to the run queue (and clears its
#   `data`, which said which queue it waited on); the alarm, if its time comes before the
#   waiter runs, sees that and does nothing; the waiter removes the sleeping alarm from the
#   run queue (it never runs again: nothing is left running) and returns True;
# - the time runs out first: the alarm cancels the waiter off the event's queue and turns
#   the exception it will receive into TimeoutError; an event set after that finds the
#   waiter gone and stays set for the caller's next wait (no wake-up lost); False;
# - an outside cancel: the waiter is cancelled as before (it also overrides a TimeoutError
#   the alarm had already put there) and takes the alarm off the queue on its way out.
if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms
    wait_for_ms = asyncio.wait_for_ms

    async def _alarm(waiter, waiting, ms):
        await sleep_ms(ms)
        if waiter.data is waiting:  # still on the event's queue: the time ran out first
            waiter.cancel()
            waiter.data = asyncio.TimeoutError  # what the waiter is thrown, not a cancel

    def wait_event_ms(event, ms):  # a generator, awaited as asyncio's Event.wait is
        """Wait for event up to ms; True if it was set."""
        if event.state:
            return True
        waiter = asyncio.current_task()
        waiting = event.waiting
        # int(ms): asyncio's sleep_ms refuses a float in the alarm, a task of its own, and
        # the waiter then waited with no time-out at all (review_w5-1)
        alarm = asyncio.create_task(_alarm(waiter, waiting, int(ms)))
        waiting.push(waiter)  # as Event.wait does: on the event's queue, and says so
        waiter.data = waiting
        try:
            yield
        except asyncio.TimeoutError:
            return False
        finally:
            if not alarm.done():
                asyncio.core._task_queue.remove(alarm)
        return True
else:  # CPython
    async def sleep_ms(ms):
        await asyncio.sleep(ms / 1000)

    async def wait_for_ms(aw, ms):
        return await asyncio.wait_for(aw, ms / 1000)

    async def wait_event_ms(event, ms):
        """Wait for event up to ms; True if it was set."""
        try:
            await wait_for_ms(event.wait(), ms)
            return True
        except asyncio.TimeoutError:
            return False


class Clock:
    """The clock a service is given (injected, so tests can give a fake one): ms ticks with
    add/diff, unix seconds, and whether those seconds can be trusted.

    `source` says who set the wall time: "unset" until the SNTP client ("sntp") or, without
    WAN, the CH's Time cluster ("ch", ppmid.zigbee.chclock) says otherwise (set_source). A board passes what it knows at boot: "rtc" when its RTC kept the time
    across a reset, "unset" after a power cut. Without it, a clock that already reads after
    SET_AFTER at start (the unix port, CPython) counts as set by the host ("host")."""

    def __init__(self, time_module=None, source=None):
        t = time_module if time_module is not None else _time
        self._t = t
        self._offset = epoch_offset(t)
        if hasattr(t, "ticks_ms"):
            self.ms = t.ticks_ms
            self.diff = t.ticks_diff
            self.add = t.ticks_add
        elif time_module is None:
            self.ms, self.diff, self.add = ticks_ms, ticks_diff, ticks_add
        else:
            self.ms = lambda: int(t.monotonic() * 1000)
            self.diff = ticks_diff
            self.add = ticks_add
        if source is None:
            source = "host" if self.time() >= SET_AFTER else "unset"
        self.source = source
        self.synced_at = None

    def time(self):
        return int(self._t.time()) + self._offset

    def is_set(self):
        return self.source != "unset" and self.time() >= SET_AFTER

    def set_source(self, source, at=None):
        """Record that the wall time was just set (by "sntp" or "ch"), `at` unix seconds."""
        self.source = source
        self.synced_at = self.time() if at is None else at
