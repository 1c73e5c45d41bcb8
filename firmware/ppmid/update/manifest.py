# The signed update offer (docs/update.md "Manifest"): checks that need no flash, so that
# the whole refusal logic is testable as pure code on CPython and MicroPython.
#
# An offer is JSON {"id": ..., "manifest": TEXT, "signature": HEX}: the manifest travels as
# the exact text the operator signed (the gateway never re-serialises it, so "canonical
# bytes" is simply "these bytes"), the signature is ECDSA P-256 over SHA-256(TEXT) as r || s
# in hex, "id" names this offer in every status (chosen by the sender, not signed).
import json
import sys
from binascii import a2b_base64, b2a_base64, unhexlify

from ppmid.errors import PpmidError

# 1: "files" a list of {"path", "sha256" (hex), "size"} objects; 2 (docs/update.md "Manifest
# formats"): a list of [path, size, sha256 in base64] triples, ~35% less text per file, so
# that the app's offer fits the MQTT client's 16 KB cap with room to grow. Both are taken
# (gateways in the field run format 1 only: the release that brings format 2 is format 1).
FORMATS = (1, 2)
E_UPDATE_OFFER = "E_UPDATE_OFFER"          # not an offer (JSON, fields)
E_UPDATE_NO_KEY = "E_UPDATE_NO_KEY"        # no update.public_key in the config
E_UPDATE_SIGNATURE = "E_UPDATE_SIGNATURE"  # the signature does not verify with our key
E_UPDATE_MANIFEST = "E_UPDATE_MANIFEST"    # signed, but not a manifest we can apply
E_UPDATE_BOARD = "E_UPDATE_BOARD"          # built for another board
E_UPDATE_OLDER = "E_UPDATE_OLDER"          # not newer than the running version, no downgrade
E_UPDATE_CONFIG = "E_UPDATE_CONFIG"        # needs a newer config version than ours
E_UPDATE_EXPIRED = "E_UPDATE_EXPIRED"      # signed with an expiry that has passed
E_UPDATE_GATEWAY = "E_UPDATE_GATEWAY"      # names the gateways it is for, not this one
E_UPDATE_REPLAY = "E_UPDATE_REPLAY"        # its seq is not above the one this gateway installed last
E_UPDATE_ROMFS = "E_UPDATE_ROMFS"          # an application set for a gateway whose package runs from ROMFS
E_RATE = "E_RATE"                          # as ppmid.relay.core's: too many bad signatures, later
FAILS_BURST = 3                            # failed signature checks in a row on update/+ ...
FAILS_PER_S = 1 / 60                       # ... and one more each minute after that (envelope_sig's)
# A format-2 offer of this many files with paths as long as today's on average (23
# characters) is ~15.4 KB: what the 16,384-byte MQTT cap holds, the topic and the rest of
# the manifest beside it (tests/test_update_sign.py measures it)
MAX_FILES = 180
# the indices of a file's entry in a parsed manifest's "files", whatever the format
PATH = 0
SIZE = 1
SHA256 = 2  # the 32 bytes, as ppmid.update.service.file_hash gives them (half the heap of hex)
MAX_FILE_BYTES = 1 << 20
MAX_GATEWAYS = 1000       # a manifest's "gateways" list (a downgrade must have one)
MAX_IMAGE_BYTES = 4 << 20  # the largest ESP32 OTA app partition a 8 MB flash would have
MAX_SEQ = 0xFFFFFFFF       # a manifest's seq fits 32 bits unsigned (a long int on a 32-bit port: compared, never packed)
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"


class UpdateError(PpmidError):
    pass


def version_tuple(v):
    """"1.2.3" -> (1, 2, 3); ValueError for anything else."""
    if not isinstance(v, str) or not v:
        raise ValueError("version %r" % (v,))
    parts = v.split(".")
    if len(parts) > 4:
        raise ValueError("version %r" % (v,))
    out = []
    for p in parts:
        if not p or len(p) > 6 or any(c not in "0123456789" for c in p):
            raise ValueError("version %r" % (v,))
        out.append(int(p))
    return tuple(out)


