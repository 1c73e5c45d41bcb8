# zigbee/rejoin.py's network watch (after_network_loss) when an attempt fails with
# something other than a link failure: it must try again, not end. Found with a
# gc.collect() in zigbee/commission.py's _drop: the heap it left behind made loading the
# commissioning code again for the rejoin raise MemoryError, and the watch ended for good
# (the gateway stayed off the HAN; docs/zigbee.md "Rejoin and re-commission"). A stand-in
# driver with the real rejoin and commissioning code. CPython and MicroPython.
import asyncio
import gc
import sys

from ppmid.errors import PpmidError
from ppmid.zigbee import rejoin as R
from ppmid.zigbee.han_counters import HAN

_RESETS = HAN.index("resets")

_ALREADY_JOINED = b"\x70"     # findAndRejoinNetwork refused (EmberStatus INVALID_CALL)


class _Link:
    connected = True


class _Ezsp:
    # findAndRejoinNetwork: the first `failures` calls raise what is given, the next one
    # finds the network back (as a module that joined by itself meanwhile answers)
    version = 13

    def __init__(self, han, failures):
        self.han = han
        self.failures = list(failures)
        self.calls = 0

    async def command(self, fid, params):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.han._net_up = True
        self.han._net_event.set()
        return _ALREADY_JOINED


class _Han:
    def __init__(self, failures=(), backoff_max_s=2):
        self.commission_settings = {"install_code": None, "rejoin_after_s": 1}
        self.backoff_max_s = backoff_max_s
        self.counters = [0] * len(HAN)   # the HAN link's, a list by index
        self.counters[_RESETS] = 1
        self._net_event = asyncio.Event()
        self._net_up = False
        self._up = True
        self.commission = None
        self._link = _Link()
        self._ezsp = _Ezsp(self, failures)
        self.statuses = []
        self.logged = []
        self._log = self.logged.append
        self.status_updates = 0

    def _logf(self, fmt, *args):
        self.logged.append(fmt % args)

    def _set_status(self, status, detail=""):
        self.statuses.append(status)

    def _update_status(self):
        self.status_updates += 1


async def _watch(han, limit_ms=8000):
    R.network_lost(han)
    task = R.network_task(han)
    assert task is not None
    waited = 0
    while R.network_task(han) is not None and waited < limit_ms:
        await asyncio.sleep(0.05)
        waited += 50
    if R.network_task(han) is not None:
        task.cancel()
    return task


def _drop_commission():
    # as a gateway commissioned at an earlier boot: the commissioning code not loaded
    from ppmid.modules import unload
    unload("ppmid.zigbee.commission", "ppmid.zigbee.keyest", "ppmid.zigbee.ezsp_cbke", "ppmid.zigbee.installcode")
    gc.collect()


async def test_a_memory_error_in_a_rejoin_is_tried_again_until_the_network_is_back():
    _drop_commission()
    han = _Han([MemoryError("memory allocation failed, allocating 4688 bytes")])
    await _watch(han)
    # the first attempt failed; the watch went on and the second one saw the network back
    assert han._ezsp.calls == 2, (han._ezsp.calls, han.logged)
    assert han.statuses.count("rejoining") == 2, han.statuses
    assert any(line.startswith("rejoin stopped: MemoryError") for line in han.logged), han.logged
    assert han._net_up and R.network_task(han) is None
    assert han._up and han.status_updates >= 1       # the driver's statuses are its own again


async def test_a_back_off_of_a_fraction_of_a_second_still_rejoins():
    # review_w5-1: with backoff_max_s 0.5 (the HAN link's options as a test or an old
    # config gives them) the third wait was wait_event_ms(ev, 500.0): on MicroPython a wait
    # with no time-out, so after two failed rejoins no third one came
    _drop_commission()
    han = _Han([MemoryError("x"), MemoryError("y")], backoff_max_s=0.5)
    await _watch(han)
    assert han._ezsp.calls == 3, (han._ezsp.calls, han.logged)
    assert han._net_up and R.network_task(han) is None


async def test_the_commissioning_code_failing_to_load_is_tried_again():
    # the failure seen: the import of the dropped commissioning code itself raising
    _drop_commission()
    han = _Han()

    class _Unloadable:
        def __getattr__(self, name):
            raise MemoryError("memory allocation failed, allocating 4688 bytes")

    sys.modules["ppmid.zigbee.commission"] = _Unloadable()
    try:
        R.network_lost(han)
        first = R.network_task(han)
        for _ in range(40):       # the first attempt, after rejoin_after_s (1 s)
            await asyncio.sleep(0.05)
            if han.logged:
                break
        assert han.logged and han.logged[0].startswith("rejoin stopped: MemoryError"), han.logged
        await asyncio.sleep(0)
        assert R.network_task(han) is first       # still watching
    finally:
        del sys.modules["ppmid.zigbee.commission"]     # the next attempt loads it
    for _ in range(100):
        if R.network_task(han) is None:
            break
        await asyncio.sleep(0.05)
    # the same watch loaded the code and rejoined (no second network_lost was needed)
    assert han._ezsp.calls == 1 and han._net_up and R.network_task(han) is None, (han._ezsp.calls, han.logged)


async def test_a_link_failure_still_ends_the_watch_for_the_supervisor():
    # the supervisor's bring-up after a module reset decides (it counts the reset, and
    # would cancel this task): no second rejoin from here
    _drop_commission()
    han = _Han()

    async def failing(fid, params):
        han._ezsp.calls += 1
        han.counters[_RESETS] += 1
        raise PpmidError("E_HAN_DOWN", "link lost")
    han._ezsp.command = failing
    await _watch(han)
    assert han._ezsp.calls == 1 and not han._net_up and R.network_task(han) is None, han.logged
    assert any(line.startswith("rejoin stopped: PpmidError") for line in han.logged), han.logged


async def test_the_network_back_by_itself_needs_no_rejoin():
    _drop_commission()
    han = _Han()
    R.network_lost(han)
    await asyncio.sleep(0)
    han._net_up = True
    han._net_event.set()
    await _watch(han)
    assert han._ezsp.calls == 0 and han.statuses == [] and R.network_task(han) is None
