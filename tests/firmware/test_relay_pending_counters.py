# review_r2 R2-1: the gateway cannot check a GBCS signature, so a command's anti-replay
# counter is pending while the command is live and committed only when the device answers
# it (docs/relay.md "Anti-replay counters"). Before, it was committed at accept: one command
# with counter 2**64-1 under the shared legacy key closed that originator's route to a meter
# for good, and 65 of them under made-up originators raised the meter's floor
# (relay/counter_floor.py) to 2**64-1, closing it for every DCC User, across restarts.
# These run the gateway's real validator (gbcs/validate.py) over the journal's store.
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio
import gc

import test_relay_support as S
from test_relay_support import ESME, GSME, SUPPLIER, response_to, time_out_every_copy

TOP = 2**64 - 1
NEWCOMER = "90B3D51F30077777"   # a supplier that never sent to this gateway before


class RealRig(S.Rig):
    """S.Rig with the gateway's GBCS validator in place of FakeValidator."""

    def boot(self):
        S.Rig.boot(self)
        from ppmid.gbcs.validate import Validator
        self.validator = self.relay.validator = Validator(self.cfg, self.store)


def meter_refusing(counter):
    """A meter that answers every command but those carrying `counter` (forged: their
    signature fails its check, so it sends no response)."""
    from ppmid.gbcs import decode

    def respond(cmd):
        return None if decode(cmd).counter == counter else response_to(cmd)
    return respond


def pair(originator, recipient=ESME):
    return originator + ":" + recipient


async def test_a_forged_counter_the_meter_never_answers_commits_nothing():
    r = RealRig()
    r.han.responder = meter_refusing(TOP)
    assert (await r.submit("g1", 100))["status"] == "accepted"
    await r.pump()
    assert r.store.get(pair(SUPPLIER)) == 100                  # answered: committed
    # the legacy key's holder sends made-up GBCS as that supplier, counter 2**64-1
    assert (await r.submit("x1", TOP))["status"] == "accepted"
    assert r.store.get(pair(SUPPLIER)) == 100                  # pending, not committed
    await r.pump()
    await time_out_every_copy(r, r.relay.budget_s * 1000)
    assert r.pub.statuses("x1")[-1] == "timeout" and len(r.han.sent) == 2 + 2   # g1, x1 and its copies
    assert r.store.get(pair(SUPPLIER)) == 100
    res = await r.submit("g2", 101)                            # before R2-1's fix: E_REPLAY
    assert res["status"] == "accepted", res
    while "response" not in r.pub.statuses("g2"):
        await r.pump()
    assert r.store.get(pair(SUPPLIER)) == 101
    r.restart()
    assert (await r.submit("g3", 10**12))["status"] == "accepted"
    # what the device answered stays refused, and a replay of it, across the restart
    res = await r.submit("g2-replayed", 101)
    assert res["error"] == "E_REPLAY" and "not above the last" in res["message"], res


async def test_a_pending_counter_is_refused_again_and_survives_a_restart():
    r = RealRig()
    assert (await r.submit("c1", 500))["status"] == "accepted"   # queued: nothing sent yet
    res = await r.submit("c1-copy", 500)
    assert (res["error"], res["message"]) == (
        "E_REPLAY", "originator counter 500 is that of command c1, which the gateway still holds "
        "for this originator and recipient")
    # another pair's same counter is no duplicate
    assert (await r.submit("c1-gsme", 500, target=GSME, code=0x0097))["status"] == "accepted"
    assert (await r.submit("c1-other", 500, originator=NEWCOMER))["status"] == "accepted"
    r.restart()                                # the pending counter is the journal's live command
    assert (await r.submit("c1-copy2", 500))["error"] == "E_REPLAY"
    assert r.store.get(pair(SUPPLIER)) is None
    r.han.responder = response_to
    while "response" not in r.pub.statuses("c1"):
        await r.pump()
    assert r.store.get(pair(SUPPLIER)) == 500
    assert (await r.submit("c1-copy3", 500))["error"] == "E_REPLAY"
    assert (await r.submit("c1-older", 499))["error"] == "E_REPLAY"


async def test_a_timed_out_counter_stays_pending_and_a_late_response_commits_it():
    r = RealRig()
    assert (await r.submit("t1", 700))["status"] == "accepted"
    await r.pump()
    await time_out_every_copy(r, r.relay.budget_s * 1000)
    assert r.pub.statuses("t1")[-1] == "timeout"
    assert (await r.submit("t1-copy", 700))["error"] == "E_REPLAY"   # still correlatable
    assert r.store.get(pair(SUPPLIER)) is None
    r.relay.on_han_message(response_to(r.han.sent[0]))              # late, within the window
    assert r.relay.status("t1") == "response" and r.store.get(pair(SUPPLIER)) == 700


