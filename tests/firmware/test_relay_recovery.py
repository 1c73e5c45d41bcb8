# Restart recovery: RAM is lost, the flash journal is kept, the fakes outside stay. Checks
# the promises of docs/relay.md: accepted-not-sent is sent exactly once; a command marked
# "sending" is sent again once per restart, at most MAX_RESENDS times, and the meter's
# refusal of a copy ends it already-executed; unacknowledged statuses are published again;
# a response arriving after the restart is correlated through the journal; counters stay
# closed.
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

from test_relay_support import Rig, ESME, GSME, response_to, refusal_of, config
from ppmid.relay import journal as J
from ppmid.relay.resend import MAX_RESENDS
from ppmid.relay.report import named


async def test_accepted_not_sent_is_sent_once_after_restart_and_an_uncertain_one_again():
    r = Rig()
    await r.submit("c-1", 10)
    await r.submit("c-2", 11, target=GSME)
    assert r.han.sent == []
    r.restart()
    await r.pump()
    assert len(r.han.sent) == 2
    r.restart()    # both were marked sending: their bytes may have reached the meters
    await r.pump()
    assert len(r.han.sent) == 4 and r.han.sent[2:] == r.han.sent[:2]   # one copy each
    # the meters executed the first copies (their responses died with the power): they
    # refuse the second ones as replays
    for b in r.han.sent[2:]:
        r.relay.on_han_message(refusal_of(b))
    await r.publish_all()
    assert sorted(i for i, s in r.pub.statuses() if s == "already-executed") == ["c-1", "c-2"]
    assert named(r.relay.counters)["answered"] == 2 and named(r.relay.counters)["already_executed"] == 2
    assert r.journal.live == {}
    r.restart()
    await r.pump()
    assert len(r.han.sent) == 4


