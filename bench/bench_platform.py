"""Platform benchmarks on the emulated board (MicroPython unix port, the heap of
boards/emulated/board.json: 512K, see docs/emulate.md "Memory"):
boot-to-ready time, free heap after boot, heap taken by importing each firmware module,
total compiled (.mpy) size for the emulated board and for the ESP32."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from host_tools import boards, deploy, emuboard  # noqa: E402

BOOTS = 5
FREE_HEAP_GOAL = 0.40  # of the board's heap, after boot

IMPORT_PROBE = """
import gc, sys
sys.path[:] = [%r, '.frozen']
gc.collect()
before = gc.mem_free()
try:
    import %s
    gc.collect()
    print('@@HEAP', before - gc.mem_free())
except Exception as e:
    print('@@ERR', type(e).__name__, e)
"""


def boot_figures(state_dir):
    rows = []
    heap = boards.heap_bytes(boards.load_board("emulated")["heap"])
    with emuboard.EmulatedBoard(state_dir) as b:
        m = b.deploy()
        times, frees = [], [int(m.group(3))]
        for _ in range(BOOTS):
            mark = b.mark()
            b.kill()
            m = b.wait_for(emuboard.BANNER_RE, timeout=30, since=mark)
            seen = time.time()
            spawned = b.state()["spawned_at"]
            times.append((seen - spawned) * 1000)
            frees.append(int(m.group(3)))
    boot_ms = statistics.median(times)
    rows.append({"name": "boot_to_ready", "value": round(boot_ms, 1), "unit": "ms", "goal": "<= 2000",
                 "ok": boot_ms <= 2000,
                 "note": "process spawn -> ready banner on the console, median of %d reboots (includes the "
                         "interpreter start, LittleFS mount, boot.py, main.py imports)" % BOOTS})
    free = min(frees)
    rows.append({"name": "free_heap_after_boot", "value": free, "unit": "bytes",
                 "goal": ">= %d (%d%% of %d)" % (heap * FREE_HEAP_GOAL, FREE_HEAP_GOAL * 100, heap),
                 "ok": free >= heap * FREE_HEAP_GOAL,
                 "note": "%.1f%% of the %d-byte heap free after boot (banner's gc.mem_free after gc.collect)"
                         % (100.0 * free / heap, heap)})
    return rows


def module_names(files):
    out = []
    for f in files:
        if f.startswith("ppmid/") and f.endswith(".mpy"):
            mod = f[:-4].replace("/", ".")
            if mod.endswith(".__init__"):
                mod = mod[:-9]
            out.append(mod)
    return sorted(out)


def import_heap(build_dir, files):
    rows = []
    exe = boards.micropython_binary()
    heap = boards.load_board("emulated")["heap"]
    for mod in module_names(files):
        p = subprocess.run([exe, "-X", "heapsize=" + heap, "-c", IMPORT_PROBE % (build_dir, mod)],
                           capture_output=True, text=True, timeout=60)
        line = next((l for l in p.stdout.splitlines() if l.startswith("@@")), "@@ERR no output " + p.stderr[-200:])
        if line.startswith("@@HEAP"):
            rows.append({"name": "import_heap:" + mod, "value": int(line.split()[1]), "unit": "bytes",
                         "note": "heap kept by `import %s` in a fresh interpreter with the board's heap (with the modules it "
                                 "imports)" % mod})
        else:
            rows.append({"name": "import_heap:" + mod, "value": None, "unit": "bytes",
                         "note": "not importable on the unix port: " + line[6:].strip()})
    return rows


def mpy_sizes():
    rows = []
    for board in ("emulated", "esp32-devkitc", "esp32c3-devkitm-1"):
        build_dir, files, _ = deploy.build(board)
        try:
            mpy = [f for f in files if f.endswith(".mpy")]
            total = sum(os.path.getsize(os.path.join(build_dir, f)) for f in mpy)
            arch = deploy.board_arch(boards.load_board(board))
            rows.append({"name": "mpy_total:" + board, "value": total, "unit": "bytes",
                         "note": "%d .mpy files of the ppmid package, -march=%s" % (len(mpy), arch)})
        finally:
            import shutil
            shutil.rmtree(build_dir, ignore_errors=True)
    return rows


def run():
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        rows += boot_figures(os.path.join(tmp, "board"))
        build_dir, files, _ = deploy.build("emulated", build_dir=os.path.join(tmp, "build"))
        rows += import_heap(build_dir, files)
    rows += mpy_sizes()
    return rows


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
