# The relay's recent results (Relay.result(id) after a command is finished): the response
# bodies they hold are bounded (relay/core.py _RECENT_BODY_BYTES, docs/relay.md "Results"),
# an MQTT command's body is not held once published, and a road that collects later (the
# NFC phone's mode 02, the wired road) gets the body while it is held and a clear
# E_BODY_DROPPED status once it is not. Real relay core and flash journal, the relay tests'
# fakes; CPython and MicroPython.
# mp-heapsize: 512K
import binascii
import struct

from test_relay_support import Rig
from test_nfc_session import FakeDriver
from test_wired_road import _road, _env_frame, _follow_all
from ppmid.gbcs.build import make_response
from ppmid.nfc import phone
from ppmid.relay.refusals import E_BODY_DROPPED   # (a test below unloads the module again)
from ppmid.wired import frames as F

BUDGET = 8192   # docs/relay.md "Results": bytes of response bodies the recent results hold
RECENT = 16     # final results remembered (docs/relay.md "A command's life", step 2)


async def _answer(r, id, counter, size, via):
    """Accept command `id`, relay it, answer it with a `size`-byte response; publish all.
    Returns the response."""
    res = await r.submit(id, counter, via=via)
    assert res["status"] == "accepted", res
    r.clock.advance(10000)  # past the HAN pacing of the commands before it
    await r.pump()
    rsp = make_response(r.han.sent[-1], bytes((counter & 0xFF,)) * size)
    r.relay.on_han_message(rsp)
    await r.publish_all()
    assert id not in r.journal.by_id  # finished: only the recent results know it now
    # nothing lost: the body went to the broker
    final = r.pub.on("/rsp")[-1]
    assert final["id"] == id and final["status"] == "response"
    assert binascii.a2b_base64(final["gbcs"]) == rsp
    r.pub.messages.clear()   # the fakes keep what they saw; the relay must not
    r.han.sent.clear()
    return rsp


def _held(r, ids):
    n = 0
    for id in ids:
        x = r.relay.result(id)
        if x is not None and x["gbcs"]:
            n += len(x["gbcs"])
    return n


async def test_twenty_large_responses_leave_at_most_the_budget_held_newest_first():
    # tag commands: their results go out over MQTT and stay collectable by a phone (mode 02)
    r = Rig(max_bytes=32768)
    ids = ["t-%d" % i for i in range(20)]
    rsps = []
    for i, id in enumerate(ids):   # (no await in a comprehension on MicroPython)
        rsps.append(await _answer(r, id, 10 + i, 3000, "nfc-tag"))
    assert all(len(rsp) > 3000 for rsp in rsps)
    held = _held(r, ids)
    assert 0 < held <= BUDGET
    # the newest are held in full, and as many as fit: the next older one would not
    kept = [id for id in ids if (r.relay.result(id) or {}).get("gbcs")]
    n = len(kept)
    assert kept == ids[-n:]
    for id, rsp in zip(ids[-n:], rsps[-n:]):
        assert r.relay.result(id)["gbcs"] == rsp
    assert held + len(rsps[-n - 1]) > BUDGET
    # the older ones still say what became of them: status kept, body gone, and why
    for id in ids[-RECENT:-n]:
        x = r.relay.result(id)
        assert x["status"] == "response" and x["gbcs"] is None
        assert x["error"]["code"] == E_BODY_DROPPED and "no longer held" in x["error"]["message"]
        assert r.relay.status(id) == "response"
    for id in ids[:-RECENT]:
        assert r.relay.result(id) is None  # beyond the 16 recent ones: forgotten, as before


async def test_an_mqtt_result_is_published_with_its_body_and_then_not_held():
    r = Rig(max_bytes=32768)
    tag = await _answer(r, "t-1", 10, 2000, "nfc-tag")
    for i in range(10):   # 30 KB of responses: well over the budget, within the 16 recent
        await _answer(r, "m-%d" % i, 11 + i, 3000, "mqtt")
    # each went to the broker with its body (_answer), and none is held after that
    for i in range(10):
        x = r.relay.result("m-%d" % i)
        assert x["status"] == "response" and x["gbcs"] is None and x["error"]["code"] == E_BODY_DROPPED
    # so a burst of MQTT responses does not push out a body a phone may still collect
    assert r.relay.result("t-1")["gbcs"] == tag
    # a redelivered MQTT command still finds its status
    assert (await r.submit("m-9", 20))["status"] == "response"


