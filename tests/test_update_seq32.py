"""A manifest's seq on a 32-bit MicroPython (docs/update.md "Replay"): small ints are 31
bits there, so every seq from 2**30 up (every unix time since 2004, what `ppmid release`
signs by default) is a long int. The firmware's manifest check and the pointer's floor run
as .mpy in the webassembly port under node (the heap gauge's machinery, bench/heap32):
parsed, compared, written back as JSON and read again; out-of-range values refused."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from heap32 import gauge as G  # noqa: E402

BODY = """
import json
from ppmid.update import manifest as M
from ppmid.update import slots
base = {"format": 1, "version": "0.2.0", "board": "emulated", "expires": 4102444800,
        "files": [{"path": "ppmid/app.mpy", "sha256": "ab" * 32, "size": 3}]}
taken = []
for v in VALUES:
    m = M.parse_manifest(json.dumps(dict(base, seq=v)))
    floor = slots.floor(json.loads(json.dumps({"seq": m["seq"]})))  # through the pointer's JSON
    taken.append([m["seq"] == v, floor == v, m["seq"] > v - 1, not m["seq"] > floor, floor > v - 1])
refused = []
for v in BAD:
    try:
        M.parse_manifest(json.dumps(dict(base, seq=v)))
        refused.append("accepted")
    except M.UpdateError as e:
        refused.append(e.code)
out('SEQ', taken=taken, refused=refused, maxsize=sys.maxsize)
"""


def test_seq_past_the_small_ints_is_parsed_compared_and_kept_on_a_32_bit_port():
    try:
        G.check_installed()
    except G.GaugeError as exc:
        pytest.fail(str(exc))  # make setup installs it: missing is a set-up fault, not a skip
    files, _ = G.compile_tree(G.FIRMWARE_DIR)
    values = [1, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    bad = [-1, 0, 0x100000000, True, "5"]
    r = G.run_jobs([(files, G.script(BODY, VALUES=values, BAD=bad))])[0]
    assert r["ok"], (r["error"], r["lines"][-10:])
    got, = r["out"]["SEQ"]
    assert got["maxsize"] == 2 ** 31 - 1  # the 32-bit port indeed: 31-bit small ints
    assert got["taken"] == [[True] * 5] * len(values), got
    assert got["refused"] == ["E_UPDATE_MANIFEST"] * len(bad), got
