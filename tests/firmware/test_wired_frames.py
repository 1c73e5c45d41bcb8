# The wired channel's framing (ppmid.wired.frames, docs/wired.md): every bad input ends
# in a WireError with its code and the deframer finds the next good frame; CPython and
# MicroPython.
from ppmid.wired import frames as F


def _events(d, data, now=0):
    out = []
    mv = memoryview(data)
    pos = 0
    while pos < len(mv):
        used, ev = d.feed(mv[pos:], now)
        assert used > 0 or ev is not None
        pos += used
        if isinstance(ev, F.Frame):
            out.append(("frame", ev.type, ev.seq, bytes(ev.payload)))
        elif ev is not None:
            out.append(("error", ev.code, ev.seq))
    return out


def _diff(a, b):
    return a - b


def test_crc16_is_ccitt_false():
    # the catalogue check value of CRC-16/CCITT-FALSE, and the empty input
    assert F.crc16(b"123456789") == 0x29B1
    assert F.crc16(b"") == 0xFFFF
    assert F.crc16(b"6789", F.crc16(b"12345")) == 0x29B1


def test_frame_layout_is_the_documented_one():
    f = F.encode(F.T_ENVELOPE, 7, b"\x01\x02")
    assert f[:6] == b"\xa5\x5a\x02\x07\x00\x02" and f[6:8] == b"\x01\x02"
    c = F.crc16(f[2:8])
    assert f[8:] == bytes((c >> 8, c & 0xFF)) and len(f) == F.OVERHEAD + 2


def test_frames_round_trip_whole_and_byte_by_byte():
    frames = [F.encode(F.T_HELLO, 1, b"\x01"), F.encode(F.T_ENVELOPE, 2, bytes(range(256)) * 3),
              F.encode(F.T_TAKEN, 255, b""), F.encode(F.T_STATUS, 0, b"\xa5\x5a" * 10)]
    stream = b"".join(frames)
    want = [("frame", f[2], f[3], f[6:-2]) for f in frames]
    assert _events(F.Deframer(1024), stream) == want
    d = F.Deframer(1024)
    got = []
    for i in range(len(stream)):
        got += _events(d, stream[i:i + 1])
    assert got == want


def test_garbage_is_skipped_with_e_wire_sync_and_the_next_frame_found():
    good = F.encode(F.T_ENVELOPE, 3, b"cmd")
    # garbage holding a lone sync byte, and an A5 A5 5A run (the second A5 starts the frame)
    got = _events(F.Deframer(64), b"\x00\xff\xa5\x11hello\xa5" + good)
    assert got == [("error", F.E_WIRE_SYNC, None), ("frame", F.T_ENVELOPE, 3, b"cmd")]
    # a long run of garbage is reported as it goes, never piled up
    got = _events(F.Deframer(64), b"\x55" * 1000 + good)
    assert [e[1] for e in got[:-1]] == [F.E_WIRE_SYNC] * 4 and got[-1][0] == "frame"


def test_wrong_crc_is_refused_and_the_stream_goes_on():
    bad = bytearray(F.encode(F.T_ENVELOPE, 9, b"payload"))
    bad[8] ^= 0x01
    good = F.encode(F.T_ENVELOPE, 10, b"next")
    d = F.Deframer(64)
    assert _events(d, bytes(bad) + good) == [("error", F.E_WIRE_CRC, 9), ("frame", F.T_ENVELOPE, 10, b"next")]
    assert d.stats["crc"] == 1
    # a flipped header bit is caught by the same CRC
    bad = bytearray(F.encode(F.T_ENVELOPE, 11, b"payload"))
    bad[2] = F.T_TAKEN
    assert _events(F.Deframer(64), bytes(bad)) == [("error", F.E_WIRE_CRC, 11)]