def check_path(path):
    """A file of the application set: board.json, or a module under ppmid/. Relative, no
    "." or ".." parts, plain characters: a manifest can never write outside its slot."""
    if not isinstance(path, str) or not 0 < len(path) <= 96 or any(c not in _PATH_CHARS for c in path):
        return False
    if path == "board.json":
        return True
    parts = path.split("/")
    if parts[0] != "ppmid" or len(parts) < 2:
        return False
    for p in parts:
        if p in ("", ".", ".."):
            return False
    return parts[-1].endswith(".mpy") or parts[-1].endswith(".py")


def _bad(message):
    raise UpdateError(E_UPDATE_MANIFEST, message)


def _digest(digest, what):
    # lower case: a downloaded image's digest is compared as hexlify() gives it, so an
    # upper-case one (a hand-made manifest) would download in full, then never match
    if not isinstance(digest, str) or len(digest) != 64:
        _bad("%s: sha256 must be 64 hex digits" % what)
    try:
        unhexlify(digest)
    except ValueError:
        _bad("%s: sha256 must be 64 hex digits" % what)
    return digest.lower()


def parse_manifest(text):
    """The manifest dict from its signed text, fields checked (UpdateError otherwise)."""
    try:
        m = json.loads(text)
    except ValueError:
        _bad("the signed manifest is not JSON")
    if not isinstance(m, dict) or m.get("format") not in FORMATS:
        _bad("manifest format must be 1 or 2")
    try:
        version_tuple(m.get("version"))
    except ValueError:
        _bad("manifest version %r is not digits and dots" % (m.get("version"),))
    if not isinstance(m.get("board"), str):
        _bad("manifest board must be a string")
    mcv = m.get("min_config_version", 1)
    if isinstance(mcv, bool) or not isinstance(mcv, int):
        _bad("min_config_version must be an integer")
    if not isinstance(m.get("downgrade", False), bool):
        _bad("downgrade must be true or false")
    # without an expiry a signed manifest could be replayed by any DCC User for ever (the
    # product is pre-release: manifests from before "expires" are refused, not grandfathered)
    exp = m.get("expires")
    if isinstance(exp, bool) or not isinstance(exp, int) or exp <= 0:
        _bad("the manifest has no expires (unix seconds): sign it again with ppmid release")
    # the replay floor's rising number (pre-release, as for expires: no manifest without one
    # is kept). Up to 2**32-1: on a 32-bit port that is a long int (small ints are 31 bits),
    # which json.loads makes and "<=" compares; nothing packs it into a fixed width
    seq = m.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ:
        _bad("the manifest has no seq (a whole number 1 to %d): sign it again with ppmid release" % MAX_SEQ)
    gws = m.get("gateways")
    if gws is not None and (not isinstance(gws, list) or not 0 < len(gws) <= MAX_GATEWAYS
                            or any(not isinstance(g, str) or len(g) != 16 for g in gws)):
        _bad("gateways must be a list of 1 to %d EUI-64s (16 hex digits)" % MAX_GATEWAYS)
    if m.get("downgrade", False) and gws is None:
        _bad("a downgrade must name the gateways it is for (\"gateways\": [EUI, ...])")
    if "image" in m:
        return _parse_image(m)
    files = m.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        _bad("files must be a list of 1 to %d entries" % MAX_FILES)
    v1 = m["format"] == 1
    # format 2 lists its paths in ascending order (as ppmid release writes every format):
    # a path listed twice is then the one before it, and no set of the paths is built
    seen = set() if v1 else None
    before = ""
    have_app = False
    for i in range(len(files)):
        # each entry becomes [path, size, sha256 bytes] where it lies: one form for the
        # updater whatever the format, and a format-1 object is let go as soon as it is read
        f = files[i] = _entry_v1(files[i], i) if v1 else _entry_v2(files[i], i)
        path = f[PATH]
        if not check_path(path):
            _bad("file %r is not board.json or a module under ppmid/" % (path,))
        if path in seen if v1 else path == before:
            _bad("file %s is listed twice" % path)
        if v1:
            seen.add(path)
        elif path < before:
            _bad("file %s: format 2 lists the files in path order, and it comes after %s" % (path, before))
        before = path
        size = f[SIZE]
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
            _bad("file %s: size must be 0 to %d bytes" % (path, MAX_FILE_BYTES))
        if path.startswith("ppmid/app."):
            have_app = True
    if not have_app:
        _bad("the set has no ppmid/app module: it could not start")
    return m


