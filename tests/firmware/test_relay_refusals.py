# mp-heapsize: 320K  (the whole file in one 64-bit interpreter, relay/refusals.py compiled from source: at 256K, after session 14 grew it (the paced resends), its loading found no 2 KB block from a longer checkout path; the app's own 32-bit figures are the heap32 bench rows)
# The relay's refusals and failures (relay/refusals.py, loaded when the first one happens):
# the sentence a failed command's status carries, and that a command that goes through
# never loads that module (docs/memory.md). The refusal paths themselves are exercised in
# test_relay_core.py (every rejection, E_BUSY and its wait, HAN link errors).
import sys

from test_relay_support import Rig, response_to
from ppmid.relay import journal as J
from ppmid.relay.report import named


def _drop_refusals():
    from ppmid.modules import unload
    unload("ppmid.relay.refusals")


async def test_a_command_that_goes_through_does_not_load_the_refusals():
    _drop_refusals()
    r = Rig()
    assert (await r.submit("c-1", 10))["status"] == "accepted"
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    assert r.pub.statuses("c-1") == ["accepted", "relayed", "response"]
    assert "ppmid.relay.refusals" not in sys.modules
    # the first refusal loads it
    res = await r.submit("c-1", 10, key=b"\x00" * 32)
    assert res["error"] == "E_AUTH"
    assert "ppmid.relay.refusals" in sys.modules


async def test_a_failed_command_says_why_in_its_status_and_result():
    _drop_refusals()
    r = Rig()
    r.relay.publisher = None  # results as the NFC road reads them
    await r.submit("far", 10, via="nfc-phone")
    r.han.fail = ["E_HAN_DEST"]
    await r.pump()
    assert r.relay.result("far")["error"] == {"code": "E_HAN_DEST", "message": "not reachable on the HAN"}
    await r.submit("exp", 11, via="nfc-phone", expires=r.clock.time() + 1)
    r.clock.advance(2000)
    r.relay.check_timers()
    assert r.relay.result("exp")["error"] == {"code": "E_EXPIRED", "message": "expired before it could be relayed"}
    # a code with no sentence of its own (an older firmware's record, say) still gets one
    await r.submit("odd", 12, via="nfc-phone")
    e = r.journal.by_id["odd"]
    from ppmid.relay import refusals
    refusals.fail(r.relay, e, "E_OTHER", "scripted")
    assert e.state == J.FAILED
    assert r.relay.result("odd")["error"] == {"code": "E_OTHER", "message": "command not relayed"}


async def test_the_intakes_refusals_say_what_was_wrong_with_the_figures():
    from ppmid import envelope
    from test_relay_support import KEY, config
    r = Rig(cfg=config(max_gbcs=200, queue=1))
    now = r.clock.time()
    res = await r.accept_env(envelope.sign(KEY, "big", b"\xDF" * 201))
    assert (res["error"], res["message"]) == ("E_TOO_LARGE", "gbcs is larger than the 200 bytes allowed")
    res = await r.submit("exp", 10, expires=now - 1)
    assert (res["error"], res["message"]) == ("E_EXPIRED", "command expired at %d (now %d)" % (now - 1, now))
    res = await r.accept_env(r.env("kid", 10, kid="k1"))
    assert res["error"] == "E_AUTH" and res["message"] == (
        "envelope names key k1; this gateway has no keys per DCC User")
    assert (await r.submit("one", 11))["status"] == "accepted"
    r.relay.admit_wait_ms = 0
    res = await r.submit("two", 12)
    assert (res["error"], res["message"]) == ("E_BUSY", "1 commands already wait for the HAN: try later")
    r.clock.unix0 = 1000  # a board that has not synchronised its clock
    res = await r.submit("clk", 13, expires=2000)
    assert (res["error"], res["message"]) == ("E_CLOCK", "gateway clock is not set: cannot check expiry")


