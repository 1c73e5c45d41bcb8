"""Fleet load on loopback: N simulated gateways and one DCC User on the project's mosquitto
(TLS, client certificates, per-gateway ACL: host_tools/broker.py), for `make bench`
(bench/bench_fleet.py) and its test.

A simulated gateway is not a board: it is an MQTT 3.1.1 client over TLS with its own
certificate (CN = its EUI-64) that speaks topic contract v1 (ppmid.mqtt.contract): it
subscribes to its `cmd` topic with QoS 1 and answers every command the way the gateway
does when the meter answers at once: `accepted`, then `response` (QoS 1, on its `rsp`
topic); a payload that is not a command JSON gets `rejected` (E_ENVELOPE). It does not
check envelope MACs or run a relay: the figures are those of the broker and the DCC side.
Packets are encoded and parsed by the firmware's own codec (ppmid.mqtt.packets, handshake).

The DCC User publishes signed commands (QoS 1) to every gateway in turn, twice: as fast as
a window of commands in flight allows (throughput), then at a fixed rate below that
(latency: each command timed from its PUBLISH to its `response` status; under the
throughput load the latency would only be window / throughput).
Everything runs in one asyncio loop in this process, beside the broker, on one machine:
the client side costs CPU the broker would otherwise have (docs/emulate.md, "Fleet").

    with FleetBroker(state_dir, 1000) as fb:
        figures = asyncio.run(run_fleet(fb, n=100, commands=2000))
"""
import asyncio
import json
import os
import ssl
import time

from host_tools import mpcompat

mpcompat.install()

from ppmid.mqtt import packets as P  # noqa: E402  (firmware modules, after mpcompat)
from ppmid.mqtt import handshake as H  # noqa: E402  (CONNECT/CONNACK, SUBSCRIBE/SUBACK)
from ppmid.mqtt import packets_host  # noqa: E402  (a whole PUBLISH as bytes)
from ppmid.mqtt.contract import Topics, ROOT, status_json  # noqa: E402

DCC_USER = "dcc-user-fleet"
KEEPALIVE_S = 60

from ppmid.gbcs import build as _build  # noqa: E402

# what a simulated gateway returns as the meter's response, and the DCC User's command body
# (a small General-Signing message: the simulated gateways do not decode it)
RESPONSE = _build.build_signed(2, 1, bytes.fromhex("00DB1234567890A0"), bytes.fromhex("90B3D51F30010000"),
                               0x0007, b"\x00")


class FleetError(Exception):
    """A fleet load run that cannot start or finish."""

    code = "E_FLEET_LOAD"


def gateway_euis(n):
    """n distinct EUI-64s for simulated gateways (16 upper-case hex digits)."""
    return ["00DBF1EE%08X" % i for i in range(n)]


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    i = int(k)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (k - i)


def rss_bytes(pid):
    """Resident set of a process (Linux /proc), bytes; None when it cannot be read."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    """User + system CPU time a process has used (Linux /proc), seconds; None if unknown."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class FleetBroker:
    """The project's broker (engine "mosquitto" or "rabbitmq") with certificates for up
    to `max_gateways` simulated gateways and the fleet's DCC User (issued once; a later
    start reuses them)."""

    def __init__(self, state_dir, max_gateways, engine="mosquitto"):
        from host_tools.broker import Broker
        self.state_dir = os.path.abspath(state_dir)
        self.euis = gateway_euis(max_gateways)
        self.broker = Broker(self.state_dir, gateways=self.euis, users=(DCC_USER,), engine=engine)
        self.info = None

    def start(self):
        self.info = self.broker.start()
        return self

    def stop(self):
        self.broker.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self):
        return self.info["pid"]

    def ssl_context(self, ident):
        from host_tools.broker import client_paths
        p = client_paths(self.state_dir, ident)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=p["ca_pem"])
        ctx.load_cert_chain(p["pem"], p["key_pem"])
        return ctx


