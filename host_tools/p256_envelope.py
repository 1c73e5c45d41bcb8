"""A DCC User's P-256 key pair for the public-key envelope option (docs/security.md
"Public-key envelopes"): the gateway holds the public point (users.keys.NAME.public_key),
the DCC User signs with the private key in a PEM file. Signing with the `cryptography`
library: standard ECDSA P-256 with SHA-256 over the signing input (the bytes the mac
covers, signing_input), and the 64-byte r || s goes in the `mac` field."""
import binascii
import json

from host_tools.keys import load_p256


def public_point_hex(path):
    """The 65-byte uncompressed point of the key in PEM file `path` (public or private), hex."""
    from cryptography.hazmat.primitives import serialization
    key = load_p256(path, private=False)
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


def off_curve_user(users):
    """The first DCC User (by name) of a config's "users" section whose public_key is not a
    point of P-256, or None. The config check (ppmid.config) sees only a key's form; the
    gateway checks the point at boot and, for a bad one, stops every link (config-error),
    so the tools that send a users section say it before it goes (provision, users push)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    keys = users.get("keys") if isinstance(users, dict) else None
    for name in sorted(keys if isinstance(keys, dict) else ()):
        entry = keys[name]
        if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(entry["public_key"]))
            except ValueError:
                return name
    return None


def signing_input(id, gbcs, expires, kid):
    """The bytes a signed command envelope's signature signs (docs/envelope.md "Signed
    envelopes"): exactly those its mac would cover, ppmid.envelope.compute_mac with no key, joined."""
    from ppmid import envelope
    envelope.check_id(id)
    envelope.check_id(kid, "kid", "E_ENVELOPE")
    return b"".join(bytes(p) for p in envelope.compute_mac(None, id, expires, gbcs, kid))


def topup_signing_input(id, utrn, target, expires, kid):
    """The bytes a signed top-up's signature signs: those its mac would cover
    (ppmid.topup.compute_mac with no key; docs/envelope.md "Top-ups")."""
    from ppmid import envelope, topup
    envelope.check_id(id)
    envelope.check_id(kid, "kid", "E_ENVELOPE")
    return b"".join(topup.compute_mac(None, id, expires, topup.check_target(target), utrn, kid))


def raw_signature(sig):
    """r || s (64 bytes, big-endian), the envelope's form, of an ECDSA signature in DER (what
    `cryptography`, `openssl dgst -sign` and most tools give) or already r || s (what a
    PKCS#11 HSM gives); ValueError when it is neither."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    try:
        r, s = decode_dss_signature(sig)
    except ValueError:
        if len(sig) == 64:
            return bytes(sig)
        raise ValueError("the signature is neither DER nor 64 bytes r || s (%d bytes)" % len(sig))
    if not (0 < r < 1 << 256 and 0 < s < 1 << 256):
        raise ValueError("the signature's r or s is not a P-256 number")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def parse_signing_input(data):
    """(id, gbcs, expires, kid) of a signing input (signing_input's bytes, e.g. read back
    from the file a DCC User signed); ValueError naming what is wrong."""
    from ppmid import envelope
    head = envelope.DOMAIN + b"\x01"
    if not data.startswith(head):
        raise ValueError("not a signing input: it must start with %r 01 (a command naming its kid)"
                         % envelope.DOMAIN.decode())
    fields = data[len(head):].split(b"\x00", 3)
    if len(fields) != 4 or not fields[3]:
        raise ValueError("not a signing input: kid 00 id 00 expires 00 and a GBCS command must follow")
    kid_b, id_b, exp_b, gbcs = fields
    try:
        kid, id, exp = kid_b.decode("ascii"), id_b.decode("ascii"), exp_b.decode("ascii")
    except UnicodeError:
        raise ValueError("the signing input's kid, id or expires is not ASCII")
    try:
        envelope.check_id(kid, "kid", "E_ENVELOPE")
        envelope.check_id(id)
    except envelope.EnvelopeError as exc:
        raise ValueError("in the signing input: %s" % exc.message)
    if exp and (not exp.isdigit() or exp != str(int(exp))):
        raise ValueError("the signing input's expires %r is not decimal unix seconds" % exp)
    return id, gbcs, int(exp) if exp else None, kid


def topup_signature(private_key, id, utrn, target, expires, kid):
    """r || s of ECDSA P-256 with SHA-256 over a top-up's signing input."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    return raw_signature(private_key.sign(topup_signing_input(id, utrn, target, expires, kid), ec.ECDSA(hashes.SHA256())))


def envelope_json(id, gbcs, expires, kid, sig):
    """The JSON command envelope carrying signature `sig` (r || s), bytes."""
    obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs, newline=False).decode(), "mac": sig.hex(), "kid": kid}
    if expires is not None:
        obj["expires"] = expires
    return json.dumps(obj).encode()


def signature(private_key, id, gbcs, expires, kid):
    """r || s of ECDSA P-256 with SHA-256 over the envelope's signing input."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    return raw_signature(private_key.sign(signing_input(id, gbcs, expires, kid), ec.ECDSA(hashes.SHA256())))


def load_private(path):
    """The P-256 private key in PEM file `path`; KeyFileError (host_tools.keys) saying what
    is wrong."""
    return load_p256(path, private=True)


def envelope_bytes(id, gbcs, expires, kid, sig, form):
    """The command envelope carrying signature `sig` (r || s): form "json" (one line) or
    "binary" (docs/envelope.md: the signature where the mac goes)."""
    if form == "json":
        return envelope_json(id, gbcs, expires, kid, sig) + b"\n"
    from ppmid import envelope
    return envelope.to_binary(envelope.Envelope(id, gbcs, expires, sig, kid))


def topup_binary(private_key, id, utrn, target, expires, kid):
    """The binary top-up envelope (NFC, wire; docs/envelope.md "Top-ups") carrying the
    signature of `private_key` (loaded) where the mac goes."""
    from ppmid import topup
    sig = topup_signature(private_key, id, utrn, target, expires, kid)
    return topup.to_binary(topup.TopupEnvelope(id, utrn, topup.check_target(target), expires, sig, kid))


def topup_json(key_file, id, utrn, target, expires, kid):
    """A JSON top-up envelope (docs/envelope.md "Top-ups") signed with the private key in
    `key_file`, bytes."""
    from ppmid import topup
    sig = topup_signature(load_private(key_file), id, utrn, target, expires, kid)
    obj = {"id": id, "utrn": utrn, "target": topup.check_target(target), "mac": sig.hex(), "kid": kid}
    if expires is not None:
        obj["expires"] = expires
    return json.dumps(obj).encode()


def command_json(key_file, id, gbcs, expires, kid):
    """A JSON command envelope signed with the private key in `key_file`, bytes."""
    return envelope_json(id, gbcs, expires, kid, signature(load_private(key_file), id, gbcs, expires, kid))
