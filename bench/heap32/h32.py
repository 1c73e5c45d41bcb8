# The heap gauge's harness inside the webassembly MicroPython (written to /lib/_h32.py by
# gauge.py): a stand-in board with in-memory UARTs, a Wi-Fi that stays down, the flash
# as the port's in-memory filesystem; heap samples; probes that sample the heap on entry
# to and exit from chosen firmware functions. Nothing of this is firmware: docs/memory.md.
import gc

import asyncio

# The webassembly port collects garbage only when node calls into it (at the top level:
# the start of a script, and every time the event loop resumes a task); gc.collect() in
# running Python code frees nothing. So the live heap is known exactly right after an
# await that gave node the hand (live(), the sampler); anywhere else gc.mem_alloc() is the
# live heap at the last resumption plus everything allocated since, garbage included:
# an upper bound (the probes).
peak = [0, ""]     # live peak: highest gc.mem_alloc() right after a resumption, where
bound = [0, ""]    # upper bound: highest gc.mem_alloc() anywhere sampled, where
samples = [0]
trace = []         # (where, bytes) each time the upper bound rose


async def live():
    # Caveat: every await through node also leaves small proxy objects in the Python heap
    # until node's own GC finalizes their JS side, at times of its choosing: up to ~10-20 KB
    # after a few hundred awaits. Single figures carry that (one-sided) noise; the bench
    # takes the least of a few runs (docs/memory.md).
    await asyncio.sleep_ms(0)
    return gc.mem_alloc()


def sample(where=""):
    a = gc.mem_alloc()
    samples[0] += 1
    if a > bound[0]:
        bound[0] = a
        bound[1] = where
        if len(trace) < 64:
            trace.append((where, a))
    return a


async def reset_peak():
    a = await live()
    peak[0] = bound[0] = a
    peak[1] = bound[1] = "start"
    samples[0] = 0
    trace.clear()
    return a


async def sampler(stop, where="loop"):
    # one exact sample per millisecond of the event loop, between the firmware's turns
    while not stop[0]:
        await asyncio.sleep_ms(1)
        a = gc.mem_alloc()
        samples[0] += 1
        if a > peak[0]:
            peak[0] = a
            peak[1] = where


def _wrap(fn, where):
    def probe(*a, **k):
        sample(where)
        r = fn(*a, **k)
        # a coroutine: sample when it has finished. Asked of its type, not of the result: a
        # result with __getattr__ (a GBCS Message) would load its lazy fields for the probe
        if hasattr(type(r), "send"):
            async def finish():
                v = await r
                sample(where + " done")
                return v
            return finish()
        sample(where + " done")
        return r
    return probe


def probe(owner, name, where):
    """Replace owner.name (a class's method or a module's function) by a sampling probe;
    False if it is not there (the firmware moved it: the gauge says so)."""
    fn = getattr(owner, name, None)
    if fn is None:
        return False
    setattr(owner, name, _wrap(fn, where))
    return True


def _noop(*a, **k):
    pass


async def probe_cost(n):
    """What n probes take in the heap, measured on stand-in methods while the heap is quiet
    (before the app starts). The 4 KB command's figures are taken net of the probes: read
    around installing them on the running app instead, the difference caught the app's own
    comings and goings (the HAN resetting its silent module, timers, proxies): -6.3 KB for
    the command and -5.7 KB for the top-up in session 6, shifting their peaks by as much."""
    class Stand:
        pass
    for i in range(n):
        setattr(Stand, "m%d" % i, _noop)
    wheres = ["mod.method_%02d" % i for i in range(n)]  # built strings, as the real ones
    a0 = await live()
    for i in range(n):
        probe(Stand, "m%d" % i, wheres[i])
    return (await live()) - a0


class Reader:
    # A UART that never receives: the module on it is silent (drivers time out and retry).
    # `stream`: the UART, when it stands in for the port's missing asyncio.StreamReader
    def __init__(self, stream=None):
        self._never = asyncio.Event()

    async def read(self, n=-1):
        await self._never.wait()
        return b""

    async def readinto(self, buf):
        await self._never.wait()
        return 0

    async def readexactly(self, n):
        await self._never.wait()
        return b""


class Writer:
    def __init__(self, stream=None, extra=None):
        self.written = 0

    def write(self, data):
        self.written += len(data)

    async def drain(self):
        pass

    def close(self):
        pass


# ---- the ESP32's boot (gauge.APP_BODY): firmware/main.py on the real ESP32 board code ----
# What the webassembly port cannot do, and only that, is stood in for here, before the
# gauge's baseline: asyncio has no streams (a UART's StreamReader/StreamWriter: the stand-in
# UARTs above, whose module never answers) and no run() (node drives the loop: a call cannot
# block until the app returns); sys.platform reads "webassembly" (esp32() below). The unix
# port has asyncio's run and streams: left as they are here; frozen32.py, which boots
# main.py there, puts these in their place itself.


class Detached(BaseException):
    # How the stand-in asyncio.run returns to the gauge's script: not an Exception, so
    # main.py's `except Exception` (print, reboot) lets it through
    pass


before_app = [None]  # called by the stand-in asyncio.run before it schedules the app


def _run(coro):
    if before_app[0] is not None:
        before_app[0]()
    asyncio.create_task(coro)
    raise Detached()


if not hasattr(asyncio, "run"):
    asyncio.run = _run
