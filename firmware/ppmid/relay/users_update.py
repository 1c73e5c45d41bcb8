# Key rotation and revocation by a signed config update (issue #22, docs/security.md
# "Signed users updates"): the operator sends a new `users` section for one gateway on
# ppmid/v1/EUI/update/config, signed with the update key (ECDSA P-256, the one that signs
# application updates; ppmid.update.p256), with a sequence number that must rise, and the
# new keys wrapped under this gateway's config key (/secrets/config.key, which only the
# operator holds besides the gateway: DCC Users hold their own keys, and with the legacy
# key on, the gateway's envelope key, so neither may unwrap keys). Applied as new files
# first, the config last (each written under .tmp, then renamed), then the relay's senders
# are swapped in place: no reboot. Imported by the MQTT intake on the first such message
# only; statuses (not retained) on ppmid/v1/EUI/update, {"kind": "config", ...}.
#
# The offer: {"id": ..., "config": TEXT, "signature": HEX (r || s)}; TEXT, as signed:
#   {"format": 1, "gateway": EUI, "sequence": N, "users": {keys, roles, legacy_key},
#    "new_keys": {NAME: {"nonce": 32 hex, "key": 64 hex, "check": 32 hex}}}
# Wrapping (nothing but hashlib, so the same on every port):
#   key   = wrapped XOR HMAC-SHA256(config_key, "ppmid-users-wrap-v1" 00 nonce 00 NAME)
#   check = HMAC-SHA256(config_key, "ppmid-users-check-v1" 00 nonce 00 NAME 00 wrapped)[:16]
import gc
import json
import os
import sys
from binascii import unhexlify

from ppmid.errors import PpmidError
from ppmid.modules import drop_since, unload
from ppmid.envelope import hmac_sha256, _equal

E_CONFIG_OFFER = "E_CONFIG_OFFER"          # not a config offer (JSON, fields)
E_CONFIG_SIGNATURE = "E_CONFIG_SIGNATURE"  # the signature does not verify with the update key
E_CONFIG_UPDATE = "E_CONFIG_UPDATE"        # signed, but not a users update this gateway can apply
E_CONFIG_GATEWAY = "E_CONFIG_GATEWAY"      # signed for another gateway
E_CONFIG_REPLAY = "E_CONFIG_REPLAY"        # its sequence is not above the one applied last
E_CONFIG_KEY = "E_CONFIG_KEY"              # a wrapped key does not unwrap with this gateway's config key
E_CONFIG_FLASH = "E_CONFIG_FLASH"          # writing the files failed (nothing renamed, or see docs)
E_CONFIG_INTERNAL = "E_CONFIG_INTERNAL"    # the update failed unexpectedly (a bug, out of memory)
FORMAT = 1
FIELDS = ("format", "gateway", "sequence", "users", "new_keys")
TOPIC = "update/config"                    # under ppmid/v1/EUI/, in the update family the ACL has
CONFIG_KEY = "/secrets/config.key"
WRAP = b"ppmid-users-wrap-v1"
CHECK = b"ppmid-users-check-v1"


class ConfigUpdateError(PpmidError):
    pass


def parse_offer(payload):
    """(id, text, signature bytes), or ConfigUpdateError."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError):
        raise ConfigUpdateError(E_CONFIG_OFFER, "the config offer is not JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("config"), str) or not isinstance(obj.get("signature"), str):
        raise ConfigUpdateError(E_CONFIG_OFFER, "a config offer is {\"id\", \"config\": text, \"signature\": hex}")
    oid = obj.get("id")
    if oid is not None and (not isinstance(oid, str) or len(oid) > 40):
        raise ConfigUpdateError(E_CONFIG_OFFER, "offer id must be a string of up to 40 characters")
    try:
        sig = unhexlify(obj["signature"])
    except ValueError:
        raise ConfigUpdateError(E_CONFIG_SIGNATURE, "the signature is not hex")
    return oid, obj["config"], sig


def check_signature(key_hex, text, sig):
    # the update key's checks (E_UPDATE_NO_KEY when there is none) and its P-256 code,
    # dropped again afterwards: 3 KB of heap only while this runs. Only what the check
    # loaded goes: an update service that holds them keeps its copies (dropping them by
    # name made the next import a second copy beside the one the service holds)
    before = set(sys.modules)
    from ppmid.update.manifest import verify_signed  # E_RATE past the failed checks (shared)
    try:
        ok = verify_signed(key_hex, text, sig)
    finally:
        drop_since(before)
        gc.collect()
    if not ok:
        raise ConfigUpdateError(E_CONFIG_SIGNATURE, "the users update's signature does not verify with this "
                                "gateway's update key")


def parse(text, gateway, applied):
    """The signed document, checked against this gateway and the sequence applied last."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "the signed users update is not JSON")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "users update format must be %d" % FORMAT)
    # the update key signs commission orders and manifests too: a field a users update
    # does not have means another kind of document (relay/commission_order.py's "kind")
    for k in doc:
        if k not in FIELDS:
            raise ConfigUpdateError(E_CONFIG_UPDATE, "a users update has no field %r (fields: %s)"
                                    % (k, ", ".join(FIELDS)))
    if doc.get("gateway") != gateway:
        raise ConfigUpdateError(E_CONFIG_GATEWAY, "the users update is for gateway %s, this is %s"
                                % (doc.get("gateway"), gateway))
    seq = doc.get("sequence")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "sequence must be a whole number from 1")
    if seq <= applied:
        raise ConfigUpdateError(E_CONFIG_REPLAY, "users update %d is not newer than %d, applied last: refused as a "
                                "replay" % (seq, applied))
    if not isinstance(doc.get("users"), dict) or "sequence" in doc["users"]:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "users must be the users section (keys, roles, legacy_key)")
    new = doc.get("new_keys", {})
    if not isinstance(new, dict):
        raise ConfigUpdateError(E_CONFIG_UPDATE, "new_keys must be an object of NAME -> wrapped key")
    return doc


