# Config checks of the `users` section (keys per DCC User, ppmid.relay.senders): boot-only
# (ppmid.boot.BOOT_ONLY), imported by ppmid.config only when a config has the section.
from ppmid.errors import ConfigError
from ppmid.config import eui_bytes

# the DUIS user roles of ppmid.gbcs.eligibility.ROLES (a test keeps the two equal), here so
# that checking a config does not load the eligibility table
_DUIS_ROLES = ("ED", "ES", "GS", "GT", "IS", "OU")


def check(u, profiles):
    """The users section with its defaults, checked; raises ConfigError."""
    if not isinstance(u, dict):
        raise ConfigError("users must be an object of keys, roles, legacy_key, sequence")
    for k in u:
        if k not in ("keys", "roles", "legacy_key", "sequence"):
            raise ConfigError("unknown users key %r" % k)
    out = {"keys": u.get("keys", {}), "roles": u.get("roles", {}), "legacy_key": u.get("legacy_key", True),
           "sequence": u.get("sequence", 0)}
    seq = out["sequence"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ConfigError("users.sequence must be a whole number (the last signed users update applied)")
    roles = out["roles"]
    if not isinstance(roles, dict):
        raise ConfigError("users.roles must be an object of role -> profile name or list of message codes")
    for r in roles:
        c = roles[r]
        if isinstance(c, str) and c.startswith("duis:"):
            if c[5:] not in _DUIS_ROLES:
                raise ConfigError("users.roles.%s: %r is not a DUIS role (duis: and one of %s)" % (r, c, ", ".join(_DUIS_ROLES)))
        elif not (c in profiles if isinstance(c, str) else isinstance(c, list) and all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 0xFFFF for x in c)):
            raise ConfigError("users.roles.%s must be one of %s, a DUIS role (duis:IS ...) or a list of message codes"
                              % (r, ", ".join(profiles)))
    keys = out["keys"]
    if not isinstance(keys, dict) or len(keys) > 16:
        raise ConfigError("users.keys must be an object of at most 16 senders")
    for name in keys:
        k = keys[name]
        if not 1 <= len(name) <= 32 or not all(c.isalpha() or c.isdigit() or c in "-_." for c in name):
            raise ConfigError("users.keys name %r: 1 to 32 letters, digits, - _ ." % name)
        if not isinstance(k, dict) or k.get("role") not in roles:
            raise ConfigError("users.keys.%s needs a role named in users.roles" % name)
        for f in k:
            if f not in ("role", "originators", "revoked", "public_key"):
                raise ConfigError("unknown users.keys.%s key %r" % (name, f))
        origs = k.get("originators")
        if not isinstance(origs, list) or not origs:
            raise ConfigError("users.keys.%s.originators must list the GBCS originator ids it may use" % name)
        for o in origs:
            eui_bytes(o, "users.keys.%s originator" % name)
        pk = k.get("public_key")
        if pk is not None and not (isinstance(pk, str) and len(pk) == 130 and pk[:2] == "04" and
                                   all(c in "0123456789abcdefABCDEF" for c in pk)):
            raise ConfigError("users.keys.%s.public_key must be a P-256 point: 130 hex digits starting 04" % name)
        if not isinstance(k.get("revoked", False), bool):
            raise ConfigError("users.keys.%s.revoked must be true or false" % name)
    if not isinstance(out["legacy_key"], bool):
        raise ConfigError("users.legacy_key must be true or false")
    return out