async def test_a_command_that_failed_commits_nothing_and_its_counter_is_spent():
    r = RealRig()
    now = r.clock.time()
    assert (await r.submit("busy", 1, target=GSME, code=0x0097))["status"] == "accepted"
    await r.pump()                                   # in flight to the GSME, unanswered
    assert (await r.submit("f1", 50, target=GSME, code=0x0097, expires=now + 2))["status"] == "accepted"
    r.clock.advance(3000)
    r.relay.check_timers()
    await r.pump()
    assert r.pub.statuses("f1")[-1] == "failed" and r.relay.result("f1")["error"]["code"] == "E_EXPIRED"
    assert r.store.get(pair(SUPPLIER, GSME)) is None
    # never relayed, yet its counter is spent (review r4 R4-1: whoever kept its bytes must
    # not have it relayed later, under its id or a new one): a new counter goes, and the
    # spent one raised nothing
    res = await r.submit("f1-again", 50, target=GSME, code=0x0097)
    assert res["error"] == "E_REPLAY" and "ended without a response" in res["message"], res
    assert (await r.submit("f1-anew", 51, target=GSME, code=0x0097))["status"] == "accepted"
    assert r.store.get(pair(SUPPLIER, GSME)) is None and r.store.get("*:" + GSME) is None


async def test_66_forged_originators_that_expire_unsent_do_not_raise_a_meters_floor():
    # review_r2's t_floor_quiet: the first forged command stays in flight unanswered, the
    # others expire in the queue
    r = RealRig(admit_wait_ms=0)
    n = 0
    for batch in range(11):
        for k in range(6):
            i = batch * 6 + k
            out = await r.submit("x%d" % i, TOP, originator="AA%014X" % i, expires=r.clock.time() + 2)
            n += out["status"] == "accepted"
        await r.pump()
        r.clock.advance(3000)
        r.relay.check_timers()
        await r.pump()
        del r.pub.messages[:], r.logs[:]   # (the fakes' copies: MicroPython's heap here)
        gc.collect()
    # the first reached the meter and, once its 25 s budget ended, one more: the other 64
    # expired in the queue, unsent
    assert n == 66 and len(set(r.han.sent)) == 2 and r.env("x0", TOP, originator="AA%014X" % 0).gbcs in r.han.sent
    assert r.journal.counters == {}                  # nothing committed, no floor
    res = await r.submit("n1", 5, originator=NEWCOMER, target=GSME, code=0x0097)   # another meter: free
    assert res["status"] == "accepted", res
    await time_out_every_copy(r, r.relay.budget_s * 1000)
    res = await r.submit("n2", 5, originator=NEWCOMER)              # before: E_REPLAY
    assert res["status"] == "accepted", res


async def test_66_forged_originators_sent_and_unanswered_do_not_raise_a_meters_floor():
    # review_r2's t_floor: each forged command goes to the meter, which does not answer it
    r = RealRig(admit_wait_ms=0)
    r.han.responder = meter_refusing(TOP)
    assert (await r.submit("g1", 100))["status"] == "accepted"
    await r.pump()
    sent = 1
    for i in range(66):
        out = await r.submit("y%d" % i, TOP, originator="AA%014X" % i)
        assert out["status"] == "accepted", out
        await r.pump()
        await time_out_every_copy(r, r.relay.budget_s * 1000)
        sent += len(r.han.sent) - 1
        del r.pub.messages[:], r.han.sent[1:], r.logs[:]   # (the fakes' copies: MicroPython's heap here)
        gc.collect()
    assert sent == 1 + 66 * 3                                  # each with its 2 copies
    assert r.store.get("*:" + ESME) is None and list(r.journal.counters) == [b"90B3D51F30010000:00DB1234567890A0"]
    res = await r.submit("n1", 5, originator=NEWCOMER)              # before: E_REPLAY
    assert res["status"] == "accepted", res
    assert (await r.submit("g2", 101))["status"] == "accepted"
    r.restart()
    res = await r.submit("n2", 6, originator=NEWCOMER)
    assert res["status"] == "accepted", res


async def test_answered_counters_still_bound_the_store_and_raise_the_floor():
    # the bound (64 pairs) and the floor work as before, fed by answered commands only
    from ppmid.relay.journal import PAIRS_KEEP
    r = RealRig(admit_wait_ms=0, max_live=200)
    r.han.responder = response_to
    for i in range(PAIRS_KEEP + 2):
        res = await r.submit("a%d" % i, 1000 + i, originator="90B3D51F%08X" % i)
        assert res["status"] == "accepted", res
        r.clock.advance(1100)
        await r.pump()
        del r.pub.messages[:], r.han.sent[:]
        gc.collect()
    assert r.store.get("*:" + ESME) == 1001            # the two lowest pairs dropped
    assert (await r.submit("old", 1001, originator="90B3D51F%08X" % 1))["error"] == "E_REPLAY"
    assert (await r.submit("new", 1002, originator=NEWCOMER))["status"] == "accepted"


