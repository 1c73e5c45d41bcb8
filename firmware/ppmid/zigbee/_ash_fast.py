# Viper versions of ash.py's byte loops (CRC, randomisation, stuffing). Imported only under
# MicroPython by ash.py; bench/bench_zigbee.py shows what they buy on the unix port.
import array
import micropython


def _table():
    t = array.array("H", range(256))
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t[i] = c & 0xFFFF
    return t


def _sequence():
    out = bytearray(256)
    r = 0x42
    for i in range(256):
        out[i] = r
        r = (r >> 1) ^ 0xB8 if r & 1 else r >> 1
    return out


_CRC = _table()
_RANDOM = _sequence()
_RESERVED = bytearray(256)
for _b in (0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A):
    _RESERVED[_b] = 1


@micropython.viper
def _crc(data, n: int, crc: int) -> int:
    t = ptr16(_CRC)
    p = ptr8(data)
    i = 0
    while i < n:
        crc = ((crc << 8) & 0xFF00) ^ t[((crc >> 8) ^ p[i]) & 0xFF]
        i += 1
    return crc


def crc16(data, crc=0xFFFF):
    return _crc(data, len(data), crc)


@micropython.viper
def xor_random(src, dst, n: int):
    s = ptr8(src)
    d = ptr8(dst)
    r = ptr8(_RANDOM)
    i = 0
    while i < n:
        d[i] = s[i] ^ r[i]
        i += 1


@micropython.viper
def stuff(src, n: int, dst) -> int:
    s = ptr8(src)
    d = ptr8(dst)
    res = ptr8(_RESERVED)
    i = 0
    j = 0
    while i < n:
        b = s[i]
        if res[b]:
            d[j] = 0x7D
            d[j + 1] = b ^ 0x20
            j += 2
        else:
            d[j] = b
            j += 1
        i += 1
    return j
