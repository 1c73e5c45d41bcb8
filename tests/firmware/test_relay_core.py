# mp-heapsize: 384K  (a whole file of tests in one 64-bit interpreter: the test code and every module the file loads stay; the app's own 32-bit figures are the heap32 bench rows)
# The relay state machine with honest fakes (HAN link, MQTT publisher, GBCS validator) on a
# real flash journal: correlation, timeouts and late responses, expiry, pacing, one in
# flight per target, every rejection path. Restart recovery: test_relay_recovery.py.
from test_relay_support import (Rig, KEY, ESME, GSME, PPMID, SUPPLIER, ACB, gbcs_message,
                                response_to, refusal_of, config, time_out_every_copy, stop_relay,
                                Unloadable)
from ppmid.relay import journal as J
from ppmid.relay import outbox
from ppmid.relay.resend import MAX_RESENDS
from ppmid.relay.report import named


async def test_command_relayed_and_response_correlated():
    r = Rig()
    res = await r.submit("c-1", 10)
    assert res == {"id": "c-1", "status": "accepted"}
    assert r.relay.journal.by_id["c-1"].state == J.QUEUED  # on flash before the ack
    await r.pump()
    cmd = r.env("c-1", 10).gbcs
    assert r.han.sent == [cmd]
    rsp = response_to(cmd)
    r.relay.on_han_message(rsp)
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]
    final = r.pub.on("/rsp")[-1]
    import binascii
    assert binascii.a2b_base64(final["gbcs"]) == rsp and final["late"] is False
    assert final["via"] == "mqtt"
    assert r.journal.live == {}  # done once the broker acknowledged the final status
    assert r.relay.result("c-1")["status"] == "response"
    c = named(r.relay.counters)
    assert (c["accepted"], c["relayed"], c["answered"]) == (1, 1, 1)


async def test_response_with_wrong_counter_or_direction_is_not_correlated():
    r = Rig()
    await r.submit("c-1", 10)
    await r.pump()
    # same devices, other counter
    r.relay.on_han_message(gbcs_message(2, 11, ESME, SUPPLIER))
    # right counter, but not swapped (it is the command's own direction)
    r.relay.on_han_message(gbcs_message(2, 10, SUPPLIER, ESME))
    # right counter, other device
    r.relay.on_han_message(gbcs_message(2, 10, GSME, SUPPLIER))
    await r.publish_all()
    assert r.journal.by_id["c-1"].state == J.SENDING
    assert named(r.relay.counters)["unmatched"] == 3
    assert len(r.pub.on("/alert")) == 3  # nothing silently dropped
    assert r.pub.statuses("c-1") == ["accepted", "relayed"]


async def test_alerts_go_to_the_alert_topic_and_garbage_is_counted():
    r = Rig()
    alert = gbcs_message(3, 77, ESME, PPMID, 0x8F01)
    r.relay.on_han_message(alert)
    r.relay.on_han_message(b"\xDF\x09\x01garbage")
    await r.publish_all()
    a = r.pub.on("/alert")
    assert len(a) == 1 and a[0]["cra"] == "alert" and a[0]["originator"] == ESME and a[0]["counter"] == 77
    assert named(r.relay.counters)["alerts"] == 1 and named(r.relay.counters)["rx_bad"] == 1


async def test_duplicate_response_is_ignored():
    r = Rig()
    await r.submit("c-1", 10)
    r.pub.down = True
    while await r.relay.dispatch_once() == 0:
        pass
    rsp = response_to(r.han.sent[0])
    r.relay.on_han_message(rsp)
    r.relay.on_han_message(rsp)
    assert named(r.relay.counters)["duplicate_responses"] == 1 and named(r.relay.counters)["answered"] == 1
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]


async def test_no_response_sends_bounded_copies_then_times_out_and_a_late_response_is_published_late():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)  # same target: waits for c-1's answer or final timeout
    await r.pump()
    assert len(r.han.sent) == 1
    r.clock.advance(4900)
    r.relay.check_timers()
    await r.pump()
    assert r.pub.statuses("c-1") == ["accepted", "relayed"] and len(r.han.sent) == 1
    # each budget that ends without a response sends one more copy of c-1 (its place kept
    # ahead of c-2, so the meter sees the pair's counters in order), MAX_RESENDS at most
    for copy in range(1, MAX_RESENDS + 1):
        r.clock.advance(200 if copy == 1 else 5100)
        r.relay.check_timers()
        await r.pump()
        assert len(r.han.sent) == 1 + copy and r.han.sent[-1] == r.han.sent[0], copy
        assert r.pub.statuses("c-1") == ["accepted", "relayed"]   # one "relayed", no timeout yet
    # the last copy's budget ends too: the copies are spent, a final status with its code
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.pump()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "timeout"]
    final = [m for m in r.pub.on("/rsp") if m["id"] == "c-1"][-1]
    assert final["error"]["code"] == "E_TIMEOUT"
    c = named(r.relay.counters)
    assert c["timeouts"] == 1 and c["resent_after_timeout"] == MAX_RESENDS
    assert len(r.han.sent) == 2 + MAX_RESENDS and r.han.sent[-1] != r.han.sent[0]  # now c-2 went
    late = response_to(r.han.sent[0])
    r.relay.on_han_message(late)
    await r.publish_all()
    last = r.pub.on("/rsp")[-1]
    assert last["id"] == "c-1" and last["status"] == "response" and last["late"] is True
    assert named(r.relay.counters)["late"] == 1
    assert "c-1" not in r.journal.by_id


async def test_no_copy_after_the_commands_expiry_it_times_out_not_fails():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10, expires=r.clock.time() + 3)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 1   # no copy past the expiry
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "timeout" and last["error"]["code"] == "E_TIMEOUT"


