# The heap gauge's harness inside the webassembly MicroPython (written to /lib/_h32.py by
# gauge.py): a stand-in board with in-memory UARTs, a Wi-Fi that comes up when the config
# names a network (the stand-in `network`'s station), the flash
# as the port's in-memory filesystem; heap samples; probes that sample the heap on entry
# to and exit from chosen firmware functions. Nothing of this is firmware: docs/memory.md.
import gc

import asyncio

# The webassembly port collects garbage only when a call from node into it returns (the
# script's top level after an await, each call into the event loop), and only when a
# collect was asked for (its threshold, or gc.collect(), which in running Python code
# frees nothing but asks). So the live heap is known exactly right after an await that
# gave node the hand, the collect asked for (live()), and as a call into the event loop
# starts (the sampler); anywhere else gc.mem_alloc() is the live heap then plus
# everything allocated since, garbage included: an upper bound (the probes).
peak = [0, ""]     # live peak: highest gc.mem_alloc() as a call into the event loop starts, where
bound = [0, ""]    # upper bound: highest gc.mem_alloc() anywhere sampled, where
samples = [0]
trace = []         # (where, bytes) each time the upper bound rose


async def live():
    # Caveat: every await through node also leaves small proxy objects in the Python heap
    # until node's own GC finalizes their JS side, at times of its choosing: up to ~10-20 KB
    # after a few hundred awaits. Single figures carry that (one-sided) noise; the bench
    # takes the least of a few runs (docs/memory.md).
    # gc.collect() here frees nothing, but it has the port collect once node has the hand
    # (py/gc.c's collect is only requested: ports/webassembly/main.c gc_collect): without
    # it the port collects there only after its threshold's worth of allocations, and the
    # figure held whatever garbage came since the last one
    _lfs_forget_closed()
    gc.collect()
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
    # one exact sample per call from node into the event loop, between the firmware's
    # turns: taken as the call starts, after the collect the previous call asked for. (A
    # task's sample, taken when its turn came, held the garbage of every turn before it in
    # the same call: the signature check of the P-256 envelope, 1.1 MB of big-integer
    # garbage, made the live peak of its row 1.23 MB once the command came through the
    # connected reader.) This task makes sure there is a call at least every millisecond.
    core = asyncio.core
    run = core._run_iter

    def run_sampled():
        a = gc.mem_alloc()
        samples[0] += 1
        if a > peak[0]:
            peak[0] = a
            peak[1] = where
        run()
        if lfs_open:  # a file closed in this turn: its cache is not in the next sample
            _lfs_forget_closed()
        gc.collect()  # asked for: the port collects once this call is back in node
    core._run_iter = run_sampled
    try:
        while not stop[0]:
            await asyncio.sleep_ms(1)
    finally:
        core._run_iter = run


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
if not hasattr(asyncio, "StreamWriter"):
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


# ---- the ESP32's flash: LittleFS2 on the GC heap --------------------------------------
# On an ESP32 the port's frozen _boot.py mounts the flash partition as LittleFS2 before
# boot.py and main.py (vfs.mount(bdev, "/"), MicroPython's VfsLfs2 with its defaults:
# readsize = progsize = 32 and lookahead = 32 (extmod/vfs_lfs.c), so a cache of
# min(4096, 4 * 32) = 128 bytes (extmod/vfs_lfsx.c init_config)): the VfsLfs2 object (its
# lfs2_t and config inside), its read and prog caches (128 each) and lookahead buffer (32)
# and the mount's entry stay on the GC heap for the boot's life; each open file is one
# object with its own 128-byte cache (extmod/vfs_lfsx_file.c), on the GC heap while open.
# The port here has VfsPosix over MEMFS only (its file object: one 16-byte block), so these
# stand in with what they measured on the unix port built for 32 bits (MicroPython 1.29,
# build-plain32, a 4096-byte-block RAM device shaped like esp32.Partition, live heap after
# a collect; docs/memory.md "Session 9, LittleFS on the GC heap"). A bytearray(n) is a
# 16-byte object and n bytes: each stand-in is its object and buffer, in 16-byte blocks.
LFS_MOUNT_BYTES = 624      # vfs.mount(bdev, "/"): VfsLfs2 + its buffers + the mount entry
LFS_FILE_BYTES = 256       # one open file (r+b, as the journal's) on it
_POSIX_FILE_BYTES = 16     # what the port's own file object already takes of that
_PAIR_BYTES = 32 + 4       # the (file, cache, path) tuple and its list slot, off the cache
lfs_mount = []             # the mount's stand-in, once mounted
lfs_open = []              # (file, its cache's stand-in, path), one per file open on the flash


