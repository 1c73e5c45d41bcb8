"""Heap fragmentation on a fixed heap (issue #14 follow-up, docs/memory.md "Fragmentation"):
the largest contiguous free block, beside the free total, at points of the gauge's app
scenario, in the unix MicroPython that the emulated board runs (x86-64, 64-bit objects)
with a fixed `-X heapsize`.

Why this port and not the gauge's: the webassembly port's heap grows on demand (its
`micropython.mem_info()` says "max new split": a block too large for the heap gets a new
area), so a large block can always be had there; the unix port's heap is one fixed area,
like the region an ESP32 starts with. Where: `micropython.mem_info()` prints the
collector's "max free sz" (the longest run of free blocks, py/gc.c gc_info) after a
collect; one `mem_info(1)` at the start gives the block size (its map's line addresses,
64 blocks a line). Every reading is checked by allocating it: a bytearray of the largest
block must fit and one a block larger must not (the scenario fails otherwise).

The scenario is the gauge's app as it ran until session 9 (the real app.run on h32's
stand-in board, with a provisioned flash; the gauge's own rows now boot main.py on the
ESP32 board code, which the unix port cannot: its machine and socket are built in, and the
ESP32 Board's flash root would be the host's /), then a series of signed commands of
mixed sizes through the MQTT intake to the stand-in EZSP send, each read by the MQTT
client's own receive path (h32.publish_through: its buffer, its parse, its handler)."""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gauge as G  # noqa: E402

# GBCS sizes of the command series: small and large interleaved, as a day's traffic mixes
# reads (small) and tariff or calendar writes (large); the largest sets the receive buffer
SIZES = (4096, 512, 1024, 2048, 3072, 768)
COMMANDS = 20

FRAG_BODY = """
import micropython
def _fits(n):
    try:
        b = bytearray(n)
    except MemoryError:
        return False
    b = None
    return True
def frag(tag):
    gc.collect()
    print('@@FRAGMAP ' + tag)
    micropython.mem_info(tag == 'base')
    print('@@FRAGEND ' + tag)
    # the same by allocation: the largest bytearray that fits, by bisection (each try is
    # freed again; a failed one collects first)
    lo, hi = 0, gc.mem_free() + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(mid):
            lo = mid
        else:
            hi = mid
    gc.collect()
    out('FRAGFIT', at=tag, fits=lo)
caught = {}
def _catch(key, modname, clsname):
    cls = getattr(__import__(modname, None, None, [clsname]), clsname)
    orig = cls.__init__
    def init(self, *a, **k):
        orig(self, *a, **k)
        caught[key] = self
    cls.__init__ = init
for _c in CATCH:
    _catch(*_c)
# the broker as if online from the start (Wi-Fi stays down for the rest of the client):
# each status and response published is acknowledged at once, so a command answered and
# published leaves the journal, as on a connected gateway (with MQTT down they would stay)
published = [0]
async def _publish(self, topic, payload, qos=1, retain=False, wait=True, first=False):
    published[0] += 1
__import__('ppmid.mqtt.client', None, None, ['MQTTClient']).MQTTClient.publish = _publish
frag('base')
from ppmid import app
board = H.Board(fs_root=FLASH + '/')
asyncio.create_task(app.run(board))
await H.until(lambda: app.heap['min'] is not None, what='the app to be ready')
await asyncio.sleep_ms(50)
frag('ready')
# what one collect of this heap takes (the cost of the boot's gc.threshold, per collect)
_t = __import__('time')
t0 = _t.ticks_us()
gc.collect()
collect_us = _t.ticks_diff(_t.ticks_us(), t0)
han, relay, link = caught['han'], caught['relay'], caught['link']
# the HAN as if its module and the CH were up; each ZCL frame goes to a stand-in EZSP send
async def _send_zcl(dest, zcl, cluster=None, endpoint=None):
    pass
await H.han_as_running(han, _send_zcl, CH_TRANSFER_SIZE, NCP_MAX_PAYLOAD)
client = link.client
# the relay's counters by index (relay.counters is a list: 2 relayed, 3 answered, 6 failed;
# ppmid.relay.report names them)
allocated = 0  # bytes the series allocated (the app's other tasks meanwhile included)
for i, path in enumerate(COMMANDS):
    a0 = micropython.mem_total()
    # through the client's own receive path: its buffer, its parse, its handler
    await H.publish_through(client, link.topics.cmd, path)
    await H.until(lambda: relay.counters[2] + relay.counters[6] >= i + 1,
                  what='command %d to reach the HAN' % (i + 1))
    # the meter's response, as the HAN hands it over (GBT reassembled): the next command
    # to the same meter goes once this one is answered
    with open(RESPONSES[i], 'rb') as f:
        relay.on_han_message(f.read())
    await H.until(lambda: relay.counters[3] >= i + 1, what='response %d' % (i + 1))
    await asyncio.sleep_ms(20)
    allocated += micropython.mem_total() - a0
    if i == 0:
        frag('command 1')
frag('commands')
out('FRAGRUN', relayed=relay.counters[2], failed=relay.counters[6], answered=relay.counters[3], outbox=len(relay.to_publish), published=published[0],
    journal=relay.journal.size, collect_us=collect_us, allocated=allocated,
    accepted=link.intake.stats.get('accepted'), rx=len(client._rx))
"""

