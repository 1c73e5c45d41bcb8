# review_r2 R2-4: the admission queue (limits.queue, 32) was one count for every sender and
# every meter, so one DCC User's key (any role, its own originators, junk GBCS signatures)
# kept it full and every other DCC User got E_BUSY, on every meter of the HAN. Now a sender
# (its key; with the legacy key, its originator) may hold at most half the queue and a meter
# three quarters (docs/relay.md "HAN protection"), refused E_BUSY for that sender or meter
# alone. Two senders here, by keys per DCC User and by the legacy key.
from test_relay_support import ESME, GSME, SUPPLIER, response_to
from test_relay_senders import _rig, SUPPLIER_KEY, ENGINEER_KEY, OTHER_ORIG

_PER_SENDER = "16 of this sender's commands already wait for the HAN (at most 16 of the queue's 32 per sender): try later"


def _queued(r):
    return len([e for e in r.journal.live.values() if e.state == 0])


async def test_one_users_key_cannot_take_the_queue_from_another():
    # review_r2's t_queue: eng-1 (ECS52, 0x0059, only) sends as fast as it may
    r = _rig(legacy=False, queue=32)
    n = 0
    for i in range(40):
        res = await r.submit("a%d" % i, 1000 + i, key=ENGINEER_KEY, kid="eng-1", originator=OTHER_ORIG, code=0x0059)
        n += res["status"] == "accepted"
    assert n == 16 and (res["error"], res["message"]) == ("E_BUSY", _PER_SENDER)
    # another DCC User's top-up to the same meter, and a command to the idle GSME: taken
    assert (await r.submit("b1", 5, key=SUPPLIER_KEY, kid="supplier-a"))["status"] == "accepted"
    assert (await r.submit("b2", 6, key=SUPPLIER_KEY, kid="supplier-a", target=GSME))["status"] == "accepted"
    # a key's own originators count as one sender: eng-1 as SUPPLIER is refused too, while
    # supplier-a, which shares that originator, is not
    res = await r.submit("a-s", 2000, key=ENGINEER_KEY, kid="eng-1", code=0x0059)
    assert (res["error"], res["message"]) == ("E_BUSY", _PER_SENDER)
    assert (await r.submit("b3", 7, key=SUPPLIER_KEY, kid="supplier-a"))["status"] == "accepted"
    # once one of eng-1's commands leaves the queue it may send one more, no more
    r.han.responder = response_to
    await r.relay.dispatch_once()
    assert _queued(r) == 16 + 3 - 1
    assert (await r.submit("a-more", 3000, key=ENGINEER_KEY, kid="eng-1", originator=OTHER_ORIG, code=0x0059))["status"] == "accepted"
    assert (await r.submit("a-more2", 3001, key=ENGINEER_KEY, kid="eng-1", originator=OTHER_ORIG, code=0x0059))["error"] == "E_BUSY"


async def test_with_the_legacy_key_each_originator_has_its_share():
    r = _rig(legacy=True, queue=32)
    for i in range(16):
        assert (await r.submit("x%d" % i, 100 + i))["status"] == "accepted"
    res = await r.submit("x16", 116)
    assert (res["error"], res["message"]) == ("E_BUSY", _PER_SENDER)
    assert (await r.submit("y0", 5, originator=OTHER_ORIG))["status"] == "accepted"
    # the refusal is that command's alone: it is not journaled, and may come again later
    assert r.relay.status("x16") == "rejected" and "x16" not in r.journal.by_id


async def test_one_meter_keeps_a_quarter_of_the_queue_for_the_others():
    r = _rig(legacy=True, queue=32)
    for i in range(16):
        assert (await r.submit("x%d" % i, 100 + i))["status"] == "accepted"
    for i in range(8):
        assert (await r.submit("y%d" % i, 200 + i, originator=OTHER_ORIG))["status"] == "accepted"
    res = await r.submit("y8", 208, originator=OTHER_ORIG)           # ESME holds 24 of 32
    assert (res["error"], res["message"]) == (
        "E_BUSY", "24 commands already wait for meter 00DB1234567890A0 (at most 24 of the queue's 32 "
        "per meter): try later")
    res = await r.submit("g0", 300, originator=OTHER_ORIG, target=GSME)
    assert res["status"] == "accepted", res
    # the command in flight does not count: the meter's share is of the queue
    await r.relay.dispatch_once()
    assert (await r.submit("y9", 209, originator=OTHER_ORIG))["status"] == "accepted"
    assert (await r.submit("y10", 210, originator=OTHER_ORIG))["error"] == "E_BUSY"


async def test_a_small_queue_is_not_split():
    # below 4 places there is no quarter to keep: one sender may fill it (E_BUSY beyond)
    r = _rig(legacy=True, queue=3)
    r.relay.admit_wait_ms = 0   # no wait for room: refused at once
    for i in range(3):
        assert (await r.submit("x%d" % i, 100 + i))["status"] == "accepted"
    res = await r.submit("x3", 103)
    assert (res["error"], res["message"]) == ("E_BUSY", "3 commands already wait for the HAN: try later")


def test_the_busy_sentence_says_the_share_the_accept_hit():
    # the rule is relay.core's alone: the refusal writes the share and the figures it is given
    from ppmid.relay.refusals import busy_share
    e = busy_share(5, 5, 7, None)
    assert (e.code, e.message) == (
        "E_BUSY", "5 of this sender's commands already wait for the HAN (at most 5 of the queue's 7 per sender): try later")
    e = busy_share(6, 6, 7, bytes.fromhex(GSME))
    assert (e.code, e.message) == (
        "E_BUSY", "6 commands already wait for meter 00DB1234567890A1 (at most 6 of the queue's 7 per meter): "
        "try later")


async def test_the_busy_sentences_are_true_for_an_odd_queue():
    # 7 places: a quarter is 1, so a sender may hold 5 and a meter 6; the sentence's figures
    # are the queue's as the accept counted it, the command in flight not among them
    r = _rig(legacy=True, queue=7)
    for i in range(5):
        assert (await r.submit("x%d" % i, 100 + i))["status"] == "accepted"
    res = await r.submit("x5", 105)
    assert (res["error"], res["message"]) == (
        "E_BUSY", "5 of this sender's commands already wait for the HAN (at most 5 of the queue's 7 per sender): try later")
    assert (await r.submit("y0", 200, originator=OTHER_ORIG))["status"] == "accepted"
    res = await r.submit("y1", 201, originator=OTHER_ORIG)
    assert (res["error"], res["message"]) == (
        "E_BUSY", "6 commands already wait for meter 00DB1234567890A0 (at most 6 of the queue's 7 per meter): try later")
    # one goes to the meter: 5 queued and 1 in flight, so one more is taken, and the next
    # is refused with the meter's 6 queued, not 7
    await r.relay.dispatch_once()
    assert len(r.relay.in_flight) == 1 and _queued(r) == 5
    assert (await r.submit("y2", 202, originator=OTHER_ORIG))["status"] == "accepted"
    res = await r.submit("y3", 203, originator=OTHER_ORIG)
    assert (res["error"], res["message"]) == (
        "E_BUSY", "6 commands already wait for meter 00DB1234567890A0 (at most 6 of the queue's 7 per meter): try later")
    # the other meter has its own share: the GSME takes a command (the queue's last place)
    assert (await r.submit("g0", 300, originator=OTHER_ORIG, target=GSME))["status"] == "accepted"
