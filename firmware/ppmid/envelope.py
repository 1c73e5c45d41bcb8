# The command envelope: how a DCC User's GBCS command reaches the gateway, by MQTT (JSON)
# or by NFC (binary), authenticated the same way on both roads.
#
#   mac = HMAC-SHA256(envelope_key, b"ppmid-cmd-v1" 00 id 00 expires 00 gbcs)
#
# with `expires` as decimal ASCII (empty when absent). An envelope that names its key
# (`kid`, keys per DCC User) has 01 kid 00 in place of the first 00, so the mac covers the
# key choice and no envelope without a kid can be read as one with it. A DCC User registered
# with a P-256 public key puts a 64-byte ECDSA-P256-SHA256 signature of those same bytes
# (compute_mac(None, ...)) where the 32-byte mac goes, in either form (ppmid.envelope_sig,
# checked by relay/senders.py). The GBCS bytes are not inspected here: after the envelope
# checks they go to the GBCS validation. Spec: docs/envelope.md.
import hashlib
import binascii
from micropython import const

from ppmid.errors import PpmidError, E_ENVELOPE, E_ID, E_AUTH, E_EXPIRED, E_TOO_LARGE

DOMAIN = b"ppmid-cmd-v1"
ID_MAX = const(32)
MAC_LEN = const(32)
_BLOCK = const(64)  # SHA-256 block size, for HMAC


# The refusals' sentences, by their index in ppmid.envelope_errors.SENTENCES, where the text is.
_S_MAC = const(0)
_S_EXPIRED = const(1)
_S_ID_LENGTH = const(2)
_S_ID_CHARACTERS = const(3)
# 4 (_S_KID_TRUNCATED): ppmid.envelope_binary.binary_kid
_S_B64_CHARACTER = const(5)
_S_B64_LENGTH = const(6)
_S_B64_PADDING = const(7)
_S_MAC_LENGTH = const(8)
_S_MAC_HEX = const(9)
_S_NOT_OBJECT = const(10)
_S_MISSING = const(11)
_S_GBCS_TYPE = const(12)
_S_GBCS_TWICE = const(13)
_S_GBCS_TOO_LARGE = const(14)
_S_GBCS_EMPTY = const(15)
_S_EXPIRES = const(16)
# 17 (_S_NOT_JSON): ppmid.envelope_host.from_json
_S_DEPTH = const(18)


class EnvelopeError(PpmidError):
    pass


def _refuse(code, key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.envelope_errors', loaded for the
    # refusal and dropped again (as str constants here the sentences held ~1 KB of heap)
    from ppmid.modules import sentence
    return EnvelopeError(code, sentence("ppmid.envelope_errors", key, arg))


class Envelope:
    """A command as received: id (str), gbcs (bytes or memoryview), expires (int or None),
    mac (32 bytes), kid (the sender's key name, or None). Nothing here is trusted until
    `verify()` has passed."""

    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, id, gbcs, expires=None, mac=b"", kid=None):
        self.id = id
        self.gbcs = gbcs
        self.expires = expires
        self.mac = mac
        self.kid = kid

    def verify(self, key, now=None):
        """Raise EnvelopeError(E_AUTH) on a wrong mac, E_EXPIRED when `now` (unix
        seconds) is past `expires`. The mac is checked first so that an attacker learns
        nothing about expiry from forged envelopes."""
        if len(self.mac) != MAC_LEN or not _equal(self.mac, compute_mac(key, self.id, self.expires, self.gbcs, self.kid)):
            raise _refuse(E_AUTH, _S_MAC)
        if self.expires is not None and now is not None and now >= self.expires:
            raise _refuse(E_EXPIRED, _S_EXPIRED, (self.expires, now))


