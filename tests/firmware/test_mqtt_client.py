# The asyncio MQTT client against a small in-process fake broker (built on the codec) that
# can withhold PUBACKs, ignore PINGREQs, refuse connections and drop the link, so that the
# QoS 1, keepalive and reconnect paths are exercised under CPython and MicroPython.
# mp-timeout: 180
import asyncio
import random

from ppmid.mqtt import packets as p
from ppmid.mqtt import packets_host
from ppmid.mqtt.handshake import connect as connect_packet
from ppmid.mqtt.client import MQTTClient, tls_connector
from ppmid.mqtt.link_host import stats

WAIT = 20  # seconds: a generous bound for "eventually", never a timing assertion


async def _until(cond, what):
    for _ in range(WAIT * 50):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class FakeBroker:
    def __init__(self):
        self.port = 0
        self.server = None
        self.received = []        # (connection number, first byte, body bytes)
        self.connections = 0
        self.withhold_pubacks = 0  # client PUBLISHes to leave unacknowledged
        self.answer_pings = True
        self.connack_rc = 0
        self.suback_code = 1      # granted QoS (or 0x80 failure) per filter
        self.outbox = []          # (topic, payload, pid) QoS 1 to deliver, redelivered until acked
        self.acked = []           # pids the client PUBACKed
        self.writer = None
        self.error = None

    async def start(self):
        for _ in range(50):
            self.port = 30000 + random.getrandbits(14)
            try:
                self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
                return self
            except OSError:
                pass
        raise AssertionError("no free port")

    async def stop(self):
        self.drop()
        self.server.close()
        await self.server.wait_closed()

    def drop(self):
        w = self.writer
        if w is not None:
            self.writer = None
            w.close()
            if hasattr(w, "s"):  # MicroPython: Stream.close() leaves the socket open
                w.s.close()
        self.error = None

    def of(self, kind, conn=None):
        return [(c, f, b) for (c, f, b) in self.received if f & 0xF0 == kind & 0xF0 and (conn is None or c == conn)]

    async def _read(self, r):
        first = (await r.readexactly(1))[0]
        buf = b""
        while True:
            buf += await r.readexactly(1)
            got = packets_host.decode_length(buf)
            if got is not None:
                break
        body = await r.readexactly(got[0]) if got[0] else b""
        return first, body

    async def deliver(self, w):
        for topic, payload, pid in self.outbox:
            if pid not in self.acked:
                # DUP on every delivery after the first connection (a redelivery)
                w.write(packets_host.publish(topic, payload, qos=1, pid=pid, dup=self.connections > 1))
        await w.drain()

    async def _serve(self, r, w):
        self.connections += 1
        conn = self.connections
        self.writer = w
        try:
            while True:
                first, body = await self._read(r)
                self.received.append((conn, first, body))
                kind = first & 0xF0
                if kind == p.CONNECT:
                    w.write(bytes((0x20, 2, 0, self.connack_rc)))
                    await w.drain()
                    if self.connack_rc:
                        break
                    await self.deliver(w)
                elif kind == p.SUBSCRIBE & 0xF0:
                    n, pos = 0, 2
                    while pos < len(body):
                        pos += 2 + ((body[pos] << 8) | body[pos + 1]) + 1
                        n += 1
                    w.write(bytes((0x90, 2 + n)) + body[:2] + bytes((self.suback_code,)) * n)
                    await w.drain()
                elif kind == p.PUBLISH:
                    topic, payload, qos, retain, dup, pid = p.parse_publish(first, body)
                    if qos and self.withhold_pubacks:
                        self.withhold_pubacks -= 1
                    elif qos:
                        w.write(p.puback(pid))
                        await w.drain()
                elif kind == p.PUBACK:
                    self.acked.append(p.parse_packet_id(body))
                elif kind == p.PINGREQ:
                    if self.answer_pings:
                        w.write(b"\xd0\x00")
                        await w.drain()
                elif kind == p.DISCONNECT:
                    break
        except Exception as exc:
            self.error = exc
        try:
            w.close()
            await w.wait_closed()
        except Exception:
            pass


def _client(broker, **kw):
    opts = {"keepalive": 30, "ack_timeout": 0.5, "backoff_min": 0.05, "backoff_max": 0.2}
    opts.update(kw)
    return MQTTClient("00DB1234567890A0", tls_connector("127.0.0.1", broker.port), **opts)


