"""One-off measurement (issue #14 part 3): what the running app's code takes on a 32-bit
MicroPython heap as .mpy files (`ppmid deploy`) and as frozen bytecode (an image built
with boards/*/manifest.py), in one interpreter built twice: the unix port built with -m32
from a MicroPython source tree, with asyncio frozen in (the .mpy figures: a stock image),
and with asyncio and the ppmid package frozen in (the frozen figures).

Not part of `make bench`: building the port takes minutes. Needs MICROPY_DIR (a MicroPython
source tree; its submodules are not needed) and gcc-multilib (`gcc -m32`); says what is
missing otherwise. The modules are those the heap gauge's app scenario has loaded at its
ready banner (gauge.py) on h32's stand-in board (so without the ESP32 board code: see
app_modules), plus ppmid.gbcs.gbt, which the 4 KB command loads. Then the
gauge's whole app scenario runs in these images, the package as .mpy and frozen: the app
booted to ready as an ESP32 boots it (main.py, the ESP32 board code; since session 9) and
the peak of the 4 KB command (run_scenario). Since session 11 a third run of the scenario
takes the same .mpy files from a ROMFS image (`vfs.VfsRom`, mounted at /rom, first on the
path), as a board whose MicroPython has ROMFS enabled and a romfs partition holding them
would (`mpremote romfs deploy`): MicroPython runs a ROMFS .mpy's bytecode in place, as it
runs frozen code, instead of copying it into the heap (docs/memory.md, "ROMFS").

    MICROPY_DIR=/path/to/micropython .venv/bin/python bench/heap32/frozen32.py

Prints one JSON line per figure (docs/memory.md, "Frozen"), and writes the ROMFS run's live
peak into boards/app_heap.json `romfs` (the app's heap need from ROMFS, which `ppmid deploy
--romfs` compares with a board's heap; bench_heap32.py keeps it when it rewrites its own
figure there). The two figures come from two gauges (this unix -m32 port, the webassembly
one) and are refreshed by two runs: the date of each is in the file and in the refusals
that quote it."""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gauge as G  # noqa: E402

# Two images of the same port and options: one with the ppmid package frozen (its code and
# its names in the firmware), one without it, for the .mpy figures. A .mpy loaded into the
# first finds every name it uses already interned in the image's ROM qstr pool, so it
# interns nothing: figures ~37 KB too low for the app (docs/memory.md, "Why the two 32-bit
# ports differed"). A stock MicroPython on an ESP32 has no ppmid names in ROM.
BUILDS = {True: ("build-ppmid32", "micropython-ppmid32"),
          False: ("build-plain32", "micropython-plain32")}
COMMAND_MODULES = ("ppmid.gbcs.gbt",)
# the row whose figure is the app's heap need from ROMFS: written into boards/app_heap.json
# `romfs` by every run (write_romfs_need), which `ppmid deploy --romfs` compares with a
# board's heap (host_tools/deploy.py romfs_heap_need; review_w10-9)
PEAK_ROW = "heap32 unix32 peak 4KB command, "  # + the kind: ".mpy" -> "mpy", "frozen", "romfs"
ROMFS_NEED_ROW = PEAK_ROW + "romfs"
APP_HEAP_JSON = os.path.join(os.path.dirname(os.path.dirname(HERE)), "boards", "app_heap.json")
ROMFS_GAUGE = ("unix port -m32 (stock build-plain32), the package's .mpy files in a ROMFS image mounted at /rom "
               "(mpremote's writer); live peak of the 4 KB command (docs/memory.md \"ROMFS\")")

# runs in the 32-bit port: live heap (after a collect) taken by importing MODS from WHERE
IMPORT_SCRIPT = """
import gc, sys
import asyncio, binascii, struct, os, random, json, errno, select, socket
WHERE = sys.argv[1]
sys.path[:] = [WHERE]
gc.collect()
a0 = gc.mem_alloc()
for m in MODS:
    __import__(m)
gc.collect()
print(gc.mem_alloc() - a0)
"""


class Missing(Exception):
    pass


def _check(micropy_dir):
    if not micropy_dir:
        raise Missing("MICROPY_DIR is not set (a MicroPython source tree)")
    for p in ("ports/unix/Makefile", "mpy-cross/Makefile", "extmod/asyncio/manifest.py"):
        if not os.path.isfile(os.path.join(micropy_dir, p)):
            raise Missing("MICROPY_DIR=%s has no %s" % (micropy_dir, p))
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write("int main(void){return 0;}\n")
        if subprocess.run(["gcc", "-m32", src, "-o", os.path.join(d, "t")], capture_output=True).returncode:
            raise Missing("gcc cannot build 32-bit programs: install gcc-multilib")


