"""The public-key envelope option (docs/envelope.md "Signed envelopes"): how long the
gateway takes to check a DCC User's ECDSA P-256 signature on a 4 KB command, under the
MicroPython unix port (ppmid.envelope_sig.verifies: the digest of the covered bytes, then
ppmid.update.p256), and an ESP32 estimate. The signature is made here by `cryptography`.
The heap the check takes on the 32-bit gauge is bench_heap32's row
`heap32 peak 4KB command (p256 envelope)`."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from host_tools import boards  # noqa: E402

RUNS = 20
# as bench_update's P-256 row: an ESP32 runs this 30..150 times slower than the unix port
# here (a guess for big-integer work, not a measurement); the row gives the slow end
ESP32_FACTOR = (30, 150)

SCRIPT = """
import sys, time, json
sys.path.insert(0, %r)
from binascii import unhexlify
from ppmid import envelope
from ppmid.envelope_sig import verifies
env = envelope.from_json_obj(json.loads(%r), 8192)
key = unhexlify(%r)
out = []
for i in range(%d):
    t = time.ticks_us()
    ok = verifies(key, env)
    out.append(time.ticks_diff(time.ticks_us(), t))
    assert ok
print(json.dumps(out))
"""


def run():
    from heap32 import gauge as G
    payload, gbcs_len = G.command_json(4096, signer=G.P256_SCALAR)
    script = SCRIPT % (os.path.join(ROOT, "firmware"), payload.decode(), G.p256_public_hex(), RUNS)
    p = subprocess.run([boards.micropython_binary(), "-X", "heapsize=256K", "-c", script], capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("micropython envelope verify benchmark failed: %s" % (p.stderr or p.stdout)[-1500:])
    us = sorted(json.loads(p.stdout))
    med = us[len(us) // 2] / 1000.0
    return [
        {"name": "envelope verify P-256 signature, 4 KB command (unix port)", "value": round(med, 2), "unit": "ms",
         "note": "median of %d checks of a DCC User's signed envelope (%d-byte GBCS: digest, then ECDSA P-256 in "
                 "pure Python, ppmid.update.p256) under the MicroPython unix port, 256K heap" % (RUNS, gbcs_len)},
        {"name": "envelope verify P-256 signature, 4 KB command (ESP32 estimate)", "value": round(med * ESP32_FACTOR[1]),
         "unit": "ms",
         "note": "ESTIMATE, not measured: the unix-port figure x %d..%d (%d..%d ms); nothing here ran on an ESP32"
                 % (ESP32_FACTOR[0], ESP32_FACTOR[1], med * ESP32_FACTOR[0], med * ESP32_FACTOR[1])},
    ]
