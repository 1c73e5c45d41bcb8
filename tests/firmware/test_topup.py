# mp-heapsize: 384K  (a whole file of tests in one 64-bit interpreter, each with its own relay, journal and fake HAN: since session 10 a restart's compaction found no 2 KB block in 256K; the app's own 32-bit figures are the heap32 bench rows)
# UTRN top-ups in the firmware: the top-up envelope (JSON and binary, its own mac domain),
# the Prepayment cluster frames, and the relay's top-up road (checks with their codes,
# journaled once, the meter's answer mapped to a final status, duplicates kept across a
# restart, timeouts, a meter that answers nonsense). Runs under CPython and MicroPython.
import struct

from test_relay_support import Rig, KEY, ESME, GSME, PPMID, FakeHan
from ppmid import topup, envelope, utrn
from ppmid.envelope import EnvelopeError
from ppmid.errors import PpmidError
from ppmid.relay import journal as J
from ppmid.zigbee import prepayment as P
from ppmid.relay.report import named
from ppmid.zigbee.han_counters import named as han_named_counters, HAN

PPTD_BASE = 7394156990786306048
ESME_NWK = 0x4A21
UTRN_100P = "73943333457189043313"   # public vector: 100 pounds, counter 1


def make(counter=1, value_class=0, value=500, mac=0x12345678):
    ptut = (counter << 47) | (value_class << 45) | (value << 32) | mac
    text = str(PPTD_BASE + ptut)
    return text + str(utrn.check_digit(text))


def code_of(fn, *args):
    try:
        fn(*args)
    except PpmidError as exc:
        return exc.code
    return None


# ---- the envelope ------------------------------------------------------------------------
def test_signed_top_up_verifies_and_round_trips_binary():
    env = topup.sign(KEY, "t-1", UTRN_100P, ESME.lower(), 1900000000)
    assert env.target == ESME
    env.verify(KEY, 1800000000)
    b = topup.to_binary(env)
    assert b[0] == 2 and b[1] == 1
    back = topup.from_binary(b)
    assert (back.id, back.utrn, back.target, back.expires, bytes(back.mac)) == \
        (env.id, env.utrn, env.target, env.expires, bytes(env.mac))
    back.verify(KEY)
    # the JSON form: lower-case target text verifies as the same top-up
    obj = {"id": "t-1", "utrn": UTRN_100P, "target": ESME.lower(), "expires": 1900000000,
           "mac": "".join("%02x" % x for x in env.mac)}
    topup.from_json_obj(obj).verify(KEY)


def test_top_up_kid_in_both_forms_and_old_layout_unchanged():
    env = topup.sign(KEY, "t-1", UTRN_100P, ESME, None, "supplier-a")
    # vector from CPython's hmac: "ppmid-topup-v1" 01 kid 00 id 00 expires 00 TARGET 00 utrn
    assert "".join("%02x" % x for x in env.mac) == "16d6ad3cf5ec67460a51a7ec9ae0fa747bd8f6d4a150d56cd88174a765deaf1e"
    b = topup.to_binary(env)
    assert b[1] == 2 and b[6] == 10 and b[7:17] == b"supplier-a"
    back = topup.from_binary(b)
    assert back.kid == "supplier-a" and back.target == ESME
    back.verify(KEY)
    obj = {"id": "t-1", "utrn": UTRN_100P, "target": ESME, "kid": "supplier-a",
           "mac": "".join("%02x" % x for x in env.mac)}
    topup.from_json_obj(obj).verify(KEY)
    obj["kid"] = "other"
    assert code_of(topup.from_json_obj(obj).verify, KEY) == "E_AUTH"
    obj["kid"] = "a b"
    assert code_of(topup.from_json_obj, obj) == "E_ENVELOPE"
    assert code_of(topup.from_binary, b[:10]) == "E_ENVELOPE"
    # without a kid: the layout of before (flags 0, the id, then the target)
    plain = topup.to_binary(topup.sign(KEY, "t-1", UTRN_100P, ESME))
    assert plain[:6] == bytes((2, 0, 3)) + b"t-1" and len(plain) == 6 + 8 + 20 + 32
    assert topup.from_binary(plain).kid is None


