# PN532 host-interface frames (UM0701 section 6.2): pure codec, no I/O.
#
#   normal    00 00 FF LEN LCS TFI data DCS 00            LEN = 1 + len(data) <= 255
#   extended  00 00 FF FF FF LENM LENL LCS TFI data DCS 00 LEN up to 265 on a PN532
#   ACK 00 00 FF 00 FF 00   NACK 00 00 FF FF 00 00   error 00 00 FF 01 FF 7F 81 00
#
# (LEN + LCS) & 0xFF == 0 (extended: LENM + LENL + LCS), (TFI + sum(data) + DCS) & 0xFF == 0.
# `scan()` finds the next frame in a receive buffer without copying; the driver owns the
# buffer. Encoding writes into a caller's bytearray so that the hot path does not allocate.
from micropython import const

TFI_HOST = const(0xD4)   # host -> PN532
TFI_CHIP = const(0xD5)   # PN532 -> host
_TFI_ERROR = const(0x7F)  # application-level error frame (syntax error)

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"

_NORMAL_MAX = const(255)   # LEN of a normal frame (TFI + data)
_OVERHEAD = const(10)      # worst case framing bytes around TFI+data (extended frame)

# scan() results
NEED_MORE = const(0)
KIND_ACK = const(1)
KIND_NACK = const(2)
KIND_FRAME = const(3)      # information frame: buf[off:off+length] = TFI, data
KIND_ERROR = const(4)      # error frame (TFI 7F)
KIND_BAD_LCS = const(5)    # length checksum wrong: skip it, resynchronise
KIND_BAD_DCS = const(6)    # data checksum wrong: whole frame received but corrupt
KIND_TOO_LONG = const(7)   # LEN larger than the caller accepts


def frame_size(n):
    """Bytes on the wire for a frame carrying `n` bytes of TFI + data."""
    return n + (7 if n <= _NORMAL_MAX else 10)


def encode(out, tfi, code, data=b"", data2=b""):
    """Write one information frame (TFI, code, data, data2) into bytearray `out`;
    return its length. `data2` lets the driver add a payload without concatenating."""
    n = 2 + len(data) + len(data2)
    out[0] = 0
    out[1] = 0
    out[2] = 0xFF
    if n <= _NORMAL_MAX:
        out[3] = n
        out[4] = (-n) & 0xFF
        p = 5
    else:
        out[3] = 0xFF
        out[4] = 0xFF
        out[5] = n >> 8
        out[6] = n & 0xFF
        out[7] = (-((n >> 8) + (n & 0xFF))) & 0xFF
        p = 8
    out[p] = tfi
    out[p + 1] = code
    s = tfi + code
    p += 2
    m = len(data)
    if m:
        out[p:p + m] = data
        s += sum(data)
        p += m
    m = len(data2)
    if m:
        out[p:p + m] = data2
        s += sum(data2)
        p += m
    out[p] = (-s) & 0xFF
    out[p + 1] = 0
    return p + 2


def command(code, data=b""):
    """A host command frame as new bytes (tests, tools; the driver uses encode())."""
    out = bytearray(frame_size(2 + len(data)))
    n = encode(out, TFI_HOST, code, data)
    return bytes(out[:n])


def scan(buf, n, max_len=0xFFFF):
    """Look for the first frame in buf[:n].

    Returns (kind, end, off, length): `end` = bytes of buf to drop once handled (garbage
    and the frame; 0 with NEED_MORE when nothing can be dropped yet); for KIND_FRAME and
    KIND_BAD_DCS, buf[off:off+length] is TFI + data. Leading bytes before `00 FF` are
    skipped; the trailing postamble is not required (the next scan skips it)."""
    i = 0
    while True:
        # start code 00 FF
        while i + 1 < n and not (buf[i] == 0 and buf[i + 1] == 0xFF):
            i += 1
        if i + 1 >= n:
            # keep a trailing 00: it may be the first half of a start code
            return NEED_MORE, (i if i < n and buf[i] == 0 else n), 0, 0
        p = i + 2
        if p + 2 > n:
            return NEED_MORE, i, 0, 0
        ln = buf[p]
        lcs = buf[p + 1]
        if ln == 0 and lcs == 0xFF:
            return KIND_ACK, p + 2, 0, 0
        if ln == 0xFF and lcs == 0:
            return KIND_NACK, p + 2, 0, 0
        if ln == 0xFF and lcs == 0xFF:
            if p + 5 > n:
                return NEED_MORE, i, 0, 0
            ln = (buf[p + 2] << 8) | buf[p + 3]
            if (buf[p + 2] + buf[p + 3] + buf[p + 4]) & 0xFF or ln == 0:
                return KIND_BAD_LCS, p, 0, 0
            off = p + 5
        else:
            if (ln + lcs) & 0xFF or ln == 0:
                return KIND_BAD_LCS, p, 0, 0
            off = p + 2
        if ln > max_len:
            return KIND_TOO_LONG, off, 0, ln
        if off + ln + 1 > n:
            return NEED_MORE, i, 0, 0
        s = buf[off + ln]
        for j in range(off, off + ln):
            s += buf[j]
        if s & 0xFF:
            return KIND_BAD_DCS, off + ln + 1, off, ln
        if ln == 1 and buf[off] == _TFI_ERROR:
            return KIND_ERROR, off + ln + 1, off, ln
        return KIND_FRAME, off + ln + 1, off, ln