def test_huge_length_is_refused_from_the_header_alone():
    d = F.Deframer(100)
    head = b"\xa5\x5a\x02\x05\xff\xff"  # 65535 announced, nothing of it stored
    got = _events(d, head + F.encode(F.T_ENVELOPE, 6, b"ok"))
    assert got == [("error", F.E_WIRE_LENGTH, 5), ("frame", F.T_ENVELOPE, 6, b"ok")]
    assert len(d.buf) == 100 + F.OVERHEAD
    # the bound is inclusive
    assert _events(F.Deframer(100), F.encode(F.T_ENVELOPE, 1, bytes(100)))[0][0] == "frame"
    assert _events(F.Deframer(100), F.encode(F.T_ENVELOPE, 1, bytes(101)))[0][1] == F.E_WIRE_LENGTH


def test_frame_cut_short_times_out_and_the_next_one_is_read():
    d = F.Deframer(64, timeout_ms=500)
    f = F.encode(F.T_ENVELOPE, 4, b"0123456789")
    assert _events(d, f[:9], now=1000) == []
    assert d.pending()
    assert d.expire(1499, _diff) is None
    err = d.expire(1500, _diff)
    assert err.code == F.E_WIRE_TIMEOUT and err.seq == 4 and not d.pending()
    assert d.expire(5000, _diff) is None
    assert _events(d, f, now=6000) == [("frame", F.T_ENVELOPE, 4, b"0123456789")]
    # cut inside the header: no seq yet
    d.feed(b"\xa5\x5a\x02", 0)
    err = d.expire(600, _diff)
    assert err.code == F.E_WIRE_TIMEOUT and err.seq is None


def test_the_frame_timeout_is_a_gap_not_a_time_for_the_whole_frame():
    # review 94 W2: counted from the frame's first byte, the largest frame the road takes
    # (8,338 bytes) could not arrive at 115200 baud (724 ms) within the default 500 ms
    d = F.Deframer(9000, timeout_ms=500)
    payload = bytes(range(256)) * 32 + b"tail"
    f = F.encode(F.T_ENVELOPE, 9, payload)
    got = []
    t = 1000
    for at in range(0, len(f), 256):  # 256 bytes every 22 ms: 115200 baud's pace
        assert d.expire(t, _diff) is None, at
        got += _events(d, f[at:at + 256], now=t)
        t += 22
    assert t - 1000 > 700 and got == [("frame", F.T_ENVELOPE, 9, payload)]
    # a gap of timeout_ms in the middle still drops it, with its seq
    assert _events(d, f[:4000], now=5000) == []
    assert d.expire(5499, _diff) is None
    assert _events(d, f[4000:4100], now=5499) == []
    assert d.expire(5998, _diff) is None  # 499 ms after its latest bytes
    err = d.expire(5999, _diff)
    assert err.code == F.E_WIRE_TIMEOUT and err.seq == 9 and not d.pending()


def test_nack_payload_round_trips_and_is_bounded():
    p = F.nack_payload(12, "E_AUTH", "envelope mac does not verify")
    assert F.parse_nack(p) == (12, "E_AUTH", "envelope mac does not verify")
    assert len(F.nack_payload(1, "E_X", "m" * 1000)) == 1 + 3 + 1 + 200
    assert F.parse_nack(b"") == (None, "", "")


def test_encode_refuses_fields_out_of_range():
    for args in ((256, 0, b""), (1, 256, b""), (1, 0, bytes(65536))):
        try:
            F.encode(*args)
        except ValueError:
            continue
        raise AssertionError("encode%r did not refuse" % (args[:2],))


def test_random_bytes_never_raise():
    # a deterministic pseudo-random stream (LCG) through the deframer: only events
    d = F.Deframer(300)
    x = 12345
    data = bytearray(20000)
    for i in range(len(data)):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        data[i] = (x >> 16) & 0xFF
        if i % 997 == 0:
            data[i] = 0xA5
    for ev in _events(d, bytes(data)):
        assert ev[0] == "frame" or ev[1] in (F.E_WIRE_SYNC, F.E_WIRE_CRC, F.E_WIRE_LENGTH)
