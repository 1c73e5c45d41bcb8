# A re-commission ordered by the host tools (issue #16, docs/zigbee.md "Re-commission on
# order"): a changed CH (new install, change of tenancy) needs the PPMID to leave the HAN
# and commission again, and that opens the HAN door, so the order is signed as a users
# update is (relay/users_update.py): the operator's update key (ECDSA P-256), this
# gateway's EUI, a sequence that must rise. The last sequence taken is kept on flash
# (<fs_root>/zigbee_order), written before the order acts, so a replay is refused after a
# reboot too. On ppmid/v1/EUI/update/commission; one status (not retained) on
# ppmid/v1/EUI/update, {"kind": "commission", ...}. Imported by the MQTT intake on such a
# message only, dropped again afterwards.
#
# The order: {"id": ..., "order": TEXT, "signature": HEX (r || s)}; TEXT, as signed
# (canonical JSON): {"format": 1, "gateway": EUI, "kind": "commission-order",
# "order": "recommission", "sequence": N}. The update key also signs users updates and
# update manifests, so the kind is checked first and any other field refused: no other
# signed document can pass as an order.
import gc
import json
from binascii import unhexlify

from ppmid.errors import PpmidError
from ppmid.modules import unload

E_ORDER = "E_ORDER"                      # not an order (JSON, fields, an order we do not know)
E_ORDER_SIGNATURE = "E_ORDER_SIGNATURE"  # the signature does not verify with the update key
E_ORDER_GATEWAY = "E_ORDER_GATEWAY"      # signed for another gateway
E_ORDER_REPLAY = "E_ORDER_REPLAY"        # its sequence is not above the last one taken
E_ORDER_UNSUPPORTED = "E_ORDER_UNSUPPORTED"  # no zigbee.install_code: this gateway cannot commission
E_ORDER_BUSY = "E_ORDER_BUSY"            # the module is being brought up right now: send a new order later
E_ORDER_FLASH = "E_ORDER_FLASH"          # the sequence could not be written (not acted on) or read
E_ORDER_INTERNAL = "E_ORDER_INTERNAL"    # a bug, out of memory
FORMAT = 1
KIND = "commission-order"
FIELDS = ("format", "gateway", "kind", "order", "sequence")
TOPIC = "update/commission"
ORDERS = ("recommission",)
SEQUENCE_FILE = "/zigbee_order"


class OrderError(PpmidError):
    pass


def parse_order(payload):
    """(id, text, signature bytes), or OrderError."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError):
        raise OrderError(E_ORDER, "the commission order is not JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("order"), str) or not isinstance(obj.get("signature"), str):
        raise OrderError(E_ORDER, "a commission order is {\"id\", \"order\": text, \"signature\": hex}")
    oid = obj.get("id")
    if oid is not None and (not isinstance(oid, str) or len(oid) > 40):
        raise OrderError(E_ORDER, "order id must be a string of up to 40 characters")
    try:
        sig = unhexlify(obj["signature"])
    except ValueError:
        raise OrderError(E_ORDER_SIGNATURE, "the signature is not hex")
    return oid, obj["order"], sig


def last_sequence(root):
    """The sequence of the last order taken; 0 only when no order was ever taken (no
    file). Anything else (an I/O error, a garbled file) refuses with E_ORDER_FLASH: a
    replay floor read as 0 would make every order ever captured valid again."""
    import errno
    try:
        with open(root + SEQUENCE_FILE, "rb") as f:
            raw = f.read()
    except OSError as exc:
        if exc.args and exc.args[0] == errno.ENOENT:
            return 0
        raise OrderError(E_ORDER_FLASH, "order sequence unreadable (%r): no order is taken until %s is "
                         "repaired (docs/zigbee.md)" % (exc, SEQUENCE_FILE))
    digits = raw.strip()
    try:
        ok = digits.decode().isdigit()
    except ValueError:   # not text (UnicodeError is a ValueError on both ports)
        ok = False
    if not ok:
        raise OrderError(E_ORDER_FLASH, "order sequence unreadable (%s holds %r, not a number): no order is "
                         "taken until it is repaired (docs/zigbee.md)" % (SEQUENCE_FILE, raw[:20]))
    return int(digits)


def verify(text, sig, key_hex):
    """The operator's signature over the order's text, or E_ORDER_SIGNATURE
    (E_UPDATE_NO_KEY when the config has no update key)."""
    from ppmid.update.manifest import verify_signed
    try:
        ok = verify_signed(key_hex, text, sig)  # E_UPDATE_NO_KEY without a key; E_RATE past the failed checks
    finally:
        unload("ppmid.update.p256", "ppmid.update.manifest")
        gc.collect()
    if not ok:
        raise OrderError(E_ORDER_SIGNATURE, "the commission order's signature does not verify with this gateway's "
                         "update key")


def check(text, gateway, applied):
    """The signed order's text, checked (after verify): kind and fields, format, order,
    gateway, sequence above `applied`. -> the document."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise OrderError(E_ORDER, "the signed order is not JSON")
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise OrderError(E_ORDER, "the signed document is not a commission order (kind must be %r)" % KIND)
    for k in doc:
        if k not in FIELDS:
            raise OrderError(E_ORDER, "a commission order has no field %r (fields: %s)" % (k, ", ".join(FIELDS)))
    if doc.get("format") != FORMAT:
        raise OrderError(E_ORDER, "order format must be %d" % FORMAT)
    if doc.get("order") not in ORDERS:
        raise OrderError(E_ORDER, "unknown order %r (known: %s)" % (doc.get("order"), ", ".join(ORDERS)))
    if doc.get("gateway") != gateway:
        raise OrderError(E_ORDER_GATEWAY, "the order is for gateway %s, this is %s" % (doc.get("gateway"), gateway))
    seq = doc.get("sequence")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise OrderError(E_ORDER, "sequence must be a whole number from 1")
    if seq <= applied:
        raise OrderError(E_ORDER_REPLAY, "order %d is not newer than %d, taken last: refused as a replay"
                         % (seq, applied))
    return doc


