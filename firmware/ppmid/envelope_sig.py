# The public-key envelope (keys per DCC User, docs/envelope.md "Signed envelopes"): a DCC
# User registered with an ECDSA P-256 public key (users.keys.NAME.public_key) puts in the
# envelope's `mac` field, instead of a 32-byte HMAC, a 64-byte signature r || s:
# standard ECDSA P-256 with SHA-256 over the signing input, the very bytes the mac covers
# (ppmid.envelope.compute_mac with no key, concatenated). Standard, so that a DCC User's
# HSM or `openssl dgst -sha256 -sign` makes it with no tool of ours. The same signature
# serves the JSON and the binary form (NFC, wire); a top-up is signed over its own covered
# bytes (ppmid.topup.compute_mac with no key: its own domain string). Imported by
# ppmid.relay.senders when a signed envelope comes.
import hashlib

from ppmid.envelope import compute_mac

SIG_LEN = 64


def digest(env):
    """SHA-256 of the signing input (ECDSA's e), hashed part by part: the command is not
    copied to join them."""
    h = hashlib.sha256()
    if hasattr(env, "gbcs"):
        parts = compute_mac(None, env.id, env.expires, env.gbcs, env.kid)
    else:  # a top-up (ppmid.topup is loaded: it made env)
        from ppmid import topup
        parts = topup.compute_mac(None, env.id, env.expires, env.target, env.utrn, env.kid)
    for p in parts:
        h.update(p)
    return h.digest()


def verifies(public_key, env):
    """True when env's signature verifies with public_key (65-byte uncompressed point).
    update/p256.py is imported on the first signed envelope and stays."""
    from ppmid.update import p256
    return len(env.mac) == SIG_LEN and p256.verify_digest(p256.public_key(public_key), digest(env), bytes(env.mac))
