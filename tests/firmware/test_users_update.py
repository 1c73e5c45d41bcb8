# Key rotation and revocation by a signed users update (ppmid.relay.users_update): the
# gateway checks the operator's P-256 signature, the gateway, the sequence (a replay is
# refused), unwraps new keys with its config key, writes keys then config (.tmp, rename)
# and swaps the relay's senders with no reboot. The offers are fixed vectors
# (users_vectors.py). CPython and MicroPython.
# mp-heapsize: 448K
# (384K, session 13 (w6): the rotation test's third update found no free stretch of 2,672
# bytes for the P-256 check (check_signature) after the tests that sort before it, at 368K
# to 400K depending on the layout alone: the checkout's path length (/work/main vs
# /work/w6), and at 368K on the branch's base too; 416K and 448K passed every layout tried.
# The module's thirteen tests share one interpreter, each with its own rigs)
# (320K failed once in CI: the fourth update of the rotation test ended in an error that was
# not a refusal, most likely a MemoryError, after the offer reader
# grew ppmid.update.manifest, which verify_signed loads: a 64-bit heap; docs/memory.md "Fragmentation")
# (a relay rig on its flash plus the P-256 check's big integers: at 256K the first rig of
# the module finds the heap too fragmented on the 64-bit unix port; the gateway's own
# figure is the 32-bit heap gauge, bench/run.py heap32)
import json
import os

from ppmid import config as C
from ppmid.errors import PpmidError
from ppmid.relay import users_update as UU
from test_relay_support import FlashBoard, RecordingLink, Rig, ESME, GSME, PPMID, SUPPLIER, KEY, config, fresh_root, read_file, write_file
from test_relay_support import fresh_signature_limits
from update_vectors import PUBLIC
import users_vectors as V

OTHER_ORIG = "90B3D51F30020000"
OLD_KEY = b"s" * 32
SUP = {"role": "supplier", "originators": [SUPPLIER]}


def _gateway(config_key=V.CONFIG_KEY):
    """A gateway flash: config with one supplier key (legacy key off), the update key."""
    fresh_signature_limits()
    root = fresh_root()
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    write_file(root + "/secrets/users/supplier-a.key", OLD_KEY)
    write_file(root + "/secrets/config.key", config_key)
    cfg = {"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]},
           "update": {"public_key": PUBLIC},
           "users": {"keys": {"supplier-a": SUP}, "roles": {"supplier": "prepay"}, "legacy_key": False}}
    write_file(root + "/config.json", json.dumps(cfg).encode())
    from ppmid.relay.senders import load
    senders = load(root, C.validate(cfg)["users"], KEY)
    rig = Rig(root=root, cfg=config(), senders=senders, admit_wait_ms=150)  # one flash for both
    return root, rig


async def _push(root, rig, name, oid="u1", text=None, infos=None):
    # infos: a list that gets each info the update republished (the relay's part)
    link = RecordingLink(PPMID, rig.relay.info)
    await UU.handle((FlashBoard(root), rig.relay, link, "0.1.0"), "ppmid/v1/%s/update/config" % PPMID,
                    V.offer(name, oid, text))
    topic, st, retained = link.client.sent[-1]
    assert topic == "ppmid/v1/%s/update" % PPMID and not retained and st["kind"] == "config" and st.get("id") == oid, st
    # an applied update has the retained info follow (its "auth"), before the status, and
    # once more after it, paced (the link's info_follow)
    info = [m for t, m, ret in link.client.sent[:-1] if t == "ppmid/v1/%s/info" % PPMID and ret]
    assert len(link.client.sent) == 1 + len(info) and len(info) == (st["state"] == "applied"), link.client.sent
    assert link.follows == (st["state"] == "applied"), link.follows
    assert link.client.waited == [], link.client.waited   # a handler waits for no PUBACK
    if infos is not None:
        infos.extend(info)
    return st


