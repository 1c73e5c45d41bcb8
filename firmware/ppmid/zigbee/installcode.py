# Zigbee install codes (Zigbee spec, Base Device Behavior / SE 1.x commissioning): a code of
# 6, 8, 12 or 16 bytes followed by its CRC-16 (least significant byte first), and the
# preconfigured trust-centre link key derived from it: the AES-MMO hash (Matyas-Meyer-Oseas
# over AES-128) of the whole code, CRC included. Pure, no I/O; imported only while
# commissioning (zigbee/commission.py) and by the config check of the install code.
from micropython import const

from ppmid.errors import PpmidError

E_INSTALL_CODE = "E_INSTALL_CODE"          # not hex, or not 6/8/12/16 bytes plus a CRC
E_INSTALL_CODE_CRC = "E_INSTALL_CODE_CRC"  # the CRC does not match: a mistyped digit

CODE_LENGTHS = (6, 8, 12, 16)   # without the CRC
_BLOCK = const(16)


def crc16(data):
    """CRC-16 as the Zigbee spec defines it for install codes: polynomial x^16+x^12+x^5+1
    (0x1021) bit-reversed (0x8408), initial value 0xFFFF, result complemented
    (the CRC-16/X-25 of the catalogues)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def parse(text):
    """An install code as printed (hex, spaces, hyphens and colons ignored) or bytes ->
    the code with its CRC (bytes). Raises PpmidError with E_INSTALL_CODE(_CRC)."""
    if isinstance(text, str):
        digits = "".join(c for c in text if c not in " -:")
        try:
            code = bytes.fromhex(digits)
        except ValueError:
            raise PpmidError(E_INSTALL_CODE, "the install code must be hex digits, not %r" % text)
    else:
        code = bytes(text)
    if len(code) - 2 not in CODE_LENGTHS:
        raise PpmidError(E_INSTALL_CODE, "an install code is 6, 8, 12 or 16 bytes plus a 2-byte CRC "
                         "(got %d bytes)" % len(code))
    want = crc16(code[:-2])
    if code[-2] | (code[-1] << 8) != want:
        raise PpmidError(E_INSTALL_CODE_CRC, "the install code's CRC is %02X%02X, its digits give %02X%02X: "
                         "a digit is wrong" % (code[-2], code[-1], want & 0xFF, want >> 8))
    return code


def aes_mmo_hash(data):
    """Matyas-Meyer-Oseas hash over AES-128 (Zigbee spec B.6): the message, a 1 bit, zero
    bits and its length in bits (16-bit big-endian; messages under 8 KB) fill whole
    blocks; h = E_h(M_i) xor M_i from h = 0. -> 16 bytes."""
    from cryptolib import aes
    n = len(data)
    msg = bytearray(data)
    msg.append(0x80)
    pad = (_BLOCK - (len(msg) + 2) % _BLOCK) % _BLOCK
    msg.extend(bytes(pad))
    bits = n * 8
    msg.append(bits >> 8)
    msg.append(bits & 0xFF)
    h = bytearray(_BLOCK)
    block = bytearray(_BLOCK)
    for off in range(0, len(msg), _BLOCK):
        block[:] = msg[off:off + _BLOCK]
        out = aes(bytes(h), 1).encrypt(bytes(block))   # mode 1: ECB
        for i in range(_BLOCK):
            h[i] = out[i] ^ block[i]
    return bytes(h)


def link_key(code):
    """The preconfigured trust-centre link key of a checked install code (parse())."""
    return aes_mmo_hash(code)
