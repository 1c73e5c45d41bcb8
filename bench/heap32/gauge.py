"""The 32-bit heap gauge (issue #14): the firmware as .mpy bytecode in the webassembly
MicroPython 1.27 (32-bit objects, like an ESP32's), run headless under node.

What it measures and how is in docs/memory.md. In short: the port collects garbage only
when node resumes it, so every figure is gc.mem_alloc() right after an await (the live
heap) above a baseline taken once the gauge's own harness and stand-in modules are
loaded; the peak is the highest such sample between the event loop's turns, and the
probes on the pipeline's functions (PROBES) give an upper bound (garbage included).

Used by bench/bench_heap32.py (`heap32 ...` rows) and tests/test_heap32.py (the machinery
on a small case)."""
import base64
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIRMWARE_DIR = os.path.join(ROOT, "firmware")
PACKAGE = "@micropython/micropython-webassembly-pyscript"
PACKAGE_VERSION = "1.27.0"
PACKAGE_DIR = os.path.join(ROOT, ".node", "node_modules", *PACKAGE.split("/"))
RUNNER = os.path.join(HERE, "runner.mjs")
STANDINS = os.path.join(HERE, "standins")
HEAPSIZE = 512 * 1024  # the port grows its heap past this on demand; 512K is enough not to
# mpy-cross options for the firmware: a board build's (host_tools.deploy.MPY_OPTS, -O3: no
# line-number tables in the bytecode); PPMID_MPY_OPTS overrides them to compare
sys.path.insert(0, ROOT)
from host_tools.deploy import MPY_OPTS as _DEPLOY_OPTS, source_name  # noqa: E402
MPY_OPTS = tuple(os.environ.get("PPMID_MPY_OPTS", " ".join(_DEPLOY_OPTS)).split())
# The firmware goes where `ppmid deploy` installs it on a board, at the filesystem's root
# (/ppmid/...), found through sys.path's first entry '' (the current directory, /): so
# each module's __file__ is the board's ("ppmid/relay/core.mpy"), the name its .mpy carries
# (host_tools.deploy.source_name), as on a board. The harness and stand-ins go in /lib,
# searched before '.frozen': a stand-in stands for a board's built-in module and must win
# over a port's frozen one (the unix port freezes an ssl.py, which frag.py's runs would
# load instead).
LIB = "/lib"           # the harness and the stand-in modules
FLASH = "/flash"       # the board's flash: the port's in-memory filesystem

# The scenarios' view of the firmware, in one place: which classes the app-boot scenario
# catches (to reach the objects app.run builds) and where the 4 KB command is sampled.
# A name the firmware no longer has makes the scenario fail with that name.
CATCH = (("han", "ppmid.zigbee.han", "ZigbeeHan"),
         ("relay", "ppmid.relay.core", "Relay"),
         ("link", "ppmid.mqtt.link", "Link"))
PROBES = (("ppmid.mqtt.intake", "Intake", "handle"),
          ("ppmid.envelope", None, "lift_gbcs_in_place"),
          ("ppmid.envelope", None, "from_json_obj"),
          ("ppmid.relay.core", "Relay", "_accept"),
          ("ppmid.gbcs.validate", "Validator", "check"),
          ("ppmid.relay.journal", "Journal", "accept"),
          ("ppmid.relay.journal", "Journal", "sync"),
          ("ppmid.relay.journal", "Journal", "body"),
          ("ppmid.relay.journal", "Journal", "sending"),
          ("ppmid.relay.core", "Relay", "_send"),
          ("ppmid.zigbee.han", "ZigbeeHan", "send"),
          ("ppmid.zigbee.han", "ZigbeeHan", "_send_message"),
          ("ppmid.gbcs.gbt", None, "blocks_for_transfer"),
          ("ppmid.zigbee.tunnel", "TunnelServer", "outgoing_into"))
# the top-up's: only modules loaded at ready (what the first top-up loads is reported)
TOPUP_PROBES = (("ppmid.mqtt.intake", "Intake", "handle"),
                ("ppmid.relay.core", "Relay", "_accept"),
                ("ppmid.relay.journal", "Journal", "accept"),
                ("ppmid.relay.journal", "Journal", "body"),
                ("ppmid.relay.core", "Relay", "_send"),
                ("ppmid.zigbee.han", "ZigbeeHan", "send_zcl"))
