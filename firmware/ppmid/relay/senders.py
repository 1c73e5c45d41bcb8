# Keys per DCC User with roles (issue #22, docs/security.md "Keys per DCC User"): each
# sender registered in the config (`users.keys`) has its own 32-byte envelope key on
# flash, or instead an ECDSA P-256 public key in the config with which its signed
# envelopes are checked (ppmid.envelope_sig, docs/envelope.md "Signed envelopes"), a role (`users.roles`: a command profile name, a DUIS role `duis:IS` whose codes
# gbcs/eligibility.py lists, or a list of message codes) and the
# GBCS business originator ids it may send as. An envelope that names its key (`kid`,
# docs/envelope.md) is checked with that key only; one without a kid is tried with the
# legacy key, then each sender's key, and the one whose MAC verifies names the sender (at
# most MAX_SENDERS HMACs). The gateway's single envelope key keeps working when `users.legacy_key` is
# true (the default), with no role or originator limit beyond the device lists and profile.
# Loaded only when the config registers senders (ppmid.boot); the relay calls verify()
# where it would check the single key, and check() once the GBCS message is decoded.
from array import array
from micropython import const

from ppmid.errors import PpmidError, E_AUTH, E_ID
from ppmid.gbcs.validate import admits

E_REVOKED = "E_REVOKED"          # the envelope verifies with a key the config revoked
E_ORIGINATOR = "E_ORIGINATOR"    # the GBCS originator is not one this sender may use
E_ROLE = "E_ROLE"                # the message code is outside this sender's role

MAX_SENDERS = 16
# users.keys empty and users.legacy_key false (the last sender removed by a signed users
# update, a lockdown): every envelope is refused E_AUTH with this sentence (review r2 R2-2)
NONE_REGISTERED = ("no DCC User is registered on this gateway and its legacy key is off "
                   "(users.legacy_key false): every command is refused")
USER_KEYS = "/secrets/users/"   # + NAME.key: a DCC User's 32-byte envelope key
_TOPUP_CODE = const(0x0116)  # PECS01, the ESME top-up use case (docs/utrn.md)
_SIG_LEN = const(64)         # ppmid.envelope_sig.SIG_LEN: a signature where a mac goes


class SenderError(PpmidError):
    pass


def load(root, users, legacy_key):
    """Senders of a checked `users` config section (ppmid.relay.users_config), their keys
    read from flash; ConfigError when a key is missing or not 32 bytes. A revoked key
    needs no file: it is refused before its mac is looked at. None for a section with no
    keys and the legacy key on: the relay checks that key alone. With no keys and the
    legacy key off, Senders that refuse everything (E_AUTH, NONE_REGISTERED), said on the
    console: not None, which would let the legacy key in with no limit (review r2 R2-2)."""
    if not users["keys"]:
        if users["legacy_key"]:
            return None
        print("PPMID users: " + NONE_REGISTERED)
    from ppmid.errors import ConfigError
    from ppmid.gbcs import profiles
    import binascii
    out = []
    for name in users["keys"]:
        k = users["keys"][name]
        revoked = k.get("revoked", False)
        if "public_key" in k:  # signs with ECDSA P-256: no secret of it on the gateway
            key = binascii.unhexlify(k["public_key"])
            _check_point(name, key)
            out.append((name, key, set(binascii.unhexlify(o) for o in k["originators"]), _codes(users, k, profiles), revoked))
            continue
        key = b""
        try:
            with open(root + USER_KEYS + name + ".key", "rb") as f:
                key = f.read()
        except OSError:
            if not revoked:
                raise ConfigError("envelope key of %s missing at %s%s.key" % (name, USER_KEYS, name))
        if len(key) != 32 and not revoked:
            raise ConfigError("envelope key of %s must be 32 bytes, not %d" % (name, len(key)))
        origs = set(binascii.unhexlify(o) for o in k["originators"])
        out.append((name, key, origs, _codes(users, k, profiles), revoked))
    return Senders(legacy_key if users["legacy_key"] else None, out)


def _codes(users, k, profiles):
    # the message codes of the sender's role, ascending in an array('H') (about half the
    # heap of a set: docs/memory.md, session 10; looked up by validate.admits), or None: any
    role = users["roles"][k["role"]]
    if not isinstance(role, str):
        codes = role
    elif role.startswith("duis:"):
        from ppmid.gbcs import eligibility
        try:
            codes = eligibility.codes(eligibility.role(role))
        finally:
            from ppmid.modules import unload
            unload("ppmid.gbcs.eligibility")  # its table is needed only here
    else:
        codes = profiles.codes(role)
    return None if codes is None else array("H", sorted(set(codes)))


def _check_point(name, raw):
    # a public key that is no point of the curve would refuse every envelope: say so at
    # boot. The verifier is dropped again until a signed envelope comes.
    from ppmid.errors import ConfigError
    from ppmid.update import p256
    try:
        p256.public_key(raw)
    except ValueError as exc:
        raise ConfigError("users.keys.%s.public_key: %s" % (name, exc))
    finally:
        from ppmid.modules import unload
        unload("ppmid.update.p256")


