"""GBCS codec benchmarks, run under the MicroPython unix port (the emulated board's
interpreter, heap 256K): decode + validate throughput and bytes allocated per message.

Goal (issue 3): validating a 1 KB command costs < 1% of its UART wire time at 115200 baud
(1024 * 10 bits / 115200 = 89 ms, so < 0.89 ms) and allocates < 512 bytes.
Allocation is measured with gc disabled as the gc.mem_free() drop per call, averaged.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WIRE_MS_1K = 1024 * 10 / 115200 * 1000

MP_SCRIPT = r"""
import sys, gc, time, json
sys.path.insert(0, FIRMWARE)
from ppmid import config
from ppmid.gbcs import build, decode, Validator
from ppmid.gbcs.validate_host import MemoryCounterStore
ESME = b"\x00\xdb\x12\x34\x56\x78\x90\xa0"
SUPPLIER = b"\x90\xb3\xd5\x1f\x30\x01\x00\x00"
cfg = config.validate({"gateway": "00DB1234567890A4", "han": {"devices": [
    {"eui": "00DB1234567890A0", "type": "ESME"}, {"eui": "00DB1234567890A1", "type": "GSME"}]}})
store = MemoryCounterStore()
v = Validator(cfg, store)
content = b"\xd9" + bytes(1024 - 128 - 1)  # 1024-byte command with a 64-byte signature
msg = build.build_command(1001, SUPPLIER, ESME, 0x0019, content, signature=bytes(64))
v.commit(v.check(msg))
store.put("90B3D51F30010000:00DB1234567890A0", 1000)   # keep the check passing every time
N = NITER

def timed(fn):
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(N):
        fn(msg)
    return time.ticks_diff(time.ticks_us(), t0) / N

def alloc(fn, reps=50):
    fn(msg)
    gc.collect()
    gc.disable()
    f0 = gc.mem_free()
    for _ in range(reps):
        fn(msg)
    f1 = gc.mem_free()
    gc.enable()
    return (f0 - f1) / reps

def check(b):
    return v.check(b)

def check_commit(b):
    m = v.check(b)
    v.commit(m)
    store.put("90B3D51F30010000:00DB1234567890A0", 1000)

def dec(b):
    return decode(b)

def dec_fields(b):
    m = decode(b)
    return (m.cra, m.counter, m.message_code, m.recipient, m.content, m.signature, m.mac)

out = {"len": len(msg)}
for name, fn in (("check", check), ("check_commit", check_commit), ("decode", dec), ("decode_fields", dec_fields)):
    out[name + "_us"] = timed(fn)
    out[name + "_alloc"] = alloc(fn)
print("@@BENCH " + json.dumps(out))
"""


def _micropython():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    venv = os.path.join(ROOT, ".venv", "bin", "micropython")
    return venv if os.path.exists(venv) else "micropython"


def run_micropython(niter=2000):
    script = MP_SCRIPT.replace("FIRMWARE", repr(os.path.join(ROOT, "firmware"))).replace("NITER", str(niter))
    proc = subprocess.run([_micropython(), "-X", "heapsize=256K", "-c", script], capture_output=True,
                          text=True, timeout=300)
    for line in proc.stdout.splitlines():
        if line.startswith("@@BENCH "):
            return json.loads(line[8:])
    raise RuntimeError("micropython benchmark failed: %s %s" % (proc.stdout[-2000:], proc.stderr[-2000:]))


def run_cpython(niter=20000):
    sys.path.insert(0, ROOT)
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid import config
    from ppmid.gbcs import build, Validator
    from ppmid.gbcs.validate_host import MemoryCounterStore
    cfg = config.validate({"gateway": "00DB1234567890A4",
                           "han": {"devices": [{"eui": "00DB1234567890A0", "type": "ESME"}]}})
    v = Validator(cfg, MemoryCounterStore())
    msg = build.build_command(1001, bytes.fromhex("90B3D51F30010000"), bytes.fromhex("00DB1234567890A0"),
                              0x0019, b"\xd9" + bytes(895), signature=bytes(64))
    t0 = time.perf_counter()
    for _ in range(niter):
        v.check(msg)
    return (time.perf_counter() - t0) / niter * 1e6, len(msg)


def run():
    r = run_micropython()
    n = r["len"]
    us = r["check_us"]
    budget_us = WIRE_MS_1K * 1000 * 0.01
    rows = [
        {"name": "mp check 1KB command: time", "value": us, "unit": "us", "goal": "< %.0f" % budget_us,
         "ok": us < budget_us, "note": "%d-byte command; 1%% of its 115200-baud wire time (%.1f ms)" % (n, WIRE_MS_1K)},
        {"name": "mp check: share of wire time", "value": us / (WIRE_MS_1K * 1000) * 100, "unit": "%",
         "goal": "< 1", "ok": us / (WIRE_MS_1K * 1000) * 100 < 1},
        {"name": "mp check throughput", "value": 1e6 / us, "unit": "msg/s"},
        {"name": "mp check throughput (bytes)", "value": n * 1e6 / us / 1e6, "unit": "MB/s"},
        {"name": "mp check 1KB command: allocated", "value": r["check_alloc"], "unit": "B/msg", "goal": "< 512",
         "ok": r["check_alloc"] < 512, "note": "gc disabled, gc.mem_free() drop per call (64-bit unix port)"},
        {"name": "mp check+commit: time", "value": r["check_commit_us"], "unit": "us"},
        {"name": "mp check+commit: allocated", "value": r["check_commit_alloc"], "unit": "B/msg",
         "note": "commit builds the counter-store key and stores the counter"},
        {"name": "mp decode: time", "value": r["decode_us"], "unit": "us"},
        {"name": "mp decode: allocated", "value": r["decode_alloc"], "unit": "B/msg"},
        {"name": "mp decode + read 7 fields: allocated", "value": r["decode_fields_alloc"], "unit": "B/msg",
         "note": "each memoryview field read allocates a small view object"},
    ]
    cp_us, _ = run_cpython()
    rows.append({"name": "cpython check 1KB command: time", "value": cp_us, "unit": "us",
                 "note": "host tools reference"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