def unwrap(config_key, name, w):
    """A new key's 32 bytes from its wrapped form, or ConfigUpdateError."""
    try:
        nonce, wrapped, check = unhexlify(w["nonce"]), unhexlify(w["key"]), unhexlify(w["check"])
    except (ValueError, TypeError, KeyError):
        raise ConfigUpdateError(E_CONFIG_UPDATE, "new_keys.%s must hold nonce, key and check in hex" % name)
    if len(nonce) != 16 or len(wrapped) != 32 or len(check) != 16:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "new_keys.%s: nonce 16, key 32 and check 16 bytes" % name)
    n = name.encode()
    if not _equal(check, hmac_sha256(config_key, CHECK, b"\x00", nonce, b"\x00", n, b"\x00", wrapped)[:16]):
        raise ConfigUpdateError(E_CONFIG_KEY, "the key of %s does not unwrap with this gateway's config key" % name)
    pad = hmac_sha256(config_key, WRAP, b"\x00", nonce, b"\x00", n)
    return bytes(wrapped[i] ^ pad[i] for i in range(32))


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def apply(root, payload, legacy_key):
    """Check and apply one offer: (offer id, sequence, the new Senders or None), or raise
    (ConfigUpdateError, ConfigError when the new section does not validate, E_UPDATE_NO_KEY).
    The offer id is known (set on the error as .oid) as soon as the offer parses."""
    oid, text, sig = parse_offer(payload)
    try:
        return (oid,) + _apply(root, text, sig, legacy_key)
    except PpmidError as exc:
        exc.oid = oid
        raise


def _apply(root, text, sig, legacy_key):
    # config.validate checks every section: a "zigbee" one loads the commissioning modules
    # and han_start; what the checks load goes again, what the app held before stays
    before = set(sys.modules)
    from ppmid import config
    try:
        raw = json.loads(_read(root + "/config.json") or b"null")
        cfg = config.validate(json.loads(json.dumps(raw)))  # a copy: raw is what goes back
        check_signature(cfg["update"]["public_key"], text, sig)
        doc = parse(text, cfg["gateway"], cfg["users"]["sequence"] if cfg["users"] else 0)
        users = dict(doc["users"])
        users["sequence"] = doc["sequence"]
        raw["users"] = users
        checked = config.validate(json.loads(json.dumps(raw)))["users"]
    except ValueError:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "the config on flash is not JSON")
    finally:
        drop_since(before)
        gc.collect()
    new = doc["new_keys"]
    keys_dir = root + "/secrets/users/"
    for name in new:
        if name not in checked["keys"]:
            raise ConfigUpdateError(E_CONFIG_UPDATE, "new_keys.%s is not a key of the users section" % name)
    for name in checked["keys"]:
        k = checked["keys"][name]
        if "public_key" in k:
            _check_point(name, k["public_key"])
        elif name not in new and not k.get("revoked") and len(_read(keys_dir + name + ".key") or b"") != 32:
            raise ConfigUpdateError(E_CONFIG_UPDATE, "the key of %s is neither sent nor on this gateway" % name)
    plain = []
    if new:
        ck = _read(root + CONFIG_KEY)
        if ck is None or len(ck) != 32:
            raise ConfigUpdateError(E_CONFIG_KEY, "no 32-byte config key at %s: new keys cannot be unwrapped "
                                    "(ppmid provision writes it)" % CONFIG_KEY)
        plain = [(name, unwrap(ck, name, new[name])) for name in new]
        ck = None
    staged = []
    try:
        if plain:
            _mkdir(root + "/secrets")
            _mkdir(keys_dir[:-1])
        for name, key in plain:
            staged.append(keys_dir + name + ".key")
            _write(staged[-1] + ".tmp", key)
        _write(root + "/config.json.tmp", (json.dumps(raw) + "\n").encode())
    except OSError as exc:
        for p in staged + [root + "/config.json"]:
            _remove(p + ".tmp")
        raise ConfigUpdateError(E_CONFIG_FLASH, "writing the users update failed, nothing changed: %r" % (exc,))
    # the renames: keys first, the config last. A cut in between leaves the previous config
    # with the new keys of the names this update rotates (their old keys already refused,
    # as the update meant) and the previous sequence: the same update, sent again, ends it.
    for p in staged:
        os.rename(p + ".tmp", p)
    os.rename(root + "/config.json.tmp", root + "/config.json")
    for name in _listdir(keys_dir):  # keys of senders the update removed
        if name.endswith(".key") and name[:-4] not in checked["keys"]:
            _remove(keys_dir + name)
    from ppmid.relay.senders import load
    try:
        senders = load(root, checked, legacy_key)
    finally:
        # the code table and the profiles load() built the senders' code sets from: the
        # boot drops them too (boot.BOOT_ONLY), or they stay on the heap for the rest of the run
        unload("ppmid.gbcs.codes", "ppmid.gbcs.profiles")
        gc.collect()
    return doc["sequence"], senders


