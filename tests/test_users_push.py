"""Signed users updates, host side (host_tools/users_update.py): the fixed vectors of the
firmware tests were made by this code and signed by the fixture key; the plan of a push
(what is sent, which keys travel, the sequence) and its refusals before anything is sent.
The gateway's side: tests/firmware/test_users_update.py; end to end:
tests/test_e2e_users.py::test_users_push_rotates_revokes_and_refuses_replays_end_to_end."""
import json
import os
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from host_tools import mpcompat
from host_tools import mqtt_tools as mt
from host_tools import users_update as U
from host_tools.broker import Broker
from tests.conftest import FIRMWARE_TESTS

mpcompat.install()
sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as UV  # noqa: E402
import users_vectors as V  # noqa: E402

GW = "00DB1234567890A4"
SUP = {"role": "supplier", "originators": ["90B3D51F30010000"]}


def test_vectors_were_made_by_the_host_code_and_signed_by_the_fixture_key():
    from test_update_sign import _crypto_verify
    for name, (text, sig) in V.SIGNED.items():
        pub = UV.OTHER_PUBLIC if name == "wrong-key" else UV.PUBLIC
        assert _crypto_verify(pub, text.encode(), bytes.fromhex(sig)), name
    doc = json.loads(V.SIGNED["rotate"][0])
    for i, (name, key) in enumerate((("eng-2", V.NEW_ENG), ("supplier-a", V.ROTATED))):
        assert U.wrap(V.CONFIG_KEY, name, key, bytes([i + 1]) * 16) == doc["new_keys"][name]
    # a fresh wrap of the same key differs (random nonce) and unwraps the same on the gateway
    from ppmid.relay.users_update import unwrap
    w = U.wrap(V.CONFIG_KEY, "eng-2", V.NEW_ENG)
    assert w != doc["new_keys"]["eng-2"] and unwrap(V.CONFIG_KEY, "eng-2", w) == V.NEW_ENG


@pytest.fixture
def state(tmp_path):
    s = str(tmp_path / "broker")
    Broker(s, gateways=[GW], users=["test"]).prepare()
    U.write_registry(s, GW, 4, {"keys": {"supplier-a": SUP, "old": dict(SUP, revoked=True)},
                                "roles": {"supplier": "prepay"}, "legacy_key": False})
    mt.user_key(s, GW, "supplier-a", create=True)
    return s


def test_plan_sends_only_new_and_rotated_keys_with_the_next_sequence(state):
    seq, users, new, renames = U.plan(state, GW)
    assert seq == 5 and new == {} and renames == {} and users["keys"]["supplier-a"] == SUP
    users2 = json.loads(json.dumps(users))
    users2["keys"]["eng-1"] = {"role": "supplier", "originators": ["90B3D51F30020000"]}
    seq, users, new, renames = U.plan(state, GW, users=users2, rotate=["supplier-a"], revoke=[], sequence=9)
    assert seq == 9 and sorted(new) == ["eng-1", "supplier-a"]
    assert new["eng-1"] == mt.user_key(state, GW, "eng-1")          # a new user: the host's copy
    assert new["supplier-a"] != mt.user_key(state, GW, "supplier-a")  # rotated: a fresh key
    assert renames == {"supplier-a": mt.user_key_path(state, GW, "supplier-a")}
    seq, users, new, _ = U.plan(state, GW, revoke=["supplier-a"], remove=["old"], lock_down=True)
    assert users["keys"] == {"supplier-a": dict(SUP, revoked=True)} and new == {}


def test_plan_refuses_to_lock_the_gateway_down_unless_told(state):
    # the legacy key is off in this registry: revoking or removing the last key in use would
    # make the gateway refuse every command (review r2 R2-2's rule on the gateway)
    for kw in ({"revoke": ["supplier-a"]}, {"remove": ["supplier-a"]}, {"remove": ["supplier-a", "old"]}):
        with pytest.raises(U.UsersUpdateError, match="no DCC User key would be left in use .* --lock-down"):
            U.plan(state, GW, **kw)
        seq, users, new, _ = U.plan(state, GW, lock_down=True, **kw)
        assert not [k for k in users["keys"].values() if not k.get("revoked")] and users["legacy_key"] is False
    # with the legacy key on, or a key left in use, there is nothing to confirm
    users = dict(U.read_registry(state, GW)["users"], legacy_key=True)
    assert U.plan(state, GW, users=users, remove=["supplier-a"])[1]["keys"] == {"old": dict(SUP, revoked=True)}
    assert "supplier-a" in U.plan(state, GW, remove=["old"])[1]["keys"]


