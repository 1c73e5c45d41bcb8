# Token buckets, with an explicit ms clock, and the relay's pacing built on them (HAN
# protection), through a relay with fakes (test_relay_support.Rig).
from ppmid.relay.ratelimit import TokenBuckets
from test_relay_support import Rig, ESME, GSME, PPMID, SUPPLIER, ACB, config, response_to, time_out_every_copy
from ppmid.relay.report import named


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


def _counters(r):
    return [r.relay.decode(b).counter for b in r.han.sent]


async def test_pacing_one_in_flight_per_target_and_a_bucket_per_originator():
    # (the relay's dispatch: a Pacer class of this module's until session 9)
    r = Rig(cfg=config(rate_per_s=1.0, burst=2, queue=10))
    for id, counter, target, originator in (("e", 10, ESME, SUPPLIER), ("g", 11, GSME, SUPPLIER),
                                            ("p", 12, PPMID, SUPPLIER), ("p-acb", 13, PPMID, ACB),
                                            ("e-acb", 14, ESME, ACB)):
        res = await r.submit(id, counter, target=target, originator=originator)
        assert res["status"] == "accepted", res
    await r.pump()
    # the supplier's bucket (burst 2) is empty after two; the ACB's command to the PPMID
    # goes, its command to the ESME waits for the one in flight there
    assert _counters(r) == [10, 11, 13]
    r.relay.on_han_message(response_to(r.han.sent[0]))   # the ESME answers: it is free
    await r.pump()
    assert _counters(r) == [10, 11, 13, 14]
    r.relay.on_han_message(response_to(r.han.sent[2]))   # the PPMID is free, the bucket not yet
    await r.pump()
    assert _counters(r) == [10, 11, 13, 14]
    w = await r.relay.dispatch_once()
    assert 0 < w <= 1001, w                               # a token in a second, at 1/s
    r.clock.advance(w)
    await r.pump()
    assert _counters(r) == [10, 11, 13, 14, 12]


async def test_a_late_response_leaves_the_next_command_to_its_target_in_flight():
    r = Rig(cfg=config(response_timeout_s=5, rate_per_s=10.0, burst=5, queue=10))
    for i in range(3):
        await r.submit("c-%d" % i, 10 + i)
    await r.pump()
    first = r.han.sent[0]
    await time_out_every_copy(r, 5000)    # c-0 and its copies unanswered: c-1 goes
    assert r.journal.by_id["c-0"].state == 3 and _counters(r)[-1] == 11   # TIMED_OUT
    n = len(r.han.sent)
    r.relay.on_han_message(response_to(first))           # c-0's response, late
    assert named(r.relay.counters)["late"] == 1
    await r.pump()
    assert len(r.han.sent) == n                          # c-1 still in flight: c-2 waits
    r.relay.on_han_message(response_to(r.han.sent[-1]))
    await r.pump()
    assert _counters(r)[-1] == 12


async def test_expiry_against_pacing_counts_the_commands_ahead_beyond_the_burst():
    r = Rig(cfg=config(rate_per_s=0.5, burst=3, queue=10))
    now = r.clock.time()
    for i in range(3):                                   # queued, not dispatched (no pump)
        await r.submit("c-%d" % i, 10 + i)
    # three ahead for the ESME and the supplier: the fourth is one beyond the burst, 2 s
    # away at 0.5/s
    res = await r.submit("x", 20, expires=now + 2)
    assert res["error"] == "E_RATE" and "the 3 commands ahead" in res["message"], res
    assert (await r.submit("y", 21, expires=now + 3))["status"] == "accepted"
    # the more of the two counts: none ahead for the GSME, four for the supplier (4 s)
    res = await r.submit("z", 22, target=GSME, expires=now + 4)
    assert res["error"] == "E_RATE" and "the 4 commands ahead" in res["message"], res
    # within the burst nothing waits: another originator, another target
    assert (await r.submit("w", 23, target=GSME, originator=ACB, expires=now + 1))["status"] == "accepted"


class Float32:
    """A float as an ESP32 holds it (its port is built with single-precision floats; the
    unix port here is double): every operation and every int it meets rounded to 32 bits."""

    def __init__(self, v):
        import struct
        self.v = struct.unpack("<f", struct.pack("<f", v))[0]

    def __rtruediv__(self, other):
        return Float32(Float32(other).v / self.v)

    def __radd__(self, other):
        return Float32(Float32(other).v + self.v)

    def __rmul__(self, other):
        return Float32(Float32(other).v * self.v)

    def __ge__(self, other):
        return self.v >= Float32(other).v

    def __le__(self, other):
        return self.v <= Float32(other).v


async def test_expiry_against_pacing_holds_in_single_precision_floats():
    # review r2 R2-7: now + over / rate >= expires, in an ESP32's float32 near unix time
    # 1.8e9, rounds both sides to a 128 s grid: 5 s of pacing against 60 s left was E_RATE
    from test_relay_support import FakeClock
    r = Rig(cfg=config(rate_per_s=1.0, burst=1, queue=20), clock=FakeClock(unix=1800000000 - 5))
    now = r.clock.time()
    assert now == 1800000000 and Float32(now + 60).v == now   # on the grid: the case that failed
    r.relay.rate = Float32(1.0)
    for i in range(5):                                   # queued, not dispatched (no pump)
        await r.submit("c-%d" % i, 10 + i)
    # five ahead, one token of burst: the sixth waits 5 s at 1/s
    assert (await r.submit("in-time", 20, expires=now + 60))["status"] == "accepted"
    # six ahead now: 6 s of pacing, 6 s left: too late, as in double precision
    res = await r.submit("late", 21, expires=now + 6)
    assert res["error"] == "E_RATE" and "the 6 commands ahead" in res["message"], res
    assert (await r.submit("just", 22, expires=now + 7))["status"] == "accepted"
