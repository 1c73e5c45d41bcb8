# The public-key envelope option from the host side (host_tools.p256_envelope): what
# `cryptography` signs verifies in the firmware's verifier (CPython here; the fixed vectors
# made the same way run under MicroPython in tests/firmware/test_relay_p256_senders.py),
# the vectors are real signatures of the test key, and provision/send take the key files.
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "firmware"))
import p256_envelope_vectors as V  # noqa: E402
from test_relay_support import gbcs_message, SUPPLIER, ESME  # noqa: E402

from host_tools import p256_envelope as P  # noqa: E402
from ppmid import envelope  # noqa: E402


def _signing_input(id, expires, gbcs, kid):
    # what docs/envelope.md says a signature signs, written out here byte by byte,
    # independently of the firmware's compute_mac(None, ...)
    exp = b"" if expires is None else str(expires).encode()
    return b"ppmid-cmd-v1" + b"\x01" + kid.encode() + b"\x00" + id.encode() + b"\x00" + exp + b"\x00" + gbcs


def _digest(id, expires, gbcs, kid):
    # ECDSA's e: plain SHA-256 of the signing input
    return hashlib.sha256(_signing_input(id, expires, gbcs, kid)).digest()


def _crypto_verifies(sig_hex, message):
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(V.PUBLIC))
    raw = bytes.fromhex(sig_hex)
    try:
        pub.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                   message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


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
        message = _signing_input(id, None, gbcs_message(1, counter, SUPPLIER, ESME, code), V.KID)
        assert _crypto_verifies(sig, message)
        # plain ECDSA-SHA256 of the message: the earlier HMAC-with-an-empty-key digest does not verify
        assert not _crypto_verifies(sig, hmac.new(b"", message, hashlib.sha256).digest())
    assert P.raw_signature(bytes.fromhex(V.GOOD_DER)).hex() == V.GOOD
    # the top-up: its own domain string, target and utrn after the expires
    topup_input = b"ppmid-topup-v1\x01" + V.KID.encode() + b"\x00t1\x00\x00" + ESME.encode() + b"\x0073943333457189043313"
    assert P.topup_signing_input("t1", "73943333457189043313", ESME.lower(), None, V.KID) == topup_input
    assert _crypto_verifies(V.TOPUP, topup_input)
    assert not _crypto_verifies(V.TOPUP, topup_input.replace(b"topup", b"cmd"))
    assert not _crypto_verifies(V.OTHER_KEY, _signing_input("p1", None, gbcs_message(1, 10, SUPPLIER, ESME), V.KID))


def test_the_signing_input_is_the_bytes_the_docs_give():
    gbcs = gbcs_message(1, 10, SUPPLIER, ESME)
    for expires in (None, 1790000000):
        assert P.signing_input("p1", gbcs, expires, V.KID) == _signing_input("p1", expires, gbcs, V.KID)
    # docs/envelope.md's worked example, literally
    assert P.signing_input("c-42", b"\xDF\x09", 1790000000, "supplier-a") == (
        b"ppmid-cmd-v1\x01supplier-a\x00c-42\x001790000000\x00\xDF\x09")
    with pytest.raises(envelope.EnvelopeError):
        P.signing_input("bad id", gbcs, None, V.KID)


def test_fresh_signatures_from_cryptography_verify_in_the_firmware(tmp_path):
    from ppmid import envelope_sig
    from ppmid.update import p256
    path = _pem(tmp_path)
    assert P.public_point_hex(path) == V.PUBLIC
    key = p256.public_key(bytes.fromhex(V.PUBLIC))
    for i in range(8):  # random k each time: several signatures, with and without expiry
        gbcs = gbcs_message(1, 100 + i, SUPPLIER, ESME, 0x0007, body=os.urandom(30 * i + 1))
        expires = None if i % 2 else 1900000000 + i
        env = envelope.from_json_obj(json.loads(P.command_json(path, "c%d" % i, gbcs, expires, V.KID)), 4096)
        assert envelope_sig.verifies(bytes.fromhex(V.PUBLIC), env)
        # and p256 on its own, over the digest as docs/envelope.md gives it
        assert p256.verify_digest(key, _digest(env.id, expires, gbcs, V.KID), bytes(env.mac))
        # one other byte of gbcs: refused
        bad = bytearray(gbcs)
        bad[-1] ^= 1
        assert not p256.verify_digest(key, _digest(env.id, expires, bytes(bad), V.KID), bytes(env.mac))


def test_key_file_errors_are_clear(tmp_path):
    from host_tools.keys import KeyFileError
    rsa_less = tmp_path / "junk.pem"
    rsa_less.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        P.public_point_hex(str(rsa_less))
    with pytest.raises(KeyFileError, match="cannot read"):
        P.public_point_hex(str(tmp_path / "absent.pem"))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="P-256"):
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