NFC_PREFIX = "ppmid.nfc"
# What a figure may be off by: every await through node leaves small proxy objects in the
# Python heap until node's GC finalizes their JS side (h32.live). Measured: a module
# holding a 20000-byte buffer reads 19.7-20.0 KB; repeated readings move by ~0.2-0.6 KB.
# (Synchronous steps instead of awaits were tried: noisier, some modules read negative.)
RESOLUTION = 1024
# what the stand-in Communications Hub and Zigbee module announce (the NCP emulator's values)
CH_TRANSFER_SIZE = 1500
NCP_MAX_PAYLOAD = 82


class GaugeError(Exception):
    pass


def node_binary():
    exe = shutil.which("node") or ("/usr/bin/node" if os.path.exists("/usr/bin/node") else None)
    if exe is None:
        raise GaugeError("node is not installed: run `make setup` (Debian package nodejs)")
    return exe


def check_installed():
    if not os.path.isfile(os.path.join(PACKAGE_DIR, "micropython.mjs")):
        raise GaugeError("the webassembly MicroPython is not installed in %s: run `make setup` "
                         "(npm install --prefix .node %s@%s)" % (PACKAGE_DIR, PACKAGE, PACKAGE_VERSION))
    return node_binary()


def _mpy_cross():
    sys.path.insert(0, ROOT)
    from host_tools import boards
    return boards.mpy_cross_binary()


def compile_tree(src_dir, package="ppmid"):
    """{path in the port's filesystem: .mpy bytes} for every .py under src_dir/package,
    compiled by mpy-cross without -march (bytecode only: the webassembly port has no native
    emitter), and {relative path: reason} for the files that only compile with a native
    emitter (viper/native code: their importers fall back to plain code)."""
    exe = _mpy_cross()
    jobs = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(src_dir, package)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in sorted(filenames):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), src_dir)
                jobs.append(rel)

    def one(rel):
        p = subprocess.run([exe, *MPY_OPTS, "-o", "/dev/stdout", "-s", source_name(rel), os.path.join(src_dir, rel)],
                           capture_output=True, timeout=60)
        return rel, p

    files, skipped = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for rel, p in pool.map(one, jobs):
            if p.returncode == 0:
                files["/" + source_name(rel)] = p.stdout
            else:
                err = p.stderr.decode(errors="replace").strip().splitlines()
                why = err[-1] if err else "mpy-cross failed"
                if "invalid arch" not in why:
                    raise GaugeError("%s does not compile with mpy-cross: %s" % (rel, why))
                skipped[rel] = "native/viper code: no .mpy for the webassembly port (%s)" % why
    return files, skipped


def module_names(files):
    out = []
    for path in files:
        if path.endswith(".mpy") and not path.startswith(LIB + "/"):
            mod = path[1:-4].replace("/", ".")
            if mod.endswith(".__init__"):
                mod = mod[:-9]
            out.append(mod)
    return sorted(out)


def harness_files():
    """The stand-in modules the port lacks (machine, network, socket, ssl...) and the
    harness, as source: compiled in the port before the baseline is taken."""
    out = {}
    for f in sorted(os.listdir(STANDINS)):
        if f.endswith(".py"):
            with open(os.path.join(STANDINS, f), "rb") as fh:
                out[LIB + "/" + f] = fh.read()
    with open(os.path.join(HERE, "h32.py"), "rb") as fh:
        out[LIB + "/_h32.py"] = fh.read()
    return out


# Every job's script starts with this: path, stand-ins and harness loaded, then the
# baseline. Figures are printed as "@@<tag> <json>" lines.
# The port freezes a pure-Python binascii.py over its C module (which it names ubinascii):
# its a2b_base64 allocated ~160 KB of garbage for one 4 KB command, its b2a_base64 ~40 MB
# for 4 KB. An ESP32's binascii is the C module: the port's C module stands in for it.
PRELUDE = """
import gc, sys
sys.path[:] = ['', %(lib)r, '.frozen']
import ubinascii
sys.modules['binascii'] = ubinascii
import json
for _m in %(standins)r:
    __import__(_m)
import _h32 as H
import asyncio
BASE = await H.live()
def out(tag, **kw):
    print('@@' + tag + ' ' + json.dumps(kw))
"""


