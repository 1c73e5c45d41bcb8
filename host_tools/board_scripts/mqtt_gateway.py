# A MicroPython program for tests and benchmarks (host_tools.mqtt_tools.GATEWAY_SCRIPT):
# the real firmware link (ppmid.mqtt.link) with a small durable accept hook (a journal
# file, one id per line, fsync'd by close) standing in for the relay, behind the envelope
# checks the relay makes in the app (`verified` below).
# argv: FIRMWARE_DIR ROOT [MODES], MODES comma-separated: fail:N (accept raises N times),
# slow:MS, wifi:FILE (Wi-Fi shim). It answers each accepted command with an `accepted`
# status (a redelivered id is journaled and answered again) and prints "ACCEPT id" /
# "STATE ..." lines for tests.
import sys
sys.path.insert(0, sys.argv[1])
import asyncio
from ppmid import config
from ppmid.errors import PpmidError, E_CLOCK
from ppmid.mqtt.link import Link
from ppmid.mqtt.credentials import load_credentials
from ppmid.clock import Clock, SET_AFTER
from ppmid.mqtt.contract import status_json
from ppmid.mqtt.link_host import STATS


ROOT = sys.argv[2]
MODES = {}
for m in (sys.argv[3] if len(sys.argv) > 3 else "").split(","):
    if ":" in m:
        MODES[m.split(":", 1)[0]] = m.split(":", 1)[1]
JOURNAL = ROOT + "/journal.log"
fails = [int(MODES.get("fail", 0))]
slow = int(MODES.get("slow", 0))
wlan = None
if "wifi" in MODES:  # the emulated board's Wi-Fi shim, its access point = this file
    from ppmid.board.emulated import WLAN
    wlan = WLAN(open(MODES["wifi"], "rb"))
    wlan.active(True)
    wlan.connect("test-ap")


_CLOCK = Clock()


def unix_now():
    """Unix seconds, or None while the clock is obviously not set (before 2024)."""
    t = _CLOCK.time()
    return t if t >= SET_AFTER else None


def verified(accept, key, now=unix_now):
    """Wrap an accept hook with the envelope checks (mac, then expiry) in their order,
    as the relay makes them in the app. A command with `expires` is refused with E_CLOCK
    while the clock is unset: a stale command must not be relayed late."""
    async def accept_verified(env, via):
        t = now()
        env.verify(key, t)
        if env.expires is not None and t is None:
            raise PpmidError(E_CLOCK, "gateway clock is not set: cannot check expiry")
        await accept(env, via)
    return accept_verified


async def accept(env, via):
    if slow:
        await asyncio.sleep_ms(slow)
    if len(to_report) >= 32:  # like the relay's bounded queue (limits.queue)
        raise PpmidError("E_BUSY", "gateway queue full (32 commands waiting)")
    if fails[0] > 0:
        fails[0] -= 1
        print("FAIL", env.id)
        raise OSError(5, "journal write failed (test)")
    f = open(JOURNAL, "a")  # closed = on flash; a redelivered id is simply journaled again
    f.write(env.id + "\n")
    f.close()
    print("ACCEPT", env.id)
    # Like the relay: the journal holds the command, a single task reports statuses in
    # order (never one task per command: a burst must not exhaust the heap).
    to_report.append(env.id)
    report_wake.set()


to_report = []
report_wake = asyncio.Event()


async def reporter():
    while True:
        while to_report:
            # queue without waiting while the client has room (pipelined), else retry
            if await link.client.publish(link.topics.rsp, status_json(to_report[0], "accepted", 0), 1, False, False):
                to_report.pop(0)
            else:
                # not a drop: we keep it and retry (the client's counters: a list by index)
                link.client.stats[STATS.index("drops")] -= 1
                await asyncio.sleep_ms(5)
        report_wake.clear()
        await report_wake.wait()


async def run():
    asyncio.create_task(reporter())
    await link.run()


def main():
    global link
    try:
        cfg = config.load(ROOT + "/config.json")
        key = load_credentials(ROOT)[3]
        link = Link(cfg, verified(accept, key), ROOT, log=print, wlan=wlan,
                    track=wlan.track if wlan else None,
                    info=lambda: {"fw": "test", "board": "unix", "han": "none"})
    except PpmidError as exc:
        print("STATE config-error", exc)
        sys.exit(3)
    print("STATE starting")
    asyncio.run(run())


main()
