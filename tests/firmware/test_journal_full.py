# The journal on a full flash (review 2, M1): a real, small LittleFS mount, so MicroPython
# only (a CPython temp dir has the host's free space). Before session 7, open() at boot
# raised OSError(28) when the compacted copy did not fit: every boot failed, then safe mode.
import os

from ppmid.relay import journal as J
from test_relay_support import fresh_root
from test_journal import T, O, ctr, reopen


def body(i):
    return (b"G%03d-" % i) * 100   # 500 bytes: the compacted copy spans several blocks


def accept(j, i):
    return j.accept("c-%d" % i, "mqtt", None, 1000 + i, T, O, ctr(i), body(i))

CPYTHON = False


def fill(root):
    """Write a filler file until the flash is full; returns its path."""
    path = root + "/filler"
    f = open(path, "wb")
    try:
        while True:
            f.write(b"\xff" * 256)
            f.flush()
    except OSError as exc:
        assert exc.args[0] == 28
    try:
        f.close()
    except OSError:
        pass
    return path


def test_a_journal_on_a_full_flash_opens_as_it_is_and_compacts_once_there_is_room():
    root = fresh_root(64)   # 32 KB of 512-byte blocks
    j = J.Journal(root, 8192)
    j.open()
    for i in range(1, 6):
        accept(j, i)
    j.done(j.by_id["c-1"])
    j.close()
    filler = fill(root)
    j, live = reopen(j)                                # the boot on a full flash
    assert [e.id for e in live] == ["c-2", "c-3", "c-4", "c-5"]
    assert j.body(j.by_id["c-4"]) == body(4)
    assert "relay.jnl.new" not in os.listdir(root)     # the failed copy is not left behind
    os.remove(filler)                                  # room again
    c = accept(j, 6)
    assert j.body(c) == body(6)
    j, live = reopen(j)
    assert [e.id for e in live] == ["c-2", "c-3", "c-4", "c-5", "c-6"]
    assert j.body(j.by_id["c-6"]) == body(6)


def test_a_torn_tail_on_a_full_flash_is_not_appended_after():
    root = fresh_root(64)
    j = J.Journal(root, 8192)
    j.open()
    accept(j, 1)
    accept(j, 2)
    j.close()
    with open(j.path, "ab") as f:
        f.write(b"\xa7\x41\x00\x50torn")                # a record cut by a power cut
    filler = fill(root)
    j, live = reopen(j)
    assert [e.id for e in live] == ["c-1", "c-2"] and j.torn_tail
    try:
        c = accept(j, 3)    # drops the torn bytes first, if LittleFS finds room for that
    except OSError as exc:
        assert exc.args[0] == 28
        os.remove(filler)
        c = accept(j, 3)
    assert j.body(c) == body(3)
    j, live = reopen(j)
    assert [e.id for e in live] == ["c-1", "c-2", "c-3"] and not j.torn_tail