def script(body, **params):
    standins = tuple(sorted(f[:-3] for f in os.listdir(STANDINS) if f.endswith(".py")))
    head = PRELUDE % {"lib": LIB, "standins": standins}
    return head + "".join("%s = %r\n" % kv for kv in sorted(params.items())) + body


def run_jobs(jobs, timeout=300):
    """jobs: [(files {path: bytes}, script source)], each in a fresh interpreter in its own
    node process (the port keeps its instance in a global: two in one process would
    resume each other's tasks), several at a time.
    Returns [{"ok": bool, "error": str or None, "out": {tag: [dict]}, "lines": [str]}]."""
    node = check_installed()
    harness = harness_files()

    def one(job):
        files, src = job
        files = dict(harness, **files)
        spec = {"package": PACKAGE_DIR,
                "jobs": [{"heapsize": HEAPSIZE, "script": src,
                          "files": {p: base64.b64encode(b).decode() for p, b in files.items()}}]}
        try:
            p = subprocess.run([node, RUNNER], input=json.dumps(spec), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": "timed out after %ds" % timeout, "out": {}, "lines": []}
        r = {"ok": False, "out": {}, "lines": [],
             "error": "no result (node exit %s: %s)" % (p.returncode, p.stderr.strip()[-300:])}
        for line in p.stdout.splitlines():
            if line.startswith("@@END "):
                parts = line.split(" ", 3)
                r["ok"] = parts[2] == "ok"
                r["error"] = None if r["ok"] else (parts[3] if len(parts) > 3 else "error")
                continue
            r["lines"].append(line)
            if line.startswith("@@") and " " in line and not line.startswith(("@@TRACE", "@@STDERR")):
                tag, _, data = line[2:].partition(" ")
                try:
                    r["out"].setdefault(tag, []).append(json.loads(data))
                except ValueError:
                    pass
        return r

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(one, jobs))


# ---- per-module import ------------------------------------------------------------------

IMPORT_BODY = """
before = set(sys.modules)
a0 = await H.live()
for _d in DEPS:
    __import__(_d)
a1 = await H.live()
__import__(MODULE)
a2 = await H.live()
out('IMPORT', module=MODULE, deps_bytes=a1 - a0, own=a2 - a1,
    loaded=sorted(m for m in sys.modules if m not in before and m != MODULE))
"""


def import_figures(files, modules, deps=None):
    """{module: {"own": bytes, "total": bytes with what it imports, "loaded": [...]} or
    {"error": str}}. Two fresh interpreters per module: the first imports it alone (its
    total, and which firmware modules it pulls in); the second imports those first, so
    that "own" is the module by itself."""
    jobs = [(files, script(IMPORT_BODY, MODULE=m, DEPS=[])) for m in modules]
    first = run_jobs(jobs)
    out = {}
    again = []
    for m, r in zip(modules, first):
        if not r["ok"]:
            out[m] = {"error": r["error"]}
            continue
        f = r["out"]["IMPORT"][0]
        # only the firmware's own (same top package): pre-importing the port's modules
        # (binascii, os...) gave nonsense (a negative figure for ppmid.envelope)
        top = m.split(".")[0]
        dep_list = [d for d in f["loaded"] if d == top or d.startswith(top + ".")]
        out[m] = {"total": f["own"], "loaded": dep_list}
        again.append(m)
    second = run_jobs([(files, script(IMPORT_BODY, MODULE=m, DEPS=out[m]["loaded"])) for m in again])
    for m, r in zip(again, second):
        out[m]["own"] = r["out"]["IMPORT"][0]["own"] if r["ok"] else None
    return out


ALL_BODY = """
a0 = await H.live()
failed = []
for _m in MODULES:
    try:
        __import__(_m)
    except ImportError as e:
        failed.append((_m, str(e)))
out('ALL', bytes=(await H.live()) - a0, failed=failed)
"""


