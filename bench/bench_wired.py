"""Wired road benchmark, under the MicroPython unix port (heap 256K): the deframer
(ppmid.wired.frames) on an 8 KB envelope frame fed in the road's 256-byte reads: time
against the frame's own wire time at 115200 baud, and bytes allocated per frame (gc off,
gc.mem_free() drop). The CRC-16 is most of it (a table lookup per byte).

Goal: deframing takes < 10% of the frame's wire time on the unix port, so that on an
ESP32 (roughly 30x slower, README) the road still keeps up with 115200 baud with room for
the other tasks; the CRC is spread over the reads (docs/wired.md), so no single step is
long either.
"""
import json
import os
import subprocess

from bench_gbcs import _micropython

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BAUD = 115200

MP_SCRIPT = r"""
import sys, gc, time, json
sys.path.insert(0, FIRMWARE)
from ppmid.wired import frames as F
PAYLOAD = 73 + 8192
frame = F.encode(F.T_ENVELOPE, 1, bytes((i * 7) & 0xFF for i in range(PAYLOAD)))
mv = memoryview(frame)
d = F.Deframer(PAYLOAD)
N = NITER

def one():
    pos = 0
    n = len(mv)
    got = None
    while pos < n:
        end = pos + 256 if pos + 256 < n else n
        chunk = mv[pos:end]
        p = 0
        while p < len(chunk):
            used, ev = d.feed(chunk[p:], 0)
            p += used
            if ev is not None:
                got = ev
        pos = end
    return got

assert isinstance(one(), F.Frame)
gc.collect()
t0 = time.ticks_us()
for _ in range(N):
    one()
us = time.ticks_diff(time.ticks_us(), t0) / N
gc.collect()
gc.disable()
f0 = gc.mem_free()
for _ in range(5):
    one()
f1 = gc.mem_free()
gc.enable()
print("@@BENCH " + json.dumps({"len": len(frame), "us": us, "alloc": (f0 - f1) / 5}))
"""


def run(niter=20):
    script = MP_SCRIPT.replace("FIRMWARE", repr(os.path.join(ROOT, "firmware"))).replace("NITER", str(niter))
    proc = subprocess.run([_micropython(), "-X", "heapsize=256K", "-c", script], capture_output=True,
                          text=True, timeout=300)
    r = None
    for line in proc.stdout.splitlines():
        if line.startswith("@@BENCH "):
            r = json.loads(line[8:])
    if r is None:
        raise RuntimeError("micropython benchmark failed: %s %s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    wire_us = r["len"] * 10 / BAUD * 1e6
    share = r["us"] / wire_us * 100
    return [
        {"name": "mp wired deframe 8KB frame: time", "value": r["us"], "unit": "us",
         "note": "%d-byte frame in 256-byte reads; its wire time at %d baud is %.0f ms" % (r["len"], BAUD, wire_us / 1000)},
        {"name": "mp wired deframe: share of wire time", "value": share, "unit": "%", "goal": "< 10",
         "ok": share < 10, "note": "unix port; an ESP32 is roughly 30x slower"},
        {"name": "mp wired deframe: throughput", "value": r["len"] / r["us"], "unit": "MB/s"},
        {"name": "mp wired deframe 8KB frame: allocated", "value": r["alloc"], "unit": "B/frame",
         "note": "gc disabled, gc.mem_free() drop per frame (memoryview slices per read, the Frame)"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