def _check_point(name, public_key):
    # everything senders.load() would refuse is refused before anything is written: a key
    # that is no point of P-256 would make the next boot a config error (a site visit)
    from binascii import unhexlify
    from ppmid.errors import ConfigError
    from ppmid.relay.senders import _check_point as check
    try:
        check(name, unhexlify(public_key))
    except ConfigError as exc:
        raise ConfigUpdateError(E_CONFIG_UPDATE, "%s: nothing changed" % (exc.message,))


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # already there


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


async def handle(context, topic, payload):
    """A message on update/config from the intake; context: (board, relay, link, version).
    Every outcome is one status; nothing raised reaches the MQTT client."""
    from ppmid.mqtt.contract import ROOT, UPDATE
    board, relay, link, _ = context
    client = link.client
    st = {"kind": "config"}
    oid = None
    swapped = False
    try:
        oid, seq, senders = apply(board.fs_root.rstrip("/"), bytes(payload), relay.key)
        if senders and relay.senders:
            # which sender owns each known id (by name: relay/senders.py, review_w6-1) holds
            # across a new set of keys
            senders.owners = relay.senders.owners
        st["state"] = "applied"
        st["sequence"] = seq
        st["keys"] = len(senders.senders) if senders else 0
        relay.senders = senders
        # in force from here: a line below that fails (a MemoryError logging it) must not
        # make the status say "refused", nor skip the info (review r7-2)
        swapped = True
        print("PPMID users: update %d applied (%d keys)" % (seq, st["keys"]))
        if senders and not senders.senders:
            from ppmid.relay.senders import NONE_REGISTERED
            relay.log("warn", "users update %d: %s" % (seq, NONE_REGISTERED))
    except Exception as exc:  # noqa: BLE001 - a bug must not take the link down
        if not swapped:
            oid = getattr(exc, "oid", oid)   # apply()'s, or the offer's id once it parsed
            if not isinstance(exc, PpmidError):
                exc = PpmidError(E_CONFIG_INTERNAL, "the users update failed: %r" % (exc,))
            st = {"kind": "config", "state": "refused", "error": exc.as_dict()}   # none of the above
            print("PPMID users: update refused: %s" % (exc,))
    if oid is not None:
        st["id"] = oid
    follow = swapped and link.info is not None
    if follow and client.pending() + 2 <= client.queue_size:
        # the retained info says whether the gateway is locked down ("auth"): ahead of the
        # status, so that a tool that has the status reads the new info, but only with room
        # for both in the client's queue: the status never loses its place to it (review
        # r7-1). Not waited for, as the status is not (link.republish_info waits for the
        # PUBACK, which the client reads only once this handler returns)
        try:
            from ppmid.mqtt.contract import info_json
            await client.publish(link.topics.info, info_json(link.info()), 1, True, False)
        except Exception as exc:  # noqa: BLE001 - the update is applied: its status still goes
            print("PPMID users: info not republished: %r" % (exc,))
    await client.publish(ROOT + client.client_id + "/" + UPDATE, json.dumps(st).encode(), 1, False, False)
    if follow:
        # and after it, paced, built when it goes and waited for (the link is the HAN's
        # on_status hook: ppmid.mqtt.info_follow), so that the last retained info is the
        # new one even when the queue had no room above, or held an info built before
        try:
            link()
        except Exception as exc:  # noqa: BLE001 - MemoryError loading it: the next connect publishes it
            print("PPMID users: info not republished: %r" % (exc,))
    unload("ppmid.relay.users_update", "ppmid.modules")  # rare: loaded again with the next one
    gc.collect()