async def test_the_failures_relay_core_says_come_whole_from_the_refusals():
    # the sentences relay.core no longer holds (relay/refusals.py, loaded for them): a
    # queued command that expires or waits too long, a command's timeout, a message from
    # the HAN that does not decode, a counter that cannot be committed and the refusal after
    from test_relay_support import config
    _drop_refusals()
    r = Rig(cfg=config(response_timeout_s=5), max_wait_s=60)
    now = r.clock.time()
    r.han.fail = ["E_HAN_DOWN"] * 10
    await r.submit("exp", 10, expires=now + 1)
    await r.submit("old", 11)
    await r.pump()
    assert "ppmid.relay.refusals" in sys.modules   # the link's refusal loaded it
    r.clock.advance(2000)
    r.relay.check_timers()
    assert "relay info: exp failed: E_EXPIRED expired at %d before it could be relayed" % (now + 1) in r.logs
    r.clock.advance(60000)
    r.relay.check_timers()
    said = [line for line in r.logs if line.startswith("relay info: old failed: ")]
    assert said == ["relay info: old failed: E_STALE waited 62 s for the HAN"], said
    r.han.fail = []
    await r.submit("slow", 12)
    await r.pump()
    while "timeout" not in r.pub.statuses("slow"):   # each copy's budget ends unanswered
        assert len(r.han.sent) < 10
        r.clock.advance(5100)
        r.relay.check_timers()
        await r.pump()
    assert r.relay.result("slow")["error"] == {"code": "E_TIMEOUT", "message": "no response within 5 s"}
    r.relay.on_han_message(b"\x00junk")
    assert named(r.relay.counters)["rx_bad"] == 1
    assert r.logs[-1].startswith("relay warn: undecodable message from the HAN (5 bytes): ")

    r.relay.to_publish = FailingQueue()   # the status cannot be queued
    assert (await r.submit("c-1", 20))["status"] == "accepted"
    assert r.relay.state == "fault" and r.relay.fault.startswith("failed after accepting c-1: MemoryError(")
    assert any(line.startswith("relay error: failed after accepting c-1: MemoryError(") for line in r.logs)
    res = await r.submit("c-2", 21)
    assert (res["error"], res["message"]) == ("E_BUSY", "the gateway is restarting after a fault: try later")


# ---- past the accept record nothing is a refusal (review 84, F2) ----------------------
class FailingQueue(list):
    """relay.to_publish whose next append fails, as on a heap too cut up to grow it."""
    armed = True

    def append(self, x):
        if self.armed:
            self.armed = False
            raise MemoryError("memory allocation failed")
        list.append(self, x)


async def test_a_failure_after_the_accept_record_is_a_fault_and_the_command_stays_accepted():
    # before review 84 the sender was told "rejected" E_INTERNAL, and the command was relayed
    r = Rig()
    r.relay.to_publish = FailingQueue()
    assert (await r.submit("c-1", 10)) == {"id": "c-1", "status": "accepted"}
    assert r.relay.state == "fault" and r.relay.fault.startswith("failed after accepting c-1: MemoryError")
    assert named(r.relay.counters)["rejected"] == {} and r.relay.status("c-1") == "accepted"
    res = await r.submit("c-2", 11)        # nothing more is taken before the reset
    assert (res["status"], res["error"]) == ("rejected", "E_BUSY")
    r.restart()                            # the watchdog's reset
    await r.pump()
    assert len(r.han.sent) == 1
    assert r.pub.statuses("c-1") == ["accepted", "relayed"]
    res = await r.submit("c-1", 10)        # the sender's copy is its redelivery
    assert res == {"id": "c-1", "status": "relayed", "again": True} and len(r.han.sent) == 1


async def test_a_failure_of_the_sentence_after_the_accept_record_is_still_a_fault():
    # the heap that failed the status queue fails the fault's sentence too: the command is
    # still accepted and the relay in fault (the watchdog is not fed)
    from ppmid.relay import refusals
    r = Rig()
    r.relay.to_publish = FailingQueue()
    real = refusals.accepted_anyway

    def no_heap(relay, env, exc):
        raise MemoryError("memory allocation failed")
    refusals.accepted_anyway = no_heap
    try:
        assert (await r.submit("c-1", 10))["status"] == "accepted"
    finally:
        refusals.accepted_anyway = real
    assert r.relay.fault == "failed after an accept" and r.relay.health()[0] is False


async def test_a_command_the_index_has_no_room_for_is_refused_before_it_is_on_flash():
    # before review 84 the index came after the synced record: "rejected" E_INTERNAL, and
    # after a power cut the command was recovered and relayed anyway; the sender's copy of
    # it was accepted a second time (its counter never committed), and both were sent
    r = Rig()
    j = r.journal
    size = j.size

    def no_room(e):
        j.live[e.seq] = e        # the first dict grew, the second has no room
        raise MemoryError("memory allocation failed")
    j._index = no_room
    res = await r.submit("c-1", 10)
    assert (res["status"], res["error"]) == ("rejected", "E_INTERNAL")
    del j._index
    assert j.live == {} and j.by_id == {} and j.size == size
    assert (await r.submit("c-1", 10))["status"] == "accepted"     # the sender's copy
    r.restart()
    await r.pump()
    assert named(r.relay.counters)["recovered"] == 1 and len(r.han.sent) == 1


