# The top-up envelope: a UTRN for a meter on this HAN, by MQTT (JSON, the `cmd` topic with
# "utrn" instead of "gbcs") or NFC (binary, version 2), authenticated with the envelope key
# like a command but under its own domain string, so that no command signature can ever
# pass for a top-up or the other way round:
#
#   mac = HMAC-SHA256(envelope_key, b"ppmid-topup-v1" 00 id 00 expires 00 TARGET 00 utrn)
#
# TARGET is the meter's EUI-64 as 16 upper-case hex digits, utrn the 20 digits as sent.
# A `kid` (the sender's key name) goes in as for commands: 01 kid 00 for the first 00.
# A DCC User registered with a P-256 public key signs those same bytes instead (ECDSA-SHA256,
# 64 bytes in the mac's place; ppmid.envelope_sig). Only the envelope's form is checked here; the UTRN and the target are checked by the
# relay after the mac (ppmid.relay.topups). Loaded with the first top-up, never at boot.
# Spec: docs/envelope.md "Top-ups".
import binascii
import struct
from micropython import const

from ppmid.errors import E_ENVELOPE, E_ID, E_AUTH, E_EXPIRED, E_UTRN_FORMAT
from ppmid.envelope import (EnvelopeError, hmac_sha256, check_id, _equal, mac_hex, MAC_LEN, kid_part, json_kid,
                            json_expires)

E_UTRN_TARGET = "E_UTRN_TARGET"  # the target is not a meter of this HAN that takes top-ups

DOMAIN = b"ppmid-topup-v1"
BINARY_VERSION = const(2)
_FLAG_EXPIRES = const(0x01)
_FLAG_KID = const(0x02)
UTRN_DIGITS = const(20)


class TopupEnvelope:
    """A top-up as received: id, utrn (str, as sent), target (16 upper-case hex digits),
    expires (int or None), mac (32 bytes), kid (the sender's key name, or None). Nothing
    is trusted before verify()."""

    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, id, utrn, target, expires=None, mac=b"", kid=None):
        self.id = id
        self.utrn = utrn
        self.target = target
        self.expires = expires
        self.mac = mac
        self.kid = kid

    def verify(self, key, now=None):
        """EnvelopeError E_AUTH (mac first, as for commands), then E_EXPIRED."""
        if len(self.mac) != MAC_LEN or not _equal(self.mac, compute_mac(key, self.id, self.expires, self.target,
                                                                       self.utrn, self.kid)):
            raise EnvelopeError(E_AUTH, "top-up mac does not verify with this gateway's key")
        if self.expires is not None and now is not None and now >= self.expires:
            raise EnvelopeError(E_EXPIRED, "top-up expired at %d (now %d)" % (self.expires, now))


def compute_mac(key, id, expires, target, utrn, kid=None):
    """HMAC-SHA256 under `key` of the bytes a top-up's mac covers; key None: those bytes as
    parts in order, what a public-key user's signature signs (ppmid.envelope_sig)."""
    parts = (DOMAIN, kid_part(kid), id.encode(), b"\x00", b"" if expires is None else str(expires).encode(), b"\x00",
             target.upper().encode(), b"\x00", utrn.encode())
    return parts if key is None else hmac_sha256(key, *parts)


def check_target(target):
    """16 hex digits -> the same upper-cased; EnvelopeError E_UTRN_TARGET otherwise."""
    if not isinstance(target, str) or len(target) != 16:
        raise EnvelopeError(E_UTRN_TARGET, "target must be the meter's EUI-64, 16 hex digits")
    try:
        binascii.unhexlify(target)
    except ValueError:
        raise EnvelopeError(E_UTRN_TARGET, "target must be the meter's EUI-64, 16 hex digits")
    return target.upper()


def strict_digits(utrn):
    """The envelope carries exactly the 20 digits (separators are for people, and the mac
    is over the text as sent): E_UTRN_FORMAT otherwise. ppmid.utrn.decode checks the rest."""
    if not isinstance(utrn, str) or len(utrn) != UTRN_DIGITS:
        raise EnvelopeError(E_UTRN_FORMAT, "utrn must be the 20 digits without separators")
    for ch in utrn:
        if not "0" <= ch <= "9":
            raise EnvelopeError(E_UTRN_FORMAT, "utrn must be the 20 digits without separators")
    return utrn