async def _stop(client, task):
    # the client's DISCONNECT, then its run task ended, whatever it was doing
    await client.stop()
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except BaseException:
        pass


async def _with(broker, client, body):
    task = asyncio.create_task(client.run())
    try:
        await body()
    finally:
        await _stop(client, task)
        await broker.stop()


async def test_connect_packet_and_resubscribe_on_every_connect():
    b = await FakeBroker().start()
    c = _client(b, will=("ppmid/v1/00DB1234567890A0/state", b'{"state":"offline"}', 1, True))
    c.subscribe("ppmid/v1/00DB1234567890A0/cmd", 1)

    async def body():
        await _until(lambda: len(b.of(p.SUBSCRIBE)) == 1, "first SUBSCRIBE")
        connect = b.of(p.CONNECT)[0][2]
        assert connect == connect_packet("00DB1234567890A0", 30, False, c.will)[2:]
        assert connect[7] & 0x02 == 0  # clean session false
        b.drop()
        await _until(lambda: len(b.of(p.SUBSCRIBE)) == 2, "SUBSCRIBE after reconnect")
        assert b.of(p.SUBSCRIBE)[1][0] == 2
        assert b.of(p.SUBSCRIBE)[1][2][2:] == b"\x00\x1dppmid/v1/00DB1234567890A0/cmd\x01"
        await _until(lambda: c.state == "online", "online again")
        assert stats(c)["connects"] == 2 and stats(c)["link_losses"] == 1
    await _with(b, c, body)


async def test_qos1_publish_is_resent_with_dup_when_puback_withheld():
    b = await FakeBroker().start()
    b.withhold_pubacks = 1
    c = _client(b)

    async def body():
        await _until(lambda: c.state == "online", "online")
        await c.publish("ppmid/v1/00DB1234567890A0/rsp", b'{"id":"a"}', qos=1)
        pubs = b.of(p.PUBLISH)
        assert len(pubs) == 2, pubs
        (c1, f1, b1), (c2, f2, b2) = pubs
        assert c1 == 1 and c2 == 2          # resent on the new connection
        assert f1 & 0x08 == 0 and f2 & 0x08  # DUP only on the resend
        assert b1 == b2                      # same packet id, topic and payload
        assert stats(c)["retransmits"] == 1 and stats(c)["published"] == 1
        assert "no PUBACK" in c.last_error
    await _with(b, c, body)


async def test_inflight_survives_broker_drop_in_order():
    b = await FakeBroker().start()
    b.withhold_pubacks = 3
    c = _client(b, ack_timeout=30)

    async def body():
        await _until(lambda: c.state == "online", "online")
        for i in range(3):
            assert await c.publish("t/x", b"m%d" % i, qos=1, wait=False)
        await _until(lambda: len(b.of(p.PUBLISH)) == 3, "3 publishes")
        b.drop()
        await _until(lambda: c.pending() == 0, "all acknowledged after reconnect")
        again = [p.parse_publish(f, body) for (conn, f, body) in b.of(p.PUBLISH, 2)]
        assert [bytes(x[1]) for x in again] == [b"m0", b"m1", b"m2"]
        assert all(x[4] for x in again)  # dup
    await _with(b, c, body)


async def test_incoming_qos1_acked_only_after_handler_returns():
    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b'{"id":"x"}', 77))
    gate = asyncio.Event()
    seen = []

    async def handler(topic, payload, qos, dup):
        seen.append((topic, bytes(payload), qos, dup))
        await gate.wait()

    c = _client(b, handler=handler)

    async def body():
        await _until(lambda: len(seen) == 1, "delivery")
        for _ in range(10):
            await asyncio.sleep(0.02)
            assert b.acked == []  # handler has not returned: no PUBACK yet
        gate.set()
        await _until(lambda: b.acked == [77], "PUBACK after the handler")
        assert seen == [("ppmid/v1/00DB1234567890A0/cmd", b'{"id":"x"}', 1, False)]
    await _with(b, c, body)