async def test_rotation_new_key_works_old_refused_and_a_replay_is_refused():
    root, r = _gateway()
    assert (await r.submit("a1", 10, key=OLD_KEY, kid="supplier-a"))["status"] == "accepted"
    before = read_file(root + "/config.json")
    st = await _push(root, r, "rotate")
    assert st["state"] == "applied" and st["sequence"] == 1 and st["keys"] == 2, st
    assert read_file(root + "/secrets/users/supplier-a.key") == V.ROTATED
    assert read_file(root + "/secrets/users/eng-2.key") == V.NEW_ENG
    assert json.loads(read_file(root + "/config.json"))["users"]["sequence"] == 1
    assert not [n for n in os.listdir(root) + os.listdir(root + "/secrets/users") if n.endswith(".tmp")]
    # no reboot: the relay holds the new senders at once
    assert (await r.submit("a2", 11, key=V.ROTATED, kid="supplier-a"))["status"] == "accepted"
    assert (await r.submit("a3", 12, key=OLD_KEY, kid="supplier-a"))["error"] == "E_AUTH"
    assert (await r.submit("a4", 12, key=OLD_KEY))["error"] == "E_AUTH"   # no kid: tried with every key
    assert (await r.submit("e1", 12, key=V.NEW_ENG, kid="eng-2", originator=OTHER_ORIG,
                           code=0x0059))["status"] == "accepted"
    # a1 is still supplier-a's under the new keys: another sender naming it is refused
    # (review_w6-1), its owner's redelivery gets its status
    out = await r.submit("a1", 14, key=V.NEW_ENG, kid="eng-2", originator=OTHER_ORIG, code=0x0059)
    assert out["error"] == "E_ID" and "another sender" in out["message"], out
    assert (await r.submit("a1", 10, key=V.ROTATED, kid="supplier-a")).get("again") is True
    # the same update again (a replay), refused; nothing changed
    after = read_file(root + "/config.json")
    assert after != before
    st = await _push(root, r, "rotate", "u2")
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_REPLAY", st
    assert read_file(root + "/config.json") == after
    # revocation: E_REVOKED from then on, with or without a kid
    st = await _push(root, r, "revoke", "u3")
    assert st["state"] == "applied" and st["sequence"] == 2
    assert (await r.submit("a5", 13, key=V.ROTATED, kid="supplier-a"))["error"] == "E_REVOKED"
    assert (await r.submit("a6", 13, key=V.ROTATED))["error"] == "E_REVOKED"
    # an older update after a newer one: a replay too
    assert (await _push(root, r, "rotate", "u4"))["error"]["code"] == "E_CONFIG_REPLAY"
    assert (await r.submit("a7", 13, key=V.ROTATED, kid="supplier-a"))["error"] == "E_REVOKED"
    assert sorted(r.journal.by_id) == ["a1", "a2", "e1"]


async def test_refusals_leave_the_gateway_as_it_was():
    root, r = _gateway()
    before = read_file(root + "/config.json")
    cases = [("wrong-key", None, "E_CONFIG_SIGNATURE"),
             ("rotate", V.SIGNED["rotate"][0].replace('"sequence":1', '"sequence":9'), "E_CONFIG_SIGNATURE"),
             ("other-gateway", None, "E_CONFIG_GATEWAY"),
             ("wrong-config-key", None, "E_CONFIG_KEY"),
             ("undefined-role", None, "E_CONFIG"),
             ("stray-key", None, "E_CONFIG_UPDATE"),
             ("unknown-user-no-key", None, "E_CONFIG_UPDATE"),
             ("extra-field", None, "E_CONFIG_UPDATE")]   # a field no users update has
    for i, (name, text, code) in enumerate(cases):
        st = await _push(root, r, name, "r%d" % i, text)
        assert st["state"] == "refused" and st["error"]["code"] == code, (name, st)
        assert st["error"]["message"]
    assert read_file(root + "/config.json") == before
    assert read_file(root + "/secrets/users/supplier-a.key") == OLD_KEY
    assert sorted(os.listdir(root + "/secrets/users")) == ["supplier-a.key"]
    assert (await r.submit("a1", 10, key=OLD_KEY, kid="supplier-a"))["status"] == "accepted"


