"""Signed users updates (docs/security.md "Signed users updates"): what `ppmid users push`
runs. Builds a gateway's new `users` section (keys per DCC User, roles, revocations), wraps
each new key under the gateway's config key, signs the document with the operator's update
key (ECDSA P-256, the key of `ppmid release`), publishes it on ppmid/v1/EUI/update/config
and waits for the gateway's status. The gateway side: firmware/ppmid/relay/users_update.py.

The host keeps what each gateway was last given in STATE_DIR/keys/EUI.users.json
({"sequence": N, "users": {...}}, written by `ppmid provision` and by every applied push):
the next push starts from it and carries sequence N + 1. A rotated key is kept beside the
old one (NAME.key.new) until the gateway says "applied", then takes its place.
"""
import hmac
import hashlib
import json
import os
import queue
import secrets
import threading
import time

from host_tools.users_registry import UsersUpdateError, read_registry, registry_path, write_registry  # noqa: F401


def wrap(config_key, name, key, nonce=None):
    """A new key as the gateway unwraps it (firmware/ppmid/relay/users_update.py)."""
    nonce = nonce or secrets.token_bytes(16)
    pad = hmac.new(config_key, b"ppmid-users-wrap-v1\x00" + nonce + b"\x00" + name.encode(), hashlib.sha256).digest()
    wrapped = bytes(a ^ b for a, b in zip(key, pad))
    check = hmac.new(config_key, b"ppmid-users-check-v1\x00" + nonce + b"\x00" + name.encode() + b"\x00" + wrapped,
                     hashlib.sha256).digest()[:16]
    return {"nonce": nonce.hex(), "key": wrapped.hex(), "check": check.hex()}


def document(eui, sequence, users, new_keys, config_key):
    """The signed text: canonical JSON (sorted keys, no spaces)."""
    from host_tools.broker import gateway_identity
    from host_tools.update import canonical
    doc = {"format": 1, "gateway": gateway_identity(eui), "sequence": sequence, "users": users,
           "new_keys": {name: wrap(config_key, name, new_keys[name]) for name in sorted(new_keys)}}
    return canonical(doc)


def offer(text, operator_key, offer_id=None):
    """(offer id, payload bytes) signed with the operator's P-256 key."""
    from host_tools.update import sign
    oid = offer_id or "users-" + secrets.token_hex(5)
    return oid, json.dumps({"id": oid, "config": text, "signature": sign(operator_key, text.encode()).hex()}).encode()


def plan(state_dir, eui, users=None, rotate=(), revoke=(), remove=(), sequence=None, lock_down=False):
    """(sequence, users section, {name: new key}, {name: path of a rotated key to rename
    once applied}) of the next push. users: a section to send instead of the registry's
    (keys, roles, legacy_key); new keys are sent for names the gateway was not given
    before (from the host's copy, created if absent) and for every --rotate. A section that
    leaves no key in use with the legacy key off makes the gateway refuse every command
    (docs/security.md): refused unless lock_down says that is what is meant."""
    from host_tools import mqtt_tools as mt
    reg = read_registry(state_dir, eui)
    base = json.loads(json.dumps(users if users is not None else reg["users"]))
    if not isinstance(base, dict):
        raise UsersUpdateError("the users section must be an object of keys, roles, legacy_key")
    base.pop("sequence", None)
    seq = reg["sequence"] + 1 if sequence is None else sequence
    _check(eui, base, seq)  # as given, before it is edited (a key entry may not be an object)
    keys = base.setdefault("keys", {})
    for name in list(revoke) + list(rotate) + list(remove):
        if name not in keys:
            raise UsersUpdateError("%s is not a key of this gateway's users (%s)" % (name, ", ".join(sorted(keys)) or "none"))
    for name in revoke:
        keys[name]["revoked"] = True
    for name in remove:
        del keys[name]
    _check(eui, base, seq)  # as it will be sent, before a key file is made for any name in it
    if not lock_down and base.get("legacy_key", True) is False and all(k.get("revoked") for k in keys.values()):
        raise UsersUpdateError("users refused: no DCC User key would be left in use and the legacy key is off, so "
                               "the gateway would refuse every command; give --lock-down if that is meant")
    given = reg["users"].get("keys", {})
    new, renames = {}, {}
    for name in keys:
        if "public_key" in keys[name]:  # signs with its own private key: no key to send
            if name in rotate:
                raise UsersUpdateError("%s is registered by its public key: give its new one with --user %s "
                                       "--role ROLE --originators ORIG --public-key FILE" % (name, name))
            continue
        if name in rotate:
            if keys[name].get("revoked"):
                raise UsersUpdateError("%s is revoked: rotate a key that is in use, or register a new name" % name)
            new[name] = secrets.token_bytes(32)
            renames[name] = mt.user_key_path(state_dir, eui, name)
        elif name not in given and not keys[name].get("revoked"):
            new[name] = mt.user_key(state_dir, eui, name, create=True)
    # the config check sees only the form of a public key; the gateway refuses one that is
    # no point of P-256 (E_CONFIG_UPDATE), so say it here
    from host_tools.p256_envelope import off_curve_user
    bad = off_curve_user({"keys": keys})
    if bad is not None:
        raise UsersUpdateError("users refused: users.keys.%s.public_key is not a point of P-256" % bad)
    return seq, base, new, renames


