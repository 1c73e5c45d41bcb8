# What only host tools and tests do with the command envelope: sign one (the gateway only
# verifies), parse a JSON command in one go, decode its "gbcs" into a second buffer (the
# gateway's MQTT intake decodes in place, envelope.lift_gbcs_in_place). Apart from
# ppmid.envelope so that a gateway does not hold their code; envelope's module __getattr__
# loads this module at the first use, so their users still say envelope.sign and the
# others. Nothing in the firmware imports it.
from micropython import const

from ppmid.envelope import (Envelope, check_id, compute_mac, from_json_obj, _refuse, _gbcs_value,
                            _lift_value)
from ppmid.errors import E_ENVELOPE

_S_NOT_JSON = const(17)  # its sentence in ppmid.envelope_errors, as envelope.py's _S_... name theirs


def lift_gbcs(buf, out):
    """Decode the top-level "gbcs" base64 string of the MQTT JSON command in `buf` straight
    into `out` (a bytearray) and return (n, rest): n bytes
    decoded, and the JSON again with "gbcs": "" (only the small fields: id, mac,
    expires). json.loads on the whole message would build a string as large as the
    command; on a long-running board the heap may no longer hold one in one piece, though
    there is plenty free in all. Returns None when buf has no plain top-level "gbcs"
    string (the caller parses it as usual and says what is wrong). Raises EnvelopeError:
    E_TOO_LARGE when it does not fit `out`, E_ENVELOPE when it is not base64 (or the JSON
    before "gbcs" nests deeper than envelope._DEPTH_MAX)."""
    i = _gbcs_value(buf)
    return None if i is None else _lift_value(memoryview(buf), i, out, 0, len(out))


def from_json(payload, max_gbcs):
    import json
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError):
        raise _refuse(E_ENVELOPE, _S_NOT_JSON)
    return from_json_obj(obj, max_gbcs)


def sign(key, id, gbcs, expires=None, kid=None):
    """Build a signed Envelope (host tools and tests; the gateway only verifies). kid:
    the sender's key name, carried in the envelope and covered by the mac."""
    check_id(id)
    if kid is not None:
        check_id(kid, "kid", E_ENVELOPE)
    return Envelope(id, gbcs, expires, compute_mac(key, id, expires, gbcs, kid), kid)
