# The relay over days and under faults (review 2): ms ticks that wrap as on the ESP32 (H1),
# a flash that fails part way through a record (H2), a thousand originators against the
# anti-replay store (M2). A module of its own: under MicroPython a test module runs in one
# 256K heap, and test_relay_core.py's is used up.
# mp-heapsize: 512K
# (the thousand-originator case builds the validator's allow-lists three times in one
# 64-bit heap, beside a thousand checks' garbage: it ran out at 256K once the relay's
# recovery and refusals became modules of their own; a board builds them once)
import gc

from test_relay_support import Rig, ESME, GSME, gbcs_message, response_to, config

DAY_MS = 86400 * 1000


async def test_a_command_days_after_the_last_to_its_target_goes_at_once():
    # FakeClock's ticks wrap as on the ESP32 (2**30 ms, 12.4 days); a pacer stamp of 6.2
    # to 12.4 days ago reads in the future. A weekly command must still go at once.
    for days in (6.3, 7, 12.3, 13):
        r = Rig(cfg=config(rate_per_s=0.01, burst=1))
        await r.submit("w-1", 10)
        await r.pump()
        r.relay.on_han_message(response_to(r.env("w-1", 10).gbcs))
        await r.pump()
        r.clock.advance(int(days * DAY_MS))
        await r.submit("w-2", 11)
        await r.pump()
        assert len(r.han.sent) == 2, days
        assert r.pub.statuses("w-2") == ["accepted", "relayed"], days


async def test_a_link_backoff_days_old_does_not_hold_the_next_command():
    r = Rig(max_wait_s=60)
    await r.submit("c-1", 10)
    r.han.fail = ["E_HAN_DOWN"]
    await r.pump()
    assert r.han.sent == [] and r.relay._retry        # backing off that target
    r.clock.advance(7 * DAY_MS)
    r.relay.check_timers()                            # c-1 waited too long: failed
    await r.submit("c-2", 11)
    await r.pump()
    assert len(r.han.sent) == 1 and r.pub.statuses("c-2") == ["accepted", "relayed"]


async def test_after_a_flash_error_nothing_is_accepted_until_the_restart():
    # ENOSPC half way through the accept record: refused, the relay is in fault, and the
    # commands that come before the watchdog resets the board are refused E_BUSY (before
    # session 7 they were accepted on top of the torn record, and lost at the reset)
    from test_journal import FailingFile
    r = Rig()
    await r.submit("c-0", 9)
    r.journal._f = FailingFile(r.journal._handle(), 30)
    res = await r.submit("c-1", 10)
    assert res["error"] == "E_INTERNAL" and r.relay.state == "fault"
    res = await r.submit("c-2", 11)
    assert res["error"] == "E_BUSY" and "restarting after a fault" in res["message"]
    assert "c-2" not in r.journal.by_id
    r.restart()                                    # the watchdog's reset
    assert r.relay.state == "running" and sorted(r.journal.by_id) == ["c-0"]
    res = await r.submit("c-2", 11, target=GSME)
    assert res["status"] == "accepted"
    await r.pump()
    assert r.han.sent == [r.env("c-0", 9).gbcs, r.env("c-2", 11, target=GSME).gbcs]


async def test_a_failed_counter_commit_is_a_fault():
    r = Rig()

    def broken(originator, recipient, counter):
        raise OSError(28, "ENOSPC")
    r.validator.commit_pair = broken
    res = await r.submit("c-1", 10)
    assert res["status"] == "accepted" and r.relay.state != "fault"   # its counter is pending
    await r.relay.dispatch_once()
    r.relay.on_han_message(response_to(r.han.sent[0]))   # the response commits it: fails
    assert r.relay.status("c-1") == "response"     # on flash: recovery commits its counter
    assert r.relay.state == "fault" and r.relay.fault.startswith("counter of c-1 not committed: OSError(")
    ok, why = r.relay.house_once()
    assert not ok and r.wdt.feeds == 0
    res = await r.submit("c-2", 10)                # a replay of c-1's counter: not taken
    assert res["error"] == "E_BUSY"
    r.restart()
    res = await r.submit("c-3", 10)
    assert res["error"] == "E_REPLAY"


async def test_a_thousand_originators_neither_fill_the_journal_nor_reopen_a_replay():
    # with the legacy key any 8 bytes are an originator: before session 7 each pair kept a
    # counter for ever, and ~490 of them made every accept E_BUSY, across restarts
    from ppmid.gbcs import Validator
    r = Rig()
    r.relay.validator = v = Validator(r.cfg, r.store)
    assert (await r.submit("known", 500))["status"] == "accepted"

    def originator(i):
        return "90B3D51F%08X" % i
    for i in range(1000):
        m = v.check(gbcs_message(1, 10 + i, originator(i), ESME))
        v.commit(m)
    for restart in (False, True):
        if restart:
            gc.collect()    # the 1,000 checks' garbage: one 256K heap under MicroPython
            r.restart()
            r.relay.validator = v = Validator(r.cfg, r.store)
        # a dropped pair's old counters stay refused; above them it goes on
        for i, ctr, code in ((0, 10, "E_REPLAY"), (500, 510, "E_REPLAY"), (935, 945, "E_REPLAY")):
            res = await r.submit("old-%d-%s" % (i, restart), ctr, originator=originator(i))
            assert res.get("error") == code, (i, restart, res)
        res = await r.submit("known-%s" % restart, 1501 + restart)
        assert res["status"] == "accepted", res
        r.han.responder = response_to
        while "response" not in r.pub.statuses("known-%s" % restart):
            await r.pump()     # answered: its counter is committed (review_r2 R2-1)
        assert r.store.get("90B3D51F30010000:00DB1234567890A0") == 1501 + restart
    assert (await r.submit("new", 2000, originator="90B3D51FFFFFFFFF"))["status"] == "accepted"
    assert r.journal.size < r.journal.max_bytes - r.journal.reserve
    from ppmid.relay.journal import PAIRS_KEEP
    # the validator's pair keys ("<ORIGINATOR>:<RECIPIENT>"; Rig's recovery also commits
    # through its FakeValidator, whose keys are other)
    assert len([k for k in r.journal.counters if len(k) == 33]) == PAIRS_KEEP
    assert r.journal.counters[b"*:00DB1234567890A0"] >= 945     # ESME's floor