async def test_handler_failure_withholds_puback_and_broker_redelivers():
    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"payload", 9))
    calls = []

    async def handler(topic, payload, qos, dup):
        calls.append(dup)
        if len(calls) == 1:
            raise OSError(28, "journal full")

    c = _client(b, handler=handler)
    dead = []
    kill = c._kill
    c._kill = lambda reason: (dead.append(reason), kill(reason))

    async def body():
        await _until(lambda: b.acked == [9], "PUBACK after redelivery")
        assert calls == [False, True]
        assert stats(c)["pubacks_withheld"] == 1 and stats(c)["connects"] == 2
        # why the link was dropped, in a whole sentence (its text is mqtt/client_errors.py's,
        # loaded for the failure and dropped again)
        assert dead[0].startswith("handler failed for packet 9, PUBACK withheld: "), dead
        assert "journal full" in dead[0]
        import sys
        assert "ppmid.mqtt.client_errors" not in sys.modules
    await _with(b, c, body)


async def test_ping_when_idle_and_dead_link_detected():
    b = await FakeBroker().start()
    c = _client(b, keepalive=1)

    async def body():
        await _until(lambda: len(b.of(p.PINGREQ)) >= 2, "PINGREQs while idle")
        assert stats(c)["connects"] == 1  # answered pings keep the link
        b.answer_pings = False
        await _until(lambda: stats(c)["connects"] == 2, "reconnect after an unanswered ping")
        assert stats(c)["link_losses"] >= 1
        b.answer_pings = True
    await _with(b, c, body)


async def test_refused_connection_backs_off_and_reports():
    b = await FakeBroker().start()
    b.connack_rc = 5
    c = _client(b)

    async def body():
        await _until(lambda: stats(c)["connect_failures"] >= 3, "repeated refusals")
        assert stats(c)["connects"] == 0 and c.state != "online"
        assert "not authorized" in c.last_error and "E_MQTT_REFUSED" in c.last_error
        b.connack_rc = 0
        await _until(lambda: c.state == "online", "online once accepted")
    await _with(b, c, body)


async def test_connection_start_code_is_loaded_per_connect_and_dropped_after():
    # ppmid.mqtt.handshake (dialling, CONNECT/CONNACK, SUBSCRIBE/SUBACK) is held only while a
    # connection starts: not while backing off after a refusal, not once online
    import sys
    b = await FakeBroker().start()
    b.connack_rc = 5
    c = _client(b)
    c.subscribe("a/b", 1)

    async def body():
        await _until(lambda: c.state == "backoff" and stats(c)["connect_failures"] >= 1, "a refusal")
        assert "ppmid.mqtt.handshake" not in sys.modules
        b.connack_rc = 0
        await _until(lambda: c.state == "online", "online once accepted")
        assert "ppmid.mqtt.handshake" not in sys.modules
        assert stats(c)["connects"] == 1 and len(b.of(p.SUBSCRIBE)) == 1
    await _with(b, c, body)


async def test_a_bad_suback_or_a_refused_filter_drops_the_connection_and_is_retried():
    b = await FakeBroker().start()
    b.suback_code = 3  # not a SUBACK return code
    c = _client(b)
    c.subscribe("a/b", 1)

    async def body():
        await _until(lambda: stats(c)["link_losses"] >= 2, "connections dropped")
        assert c.state != "online" and "SUBACK return code 0x03" in c.last_error, c.last_error
        # the broker refuses the filter (0x80): a failed connection, retried after the
        # back-off, never `online` and deaf (review r13-5: it went online, and no command
        # reached it until the next reconnect)
        b.suback_code = 0x80
        n = len(b.of(p.SUBSCRIBE))
        await _until(lambda: len(b.of(p.SUBSCRIBE)) >= n + 3, "the refused filter subscribed again")
        assert "E_MQTT_SUBSCRIBE" in c.last_error and "a/b" in c.last_error, c.last_error
        for _ in range(10):
            assert c.state != "online", c.state
            await asyncio.sleep(0.02)
        losses = stats(c)["link_losses"]
        b.suback_code = 1  # granted again: online, and stays
        await _until(lambda: c.state == "online", "online once the filter is granted")
        await asyncio.sleep(0.3)
        assert c.state == "online" and stats(c)["link_losses"] <= losses + 1, stats(c)
    await _with(b, c, body)


async def test_on_up_runs_after_each_connect_and_its_failure_is_noted_not_fatal():
    b = await FakeBroker().start()
    calls = []

    async def on_up(session_present):
        calls.append(session_present)
        raise ValueError("publishing the state failed")

    c = _client(b, on_up=on_up)
    c.subscribe("a/b", 1)

    async def body():
        await _until(lambda: len(calls) == 1, "on_up after the first connect")
        assert calls == [False] and c.state == "online"
        await _until(lambda: c.last_error and "publishing the state failed" in c.last_error, "the failure noted")
        assert c.state == "online" and stats(c)["link_losses"] == 0
        b.drop()
        await _until(lambda: len(calls) == 2, "on_up again after a reconnect")
    await _with(b, c, body)