async def test_first_copys_response_while_the_copy_waits_ends_it_and_no_copy_goes():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    # the copy waits in the queue for its turn (dispatch has not run yet)
    assert r.journal.by_id["c-1"].state == J.QUEUED and r.journal.by_id["c-1"].resends == 1
    r.relay.on_han_message(response_to(r.han.sent[0]))   # the first copy's answer, late
    r.clock.advance(30000)
    await r.pump()
    assert len(r.han.sent) == 1
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]
    assert r.pub.on("/rsp")[-1]["late"] is False and r.journal.live == {}


async def test_late_first_response_and_the_copys_refusal_give_one_final_status():
    # the meter executed the first copy; its response was slow, not lost: it comes after
    # the copy went, and the meter then refuses the copy as a replay
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 2
    r.relay.on_han_message(response_to(r.han.sent[0]))
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]
    assert len(r.pub.on("/alert")) == 1   # the refusal, as any alert
    assert named(r.relay.counters)["answered"] == 1 and "already_executed" not in named(r.relay.counters)


async def test_refusal_of_the_copy_then_the_first_response_late_is_not_reported_twice():
    # the first copy's response was lost on the way; the meter refuses the copy (already
    # executed); then the first response turns up after all, before the final status was
    # acknowledged: one final status, the response goes to the alert topic
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.pump()
    r.pub.down = True
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    r.relay.on_han_message(response_to(r.han.sent[0]))
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "already-executed"]
    c = named(r.relay.counters)
    assert c["answered"] == 1 and c["already_executed"] == 1 and c["unmatched"] == 1
    assert len(r.pub.on("/alert")) == 1 and r.journal.live == {}


async def test_a_budget_end_whose_code_cannot_load_waits_for_the_next_pass():
    # the end of a budget loads resend.py (a copy, or the timeout): a heap or flash that
    # cannot load it must not stop the timers (a fault would reset the board); the command
    # stays sending until a pass that can
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    await r.pump()
    r.clock.advance(5100)
    with Unloadable("ppmid.relay.resend"):
        r.relay.check_timers()
        ok, why = r.relay.house_once()
    assert ok and r.relay.fault is None, why
    assert r.journal.by_id["c-1"].state == J.SENDING and len(r.han.sent) == 1
    r.relay.check_timers()                    # loadable again: its first copy goes
    await r.pump()
    assert len(r.han.sent) == 2 and r.journal.by_id["c-1"].resends == 1


async def test_a_budget_end_whose_code_never_loads_times_out_and_frees_the_meter():
    # review 76 F5: a heap that can never load resend.py must not hold the command
    # "relayed" for ever (its meter blocked, later commands E_STALE, health OK): a few
    # passes past its budget it times out inline, with no copy, recorded in the journal
    r = Rig(cfg=config(response_timeout_s=5), late_window_s=30)
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)                 # the same meter: waits behind c-1
    await r.pump()
    assert len(r.han.sent) == 1
    r.clock.advance(5000)
    passes = 0
    with Unloadable("ppmid.relay.resend"):
        while r.journal.by_id["c-1"].state == J.SENDING and passes < 120:   # 60 s of 0.5 s passes
            r.clock.advance(500)
            ok, why = r.relay.house_once()
            assert ok and r.relay.fault is None, why
            passes += 1
        e1 = r.journal.by_id["c-1"]
        assert e1.state == J.TIMED_OUT, "still sending after %d passes" % passes
        assert passes <= 25                   # the grace (10 s) and a pass or two, no more
        assert e1.resends == 0 and named(r.relay.counters)["timeouts"] == 1
        await r.pump()                        # the meter is free: c-2 goes
    assert len(r.han.sent) == 2 and r.journal.by_id["c-2"].state == J.SENDING
    r.relay.on_han_message(response_to(r.han.sent[0]))   # c-1's late answer still correlates
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "timeout", "response"]
    assert r.relay.result("c-1")["late"] is True
    assert r.pub.statuses("c-2") == ["accepted", "relayed"]
    r.restart()                               # the timeout was on flash: recovery sends no copy of c-1
    await r.pump()
    assert len(r.han.sent) == 3 and r.han.sent[2] == r.han.sent[1]   # only c-2's (found sending)


async def test_timed_out_command_forgotten_after_late_window():
    r = Rig(cfg=config(response_timeout_s=5), late_window_s=30)
    await r.submit("c-1", 10)
    await r.pump()
    await time_out_every_copy(r, 5000)
    assert r.pub.statuses("c-1")[-1] == "timeout"
    assert "c-1" in r.journal.by_id  # still correlatable
    r.clock.advance(31000)
    r.relay.check_timers()
    assert "c-1" not in r.journal.by_id
    # a response after the window is no longer ours: it goes to the alert topic
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    assert named(r.relay.counters)["unmatched"] == 1


async def test_expired_while_queued_is_never_relayed():
    r = Rig()
    now = r.clock.time()
    await r.submit("c-1", 10)
    res = await r.submit("c-2", 11, expires=now + 5)  # queued behind c-1 (same target)
    assert res["status"] == "accepted"
    await r.pump()
    r.clock.advance(6000)
    await r.pump()  # c-1 still in flight: c-2 waits, then expires
    assert r.journal.by_id.get("c-2") is None or r.journal.by_id["c-2"].state == J.FAILED
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    assert len(r.han.sent) == 1
    assert r.pub.statuses("c-2") == ["accepted", "failed"]
    assert [m for m in r.pub.on("/rsp") if m["id"] == "c-2"][-1]["error"]["code"] == "E_EXPIRED"


async def test_expiry_checked_again_right_before_sending():
    r = Rig()
    res = await r.submit("c-1", 10, expires=r.clock.time() + 1)
    assert res["status"] == "accepted"
    r.clock.advance(1000)
    await r.pump()
    assert r.han.sent == []
    assert r.pub.statuses("c-1") == ["accepted", "failed"]


