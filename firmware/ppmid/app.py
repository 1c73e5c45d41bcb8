# The gateway application: config -> journal -> validator -> HAN link -> relay -> MQTT link
# (-> NFC when the board has a reader), wired as docs/relay.md "Wiring" says. Tools and
# tests wait for the ready banner (host_tools/emuboard.py BANNER_RE): banner(board) is
# printed once everything is started, and also when the board has no usable config (it
# stays up, links down, for re-provisioning: docs/config.md).
#
# Memory: on the emulated board the whole firmware's bytecode lives in the heap (an ESP32
# image freezes it into flash instead; docs/emulate.md). Modules are imported here, inside run(), one subsystem at a time with a
# gc.collect() in between, so their compile/load garbage never piles up; the NFC service is
# imported only when the board has a reader and it answers at boot. A heap task watches
# the free heap and prints `PPMID heap: free=N min=N` (live heap, after a collect) when
# the minimum moves (host tools report it).
import gc

import asyncio
from ppmid import VERSION
from ppmid.clock import sleep_ms

WDT_TIMEOUT_MS = 30000  # long enough for an mpremote session after Ctrl-C
FEED_INTERVAL_S = 1
HEAP_SAMPLE_MS = 250    # the heap task's period: a glance at gc.mem_free() (no collect)
HEAP_COLLECT_MS = 1000  # at most one gc.collect() this often, and only when it may show a new minimum
HEAP_REPORT_S = 30      # a heap line (after a collect) at least this often, even when nothing changed
FLASH_REPORT_S = 2      # journal write figures at most this often, when they change

heap = {"free": 0, "min": None, "size": 0}


def banner(board):
    gc.collect()
    print("PPMID ready: version=%s board=%s free_heap=%d" % (VERSION, board.name, board.mem_free()))


def status(text):
    # one console line per lifecycle change; host tools grep for "PPMID status: "
    print("PPMID status: " + text)


def _mark(board, stage):
    # boot heap trace: free heap after each subsystem (docs/emulate.md)
    gc.collect()
    print("PPMID boot: %s free=%d" % (stage, board.mem_free()))


def _sample_heap(board):
    gc.collect()
    free = board.mem_free()
    heap["free"] = free
    if heap["min"] is None or free < heap["min"]:
        heap["min"] = free
        return True
    return False


async def _heap_task(board, journal=None):
    # The live heap is only known after a collect, and a collect stops everything else
    # (a few ms on an ESP32, more with PSRAM). So: glance at the free heap every
    # HEAP_SAMPLE_MS without collecting; collect only when the glance (live + garbage)
    # is below the lowest live figure seen, i.e. when the collect may show a new
    # minimum, at most every HEAP_COLLECT_MS; and every HEAP_REPORT_S for the report.
    # An idle gateway then hardly collects, a busy one at most once a second (it used to
    # be four times). Also reports the journal's flash writes (wear), at most every
    # FLASH_REPORT_S.
    n = 0
    collected = reported = 0
    written = -1
    flash_at = 0
    every = HEAP_COLLECT_MS // HEAP_SAMPLE_MS
    while True:
        n += 1
        low = heap["min"] is None or board.mem_free() < heap["min"]
        if (low and n - collected >= every) or n - reported >= HEAP_REPORT_S * 1000 // HEAP_SAMPLE_MS:
            collected = n
            if _sample_heap(board) or n - reported >= HEAP_REPORT_S * 1000 // HEAP_SAMPLE_MS:
                reported = n
                print("PPMID heap: free=%d min=%d" % (heap["free"], heap["min"]))
        if journal is not None and journal.bytes_written != written and \
                n - flash_at >= FLASH_REPORT_S * 1000 // HEAP_SAMPLE_MS:
            written = journal.bytes_written
            flash_at = n
            print("PPMID flash: journal_written=%d appends=%d syncs=%d compactions=%d" % (
                written, journal.appends, journal.syncs, journal.compactions))
        await sleep_ms(HEAP_SAMPLE_MS)


async def _idle(board, wdt):
    # no usable config: the board stays up (REPL reachable for `ppmid provision`), the
    # watchdog is fed so that there is no reboot loop
    while True:
        wdt.feed()
        await asyncio.sleep(FEED_INTERVAL_S)


def _load_config(board):
    """(cfg, envelope_key) or raise ConfigError."""
    from ppmid import config
    root = board.fs_root.rstrip("/")
    cfg = config.load(root + "/config.json")
    from ppmid.mqtt.link import load_credentials
    creds = load_credentials(root)
    return cfg, creds


def _start_sntp(board, cfg, clock, link):
    """The SNTP client task, when Wi-Fi is configured and servers are named (the module is
    not even imported otherwise). Each sync republishes the info (clock, clock_synced_at)."""
    s = cfg["sntp"]
    if not (cfg.get("wifi") or {}).get("ssid") or not s["servers"]:
        print("PPMID clock: %s, no sntp" % clock.source)
        return
    from ppmid.sntp import SntpClient
    gc.collect()

    async def synced():
        if link is not None and link.client.state == "online":
            await link.republish_info()

    print("PPMID clock: %s, sntp from %s" % (clock.source, ", ".join(s["servers"])))
    asyncio.create_task(SntpClient(s, clock, board.set_time, wlan=board.wlan, log=print,
                                   on_set=synced).run())


def _nfc_driver(board):
    """A PN532 driver on the bus the board names (the transport modules only), or None."""
    spec = board.info.get("nfc") if isinstance(board.info, dict) else None
    bus = (spec or {}).get("bus")
    if bus == "uart":
        from ppmid.nfc.pn532 import PN532
        from ppmid.nfc.hsu import HsuTransport
        r, w = board.nfc_uart().streams()
        return PN532(HsuTransport(r, w))
    if bus == "i2c":
        from ppmid.nfc.pn532 import PN532
        from ppmid.nfc.i2c import I2cTransport
        return PN532(I2cTransport(board.nfc_i2c(), spec.get("address", 0x24)))
    return None


