# GBCS message decoder: reads the routing information of a GBCS message in the clear, without
# decrypting or copying anything. Three top-level forms (docs/gbcs.md):
#   DD 00 ...  MAC header + General-Signing message + 12-byte MAC        (FORM_MAC_SIGNED)
#   DF ...     General-Signing message alone                             (FORM_SIGNED)
#   DD 09 ...  routing header + General Block Transfer (GBT) block       (FORM_GBT)
# decode() walks the buffer once, checks every length against the bytes that are really there,
# and returns a Message that keeps only the buffer and a handful of offsets; its field
# properties return memoryviews into the caller's buffer (no per-field copies).
from micropython import const
from ppmid.errors import PpmidError

# (the forms' names, FORM_MAC_SIGNED and the others, are ppmid.gbcs.message_fields': host
# tools and tests read msg.form, the gateway asks is_gbt)

CRA_COMMAND = const(1)
CRA_RESPONSE = const(2)
CRA_ALERT = const(3)
CRA_NAMES = (None, "command", "response", "alert")

TAG_GENERAL_CIPHERING = const(0xDD)
TAG_GENERAL_SIGNING = const(0xDF)
TAG_GBT = const(0xE0)
MAC_LEN = const(12)
_SIGNATURE_LEN = const(64)
_DATE_TIME_LEN = const(12)

# Stable error codes of the decoder (the validator adds its own: ppmid.gbcs.validate).
E_TRUNCATED = "E_TRUNCATED"  # the buffer ends before a field it announces
E_OVERRUN = "E_OVERRUN"      # a nested length runs past the element that encloses it
E_TRAILING = "E_TRAILING"    # bytes left over after the message (or before the MAC)
E_TAG = "E_TAG"              # a tag byte is not the one this form requires
E_LENGTH = "E_LENGTH"        # a length is not allowed for its field (or malformed)
E_VALUE = "E_VALUE"          # a field value is not allowed (CRA flag)

# The errors' sentences and the fields they name, by their index in
# ppmid.gbcs.message_errors (SENTENCES, FIELDS), where the text is.
_S_RUNS_PAST = const(0)
_S_ENDS_INSIDE = const(1)
_S_LENGTH_FORM = const(2)
_S_TID_LEN = const(3)
_S_CRA = const(4)
_S_ORIGINATOR_LEN = const(5)
_S_RECIPIENT_LEN = const(6)
_S_DATE_TIME_LEN = const(7)
_S_NOT_DF = const(8)
_S_OI_LEN = const(9)
_S_CONTENT_EMPTY = const(10)
_S_SIGNATURE_LEN = const(11)
_S_AFTER_SIGNATURE = const(12)
_S_TOO_SHORT = const(13)
_S_FIRST_BYTE = const(14)
_S_MAC_FIELDS = const(15)
_S_MAC_ANNOUNCES = const(16)
_S_AFTER_MESSAGE = const(17)
_S_MAC_LEN_SMALL = const(18)
_S_AFTER_DD = const(19)
_S_GBT_OI_LEN = const(20)
_S_GBT_KEY_INFO = const(21)
_S_ROUTING_ANNOUNCES = const(22)
_S_AFTER_GBT_BLOCK = const(23)
_S_NOT_E0 = const(24)
_S_BLOCK_DATA_PAST = const(25)
_S_AFTER_BLOCK_DATA = const(26)
_F_LENGTH = const(0)
_F_ROUTING_HEADER = const(1)
_F_DATE_TIME = const(2)
_F_GS_TAG = const(3)
_F_OTHER_INFO = const(4)
_F_CONTENT_LENGTH = const(5)
_F_CONTENT = const(6)
_F_SIGNATURE = const(7)
_F_MAC_HEADER = const(8)
_F_MAC_HEADER_LENGTH = const(9)
_F_KEY_INFO = const(10)
_F_ROUTING_HEADER_LENGTH = const(11)
_F_GBT_HEADER = const(12)
_F_BLOCK_DATA_LENGTH = const(13)


class GbcsError(PpmidError):
    pass


