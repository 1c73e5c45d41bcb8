"""The public-key envelope option (docs/envelope.md "Signed envelopes"): how long the
gateway takes to check a DCC User's ECDSA P-256 signature on a 4 KB command, under the
MicroPython unix port (ppmid.envelope_sig.verifies: the digest of the covered bytes, then
ppmid.update.p256), and an ESP32 estimate. The signature is made here by `cryptography`.
The heap the check takes on the 32-bit gauge is bench_heap32's row
`heap32 peak 4KB command (p256 envelope)`."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import p256_timing as P  # noqa: E402

RUNS = 20

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
    med = P.median_ms(script, "envelope verify")
    return P.rows("envelope verify P-256 signature, 4 KB command", med,
                  "median of %d checks of a DCC User's signed envelope (%d-byte GBCS: digest, then ECDSA P-256 in "
                  "pure Python, ppmid.update.p256) under the MicroPython unix port, 256K heap" % (RUNS, gbcs_len))