def test_top_up_mac_is_not_a_command_mac():
    env = topup.sign(KEY, "t-1", UTRN_100P, ESME)
    assert code_of(env.verify, b"x" * 32) == "E_AUTH"
    # the same fields signed as a command (domain ppmid-cmd-v1) do not pass for a top-up
    forged = topup.TopupEnvelope("t-1", UTRN_100P, ESME, None,
                                 envelope.compute_mac(KEY, "t-1", None, ESME.encode() + b"\x00" + UTRN_100P.encode()))
    assert code_of(forged.verify, KEY) == "E_AUTH"
    other = topup.TopupEnvelope("t-1", make(), ESME, None, env.mac)  # another UTRN, same mac
    assert code_of(other.verify, KEY) == "E_AUTH"
    late = topup.sign(KEY, "t-2", UTRN_100P, ESME, 100)
    assert code_of(late.verify, KEY, 100) == "E_EXPIRED"


def test_malformed_envelopes_have_codes():
    good = {"id": "t-1", "utrn": UTRN_100P, "target": ESME, "mac": "00" * 32}
    for field in ("id", "utrn", "target", "mac"):
        obj = dict(good)
        del obj[field]
        assert code_of(topup.from_json_obj, obj) == "E_ENVELOPE"
    assert code_of(topup.from_json_obj, dict(good, gbcs="AAAA")) == "E_ENVELOPE"
    assert code_of(topup.from_json_obj, dict(good, utrn=7394)) == "E_ENVELOPE"
    assert code_of(topup.from_json_obj, dict(good, id="a b")) == "E_ID"
    assert code_of(topup.from_json_obj, dict(good, expires=-1)) == "E_ENVELOPE"
    # beyond the journal's u32 (0xFFFFFFFF there is "no expiry")
    assert code_of(topup.from_json_obj, dict(good, expires=0xFFFFFFFF)) == "E_ENVELOPE"
    assert code_of(topup.from_json_obj, dict(good, expires=2 ** 32 + 100)) == "E_ENVELOPE"
    assert topup.from_json_obj(dict(good, expires=0xFFFFFFFE)).expires == 0xFFFFFFFE
    assert code_of(topup.from_json_obj, dict(good, mac="zz")) == "E_ENVELOPE"
    assert code_of(topup.from_json_obj, [1]) == "E_ENVELOPE"
    b = topup.to_binary(topup.sign(KEY, "t-1", UTRN_100P, ESME))
    assert code_of(topup.from_binary, b[:-1]) == "E_ENVELOPE"
    assert code_of(topup.from_binary, b"\x02\x02" + b[2:]) == "E_ENVELOPE"
    assert code_of(topup.from_binary, b"\x01" + b[1:]) == "E_ENVELOPE"
    assert code_of(topup.strict_digits, "7394 3333 4571 8904 3313") == "E_UTRN_FORMAT"
    assert code_of(topup.check_target, "00DB12345678") == "E_UTRN_TARGET"
    assert code_of(topup.check_target, "00DB1234567890ZZ") == "E_UTRN_TARGET"


# ---- the Prepayment frames ---------------------------------------------------------------
def test_consumer_top_up_frame_layout():
    f = P.consumer_top_up(0x37, UTRN_100P.encode())
    # cluster specific, client to server, no Default Response; seq; command 0x04
    assert f[:3] == b"\x11\x37\x04"
    assert f[3] == P.ORIGIN_IHD and f[4] == 20 and f[5:] == UTRN_100P.encode()
    assert P.parse_request(f) == (0x37, P.ORIGIN_IHD, UTRN_100P.encode())
    assert code_of(P.consumer_top_up, 1, b"") == "E_ZCL"


def test_consumer_top_up_response_both_ways():
    f = P.consumer_top_up_response(9, P.RESULT_ACCEPTED_SUPPLY_ARMED, 500, 2, -120)
    assert f[:3] == b"\x19\x09\x03" and len(f) == 13
    r = P.parse_response(f)
    assert (r.seq, r.result, r.value, r.source, r.credit) == (9, 0x12, 500, 2, -120)
    assert r.accepted() and not P.parse_response(P.consumer_top_up_response(9, 2, 0, 1, 0)).accepted()
    assert code_of(P.parse_response, f[:-1]) == "E_ZCL"
    assert code_of(P.parse_response, P.consumer_top_up(9, b"1")) == "E_ZCL"   # the other direction
    assert code_of(P.parse_response, b"\x19\x09\x04" + f[3:]) == "E_ZCL"      # another command


