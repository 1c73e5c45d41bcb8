# The retained info follows the HAN's status and commissioning (ppmid.mqtt.info_follow,
# issue #16): the link is ZigbeeHan's on_status hook; a change while online republishes the
# info, a burst settles into one, a flapping HAN gets at most one info per EVERY_MS and its
# last status always ends up retained; a change while offline publishes nothing (the
# connect does); an info that cannot be built is logged, not raised, and the next change
# publishes again. The module drops itself once its publication is out (docs/memory.md,
# session 10); the pacing tests keep it (their shortened pace is the module's constants).
# mp-timeout: 120
# mp-heapsize: 320K
# (the HAN, the MQTT link and the test brokers compiled from source in one interpreter: at the
# default 256K the three tests ended with 17-65 KB free, and a 1.3 KB import failed for lack of
# one free stretch once mqtt/packets.py changed in session 7; the firmware's own budget is the
# heap32 gauge's)
import asyncio
import sys

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
    info_follow.EVERY_MS, info_follow.SETTLE_MS = _PACE
    info_follow._drop = _DROP


class _Unloadable:
    # test_relay_support.Unloadable's way (importing that module would load the relay into
    # this test's heap): while in sys.modules, importing a name from the module raises
    # MemoryError, as on a heap too cut up for its code
    def __getattr__(self, attr):
        raise MemoryError("memory allocation failed")


_PACE = (info_follow.EVERY_MS, info_follow.SETTLE_MS)
_DROP = info_follow._drop


def _paced(every_ms, settle_ms):
    # a shorter pace for a test: the module's constants, so it must stay loaded meanwhile
    # (a reloaded module has its own); _close() undoes it
    info_follow.EVERY_MS, info_follow.SETTLE_MS = every_ms, settle_ms
    info_follow._drop = lambda link: None
    sys.modules["ppmid.mqtt.info_follow"] = info_follow


def _han_info(han):
    return lambda: {"han": han.status, "detail": han.status_detail}


async def test_han_status_changes_republish_the_info_paced():
    _paced(600, 50)
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
    _paced(600, 50)
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
    _paced(300, 50)
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


async def test_the_code_goes_once_its_info_is_out_and_the_next_change_loads_it_again():
    # the module's own pace (250 ms settle; the second info waits for EVERY_MS, 5 s)
    info_follow.EVERY_MS, info_follow.SETTLE_MS = _PACE
    sys.modules["ppmid.mqtt.info_follow"] = info_follow
    han = ZigbeeHan(None, None, {})
    b, lk, task = await _online(_han_info(han))
    han.on_status = lk
    try:
        han._set_status("commission-failed", "E_COMMISSION_JOIN_REFUSED: not in the device log")
        await _until(lambda: len(_infos(b)) == 2, "the info after a HAN status change")
        await _until(lambda: "ppmid.mqtt.info_follow" not in sys.modules, "the module dropped once its info is out")
        assert "ppmid.modules" not in sys.modules
        assert lk._info_task is None and lk._info_at is not None   # its state outlives it, on the link
        han._set_status("running")
        assert "ppmid.mqtt.info_follow" in sys.modules and lk._info_task is not None
        await _until(lambda: _infos(b)[-1] == {"han": "running", "detail": ""}, "the next change's info")
        await _until(lambda: "ppmid.mqtt.info_follow" not in sys.modules, "the module dropped again")
        assert len(_infos(b)) == 3 and len(b.of(p.CONNECT)) == 1
    finally:
        await _close(b, lk, task)


async def test_a_change_whose_code_cannot_load_publishes_nothing_and_the_next_change_does():
    # a heap too cut up to load the module at a change: the HAN logs its on_status failure
    # (its hook's caller), nothing is pending, and the next change that loads publishes
    _paced(600, 50)
    han = ZigbeeHan(None, None, {})
    b, lk, task = await _online(_han_info(han))
    han.on_status = lk
    try:
        sys.modules["ppmid.mqtt.info_follow"] = _Unloadable()
        try:
            han._set_status("commissioning", "joining")
        finally:
            sys.modules["ppmid.mqtt.info_follow"] = info_follow
        assert han.status == "commissioning" and getattr(lk, "_info_task", None) is None
        await asyncio.sleep(0.3)
        assert len(_infos(b)) == 1
        han._set_status("running")
        await _until(lambda: _infos(b)[-1] == {"han": "running", "detail": ""}, "the next change's info")
    finally:
        await _close(b, lk, task)
