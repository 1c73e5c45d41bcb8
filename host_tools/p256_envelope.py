"""A DCC User's P-256 key pair for the public-key envelope option (docs/security.md
"Public-key envelopes"): the gateway holds the public point (users.keys.NAME.public_key),
the DCC User signs with the private key in a PEM file. Signing with the `cryptography`
library; what is signed is the digest ppmid.envelope_sig gives (HMAC-SHA256 with an empty
key over the bytes the mac covers), and the 64-byte r || s goes in the `mac` field."""
import binascii
import json


class KeyFileError(Exception):
    pass


def _load(path, private):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        if private:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            try:
                key = serialization.load_pem_public_key(data)
            except ValueError:  # a private key file gives its public half too
                key = serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError) as exc:
        raise KeyFileError("%s is not a PEM %s key without a password: %s"
                           % (path, "private" if private else "public", exc))
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP256R1):
        raise KeyFileError("%s is not a P-256 (secp256r1) key" % path)
    return key


def public_point_hex(path):
    """The 65-byte uncompressed point of the key in PEM file `path` (public or private), hex."""
    from cryptography.hazmat.primitives import serialization
    key = _load(path, private=False)
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


def make_key(path):
    """Write a new P-256 private key (PEM, 0600) to `path`, which must not exist."""
    import os
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def signature(private_key, id, gbcs, expires, kid):
    """r || s (64 bytes) of ECDSA P-256 over the envelope's digest (ppmid.envelope_sig)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, Prehashed
    from ppmid import envelope
    envelope.check_id(id)
    envelope.check_id(kid, "kid", "E_ENVELOPE")
    digest = envelope.compute_mac(b"", id, expires, gbcs, kid)
    der = private_key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def command_json(key_file, id, gbcs, expires, kid):
    """A JSON command envelope signed with the private key in `key_file`, bytes."""
    sig = signature(_load(key_file, private=True), id, gbcs, expires, kid)
    obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs, newline=False).decode(), "mac": sig.hex(), "kid": kid}
    if expires is not None:
        obj["expires"] = expires
    return json.dumps(obj).encode()
