# The update offer's checks (ppmid.update.manifest): signature first, then the manifest's
# fields, then whether it applies to this gateway; CPython and MicroPython. The offers are
# signed by tests/firmware/update_vectors.py's fixed key (made with `cryptography`).
import gc
import json

from ppmid.update import manifest as M
from test_relay_support import fresh_signature_limits
from update_vectors import PUBLIC, OTHER_PUBLIC, signed_offer, MANIFEST, EXPIRES, GATEWAY, SEQ


def _code(fn, *a):
    try:
        fn(*a)
    except M.UpdateError as exc:
        assert exc.message
        return exc.code
    raise AssertionError("accepted")


NOW = 1767225600  # 2026-01-01, a set clock


def _verify(payload, running="0.1.0", board="emulated", cfg_version=1, key=PUBLIC, gateway=GATEWAY, now=NOW, floor=0):
    fresh_signature_limits()  # these tests refuse forged signatures by the dozen
    return M.verify_offer(payload, key, board, running, cfg_version, gateway, now, floor)


def test_a_signed_offer_for_this_board_and_a_newer_version_passes():
    oid, m, text = _verify(signed_offer("good"))
    assert oid == "t1" and m["version"] == "0.2.0" and m["board"] == "emulated"
    assert m["files"] == _triples(MANIFEST["files"]) and m["format"] == 1
    assert json.loads(text)["files"] == MANIFEST["files"]  # the signed text as it came


def test_the_wrong_key_and_a_tampered_manifest_are_refused():
    assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, OTHER_PUBLIC) == M.E_UPDATE_SIGNATURE
    assert _code(_verify, signed_offer("wrong-key")) == M.E_UPDATE_SIGNATURE
    o = json.loads(signed_offer("good"))
    o["manifest"] = o["manifest"].replace('"0.2.0"', '"0.9.0"')
    assert _code(_verify, json.dumps(o)) == M.E_UPDATE_SIGNATURE
    o = json.loads(signed_offer("good"))
    o["signature"] = "zz" + o["signature"][2:]
    assert _code(_verify, json.dumps(o)) == M.E_UPDATE_SIGNATURE


def test_no_key_in_the_config_refuses_every_update():
    assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, "") == M.E_UPDATE_NO_KEY
    assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, "04" + "00" * 64) == M.E_UPDATE_NO_KEY


def test_not_an_offer():
    for payload in (b"", b"{", b"[]", b'{"manifest": 1, "signature": ""}', b'{"manifest": "x"}'):
        assert _code(_verify, payload) == M.E_UPDATE_OFFER, payload


def test_other_board_older_version_and_newer_config_are_refused():
    assert _code(_verify, signed_offer("good"), "0.1.0", "esp32-devkitc") == M.E_UPDATE_BOARD
    assert _code(_verify, signed_offer("good"), "0.2.0") == M.E_UPDATE_OLDER
    assert _code(_verify, signed_offer("good"), "0.10.0") == M.E_UPDATE_OLDER
    assert _code(_verify, signed_offer("needs-config-2")) == M.E_UPDATE_CONFIG


def test_a_downgrade_passes_only_when_signed_as_one():
    oid, m, _ = _verify(signed_offer("downgrade"), "0.3.0")
    assert m["version"] == "0.2.0" and m["downgrade"] is True and m["gateways"] == [GATEWAY]
    assert _code(_verify, signed_offer("downgrade"), "0.2.0") == M.E_UPDATE_OLDER  # already running


def test_expiry_and_the_gateways_a_manifest_names():
    # review M4: a signed manifest could be replayed for ever, to every gateway of the
    # board, downgrades included
    assert _verify(signed_offer("good"), now=EXPIRES - 1)[1]["expires"] == EXPIRES
    for now in (EXPIRES, EXPIRES + 1):
        assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, PUBLIC, GATEWAY, now) == M.E_UPDATE_EXPIRED
    assert _code(_verify, signed_offer("expired")) == M.E_UPDATE_EXPIRED
    # the clock unset: the expiry cannot be checked (as for envelopes with one)
    assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, PUBLIC, GATEWAY, None) == "E_CLOCK"
    # a manifest signed before expires was required, and a downgrade naming no gateway:
    # signed, and still refused
    for name, why in (("no-expires", "no expires"), ("downgrade-no-gateways", "must name the gateways")):
        try:
            _verify(signed_offer(name), "0.3.0")
        except M.UpdateError as exc:
            assert exc.code == M.E_UPDATE_MANIFEST and why in exc.message, exc
        else:
            raise AssertionError("accepted " + name)
    # naming gateways: only those (in either case) take it, downgrade or not
    assert _code(_verify, signed_offer("other-gateway")) == M.E_UPDATE_GATEWAY
    assert _code(_verify, signed_offer("downgrade"), "0.3.0", "emulated", 1, PUBLIC, "00DB000000000001") \
        == M.E_UPDATE_GATEWAY
    assert _verify(signed_offer("downgrade"), "0.3.0", gateway=GATEWAY.lower())[1]["version"] == "0.2.0"