def from_json_obj(obj):
    """TopupEnvelope from a decoded MQTT JSON object: {"id", "utrn", "target", "expires"
    (optional), "mac"}. EnvelopeError E_ENVELOPE / E_ID on a malformed one."""
    if not isinstance(obj, dict):
        raise EnvelopeError(E_ENVELOPE, "top-up must be a JSON object")
    for field in ("id", "utrn", "target", "mac"):
        if field not in obj:
            raise EnvelopeError(E_ENVELOPE, "missing field %r" % field)
    if "gbcs" in obj:
        raise EnvelopeError(E_ENVELOPE, "a message carries either gbcs or utrn, not both")
    id = check_id(obj["id"])
    utrn = obj["utrn"]
    target = obj["target"]
    if not isinstance(utrn, str) or not isinstance(target, str):
        raise EnvelopeError(E_ENVELOPE, "utrn and target must be strings")
    return TopupEnvelope(id, utrn, target, json_expires(obj), mac_hex(obj["mac"]), json_kid(obj))


# Binary form (NFC), all integers big-endian:
#   version u8 (=2) | flags u8 (bit0: expires present, bit1: kid present) | id_len u8 | id
#   | [kid_len u8 | kid] | [expires u32]
#   | target 8 | utrn 20 ASCII digits | mac 32 (or a public-key user's signature, 64)
def from_binary(buf):
    mv = memoryview(buf)
    n = len(mv)
    if n < 3 or mv[0] != BINARY_VERSION:
        raise EnvelopeError(E_ENVELOPE, "not a binary top-up envelope")
    flags = mv[1]
    if flags & ~(_FLAG_EXPIRES | _FLAG_KID):
        raise EnvelopeError(E_ENVELOPE, "binary top-up has unknown flags 0x%02X" % flags)
    pos = 3 + mv[2]
    try:
        id = str(bytes(mv[3:pos]), "ascii")
    except UnicodeError:
        raise EnvelopeError(E_ID, "id may hold only printable ASCII without spaces")
    # (the binary form's kid reader: loaded already on the roads a binary top-up comes by)
    from ppmid.envelope_binary import binary_kid
    kid, pos = binary_kid(mv, pos, flags)
    expires = None
    if flags & _FLAG_EXPIRES:
        if pos + 4 > n:
            raise EnvelopeError(E_ENVELOPE, "binary top-up truncated in expires")
        expires = struct.unpack_from(">I", mv, pos)[0]
        pos += 4
    # a 32-byte mac, or a public-key user's 64-byte signature
    if n - pos - 8 - UTRN_DIGITS != MAC_LEN and n - pos - 8 - UTRN_DIGITS != 2 * MAC_LEN:
        raise EnvelopeError(E_ENVELOPE, "binary top-up length %d does not match its fields (%d)"
                            % (n, pos + 8 + UTRN_DIGITS + MAC_LEN))
    check_id(id)
    target = binascii.hexlify(bytes(mv[pos:pos + 8])).decode().upper()
    pos += 8
    try:
        utrn = str(bytes(mv[pos:pos + UTRN_DIGITS]), "ascii")
    except UnicodeError:
        raise EnvelopeError(E_UTRN_FORMAT, "utrn must be the 20 digits without separators")
    return TopupEnvelope(id, utrn, target, expires, bytes(mv[pos + UTRN_DIGITS:]), kid)


def to_binary(env):
    id = env.id.encode()
    flags = _FLAG_EXPIRES if env.expires is not None else 0
    out = bytearray((BINARY_VERSION, flags if env.kid is None else flags | _FLAG_KID, len(id)))
    out += id
    from ppmid.envelope_binary import kid_field
    out += kid_field(env.kid)
    if env.expires is not None:
        out += struct.pack(">I", env.expires)
    out += binascii.unhexlify(env.target)
    out += env.utrn.encode()
    out += env.mac
    return bytes(out)


def sign(key, id, utrn, target, expires=None, kid=None):
    """A signed TopupEnvelope (host tools and tests; the gateway only verifies)."""
    check_id(id)
    if kid is not None:
        check_id(kid, "kid", E_ENVELOPE)
    target = check_target(target)
    return TopupEnvelope(id, utrn, target, expires, compute_mac(key, id, expires, target, utrn, kid), kid)