def _check_signature(name, public_key, env, known, via):
    from ppmid.envelope_sig import check
    check(name, public_key, env, known, via)


class Senders:
    """senders: [(name, key (32 bytes, or a 65-byte P-256 public key), originators (set of 8-byte ids), codes (ascending
    array('H'), or None: any),
    revoked)]; legacy_key: the gateway's single key, or None when it no longer counts."""

    def __init__(self, legacy_key, senders):
        self.legacy_key = legacy_key
        self.senders = senders
        # id -> the name of the sender whose accept journaled it (None: the legacy key),
        # for ids the relay still knows (journal or recent results); RAM only
        self.owners = {}

    def own(self, relay, id, sender):
        """relay.core's accept journaled `id` for `sender`: it owns the id. Ids the relay
        no longer knows are dropped here, so the map stays as small as what it knows."""
        owners = self.owners
        for k in list(owners):
            if k not in relay.journal.by_id and relay._recent_result(k) is None:
                del owners[k]
        owners[id] = None if sender is None else sender[0]

    def check_known(self, id, sender, topup):
        """A redelivery of `id`, which the relay knows, verified as `sender`: refused
        (E_ID) when another sender owns it, so one DCC User's key cannot read (nor, by an
        NFC phone's delivery, consume) another's command or top-up (review_w6-1). An id
        whose owner is not known (accepted before a restart: owners is RAM; a users update
        carries them over) gets the role check its kind needs that can be made without the GBCS: a
        top-up's; a command's redelivery is answered by its status alone."""
        if id in self.owners:
            owner = self.owners[id]
            if owner != (None if sender is None else sender[0]):
                raise SenderError(E_ID, "id %s is in use by another sender" % id)
        elif topup and sender is not None:
            self.check_topup(sender)

    def verify(self, env, via="mqtt"):
        """The sender whose key verifies env's MAC (None: the legacy key), or raise. `via`:
        the road it came by (a signature's failed checks are limited per road class)."""
        if not self.senders and self.legacy_key is None:
            raise SenderError(E_AUTH, NONE_REGISTERED)
        if env.kid is not None:
            return self._named(env, via)
        if len(env.mac) == _SIG_LEN:
            raise SenderError(E_AUTH, "envelope carries a signature but names no key (kid)")
        if self.legacy_key is not None:
            try:
                env.verify(self.legacy_key)
                return None
            except PpmidError:
                pass
        for s in self.senders:
            if len(s[1]) != 32:  # a public key: its envelopes name it
                continue
            try:
                env.verify(s[1])
            except PpmidError:
                continue
            if s[4]:
                raise SenderError(E_REVOKED, "envelope key of %s is revoked" % s[0])
            return s
        raise SenderError(E_AUTH, "envelope mac does not verify with any key of this gateway")

    def _named(self, env, via):
        for s in self.senders:
            if s[0] == env.kid:
                if s[4]:
                    raise SenderError(E_REVOKED, "envelope key of %s is revoked" % s[0])
                signed = len(env.mac) == _SIG_LEN
                if len(s[1]) != 32:
                    if not signed:
                        raise SenderError(E_AUTH, "%s is registered with a public key: its envelopes carry a 64-byte signature in mac" % s[0])
                    # E_AUTH, or E_RATE after too many bad ones (or known ids: review_w6-7)
                    _check_signature(s[0], s[1], env, env.id in self.owners, via)
                    return s
                if signed:
                    raise SenderError(E_AUTH, "envelope carries a signature, but %s holds a symmetric key (mac)" % s[0])
                try:
                    env.verify(s[1])
                except PpmidError:
                    raise SenderError(E_AUTH, "envelope mac does not verify with the key of %s" % s[0])
                return s
        raise SenderError(E_AUTH, "envelope names key %s, which is not registered on this gateway" % env.kid)

    def check(self, sender, msg):
        """Refuse a GBCS message this sender may not send (nothing for the legacy key)."""
        if sender is None:
            return
        if bytes(msg.originator) not in sender[2]:
            raise SenderError(E_ORIGINATOR, "%s may not send as originator %s" %
                              (sender[0], "".join("%02X" % b for b in msg.originator)))
        if sender[3] is not None and not admits(sender[3], msg.message_code):
            raise SenderError(E_ROLE, "message code 0x%04X is outside the role of %s" % (msg.message_code, sender[0]))

    def check_topup(self, sender):
        """Refuse a UTRN top-up from a sender whose role does not hold the top-up use case
        (PECS01, message code 0x0116, what a top-up at the ESME is under GBCS)."""
        if sender[3] is not None and not admits(sender[3], _TOPUP_CODE):
            raise SenderError(E_ROLE, "top-ups (PECS01) are outside the role of %s" % sender[0])