def test_sign_private_key_writes_json_and_binary_envelopes_the_firmware_verifies(tmp_path, capsys):
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
    # the binary form (NFC, wire: the default) carries the same kind of signature
    assert cli.main(["sign", "--private-key", path, "--kid", V.KID, "--gbcs", gbcs.hex(), "--id", "s2",
                     "--out", str(out)]) == 0
    env = envelope.from_binary_any(out.read_bytes(), 4096)
    assert (env.id, env.kid, bytes(env.gbcs), len(env.mac)) == ("s2", V.KID, gbcs, 64)
    assert verifies(bytes.fromhex(V.PUBLIC), env)
    # no kid, a trace, a bad id: refused with the reason, exit 1
    capsys.readouterr()
    for extra, words in ((["--gbcs", gbcs.hex()], "give --kid NAME"),
                         (["--trace", str(tmp_path / "t.jsonl"), "--kid", V.KID], "give --kid NAME"),
                         (["--gbcs", gbcs.hex(), "--kid", V.KID, "--id", "a b"], "printable")):
        assert cli.main(["sign", "--private-key", path, "--out", str(out)] + extra) == 1
        assert words in capsys.readouterr().err


MP_SENDERS = """
import sys, json
sys.path.insert(0, %r)
from binascii import unhexlify
from ppmid import envelope
from ppmid.relay import senders as S
from ppmid import envelope_sig
users = S.Senders(None, [(%r, unhexlify(%r), set(), None, False)])
out = []
for line in sys.stdin.read().splitlines():
    envelope_sig._failed = None  # each line on its own: not held back by the failed checks before
    try:
        out.append(users.verify(envelope.from_json(line, 4096))[0])
    except S.PpmidError as exc:
        out.append(exc.code)
print(json.dumps(out))
"""


def _openssl_signed(tmp_path, pem, n):
    """(JSON envelope lines, what the gateway should say of each): commands signed by
    `openssl dgst -sha256 -sign` over their signing input in a file, the DER signature
    turned into r || s by host_tools.p256_envelope; and each again with one byte changed."""
    lines, want = [], []
    for i in range(n):
        id = "o%d" % i
        gbcs = gbcs_message(1, 200 + i, SUPPLIER, ESME, 0x0007, body=os.urandom(40 * i + 1))
        expires = None if i % 2 else 1900000000 + i
        message = tmp_path / ("input%d.bin" % i)
        message.write_bytes(P.signing_input(id, gbcs, expires, V.KID))
        der = tmp_path / ("sig%d.der" % i)
        subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem, "-out", str(der), str(message)],
                       check=True, capture_output=True, timeout=30)
        obj = {"id": id, "gbcs": base64.b64encode(gbcs).decode(), "mac": P.raw_signature(der.read_bytes()).hex(),
               "kid": V.KID}
        if expires is not None:
            obj["expires"] = expires
        lines.append(json.dumps(obj))
        want.append(V.KID)
        bad = bytearray(gbcs)
        bad[5 + i] ^= 0x40
        obj["gbcs"] = base64.b64encode(bytes(bad)).decode()
        lines.append(json.dumps(obj))
        want.append("E_AUTH")
    return lines, want