def test_default_response_both_ways():
    # general command (frame type 0), server to client, no Default Response; command id, status
    f = P.default_response(0x42, P.CONSUMER_TOP_UP, 0x7E)
    assert f == b"\x18\x42\x0b\x04\x7e"
    assert P.parse_default_response(f) == (0x42, 0x04, 0x7E)
    assert P.parse_default_response(f + b"\x00") == (0x42, 0x04, 0x7E)   # later fields ignored
    assert code_of(P.parse_default_response, f[:4]) == "E_ZCL"
    assert code_of(P.parse_default_response, b"\x19" + f[1:]) == "E_ZCL"   # cluster specific
    assert code_of(P.parse_default_response, b"\x10" + f[1:]) == "E_ZCL"   # client to server
    assert code_of(P.parse_default_response, b"\x1c\x34\x12" + f[1:]) == "E_ZCL"  # manufacturer's
    assert code_of(P.parse_default_response, b"\x18\x42\x0a\x04\x7e") == "E_ZCL"  # another command
    assert code_of(P.parse_response, f) == "E_ZCL"   # not a Consumer Top Up Response


# ---- the relay's top-up road -------------------------------------------------------------
class TopupHan(FakeHan):
    """FakeHan with the direct ZCL road: send_zcl records (dest, cluster, endpoint, frame);
    a scripted meter (fn(frame) -> response frame or None) answers through on_zcl, as the HAN link's receive callback does."""

    def __init__(self, meter=None):
        super().__init__()
        self.on_zcl = None
        self.zcl = []
        self.meter = meter
        self.zcl_fail = []
        # the HAN link's (a list by index), which the road counts in too
        self.counters = [0] * len(HAN)

    async def send_zcl(self, dest, cluster, endpoint, frame, judge=None):
        if judge is not None:
            judge()   # as the link does once its send lock is free (zigbee/direct.py)
        if self.zcl_fail:
            code = self.zcl_fail.pop(0)
            raise PpmidError(code, "scripted HAN failure")
        self.zcl.append((dest, cluster, endpoint, bytes(frame)))
        if self.meter is not None:
            rsp = self.meter(bytes(frame))
            if rsp is not None:
                self.on_zcl(dest, cluster, rsp)


class Meter:
    """A plain ESME: credit in pence, each UTRN once."""

    def __init__(self, credit=1000, result=None, refuse=None):
        self.credit = credit
        self.seen = set()
        self.result = result   # a fixed result code instead (faults)
        self.refuse = refuse   # a ZCL status: a Default Response instead of any answer

    def __call__(self, frame):
        seq, origin, code = P.parse_request(frame)
        if self.refuse is not None:
            return P.default_response(seq, P.CONSUMER_TOP_UP, self.refuse)
        if self.result is not None:
            return P.consumer_top_up_response(seq, self.result, 0, 1, self.credit)
        if code in self.seen:
            return P.consumer_top_up_response(seq, P.RESULT_DUPLICATE, 0, 1, self.credit)
        self.seen.add(code)
        u = utrn.decode(code)
        self.credit += u.value_pence
        return P.consumer_top_up_response(seq, P.RESULT_ACCEPTED_SUPPLY_ENABLED, u.value_pence, 2, self.credit)


def topup_config(**limits):
    from ppmid import config as C
    return C.validate({"gateway": PPMID, "han": {"devices": [
        {"eui": ESME, "type": "ESME", "nwk": ESME_NWK, "endpoint": 9},
        {"eui": GSME, "type": "GSME"}, {"eui": "00DB1234567890A9", "type": "IHD"}]},
        "limits": limits})


def rig(meter=None, **kw):
    return Rig(cfg=topup_config(**kw), han=TopupHan(meter))


async def submit(r, id, text, target=ESME, via="mqtt", key=KEY, expires=None):
    return await r.accept_env(topup.sign(key, id, text, target, expires), via)


