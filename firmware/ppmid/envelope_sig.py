# The public-key envelope (keys per DCC User, docs/envelope.md "Signed envelopes"): a DCC
# User registered with an ECDSA P-256 public key (users.keys.NAME.public_key) puts in the
# envelope's `mac` field, instead of a 32-byte HMAC, a 64-byte signature r || s:
# standard ECDSA P-256 with SHA-256 over the signing input, the very bytes the mac covers
# (ppmid.envelope.compute_mac with no key, concatenated). Standard, so that a DCC User's
# HSM or `openssl dgst -sha256 -sign` makes it with no tool of ours. The same signature
# serves the JSON and the binary form (NFC, wire); a top-up is signed over its own covered
# bytes (ppmid.topup.compute_mac with no key: its own domain string). Imported by
# ppmid.relay.senders when a signed envelope comes.
#
# A verify costs milliseconds on the unix port and about a second on an ESP32 (estimated),
# inline in the intake, and anyone who may publish on the gateway's cmd topic can name a
# public-key user's kid with 128 random hex digits. So the signatures that FAIL are
# counted per kid in a token bucket (relay/ratelimit.py): once a kid has used its failed
# checks, its next signed envelope is refused with E_RATE without being verified, until the
# bucket refills. The allowance is per road class as well as per kid (review r12-1): the
# local roads (NFC, wire) need no credential, so a forged tap naming a supplier's kid must
# not use up the allowance of that supplier's MQTT commands (nor MQTT forgeries a tap's).
# Good signatures take no token, and the very bytes of one that verified lately (a
# redelivery, or a replay: the relay answers it as a duplicate) are not verified again.
# The cheaper checks (revoked kid, size, signature length, the kid being registered
# with a public key) come before, in senders.
import hashlib

from micropython import const

from ppmid.envelope import compute_mac
from ppmid.errors import E_AUTH
from ppmid.clock import ticks_ms, ticks_diff

SIG_LEN = 64
E_RATE = "E_RATE"     # as ppmid.relay.core's: the same word for "too many, try later"
FAILS_BURST = const(3)           # failed checks a kid may have in a row ...
FAILS_PER_S = 1 / 60             # ... and one more each minute after that
# ppmid.relay.senders.MAX_SENDERS (16) twice: a bucket per public-key user and road class
_MAX_BUCKETS = const(32)

_KEEP_VERIFIED = const(4)        # signed bytes (key, digest, signature) that verified lately
# full verifies of signed envelopes naming an id the relay knows (a redelivery the 4 above
# no longer hold, or skimmed tags replayed in turn: review_w6-7) a kid may have in a row,
# and one more each 10 s after that: a verify is ~1 s inline on an ESP32 (estimated)
AGAIN_BURST = const(3)
AGAIN_PER_S = 1 / 10

now_ms = ticks_ms   # the buckets' clock (a test gives another)
_failed = None      # the buckets, made with the first signed envelope
_again = None       # the known ids' buckets, made with the first such envelope
_verified = []      # the last _KEEP_VERIFIED signed bytes that verified: not verified again


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


def check(name, public_key, env, known=False, via="mqtt"):
    """Return when env's signature verifies with public_key (the key of sender `name`); else
    SenderError: E_RATE, not verified, while `name` has no failed checks left; E_AUTH when
    it does not verify (which uses one of them). The same signed bytes as one of the last
    _KEEP_VERIFIED that verified (a redelivery, a replay the relay answers as a duplicate)
    pass without a second verify. `known`: env names an id the relay knows (senders:
    one accepted since the boot): its verifies take tokens of their own (AGAIN_BURST, then
    E_RATE unverified), so replaying good envelopes in turn cannot hold the loop in
    verifies either. Both allowances are per road class: `via` "mqtt", or any local road
    ("nfc-phone", "nfc-tag", "serial"), which share one. Called by ppmid.relay.senders only."""
    from ppmid.relay.senders import SenderError
    global _failed, _again
    if len(env.mac) != SIG_LEN:
        raise SenderError(E_AUTH, "envelope signature does not verify with the public key of %s" % name)
    e, sig = digest(env), bytes(env.mac)
    signed = public_key + e + sig
    if signed in _verified:
        return
    if _failed is None:
        from ppmid.relay.ratelimit import TokenBuckets
        _failed = TokenBuckets(FAILS_PER_S, FAILS_BURST, ticks_diff, _MAX_BUCKETS)
    now = now_ms()
    # the buckets' key: the kid for MQTT, the kid and the road class for the local roads
    key = name if via == "mqtt" else (name, "local")
    wait = _failed.wait_ms(key, now)
    if wait:
        raise _limited("too many bad signatures under %s%s: the next is checked in %d s", name, via, wait)
    if known:
        if _again is None:
            from ppmid.relay.ratelimit import TokenBuckets
            _again = TokenBuckets(AGAIN_PER_S, AGAIN_BURST, ticks_diff, _MAX_BUCKETS)
        wait = _again.wait_ms(key, now)
        if wait:
            raise _limited("too many envelopes under %s%s naming commands already known: "
                           "the next is checked in %d s", name, via, wait)
        _again.take(key, now)
    from ppmid.update import p256
    if not p256.verify_digest(p256.public_key(public_key), e, sig):
        _failed.take(key, now)
        raise SenderError(E_AUTH, "envelope signature does not verify with the public key of %s" % name)
    _verified.append(signed)
    if len(_verified) > _KEEP_VERIFIED:
        _verified.pop(0)


def _limited(says, name, via, wait):
    # E_RATE before any verify: it proves no key, and the id is whoever sent it's choice, so
    # the relay neither remembers it among the recent results nor publishes it under that
    # id, as E_AUTH (relay/refusals.py refused; review r2 R2-5)
    from ppmid.relay.senders import SenderError
    road = "" if via == "mqtt" else " on the local roads (NFC, wire)"
    exc = SenderError(E_RATE, says % (name, road, (wait + 999) // 1000))
    exc.proves_no_key = True
    return exc


def verifies(public_key, env):
    """True when env's signature verifies with public_key (65-byte uncompressed point).
    update/p256.py is imported on the first signed envelope and stays."""
    from ppmid.update import p256
    return len(env.mac) == SIG_LEN and p256.verify_digest(p256.public_key(public_key), digest(env), bytes(env.mac))
