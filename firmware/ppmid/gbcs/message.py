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

FORM_MAC_SIGNED = "mac+signed"
FORM_SIGNED = "signed"
FORM_GBT = "gbt"

CRA_COMMAND = const(1)
CRA_RESPONSE = const(2)
CRA_ALERT = const(3)
CRA_NAMES = (None, "command", "response", "alert")

CONTENT_GBZ = "gbz"
CONTENT_DLMS_REQUEST = "dlms-request"
CONTENT_DLMS_RESPONSE = "dlms-response"
CONTENT_DLMS_NOTIFICATION = "dlms-notification"
CONTENT_ASN1 = "asn1"

TAG_GENERAL_CIPHERING = const(0xDD)
TAG_GENERAL_SIGNING = const(0xDF)
TAG_GBT = const(0xE0)
MAC_LEN = const(12)
SIGNATURE_LEN = const(64)
DATE_TIME_LEN = const(12)

# Stable error codes of the decoder (the validator adds its own: ppmid.gbcs.validate).
E_TRUNCATED = "E_TRUNCATED"  # the buffer ends before a field it announces
E_OVERRUN = "E_OVERRUN"      # a nested length runs past the element that encloses it
E_TRAILING = "E_TRAILING"    # bytes left over after the message (or before the MAC)
E_TAG = "E_TAG"              # a tag byte is not the one this form requires
E_LENGTH = "E_LENGTH"        # a length is not allowed for its field (or malformed)
E_VALUE = "E_VALUE"          # a field value is not allowed (CRA flag)


class GbcsError(PpmidError):
    pass


def _err(code, fmt, arg=None):
    raise GbcsError(code, fmt if arg is None else fmt % arg)


def _need(pos, end, limit, what):
    # pos: first byte after the field; end: end of the enclosing element; limit: len(buffer)
    if pos > end:
        if end < limit:
            _err(E_OVERRUN, "%s runs past the end of the element that encloses it", what)
        _err(E_TRUNCATED, "message ends inside the %s", what)


def _length(b, pos, end, limit, what):
    """The short or long (81 nn / 82 nnnn) length at pos; _lsize(b, pos) gives its size.
    (Two calls instead of a tuple: decoding allocates nothing but the Message.)"""
    _need(pos + 1, end, limit, what)
    n = b[pos]
    if n < 0x80:
        return n
    if n == 0x81:
        _need(pos + 2, end, limit, what)
        return b[pos + 1]
    if n == 0x82:
        _need(pos + 3, end, limit, what)
        return (b[pos + 1] << 8) | b[pos + 2]
    _err(E_LENGTH, "%s has an unsupported length form (only < 0x80, 81 nn, 82 nnnn)", what)


def _lsize(b, pos):
    n = b[pos]
    return 1 if n < 0x80 else n - 0x7F


def _uint(b, pos, n):
    v = 0
    for i in range(pos, pos + n):
        v = (v << 8) | b[i]
    return v


def _counter(b, pos):
    # Below 2**30 the value is a small int on every port (ESP32 small ints are 31-bit), so the
    # loop allocates nothing; above, one int.from_bytes instead of a big int per shift.
    if b[pos] == 0 and b[pos + 1] == 0 and b[pos + 2] == 0 and b[pos + 3] == 0 and b[pos + 4] < 0x40:
        return _uint(b, pos + 4, 4)
    return int.from_bytes(b[pos:pos + 8], "big")


def _transaction_and_titles(b, t, end, limit):
    # t is the position of the transaction-id length byte (09); the next 28 bytes are fixed.
    # Returns the position after the date-time element.
    _need(t + 29, end, limit, "routing header")
    if b[t] != 9:
        _err(E_LENGTH, "transaction-id length must be 09, not %02X", b[t])
    cra = b[t + 1]
    if cra < 1 or cra > 3:
        _err(E_VALUE, "CRA flag must be 01 (command), 02 (response) or 03 (alert), not %02X", cra)
    if b[t + 10] != 8:
        _err(E_LENGTH, "originator system title length must be 08, not %02X", b[t + 10])
    if b[t + 19] != 8:
        _err(E_LENGTH, "recipient system title length must be 08, not %02X", b[t + 19])
    _need(t + 30, end, limit, "date-time")
    dtl = b[t + 28]
    if dtl != 0 and dtl != DATE_TIME_LEN:
        _err(E_LENGTH, "date-time length must be 00 or 0C, not %02X", dtl)
    pos = t + 29 + dtl
    _need(pos, end, limit, "date-time")
    return pos