def _err(code, key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.gbcs.message_errors', loaded for the
    # refusal and dropped again (as str constants here the sentences held ~2.4 KB of heap)
    from ppmid.modules import sentence
    raise GbcsError(code, sentence("ppmid.gbcs.message_errors", key, arg))


def _short(end, limit, what):
    # called when a field would end past `end` (the enclosing element; limit = len(buffer));
    # what: the field's _F_... key
    if end < limit:
        _err(E_OVERRUN, _S_RUNS_PAST, what)
    _err(E_TRUNCATED, _S_ENDS_INSIDE, what)


def _long_length(b, pos, end, limit, what):
    """Value of the long length (81 nn / 82 nnnn) at pos; the caller handles short ones."""
    n = b[pos]
    if n == 0x81:
        if pos + 2 > end:
            _short(end, limit, what)
        return b[pos + 1]
    if n == 0x82:
        if pos + 3 > end:
            _short(end, limit, what)
        return (b[pos + 1] << 8) | b[pos + 2]
    _err(E_LENGTH, _S_LENGTH_FORM, what)


def _counter(b, pos):
    # Below 2**30 the value is a small int on every port (ESP32 small ints are 31-bit), so the
    # shifts allocate nothing; above, one int.from_bytes instead of a big int per shift.
    if b[pos] == 0 and b[pos + 1] == 0 and b[pos + 2] == 0 and b[pos + 3] == 0 and b[pos + 4] < 0x40:
        return (b[pos + 4] << 24) | (b[pos + 5] << 16) | (b[pos + 6] << 8) | b[pos + 7]
    return int.from_bytes(b[pos:pos + 8], "big")


def _transaction_and_titles(b, t, end, limit):
    # t is the position of the transaction-id length byte (09); the next 28 bytes are fixed.
    # Returns the position after the date-time element.
    if t + 30 > end:
        _short(end, limit, _F_ROUTING_HEADER)
    if b[t] != 9:
        _err(E_LENGTH, _S_TID_LEN, b[t])
    cra = b[t + 1]
    if cra < 1 or cra > 3:
        _err(E_VALUE, _S_CRA, cra)
    if b[t + 10] != 8:
        _err(E_LENGTH, _S_ORIGINATOR_LEN, b[t + 10])
    if b[t + 19] != 8:
        _err(E_LENGTH, _S_RECIPIENT_LEN, b[t + 19])
    dtl = b[t + 28]
    if dtl != 0 and dtl != _DATE_TIME_LEN:
        _err(E_LENGTH, _S_DATE_TIME_LEN, dtl)
    pos = t + 29 + dtl
    if pos > end:
        _short(end, limit, _F_DATE_TIME)
    return pos


_MAC = const(0)
_SIGNED = const(1)
_GBT = const(2)


class Message:
    """One decoded GBCS message or GBT block. Field properties (here, and those of
    ppmid.gbcs.message_fields, read the same way) are memoryviews into the buffer given to
    decode() (keep that buffer unchanged while the Message is in use). Only the buffer and
    three small numbers are stored (few attribute stores: each costs a
    lookup through this class's many properties on MicroPython); every field is found from
    them on access, so a decode allocates one small object."""

    def __init__(self, buf, k, n):
        self.buf = buf  # memoryview of the whole message
        # k = content (or block data) position << 8 | header position << 2 | form index, where
        # header position = transaction-id (signed forms) or the E0 tag (GBT); n = its length
        self._k = k
        self._n = n

    def __getattr__(self, name):
        # The fields the gateway never reads (content type and content, signature, date-time,
        # security and block control, the other-information's optional fields, cra_name, _l,
        # the form's name (the gateway asks is_gbt), the MAC: for host tools and tests; and a GBT
        # block's fields, which the gateway's reassembly reads where they are) are
        # functions of ppmid.gbcs.message_fields, loaded at the
        # first such read, so the running app does not hold their code. Called only for a
        # name the class does not have: the relay's fields are not slowed down.
        from ppmid.gbcs import message_fields
        if name not in message_fields.FIELDS:
            raise AttributeError(name)
        return getattr(message_fields, name)(self)

    @property
    def _t(self):
        k = self._k
        return 1 if k & 3 == _GBT else (k >> 2) & 0x3F

    def _code_pos(self):
        # after the other-information's length (1 byte, or 81 nn / 82 nnnn)
        p = self._t + 29 + self.buf[self._t + 28]
        n = self.buf[p]
        return p + (1 if n < 0x80 else n - 0x7F)

    def _oil(self):
        # the other-information's length, already checked by decode()
        b = self.buf
        p = self._t + 29 + b[self._t + 28]
        return b[p] if b[p] < 0x80 else _long_length(b, p, len(b), len(b), _F_LENGTH)

    def _sig_pos(self):
        k = self._k
        f = k & 3
        if f == _GBT:
            return -1
        s = (k >> 8) + self._n
        return -1 if s == len(self.buf) - (MAC_LEN if f == _MAC else 0) else s + 1

    # ---- routing information (all forms) ----
    @property
    def cra(self):
        return self.buf[self._t + 1]

    @property
    def counter(self):
        return _counter(self.buf, self._t + 2)

    @property
    def counter_bytes(self):
        t = self._t
        return self.buf[t + 2:t + 10]

    @property
    def originator(self):
        t = self._t
        return self.buf[t + 11:t + 19]

    @property
    def recipient(self):
        t = self._t
        return self.buf[t + 20:t + 28]

    @property
    def message_code(self):
        p = self._code_pos()
        return (self.buf[p] << 8) | self.buf[p + 1]

    @property
    def other_information(self):
        p = self._code_pos()
        return self.buf[p:p + self._oil()]

    # ---- General-Signing content ----
    @property
    def has_signature_field(self):
        return self._sig_pos() >= 0

    # ---- GBT block (its fields: ppmid.gbcs.reassembly, through message_fields; the MAC of
    # the MAC-signed form: message_fields) ----
    @property
    def is_gbt(self):
        return self._k & 3 == _GBT


def _general_signing(b, p, end, limit, form):
    # General-Signing from p (form: _MAC or _SIGNED); it must end exactly at `end`.
    if p + 1 > end:
        _short(end, limit, _F_GS_TAG)
    if b[p] != TAG_GENERAL_SIGNING:
        _err(E_TAG, _S_NOT_DF, b[p])
    t = p + 1
    pos = _transaction_and_titles(b, t, end, limit)
    if pos + 1 > end:
        _short(end, limit, _F_OTHER_INFO)
    oil = b[pos]
    if oil < 0x80:
        pos += 1
    else:
        oil = _long_length(b, pos, end, limit, _F_OTHER_INFO)
        pos += b[pos] - 0x7F
    if oil < 2 or (oil > 2 and oil < 26 and oil != 10 and oil != 18):
        _err(E_LENGTH, _S_OI_LEN, oil)
    pos += oil
    if pos + 1 > end:
        _short(end, limit, _F_OTHER_INFO if pos > end else _F_CONTENT_LENGTH)
    cl = b[pos]
    if cl < 0x80:
        pos += 1
    else:
        cl = _long_length(b, pos, end, limit, _F_CONTENT_LENGTH)
        pos += b[pos] - 0x7F
    if cl == 0:
        _err(E_LENGTH, _S_CONTENT_EMPTY)
    c = pos
    pos += cl
    if pos > end:
        _short(end, limit, _F_CONTENT)
    if pos < end:  # else: signature field absent, a pre-command
        sl = b[pos]
        if sl != 0 and sl != _SIGNATURE_LEN:
            _err(E_LENGTH, _S_SIGNATURE_LEN, sl)
        pos += 1 + sl
        if pos > end:
            _short(end, limit, _F_SIGNATURE)
        if pos != end:
            _err(E_TRAILING, _S_AFTER_SIGNATURE, end - pos)
    return Message(b, (c << 8) | (t << 2) | form, cl)


def decode(buf):
    """Decode one GBCS message or GBT block -> Message. Raises GbcsError(code, sentence)."""
    b = buf if isinstance(buf, memoryview) else memoryview(buf)
    n = len(b)
    if n < 2:
        _err(E_TRUNCATED, _S_TOO_SHORT, n)
    tag = b[0]
    if tag == TAG_GENERAL_SIGNING:
        return _general_signing(b, 0, n, n, _SIGNED)
    if tag != TAG_GENERAL_CIPHERING:
        _err(E_TAG, _S_FIRST_BYTE, tag)
    if b[1] == 0:
        # MAC header: six empty fields, then the length of everything after it.
        if n < 8:
            _short(n, n, _F_MAC_HEADER)
        if b[2] or b[3] or b[4] or b[5] or b[6]:
            _err(E_LENGTH, _S_MAC_FIELDS)
        ln = b[7]
        pos = 8
        if ln >= 0x80:
            ln = _long_length(b, 7, n, n, _F_MAC_HEADER_LENGTH)
            pos = 7 + b[7] - 0x7F
        end = pos + ln
        if end > n:
            _err(E_TRUNCATED, _S_MAC_ANNOUNCES, (ln, n - pos))
        if end < n:
            _err(E_TRAILING, _S_AFTER_MESSAGE, n - end)
        if ln < 5 + MAC_LEN:
            _err(E_LENGTH, _S_MAC_LEN_SMALL, ln)
        return _general_signing(b, pos + 5, end - MAC_LEN, n, _MAC)
    if b[1] != 9:
        _err(E_LENGTH, _S_AFTER_DD, b[1])
    # GBT block: routing header (fixed titles, empty date-time, 2-byte other-info, empty key-info)
    pos = _transaction_and_titles(b, 1, n, n)
    if pos + 1 > n:
        _short(n, n, _F_OTHER_INFO)
    if b[pos] != 2:
        _err(E_LENGTH, _S_GBT_OI_LEN, b[pos])
    pos += 3
    if pos + 2 > n:
        _short(n, n, _F_KEY_INFO)
    if b[pos] != 0:
        _err(E_LENGTH, _S_GBT_KEY_INFO, b[pos])
    pos += 1
    ln = b[pos]
    if ln < 0x80:
        pos += 1
    else:
        ln = _long_length(b, pos, n, n, _F_ROUTING_HEADER_LENGTH)
        pos += b[pos] - 0x7F
    end = pos + ln
    if end > n:
        _err(E_TRUNCATED, _S_ROUTING_ANNOUNCES, (ln, n - pos))
    if end < n:
        _err(E_TRAILING, _S_AFTER_GBT_BLOCK, n - end)
    g = pos + 5
    if g + 7 > end:
        _short(end, n, _F_GBT_HEADER)
    if b[g] != TAG_GBT:
        _err(E_TAG, _S_NOT_E0, b[g])
    dl = b[g + 6]
    c = g + 7
    if dl >= 0x80:
        dl = _long_length(b, g + 6, end, n, _F_BLOCK_DATA_LENGTH)
        c = g + 6 + b[g + 6] - 0x7F
    if c + dl > end:
        _err(E_OVERRUN, _S_BLOCK_DATA_PAST, dl)
    if c + dl < end:
        _err(E_TRAILING, _S_AFTER_BLOCK_DATA, end - c - dl)
    return Message(b, (c << 8) | (g << 2) | _GBT, dl)