async def test_unreachable_broker_keeps_retrying():
    b = await FakeBroker().start()
    port = b.port
    await b.stop()
    c = MQTTClient("X", tls_connector("127.0.0.1", port), backoff_min=0.02, backoff_max=0.05)
    task = asyncio.create_task(c.run())
    await _until(lambda: stats(c)["connect_failures"] >= 3, "failures")
    assert c.state != "online" and c.last_error
    await c.stop()
    task.cancel()


async def test_bounded_queue_counts_drops():
    b = await FakeBroker().start()
    port = b.port
    await b.stop()
    c = MQTTClient("X", tls_connector("127.0.0.1", port), queue_size=3)
    for i in range(3):
        assert await c.publish("t", b"x", qos=1, wait=False)
    assert not await c.publish("t", b"y", qos=1, wait=False)
    assert not await c.publish("t", b"z", qos=0, wait=False)
    assert stats(c)["drops"] == 2 and c.pending() == 3


async def test_wifi_down_waits_without_dialling():
    b = await FakeBroker().start()

    class Wlan:
        up = False

        def isconnected(self):
            return self.up

    wlan = Wlan()
    c = _client(b, wlan=wlan)

    async def body():
        await _until(lambda: c.state == "wifi-down", "wifi-down state")
        await asyncio.sleep(0.2)
        assert b.connections == 0
        wlan.up = True
        await _until(lambda: c.state == "online", "online after Wi-Fi returns")
    await _with(b, c, body)


async def test_bad_topic_and_qos_refused():
    c = MQTTClient("X", tls_connector("127.0.0.1", 1))
    for topic, qos in (("a/+", 1), ("", 1), ("a", 2)):
        try:
            await c.publish(topic, b"x", qos=qos, wait=False)
        except p.PacketError:
            continue
        raise AssertionError("accepted %r qos %r" % (topic, qos))
    try:
        c.subscribe("a/#/b")
    except p.PacketError:
        return
    raise AssertionError("bad filter accepted")


async def test_oversized_publish_is_skipped_answered_and_acked():
    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"x" * 5000, 5))
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"small", 6))
    seen = []
    big = []

    async def handler(topic, payload, qos, dup):
        seen.append(bytes(payload))

    async def oversize(topic, size, qos, dup):
        big.append((topic, size, qos))

    c = _client(b, handler=handler, max_packet=1000)
    c.oversize = oversize

    async def body():
        await _until(lambda: b.acked == [5, 6], "both PUBACKed")
        assert big == [("ppmid/v1/00DB1234567890A0/cmd", 5000 + 2 + 29 + 2, 1)]
        assert seen == [b"small"]  # the stream stayed in step after the skipped body
        assert stats(c)["connects"] == 1 and stats(c)["oversize"] == 1
    await _with(b, c, body)


async def test_failed_receive_buffer_growth_skips_that_publish_and_keeps_reading():
    # a heap with no block as large as the packet: the buffer must stay usable (it was
    # left None, and every later read failed, CONNACKs included) and the message is
    # answered like an oversized one, PUBACKed, so that neither link nor broker loops
    from ppmid.mqtt import client as client_mod
    real = bytearray
    failed = []

    def bytearray_failing_once(n=0):
        if isinstance(n, int) and n >= 4000 and not failed:
            failed.append(n)
            raise MemoryError("memory allocation failed, allocating %d bytes" % n)
        return real(n)

    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"x" * 5000, 5))
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"small", 6))
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"y" * 5000, 7))
    seen = []
    big = []

    async def handler(topic, payload, qos, dup):
        seen.append(bytes(payload))

    async def oversize(topic, size, qos, dup):
        big.append((topic, size, qos))

    c = _client(b, handler=handler, max_packet=16384)
    c.oversize = oversize
    client_mod.bytearray = bytearray_failing_once

    async def body():
        await _until(lambda: b.acked == [5, 6, 7], "all three PUBACKed")
        assert failed == [5000 + 2 + 29 + 2]
        assert big == [("ppmid/v1/00DB1234567890A0/cmd", 5000 + 2 + 29 + 2, 1)]
        # read in step after the skipped body; the next large one got its buffer
        assert seen == [b"small", b"y" * 5000]
        assert stats(c)["connects"] == 1 and stats(c)["oversize"] == 1
        # a later connection still reads its CONNACK
        b.drop()
        await _until(lambda: stats(c)["connects"] == 2 and c.state == "online", "reconnected")
    try:
        await _with(b, c, body)
    finally:
        del client_mod.bytearray


