# The cmd-topic intake: every bad input gets a `rejected` status with its code and is
# acknowledged; a good command reaches the accept hook; an accept hook that fails
# unexpectedly makes the handler raise (the client then withholds the PUBACK).
import binascii
import json
import sys

from ppmid import envelope
from ppmid.errors import PpmidError
from ppmid.mqtt import contract
from ppmid.mqtt.intake import Intake
from verified_hook import verified

EUI = "00DB1234567890A0"
CMD = "ppmid/v1/%s/cmd" % EUI
RSP = "ppmid/v1/%s/rsp" % EUI
KEY = bytes(range(32))
GBCS = b"\xdd\x00" + bytes(range(100))


class FakeClient:
    def __init__(self, room=10):
        self.subs = []
        self.handler = None
        self.published = []
        self.firsts = []     # first=True: must be on the wire before the PUBACK
        self.room = room

    def subscribe(self, topic, qos=1):
        self.subs.append((topic, qos))

    async def publish(self, topic, payload, qos=1, retain=False, wait=True, first=False):
        self.firsts.append(first)
        if len(self.published) >= self.room:
            return False
        self.published.append((topic, json.loads(payload), qos, retain))
        return True


class Journal:
    def __init__(self, fail=None):
        self.ids = []
        self.fail = fail

    async def accept(self, env, via):
        if self.fail is not None:
            raise self.fail
        assert via == "mqtt"
        self.ids.append((env.id, bytes(env.gbcs)))


def _cmd(id="c-1", gbcs=GBCS, expires=None, key=KEY, raw=None):
    """A signed command as JSON; raw: fields to overwrite (None = remove) after signing."""
    mac = envelope.compute_mac(key, id, expires, gbcs) if isinstance(id, str) else b"\0" * 32
    obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs).strip().decode(),
           "mac": binascii.hexlify(mac).decode()}
    if expires is not None:
        obj["expires"] = expires
    for k in raw or {}:
        if raw[k] is None:
            obj.pop(k, None)
        else:
            obj[k] = raw[k]
    return json.dumps(obj).encode()


def _setup(fail=None, now=lambda: 1800000000, room=10, max_gbcs=1024):
    c = FakeClient(room)
    j = Journal(fail)
    it = Intake(c, EUI.lower(), verified(j.accept, KEY, now), max_gbcs)
    return c, j, it


async def _rejected(payload, code, topic=CMD, id=None, **kw):
    c, j, it = _setup(**kw)
    await it.handle(topic, memoryview(payload), 1, False)
    assert j.ids == [], "accepted a bad command"
    assert len(c.published) == 1, c.published
    t, obj, qos, retain = c.published[0]
    assert t == RSP and qos == 1 and not retain
    assert obj["status"] == "rejected" and obj["id"] == id, obj
    assert obj["error"]["code"] == code, obj
    assert obj["error"]["message"]
    assert isinstance(obj["ms"], int) and obj["ms"] >= 0
    # the refusal's code (ppmid.mqtt.refusal) is loaded for it and dropped after
    assert "ppmid.mqtt.refusal" not in sys.modules
    return obj


def test_subscribes_to_own_cmd_and_becomes_handler():
    c, j, it = _setup()
    assert c.subs == [(CMD, 1)] and c.handler == it.handle
    assert it.topics.rsp == RSP and it.topics.state.endswith("/state")


async def test_good_command_reaches_accept_hook_without_rsp():
    c, j, it = _setup()
    await it.handle(CMD, memoryview(_cmd(expires=1800000001)), 1, False)
    assert j.ids == [("c-1", GBCS)]
    assert c.published == []  # `accepted` is the relay's to publish, once journaled
    assert it.stats["accepted"] == 1
    assert "ppmid.mqtt.refusal" not in sys.modules  # only a refusal loads it


async def test_malformed_json():
    # the sentence is the envelope's own (ppmid.envelope_errors), which the intake names by its index
    for payload in (b'{"id": "x", ', b"\xff\xfe"):
        obj = await _rejected(payload, "E_ENVELOPE")
        assert obj["error"]["message"] == "command is not valid JSON", obj
    obj = await _rejected(b"[1, 2]", "E_ENVELOPE")
    assert obj["error"]["message"] != "command is not valid JSON", obj


async def test_missing_fields_echo_the_id():
    for field in ("gbcs", "mac"):
        obj = await _rejected(_cmd(raw={field: None}), "E_ENVELOPE", id="c-1")
        assert field in obj["error"]["message"]
    await _rejected(_cmd(raw={"id": None}), "E_ENVELOPE", id=None)


async def test_bad_base64_and_hex():
    await _rejected(_cmd(raw={"gbcs": "abc"}), "E_ENVELOPE", id="c-1")
    await _rejected(_cmd(raw={"gbcs": "ab$d"}), "E_ENVELOPE", id="c-1")
    await _rejected(_cmd(raw={"mac": "zz" * 32}), "E_ENVELOPE", id="c-1")


