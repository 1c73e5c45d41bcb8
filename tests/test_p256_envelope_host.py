# The public-key envelope option from the host side (host_tools.p256_envelope): what
# `cryptography` signs verifies in the firmware's verifier (CPython here; the fixed vectors
# made the same way run under MicroPython in tests/firmware/test_relay_p256_senders.py),
# the vectors are real signatures of the test key, and provision/send take the key files.
import json
import os
import sys

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature, Prehashed

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "firmware"))
import p256_envelope_vectors as V  # noqa: E402
from test_relay_support import gbcs_message, SUPPLIER, ESME  # noqa: E402

from host_tools import p256_envelope as P  # noqa: E402
from ppmid import envelope  # noqa: E402


def _digest(id, expires, gbcs, kid):
    # what docs/envelope.md says a signature signs, written out here with Python's own
    # hmac, independently of the firmware: HMAC-SHA256, empty key, over the covered bytes
    import hashlib
    import hmac
    exp = b"" if expires is None else str(expires).encode()
    covered = b"ppmid-cmd-v1" + b"\x01" + kid.encode() + b"\x00" + id.encode() + b"\x00" + exp + b"\x00" + gbcs
    return hmac.new(b"", covered, hashlib.sha256).digest()


def _pem(tmp_path, scalar=V.SCALAR, name="user.pem"):
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def test_the_fixed_vectors_are_signatures_of_the_test_key():
    pub = ec.derive_private_key(V.SCALAR, ec.SECP256R1()).public_key()
    assert pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex() == V.PUBLIC
    for sig, id, counter, code in ((V.GOOD, "p1", 10, 0x0007), (V.ROLE, "p2", 11, 0x0050)):
        raw = bytes.fromhex(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        pub.verify(der, _digest(id, None, gbcs_message(1, counter, SUPPLIER, ESME, code), V.KID),
                   ec.ECDSA(Prehashed(hashes.SHA256())))


def test_fresh_signatures_from_cryptography_verify_in_the_firmware(tmp_path):
    from ppmid.relay import senders as S
    from ppmid.update import p256
    path = _pem(tmp_path)
    assert P.public_point_hex(path) == V.PUBLIC
    key = p256.public_key(bytes.fromhex(V.PUBLIC))
    for i in range(8):  # random k each time: several signatures, with and without expiry
        gbcs = gbcs_message(1, 100 + i, SUPPLIER, ESME, 0x0007, body=os.urandom(30 * i + 1))
        expires = None if i % 2 else 1900000000 + i
        env = envelope.from_json_obj(json.loads(P.command_json(path, "c%d" % i, gbcs, expires, V.KID)), 4096)
        assert S._verifies(bytes.fromhex(V.PUBLIC), env)
        # and p256 on its own, over the digest as docs/envelope.md gives it
        assert p256.verify_digest(key, _digest(env.id, expires, gbcs, V.KID), bytes(env.mac))
        # one other byte of gbcs: refused
        bad = bytearray(gbcs)
        bad[-1] ^= 1
        assert not p256.verify_digest(key, _digest(env.id, expires, bytes(bad), V.KID), bytes(env.mac))


def test_key_file_errors_are_clear(tmp_path):
    rsa_less = tmp_path / "junk.pem"
    rsa_less.write_text("not a key\n")
    with pytest.raises(P.KeyFileError, match="not a PEM"):
        P.public_point_hex(str(rsa_less))
    with pytest.raises(P.KeyFileError, match="cannot read"):
        P.public_point_hex(str(tmp_path / "absent.pem"))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(P.KeyFileError, match="P-256"):
        P.command_json(str(p384), "x", b"\x01", None, "k")


def test_provision_public_key_puts_the_point_in_the_config_and_no_key_file(tmp_path, capsys):
    from host_tools import cli
    from host_tools.broker import Broker
    gw = "00DB1234567890A4"
    state = str(tmp_path / "broker")
    Broker(state, gateways=[gw], users=["test"]).prepare()
    path = _pem(tmp_path)
    rc = cli.main(["provision", "--port", "none", "--gateway", gw, "--state-dir", state, "--dry-run",
                   "--user", "gas-pk", "--role", "gas-supplier", "--originators", SUPPLIER, "--public-key", path])
    out = capsys.readouterr().out
    assert rc == 0
    cfg = json.loads(out[out.index("{"):])
    assert cfg["users"]["keys"]["gas-pk"] == {"role": "gas-supplier", "originators": [SUPPLIER], "public_key": V.PUBLIC}
    assert cfg["users"]["roles"] == {"gas-supplier": "duis:GS"}
    assert "/secrets/users/gas-pk.key" not in out
    # a file that is no P-256 key: exit 1 with the reason
    junk = tmp_path / "junk.pem"
    junk.write_text("nope")
    assert cli.main(["provision", "--port", "none", "--gateway", gw, "--state-dir", state, "--dry-run", "--user", "x",
                     "--role", "supplier", "--originators", SUPPLIER, "--public-key", str(junk)]) == 1
    assert "--public-key of x" in capsys.readouterr().err


def test_sign_private_key_writes_a_json_envelope_the_firmware_verifies(tmp_path, capsys):
    from host_tools import cli
    from ppmid.envelope_sig import verifies
    path = _pem(tmp_path)
    out = tmp_path / "cmd.json"
    gbcs = gbcs_message(1, 77, SUPPLIER, ESME)
    assert cli.main(["sign", "--private-key", path, "--kid", V.KID, "--format", "json", "--gbcs", gbcs.hex(),
                     "--id", "s1", "--expires-in", "600", "--out", str(out)]) == 0
    env = envelope.from_json_obj(json.loads(out.read_bytes()), 4096)
    assert (env.id, env.kid, bytes(env.gbcs), len(env.mac)) == ("s1", V.KID, gbcs, 64) and env.expires
    assert verifies(bytes.fromhex(V.PUBLIC), env)
    assert not verifies(bytes.fromhex(P.public_point_hex(_pem(tmp_path, V.OTHER_SCALAR, "o.pem"))), env)
    # binary, or no kid: refused with the reason, exit 1
    capsys.readouterr()
    for extra in (["--kid", V.KID], ["--format", "json"]):
        assert cli.main(["sign", "--private-key", path, "--gbcs", gbcs.hex(), "--out", str(out)] + extra) == 1
        assert "--private-key signs one command as JSON" in capsys.readouterr().err