async def test_one_in_flight_per_target_and_counter_order_kept():
    r = Rig()
    for i in range(3):
        await r.submit("e-%d" % i, 10 + i)          # ESME
    await r.submit("g-0", 10, target=GSME)          # GSME, independent
    await r.pump()
    sent = [r.relay.decode(b).counter for b in r.han.sent]
    assert len(r.han.sent) == 2  # e-0 and g-0 in flight, e-1/e-2 wait
    assert r.relay.decode(r.han.sent[0]).counter == 10
    for k in range(2):
        esme = [b for b in r.han.sent if bytes(r.relay.decode(b).recipient) == bytes.fromhex(ESME)][-1]
        r.relay.on_han_message(response_to(esme))
        await r.pump()
    esme_counters = [r.relay.decode(b).counter for b in r.han.sent if bytes(r.relay.decode(b).recipient) == bytes.fromhex(ESME)]
    assert esme_counters == [10, 11, 12], sent


async def test_pacing_backlog_is_paced_not_refused():
    # (a queue of 12: one sender may hold half of it, review_r2 R2-4)
    r = Rig(cfg=config(rate_per_s=1.0, burst=2, queue=12))
    # six commands from one originator to alternating targets: all accepted
    for i in range(6):
        res = await r.submit("c-%d" % i, 10 + i, target=(ESME, GSME)[i % 2])
        assert res["status"] == "accepted", res
    # answer everything at once so only the buckets hold things back
    r.han.responder = response_to
    await r.pump()
    assert len(r.han.sent) == 2  # the burst
    waits = 0
    while len(r.han.sent) < 6:
        w = await r.relay.dispatch_once()
        if w == 0:
            await r.pump()
            continue
        assert w is not None and 0 < w <= 1001, w
        r.clock.advance(w)
        waits += 1
        assert waits < 20
    assert waits == 4  # one per second after the burst
    await r.pump()
    assert named(r.relay.counters)["answered"] == 6


async def test_busy_beyond_the_queue_bound():
    r = Rig(cfg=config(queue=3), admit_wait_ms=0)  # no wait for room: refused at once
    await r.submit("c-0", 10)
    await r.pump()  # c-0 in flight
    for i in range(1, 4):
        assert (await r.submit("c-%d" % i, 10 + i))["status"] == "accepted"
    res = await r.submit("c-4", 14)
    assert res["status"] == "rejected" and res["error"] == "E_BUSY"
    assert named(r.relay.counters)["rejected"]["E_BUSY"] == 1
    res = await r.submit("c-5", 15, via="nfc-tag")
    assert res["error"] == "E_BUSY"
    await r.publish_all()
    # MQTT rejections are published by the MQTT intake; other roads' by the relay
    assert [m for m in r.pub.on("/rsp") if m["id"] == "c-4"] == []
    rej = [m for m in r.pub.on("/rsp") if m["id"] == "c-5"]
    assert rej[0]["status"] == "rejected" and rej[0]["error"]["code"] == "E_BUSY" and rej[0]["via"] == "nfc-tag"
    assert r.relay.result("c-5")["error"]["code"] == "E_BUSY"
    # the counter of a rejected command was not committed: it can come back later
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    assert (await r.submit("c-4b", 14))["status"] == "accepted"


async def test_busy_when_the_journal_is_full():
    r = Rig(max_live=2)
    await r.submit("c-0", 10)
    await r.submit("c-1", 11, target=GSME)
    res = await r.submit("c-2", 12)
    assert res["error"] == "E_BUSY"


async def test_rate_rejection_when_pacing_cannot_meet_the_expiry():
    r = Rig(cfg=config(rate_per_s=0.1, burst=1, queue=10))
    now = r.clock.time()
    for i in range(3):
        await r.submit("c-%d" % i, 10 + i, target=(ESME, GSME)[i % 2])
    # 3 queued from this originator ahead, 1 token of burst, 0.1/s: ~30 s away
    res = await r.submit("late", 20, target=GSME, expires=now + 10)
    assert res["error"] == "E_RATE", res
    res = await r.submit("ok", 21, target=GSME, expires=now + 100)
    assert res["status"] == "accepted"
    res = await r.submit("noexp", 22, target=GSME)
    assert res["status"] == "accepted"


async def test_every_intake_rejection_code():
    from ppmid import envelope
    r = Rig(cfg=config(max_gbcs=200))
    cases = []
    e = r.env("auth", 10, key=b"x" * 32)
    cases.append((e, "E_AUTH"))
    cases.append((r.env("exp", 10, expires=r.clock.time() - 1), "E_EXPIRED"))
    cases.append((r.env("exp2", 10, expires=r.clock.time()), "E_EXPIRED"))
    big = envelope.sign(KEY, "big", b"\xDF" * 201)
    cases.append((big, "E_TOO_LARGE"))
    bad = envelope.Envelope("bad id", b"\xDF\x09", None, b"\x00" * 32)
    cases.append((bad, "E_ID"))
    cases.append((envelope.sign(KEY, "junk", b"\xDF\x09\x01\x00"), "E_TRUNCATED"))
    cases.append((r.env("tgt", 10, target=ACB), "E_UNKNOWN_TARGET"))
    cases.append((envelope.sign(KEY, "rsp", gbcs_message(2, 10, ESME, SUPPLIER)), "E_NOT_COMMAND"))
    for env, code in cases:
        res = await r.accept_env(env, "nfc-phone")
        assert res["status"] == "rejected" and res["error"] == code, (env.id, res)
        assert res["message"]
    assert r.journal.live == {} and r.han.sent == []
    # replay: a second command with a counter already used by this originator/target
    assert (await r.submit("first", 30))["status"] == "accepted"
    res = await r.submit("again", 30)      # first's counter is pending: not yet answered
    assert res["error"] == "E_REPLAY"
    r.han.responder = response_to
    await r.pump()                         # answered: committed
    r.han.responder = None
    res = await r.submit("older", 29)
    assert res["error"] == "E_REPLAY"
    rej = named(r.relay.counters)["rejected"]
    for code in ("E_AUTH", "E_EXPIRED", "E_TOO_LARGE", "E_ID", "E_TRUNCATED", "E_UNKNOWN_TARGET",
                 "E_NOT_COMMAND", "E_REPLAY"):
        assert rej.get(code), code
    await r.publish_all()
    published = [(m["id"], m["error"]["code"]) for m in r.pub.on("/rsp") if m["status"] == "rejected"]
    assert ("tgt", "E_UNKNOWN_TARGET") in published
    # a forged envelope's id is its sender's choice: never published (review_w6-5)
    assert ("auth", "E_AUTH") not in published and r.relay.status("auth") is None
    assert ("again", "E_REPLAY") not in published  # came by MQTT: the intake publishes it
    assert all(i is not None for i, c in published)  # an invalid id is never published
    assert len(published) == len(cases) - 2
    # the NFC contract: a final result with the error object
    assert r.relay.result("tgt")["error"]["code"] == "E_UNKNOWN_TARGET"