async def test_id_too_long_or_bad():
    await _rejected(_cmd(id="x" * 33), "E_ID")
    await _rejected(_cmd(id=""), "E_ID")
    await _rejected(_cmd(id="a b"), "E_ID")


async def test_payload_over_max():
    obj = await _rejected(_cmd(gbcs=bytes(1025)), "E_TOO_LARGE", id="c-1")
    assert "1024" in obj["error"]["message"]


async def test_wrong_mac_and_wrong_key():
    good = json.loads(_cmd())
    good["mac"] = "00" * 32
    await _rejected(json.dumps(good).encode(), "E_AUTH", id="c-1")
    await _rejected(_cmd(key=b"\x01" * 32), "E_AUTH", id="c-1")
    tampered = json.loads(_cmd())
    tampered["id"] = "c-2"
    await _rejected(json.dumps(tampered).encode(), "E_AUTH", id="c-2")


async def test_expired_and_clock_unset():
    await _rejected(_cmd(expires=1800000000), "E_EXPIRED", id="c-1")
    await _rejected(_cmd(expires=1900000000), "E_CLOCK", id="c-1", now=lambda: None)
    c, j, it = _setup(now=lambda: None)  # no expiry: the clock does not matter
    await it.handle(CMD, memoryview(_cmd()), 1, False)
    assert j.ids == [("c-1", GBCS)]


async def test_unknown_topic():
    obj = await _rejected(_cmd(), "E_TOPIC", topic="ppmid/v1/%s/other" % EUI)
    assert obj["error"]["message"] == "commands are taken only on %s, not ppmid/v1/%s/other" % (CMD, EUI), obj


async def test_accept_hook_refusal_is_rejected_with_its_code():
    obj = await _rejected(_cmd(), "E_BUSY", id="c-1", fail=PpmidError("E_BUSY", "queue full"))
    assert obj["error"]["message"] == "queue full"


async def test_accept_hook_crash_propagates_so_puback_is_withheld():
    c, j, it = _setup(fail=OSError(28, "no space"))
    try:
        await it.handle(CMD, memoryview(_cmd()), 1, False)
    except OSError:
        assert c.published == []
        return
    raise AssertionError("unexpected accept failure swallowed (would PUBACK and lose it)")


async def test_rejection_dropped_when_queue_full_is_counted():
    c, j, it = _setup(room=0)
    await it.handle(CMD, memoryview(b"nope"), 1, False)
    assert it.stats["rejected"] == 1 and it.stats["reject_drops"] == 1


async def test_rejections_are_published_ahead_of_the_puback():
    # not awaited (the PUBACK waits on the handler) but written first (see the client)
    c, j, it = _setup()
    await it.handle(CMD, memoryview(b"nope"), 1, False)
    assert len(c.published) == 1 and c.published[0][1]["status"] == "rejected"
    assert c.firsts == [True]


def test_status_json_shapes():
    assert json.loads(contract.status_json("a", "response", 12, gbcs=b"\x01\x02")) == \
        {"id": "a", "status": "response", "gbcs": "AQI=", "ms": 12}
    e = json.loads(contract.status_json("a", "failed", error={"code": "E_X", "message": "m"}))
    assert e == {"id": "a", "status": "failed", "error": {"code": "E_X", "message": "m"}}
    try:
        contract.status_json("a", "done")
    except ValueError:
        pass
    else:
        raise AssertionError("unknown status accepted")
    assert json.loads(contract.state_json("online")) == {"state": "online"}
    assert json.loads(contract.state_json("offline")) == {"state": "offline"}
    assert json.loads(contract.alert_json(b"\xff", 5)) == {"gbcs": "/w==", "at": 5}

    class Decoded:  # what the alert takes of a decoded GBCS message
        cra = 3
        originator = memoryview(b"\x90\xb3\xd5\x1f\x30\x01\x00\xab")
        recipient = b"\x00\xdb\x12\x34\x56\x78\x90\xa1"
        counter = 77
    assert json.loads(contract.alert_json(b"\x01", None, Decoded())) == {
        "cra": "alert", "originator": "90B3D51F300100AB", "recipient": "00DB1234567890A1", "counter": 77,
        "gbcs": "AQ=="}


async def test_oversized_message_is_rejected_too_large():
    c, j, it = _setup()
    c.max_packet = 1000
    assert c.oversize == it.too_large
    await it.too_large(CMD, 5000, 1, False)
    (t, obj, qos, retain), = c.published
    assert t == RSP and obj["id"] is None and obj["status"] == "rejected"
    assert obj["error"]["code"] == "E_TOO_LARGE" and "5000" in obj["error"]["message"]
    assert j.ids == [] and "ppmid.mqtt.refusal" not in sys.modules


