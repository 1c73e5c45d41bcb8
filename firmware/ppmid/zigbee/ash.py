# ASH codec (EZSP's UART framing, Silicon Labs UG101): CRC, data randomisation, byte
# stuffing, control bytes, and a streaming decoder. Pure: no I/O, no board imports; the
# link state machine lives in ashlink.py. Under MicroPython the byte loops come from
# _ash_fast (viper), which replace the plain versions here (CPython and ports without viper
# use these).
from micropython import const

FLAG = const(0x7E)
_ESCAPE = const(0x7D)
XON = const(0x11)
XOFF = const(0x13)
_SUBSTITUTE = const(0x18)
CANCEL = const(0x1A)

MAX_DATA = const(128)           # largest DATA field (one EZSP frame)
_MAX_FRAME = const(131)         # control + data + 2 CRC bytes, before stuffing

RST = const(0xC0)
RSTACK = const(0xC1)
ERROR = const(0xC2)
ASH_VERSION = const(2)

# decoder event: a frame that failed (CRC, length, escape). Its reason is a short string.
BAD = const(-1)

# The decoder's counters: one list of ints, by these indices; their names are
# zigbee/han_counters.py's DECODER (in this order), which only tests and reports load
_C_FRAMES = const(0)
_C_CRC = const(1)
_C_TOO_LONG = const(2)
_C_TOO_SHORT = const(3)
_C_CANCEL = const(4)
_C_SUBSTITUTE = const(5)
_C_BAD_ESCAPE = const(6)
_COUNTERS = const(7)


# 1 for the six bytes that must be stuffed
RESERVED = bytearray(256)
for _b in (FLAG, _ESCAPE, XON, XOFF, _SUBSTITUTE, CANCEL):
    RESERVED[_b] = 1
del _b


# The CRC and the randomisation work bit by bit and make the pseudo-random sequence as they
# go: tables of them held 0.8 KB of a board's heap (512 bytes of CRC, 256 of sequence) for
# loops that run in viper there (_ash_fast), where the bits cost little.
def crc16(data, crc=0xFFFF):
    # CRC-CCITT (polynomial 0x1021), most significant bit first
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def xor_random(src, dst, n):
    """dst[i] = src[i] ^ the i-th byte of UG101's pseudo-random sequence, for i < n (src and
    dst may be the same buffer). The sequence starts at 0x42; each byte follows from the one
    before."""
    r = 0x42
    for i in range(n):
        dst[i] = src[i] ^ r
        r = (r >> 1) ^ 0xB8 if r & 1 else r >> 1


def stuff(src, n, dst):
    """Stuff src[:n] into dst; return the number of bytes written."""
    res = RESERVED
    j = 0
    for i in range(n):
        b = src[i]
        if res[b]:
            dst[j] = _ESCAPE
            dst[j + 1] = b ^ 0x20
            j += 2
        else:
            dst[j] = b
            j += 1
    return j


try:
    import sys
    if sys.implementation.name == "micropython":
        # the viper loops take the plain ones' names: those then go with the import's
        # garbage, so that a board holds one set (~0.3 KB; docs/memory.md)
        from ppmid.zigbee._ash_fast import crc16, xor_random, stuff
except ImportError:  # a port without viper: the plain loops are correct, only slower
    pass


class Encoder:
    """Builds whole wire frames (stuffed, flag-terminated) in one preallocated buffer.
    encode() returns a memoryview valid until the next call: write it out, or bytes() it."""

    def __init__(self):
        # one buffer for the stuffed frame and the flag (2 x _MAX_FRAME + 1 at most); the raw
        # frame (control, data, CRC) is built in its last _MAX_FRAME bytes and stuffed from
        # there to its start, so no second buffer is held. Stuffing has written at most
        # 2i + 2 bytes when it reads raw byte i + 1, at 2 x _MAX_FRAME + 1 - _MAX_FRAME + i:
        # past them for every i < _MAX_FRAME, so it never overwrites a byte still to read.
        self._out = bytearray(2 * _MAX_FRAME + 1)
        self._mv = memoryview(self._out)

    def encode(self, control, data=b""):
        # only a DATA frame's data field is randomised (UG101); RSTACK's and ERROR's are not
        n = len(data)
        if n > MAX_DATA:
            raise ValueError("ASH data field of %d bytes exceeds %d" % (n, MAX_DATA))
        raw = self._mv[_MAX_FRAME + 1:]
        raw[0] = control
        body = raw[1:]
        if control & 0x80:
            body[:n] = data
        else:
            xor_random(data, body, n)
        c = crc16(raw[:n + 1])
        raw[n + 1] = c >> 8
        raw[n + 2] = c & 0xFF
        j = stuff(raw, n + 3, self._out)
        self._out[j] = FLAG
        return self._mv[:j + 1]

    # control bytes (UG101): DATA 0 frmNum(3) reTx ackNum(3); ACK 100 0 nRdy ackNum(3);
    # NAK 101 0 nRdy ackNum(3)
    def data(self, frm_num, re_tx, ack_num, ezsp_frame):
        return self.encode(((frm_num & 7) << 4) | (8 if re_tx else 0) | (ack_num & 7), ezsp_frame)

    def ack(self, ack_num, n_rdy=False):
        return self.encode(0x80 | (8 if n_rdy else 0) | (ack_num & 7))

    def nak(self, ack_num, n_rdy=False):
        return self.encode(0xA0 | (8 if n_rdy else 0) | (ack_num & 7))

    def rst(self):
        # the leading CANCEL makes the NCP discard whatever partial frame it holds
        return b"\x1a" + bytes(self.encode(RST))


