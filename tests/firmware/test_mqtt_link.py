# The gateway link (ppmid.mqtt.link): will, retained online/info on every connect, the cmd
# subscription, offline before a graceful stop, and credentials checks.
# mp-timeout: 120
# mp-heapsize: 384K  (the client-check test adds a relay over a flash journal to the link)
import asyncio
import json

from ppmid.config import ConfigError, validate
from ppmid.mqtt import packets as p
from ppmid.mqtt.handshake import connect as connect_packet
from ppmid.mqtt.client import tls_connector
from ppmid.mqtt.link import Link
from ppmid.mqtt.link_host import stats, stop
from ppmid.mqtt.credentials import max_packet_for
from ppmid.mqtt.credentials import load_credentials
from test_mqtt_client import FakeBroker, _until

EUI = "00DB1234567890A0"


def _cfg():
    return validate({"gateway": EUI.lower(), "limits": {"max_gbcs": 1024}})


async def _accept(env, via):
    pass


def _published(b, conn=None):
    out = []
    for c, f, body in b.of(p.PUBLISH, conn):
        topic, payload, qos, retain, dup, pid = p.parse_publish(f, body)
        out.append((topic, json.loads(bytes(payload)), qos, retain))
    return out


async def test_link_online_info_will_and_graceful_offline():
    b = await FakeBroker().start()
    info = {"fw": "t", "n": 0}
    lk = Link(_cfg(), _accept, credentials=(b"", b"", b"", b"k" * 32), info=lambda: info,
              connect=tls_connector("127.0.0.1", b.port))
    lk.client.ack_timeout = 0.5
    lk.client.backoff_min = 0.05
    task = asyncio.create_task(lk.run())
    try:
        await _until(lambda: len(_published(b)) == 2, "state + info")
        connect = b.of(p.CONNECT)[0][2]
        assert connect == connect_packet(EUI, 30, False, ("ppmid/v1/%s/state" % EUI, b'{"state": "offline"}', 1, True))[2:]
        # cmd, then the update offers and data (docs/update.md)
        assert b.of(p.SUBSCRIBE)[0][2][2:] == (b"\x00\x1dppmid/v1/%s/cmd\x01" % EUI.encode()
                                               + b"\x00\x22ppmid/v1/%s/update/+\x01" % EUI.encode())
        assert _published(b) == [("ppmid/v1/%s/state" % EUI, {"state": "online"}, 1, True),
                                 ("ppmid/v1/%s/info" % EUI, {"fw": "t", "n": 0}, 1, True)]
        info["n"] = 1
        await lk.republish_info()
        assert _published(b)[-1] == ("ppmid/v1/%s/info" % EUI, {"fw": "t", "n": 1}, 1, True)
        b.drop()  # every reconnect says online again
        await _until(lambda: len(_published(b, 2)) == 2, "state + info after reconnect")
        await stop(lk)
        await _until(lambda: b.of(p.DISCONNECT), "DISCONNECT")
        assert _published(b)[-1] == ("ppmid/v1/%s/state" % EUI, {"state": "offline"}, 1, True)
        assert lk.client.max_packet == max_packet_for(1024)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        await b.stop()


def test_missing_credentials_are_config_errors():
    try:
        load_credentials("/nonexistent-root")
    except ConfigError as exc:
        assert exc.code == "E_CONFIG" and "envelope key" in exc.message and "ppmid provision" in exc.message
    else:
        raise AssertionError("no ConfigError")


async def test_the_boot_s_client_check_is_down_only_once_the_client_task_has_ended():
    # review_w5-3: the MQTT road's checks in the relay's health are boot.wifi_check and
    # boot.client_check. A broker or WAN away (every connect fails, the client backs off)
    # keeps the client check up however long it lasts; a client task that ended (here a
    # bug in the back-off: a TypeError outside the client's own retries) is down, and
    # after the check's grace the relay stops feeding the watchdog
    from ppmid.boot import client_check
    from test_relay_support import Rig

    async def broker_away(*args):
        raise OSError(113, "EHOSTUNREACH")

    lk = Link(_cfg(), _accept, credentials=(b"", b"", b"", b"k" * 32), info=lambda: {},
              connect=broker_away)
    lk.client.backoff_min = 0.01
    lk.client.backoff_max = 0.02
    name, up, grace_s = client_check(lk)
    assert name == "mqtt" and grace_s == 600
    r = Rig()
    r.relay.link_checks[:] = [client_check(lk)]
    task = asyncio.create_task(lk.run())
    try:
        await _until(lambda: stats(lk.client)["connect_failures"] >= 5, "five failed connects")
        assert up() and not task.done()
        r.clock.advance(4 * 3600 * 1000)              # hours of outage: nothing is down
        r.relay._beats["dispatch"] = r.clock.ms()
        assert r.relay.house_once() == (True, "ok")
        lk.client.backoff_max = None                  # the back-off's min() now raises
        await _until(task.done, "the client task to end")
        assert not up() and lk.client.state == "ended"
        try:
            await task
        except TypeError:
            pass                                      # the task's own failure, left as it was
        r.clock.advance(1000)
        r.relay._beats["dispatch"] = r.clock.ms()
        assert r.relay.house_once() == (True, "degraded")
        r.clock.advance(600 * 1000 + 1000)
        r.relay._beats["dispatch"] = r.clock.ms()
        ok, why = r.relay.house_once()
        assert not ok and "mqtt link down for 601 s" in why, why
    finally:
        task.cancel()
        try:
            await task
        except BaseException:
            pass