async def test_internal_error_in_validation_is_a_rejection_not_a_crash():
    r = Rig()

    def boom(buf):
        raise ValueError("bug")
    r.validator.check = boom
    res = await r.submit("c-1", 10)
    assert res["error"] == "E_INTERNAL"
    assert r.journal.live == {}


async def test_flash_error_refuses_the_command_and_stops_feeding_the_watchdog():
    r = Rig()

    def broken(*a):
        raise OSError(5, "EIO")
    r.journal.accept = broken
    res = await r.submit("c-1", 10)
    assert res["error"] == "E_INTERNAL"
    ok, why = r.relay.house_once()
    assert not ok and "flash error" in why and r.wdt.feeds == 0 and r.relay.state == "fault"


async def test_duplicate_id_returns_current_status_without_a_second_send():
    r = Rig()
    env = r.env("c-1", 10)
    assert (await r.relay.accept(env, "mqtt"))["status"] == "accepted"
    await r.pump()
    again = await r.relay.accept(env, "mqtt")  # MQTT redelivery of the same message
    assert again["status"] == "relayed"
    await r.pump()
    assert len(r.han.sent) == 1
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()
    third = await r.relay.accept(env, "mqtt")
    assert third["status"] == "response"
    assert named(r.relay.counters)["duplicates"] == 2
    assert named(r.relay.counters)["rejected"] == {}


async def test_refused_id_can_be_tried_again():
    r = Rig(cfg=config(queue=1))
    await r.submit("c-0", 10)
    await r.pump()                      # c-0 in flight
    await r.submit("c-1", 11)           # queued: the queue is full
    res = await r.submit("c-2", 12)
    assert res["error"] == "E_BUSY"
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.pump()                      # c-1 goes, the queue has room
    res = await r.submit("c-2", 12)     # the same id, sent again by the DCC User
    assert res["status"] == "accepted"
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[1]))
    await r.pump()
    assert len(r.han.sent) == 3 and r.pub.statuses("c-2")[-1] == "relayed"


async def test_forged_envelope_cannot_overwrite_a_real_command_status():
    r = Rig()
    await r.submit("c-1", 10)
    forged = r.env("c-1", 11, key=b"bad" * 11)
    res = await r.accept_env(forged, "nfc-tag")
    assert res["error"] == "E_AUTH"
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted"]


async def test_han_down_retried_later_and_sent_once():
    r = Rig()
    await r.submit("c-1", 10)
    r.han.fail = ["E_HAN_DOWN", "E_NO_TUNNEL"]
    await r.pump()
    assert r.han.sent == [] and r.journal.by_id["c-1"].state == J.QUEUED
    w = await r.relay.dispatch_once()
    assert w is not None and w > 0  # backing off
    r.clock.advance(w)
    await r.pump()
    assert r.han.sent == []
    w = await r.relay.dispatch_once()
    assert w >= 1000  # the backoff doubled
    r.clock.advance(w)
    await r.pump()
    assert len(r.han.sent) == 1
    assert named(r.relay.counters)["retries"] == 2 and named(r.relay.counters)["link_resets"] == 1
    assert r.pub.statuses("c-1") == ["accepted", "relayed"]


async def test_ambiguous_send_failure_waits_for_its_budget_then_a_copy_goes_and_is_answered():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    r.han.fail = ["E_DELIVERY"]
    await r.pump()
    assert len(r.han.sent) == 1
    r.clock.advance(3000)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 1   # not resent while its response may still come
    r.clock.advance(3000)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 2 and r.han.sent[1] == r.han.sent[0]
    r.relay.on_han_message(response_to(r.han.sent[1]))   # the meter never had the first
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]


async def test_ambiguous_send_failure_of_every_copy_ends_timeout_with_its_code():
    r = Rig(cfg=config(response_timeout_s=5))
    await r.submit("c-1", 10)
    r.han.fail = ["E_DELIVERY"] * (1 + MAX_RESENDS)
    await r.pump()
    await time_out_every_copy(r, 5000)
    assert len(r.han.sent) == 1 + MAX_RESENDS
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "timeout" and last["error"]["code"] == "E_DELIVERY"
    assert named(r.relay.counters)["send_errors"] == 1 + MAX_RESENDS


async def test_permanent_han_refusal_fails_at_once_and_frees_the_target():
    r = Rig()
    await r.submit("c-1", 10)
    await r.submit("c-2", 11)
    r.han.fail = ["E_HAN_TOO_BIG"]
    await r.pump()
    assert r.pub.statuses("c-1") == ["accepted", "failed"]
    assert [m for m in r.pub.on("/rsp") if m["id"] == "c-1"][-1]["error"]["code"] == "E_HAN_TOO_BIG"
    assert len(r.han.sent) == 1  # c-2 went at once
    assert r.relay.decode(r.han.sent[0]).counter == 11


