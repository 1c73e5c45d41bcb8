"""Commission orders (docs/zigbee.md "Re-commission on order"): what `ppmid commission`
runs. A changed Communications Hub (a new install, a change of tenancy) needs the PPMID to
leave the HAN and commission again; the order is signed with the operator's update key
(ECDSA P-256, the key of `ppmid release` and `ppmid users push`), names the gateway and
carries a rising sequence, published on ppmid/v1/EUI/update/commission; the gateway answers
on ppmid/v1/EUI/update with {"kind": "commission", "state": "accepted" | "refused", ...}.
The gateway side: firmware/ppmid/relay/commission_order.py.

The host keeps the last sequence it sent each gateway in STATE_DIR/keys/EUI.commission.json
({"sequence": N}), written before the order is published; the next order carries N + 1.
Written on send, not on "accepted": the gateway uses a sequence up as soon as it has
checked the signature (an E_ORDER_BUSY refusal, or an answer lost on the way back, still
used it), and it needs only a rising sequence, so a gap is harmless where a reused number
is an E_ORDER_REPLAY.
"""
import json
import secrets

from host_tools import signed_registry
from host_tools.errors import ToolError


class CommissionOrderError(ToolError):
    code = "E_COMMISSION_ORDER"


def registry_path(state_dir, eui):
    return signed_registry.path(state_dir, eui, "commission")


def last_sequence(state_dir, eui):
    path = registry_path(state_dir, eui)
    record = signed_registry.read(path, CommissionOrderError, {"sequence": 0})
    try:
        seq = record["sequence"]
    except (KeyError, TypeError) as exc:
        raise CommissionOrderError("cannot read %s: %s" % (path, exc))
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise CommissionOrderError("%s: sequence must be a whole number" % path)
    return seq


def write_sequence(state_dir, eui, sequence):
    signed_registry.write(registry_path(state_dir, eui), {"sequence": sequence})


def document(eui, sequence, order="recommission"):
    """The signed text: canonical JSON (sorted keys, no spaces)."""
    from host_tools.broker import gateway_identity
    from host_tools.update import canonical
    return canonical({"format": 1, "gateway": gateway_identity(eui), "kind": "commission-order", "order": order,
                      "sequence": sequence})


def signed(text, operator_key, order_id=None):
    """(order id, payload bytes) signed with the operator's P-256 key."""
    from host_tools.update import sign
    oid = order_id or "commission-" + secrets.token_hex(5)
    return oid, json.dumps({"id": oid, "order": text, "signature": sign(operator_key, text.encode()).hex()}).encode()


def push(state_dir, eui, operator_key_path, user="dcc-user-test", timeout=60.0, sequence=None):
    """Sign, send and follow one re-commission order; the gateway's status (dict). The
    host's sequence is raised to this order's before it is sent (never lowered: an older
    --sequence sent again keeps the registry where it was)."""
    from host_tools.update import load_key
    from host_tools.users_update import send, UsersUpdateError
    from ppmid.mqtt.contract import ROOT, UPDATE
    from ppmid.relay.commission_order import TOPIC
    seq = last_sequence(state_dir, eui) + 1 if sequence is None else sequence
    oid, payload = signed(document(eui, seq), load_key(operator_key_path))
    if seq > last_sequence(state_dir, eui):
        write_sequence(state_dir, eui, seq)
    try:
        st = send(state_dir, eui, payload, oid, user, timeout, ROOT + eui + "/" + UPDATE, ROOT + eui + "/" + TOPIC,
                  kind="commission")
    except UsersUpdateError as exc:
        raise CommissionOrderError(str(exc))
    return st
