# NDEF messages (NFC Forum NDEF 1.0) and the Type 2 tag TLV area: pure parsing, no I/O.
# We need one thing from a tag: the payload of its `application/vnd.ppmid.cmd` MIME
# record. Everything malformed is refused with E_NDEF; chunked records are refused too
# (a command always fits one record).
from micropython import const

from ppmid.nfc.errors import NfcError, E_NDEF, E_NDEF_NOCMD

MIME_CMD = b"application/vnd.ppmid.cmd"

MB = const(0x80)
ME = const(0x40)
_CF = const(0x20)
SR = const(0x10)
IL = const(0x08)
_TNF_EMPTY = const(0)
_TNF_MIME = const(2)
_TNF_UNCHANGED = const(6)
_TNF_RESERVED = const(7)


def records(msg):
    """Yield (tnf, type, id, payload) memoryviews for each record of an NDEF message."""
    mv = memoryview(msg)
    n = len(mv)
    if n == 0:
        raise NfcError(E_NDEF, "NDEF message is empty")
    pos = 0
    first = True
    while True:
        if pos + 3 > n:
            raise NfcError(E_NDEF, "NDEF record header truncated at byte %d" % pos)
        h = mv[pos]
        tnf = h & 0x07
        if first != bool(h & MB):
            raise NfcError(E_NDEF, "NDEF message-begin flag wrong at byte %d" % pos)
        if h & _CF:
            raise NfcError(E_NDEF, "chunked NDEF records are not supported")
        if tnf in (_TNF_UNCHANGED, _TNF_RESERVED):
            raise NfcError(E_NDEF, "NDEF record with TNF %d outside a chunk" % tnf)
        type_len = mv[pos + 1]
        p = pos + 2
        if h & SR:
            plen = mv[p]
            p += 1
        else:
            if p + 4 > n:
                raise NfcError(E_NDEF, "NDEF payload length truncated")
            plen = (mv[p] << 24) | (mv[p + 1] << 16) | (mv[p + 2] << 8) | mv[p + 3]
            p += 4
        id_len = 0
        if h & IL:
            if p + 1 > n:
                raise NfcError(E_NDEF, "NDEF id length truncated")
            id_len = mv[p]
            p += 1
        if tnf == _TNF_EMPTY and (type_len or plen or id_len):
            raise NfcError(E_NDEF, "empty NDEF record with type, id or payload")
        end = p + type_len + id_len + plen
        if end > n:
            raise NfcError(E_NDEF, "NDEF record runs %d bytes past the message end" % (end - n))
        t = mv[p:p + type_len]
        p += type_len
        i = mv[p:p + id_len]
        p += id_len
        yield tnf, t, i, mv[p:end]
        pos = end
        first = False
        if h & ME:
            if pos != n:
                raise NfcError(E_NDEF, "%d bytes after the NDEF message end" % (n - pos))
            return
        if pos >= n:
            raise NfcError(E_NDEF, "NDEF message has no message-end record")


def find_mime(msg, mime=MIME_CMD):
    """Payload (memoryview) of the first MIME record of type `mime`. The whole message
    is checked first, so garbage after a good record is still refused."""
    found = None
    for tnf, t, i, payload in records(msg):
        if found is None and tnf == _TNF_MIME and _lower_eq(t, mime):
            found = payload
    if found is None:
        raise NfcError(E_NDEF_NOCMD, "no %s record in the NDEF message" % mime.decode())
    return found


def _lower_eq(a, b):
    # MIME types compare case-insensitively (RFC 2045)
    if len(a) != len(b):
        return False
    for k in range(len(a)):
        x = a[k]
        if 65 <= x <= 90:
            x += 32
        if x != b[k]:
            return False
    return True


def encode_mime(payload, mime=MIME_CMD):
    """One-record NDEF message (tools and tests)."""
    n = len(payload)
    if n < 256:
        head = bytes((MB | ME | SR | _TNF_MIME, len(mime), n))
    else:
        head = bytes((MB | ME | _TNF_MIME, len(mime), n >> 24, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF))
    return head + mime + bytes(payload)


def type2_ndef_tlv(area):
    """(offset, length) of the NDEF message TLV in a Type 2 tag's data area (bytes from
    page 4), or raise. Returns (offset, length) even when area is too short to hold the
    whole message (the caller reads more); raises E_NDEF_NOCMD on a tag without NDEF."""
    n = len(area)
    p = 0
    while p < n:
        t = area[p]
        if t == 0x00:  # NULL TLV
            p += 1
            continue
        if t == 0xFE:  # terminator
            break
        if p + 2 > n:
            return None
        ln = area[p + 1]
        q = p + 2
        if ln == 0xFF:
            if p + 4 > n:
                return None
            ln = (area[p + 2] << 8) | area[p + 3]
            q = p + 4
        if t == 0x03:
            return q, ln
        if t not in (0x01, 0x02, 0xFD):
            raise NfcError(E_NDEF, "unknown TLV 0x%02X in the tag's data area" % t)
        p = q + ln
    if p >= n:
        return None
    raise NfcError(E_NDEF_NOCMD, "the tag holds no NDEF message")
