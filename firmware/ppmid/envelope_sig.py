# The public-key envelope (keys per DCC User, docs/envelope.md "Signed envelopes"): a DCC
# User registered with an ECDSA P-256 public key (users.keys.NAME.public_key) puts in the
# JSON envelope's `mac` field, instead of a 32-byte HMAC, a 64-byte signature r || s whose
# message digest is HMAC-SHA256 with an empty key over the very bytes the mac covers
# (ppmid.envelope.compute_mac(b"", ...)). An empty-key HMAC is a public hash of those
# bytes; it lets the signature reuse the envelope's own code, so the always-loaded module
# does not grow (docs/memory.md). JSON only: the binary form (NFC, wire) has no signature
# yet. Imported by ppmid.relay.senders when a signed envelope comes.
from ppmid.envelope import compute_mac

SIG_LEN = 64


def digest(env):
    """The 32 bytes the signature signs (ECDSA's e)."""
    return compute_mac(b"", env.id, env.expires, env.gbcs, env.kid)


def verifies(public_key, env):
    """True when env's signature verifies with public_key (65-byte uncompressed point).
    update/p256.py is imported on the first signed envelope and stays."""
    from ppmid.update import p256
    return len(env.mac) == SIG_LEN and p256.verify_digest(p256.public_key(public_key), digest(env), bytes(env.mac))
