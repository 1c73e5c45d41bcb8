# mp-heapsize: 384K  (the P-256 verifier, the relay and their stand-ins in one 64-bit interpreter: at 256K, and at 320K from a longer checkout path, a MemoryError once the journal kept spent counters (session 12); the app's own 32-bit figures are the heap32 bench rows)
# A DCC User registered with an ECDSA P-256 public key (users.keys.NAME.public_key): its
# envelopes (JSON and binary, commands and top-ups) carry a 64-byte signature r || s in
# `mac` (ppmid.envelope_sig), checked with update/p256.py. Signatures made by the `cryptography` library (p256_envelope_vectors).
# CPython and MicroPython.
import json
import sys
from ppmid import config as C
from ppmid import envelope
from ppmid.errors import ConfigError, PpmidError
from test_relay_support import KEY, ESME, PPMID, SUPPLIER, gbcs_message
from p256_senders_rig import HMAC_KEY, users_section, root, rig, rig_role, one_failed_check_later, json_text, env
import p256_envelope_vectors as V


async def test_a_good_signature_is_accepted_and_held_to_the_role():
    r = rig()
    assert "ppmid.update.p256" not in sys.modules  # checked at boot, dropped again
    assert (await r.accept_env(env(json_text("p1", 10, V.GOOD))))["status"] == "accepted"
    assert "ppmid.update.p256" in sys.modules  # loaded by the first signed envelope
    out = await r.accept_env(env(json_text("p2", 11, V.ROLE, code=0x0050)))
    assert out["error"] == "E_ROLE" and V.KID in out["message"]
    assert sorted(r.journal.by_id) == ["p1"]


async def test_bad_signatures_are_refused_with_codes_and_nothing_is_queued():
    r = rig()
    # another key's signature; the body tampered (counter 11 under the signature of 10)
    for text in (json_text("p1", 10, V.OTHER_KEY), json_text("p1", 11, V.GOOD)):
        out = await r.accept_env(env(text))
        assert out["error"] == "E_AUTH" and "signature does not verify" in out["message"], out
        one_failed_check_later(r)
    # one bit of the signature flipped; r or s out of range (zero)
    flipped = V.GOOD[:-1] + ("0" if V.GOOD[-1] != "0" else "1")
    for sig in (flipped, "00" * 64, V.GOOD[:64] + "00" * 32):
        assert (await r.accept_env(env(json_text("p1", 10, sig))))["error"] == "E_AUTH"
        one_failed_check_later(r)
    # a signature naming no key
    no_kid = json.loads(json_text("p1", 10, V.GOOD))
    del no_kid["kid"]
    out = await r.accept_env(envelope.from_json_obj(no_kid, 4096))
    assert out["error"] == "E_AUTH" and "names no key" in out["message"]
    # the public-key user sending a 32-byte mac; a symmetric key's name on a signature
    mac_env = envelope.sign(HMAC_KEY, "p3", gbcs_message(1, 12, SUPPLIER, ESME), None, V.KID)
    out = await r.accept_env(mac_env)
    assert out["error"] == "E_AUTH" and "public key" in out["message"] and "64-byte signature in mac" in out["message"]
    out = await r.accept_env(env(json_text("p4", 13, V.GOOD, kid="supplier-a")))
    assert out["error"] == "E_AUTH" and "symmetric" in out["message"]
    assert not r.journal.by_id


def test_malformed_signed_envelopes_are_e_envelope():
    for text in (json_text("p1", 10, V.GOOD_DER),            # DER, not r || s
                 json_text("p1", 10, V.GOOD[:-2]),           # 63 bytes
                 json_text("p1", 10, V.GOOD + "00"),         # 65 bytes
                 json_text("p1", 10, "zz" * 64)):            # not hex
        try:
            env(text)
            raise AssertionError("accepted %s" % text[:60])
        except PpmidError as exc:
            assert exc.code == "E_ENVELOPE", (exc.code, exc.message)
    try:
        env(json_text("p1", 10, V.GOOD[:-2]))
    except PpmidError as exc:  # the message names both lengths the field may have
        assert "64 hex digits (HMAC) or 128 (a P-256 signature)" in exc.message, exc.message


UTRN = "73943333457189043313"


def _topup(mac, id="t1", utrn=UTRN, kid=V.KID):
    from ppmid import topup
    return topup.from_json_obj({"id": id, "utrn": utrn, "target": ESME, "mac": mac, "kid": kid})


