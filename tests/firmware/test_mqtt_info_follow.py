# The retained info follows the HAN's status and commissioning (ppmid.mqtt.info_follow,
# issue #16): the link is ZigbeeHan's on_status hook; a change while online republishes the
# info, a burst settles into one, a flapping HAN gets at most one info per EVERY_MS and its
# last status always ends up retained; a change while offline publishes nothing (the
# connect does); an info that cannot be built is logged, not raised, and the next change
# publishes again.
# mp-timeout: 120
# mp-heapsize: 320K
# (the HAN, the MQTT link and the test brokers compiled from source in one interpreter: at the
# default 256K the three tests ended with 17-65 KB free, and a 1.3 KB import failed for lack of
# one free stretch once mqtt/packets.py changed in session 7; the firmware's own budget is the
# heap32 gauge's)
import asyncio

from ppmid.clock import ticks_ms, ticks_diff
from ppmid.mqtt import info_follow
from ppmid.mqtt import packets as p
from ppmid.mqtt.client import tls_connector
from ppmid.mqtt.link import Link
from ppmid.mqtt.link_host import stop
from ppmid.zigbee.han import ZigbeeHan
from test_mqtt_client import FakeBroker, _until
from test_mqtt_link import EUI, _cfg, _accept, _published

INFO = "ppmid/v1/%s/info" % EUI


def _infos(b):
    return [d for topic, d, qos, retain in _published(b) if topic == INFO and qos == 1 and retain]


async def _online(info, log=None):
    b = await FakeBroker().start()
    lk = Link(_cfg(), _accept, credentials=(b"", b"", b"", b"k" * 32), info=info, log=log,
              connect=tls_connector("127.0.0.1", b.port))
    lk.client.ack_timeout = 0.5
    lk.client.backoff_min = 0.05
    task = asyncio.create_task(lk.run())
    await _until(lambda: len(_infos(b)) == 1, "the connect's info")
    return b, lk, task


async def _close(b, lk, task):
    await stop(lk)
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    await b.stop()


def _han_info(han):
    return lambda: {"han": han.status, "detail": han.status_detail}


async def test_han_status_changes_republish_the_info_paced():
    info_follow.EVERY_MS, info_follow.SETTLE_MS = 600, 50
    han = ZigbeeHan(None, None, {})
    b, lk, task = await _online(_han_info(han))
    han.on_status = lk
    try:
        # one change: published after the settle, without a reconnect
        han._set_status("commission-failed", "E_COMMISSION_JOIN_REFUSED: not in the device log")
        await _until(lambda: len(_infos(b)) == 2, "the info after a HAN status change")
        assert _infos(b)[-1] == {"han": "commission-failed", "detail": "E_COMMISSION_JOIN_REFUSED: not in the device log"}
        assert len(b.of(p.CONNECT)) == 1, "the info came without a reconnect"

        # a flapping HAN: 40 changes over ~2 s give at most one info per EVERY_MS, and the
        # last status is the retained one in the end
        before = len(_infos(b))
        start = ticks_ms()
        for i in range(40):
            han._set_status("commissioning" if i % 2 else "commission-failed", "attempt %d" % i)
            await asyncio.sleep(0.05)
        han._set_status("running")
        await _until(lambda: _infos(b)[-1] == {"han": "running", "detail": ""}, "the last status published")
        elapsed = ticks_diff(ticks_ms(), start)
        sent = len(_infos(b)) - before
        # (without the pace: one per change, ~20 here)
        assert 1 <= sent <= elapsed // info_follow.EVERY_MS + 2, (sent, elapsed)
        # nothing more pending once the last one is out
        await asyncio.sleep(2 * info_follow.EVERY_MS / 1000)
        assert _infos(b)[-1] == {"han": "running", "detail": ""} and len(_infos(b)) - before == sent
    finally:
        await _close(b, lk, task)


async def test_a_change_while_offline_publishes_nothing_the_connect_does():
    info_follow.EVERY_MS, info_follow.SETTLE_MS = 600, 50
    han = ZigbeeHan(None, None, {})
    b = await FakeBroker().start()
    lk = Link(_cfg(), _accept, credentials=(b"", b"", b"", b"k" * 32), info=_han_info(han),
              connect=tls_connector("127.0.0.1", b.port))
    lk.client.backoff_min = 0.05
    han.on_status = lk
    han._set_status("commissioning", "joining")     # not connected yet
    assert getattr(lk, "_info_task", None) is None
    task = asyncio.create_task(lk.run())
    try:
        await _until(lambda: len(_infos(b)) == 1, "the connect's info")
        assert _infos(b) == [{"han": "commissioning", "detail": "joining"}]
        await asyncio.sleep(0.3)
        assert len(_infos(b)) == 1, _infos(b)
    finally:
        await _close(b, lk, task)


async def test_an_info_that_cannot_be_built_is_logged_and_the_next_change_publishes():
    info_follow.EVERY_MS, info_follow.SETTLE_MS = 300, 50
    han = ZigbeeHan(None, None, {})
    broken = [False]
    good = _han_info(han)

    def info():
        if broken[0]:
            raise ValueError("no info")
        return good()

    lines = []
    b, lk, task = await _online(info, log=lines.append)
    han.on_status = lk
    try:
        broken[0] = True
        han._set_status("rejoining", "secured rejoin, attempt 1")
        await _until(lambda: any("info not published" in s for s in lines), "the failure logged")
        assert "ValueError" in [s for s in lines if "info not published" in s][0], lines
        assert getattr(lk, "_info_task", None) is None and len(_infos(b)) == 1
        broken[0] = False
        han._set_status("rejoin-failed", "E_REJOIN_FAILED: no network")
        await _until(lambda: _infos(b)[-1] == {"han": "rejoin-failed", "detail": "E_REJOIN_FAILED: no network"},
                     "the info after the next change")
        assert lk.client.state == "online"
    finally:
        await _close(b, lk, task)