def take(root, payload, gateway, key_hex, han):
    """Check one order and act on it: (order id, sequence), or raise (OrderError,
    E_UPDATE_NO_KEY). The order id is known (set on the error as .oid) once it parses."""
    oid, text, sig = parse_order(payload)
    try:
        # the signature first: an unsigned message learns nothing of this gateway
        verify(text, sig, key_hex)
        doc = check(text, gateway, last_sequence(root))
        if han is None or han.commission_settings is None:
            raise OrderError(E_ORDER_UNSUPPORTED, "this gateway has no zigbee.install_code: it cannot commission")
        seq = doc["sequence"]
        try:
            with open(root + SEQUENCE_FILE + ".tmp", "w") as f:
                f.write("%d\n" % seq)
            import os
            os.rename(root + SEQUENCE_FILE + ".tmp", root + SEQUENCE_FILE)
        except OSError as exc:
            raise OrderError(E_ORDER_FLASH, "the order's sequence could not be written, not acted on: %r" % (exc,))
        # from here the sequence is used: a refusal below needs a new order
        from ppmid.zigbee.commission import order_recommission
        if order_recommission(han, "ordered by the host tools (order %d)" % seq) is None:
            raise OrderError(E_ORDER_BUSY, "the Zigbee module is being brought up right now: send a new order "
                             "when the HAN status is running, commission-failed or network-down")
        return oid, seq
    except PpmidError as exc:
        exc.oid = oid
        raise


def _config_key_hex(root):
    # the update key from the config on flash (checked at boot: public_key checks it again)
    try:
        with open(root + "/config.json") as f:
            u = json.load(f).get("update")
        return u.get("public_key", "") if isinstance(u, dict) else ""
    except (OSError, ValueError, AttributeError):
        return ""


async def handle(context, topic, payload):
    """A message on update/commission from the intake; context: (board, relay, link,
    version). Every outcome is one status; nothing raised reaches the MQTT client."""
    from ppmid.mqtt.contract import ROOT, UPDATE
    board, relay, link, _ = context
    client = link.client
    root = board.fs_root.rstrip("/")
    st = {"kind": "commission"}
    try:
        oid, seq = take(root, bytes(payload), client.client_id, _config_key_hex(root), relay.han)
        st["state"] = "accepted"
        st["sequence"] = seq
        print("PPMID commission order %d accepted: leaving the HAN, commissioning again" % seq)
    except Exception as exc:  # noqa: BLE001 - a bug must not take the link down
        oid = getattr(exc, "oid", None)
        if not isinstance(exc, PpmidError):
            exc = PpmidError(E_ORDER_INTERNAL, "the commission order failed: %r" % (exc,))
        st["state"] = "refused"
        st["error"] = exc.as_dict()
        print("PPMID commission order refused: %s" % (exc,))
    if oid is not None:
        st["id"] = oid
    await client.publish(ROOT + client.client_id + "/" + UPDATE, json.dumps(st).encode(), 1, False, False)
    unload("ppmid.relay.commission_order", "ppmid.relay.users_update", "ppmid.modules")
    gc.collect()
