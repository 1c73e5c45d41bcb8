"""Keys per DCC User with roles end to end (issue #22, docs/security.md): the emulated board
is provisioned with a DCC User's own key (role `supplier` = the `prepay` profile, one GBCS
originator) and the gateway's single key turned off. Commands signed with the user's key
are relayed when the code is in its role, refused E_ROLE otherwise; the gateway's old key
is refused E_AUTH; nothing refused reaches the CH. Also `ppmid provision --user --role`."""
import binascii
import json
import os
import subprocess
import sys

import pytest

from host_tools import emulate as E
from host_tools import mpcompat
from host_tools import mqtt_tools as mt

mpcompat.install()

from ppmid.gbcs import decode, profiles  # noqa: E402
from tests.conftest import FIRMWARE_TESTS  # noqa: E402

sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as UV  # noqa: E402  (the test operator key: public here)


def _pick():
    # one prepay command, one outside prepay after it (a higher counter), then more prepay
    # commands for the later tests, all from the same originator, in counter order
    prepay = profiles.codes("prepay")
    inside = outside = None
    more = []
    for name, buf in E.renumbered_commands(400):
        m = decode(buf)
        if inside is None and m.message_code in prepay:
            inside = buf
        elif inside is not None and outside is None and m.message_code not in prepay:
            outside = buf
        elif outside is not None and m.message_code in prepay and bytes(m.originator) == bytes(decode(inside).originator):
            more.append(buf)
    return inside, outside, more


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    inside, outside, more = _pick()
    origs = sorted({binascii.hexlify(bytes(decode(b).originator)).decode().upper() for b in (inside, outside)})
    users = {"keys": {"supplier-a": {"role": "supplier", "originators": origs}},
             "roles": {"supplier": "prepay"}, "legacy_key": False}
    over = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40}, "users": users,
            "update": {"public_key": UV.PUBLIC}}  # the operator's key: signed users updates
    e = E.Emulation(tmp_path_factory.mktemp("e2e-users"), overrides=over, log=None)
    with e:
        e.picked = (inside, outside)
        e.more = more
        yield e


def _replay(emu, key, lines, kid=None):
    r = emu.replayer(20)
    r.key = key
    r.kid = kid
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
    assert rep["lost_count"] == 0 and rep["mismatches"] == [], rep["mismatches"]
    return rep


def test_user_key_role_and_revoked_legacy_key_end_to_end(emu):
    inside, outside = emu.picked
    user_key = mt.user_key(emu.broker_dir, emu.gateway, "supplier-a")
    assert user_key != emu.key
    before = len(emu.ncp.received)
    rep = _replay(emu, user_key, [
        {"at_ms": 0, "id": "in-role", "gbcs": inside, "via": "mqtt", "expect": {"status": "response"}},
        {"at_ms": 100, "id": "outside-role", "gbcs": outside, "via": "mqtt",
         "expect": {"status": "rejected", "error": "E_ROLE"}}])
    assert rep["rejected"] == {"E_ROLE": 1}
    rep = _replay(emu, emu.key, [
        {"at_ms": 0, "id": "old-key", "gbcs": inside, "via": "mqtt",
         "expect": {"status": "rejected", "error": "E_AUTH"}}])
    assert rep["rejected"] == {"E_AUTH": 1}
    assert emu.ncp.received[before:] == [inside]
    assert "PPMID crashed" not in emu.board.console_text()


def _ppmid(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"]
                          + [str(a) for a in args], cwd=root, capture_output=True, text=True, timeout=120)