async def test_queued_too_long_fails_with_the_link_error():
    r = Rig(max_wait_s=60)
    await r.submit("c-1", 10)
    r.han.fail = ["E_HAN_DOWN"] * 100
    for i in range(10):
        await r.pump()
        r.clock.advance(7000)
        r.relay.check_timers()
    await r.publish_all()
    last = r.pub.on("/rsp")[-1]
    assert last["status"] == "failed" and last["error"]["code"] == "E_HAN_DOWN"
    assert r.han.sent == []


async def test_nfc_result_contract_and_delivery_without_a_broker():
    r = Rig()
    r.relay.publisher = None
    res = await r.submit("n-1", 10, via="nfc-phone")
    assert res["status"] == "accepted"
    assert r.relay.result("n-1") is None  # pending
    await r.pump()
    assert r.relay.result("n-1") is None and r.relay.status("n-1") == "relayed"
    rsp = response_to(r.han.sent[0])
    r.relay.on_han_message(rsp)
    res = r.relay.result("n-1")
    assert res["status"] == "response" and res["gbcs"] == rsp and res["error"] is None
    assert "n-1" in r.journal.by_id       # reading is not delivering
    r.relay.delivered("n-1", "nfc-tag")  # not the road it came by: ignored
    assert "n-1" in r.journal.by_id
    r.relay.delivered("n-1", "nfc-phone")
    assert "n-1" not in r.journal.by_id  # delivered to the phone: done
    assert r.relay.result("n-1")["gbcs"] == rsp  # still readable from RAM
    assert r.relay.result("nope") is None and r.relay.status("nope") is None


async def test_phone_delivery_closes_an_already_executed_command():
    # the meter refused the resent copy as a replay: the command's final status is
    # already-executed; the phone holding it must close it as it does a response
    r = Rig(cfg=config(response_timeout_s=5))
    r.relay.publisher = None
    await r.submit("n-1", 10, via="nfc-phone")
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.pump()
    assert len(r.han.sent) == 2
    r.relay.on_han_message(refusal_of(r.han.sent[1]))
    assert r.relay.result("n-1")["status"] == "already-executed"
    assert r.journal.by_id["n-1"].state == J.ALREADY_EXECUTED
    r.relay.delivered("n-1", "nfc-tag")    # not the road it came by: ignored
    assert "n-1" in r.journal.by_id
    r.relay.delivered("n-1", "nfc-phone")
    assert "n-1" not in r.journal.by_id and r.journal.live == {}
    assert r.relay.result("n-1")["status"] == "already-executed"   # still readable from RAM


async def test_expiry_needs_a_set_clock():
    r = Rig()
    r.clock.unix0 = 1000  # a board that has not synchronised its clock
    res = await r.submit("c-1", 10, expires=2000)
    assert res["error"] == "E_CLOCK"
    res = await r.submit("c-2", 10)  # without expiry the clock does not matter
    assert res["status"] == "accepted"


async def test_with_the_real_gbcs_validator_and_journal_counter_store():
    from ppmid.gbcs import Validator
    r = Rig()
    r.relay.validator = Validator(r.cfg, r.store)
    assert (await r.submit("e", 10, target=ESME, code=0x0007))["status"] == "accepted"
    assert (await r.submit("g", 10, target=GSME, code=0x0097))["status"] == "accepted"
    assert (await r.submit("x", 11, target=GSME, code=0x0007))["error"] == "E_NOT_ALLOWED"
    assert (await r.submit("y", 10, target=ESME, code=0x0007))["error"] == "E_REPLAY"
    r.restart()
    r.relay.validator = Validator(r.cfg, r.store)
    assert (await r.submit("z", 10, target=GSME, code=0x0097))["error"] == "E_REPLAY"
    assert (await r.submit("w", 11, target=GSME, code=0x0097))["status"] == "accepted"


async def test_a_command_no_device_could_authenticate_never_reaches_the_han():
    # review 87 F2 (and F1): with the real validator, a General-Signing command without a
    # MAC header and with an empty signature, and a MAC-header one whose security control
    # is not 0x11, are refused at intake: nothing sent, no counter spent
    from ppmid import envelope
    from ppmid.gbcs import Validator, build
    from test_relay_support import eui
    r = Rig()
    r.relay.validator = Validator(r.cfg, r.store)
    unsigned = build.build_signed(1, 7001, eui(SUPPLIER), eui(ESME), 0x0007, b"\x01\x02\x03", signature=b"")
    got = await r.accept_env(envelope.sign(KEY, "df-empty", unsigned))
    assert got["status"] == "rejected" and got["error"] == "E_PRECOMMAND"
    assert "empty signature" in got["message"]
    pre = build.build_signed(1, 7001, eui(SUPPLIER), eui(ESME), 0x0007, b"\x01\x02\x03", signature=None)
    assert (await r.accept_env(envelope.sign(KEY, "df-none", pre)))["error"] == "E_PRECOMMAND"
    ciphered = bytearray(build.build_command(7001, eui(SUPPLIER), eui(ESME), 0x0007, b"\x01\x02\x03"))
    ciphered[8] = 0x31     # the MAC header's security control (a one-byte length before it)
    got = await r.accept_env(envelope.sign(KEY, "mac-31", bytes(ciphered)))
    assert got["error"] == "E_SECURITY_CONTROL" and "0x31" in got["message"]
    await r.pump()
    assert r.han.sent == []
    # the same counter in the forms the DCC sends goes through
    signed = build.build_signed(1, 7001, eui(SUPPLIER), eui(ESME), 0x0007, b"\x01\x02\x03", signature=bytes(range(64)))
    assert (await r.accept_env(envelope.sign(KEY, "df-signed", signed)))["status"] == "accepted"
    await r.pump()
    assert r.han.sent == [signed]


