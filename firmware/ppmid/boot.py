# The gateway's start-up, for app.run: config -> journal -> validator -> HAN link -> relay ->
# MQTT link (-> NFC when the board has a reader), one subsystem at a time with a
# gc.collect() in between, so their load garbage never piles up; the NFC service is
# imported only when the board has a reader and it answers at boot.
# Boot-only: app.run drops this module once everything runs (drop()), so nothing started
# here may keep a function defined here (it would hold this module's globals, and so all
# of it): the closures the running gateway keeps come from app.py.
import gc

import asyncio
from micropython import const
from ppmid.modules import unload
from ppmid.app import WDT_TIMEOUT_MS, VERSION, banner, _is, _info
from ppmid.clock import sleep_ms

# A collect after every this many bytes allocated, from the start of the boot on (it stays
# set once this module is dropped). Without it MicroPython collects only when an allocation
# fails: the garbage of a boot step or a command fills the heap from below, the objects that
# stay are placed above it, and once it is collected they lie scattered through the free
# heap, left in pieces too small for a large buffer (an update's offer, the MQTT receive
# buffer growing). On the emulated board (bench/bench_frag.py, docs/memory.md
# "Fragmentation"), after 20 commands in a 384K heap: the largest free block 7.8 KB of
# 158 KB free without it, 142 KB with it. The cost: a collect per 8 KB allocated.
_GC_THRESHOLD = const(8192)
_FEED_INTERVAL_MS = const(1000)


def status(text):
    # one console line per lifecycle change; host tools grep for "PPMID status: "
    print("PPMID status: " + text)


def _mark(board, stage):
    # boot heap trace: free heap after each subsystem (docs/emulate.md)
    gc.collect()
    print("PPMID boot: %s free=%d" % (stage, board.mem_free()))


def _load_config(board):
    """(cfg, credentials, senders or None) or raise ConfigError."""
    from ppmid import config
    root = board.fs_root.rstrip("/")
    cfg = config.load(root + "/config.json")
    del cfg["update"]  # read again from flash when an update comes (ppmid.update.service)
    from ppmid.mqtt.credentials import load_credentials
    creds = load_credentials(root)
    # the running app keeps the config dict: the users section is needed only here
    users = cfg.pop("users")
    if not users:
        return cfg, creds, None
    # keys per DCC User, only when the config has the section: the module is not even
    # imported otherwise, and is dropped again when load() finds the legacy key alone
    from ppmid.relay.senders import load
    senders = load(root, users, creds[3])
    if senders is None:
        unload("ppmid.relay.senders")
    return cfg, creds, senders


def _start_sntp(board, cfg, clock, link):
    """The SNTP client task, when Wi-Fi is configured and servers are named (the module is
    not even imported otherwise). Each sync republishes the info (clock, clock_synced_at)."""
    s = cfg["sntp"]
    if not (cfg.get("wifi") or {}).get("ssid") or not s["servers"]:
        print("PPMID clock: %s, no sntp" % clock.source)
        return
    from ppmid.sntp_task import SntpClient, republisher
    gc.collect()
    print("PPMID clock: %s, sntp from %s" % (clock.source, ", ".join(s["servers"])))
    asyncio.create_task(SntpClient(s, clock, board.set_time, wlan=board.wlan, log=print,
                                   on_set=republisher(link), dns=cfg["dns"]).run())


def _update_state(board):
    """(the update pointer's summary for the info, whether it needs settling: a set on
    probation or a result not reported yet); (None, False) on a gateway never updated,
    which then imports nothing of ppmid.update."""
    root = board.fs_root.rstrip("/")
    try:
        import os
        os.stat(root + "/upd/state.json")
    except OSError:
        return None, False
    from ppmid.update import slots
    st = slots.state(root)
    summary = slots.summary(st)
    if summary is None:  # the replay floors alone (what a deploy keeps): nothing to say
        unload("ppmid.update")
        gc.collect()
        return None, False
    if "image" in summary and hasattr(board, "image_slots"):
        img = board.image_slots()  # which partition the bootloader booted (info "update")
        summary["image"] = dict(summary["image"], running=img.running() if img is not None else None)
    settle = "probation" in st or not (st.get("last") or {}).get("reported", True)
    unload("ppmid.update")
    gc.collect()
    return summary, settle


def _boot_ok(board):
    # the app started: the row of failed boots that leads to the safe mode ends (main.py)
    import os
    try:
        os.remove(board.fs_root.rstrip("/") + "/upd/boots")
    except OSError:
        pass