def _lfs_forget_closed():
    # A file the firmware closed gives its cache back, as VfsLfs2's file does (its close
    # frees the buffer with the object on the next collect). The port's file raises on a
    # closed file's tell(): one exception's garbage, once per file.
    for i in range(len(lfs_open) - 1, -1, -1):
        try:
            lfs_open[i][0].tell()
        except (OSError, ValueError):
            del lfs_open[i]


def littlefs():
    """From now on the heap holds what an ESP32's LittleFS2 holds: the mount, and a file's
    object and cache while the file is open (builtins.open: the firmware's opens, not the
    harness's before it)."""
    import builtins
    lfs_mount.append(bytearray(LFS_MOUNT_BYTES - 16))
    real_open = builtins.open
    cache = LFS_FILE_BYTES - _POSIX_FILE_BYTES - _PAIR_BYTES - 16

    def lfs_open_(*a, **k):
        _lfs_forget_closed()
        f = real_open(*a, **k)
        lfs_open.append((f, bytearray(cache), a[0] if a else k.get("file")))
        return f
    builtins.open = lfs_open_


# boot.py's first line, micropython.alloc_emergency_exception_buf(100): the ESP32 port
# (MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF with no fixed size, ports/esp32/mpconfigport.h)
# takes the buffer from the GC heap and keeps it (py/modmicropython.c: m_new(byte, 100),
# 112 bytes in 16-byte blocks); the port here has no such function (boot.py passes over
# its AttributeError), so the gauge holds a bytearray of that size in its place
EMERGENCY_BUF_BYTES = 112
emergency_buf = []


def emergency_exception_buf():
    import micropython
    if not hasattr(micropython, "alloc_emergency_exception_buf"):
        emergency_buf.append(bytearray(EMERGENCY_BUF_BYTES - 16))


class Uart:
    def __init__(self):
        self.reader = Reader()
        self.writer = Writer()

    def streams(self):
        return self.reader, self.writer


class Wlan:
    # Wi-Fi that comes up once the app connects to a provisioned network (the config's
    # wifi.ssid), with DHCP's addresses (the stand-in network's); with no ssid it never
    # does: the MQTT client then waits for it (no socket, no TLS)
    def __init__(self):
        import network
        self._sta = network.WLAN(network.STA_IF)

    def active(self, on=None):
        return self._sta.active(on)

    def connect(self, ssid="", password="", **k):
        self._sta.connect(ssid, password)

    def isconnected(self):
        return self._sta.isconnected()

    def status(self, *a):
        return self._sta.status()

    def ifconfig(self, *a):
        return self._sta.ifconfig()

    def dns_servers(self):
        d = self._sta.ifconfig()[3]
        return [d] if d != "0.0.0.0" else []

    def track(self, sock):
        pass

    def untrack(self, sock):
        pass

    def poll(self):
        return self._sta.isconnected()


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


def publish_head(first, topic, rest):
    """A PUBLISH's fixed header (first byte, remaining length) and topic, before the `rest`
    bytes (a packet id, if any, and the payload) that the caller sends after it."""
    t = topic.encode()
    rem = 2 + len(t) + rest
    head = bytearray((first,))
    while True:
        b = rem & 0x7F
        rem >>= 7
        head.append(b | 0x80 if rem else b)
        if not rem:
            break
    head.append(len(t) >> 8)
    head.append(len(t) & 0xFF)
    head += t
    return head


class PublishStream:
    # The broker's socket as the MQTT client reads it, carrying one PUBLISH (QoS 0) of the
    # file at `path` on `topic`: the client's own _read_packet grows its receive buffer and
    # reads the message into it, and _incoming hands it to the handler, as on a board. The
    # file is read straight into the client's buffer (readinto): the stream holds only the
    # packet's head, so no copy of the message is in the heap besides the client's.
    def __init__(self, topic, path):
        import os
        # PUBLISH, QoS 0: no PUBACK to write on the stand-in link
        self._head = bytes(publish_head(0x30, topic, os.stat(path)[6]))
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
        n = len(body)
        body = None  # as the client's reader does
        await client._incoming(first, n)
    finally:
        s.close()


async def until(cond, timeout_ms=20000, what="condition", every_ms=5):
    import time
    t0 = time.ticks_ms()
    while not cond():
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise RuntimeError("heap32: timed out waiting for " + what)
        await asyncio.sleep_ms(every_ms)


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


