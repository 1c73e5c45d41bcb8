# The MQTT client when its link fails in ways review 94 found it mishandled: a QoS 0
# publish whose write fails, a broker that drops each connection right after its CONNACK,
# an oversized message whose topic is longer than the head kept of it. Against the fake
# broker of test_mqtt_client.py, under CPython and MicroPython; a file of its own so that
# its brokers' large packets do not share one MicroPython heap with that file's tests.
# mp-timeout: 180
import asyncio

from ppmid.mqtt import packets as p
from ppmid.mqtt.client import MQTTError
from ppmid.mqtt.link_host import stats

from test_mqtt_client import FakeBroker, _client, _stop, _until, _with


async def test_a_qos0_publisher_whose_write_fails_is_told_and_not_left_waiting():
    # review 94 F1: the sender pops a QoS 0 message and writes it; when that write fails
    # (what _write does on a stall or an OSError: the link is killed and MQTTError raised)
    # the message is in neither the queue nor the in-flight list. Its publisher (the relay's
    # outbox, waiting on a log line) must get False, not wait for ever.
    b = await FakeBroker().start()
    c = _client(b)
    write = c._write
    fail = [True]

    async def write_fails_once(*parts):
        if fail[0] and len(parts) == 2 and parts[0][0] & 0xF6 == 0x30:  # a QoS 0 PUBLISH
            fail[0] = False
            c._kill("test: the link died during this write")
            raise MQTTError("E_MQTT_CLOSED", c._dead)
        return await write(*parts)
    c._write = write_fails_once
    got = []

    async def log_line():
        got.append(await c.publish("ppmid/v1/00DB1234567890A0/log", b"lost", qos=0))

    async def body():
        await _until(lambda: c.state == "online", "online")
        asyncio.create_task(log_line())
        await _until(lambda: got, "the QoS 0 publisher to be told")
        assert got == [False] and stats(c)["drops"] == 1 and not fail[0]
        await _until(lambda: stats(c)["connects"] >= 2 and c.state == "online", "the reconnect")
        # the client goes on: the next QoS 0 message is written and its publisher gets True
        assert await c.publish("ppmid/v1/00DB1234567890A0/log", b"next", qos=0) is True
        await _until(lambda: [1 for _, f, body in b.of(p.PUBLISH) if body.endswith(b"next")], "the next one")
        assert not [1 for _, f, body in b.of(p.PUBLISH) if body.endswith(b"lost")]
        assert c.pending() == 0
    await _with(b, c, body)


class DropsAfterConnack(FakeBroker):
    """Accepts every CONNECT and closes at once: what mosquitto does to the older of two
    gateways with the same client id (session takeover), each in turn."""

    async def _serve(self, r, w):
        self.connections += 1
        try:
            await self._read(r)
            w.write(bytes((0x20, 2, 0, 0)))
            await w.drain()
            await asyncio.sleep(0.05)
        except Exception as exc:
            self.error = exc
        try:
            w.close()
            if hasattr(w, "s"):
                w.s.close()
            await w.wait_closed()
        except Exception:
            pass


async def test_connections_dropped_right_after_connack_back_off():
    # review 94 F2: "online" only means the CONNACK accepted the connection; resetting the
    # backoff on it redialled a broker that drops the client at once every backoff_min
    b = await DropsAfterConnack().start()
    c = _client(b, backoff_min=0.02, backoff_max=0.16)
    delays = []

    async def body():
        for _ in range(6):
            n = stats(c)["link_losses"]
            await _until(lambda: stats(c)["link_losses"] > n, "another dropped connection")
            delays.append(c.backoff_delay)
        assert stats(c)["connects"] >= 6 and stats(c)["connect_failures"] == 0
        assert delays[:4] == [0.02, 0.04, 0.08, 0.16] and delays[-1] == 0.16, delays
    await _with(b, c, body)


async def test_the_backoff_starts_again_after_a_connection_that_stayed_up():
    # the same growth, then one connection that stays up past 30 s (the client's ticks are
    # moved on, not waited for): the next reconnect is at backoff_min again
    import ppmid.mqtt.client as client_module
    from ppmid.clock import ticks_ms, ticks_add
    b = await FakeBroker().start()
    b.connack_rc = 5   # refused: the backoff grows
    c = _client(b, backoff_min=0.02, backoff_max=0.16)

    async def body():
        await _until(lambda: stats(c)["connect_failures"] >= 4, "refusals")
        assert c.backoff_delay == 0.16
        b.connack_rc = 0
        await _until(lambda: c.state == "online", "online")
        client_module.ticks_ms = lambda: ticks_add(ticks_ms(), 31000)
        try:
            n = stats(c)["link_losses"]
            b.drop()
            await _until(lambda: stats(c)["link_losses"] > n, "the drop")
            assert c.backoff_delay == 0.02, c.backoff_delay
        finally:
            client_module.ticks_ms = ticks_ms
    await _with(b, c, body)