@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="openssl is not installed: no standard tool here to sign with")
def test_signatures_made_by_openssl_are_accepted_by_the_firmware(tmp_path):
    from ppmid.relay import senders as S
    from tests.conftest import FIRMWARE_DIR, micropython_binary
    lines, want = _openssl_signed(tmp_path, _pem(tmp_path), 4)
    from ppmid import envelope_sig
    users = S.Senders(None, [(V.KID, bytes.fromhex(V.PUBLIC), set(), None, False)])
    got = []
    for line in lines:
        envelope_sig._failed = None  # each line on its own: failed checks are limited per kid
        try:
            got.append(users.verify(envelope.from_json(line.encode(), 4096))[0])
        except S.SenderError as exc:
            got.append(exc.code)
    assert got == want
    # the same envelopes under MicroPython
    script = tmp_path / "v.py"
    script.write_text(MP_SENDERS % (FIRMWARE_DIR, V.KID, V.PUBLIC))
    p = subprocess.run([micropython_binary(), str(script)], input="\n".join(lines), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == want


@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="openssl is not installed: no standard tool here to sign with")
def test_sign_signing_input_then_openssl_then_signature_makes_an_envelope_the_firmware_verifies(tmp_path, capsys):
    # docs/envelope.md "Signed envelopes": the three steps for a key ppmid never sees
    from host_tools import cli
    from ppmid.envelope_sig import verifies
    pem = _pem(tmp_path)
    gbcs = gbcs_message(1, 300, SUPPLIER, ESME)
    (tmp_path / "cmd.bin").write_bytes(gbcs)
    inp, der, out = tmp_path / "c.input", tmp_path / "c.der", tmp_path / "c.json"
    assert cli.main(["sign", "--signing-input", "--gbcs-file", str(tmp_path / "cmd.bin"), "--id", "c-42",
                     "--kid", V.KID, "--expires-in", "600", "--out", str(inp)]) == 0
    data = inp.read_bytes()
    expires = int(data.split(b"\x00")[2])
    assert data == _signing_input("c-42", expires, gbcs, V.KID)
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem, "-out", str(der), str(inp)],
                   check=True, capture_output=True, timeout=30)
    assert cli.main(["sign", "--signing-input-file", str(inp), "--signature", str(der), "--format", "json",
                     "--out", str(out)]) == 0
    env = envelope.from_json(out.read_bytes(), 4096)
    assert (env.id, env.kid, env.expires, bytes(env.gbcs)) == ("c-42", V.KID, expires, gbcs)
    assert verifies(bytes.fromhex(V.PUBLIC), env)
    # the same signature in the binary form (NFC, wire)
    assert cli.main(["sign", "--signing-input-file", str(inp), "--signature", str(der), "--out", str(out)]) == 0
    env = envelope.from_binary_any(out.read_bytes(), 4096)
    assert (env.id, env.kid, env.expires, bytes(env.gbcs)) == ("c-42", V.KID, expires, gbcs)
    assert verifies(bytes.fromhex(V.PUBLIC), env)
    # the signature of another input: the envelope is written (the host holds no public
    # key to check it with) and the firmware refuses it
    other = tmp_path / "o.input"
    other.write_bytes(data.replace(b"c-42", b"c-43"))
    assert cli.main(["sign", "--signing-input-file", str(other), "--signature", str(der), "--out", str(out)]) == 0
    assert not verifies(bytes.fromhex(V.PUBLIC), envelope.from_binary_any(out.read_bytes(), 4096))


def test_raw_signature_and_parse_signing_input_refuse_what_they_cannot_read():
    assert P.raw_signature(bytes.fromhex(V.GOOD)) == bytes.fromhex(V.GOOD)   # already r || s
    for bad in (b"", b"\x30\x02\x01", bytes.fromhex(V.GOOD)[:63], bytes.fromhex(V.GOOD_DER)[:-1]):
        with pytest.raises(ValueError, match="neither DER nor 64 bytes"):
            P.raw_signature(bad)
    with pytest.raises(ValueError, match="not a P-256 number"):
        P.raw_signature(encode_dss_signature(1 << 256, 1))
    gbcs = gbcs_message(1, 10, SUPPLIER, ESME)
    good = P.signing_input("p1", gbcs, 1790000000, V.KID)
    assert P.parse_signing_input(good) == ("p1", gbcs, 1790000000, V.KID)
    assert P.parse_signing_input(P.signing_input("p1", gbcs, None, V.KID)) == ("p1", gbcs, None, V.KID)
    for bad, words in ((b"ppmid-cmd-v1\x00p1\x00\x00" + gbcs, "naming its kid"),     # no kid
                       (b"ppmid-topup-v1\x01k\x00p1\x00\x00" + gbcs, "must start with"),
                       (good[:good.index(b"1790000000") + 10] + b"\x00", "a GBCS command must follow"),
                       (good.replace(b"1790000000", b"01790000000"), "not decimal"),
                       (good.replace(b"1790000000", b"-5"), "not decimal"),
                       (good.replace(b"p1", b"p\xff"), "not ASCII"),
                       (good.replace(b"p1", b"p 1"), "printable")):
        with pytest.raises(ValueError, match=words):
            P.parse_signing_input(bad)


def test_sign_signing_input_usage_errors_exit_1_with_the_reason(tmp_path, capsys):
    from host_tools import cli
    gbcs = gbcs_message(1, 10, SUPPLIER, ESME).hex()
    out = str(tmp_path / "x")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a signing input")
    sig = tmp_path / "sig"
    sig.write_bytes(bytes.fromhex(V.GOOD_DER))
    good = tmp_path / "good.input"
    good.write_bytes(P.signing_input("p1", bytes.fromhex(gbcs), None, V.KID))
    for argv, words in ((["--signing-input", "--gbcs", gbcs], "give --kid NAME"),
                        (["--signing-input", "--gbcs", gbcs, "--kid", "k", "--id", "a b"], "printable"),
                        (["--signature", str(sig), "--gbcs", gbcs], "goes with --signing-input-file"),
                        (["--signing-input-file", str(good)], "goes with --signature"),
                        (["--signing-input-file", str(junk), "--signature", str(sig)], "not a signing input"),
                        (["--signing-input-file", str(good), "--signature", str(junk)], "neither DER nor"),
                        (["--signing-input-file", str(good), "--signature", str(tmp_path / "absent")], "cannot read")):
        capsys.readouterr()
        assert cli.main(["sign"] + argv + ["--out", out]) == 1, argv
        assert words in capsys.readouterr().err, argv
    assert not os.path.exists(out)
