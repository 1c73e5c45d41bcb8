# ppmid.ticks: deadlines made with ticks_add and compared with ticks_diff survive the wrap
# of MicroPython's ticks_ms (2**30 ms on the ESP32, ~12.4 days); the CPython stand-in is a
# monotonic clock that never wraps. Runs under both interpreters.
import sys

from ppmid.ticks import ticks_ms, ticks_diff, ticks_add

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
    from ppmid import ticks
    from ppmid.zigbee import ashlink, han
    for mod in (ashlink, han):
        assert mod.ticks_add is ticks.ticks_add and mod.ticks_diff is ticks.ticks_diff
        assert mod.ticks_ms is ticks.ticks_ms