def _settle_update(board, han, link, summary):
    """Confirm a set on probation, or report the last update's result (ppmid.update.report,
    which forgets itself once done)."""
    from ppmid.update.report import settle
    asyncio.create_task(settle(board.fs_root.rstrip("/"), VERSION, han, link, summary,
                               images=getattr(board, "image_slots", None)))


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
        return PN532(I2cTransport(board.nfc_i2c(), spec.get("addr", 0x24)))
    return None


# Modules only the boot needs besides this one: the config checks (the app keeps the
# validated dict), the message-code table and the command profiles the validator builds
# its allow-lists from, the users section's checks, the journal's recovery scan and the
# relay's recovery, the MQTT credentials' loading and ppmid.modules (the dropping itself).
# Dropped once the app runs; whatever imports one later gets it loaded again.
BOOT_ONLY = ("ppmid.config", "ppmid.zigbee.commission", "ppmid.zigbee.installcode", "ppmid.zigbee.keyest",
             "ppmid.zigbee.ezsp_cbke", "ppmid.gbcs.codes", "ppmid.gbcs.profiles", "ppmid.relay.users_config",
             "ppmid.relay.journal_scan", "ppmid.relay.recovery", "ppmid.mqtt.credentials", "ppmid.modules",
             "ppmid.dns_lookup")


async def _nfc(board, cfg, relay, stats):
    """(the NFC road's coroutine or None, its word for the status line). When the board
    names a reader that answers at boot: the polling service, whose code (~45 KB of heap on
    the emulated board) is imported only then. When the reader does not answer: the
    standby (ppmid.nfc.standby), which probes it with back-off and loads the service once
    it answers; only the driver stays in memory meanwhile. `stats`: the dict the road
    counts in (published in info)."""
    from ppmid.errors import PpmidError
    try:
        drv = _nfc_driver(board)
        if drv is None:
            return None, "none"
        try:
            ver = await drv.begin()
        except Exception as exc:   # no answer (NfcError), or an OSError from the bus
            from ppmid.nfc import standby
            return (standby.run(drv, relay, cfg["limits"]["max_gbcs"], cfg["nfc"], print, stats,
                                getattr(board, "led", None)),
                    "absent (%s, probing)" % (getattr(exc, "code", None) or repr(exc),))
        from ppmid.nfc import service
        svc = service.NfcService(drv, relay, max_gbcs=cfg["limits"]["max_gbcs"], log=print,
                                 stats=stats, led=getattr(board, "led", None), **service.settings(cfg))
        svc.version = ver
        svc.ready = True
        return svc.run(), "PN532 v%d.%d" % (ver[1], ver[2])
    except PpmidError as exc:
        unload("ppmid.nfc")
        gc.collect()
        return None, "error (%s)" % (exc,)


def wifi_check(board):
    """The relay's health check of the MQTT road: (name, up, grace_s). The Wi-Fi station,
    not the broker: a reset is the cure for a wedged Wi-Fi stack, but a broker or WAN away
    for hours, what the premises this gateway serves see (review 94), must not reset the
    board every 30 minutes while the NFC and wired roads are served. An access point away
    for 30 minutes still resets it: from the station alone the two look the same."""
    return ("wifi", board.wlan.isconnected, 1800)


def client_check(link):
    """The relay's health check of the MQTT client's task beside wifi_check: down only once
    that task has ended (an exception outside the client's own retries, e.g. a MemoryError
    while it notes one): a client that backs off through a broker or WAN outage for hours
    is up. Nothing else would notice a dead client while Wi-Fi is up (review_w5-3): after
    the grace, as long as the HAN's, the watchdog resets the board."""
    return ("mqtt", link.running, 600)