def _entry_v1(f, i):
    if not isinstance(f, dict):
        _bad("file %d: each file is an object {path, sha256, size}" % i)
    path = f.get("path")
    return [path, f.get("size"), unhexlify(_digest(f.get("sha256"), "file %s" % (path,)))]


def _entry_v2(f, i):
    if not isinstance(f, list) or len(f) != 3:
        _bad("file %d: each file is a list of 3, [path, size, sha256 in base64]" % i)
    digest = f[2]
    try:
        raw = a2b_base64(digest) if isinstance(digest, str) and len(digest) == 44 else b""
    except ValueError:  # its padding
        raw = b""
    # the canonical base64 of 32 bytes only: a decoder skips what is not base64, so a digest
    # could otherwise be spelt more than one way; encoded again, it must be itself
    if len(raw) != 32 or b2a_base64(raw)[:44] != digest.encode():
        _bad("file %d: sha256 must be 44 characters of base64 (32 bytes)" % i)
    f[2] = raw
    return f


def _parse_image(m):
    # a firmware image for the board's next OTA app partition (docs/update.md "Image
    # updates"): one entry, no files beside it
    img = m["image"]
    if "files" in m:
        _bad("a manifest has either files or an image, not both")
    if not isinstance(img, dict):
        _bad("image must be an object {sha256, size}")
    digest, size = img.get("sha256"), img.get("size")
    img["sha256"] = _digest(digest, "image")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_IMAGE_BYTES:
        _bad("image: size must be 1 to %d bytes" % MAX_IMAGE_BYTES)
    return m


_HEX = b"0123456789abcdefABCDEF"


def _strings(buf):
    """{key: (start, end)} of a one-level JSON object whose values are all strings (the form
    `ppmid release` writes), the raw bounds of each value inside its quotes; None for any
    other form. Reads only."""
    n = len(buf)
    i, found, key = 0, {}, None
    while i < n and buf[i] in b" \t\r\n":
        i += 1
    if i >= n or buf[i] != 0x7B:  # {
        return None
    i += 1
    while True:
        while i < n and buf[i] in b" \t\r\n,:":
            i += 1
        if i >= n:
            return None
        if buf[i] == 0x7D:  # }
            return found if key is None else None
        if buf[i] != 0x22:
            return None
        j = i + 1
        while j < n and buf[j] != 0x22:
            j += 2 if buf[j] == 0x5C else 1
        if j >= n:
            return None
        if key is None:
            key = bytes(buf[i + 1:j])
        else:
            found[key] = (i + 1, j)
            key = None
        i = j + 1


def _unescape_in_place(buf, start, end):
    """End of the JSON string buf[start:end] unescaped where it lies (it only shrinks), or
    None, writing nothing, when it holds an escape this does not take (a surrogate pair)."""
    i = start
    while i < end:  # check every escape first: nothing is written to an offer refused here
        if buf[i] == 0x5C:
            c = buf[i + 1] if i + 1 < end else 0
            if c == 0x75:  # \uXXXX
                h = bytes(buf[i + 2:i + 6])
                if len(h) != 4 or any(x not in _HEX for x in h) or 0xD800 <= int(h, 16) <= 0xDFFF:
                    return None
                i += 6
                continue
            if c not in b'"\\/bfnrt':
                return None
            i += 2
        else:
            i += 1
    r = w = start
    while r < end:
        b = buf[r]
        if b == 0x5C:
            c = buf[r + 1]
            if c == 0x75:
                cp = int(bytes(buf[r + 2:r + 6]), 16)
                r += 6
                if cp < 0x80:
                    buf[w] = cp
                    w += 1
                elif cp < 0x800:
                    buf[w] = 0xC0 | cp >> 6
                    buf[w + 1] = 0x80 | cp & 0x3F
                    w += 2
                else:
                    buf[w] = 0xE0 | cp >> 12
                    buf[w + 1] = 0x80 | cp >> 6 & 0x3F
                    buf[w + 2] = 0x80 | cp & 0x3F
                    w += 3
                continue
            b = {0x62: 8, 0x66: 12, 0x6E: 10, 0x72: 13, 0x74: 9}.get(c, c)
            r += 2
        else:
            r += 1
        buf[w] = b
        w += 1
    return w