class HanSettling:
    """The app's reaction to the HAN's change to running (han_as_running), watched until it
    is over, so the command meets the app as a board's command would meet it: a board's HAN
    runs for minutes before a command comes. The reaction: while MQTT is online,
    `mqtt.info_follow` is loaded and publishes the info (paced: SETTLE_MS later), then drops
    itself once the broker PUBACKed it; with the CH clock's loop on (config `ch_clock`), its
    next tick (within 1 s) loads `zigbee.chclock` for a read, which drops itself after.
    Observed, not slept through: a fixed sleep is too short on a loaded host. Make it before
    han_as_running (it counts the loop's reads through `app._ch_clock_read` until over())."""

    def __init__(self, app, link, ch_clock):
        import sys
        import time
        self._sys = sys
        self._time = time
        self._t0 = time.ticks_ms()
        self._app = app
        self._read = app._ch_clock_read
        self._link = link
        self.online = link.client.state == "online"
        self.ch_clock = ch_clock
        self.got = list(broker.got)    # the broker's counts before the change
        self.sent = list(broker.sent)
        self.info_loaded = False       # info_follow seen loaded (it stays SETTLE_MS at least)
        self.reads = [0, 0]            # the CH clock loop's reads started, finished
        app._ch_clock_read = self._counted_read

    def _counted_read(self):
        run = self._read()
        reads = self.reads
        reads[0] += 1

        async def counted(*a):
            try:
                return await run(*a)
            finally:
                reads[1] += 1
        return counted

    def _over(self):
        mods = self._sys.modules
        if "ppmid.mqtt.info_follow" in mods:
            self.info_loaded = True
        if self.ch_clock and not (self.reads[1] and self.reads[0] == self.reads[1]):
            return False
        if "ppmid.zigbee.chclock" in mods:
            return False
        if not self.online:
            return True
        link = self._link
        # the info went out (one PUBLISH more), its PUBACK came back, info_follow is gone
        return (self.info_loaded and broker.got[3] > self.got[3] and not link.client.pending()
                and getattr(link, "_info_task", None) is None and "ppmid.mqtt.info_follow" not in mods)

    async def over(self, timeout_ms=20000):
        """Wait until the reaction is over; the harness's counting taken out again. What
        it saw, for the job's output."""
        try:
            # polled every 100 ms, not 5: each poll is an await through node, whose JS
            # proxies stay in the heap a while (~3 KB more before the command, session 10)
            await until(self._over, timeout_ms, "the app's reaction to the HAN running to be over", 100)
        finally:
            self._app._ch_clock_read = self._read
        return {"ms": self._time.ticks_diff(self._time.ticks_ms(), self._t0), "online": self.online,
                "info_loaded": self.info_loaded, "ch_clock_reads": self.reads[1],
                "publishes": broker.got[3] - self.got[3], "pubacks": broker.sent[4] - self.sent[4],
                "got_before": self.got, "sent_before": self.sent}


# ---- the network a gateway in the field talks to (docs/memory.md, "Session 9, the gauge
# measures a connected gateway"): peers at the other end of the stand-in `socket`'s
# sockets, served on their ports when this harness loads, before the baseline. They answer
# with literal bytes and keep no copy of what they are sent (a few counters), so what they
# add after the baseline is their replies while the firmware has not read them yet.
BROKER_PORT = 8883     # gauge.flash_files' broker.port
UNIX_NOW = 1796634000  # 2026-12-07 09:00 UTC: what the stand-in SNTP server says
SNTP_ADDRESS = (192, 0, 2, 123)  # what the stand-in resolver answers for any name


