# The NFC service loop as the road's supervisor (nfc/service.py run()): an OSError from the
# bus, a MemoryError, a bug in a session and a chip that stops answering are counted and
# logged, followed by the documented back-off and a re-initialisation of the PN532; only a
# cancel ends the loop. A reader that misses the boot probe is probed again by the standby
# (nfc/standby.py) until it answers. The sleeps are recorded (no real waiting, no timing
# asserted).
# CPython and MicroPython.
import asyncio

from ppmid.nfc import service
from ppmid.nfc.errors import NfcError
from ppmid.nfc.pn532 import Target

VERSION = (0x32, 1, 6, 7)


class FlakyPN532:
    """A PN532 (driver level) whose polls follow `script`: None = no target, an exception
    class = raised once; then no target. `begin_fails`: begin() answers E_NFC_NOACK that
    many times first."""

    def __init__(self, script=(), begin_fails=0):
        self.script = list(script)
        self.begin_fails = begin_fails
        self.begins = 0
        self.polls = 0

    async def begin(self):
        self.begins += 1
        if self.begin_fails:
            self.begin_fails -= 1
            raise NfcError("E_NFC_NOACK", "PN532 did not acknowledge")
        return VERSION

    async def in_list_passive_target(self, timeout_ms=None):
        self.polls += 1
        step = self.script.pop(0) if self.script else None
        if step is None:
            return None
        if isinstance(step, Target):
            return step
        raise step("injected")

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        raise KeyError("a bug in a session")

    async def in_release(self, tg=0):
        pass


class _Intake:
    async def accept(self, env, via):
        raise AssertionError("nothing is relayed here")

    def result(self, id):
        return None


class _Sleeps:
    """Stands in for service.sleep_ms: records each wait and yields once."""

    def __init__(self):
        self.waits = []

    async def __call__(self, ms):
        self.waits.append(ms)
        await asyncio.sleep(0)


async def _run_until(svc, drv, polls, sleeps):
    saved = service.sleep_ms
    service.sleep_ms = sleeps
    try:
        task = asyncio.create_task(svc.run())
        for _ in range(2000):
            if drv.polls >= polls:
                break
            await asyncio.sleep(0)
        assert not task.done(), "the NFC loop ended by itself"
        task.cancel()
        try:
            await task
            raise AssertionError("a cancel must end the loop")
        except asyncio.CancelledError:
            pass
    finally:
        service.sleep_ms = saved


async def test_loop_survives_oserror_memoryerror_and_a_bug():
    log = []
    drv = FlakyPN532([None, OSError, None, MemoryError, None,
                      Target(1, b"\x00\x44", 0x00, b"\x04\x01\x02\x03\x04\x05\x06", b""), None])
    svc = service.NfcService(drv, _Intake(), log=log.append)
    sleeps = _Sleeps()
    await _run_until(svc, drv, 10, sleeps)
    st = svc.stats
    assert st["faults"] == 2 and st["memory_errors"] == 1, st   # OSError, the session's KeyError
    assert "KeyError" in st["last_fault"], st
    # a boot, then one re-initialisation after each of the three
    assert drv.begins == 4 and svc.ready, drv.begins
    assert any("OSError" in line and "re-initialised in 1000 ms" in line for line in log), log
    assert any("MemoryError" in line for line in log), log
    # back-off after the OSError and after the bug (each following a clean poll: 1 s);
    # the MemoryError waits only the idle time
    assert [w for w in sleeps.waits if w != svc.cfg["idle_ms"]] == [1000, 1000], sleeps.waits


async def test_backoff_doubles_to_30_s_while_the_chip_stays_silent():
    drv = FlakyPN532(begin_fails=8)
    svc = service.NfcService(drv, _Intake())
    sleeps = _Sleeps()
    await _run_until(svc, drv, 3, sleeps)
    assert sleeps.waits[:8] == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000], sleeps.waits
    assert svc.stats["chip_errors"] == 8 and drv.begins == 9 and svc.ready


