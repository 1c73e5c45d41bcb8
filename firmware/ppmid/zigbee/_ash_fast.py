# Viper versions of ash.py's byte loops (CRC, randomisation, stuffing). Imported only under
# MicroPython by ash.py; bench/bench_zigbee.py shows what they buy on the unix port.
import micropython

# ash.py's table of the bytes to stuff, not a copy of it: ash.py builds it before it imports
# this module, so the partly loaded module already has it (a copy here held heap on a board;
# docs/memory.md). The CRC and the randomisation need no tables: bit by bit, as ash.py's.
from ppmid.zigbee.ash import RESERVED as _RESERVED


@micropython.viper
def _crc(data, n: int, crc: int) -> int:
    p = ptr8(data)
    i = 0
    while i < n:
        crc ^= p[i] << 8
        k = 0
        while k < 8:
            if crc & 0x8000:
                crc = (crc << 1) ^ 0x1021
            else:
                crc = crc << 1
            k += 1
        crc &= 0xFFFF
        i += 1
    return crc


def crc16(data, crc=0xFFFF):
    return _crc(data, len(data), crc)


@micropython.viper
def xor_random(src, dst, n: int):
    s = ptr8(src)
    d = ptr8(dst)
    r = 0x42
    i = 0
    while i < n:
        d[i] = s[i] ^ r
        if r & 1:
            r = (r >> 1) ^ 0xB8
        else:
            r = r >> 1
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