async def test_top_up_applied_once_and_reported():
    m = Meter()
    r = rig(m)
    text = make(value=250)
    assert await submit(r, "t-1", text) == {"id": "t-1", "status": "accepted"}
    e = r.journal.by_id["t-1"]
    assert e.topup and e.state == J.QUEUED and r.journal.body(e) == text.encode()
    await r.pump()
    assert len(r.han.zcl) == 1 and r.han.sent == []   # not through the tunnel
    dest, cluster, ep, frame = r.han.zcl[0]
    assert (dest, cluster, ep) == (ESME_NWK, 0x0705, 9)
    assert P.parse_request(frame)[2] == text.encode()
    assert r.pub.statuses("t-1") == ["accepted", "topped-up"], r.pub.statuses("t-1")
    final = r.pub.on("/rsp")[-1]
    # the meter's figures are not on rsp, which every DCC User identity may read (review r2
    # R2-3): the relay's result holds them for the road that delivered the top-up
    assert "topup" not in final and "error" not in final and m.credit == 1250, final
    assert r.journal.live == {}
    res = r.relay.result("t-1")
    assert res["status"] == "topped-up" and res["topup"] == {"result": 0x10, "value": 250, "credit": 1250,
                                                             "source": "ihd", "supply": "enabled"}
    # the same UTRN again, under a new id: refused here, the meter never sees it
    res = await submit(r, "t-2", text)
    assert res["status"] == "rejected" and res["error"] == "E_UTRN_DUPLICATE"
    # the same id again: its status, nothing sent
    assert (await submit(r, "t-1", text))["status"] == "topped-up"
    await r.pump()
    assert len(r.han.zcl) == 1


async def test_duplicate_remembered_across_restart_and_forgotten_after_journal_wipe():
    m = Meter()
    r = rig(m)
    text = make(value=300)
    await submit(r, "t-1", text)
    await r.pump()
    r.relay.house_once()  # lazy records to flash
    r.restart()
    res = await submit(r, "t-2", text)
    assert res["error"] == "E_UTRN_DUPLICATE"
    # the gateway forgets (journal wiped): the meter refuses it, result 0x02
    r.journal.close()
    import os
    os.remove(r.journal.path)
    r.boot()
    assert (await submit(r, "t-3", text))["status"] == "accepted"
    await r.pump()
    final = r.pub.on("/rsp")[-1]
    assert final["id"] == "t-3" and final["status"] == "rejected"
    assert final["error"]["code"] == "E_UTRN_DUPLICATE" and "topup" not in final
    assert r.relay.result("t-3")["topup"]["result"] == 2
    assert m.credit == 1300 and len(m.seen) == 1
    # and it is remembered again
    assert (await submit(r, "t-4", text))["error"] == "E_UTRN_DUPLICATE"


async def test_in_flight_top_up_refuses_its_twin():
    r = rig(None)  # the meter does not answer
    text = make(value=10)
    await submit(r, "t-1", text)
    assert (await submit(r, "t-2", text))["error"] == "E_UTRN_DUPLICATE"
    await r.pump()
    assert (await submit(r, "t-3", text))["error"] == "E_UTRN_DUPLICATE"
    r.restart()   # in flight across a power cut: still refused, and never sent again
    assert (await submit(r, "t-4", text))["error"] == "E_UTRN_DUPLICATE"
    await r.pump()
    assert len(r.han.zcl) == 1


async def test_accepted_top_up_survives_a_power_cut_and_goes_once():
    m = Meter()
    r = rig(m)
    text = make(value=70)
    await submit(r, "t-1", text)   # accepted (journaled), not yet dispatched
    r.restart()                    # power cut: RAM gone, flash kept
    e = r.journal.by_id["t-1"]
    assert e.topup and e.state == J.QUEUED and r.journal.body(e) == text.encode()
    await r.pump()
    r.restart()
    await r.pump()
    assert len(r.han.zcl) == 1 and m.credit == 1070
    assert r.pub.statuses("t-1")[-1] == "topped-up"


def _wire(eui_text):
    # an EUI-64 as a v14 module names a sender: little-endian
    import binascii
    return bytes(reversed(binascii.unhexlify(eui_text)))


async def test_at_v14_an_answer_from_another_eui64_does_not_end_the_top_up():
    # review 87 F4: the NWK address and the APS-encryption bit do not make a frame the
    # meter's (a node holding a link key may send as its NWK address); a v14 module names
    # the sender's EUI-64, and the answer must be from the meter the top-up went to
    r = rig(None)
    text = make(value=70)
    await submit(r, "t-1", text)
    await r.pump()
    seq = P.parse_request(r.han.zcl[0][3])[0]
    # a forged "duplicate" as the meter's NWK, from an IHD's EUI-64: not taken
    r.han.on_zcl(ESME_NWK, 0x0705, P.consumer_top_up_response(seq, P.RESULT_DUPLICATE, 0, 1, 5), _wire("00DB1234567890A9"))
    await r.publish_all()
    assert r.journal.by_id["t-1"].state == J.SENDING and han_named_counters(r.han.counters, HAN)["rx_unsecured"] == 1
    assert r.pub.statuses("t-1") == ["accepted", "relayed"]   # sent, not answered
    assert len([line for line in r.logs if "not the meter's" in line]) == 1
    # the meter's own answer, its EUI-64 named: taken, and the UTRN is the meter's to judge
    r.han.on_zcl(ESME_NWK, 0x0705, P.consumer_top_up_response(seq, 0x10, 70, 2, 1070), _wire(ESME))
    await r.publish_all()
    assert r.pub.statuses("t-1")[-1] == "topped-up" and han_named_counters(r.han.counters, HAN)["rx_unsecured"] == 1
    assert "topup" not in r.pub.on("/rsp")[-1] and r.relay.result("t-1")["topup"]["credit"] == 1070


