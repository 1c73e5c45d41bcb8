# review r4 R4-1: since review_r2 R2-1 a command's counter commits only when the device
# answers it, so a command that ended without a response (timed out and forgotten, failed,
# already-executed) left nothing behind, and its very envelope, offered again by whoever kept
# its bytes (no key needed), was accepted and relayed to the meter again. Its (originator,
# recipient, counter) is now spent (journal.Journal.spend): refused E_REPLAY, kept across
# restarts and compactions, bounded at SPENT_KEEP, and never raising a floor.
# These run the gateway's real validator (gbcs/validate.py) over the journal's store.
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio
import gc

from test_relay_support import ESME, GSME, SUPPLIER, response_to, time_out_every_copy, refusal_of
from test_relay_pending_counters import RealRig, pair

SPENT = "was taken already by a command to this recipient that ended without a response"


async def _finish_others(r, n, first=1000):
    # n other commands (to the GSME) answered and finished: they push the first one's id out
    # of the relay's recent results (16)
    r.han.responder = response_to
    for i in range(n):
        res = await r.submit("o%d" % i, first + i, target=GSME, code=0x0097)
        assert res["status"] == "accepted", res
        r.clock.advance(2000)
        await r.pump()
        _drop_copies(r)
    r.han.responder = None
    r.han.sent.clear()


def _drop_copies(r):
    del r.pub.messages[:], r.logs[:], r.han.sent[:]      # (the fakes' copies: MicroPython's heap here)
    gc.collect()


def _restart(r):
    _drop_copies(r)
    r.restart()


async def _refused_as_spent(r, env):
    res = await r.accept_env(env)
    assert res["status"] == "rejected" and res["error"] == "E_REPLAY" and SPENT in res["message"], res
    await r.pump()
    assert r.han.sent == [], "relayed again"


async def test_a_timed_out_commands_envelope_replayed_verbatim_is_refused_across_restarts():
    gc.collect()
    r = RealRig()
    env = r.env("v1", 777)                               # no expires: optional in the envelope
    assert (await r.accept_env(env))["status"] == "accepted"
    await r.pump()                                       # relayed; no response ever comes
    await time_out_every_copy(r, r.relay.budget_s * 1000)
    assert r.pub.statuses("v1") == ["accepted", "relayed", "timeout"]
    r.clock.advance(r.relay.late_window_s * 1000 + 1000)
    r.relay.check_timers()
    await r.pump()
    assert len(r.journal.live) == 0                      # forgotten after its late window
    r.han.sent.clear()
    # its result is remembered, as a failed or answered command's is
    res = await r.accept_env(env)
    assert (res["status"], res.get("again")) == ("timeout", True), res
    await _finish_others(r, 16)
    await _refused_as_spent(r, env)                      # before R4-1's fix: accepted, relayed
    # the same bytes under a new id (the shared legacy key's holder): refused too
    await _refused_as_spent(r, r.env("v1-rewrapped", 777))
    _restart(r)                                          # the journal's records, scanned
    await _refused_as_spent(r, env)
    _restart(r)                                          # the file the last open compacted
    await _refused_as_spent(r, env)
    # spent is not committed: no counter, no floor for the meter; the next counter goes
    assert r.store.get(pair(SUPPLIER)) is None and r.store.get("*:" + ESME) is None
    assert (await r.submit("v2", 778))["status"] == "accepted"


async def test_a_command_failed_unsent_is_refused_when_replayed_after_16_results_and_a_restart():
    gc.collect()
    # the review's t3: the HAN was down for 15 minutes, so s1 failed and never reached the meter
    r = RealRig()
    env = r.env("s1", 4242)
    assert (await r.accept_env(env))["status"] == "accepted"
    r.han.fail = ["E_HAN_DOWN"] * 50
    for _ in range(40):
        r.clock.advance(25000)
        r.relay.check_timers()
        await r.pump()
    assert r.pub.statuses("s1")[-1] == "failed" and r.han.sent == []
    r.han.fail = []
    await _finish_others(r, 16)
    _restart(r)
    await _refused_as_spent(r, env)                      # before: accepted, relayed and answered
    assert r.store.get(pair(SUPPLIER)) is None


async def test_a_command_ended_already_executed_is_spent():
    gc.collect()
    r = RealRig()
    env = r.env("x1", 31)
    assert (await r.accept_env(env))["status"] == "accepted"
    await r.pump()
    r.clock.advance(r.relay.budget_s * 1000 + 100)
    r.relay.check_timers()
    await r.pump()                                       # its budget ended: a copy went
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    await r.publish_all()
    assert r.pub.statuses("x1")[-1] == "already-executed" and len(r.journal.live) == 0
    await _finish_others(r, 16)
    await _refused_as_spent(r, env)
    assert r.journal.counters.get(b"90B3D51F30010000:00DB1234567890A0") is None


async def test_spent_triples_are_bounded_never_raise_a_floor_and_the_oldest_goes_first():
    gc.collect()
    from ppmid.relay.journal import SPENT_KEEP
    r = RealRig(admit_wait_ms=0, max_wait_s=60)
    r.relay.hold_dispatch = True                         # nothing goes: each fails E_STALE, unsent
    n = SPENT_KEEP + 2
    for batch in range(0, n, 11):                        # (batches: MicroPython's heap here)
        for i in range(batch, min(n, batch + 11)):
            out = await r.submit("e%d" % i, 100 + i, originator="AA%014X" % i)
            assert out["status"] == "accepted", out
        r.clock.advance(61000)
        r.relay.check_timers()
        await r.publish_all()
        assert len(r.journal.live) == 0
        _drop_copies(r)
    _restart(r)
    assert r.journal.counters == {}                       # no pair committed, no floor raised
    r.relay.hold_dispatch = True
    # beyond the bound: the two oldest may be offered again (their expiry is the sender's guard)
    assert (await r.submit("e0-again", 100, originator="AA%014X" % 0))["status"] == "accepted"
    for i in (2, n - 1):
        res = await r.submit("e%d-again" % i, 100 + i, originator="AA%014X" % i)
        assert res["error"] == "E_REPLAY" and SPENT in res["message"], res