def _check(eui, users, seq):
    # checked here as the gateway will (ppmid.config): a refusal costs no round trip
    from ppmid import config
    try:
        config.validate({"gateway": eui, "users": json.loads(json.dumps(dict(users, sequence=seq)))})
    except config.ConfigError as exc:
        raise UsersUpdateError("users refused: %s" % exc)


def push(state_dir, eui, operator_key_path, user="dcc-user-test", timeout=60.0, **kw):
    """Build, sign, send and follow one users update; the gateway's final status (dict).
    On "applied" the registry and the host's copies of rotated keys are updated."""
    from host_tools import mqtt_tools as mt
    from host_tools.update import load_key
    from ppmid.mqtt.contract import ROOT, UPDATE
    from ppmid.relay.users_update import TOPIC
    seq, users, new, renames = plan(state_dir, eui, **kw)
    try:
        ck = mt.config_key(state_dir, eui)
    except RuntimeError as exc:
        raise UsersUpdateError(str(exc))
    oid, payload = offer(document(eui, seq, users, new, ck), load_key(operator_key_path))
    for name in renames:  # the rotated key, kept aside until the gateway has it
        with open(renames[name] + ".new", "wb") as f:
            f.write(new[name])
    st = send(state_dir, eui, payload, oid, user, timeout, ROOT + eui + "/" + UPDATE, ROOT + eui + "/" + TOPIC)
    if st.get("state") == "applied":
        for name in renames:
            os.replace(renames[name] + ".new", renames[name])
        write_registry(state_dir, eui, seq, users)
    elif st.get("state") == "refused":
        for name in renames:
            os.remove(renames[name] + ".new")
    # no answer: the gateway may have applied it; the rotated keys stay in NAME.key.new
    return st


def send(state_dir, eui, payload, oid, user, timeout, status_topic, topic, kind="config"):
    """Publish one signed message for the gateway and wait for its status of that kind
    (users updates: "config"; commission orders, host_tools/commission_order.py: "commission")."""
    from host_tools import mqtt_tools as mt
    q = queue.Queue()
    sub = threading.Event()
    try:
        c = mt.paho_client(state_dir, user)
        c.on_message = lambda cl, u, msg: q.put(msg.payload)
        c.on_subscribe = lambda *a, **k: sub.set()
        mt.connect(c, state_dir)
    except RuntimeError as exc:
        raise UsersUpdateError(str(exc))
    try:
        c.subscribe(status_topic, qos=1)
        if not sub.wait(10):
            raise UsersUpdateError("no SUBACK for %s" % status_topic)
        c.publish(topic, payload, qos=1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = q.get(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                continue
            try:
                st = json.loads(msg)
            except ValueError:
                continue
            if isinstance(st, dict) and st.get("kind") == kind and st.get("id") == oid:
                return st
        return {"kind": kind, "id": oid, "state": "no-answer",
                "error": {"code": "E_NO_ANSWER", "message": "no status from the gateway within %ss" % timeout}}
    finally:
        c.disconnect()
        c.loop_stop()
