# The public-key envelope (keys per DCC User, docs/envelope.md "Signed envelopes"): a DCC
# User registered with an ECDSA P-256 public key (users.keys.NAME.public_key) sends, in
# place of the mac, `sig`: r || s (64 bytes, hex) over SHA-256 of the very bytes the mac
# would cover (ppmid.envelope.compute_mac with no key). The JSON form only: the binary
# form (NFC, wire) has no signature yet. Imported by ppmid.envelope only when an envelope
# carries `sig`, and by ppmid.relay.senders to check one; kept out of the always-loaded
# envelope module for the heap.
import binascii
from ppmid.envelope import EnvelopeError, from_json_obj as _unsigned, compute_mac
from ppmid.errors import E_ENVELOPE

SIG_LEN = 64


def from_json_obj(obj, max_gbcs, gbcs=None):
    """Envelope whose `mac` holds the 64-byte signature, or EnvelopeError (E_ENVELOPE)."""
    if "mac" in obj or obj.get("kid") is None:
        raise EnvelopeError(E_ENVELOPE, "a signed envelope names its key (kid) and has no mac")
    text = obj["sig"]
    if not isinstance(text, str) or len(text) != 2 * SIG_LEN:
        raise EnvelopeError(E_ENVELOPE, "sig must be %d hex digits (r || s)" % (2 * SIG_LEN))
    try:
        sig = binascii.unhexlify(text)
    except ValueError:
        raise EnvelopeError(E_ENVELOPE, "sig is not hex")
    rest = {}
    for k in obj:
        if k != "sig":
            rest[k] = obj[k]
    rest["mac"] = text[:64]  # parsed and checked as the unsigned form, then the mac replaced
    env = _unsigned(rest, max_gbcs, gbcs)
    env.mac = sig
    return env


def verifies(public_key, env):
    """True when env's signature verifies with public_key (65-byte uncompressed point).
    update/p256.py is imported on the first signed envelope and stays."""
    from ppmid.update import p256
    digest = compute_mac(None, env.id, env.expires, env.gbcs, env.kid)
    return p256.verify_digest(p256.public_key(public_key), digest, bytes(env.mac))