class MqttBroker:
    """An MQTT 3.1.1 broker (OASIS 3.1.1) as far as a gateway's session needs it: CONNECT
    -> CONNACK (accepted), SUBSCRIBE -> SUBACK (every filter granted its QoS), PUBLISH QoS 1
    -> PUBACK, PINGREQ -> PINGRESP; publish() sends the gateway one PUBLISH (QoS 1) of a
    file. got[type] / sent[type]: packets by their type (the fixed header's high nibble)."""

    def __init__(self):
        self.sock = None
        self.got = [0] * 16
        self.sent = [0] * 16
        self._head = bytearray(256)   # a packet body's first bytes: enough to answer it
        self._state = 0
        self._first = self._len = self._shift = self._n = 0

    def opened(self, sock):
        self.sock = sock
        self._state = 0

    def closed(self, sock):
        if sock is self.sock:
            self.sock = None

    def _send(self, kind, data):
        self.sent[kind] += 1
        self.sock.deliver(data)

    def received(self, sock, data, addr):
        i, n = 0, len(data)
        while i < n:
            if self._state == 0:            # the fixed header's first byte
                self._first = data[i]
                self._len = self._shift = self._n = 0
                self._state = 1
                i += 1
            elif self._state == 1:          # the remaining length, 7 bits a byte
                b = data[i]
                i += 1
                self._len |= (b & 0x7F) << self._shift
                self._shift += 7
                if not b & 0x80:
                    self._state = 2
                    if not self._len:
                        self._packet()
            else:                           # the body: its head kept, the rest counted
                k = min(n - i, self._len - self._n)
                room = len(self._head) - self._n
                if room > 0:
                    c = min(room, k)
                    self._head[self._n:self._n + c] = data[i:i + c]
                self._n += k
                i += k
                if self._n == self._len:
                    self._packet()

    def _packet(self):
        self._state = 0
        kind, h = self._first >> 4, self._head
        self.got[kind] += 1
        if kind == 1:       # CONNECT
            self._send(2, b"\x20\x02\x00\x00")
        elif kind == 8:     # SUBSCRIBE: packet id, then (filter, qos) pairs
            ack = bytearray(h[0:2])
            at = 2
            while at < self._len:
                at += 2 + (h[at] << 8 | h[at + 1]) + 1
                ack.append(h[at - 1])
            self._send(9, bytes((0x90, len(ack))) + ack)
        elif kind == 3 and self._first & 6:   # PUBLISH, QoS 1: its packet id follows the topic
            at = 2 + (h[0] << 8 | h[1])
            self._send(4, b"\x40\x02" + bytes(h[at:at + 2]))
        elif kind == 12:    # PINGREQ
            self._send(13, b"\xd0\x00")

    def publish(self, topic, path, pid=1):
        """One PUBLISH (QoS 1) of the file at path on topic to the connected gateway; the
        file is read straight into the reader's buffer (the socket holds its head only)."""
        import os
        size = os.stat(path)[6]
        head = publish_head(0x32, topic, 2 + size)
        head.append(pid >> 8)
        head.append(pid & 0xFF)
        self.sent[3] += 1
        self.sock.deliver(bytes(head))
        self.sock.deliver((open(path, "rb"), size))


class _UdpPeer:
    # a datagram server on a stand-in socket's port: no connection to open or close;
    # `answered` counts its replies
    def __init__(self):
        self.answered = 0

    def opened(self, sock):
        pass

    def closed(self, sock):
        pass


class SntpServer(_UdpPeer):
    """Answers each request (RFC 4330) with UNIX_NOW, echoing its transmit timestamp."""

    def received(self, sock, data, addr):
        import struct
        r = bytearray(48)
        r[0] = 0x24          # LI 0, version 4, mode 4 (server)
        r[1] = 2             # stratum 2
        r[24:32] = data[40:48]
        struct.pack_into(">II", r, 40, UNIX_NOW + 2208988800, 0)
        self.answered += 1
        sock.deliver(bytes(r), addr)


class DnsResolver(_UdpPeer):
    """Answers each A query (RFC 1035) with SNTP_ADDRESS (one record, TTL 3600)."""

    def received(self, sock, data, addr):
        # the query's id, then flags QR RD RA, one question (echoed), one answer: a pointer
        # to the question's name, A, IN, the TTL, 4 bytes of address
        out = bytearray(data[0:2]) + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + data[12:]
        out += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + bytes(SNTP_ADDRESS)
        self.answered += 1
        sock.deliver(bytes(out), addr)


def field_ready(link, clock):
    """The condition for "ready" in the field: the MQTT client online, its subscriptions
    SUBACKed and everything it published PUBACKed; the clock set by SNTP."""
    return lambda: (link.client.state == "online" and broker.sent[9] >= 1 and not link.client.pending()
                    and clock.source == "sntp")


def _urandom(n):
    import random
    return bytes(random.getrandbits(8) for _ in range(n))


import os as _os  # noqa: E402

if not hasattr(_os, "urandom"):
    # an ESP32's os has urandom (its RNG: the SNTP nonce, the DNS query id); the port's not
    _os.urandom = _urandom

import socket as _socket  # noqa: E402 - the stand-in (standins/socket.py)

broker = MqttBroker()
sntp = SntpServer()
resolver = DnsResolver()
_socket.serve(BROKER_PORT, broker)
_socket.serve(123, sntp)
_socket.serve(53, resolver)
