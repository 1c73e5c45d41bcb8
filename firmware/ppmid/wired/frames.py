# The wired channel's framing (docs/wired.md "Frames"): pure, no I/O, the same code on
# the board and on the host (host_tools/wired.py).
#
#   A5 5A | type u8 | seq u8 | length u16 | payload (length bytes) | CRC-16 u16
#
# Integers big-endian. The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no
# reflection, no final xor; check value 0x29B1 for "123456789") over type, seq, length
# and payload. A receiver skips bytes until the sync pair, refuses a length above its
# bound before reading the payload, and gives up on a frame that stops arriving: no byte of
# it for timeout_ms (a gap, not a time for the whole frame: at 115200 baud the largest frame
# the road takes, 8,338 bytes at the default limits, needs 724 ms on the wire; review 94 W2).
from micropython import const

SYNC0 = const(0xA5)
SYNC1 = const(0x5A)
HEADER = const(6)    # sync (2), type, seq, length (2)
TRAILER = const(2)   # CRC-16
OVERHEAD = const(8)

# frame types (docs/wired.md "Types")
T_HELLO = const(0x01)     # laptop: resume (ids wanted); gateway: its answer (JSON)
T_ENVELOPE = const(0x02)  # laptop: one binary envelope; its kind is the intake's business
T_ACK = const(0x03)       # gateway: the frame `seq` (payload: u8) was taken
T_NACK = const(0x04)      # gateway: refused; payload u8 seq, code, 00, message
T_STATUS = const(0x05)    # gateway: a command's status on the way (MQTT rsp JSON)
T_RESULT = const(0x06)    # gateway: a command's final status (MQTT rsp JSON), kept until TAKEN
T_TAKEN = const(0x07)     # laptop: it has the result of command id (payload: the id)
TYPES = (T_HELLO, T_ENVELOPE, T_ACK, T_NACK, T_STATUS, T_RESULT, T_TAKEN)

# channel error codes (the relay's codes, E_AUTH, E_BUSY..., come on NACKs too)
E_WIRE_SYNC = "E_WIRE_SYNC"        # bytes outside a frame were skipped
E_WIRE_LENGTH = "E_WIRE_LENGTH"    # announced length above the channel's bound
E_WIRE_CRC = "E_WIRE_CRC"          # CRC-16 does not match: the frame is dropped
E_WIRE_TIMEOUT = "E_WIRE_TIMEOUT"  # a frame stopped arriving (cut short): dropped
E_WIRE_TYPE = "E_WIRE_TYPE"        # unknown frame type, or one the gateway never takes
E_WIRE_PAYLOAD = "E_WIRE_PAYLOAD"  # a HELLO / TAKEN payload that does not parse
E_WIRE_RATE = "E_WIRE_RATE"        # the channel's own rate limit: try again later

_SYNC_REPORT = const(256)  # report skipped garbage at least every this many bytes


def _crc_table():
    t = bytearray(512)
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t[2 * i] = (c >> 8) & 0xFF
        t[2 * i + 1] = c & 0xFF
    return t


