"""UTRNs on the host: the firmware's verdict on one (check) and UTRNs built from fields
(encode), for test vectors and tools. The format and the checks: docs/utrn.md.

Encoding lives here, not in the firmware: a PPMID only ever reads UTRNs, and a real one
needs the supplier's key for its MAC, which a PPMID never has.
"""
import binascii

from host_tools import mpcompat
from host_tools.errors import ToolError

mpcompat.install()

from ppmid import utrn as codec  # noqa: E402

PPTD_BASE = 7394156990786306048


class UtrnEncodeError(ToolError):
    """encode() was given a field that does not fit its bits."""

    code = "E_UTRN_ENCODE"


def check(text):
    """The firmware's verdict on `text` as a JSON-ready dict: {"ok": True, value_pence,
    value_class, value, counter, mac} or {"ok": False, code, reason}."""
    try:
        u = codec.decode(text)
    except codec.UtrnError as exc:
        return {"ok": False, "code": exc.code, "reason": exc.message}
    return {"ok": True, "value_pence": u.value_pence, "value_class": u.value_class, "value": u.value,
            "counter": u.counter, "mac": binascii.hexlify(u.mac).decode().upper()}


def sentence(result):
    """check()'s verdict in one line for people."""
    if not result["ok"]:
        return "UTRN refused: %s: %s" % (result["code"], result["reason"])
    return ("UTRN well formed: a top-up of %d pence (value %d in %s), counter %d, MAC %s; "
            "only the meter can check the MAC" % (result["value_pence"], result["value"], result["value_class"],
                                                   result["counter"], result["mac"]))


def with_check_digit(pptd):
    """The 20-digit UTRN for a 19-digit PPTD (an int or a string of digits)."""
    text = str(pptd)
    if len(text) != 19 or not text.isdigit() or not text.isascii():
        raise UtrnEncodeError("a PPTD is 19 digits, not %r" % (text,))
    return text + str(codec.check_digit(text))


def encode(counter, value_class, value, mac4):
    """A UTRN with these fields. value_class: "pennies", "pounds" or the raw 2-bit number
    (2 and 3 build UTRNs a PPMID must refuse); mac4: 4 bytes. Value 0 is allowed for the
    same reason. The MAC is whatever you pass: no meter would accept it."""
    if value_class in codec.VALUE_CLASSES:
        value_class = codec.VALUE_CLASSES.index(value_class)
    for name, field, bits in (("counter", counter, 10), ("value_class", value_class, 2), ("value", value, 13)):
        if not isinstance(field, int) or isinstance(field, bool) or not 0 <= field < 1 << bits:
            raise UtrnEncodeError("%s must be an integer from 0 to %d, not %r" % (name, (1 << bits) - 1, field))
    mac4 = bytes(mac4)
    if len(mac4) != 4:
        raise UtrnEncodeError("the MAC part is 4 bytes, not %d" % len(mac4))
    ptut = (counter << 47) | (value_class << 45) | (value << 32) | int.from_bytes(mac4, "big")
    return with_check_digit(PPTD_BASE + ptut)


# ---- UTRNs an emulated meter accepts -------------------------------------------------------
# A real UTRN's MAC is a GMAC under a key shared by the supplier and that one meter; its
# exact input is not public enough to reproduce. The emulated ESME (host_tools/ncp_emulator/
# esme.py) checks a stand-in instead: the first 4 bytes of HMAC-SHA256 under a test key over
# the PTUT's top 32 bits (counter, value class, value). Only the emulator and the tests use it.
TEST_METER_KEY = b"ppmid emulated meter utrn key v1"


def test_mac(counter, value_class, value, key=TEST_METER_KEY):
    import hashlib
    import hmac
    if value_class in codec.VALUE_CLASSES:
        value_class = codec.VALUE_CLASSES.index(value_class)
    top = (counter << 15) | (value_class << 13) | value
    return hmac.new(key, top.to_bytes(4, "big"), hashlib.sha256).digest()[:4]


def test_utrn(counter, value_class, value, key=TEST_METER_KEY):
    """A UTRN the emulated ESME accepts (its MAC made with test_mac)."""
    return encode(counter, value_class, value, test_mac(counter, value_class, value, key))


def test_mac_ok(u, key=TEST_METER_KEY):
    """Does the decoded Utrn `u` carry test_mac's MAC?"""
    return u.mac == test_mac(u.counter, u.value_class, u.value, key)