_GC_RE = re.compile(r"GC: total: (\d+), used: (\d+), free: (\d+)")
_MAX_FREE_RE = re.compile(r"max free sz: (\d+)")
_MAP_LINE_RE = re.compile(r"^([0-9a-f]{8}): ")


class FragError(Exception):
    pass


def parse(lines):
    """{tag: {"total", "used", "free", "largest_blocks"}} and the block size in bytes (from
    the 'base' map) from a run's output lines."""
    out, tag, block, addrs = {}, None, None, []
    for line in lines:
        if line.startswith("@@FRAGMAP "):
            tag = line.split(" ", 1)[1]
            out[tag] = {}
            continue
        if line.startswith("@@FRAGEND "):
            tag = None
            continue
        if tag is None:
            continue
        m = _GC_RE.search(line)
        if m:
            out[tag].update(total=int(m.group(1)), used=int(m.group(2)), free=int(m.group(3)))
        m = _MAX_FREE_RE.search(line)
        if m:
            out[tag]["largest_blocks"] = int(m.group(1))
        m = _MAP_LINE_RE.match(line)
        if m and tag == "base" and len(addrs) < 2:
            addrs.append(int(m.group(1), 16))
    if len(addrs) == 2:
        block = (addrs[1] - addrs[0]) // 64
    return out, block


def scenario(root):
    """Write the job under root and return the script's path."""
    files, _skipped = G.compile_tree(G.FIRMWARE_DIR)
    files.update(G.harness_files())
    flash = G.flash_files()
    # the series comes faster than the relay's default pace (1 a second after a burst of
    # 10, docs/config.md "limits"): a burst as large as the series lets each go at once
    cfg = json.loads(flash[G.FLASH + "/config.json"])
    cfg.setdefault("limits", {})["burst"] = COMMANDS
    flash[G.FLASH + "/config.json"] = json.dumps(cfg).encode()
    from ppmid.gbcs.build import make_response  # the firmware on CPython (G.command_json)
    paths, responses = [], []
    for i in range(COMMANDS):
        path = "/cmd%02d.json" % i
        flash[path] = G.command_json(SIZES[i % len(SIZES)], counter=1000 + i, msg_id="frag-%02d" % i)[0]
        gbcs = base64.b64decode(json.loads(flash[path])["gbcs"])
        flash[path[:-5] + ".rsp"] = make_response(gbcs, b"\x00" * 32)
        paths.append(root + path)
        responses.append(root + path[:-5] + ".rsp")
    fs = dict(files)
    fs.update(flash)
    src = G.script(FRAG_BODY, CATCH=G.CATCH, FLASH=G.FLASH, COMMANDS=paths, RESPONSES=responses,
                   CH_TRANSFER_SIZE=G.CH_TRANSFER_SIZE, NCP_MAX_PAYLOAD=G.NCP_MAX_PAYLOAD)
    for path, data in fs.items():
        dest = root + path
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
    for path in (G.LIB, G.FLASH):  # the job's absolute paths, under root
        src = src.replace(repr(path), repr(root + path))
    # the unix port collects inside running code: the harness's live heap collects first
    src = src.replace("BASE = await H.live()", "BASE = 0")
    body = "".join("    " + line + "\n" for line in src.splitlines())
    script = os.path.join(root, "frag.py")
    with open(script, "w") as f:
        f.write("import asyncio\nasync def _main():\n" + body + "asyncio.run(_main())\n")
    return script


def run(heap, exe=None):
    """{"figures": {tag: {"total", "used", "free", "largest_blocks", "largest" (bytes)}} for
    the tags base, ready, command 1 and commands; "block": the GC block's bytes; "run": the
    series' counters}. Raises FragError when the scenario fails or a reading disagrees
    with the allocation."""
    if exe is None:
        from host_tools.boards import micropython_binary  # the emulated board's interpreter
        exe = micropython_binary()
    with tempfile.TemporaryDirectory() as root:
        script = scenario(root)
        # cwd: the package lies at root + /ppmid, found through sys.path's '' (gauge.LIB)
        p = subprocess.run([exe, "-X", "heapsize=%d" % heap, script], capture_output=True, text=True, timeout=300,
                           cwd=root)
        lines = p.stdout.splitlines()
    figs, block = parse(lines)
    done = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("@@FRAGRUN ")]
    if p.returncode or not done or block is None:
        raise FragError("the fragmentation scenario failed in a %d-byte heap: %s"
                        % (heap, (p.stdout + p.stderr).strip()[-800:]))
    if done[0]["relayed"] != COMMANDS or done[0]["answered"] != COMMANDS:
        raise FragError("not every command was relayed: %s" % json.dumps(done[0]))
    fits = dict((d["at"], d["fits"]) for d in (json.loads(line.split(" ", 1)[1])
                                                 for line in lines if line.startswith("@@FRAGFIT ")))
    for tag, f in figs.items():
        f["largest"] = f["largest_blocks"] * block
        # the collector's reading and the allocation must agree: else the figure is wrong
        if fits.get(tag) != f["largest"]:
            raise FragError("at %s mem_info's largest free block is %d bytes but the largest bytearray "
                            "that fits is %s" % (tag, f["largest"], fits.get(tag)))
    return {"figures": figs, "block": block, "run": done[0]}
