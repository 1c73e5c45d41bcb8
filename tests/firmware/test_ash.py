# ASH codec: the ZIGBEE_NCP.md vectors, round trips and the decoder's handling of bad input.
# Runs under CPython and MicroPython (viper byte loops there).
import binascii
from ppmid.zigbee import ash
from ash_ncp import rstack
from ppmid.zigbee.han_counters import named, DECODER


def counts(d):
    # the decoder's counters by name, as the reports read them (a list by index in it)
    return named(d.counters, DECODER)


def h(s):
    return binascii.unhexlify(s.replace(" ", ""))


def frames(decoder, wire):
    return [f for f in decoder.feed(wire)]


def test_crc_check_value():
    assert ash.crc16(b"123456789") == 0x29B1
    assert ash.crc16(b"") == 0xFFFF


def random_sequence(n):
    # the first n bytes of UG101's pseudo-random sequence: what xor_random XORs zeros with
    out = bytearray(n)
    ash.xor_random(bytes(n), out, n)
    return bytes(out)


def test_random_sequence_start():
    assert random_sequence(8) == h("42 21 A8 54 2A 15 B2 59")
    # its own rule, byte by byte (UG101: shift right, XOR 0xB8 when the bit shifted out is 1)
    seq = random_sequence(256)
    for a, b in zip(seq, seq[1:]):
        assert b == ((a >> 1) ^ 0xB8 if a & 1 else a >> 1)


def crc16_reference(data):
    # CRC-CCITT as a polynomial division, independent of the codec's loop
    reg = 0xFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 15) ^ ((byte >> bit) & 1)
            reg = ((reg << 1) & 0xFFFF) ^ (0x1021 if top else 0)
    return reg


def test_crc_matches_a_reference_over_every_byte_value():
    data = bytes(range(256))
    for n in (1, 2, 17, 256):
        assert ash.crc16(data[:n]) == crc16_reference(data[:n])
    assert ash.crc16(data, 0x1234) != ash.crc16(data)


def stuff_reference(data):
    out = bytearray()
    for b in data:
        out += bytes((0x7D, b ^ 0x20)) if b in (0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A) else bytes((b,))
    return bytes(out)


def test_byte_loops_agree_with_references_over_every_byte_value():
    # under MicroPython the loops are _ash_fast's (viper), which replaced the plain ones
    # (a board holds one set: docs/memory.md); the stuffing reads ash.py's own table of
    # reserved bytes. Under CPython the plain loops run the same checks.
    import sys
    if sys.implementation.name == "micropython":
        from ppmid.zigbee import _ash_fast
        assert ash.crc16 is _ash_fast.crc16 and ash.stuff is _ash_fast.stuff
        assert ash.xor_random is _ash_fast.xor_random
        assert _ash_fast._RESERVED is ash.RESERVED
    data = bytes(range(256)) * 2
    assert ash.crc16(data) == crc16_reference(data)
    a = bytearray(512)
    ash.xor_random(data, a, 512)
    seq = [0x42]
    while len(seq) < 512:
        r = seq[-1]
        seq.append((r >> 1) ^ 0xB8 if r & 1 else r >> 1)
    assert a == bytes(d ^ r for d, r in zip(data, seq))
    a = bytearray(1024)
    n = ash.stuff(data, 512, a)
    assert n == 524 and bytes(a[:n]) == stuff_reference(data)


def test_control_vectors():
    e = ash.Encoder()
    assert e.rst() == h("1A C0 38 BC 7E")
    assert rstack(e, 2) == h("C1 02 02 9B 7B 7E")
    assert rstack(e, 0x0B) == h("C1 02 0B 0A 52 7E")
    assert bytes(e.ack(1)) == h("81 60 59 7E")
    assert bytes(e.ack(6, True)) == h("8E 91 B6 7E")
    assert bytes(e.nak(6)) == h("A6 34 DC 7E")
    assert bytes(e.nak(5, True)) == h("AD 85 B7 7E")


def test_data_vectors():
    e = ash.Encoder()
    assert bytes(e.data(2, False, 5, h("00 00 00 02"))) == h("25 42 21 A8 56 A6 09 7E")
    # UG101's unrandomised example; on the wire the 0x11 (XON) must be stuffed as 7D 31.
    # encode() randomises a DATA frame's data: given the example XORed with the sequence,
    # it puts the example itself on the wire
    plain = h("00 80 00 02 02 11 30")
    raw = bytes(e.encode(0x53, bytes(b ^ r for b, r in zip(plain, random_sequence(len(plain))))))
    assert raw == h("53 00 80 00 02 02 7D 31 30 63 16 7E")
    # the control byte from its fields: frmNum 5, reTx, ackNum 3
    assert bytes(e.data(5, True, 3, b""))[0] == 0x5B
    # UG101's randomised response: its printed CRC (96 23) is wrong, 03 2A is right
    body = h("53 42 A1 A8 56 28 04 82")
    c = ash.crc16(body)
    assert c == 0x032A