async def test_the_newest_body_is_held_whatever_its_size_until_a_newer_one_comes():
    r = Rig(max_bytes=65536)
    big = await _answer(r, "p-big", 10, BUDGET + 1000, "nfc-phone")
    assert r.relay.result("p-big")["gbcs"] == big
    small = await _answer(r, "p-small", 11, 100, "nfc-phone")
    assert r.relay.result("p-small")["gbcs"] == small
    x = r.relay.result("p-big")
    assert x["gbcs"] is None and x["error"]["code"] == E_BODY_DROPPED


def _collect_hello(id):
    ident = id.encode()
    return struct.pack(">BBIIB", 1, 2, 0, 0, len(ident)) + ident   # mode 02: collect by id


async def _collect(r, id):
    drv = FakeDriver(b"", id)
    s = phone.PhoneSession(drv, 1, r.relay, 8192, session_ms=200, poll_ms=5, keepalive_ms=50)
    outcome = await s.run(_collect_hello(id))
    status, n, crc, ncode = struct.unpack(">BIIB", drv.result["head"][:10])
    code = bytes(drv.result["head"][10:10 + ncode]).decode()
    return outcome, status, drv.result["data"], code


async def test_a_phone_collect_after_its_session_ran_out_gets_the_body_then_a_clear_code():
    r = Rig(max_bytes=32768)
    # the phone's session ran out before the response came (E_NFC_LATE): the result went
    # out over MQTT and the command finished; the phone comes back in mode 02
    rsp = await _answer(r, "p-1", 10, 3000, "nfc-phone")
    outcome, status, data, code = await _collect(r, "p-1")
    assert outcome["outcome"] == "delivered" and data == rsp and code == ""
    assert status == phone.RESULT_STATUS["response"]
    # newer results pushed its body out: the phone is told so, with the status it reached
    for i in range(4):
        await _answer(r, "t-%d" % i, 11 + i, 3000, "nfc-tag")
    outcome, status, data, code = await _collect(r, "p-1")
    assert outcome["outcome"] == "delivered"
    assert status == phone.RESULT_STATUS["response"] and data == b"" and code == E_BODY_DROPPED


async def test_the_wired_road_gets_the_body_or_a_clear_code():
    r = Rig(max_bytes=32768)
    road, wire = _road(r, keep_bytes=16384)
    await road.feed(_env_frame(r, 1, "w-1", 10))
    await r.pump()
    rsp = make_response(r.han.sent[-1], b"\x55" * 3000)
    r.relay.on_han_message(rsp)
    await r.publish_all()     # published and finished before the road looked again
    assert "w-1" not in r.journal.by_id
    await _follow_all(road)
    res = [f[2] for f in wire.frames() if f[0] == F.T_RESULT]
    assert len(res) == 1 and res[0]["status"] == "response"
    assert binascii.a2b_base64(res[0]["gbcs"]) == rsp and "error" not in res[0]
    # a serial command whose body newer results pushed out before the road followed it
    await road.feed(_env_frame(r, 2, "w-2", 11))
    r.clock.advance(10000)
    await r.pump()
    r.relay.on_han_message(make_response(r.han.sent[-1], b"\x66" * 3000))
    await r.publish_all()
    for i in range(4):
        await _answer(r, "t-%d" % i, 12 + i, 3000, "nfc-tag")
    wire.frames()
    await _follow_all(road)
    res = [f[2] for f in wire.frames() if f[0] == F.T_RESULT]
    assert len(res) == 1 and res[0]["id"] == "w-2" and res[0]["status"] == "response"
    assert "gbcs" not in res[0] and res[0]["error"]["code"] == E_BODY_DROPPED


async def test_a_top_up_by_mqtt_keeps_its_outcome_and_the_meters_code_without_its_frame():
    from test_topup import rig, submit, make, Meter
    from ppmid.zigbee import prepayment as P
    r = rig(Meter())
    assert (await submit(r, "u-1", make(value=250)))["status"] == "accepted"
    await r.pump()
    x = r.relay.result("u-1")
    assert x["status"] == "topped-up" and x["topup"]["value"] == 250
    assert x["gbcs"] is None and x["error"]["code"] == E_BODY_DROPPED
    # a refusal's code is the meter's, not the missing frame's
    r = rig(Meter(result=P.RESULT_DUPLICATE))
    await submit(r, "u-2", make(value=10), via="nfc-tag")
    await submit(r, "u-3", make(value=20))
    await r.pump()
    assert r.relay.result("u-2")["gbcs"]     # a tag's: a phone may collect it (mode 02)
    x = r.relay.result("u-3")
    assert x["status"] == "rejected" and x["gbcs"] is None and x["error"]["code"] == "E_UTRN_DUPLICATE"