def test_envelopes_naming_their_key_end_to_end(emu, tmp_path):
    from host_tools.broker import Broker
    user_key = mt.user_key(emu.broker_dir, emu.gateway, "supplier-a")
    a, b, c = emu.more[:3]
    before = len(emu.ncp.received)
    # ppmid send --user NAME: the DCC User's certificate and its own key, named in the envelope
    assert mt.sender_key(emu.broker_dir, emu.gateway, "supplier-a") == (user_key, "supplier-a")
    assert json.loads(mt.command_json(user_key, "x", a, None, "supplier-a"))["kid"] == "supplier-a"
    Broker(emu.broker_dir, users=()).add_identity("dcc-user-supplier-a")
    base = ["send", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--timeout", 30]
    r = _ppmid(*base, "--user", "supplier-a", "--gbcs", binascii.hexlify(a).decode(), "--id", "kid-send")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["status"] == "response"
    # a kid the gateway does not know, the right key under it: E_AUTH naming the kid
    kf = tmp_path / "supplier-a.key"
    kf.write_bytes(user_key)
    r = _ppmid(*base, "--key-file", kf, "--kid", "mallory", "--gbcs", binascii.hexlify(b).decode(), "--id", "kid-x")
    last = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 1 and last["error"]["code"] == "E_AUTH" and "mallory" in last["error"]["message"]
    r = _ppmid(*base, "--kid", "supplier-a", "--gbcs", binascii.hexlify(b).decode())
    assert r.returncode == 1 and "--kid goes with --key-file" in r.stderr
    # replay names the key too; the gateway's own key under the user's name is refused
    _replay(emu, emu.key, [{"at_ms": 0, "id": "kid-wrong-key", "gbcs": b, "via": "mqtt",
                            "expect": {"status": "rejected", "error": "E_AUTH"}}], kid="supplier-a")
    rep = _replay(emu, user_key, [{"at_ms": 0, "id": "kid-replay", "gbcs": b, "via": "mqtt",
                                   "expect": {"status": "response"}}], kid="supplier-a")
    assert rep["rejected"] == {}
    assert emu.ncp.received[before:] == [a, b]
    assert "PPMID crashed" not in emu.board.console_text()


def test_provision_user_and_role_dry_run(tmp_path, capsys):
    from host_tools import cli
    from host_tools.broker import Broker
    state = str(tmp_path / "broker")
    Broker(state, gateways=["00DB1234567890A4"], users=["test"]).prepare()
    rc = cli.main(["provision", "--port", "none", "--gateway", "00DB1234567890A4", "--state-dir", state,
                   "--role", "supplier=prepay", "--user", "supplier-a:supplier:90b3d51f30010000", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "/secrets/users/supplier-a.key 32 bytes" in out
    cfg = json.loads(out[out.index("{"):])
    assert cfg["users"]["keys"]["supplier-a"] == {"role": "supplier", "originators": ["90B3D51F30010000"]}
    assert len(mt.user_key(state, "00DB1234567890A4", "supplier-a")) == 32
    # a role the config does not define, a malformed user: refused, exit 1
    assert cli.main(["provision", "--port", "none", "--gateway", "00DB1234567890A4", "--state-dir", state,
                     "--user", "bob:nobody:90B3D51F30010000", "--dry-run"]) == 1
    assert cli.main(["provision", "--port", "none", "--gateway", "00DB1234567890A4", "--state-dir", state,
                     "--user", "bob", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "users.keys.bob needs a role" in err and "NAME:ROLE:ORIGINATOR" in err


def test_users_push_rotates_revokes_and_refuses_replays_end_to_end(emu, tmp_path):
    # last in this module: it changes the gateway's keys
    from host_tools import provision
    from host_tools import users_update as U
    from host_tools.broker import Broker
    c, d, e = emu.more[2:5]
    before = len(emu.ncp.received)
    provision.remember_users(emu.broker_dir, dict(emu.config, gateway=emu.gateway))  # as ppmid provision does
    Broker(emu.broker_dir, users=()).add_identity("dcc-user-supplier-a")
    op, other = tmp_path / "operator.pem", tmp_path / "other.pem"
    op.write_text(UV.PRIVATE_PEM)
    other.write_text(UV.OTHER_PRIVATE_PEM)
    old_key = mt.user_key(emu.broker_dir, emu.gateway, "supplier-a")
    push = ["users", "push", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--timeout", 30]
    send = ["send", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--timeout", 30, "--user", "supplier-a"]

    # rotation: a new key for supplier-a, sent wrapped; applied with no reboot
    sent = []
    real_send = U.send
    U.send = lambda *a: sent.append(a) or real_send(*a)
    try:
        st = U.push(emu.broker_dir, emu.gateway, str(op), rotate=["supplier-a"])
    finally:
        U.send = real_send
    assert st["state"] == "applied" and st["sequence"] == 1, st
    new_key = mt.user_key(emu.broker_dir, emu.gateway, "supplier-a")
    assert new_key != old_key and U.read_registry(emu.broker_dir, emu.gateway)["sequence"] == 1
    r = _ppmid(*send, "--gbcs", binascii.hexlify(c).decode(), "--id", "after-rotation")
    assert r.returncode == 0, r.stdout + r.stderr
    kf = tmp_path / "old.key"
    kf.write_bytes(old_key)
    r = _ppmid(*send, "--key-file", kf, "--kid", "supplier-a", "--gbcs", binascii.hexlify(d).decode(), "--id", "old-key")
    assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_AUTH"

    # the very same signed update again: a replay, refused
    st = real_send(*sent[0])
    assert st["state"] == "refused" and st["error"]["code"] == "E_CONFIG_REPLAY", st

    # signed with another key: refused, nothing recorded on the host
    # (supplier-a is the last key in use and the legacy key is off: the tool asks --lock-down)
    r = _ppmid(*push, "--key", other, "--revoke", "supplier-a", "--lock-down")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "E_CONFIG_SIGNATURE", r.stdout + r.stderr
    assert U.read_registry(emu.broker_dir, emu.gateway)["sequence"] == 1

    # revocation: E_REVOKED from then on
    _locked(emu, False)   # before it: a key in use, nothing said
    r = _ppmid(*push, "--key", op, "--revoke", "supplier-a")
    assert r.returncode == 1 and "ppmid: E_USERS_UPDATE: users refused: no DCC User key would be left in use" in r.stderr
    assert U.read_registry(emu.broker_dir, emu.gateway)["sequence"] == 1
    r = _ppmid(*push, "--key", op, "--revoke", "supplier-a", "--lock-down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["sequence"] == 2
    # locked down: the retained info says so, and `ppmid status` shows it (the gateway
    # republished its info before the update's status)
    _locked(emu)
    r = _ppmid(*send, "--gbcs", binascii.hexlify(d).decode(), "--id", "revoked")
    assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_REVOKED"

    # kept on flash: after a power cut the gateway boots with the updated users section
    mark = emu.board.mark()
    emu.board.kill()
    emu.board.wait_ready(60, since=mark)
    emu.wait_online(60)
    r = _ppmid(*send, "--gbcs", binascii.hexlify(e).decode(), "--id", "revoked-after-boot")
    assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_REVOKED"
    _locked(emu)
    assert emu.ncp.received[before:] == [c]
    text = emu.board.console_text()
    assert "PPMID users: update 1 applied" in text and "PPMID crashed" not in text
    assert "info not republished" not in text and "info not published" not in text, text[-2000:]


def _locked(emu, locked=True):
    # what `ppmid status` reads in the gateway's retained info
    r = _ppmid("status", "--state-dir", emu.broker_dir, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[0])["auth"] == ("locked" if locked else None), r.stdout
    r = _ppmid("status", "--state-dir", emu.broker_dir)
    assert ("(locked: every command refused)" in r.stdout) == locked, r.stdout


def test_provision_user_role_originators_spelling(tmp_path, capsys):
    """`ppmid provision --user NAME --role ROLE --originators ...` (the issue's spelling): a
    role the issue names gets its default profile unless --role-profile says otherwise; the
    NAME:ROLE:ORIGINATORS form still works beside it; the config key is written; a gateway
    provisioned again keeps the sequence of the last users update it applied."""
    from host_tools import cli
    from host_tools import users_update as U
    from host_tools.broker import Broker
    gw = "00DB1234567890A4"
    state = str(tmp_path / "broker")
    Broker(state, gateways=[gw], users=["test"]).prepare()
    base = ["provision", "--port", "none", "--gateway", gw, "--state-dir", state, "--dry-run"]

    def cfg_of(out):
        return json.loads(out[out.index("{"):])

    rc = cli.main(base + ["--user", "supplier-a", "--role", "supplier", "--originators", "90b3d51f30010000",
                          "--user", "eng-1", "--role", "engineer", "--originators", "90B3D51F30010000,90B3D51F30020000",
                          "--user", "dno:network-operator:90B3D51F30030000", "--role-profile", "network-operator=all"])
    out = capsys.readouterr().out
    assert rc == 0
    u = cfg_of(out)["users"]
    assert u["keys"] == {"supplier-a": {"role": "supplier", "originators": ["90B3D51F30010000"]},
                         "eng-1": {"role": "engineer", "originators": ["90B3D51F30010000", "90B3D51F30020000"]},
                         "dno": {"role": "network-operator", "originators": ["90B3D51F30030000"]}}
    assert u["roles"] == {"supplier": "prepay", "engineer": "hht", "network-operator": "all"}
    assert "/secrets/config.key 32 bytes" in out and "/secrets/users/eng-1.key 32 bytes" in out
    # --role-profile overrides a default; the older --role ROLE=PROFILE spelling too
    assert cli.main(base + ["--role", "supplier=all", "--user", "s", "--role", "supplier", "--originators",
                            "90B3D51F30010000"]) == 0
    assert cfg_of(capsys.readouterr().out)["users"]["roles"] == {"supplier": "all"}
    # the sequence of the last applied users update survives a new provision
    U.write_registry(state, gw, 7, {"keys": {}, "roles": {}})
    assert cli.main(base) == 0
    assert cfg_of(capsys.readouterr().out)["users"]["sequence"] == 7
    # refusals: exit 1 with the reason
    # a DUIS user role gets the codes DUIS makes it eligible for (gbcs/eligibility.py)
    assert cli.main(base + ["--user", "g", "--role", "gas-supplier", "--originators", "90B3D51F30010000"]) == 0
    assert cfg_of(capsys.readouterr().out)["users"]["roles"] == {"gas-supplier": "duis:GS"}
    for bad, words in ((["--user", "x", "--role", "auditor", "--originators", "90B3D51F30010000"],
                        "users.keys.x needs a role"),
                       (["--role-profile", "r=duis:XX", "--user", "x", "--role", "r", "--originators",
                         "90B3D51F30010000"], "not a DUIS role"),
                       (["--user", "x", "--originators", "90B3D51F30010000"], "--user x needs --role"),
                       (["--role", "supplier"], "give --user NAME first"),
                       (["--user", "a:b"], "NAME --role ROLE --originators")):
        assert cli.main(base + bad) == 1, bad
        assert words in capsys.readouterr().err, bad


def test_ppmid_sign_names_the_users_key(tmp_path, capsys):
    """`ppmid sign --user NAME` (with --state-dir, --gateway) signs with the DCC User's own
    key and names it; `--key-file F --kid NAME` names a key given by file; a --kid with
    no --key-file is refused."""
    from host_tools import cli
    from host_tools.broker import Broker
    from ppmid import envelope
    gw = "00DB1234567890A4"
    state = str(tmp_path / "broker")
    Broker(state, gateways=[gw], users=["test"]).prepare()
    key = mt.user_key(state, gw, "supplier-a", create=True)
    out = tmp_path / "c.env"
    assert cli.main(["sign", "--state-dir", state, "--gateway", gw, "--user", "supplier-a", "--gbcs", "dd00aa",
                     "--id", "s1", "--out", str(out)]) == 0
    env = envelope.from_binary(out.read_bytes(), 4096)
    assert env.kid == "supplier-a"
    env.verify(key)
    kf = tmp_path / "k"
    kf.write_bytes(key)
    assert cli.main(["sign", "--key-file", str(kf), "--kid", "supplier-a", "--gbcs", "dd00aa", "--id", "s2",
                     "--format", "json", "--out", str(out)]) == 0
    obj = json.loads(out.read_text())
    assert obj["kid"] == "supplier-a"
    envelope.from_json_obj(obj, 4096).verify(key)
    assert cli.main(["sign", "--state-dir", state, "--gateway", gw, "--kid", "x", "--gbcs", "dd00aa",
                     "--out", str(out)]) == 1
    assert "--kid goes with --key-file" in capsys.readouterr().err