if not hasattr(asyncio, "StreamReader"):
    asyncio.StreamReader = Reader
    asyncio.StreamWriter = Writer


class _Esp32Sys:
    # sys as the firmware sees it on an ESP32: sys.platform == "esp32" (ppmid.board.load
    # picks the board by it); everything else is the port's own sys
    platform = "esp32"

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


import sys as _sys  # noqa: E402 (here, not at the top: see the session 9 note in docs/memory.md)
_ESP32_SYS = _Esp32Sys(_sys)


def esp32():
    """From now on `import sys` gives the firmware _Esp32Sys (the importer looks in
    sys.modules before its built-in modules)."""
    _sys.modules["sys"] = _ESP32_SYS


class Uart:
    def __init__(self):
        self.reader = Reader()
        self.writer = Writer()

    def streams(self):
        return self.reader, self.writer


class Wlan:
    # Wi-Fi that never comes up: the MQTT client waits for it (no socket, no TLS)
    def active(self, on=None):
        return True

    def connect(self, *a, **k):
        pass

    def isconnected(self):
        return False

    def status(self, *a):
        return 1001

    def ifconfig(self, *a):
        return ("0.0.0.0",) * 4

    def track(self, sock):
        pass

    def untrack(self, sock):
        pass

    def poll(self):
        return False


class Wdt:
    def feed(self):
        pass


class Board:
    def __init__(self, nfc=False, fs_root="/flash/", wired=False):
        self.name = "heap32"
        self.info = {"name": "heap32", "zigbee_uart": {"baud": 115200}}
        if nfc:
            self.info["nfc"] = {"bus": "uart", "baud": 115200}
        if wired:  # no attribute otherwise: the stand-in's own size is in the other rows
            self._wired = Uart()
        self.fs_root = fs_root
        self.wlan = Wlan()
        self._zb = Uart()
        self._nfc = Uart() if nfc else None
        self._wdt = Wdt()
        import time
        self.time = time        # the port's own clock; as an ESP32 after power-on: unset

    def clock_source(self):
        return "unset"

    def set_time(self, unix_s, ms=0):
        pass

    def zigbee_uart(self):
        return self._zb

    def nfc_uart(self):
        return self._nfc

    def nfc_i2c(self):
        raise OSError(19)

    def wired_uart(self):
        return getattr(self, "_wired", None)

    def wdt(self, timeout_ms=5000):
        return self._wdt

    def mem_free(self):
        return gc.mem_free()

    def reset(self):
        raise SystemExit(3)

    def unique_id(self):
        return b"\x00\x01\x02\x03\x04\x05"

    def uptime_ms(self):
        return 0


class PublishStream:
    # The broker's socket as the MQTT client reads it, carrying one PUBLISH (QoS 0) of the
    # file at `path` on `topic`: the client's own _read_packet grows its receive buffer and
    # reads the message into it, and _incoming hands it to the handler, as on a board. The
    # file is read straight into the client's buffer (readinto): the stream holds only the
    # packet's head, so no copy of the message is in the heap besides the client's.
    def __init__(self, topic, path):
        import os
        t = topic.encode()
        rem = 2 + len(t) + os.stat(path)[6]
        head = bytearray(b"\x30")  # PUBLISH, QoS 0: no PUBACK to write on the stand-in link
        while True:
            b = rem & 0x7F
            rem >>= 7
            head.append(b | 0x80 if rem else b)
            if not rem:
                break
        head.append(len(t) >> 8)
        head.append(len(t) & 0xFF)
        self._head = bytes(head) + t
        self._f = open(path, "rb")

    async def readexactly(self, n):
        if self._head:
            b = self._head[:n]
            self._head = self._head[n:]
            return b
        return self._f.read(n)

    async def readinto(self, mv):
        got = 0
        if self._head:
            got = min(len(mv), len(self._head))
            mv[:got] = self._head[:got]
            self._head = self._head[got:]
        if got < len(mv):
            got += self._f.readinto(mv[got:])
        return got

    def close(self):
        self._f.close()


async def publish_through(client, topic, path):
    """One PUBLISH of the file at path through the client's receive path (its buffer, its
    parse, its handler), as its reader task does with a packet from the broker."""
    s = PublishStream(topic, path)
    client._readinto = True  # as on MicroPython (ppmid.mqtt.handshake: the stream has readinto)
    try:
        first, body = await client._read_packet(s)
        await client._incoming(first, body)
        body = None  # as the client's reader does once the message is handled
    finally:
        s.close()


async def until(cond, timeout_ms=20000, what="condition"):
    import time
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise RuntimeError("heap32: timed out waiting for " + what)
        await asyncio.sleep_ms(5)


async def han_as_running(han, send_zcl, transfer_size, payload):
    """The HAN as if its module and the CH were up (gauge.py's and frag.py's scenarios): its
    supervisor, which talks to the silent stand-in UART, stops; a tunnel is open with the
    CH's transfer size and the module's payload; each ZCL frame goes to `send_zcl`."""
    for t in han._tasks:
        t.cancel()
    han._tasks = []
    await asyncio.sleep_ms(10)
    han.tunnel.tunnel_id = 1
    han.tunnel.client = 0
    han.tunnel.client_max = transfer_size
    han._max_payload = payload
    han._send_zcl = send_zcl
    han._set_status("running")
