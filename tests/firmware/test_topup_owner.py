# Who gets a top-up's figures (the meter's Consumer Top Up Response: value, credit) when an
# id is delivered again (review_w6-1, -4). Only the accept that journaled a top-up earns
# them (a redelivery's bytes prove possession, not ownership: a tag is readable by any
# phone); with keys per DCC User, an id is the sender's whose accept journaled it: another
# sender's envelope naming it is refused E_ID, before its status is answered, on every
# road. Over the real relay, flash journal, top-up road, NFC phone session and wired road
# with the relay tests' fakes. CPython and MicroPython.
# mp-heapsize: 512K
import binascii
import os
import struct

from test_topup import Meter, TopupHan, make, rig, ESME_NWK, KEY
from test_relay_support import Rig, ESME, GSME, PPMID, SUPPLIER, fresh_root
from ppmid import topup, envelope
from ppmid.clock import sleep_ms
from ppmid.zigbee import prepayment as P

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

SUPPLIER_KEY = b"s" * 32
SUPPLIER_B_KEY = b"b" * 32
ENGINEER_KEY = b"e" * 32


def _users():
    return {"keys": {"supplier-a": {"role": "supplier", "originators": [SUPPLIER]},
                     "supplier-b": {"role": "supplier", "originators": [SUPPLIER]},
                     "eng-1": {"role": "engineer", "originators": [SUPPLIER]}},
            "roles": {"supplier": "all", "engineer": [0x0059]},   # eng-1: no top-ups
            "legacy_key": False}


def _senders(r):
    from ppmid.relay import senders as S
    return S.load(r.root, r.cfg["users"], KEY)


def _users_rig(meter):
    from ppmid import config as C
    cfg = C.validate({"gateway": PPMID, "han": {"devices": [
        {"eui": ESME, "type": "ESME", "nwk": ESME_NWK, "endpoint": 9},
        {"eui": GSME, "type": "GSME"}]}, "users": _users()})
    root = fresh_root()
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    for name, key in (("supplier-a", SUPPLIER_KEY), ("supplier-b", SUPPLIER_B_KEY), ("eng-1", ENGINEER_KEY)):
        with open(root + "/secrets/users/" + name + ".key", "wb") as f:
            f.write(key)
    from ppmid.relay import senders as S
    return Rig(root=root, cfg=cfg, senders=S.load(root, cfg["users"], KEY), han=TopupHan(meter))


async def _phone(r, id, mode, env_bytes=b""):
    # an NFC phone session on the relay -> (outcome, the RESULT the phone got or None, the
    # STATUS APDUs it got)
    from ppmid.nfc import phone
    from test_nfc_session import FakeDriver
    drv = FakeDriver(env_bytes, id)
    ident = id.encode()
    hello = struct.pack(">BBIIB", 1, mode, len(env_bytes), binascii.crc32(env_bytes) & 0xFFFFFFFF, len(ident)) + ident
    s = phone.PhoneSession(drv, 1, r.relay, 8192, session_ms=300, poll_ms=5, keepalive_ms=50)
    task = asyncio.create_task(s.run(hello))
    for _ in range(40):          # the relay's dispatch while the phone waits for the result
        await _pump(r)
        await sleep_ms(5)
    o = await task
    return o, drv.result, drv.statuses


async def _pump(r):
    # the relay's dispatch, and its publishing unless the broker is down (r.pub.down)
    while await r.relay.dispatch_once() == 0:
        pass
    if not r.pub.down:
        await r.publish_all()


def _head_status(result):
    return result["head"][0]


async def _answered(r, via, id="t-cust-1", value=250):
    env = topup.sign(SUPPLIER_KEY, id, make(value=value), ESME, None, "supplier-a")
    assert (await r.accept_env(env, via))["status"] == "accepted"
    await _pump(r)
    assert r.relay.status(id) == "topped-up"
    return env


def _foreign(key, kid, id):
    # another sender's own envelope naming the id: any GBCS, never validated for a known id
    return envelope.to_binary(envelope.sign(key, id, b"\x00\x01\x02", None, kid))


async def test_another_users_envelope_naming_a_top_ups_id_is_refused_by_phone():
    for via in ("nfc-phone", "nfc-tag", "mqtt", "serial"):
        r = _users_rig(Meter(credit=73421))
        r.pub.down = True   # the WAN down: the journal keeps the top-up for the broker
        await _answered(r, via)
        for key, kid in ((ENGINEER_KEY, "eng-1"), (SUPPLIER_B_KEY, "supplier-b")):
            o, result, statuses = await _phone(r, "t-cust-1", 1, _foreign(key, kid, "t-cust-1"))
            assert result is None, (via, kid, result)     # no RESULT: neither figures nor status
            assert o["outcome"] == "rejected" and o["code"] == "E_ID", (via, kid, o)
            assert statuses[-1][0] == 0x6A80 and bytes(statuses[-1][1]).startswith(b"E_ID\x00")   # told why
        # nothing of supplier-a's was consumed or overwritten
        assert r.relay.status("t-cust-1") == "topped-up"
        if via == "nfc-phone":
            assert "t-cust-1" in r.journal.by_id     # still waits for its MQTT copy