_TABLE = _crc_table()  # 512 bytes: one lookup per byte instead of eight shifts


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of data (bytes, bytearray or memoryview), continuing `crc`."""
    t = _TABLE
    for b in data:
        i = ((crc >> 8) ^ b) & 0xFF
        crc = ((crc << 8) & 0xFF00) ^ ((t[2 * i] << 8) | t[2 * i + 1])
    return crc


def encode(ftype, seq, payload=b""):
    """One frame as bytes."""
    n = len(payload)
    if not 0 <= ftype <= 0xFF or not 0 <= seq <= 0xFF or n > 0xFFFF:
        raise ValueError("frame field out of range")
    out = bytearray(OVERHEAD + n)
    out[0] = SYNC0
    out[1] = SYNC1
    out[2] = ftype
    out[3] = seq
    out[4] = n >> 8
    out[5] = n & 0xFF
    out[HEADER:HEADER + n] = payload
    c = crc16(memoryview(out)[2:HEADER + n])
    out[HEADER + n] = c >> 8
    out[HEADER + n + 1] = c & 0xFF
    return bytes(out)


def nack_payload(seq, code, message=""):
    m = message.encode()[:200] if isinstance(message, str) else bytes(message)[:200]
    return bytes((seq & 0xFF,)) + code.encode() + b"\x00" + m


def parse_nack(payload):
    """(seq, code, message) of a NACK payload."""
    if len(payload) < 2:
        return None, "", ""
    body = bytes(payload[1:])
    code, _, msg = body.partition(b"\x00")
    return payload[0], code.decode("ascii", "replace"), msg.decode("utf-8", "replace")


class Frame:
    """A frame received. `payload` is a memoryview into the deframer's buffer: valid until
    the next feed()."""
    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, ftype, seq, payload):
        self.type = ftype
        self.seq = seq
        self.payload = payload


class WireError:
    """A refusal found while deframing: code, message, and the frame's seq when the
    header was read (None for skipped garbage)."""
    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, code, message, seq=None):
        self.code = code
        self.message = message
        self.seq = seq


class Deframer:
    """Byte stream -> Frames and WireErrors. One preallocated buffer of max_payload +
    OVERHEAD bytes; a frame whose length is above max_payload is refused from its header
    alone (its payload is never stored). `timeout_ms`: how long a started frame may go
    without a byte before it is dropped (expire())."""

    def __init__(self, max_payload, timeout_ms=500):
        self.max_payload = max_payload
        self.timeout_ms = timeout_ms
        self.buf = bytearray(max_payload + OVERHEAD)
        self._mv = memoryview(self.buf)
        self.n = 0          # bytes of the current frame held (0: looking for sync)
        self.need = 2       # bytes the current frame will have in all, once known
        self.skipped = 0    # garbage bytes not yet reported
        self.started = None  # ms tick the current frame's latest bytes came at
        self.crc = 0xFFFF   # CRC-16 of the current frame's bytes so far (from its type on)
        self.stats = {"frames": 0, "skipped": 0, "crc": 0, "length": 0, "timeouts": 0}

    def reset(self):
        self.n = 0
        self.need = 2
        self.started = None

    def pending(self):
        """True while a frame has started but not finished."""
        return self.n > 0

    def feed(self, data, now=0):
        """Take bytes from `data` (a memoryview or bytes) until one event: returns (used,
        event), event a Frame, a WireError or None (everything used, nothing complete)."""
        buf = self.buf
        n = len(data)
        i = 0
        while i < n:
            b = data[i]
            if self.n == 0:
                i += 1
                if b == SYNC0:
                    buf[0] = b
                    self.n = 1
                    self.started = now
                else:
                    self.skipped += 1
                    if self.skipped >= _SYNC_REPORT:
                        return i, self._garbage()
                continue
            if self.n == 1:
                if b != SYNC1:
                    # not a frame after all: A5 was garbage (this byte is looked at again)
                    self.skipped += 1
                    self.reset()
                    continue
                i += 1
                buf[1] = b
                self.n = 2
                self.need = HEADER
                if self.skipped:
                    return i, self._garbage()
                continue
            # copy as much of the frame as is here
            k = self.need - self.n
            if k > n - i:
                k = n - i
            a = self.n
            buf[a:a + k] = data[i:i + k]
            self.n += k
            i += k
            self.started = now  # the frame is still arriving: its timeout counts from here
            if self.need > HEADER:
                # the CRC runs as the bytes come (a large frame's is never one long loop)
                end = self.need - TRAILER
                b = self.n if self.n < end else end
                if b > a:
                    self.crc = crc16(self._mv[a:b], self.crc)
            if self.n < self.need:
                continue
            if self.need == HEADER:
                length = (buf[4] << 8) | buf[5]
                if length > self.max_payload:
                    seq = buf[3]
                    self.stats["length"] += 1
                    self.reset()
                    return i, WireError(E_WIRE_LENGTH, "frame length %d is above the %d allowed" % (length, self.max_payload), seq)
                self.need = HEADER + length + TRAILER
                self.crc = crc16(self._mv[2:HEADER])
                continue
            end = self.need - TRAILER
            seq = buf[3]
            got = (buf[end] << 8) | buf[end + 1]
            want = self.crc
            self.reset()
            if got != want:
                self.stats["crc"] += 1
                return i, WireError(E_WIRE_CRC, "frame CRC-16 %04X, computed %04X" % (got, want), seq)
            self.stats["frames"] += 1
            return i, Frame(buf[2], seq, self._mv[HEADER:end])
        return i, None

    def _garbage(self):
        k = self.skipped
        self.skipped = 0
        self.stats["skipped"] += k
        return WireError(E_WIRE_SYNC, "%d bytes outside a frame skipped" % k)

    def expire(self, now, diff):
        """A WireError when no byte of a started frame has come for timeout_ms (it is
        dropped), else None. `diff(a, b)`: a - b in ms (ticks_diff)."""
        if self.n == 0 or self.started is None or diff(now, self.started) < self.timeout_ms:
            return None
        seq = self.buf[3] if self.n >= 4 else None
        got = self.n
        self.reset()
        self.stats["timeouts"] += 1
        return WireError(E_WIRE_TIMEOUT, "frame cut short after %d bytes" % got, seq)
