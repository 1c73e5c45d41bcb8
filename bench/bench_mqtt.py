"""MQTT intake benchmarks: the firmware link under MicroPython against the real mosquitto.

- command -> `accepted` round trip (DCC User publish -> broker -> gateway client -> intake
  -> accept hook journals -> `accepted` QoS 1 back -> DCC User): median and p95;
- sustained commands/s through the client with QoS 1 both ways (500 pipelined commands);
- heap the client itself allocates to receive a command carrying 4 KB of GBCS (MicroPython,
  GC disabled so the figure is total allocation, an upper bound of the peak), and the
  same through the intake (JSON + base64 decode + envelope), for information.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host_tools import mqtt_tools as mt  # noqa: E402
from host_tools.broker import Broker  # noqa: E402

GW = "00DB1234567890A0"
GBCS = bytes.fromhex("DD00") + bytes(range(120))

HEAP_SCRIPT = r'''
import sys, gc, asyncio, json, binascii
sys.path.insert(0, sys.argv[1])
from ppmid.mqtt import packets_host
from ppmid.mqtt.client import MQTTClient
from ppmid.mqtt.link_host import stats
from ppmid.mqtt.intake import Intake
from ppmid import envelope


class R:  # the broker side of the link: delivers the packet in TLS-record-sized chunks
    def __init__(self, data, chunk=16384):
        self.mv = memoryview(data)
        self.pos = 0
        self.chunk = chunk

    async def readexactly(self, n):
        b = bytes(self.mv[self.pos:self.pos + n])
        self.pos += n
        return b

    async def readinto(self, buf):
        n = min(len(buf), self.chunk, len(self.mv) - self.pos)
        buf[:n] = self.mv[self.pos:self.pos + n]
        self.pos += n
        return n


class W:  # like MicroPython's Stream when the socket takes the bytes at once
    out_buf = b""

    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)

    async def drain(self):
        pass


KEY = bytes(32)
gbcs = bytes(4096)
env = envelope.sign(KEY, "bench-4k", gbcs)
body = json.dumps({"id": "bench-4k", "gbcs": binascii.b2a_base64(gbcs).strip().decode(),
                   "mac": binascii.hexlify(env.mac).decode()}).encode()
topic = "ppmid/v1/00DB1234567890A0/cmd"
pkt = packets_host.publish(topic, body, qos=1, pid=1)
del gbcs, env


async def noop(t, p, q, d):
    pass


async def accepted(env, via):
    pass


async def measure(with_intake):
    c = MQTTClient("00DB1234567890A0", None, max_packet=12000)
    if with_intake:
        Intake(c, "00DB1234567890A0", accepted, 8192)
    else:
        c.handler = noop
    c._w = W()
    c._readinto = True
    r = R(pkt)
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    first, b = await c._read_packet(r)
    n = len(b)
    b = None  # as the client's reader does (MQTTClient._reader)
    await c._incoming(first, n)
    a1 = gc.mem_alloc()
    gc.enable()
    assert c._w.n == 4 and stats(c)["received"] == 1
    return a1 - a0

async def main():
    print("CLIENT", await measure(False))
    print("INTAKE", await measure(True))
    print("PKT", len(pkt))

asyncio.run(main())
'''


def _micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


def heap():
    out = subprocess.run([_micropython(), "-X", "heapsize=2M", "-c", HEAP_SCRIPT.replace("sys.argv[1]", repr(os.path.join(ROOT, "firmware")))],
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError(out.stdout + out.stderr)
    vals = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    client = int(vals["CLIENT"])
    return [
        {"name": "client heap, 4 KB command", "value": client, "unit": "bytes", "goal": "< 8192", "ok": client < 8192,
         "note": "MicroPython, GC off: everything the client allocates (incl. growing its receive buffer) to read a %s-byte PUBLISH delivered as one TLS record, hand it over and PUBACK it" % vals["PKT"]},
        {"name": "client + intake heap, 4 KB command", "value": int(vals["INTAKE"]), "unit": "bytes",
         "note": "total allocation (GC off, 2 MB heap) adding JSON parse, envelope.from_json_obj and its strict base64 check (no goal)"},
    ]


def _wait_accepted(cmd, id, tmp):
    try:
        got = cmd.wait(id, ("accepted", "rejected"), timeout=60)
    except TimeoutError:
        with open(os.path.join(tmp, "gw.log")) as f:
            raise RuntimeError("gateway stalled; its output ends:\n" + f.read()[-1500:])
    if got[-1]["status"] != "accepted":
        raise RuntimeError("command %s %r" % (id, got[-1]))


def link(tmp):
    state = os.path.join(tmp, "broker")
    b = Broker(state, gateways=[GW])
    b.start()
    proc = None
    try:
        key = mt.envelope_key(state, GW, create=True)
        cfg = mt.gateway_config(GW, b.info())
        root = os.path.join(tmp, "flash")
        mt.write_tree(root, mt.gateway_files(state, GW, cfg, key))
        script = os.path.join(tmp, "gw.py")
        with open(script, "w") as f:
            f.write(mt.GATEWAY_SCRIPT)
        proc = subprocess.Popen([_micropython(), "-X", "heapsize=256K", script, os.path.join(ROOT, "firmware"), root],
                                stdout=open(os.path.join(tmp, "gw.log"), "w"), stderr=subprocess.STDOUT)
        cmd = mt.Commander(state, GW, key=key)
        try:
            # Until the gateway's first connect creates its session, commands have no
            # subscriber and are dropped by the broker: retry the first one.
            for attempt in range(30):
                cmd.send("warm-up-%d" % attempt, GBCS)
                try:
                    cmd.wait("warm-up-%d" % attempt, ("accepted",), timeout=1)
                    break
                except TimeoutError:
                    continue
            lat = []
            for i in range(50):
                t0 = time.perf_counter()
                cmd.send("lat-%d" % i, GBCS)
                cmd.wait("lat-%d" % i, ("accepted",), timeout=30)
                lat.append((time.perf_counter() - t0) * 1000)
            # Sustained: keep `window` commands outstanding (a DCC User honouring the
            # gateway's queue), each must come back `accepted`.
            n, window = 500, 16
            t0 = time.perf_counter()
            for i in range(n):
                if i >= window:
                    _wait_accepted(cmd, "s-%d" % (i - window), tmp)
                cmd.client.publish("ppmid/v1/%s/cmd" % GW, mt.command_json(key, "s-%d" % i, GBCS), qos=1)
            for i in range(n - window, n):
                _wait_accepted(cmd, "s-%d" % i, tmp)
            rate = n / (time.perf_counter() - t0)
        finally:
            cmd.close()
    finally:
        if proc:
            proc.kill()
            proc.wait()
        b.stop()
    lat.sort()
    return [
        {"name": "command -> accepted round trip (median)", "value": round(statistics.median(lat), 2), "unit": "ms",
         "note": "paho publish -> mosquitto TLS -> MicroPython client/intake/journal -> accepted back"},
        {"name": "command -> accepted round trip (p95)", "value": round(lat[int(len(lat) * 0.95) - 1], 2), "unit": "ms"},
        {"name": "sustained commands/s (QoS 1 both ways)", "value": round(rate, 1), "unit": "cmd/s",
         "goal": ">= 50", "ok": rate >= 50, "note": "500 commands, 16 outstanding, each journaled and answered `accepted` (QoS 1)"},
    ]


def run():
    rows = heap()
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        rows += link(tmp)
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