CMD = "ppmid/v1/00DB1234567890A0/cmd"
HEAD = 2 + len(CMD) + 2  # a QoS 1 PUBLISH's body ahead of its payload: topic and packet id


async def test_a_receive_buffer_past_2kb_is_let_go_after_its_message():
    # the buffer grows to the largest packet up to 2048 bytes and is kept; a larger one is
    # made for its message and let go once the handler is done (docs/memory.md): a large
    # command's JSON is not held through its send; the kept buffer is read into again
    b = await FakeBroker().start()
    for pid, payload in ((5, b"a" * 5000), (6, b"small"), (7, b"m" * 1500), (9, b"tiny"), (8, b"z" * 4000),
                         (10, b"end")):
        b.outbox.append((CMD, payload, pid))
    seen = []

    async def handler(topic, payload, qos, dup):
        seen.append((bytes(payload), len(c._rx)))

    c = _client(b, handler=handler, max_packet=16384)
    first = c._rx

    async def body():
        await _until(lambda: b.acked == [5, 6, 7, 9, 8, 10], "all PUBACKed")
        assert [x[0] for x in seen] == [b"a" * 5000, b"small", b"m" * 1500, b"tiny", b"z" * 4000, b"end"]
        assert [x[1] for x in seen] == [HEAD + 5000, 512, HEAD + 1500, HEAD + 1500, HEAD + 4000, HEAD + 1500]
        assert len(c._rx) == HEAD + 1500 and c._rx is not first and len(c._rxmv) == HEAD + 1500
        assert stats(c)["connects"] == 1 and stats(c)["oversize"] == 0
    await _with(b, c, body)


async def test_a_large_publish_without_a_handler_does_not_keep_its_buffer():
    # no handler to hand it to (or a PUBLISH refused before it): its buffer goes too, at
    # the next packet
    b = await FakeBroker().start()
    b.outbox.append((CMD, b"a" * 5000, 5))
    c = _client(b, max_packet=16384)

    async def body():
        await _until(lambda: b.acked == [5], "PUBACKed")
        await c.publish("ppmid/v1/00DB1234567890A0/status", b"x", 1)  # its PUBACK is the next packet read
        await _until(lambda: len(c._rx) == 512, "the buffer let go")
    await _with(b, c, body)


async def test_the_reader_keeps_no_view_of_a_large_message_once_it_is_handled():
    # MicroPython's GC scans a waiting task's whole frame, its dead stack slots included: a
    # view of the buffer that the reader passed to _incoming stayed there after the call
    # and kept a large message's buffer alive while the reader waited for the next packet:
    # through a command's send (the heap32 gauge's connected gateway, docs/memory.md,
    # session 9). A 20 KB message here: once it is PUBACKed, its buffer is gone from the
    # heap. (The heap is read where gc.mem_alloc exists: MicroPython.)
    import gc
    b = await FakeBroker().start()
    b.outbox.append((CMD, b"a" * 20000, 5))
    during = []

    async def handler(topic, payload, qos, dup):
        if hasattr(gc, "mem_alloc"):
            gc.collect()
            during.append(gc.mem_alloc())  # the buffer, 20 KB, is live here

    c = _client(b, handler=handler, max_packet=65536)

    async def body():
        await _until(lambda: b.acked == [5], "PUBACKed")
        await asyncio.sleep(0.05)  # the reader waits for the next packet
        assert len(c._rx) == 512
        if during:
            gc.collect()
            assert during[0] - gc.mem_alloc() >= 18000, (during, gc.mem_alloc())
    await _with(b, c, body)


