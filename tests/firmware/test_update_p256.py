# ECDSA P-256 / SHA-256 verification (ppmid.update.p256) against published vectors, and the
# ways a signature or key can be wrong; CPython and MicroPython. The cross-check with the
# `cryptography` package's signatures is tests/test_update_sign.py.
from binascii import unhexlify

from ppmid.update import p256

# RFC 6979 A.2.5 (P-256, SHA-256): the key's public point and the signatures of "sample"
# and "test"
RFC_QX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC_QY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
# NIST's "ECDSA with P-256" worked example (P256_SHA256 example values)
NIST_QX = 0xB7E08AFDFE94BAD3F1DC8C734798BA1C62B3A0AD1E9EA2A38201CD0889BC7A19
NIST_QY = 0x3603F747959DBF7A4BB226E41928729063ADC7AE43529E61B563BBC606CC5E09
VECTORS = [
    ((RFC_QX, RFC_QY), b"sample",
     "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
     "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"),
    ((RFC_QX, RFC_QY), b"test",
     "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
     "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"),
    ((NIST_QX, NIST_QY), b"Example of ECDSA with P-256",
     "2B42F576D07F4165FF65D1F3B1500F81E44C316F1F0B3EF57325B69ACA46104F"
     "DC42C2122D6392CD3E3A993A89502A8198C1886FE69D262C4B329BDB6B63FAF1"),
]


def _raw_key(x, y):
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def test_published_vectors_verify():
    for key, msg, sig in VECTORS:
        assert p256.verify(key, msg, unhexlify(sig)), msg


def test_public_key_parses_the_uncompressed_point():
    assert p256.public_key(_raw_key(RFC_QX, RFC_QY)) == (RFC_QX, RFC_QY)


def test_a_changed_message_fails():
    for key, msg, sig in VECTORS:
        assert not p256.verify(key, msg + b".", unhexlify(sig))
        assert not p256.verify(key, b"X" + msg[1:], unhexlify(sig))


def test_a_changed_signature_fails_at_every_byte():
    key, msg, sig = VECTORS[0]
    raw = unhexlify(sig)
    for i in range(0, 64, 5):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        assert not p256.verify(key, msg, bytes(bad)), i


def test_the_other_key_fails():
    _, msg, sig = VECTORS[0]
    assert not p256.verify((NIST_QX, NIST_QY), msg, unhexlify(sig))


def test_swapped_r_and_s_fail():
    key, msg, sig = VECTORS[2]
    raw = unhexlify(sig)
    assert not p256.verify(key, msg, raw[32:] + raw[:32])


def test_out_of_range_r_or_s_is_not_valid():
    key, msg, sig = VECTORS[0]
    raw = unhexlify(sig)
    n = p256.N.to_bytes(32, "big")
    zero = bytes(32)
    assert not p256.verify(key, msg, zero + raw[32:])
    assert not p256.verify(key, msg, raw[:32] + zero)
    assert not p256.verify(key, msg, n + raw[32:])
    assert not p256.verify(key, msg, raw[:32] + n)
    # r + n: the same point x mod n, but out of range, so not a valid signature
    r_plus_n = (int.from_bytes(raw[:32], "big") + p256.N)
    if r_plus_n < 1 << 256:
        assert not p256.verify(key, msg, r_plus_n.to_bytes(32, "big") + raw[32:])


def test_wrong_lengths_are_not_valid():
    key, msg, sig = VECTORS[0]
    raw = unhexlify(sig)
    assert not p256.verify(key, msg, raw[:63])
    assert not p256.verify(key, msg, raw + b"\x00")
    assert not p256.verify(key, msg, b"")


def test_keys_off_the_curve_or_malformed_are_refused():
    for raw in (_raw_key(RFC_QX, RFC_QY + 1), _raw_key(RFC_QX, RFC_QY)[:64], b"\x02" + _raw_key(RFC_QX, RFC_QY)[1:],
                _raw_key(p256.P, RFC_QY), b""):
        try:
            p256.public_key(raw)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (raw,))