async def test_malformed_offers_and_a_gateway_without_a_config_key():
    root, r = _gateway()
    for i, payload in enumerate((b"not json", b"[]", b'{"config": 1, "signature": "00"}',
                                 b'{"config": "{}", "signature": "zz"}')):
        link = RecordingLink(PPMID)
        await UU.handle((FlashBoard(root), r.relay, link, "0.1.0"), "t", payload)
        st = link.client.sent[-1][1]
        assert st["state"] == "refused" and st["error"]["code"] in ("E_CONFIG_OFFER", "E_CONFIG_SIGNATURE"), st
    os.remove(root + "/secrets/config.key")
    st = await _push(root, r, "rotate")
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_KEY" and "config.key" in st["error"]["message"]
    # the update key missing from the config: every users update refused
    cfg = json.loads(read_file(root + "/config.json"))
    del cfg["update"]
    write_file(root + "/config.json", json.dumps(cfg).encode())
    assert (await _push(root, r, "revoke"))["error"]["code"] == "E_UPDATE_NO_KEY"


def test_unwrap_is_the_inverse_of_the_hosts_wrap():
    # the rotate vector's wrapped keys, made by host_tools.users_update.wrap
    doc = json.loads(V.SIGNED["rotate"][0])
    assert UU.unwrap(V.CONFIG_KEY, "supplier-a", doc["new_keys"]["supplier-a"]) == V.ROTATED
    assert UU.unwrap(V.CONFIG_KEY, "eng-2", doc["new_keys"]["eng-2"]) == V.NEW_ENG
    # a wrapped key moved to another name does not unwrap
    try:
        UU.unwrap(V.CONFIG_KEY, "eng-2", doc["new_keys"]["supplier-a"])
        raise AssertionError("unwrapped under another name")
    except UU.ConfigUpdateError as exc:
        assert exc.code == "E_CONFIG_KEY"


def test_a_write_that_fails_refuses_the_update_and_changes_nothing():
    # the config's .tmp name taken by a directory: its write fails after the key files were
    # written (littlefs keeps files this small inline, so a filled flash still takes them)
    root = fresh_root()
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    write_file(root + "/secrets/users/supplier-a.key", OLD_KEY)
    write_file(root + "/secrets/config.key", V.CONFIG_KEY)
    cfg = {"gateway": PPMID, "update": {"public_key": PUBLIC},
           "users": {"keys": {"supplier-a": SUP}, "roles": {"supplier": "prepay"}, "legacy_key": False}}
    write_file(root + "/config.json", json.dumps(cfg).encode())
    before = read_file(root + "/config.json")
    os.mkdir(root + "/config.json.tmp")
    try:
        UU.apply(root, V.offer("rotate"), KEY)
        raise AssertionError("applied although the config could not be written")
    except UU.ConfigUpdateError as exc:
        assert exc.code == "E_CONFIG_FLASH" and exc.oid == "u1", exc
    assert read_file(root + "/config.json") == before
    assert sorted(os.listdir(root + "/secrets/users")) == ["supplier-a.key"]   # the staged keys removed
    assert read_file(root + "/secrets/users/supplier-a.key") == OLD_KEY


async def test_an_update_registers_a_public_key_user_with_no_key_file():
    # a DCC User added by its P-256 public key (p256_envelope_vectors): nothing to unwrap,
    # no key file; its signed envelopes work at once, its old-style mac does not
    import binascii
    from ppmid import envelope
    from test_relay_support import gbcs_message
    import p256_envelope_vectors as PV
    root, r = _gateway()
    st = await _push(root, r, "add-public-key")
    assert st["state"] == "applied" and st["keys"] == 2, st
    assert PV.KID + ".key" not in os.listdir(root + "/secrets/users")
    assert json.loads(read_file(root + "/config.json"))["users"]["keys"][PV.KID]["public_key"] == PV.PUBLIC
    obj = {"id": "p1", "gbcs": binascii.b2a_base64(gbcs_message(1, 10, SUPPLIER, ESME)).decode().strip(),
           "mac": PV.GOOD, "kid": PV.KID}
    assert (await r.accept_env(envelope.from_json_obj(obj, 4096)))["status"] == "accepted"
    assert (await r.submit("p2", 11, key=OLD_KEY, kid=PV.KID))["error"] == "E_AUTH"