def test_decode_vectors():
    d = ash.Decoder()
    out = frames(d, h("C1 02 0B 0A 52 7E 25 42 21 A8 56 A6 09 7E 8E 91 B6 7E"))
    assert out[0] == (ash.RSTACK, h("02 0B"))
    assert out[1][0] == 0x25 and bytes(out[1][1]) == h("00 00 00 02")
    assert out[2][0] == 0x8E
    assert counts(d)["frames"] == 3


def test_roundtrip_all_lengths_and_reserved_bytes():
    e = ash.Encoder()
    d = ash.Decoder()
    for n in range(0, ash.MAX_DATA + 1, 7):
        data = bytes((i * 37 + n) & 0xFF for i in range(n))
        # include every reserved byte *after* randomisation too
        wire = bytes(e.data(n & 7, n & 1, 3, data))
        assert wire.count(b"\x7e") == 1 and wire[-1] == 0x7E
        for r in (0x11, 0x13, 0x18, 0x1A):
            assert r not in wire
        out = d.feed(wire)
        assert len(out) == 1 and bytes(out[0][1]) == data, n
    reserved = bytes([0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A]) * 10
    out = d.feed(bytes(e.data(1, 0, 1, reserved)))
    assert out[0][1] == reserved
    # and the same bytes unrandomised (an RSTACK's or ERROR's data field is not randomised)
    out = d.feed(bytes(e.encode(ash.ERROR, reserved)))
    assert out == [(ash.ERROR, reserved)]



def test_a_frame_stuffed_in_every_byte_round_trips():
    # the encoder builds the raw frame in the tail of its output buffer and stuffs it from
    # there to the buffer's start: the worst case, the largest frame with its control byte
    # and every data byte stuffed (0x7E: frmNum 7, reTx, ackNum 6), must not overwrite a
    # byte before it is read
    seq = []
    r = 0x42
    for _ in range(ash.MAX_DATA):
        seq.append(r)
        r = (r >> 1) ^ 0xB8 if r & 1 else r >> 1
    reserved = (0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A)
    data = bytes(reserved[i % 6] ^ seq[i] for i in range(ash.MAX_DATA))   # reserved once randomised
    e = ash.Encoder()
    wire = bytes(e.data(7, True, 6, data))
    assert wire[:2] == b"\x7d\x5e" and len(wire) >= 2 * (1 + ash.MAX_DATA) + 2 + 1
    out = ash.Decoder().feed(wire)
    assert len(out) == 1 and out[0][0] == 0x7E and bytes(out[0][1]) == data
    # and the encoder's next frame is whole: nothing of this one is left in its buffer
    assert bytes(e.ack(3)) == bytes(ash.Encoder().ack(3))

def test_byte_at_a_time():
    e = ash.Encoder()
    wire = bytes(e.data(3, 0, 4, b"hello ezsp \x7e\x7d")) + bytes(e.ack(4))
    d = ash.Decoder()
    got = []
    for b in wire:
        got += d.feed(bytes([b]))
    assert [g[0] for g in got] == [0x34, 0x84]
    assert bytes(got[0][1]) == b"hello ezsp \x7e\x7d"


def test_too_long_data_refused_by_encoder():
    try:
        ash.Encoder().encode(0, bytes(ash.MAX_DATA + 1))
    except ValueError:
        return
    raise AssertionError("no error")


def test_bad_input_counted_and_recovered():
    e = ash.Encoder()
    good = bytes(e.ack(2))
    d = ash.Decoder()
    # CRC error
    bad = bytearray(e.data(1, 0, 1, b"abcdef"))
    bad[3] ^= 0x01
    out = d.feed(bytes(bad) + good)
    assert out[0][0] == ash.BAD and out[0][1] == "crc" and out[0][2] == 0x11
    assert out[1] == (0x82, b"")
    # garbage, then cancel: the partial frame is dropped, the next one decodes
    out = d.feed(b"\x01\x02\x03\x1a" + good)
    assert out == [(0x82, b"")] and counts(d)["cancel"] == 1
    # substitute: everything up to the next flag is dropped, including a good frame body
    out = d.feed(b"\x05\x18\x82\x7e" + good)
    assert out == [(0x82, b"")] and counts(d)["substitute"] == 1
    # way too long, with no flag for 1000 bytes
    out = d.feed(bytes(range(0x20, 0x70)) * 20 + b"\x7e" + good)
    assert out[0][0] == ash.BAD and out[0][1] == "frame too long"
    assert out[-1] == (0x82, b"") and counts(d)["too_long"] == 1
    # too short, bad escape
    out = d.feed(b"\x01\x7e\x7d\x40\x7e" + good)
    assert [o[1] for o in out[:2]] == ["frame too short", "bad escape"]
    assert out[-1] == (0x82, b"")
    # XON/XOFF are ignored anywhere
    out = d.feed(b"\x11" + good[:2] + b"\x13" + good[2:])
    assert out == [(0x82, b"")]
    assert counts(d)["frames"] == 6 and counts(d)["crc"] == 1
