# The command envelope's binary form (docs/envelope.md "Binary form"): NFC phone transfers,
# tag NDEF records and the wired road; host tools write it. Apart from ppmid.envelope, whose
# module __getattr__ loads it at the first use (envelope.from_binary_any and the others),
# so that a gateway whose commands come by MQTT only does not hold this code.
import struct
from micropython import const

from ppmid.envelope import Envelope, EnvelopeError, check_id, MAC_LEN, _refuse
from ppmid.errors import E_ENVELOPE, E_ID, E_TOO_LARGE

_BINARY_VERSION = const(1)
_FLAG_EXPIRES = const(0x01)
_FLAG_KID = const(0x02)  # the binary forms' flag bit 1 (a command's here, a top-up's: ppmid.topup)
_S_KID_TRUNCATED = const(4)  # its sentence in ppmid.envelope_errors, as envelope.py's _S_... name theirs


def binary_kid(mv, pos, flags):
    """(kid or None, position after it) of a binary envelope (a command's, or a top-up's:
    ppmid.topup imports it from here, where the binary form it comes with is loaded):
    flag bit 1, then a length byte and the name, right after the id."""
    if not flags & _FLAG_KID:
        return None, pos
    if pos >= len(mv) or pos + 1 + mv[pos] > len(mv):
        raise _refuse(E_ENVELOPE, _S_KID_TRUNCATED)
    end = pos + 1 + mv[pos]
    try:
        kid = str(bytes(mv[pos + 1:end]), "ascii")
    except UnicodeError:
        kid = None
    return check_id(kid, "kid", E_ENVELOPE), end


def kid_field(kid):
    # a binary form's kid: length byte and name, nothing without one
    return b"" if kid is None else bytes((len(kid),)) + kid.encode()


# Binary form (NFC phone transfers and tag NDEF records), all integers big-endian:
#   version u8 (=1) | flags u8 (bit0: expires present, bit1: kid present) | id_len u8
#   | id | [kid_len u8 | kid] | [expires u32] | gbcs_len u16 | gbcs | mac (32) or signature (64)
def from_binary(buf, max_gbcs):
    """Envelope from its binary form. `gbcs` is a memoryview into buf (no copy)."""
    mv = memoryview(buf)
    n = len(mv)
    if n < 3:
        raise EnvelopeError(E_ENVELOPE, "binary envelope truncated (%d bytes)" % n)
    if mv[0] != _BINARY_VERSION:
        raise EnvelopeError(E_ENVELOPE, "binary envelope version %d not supported" % mv[0])
    flags = mv[1]
    if flags & ~(_FLAG_EXPIRES | _FLAG_KID):
        raise EnvelopeError(E_ENVELOPE, "binary envelope has unknown flags 0x%02X" % flags)
    id_len = mv[2]
    pos = 3 + id_len
    if pos > n:
        raise EnvelopeError(E_ENVELOPE, "binary envelope truncated in id")
    try:
        id = str(bytes(mv[3:pos]), "ascii")
    except UnicodeError:
        raise EnvelopeError(E_ID, "id may hold only printable ASCII without spaces")
    check_id(id)
    kid, pos = binary_kid(mv, pos, flags)
    expires = None
    if flags & _FLAG_EXPIRES:
        if pos + 4 > n:
            raise EnvelopeError(E_ENVELOPE, "binary envelope truncated in expires")
        expires = struct.unpack_from(">I", mv, pos)[0]
        pos += 4
    if pos + 2 > n:
        raise EnvelopeError(E_ENVELOPE, "binary envelope truncated in gbcs length")
    glen = (mv[pos] << 8) | mv[pos + 1]
    pos += 2
    if glen > max_gbcs:
        raise EnvelopeError(E_TOO_LARGE, "gbcs is larger than the %d bytes allowed" % max_gbcs)
    if glen == 0:
        raise EnvelopeError(E_ENVELOPE, "gbcs is empty")
    # the last field: a 32-byte mac, or a public-key user's 64-byte signature (envelope_sig)
    if n - pos - glen != MAC_LEN and n - pos - glen != 2 * MAC_LEN:
        raise EnvelopeError(E_ENVELOPE, "binary envelope length %d does not match its fields (%d)" % (n, pos + glen + MAC_LEN))
    return Envelope(id, mv[pos:pos + glen], expires, mv[pos + glen:], kid)


def from_binary_any(buf, max_gbcs):
    """A binary envelope of either kind, told apart by its version byte: 1 a command
    (Envelope), 2 a top-up (ppmid.topup.TopupEnvelope, whose code is loaded only then).
    The NFC and wired roads take both."""
    if len(buf) and buf[0] == 2:
        from ppmid import topup
        return topup.from_binary(buf)
    return from_binary(buf, max_gbcs)


def to_binary(env):
    id = env.id.encode()
    flags = _FLAG_EXPIRES if env.expires is not None else 0
    out = bytearray((_BINARY_VERSION, flags if env.kid is None else flags | _FLAG_KID, len(id)))
    out += id
    out += kid_field(env.kid)
    if env.expires is not None:
        out += struct.pack(">I", env.expires)
    out += struct.pack(">H", len(env.gbcs))
    out += env.gbcs
    out += env.mac
    return bytes(out)
