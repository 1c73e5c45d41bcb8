# Keys per DCC User with roles (ppmid.relay.senders, config users.*, senders.load): the
# relay takes the sender from the key whose MAC verifies, then checks the GBCS originator
# and the message code against that sender's registration. CPython and MicroPython.
import os
from ppmid import config as C
from ppmid.errors import ConfigError
from test_relay_support import Rig, KEY, ESME, GSME, PPMID, SUPPLIER, config, fresh_root
from ppmid.relay.report import named

OTHER_ORIG = "90B3D51F30020000"
SUPPLIER_KEY = b"s" * 32
ENGINEER_KEY = b"e" * 32
OLD_KEY = b"o" * 32


def _users(legacy=True):
    return {"keys": {"supplier-a": {"role": "supplier", "originators": [SUPPLIER]},
                     "eng-1": {"role": "engineer", "originators": [SUPPLIER, OTHER_ORIG]},
                     "old": {"role": "supplier", "originators": [SUPPLIER], "revoked": True}},
            "roles": {"supplier": "prepay", "engineer": [0x0059]},
            "legacy_key": legacy}


def _write_keys(root):
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    for name, key in (("supplier-a", SUPPLIER_KEY), ("eng-1", ENGINEER_KEY), ("old", OLD_KEY)):
        with open(root + "/secrets/users/" + name + ".key", "wb") as f:
            f.write(key)


def _rig(legacy=True, **kw):
    from ppmid.relay import senders as S
    cfg = config(**kw)
    cfg["gateway"] = PPMID
    cfg["han"] = {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]}
    cfg["users"] = _users(legacy)
    cfg = C.validate(cfg)
    root = fresh_root()
    _write_keys(root)
    senders = S.load(root, cfg["users"], KEY)
    return Rig(cfg=cfg, senders=senders, admit_wait_ms=150)


async def test_each_sender_is_held_to_its_originators_and_role():
    r = _rig()
    # the supplier's key, its own originator, a prepay code: accepted
    assert (await r.submit("s1", 10, key=SUPPLIER_KEY, code=0x0007))["status"] == "accepted"
    # the supplier's key, an originator it was not registered for
    out = await r.submit("s2", 10, key=SUPPLIER_KEY, originator=OTHER_ORIG, code=0x0007)
    assert out["error"] == "E_ORIGINATOR" and "supplier-a" in out["message"]
    # a code outside the supplier role (prepay): ECS43 open the load switch
    assert (await r.submit("s3", 11, key=SUPPLIER_KEY, code=0x0050))["error"] == "E_ROLE"
    # the engineer may send ECS52 as either originator, and nothing else
    assert (await r.submit("e1", 10, key=ENGINEER_KEY, originator=OTHER_ORIG, code=0x0059))["status"] == "accepted"
    assert (await r.submit("e2", 12, key=ENGINEER_KEY, code=0x0007))["error"] == "E_ROLE"
    # a revoked key, an unknown key
    assert (await r.submit("o1", 13, key=OLD_KEY, code=0x0007))["error"] == "E_REVOKED"
    assert (await r.submit("x1", 13, key=b"x" * 32, code=0x0007))["error"] == "E_AUTH"
    # the gateway's single key keeps working (legacy_key true): no role or originator limit
    assert (await r.submit("l1", 11, key=KEY, originator=OTHER_ORIG, code=0x0050))["status"] == "accepted"
    # nothing refused reached the HAN queue: only the three accepted commands are live
    assert sorted(r.journal.by_id) == ["e1", "l1", "s1"]


async def test_legacy_key_refused_when_turned_off():
    r = _rig(legacy=False)
    assert (await r.submit("l1", 10, key=KEY))["error"] == "E_AUTH"
    assert (await r.submit("s1", 10, key=SUPPLIER_KEY))["status"] == "accepted"