async def test_an_off_curve_public_key_is_refused_before_anything_is_written():
    # well-formed (130 hex digits from 04) but no point of P-256: applied, it would make
    # the next boot a config error that no remote update can mend
    from ppmid.relay.senders import load
    root, r = _gateway()
    before = read_file(root + "/config.json")
    st = await _push(root, r, "off-curve-key")
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_UPDATE", st
    assert "public_key" in st["error"]["message"] and "point" in st["error"]["message"], st
    assert read_file(root + "/config.json") == before
    assert not [n for n in os.listdir(root) + os.listdir(root + "/secrets/users") if n.endswith(".tmp")]
    # what the next boot does with the config on flash (boot._load_config): it still loads
    assert load(root, C.validate(json.loads(before))["users"], KEY).senders[0][0] == "supplier-a"
    assert (await r.submit("a1", 10, key=OLD_KEY, kid="supplier-a"))["status"] == "accepted"
    # the update key's sequence is not used up: a good update with sequence 1 still applies
    assert (await _push(root, r, "add-public-key", "u2"))["state"] == "applied"


async def test_a_key_file_of_the_wrong_length_is_refused_before_anything_is_written():
    root, r = _gateway()
    write_file(root + "/secrets/users/supplier-a.key", b"short")
    before = read_file(root + "/config.json")
    st = await _push(root, r, "duis-role")  # supplier-a's key is on flash, but 5 bytes
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_UPDATE", st
    assert read_file(root + "/config.json") == before


async def test_a_duis_role_update_leaves_no_code_table_on_the_heap():
    # eligibility.codes imports the message-code table; the boot drops it (BOOT_ONLY), so
    # must a users update applied at run time
    import sys
    root, r = _gateway()
    for name in ("ppmid.gbcs.codes", "ppmid.gbcs.profiles"):
        sys.modules.pop(name, None)
    st = await _push(root, r, "duis-role")
    assert st["state"] == "applied", st
    assert "ppmid.gbcs.codes" not in sys.modules and "ppmid.gbcs.profiles" not in sys.modules
    assert "ppmid.gbcs.eligibility" not in sys.modules
    assert (await r.submit("a1", 10, key=OLD_KEY, kid="supplier-a"))["error"] == "E_ROLE"  # a top-up: no gas role


async def test_every_sender_removed_with_the_legacy_key_off_refuses_every_command():
    # review r2 R2-2: a users section with no keys and legacy_key false (`ppmid users push
    # --remove` of the last sender, a lockdown) left the relay without senders, and so took
    # the gateway's single key again, with no role or originator limit, now and at each boot
    from ppmid.relay.senders import NONE_REGISTERED
    root, r = _gateway()
    assert (await r.submit("l1", 10, key=KEY))["error"] == "E_AUTH"
    assert "auth" not in r.relay.info()   # a key in use: nothing said
    infos = []
    st = await _push(root, r, "lockdown", infos=infos)
    assert st["state"] == "applied" and st["sequence"] == 1 and st["keys"] == 0, st
    # the retained info says so at once (a field team sees why every command is refused)
    assert [i.get("auth") for i in infos] == ["locked"] and r.relay.info()["auth"] == "locked", infos
    assert json.loads(read_file(root + "/config.json"))["users"]["keys"] == {}
    assert [n for n in r.logs if NONE_REGISTERED in n], r.logs
    for kw in ({"key": KEY}, {"key": KEY, "originator": OTHER_ORIG, "code": 0x0059},
               {"key": OLD_KEY, "kid": "supplier-a"}, {"key": OLD_KEY}):
        out = await r.submit("l2", 11, **kw)
        assert out["error"] == "E_AUTH" and out["message"] == NONE_REGISTERED, (kw, out)
    assert r.journal.by_id == {}
    # the next boot reads the same from the config on flash (boot._load_config)
    from ppmid.mqtt import credentials as K
    os.mkdir(root + "/certs")
    for path in (K.CA, K.CERT, K.KEY):
        write_file(root + path, b"x")
    write_file(root + K.ENVELOPE_KEY, KEY)
    from ppmid import boot
    senders = boot._load_config(FlashBoard(root))[2]
    try:
        senders.verify(r.env("l3", 12))
        raise AssertionError("the legacy key accepted after a boot")
    except PpmidError as exc:
        assert exc.code == "E_AUTH" and exc.message == NONE_REGISTERED
    # no keys with the legacy key on: no senders, the relay checks that key alone
    from ppmid.relay.senders import load
    assert load(root, {"keys": {}, "roles": {}, "legacy_key": True, "sequence": 0}, KEY) is None