def test_a_seq_not_above_the_floor_is_a_replay():
    # docs/update.md "Replay": the floor is the seq of the last manifest switched to
    assert _verify(signed_offer("good"), floor=SEQ - 1)[1]["seq"] == SEQ
    for floor in (SEQ, SEQ + 1, 0xFFFFFFFF):
        try:
            _verify(signed_offer("good"), floor=floor)
        except M.UpdateError as exc:
            assert exc.code == M.E_UPDATE_REPLAY and ("seq %d is not above %d" % (SEQ, floor)) in exc.message, exc
        else:
            raise AssertionError("a replay accepted at floor %d" % floor)
    # said as a replay before the version check: the same manifest after its install
    assert _code(_verify, signed_offer("good"), "0.2.0", "emulated", 1, PUBLIC, GATEWAY, NOW, SEQ) \
        == M.E_UPDATE_REPLAY
    # and a replayed downgrade (the residual of review M4) is one too
    assert _code(_verify, signed_offer("downgrade"), "0.3.0", "emulated", 1, PUBLIC, GATEWAY, NOW, SEQ) \
        == M.E_UPDATE_REPLAY
    # sets and images have a floor each (slots.floors): an image signed before the set
    # installed last is no replay, and the sentence names the kind
    image_seq = 1767225600   # update_vectors' image manifest
    assert _verify(signed_offer("image"), floor=(image_seq + 10, image_seq - 1))[1]["seq"] == image_seq
    try:
        _verify(signed_offer("image"), floor=(0, image_seq))
    except M.UpdateError as exc:
        assert exc.code == M.E_UPDATE_REPLAY and "last image manifest" in exc.message, exc
    else:
        raise AssertionError("an image replay accepted")
    assert _code(_verify, signed_offer("good"), "0.1.0", "emulated", 1, PUBLIC, GATEWAY, NOW, (SEQ, 0)) \
        == M.E_UPDATE_REPLAY
    assert _verify(signed_offer("good"), floor=(SEQ - 1, 0xFFFFFFFF))[1]["seq"] == SEQ
    # a manifest for another gateway or board is said as such whatever the floor
    assert _code(_verify, signed_offer("other-gateway"), "0.1.0", "emulated", 1, PUBLIC, GATEWAY, NOW, SEQ) \
        == M.E_UPDATE_GATEWAY
    assert _code(_verify, signed_offer("good"), "0.1.0", "esp32-devkitc", 1, PUBLIC, GATEWAY, NOW, SEQ) \
        == M.E_UPDATE_BOARD


def test_seq_must_be_a_whole_number_that_fits_32_bits():
    try:
        _verify(signed_offer("no-seq"))
    except M.UpdateError as exc:
        assert exc.code == M.E_UPDATE_MANIFEST and "no seq" in exc.message, exc
    else:
        raise AssertionError("a manifest without seq accepted")
    base = dict(MANIFEST)
    for bad in (-1, 0, 0x100000000, 2 ** 64, "1767225600", 1767225600.0, True, False, None, [1]):
        m = dict(base, seq=bad)
        if bad is None:
            del m["seq"]
        assert _code(M.parse_manifest, json.dumps(m)) == M.E_UPDATE_MANIFEST, bad
    for good in (1, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF):
        # 2**30 and up are long ints on a 32-bit MicroPython (31-bit small ints): parsed and
        # compared as any other
        m = M.parse_manifest(json.dumps(dict(base, seq=good)))
        assert m["seq"] == good and m["seq"] > good - 1 and not m["seq"] > good, good
    img = {"format": 1, "version": "1.1.0", "board": "esp32-devkitc", "expires": EXPIRES,
           "image": {"sha256": "ab" * 32, "size": 10}}
    assert _code(M.parse_manifest, json.dumps(img)) == M.E_UPDATE_MANIFEST  # an image's too