class Conn:
    """One MQTT connection: asyncio TLS streams, packets from ppmid.mqtt.packets."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self._pid = 0

    @classmethod
    async def open(cls, info, ctx, client_id, timeout=30):
        r, w = await asyncio.wait_for(asyncio.open_connection(
            info["host"], info["port"], ssl=ctx, server_hostname=info["server_hostname"]), timeout)
        c = cls(r, w)
        w.write(H.connect(client_id, KEEPALIVE_S, clean_session=True))
        first, body = await asyncio.wait_for(c.read(), timeout)
        if first != P.CONNACK:
            raise FleetError("%s: expected CONNACK, got 0x%02X" % (client_id, first))
        rc = H.parse_connack(body)[1]
        if rc:
            raise FleetError("%s: broker refused the connection: %s" % (client_id, H.CONNACK_TEXT.get(rc, rc)))
        return c

    async def read(self):
        """(first byte, body bytes) of the next packet."""
        first = (await self.r.readexactly(1))[0]
        n = shift = 0
        for _ in range(4):
            b = (await self.r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            raise FleetError("malformed remaining length")
        return first, (await self.r.readexactly(n)) if n else b""

    def next_pid(self):
        self._pid = self._pid % 0xFFFF + 1
        return self._pid

    async def subscribe(self, topic, timeout=30):
        self.w.write(H.subscribe(self.next_pid(), [(topic, 1)]))
        while True:
            first, body = await asyncio.wait_for(self.read(), timeout)
            if first == P.SUBACK:
                if H.parse_suback(body)[1] != [1]:
                    raise FleetError("subscription to %s refused" % topic)
                return

    def publish(self, topic, payload):
        self.w.write(packets_host.publish(topic, payload, 1, pid=self.next_pid()))

    async def close(self):
        try:
            self.w.write(P.DISCONNECT_PACKET)
            await self.w.drain()
            self.w.close()
            await self.w.wait_closed()
        except (OSError, ssl.SSLError, ConnectionError):
            pass


class SimGateway:
    """A simulated gateway (module docstring): counts what it answered."""

    def __init__(self, eui):
        self.eui = eui
        self.topics = Topics(eui)
        self.conn = None
        self.answered = 0
        self.rejected = 0
        self.task = None

    async def start(self, fb):
        self.conn = await Conn.open(fb.info, fb.ssl_context(self.eui), self.eui)
        await self.conn.subscribe(self.topics.cmd)
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self):
        c = self.conn
        while True:
            first, body = await c.read()
            if first & 0xF0 != P.PUBLISH:
                continue                    # PUBACKs of our statuses, PINGRESP
            topic, payload, qos, _, _, pid = P.parse_publish(first, body)
            if qos:
                c.w.write(P.puback(pid))
            t0 = time.time()
            try:
                cmd = json.loads(bytes(payload))
                id = cmd["id"]
                if not isinstance(id, str) or not isinstance(cmd.get("gbcs"), str):
                    raise ValueError("not a command")
            except (ValueError, KeyError, TypeError):
                self.rejected += 1
                c.publish(self.topics.rsp, status_json(None, "rejected", 0, error={
                    "code": "E_ENVELOPE", "message": "not a command JSON"}))
                continue
            c.publish(self.topics.rsp, status_json(id, "accepted", 0, via="mqtt", at=int(t0)))
            c.publish(self.topics.rsp, status_json(id, "response", int((time.time() - t0) * 1000), RESPONSE,
                                                   via="mqtt", at=int(t0), late=False))
            self.answered += 1

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing anyway
                pass
        if self.conn:
            await self.conn.close()


class DccUser:
    """Publishes commands to the gateways and times each to its `response` status."""

    def __init__(self, key):
        self.key = key
        self.conn = None
        self.sent = {}          # id -> monotonic time of its PUBLISH
        self.latency_ms = []
        self.statuses = {}      # id -> [status, ...]
        self.unanswered = set()
        self.rejected = 0
        self.last_answer = None
        self._room = None
        self.task = None

    async def start(self, fb):
        self.conn = await Conn.open(fb.info, fb.ssl_context(DCC_USER), DCC_USER + "/%d" % os.getpid())
        await self.conn.subscribe(ROOT + "+/rsp")
        self.task = asyncio.ensure_future(self._listen())

    async def _listen(self):
        c = self.conn
        while True:
            first, body = await c.read()
            if first & 0xF0 != P.PUBLISH:
                continue
            _, payload, qos, _, _, pid = P.parse_publish(first, body)
            if qos:
                c.w.write(P.puback(pid))
            m = json.loads(bytes(payload))
            id, status = m.get("id"), m.get("status")
            if status == "rejected":
                self.rejected += 1
            if id not in self.sent:
                continue
            self.statuses.setdefault(id, []).append(status)
            if status == "response" and id in self.unanswered:
                self.unanswered.discard(id)
                self.last_answer = time.monotonic()
                self.latency_ms.append((self.last_answer - self.sent[id]) * 1000.0)
                self._room.release()

    async def run(self, gateways, commands, window, timeout_s, rate=None, prefix="t"):
        """Send `commands` commands (ids prefix + n) round-robin to `gateways` (EUIs), at
        most `window` unanswered at once, and at `rate` commands/s if given (else as fast
        as the window allows). Returns when all are answered or timeout_s passed:
        (latencies in ms of this run's answered commands, seconds from the first PUBLISH
        to the last answer, commands left unanswered)."""
        from host_tools.mqtt_tools import command_json
        self._room = asyncio.Semaphore(window)
        first = len(self.latency_ms)
        gbcs = RESPONSE   # any GBCS bytes: the simulated gateways do not decode them
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        mine = set()
        for i in range(commands):
            if rate:
                wait = t0 + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._room.locked():
                try:
                    await asyncio.wait_for(self._room.acquire(), left)
                except asyncio.TimeoutError:
                    break
            else:
                await self._room.acquire()      # free: returns at once, no task switch
            eui = gateways[i % len(gateways)]
            id = "%s%d" % (prefix, i)
            payload = command_json(self.key, id, gbcs)
            self.sent[id] = time.monotonic()
            self.unanswered.add(id)
            mine.add(id)
            self.conn.publish(Topics(eui).cmd, payload)
            if i % 64 == 0:
                await self.conn.w.drain()
        while self.unanswered & mine and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        elapsed = (self.last_answer or t0) - t0
        return self.latency_ms[first:], elapsed, len(self.unanswered & mine)

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.conn:
            await self.conn.close()


async def _bounded(coros, limit):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def run_fleet(fb, n, commands, window=200, rate=500, paced=None, timeout_s=60.0, connect_parallel=32,
                    extra=None):
    """Connect n simulated gateways and the DCC User to fb's broker, then two loads:
    throughput (`commands` commands, `window` in flight, ids t0..) and latency (`paced`
    commands, default commands // 2, at `rate` commands/s, ids p0..); disconnect. Returns
    the figures: commands, answered, lost, commands_per_s (throughput load), latency_ms
    p50/p95/max (paced load), connect_s, broker_rss_bytes (idle before, with n connected,
    after the loads), rejected, statuses (id -> statuses seen). extra: optional coroutine
    fn(dcc, gateways) run before the loads (the test sends a malformed command with it)."""
    if n > len(fb.euis):
        raise FleetError("the broker has certificates for %d gateways, not %d" % (len(fb.euis), n))
    key = os.urandom(32)     # the simulated gateways do not check MACs
    paced = commands // 2 if paced is None else paced
    rss_idle = rss_bytes(fb.pid)
    gws = [SimGateway(e) for e in fb.euis[:n]]
    dcc = DccUser(key)
    t0 = time.monotonic()
    try:
        await _bounded([g.start(fb) for g in gws], connect_parallel)
        await dcc.start(fb)
        connect_s = time.monotonic() - t0
        rss_connected = rss_bytes(fb.pid)
        if extra is not None:
            await extra(dcc, gws)
        euis = [g.eui for g in gws]
        end = time.monotonic() + timeout_s
        cpu0 = cpu_seconds(fb.pid)
        tput, elapsed, lost = await dcc.run(euis, commands, window, end - time.monotonic())
        cpu1 = cpu_seconds(fb.pid)
        lat, _, lost_paced = await dcc.run(euis, paced, max(window, 1000), max(1.0, end - time.monotonic()),
                                           rate=rate, prefix="p")
        rss_loaded = rss_bytes(fb.pid)
    finally:
        await dcc.stop()
        await _bounded([g.stop() for g in gws], 64)
    return {"gateways": n, "commands": len(dcc.sent), "answered": len(dcc.latency_ms), "lost": lost + lost_paced,
            "commands_per_s": len(tput) / elapsed if elapsed > 0 else None,
            # the broker's CPU time over the throughput load's time: 1.0 = one core busy
            "broker_cpu_share": (cpu1 - cpu0) / elapsed if None not in (cpu0, cpu1) and elapsed > 0 else None,
            "rate": rate, "paced": paced,
            "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "max": max(lat) if lat else None},
            "connect_s": connect_s,
            "broker_rss_bytes": {"idle": rss_idle, "connected": rss_connected, "loaded": rss_loaded},
            "rejected": dcc.rejected, "gateway_answered": sum(g.answered for g in gws),
            "statuses": dcc.statuses}