def test_bad_users_config_refused():
    base = {"gateway": PPMID}
    bad = [
        {"keys": {"a": {"role": "nope", "originators": [SUPPLIER]}}, "roles": {}},
        {"keys": {"a": {"role": "r", "originators": []}}, "roles": {"r": "all"}},
        {"keys": {"a": {"role": "r", "originators": ["XYZ"]}}, "roles": {"r": "all"}},
        {"keys": {"a b": {"role": "r", "originators": [SUPPLIER]}}, "roles": {"r": "all"}},
        {"keys": {"a": {"role": "r", "originators": [SUPPLIER], "extra": 1}}, "roles": {"r": "all"}},
        {"keys": {"a": {"role": "r", "originators": [SUPPLIER], "revoked": "yes"}}, "roles": {"r": "all"}},
        {"keys": {}, "roles": {"r": "prepaid"}},
        {"keys": {}, "roles": {"r": [70000]}},
        {"keys": {}, "roles": {}, "legacy_key": 1},
    ]
    for u in bad:
        cfg = dict(base)
        cfg["users"] = u
        try:
            C.validate(cfg)
            raise AssertionError("accepted %r" % (u,))
        except ConfigError as exc:
            assert "users" in exc.message


def test_missing_or_short_user_key_is_a_config_error():
    from ppmid.relay.senders import load
    cfg = C.validate({"gateway": PPMID, "users": _users()})
    root = fresh_root()
    try:
        load(root, cfg["users"], KEY)
        raise AssertionError("no key files, accepted")
    except ConfigError as exc:
        assert "missing" in exc.message
    _write_keys(root)
    with open(root + "/secrets/users/eng-1.key", "wb") as f:
        f.write(b"short")
    try:
        load(root, cfg["users"], KEY)
        raise AssertionError("short key accepted")
    except ConfigError as exc:
        assert "32 bytes" in exc.message
    # a revoked key needs no file (it is refused before any mac is computed)
    import os
    os.remove(root + "/secrets/users/old.key")
    with open(root + "/secrets/users/eng-1.key", "wb") as f:
        f.write(ENGINEER_KEY)
    assert [s[4] for s in load(root, cfg["users"], KEY).senders if s[0] == "old"] == [True]


async def test_a_users_command_waits_for_queue_room_like_any_other():
    # the relay's wait for queue room (not E_BUSY at once) checks the MAC with the same
    # keys as acceptance: a DCC User's own key waits, a forged envelope does not
    r = _rig(legacy=False, queue=1)   # no dispatch task: the queue stays full
    assert (await r.submit("s1", 10, key=SUPPLIER_KEY))["status"] == "accepted"
    assert (await r.submit("s2", 11, key=SUPPLIER_KEY))["error"] == "E_BUSY"
    assert named(r.relay.counters)["admit_waits"] == 1
    assert (await r.submit("x1", 12, key=b"x" * 32))["error"] == "E_AUTH"
    assert named(r.relay.counters)["admit_waits"] == 1


async def test_an_envelope_naming_its_key_is_checked_with_that_key_only():
    r = _rig()
    # named: its own key, accepted and held to its registration as before
    assert (await r.submit("k1", 10, key=SUPPLIER_KEY, kid="supplier-a", code=0x0007))["status"] == "accepted"
    assert (await r.submit("k2", 11, key=SUPPLIER_KEY, kid="supplier-a", code=0x0050))["error"] == "E_ROLE"
    # a kid nobody registered: E_AUTH naming it
    out = await r.submit("k3", 11, key=SUPPLIER_KEY, kid="mallory", code=0x0007)
    assert out["error"] == "E_AUTH" and "mallory" in out["message"]
    # the engineer's key under the supplier's name: only the named key is tried
    out = await r.submit("k4", 11, key=ENGINEER_KEY, kid="supplier-a", code=0x0059)
    assert out["error"] == "E_AUTH" and "supplier-a" in out["message"]
    # the legacy key with a kid: the kid decides, so not the legacy key's free pass
    assert (await r.submit("k5", 11, key=KEY, kid="supplier-a", originator=OTHER_ORIG))["error"] == "E_AUTH"
    # a revoked key named: E_REVOKED, whatever the mac
    assert (await r.submit("k6", 11, key=OLD_KEY, kid="old"))["error"] == "E_REVOKED"
    assert (await r.submit("k7", 11, key=b"x" * 32, kid="old"))["error"] == "E_REVOKED"
    assert sorted(r.journal.by_id) == ["k1"]


