# Message builders (ppmid.gbcs.build): round trips through the decoder and every refusal.
# Runs under CPython and MicroPython.
from ppmid.gbcs import decode, GbcsError, build
from test_gbcs_samples import sample

A = b"\x90\xb3\xd5\x1f\x30\x01\x00\x00"
B = b"\x00\xdb\x12\x34\x56\x78\x90\xa0"


def _code(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except GbcsError as exc:
        return exc.code
    raise AssertionError("no GbcsError")


def test_encode_length_forms():
    assert build.encode_length(0) == b"\x00" and build.encode_length(0x7F) == b"\x7f"
    assert build.encode_length(0x80) == b"\x81\x80" and build.encode_length(0xFF) == b"\x81\xff"
    assert build.encode_length(0x100) == b"\x82\x01\x00" and build.encode_length(0xFFFF) == b"\x82\xff\xff"
    assert _code(build.encode_length, 0x10000) == "E_LENGTH"
    assert _code(build.encode_length, -1) == "E_LENGTH"


def test_signed_round_trip_every_optional_field():
    dt = bytes(range(12))
    other = bytes(range(8)) + bytes(7) + b"\x05" + bytes(7) + b"\x06" + b"\x30\x01\x00"
    raw = build.build_signed(3, (1 << 64) - 2, A, B, 0x1234, b"\x0f" + bytes(300), date_time=dt,
                             signature=bytes(range(64)), other_info=other)
    m = decode(raw)
    assert m.form == "signed" and m.cra == 3 and m.counter == (1 << 64) - 2
    assert bytes(m.originator) == A and bytes(m.recipient) == B and bytes(m.date_time) == dt
    assert m.message_code == 0x1234 and m.content_type == "dlms-notification" and m.content_len == 301
    assert bytes(m.signature) == bytes(range(64))
    assert bytes(m.supplementary_remote_party_id) == bytes(range(8))
    assert m.supplementary_remote_party_counter == 5 and m.supplementary_originator_counter == 6
    assert bytes(m.certificate) == b"\x30\x01\x00"
    pre = build.build_signed(1, 7, A, B, 0x0019, b"\xd9", signature=None)
    assert decode(pre).signature is None


def test_mac_form_and_counters_of_every_size():
    for counter in (0, 1, 0x3FFFFFFF, 0x40000000, 0xFFFFFFFF, 1 << 32, (1 << 63) + 5, (1 << 64) - 1):
        raw = build.build_command(counter, A, B, 0x0019, b"\xd9\x01", mac=b"M" * 12)
        m = decode(raw)
        assert m.form == "mac+signed" and m.counter == counter and bytes(m.mac) == b"M" * 12
        assert m.security_control == 0x11 and len(m.signature) == 0
    big = build.build_command(9, A, B, 0x0019, b"\xd9" + bytes(3000 - 200))
    assert decode(big).content_len == 3000 - 199


def test_make_response_mirrors_the_command():
    cmd = sample("3.3_CS11/CS11_3.3_ERROR_COMMAND")
    c = decode(cmd)
    r = decode(build.make_response(cmd, content=b"\x01\x09\x00", mac=b"R" * 12))
    assert r.form == "mac+signed" and r.cra == 2 and r.counter == c.counter
    assert bytes(r.originator) == bytes(c.recipient) and bytes(r.recipient) == bytes(c.originator)
    assert r.message_code == c.message_code and r.content_type == "gbz" and bytes(r.mac) == b"R" * 12
    pre = sample("2.5_GCS06/GCS06_2.5_ERROR_PRECOMMAND")
    r = decode(build.make_response(pre, date_time=bytes(12)))
    assert r.form == "signed" and r.date_time is not None and r.has_signature_field


def test_builder_refusals():
    assert _code(build.build_signed, 4, 1, A, B, 1, b"x") == "E_VALUE"
    assert _code(build.build_signed, 1, -1, A, B, 1, b"x") == "E_VALUE"
    assert _code(build.build_signed, 1, 1 << 64, A, B, 1, b"x") == "E_VALUE"
    assert _code(build.build_signed, 1, 1, A[:7], B, 1, b"x") == "E_LENGTH"
    assert _code(build.build_signed, 1, 1, A, B + b"x", 1, b"x") == "E_LENGTH"
    assert _code(build.build_signed, 1, 1, A, B, 1, b"") == "E_LENGTH"
    assert _code(build.build_signed, 1, 1, A, B, 1, b"x", date_time=bytes(11)) == "E_LENGTH"
    assert _code(build.build_signed, 1, 1, A, B, 1, b"x", signature=bytes(10)) == "E_LENGTH"
    assert _code(build.build_mac, build.build_signed(1, 1, A, B, 1, b"x"), mac=bytes(11)) == "E_LENGTH"
    assert _code(build.make_response, b"\x00\x01") == "E_TAG"