async def test_statuses_wait_for_the_broker_and_nothing_is_lost():
    r = Rig()
    r.pub.down = True
    await r.submit("c-1", 10)
    while await r.relay.dispatch_once() == 0:
        pass
    r.relay.on_han_message(response_to(r.han.sent[0]))
    try:
        await outbox.publish_once(r.relay)
        raise AssertionError("published while down")
    except OSError:
        pass
    assert "c-1" in r.journal.by_id  # not done until the broker has the final status
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]
    assert "c-1" not in r.journal.by_id


async def test_health_watchdog_and_log_rate_limit():
    r = Rig(link_grace_s=10)
    han_up = [True]
    r.relay.link_checks[:] = [("han", lambda: han_up[0])]
    ok, why = r.relay.house_once()
    assert ok and r.wdt.feeds == 1 and r.relay.state == "running"
    han_up[0] = False
    ok, why = r.relay.house_once()
    assert ok and why == "degraded" and r.relay.state == "degraded" and r.wdt.feeds == 2
    r.clock.advance(11000)
    ok, why = r.relay.house_once()
    assert not ok and "han link down" in why and r.wdt.feeds == 2
    han_up[0] = True
    ok, why = r.relay.house_once()
    assert ok and r.wdt.feeds == 3 and r.relay.state == "running"
    # a loop that stopped beating
    r.relay._beats["dispatch"] = r.clock.ms()
    r.clock.advance(r.relay.stall_ms + 1)
    ok, why = r.relay.house_once()
    assert not ok and "dispatch loop stalled" in why
    r.relay._beats["dispatch"] = r.clock.ms()
    # logs: all on the console, at most the burst over MQTT
    for i in range(50):
        r.relay.log("info", "line %d" % i)
    await r.publish_all()
    assert sum(1 for x in r.logs if "line" in x) == 50
    n = len([m for m in r.pub.on("/log") if m["msg"].startswith("line")])
    assert 1 <= n <= 5 and named(r.relay.counters)["logs_dropped"] >= 45
    info = r.relay.info()
    assert info["state"] == "running" and info["counters"] == named(r.relay.counters)
    # a link with its own, longer grace
    mqtt_up = [False]
    r.relay.link_checks[:] = [("han", lambda: True), ("mqtt", lambda: mqtt_up[0], 60)]
    feeds = r.wdt.feeds
    assert r.relay.house_once()[0]
    r.clock.advance(30000)
    r.relay._beats["dispatch"] = r.clock.ms()
    assert r.relay.house_once() == (True, "degraded")
    r.clock.advance(31000)
    r.relay._beats["dispatch"] = r.clock.ms()
    ok, why = r.relay.house_once()
    assert not ok and "mqtt link down for 61 s" in why
    assert r.wdt.feeds == feeds + 2


def test_the_boot_s_mqtt_road_check_follows_the_wifi_station_not_the_broker():
    # review 94 (its outage question): the check boot.py gave the relay followed the MQTT
    # client's state, so a broker or WAN away for hours reset the board every 30 minutes.
    # It follows the Wi-Fi station: hours with the broker away and Wi-Fi up reset nothing;
    # Wi-Fi itself down for longer than the grace does (a wedged stack's cure)
    from ppmid.boot import wifi_check

    class Station:
        up = True

        def isconnected(self):
            return self.up

    class Board:
        wlan = Station()

    board = Board()
    r = Rig()
    r.pub.down = True                      # the broker away
    r.relay.link_checks[:] = [wifi_check(board)]
    name, up, grace_s = r.relay.link_checks[0]
    assert name == "wifi" and grace_s == 1800
    for _ in range(4 * 6):                 # 4 hours, Wi-Fi up all along
        r.clock.advance(600000)
        r.relay._beats["dispatch"] = r.clock.ms()
        assert r.relay.house_once() == (True, "ok"), r.relay.health()
    board.wlan.up = False
    r.clock.advance(1000)
    r.relay._beats["dispatch"] = r.clock.ms()
    assert r.relay.house_once() == (True, "degraded")
    r.clock.advance(1800 * 1000 + 1000)
    r.relay._beats["dispatch"] = r.clock.ms()
    ok, why = r.relay.house_once()
    assert not ok and "wifi link down for 1801 s" in why, why


class BrokerAwayPublisher:
    """The MQTT client as the outbox sees it while the broker is unreachable: publish()
    waits (across the client's reconnects) until the broker is back and PUBACKs."""

    def __init__(self):
        import asyncio
        self.back = asyncio.Event()
        self.waiting = []
        self.messages = []

    async def publish(self, topic, payload, qos=1, retain=False):
        self.waiting.append(topic)
        await self.back.wait()
        import json
        self.messages.append((topic, json.loads(payload)))


