# A reader the board names that did not answer the boot probe (powered up after the
# ESP32, a brown-out, a loose lead): probe it again with the re-initialisation back-off
# (1 s doubling to 30 s) until it answers, then load the NFC service and run it. Until then
# only the driver and its transport are in memory, not the service, phone and tag code
# (ppmid.boot._nfc): a board whose reader is missing pays for the probe alone.
import gc

from ppmid.clock import sleep_ms
from ppmid.nfc.pn532 import REINIT_FIRST_MS, REINIT_MAX_MS


async def run(drv, intake, max_gbcs, settings, log=None, stats=None, led=None):
    """Probe `drv` until it answers, then `NfcService(drv, intake, ...).run()` (forever).
    `settings`: the checked "nfc" config section; `stats`: the road's counters (info),
    where "probes" counts the standby's probes (the service's counters join once one
    answers). Only a cancel ends it."""
    if stats is None:
        stats = {}
    stats["probes"] = 0
    backoff = REINIT_FIRST_MS
    while True:
        await sleep_ms(backoff)
        stats["probes"] += 1
        try:
            version = await drv.begin()
            break
        except Exception:   # NfcError (no answer), an OSError from the bus: probe again
            pass
        backoff = min(backoff * 2, REINIT_MAX_MS)
    while True:
        try:
            from ppmid.nfc.service import NfcService
            svc = NfcService(drv, intake, max_gbcs=max_gbcs, log=log, stats=stats, led=led, **settings)
            break
        except MemoryError:   # a fragmented heap now: the reader waits, the gateway goes on
            if log:
                log("nfc: no room to load the NFC service; retry in %d ms" % REINIT_MAX_MS)
            gc.collect()
            await sleep_ms(REINIT_MAX_MS)
    svc.version = version
    svc.ready = True
    if log:
        log("nfc: PN532 v%d.%d answered probe %d: NFC on" % (version[1], version[2], stats["probes"]))
    await svc.run()
