# NDEF record parsing and the Type 2 TLV area: good messages, and every malformed shape
# refused with E_NDEF (never an exception of another kind). CPython and MicroPython.
from ppmid.nfc import ndef
from ppmid.nfc.errors import NfcError


def _code(fn, *a):
    try:
        fn(*a)
    except NfcError as e:
        return e.code
    return None


def _all(msg):
    return [(t, bytes(ty), bytes(i), bytes(p)) for t, ty, i, p in ndef.records(msg)]


def test_short_mime_record():
    msg = ndef.encode_mime(b"\x01\x02\x03")
    assert msg[:3] == bytes((0xD2, 25, 3))
    assert bytes(ndef.find_mime(msg)) == b"\x01\x02\x03"


def test_long_record_uses_4_byte_length():
    payload = bytes(300)
    msg = ndef.encode_mime(payload)
    assert msg[0] == 0xC2 and msg[2:6] == b"\x00\x00\x01\x2c"
    assert bytes(ndef.find_mime(msg)) == payload


def test_several_records_with_id_and_case_insensitive_type():
    r1 = bytes((0x91, 1, 2)) + b"T" + b"\x02e"                  # MB, SR, well-known "T"
    r2 = bytes((0x1A, 25, 2, 2)) + b"APPLICATION/VND.PPMID.CMD" + b"id" + b"ok"  # SR, IL, MIME
    r3 = bytes((0x50, 0, 0))                                      # ME, SR, empty
    msg = r1 + r2 + r3
    recs = _all(msg)
    assert recs[1] == (2, b"APPLICATION/VND.PPMID.CMD", b"id", b"ok")
    assert bytes(ndef.find_mime(msg)) == b"ok"


def test_malformed_messages():
    good = ndef.encode_mime(b"abc")
    cases = [
        b"",                                     # empty
        good[:2],                                # header truncated
        good[:-1],                               # payload runs past the end
        good + b"\x00",                          # bytes after ME
        bytes((0x12, 1, 1)) + b"xa",             # first record without MB
        bytes((0x92, 1, 1)) + b"xa",             # no ME anywhere
        bytes((0xF2, 1, 1)) + b"xa",             # chunked
        bytes((0xD7, 1, 1)) + b"xa",             # TNF 7 reserved
        bytes((0xD6, 1, 1)) + b"xa",             # TNF 6 unchanged outside a chunk
        bytes((0xD0, 1, 0)) + b"x",              # empty record with a type
        bytes((0xC2, 1, 0xFF, 0xFF, 0xFF, 0xFF)) + b"x",  # 4 GB payload claim
        bytes((0xDA, 1, 1)),                     # id length missing
    ]
    for i, msg in enumerate(cases):
        assert _code(ndef.find_mime, msg) == "E_NDEF", i


def test_well_formed_but_no_command_record():
    msg = bytes((0xD1, 1, 2)) + b"T" + b"\x02e"
    assert _code(ndef.find_mime, msg) == "E_NDEF_NOCMD"


def test_garbage_after_a_good_record_refused():
    msg = bytearray(ndef.encode_mime(b"abc"))
    msg[0] &= ~0x40  # clear ME: the parser must look at what follows
    assert _code(ndef.find_mime, bytes(msg) + b"\xff\xff") == "E_NDEF"


def test_type2_tlv_area():
    assert ndef.type2_ndef_tlv(bytes((0x03, 5, 1, 2, 3, 4, 5, 0xFE))) == (2, 5)
    # NULL TLVs and a lock control TLV before the NDEF TLV; a 3-byte length
    area = bytes((0x00, 0x01, 0x03, 0xA0, 0x10, 0x44, 0x03, 0xFF, 0x01, 0x2C))
    assert ndef.type2_ndef_tlv(area) == (10, 300)
    assert ndef.type2_ndef_tlv(bytes((0x00, 0x00))) is None        # need more bytes
    assert ndef.type2_ndef_tlv(bytes((0x03,))) is None
    assert _code(ndef.type2_ndef_tlv, bytes((0xFE, 0, 0))) == "E_NDEF_NOCMD"
    assert _code(ndef.type2_ndef_tlv, bytes((0x42, 1, 0))) == "E_NDEF"