# Modules only the boot needs: the config checks (the app keeps the validated dict) and the
# message-code table the validator builds its allow-lists from. Dropped once the app runs;
# whatever imports one later gets it loaded again.
BOOT_ONLY = ("ppmid.config", "ppmid.gbcs.codes")


def _unload(prefix):
    # drop modules nobody uses any more, so that their code is collected: out of
    # sys.modules and off their parent package (an import binds a submodule there too,
    # which would keep it alive)
    import sys
    for name in list(sys.modules):
        if name == prefix or name.startswith(prefix + "."):
            del sys.modules[name]
            parent, _, leaf = name.rpartition(".")
            p = sys.modules.get(parent)
            if p is not None and getattr(p, leaf, None) is not None:
                delattr(p, leaf)
    gc.collect()


async def _nfc(board, cfg, relay):
    """The NFC polling service when the board has a reader and it answers at boot, else
    None. The service and the phone/tag code (~45 KB of heap on the emulated board) are
    imported only then: a board whose reader is absent or dead does not pay for them."""
    from ppmid.errors import PpmidError
    try:
        drv = _nfc_driver(board)
        if drv is None:
            return None, "none"
        try:
            ver = await drv.begin()
        except PpmidError as exc:
            drv = None
            _unload("ppmid.nfc")
            return None, "absent (%s)" % (exc.code,)
        from ppmid.nfc import service
        svc = service.NfcService(drv, relay, max_gbcs=cfg["limits"]["max_gbcs"], log=print,
                                 **service.settings(cfg))
        svc.version = ver
        svc.ready = True
        return svc, "PN532 v%d.%d" % (ver[1], ver[2])
    except PpmidError as exc:
        _unload("ppmid.nfc")
        return None, "error (%s)" % (exc,)


async def run(board):
    from ppmid.errors import PpmidError
    _mark(board, "start")
    try:
        cfg, creds = _load_config(board)
    except PpmidError as exc:  # ConfigError (E_CONFIG)
        status("config-error: %s" % (exc.message,))
        wdt = board.wdt(WDT_TIMEOUT_MS)
        banner(board)
        await _idle(board, wdt)
        return
    _mark(board, "config")

    # the relay core and its journal (recovery reads the journal before anything starts)
    from ppmid.relay.journal import Journal
    from ppmid.relay.counters import JournalCounterStore
    gc.collect()
    from ppmid.relay.core import Relay
    from ppmid.clock import Clock
    gc.collect()
    from ppmid.gbcs import Validator
    gc.collect()
    journal = Journal(board.fs_root.rstrip("/") + "/relay")
    journal.open()
    validator = Validator(cfg, JournalCounterStore(journal))
    _mark(board, "relay")

    from ppmid.zigbee.han import ZigbeeHan
    gc.collect()
    r, w = board.zigbee_uart().streams()
    han = ZigbeeHan(r, w, cfg, log=print)
    eui = cfg["gateway"]
    # the board's clock: on the ESP32 (and the emulated board) it counts from 2000 and is
    # unset after a power cut until SNTP sets it; "rtc" when it was kept across a reset
    clock = Clock(board.time, board.clock_source())
    relay = Relay(cfg, journal, validator, han, None, clock, creds[3],
                  wdt=board.wdt(WDT_TIMEOUT_MS),   # fed by the relay, only while healthy
                  link_checks=[("han", lambda: han.status == "running", 600)])
    _mark(board, "han")

    from ppmid.mqtt.link import Link
    gc.collect()

    def info():
        d = relay.info()
        d["fw"] = VERSION
        d["board"] = board.name
        d["han"] = han.status
        d["module"] = han.module
        d["heap_free"] = heap["free"]
        d["heap_min"] = heap["min"]
        d["clock"] = clock.source
        d["clock_synced_at"] = clock.synced_at
        return d

    try:
        link = Link(cfg, relay.accept, root=board.fs_root.rstrip("/"), track=board.wlan.track,
                    wlan=board.wlan, log=print, info=info, credentials=creds)
    except PpmidError as exc:  # unusable certificates: no MQTT, the HAN and NFC still work
        status("config-error: %s" % (exc.message,))
        link = None
    creds = None
    if link is not None:
        relay.publisher = link.client
        relay.link_checks.append(("mqtt", lambda: link.client.state == "online", 1800))
    _mark(board, "mqtt")

    wifi = cfg.get("wifi") or {}
    try:
        board.wlan.active(True)
        board.wlan.connect(wifi.get("ssid") or "", wifi.get("password") or "")
    except OSError as exc:
        print("PPMID wifi: connect failed: %r" % (exc,))

    relay.recover()
    await han.start()
    relay.start()
    if link is not None:
        asyncio.create_task(link.run())
    _start_sntp(board, cfg, clock, link)
    _mark(board, "started")

    nfc, nfc_state = await _nfc(board, cfg, relay)
    if nfc is not None:
        asyncio.create_task(nfc.run())
    _mark(board, "nfc")
    for name in BOOT_ONLY:
        _unload(name)
    _sample_heap(board)
    status("running: gateway=%s han=%s mqtt=%s nfc=%s" % (
        eui, han.status, "on" if link is not None else "off", nfc_state))
    banner(board)
    print("PPMID heap: free=%d min=%d" % (heap["free"], heap["min"]))
    await _heap_task(board, journal)