async def test_a_kid_on_a_gateway_without_keys_per_user_is_e_auth():
    from test_relay_support import Rig
    r = Rig()
    out = await r.submit("n1", 10, kid="supplier-a")
    assert out["error"] == "E_AUTH" and "supplier-a" in out["message"]
    assert (await r.submit("n2", 10))["status"] == "accepted"


def test_a_roles_codes_are_held_ascending_once_each():
    # memory (docs/memory.md, session 10): a sender's role codes are an ascending array('H')
    # looked up by bisection (gbcs.validate.admits), whatever kind of role names them
    from ppmid.relay import senders
    from ppmid.gbcs import profiles
    from ppmid.modules import unload
    users = {"roles": {"list": [0x0059, 0x0007, 0x0059], "prepay": "prepay", "supplier": "duis:IS", "any": "all"}}

    def codes(role):
        return senders._codes(users, {"role": role}, profiles)

    assert list(codes("list")) == [0x0007, 0x0059]
    assert list(codes("prepay")) == sorted(profiles.codes("prepay"))
    is_codes = codes("supplier")
    from ppmid.gbcs import eligibility
    try:
        assert list(is_codes) == sorted(eligibility.codes("IS")) and len(is_codes) > 100
    finally:
        unload("ppmid.gbcs.eligibility", "ppmid.gbcs.codes")
    assert codes("any") is None
    # and the role's checks read them so: its first and last code pass, a code between
    # two and one above all are E_ROLE; a top-up needs PECS01 (0x0116) in the role
    class Msg:  # what check() reads of a decoded message
        def __init__(self, code):
            self.originator = bytes(8)
            self.message_code = code

    s = senders.Senders(None, [])
    sender = ("u", bytes(32), {bytes(8)}, codes("list"), False)
    for code, ok in ((0x0007, True), (0x0059, True), (0x0008, False), (0x0116, False)):
        try:
            s.check(sender, Msg(code))
        except senders.SenderError as exc:
            assert exc.code == "E_ROLE" and not ok, (code, exc.code)
        else:
            assert ok, code
    try:
        s.check_topup(sender)
    except senders.SenderError as exc:
        assert exc.code == "E_ROLE"
    else:
        raise AssertionError("a top-up outside the role passed")
    s.check_topup(("p", bytes(32), {bytes(8)}, codes("prepay"), False))  # prepay holds PECS01


def test_the_info_says_a_locked_down_gateway():
    # every envelope refused (no key of a DCC User in use, the legacy key off: review r2
    # R2-2): the info payload says "auth": "locked", and says nothing otherwise
    from ppmid.relay import senders as S
    root = fresh_root()
    _write_keys(root)

    def auth(users):
        cfg = config()
        cfg["gateway"] = PPMID
        cfg["han"] = {"devices": [{"eui": ESME, "type": "ESME"}]}
        cfg["users"] = users
        return Rig(cfg=cfg, senders=S.load(root, C.validate(cfg)["users"], KEY)).relay.info().get("auth")

    revoked = {"role": "supplier", "originators": [SUPPLIER], "revoked": True}
    roles = {"supplier": "prepay"}
    assert auth({"keys": {}, "roles": roles, "legacy_key": False}) == "locked"
    assert auth({"keys": {"old": revoked}, "roles": roles, "legacy_key": False}) == "locked"
    assert auth({"keys": {}, "roles": roles, "legacy_key": True}) is None            # the legacy key alone
    assert auth({"keys": {"old": revoked}, "roles": roles, "legacy_key": True}) is None
    assert auth(_users(legacy=False)) is None                                        # supplier-a in use
    assert auth(_users(legacy=True)) is None