async def test_remaining_lengths_of_one_to_three_bytes_are_read_and_a_fifth_byte_drops_the_link():
    # the fixed header is read into the receive buffer's start: its first two bytes, then
    # one byte for each continuation bit (2.2.3); past four length bytes the packet is
    # malformed and the link goes
    b = await FakeBroker().start()
    for pid, payload in ((5, b"s"), (6, b"m" * 200), (7, b"L" * 20000)):  # 1, 2 and 3 length bytes
        b.outbox.append((CMD, payload, pid))
    seen = []

    async def handler(topic, payload, qos, dup):
        seen.append(bytes(payload))

    c = _client(b, handler=handler, max_packet=32768)

    async def body():
        await _until(lambda: b.acked == [5, 6, 7], "all PUBACKed")
        assert seen == [b"s", b"m" * 200, b"L" * 20000]
        b.writer.write(b"\x30\xff\xff\xff\xff\x01")
        await _until(lambda: stats(c)["link_losses"] == 1, "the link dropped")
        assert "remaining length longer than 4 bytes" in c.last_error, c.last_error
        await _until(lambda: stats(c)["connects"] == 2 and c.state == "online", "reconnected")
        assert seen == [b"s", b"m" * 200, b"L" * 20000]  # nothing delivered twice: all were PUBACKed
    await _with(b, c, body)


async def test_persistent_handler_failure_backs_off_instead_of_spinning():
    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"poison", 3))

    async def handler(topic, payload, qos, dup):
        raise OSError(5, "flash broken")

    c = _client(b, handler=handler, backoff_min=0.01, backoff_max=0.08)
    delays = []

    async def body():
        for _ in range(5):
            n = stats(c)["pubacks_withheld"]
            await _until(lambda: stats(c)["pubacks_withheld"] > n, "another redelivery")
            await _until(lambda: c.state != "online", "link dropped")
            delays.append(c.backoff_delay)
        assert b.acked == []  # never acknowledged what was never accepted
        assert delays[-1] == 0.08 and delays[0] < delays[-1], delays
    await _with(b, c, body)


async def test_first_publish_goes_on_the_wire_before_the_handlers_puback():
    # The in-flight window (1) is full: a publish the broker has not acknowledged. A
    # handler refusing a command queues its rejection: queued normally it would follow
    # this command's PUBACK (a power cut in between loses the rejection while the broker
    # forgets the command); with first=True it is written before the PUBACK.
    b = await FakeBroker().start()
    b.withhold_pubacks = 1
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b'{"id":"a"}', 70))
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b'{"id":"b"}', 71))
    topic = "ppmid/v1/00DB1234567890A0/rsp"
    seen = []

    async def handler(t, payload, qos, dup):
        seen.append(bytes(payload))
        if len(seen) == 1:
            await c.publish(topic, b"rejected a", 1, False, False)          # queued
        else:
            await c.publish(topic, b"rejected b", 1, False, False, True)    # first

    c = _client(b, handler=handler, window=1)

    async def body():
        await c.publish(topic, b"blocker", 1, False, False)
        await _until(lambda: len(b.of(p.PUBLISH)) >= 1, "the blocker on the wire")
        await _until(lambda: b.acked == [70, 71], "both PUBACKs")
        order = []
        for _, f, body_ in b.received:
            if f & 0xF0 == p.PUBACK:
                order.append(("puback", p.parse_packet_id(body_)))
            elif f & 0xF0 == p.PUBLISH:
                order.append(("publish", bytes(p.parse_publish(f, body_)[1])))
        assert order.index(("publish", b"rejected b")) < order.index(("puback", 71)), order
        # the queued one waited for the window: it was not on the wire before its PUBACK
        assert ("publish", b"rejected a") not in order[:order.index(("puback", 70))], order
    await _with(b, c, body)


def test_every_failure_key_names_its_sentence():
    # client.py's _S_X = const(i) and client_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the failures run on both above")
    from ppmid.mqtt import client, client_errors as CE
    from sentence_keys import check_keys
    check_keys((client,), CE)


class _StallingWriter:
    """A real connection's writer that, once `stall` is set and a PUBLISH is written,
    behaves as a half-open TCP connection with a full send buffer: what is written goes
    nowhere and drain() never returns (only closing the socket ends it)."""

    def __init__(self, w):
        self.w = w
        self.stall = False
        self.stalled = False
        self.s = getattr(w, "s", None)  # MicroPython: client._close closes the socket itself

    def write(self, b):
        if self.stall and b[0] & 0xF0 == p.PUBLISH:
            self.stalled = True
        if not self.stalled:
            self.w.write(b)

    async def drain(self):
        if self.stalled:
            await asyncio.Event().wait()
        await self.w.drain()

    def close(self):
        self.w.close()

    async def wait_closed(self):
        await self.w.wait_closed()