class Message:
    """One decoded GBCS message or GBT block. Field properties are memoryviews into the
    buffer given to decode() (keep that buffer unchanged while the Message is in use).
    Only the buffer, the form and three offsets are stored; every other field is found from
    them on access, so a decode allocates one small object."""

    def __init__(self, buf, form, h, c, n):
        self.buf = buf        # memoryview of the whole message
        self.form = form
        self._h = h           # signed forms: transaction-id position; GBT: the E0 tag position
        self._c = c           # content (or block data) position
        self._n = n           # content (or block data) length

    @property
    def _t(self):
        return 1 if self.form == FORM_GBT else self._h

    @property
    def _l(self):
        # (transaction-id pos, date-time len, code pos, other-info len, content pos,
        #  content len, signature pos or -1, signature len, MAC pos or -1, GBT tag pos or -1)
        # for tests and tools; the properties below compute what they need directly.
        return (self._t, self.buf[self._t + 28], self._code_pos(), self._oil(), self._c, self._n,
                self._sig_pos(), self._sig_len(), self._mac_pos(), self._h if self.form == FORM_GBT else -1)

    def _code_pos(self):
        p = self._t + 29 + self.buf[self._t + 28]
        return p + _lsize(self.buf, p)

    def _oil(self):
        t = self._t
        return _length(self.buf, t + 29 + self.buf[t + 28], len(self.buf), len(self.buf), "")

    def _mac_pos(self):
        return len(self.buf) - MAC_LEN if self.form == FORM_MAC_SIGNED else -1

    def _sig_pos(self):
        if self.form == FORM_GBT:
            return -1
        s = self._c + self._n
        end = len(self.buf) - MAC_LEN if self.form == FORM_MAC_SIGNED else len(self.buf)
        return -1 if s == end else s + 1

    def _sig_len(self):
        s = self._sig_pos()
        return 0 if s < 0 else self.buf[s - 1]

    # ---- routing information (all forms) ----
    @property
    def cra(self):
        return self.buf[self._t + 1]

    @property
    def cra_name(self):
        return CRA_NAMES[self.buf[self._t + 1]]

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
    def date_time(self):
        t = self._t
        if self.buf[t + 28] == 0:
            return None
        return self.buf[t + 29:t + 29 + DATE_TIME_LEN]

    @property
    def message_code(self):
        p = self._code_pos()
        return (self.buf[p] << 8) | self.buf[p + 1]

    @property
    def other_information(self):
        p = self._code_pos()
        return self.buf[p:p + self._oil()]

    # optional other-information fields (General-Signing forms)
    def _oi_field(self, index, n):
        oil = self._oil()
        if oil < 2 + 8 * index + n or n <= 0:
            return None
        p = self._code_pos() + 2 + 8 * index
        return self.buf[p:p + n]

    @property
    def supplementary_remote_party_id(self):
        return self._oi_field(0, 8)

    @property
    def supplementary_remote_party_counter(self):
        f = self._oi_field(1, 8)
        return None if f is None else _counter(f, 0)

    @property
    def supplementary_originator_counter(self):
        f = self._oi_field(2, 8)
        return None if f is None else _counter(f, 0)

    @property
    def certificate(self):
        return self._oi_field(3, self._oil() - 26)

    # ---- General-Signing content ----
    @property
    def content(self):
        return self.buf[self._c:self._c + self._n]

    @property
    def content_len(self):
        return self._n

    @property
    def content_type(self):
        if self.form == FORM_GBT:
            return None
        b = self.buf
        c = self._c
        first = b[c]
        if first == 0x01 and self._n >= 2 and b[c + 1] == 0x09:
            return CONTENT_GBZ
        if first == 0xD9:
            return CONTENT_DLMS_REQUEST
        if first == 0xDA:
            return CONTENT_DLMS_RESPONSE
        if first == 0x0F:
            return CONTENT_DLMS_NOTIFICATION
        return CONTENT_ASN1

    @property
    def signature(self):
        """None when the field is absent (pre-command); an empty view when its length is 0."""
        s = self._sig_pos()
        if s < 0:
            return None
        return self.buf[s:s + self.buf[s - 1]]

    @property
    def has_signature_field(self):
        return self._sig_pos() >= 0

    @property
    def mac(self):
        if self.form != FORM_MAC_SIGNED:
            return None
        return self.buf[len(self.buf) - MAC_LEN:]

    # ---- GBT block (FORM_GBT only; None otherwise) ----
    @property
    def is_gbt(self):
        return self.form == FORM_GBT

    @property
    def security_control(self):
        if self.form == FORM_GBT:
            return self.buf[self._h - 5]
        return self.buf[self._h - 6] if self.form == FORM_MAC_SIGNED else None

    @property
    def block_control(self):
        return self.buf[self._h + 1] if self.form == FORM_GBT else None

    @property
    def last_block(self):
        return bool(self.buf[self._h + 1] & 0x80) if self.form == FORM_GBT else None

    @property
    def block_number(self):
        g = self._h
        return (self.buf[g + 2] << 8) | self.buf[g + 3] if self.form == FORM_GBT else None

    @property
    def block_ack(self):
        g = self._h
        return (self.buf[g + 4] << 8) | self.buf[g + 5] if self.form == FORM_GBT else None

    @property
    def block_data(self):
        if self.form != FORM_GBT:
            return None
        return self.buf[self._c:self._c + self._n]


