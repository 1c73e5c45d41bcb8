"""The firmware's own name lookup (firmware/ppmid/dns_lookup.py, docs/platform.md "Name
lookups") under the MicroPython unix port, against the emulation's DNS server on loopback
(host_tools/dns_server.py): how long a lookup takes, and the longest the event loop went
without running another task (a 10 ms ticker) during lookups that were answered and one
that was not (the resolver held: the lookup's two rounds, 3 x 500 ms, then E_DNS). A
blocking lookup would stall the loop for the whole wait; the ASH link to the Zigbee module
resends after 0.4 s without an acknowledgement. Not measured on an ESP32."""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host_tools import boards  # noqa: E402
from host_tools.dns_server import DnsServer  # noqa: E402

LOOKUPS = 50
STALL_GOAL_MS = 100

PROBE = """
import sys
sys.path.insert(0, %(firmware)r)
import asyncio, json
from ppmid import dns_lookup
from ppmid.clock import ticks_ms, ticks_diff

async def main():
    stall = [0]
    async def ticker():
        last = ticks_ms()
        while True:
            await asyncio.sleep_ms(10)
            now = ticks_ms()
            stall[0] = max(stall[0], ticks_diff(now, last))
            last = now
    asyncio.create_task(ticker())
    await asyncio.sleep_ms(50)
    times = []
    for _ in range(%(n)d):
        t0 = ticks_ms()
        await dns_lookup.resolve("broker.emulated", {"servers": ["127.0.0.1"], "port": %(port)d, "timeout_ms": 500}, None, None)
        times.append(ticks_diff(ticks_ms(), t0))
    t0 = ticks_ms()
    try:
        await dns_lookup.resolve("broker.emulated", {"servers": ["127.0.0.1"], "port": %(held)d, "timeout_ms": 500}, None, None)
        failed = None
    except Exception as exc:
        failed = ticks_diff(ticks_ms(), t0)
    print("@@DNS " + json.dumps({"times": times, "failed_ms": failed, "stall_ms": stall[0]}))

asyncio.run(main())
"""


def run():
    exe = boards.micropython_binary()
    with DnsServer({"broker.emulated": "127.0.0.1"}) as srv, DnsServer({}, hold=True) as held:
        p = subprocess.run([exe, "-X", "heapsize=256K", "-c",
                            PROBE % {"firmware": os.path.join(ROOT, "firmware"), "n": LOOKUPS,
                                     "port": srv.port, "held": held.port}],
                           capture_output=True, text=True, timeout=120)
    lines = [x for x in p.stdout.splitlines() if x.startswith("@@DNS ")]
    if not lines:
        raise RuntimeError("the lookup probe failed: %s" % (p.stderr or p.stdout)[-500:])
    got = json.loads(lines[-1][6:])
    ms = statistics.median(got["times"])
    return [
        {"name": "dns_lookup_ms", "value": ms, "unit": "ms",
         "note": "median of %d lookups (max %d) by ppmid.dns_lookup under the unix port, answered by "
                 "host_tools/dns_server.py on loopback; includes the 20 ms poll of the answer's wait"
                 % (len(got["times"]), max(got["times"]))},
        {"name": "dns_lookup_unanswered_ms", "value": got["failed_ms"], "unit": "ms",
         "note": "one lookup of a silent resolver, timeout_ms 500: two rounds (500 + 1000 ms), then E_DNS"},
        {"name": "dns_lookup_loop_stall_ms", "value": got["stall_ms"], "unit": "ms",
         "goal": "<= %d" % STALL_GOAL_MS, "ok": got["stall_ms"] <= STALL_GOAL_MS,
         "note": "the longest gap of a 10 ms ticker task during all of those lookups (the loop kept running; "
                 "a blocking lookup would show the whole wait)"},
    ]