def hmac_sha256(key, *parts):
    """HMAC-SHA256 (RFC 2104) over the concatenation of parts; MicroPython has no hmac."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(len(key)):
        ipad[i] = key[i]
        opad[i] = key[i]
    for i in range(_BLOCK):
        ipad[i] ^= 0x36
        opad[i] ^= 0x5C
    inner = hashlib.sha256(ipad)
    for p in parts:
        inner.update(p)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def compute_mac(key, id, expires, gbcs, kid=None):
    """HMAC-SHA256 under `key` of the bytes a command's mac covers; key None: those bytes
    themselves, as parts in order (their concatenation is what a DCC User's P-256
    signature signs, ppmid.envelope_sig): the one place they are defined. Parts, not one
    string: a 4 KB command is hashed where it lies, never copied to join them."""
    parts = (DOMAIN, kid_part(kid), id.encode(), b"\x00", b"" if expires is None else str(expires).encode(),
             b"\x00", gbcs)
    return parts if key is None else hmac_sha256(key, *parts)


def kid_part(kid):
    # what follows the domain string: 00 without a kid (the envelope as it always was)
    return b"\x00" if kid is None else b"\x01" + kid.encode() + b"\x00"


def _equal(a, b):
    # Constant time in the content, so the mac cannot be guessed byte by byte.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def check_id(id, what="id", code=E_ID):
    if not isinstance(id, str) or not 1 <= len(id) <= ID_MAX:
        raise _refuse(code, _S_ID_LENGTH, (what, ID_MAX))
    for ch in id:
        if not "!" <= ch <= "~":
            raise _refuse(code, _S_ID_CHARACTERS, what)
    return id


def json_kid(obj):
    """The optional "kid" of a JSON envelope, checked (E_ENVELOPE), or None."""
    kid = obj.get("kid")
    return None if kid is None else check_id(kid, "kid", E_ENVELOPE)


def json_expires(obj):
    """The optional "expires" of a JSON envelope (unix seconds), checked (E_ENVELOPE), or
    None. At most 0xFFFFFFFE: the journal keeps it in 4 bytes, where 0xFFFFFFFF means "no
    expiry" (and MicroPython's struct.pack would cut a larger one short without a word)."""
    expires = obj.get("expires")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool) or expires < 0
                                or expires > 0xFFFFFFFE):
        raise _refuse(E_ENVELOPE, _S_EXPIRES)
    return expires


# 1 for a base64 alphabet byte; a lookup allocates nothing. Built at import by module-level
# code, which is not kept after it (a builder function would be)
_B64_OK = bytearray(256)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/":
    _B64_OK[_c] = 1
del _c


def _b64_scan(buf, i, n):
    """Check the base64 bytes of buf[i:n] up to the first '"' or backslash (where a JSON
    string ends or escapes): (the index it stopped at, '=' count). Raises EnvelopeError
    at a byte outside the alphabet or after padding."""
    ok = _B64_OK
    pad = 0
    start = i
    while i < n:
        c = buf[i]
        if c == 61:  # '='
            pad += 1
        elif c == 0x22 or c == 0x5C:
            break
        elif pad or not ok[c]:
            raise _refuse(E_ENVELOPE, _S_B64_CHARACTER, (i - start))
        i += 1
    return i, pad


def _b64decode(text):
    # MicroPython's a2b_base64 skips characters it does not know; we want to refuse them.
    if isinstance(text, str):
        text = text.encode()
    n = len(text)
    if n == 0 or n % 4:
        raise _refuse(E_ENVELOPE, _S_B64_LENGTH, n)
    end, pad = _b64_scan(text, 0, n)
    if end != n:
        raise _refuse(E_ENVELOPE, _S_B64_CHARACTER, end)
    if pad > 2:
        raise _refuse(E_ENVELOPE, _S_B64_PADDING)
    return binascii.a2b_base64(text)


def mac_hex(text):
    # the JSON mac field: 64 hex digits, or 128: a DCC User's signature in place of the mac
    # (envelope_sig)
    if not isinstance(text, str) or len(text) != 2 * MAC_LEN and len(text) != 4 * MAC_LEN:
        raise _refuse(E_ENVELOPE, _S_MAC_LENGTH)
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise _refuse(E_ENVELOPE, _S_MAC_HEX)


