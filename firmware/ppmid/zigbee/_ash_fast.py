# Viper versions of ash.py's byte loops (CRC, randomisation, stuffing). Imported only under
# MicroPython by ash.py; bench/bench_zigbee.py shows what they buy on the unix port.
import micropython

# ash.py's tables (CRC, randomisation sequence, reserved bytes), not copies of them: ash.py
# builds them before it imports this module, so the partly loaded module already has them
# (a copy here held another ~1 KB of tables and their builders on a board; docs/memory.md)
from ppmid.zigbee.ash import CRC_TABLE as _CRC, RANDOM as _RANDOM, RESERVED as _RESERVED


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