async def test_a_log_line_that_fails_after_the_swap_leaves_the_update_applied():
    # review r7-2: once the relay holds the new senders the update is in force; a line
    # after the swap that fails (a MemoryError in relay.log on a cut-up heap) once turned
    # the status into "refused" E_CONFIG_INTERNAL and skipped the info, on a gateway that
    # then refused every command
    from ppmid.relay.senders import NONE_REGISTERED
    root, r = _gateway()
    real = r.relay.log

    def log(level, msg):
        if NONE_REGISTERED in msg:
            raise MemoryError("memory allocation failed")
        return real(level, msg)

    r.relay.log = log
    infos = []
    st = await _push(root, r, "lockdown", infos=infos)
    assert st["state"] == "applied" and st["sequence"] == 1 and st["keys"] == 0 and "error" not in st, st
    assert [i.get("auth") for i in infos] == ["locked"], infos
    assert (await r.submit("l1", 10, key=OLD_KEY, kid="supplier-a"))["error"] == "E_AUTH"
    # a failure before the swap is still a refusal, and the relay keeps its senders
    root, r = _gateway()

    class Unowned:
        # new senders that cannot take the owners (a MemoryError), before the swap
        senders = ["x"]

        def __setattr__(self, name, value):
            raise MemoryError("memory allocation failed")

    from ppmid.relay import senders as S
    real_load = S.load
    S.load = lambda *a: Unowned()
    try:
        st = await _push(root, r, "rotate")
    finally:
        S.load = real_load
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_INTERNAL" and "sequence" not in st, st
    assert (await r.submit("a1", 10, key=OLD_KEY, kid="supplier-a"))["status"] == "accepted"


async def test_an_info_that_cannot_be_built_does_not_stop_the_updates_status():
    # the update is applied: its status goes even when the info republished after it fails
    root, r = _gateway()

    def broken():
        raise MemoryError("info")

    link = RecordingLink(PPMID, broken)
    await UU.handle((FlashBoard(root), r.relay, link, "0.1.0"), "ppmid/v1/%s/update/config" % PPMID,
                    V.offer("lockdown", "u1"))
    assert [(t, m["state"]) for t, m, ret in link.client.sent] == [("ppmid/v1/%s/update" % PPMID, "applied")]
    assert r.relay.info()["auth"] == "locked"
    assert link.follows == 1   # tried again after the status, paced (its failure is info_follow's to log)


class _QueueLink:
    # a link whose client is the real MQTTClient, offline: what is queued stays in its _queue
    def __init__(self, info):
        from ppmid.mqtt.client import MQTTClient
        from ppmid.mqtt.contract import Topics
        self.client = MQTTClient(PPMID, None)   # no connector: never connects
        self.topics = Topics(PPMID)
        self.info = info
        self.follows = 0

    def __call__(self, *_):
        self.follows += 1


async def test_the_updates_status_never_loses_its_place_in_the_queue_to_the_info():
    # review r7-1: with one place left in the client's queue (16), the info published ahead
    # of the status took it and the status was dropped: `ppmid users push` never heard, and
    # the same update again is a replay. Now the info goes ahead only with room for both;
    # else the status goes and the info follows, paced and waited for (info_follow)
    import gc
    from ppmid.mqtt import client  # noqa: F401 - compiled before the rigs take the heap (384K)
    for taken, ahead in ((13, True), (14, True), (15, False)):
        gc.collect()
        root, r = _gateway()
        link = _QueueLink(r.relay.info)
        c = link.client
        for i in range(taken):   # statuses and rejections waiting for their PUBACK
            assert await c.publish("ppmid/v1/%s/rsp" % PPMID, b"{}", 1, False, False)
        await UU.handle((FlashBoard(root), r.relay, link, "0.1.0"), "ppmid/v1/%s/update/config" % PPMID,
                        V.offer("lockdown", "u1"))
        mine = [(m[0].rsplit("/", 1)[-1], m[3], json.loads(m[1])) for m in c._queue[taken:]]
        assert [(t, ret) for t, ret, m in mine] == [("info", True)] * ahead + [("update", False)], (taken, mine)
        assert mine[-1][2]["state"] == "applied" and mine[-1][2]["id"] == "u1", mine
        assert not ahead or mine[0][2]["auth"] == "locked", mine
        assert link.follows == 1, (taken, link.follows)
        assert c.stats[2] == 0, c.stats   # nothing dropped (mqtt/client.py _C_DROPS)