async def test_repeated_faults_back_off_too():
    # a fault on every poll (the chip re-initialises fine each time) must not turn into a
    # fast loop: the back-off is reset only by a clean poll
    drv = FlakyPN532([OSError] * 7)
    svc = service.NfcService(drv, _Intake())
    sleeps = _Sleeps()
    await _run_until(svc, drv, 8, sleeps)
    assert sleeps.waits[:7] == [1000, 2000, 4000, 8000, 16000, 30000, 30000], sleeps.waits
    assert svc.stats["faults"] == 7


class _ReaderBoard:
    info = {"nfc": {"bus": "uart"}}


async def test_reader_missing_at_boot_is_probed_until_it_answers():
    # docs/nfc.md: a reader that misses the boot probe (powered up late, a brown-out) is
    # probed again with the back-off and the service is loaded once it answers
    import sys
    from ppmid import boot
    from ppmid.modules import unload
    from ppmid.nfc import standby
    cfg = {"limits": {"max_gbcs": 8192}, "nfc": dict(service.DEFAULTS)}
    drv = FlakyPN532(begin_fails=3)   # the boot probe and two more miss it
    unload("ppmid.nfc.service", under=False)   # to see when the standby loads it
    saved = boot._nfc_driver
    boot._nfc_driver = lambda board: drv
    stats = {}   # what info publishes (ppmid.app._info)
    try:
        road, state = await boot._nfc(_ReaderBoard(), cfg, _Intake(), stats)
    finally:
        boot._nfc_driver = saved
    assert state == "absent (E_NFC_NOACK, probing)" and road is not None, state
    assert drv.begins == 1 and "ppmid.nfc.service" not in sys.modules
    sleeps = _Sleeps()
    real_sleep = standby.sleep_ms
    standby.sleep_ms = sleeps
    try:
        task = asyncio.create_task(road)
        for _ in range(2000):
            if drv.polls:
                break
            assert drv.begins == 4 or "ppmid.nfc.service" not in sys.modules
            assert stats.get("probes", 0) == drv.begins - 1, (stats, drv.begins)
            await asyncio.sleep(0)
        assert drv.polls >= 1 and not task.done()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    finally:
        standby.sleep_ms = real_sleep
    assert sleeps.waits == [1000, 2000, 4000], sleeps.waits
    assert drv.begins == 4 and "ppmid.nfc.service" in sys.modules
    # the service counts in the same dict: info shows the road from boot on
    assert stats["probes"] == 3 and stats["polls"] >= 1 and stats["faults"] == 0, stats



class _BrokenBus(FlakyPN532):
    async def begin(self):
        self.begins += 1
        raise OSError(5)   # EIO from the UART at boot


async def test_bus_error_at_boot_probe_does_not_stop_the_boot():
    from ppmid import boot
    cfg = {"limits": {"max_gbcs": 8192}, "nfc": dict(service.DEFAULTS)}
    drv = _BrokenBus()
    saved = boot._nfc_driver
    boot._nfc_driver = lambda board: drv
    try:
        road, state = await boot._nfc(_ReaderBoard(), cfg, _Intake(), {})
    finally:
        boot._nfc_driver = saved
    assert road is not None and state.startswith("absent (OSError(5") and state.endswith(", probing)"), state
    road.close()   # never started here


class _Relay:
    class validator:
        profile = ("prepay", 25)

    def info(self, app=None):
        # as Relay.info: the relay's part alone, or with the app's (board, HAN, clock, heap,
        # update, NFC) the whole payload, put together by relay/report.gateway; the relay's
        # own counters are a stand-in's here
        from ppmid.relay import report
        if app is None:
            return {"state": "running"}
        relays_part = report.info
        report.info = lambda relay: {"state": "running"}
        try:
            return report.gateway(self, app)
        finally:
            report.info = relays_part


class _Han:
    status = "running"
    module = None
    commission = None


class _Clock:
    source = "sntp"
    synced_at = 1


class _Board:
    name = "emulated"


