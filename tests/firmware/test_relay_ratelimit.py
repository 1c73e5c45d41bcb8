# Token buckets and the pacer (HAN protection), with an explicit ms clock.
from ppmid.relay.ratelimit import TokenBuckets, Pacer


def diff(a, b):
    return a - b


def test_burst_then_one_per_second():
    tb = TokenBuckets(1.0, 10, diff)
    now = 1000
    for i in range(10):
        assert tb.wait_ms("T", now) == 0, i
        tb.take("T", now)
    w = tb.wait_ms("T", now)
    assert 990 <= w <= 1001
    assert tb.wait_ms("T", now + w) == 0
    tb.take("T", now + w)
    assert tb.wait_ms("T", now + w) > 900
    # other keys are independent
    assert tb.wait_ms("U", now) == 0


def test_fractional_rates_and_refill_cap():
    tb = TokenBuckets(0.5, 2, diff)
    tb.take("k", 0)
    tb.take("k", 0)
    assert 1990 <= tb.wait_ms("k", 0) <= 2001
    # a long idle period refills only up to the burst
    assert tb.wait_ms("k", 100000) == 0
    tb.take("k", 100000)
    tb.take("k", 100000)
    assert tb.wait_ms("k", 100000) > 0


def test_wraparound_diff_is_used():
    # a diff that wraps at 2**30 as MicroPython ticks do
    def wdiff(a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d
    tb = TokenBuckets(1.0, 1, wdiff)
    tb.take("k", 0x3FFFFF00)
    assert tb.wait_ms("k", 0x3FFFFF00) > 0
    assert tb.wait_ms("k", 0x3FFFFF00 + 1100 - 0x40000000) == 0


def _wdiff(a, b):
    # time.ticks_diff on a 32-bit port (the ESP32): modular at 2**30, right within 2**29 ms
    return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


DAY_MS = 86400 * 1000


def test_a_stamp_days_old_reads_full_across_the_tick_wrap():
    # the pacer's buckets (1/s, burst 1) and a public-key kid's bad-signature bucket (3,
    # then one a minute): emptied, then not touched for 6.3 to 12.3 days, when the tick
    # difference of their stamp reads negative
    for rate, burst in ((1.0, 1), (1 / 60, 3)):
        for days in (6.3, 7, 9, 12.3):
            tb = TokenBuckets(rate, burst, _wdiff)
            t0 = 0x3FFF0000
            for i in range(burst):
                tb.take("k", t0)
            assert tb.wait_ms("k", t0) > 0
            later = (t0 + int(days * DAY_MS)) & 0x3FFFFFFF
            assert _wdiff(later, t0) < 0            # the case: the stamp reads in the future
            assert tb.wait_ms("k", later) == 0, (rate, days)
            assert len(tb._b) == 0                  # and a bucket found full is forgotten


def test_table_is_bounded_and_pruning_never_refuses():
    tb = TokenBuckets(1.0, 2, diff, max_keys=8)
    for i in range(100):
        tb.take(i, 0)
    assert len(tb._b) <= 8
    for i in range(100):
        tb.take(i, 5000)  # all refilled by now: pruned
    assert len(tb._b) <= 8


def test_pacer_one_in_flight_per_target_and_rate_per_originator():
    p = Pacer(1.0, 2, diff)
    assert p.ready_ms("T1", "O", 0) == 0
    p.sent("T1", "O", 1, 0)
    assert p.ready_ms("T1", "O", 0) == -1        # target busy
    assert p.ready_ms("T2", "O", 0) == 0         # another target, same originator
    p.sent("T2", "O", 2, 0)
    assert p.ready_ms("T3", "O", 0) > 0          # originator bucket empty (burst 2)
    assert p.ready_ms("T3", "P", 0) == 0         # other originator free
    p.finished("T1", 99)                         # not the one in flight: ignored
    assert p.ready_ms("T1", "P", 0) == -1
    p.finished("T1", 1)
    assert p.ready_ms("T1", "P", 0) == 0


def test_admission_wait_estimate():
    p = Pacer(0.5, 3, diff)
    assert p.admission_wait_s(0, 0) == 0
    assert p.admission_wait_s(2, 0) == 0
    assert p.admission_wait_s(3, 1) == 2.0       # one beyond the burst at 0.5/s
    assert p.admission_wait_s(1, 6) == 8.0
