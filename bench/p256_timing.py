"""Timing the pure-Python P-256 verifier (ppmid.update.p256) under the MicroPython unix
port, and the ESP32 estimate beside it: shared by bench_update (manifests) and
bench_envelope_sig (DCC Users' signed envelopes)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from host_tools import boards  # noqa: E402

# An ESP32 (240 MHz Xtensa) runs MicroPython bytecode roughly 30 times slower than this
# host's unix port (the README's rule of thumb); big-integer arithmetic, with 32-bit words
# instead of 64, slower still: 30..150 times, a guess, not a measurement. The estimate row
# gives the slow end.
ESP32_FACTOR = (30, 150)


def median_ms(script, what):
    """Run script (it prints a JSON list of microseconds) under the unix port, 256K heap:
    the median in ms."""
    p = subprocess.run([boards.micropython_binary(), "-X", "heapsize=256K", "-c", script], capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("micropython %s benchmark failed: %s" % (what, (p.stderr or p.stdout)[-1500:]))
    us = sorted(json.loads(p.stdout))
    return us[len(us) // 2] / 1000.0


def rows(name, med, note):
    """The unix-port row `NAME (unix port)` and its `NAME (ESP32 estimate)`."""
    lo, hi = ESP32_FACTOR
    return [
        {"name": name + " (unix port)", "value": round(med, 2), "unit": "ms", "note": note},
        {"name": name + " (ESP32 estimate)", "value": round(med * hi), "unit": "ms",
         "note": "ESTIMATE, not measured: the unix-port figure x %d..%d (%d..%d ms); nothing here ran on an ESP32"
                 % (lo, hi, med * lo, med * hi)},
    ]