def test_info_carries_the_nfc_counters():
    # the dict the road counts in is the one info publishes (docs/mqtt.md "info")
    from ppmid import app
    stats = {}
    info = app._info(_Board(), _Relay(), _Han(), _Clock(), None, stats)
    svc = service.NfcService(FlakyPN532(), _Intake(), stats=stats)
    svc.stats["faults"] += 1
    d = info()
    assert d["nfc"] is stats and d["nfc"]["faults"] == 1 and d["nfc"]["polls"] == 0, d
    assert "nfc" not in app._info(_Board(), _Relay(), _Han(), _Clock())()   # no reader named


# ---- the status LED: a tap's outcome, the only answer a tag's holder gets ------------------
class _Led:
    def __init__(self, fail=False):
        self.changes = []
        self.fail = fail

    def on(self):
        if self.fail:
            raise OSError(5)
        self.changes.append(1)

    def off(self):
        self.changes.append(0)


async def _tap(outcome, led):
    """One poll that finds a target whose session ends with `outcome`; then the LED's
    blinks run to their end (the sleeps recorded, not waited)."""
    drv = FlakyPN532([Target(1, 0x0044, 0x20, b"\x04\x01\x02\x03", b"")])
    log = []
    svc = service.NfcService(drv, _Intake(), log=log.append, led=led)

    async def session(target):
        return dict(outcome)
    svc._session = session
    sleeps = _Sleeps()
    saved = service.sleep_ms
    service.sleep_ms = sleeps
    try:
        got = await svc.poll_once()
        for _ in range(50):
            if not svc._showing:
                break
            await asyncio.sleep(0)
    finally:
        service.sleep_ms = saved
    assert got == outcome and not svc._showing
    return sleeps.waits, log


async def test_the_led_blinks_once_long_for_a_command_taken_and_three_short_for_a_refusal():
    led = _Led()
    waits, _ = await _tap({"outcome": "delivered", "id": "a", "code": None, "accepted": True}, led)
    assert led.changes == [1, 0] and waits == [800, 150]
    led = _Led()
    waits, _ = await _tap({"outcome": "rejected", "id": None, "code": "E_AUTH", "accepted": False}, led)
    assert led.changes == [1, 0] * 3 and waits == [150] * 6


async def test_a_failing_led_is_logged_and_the_road_goes_on():
    led = _Led(fail=True)
    waits, log = await _tap({"outcome": "delivered", "id": "a", "code": None, "accepted": True}, led)
    assert any("status LED" in line for line in log), log
    # no LED at all: nothing shown, nothing fails
    drv = FlakyPN532([Target(1, 0x0044, 0x20, b"\x04\x01\x02\x03", b"")])
    svc = service.NfcService(drv, _Intake())

    async def session(target):
        return {"outcome": "rejected", "id": None, "code": "E_AUTH", "accepted": False}
    svc._session = session
    assert (await svc.poll_once())["outcome"] == "rejected" and not svc._showing


def test_the_service_loaded_after_the_boot_does_not_keep_the_boot_only_config():
    # a reader that answers late has the standby load ppmid.nfc.service after the app
    # dropped ppmid.config: the service's import of the nfc defaults must not bring the
    # config module back for the uptime (~6 KB of 32-bit heap)
    import sys
    import ppmid.nfc
    from ppmid.modules import unload
    old = sys.modules["ppmid.nfc.service"]
    unload("ppmid.config", "ppmid.nfc.service")
    try:
        from ppmid.nfc import service as late
        assert late is not old and "ppmid.config" not in sys.modules
        assert late.DEFAULTS == old.DEFAULTS and late.DEFAULTS
        # loaded while the boot still holds the config: it stays for the boot
        from ppmid import config  # noqa: F401
        unload("ppmid.nfc.service")
        from ppmid.nfc import service as early  # noqa: F401
        assert "ppmid.config" in sys.modules
    finally:
        sys.modules["ppmid.nfc.service"] = old
        ppmid.nfc.service = old