async def test_answer_after_a_restart_still_ends_the_top_up():
    r = rig(None)   # the meter answers only after the gateway restarted
    text = make(value=33)
    await submit(r, "t-1", text)
    await r.pump()
    seq = P.parse_request(r.han.zcl[0][3])[0]
    r.restart()
    assert r.journal.by_id["t-1"].state == J.SENDING
    r.han.on_zcl(ESME_NWK, 0x0705, P.consumer_top_up_response(seq, 0x10, 33, 2, 1033))
    await r.publish_all()
    assert r.pub.statuses("t-1")[-1] == "topped-up" and r.journal.live == {}
    assert (await submit(r, "t-2", text))["error"] == "E_UTRN_DUPLICATE"
    assert len(r.han.zcl) == 1


async def test_top_up_found_sending_at_a_restart_is_never_sent_again():
    # commands whose delivery is uncertain are resent after a restart (the meter's GBCS
    # anti-replay makes that safe); a Consumer Top Up has no such counter, so it is not
    r = rig(None)   # the meter never answers
    await submit(r, "t-1", make(value=12))
    await r.pump()
    assert len(r.han.zcl) == 1
    r.restart()
    assert r.journal.by_id["t-1"].state == J.SENDING
    await r.pump()
    r.restart()
    await r.pump()
    assert len(r.han.zcl) == 1 and r.journal.by_id["t-1"].resends == 0


async def test_bad_top_ups_refused_with_their_codes():
    r = rig(Meter())
    good = make()
    bad_check = good[:19] + str((int(good[19]) + 1) % 10)
    cases = [
        ("b-1", "7394333345718904331", ESME, "E_UTRN_FORMAT"),
        ("b-2", "7394 3333 4571 8904 3313", ESME, "E_UTRN_FORMAT"),
        ("b-3", bad_check, ESME, "E_UTRN_CHECK"),
        ("b-4", make(value=0), ESME, "E_UTRN_VALUE"),
        ("b-5", make(value_class=2), ESME, "E_UTRN_VALUE"),
        ("b-6", good, "00DB1234567890FF", "E_UTRN_TARGET"),
        ("b-7", good, "00DB1234567890A9", "E_UTRN_TARGET"),   # an IHD
        ("b-8", good, GSME, "E_UTRN_GSME"),
        ("b-9", good, "not-an-eui", "E_UTRN_TARGET"),
    ]
    for id, text, target, code in cases:
        env = topup.TopupEnvelope(id, text, target, None, topup.compute_mac(KEY, id, None, target, text))
        res = await r.accept_env(env)
        assert res["status"] == "rejected" and res["error"] == code, (id, res)
    assert (await submit(r, "b-10", good, key=b"z" * 32))["error"] == "E_AUTH"
    assert (await submit(r, "b-11", good, expires=1000))["error"] == "E_EXPIRED"
    await r.pump()
    assert r.han.zcl == [] and r.journal.live == {}
    # none of them used the UTRN up
    assert (await submit(r, "t-1", good))["status"] == "accepted"


async def test_esme_without_network_address_takes_no_top_ups():
    from ppmid import config as C
    cfg = C.validate({"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"}]}})
    r = Rig(cfg=cfg, han=TopupHan(Meter()))
    res = await submit(r, "t-1", make())
    assert res["error"] == "E_UTRN_TARGET" and "nwk" in res["message"]


