# The MQTT client's TLS stream (ppmid.mqtt.client._TlsStream, MicroPython only): what it
# waits on. During the handshake it must wait on the TLS object (only it knows which way the
# handshake needs to go); once a read has succeeded, on the raw socket, whose file
# descriptor the unix port's poll can block on (the TLS object makes it poll in 1 ms steps:
# docs/emulate.md); a write that makes no progress after the socket had room falls back to
# the TLS object. The generators are driven by hand with a recording stand-in for asyncio's
# I/O queue, so nothing here depends on timing.
from ppmid.mqtt.client import _TlsStream

CPYTHON = False   # the stream is MicroPython's generator-based asyncio protocol


class _Queue:
    def __init__(self):
        self.waits = []

    def queue_read(self, s):
        self.waits.append(("r", s))

    def queue_write(self, s):
        self.waits.append(("w", s))


class _Tls:
    """Scripted TLS object: reads/writes pop their results from lists (None = would block)."""

    def __init__(self, reads=(), writes=()):
        self.reads = list(reads)
        self.writes = list(writes)
        self.written = b""
        self.closed = False

    def read(self, n):
        r = self.reads.pop(0)
        return r if r is None else r[:n]

    def readinto(self, buf):
        r = self.reads.pop(0)
        if r is None:
            return None
        buf[:len(r)] = r
        return len(r)

    def write(self, b):
        n = self.writes.pop(0)
        if n:
            self.written += bytes(b[:n])
        return n

    def close(self):
        self.closed = True


RAW = object()


def _drive(gen):
    """Run a generator-coroutine to completion; -> its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


def _with_queue(fn):
    from asyncio import core   # MicroPython's asyncio (this module is skipped under CPython)
    saved = core._io_queue
    q = core._io_queue = _Queue()
    try:
        return fn(q), q
    finally:
        core._io_queue = saved


def test_handshake_waits_on_tls_then_reads_wait_on_the_raw_socket():
    tls = _Tls(reads=[None, None, b"\x20", None, b"\x02\x00\x00"])
    s = _TlsStream(tls, RAW)

    def run(q):
        first = _drive(s.readexactly(1))       # two "would block" during the handshake
        rest = bytearray(3)
        n = _drive(s.readinto(rest))            # handshake done: waits on the raw socket
        return first, bytes(rest[:n])
    (first, rest), q = _with_queue(run)
    assert first == b"\x20" and rest == b"\x02\x00\x00"
    assert q.waits == [("r", tls), ("r", tls), ("r", RAW)]


def test_writes_wait_on_raw_and_fall_back_to_tls_when_stuck():
    tls = _Tls(reads=[b"x"], writes=[3, None, None, 1, None, 2, 4])
    s = _TlsStream(tls, RAW)

    def run(q):
        _drive(s.readexactly(1))                # the session is up
        s.write(b"abcdef")                      # 3 go at once, 3 wait in out_buf
        assert s.out_buf == b"def"
        _drive(s.drain())
        s.write(b"ghij")                        # goes at once: nothing to drain
        assert s.out_buf == b""
    _, q = _with_queue(run)
    assert tls.written == b"abcdefghij"
    # would block -> wait for room on the raw socket; still blocked after that -> the TLS
    # object decides; progress ("d") makes the raw socket the thing to wait on again
    assert q.waits == [("w", RAW), ("w", tls), ("w", RAW)]


def test_before_the_handshake_writes_wait_on_tls():
    tls = _Tls(writes=[None, None, 5])
    s = _TlsStream(tls, RAW)

    def run(q):
        s.write(b"hello")
        _drive(s.drain())
    _, q = _with_queue(run)
    assert tls.written == b"hello" and q.waits == [("w", tls)]


def test_end_of_stream_and_close():
    tls = _Tls(reads=[b"", 0])
    s = _TlsStream(tls, RAW)
    try:
        _drive(s.readexactly(2))
        assert False, "EOF must raise"
    except EOFError:
        pass
    tls.reads = [b""]

    def readinto_eof():
        class T(_Tls):
            def readinto(self, buf):
                return 0
        s2 = _TlsStream(T(), RAW)
        return _drive(s2.readinto(bytearray(4)))
    assert readinto_eof() == 0
    _drive(s.wait_closed())
    assert tls.closed