def import_all(files, modules):
    r = run_jobs([(files, script(ALL_BODY, MODULES=list(modules)))])[0]
    if not r["ok"]:
        raise GaugeError("importing every module failed: %s" % r["error"])
    return r["out"]["ALL"][0]


# ---- the app: booted to ready, and a 4 KB command through it ---------------------------

APP_BODY = """
import micropython
def names(tag):
    # the interned names so far: qstr_info prints one line, read by the host (names_at)
    print('@@NAMES ' + tag)
    micropython.qstr_info()
names('base')
at_base = sorted(m for m in sys.modules if m.startswith('ppmid'))
PROBE_COST = (await H.probe_cost(len(TOPUP_PROBES if TOPUP else PROBES))) if COMMAND else 0
caught = {}
def _catch(key, modname, clsname):
    cls = getattr(__import__(modname, None, None, [clsname]), clsname)
    orig = cls.__init__
    def init(self, *a, **k):
        orig(self, *a, **k)
        caught[key] = self
    cls.__init__ = init
def _before_app():
    # once the boot has imported the set it runs (main.py drops the ppmid modules its
    # update pointer loaded: what is patched before that would be a second copy)
    for _c in CATCH:
        _catch(*_c)
    if NFC:
        # the reader answers at boot (the stand-in for a PN532 on the board's UART)
        from ppmid.nfc import pn532 as _pn
        async def _begin(self, passive_retries=2):
            return (0x32, 1, 6, 7)
        _pn.PN532.begin = _begin
if ESP32:
    # as an ESP32 boots: main.py, compiled from source as the board does, in a __main__ of
    # its own: the update pointer, ppmid.board.load() (the ESP32 Board from /board.json),
    # then asyncio.run(app.run(board)): here the stand-in's, which schedules it and returns
    H.esp32()
    # the port's _boot.py mounted the flash as LittleFS2 before boot.py and main.py
    H.littlefs()
    H.before_app[0] = _before_app
    # MAIN_CODE is kept: on a board main.py's module code is still running (in
    # asyncio.run) while the app runs, so it and its functions' code stay in the heap
    MAIN = {'__name__': '__main__'}
    # then boot.py, from the flash, in the __main__ that main.py runs in after it (the
    # port's pyexec runs both in the same globals); its code is done once it returns
    with open('/boot.py') as _f:
        exec(compile(_f.read(), 'boot.py', 'exec'), MAIN)
    H.emergency_exception_buf()
    BOOT = sorted(MAIN)
    with open('/main.py') as _f:
        MAIN_CODE = compile(_f.read(), 'main.py', 'exec')
    _f = None
    try:
        exec(MAIN_CODE, MAIN)
    except H.Detached:
        pass
    from ppmid import app
else:
    _before_app()
    from ppmid import app
    board = H.Board(nfc=NFC, fs_root=FLASH + '/', wired=WIRED)
    asyncio.create_task(app.run(board))
await H.until(lambda: app.heap['min'] is not None, what='the app to be ready')
if FIELD:  # in the field, ready means connected and subscribed, and the clock set
    await H.until(H.field_ready(caught['link'], caught['relay'].clock),
                  what='MQTT to be connected and the clock synced')
await asyncio.sleep_ms(50)
ready = (await H.live()) - BASE
names('ready')
nfc_on = any(m.startswith(NFC_PREFIX + '.service') for m in sys.modules)
out('READY', bytes=ready, nfc=nfc_on, wired='ppmid.wired.road' in sys.modules,
    modules=sorted(m for m in sys.modules if m.startswith('ppmid')), at_base=at_base,
    main=sorted(MAIN) if ESP32 else None, field=FIELD,
    broker_got=H.broker.got, broker_sent=H.broker.sent, sntp=H.sntp.answered, dns=H.resolver.answered,
    mqtt=caught['link'].client.state, clock=caught['relay'].clock.source,
    lfs_mount=sum(len(b) + 16 for b in H.lfs_mount), lfs_open=[p for _f, _b, p in H.lfs_open],
    boot=BOOT if ESP32 else None, emergency_buf=sum(len(b) + 16 for b in H.emergency_buf))
if COMMAND:
    han, relay, link = caught['han'], caught['relay'], caught['link']
    # the HAN as if its module and the CH were up; each ZCL frame goes to a stand-in EZSP
    sent = []
    async def _send_zcl(dest, zcl, cluster=None, endpoint=None):
        H.sample('ezsp send_unicast')
        sent.append(len(zcl))
    settling = H.HanSettling(app, link, CH_CLOCK)
    await H.han_as_running(han, _send_zcl, CH_TRANSFER_SIZE, NCP_MAX_PAYLOAD)
    # the network up on a connected link too, as the "running" status says on a board: a
    # top-up goes straight to the meter (ppmid.zigbee.direct), and so does the CH clock's
    # read (without a network it held the HAN's send lock for send_timeout_s, 30 s)
    han._up = han._net_up = han._link.connected = True
    # the command comes once the app's reaction to the HAN running is over, as on a board
    # (docs/memory.md, "Session 10, the command after the HAN settles")
    settled = await settling.over()
    settling = None
    frames = len(sent)  # ZCL frames sent while it settled (the clock read's): not the command's
    sent.clear()
    probes = TOPUP_PROBES if TOPUP else PROBES
    mods = [__import__(modname, None, None, [fn]) for modname, clsname, fn in probes]
    before = set(m for m in sys.modules if m.startswith('ppmid'))
    missing = []
    for mod, (modname, clsname, fn) in zip(mods, probes):
        if not H.probe(getattr(mod, clsname) if clsname else mod, fn, modname.split('.')[-1] + '.' + fn):
            missing.append(modname + '.' + (clsname + '.' if clsname else '') + fn)
    probes = PROBE_COST  # measured before the app started (H.probe_cost)
    # the command comes as a PUBLISH through the MQTT client's own receive path
    # (H.publish_through): its buffer grows to the packet and the JSON is read into it, as
    # from the broker's socket, then the client hands it to the intake; the client's handler
    # is bound again so that it is the probed one
    link.client.handler = link.intake.handle
    payload = __import__('os').stat(COMMAND)[6]
    # what the wait saw, and the broker's counts and the modules loaded right before the
    # command's first sample: printed, not kept, so none of it is in the figures
    out('SETTLED', frames=frames, got=H.broker.got, sent=H.broker.sent,
        loaded=sorted(m for m in sys.modules if m.startswith('ppmid')), **settled)
    settled = None
    start = await H.reset_peak()
    stop = [False]
    asyncio.create_task(H.sampler(stop))
    # the relay's counters by index (relay.counters is a list: 2 relayed, 6 failed, 16
    # published; ppmid.relay.report names them, loaded below once the figures are in)
    published = relay.counters[16]
    if FIELD:
        # from the broker, as a PUBLISH (QoS 1) on the connected client's socket: its
        # reader task reads it into its buffer and hands it to the intake, then PUBACKs it
        H.broker.publish(link.topics.cmd, COMMAND)
    else:
        await H.publish_through(link.client, link.topics.cmd, COMMAND)
    await H.until(lambda: relay.counters[2] >= 1 or relay.counters[6] >= 1,
                  what='the command to reach the HAN')
    if FIELD:  # the command PUBACKed, its statuses published and PUBACKed
        await H.until(lambda: H.broker.got[4] >= 1 and relay.counters[16] > published
                      and not len(relay.to_publish) and not link.client.pending(),
                      what='the command to be PUBACKed and its status PUBACKed')
    await asyncio.sleep_ms(20)
    stop[0] = True
    await asyncio.sleep_ms(20)
    after = (await H.live()) - BASE - probes
    names('command')
    loaded = sorted(m for m in sys.modules if m.startswith('ppmid') and m not in before)
    from ppmid.relay.report import named
    out('COMMAND', peak=H.peak[0] - BASE - probes, bound=H.bound[0] - BASE - probes, bound_at=H.bound[1],
        after=after,
        start=start - BASE - probes,
        probes=probes, samples=H.samples[0], pieces=len(sent), zcl_bytes=sum(sent),
        accepted=link.intake.stats.get('accepted'), counters=named(relay.counters), missing=missing,
        payload=payload, trace=[(w, a - BASE - probes) for w, a in H.trace],
        broker_got=H.broker.got, broker_sent=H.broker.sent, published=relay.counters[16] - published,
        loaded=loaded,
        lfs_open=[p for _f, _b, p in H.lfs_open])
"""