def _stalling_client(broker, writers, **kw):
    dial = tls_connector("127.0.0.1", broker.port)

    async def connect():
        r, w = await dial()
        writers.append(_StallingWriter(w))
        writers[-1].stall = len(writers) == 1  # only the first connection goes half-open
        return r, writers[-1]
    opts = {"keepalive": 30, "ack_timeout": 0.5, "backoff_min": 0.05, "backoff_max": 0.2}
    opts.update(kw)
    return MQTTClient("00DB1234567890A0", connect, **opts)


async def test_a_publish_that_never_drains_drops_the_link_and_is_resent():
    # The sender is the one stuck in drain(): no PUBACK/PINGRESP check runs meanwhile.
    b = await FakeBroker().start()
    writers = []
    c = _stalling_client(b, writers)

    async def body():
        await _until(lambda: c.state == "online", "online")
        assert await c.publish("ppmid/v1/00DB1234567890A0/rsp", b"x" * 3000, 1, False, False)
        await _until(lambda: writers[0].stalled, "the first connection stalled")
        await _until(lambda: stats(c)["connects"] == 2 and c.pending() == 0, "reconnect and PUBACK")
        assert "write stalled" in c.last_error, c.last_error
        pubs = b.of(p.PUBLISH)
        assert [conn for conn, _, _ in pubs] == [2], pubs  # nothing got through the stalled one
        assert pubs[0][1] & 0x08                           # resent as a duplicate
    await _with(b, c, body)


async def test_a_handlers_first_publish_that_never_drains_drops_the_link():
    # A handler writing a rejection (first=True) is stuck in drain(): the reader is held
    # and the ack timeouts are off while it is; the command must still be redelivered.
    b = await FakeBroker().start()
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b'{"id":"a"}', 70))
    writers = []
    seen = []

    async def handler(topic, payload, qos, dup):
        seen.append(dup)
        await c.publish("ppmid/v1/00DB1234567890A0/rsp", b"rejected", 1, False, False, True)

    c = _stalling_client(b, writers, handler=handler)

    async def body():
        await _until(lambda: b.acked == [70], "the command PUBACKed after a reconnect")
        await _until(lambda: c.pending() == 0, "the rejections PUBACKed")
        assert writers[0].stalled and stats(c)["connects"] == 2 and seen == [False, True], (seen, c.stats)
        assert "write stalled" in c.last_error, c.last_error
        pubs = b.of(p.PUBLISH)
        assert pubs and all(conn == 2 for conn, _, _ in pubs), pubs
        assert any(f & 0x08 for _, f, _ in pubs)  # the first rejection, resent as a duplicate
    await _with(b, c, body)


def test_a_new_client_has_its_defaults_and_leaves_its_set_up_code_unloaded():
    # the constructor's work is ppmid.mqtt.handshake.set_up, loaded for it and dropped
    # again (docs/memory.md, session 10): the defaults are as documented there, and an
    # unknown option is still refused, also with the module dropped after
    import sys
    import ppmid.mqtt.handshake  # noqa: F401 - loaded, as after a test that dialled
    c = MQTTClient("X", None)
    assert "ppmid.mqtt.handshake" not in sys.modules and "ppmid.modules" not in sys.modules
    assert (c.keepalive, c.queue_size, c.window, c.max_packet, c.ack_timeout, c.connect_timeout,
            c.backoff_min, c.backoff_max) == (30, 16, 4, 16384, 10, 15, 0.5, 60)
    assert c.will is None and c.handler is None and c.oversize is None and c.on_up is None
    assert c.wlan is None and c.log is None and c.client_id == "X"
    assert c.state == "offline" and c.pending() == 0 and len(c._rx) == 512 and stats(c)["connects"] == 0
    c = MQTTClient("Y", None, keepalive=5, window=1)
    assert (c.keepalive, c.window, c.queue_size) == (5, 1, 16)
    import ppmid.mqtt.handshake  # noqa: F401,F811
    try:
        MQTTClient("Z", None, keep_alive=5)
    except TypeError:
        pass
    else:
        raise AssertionError("an unknown option was taken")
    assert "ppmid.mqtt.handshake" not in sys.modules
