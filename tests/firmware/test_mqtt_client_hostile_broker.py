# The MQTT client against a broker or network that misbehaves in the ways review r13 found it
# mishandled: a broker address that drops SYNs (each timed-out dial used to leave its socket
# open on MicroPython), a broker stream that stalls while our QoS 0 log lines still go out
# (they used to stop the keepalive ping, so the dead link went unnoticed), a malformed PUBLISH
# that a persistent session redelivers first at every connect. Its brokers are asyncio servers
# answering with raw bytes, under CPython and MicroPython.
# mp-timeout: 180
import asyncio
import random

from ppmid.mqtt import packets as p
from ppmid.mqtt.client import MQTTClient, tls_connector
from ppmid.mqtt.link_host import stats

EUI = "00DB1234567890A0"
CMD = "ppmid/v1/" + EUI + "/cmd"


def _open_fds():
    import os
    try:
        return len(os.listdir("/proc/self/fd"))
    except AttributeError:  # MicroPython's os
        return len(list(os.ilistdir("/proc/self/fd")))


def _blackhole():
    # a port whose accept queue is full: further SYNs are dropped and a connect hangs, as to
    # a broker address behind a firewall that drops them. Returns (port, sockets to close).
    import socket
    for _ in range(50):
        port = 20000 + random.getrandbits(13)
        srv = socket.socket()
        try:
            srv.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            srv.close()
            continue
        srv.listen(0)
        fill = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            except OSError:
                pass
            fill.append(s)
        return port, [srv] + fill
    raise AssertionError("no free port")


class _Wlan:
    """The board's WLAN as the connector sees it: it tracks each dial's socket (to close it
    when Wi-Fi drops) until the socket is untracked."""

    def __init__(self):
        self.tracked = []
        self.ever = 0

    def track(self, sock):
        self.tracked.append(sock)
        self.ever += 1

    def untrack(self, sock):
        if sock in self.tracked:
            self.tracked.remove(sock)


async def test_a_dial_that_times_out_closes_and_untracks_its_socket():
    # review r13-2: the connect timeout cancels the dial while it waits for the SYN's answer;
    # MicroPython's dial (ppmid.mqtt.handshake._mp_open_stream) left that socket open and
    # tracked, one per attempt: an ESP32's lwIP has ~10 sockets
    import gc
    port, keep = _blackhole()
    wlan = _Wlan()
    c = MQTTClient(EUI, tls_connector("127.0.0.1", port, track=wlan.track, wlan=wlan),
                   connect_timeout=0.2, backoff_min=0.05, backoff_max=0.1)
    before = _open_fds()
    task = asyncio.create_task(c.run())
    try:
        for _ in range(500):
            if stats(c)["connect_failures"] >= 5:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:
            pass
    gc.collect()
    after = _open_fds()
    for s in keep:
        s.close()
    fails = stats(c)["connect_failures"]
    assert fails >= 5, (fails, c.last_error)
    assert "E_MQTT_TIMEOUT" in c.last_error and "connect" in c.last_error, c.last_error
    # each timed-out dial's socket is closed (the cancelled run's last dial at most still open
    # on CPython until its transport's close runs) and none stays tracked
    assert after - before <= 1, (before, after, fails)
    assert wlan.tracked == [], len(wlan.tracked)


class RawBroker:
    """A broker answering with raw bytes: CONNACK (session present), SUBACK (QoS 1 granted)
    and PINGRESP, PUBACK for our QoS 1; with `stall` set it reads on and answers nothing
    (its side of the stream stalled, or a silent network loss while our writes still go
    into the send buffer). `on_suback(w)`: what it writes after the SUBACK (its queue)."""

    def __init__(self):
        self.stall = False
        self.pingreqs = 0
        self.qos0 = 0
        self.connections = 0
        self.pubacks = []   # packet ids the client PUBACKed
        self.published = []  # (topic, payload) of the client's QoS 1 PUBLISHes
        self.on_suback = None

    async def start(self):
        for _ in range(50):
            self.port = 30000 + random.getrandbits(14)
            try:
                self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
                return self
            except OSError:
                pass
        raise AssertionError("no free port")

    async def _read(self, r):
        first = (await r.readexactly(1))[0]
        n, shift = 0, 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return first, (await r.readexactly(n) if n else b"")

    async def _serve(self, r, w):
        self.connections += 1
        try:
            while True:
                first, body = await self._read(r)
                kind = first & 0xF0
                if kind == p.PINGREQ:
                    self.pingreqs += 1
                elif kind == p.PUBLISH and not first & 6:
                    self.qos0 += 1
                elif kind == p.PUBACK:
                    self.pubacks.append((body[0] << 8) | body[1])
                elif kind == p.PUBLISH:
                    topic, payload = p.parse_publish(first, body)[:2]
                    self.published.append((topic, bytes(payload)))
                if self.stall:
                    continue
                if kind == p.CONNECT:
                    w.write(b"\x20\x02\x01\x00")
                elif kind == 0x80:
                    w.write(b"\x90\x03" + body[:2] + b"\x01")
                    if self.on_suback is not None:
                        self.on_suback(w)
                elif kind == p.PINGREQ:
                    w.write(b"\xd0\x00")
                elif kind == p.PUBLISH and first & 6:
                    w.write(p.puback((body[-2] << 8) | body[-1]))
                await w.drain()
        except Exception:
            pass

    def close(self):
        self.server.close()