def _offer_in_place(buf):
    """parse_offer for an offer in a writable buffer (MicroPython: the MQTT client's receive
    buffer): the manifest's text unescaped where it lies and returned as a memoryview over
    buf, so reading an offer needs no block the size of its manifest (~12 KB for the app),
    which a heap cut into pieces may not have (docs/memory.md "Fragmentation"). None for any
    form but the one `ppmid release` writes: the caller parses it as a whole then."""
    keys = _strings(buf)
    if keys is None or b"manifest" not in keys or b"signature" not in keys:
        return None
    oid = None
    if b"id" in keys:
        s, e = keys[b"id"]
        raw = bytes(buf[s:e])
        if b"\\" in raw or len(raw) > 40:
            return None
        oid = raw.decode()
    s, e = keys[b"signature"]
    try:
        sig = unhexlify(bytes(buf[s:e]))
    except ValueError:
        return None
    s, e = keys[b"manifest"]
    end = _unescape_in_place(buf, s, e)
    if end is None:
        return None
    return oid, memoryview(buf)[s:end], sig


def parse_offer(payload):
    """(id, manifest text, signature bytes) of an offer payload, or UpdateError. Under
    MicroPython a writable payload is read where it lies (_offer_in_place) and the text is a
    memoryview over it: valid until the payload's buffer is used again."""
    if sys.implementation.name == "micropython":
        from ppmid.mqtt.intake import writable  # loaded with the MQTT road that brings offers
        got = _offer_in_place(payload) if writable(payload) else None
        if got is not None:
            return got
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError):
        raise UpdateError(E_UPDATE_OFFER, "the offer is not JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("manifest"), str) \
            or not isinstance(obj.get("signature"), str):
        raise UpdateError(E_UPDATE_OFFER, "an offer is {\"id\", \"manifest\": text, \"signature\": hex}")
    oid = obj.get("id")
    if oid is not None and (not isinstance(oid, str) or len(oid) > 40):
        raise UpdateError(E_UPDATE_OFFER, "offer id must be a string of up to 40 characters")
    try:
        sig = unhexlify(obj["signature"])
    except ValueError:
        raise UpdateError(E_UPDATE_SIGNATURE, "the signature is not hex")
    return oid, obj["manifest"], sig


def public_key(key_hex):
    """(x, y) from the config's update.public_key hex, or UpdateError."""
    if not key_hex:
        raise UpdateError(E_UPDATE_NO_KEY, "no update.public_key in the config: updates are refused")
    from ppmid.update import p256
    try:
        return p256.public_key(unhexlify(key_hex))
    except ValueError as exc:
        raise UpdateError(E_UPDATE_NO_KEY, "update.public_key is not usable: %s" % (exc,))


def verify_signed(key_hex, text, sig):
    """True when sig signs text under the configured update key, False when not: the one
    check of the update key's documents (offers, users updates, commission orders). A P-256
    verify blocks the event loop for up to a second on an ESP32 (docs/update.md), and every
    DCC User identity may publish on update/+: the signatures that fail are counted in one
    bucket shared by the three (FAILS_BURST, then FAILS_PER_S, as ppmid.envelope_sig does per
    kid); past it, UpdateError E_RATE without verifying. The P-256 code is imported here and
    dropped again by the caller."""
    key = public_key(key_hex)
    import ppmid.update as pkg
    from ppmid.clock import ticks_ms
    failed = getattr(pkg, "failed_signatures", None)
    if failed is None:
        # on the package, which stays loaded while this module is dropped after each
        # message: a small object, not a module kept for good (a module loaded for good in
        # the middle of an update cut the heap into pieces too small for the next offer)
        from ppmid.relay.ratelimit import TokenBuckets
        from ppmid.clock import ticks_diff
        failed = pkg.failed_signatures = TokenBuckets(FAILS_PER_S, FAILS_BURST, ticks_diff, 1)
    now = getattr(pkg, "now_ms", ticks_ms)()  # a test sets ppmid.update.now_ms
    wait = failed.wait_ms(0, now)
    if wait:
        raise UpdateError(E_RATE, "too many bad signatures on update messages: the next is checked in %d s"
                          % ((wait + 999) // 1000))
    from ppmid.update import p256
    if isinstance(text, str) and sys.implementation.name != "micropython":
        # MicroPython hashes a str's UTF-8 bytes where they lie: no copy the size of the
        # manifest (~13 KB for the app) on a heap that may not have such a block free
        text = text.encode()
    if p256.verify(key, text, sig):
        return True
    failed.take(0, now)
    return False


def check_signature(key_hex, text, sig):
    """UpdateError unless sig signs text under the configured key (verify_signed)."""
    if not verify_signed(key_hex, text, sig):
        raise UpdateError(E_UPDATE_SIGNATURE, "the manifest's signature does not verify with this gateway's update key")


def check_applicable(m, board, running, config_version, gateway, now, floor):
    """Refuse a valid manifest that is not for this gateway now: another board, expired
    (`now`: unix seconds, None while the clock is unset: E_CLOCK, as for envelopes with an
    expiry), naming other gateways, a seq not above `floor` (the seq of the last manifest
    this gateway switched to, ppmid.update.slots.floor: a replay), a newer config, not
    newer than the running version (unless it is signed as a downgrade, which always names
    its gateways)."""
    if m["board"] != board:
        raise UpdateError(E_UPDATE_BOARD, "the update is for board %s, this is %s" % (m["board"], board))
    if now is None:
        from ppmid.errors import E_CLOCK
        raise UpdateError(E_CLOCK, "the gateway clock is not set: the update's expiry cannot be checked")
    if now >= m["expires"]:
        raise UpdateError(E_UPDATE_EXPIRED, "the manifest expired at %d (now %d): sign it again" % (m["expires"], now))
    gws = m.get("gateways")
    if gws is not None and gateway.upper() not in [g.upper() for g in gws]:
        raise UpdateError(E_UPDATE_GATEWAY, "the update names %d gateway(s), not this one (%s)" % (len(gws), gateway))
    # before the version: the same manifest again after its install is a replay, said as one.
    # floor: one number for both kinds, or (application sets', images') from slots.floors
    image = "image" in m
    if isinstance(floor, tuple):
        floor = floor[1 if image else 0]
    if m["seq"] <= floor:
        raise UpdateError(E_UPDATE_REPLAY, "manifest seq %d is not above %d, the last %s manifest this gateway "
                          "installed: refused as a replay (sign a new release)"
                          % (m["seq"], floor, "image" if image else "application"))
    if m.get("min_config_version", 1) > config_version:
        raise UpdateError(E_UPDATE_CONFIG, "the update needs config version %d, this gateway has %d"
                          % (m["min_config_version"], config_version))
    new, old = version_tuple(m["version"]), version_tuple(running)
    if new <= old and not m.get("downgrade", False):
        raise UpdateError(E_UPDATE_OLDER, "version %s is not newer than the running %s (and the manifest "
                          "is not signed as a downgrade)" % (m["version"], running))
    if new == old:
        raise UpdateError(E_UPDATE_OLDER, "version %s is already running" % running)


def verify_offer(payload, key_hex, board, running, config_version, gateway, now, floor, parsed=None):
    """(offer id, manifest dict, manifest text) of an offer that may be applied here, or
    UpdateError: the signature first, so an unsigned manifest is never even parsed.
    gateway: this gateway's EUI-64; now: unix seconds, None while the clock is unset;
    floor: the seq of the last manifest installed here (0: none), or the pair
    (application sets', images') that ppmid.update.slots.floors gives;
    parsed: parse_offer(payload) when the caller has it already (the manifest's text is the
    size of the whole offer, ~13 KB for the app: one copy of it, not two)."""
    oid, text, sig = parsed or parse_offer(payload)
    check_signature(key_hex, text, sig)
    m = parse_manifest(text)
    check_applicable(m, board, running, config_version, gateway, now, floor)
    return oid, m, text
