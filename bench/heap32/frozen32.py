"""One-off measurement (issue #14 part 3): what the running app's code takes on a 32-bit
MicroPython heap as .mpy files (`ppmid deploy`) and as frozen bytecode (an image built
with boards/*/manifest.py), in the same interpreter: the unix port built with -m32 from a
MicroPython source tree, with asyncio and the ppmid package frozen in.

Not part of `make bench`: building the port takes minutes. Needs MICROPY_DIR (a MicroPython
source tree; its submodules are not needed) and gcc-multilib (`gcc -m32`); says what is
missing otherwise. The modules are those the heap gauge's app scenario has loaded at its
ready banner (gauge.py), plus ppmid.gbcs.gbt, which the 4 KB command loads.

    MICROPY_DIR=/path/to/micropython .venv/bin/python bench/heap32/frozen32.py

Prints one JSON line per figure (docs/memory.md, "Frozen")."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gauge as G  # noqa: E402

BUILD = "build-ppmid32"
PROG = "micropython-ppmid32"
COMMAND_MODULES = ("ppmid.gbcs.gbt",)

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
    r = G.run_jobs([G.app_job(files, G.flash_files(), False)])[0]
    if not r["ok"] or "READY" not in r["out"]:
        raise G.GaugeError("the app did not get to ready: %s" % (r["error"],))
    ready = r["out"]["READY"][0]["modules"]
    return ready + [m for m in COMMAND_MODULES if m not in ready]


def build(micropy_dir, work):
    manifest = os.path.join(work, "manifest.py")
    with open(manifest, "w") as f:
        f.write('include("$(MPY_DIR)/extmod/asyncio")\n'
                'package("ppmid", base_path=%r, opt=3)\n' % G.FIRMWARE_DIR)
    lib = os.path.join(work, "mpylib")  # the build only checks that micropython-lib is there
    os.makedirs(lib)
    open(os.path.join(lib, "README.md"), "w").close()
    jobs = "-j%d" % (os.cpu_count() or 2)
    for cmd in (["make", "-C", os.path.join(micropy_dir, "mpy-cross"), jobs],
                ["make", "-C", os.path.join(micropy_dir, "ports", "unix"), jobs, "BUILD=" + BUILD, "PROG=" + PROG,
                 "CFLAGS_EXTRA=-m32", "LDFLAGS_EXTRA=-m32", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
                 "MICROPY_PY_SSL=0", "MICROPY_SSL_MBEDTLS=0", "MPY_CROSS_FLAGS=-march=x86",
                 "FROZEN_MANIFEST=" + manifest, "MPY_LIB_DIR=" + lib]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise G.GaugeError("%s failed: %s" % (" ".join(cmd[:3]), p.stderr.strip()[-500:]))
    return os.path.join(micropy_dir, "ports", "unix", BUILD, PROG), \
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
            subprocess.run([mpy_cross, *G.MPY_OPTS, *arch, "-o", out, "-s", rel, os.path.join(src, rel)], check=True)


def measure(exe, where, script):
    p = subprocess.run([exe, "-X", "heapsize=2M", script, where],
                       capture_output=True, text=True, timeout=120)
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
        exe, mpy_cross = build(micropy_dir, work)
        mpy_dir = os.path.join(work, "mpy")
        compile_mpy(mpy_cross, mpy_dir)
        script = os.path.join(work, "imports.py")
        with open(script, "w") as f:
            # the list in the script: a long argv stopped the 32-bit port ("FATAL: uncaught NLR")
            f.write("MODS = %r\n" % (modules,) + IMPORT_SCRIPT)
        as_mpy = measure(exe, mpy_dir, script)
        frozen = measure(exe, ".frozen", script)
    version = subprocess.run([exe, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout.strip()
    note = "%d modules (the app at ready + the command's GBT), unix port -m32, MicroPython %s" % (len(modules), version)
    return [{"name": "heap32 unix32 app modules as .mpy", "value": as_mpy, "unit": "bytes", "note": note},
            {"name": "heap32 unix32 app modules frozen", "value": frozen, "unit": "bytes", "note": note}]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