# The qstr pools (py/qstr.c): each name a .mpy uses that the interpreter does not know yet
# is interned into a pool; a full pool is followed by one twice its size (the first
# dynamic pool has 20 entries: twice the ROM or frozen pool's `alloc` of 10). On a 32-bit
# port with 2-byte hashes a pool is a 24-byte header and 7 bytes per entry (pointer, hash,
# length), in 16-byte GC blocks. The gauge's harness interns its names first, so the
# firmware's names fill later, bigger pools than on a board where the firmware's are the
# first: names_report() says what that shifts.
POOL_HEADER = 24
POOL_ENTRY = 7
FIRST_POOL = 20


def pool_bytes(n):
    """Heap taken by the pool tables holding n dynamically interned names (string data
    apart)."""
    total, alloc, room = 0, FIRST_POOL, 0
    while room < n:
        total += -(-(POOL_HEADER + POOL_ENTRY * alloc) // 16) * 16
        room += alloc
        alloc *= 2
    return total


def names_at(result):
    """{tag: {"pools": n, "names": n, "text": bytes, "total": bytes}} from a job's output:
    each '@@NAMES tag' line is followed by qstr_info's 'qstr pool: n_pool=...' line."""
    found, tag = {}, None
    for line in result["lines"]:
        if line.startswith("@@NAMES "):
            tag = line.split(" ", 1)[1]
        elif tag and line.startswith("qstr pool:"):
            f = dict((k.strip(), int(v)) for k, v in (kv.split("=") for kv in line.split(":", 1)[1].split(",")))
            found[tag] = {"pools": f["n_pool"], "names": f["n_qstr"], "text": f["n_str_data_bytes"],
                          "total": f["n_total_bytes"]}
            tag = None
    return found


def names_report(result, tag):
    """The firmware's names at `tag` (interned since the app started) and what their pool
    tables cost in the gauge against a board where nothing interned names before them."""
    at = names_at(result)
    if "base" not in at or tag not in at:
        raise GaugeError("no qstr_info at %s in the job's output" % tag)
    base, now = at["base"], at[tag]
    firmware = now["names"] - base["names"]
    gauge = pool_bytes(now["names"]) - pool_bytes(base["names"])
    board = pool_bytes(firmware)
    return {"names": firmware, "text": now["text"] - base["text"], "gauge_pools": gauge,
            "board_pools": board, "harness_names": base["names"], "shift": gauge - board}


# The board the app scenarios boot as (since session 9, docs/memory.md): an ESP32-DevKitC's
# definition as `ppmid deploy` writes it to /board.json; its UART-attached PN532 is the
# +nfc scenario's reader. Without NFC the definition has no "nfc" (a gateway built without
# a reader); the wired road's scenario names the UART NFC would use as "wired_uart".
ESP32_BOARD = "esp32-devkitc"
WIRED_UART = {"id": 1, "tx": 26, "rx": 27, "baud": 115200}


def board_json(nfc=False, wired=False):
    """/board.json's bytes for the app scenarios (host_tools.deploy writes it so)."""
    from host_tools import boards
    definition = boards.load_board(ESP32_BOARD)
    if not nfc:
        del definition["nfc"]
    if wired:
        definition["wired_uart"] = dict(WIRED_UART)
    return json.dumps(definition, indent=1).encode()


def app_job(files, flash_files, nfc, command_path=None, wired=False, topup=False, esp32=True):
    """`wired`: the board has a wired UART (the flash's config must enable the road too:
    flash_files(wired=True)). `topup`: command_path holds a top-up (topup_json()), sent to
    the ESME as a ZCL frame, not through the tunnel. `esp32`: boot as an ESP32 does
    (firmware/main.py, the ESP32 board code, /board.json, the flash at the filesystem's
    root); False: app.run on h32's stand-in board with the flash under FLASH, as the app
    scenarios ran until session 9 (tests/test_heap32.py compares the two; frozen32.py's
    module list). A flash of a gateway in the field (flash_files(field=True)) is ready once
    connected and synced, and its command comes from the harness's broker."""
    fs = dict(files)
    cfg = json.loads(flash_files[FLASH + "/config.json"])
    field = "wifi" in cfg
    ch_clock = cfg.get("ch_clock", {}).get("enabled", True)  # config.py's default: on
    if esp32:
        for path, data in flash_files.items():
            fs[path[len(FLASH):] if path.startswith(FLASH + "/") else path] = data
        for name in ("boot.py", "main.py"):
            with open(os.path.join(FIRMWARE_DIR, name), "rb") as f:
                fs["/" + name] = f.read()
        fs["/board.json"] = board_json(nfc=nfc, wired=wired)
    else:
        fs.update(flash_files)
    return fs, script(APP_BODY, NFC=nfc, COMMAND=command_path, CATCH=CATCH, PROBES=PROBES, WIRED=wired,
                      FIELD=field, CH_CLOCK=ch_clock,
                      TOPUP=topup, TOPUP_PROBES=TOPUP_PROBES, ESP32=esp32,
                      FLASH=FLASH, NFC_PREFIX=NFC_PREFIX, CH_TRANSFER_SIZE=CH_TRANSFER_SIZE,
                      NCP_MAX_PAYLOAD=NCP_MAX_PAYLOAD)


def check_boot(ready):
    """Raise GaugeError unless a READY figure (an app job with esp32=True) comes from an
    ESP32's boot with everything the firmware loaded counted: no firmware module loaded at
    the baseline, boot.py and main.py run, and the ESP32 board code, not another board, in use."""
    if ready.get("at_base"):
        raise GaugeError("firmware modules were loaded before the baseline: %s" % ", ".join(ready["at_base"]))
    if not ready.get("boot"):
        raise GaugeError("boot.py did not run: the app was not booted as an ESP32 boots it")
    if not ready.get("main"):
        raise GaugeError("main.py did not run: the app was not booted as an ESP32 boots it")
    mods = ready.get("modules") or []
    if "ppmid.board.esp32" not in mods or "ppmid.board.emulated" in mods:
        raise GaugeError("the app did not run on the ESP32 board code (modules: %s)" % ", ".join(mods))


# ---- provisioning for the app (host side, CPython) --------------------------------------

GATEWAY = "00DB1234567890A4"
DEVICES = {"00DB1234567890A0": "ESME", "00DB1234567890A1": "GSME", GATEWAY: "PPMID"}
ESME_NWK = 0x4A21   # han.devices "nwk" of the ESME: what a top-up needs (docs/utrn.md)
UTRN = "73943333457189043313"   # a public UTRN vector: 100 pounds, counter 1
ORIGINATOR = bytes.fromhex("90B3D51F30010000")  # an access-control broker EUI-64
KEY = bytes(range(32))
# DER sizes of what `ppmid provision` issues (EC P-256): the app holds them while it
# builds the TLS context; the bytes themselves do not matter to the stand-in ssl
CERT_SIZES = {"/certs/ca.der": 480, "/certs/gateway.der": 470, "/certs/gateway.key.der": 121}


def _firmware_on_path():
    # the firmware's modules under CPython, as the host tools use them
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from host_tools import mpcompat
    mpcompat.install()


# A DCC User's P-256 test key for the public-key envelope scenario (TEST KEY ONLY)
P256_SCALAR = 0x3A5F0C11D2E4B6978899AABBCCDDEEFF00112233445566778899AABBCCDDEE01
P256_KID = "heap32-pk"


def p256_public_hex():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.derive_private_key(P256_SCALAR, ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


# A gateway in the field as `ppmid provision` writes its config for an MQTT gateway
# (host_tools/provision.py build): the broker's host as the broker's state names it, an
# address (127.0.0.1 for `ppmid broker`'s; here one of RFC 5737's), its port and the
# certificate's name; the Wi-Fi network (--ssid, --password); no sntp or dns section, so
# config.py's defaults: SNTP from pool.ntp.org, a name, looked up through DHCP's resolver.
FIELD_BROKER = {"host": "192.0.2.10", "port": 8883, "server_hostname": "ppmid-broker"}
FIELD_WIFI = {"ssid": "heap32-field", "password": "heap32-passphrase"}


def flash_files(nfc=False, wired=False, p256_user=False, field=False):
    """{path: bytes} of a provisioned flash (docs/config.md) for the stand-in board;
    `wired`: with the wired road enabled (docs/wired.md); `p256_user`: keys per DCC User
    with one user registered by its P-256 public key (docs/envelope.md "Signed envelopes");
    `field`: a gateway in the field (FIELD_BROKER, FIELD_WIFI): on the stand-in board its
    Wi-Fi comes up, SNTP sets its clock and MQTT connects to the harness's broker (h32.py);
    without it Wi-Fi stays down (bench/heap32/frag.py's runs)."""
    _firmware_on_path()
    from ppmid import config
    cfg = {"version": 1, "gateway": GATEWAY,
           "broker": {"host": "broker.invalid", "port": 8883, "server_hostname": "ppmid-broker"},
           "han": {"devices": [dict({"eui": e, "type": t}, **({"nwk": ESME_NWK} if t == "ESME" else {}))
                               for e, t in sorted(DEVICES.items())]}}
    if field:
        cfg["broker"] = dict(FIELD_BROKER)
        cfg["wifi"] = dict(FIELD_WIFI)
    if wired:
        cfg["wired"] = {"enabled": True}
    if p256_user:
        cfg["users"] = {"keys": {P256_KID: {"role": "any", "originators": [ORIGINATOR.hex().upper()],
                                            "public_key": p256_public_hex()}},
                        "roles": {"any": "all"}, "legacy_key": False}
    config.validate(json.loads(json.dumps(cfg)))
    out = {FLASH + "/config.json": json.dumps(cfg).encode(),
           FLASH + "/secrets/envelope.key": KEY}
    for path, n in CERT_SIZES.items():
        out[FLASH + path] = bytes((i * 37 + 11) & 0xFF for i in range(n))
    return out


def command_json(size=4096, counter=1000, signer=None, msg_id="heap32-4k"):
    """A signed JSON command (docs/mqtt.md) carrying a GBCS command of `size` bytes to the
    ESME that the validator accepts; `signer`: a P-256 private scalar, for an envelope
    signed by that DCC User (kid P256_KID) instead of the mac of KEY. A series of commands
    needs a rising `counter` and its own `msg_id` each (the relay drops a repeated id)."""
    _firmware_on_path()
    import binascii
    from ppmid import envelope
    from ppmid.gbcs import build, codes
    code = sorted(codes.commands_for("ESME"))[0]
    recipient = bytes.fromhex("00DB1234567890A0")
    fill = size - 64
    buf = b""
    for _ in range(20):
        buf = build.build_command(counter, ORIGINATOR, recipient, code,
                                  bytes((i * 31 + 7) & 0xFF for i in range(fill)))
        if len(buf) == size:
            break
        fill += size - len(buf)
    if signer is not None:
        from host_tools import p256_envelope
        from cryptography.hazmat.primitives.asymmetric import ec
        sig = p256_envelope.signature(ec.derive_private_key(signer, ec.SECP256R1()), msg_id, buf, None, P256_KID)
        return json.dumps({"id": msg_id, "gbcs": binascii.b2a_base64(buf, newline=False).decode(),
                           "mac": sig.hex(), "kid": P256_KID}).encode(), len(buf)
    env = envelope.sign(KEY, msg_id, buf)
    return json.dumps({"id": msg_id, "gbcs": binascii.b2a_base64(buf, newline=False).decode(),
                       "mac": bytes(env.mac).hex()}).encode(), len(buf)


def topup_json():
    """A signed JSON top-up (docs/envelope.md "Top-ups") of UTRN for the ESME."""
    _firmware_on_path()
    from ppmid import topup
    esme = [e for e, t in DEVICES.items() if t == "ESME"][0]
    env = topup.sign(KEY, "heap32-topup", UTRN, esme)
    return json.dumps({"id": env.id, "utrn": env.utrn, "target": env.target,
                       "mac": bytes(env.mac).hex()}).encode()