def test_expires_and_gateways_must_be_well_formed():
    base = {"format": 1, "version": "0.2.0", "board": "emulated", "seq": SEQ, "files": MANIFEST["files"]}
    for bad in (base, dict(base, expires="4102444800"), dict(base, expires=True), dict(base, expires=0),
                dict(base, expires=EXPIRES, gateways=[]), dict(base, expires=EXPIRES, gateways="00DB1234567890A4"),
                dict(base, expires=EXPIRES, gateways=["00DB"]), dict(base, expires=EXPIRES, gateways=[1])):
        assert _code(M.parse_manifest, json.dumps(bad)) == M.E_UPDATE_MANIFEST, bad


def _refusal(fn, *a):
    try:
        fn(*a)
    except M.UpdateError as exc:
        return exc.code, exc.message
    raise AssertionError("accepted")


def _with_gateways(n):
    # the manifest's text naming n gateways, built as one string (no list of n names kept
    # beside it: under MicroPython the parse must find room for its own list of n)
    base = json.dumps({"format": 1, "version": "0.2.0", "board": "emulated", "seq": SEQ, "expires": EXPIRES,
                       "files": MANIFEST["files"]})
    return base[:-1] + ', "gateways": [' + ", ".join('"00DB%012X"' % i for i in range(n)) + "]}"


def test_a_gateways_list_of_more_than_1000_is_refused():
    # the list is read from a signed manifest, but its length bounds the work and heap of
    # checking it: 1000 names are taken, 1001 refused with the rule's sentence
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        # (a board never parses one: 1001 names are 21 KB of manifest, more than an offer
        # may be, the MQTT client's 16 KB cap)
        raise SkipTest("a 1001-name manifest (21 KB) and its parse do not fit the unit-test heap beside this "
                       "module's vectors: the same Python is checked in the CPython run")
    assert M.MAX_GATEWAYS == 1000
    gc.collect()
    assert len(M.parse_manifest(_with_gateways(1000))["gateways"]) == 1000
    gc.collect()
    code, msg = _refusal(M.parse_manifest, _with_gateways(1001))
    assert code == M.E_UPDATE_MANIFEST and "gateways must be a list of 1 to 1000" in msg, (code, msg)


def test_an_offer_id_of_more_than_40_characters_is_refused_on_both_readers():
    # the id is outside the signature: at most 40 characters whether the offer is read in
    # place (a writable buffer: MicroPython's MQTT receive buffer) or parsed as a whole
    import sys
    mp = sys.implementation.name == "micropython"
    for n in (40, 41):
        off = signed_offer("good", oid="i" * n)
        # the in-place reader takes 40 and leaves 41 to the whole parse (None), on both
        # interpreters (parse_offer calls it under MicroPython only)
        got = M._offer_in_place(bytearray(off))
        assert (got is not None and got[0] == "i" * n) if n == 40 else got is None, (n, got)
        for given in (bytes(off), memoryview(bytearray(off)) if mp else bytearray(off)):
            if n == 40:
                assert M.parse_offer(given)[0] == "i" * 40
                continue
            code, msg = _refusal(M.parse_offer, given)
            assert code == M.E_UPDATE_OFFER and msg == "offer id must be a string of up to 40 characters", (code, msg)


def test_signed_but_unusable_manifests_are_refused():
    for name in ("path-escape", "no-app", "bad-digest"):
        assert _code(_verify, signed_offer(name)) == M.E_UPDATE_MANIFEST, name


def test_paths():
    for ok in ("board.json", "ppmid/app.mpy", "ppmid/mqtt/client.mpy"):
        assert M.check_path(ok), ok
    for bad in ("/ppmid/app.mpy", "ppmid/../config.json", "main.py", "ppmid//x.mpy", "ppmid/./x.mpy",
                "config.json", "ppmid", "ppmid/x.txt", "ppmid/x y.mpy", "", None):
        assert not M.check_path(bad), bad