def _general_signing(b, p, end, limit, form):
    # General-Signing from p; it must end exactly at `end`.
    _need(p + 1, end, limit, "General-Signing tag")
    if b[p] != TAG_GENERAL_SIGNING:
        _err(E_TAG, "expected the General-Signing tag DF, found %02X", b[p])
    t = p + 1
    pos = _transaction_and_titles(b, t, end, limit)
    oil = _length(b, pos, end, limit, "other-information")
    pos += _lsize(b, pos)
    if oil < 2 or (oil > 2 and oil < 26 and oil != 10 and oil != 18):
        _err(E_LENGTH, "other-information length must be 2, 10, 18 or >= 26, not %d", oil)
    pos += oil
    _need(pos, end, limit, "other-information")
    cl = _length(b, pos, end, limit, "content length")
    pos += _lsize(b, pos)
    if cl == 0:
        _err(E_LENGTH, "content is empty")
    c = pos
    pos += cl
    _need(pos, end, limit, "content")
    if pos < end:  # else: signature field absent, a pre-command
        sl = b[pos]
        if sl != 0 and sl != SIGNATURE_LEN:
            _err(E_LENGTH, "signature length must be 00 or 40, not %02X", sl)
        pos += 1 + sl
        _need(pos, end, limit, "signature")
        if pos != end:
            _err(E_TRAILING, "%d bytes follow the signature", end - pos)
    return Message(b, form, t, c, cl)


def decode(buf):
    """Decode one GBCS message or GBT block -> Message. Raises GbcsError(code, sentence)."""
    b = buf if isinstance(buf, memoryview) else memoryview(buf)
    n = len(b)
    if n < 2:
        _err(E_TRUNCATED, "message is %d bytes long: too short for any GBCS form", n)
    tag = b[0]
    if tag == TAG_GENERAL_SIGNING:
        return _general_signing(b, 0, n, n, FORM_SIGNED)
    if tag != TAG_GENERAL_CIPHERING:
        _err(E_TAG, "first byte must be DD (General-Ciphering) or DF (General-Signing), not %02X", tag)
    if b[1] == 0:
        # MAC header: six empty fields, then the length of everything after it.
        _need(7, n, n, "MAC header")
        for i in range(2, 7):
            if b[i] != 0:
                _err(E_LENGTH, "MAC header fields must all be empty (00), byte %d is %02X" % (i, b[i]))
        ln = _length(b, 7, n, n, "MAC header length")
        pos = 7 + _lsize(b, 7)
        end = pos + ln
        if end > n:
            _err(E_TRUNCATED, "MAC header announces %d bytes, only %d present" % (ln, n - pos))
        if end < n:
            _err(E_TRAILING, "%d bytes follow the message", n - end)
        if ln < 5 + MAC_LEN:
            _err(E_LENGTH, "MAC header length %d is too small for security header and MAC", ln)
        return _general_signing(b, pos + 5, end - MAC_LEN, n, FORM_MAC_SIGNED)
    if b[1] != 9:
        _err(E_LENGTH, "after DD expected 00 (MAC header) or 09 (GBT routing header), found %02X", b[1])
    # GBT block: routing header (fixed titles, empty date-time, 2-byte other-info, empty key-info)
    pos = _transaction_and_titles(b, 1, n, n)
    oil = _length(b, pos, n, n, "other-information")
    if oil != 2:
        _err(E_LENGTH, "GBT routing header other-information length must be 2, not %d", oil)
    pos += 3
    _need(pos + 1, n, n, "key-info")
    if b[pos] != 0:
        _err(E_LENGTH, "GBT routing header key-info must be empty (00), not %02X", b[pos])
    ln = _length(b, pos + 1, n, n, "routing header length")
    pos += 1 + _lsize(b, pos + 1)
    end = pos + ln
    if end > n:
        _err(E_TRUNCATED, "routing header announces %d bytes, only %d present" % (ln, n - pos))
    if end < n:
        _err(E_TRAILING, "%d bytes follow the GBT block", n - end)
    g = pos + 5
    _need(g + 6, end, n, "GBT header")
    if b[g] != TAG_GBT:
        _err(E_TAG, "expected the General-Block-Transfer tag E0, found %02X", b[g])
    dl = _length(b, g + 6, end, n, "block data length")
    c = g + 6 + _lsize(b, g + 6)
    if c + dl > end:
        _err(E_OVERRUN, "block data (%d bytes) runs past the routing header length" % dl)
    if c + dl < end:
        _err(E_TRAILING, "%d bytes follow the block data", end - c - dl)
    return Message(b, FORM_GBT, g, c, dl)