async def test_a_failure_while_noting_a_failure_does_not_end_the_client():
    # review_w5-3: a connect that fails with a MemoryError, then a console line about it
    # that fails the same way (the heap still full): the client's run() went on its
    # exception handler's exception and ended for good (nothing restarts it while Wi-Fi
    # is up); it backs off and dials again instead
    from ppmid.mqtt.client import MQTTClient
    dials = []

    async def connect(*args):
        dials.append(1)
        raise MemoryError("memory allocation failed, allocating 1024 bytes")

    def log(line):
        raise MemoryError("memory allocation failed, allocating 64 bytes")

    c = MQTTClient("00DB1234567890A0", connect, log=log, backoff_min=0.01, backoff_max=0.02)
    task = asyncio.create_task(c.run())
    try:
        await _until(lambda: len(dials) >= 3 or task.done(), "three dials")
        assert not task.done() and stats(c)["connect_failures"] >= 2
    finally:
        await _stop(c, task)


async def test_the_backoff_starts_again_after_a_connection_up_for_more_than_half_the_tick_period():
    # review_w5-4: the ESP32's ticks wrap every 2**30 ms and ticks_diff reads a stamp older
    # than 2**29 ms (6.2 days) as negative: a connection up for 6.2 days and 31 s was judged
    # "not stable" and the back-off kept growing. The client's ticks are the ESP32's here
    # (a 2**30 period), moved on past half of it once online
    import ppmid.mqtt.client as client_module
    from ppmid.clock import ticks_ms, ticks_diff
    period = 1 << 30

    def esp32_ticks():
        return (ticks_ms() + (period >> 1) + 31000) & (period - 1)

    def esp32_diff(a, b):
        return ((a - b + (period >> 1)) & (period - 1)) - (period >> 1)

    b = await FakeBroker().start()
    b.connack_rc = 5
    c = _client(b, backoff_min=0.02, backoff_max=0.16)

    async def body():
        await _until(lambda: stats(c)["connect_failures"] >= 4, "refusals")
        assert c.backoff_delay == 0.16
        b.connack_rc = 0
        await _until(lambda: c.state == "online", "online")
        # the CONNACK's stamp as the ESP32's ticks, then "now" 6.2 days and 31 s later
        c._online &= period - 1
        client_module.ticks_ms, client_module.ticks_diff = esp32_ticks, esp32_diff
        try:
            assert esp32_diff(esp32_ticks(), c._online) < 0      # what the ESP32 would read
            n = stats(c)["link_losses"]
            b.drop()
            await _until(lambda: stats(c)["link_losses"] > n, "the drop")
            assert c.backoff_delay == 0.02, c.backoff_delay
        finally:
            client_module.ticks_ms, client_module.ticks_diff = ticks_ms, ticks_diff
    await _with(b, c, body)


async def test_oversized_publish_with_a_topic_longer_than_its_head_is_answered_and_acked():
    # review 94 F3: update/+ matches a level of any length; only the first 256 bytes of an
    # oversized PUBLISH were kept, so a topic past 252 bytes "ran past the packet": the link
    # dropped without a PUBACK, and the broker redelivered it at every connect. Now the topic
    # is cut (at a character's start: "é" is 2 bytes) and the packet id read past it.
    b = await FakeBroker().start()
    base = "ppmid/v1/00DB1234567890A0/update/"
    for pid, level in ((7, "x" * 240), (8, "é" * 200), (9, "y" * 219 + "é" * 3), (10, "z" * 2000)):
        b.outbox.append((base + level, b"y" * 3000, pid))
    b.outbox.append(("ppmid/v1/00DB1234567890A0/cmd", b"small", 11))
    seen = []
    big = []

    async def handler(topic, payload, qos, dup):
        seen.append((topic, bytes(payload)))

    async def oversize(topic, size, qos, dup):
        big.append((topic, size, qos))

    c = _client(b, handler=handler, max_packet=1000)
    c.oversize = oversize

    async def body():
        await _until(lambda: b.acked == [7, 8, 9, 10, 11], "all PUBACKed")
        assert stats(c)["connects"] == 1 and stats(c)["oversize"] == 4, c.last_error
        sizes = [3000 + 2 + len((base + lv).encode()) + 2 for lv in ("x" * 240, "é" * 200, "y" * 219 + "é" * 3, "z" * 2000)]
        assert [x[1] for x in big] == sizes and [x[2] for x in big] == [1] * 4
        for topic, _, _ in big:
            assert topic.startswith(base) and len(topic.encode()) <= 252, topic
        assert big[0][0] == base + "x" * 219          # 252 bytes kept
        assert big[1][0] == base + "é" * 109          # 251: the 110th "é" would be cut in two
        assert big[2][0] == base + "y" * 219          # 252: the first "é" straddles the cut
        assert seen == [("ppmid/v1/00DB1234567890A0/cmd", b"small")]  # the stream stayed in step
        import sys
        assert "ppmid.mqtt.oversize" not in sys.modules  # loaded for each, dropped after
    await _with(b, c, body)
