# The journal on a full flash (review 2, M1): a real, small LittleFS mount, so MicroPython
# only (a CPython temp dir has the host's free space). Before session 7, open() at boot
# raised OSError(28) when the compacted copy did not fit: every boot failed, then safe mode.
import os

from ppmid.relay import journal as J
from test_relay_support import fresh_root
from test_journal import T, O, ctr, reopen, answered
from ppmid.relay.report import named


def body(i):
    return (b"G%03d-" % i) * 100   # 500 bytes: the compacted copy spans several blocks


def accept(j, i):
    return j.accept("c-%d" % i, "mqtt", None, 1000 + i, T, O, ctr(i), body(i))

CPYTHON = False


def fill(root, leave=0):
    """Write a filler file until the flash is full but for about `leave` bytes (a spare
    file written first and removed after); returns its path."""
    if leave:
        with open(root + "/spare", "wb") as f:
            f.write(b"\xff" * leave)
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
    if leave:
        os.remove(root + "/spare")
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


# ---- past max_bytes on a flash without room for a copy (review 84, F1) -----------------
def test_without_room_for_a_copy_the_records_that_finish_commands_still_land():
    # answers waiting for the broker hold ~13 KB live against an 8 KB bound, and the flash
    # (64 KB) is full but for ~3 KB: no compaction can be written. Before review 84 every
    # done failed ENOSPC (its compaction first), at every boot: nothing could finish
    root = fresh_root(128)
    j = J.Journal(root, 8192)
    j.open()
    answered(j, 8, 1500)
    j.close()
    fill(root, 6 * 512)
    j, live = reopen(j)                    # boots on the file as scanned
    assert len(live) == 8 and j.compactions == 0 and j.size > j.max_bytes
    for e in live:
        j.done(e)                          # the broker acknowledged its final status
    j, live = reopen(j)
    assert live == []
    c = accept(j, 20)                      # and the gateway takes new commands
    assert j.body(c) == body(20)
    j.close()


def test_an_accept_whose_compaction_finds_no_room_is_refused_busy_not_a_flash_error():
    root = fresh_root(128)
    j = J.Journal(root, 8192)
    j.open()
    es = answered(j, 4, 1400)
    j.done(es[0])                          # a compaction would make room for a command
    filler = fill(root, 3 * 512)           # but the flash has none for its copy
    try:
        accept(j, 20)
        raise AssertionError("accepted past the bound")
    except J.JournalError as exc:
        assert exc.code == J.E_BUSY
    assert "relay.jnl.new" not in os.listdir(root)
    for e in es[1:]:                       # the commands in hand still finish
        j.done(e)
    os.remove(filler)
    c = accept(j, 21)
    assert j.body(c) == body(21)
    j, live = reopen(j)
    assert [e.id for e in live] == ["c-21"]
    j.close()


async def test_statuses_the_broker_acknowledges_end_their_commands_on_a_full_flash():
    # the relay's view of the case above: answers pile up while the broker is away, then
    # the flash fills; once the broker is back its acknowledgements end the commands (before
    # review 84: `done` raised ENOSPC in the publish loop, at every boot, and the first new
    # command after a restart put the relay in fault)
    from test_relay_support import Rig, response_to
    root = fresh_root(128)
    r = Rig(root=root, max_bytes=3072)   # 12 commands of the fixture (signed: 64-byte signature) within the accept reserve
    r.han.responder = lambda b: response_to(b, b"\x55" * 120)
    r.pub.down = True
    for i in range(12):
        assert (await r.submit("c-%d" % i, 10 + i))["status"] == "accepted"
    for i in range(40):                   # sent and answered one by one
        await r.relay.dispatch_once()
        while r.han.rx:
            r.relay.on_han_message(r.han.rx.pop(0))
        r.clock.advance(2000)
    assert named(r.relay.counters)["answered"] == 12 and r.journal.size > r.journal.max_bytes
    r.journal.close()
    fill(root, 3 * 512)                   # a record fits, a copy of the journal does not
    r.restart()
    assert len(r.journal.live) == 12 and r.journal.compactions == 0
    r.pub.down = False
    assert await r.publish_all() == 12   # recovery queues each command's latest status
    assert len([m for m in r.pub.on("/rsp") if m["status"] == "response"]) == 12
    assert len(r.journal.live) == 0 and r.relay.fault is None
    r.restart()
    assert len(r.journal.live) == 0
    assert (await r.submit("x-1", 99))["status"] == "accepted"
