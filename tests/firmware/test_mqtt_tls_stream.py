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
        first = bytearray(1)
        _drive(s.readinto(first))               # two "would block" during the handshake
        rest = bytearray(3)
        n = _drive(s.readinto(rest))            # handshake done: waits on the raw socket
        return bytes(first), bytes(rest[:n])
    (first, rest), q = _with_queue(run)
    assert first == b"\x20" and rest == b"\x02\x00\x00"
    assert q.waits == [("r", tls), ("r", tls), ("r", RAW)]


def test_writes_wait_on_raw_and_fall_back_to_tls_when_stuck():
    tls = _Tls(reads=[b"x"], writes=[3, None, None, 1, None, 2, 4])
    s = _TlsStream(tls, RAW)

    def run(q):
        _drive(s.readinto(bytearray(1)))        # the session is up
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
    # the end of the stream is a read of 0 bytes (the client's reader raises EOFError on it)
    tls = _Tls(reads=[b""])
    s = _TlsStream(tls, RAW)
    assert _drive(s.readinto(bytearray(4))) == 0
    _drive(s.wait_closed())
    assert tls.closed


class _Sockets:
    """Stands in for the `socket` module _mp_open imports, and for the name lookup
    (ppmid.dns_lookup.addrinfo, same arguments but dns and wlan): counts lookups and makes
    sockets that connect at once."""
    SOCK_STREAM = 1

    def __init__(self):
        self.lookups = 0
        self.connected = []

    def getaddrinfo(self, host, port, af, kind):
        self.lookups += 1
        return [(2, kind, 0, "", ("10.0.0.%d" % self.lookups, port))]

    def socket(self, *a):
        return _Raw(self)

    async def addrinfo(self, host, port, kind, dns, wlan):
        return self.getaddrinfo(host, port, 0, kind)[0]


class _Raw:
    def __init__(self, net):
        self.net = net

    def setsockopt(self, *a):
        pass

    def setblocking(self, b):
        pass

    def connect(self, addr):
        self.net.connected.append(addr)


class _Ctx:
    def __init__(self, reads):
        self.reads = reads

    def wrap_socket(self, raw, server_hostname=None, do_handshake_on_connect=True):
        t = _Tls(reads=self.reads)
        t.setblocking = lambda b: None
        return t


def test_the_broker_address_is_looked_up_again_only_after_a_connection_it_did_not_answer():
    import sys
    from ppmid.mqtt.handshake import _mp_open_stream as _mp_open
    net = _Sockets()
    saved = sys.modules.get("socket")
    sys.modules["socket"] = net
    sys.modules["ppmid.dns_lookup"] = net
    known = [None]

    def session(reads, read):
        def run(q):
            r, w = _drive(_mp_open("broker.example", 8883, _Ctx(reads), None, None, known, None, None))
            if read:
                _drive(r.readinto(bytearray(1)))   # the broker answered (a CONNACK's first byte)
            _drive(w.wait_closed())
        _with_queue(run)
    try:
        session([b"\x20"], True)     # first connect: looked up, and answered
        session([b"\x20"], True)     # reconnect: the same address, no lookup
        assert net.lookups == 1 and net.connected == [("10.0.0.1", 8883)] * 2, net.connected
        session([], False)           # no answer through it (a dead or moved broker)...
        session([b"\x20"], True)     # ...so the next connect looks the name up again
        session([b"\x20"], True)
        assert net.lookups == 2, net.lookups
        assert net.connected[3:] == [("10.0.0.2", 8883)] * 2, net.connected
    finally:
        del sys.modules["ppmid.dns_lookup"]
        if saved is None:
            del sys.modules["socket"]
        else:
            sys.modules["socket"] = saved