async def test_meter_rejections_map_to_codes_and_the_utrn_may_be_tried_again():
    m = Meter(result=P.RESULT_KEYPAD_LOCK)
    r = rig(m)
    text = make(value=40)
    await submit(r, "t-1", text)
    await r.pump()
    final = r.pub.on("/rsp")[-1]
    assert final["status"] == "rejected" and final["error"]["code"] == "E_UTRN_KEYPAD_LOCK"
    assert "topup" not in final and r.relay.result("t-1")["topup"]["result"] == 5
    m.result = None   # unlocked: the same UTRN goes through
    assert (await submit(r, "t-2", text))["status"] == "accepted"
    await r.pump()
    assert r.pub.statuses("t-2")[-1] == "topped-up" and m.credit == 1040
    for result, code in ((1, "E_UTRN_INVALID"), (3, "E_UTRN_METER_ERROR"), (4, "E_UTRN_MAX_CREDIT"),
                         (6, "E_UTRN_TOO_LARGE"), (0x7F, "E_UTRN_RESULT")):
        m.result = result
        id = "r-%d" % result
        await submit(r, id, make(value=result + 1000))
        await r.pump()
        f = r.pub.on("/rsp")[-1]
        assert (f["id"], f["status"], f["error"]["code"]) == (id, "rejected", code)


async def test_a_refused_utrn_may_be_retried_at_once_while_no_broker_took_its_result():
    # docs/utrn.md step 4 (review_w6-2): with the broker unreachable (the home NFC is for)
    # the refused top-up's result stays in the journal; the same UTRN under a new id is
    # not "already on its way to the meter", and one still queued or sent still blocks it
    m = Meter(result=P.RESULT_KEYPAD_LOCK)
    r = rig(m)
    r.pub.down = True
    text = make(value=250)
    assert (await submit(r, "t-1", text, via="nfc-tag"))["status"] == "accepted"
    while await r.relay.dispatch_once() == 0:
        pass
    assert r.relay.result("t-1")["error"]["code"] == "E_UTRN_KEYPAD_LOCK"
    assert "t-1" in r.journal.by_id          # kept for the broker
    m.result = None                          # the customer unlocked the keypad
    assert (await submit(r, "t-2", text, via="nfc-tag"))["status"] == "accepted"
    out = await submit(r, "t-3", text, via="nfc-phone")   # t-2 is queued: that one blocks
    assert (out["error"], "(t-2)" in out["message"]) == ("E_UTRN_DUPLICATE", True), out
    while await r.relay.dispatch_once() == 0:
        pass
    assert r.relay.status("t-2") == "topped-up" and m.credit == 1250
    out = await submit(r, "t-4", text, via="nfc-phone")   # applied: remembered as such
    assert (out["error"], out["message"]) == ("E_UTRN_DUPLICATE", "this UTRN was applied already"), out


async def test_meter_refusing_with_a_default_response_is_rejected_with_its_status():
    m = Meter(refuse=0x7E)   # NOT_AUTHORIZED: this PPMID may not top up this meter
    r = rig(m, response_timeout_s=5)
    text = make(value=45)
    await submit(r, "t-1", text)
    await r.pump()
    final = r.pub.on("/rsp")[-1]
    assert (final["id"], final["status"]) == ("t-1", "rejected"), final
    assert final["error"]["code"] == "E_UTRN_METER_REFUSED" and "0x7E NOT_AUTHORIZED" in final["error"]["message"]
    assert "topup" not in final
    assert named(r.relay.counters)["rx_bad"] == 0 and r.journal.live == {}
    res = r.relay.result("t-1")
    assert res["error"]["code"] == "E_UTRN_METER_REFUSED" and res["topup"] == {"zcl_status": 0x7E}
    # not remembered as applied: once the meter takes top-ups, the same UTRN goes
    m.refuse = None
    assert (await submit(r, "t-2", text))["status"] == "accepted"
    await r.pump()
    assert r.pub.statuses("t-2")[-1] == "topped-up" and m.credit == 1045
    # a status without a name is shown as its number
    m.refuse = 0x99
    await submit(r, "t-3", make(value=46))
    await r.pump()
    final = r.pub.on("/rsp")[-1]
    assert final["id"] == "t-3" and "topup" not in final and "0x99" in final["error"]["message"]
    assert r.relay.result("t-3")["topup"] == {"zcl_status": 0x99}