async def test_another_users_envelope_naming_a_top_ups_id_is_refused_on_the_wire():
    from test_wired_road import _road
    from ppmid.wired import frames as F
    for via in ("nfc-tag", "mqtt"):
        r = _users_rig(Meter(credit=73421))
        await _answered(r, via, "t-w")
        road, wire = _road(r)
        await road.feed(F.encode(F.T_ENVELOPE, 1, _foreign(ENGINEER_KEY, "eng-1", "t-w")))
        for id in list(road.watched):
            await road._follow(id)
        got = wire.frames()
        assert not [f for f in got if f[0] == F.T_RESULT], (via, got)
        assert road.stats["refused"] == 1 and road.stats["accepted"] == 0


async def test_the_owner_redelivering_its_id_gets_its_status():
    r = _users_rig(Meter(credit=100))
    env = await _answered(r, "mqtt", "t-own")
    out = await r.accept_env(env, "mqtt")
    assert out == {"id": "t-own", "status": "topped-up", "again": True}
    # and a foreign sender's refusal did not record a "rejected" over it
    await r.accept_env(envelope.sign(ENGINEER_KEY, "t-own", b"\x00", None, "eng-1"), "nfc-phone")
    assert r.relay.status("t-own") == "topped-up"
    assert r.pub.statuses("t-own")[-1] == "topped-up"


async def test_after_a_restart_an_unknown_owner_leaves_the_role_check_and_the_status_alone():
    # owners are RAM: after a restart, a sender without the top-up role is refused (E_ROLE)
    # before the status; one with it gets the status alone, by phone too (no figures)
    r = _users_rig(Meter(credit=73421))
    r.pub.down = True
    await _answered(r, "nfc-tag", "t-r")
    r.kw["senders"] = _senders(r)   # the boot loads them again
    r.restart()
    out = await r.accept_env(envelope.sign(ENGINEER_KEY, "t-r", b"\x00\x01\x02", None, "eng-1"), "nfc-phone")
    assert (out["status"], out["error"]) == ("rejected", "E_ROLE")
    o, result, statuses = await _phone(r, "t-r", 1, _foreign(SUPPLIER_B_KEY, "supplier-b", "t-r"))
    assert o["outcome"] == "delivered" and _head_status(result) == 4    # topped-up
    assert bytes(result["data"]) == b""                                  # without the figures


async def test_a_skimmed_tag_replayed_by_phone_gets_the_status_alone():
    # one key (the legacy one): the tag's bytes verify, but the stranger's tap did not
    # journal the top-up; the tap that delivers a new one gets its figures
    r = rig(Meter(credit=73421))
    env = topup.sign(KEY, "tag-7", make(value=250), ESME)
    assert (await r.accept_env(env, "nfc-tag"))["status"] == "accepted"
    await r.pump()
    o, result, _ = await _phone(r, "tag-7", 1, topup.to_binary(env))
    assert o["outcome"] == "delivered" and _head_status(result) == 4
    assert bytes(result["data"]) == b"" and struct.unpack(">I", bytes(result["head"][1:5]))[0] == 0
    env2 = topup.to_binary(topup.sign(KEY, "ph-8", make(counter=2, value=100), ESME))
    o, result, _ = await _phone(r, "ph-8", 1, env2)
    assert _head_status(result) == 4 and P.parse_response(bytes(result["data"])).credit == 73421 + 250 + 100
    # the same phone tapping again with the same bytes: a redelivery, its status alone
    o, result, _ = await _phone(r, "ph-8", 1, env2)
    assert _head_status(result) == 4 and bytes(result["data"]) == b""


async def test_a_redelivered_top_up_on_the_wire_gets_the_status_alone():
    from test_wired_road import _road
    from ppmid.wired import frames as F
    r = rig(Meter(credit=1000))
    env = topup.sign(KEY, "t-tag", make(value=70), ESME)
    assert (await r.accept_env(env, "nfc-tag"))["status"] == "accepted"
    await r.pump()
    road, wire = _road(r)
    await road.feed(F.encode(F.T_ENVELOPE, 1, topup.to_binary(env)))
    for id in list(road.watched):
        await road._follow(id)
    res = [f[2] for f in wire.frames() if f[0] == F.T_RESULT]
    assert len(res) == 1 and res[0]["status"] == "topped-up" and not res[0].get("topup"), res


def test_the_owners_map_keeps_only_ids_the_relay_knows():
    class _Journal:
        by_id = {"live": object()}

    class _Relay:
        journal = _Journal()

        def _recent_result(self, id):
            return {"id": id} if id == "recent" else None

    from ppmid.relay.senders import Senders
    s = Senders(None, [])
    relay = _Relay()
    for id in ("gone-1", "live", "recent", "gone-2"):
        s.owners[id] = None
    s.own(relay, "new", ("supplier-a",))
    assert s.owners == {"live": None, "recent": None, "new": "supplier-a"}
