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
from test_mqtt_client import FakeBroker, _until
from test_relay_support import Rig, PPMID, KEY


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
            if not await rig.relay.publish_once():
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
