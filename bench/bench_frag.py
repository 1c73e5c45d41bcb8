"""Heap fragmentation (issue #14 follow-up): the largest contiguous free block beside the
free total, after a collect, on the unix MicroPython of the emulated board (x86-64, 64-bit
objects, 32-byte GC blocks) in a fixed heap: at the app's ready banner, after the first
command and after a series of 20 commands of mixed sizes, each answered (bench/heap32/frag.py).
The free total is what `gc.mem_free()` says; the largest block is what one allocation can
get (an app update's offer, the MQTT client's receive buffer growing). How it is read, and
why not in the webassembly gauge: docs/memory.md "Fragmentation"."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from heap32 import frag  # noqa: E402
from host_tools.boards import heap_bytes  # noqa: E402

KB = 1024
# the emulated board's heap (boards/emulated/board.json), and a smaller one: 64-bit objects
# take about twice an ESP32's, so neither is a board's figure
with open(os.path.join(os.path.dirname(HERE), "boards", "emulated", "board.json")) as _f:
    EMULATED_HEAP = heap_bytes(json.load(_f)["heap"])
HEAPS = (EMULATED_HEAP, 384 * KB)
POINTS = (("ready", "at ready"), ("command 1", "after 1 command"),
          ("commands", "after %d commands" % frag.COMMANDS))


def run():
    rows = []
    for heap in HEAPS:
        r = frag.run(heap)
        figs = r["figures"]
        where = ("unix MicroPython (the emulated board's, 64-bit, %d-byte GC blocks), fixed heap %d KB%s"
                 % (r["block"], heap // KB, " (the emulated board's)" if heap == EMULATED_HEAP else ""))
        for tag, label in POINTS:
            f = figs[tag]
            note = ("of %d bytes free (%d%%), %d used (the harness's %d before the app included); %s; "
                    "micropython.mem_info()'s max free run, the same as the largest bytearray that fits"
                    % (f["free"], 100 * f["largest"] // f["free"], f["used"], figs["base"]["used"], where))
            if tag == "commands":
                # what the boot's gc.threshold costs: a collect per _GC_THRESHOLD bytes allocated
                note += ("; the series allocated %d bytes (%d per command, the app's other tasks included), "
                         "one collect at ready took %d us on this machine"
                         % (r["run"]["allocated"], r["run"]["allocated"] // frag.COMMANDS, r["run"]["collect_us"]))
            rows.append({"name": "frag largest free block %s, %dK heap" % (label, heap // KB),
                         "value": f["largest"], "unit": "bytes", "note": note})
    return rows