async def test_default_responses_that_are_no_refusal_are_dropped():
    r = rig(None, response_timeout_s=5)   # the meter does not answer
    await submit(r, "t-1", make(value=8))
    await r.pump()
    seq = P.parse_request(r.han.zcl[0][3])[0]
    h = r.han.on_zcl
    h(ESME_NWK, 0x0705, P.default_response(seq, P.CONSUMER_TOP_UP, 0x00))   # SUCCESS: no result in it
    h(ESME_NWK, 0x0705, P.default_response(seq, 0x05, 0x81))                # about another command
    h(ESME_NWK, 0x0705, P.default_response(seq, P.CONSUMER_TOP_UP, 0x7E)[:4])  # truncated
    assert named(r.relay.counters)["rx_bad"] == 3
    h(ESME_NWK, 0x0705, P.default_response((seq + 1) & 0xFF, P.CONSUMER_TOP_UP, 0x7E))  # another seq
    assert named(r.relay.counters)["unmatched"] == 1
    h(0x1111, 0x0705, P.default_response(seq, P.CONSUMER_TOP_UP, 0x7E))     # another node
    assert named(r.relay.counters)["unmatched"] == 2
    await r.publish_all()
    assert r.pub.statuses("t-1") == ["accepted", "relayed"] and r.journal.by_id["t-1"].state == J.SENDING
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.publish_all()
    assert r.pub.statuses("t-1")[-1] == "timeout"


async def test_timed_out_top_up_may_be_sent_again_and_the_meter_decides():
    # docs/utrn.md step 4: a top-up that timed out may go again at once (its late window
    # need not pass): the meter's own memory refuses it if the first reached it after all
    m = Meter()
    r = rig(None, response_timeout_s=5)   # the first attempt gets no answer
    text = make(value=21)
    await submit(r, "t-1", text)
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.publish_all()
    assert r.pub.statuses("t-1")[-1] == "timeout" and r.journal.by_id["t-1"].state == J.TIMED_OUT
    r.han.meter = m
    assert await submit(r, "t-2", text) == {"id": "t-2", "status": "accepted"}
    await r.pump()
    assert r.pub.statuses("t-2")[-1] == "topped-up" and m.credit == 1021
    assert len(r.han.zcl) == 2
    # the meter had applied it after all: its duplicate answer ends the copy, remembered here
    m2 = Meter()
    r2 = rig(m2, response_timeout_s=5)
    text = make(value=22)
    m2.seen.add(text.encode())
    r2.han.meter = None
    await submit(r2, "u-1", text)
    await r2.pump()
    r2.clock.advance(5100)
    r2.relay.check_timers()
    r2.han.meter = m2
    await submit(r2, "u-2", text)
    await r2.pump()
    final = r2.pub.on("/rsp")[-1]
    assert (final["id"], final["error"]["code"]) == ("u-2", "E_UTRN_DUPLICATE")
    assert (await submit(r2, "u-3", text))["error"] == "E_UTRN_DUPLICATE"
    assert len(r2.han.zcl) == 2 and m2.credit == 1000


async def test_meter_silent_times_out_and_the_relay_keeps_going():
    r = rig(None, response_timeout_s=5)
    await submit(r, "t-1", make(value=7))
    await r.pump()
    r.clock.advance(5100)
    r.relay.check_timers()
    await r.publish_all()
    assert r.pub.statuses("t-1") == ["accepted", "relayed", "timeout"]
    # a GBCS command still goes
    await r.submit("c-1", 10)
    await r.pump()
    assert len(r.han.sent) == 1
    # garbage and unmatched Prepayment frames are counted, never crash
    h = r.han.on_zcl
    h(ESME_NWK, 0x0705, b"\x19\x01")
    h(ESME_NWK, 0x0705, P.consumer_top_up_response(200, 0, 1, 1, 1))
    h(ESME_NWK, 0x0702, b"\x18\x01\x0a")   # another cluster (Metering): not ours
    assert named(r.relay.counters)["rx_bad"] == 2 and named(r.relay.counters)["unmatched"] == 1


async def test_a_gbcs_response_naming_a_top_ups_key_is_unmatched():
    # review r4 R4-4: a top-up's answer comes by its own road (a ZCL Consumer Top Up
    # Response); a CRA-2 GBCS frame from the tunnel naming a live top-up's key (its target,
    # originator 0, its PTUT as the counter) used to end the top-up as answered
    from test_relay_support import gbcs_message
    r = rig(None)
    await submit(r, "t-1", make(value=7))
    await r.pump()
    e = r.journal.by_id["t-1"]
    assert e.state == J.SENDING
    counter = struct.unpack(">Q", e.counter)[0]
    before = named(r.relay.counters)["unmatched"]
    r.relay.on_han_message(gbcs_message(2, counter, ESME, "0000000000000000"))
    await r.publish_all()
    assert e.state == J.SENDING and r.pub.statuses("t-1") == ["accepted", "relayed"]
    assert named(r.relay.counters)["unmatched"] == before + 1 and len(r.pub.on("/alert")) == 1


