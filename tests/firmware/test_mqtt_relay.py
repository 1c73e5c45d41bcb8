# The intake contract with the real relay (ppmid.relay.core over a real flash journal,
# fakes for the HAN and the GBCS validator from test_relay_support): commands arrive from
# a fake broker through the real MQTT client and intake; the relay's statuses go back
# through the same client and are PUBACKed by the broker.
# mp-heapsize: 512K
# mp-timeout: 120
import asyncio
import binascii
import json

from ppmid.mqtt import packets as p
from ppmid.mqtt.intake import Intake
from ppmid.mqtt.client import MQTTClient, tls_connector
from ppmid.mqtt.link_host import stats
from test_mqtt_client import FakeBroker, _until
from test_relay_support import Rig, PPMID, KEY, stop_relay
from ppmid.relay import outbox
from ppmid.relay.report import named


def _cmd_json(env, mac=None):
    return json.dumps({"id": env.id, "gbcs": binascii.b2a_base64(bytes(env.gbcs)).strip().decode(),
                       "mac": mac or binascii.hexlify(bytes(env.mac)).decode()}).encode()


def _rsp(b):
    out = []
    for c, f, body in b.of(p.PUBLISH):
        topic, payload, qos, retain, dup, pid = p.parse_publish(f, body)
        if topic.endswith("/rsp"):
            m = json.loads(bytes(payload))
            out.append((m["id"], m["status"], (m.get("error") or {}).get("code")))
    return out


async def test_relay_accepts_through_intake_and_publishes_through_client():
    b = await FakeBroker().start()
    client = MQTTClient(PPMID, tls_connector("127.0.0.1", b.port), ack_timeout=2, backoff_min=0.05)
    rig = Rig(pub=client)
    Intake(client, PPMID, rig.relay.accept, 8192)
    cmd = "ppmid/v1/%s/cmd" % PPMID
    good = rig.env("m-1", 10)
    b.outbox.append((cmd, _cmd_json(good), 1))
    b.outbox.append((cmd, _cmd_json(rig.env("m-2", 11), mac="00" * 32), 2))
    b.outbox.append((cmd, _cmd_json(good), 3))  # the same command delivered again
    task = asyncio.create_task(client.run())

    async def publisher():
        while True:
            if not await outbox.publish_once(rig.relay):
                await asyncio.sleep(0.01)

    pub = asyncio.create_task(publisher())
    try:
        await _until(lambda: b.acked == [1, 2, 3], "PUBACKs")
        assert "m-1" in rig.journal.by_id  # on flash before its PUBACK went out
        await _until(lambda: ("m-1", "accepted", None) in _rsp(b), "accepted via the client")
        assert ("m-2", "rejected", "E_AUTH") in _rsp(b)
        assert [x for x in _rsp(b) if x[0] == "m-2"] == [("m-2", "rejected", "E_AUTH")]  # once, by the intake
        await rig.pump()
        assert rig.han.sent == [bytes(good.gbcs)]  # relayed once despite the redelivery
    finally:
        await client.stop()
        pub.cancel()
        task.cancel()
        for t in (pub, task):
            try:
                await t
            except BaseException:
                pass
        await b.stop()


class _SlowHan:
    """The fake HAN with a send that takes a while (the UART at 115200 baud), answering
    every command: a queue that is full stays full for a time."""

    def __init__(self, han, send_s):
        self.han = han
        self.send_s = send_s
        self.sent = han.sent
        self.rx = han.rx

    async def send(self, dest, data, paced=None):
        await asyncio.sleep(self.send_s)
        await self.han.send(dest, data, paced)

    async def receive(self):
        return await self.han.receive()


async def test_backlog_beyond_the_queue_is_paced_by_withheld_pubacks_not_refused():
    # After an outage the broker hands over its backlog at once: 12 commands for a relay
    # whose queue holds 3. The intake's handler waits for room (PUBACK withheld), longer
    # than the client's ack timeout, while the client's own status PUBACKs and PINGRESPs
    # sit unread behind the waiting message: the link must hold, nothing is refused.
    from test_relay_support import config, response_to, ESME, GSME
    b = await FakeBroker().start()
    client = MQTTClient(PPMID, tls_connector("127.0.0.1", b.port), keepalive=1, ack_timeout=0.3,
                        backoff_min=0.05)
    rig = Rig(pub=client, cfg=config(queue=3, rate_per_s=100, burst=100), admit_wait_ms=5000)
    rig.han.responder = response_to
    rig.relay.han = _SlowHan(rig.han, 0.15)
    Intake(client, PPMID, rig.relay.accept, 8192)
    cmd = "ppmid/v1/%s/cmd" % PPMID
    envs = [rig.env("b-%d" % i, 10 + i, target=(ESME, GSME)[i % 2]) for i in range(12)]
    for i, env in enumerate(envs):
        b.outbox.append((cmd, _cmd_json(env), i + 1))
    tasks = rig.relay.start()
    task = asyncio.create_task(client.run())
    try:
        await _until(lambda: b.acked == list(range(1, 13)), "PUBACKs of the whole backlog")
        await _until(lambda: len([s for s in _rsp(b) if s[1] == "response"]) == 12, "12 responses")
        assert [x for x in _rsp(b) if x[1] == "rejected"] == []
        assert named(rig.relay.counters)["rejected"] == {}
        assert named(rig.relay.counters)["admit_waits"] >= 1  # the backlog did wait for room
        assert rig.han.sent == [bytes(e.gbcs) for e in envs]  # each once, in order
        assert stats(client)["connects"] == 1, client.last_error  # the link held throughout
        assert stats(client)["pubacks_withheld"] == 0
    finally:
        await client.stop()
        await stop_relay(rig.relay)
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        await b.stop()


async def test_handler_wait_beyond_ack_timeout_keeps_the_link_but_a_dead_one_is_still_found():
    b = await FakeBroker().start()
    release = asyncio.Event()
    seen = []

    async def handler(topic, payload, qos, dup):
        seen.append(bytes(payload))
        await release.wait()

    client = MQTTClient(PPMID, tls_connector("127.0.0.1", b.port), keepalive=1, ack_timeout=0.3,
                        backoff_min=0.05, handler=handler)
    b.outbox.append(("ppmid/v1/%s/cmd" % PPMID, b"x", 1))
    task = asyncio.create_task(client.run())
    try:
        await _until(lambda: seen == [b"x"], "the handler to start")
        await _until(lambda: len(b.of(p.PINGREQ)) >= 3, "pings while the handler waits")
        b.answer_pings = False   # from now on, no PINGRESP: unseen while the reader waits
        n = len(b.of(p.PINGREQ))
        await _until(lambda: len(b.of(p.PINGREQ)) > n, "one more ping")
        await asyncio.sleep(0.5)
        assert stats(client)["connects"] == 1 and b.acked == []
        release.set()            # the handler returns: PUBACK, then the silence counts
        await _until(lambda: b.acked == [1], "the PUBACK")
        await _until(lambda: stats(client)["connects"] >= 2, "a reconnect after the unanswered ping")
    finally:
        await client.stop()
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        await b.stop()