class Decoder:
    """Streaming ASH receiver. feed(chunk) returns a list with one tuple per frame, in one
    of two fixed shapes told apart by the first item:
      (control, payload)              a good frame (DATA payloads de-randomised,
                                      RSTACK/ERROR payloads as sent)
      (BAD, reason, control, length)  a frame that failed: reason a short string, control
                                      its first byte (None when it had none), length the
                                      bytes of it held when it failed (for a CRC error:
                                      all between the flags, CRC included)
    Garbage is counted in `counters` (by _C_... index) and otherwise dropped."""

    def __init__(self):
        self._buf = bytearray(_MAX_FRAME)
        self._n = 0
        self._esc = False
        self._skip = False       # after _SUBSTITUTE or an overflow: drop until the next flag
        self.counters = [0] * _COUNTERS   # by _C_... index (above)

    def cut(self):
        """Frames cut off before their flag so far (a CANCEL, a SUBSTITUTE): damage that
        yields no BAD item."""
        return self.counters[_C_CANCEL] + self.counters[_C_SUBSTITUTE]

    def reset(self):
        self._n = 0
        self._esc = False
        self._skip = False

    def feed(self, chunk):
        out = []
        buf = self._buf
        n = self._n
        esc = self._esc
        skip = self._skip
        res = RESERVED
        for b in chunk:
            if res[b]:
                if b == FLAG:
                    if skip:
                        skip = False
                    elif esc:
                        self.counters[_C_BAD_ESCAPE] += 1
                        out.append((BAD, "escape before flag", buf[0] if n else None, n))
                    elif n:
                        self._finish(n, out)
                    n = 0
                    esc = False
                    continue
                if b == CANCEL:
                    if n or esc:
                        self.counters[_C_CANCEL] += 1
                    n = 0
                    esc = False
                    skip = False
                    continue
                if b == _SUBSTITUTE:
                    self.counters[_C_SUBSTITUTE] += 1
                    n = 0
                    esc = False
                    skip = True
                    continue
                if b == _ESCAPE:
                    esc = True
                    continue
                continue  # XON / XOFF: flow control, never data
            if skip:
                continue
            if esc:
                b ^= 0x20
                esc = False
                if not res[b]:
                    self.counters[_C_BAD_ESCAPE] += 1
                    out.append((BAD, "bad escape", buf[0] if n else None, n))
                    skip = True
                    n = 0
                    continue
            if n >= _MAX_FRAME:
                self.counters[_C_TOO_LONG] += 1
                out.append((BAD, "frame too long", buf[0], n))
                skip = True
                n = 0
                continue
            buf[n] = b
            n += 1
        self._n = n
        self._esc = esc
        self._skip = skip
        return out

    def _finish(self, n, out):
        buf = self._buf
        if n < 3:
            self.counters[_C_TOO_SHORT] += 1
            out.append((BAD, "frame too short", buf[0], n))
            return
        mv = memoryview(buf)
        # CRC-CCITT over data and its own big-endian CRC leaves zero
        if crc16(mv[:n]) != 0:
            self.counters[_C_CRC] += 1
            out.append((BAD, "crc", buf[0], n))
            return
        control = buf[0]
        m = n - 3
        if control & 0x80 == 0:
            payload = bytearray(m)
            xor_random(mv[1:], payload, m)
        else:
            payload = bytes(mv[1:n - 2])
        self.counters[_C_FRAMES] += 1
        out.append((control, payload))