class BlockingHan:
    """A HAN link that takes the bytes and then never returns: the power goes while the
    send is under way."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = inner.sent

    async def send(self, dest, data, paced=None):
        self.sent.append(bytes(data))
        await asyncio.Event().wait()

    async def receive(self):
        return await self.inner.receive()


async def crash_during_send(r, lose_clock=False):
    inner = r.han
    n = len(inner.sent)
    r.relay.han = BlockingHan(inner)
    task = asyncio.create_task(r.relay.dispatch_once())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(inner.sent) == n + 1
    task.cancel()  # power cut: the coroutine never resumes
    try:
        await task
    except BaseException:
        pass
    if lose_clock:
        lose_the_clock(r)
    r.restart()


def lose_the_clock(r):
    # an ESP32 after a power cut: its RTC restarts at 2000-01-01 and SNTP has not answered
    r.clock.unix0 = 946684800 - r.clock.t_ms // 1000
    assert not r.clock.is_set()


def set_the_clock(r, unix=1800000100):
    r.clock.unix0 = unix - r.clock.t_ms // 1000
    assert r.clock.is_set()


async def test_sending_marked_is_sent_again_once_and_the_first_copys_reply_is_correlated():
    r = Rig()
    await r.submit("c-1", 10)
    await crash_during_send(r)
    e = r.journal.by_id["c-1"]
    assert e.state == J.QUEUED and e.resends == 1
    await r.pump()
    r.clock.advance(5000)
    await r.pump()
    assert len(r.han.sent) == 2 and r.han.sent[1] == r.han.sent[0]   # one copy, not more
    # the first copy's response comes in after the restart: correlated through the journal
    r.relay.on_han_message(response_to(r.han.sent[0]))
    # and the meter's refusal of the second copy changes nothing: an alert like any other
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    await r.publish_all()
    assert r.pub.statuses("c-1")[-1] == "response" and "already-executed" not in r.pub.statuses("c-1")
    assert r.pub.on("/rsp")[-1]["late"] is False
    assert len(r.pub.on("/alert")) == 1
    assert "c-1" not in r.journal.by_id


async def test_a_command_queued_for_a_copy_keeps_its_first_response_across_a_restart():
    # queued for a copy (its budget ended unanswered, or it was found sending at a boot), and
    # the power went before the copy did: the first copy's response, coming after the
    # restart, is its answer, and no copy goes. Before, recovery made a queued command
    # findable only in the boot that queued it: the response went to the alert topic, the
    # copy went, and the command ended "timeout" (the relay crash soak, 1 run in 6)
    r = Rig()
    await r.submit("c-1", 10)
    await r.submit("c-2", 11, target=GSME)
    await r.pump()
    assert len(r.han.sent) == 2
    r.clock.advance(r.relay.budget_s * 1000 + 100)
    r.relay.check_timers()      # no response within the budget: both queued for a copy
    r.restart()
    assert [(e.state, e.resends) for e in r.journal.entries()] == [(J.QUEUED, 1)] * 2
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    assert len(r.han.sent) == 3 and r.han.sent[2] == r.han.sent[1], r.han.sent   # c-2's copy only
    assert r.pub.statuses("c-1")[-1] == "response", r.pub.statuses("c-1")
    assert r.pub.on("/alert") == [], r.pub.on("/alert")
    # queued at a boot (found sending), and a second power cut before its copy
    r = Rig()
    await r.submit("c-3", 12)
    await crash_during_send(r)
    r.restart()
    e = r.journal.by_id["c-3"]
    assert e.state == J.QUEUED and e.resends == 1
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    assert len(r.han.sent) == 1 and r.pub.statuses("c-3")[-1] == "response", (r.han.sent, r.pub.messages)
    assert r.pub.on("/alert") == [] and r.journal.live == {}


async def test_a_copy_the_meter_never_had_before_is_executed_and_answered():
    # the power went between the sending record and the UART write: the copy is the first
    # the meter sees, and it answers it
    r = Rig()
    await r.submit("c-1", 10)
    r.journal.sending(r.journal.by_id["c-1"], r.clock.time() + 25)   # then the power cut
    r.restart()
    await r.pump()
    assert len(r.han.sent) == 1
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    assert r.pub.statuses("c-1")[-1] == "response" and r.journal.live == {}


async def test_already_executed_survives_a_restart_before_it_is_published():
    r = Rig()
    await r.submit("c-1", 10)
    await crash_during_send(r)
    await r.pump()
    r.pub.down = True
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    assert r.journal.by_id["c-1"].state == J.ALREADY_EXECUTED
    r.restart()
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("c-1")[-1] == "already-executed" and r.journal.live == {}
    assert len(r.han.sent) == 2


async def test_a_refusal_of_a_command_never_resent_is_only_an_alert():
    r = Rig()
    await r.submit("c-1", 10)
    await r.pump()
    r.relay.on_han_message(refusal_of(r.han.sent[0]))   # no crash: not ours to interpret
    await r.publish_all()
    assert r.journal.by_id["c-1"].state == J.SENDING
    assert len(r.pub.on("/alert")) == 1 and "already-executed" not in r.pub.statuses("c-1")


async def crash_until_no_more_copies(r, lose_clock=False):
    # a power cut during every send: the first copy and MAX_RESENDS more, then no more
    for i in range(MAX_RESENDS + 1):
        await crash_during_send(r, lose_clock=lose_clock and i == MAX_RESENDS)
    e = r.journal.by_id["c-1"]
    assert e.state == J.SENDING and e.resends == MAX_RESENDS
    assert len(r.han.sent) == MAX_RESENDS + 1


async def test_sending_marked_without_copies_left_times_out_when_its_budget_ends_after_restart():
    r = Rig(cfg=config(response_timeout_s=20))
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)   # same target: must wait for c-1's budget
    await crash_until_no_more_copies(r)
    n = len(r.han.sent)
    await r.pump()
    assert len(r.han.sent) == n
    r.clock.advance(15000)
    r.relay.check_timers()
    await r.pump()
    assert r.journal.by_id["c-1"].state == J.SENDING and len(r.han.sent) == n
    r.clock.advance(6000)
    r.relay.check_timers()
    await r.pump()
    assert r.journal.by_id["c-1"].state == J.TIMED_OUT
    assert "timeout" in r.pub.statuses("c-1")
    assert len(r.han.sent) == n + 1  # now c-2 may go
    # and c-1's answer, late, is still correlated and published late
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    last = [m for m in r.pub.on("/rsp") if m["id"] == "c-1"][-1]
    assert last["status"] == "response" and last["late"] is True


async def _timed_out_after_copies(r, by_restarts):
    # c-1 had its MAX_RESENDS copies, none answered, and timed out: the copies sent by
    # restarts that found it sending, or by budget ends with no restart
    await r.submit("c-1", 10)
    if by_restarts:
        await crash_until_no_more_copies(r)
        await r.pump()
        r.clock.advance(21000)
        r.relay.check_timers()
        await r.pump()
    else:
        await r.pump()
        for _ in range(MAX_RESENDS + 1):
            r.clock.advance(21000)
            r.relay.check_timers()
            await r.pump()
            r.clock.advance(100)
            await r.pump()
    e = r.journal.by_id["c-1"]
    assert e.state == J.TIMED_OUT and e.resends == MAX_RESENDS and len(r.han.sent) == 1 + MAX_RESENDS


async def test_a_late_refusal_of_a_copy_is_already_executed_after_a_restart_or_compaction():
    # review 90, open question (a): the meter's refusal of the last copy of a timed-out
    # command, inside its late window, ends it already-executed, whether or not the gateway
    # restarted (and compacted its journal) in between and whichever sent the copies
    for by_restarts, restart, compact in ((False, False, False), (False, True, False), (False, True, True),
                                          (True, False, False), (True, True, True)):
        r = Rig(cfg=config(response_timeout_s=20))
        await _timed_out_after_copies(r, by_restarts)
        if compact:
            r.journal.compact()
        if restart:
            r.restart()
            assert r.journal.by_id["c-1"].resends == MAX_RESENDS
        await r.publish_all()
        alerts = len(r.pub.on("/alert"))
        r.relay.on_han_message(refusal_of(r.han.sent[-1]))
        await r.publish_all()
        case = (by_restarts, restart, compact)
        assert r.pub.statuses("c-1")[-1] == "already-executed", (case, r.pub.statuses("c-1"))
        assert len(r.pub.on("/alert")) == alerts, case
        assert r.journal.by_id.get("c-1") is None or r.journal.by_id["c-1"].state == J.ALREADY_EXECUTED


async def test_sending_marked_that_expired_while_the_power_was_off_gets_no_copy_and_times_out():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10, expires=r.clock.time() + 3)
    e = r.journal.by_id["c-1"]
    r.journal.sending(e, r.clock.time() + 5)   # the bytes may have left, then the power cut
    r.clock.advance(4000)                      # back after its expiry
    r.restart()
    await r.pump()
    assert r.han.sent == [] and r.journal.by_id["c-1"].state == J.SENDING
    r.clock.advance(2000)
    r.relay.check_timers()
    await r.pump()
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "timeout" and r.han.sent == []


async def test_command_accepted_before_sntp_is_not_failed_stale_by_the_clocks_step():
    # after a power cut the board accepts commands on its unset clock (year 2000); when
    # SNTP sets it, the clock steps ~25 years: that is not time spent waiting for the HAN
    r = Rig()
    r.restart()
    lose_the_clock(r)
    r.han.fail = ["E_HAN_DOWN"] * 3
    await r.submit("c-1", 10)
    await r.pump()
    assert r.han.sent == [] and r.journal.by_id["c-1"].state == J.QUEUED
    set_the_clock(r)
    r.relay.check_timers()
    assert r.journal.by_id["c-1"].state == J.QUEUED, r.pub.statuses("c-1")
    for _ in range(4):      # the link comes back within the backoff
        r.clock.advance(5000)
        await r.pump()
    assert len(r.han.sent) == 1
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    assert r.pub.statuses("c-1")[-1] == "response"


async def test_command_accepted_before_sntp_still_fails_stale_after_a_real_wait():
    r = Rig()
    r.restart()
    lose_the_clock(r)
    r.han.fail = ["E_HAN_DOWN"] * 50
    await r.submit("c-1", 10)
    await r.pump()
    set_the_clock(r)
    r.clock.advance((r.relay.max_wait_s - 10) * 1000)
    r.relay.check_timers()
    assert r.journal.by_id["c-1"].state == J.QUEUED
    r.clock.advance(20000)   # max_wait_s on this boot's ticks
    r.relay.check_timers()
    await r.publish_all()
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "failed" and last["error"]["code"] == "E_HAN_DOWN" and r.han.sent == []


async def test_copies_after_timeouts_and_after_restarts_share_one_bound():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()          # no response: a copy is queued (Q on flash)
    r.restart()                     # power cut before it went: the copy survives
    e = r.journal.by_id["c-1"]
    assert e.state == J.QUEUED and e.resends == 1
    await crash_during_send(r)      # the copy's send is cut by the power too
    assert r.journal.by_id["c-1"].resends == MAX_RESENDS
    await r.pump()
    assert len(r.han.sent) == 1 + MAX_RESENDS
    r.clock.advance(5100)
    r.relay.check_timers()          # no copies left: the final status
    await r.pump()
    assert len(r.han.sent) == 1 + MAX_RESENDS
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "timeout" and last["error"]["code"] == "E_TIMEOUT"


async def test_unacknowledged_statuses_published_again_after_restart():
    r = Rig()
    r.pub.down = True
    await r.submit("c-1", 10)
    await r.submit("c-2", 11, target=GSME)
    while await r.relay.dispatch_once() == 0:
        pass
    r.relay.on_han_message(response_to(r.han.sent[0]))  # c-1 answered, c-2 in flight
    assert r.pub.messages == []
    r.restart()
    r.pub.down = False
    await r.publish_all()
    st = r.pub.statuses()
    assert ("c-1", "response") in st
    assert "c-1" not in r.journal.by_id
    assert r.journal.by_id["c-2"].state == J.QUEUED and r.journal.by_id["c-2"].resends == 1
    # c-2's response, after the restart, before its copy went: no copy goes
    r.relay.on_han_message(response_to(r.han.sent[1]))
    await r.publish_all()
    assert ("c-2", "response") in r.pub.statuses()
    assert r.journal.live == {}
    await r.pump()
    assert len(r.han.sent) == 2


async def test_final_status_acked_but_done_not_written_is_republished_once_more():
    r = Rig()
    await r.submit("c-1", 10)
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[0]))
    # the broker acknowledges, the power goes before the done record
    real_done = r.journal.done
    r.journal.done = lambda e: None
    await r.publish_all()
    r.journal.done = real_done
    assert r.pub.statuses("c-1")[-1] == "response"
    r.restart()
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response", "response"]  # receivers dedupe by id
    assert r.journal.live == {}
    assert len(r.han.sent) == 1


async def test_counter_closed_even_if_the_crash_hit_before_the_counter_record():
    # a command's counter is committed by its response (review_r2 R2-1)
    r = Rig()
    r.han.responder = response_to
    r.validator.commit_fails = True  # response record on flash, counter record not
    assert (await r.submit("c-1", 10))["status"] == "accepted"
    await r.relay.dispatch_once()
    r.relay.on_han_message(r.han.rx.pop(0))   # the reset comes before the broker has it
    assert r.relay.status("c-1") == "response" and r.relay.state == "fault"
    assert r.relay.fault.startswith("counter of c-1 not committed: OSError(")
    assert (await r.submit("c-1-again", 10))["error"] == "E_BUSY"   # the fault takes nothing more
    from test_relay_support import eui, SUPPLIER
    pair = eui(SUPPLIER) + eui(ESME)
    assert r.store.get(pair) is None
    r.validator.commit_fails = False
    r.restart()  # recovery commits the counters of answered live commands again
    assert r.store.get(pair) == 10
    res = await r.submit("c-1-replayed", 10)
    assert res["status"] == "rejected" and res["error"] == "E_REPLAY"
    # and recommitting an older answered command never lowers a higher counter
    await r.submit("c-2", 20)
    await r.pump()
    assert r.store.get(pair) == 20
    r.restart()
    assert r.store.get(pair) == 20
    res = await r.submit("c-3", 15)
    assert res["error"] == "E_REPLAY"


async def test_timed_out_state_survives_restart():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    for _ in range(MAX_RESENDS):   # the copies go, unanswered too
        r.clock.advance(5100)
        r.relay.check_timers()
        await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    r.pub.down = True
    r.restart()
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("c-1")[-1] == "timeout"
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "response" and last["late"] is True


async def test_failed_state_survives_restart_and_is_published():
    r = Rig()
    r.pub.down = True
    await r.submit("c-1", 10, expires=r.clock.time() + 2)
    r.clock.advance(3000)
    r.relay.check_timers()
    assert r.journal.by_id["c-1"].state == J.FAILED
    r.restart()
    r.pub.down = False
    await r.publish_all()
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "failed" and last["error"]["code"] == "E_EXPIRED"
    assert r.han.sent == [] and r.journal.live == {}


async def test_retry_count_and_queue_order_survive_restart():
    r = Rig()
    r.han.fail = ["E_HAN_DOWN"]
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)
    await r.pump()
    assert r.journal.by_id["c-1"].retries == 1
    r.restart()
    assert r.journal.by_id["c-1"].retries == 1
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    counters = [r.relay.decode(b).counter for b in r.han.sent]
    assert counters == [10, 11]


# ---- power cut that takes the clock with it (ESP32: no clock until SNTP answers) --------
async def test_sending_times_out_on_this_boots_ticks_when_the_clock_is_lost():
    r = Rig(cfg=config(response_timeout_s=20))
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)   # same target: waits for c-1's budget
    await crash_until_no_more_copies(r, lose_clock=True)
    n = len(r.han.sent)
    await r.pump()
    assert len(r.han.sent) == n
    r.clock.advance(19000)
    r.relay.check_timers()
    await r.pump()
    assert r.journal.by_id["c-1"].state == J.SENDING and len(r.han.sent) == n
    r.clock.advance(2000)       # the budget, counted from this boot, is over
    r.relay.check_timers()
    await r.pump()
    assert r.journal.by_id["c-1"].state == J.TIMED_OUT
    assert len(r.han.sent) == n + 1  # the target is free again: c-2 went
    # its late window also runs on this boot's ticks: c-1 is forgotten in the end
    r.clock.advance(r.relay.late_window_s * 1000 + 1000)
    r.relay.check_timers()
    await r.publish_all()
    assert "c-1" not in r.journal.by_id


async def test_command_with_expiry_waits_for_the_clock_after_a_power_cut():
    r = Rig()
    now = r.clock.time()
    await r.submit("c-1", 10, expires=now + 3600)
    await r.submit("c-2", 11, target=GSME)            # no expiry: goes at once
    lose_the_clock(r)
    r.restart()
    await r.pump()
    assert len(r.han.sent) == 1                       # c-2 only: c-1 cannot be checked
    assert r.journal.by_id["c-1"].state == J.QUEUED
    r.clock.advance(5000)
    await r.pump()
    assert len(r.han.sent) == 1
    set_the_clock(r, now + 60)                        # SNTP answered
    await r.pump()
    assert len(r.han.sent) == 2 and r.journal.by_id["c-1"].state == J.SENDING


async def test_command_with_expiry_fails_e_clock_when_the_clock_stays_unset():
    r = Rig(max_wait_s=60)
    await r.submit("c-1", 10, expires=r.clock.time() + 3600)
    lose_the_clock(r)
    r.restart()
    await r.pump()
    r.clock.advance(59000)
    await r.pump()
    assert r.journal.by_id["c-1"].state == J.QUEUED and r.han.sent == []
    r.clock.advance(2000)
    await r.pump()
    assert r.han.sent == []
    assert r.pub.statuses("c-1")[-1] == "failed"
    assert r.pub.on("/rsp")[-1]["error"]["code"] == "E_CLOCK"


async def test_command_with_expiry_that_expired_while_the_power_was_off_fails_e_expired():
    r = Rig()
    t0 = r.clock.time()
    await r.submit("c-1", 10, expires=t0 + 30)
    lose_the_clock(r)
    r.restart()
    await r.pump()
    assert r.han.sent == []
    set_the_clock(r, t0 + 3600)                       # the power came back an hour later
    await r.pump()
    assert r.han.sent == [] and r.pub.statuses("c-1")[-1] == "failed"
    assert r.pub.on("/rsp")[-1]["error"]["code"] == "E_EXPIRED"
