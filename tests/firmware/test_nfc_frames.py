# PN532 frame codec: vectors from UM0701, normal/extended frames, ACK/NACK/error frames,
# resynchronisation on garbage and bad checksums. Runs under CPython and MicroPython.
from ppmid.nfc import frames as F


def _hex(s):
    import binascii
    return binascii.unhexlify(s.replace(" ", ""))


def test_get_firmware_version_vector():
    assert F.command(0x02) == _hex("00 00 FF 02 FE D4 02 2A 00")


def test_sam_configuration_vector():
    assert F.command(0x14, b"\x01\x00\x00") == _hex("00 00 FF 05 FB D4 14 01 00 00 17 00")


def test_scan_response_vector():
    buf = bytearray(_hex("00 00 FF 06 FA D5 03 32 01 06 07 E8 00"))
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.KIND_FRAME
    assert bytes(buf[off:off + ln]) == _hex("D5 03 32 01 06 07")
    assert end == len(buf) - 1  # postamble left for the next scan to skip


def test_ack_nack_error():
    for raw, kind in ((F.ACK, F.KIND_ACK), (F.NACK, F.KIND_NACK), (F.ERROR, F.KIND_ERROR)):
        buf = bytearray(raw)
        assert F.scan(buf, len(buf))[0] == kind


def test_extended_frame_round_trip():
    data = bytes(range(256)) * 2  # 512 bytes: needs an extended frame
    frame = F.command(0x40, data)
    assert frame[3:5] == b"\xff\xff"
    assert len(frame) == F.frame_size(2 + len(data))
    buf = bytearray(frame)
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.KIND_FRAME and ln == 2 + len(data)
    assert bytes(buf[off + 2:off + ln]) == data
    assert end == len(buf) - 1


def test_normal_frame_limit():
    # TFI + code + 253 bytes = LEN 255: still a normal frame; one more byte goes extended
    assert F.command(0x40, bytes(253))[3] == 255
    assert F.command(0x40, bytes(254))[3:5] == b"\xff\xff"


def test_partial_input_needs_more():
    frame = F.command(0x40, b"\x01\x02\x03")
    for cut in range(len(frame) - 1):
        buf = bytearray(frame[:cut])
        kind, end, off, ln = F.scan(buf, len(buf))
        assert kind == F.NEED_MORE, cut
        assert end <= 1  # at most the preamble 00 may be dropped, never the start code


def test_garbage_before_frame_is_skipped():
    buf = bytearray(b"\x55\x12\xff\x00\x00" + F.command(0x4A, b"\x01\x00"))
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.KIND_FRAME
    assert bytes(buf[off:off + ln]) == b"\xd4\x4a\x01\x00"


def test_pure_garbage_is_dropped_but_trailing_zero_kept():
    buf = bytearray(b"\x12\x34\x56\x00")
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.NEED_MORE and end == 3


def test_bad_length_checksum():
    frame = bytearray(F.command(0x02))
    frame[4] ^= 1
    kind, end, off, ln = F.scan(frame, len(frame))
    assert kind == F.KIND_BAD_LCS and 0 < end < len(frame)


def test_bad_extended_length_checksum():
    frame = bytearray(F.command(0x40, bytes(300)))
    frame[7] ^= 0x10
    assert F.scan(frame, len(frame))[0] == F.KIND_BAD_LCS


def test_bad_data_checksum():
    frame = bytearray(F.command(0x40, b"\x01\x02\x03"))
    frame[-2] ^= 0xFF
    kind, end, off, ln = F.scan(frame, len(frame))
    assert kind == F.KIND_BAD_DCS
    assert end == len(frame) - 1


def test_too_long_frame_refused():
    frame = bytearray(F.command(0x40, bytes(400)))
    kind, end, off, ln = F.scan(frame, len(frame), max_len=300)
    assert kind == F.KIND_TOO_LONG and ln == 402


def test_two_frames_in_one_buffer():
    buf = bytearray(F.ACK + F.command(0x02))
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.KIND_ACK
    rest = buf[end:]
    kind, end, off, ln = F.scan(rest, len(rest))
    assert kind == F.KIND_FRAME and bytes(rest[off:off + ln]) == b"\xd4\x02"


def test_encode_with_two_parts_and_preallocated_buffer():
    out = bytearray(300)
    n = F.encode(out, F.TFI_HOST, 0x40, b"\x01", b"\x00\xa4\x04\x00")
    assert bytes(out[:n]) == F.command(0x40, b"\x01\x00\xa4\x04\x00")