def from_json_obj(obj, max_gbcs, gbcs=None):
    """Envelope from a decoded MQTT JSON object (see docs/mqtt.md). Raises EnvelopeError.
    `gbcs`: the command already decoded by lift_gbcs_in_place (obj then holds "gbcs": "")."""
    if not isinstance(obj, dict):
        raise _refuse(E_ENVELOPE, _S_NOT_OBJECT)
    for field in ("id", "gbcs", "mac"):
        if field not in obj:
            raise _refuse(E_ENVELOPE, _S_MISSING, field)
    id = check_id(obj["id"])
    gbcs_text = obj["gbcs"]
    if not isinstance(gbcs_text, str):
        raise _refuse(E_ENVELOPE, _S_GBCS_TYPE)
    if gbcs is not None:
        if gbcs_text:
            raise _refuse(E_ENVELOPE, _S_GBCS_TWICE)
    else:
        # Refuse before decoding: base64 of max_gbcs bytes is at most 4*ceil(n/3) characters.
        if len(gbcs_text) > 4 * ((max_gbcs + 2) // 3):
            raise _refuse(E_TOO_LARGE, _S_GBCS_TOO_LARGE, max_gbcs)
        gbcs = _b64decode(gbcs_text)
    if len(gbcs) > max_gbcs:
        raise _refuse(E_TOO_LARGE, _S_GBCS_TOO_LARGE, max_gbcs)
    if not gbcs:
        raise _refuse(E_ENVELOPE, _S_GBCS_EMPTY)
    return Envelope(id, gbcs, json_expires(obj), mac_hex(obj["mac"]), json_kid(obj))


_QUOTE = const(0x22)
# No envelope field nests (every value is a string or a number): deeper JSON is refused
# before json.loads, which on MicroPython fails with MemoryError on a few thousand `[`.
_DEPTH_MAX = const(8)
_B64_CHUNK = const(512)  # base64 characters decoded at a time (384 bytes: a small allocation)


def lift_gbcs_in_place(buf, max_gbcs):
    """lift_gbcs without a second buffer: the bytes are decoded over their own base64 text
    in `buf` (writable; 3 bytes land behind every 4 characters read, so nothing unread is
    overwritten). Returns (gbcs, rest), gbcs a memoryview into buf, or None as
    ppmid.envelope_host.lift_gbcs.
    The MQTT intake uses it on the client's receive buffer: the command is then held once,
    not once as JSON and again decoded (8 KB kept for it at max_gbcs 8192). Nothing is
    written before every check passed, so a refused message is left as it came."""
    i = _gbcs_value(buf)
    if i is None:
        return None
    mv = memoryview(buf)
    got = _lift_value(mv, i, mv, -1, max_gbcs)
    if got is None:
        return None
    return mv[got[2]:got[2] + got[0]], got[1]


def _gbcs_value(buf):
    # index just after the top-level "gbcs" key's closing quote, or None
    mv = memoryview(buf)
    n = len(mv)
    i = 0
    depth = 0
    key = False
    while i < n:
        c = mv[i]
        if c == _QUOTE:
            j = i + 1
            while j < n and mv[j] != _QUOTE:
                j += 2 if mv[j] == 0x5C else 1   # skip what a backslash escapes
            if j >= n:
                return None
            if depth == 1 and key and j - i == 5 and bytes(mv[i + 1:j]) == b"gbcs":
                return j + 1
            key = False
            i = j + 1
            continue
        if c == 0x7B or c == 0x5B:    # { [
            depth += 1
            if depth > _DEPTH_MAX:
                raise _refuse(E_ENVELOPE, _S_DEPTH, _DEPTH_MAX)
            key = c == 0x7B and depth == 1
        elif c == 0x7D or c == 0x5D:  # } ]
            depth -= 1
        elif c == 0x2C and depth == 1:  # ,
            key = True
        i += 1
    return None


def _lift_value(mv, i, out, at, room):
    # decode the string value after the key at i into out[at:] (at -1: over the base64
    # text itself, in mv); (n, rest) or (n, rest, where) for at -1
    n = len(mv)
    while i < n and mv[i] in b" \t\r\n":
        i += 1
    if i >= n or mv[i] != 0x3A:  # :
        return None
    i += 1
    while i < n and mv[i] in b" \t\r\n":
        i += 1
    if i >= n or mv[i] != _QUOTE:
        return None
    q0 = i
    j, pad = _b64_scan(mv, q0 + 1, n)
    if j >= n or mv[j] != _QUOTE:
        return None  # unterminated, or an escape: let json.loads and the checks say what it is
    k = j - q0 - 1
    if k > 4 * ((room + 2) // 3) or k // 4 * 3 - pad > room:
        raise _refuse(E_TOO_LARGE, _S_GBCS_TOO_LARGE, room)
    if k % 4 or pad > 2:
        raise _refuse(E_ENVELOPE, _S_B64_LENGTH, k)
    # the rest first: in place, the decoded bytes go over the base64 text, not around it
    rest = bytes(mv[:q0]) + b'""' + bytes(mv[j + 1:])
    start = q0 + 1 if at < 0 else at
    got = start
    s = q0 + 1
    while s < j:
        e = s + _B64_CHUNK if s + _B64_CHUNK < j else j
        piece = binascii.a2b_base64(mv[s:e])
        out[got:got + len(piece)] = piece
        got += len(piece)
        s = e
    if at < 0:
        return got - start, rest, start
    return got - start, rest


def __getattr__(name):
    # Loaded at the first use, so that the app with MQTT alone does not hold their code:
    # the binary form (from_binary, from_binary_any, to_binary, binary_kid, kid_field:
    # ppmid.envelope_binary, the NFC and wired roads and host tools) and what only host tools and tests call (sign,
    # from_json, lift_gbcs: ppmid.envelope_host). Their users still say envelope.X.
    # Neither has a name starting with _ (CPython's import asks for __path__ here).
    if name[0] == "_":
        raise AttributeError(name)
    from ppmid import envelope_binary
    if hasattr(envelope_binary, name):
        return getattr(envelope_binary, name)
    try:  # (a board has no host-only module: host_tools/deploy.py HOST_ONLY_SUFFIX)
        from ppmid import envelope_host
    except ImportError:
        raise AttributeError(name)
    return getattr(envelope_host, name)
