"""Top-up round trip on the emulated board (host_tools.emulate: mosquitto + the deployed
firmware under MicroPython + the NCP/CH emulator with the emulated ESME, the Zigbee UART
paced both ways at 115200 baud): a top-up published on the cmd topic -> `topped-up` on the
rsp topic, one at a time, p50/p95. The emulated ESME answers at once (no air time), so
this is the gateway's path: MQTT + TLS, the checks, two journal syncs, the Consumer Top Up
out and its response back over the UART. The first top-up, which loads the top-up code,
is reported on its own."""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from host_tools import emulate as E  # noqa: E402
from host_tools import utrn as U  # noqa: E402

N = 20


def pct(vals, p):
    s = sorted(vals)
    k = max(1, -(-len(s) * p // 100))
    return s[int(k) - 1]


def one(emu, id, utrn):
    r = emu.replayer(15)
    r.connect()
    try:
        rep = r.run([{"at_ms": 0, "id": id, "utrn": utrn, "target": "esme", "via": "mqtt"}])
    finally:
        r.close()
    e = rep["per_id"].get(id) or {}
    if (e.get("final") or {}).get("status") != "topped-up":
        return None
    return e["latency_ms"]


def run():
    tmp = tempfile.mkdtemp(prefix="bench-topup-")
    cfg = {"limits": {"rate_per_s": 1000, "burst": 1000, "response_timeout_s": 15}}
    with E.Emulation(os.path.join(tmp, "emu"), overrides=cfg, log=None) as emu:
        first = one(emu, "first", U.test_utrn(1, "pennies", 100))
        lat = []
        for i in range(N):
            ms = one(emu, "tu%d" % i, U.test_utrn(2 + i, "pennies", 100 + i))
            if ms is not None:
                lat.append(ms)
        heap = emu.heap_figures()
    note = ("publish -> topped-up on the rsp topic, one at a time, n=%d of %d answered; emulated board, "
            "UART paced at 115200, the emulated ESME answering at once" % (len(lat), N))
    if not lat:
        return [{"name": "e2e top-up round trip p50", "value": None, "unit": "ms", "ok": False,
                 "note": "no top-up was answered"}]
    return [{"name": "e2e top-up round trip p50", "value": pct(lat, 50), "unit": "ms", "note": note},
            {"name": "e2e top-up round trip p95", "value": pct(lat, 95), "unit": "ms"},
            {"name": "e2e first top-up (loads the top-up code)", "value": first, "unit": "ms"},
            {"name": "e2e peak heap used, top-ups run", "value": heap.get("peak_used"), "unit": "bytes",
             "note": "emulated board (64-bit objects, the firmware's bytecode in the heap): not an ESP32 figure"}]