async def test_a_copy_refused_by_the_meter_commits_nothing():
    # "already-executed" ends a command whose copy the meter refused with an alert, and a
    # meter may raise that alert ("Failed Authentication or Authorisation ...") for a
    # signature it cannot verify as well: taken as proof, it would let a forged counter
    # commit after one unanswered budget and a copy
    from test_relay_support import refusal_of
    r = RealRig()
    assert (await r.submit("x1", TOP))["status"] == "accepted"
    await r.pump()
    r.clock.advance(r.relay.budget_s * 1000 + 100)
    r.relay.check_timers()
    await r.pump()                                    # its budget ended: a copy went
    assert len(r.han.sent) == 2
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    await r.publish_all()
    assert r.pub.statuses("x1")[-1] == "already-executed"
    assert r.journal.counters == {}
    r.han.responder = response_to
    res = await r.submit("g1", 100)
    assert res["status"] == "accepted", res
    while "response" not in r.pub.statuses("g1"):
        await r.pump()
    assert r.store.get(pair(SUPPLIER)) == 100


async def test_a_copy_waiting_past_its_expiry_or_its_wait_times_out_and_its_response_commits():
    # review r4 R4-2: the first copy went, unanswered; the copy queued after its budget was
    # held past the command's expiry (or, with none, past max_wait_s) and ended "failed
    # E_EXPIRED: expired before it could be relayed", its late response then went to the
    # alert topic and nothing committed
    for expiring in (True, False):
        r = RealRig(max_wait_s=60)
        now = r.clock.time()
        res = await r.submit("e1", 900, expires=now + r.relay.budget_s + 5 if expiring else None)
        assert res["status"] == "accepted", res
        await r.pump()
        r.clock.advance(r.relay.budget_s * 1000 + 100)
        r.relay.check_timers()                           # budget ended: a copy queued
        e = r.journal.by_id["e1"]
        assert e.resends == 1 and len(r.han.sent) == 1
        r.clock.advance((6 if expiring else 61) * 1000)  # held (pacing, the HAN) past it
        r.relay.check_timers()
        await r.publish_all()
        assert r.pub.statuses("e1") == ["accepted", "relayed", "timeout"], r.pub.statuses("e1")
        assert r.relay.result("e1")["error"]["code"] != "E_EXPIRED"
        r.relay.on_han_message(response_to(r.han.sent[0]))   # the meter had executed it
        assert r.relay.status("e1") == "response" and r.store.get(pair(SUPPLIER)) == 900


def _other_code(cmd, code=0x0050):
    # a CRA-2 frame naming command `cmd`'s (originator, recipient, counter), swapped as a
    # response's are, with another message code (0x0050: ECS43, not the command's 0x0007)
    from ppmid.gbcs import decode
    m = decode(cmd)
    return S.gbcs_message(2, m.counter, S._hexs(m.recipient), S._hexs(m.originator), code)


async def test_a_response_with_another_message_code_is_not_the_answer():
    # review r4 R4-4: a GBCS response carries its command's message code, so a CRA-2 frame
    # with the command's triple and another code (forged into the tunnel) is unmatched: no
    # answer, no commit, the command stays live until its real response
    from ppmid.relay.report import named
    r = RealRig()
    assert (await r.submit("m1", 900))["status"] == "accepted"
    await r.pump()
    e = r.journal.by_id["m1"]
    assert e.state == 1 and e.code == 0x0007                       # sending: waits for its response
    before = named(r.relay.counters)
    r.relay.on_han_message(_other_code(r.han.sent[0]))
    await r.publish_all()
    after = named(r.relay.counters)
    assert after["unmatched"] == before["unmatched"] + 1 and after["answered"] == before["answered"]
    assert r.relay.status("m1") == "relayed" and e.state == 1 and r.store.get(pair(SUPPLIER)) is None
    assert len(r.pub.on("/alert")) == 1                            # published as any unmatched frame
    assert [x for x in r.logs if "response naming m1 carries message code 0x0050, not the command's (0x0007)" in x], r.logs
    assert (await r.submit("m1-copy", 900))["error"] == "E_REPLAY"  # still pending
    # after a restart the code is read back from the journaled command (which goes once
    # more, as one found sending does): the same holds
    r.restart()
    e = r.journal.by_id["m1"]
    assert e.code == 0x0007
    await r.pump()
    assert e.state == 1 and len(r.han.sent) == 2
    r.relay.on_han_message(_other_code(r.han.sent[0], 0x0007 ^ 0x0100))
    assert e.state == 1 and r.store.get(pair(SUPPLIER)) is None
    # its real response answers it and commits its counter
    r.relay.on_han_message(response_to(r.han.sent[0]))
    assert r.relay.status("m1") == "response" and r.store.get(pair(SUPPLIER)) == 900