async def test_oversized_update_message_is_refused_on_the_update_topic():
    # A DCC User's update tool watches ppmid/v1/EUI/update, not rsp: a message on an update
    # topic too large for the client is refused there, in the shape of that road's statuses
    # (an offer's and a data chunk's are the updater's: retained, with the running version;
    # a users update's and a commission order's carry their kind and are not retained).
    for sub, kind, retained in (("offer", None, True), ("data", None, True),
                                ("config", "config", False), ("commission", "commission", False)):
        c, j, it = _setup()
        c.max_packet = 17000
        it.update = ("board", "relay", "link", "1.2.3")
        await it.too_large("ppmid/v1/%s/update/%s" % (EUI, sub), 20000, 1, False)
        (t, obj, qos, retain), = c.published
        assert t == "ppmid/v1/%s/update" % EUI and retain == retained, (sub, t, retain)
        assert obj["state"] == "refused" and obj["error"]["code"] == "E_TOO_LARGE", obj
        assert "20000" in obj["error"]["message"] and "17000" in obj["error"]["message"]
        assert obj.get("kind") == kind and obj.get("running") == (None if kind else "1.2.3"), obj
        assert c.firsts == [True]  # on the wire before the PUBACK of the message it refuses
        assert it.stats["rejected"] == 0 and j.ids == []  # not a command


async def test_message_the_client_had_no_memory_for_is_rejected_busy():
    # the client's buffer could not grow to a message within its cap: send again later
    c, j, it = _setup()
    c.max_packet = 16384
    await it.too_large(CMD, 9000, 1, False)
    (t, obj, qos, retain), = c.published
    assert obj["id"] is None and obj["status"] == "rejected"
    assert obj["error"]["code"] == "E_BUSY" and "9000" in obj["error"]["message"]


class TopupJournal:
    def __init__(self):
        self.got = []

    async def accept(self, env, via):
        env.verify(KEY)
        self.got.append((env.id, env.utrn, env.target))


async def test_top_up_message_reaches_the_hook_and_gbcs_with_utrn_is_refused():
    from ppmid import topup
    c = FakeClient()
    j = TopupJournal()
    intake = Intake(c, EUI, j.accept, 8192)
    env = topup.sign(KEY, "t-1", "73943333457189043313", "00db1234567890a0")
    obj = {"id": "t-1", "utrn": env.utrn, "target": "00db1234567890a0", "mac": binascii.hexlify(env.mac).decode()}
    await intake.handle(CMD, json.dumps(obj).encode(), 1, False)
    assert j.got == [("t-1", "73943333457189043313", "00db1234567890a0")] and c.published == []
    # a top-up that also carries gbcs is neither: refused, nothing reaches the hook
    both = json.loads(_cmd("t-2"))
    both["utrn"] = env.utrn
    both["target"] = env.target
    await intake.handle(CMD, json.dumps(both).encode(), 1, False)
    topic, st, qos, retain = c.published[-1]
    assert st["id"] == "t-2" and st["status"] == "rejected" and st["error"]["code"] == "E_ENVELOPE"
    assert len(j.got) == 1


async def test_deeply_nested_json_is_refused_not_raised():
    # json.loads fails with MemoryError on a few thousand `[` under MicroPython: refused
    # (the handler returns, so the client PUBACKs it) instead of redelivered for ever
    await _rejected(b"[" * 15000, "E_ENVELOPE")
    obj = await _rejected(b'{"id":"x1","a":' + b"[" * 14000, "E_ENVELOPE", id="x1")
    assert "nests deeper" in obj["error"]["message"]
    # past the "gbcs" key the scan stops; json.loads of the rest then runs out of memory
    # (MicroPython) or of stack (CPython): refused, to be sent again later, with the id
    deep = _cmd()[:-1] + b', "a": ' + b"[" * 14000 + b"]" * 14000 + b"}"
    c, j, it = _setup()
    await it.handle(CMD, memoryview(bytearray(deep)), 1, False)
    (t, st, qos, retain), = c.published
    assert st["status"] == "rejected" and st["id"] == "c-1" and c.firsts == [True], st
    assert st["error"]["code"] == "E_BUSY" and j.ids == [], st
    # the intake still takes the next command
    await it.handle(CMD, memoryview(_cmd("c-2")), 1, False)
    assert j.ids == [("c-2", GBCS)]


async def test_memory_error_while_parsing_is_refused_busy_with_the_id():
    from ppmid.mqtt import intake as intake_mod

    class FailingJson:
        @staticmethod
        def loads(text):
            raise MemoryError("memory allocation failed")

    c, j, it = _setup()
    real = intake_mod.json
    intake_mod.json = FailingJson
    try:
        obj = await _rejected(_cmd(), "E_BUSY", id="c-1")
    finally:
        intake_mod.json = real
    assert "send it again later" in obj["error"]["message"]