def test_versions():
    assert M.version_tuple("0.10.0") > M.version_tuple("0.9.9")
    for bad in ("", "1.", "a.b", "1.2.3.4.5", "-1.0", None):
        try:
            M.version_tuple(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def _triples(files):
    """A format-1 "files" list as parse_manifest gives it: [path, size, sha256 bytes] each."""
    from binascii import unhexlify
    return [[f["path"], f["size"], unhexlify(f["sha256"])] for f in files]


def test_the_fixture_manifest_is_what_was_signed():
    oid, m, text = _verify(signed_offer("good"))
    assert m == dict(MANIFEST, files=_triples(MANIFEST["files"]))


def test_image_manifests_name_one_image_with_its_digest_and_size():
    base = {"format": 1, "version": "1.1.0", "board": "esp32-devkitc", "expires": EXPIRES, "seq": SEQ}
    good = dict(base, image={"sha256": "ab" * 32, "size": 1503232})
    assert M.parse_manifest(json.dumps(good))["image"]["size"] == 1503232
    for bad, why in ((dict(base, image={"sha256": "ab" * 32, "size": 0}), "size"),
                     (dict(base, image={"sha256": "ab" * 32, "size": M.MAX_IMAGE_BYTES + 1}), "size"),
                     (dict(base, image={"sha256": "xy" * 32, "size": 10}), "sha256"),
                     (dict(base, image={"sha256": "ab" * 31, "size": 10}), "sha256"),
                     (dict(base, image=[1, 2]), "object"),
                     (dict(good, files=[{"path": "ppmid/app.mpy", "sha256": "ab" * 32, "size": 1}]), "not both")):
        try:
            M.parse_manifest(json.dumps(bad))
        except M.UpdateError as exc:
            assert exc.code == M.E_UPDATE_MANIFEST and why in str(exc), (why, str(exc))
            continue
        raise AssertionError("accepted %r" % (bad,))


def test_upper_case_digests_are_taken_in_lower_case():
    # a downloaded image's digest is compared as hexlify() gives it: lower case; a file's
    # as the 32 bytes file_hash gives
    from binascii import hexlify
    from ppmid.update.service import file_hash
    from test_relay_support import fresh_root
    root = fresh_root(64)
    with open(root + "/f", "wb") as f:
        f.write(b"abc")
    raw = file_hash(root + "/f")
    digest = hexlify(raw).decode()
    assert len(raw) == 32 and digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # of "abc"
    files = json.dumps({"format": 1, "version": "0.2.0", "board": "emulated", "expires": EXPIRES, "seq": SEQ,
                        "files": [{"path": "ppmid/app.mpy", "sha256": digest.upper(), "size": 3}]})
    assert M.parse_manifest(files)["files"][0][M.SHA256] == raw
    image = json.dumps({"format": 1, "version": "0.2.0", "board": "emulated", "expires": EXPIRES, "seq": SEQ,
                        "image": {"sha256": digest.upper(), "size": 3}})
    assert M.parse_manifest(image)["image"]["sha256"] == digest


def test_an_offer_in_a_writable_buffer_is_read_where_it_lies():
    # MicroPython reads the manifest's text in place (no block the size of the manifest,
    # docs/memory.md "Fragmentation"); both interpreters give the same id, text and signature
    import json
    import sys
    mp = sys.implementation.name == "micropython"

    def given(b):  # what the updater hands over: the receive buffer on MicroPython, bytes on CPython
        return memoryview(b) if mp else bytes(b)
    man = json.dumps({"format": 1, "board": "emulated", "note": 'a"b\\c/\u00e9\u20ac\n\t'})
    off = json.dumps({"id": "o1", "manifest": man, "signature": "abcd"})
    buf = bytearray(off.encode())
    oid, text, sig = M.parse_offer(given(buf))
    assert oid == "o1" and sig == b"\xab\xcd"
    assert (text.encode() if isinstance(text, str) else bytes(text)) == man.encode()
    assert json.loads(text) == json.loads(man)
    if mp:
        assert isinstance(text, memoryview)  # a view of the buffer, not a copy
    # forms release does not write are read as a whole, with the same refusals
    for other in ('{"id": 5, "manifest": "{}", "signature": "00"}', '{"manifest": "{}"}', '[1]'):
        try:
            M.parse_offer(given(bytearray(other.encode())))
        except M.UpdateError as exc:
            assert exc.code == "E_UPDATE_OFFER", (other, exc.code)
        else:
            raise AssertionError("accepted: " + other)
    # an escape the in-place reader does not take (a surrogate pair) goes the whole way
    odd = bytearray(b'{"id":"o2","manifest":"{\\"a\\": \\"\\ud83d\\ude00\\"}","signature":"00"}')
    oid, text, sig = M.parse_offer(given(odd))
    assert oid == "o2" and json.loads(text) == json.loads('{"a": "\\ud83d\\ude00"}')


# ---- manifest format 2 (docs/update.md "Manifest formats") -----------------------------------
V2 = {"format": 2, "version": "0.2.0", "board": "emulated", "expires": EXPIRES, "seq": SEQ}
APP = ["ppmid/app.mpy", 2000, "zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc0="]  # sha256 "cd" * 32


def test_a_signed_format_2_offer_passes_and_gives_the_files_format_1_gives():
    oid, m2, text = _verify(signed_offer("good-v2"))
    oid, m1, _ = _verify(signed_offer("good"))
    assert m2["format"] == 2 and json.loads(text)["files"][1] == APP
    assert m2["files"] == m1["files"] == [["board.json", 10, b"\xab" * 32], ["ppmid/app.mpy", 2000, b"\xcd" * 32]]
    assert dict(m2, format=1) == m1
    o = json.loads(signed_offer("good-v2"))
    o["manifest"] = o["manifest"].replace(",2000,", ",2001,")
    assert _code(_verify, json.dumps(o)) == M.E_UPDATE_SIGNATURE


def _refused(manifest, why):
    # a str is the manifest's text as signed (parsed where it lies, as the gateway does)
    try:
        M.parse_manifest(manifest if isinstance(manifest, str) else json.dumps(manifest))
    except M.UpdateError as exc:
        assert exc.code == M.E_UPDATE_MANIFEST and why in exc.message, (why, exc.message)
        return
    raise AssertionError("accepted %r" % (manifest,))


def test_malformed_format_2_file_lists_are_refused_with_a_reason():
    assert M.parse_manifest(json.dumps(dict(V2, files=[APP])))["files"] == [["ppmid/app.mpy", 2000, b"\xcd" * 32]]
    digest = APP[2]
    for files, why in (
            ([APP[:2]], "a list of 3"), ([APP + [1]], "a list of 3"), ([[]], "a list of 3"),
            ([{"path": "ppmid/app.mpy", "sha256": "cd" * 32, "size": 2000}], "a list of 3"), (["ppmid/app.mpy"], "list of 3"),
            ([APP[:2] + ["cd" * 32]], "44 characters of base64"),        # the hex of format 1
            ([APP[:2] + [digest[:-1]]], "44 characters of base64"),      # 43
            ([APP[:2] + [digest + "="]], "44 characters of base64"),     # 45
            ([APP[:2] + [digest[:-1] + "A"]], "44 characters of base64"),  # no padding
            ([APP[:2] + ["!" + digest[1:]]], "44 characters of base64"),  # not the alphabet
            ([APP[:2] + [digest[:-2] + "1="]], "44 characters of base64"),  # the same bytes spelt another way
            ([APP[:2] + [None]], "44 characters of base64"),
            ([[APP[0], -1, digest]], "size must be"), ([[APP[0], "2000", digest]], "size must be"),
            ([[APP[0], True, digest]], "size must be"), ([[APP[0], M.MAX_FILE_BYTES + 1, digest]], "size must be"),
            ([[APP[0], 1.5, digest]], "size must be"), ([[APP[0], None, digest]], "size must be"),
            ([APP, list(APP)], "listed twice"), ([APP, ["board.json", 3, digest]], "in path order"),
            ([["ppmid/../config.json", 3, digest], APP], "not board.json"), ([[5, 3, digest], APP], "not board.json"),
            ([["board.json", 3, digest]], "no ppmid/app"),
            ([], "1 to %d entries" % M.MAX_FILES), ("x", "1 to %d entries" % M.MAX_FILES)):
        _refused(dict(V2, files=files), why)
    # The 181-entry lists are kept only as their text and given to parse_manifest as the
    # gateway gets them: parsing it into a list and dumping that again held a ~10 KB string
    # beside the list and the text, and whether a run of that size was free in the 256K unit
    # heap depended on where earlier strings (the checkout's path among them) had landed
    # (review_w10-3: MemoryError at a 9- and a 32-character path, passing at others).
    many = json.dumps(dict(V2, files=[APP] + [["ppmid/m%03d.mpy" % i, 10, digest] for i in range(M.MAX_FILES)]))
    gc.collect()
    _refused(many, "1 to %d entries" % M.MAX_FILES)
    many = many.replace(json.dumps(APP) + ", ", "").replace('"ppmid/m000.mpy"', '"ppmid/app.mpy"')
    assert len(M.parse_manifest(many)["files"]) == M.MAX_FILES
    _refused(dict(V2, format=3, files=[APP]), "format must be 1 or 2")
    _refused(dict(V2, format="2", files=[APP]), "format must be 1 or 2")