async def test_a_late_response_with_another_message_code_commits_nothing():
    r = RealRig()
    assert (await r.submit("m2", 910))["status"] == "accepted"
    await r.pump()
    await time_out_every_copy(r, r.relay.budget_s * 1000)
    assert r.pub.statuses("m2")[-1] == "timeout"
    r.relay.on_han_message(_other_code(r.han.sent[0]))
    assert r.relay.status("m2") == "timeout" and r.store.get(pair(SUPPLIER)) is None
    r.relay.on_han_message(response_to(r.han.sent[0]))             # late, within the window
    assert r.relay.status("m2") == "response" and r.store.get(pair(SUPPLIER)) == 910


def _undecodable(r, id, counter):
    # a command journaled before this boot whose GBCS this firmware's decoder refuses (a
    # decoder made stricter by an update): the accept record is intact, its body is not GBCS
    import struct
    triple = (S.eui(ESME), S.eui(SUPPLIER), struct.pack(">Q", counter))
    return r.journal.accept(id, "mqtt", None, r.clock.time(), *triple, b"\xDF\x09 not GBCS", False, 0x0007)


async def test_a_journaled_command_that_no_longer_decodes_is_not_relayed():
    # the boot's scan reads a command's message code from its journaled body; one that does
    # not decode gets none, and no response could answer it. Never sent, it is not sent now
    # (review r7-3: it was relayed, and the meter could execute what the gateway reports
    # "timeout"): it fails with the journal's code, and its counter is spent
    r = RealRig()
    _undecodable(r, "j1", 920)
    r.restart()
    e = r.journal.by_id["j1"]
    assert e.code is None and e.state == 4 and e.error == "E_JOURNAL", (e.state, e.error)   # J.FAILED
    assert [x for x in r.logs if "j1: its GBCS on flash does not decode: no response will answer it" in x], r.logs
    assert [x for x in r.logs if "j1 failed: E_JOURNAL its GBCS on flash does not decode" in x], r.logs
    await r.pump()
    assert r.han.sent == [], r.han.sent
    st = [m for m in r.pub.on("/rsp") if m["id"] == "j1"]
    assert [(m["status"], m["error"]) for m in st] == [("failed", {
        "code": "E_JOURNAL", "message": "its GBCS on flash no longer decodes: never relayed"})], st
    assert "j1" not in r.journal.by_id and r.relay.status("j1") == "failed"   # its status out: forgotten
    for code in (0x0007, 0x0050):
        r.relay.on_han_message(S.gbcs_message(2, 920, ESME, SUPPLIER, code))
    assert r.store.get(pair(SUPPLIER)) is None
    # its counter is spent, as an unanswered command's, across a restart too
    r.restart()
    res = await r.submit("j1-again", 920)
    assert res["error"] == "E_REPLAY" and "ended without a response" in res["message"], res
    assert (await r.submit("j1-new", 921))["status"] == "accepted"


async def test_a_journaled_command_that_no_longer_decodes_and_may_have_gone_gets_no_copy():
    # found sending at the boot (its bytes may have left), or queued for a copy: no copy
    # goes (a copy was one more unanswerable send, review r7-3); it times out at once, so its
    # meter is not held for a budget no response can end, and its counter is spent after the
    # late window, as any timed-out command's
    from ppmid.relay.resend import record_resend
    r = RealRig()
    e2 = _undecodable(r, "j2", 930)
    r.journal.sending(e2, r.clock.time() + r.relay.budget_s)
    e3 = _undecodable(r, "j3", 931)
    r.journal.sending(e3, r.clock.time() + r.relay.budget_s)
    record_resend(r.journal, e3)            # found sending at an earlier boot: a copy queued
    r.restart()
    assert [r.journal.by_id[i].state for i in ("j2", "j3")] == [3, 3]   # J.TIMED_OUT
    await r.pump()
    assert r.han.sent == [], r.han.sent
    assert r.pub.statuses("j2") == ["timeout"] and r.pub.statuses("j3") == ["timeout"], r.pub.messages
    r.han.responder = response_to
    assert (await r.submit("g1", 100))["status"] == "accepted"   # the meter is free at once
    await r.pump()
    assert len(r.han.sent) == 1 and r.pub.statuses("g1") == ["accepted", "relayed", "response"], r.pub.messages
    r.clock.advance((r.relay.late_window_s + 1) * 1000)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 1 and "j2" not in r.journal.by_id and "j3" not in r.journal.by_id
    for i, counter in (("j2", 930), ("j3", 931)):
        res = await r.submit(i + "-again", counter)
        assert res["error"] == "E_REPLAY" and "ended without a response" in res["message"], res