async def test_an_mqtt_outage_longer_than_the_stall_limit_resets_nothing_and_other_roads_are_served():
    # review 94's question: the outbox's publish waits for the broker, and its loop with it.
    # Premises without WAN may lose MQTT for hours: the relay must stay healthy (the watchdog
    # fed) past stall_ms, and a command by another road is still relayed and answered.
    import asyncio
    pub = BrokerAwayPublisher()
    r = Rig(pub=pub)
    r.han.responder = response_to
    r.relay.link_checks.append(("mqtt", lambda: pub.back.is_set(), 1800))
    r.relay.start()
    try:
        await r.submit("m-1", 10)  # its "accepted" status waits for the broker
        for _ in range(200):
            if pub.waiting:
                break
            await asyncio.sleep(0.01)
        assert pub.waiting, "the outbox never tried the broker"
        feeds = r.wdt.feeds
        for minute in range(10):  # 5 minutes of outage, well past stall_ms (60 s)
            r.clock.advance(30000)
            r.relay._wake_dispatch.set()  # its loop's next pass (and beat) now, not in 1 s
            await asyncio.sleep(0.05)
            assert r.relay.house_once() == (True, "degraded"), r.relay.health()
        assert r.wdt.feeds >= feeds + 5 and r.relay.fault is None
        res = await r.submit("n-1", 11, via="nfc-phone")
        assert res["status"] == "accepted", res
        for _ in range(400):
            got = r.relay.result("n-1")
            if got and got["status"] == "response":
                break
            await asyncio.sleep(0.01)
        assert r.relay.result("n-1")["status"] == "response"
        assert r.relay.house_once() == (True, "degraded")
        # the broker comes back: what waited goes, in order
        pub.back.set()
        def m1():
            return [m["status"] for t, m in pub.messages if t.endswith("/rsp") and m["id"] == "m-1"]
        for _ in range(400):
            if "response" in m1():
                break
            await asyncio.sleep(0.01)
        got = m1()
        assert got == ["accepted", "relayed", "response"], got
        assert r.relay.house_once() == (True, "ok")
    finally:
        await stop_relay(r.relay)


async def test_run_loop_end_to_end_with_tasks():
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio
    r = Rig()
    r.han.responder = response_to
    r.relay.start()
    for i in range(3):
        await r.submit("c-%d" % i, 10 + i, target=(ESME, GSME)[i % 2])
    for _ in range(400):
        if len([s for s in r.pub.statuses() if s[1] == "response"]) == 3:
            break
        await asyncio.sleep(0.01)
    await stop_relay(r.relay)
    assert sorted(i for i, s in r.pub.statuses() if s == "response") == ["c-0", "c-1", "c-2"]
    assert r.relay.fault is None and r.journal.live == {}
    assert r.wdt.feeds >= 1


async def test_a_loop_that_dies_faults_the_relay_and_the_others_run_on():
    # a loop that dies (its guard, Relay._guard, catches the end) puts the relay in fault: it
    # says why in health() and the log, and stops feeding the watchdog; the other loops run on
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio
    from ppmid.relay import outbox

    def breaking(name, r):
        # make loop `name` raise RuntimeError on its next pass
        relay = r.relay
        if name == "receive":
            async def receive():
                raise RuntimeError("radio gone")
            r.han.receive = receive
        elif name == "dispatch":
            async def dispatch_once():
                raise RuntimeError("dispatch broke")
            relay.dispatch_once = dispatch_once
        elif name == "house":
            def house_once():
                raise RuntimeError("house broke")
            relay.house_once = house_once
        else:  # publish: its heartbeat fails (outbox.run's pass), the other loops' do not
            beat = relay._beat

            def failing_beat(loop):
                if loop == "publish":
                    raise RuntimeError("publish broke")
                beat(loop)
            relay._beat = failing_beat

    for name in ("receive", "dispatch", "house", "publish"):
        r = Rig()
        breaking(name, r)
        r.relay.start()
        try:
            for _ in range(100):
                if r.relay.fault is not None:
                    break
                await asyncio.sleep(0.01)
            assert r.relay.fault is not None and r.relay.fault.startswith(name + " loop died: RuntimeError"), (name, r.relay.fault)
            assert r.relay.state == "fault"
            assert [m for m in r.logs if m.startswith("relay error: %s loop died: RuntimeError" % name)], (name, r.logs)
            dead = [t for t in r.relay._tasks if t.done()]
            assert len(dead) == 1, (name, len(dead))   # the others run on
            feeds = r.wdt.feeds
            ok, why = r.relay.health()
            assert not ok and why == "fault: " + r.relay.fault
            if name != "house":
                r.relay.house_once()
                assert r.wdt.feeds == feeds         # not fed: the board resets
        finally:
            await stop_relay(r.relay)
    # cancelling the tasks (a test's end) is no fault
    r = Rig()
    r.relay.start()
    await asyncio.sleep(0.02)
    await stop_relay(r.relay)
    assert r.relay.fault is None and r.relay.state == "running"
    assert not [m for m in r.logs if "loop died" in m]


async def test_backlog_beyond_the_queue_waits_for_room_and_is_relayed_in_order():
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio
    # a backlog of 10 handed over at once to a queue of 3: each accept() beyond the bound
    # waits until dispatch takes a command out of the queue, then is accepted
    r = Rig(cfg=config(queue=3, rate_per_s=100, burst=100), admit_wait_ms=5000)
    r.han.responder = response_to
    r.relay.start()
    most = [0]
    try:
        for i in range(10):
            res = await r.submit("q-%d" % i, 10 + i, target=(ESME, GSME)[i % 2])
            assert res == {"id": "q-%d" % i, "status": "accepted"}, res
            queued = len([e for e in r.journal.live.values() if e.state == J.QUEUED])
            most[0] = max(most[0], queued)
        for _ in range(500):
            if len([s for s in r.pub.statuses() if s[1] == "response"]) == 10:
                break
            await asyncio.sleep(0.01)
    finally:
        await stop_relay(r.relay)
    assert most[0] <= 3
    assert named(r.relay.counters)["admit_waits"] >= 1  # the 4th found the queue full (no yield before it)
    assert named(r.relay.counters)["rejected"] == {}
    assert [r.relay.decode(b).counter for b in r.han.sent] == list(range(10, 20))
    assert sorted(i for i, s in r.pub.statuses() if s == "response") == sorted("q-%d" % i for i in range(10))


