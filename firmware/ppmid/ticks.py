# Millisecond ticks for deadlines, one place for the whole firmware.
# On MicroPython these are time.ticks_ms / ticks_add / ticks_diff: ticks_ms wraps (on the
# ESP32 every 2**30 ms, ~12.4 days), so a deadline must be made with ticks_add(now, ms) and
# compared with ticks_diff(deadline, now), never with + and <. On CPython (host tools and
# tests) a monotonic millisecond clock that does not wrap stands in.
try:
    from time import ticks_ms, ticks_diff, ticks_add
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(t, delta):
        return t + delta