def test_plan_sends_no_key_for_a_public_key_user_and_refuses_to_rotate_one(state):
    import p256_envelope_vectors as PV
    users = json.loads(json.dumps(U.read_registry(state, GW)["users"]))
    users["keys"]["pk"] = dict(SUP, public_key=PV.PUBLIC)
    seq, users, new, renames = U.plan(state, GW, users=users)
    assert "pk" in users["keys"] and new == {} and renames == {}
    assert not os.path.exists(mt.user_key_path(state, GW, "pk"))
    with pytest.raises(U.UsersUpdateError, match="registered by its public key"):
        U.plan(state, GW, users=users, rotate=["pk"])
    # well-formed but no point of P-256: refused here, before the gateway refuses it
    off = json.loads(V.SIGNED["off-curve-key"][0])["users"]["keys"]["supplier-pk"]["public_key"]
    users["keys"]["pk"]["public_key"] = off
    with pytest.raises(U.UsersUpdateError, match="pk.public_key is not a point of P-256"):
        U.plan(state, GW, users=users)


def test_plan_refuses_unknown_names_revoked_rotations_and_bad_sections(state):
    for kw, words in (({"rotate": ["nobody"]}, "nobody is not a key"),
                      ({"revoke": ["x"]}, "x is not a key"),
                      ({"rotate": ["old"]}, "old is revoked"),
                      ({"users": {"keys": {"a": {"role": "nope", "originators": ["90B3D51F30010000"]}}}},
                       "users.keys.a needs a role"),
                      ({"users": []}, "must be an object")):
        with pytest.raises(U.UsersUpdateError) as exc:
            U.plan(state, GW, **kw)
        assert words in str(exc.value), kw


def test_users_push_cli_errors_exit_1(state, tmp_path, capsys):
    from host_tools import cli
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    base = ["users", "push", "--state-dir", state, "--gateway", GW, "--key", str(pem)]
    assert cli.main(base + ["--rotate", "nobody"]) == 1
    assert cli.main(base + ["--role", "supplier"]) == 1        # a role with no --user before it
    assert cli.main(base + ["--user", "eng-1", "--role", "engineer"]) == 1   # no --originators
    assert cli.main(base + ["--sequence", "0"]) == 1
    assert cli.main(base + ["--remove", "supplier-a"]) == 1   # the last key in use, legacy key off
    err = capsys.readouterr().err
    assert "ppmid: E_USERS_UPDATE: users refused: no DCC User key would be left in use" in err
    assert "nobody is not a key" in err and "give --user NAME first" in err and "needs --originators" in err
    assert "--sequence must be 1 or more" in err
    assert U.read_registry(state, GW)["sequence"] == 4   # nothing sent, nothing recorded


def _files_under(top):
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, _, fs in os.walk(top) for f in fs)


def test_a_refused_section_leaves_no_key_file_behind(state, tmp_path):
    before = _files_under(str(tmp_path))
    users = json.loads(json.dumps(U.read_registry(state, GW)["users"]))
    # a name that would be a path out of the state dir
    planted = dict(users, keys=dict(users["keys"], **{"../../../planted": SUP}))
    with pytest.raises(U.UsersUpdateError, match="users.keys name '../../../planted'"):
        U.plan(state, GW, users=planted)
    # a good new name beside a refused entry: its key is not made either
    refused = dict(users, keys=dict(users["keys"], **{"eng-1": SUP, "eng-2": dict(SUP, originators=["nope"])}))
    with pytest.raises(U.UsersUpdateError, match="eng-2 originator"):
        U.plan(state, GW, users=refused)
    assert _files_under(str(tmp_path)) == before
    # as a user gives it: ppmid users push --user ../x
    from host_tools import cli
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    before = _files_under(str(tmp_path))
    assert cli.main(["users", "push", "--state-dir", state, "--gateway", GW, "--key", str(pem), "--user", "../../x",
                     "--role", "supplier", "--originators", "90B3D51F30010000"]) == 1
    assert _files_under(str(tmp_path)) == before


def test_a_key_entry_that_is_not_an_object_is_refused_not_a_crash(state, tmp_path, capsys):
    for kw in ({"users": {"keys": {"a": 5}}}, {"users": {"keys": {"a": [1]}}, "revoke": ["a"]},
               {"users": {"keys": {"a": "x"}}, "remove": ["a"]}, {"users": {"keys": 5}}):
        with pytest.raises(U.UsersUpdateError, match="users refused: E_CONFIG: users.keys"):
            U.plan(state, GW, **kw)
    # the same in the host's registry of what the gateway was given
    U.write_registry(state, GW, 4, {"keys": {"a": 5}})
    with pytest.raises(U.UsersUpdateError, match="users.keys.a"):
        U.plan(state, GW)
    # and through the command: one line, exit 1
    from host_tools import cli
    pem = tmp_path / "op.pem"
    pem.write_text(UV.PRIVATE_PEM)
    bad = tmp_path / "u.json"
    bad.write_text('{"keys": {"a": 5}}')
    assert cli.main(["users", "push", "--state-dir", state, "--gateway", GW, "--key", str(pem),
                     "--users", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "users.keys.a" in err and "E_INTERNAL" not in err, err