async def test_letting_bodies_go_loads_nothing_until_a_dropped_result_is_read():
    # the sentence lives with the refusals' (relay/refusals.py, docs/memory.md): a gateway
    # whose results are never collected after their body went does not hold that module
    import sys
    from ppmid.modules import unload
    unload("ppmid.relay.refusals")
    r = Rig(max_bytes=32768)
    await _answer(r, "m-1", 10, 3000, "mqtt")
    for i in range(4):
        await _answer(r, "t-%d" % i, 11 + i, 3000, "nfc-tag")
    assert r.relay.status("m-1") == "response" and r.relay.status("t-0") == "response"
    assert (await r.submit("m-1", 10))["status"] == "response"   # a redelivery
    assert "ppmid.relay.refusals" not in sys.modules
    x = r.relay.result("t-0")
    assert "ppmid.relay.refusals" in sys.modules
    assert x["gbcs"] is None and x["error"]["code"] == E_BODY_DROPPED
    assert r.relay.result("m-1")["error"]["code"] == E_BODY_DROPPED


async def test_held_dispatch_sends_nothing_until_released():
    # the updater holds the dispatch once the relay is idle before its reset: a command
    # accepted meanwhile waits queued (the next boot sends it), nothing is in flight
    from test_relay_support import Rig
    r = Rig()
    r.relay.hold_dispatch = True
    await r.submit("h-1", 10)
    await r.pump()
    assert r.han.sent == [] and r.relay.info()["queued"] == 1 and r.relay.info()["in_flight"] == 0
    r.relay.hold_dispatch = False
    r.relay._wake_dispatch.set()
    await r.pump()
    assert len(r.han.sent) == 1


# ---- what a restart and a TAKEN leave (review 84, F4 and F5: documented, not changed) ---
async def test_a_wired_or_phone_result_the_broker_has_is_not_kept_across_a_restart():
    # docs/wired.md "Resuming after the cable is pulled": the journal holds a command only
    # until its final status reaches the broker (or its road delivers it)
    from test_relay_support import response_to
    r = Rig()
    r.han.responder = lambda b: response_to(b)
    await r.submit("w-1", 10, via="serial")
    await r.submit("p-1", 11, via="nfc-phone")
    await r.pump()
    await r.pump()
    assert (r.relay.status("w-1"), r.relay.status("p-1")) == ("response", "response")
    assert r.journal.live == {}
    r.restart()
    assert (r.relay.status("w-1"), r.relay.status("p-1"), r.relay.result("w-1")) == (None, None, None)


async def test_a_taken_while_the_broker_is_away_drops_the_commands_mqtt_statuses():
    # docs/wired.md: the laptop's report is then the only upstream copy
    from test_relay_support import response_to
    r = Rig()
    r.han.responder = lambda b: response_to(b)
    r.pub.down = True
    await r.submit("w-1", 10, via="serial")
    while await r.relay.dispatch_once() == 0:
        pass
    while r.han.rx:
        r.relay.on_han_message(r.han.rx.pop(0))
    r.relay.delivered("w-1", "serial")     # the laptop's TAKEN
    r.pub.down = False
    await r.publish_all()
    assert r.pub.statuses("w-1") == [] and r.journal.live == {}


async def test_a_redelivery_after_a_restart_is_refused_by_its_counter_not_relayed_again():
    # docs/mqtt.md "Delivery guarantees": the ids of finished commands are known this boot only
    from test_relay_support import response_to
    r = Rig()
    r.han.responder = lambda b: response_to(b)
    env = r.env("c-1", 10)
    assert (await r.accept_env(env))["status"] == "accepted"
    await r.pump()
    assert (await r.accept_env(env))["status"] == "response"
    r.restart()
    again = await r.accept_env(env)
    await r.pump()
    assert (again["status"], again["error"]) == ("rejected", "E_REPLAY") and len(r.han.sent) == 1