def app_modules():
    """The firmware modules at the app's ready banner in the gauge, plus the command's."""
    files, _skipped = G.compile_tree(G.FIRMWARE_DIR)
    # the stand-in board's boot: the board code is left out of these rows (their script
    # imports from the package's directory alone, where no stand-in `network` is); the
    # scenario rows boot as an ESP32 and count it (run_scenario)
    r = G.run_jobs([G.app_job(files, G.flash_files(field=True), False, esp32=False)])[0]
    if not r["ok"] or "READY" not in r["out"]:
        raise G.GaugeError("the app did not get to ready: %s" % (r["error"],))
    ready = r["out"]["READY"][0]["modules"]
    return ready + [m for m in COMMAND_MODULES if m not in ready]


def build(micropy_dir, work, freeze_package):
    """The -m32 unix port with asyncio frozen, and the ppmid package too when freeze_package."""
    build_dir, prog = BUILDS[freeze_package]
    manifest = os.path.join(work, "manifest-%s.py" % build_dir)
    with open(manifest, "w") as f:
        f.write('include("$(MPY_DIR)/extmod/asyncio")\n')
        if freeze_package:
            f.write('package("ppmid", base_path=%r, opt=3)\n' % G.FIRMWARE_DIR)
    lib = os.path.join(work, "mpylib")  # the build only checks that micropython-lib is there
    os.makedirs(lib, exist_ok=True)
    open(os.path.join(lib, "README.md"), "w").close()
    jobs = "-j%d" % (os.cpu_count() or 2)
    for cmd in (["make", "-C", os.path.join(micropy_dir, "mpy-cross"), jobs],
                ["make", "-C", os.path.join(micropy_dir, "ports", "unix"), jobs, "BUILD=" + build_dir, "PROG=" + prog,
                 "CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
                 "MICROPY_PY_SSL=0", "MICROPY_SSL_MBEDTLS=0", "MPY_CROSS_FLAGS=-march=x86",
                 "FROZEN_MANIFEST=" + manifest, "MPY_LIB_DIR=" + lib]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise G.GaugeError("%s failed: %s" % (" ".join(cmd[:3]), p.stderr.strip()[-500:]))
    return os.path.join(micropy_dir, "ports", "unix", build_dir, prog), \
        os.path.join(micropy_dir, "mpy-cross", "build", "mpy-cross")


def compile_mpy(mpy_cross, out_dir):
    """The firmware as .mpy files, as `ppmid deploy` makes them (-O3), the viper module for x86."""
    src = G.FIRMWARE_DIR
    for folder, dirs, names in os.walk(os.path.join(src, "ppmid")):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        for n in names:
            if not n.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, n), src)
            out = os.path.join(out_dir, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            arch = ["-march=x86"] if n == "_ash_fast.py" else []
            subprocess.run([mpy_cross, *G.MPY_OPTS, *arch, "-o", out, "-s", G.source_name(rel), os.path.join(src, rel)],
                           check=True)


# The gauge's app scenario (gauge.APP_BODY, unchanged; booted as an ESP32, UNIX_ROOT below) in the 32-bit unix port: there
# gc.collect() works inside running code, so the harness's samples collect first: between
# the event loop's turns (the webassembly port gets the same by letting node collect), and,
# since session 6, at the probes too, inside the firmware's turns (where the webassembly
# port can only give an upper bound, garbage included): so the "bound" here is the live
# heap at the probed points, and the higher of it and the peak is the live peak.
UNIX_HARNESS = """
async def _live():
    await asyncio.sleep_ms(0)
    gc.collect()
    return gc.mem_alloc()
async def _sampler(stop, where='loop'):
    while not stop[0]:
        await asyncio.sleep_ms(1)
        gc.collect()
        a = gc.mem_alloc()
        H.samples[0] += 1
        if a > H.peak[0]:
            H.peak[0] = a
            H.peak[1] = where
def _sample(where=''):
    gc.collect()
    a = gc.mem_alloc()
    H.samples[0] += 1
    if a > H.bound[0]:
        H.bound[0] = a
        H.bound[1] = where
        if len(H.trace) < 64:
            H.trace.append((where, a))
    return a
H.live = _live
H.sampler = _sampler
H.sample = _sample
"""


# The ESP32's boot (gauge.APP_BODY with esp32=True) in the unix port: its filesystem is
# the host's, so the job's directory is mounted as the root first (the ESP32 Board's flash
# root is "/"); its built-in `machine` would win over the stand-in on the path, so the
# stand-in is put in sys.modules under that name; its asyncio has run() and streams, which
# main.py's run would block in and a stand-in UART cannot feed: h32's take their place,
# as in the webassembly port.
UNIX_ROOT = """
import vfs, os
vfs.umount('/')
vfs.mount(vfs.VfsPosix(%r), '/')
os.chdir('/')
"""
UNIX_ESP32 = """
import h32_machine
sys.modules['machine'] = h32_machine
asyncio.run = H._run
asyncio.StreamReader = H.Reader
asyncio.StreamWriter = H.Writer
"""


def romfs_image(files, package="ppmid"):
    """The ROMFS image (bytes) of a package's .mpy files (compile_tree's /ppmid/...), as
    `mpremote romfs build` makes it: mpremote's own writer."""
    import contextlib
    import io
    from mpremote.romfs import make_romfs
    with tempfile.TemporaryDirectory() as d:
        for path, data in files.items():
            if path.startswith("/%s/" % package):
                dest = d + path
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(data)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree
            return make_romfs(d, mpy_cross=False)


# The package from a ROMFS image: read from the job's root into the heap BEFORE the
# scenario's baseline (so outside every figure: on a board it is memory-mapped flash), and
# mounted where a board mounts its romfs partition, /rom, searched first.
UNIX_ROMFS = """
_rom = open('/pkg.romfs', 'rb').read()
vfs.mount(vfs.VfsRom(_rom), '/rom')
"""


def scenario_script(root, frozen, esp32=True, field=True, romfs=False):
    """The gauge's 4 KB-command job as a unix-port script under root (its files written
    there: the harness, the flash, and the .mpy package unless frozen). esp32: booted as
    an ESP32 (main.py, the ESP32 board code, as the gauge's own rows since session 9),
    else app.run on h32's stand-in board; field: a gateway in the field, as bench_heap32's
    (gauge.flash_files)."""
    files, _skipped = G.compile_tree(G.FIRMWARE_DIR)
    files.update(G.harness_files())
    if romfs:
        if not esp32:
            raise G.GaugeError("the ROMFS scenario boots as an ESP32 (its root mounted first)")
        with open(root + "/pkg.romfs", "wb") as f:
            f.write(romfs_image(files))
    if frozen or romfs:  # the package comes from the image: only the harness on the path before it
        files = {k: v for k, v in files.items() if not k.startswith("/ppmid/")}
    payload, _n = G.command_json(4096)
    flash = G.flash_files(field=field)
    flash["/cmd.json"] = payload
    fs, src = G.app_job(files, flash, False, "/cmd.json", esp32=esp32)
    if esp32:
        fs[G.LIB + "/h32_machine.py"] = fs[G.LIB + "/machine.py"]
    for path, data in fs.items():
        dest = root + path
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(data)
    if esp32:
        harness = UNIX_HARNESS + UNIX_ESP32
    else:
        for path in (G.LIB, G.FLASH, "/cmd.json"):  # the job's absolute paths, under root
            src = src.replace(repr(path), repr(root + path))
        harness = UNIX_HARNESS
    src = src.replace("BASE = await H.live()", harness + "BASE = await H.live()")
    head = UNIX_ROOT % root if esp32 else ""
    if romfs:
        head += UNIX_ROMFS
        path = "sys.path[:] = ['', "
        if path not in src:
            raise G.GaugeError("the gauge's script no longer sets sys.path as %r" % path)
        src = src.replace(path, "sys.path[:] = ['/rom', '', ")
    # the gauge's scripts use top-level await (the port's runPythonAsync): one coroutine here
    body = "".join("    " + line + "\n" for line in src.splitlines())
    return head + "import asyncio\nasync def _main():\n" + body + "asyncio.run(_main())\n"


def run_scenario(exe, root, frozen, esp32=True, field=True, romfs=False):
    script = os.path.join(root, "scenario.py")
    with open(script, "w") as f:
        f.write(scenario_script(root, frozen, esp32, field, romfs))
    # cwd: the package lies at root + /ppmid, found through sys.path's '' (gauge.LIB)
    p = subprocess.run([exe, "-X", "heapsize=2M", script], capture_output=True, text=True, timeout=300, cwd=root)
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith("@@") and " " in line:
            tag, data = line[2:].split(" ", 1)
            try:
                out.setdefault(tag, []).append(json.loads(data))
            except ValueError:
                continue  # not a figure: the gauge's '@@NAMES tag' marks (gauge.names_at)
    if "COMMAND" not in out:
        raise G.GaugeError("the 4 KB command did not go through (%s): %s"
                           % ("frozen" if frozen else "romfs" if romfs else ".mpy", (p.stdout + p.stderr).strip()[-800:]))
    if esp32:
        G.check_boot(out["READY"][0])
    c = out["COMMAND"][0]
    if c["accepted"] != 1 or c["counters"].get("relayed") != 1:
        raise G.GaugeError("the 4 KB command was not accepted and relayed: %s" % json.dumps(c))
    return out["READY"][0]["bytes"], c


def measure(exe, where, script):
    # where: a directory, made the current one and searched as '' (as a board's flash root:
    # gauge.LIB), or ".frozen"
    frozen = where == ".frozen"
    p = subprocess.run([exe, "-X", "heapsize=2M", script, where if frozen else ""],
                       capture_output=True, text=True, timeout=120, cwd=None if frozen else where)
    if p.returncode:
        raise G.GaugeError("importing from %s failed: %s" % (where, (p.stdout + p.stderr).strip()[-300:]))
    return int(p.stdout.split()[-1])


def run():
    micropy_dir = os.environ.get("MICROPY_DIR", "")
    try:
        _check(micropy_dir)
    except Missing as exc:
        return [{"name": "heap32 frozen", "skipped": str(exc)}]
    modules = app_modules()
    with tempfile.TemporaryDirectory() as work:
        exe_frozen, mpy_cross = build(micropy_dir, work, True)
        exe_plain, _mpy_cross = build(micropy_dir, work, False)
        mpy_dir = os.path.join(work, "mpy")
        compile_mpy(mpy_cross, mpy_dir)
        script = os.path.join(work, "imports.py")
        with open(script, "w") as f:
            # the list in the script: a long argv stopped the 32-bit port ("FATAL: uncaught NLR")
            f.write("MODS = %r\n" % (modules,) + IMPORT_SCRIPT)
        as_mpy = measure(exe_plain, mpy_dir, script)
        frozen = measure(exe_frozen, ".frozen", script)
        scen = {}
        for kind in (".mpy", "frozen", "romfs"):
            root = os.path.join(work, "scenario-" + kind.strip("."))
            os.makedirs(root)
            scen[kind] = run_scenario(exe_frozen if kind == "frozen" else exe_plain, root, kind == "frozen",
                                      romfs=kind == "romfs")
        rom_bytes = os.path.getsize(os.path.join(work, "scenario-romfs", "pkg.romfs"))
    version = subprocess.run([exe_plain, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout.strip()
    note = ("%d modules (the app at ready + the command's GBT), unix port -m32, MicroPython %s; as .mpy in the "
            "image without ppmid frozen, frozen in the image with it" % (len(modules), version))
    rows = [{"name": "heap32 unix32 app modules as .mpy", "value": as_mpy, "unit": "bytes", "note": note},
            {"name": "heap32 unix32 app modules frozen", "value": frozen, "unit": "bytes", "note": note}]
    for kind in (".mpy", "frozen", "romfs"):
        ready, c = scen[kind]
        what = {".mpy": "as .mpy (the gauge's, no -march: the viper ASH loops left out)", "frozen": "frozen",
                "romfs": "as the same .mpy files in a ROMFS image of %d bytes (vfs.VfsRom at /rom, outside the "
                         "heap as a board's romfs partition is)" % rom_bytes}[kind]
        rows.append({"name": "heap32 unix32 app ready (mqtt+zigbee), " + kind.strip("."), "value": ready,
                     "unit": "bytes", "note": "the gauge's app scenario, package %s; unix port -m32, MicroPython %s"
                                              % (what, version)})
        live_peak = max(c["peak"], c["bound"])
        rows.append({"name": PEAK_ROW + kind.strip("."), "value": live_peak,
                     "unit": "bytes", "goal": "<= 112640", "ok": live_peak <= 112640,
                     "note": "the gauge's 4 KB command scenario, package %s: live peak, the highest of %d "
                             "collected samples between turns (%d) and at the probes inside them (%d at %s); "
                             "%d before the command; unix port -m32, MicroPython %s"
                             % (what, c["samples"], c["peak"], c["bound"], c["bound_at"], c["start"], version)})
    return rows


def write_romfs_need(rows, path=APP_HEAP_JSON, today=None):
    """boards/app_heap.json `romfs` from this run's ROMFS_NEED_ROW (the rest of the file,
    bench_heap32.py's plain figure, kept); nothing when the run was skipped. Returns the
    figure written, or None."""
    row = next((r for r in rows if r.get("name") == ROMFS_NEED_ROW and "value" in r), None)
    if row is None:
        return None
    with open(path) as f:
        data = json.load(f)
    data["romfs"] = {"peak_4kb_command_bytes": row["value"], "measured": today or time.strftime("%Y-%m-%d"),
                     "gauge": ROMFS_GAUGE, "by": "bench/heap32/frozen32.py", "row": ROMFS_NEED_ROW}
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return row["value"]


if __name__ == "__main__":
    rows = run()
    for row in rows:
        print(json.dumps(row))
    write_romfs_need(rows)
