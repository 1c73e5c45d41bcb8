"""UTRN codec: the 20-digit top-up code a prepayment customer keys in (GBCS section 14).

A UTRN is a 19-digit PPTD followed by one check digit. PPTD = _PPTD_BASE + PTUT, where the
64-bit PTUT is, most significant bit first:

    7 bits   zero
    10 bits  counter: bits 32..41 of the supplier's 64-bit originator counter
    2 bits   value class: 0 = pennies, 1 = pounds (2 and 3 are not defined)
    13 bits  value, in that class's unit
    32 bits  the last 4 bytes of a MAC that only the meter has the key to check

decode() checks what a PPMID can check without keys: the form, the check digit, the PPTD
range with its zero bits, the value class and a non-zero value. Duplicates need a memory
of the UTRNs seen, so they are the caller's business (Utrn.ptut is the key).

Pure: no I/O. Loaded only when a top-up arrives, so it is kept small: the tables are bytes
and the constants are private const()s.
"""
from micropython import const

from ppmid.errors import PpmidError, E_UTRN_FORMAT, E_UTRN_CHECK, E_UTRN_VALUE

# A PPTD is close to 2**63: a long int on a 32-bit ESP32, whose small ints have 31 bits.
# The ESP32 port is built with MICROPY_LONGINT_IMPL_MPZ (ports/esp32/mpconfigport.h), as is
# the unix port, so the few big-int operations below (one int(), a subtraction, shifts)
# work on both. Everything after the split into 32-bit halves is small ints again.
_PPTD_BASE = const(7394156990786306048)
_PTUT_BITS = const(57)   # 64 bits of PTUT minus the 7 leading bits that must be zero
_UTRN_DIGITS = const(20)
_MAX_INPUT = const(64)   # 20 digits with generous separators; longer is not a UTRN
_ZERO = const(48)        # ord("0")

# GBCS's check digit (section 14): Verhoeff's dihedral-group scheme, with the tables GBCS
# prints. Entries are ASCII digits so that each row reads as in the specification.
# 14.8a: permutation P[k] applied to the digit at step k (row k is row 1 to the power k)
_P = (b"0123456789" b"1576283094" b"5803796142" b"8916043527"
      b"9453126870" b"4286573901" b"2793806415" b"7046913258")
# 14.8b: multiplication in the dihedral group D5
_D = (b"0123456789" b"1234067895" b"2340178956" b"3401289567" b"4012395678"
      b"5987604321" b"6598710432" b"7659821043" b"8765932104" b"9876543210")
# 14.8c: GBCS's final table; it is not the plain group inverse that most Verhoeff
# descriptions use (it is P[1] applied to the inverse), see docs/utrn.md
_I = b"1267583094"
_FIRST_STEP = const(4)   # GBCS starts at permutation row 4 on the leftmost digit

VALUE_CLASSES = ("pennies", "pounds")


class UtrnError(PpmidError):
    pass


class Utrn:
    """What a UTRN says, as far as a PPMID can read it."""

    def __init__(self, ptut):
        high = ptut >> 32
        self.ptut = ptut
        self.counter = (high >> 15) & 0x3FF
        self.value_class = VALUE_CLASSES[(high >> 13) & 3]   # decode() refused the others
        self.value = high & 0x1FFF
        self.value_pence = self.value * 100 if self.value_class == "pounds" else self.value
        self.mac = (ptut & 0xFFFFFFFF).to_bytes(4, "big")


def _check_char(digits, n):
    """The ASCII check digit for the first n ASCII digits of `digits` (bytes)."""
    acc = 0
    step = _FIRST_STEP
    for i in range(n):
        acc = _D[acc * 10 + _P[step * 10 + digits[i] - _ZERO] - _ZERO] - _ZERO
        step = (step + 1) & 7
    return _I[acc]


def check_digit(digits19):
    """The check digit (an int 0-9) that follows these PPTD digits (str or bytes)."""
    if isinstance(digits19, str):
        digits19 = digits19.encode()
    if not digits19 or any(c < _ZERO or c > _ZERO + 9 for c in digits19):
        raise UtrnError(E_UTRN_FORMAT, "a check digit is computed over digits 0-9 only")
    return _check_char(digits19, len(digits19)) - _ZERO


def _digits(text):
    """The 20 ASCII digits of a UTRN as bytes. Spaces and hyphens are dropped wherever
    they are: receipts and vouchers print the digits in groups."""
    if isinstance(text, str):
        text = text.encode()   # anything non-ASCII becomes bytes >= 0x80, refused below
    if len(text) > _MAX_INPUT:
        raise UtrnError(E_UTRN_FORMAT, "a UTRN is 20 digits; this is %d characters long" % len(text))
    out = bytearray()
    for i, c in enumerate(text):
        if _ZERO <= c <= _ZERO + 9:
            out.append(c)
        elif c != 0x20 and c != 0x2D:
            raise UtrnError(E_UTRN_FORMAT,
                            "a UTRN is 20 digits; character %d is not a digit, space or hyphen" % (i + 1))
    if len(out) != _UTRN_DIGITS:
        raise UtrnError(E_UTRN_FORMAT, "a UTRN is 20 digits; this has %d" % len(out))
    return bytes(out)


def decode(utrn):
    """The Utrn in `utrn` (str, bytes or bytearray), or UtrnError with E_UTRN_FORMAT,
    E_UTRN_CHECK or E_UTRN_VALUE."""
    digits = _digits(utrn)
    if _check_char(digits, 19) != digits[19]:
        # The right digit is not named: a typo elsewhere would then just move the error
        # to the meter, which refuses the MAC without saying why.
        raise UtrnError(E_UTRN_CHECK,
                        "the check digit does not match: a digit was mistyped or two were swapped")
    ptut = int(digits[:19]) - _PPTD_BASE
    if ptut < 0 or ptut >> _PTUT_BITS:
        raise UtrnError(E_UTRN_VALUE,
                        "not a top-up: the number is outside the range GBCS reserves for UTRNs")
    value_class = (ptut >> 45) & 3
    if value_class >= len(VALUE_CLASSES):
        raise UtrnError(E_UTRN_VALUE,
                        "not a top-up: value class %d is undefined (0 = pennies, 1 = pounds)" % value_class)
    if not (ptut >> 32) & 0x1FFF:
        raise UtrnError(E_UTRN_VALUE, "not a top-up: its value is zero")
    return Utrn(ptut)