async def start(board):
    """Start everything (in the order of docs/relay.md "Wiring"), print the status line and
    return the journal for app.run; None when the config is not usable (status printed)."""
    gc.threshold(_GC_THRESHOLD)
    from ppmid.errors import PpmidError
    _mark(board, "start")
    try:
        cfg, creds, senders = _load_config(board)
    except PpmidError as exc:  # ConfigError (E_CONFIG)
        status("config-error: %s" % (exc.message,))
        _boot_ok(board)  # up, waiting to be provisioned: not a failed boot
        return None
    update, settle = _update_state(board)
    _mark(board, "config")

    # the relay core and its journal (recovery reads the journal before anything starts)
    from ppmid.relay.journal import Journal, JournalCounterStore
    gc.collect()
    from ppmid.relay.core import Relay
    from ppmid.clock import Clock
    gc.collect()
    from ppmid.gbcs import Validator
    gc.collect()
    journal = Journal(board.fs_root.rstrip("/") + "/relay")
    journal.open()
    validator = Validator(cfg, JournalCounterStore(journal))
    if validator.profile[0] == "all":
        # the default route narrows nothing (docs/security.md "Defaults that narrow
        # nothing"); said here, in boot-only code, so the running app holds nothing for it
        print("PPMID profile: all (%d message codes relayed): han.profile narrows it" % validator.profile[1])
    _mark(board, "relay")

    from ppmid.zigbee.han import ZigbeeHan
    gc.collect()
    r, w = board.zigbee_uart().streams()
    if isinstance(cfg.get("zigbee"), dict):
        # where commissioning marks that key establishment completed (docs/zigbee.md)
        cfg["zigbee"]["state_path"] = board.fs_root.rstrip("/") + "/zigbee_commissioned"
    han = ZigbeeHan(r, w, cfg, log=print)
    eui = cfg["gateway"]
    # the board's clock: on the ESP32 (and the emulated board) it counts from 2000 and is
    # unset after a power cut until SNTP sets it; "rtc" when it was kept across a reset
    clock = Clock(board.time, board.clock_source())
    relay = Relay(cfg, journal, validator, han, None, clock, creds[3],
                  wdt=board.wdt(WDT_TIMEOUT_MS),   # fed by the relay, only while healthy
                  link_checks=[("han", _is(han, "status", "running"), 600)], senders=senders)
    _mark(board, "han")

    from ppmid.mqtt.link import Link
    gc.collect()

    # the NFC road's counters, in info from the first publish on (the road starts later)
    nfc_stats = {} if isinstance(board.info, dict) and board.info.get("nfc") else None
    try:
        link = Link(cfg, relay.accept, root=board.fs_root.rstrip("/"), track=board.wlan.track,
                    wlan=board.wlan, log=print, info=_info(board, relay, han, clock, update, nfc_stats),
                    credentials=creds)
    except PpmidError as exc:  # unusable certificates: no MQTT, the HAN and NFC still work
        status("config-error: %s" % (exc.message,))
        link = None
    creds = None
    if link is not None:
        relay.publisher = link.client
        relay.topics = link.topics  # the same names (Topics of the gateway's EUI): one set held, not two
        link.intake.update = (board, relay, link, VERSION)  # what the updater needs, once one comes
        relay.link_checks.append(wifi_check(board))
        relay.link_checks.append(client_check(link))
        han.on_status = link   # info follows the HAN status and commissioning (Link.__call__)
    _mark(board, "mqtt")

    wifi = cfg.get("wifi") or {}
    try:
        board.wlan.active(True)
        board.wlan.connect(wifi.get("ssid") or "", wifi.get("password") or "")
    except OSError as exc:
        print("PPMID wifi: connect failed: %r" % (exc,))

    from ppmid.relay.recovery import recover
    recover(relay)
    await han.start()
    relay.start()
    if link is not None:
        asyncio.create_task(link.run())
    _start_sntp(board, cfg, clock, link)
    st = cfg.pop("ch_clock")
    if st.pop("enabled") and clock.source != "host":
        # the clock from the CH's Time cluster until SNTP sets it (no WAN: for good); its
        # settings dict takes the reads' state too, from the first read on (ppmid.zigbee.chclock)
        from ppmid.app import _ch_clock
        asyncio.create_task(_ch_clock(han, clock, board.set_time, st, link))
    if settle and link is not None:
        _settle_update(board, han, link, update)
    _mark(board, "started")

    nfc, nfc_state = await _nfc(board, cfg, relay, nfc_stats)
    if nfc is not None:
        asyncio.create_task(nfc)
    _mark(board, "nfc")
    text = "running: gateway=%s han=%s mqtt=%s nfc=%s" % (
        eui, han.status, "on" if link is not None else "off", nfc_state)
    if "wired" in cfg:  # only when enabled (ppmid.wired.settings)
        from ppmid import wired
        text += " wired=" + wired.start(board, cfg, relay)
        _mark(board, "wired")
    _boot_ok(board)
    status(text)
    return journal


async def idle(board):
    """No usable config: the board stays up (REPL reachable for `ppmid provision`), the
    watchdog is fed so that there is no reboot loop. Here, not in app.py: a gateway that
    runs never needs it (app.run keeps this module only for this road)."""
    wdt = board.wdt(WDT_TIMEOUT_MS)
    banner(board)
    while True:
        wdt.feed()
        await sleep_ms(_FEED_INTERVAL_MS)


def drop():
    """Unload the boot-only modules and this one (app.run, once everything runs)."""
    # the board package itself: main.py's load() and read_definition(), run once; the
    # running Board's own module (ppmid.board.esp32 or .emulated) stays with its class
    unload("ppmid.board", under=False)
    for name in BOOT_ONLY + ("ppmid.boot",):
        unload(name)
        gc.collect()