# ---- no "rejected" for an id the relay holds (review 84, F3) ---------------------------
def _intake(r):
    from test_mqtt_intake import FakeClient
    from ppmid.mqtt.intake import Intake
    c = FakeClient()
    return c, Intake(c, "00db1234567890a0", r.relay.accept, 1024)


def _cmd_json(id, gbcs, key=None):
    import binascii
    import json
    from ppmid import envelope
    from test_relay_support import KEY
    mac = envelope.compute_mac(key or KEY, id, None, gbcs)
    return memoryview(json.dumps({"id": id, "gbcs": binascii.b2a_base64(gbcs).strip().decode(),
                                  "mac": binascii.hexlify(mac).decode()}).encode())


def _rsp(c):
    return [(o["id"], o["status"], (o.get("error") or {}).get("code")) for t, o, q, r in c.published]


CMD = "ppmid/v1/00DB1234567890A0/cmd"


async def test_a_redelivery_while_in_fault_gets_its_status_not_a_refusal():
    # before review 84 the broker's redelivery of an accepted command was refused E_BUSY
    # and "rejected" was published for its id, though it was journaled and then relayed
    from test_relay_support import gbcs_message, SUPPLIER, ESME
    r = Rig()
    c, it = _intake(r)
    g = gbcs_message(1, 10, SUPPLIER, ESME)
    await it.handle(CMD, _cmd_json("c-1", g), 1, False)
    r.relay.fault, r.relay.state = "flash error in accept: OSError(5)", "fault"
    await it.handle(CMD, _cmd_json("c-1", g), 1, True)             # the DUP
    assert _rsp(c) == [] and it.stats["accepted"] == 2
    assert named(r.relay.counters)["duplicates"] == 1
    await it.handle(CMD, _cmd_json("c-2", gbcs_message(1, 11, SUPPLIER, ESME)), 1, False)
    assert _rsp(c) == [("c-2", "rejected", "E_BUSY")]              # a new command still waits
    r.restart()
    await r.pump()
    assert len(r.han.sent) == 1 and r.pub.statuses("c-1") == ["accepted", "relayed"]


async def test_a_forged_copy_of_a_known_id_is_rejected_without_naming_it():
    from test_relay_support import gbcs_message, SUPPLIER, ESME
    r = Rig()
    c, it = _intake(r)
    g = gbcs_message(1, 10, SUPPLIER, ESME)
    await it.handle(CMD, _cmd_json("c-1", g), 1, False)
    await it.handle(CMD, _cmd_json("c-1", g, key=b"x" * 32), 1, False)      # live
    assert _rsp(c) == [(None, "rejected", "E_AUTH")] and r.relay.status("c-1") == "accepted"
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    assert r.relay.status("c-1") == "response" and "c-1" not in r.journal.by_id
    await it.handle(CMD, _cmd_json("c-1", g, key=b"x" * 32), 1, False)      # finished
    assert _rsp(c)[1:] == [(None, "rejected", "E_AUTH")] and r.relay.status("c-1") == "response"
    # an id nobody holds is still named in its rejection
    await it.handle(CMD, _cmd_json("c-9", g, key=b"x" * 32), 1, False)
    assert _rsp(c)[2:] == [("c-9", "rejected", "E_AUTH")]


async def test_forged_envelopes_by_another_road_neither_evict_results_nor_are_published():
    # review_w6-5: an E_AUTH (or E_REVOKED) refusal proves no key; its id is the sender's
    # choice. 16 of them by NFC (no key, no rate limit needed) pushed a real result out of
    # the recent 16 that a phone may still collect, and each was published as "rejected"
    # under the chosen id. Other refusals of a fresh id are still remembered and published.
    from ppmid import envelope
    r = Rig()
    assert (await r.submit("c-real", 10, via="nfc-phone"))["status"] == "accepted"
    await r.pump()
    r.relay.on_han_message(response_to(r.han.sent[0]))
    await r.publish_all()
    assert "c-real" not in r.journal.by_id and r.relay.status("c-real") == "response"
    for i in range(16):
        bad = envelope.sign(b"x" * 32, "forged-%d" % i, b"\x00\x01")
        out = await r.accept_env(bad, "nfc-phone")
        assert out["error"] == "E_AUTH", out
    await r.publish_all()
    assert r.relay.status("c-real") == "response"
    assert r.relay.status("forged-0") is None and r.pub.statuses("forged-0") == []
    assert named(r.relay.counters)["rejected"]["E_AUTH"] == 16    # still counted
    # a verified envelope refused for another reason is remembered and published as before
    out = await r.submit("c-late", 11, via="nfc-phone", expires=1)
    assert out["error"] == "E_EXPIRED"
    await r.publish_all()
    assert r.relay.status("c-late") == "rejected" and r.pub.statuses("c-late") == ["rejected"]
