"""The fragmentation bench's reading (bench/heap32/frag.py, docs/memory.md "Fragmentation")
on a heap made to be in pieces: the largest free block it parses from the unix
MicroPython's mem_info is the largest bytearray that fits, and it is far below the free
total. No figure of the app here: `make bench` (bench_frag.py) has those."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from heap32 import frag  # noqa: E402
from host_tools.boards import micropython_binary  # noqa: E402

# a 64K heap cut into pieces: 2 KB buffers, every other one kept; then the reading
PIECES = """
import gc, micropython
keep = []
bufs = [bytearray(2000) for i in range(20)]
keep = bufs[::2]
bufs = None
gc.collect()
print('@@FRAGMAP base')
micropython.mem_info(1)
print('@@FRAGEND base')
lo, hi = 0, gc.mem_free() + 1
while hi - lo > 1:
    mid = (lo + hi) // 2
    try:
        b = bytearray(mid)
        b = None
        lo = mid
    except MemoryError:
        hi = mid
print('FITS', lo, gc.mem_free())
"""


def test_the_largest_free_block_is_what_one_allocation_gets_on_a_heap_in_pieces(tmp_path):
    script = tmp_path / "pieces.py"
    script.write_text(PIECES)
    p = subprocess.run([micropython_binary(), "-X", "heapsize=64K", str(script)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    figs, block = frag.parse(p.stdout.splitlines())
    assert block in (16, 32)  # 32-bit or 64-bit port: 4 words a GC block
    fits, free = [int(x) for x in p.stdout.split("FITS ")[1].split()[:2]]
    assert figs["base"]["largest_blocks"] * block == fits
    assert figs["base"]["free"] > fits


def test_a_reading_without_the_block_map_has_no_block_size():
    figs, block = frag.parse(["@@FRAGMAP ready", "GC: total: 1000, used: 200, free: 800",
                              " No. of 1-blocks: 1, 2-blocks: 0, max blk sz: 2, max free sz: 25",
                              "@@FRAGEND ready"])
    assert figs["ready"] == {"total": 1000, "used": 200, "free": 800, "largest_blocks": 25}
    assert block is None  # run() refuses such a run instead of guessing