async def _stopped(c, task):
    await c.stop()
    task.cancel()
    try:
        await task
    except BaseException:
        pass


async def _log_lines_while(c, b, seconds):
    # a QoS 0 log line every 0.25 s (the app's log lines: one each 10 s at most against its
    # keepalive/2 of 15 s); returns (link losses, PINGREQs) at the end. wait=False: a line
    # is not waited for while the link is down (no broker answers a CONNECT then)
    for _ in range(int(seconds * 4)):
        await c.publish("ppmid/v1/" + EUI + "/log", b'{"level":"warning"}', 0, wait=False)
        await asyncio.sleep(0.25)
    return stats(c)["link_losses"], b.pingreqs


async def test_qos0_log_lines_do_not_stop_the_keepalive_ping_from_catching_a_dead_broker_stream():
    # review r13-1: every write refreshed "last sent", so while QoS 0 log lines flowed no
    # PINGREQ went out and a broker whose side went silent was never noticed: the gateway
    # stayed `online` and deaf. Now it pings after keepalive/2 without receiving too, and
    # the unanswered ping drops the link (keepalive 2 s: within 1 + 1 s of ack_timeout).
    b = await RawBroker().start()
    lines = []
    c = MQTTClient(EUI, tls_connector("127.0.0.1", b.port), keepalive=2, ack_timeout=1,
                   backoff_min=0.05, backoff_max=0.2, log=lines.append)
    c.subscribe(CMD, 1)
    task = asyncio.create_task(c.run())
    try:
        for _ in range(250):
            if c.state == "online":
                break
            await asyncio.sleep(0.02)
        assert c.state == "online"
        # a live broker: the log lines and the pings it answers keep the one connection
        losses, pings = await _log_lines_while(c, b, 3)
        assert losses == 0 and stats(c)["connects"] == 1, (losses, stats(c))
        assert pings >= 1, pings   # the log lines did not stop the pings
        b.stall = True
        seen = (b.qos0, pings)
        losses, pings = await _log_lines_while(c, b, 4)
        assert b.qos0 > seen[0]    # the log lines went on
        assert pings > seen[1] and losses >= 1, (losses, pings, c.state, lines)
        assert [x for x in lines if "no PINGRESP within 1s" in x], lines
    finally:
        await _stopped(c, task)
        b.close()


_T = b"\x00\x1d" + CMD.encode()


def _queued(bad):
    # the broker's queue for the gateway, redelivered at every connect after the SUBACK:
    # a malformed PUBLISH first, then a command (QoS 1, DUP, packet id 7) behind it
    good = _T + b"\x00\x07" + b'{"id":"next"}'

    def write(w):
        w.write(bad)
        w.write(bytes((0x3A, len(good))) + good)
    return write


async def _intake_on(b, seconds=None, until=None):
    # a gateway's client and intake (an accept hook that takes every command) against b;
    # returns (client, intake, commands accepted, console lines) once until() holds or
    # after `seconds`
    from ppmid.mqtt.intake import Intake
    lines = []
    taken = []

    async def accept(env, via):
        taken.append(env.id)

    c = MQTTClient(EUI, tls_connector("127.0.0.1", b.port), keepalive=30, ack_timeout=1,
                   backoff_min=0.05, backoff_max=0.2, log=lines.append)
    intake = Intake(c, EUI, accept, 8192)
    task = asyncio.create_task(c.run())
    try:
        for _ in range(int((seconds or 10) * 50)):
            if until is not None and until():
                break
            await asyncio.sleep(0.02)
    finally:
        await _stopped(c, task)
        b.close()
    return c, intake, taken, lines