async def test_han_down_sends_it_later_and_delivery_unknown_never_twice():
    m = Meter()
    r = rig(m)
    r.han.zcl_fail = ["E_HAN_DOWN"]
    await submit(r, "t-1", make(value=5))
    await r.pump()
    assert r.han.zcl == [] and r.journal.by_id["t-1"].state == J.QUEUED
    r.clock.advance(1500)
    await r.pump()
    assert r.pub.statuses("t-1")[-1] == "topped-up"
    r.han.zcl_fail = ["E_DELIVERY_UNKNOWN"]
    await submit(r, "t-2", make(value=6))
    await r.pump()
    assert r.journal.by_id["t-2"].state == J.SENDING   # may be at the meter: waits
    r.clock.advance(60000)
    r.relay.check_timers()
    await r.pump()
    assert r.pub.statuses("t-2")[-1] == "timeout"
    assert len(r.han.zcl) == 1   # never sent again


def test_journal_keeps_the_newest_utrns_only():
    from test_relay_support import fresh_root
    from ppmid.relay import topups as R
    j = J.Journal(fresh_root())
    j.open()
    j.put_counter("SUPPLIER:ESME", 5)
    for i in range(R.UTRN_KEEP + 3):
        R.remember_utrn(j, struct.pack(">Q", i), i + 1)
    assert not R.utrn_applied(j, struct.pack(">Q", 0)) and not R.utrn_applied(j, struct.pack(">Q", 2))
    assert R.utrn_applied(j, struct.pack(">Q", 3)) and R.utrn_applied(j, struct.pack(">Q", R.UTRN_KEEP + 2))
    j.compact()
    j.close()
    j2 = J.Journal(j.path[:j.path.rfind("/")])
    j2.open()
    assert R.utrn_applied(j2, struct.pack(">Q", 3)) and not R.utrn_applied(j2, struct.pack(">Q", 0))
    assert j2.counters[b"SUPPLIER:ESME"] == 5


async def test_an_answer_the_flash_cannot_take_faults_the_relay_and_the_utrn_stays_refused():
    # review 90, open question (b): the meter applied the top-up, but its R record does not
    # fit on the flash (ENOSPC). Not swallowed: the relay faults as the GBCS road does (the
    # watchdog resets), the answer stays awaited, and after the reset the top-up ends
    # `timeout` (not known here) while its UTRN is refused as applied: never `topped-up`
    # said without a record of it, never a second credit
    m = Meter()
    r = rig(m, response_timeout_s=5)
    text = make(value=250)
    assert (await submit(r, "t-1", text))["status"] == "accepted"
    put = J._put
    journal = r.journal   # this boot's: the flash refuses its R records until the reset

    def write(f, rtype, parts):
        if rtype == 0x52 and f is journal._f:   # 'R', the response record
            raise OSError(28)
        return put(f, rtype, parts)
    J._put = write
    await r.pump()
    e = r.journal.by_id["t-1"]
    assert m.credit == 1250 and e.state == J.SENDING
    assert r.relay.state == "fault" and "not journaled" in r.relay.fault, r.relay.fault
    assert not r.relay.health()[0] and any("not journaled" in line for line in r.logs), r.logs
    assert ESME_NWK in r.relay.topups()._waiting       # still awaited, not forgotten
    assert (await submit(r, "t-9", make(counter=2, value=5)))["status"] == "rejected"   # intake stopped
    assert r.pub.statuses("t-1") == ["accepted", "relayed"]
    r.relay.house_once()          # lazy records (the UTRN's U) to flash; the watchdog unfed
    r.restart()                   # the watchdog's reset
    J._put = put
    assert r.relay.state != "fault" and r.journal.by_id["t-1"].state == J.SENDING
    assert (await submit(r, "t-2", text))["error"] == "E_UTRN_DUPLICATE"
    r.clock.advance(60000)
    r.relay.check_timers()
    await r.pump()
    assert r.pub.statuses("t-1")[-1] == "timeout"
    final = [s for s in r.pub.on("/rsp") if s["id"] == "t-1"][-1]
    assert final["error"]["code"] == "E_TIMEOUT" and "may have applied" in final["error"]["message"], final
    assert len(r.han.zcl) == 1 and m.credit == 1250
