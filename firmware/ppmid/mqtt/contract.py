# The MQTT contract v1 (docs/mqtt.md): a gateway's topic names and the JSON payloads it
# publishes on them. The relay, the intake, the link and the host tools all take them from
# here, so a name or a field is spelt once. Imported on the board: keep it small.
import json
from binascii import b2a_base64, hexlify

from ppmid.errors import PpmidError

ROOT = "ppmid/v1/"
# The update family (docs/update.md): statuses on ROOT + EUI/update, offers and data on
# .../update/offer and .../update/data. Not in Topics: those names are built only where an
# update needs them, so they cost the running app no heap.
UPDATE = "update"
UPDATE_IN = "update/+"
# what a gateway publishes on and reads (the broker's ACL): ppmid.mqtt.contract_host
STATUSES = ("accepted", "relayed", "response", "rejected", "timeout", "failed", "topped-up", "already-executed")


class Topics:
    """Topic names of one gateway. eui: its EUI-64, 16 hex digits (upper-cased here);
    prefix: the common start instead of ROOT + EUI + "/" (a test's private tree)."""

    def __init__(self, eui, prefix=None):
        base = prefix if prefix is not None else ROOT + eui.upper() + "/"
        self.cmd = base + "cmd"
        self.rsp = base + "rsp"
        self.alert = base + "alert"
        self.state = base + "state"
        self.info = base + "info"
        self.log = base + "log"


def b64(data):
    return b2a_base64(data)[:-1].decode()


def status_json(id, status, ms=None, gbcs=None, error=None, via=None, at=None, late=None, topup=None):
    """Payload of rsp (bytes): "id" (None when unreadable), "status", then those given of
    "via" (the road the command came by), "at" (unix s), "ms", "gbcs" (bytes, sent in
    base64), "late", "error" (a PpmidError or {"code", "message"}), "topup" (what the
    meter answered a top-up: docs/utrn.md)."""
    if status not in STATUSES:
        raise ValueError("unknown status %r" % (status,))
    obj = {"id": id, "status": status}
    if via is not None:
        obj["via"] = via
    if at is not None:
        obj["at"] = at
    if ms is not None:
        obj["ms"] = ms
    if gbcs is not None:
        obj["gbcs"] = b64(gbcs)
    if late is not None:
        obj["late"] = late
    if error is not None:
        obj["error"] = error.as_dict() if isinstance(error, PpmidError) else error
    if topup is not None:
        obj["topup"] = topup
    return json.dumps(obj).encode()


def alert_json(gbcs, at=None, msg=None):
    """Payload of alert (bytes). msg: the decoded GBCS message, when it decoded, for its
    "cra", "originator", "recipient" and "counter"."""
    obj = {}
    if msg is not None:
        cra = msg.cra
        obj["cra"] = ("command", "response", "alert")[cra - 1] if 1 <= cra <= 3 else cra
        obj["originator"] = hexlify(bytes(msg.originator)).decode().upper()
        obj["recipient"] = hexlify(bytes(msg.recipient)).decode().upper()
        obj["counter"] = msg.counter
    obj["gbcs"] = b64(gbcs)
    if at is not None:
        obj["at"] = at
    return json.dumps(obj).encode()


def state_json(state):
    """Payload of state (retained; "offline" is also the last will)."""
    return json.dumps({"state": state}).encode()


def info_json(info):
    """Payload of info (retained): the dict the app assembles (docs/mqtt.md)."""
    return json.dumps(info).encode()


def log_json(level, msg, at):
    return json.dumps({"level": level, "msg": msg, "at": at}).encode()