async def test_a_malformed_queued_publish_with_a_usable_packet_id_is_refused_and_acked():
    # review r13-4: a PUBLISH the codec refuses (here a topic that is not UTF-8) dropped the
    # link without a PUBACK; the persistent session redelivered it first at every connect,
    # so the link flapped for ever and the command behind it never got through. Now it is
    # PUBACKed and refused on rsp ("id": null, E_MQTT_PACKET), and the command behind it is
    # handled on the same connection.
    import json
    b = await RawBroker().start()
    bad = b"\x00\x03a\xffb" + b"\x00\x05" + b'{"id":"bad"}'
    b.on_suback = _queued(bytes((0x32, len(bad))) + bad)
    c, intake, taken, lines = await _intake_on(b, until=lambda: 7 in b.pubacks)
    assert b.pubacks[:2] == [5, 7], (b.pubacks, lines[-4:])
    assert b.connections == 1 and stats(c)["link_losses"] == 0, (b.connections, lines[-4:])
    assert stats(c)["malformed"] == 1
    rsp = [json.loads(m) for t, m in b.published if t == intake.topics.rsp]
    assert rsp and rsp[0]["id"] is None and rsp[0]["status"] == "rejected", rsp
    assert rsp[0]["error"]["code"] == "E_MQTT_PACKET" and "UTF-8" in rsp[0]["error"]["message"], rsp
    # the command behind it reached the intake (refused by the envelope checks: it has no
    # gbcs; what matters is that it was read and answered by its id)
    assert [x["id"] for x in rsp[1:]] == ["next"], rsp


async def test_a_malformed_queued_publish_without_a_usable_packet_id_drops_the_link_counted_and_said():
    # review r13-4: no PUBACK can name a PUBLISH with packet id 0, one whose topic runs past
    # the packet, or QoS 2 on our QoS 1 subscription: the link drops as before (the broker
    # redelivers it), each time counted (stats "malformed") and on the console, backing off
    cases = (("packet id 0", bytes((0x32, len(_T) + 4)) + _T + b"\x00\x00{}"),
             ("QoS 2", bytes((0x34, len(_T) + 4)) + _T + b"\x00\x05{}"),
             ("topic past the packet", b"\x32\x06\x00\x40ab\x00\x05"))
    for name, bad in cases:
        b = await RawBroker().start()
        b.on_suback = _queued(bad)
        c, intake, taken, lines = await _intake_on(b, until=lambda: b.connections >= 4)
        assert b.connections >= 4, (name, b.connections, lines[-4:])
        assert stats(c)["malformed"] >= 3 and stats(c)["link_losses"] >= 3, (name, stats(c))
        said = [x for x in lines if "E_MQTT_PACKET" in x]
        assert len(said) >= 3, (name, lines[-4:])
        assert 7 not in b.pubacks and c.backoff_delay >= 0.2, (name, b.pubacks, c.backoff_delay)


async def test_a_retained_command_is_refused_and_acked_not_handed_to_the_relay():
    # review r13-3: a command published retained is handed over again (RETAIN set) at every
    # SUBSCRIBE, so at every connect, however old: each time the relay answered it again
    # (`rejected` E_REPLAY after its `response`). Now the intake never gets it: it is
    # refused on rsp (E_RETAINED, naming the topic to clear) and PUBACKed; a command not
    # retained behind it is handled as ever.
    import json
    b = await RawBroker().start()
    kept = _T + b"\x00\x09" + b'{"id":"old"}'
    b.on_suback = _queued(bytes((0x33, len(kept))) + kept)   # QoS 1, RETAIN, packet id 9
    c, intake, taken, lines = await _intake_on(b, until=lambda: 7 in b.pubacks)
    assert b.pubacks[:2] == [9, 7], (b.pubacks, lines[-4:])
    assert b.connections == 1 and stats(c)["link_losses"] == 0, (b.connections, lines[-4:])
    rsp = [json.loads(m) for t, m in b.published if t == intake.topics.rsp]
    assert rsp and rsp[0]["id"] is None and rsp[0]["status"] == "rejected", rsp
    assert rsp[0]["error"]["code"] == "E_RETAINED" and CMD in rsp[0]["error"]["message"], rsp
    assert [x["id"] for x in rsp[1:]] == ["next"], rsp   # the command behind it: read and answered
    assert stats(c)["malformed"] == 0