async def test_a_signed_top_up_is_accepted_and_a_bad_one_refused():
    from ppmid import topup
    r = rig()
    # the command's signature, a 32-byte mac, another top-up's signature: E_AUTH
    for env, words in ((_topup(V.GOOD), "signature does not verify"), (_topup("00" * 32), "public key"),
                       (_topup(V.TOPUP, id="t2"), "signature does not verify"),
                       (_topup(V.TOPUP, utrn=UTRN[:-1] + "4"), "signature does not verify")):
        out = await r.accept_env(env)
        assert out["error"] == "E_AUTH" and words in out["message"], out
        one_failed_check_later(r)
    assert not r.journal.by_id
    # JSON, and the same signature in the binary form (NFC, wire)
    out = await r.accept_env(_topup(V.TOPUP))
    assert out["status"] == "accepted", out   # (once refused in CI under load, not since: the refusal says why)
    binary = topup.to_binary(_topup(V.TOPUP))
    assert len(binary) == 3 + 2 + 1 + len(V.KID) + 8 + 20 + 64
    assert envelope.from_binary_any(binary, 4096).mac == bytes.fromhex(V.TOPUP)
    assert sorted(r.journal.by_id) == ["t1"]


async def test_a_top_up_outside_the_role_is_e_role():
    r = rig_role([0x0007])
    out = await r.accept_env(_topup(V.TOPUP))
    assert out["error"] == "E_ROLE" and "top-ups" in out["message"], out


async def test_signed_binary_commands_are_accepted_and_bad_ones_refused():
    r = rig()
    gbcs = gbcs_message(1, 10, SUPPLIER, ESME)
    binary = envelope.to_binary(envelope.Envelope("p1", gbcs, None, bytes.fromhex(V.GOOD), V.KID))
    assert len(binary) == 3 + 2 + 1 + len(V.KID) + 2 + len(gbcs) + 64
    # one byte of the command changed; the signature of another key: E_AUTH
    bad = bytearray(binary)
    bad[-70] ^= 1
    other = binary[:-64] + bytes.fromhex(V.OTHER_KEY)
    for buf in (bad, other):
        out = await r.accept_env(envelope.from_binary_any(bytes(buf), 4096), "nfc-phone")
        assert out["error"] == "E_AUTH" and "signature does not verify" in out["message"], out
    # a trailer that is neither a mac (32) nor a signature (64): E_ENVELOPE
    for buf in (binary[:-1], binary + b"\x00", binary[:-64] + bytes(48)):
        try:
            envelope.from_binary_any(buf, 4096)
            raise AssertionError("accepted %d bytes" % len(buf))
        except PpmidError as exc:
            assert exc.code == "E_ENVELOPE", exc.code
    assert (await r.accept_env(envelope.from_binary_any(binary, 4096), "nfc-phone"))["status"] == "accepted"
    assert sorted(r.journal.by_id) == ["p1"]


def test_a_gateway_without_keys_per_user_refuses_a_signed_binary_envelope():
    env = envelope.from_binary_any(envelope.to_binary(envelope.Envelope(
        "p1", gbcs_message(1, 10, SUPPLIER, ESME), None, bytes.fromhex(V.GOOD))), 4096)
    try:
        env.verify(KEY)
        raise AssertionError("a signature passed for a mac")
    except PpmidError as exc:
        assert exc.code == "E_AUTH"


async def test_a_revoked_public_key_is_refused():
    r = rig(revoked=True)
    assert (await r.accept_env(env(json_text("p1", 10, V.GOOD))))["error"] == "E_REVOKED"


def test_bad_public_keys_are_config_errors():
    from ppmid.relay import senders as S
    not_on_curve = V.PUBLIC[:-2] + ("00" if V.PUBLIC[-2:] != "00" else "01")
    for pk, words in (("05" + V.PUBLIC[2:], "130 hex digits"), (V.PUBLIC[:-2], "130 hex digits"),
                      (not_on_curve, "not a point")):
        try:
            cfg = C.validate({"gateway": PPMID, "users": users_section(public_key=pk)})
            S.load(root(), cfg["users"], KEY)
            raise AssertionError("accepted %s" % pk)
        except ConfigError as exc:
            assert words in exc.message and V.KID in exc.message, exc.message
