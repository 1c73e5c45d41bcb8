"""`ppmid send` and `ppmid sign` with a DCC User registered by its P-256 public key, on the
host (no broker, no board): `--serial --private-key` signs the binary envelope the wire
carries (command and top-up), which the firmware's verifier accepts; such a user without
--private-key is refused before anything is sent (not signed with the gateway's key); key
files fail as one KeyFileError (E_KEY_FILE); a bug while signing is not passed off as a
user error (E_INTERNAL, exit 3)."""
import argparse
import os
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "firmware"))
import p256_envelope_vectors as V  # noqa: E402
from test_relay_support import gbcs_message, SUPPLIER, ESME  # noqa: E402

from host_tools import cli, mpcompat  # noqa: E402
from host_tools import mqtt_tools as mt  # noqa: E402
from host_tools import p256_envelope as P  # noqa: E402

mpcompat.install()

from ppmid import envelope  # noqa: E402
from ppmid.envelope_sig import verifies  # noqa: E402

GW = "00DB1234567890A4"
UTRN = "73943333457189043313"


def _pem(tmp_path, scalar=V.SCALAR, name="user.pem"):
    path = tmp_path / name
    path.write_bytes(ec.derive_private_key(scalar, ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


def _send_args(*argv):
    from host_tools import cmd_send
    p = argparse.ArgumentParser()
    cmd_send.add_arguments(p)
    return p.parse_args(list(argv))


def test_send_serial_private_key_signs_the_binary_command_and_top_up(tmp_path):
    from host_tools.cmd_send import _wired_envelope
    key = _pem(tmp_path)
    other = bytes.fromhex(P.public_point_hex(_pem(tmp_path, V.OTHER_SCALAR, "other.pem")))
    gbcs = gbcs_message(1, 42, SUPPLIER, ESME)
    id, data = _wired_envelope(_send_args("--serial", "/dev/null", "--user", V.KID, "--private-key", key,
                                          "--gbcs", gbcs.hex(), "--id", "w1", "--expires-in", "600"))
    env = envelope.from_binary_any(data, 4096)
    assert (id, env.id, env.kid, bytes(env.gbcs), len(env.mac)) == ("w1", "w1", V.KID, gbcs, 64) and env.expires
    assert verifies(bytes.fromhex(V.PUBLIC), env) and not verifies(other, env)
    # --kid names the key instead of --user; a top-up is signed over its own bytes
    id, data = _wired_envelope(_send_args("--serial", "/dev/null", "--kid", "pk2", "--private-key", key,
                                          "--utrn", UTRN, "--target", ESME.lower(), "--id", "w2"))
    env = envelope.from_binary_any(data, 4096)
    assert (env.id, env.kid, env.utrn, env.target, len(env.mac)) == ("w2", "pk2", UTRN, ESME, 64)
    assert verifies(bytes.fromhex(V.PUBLIC), env) and not verifies(other, env)


def test_send_serial_private_key_refusals_come_before_the_port_is_opened(tmp_path, capsys):
    key = _pem(tmp_path)
    signed = tmp_path / "signed.bin"
    signed.write_bytes(b"\x01")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    port = str(tmp_path / "no-such-port")
    for extra, words in ((["--private-key", key, "--key-file", key, "--gbcs", "00"], "one or the other"),
                         (["--private-key", key, "--envelope", str(signed)], "signed already"),
                         (["--private-key", key, "--gbcs", "00", "--user", "a b"], "kid"),
                         (["--private-key", str(junk), "--gbcs", "00"], "not an unencrypted PEM private key")):
        assert cli.main(["send", "--serial", port] + extra) == 1, extra
        err = capsys.readouterr().err
        assert words in err and "E_INTERNAL" not in err and "no-such-port" not in err, (extra, err)


def _registry_with_public_key_user(tmp_path):
    from host_tools.users_update import write_registry
    state = str(tmp_path / "state")
    mt.envelope_key(state, GW, create=True)  # the gateway's key is there: not what refuses
    write_registry(state, GW, 1, {"keys": {"gas-pk": {"role": "r", "originators": [SUPPLIER], "public_key": V.PUBLIC},
                                           "other": {"role": "r", "originators": [SUPPLIER]}},
                                  "roles": {"r": "prepay"}, "legacy_key": True})
    return state


def test_a_public_key_user_without_private_key_is_refused_not_sent_under_the_gateway_key(tmp_path, capsys):
    state = _registry_with_public_key_user(tmp_path)
    with pytest.raises(RuntimeError, match="gas-pk is registered on %s with a public key" % GW):
        mt.sender_key(state, GW, "dcc-user-gas-pk")
    # a user the registry does not know by a public key still gets the legacy key
    assert mt.sender_key(state, GW, "dcc-user-other") == (mt.envelope_key(state, GW), None)
    gbcs = gbcs_message(1, 42, SUPPLIER, ESME).hex()
    base = ["--state-dir", state, "--gateway", GW, "--user", "gas-pk", "--gbcs", gbcs]
    for argv in (["send"] + base,                                                  # MQTT
                 ["send", "--serial", str(tmp_path / "no-such-port")] + base,      # by wire
                 ["sign", "--out", str(tmp_path / "x.bin")] + base):               # to a file
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "signs with --private-key" in err and "no-such-port" not in err, (argv, err)
    assert not os.path.exists(tmp_path / "x.bin")


def test_key_files_fail_as_one_key_file_error(tmp_path):
    from host_tools import keys, update
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    for load in (update.load_key, P.load_private, P.public_point_hex):
        with pytest.raises(keys.KeyFileError) as got:
            load(str(junk))
        assert got.value.code == "E_KEY_FILE" and str(junk) in got.value.message
    assert not hasattr(P, "make_key") and not hasattr(P, "KeyFileError")


def test_a_bug_while_signing_is_e_internal_not_a_user_error(tmp_path, capsys, monkeypatch):
    key = _pem(tmp_path)
    gbcs = gbcs_message(1, 42, SUPPLIER, ESME).hex()

    def broken(*a):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(P, "signature", broken)
    monkeypatch.setattr(P, "signing_input", broken)
    monkeypatch.setattr(P, "command_json", broken)
    for argv in (["sign", "--private-key", key, "--kid", V.KID, "--gbcs", gbcs, "--out", str(tmp_path / "o")],
                 ["sign", "--signing-input", "--kid", V.KID, "--gbcs", gbcs, "--out", str(tmp_path / "o")],
                 ["send", "--serial", str(tmp_path / "no-such-port"), "--private-key", key, "--gbcs", gbcs],
                 ["send", "--state-dir", str(tmp_path), "--gateway", GW, "--private-key", key, "--gbcs", gbcs]):
        assert cli.main(argv) == 3, argv
        assert "E_INTERNAL: unexpected ZeroDivisionError" in capsys.readouterr().err, argv
