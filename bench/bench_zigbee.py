"""ASH + EZSP codec throughput: our firmware codec under the MicroPython unix port (the
emulated board's interpreter, viper byte loops) and under CPython, side by side with
bellows' codec under CPython, in the same run.

Workload: a v13 sendUnicast of an 82-byte tunnel payload (the module's payload limit),
EZSP-framed, ASH-randomised, CRC'd and stuffed (encode); the same wire bytes through the
streaming ASH decoder and the EZSP/sendUnicast parser (decode). Throughput is counted in
wire bytes. Goal: >= 345 KB/s each way on the unix port (`make bench` prints the table)."""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOAL = 345000

MP_SCRIPT = r'''
import sys, time, json
sys.path.insert(0, FIRMWARE)
if PLAIN:  # what the viper loops buy: ash.py without them keeps its plain loops
    sys.modules["ppmid.zigbee._ash_fast"] = None
from ppmid.zigbee import ash
from ppmid.zigbee import ezsp as E
NCP = {}  # the module's half of the layouts (reads a sendUnicast), from the emulator
exec(NCP_SRC, NCP)
parse_send_unicast_params = NCP["parse_send_unicast_params"]
FAST = sys.modules.get("ppmid.zigbee._ash_fast")
N = ITER
try:
    ticks_us, ticks_diff = time.ticks_us, time.ticks_diff
except AttributeError:  # CPython
    ticks_us, ticks_diff = (lambda: int(time.perf_counter() * 1e6)), (lambda a, b: a - b)
msg = bytes((i * 31 + 7) & 0xFF for i in range(82))
aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140)
enc = ash.Encoder()
dec = ash.Decoder()

def encode_one(i):
    f = E.command_frame(i & 0xFF, NCP["SEND_UNICAST"], E.send_unicast_params(13, 0, aps, i & 0xFF, msg))
    return enc.data(i & 7, False, 0, f)

wire = bytes(encode_one(0))
t0 = ticks_us()
n = 0
for i in range(N):
    n += len(encode_one(i))
t_enc = ticks_diff(ticks_us(), t0)
t0 = ticks_us()
m = 0
for i in range(N):
    for c, p in dec.feed(wire):
        s, fc, fid, params = E.parse_frame(p)
        parse_send_unicast_params(13, params)
    m += len(wire)
t_dec = ticks_diff(ticks_us(), t0)
print(json.dumps({"enc_bytes": n, "enc_us": t_enc, "dec_bytes": m, "dec_us": t_dec, "frame": len(wire),
                  "impl": sys.implementation.name, "viper": FAST is not None and ash.crc16 is FAST.crc16}))
'''


def run_ours(exe, iters, plain=False):
    with open(os.path.join(ROOT, "host_tools", "ncp_emulator", "ezsp_ncp.py")) as f:
        ncp_src = f.read()
    code = ("FIRMWARE=%r\nITER=%d\nPLAIN=%r\nNCP_SRC=%r\n" % (os.path.join(ROOT, "firmware"), iters, plain, ncp_src)
            + MP_SCRIPT)
    if exe is None:
        from host_tools import mpcompat
        mpcompat.install()
        import io
        import contextlib
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "bench_zigbee_mp", "exec"), {"__name__": "bench"})
        return json.loads(buf.getvalue())
    out = subprocess.run([exe, "-X", "heapsize=256K", "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_bellows(iters):
    from bellows import ash as bash
    from bellows import types as bt
    from bellows.ezsp.v13.commands import COMMANDS
    schema = COMMANDS["sendUnicast"][1]
    msg = bytes((i * 31 + 7) & 0xFF for i in range(82))
    aps = bt.EmberApsFrame(profileId=0x0109, clusterId=0x0704, sourceEndpoint=1, destinationEndpoint=1,
                           options=0x0140, groupId=0, sequence=0)

    def encode_one(i):
        params = bt.serialize_dict([0, 0, aps, i & 0xFF, msg], {}, schema)
        f = bytes([i & 0xFF, 0, 1]) + bt.uint16_t(0x34).serialize() + params
        frame = bash.DataFrame(frm_num=i & 7, re_tx=False, ack_num=0, ezsp_frame=f)
        return bytes(bash.AshProtocol._stuff_bytes(frame.to_bytes())) + b"\x7e"

    wire = encode_one(0)
    t0 = time.perf_counter()
    n = 0
    for i in range(iters):
        n += len(encode_one(i))
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = 0
    for i in range(iters):
        for chunk in wire.split(b"\x7e")[:-1]:
            fr = bash.parse_frame(bytes(bash.AshProtocol._unstuff_bytes(chunk)))
            bt.deserialize_dict(fr.ezsp_frame[5:], schema)
        m += len(wire)
    t_dec = time.perf_counter() - t0
    return {"enc_bytes": n, "enc_us": t_enc * 1e6, "dec_bytes": m, "dec_us": t_dec * 1e6, "frame": len(wire)}


def rate(r, k):
    return r[k + "_bytes"] / (r[k + "_us"] / 1e6)


def run():
    sys.path.insert(0, ROOT)
    rows = []
    mp = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(mp):
        mp = None
    if mp:
        r = run_ours(mp, 3000)
        note = "MicroPython unix port, -X heapsize=256K, %d-byte frames, viper=%s" % (r["frame"], r["viper"])
        for k, name in (("enc", "encode"), ("dec", "decode")):
            v = rate(r, k)
            rows.append({"name": "ours (MicroPython) ASH+EZSP %s" % name, "value": round(v), "unit": "B/s",
                         "goal": ">= %d" % GOAL, "ok": v >= GOAL, "note": note})
        r = run_ours(mp, 1000, plain=True)
        for k, name in (("enc", "encode"), ("dec", "decode")):
            rows.append({"name": "ours (MicroPython, no viper) ASH+EZSP %s" % name, "value": round(rate(r, k)),
                         "unit": "B/s", "note": "plain-Python byte loops on the unix port, for comparison"})
    else:
        rows.append({"name": "ours (MicroPython)", "value": None, "unit": "", "ok": False,
                     "note": "no micropython in the venv"})
    r = run_ours(None, 3000)
    for k, name in (("enc", "encode"), ("dec", "decode")):
        rows.append({"name": "ours (CPython) ASH+EZSP %s" % name, "value": round(rate(r, k)), "unit": "B/s",
                     "note": "same code under CPython %s (plain loops)" % sys.version.split()[0]})
    try:
        r = run_bellows(3000)
        for k, name in (("enc", "encode"), ("dec", "decode")):
            rows.append({"name": "bellows (CPython) ASH+EZSP %s" % name, "value": round(rate(r, k)), "unit": "B/s",
                         "note": "bellows codec, CPython, same workload"})
    except ImportError as exc:
        rows.append({"name": "bellows", "value": None, "unit": "", "note": "bellows missing: %s" % exc})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
