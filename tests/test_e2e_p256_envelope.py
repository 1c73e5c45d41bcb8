"""The public-key envelope option end to end (docs/envelope.md "Signed envelopes"): the
emulated board is provisioned with a DCC User registered by its P-256 public key (role
duis:IS, the import supplier's codes from DUIS eligibility), the gateway's single key off.
`ppmid send --private-key` signs with `cryptography`; the gateway checks the signature with
its own P-256 verifier under MicroPython. A wrong private key is refused E_AUTH, a code
outside the role E_ROLE; nothing refused reaches the CH."""
import binascii
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import emulate as E
from host_tools import mpcompat
from host_tools import p256_envelope as P

mpcompat.install()

from ppmid.gbcs import decode, eligibility  # noqa: E402


def _pick():
    # two import-supplier commands and then one outside that role, one originator, in counter order
    admit = eligibility.codes("IS")
    first = None
    inside, outside = [], None
    for name, buf in E.renumbered_commands(400):
        m = decode(buf)
        if first is None and m.message_code in admit:
            first = bytes(m.originator)
        if first is None or bytes(m.originator) != first:
            continue
        if len(inside) < 2 and m.message_code in admit:
            inside.append(buf)
        elif len(inside) == 2 and m.message_code not in admit:
            outside = buf
            break
    assert len(inside) == 2 and outside is not None
    return inside, outside


def _pem(path):
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    inside, outside = _pick()
    d = tmp_path_factory.mktemp("e2e-p256")
    key = _pem(d / "supplier-pk.pem")
    orig = binascii.hexlify(bytes(decode(inside[0]).originator)).decode().upper()
    users = {"keys": {"supplier-pk": {"role": "import-supplier", "originators": [orig],
                                      "public_key": P.public_point_hex(key)}},
             "roles": {"import-supplier": "duis:IS"}, "legacy_key": False}
    over = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15}, "users": users}
    e = E.Emulation(d / "run", overrides=over, log=None)
    with e:
        e.picked = (inside, outside)
        e.private_key = key
        e.wrong_key = _pem(d / "other.pem")
        yield e


def _ppmid(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"]
                          + [str(a) for a in args], cwd=root, capture_output=True, text=True, timeout=120)


def test_signed_envelopes_end_to_end(emu):
    from host_tools.broker import Broker
    (a, b), c = emu.picked
    before = len(emu.ncp.received)
    Broker(emu.broker_dir, users=()).add_identity("dcc-user-supplier-pk")
    base = ["send", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--timeout", 60, "--user", "supplier-pk"]

    def send(key, buf, id):
        r = _ppmid(*base, "--private-key", key, "--gbcs", binascii.hexlify(buf).decode(), "--id", id)
        return r, json.loads(r.stdout.splitlines()[-1]) if r.stdout.strip() else None

    r, last = send(emu.private_key, a, "pk-1")
    assert r.returncode == 0 and last["status"] == "response", r.stdout + r.stderr
    r, last = send(emu.wrong_key, b, "pk-wrong")
    assert r.returncode == 1 and last["error"]["code"] == "E_AUTH" and "signature" in last["error"]["message"]
    r, last = send(emu.private_key, b, "pk-2")
    assert r.returncode == 0 and last["status"] == "response", r.stdout + r.stderr
    r, last = send(emu.private_key, c, "pk-role")
    assert r.returncode == 1 and last["error"]["code"] == "E_ROLE"
    # a top-up signed by the same user (duis:IS holds PECS01): applied by the meter; with
    # the wrong key E_AUTH and the meter untouched
    from host_tools import utrn as U
    m = emu.ncp.ch.esme
    credit0 = m.credit
    utrn = U.test_utrn(11, "pennies", 321)
    top = base + ["--utrn", utrn, "--target", E.ESME]
    r = _ppmid(*top, "--private-key", emu.wrong_key, "--id", "pk-topup-wrong")
    assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_AUTH", r.stdout + r.stderr
    r = _ppmid(*top, "--private-key", emu.private_key, "--id", "pk-topup")
    last = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 0 and last["status"] == "topped-up", r.stdout + r.stderr
    assert m.credit == credit0 + 321
    # the CLI's own refusals
    r = _ppmid(*base, "--private-key", emu.private_key, "--key-file", emu.private_key, "--gbcs", "00")
    assert r.returncode == 1 and "one or the other" in r.stderr
    assert emu.ncp.received[before:] == [a, b]
    assert "PPMID crashed" not in emu.board.console_text()