async def test_full_queue_wait_is_bounded_then_busy_and_known_or_forged_ids_do_not_wait():
    r = Rig(cfg=config(queue=1), admit_wait_ms=150)   # no dispatch task: the queue stays full
    assert (await r.submit("w-0", 10))["status"] == "accepted"
    res = await r.submit("w-1", 11)
    assert res["error"] == "E_BUSY", res
    assert named(r.relay.counters)["admit_waits"] == 1
    # a redelivered id gets its status at once; a forged envelope its E_AUTH at once
    assert (await r.submit("w-0", 10)) == {"id": "w-0", "status": "accepted", "again": True}
    assert (await r.submit("w-2", 12, key=b"x" * 32))["error"] == "E_AUTH"
    assert named(r.relay.counters)["admit_waits"] == 1
    # room made while one waits: it is taken
    try:
        import asyncio
    except ImportError:
        import uasyncio as asyncio
    r.relay.admit_wait_ms = 5000
    waiter = asyncio.create_task(r.submit("w-3", 13))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await r.relay.dispatch_once()   # w-0 leaves the queue for the HAN
    res = await waiter
    assert res["status"] == "accepted", res
    assert named(r.relay.counters)["rejected"] == {"E_BUSY": 1, "E_AUTH": 1}


def test_the_info_payload_is_the_relays_report_with_the_apps_part():
    # ppmid.app's _info is the link's info callable: relay/report.py's gateway puts the
    # payload together for each report (docs/mqtt.md), and the module goes after it
    import sys
    from ppmid import app, VERSION

    class Board:
        name = "esp32-devkitc"

    class Commission:
        def info(self):
            return {"state": "joined", "tries": 1}
    r = Rig()
    r.validator.profile = ("ch-only", 4)
    r.han.status, r.han.module, r.han.commission = "running", "EmberZNet 7.4.1", None
    r.clock.source, r.clock.synced_at = "sntp", 1800000000
    app.heap["free"], app.heap["min"] = 90000, 85000
    info = app._info(Board(), r.relay, r.han, r.clock)
    d = info()
    assert "ppmid.relay.report" not in sys.modules
    relay_part = r.relay.info()
    for k in relay_part:
        assert d[k] == relay_part[k], k
    assert (d["fw"], d["board"], d["han"], d["module"]) == (VERSION, "esp32-devkitc", "running", "EmberZNet 7.4.1")
    assert (d["heap_free"], d["heap_min"], d["clock"], d["clock_synced_at"]) == (90000, 85000, "sntp", 1800000000)
    assert (d["profile"], d["profile_codes"]) == ("ch-only", 4)
    assert "commissioning" not in d and "update" not in d and "nfc" not in d
    assert len(d) == len(relay_part) + 10
    # commissioning ran, an update ever ran, a reader: their parts too; the heap figures
    # as they are at the report, not as they were when the callable was made
    r.han.commission = Commission()
    app.heap["min"] = 80000
    d = app._info(Board(), r.relay, r.han, r.clock, {"version": "0.2.0"}, {"taps": 3})()
    assert d["commissioning"] == {"state": "joined", "tries": 1} and d["heap_min"] == 80000
    assert d["update"] == {"version": "0.2.0"} and d["nfc"] == {"taps": 3}
    assert "ppmid.relay.report" not in sys.modules
    app.heap["free"], app.heap["min"] = 0, None


def test_every_relay_counter_index_names_its_counter():
    # the relay and the modules that count with it use private _C_X = const(i) indices into
    # relay.counters (a list); relay/report.py names them (x, lower case, at index i)
    # for info: every module's indices agree with the names, and every one it defines is used
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); named() runs on both below")
    import re
    from ppmid.relay import report, core, recovery, refusals, resend, topups
    names = report._NAMES.split() + ["more"]
    seen = set()
    for mod in (core, outbox, recovery, refusals, resend, topups):
        src = open(mod.__file__).read()
        keys = re.findall(r"^_C_(\w+) = const\((\d+)\)", src, re.M)
        assert keys, mod.__name__
        for k, i in keys:
            assert names[int(i)] == k.lower(), (mod.__name__, k, i)
            seen.add(k.lower())
        used = set(re.findall(r"\[_C_(\w+)\]", src))
        assert used == set(k for k, _ in keys), (mod.__name__, used ^ set(k for k, _ in keys))
    assert seen == set(names), set(names) - seen  # every counter is counted somewhere


async def test_info_reports_the_counters_by_name_in_their_order():
    r = Rig()
    await r.submit("c-1", 10)
    await r.pump()
    r.relay.on_han_message(gbcs_message(2, 11, ESME, SUPPLIER))  # matches nothing: unmatched
    import sys
    # CPython's dicts keep their order (MicroPython's go by their hash table: same keys)
    ordered = sys.implementation.name == "cpython"
    c = r.relay.info()["counters"]
    # its names' module is loaded for the report and dropped after it (this file's own
    # import of it is gone from sys.modules too: the next import loads it again)
    assert "ppmid.relay.report" not in sys.modules
    assert len(c) == 22 and c["rejected"] == {}
    assert not ordered or list(c)[:4] == ["received", "accepted", "relayed", "answered"]
    assert not ordered or list(c)[-1] == "admit_waits"
    assert (c["received"], c["accepted"], c["relayed"], c["unmatched"], c["answered"]) == (1, 1, 1, 1, 0)
    # the resend road's counters follow, in the order first counted
    from ppmid.relay.resend import count
    count(r.relay, "already_executed")
    count(r.relay, "resent", 0)
    count(r.relay, "already_executed")
    c = r.relay.info()["counters"]
    assert len(c) == 24 and (c["already_executed"], c["resent"]) == (2, 0)
    assert not ordered or list(c)[22:] == ["already_executed", "resent"]
    # a list of the wrong length is a bug, said as such, not a report with shifted names
    try:
        named([0] * 22)
    except ValueError as e:
        assert "22 relay counters for 23" in str(e)
    else:
        raise AssertionError("no error")
