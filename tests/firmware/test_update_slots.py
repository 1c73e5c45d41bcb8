# The update pointer (ppmid.update.slots): switch, probation boots, confirm, rollback, and
# the probation clock; on a fresh LittleFS mount under MicroPython, a temp dir on CPython.
import json

import asyncio
from ppmid.update import slots
from test_relay_support import fresh_root


def _state(root):
    with open(root + slots.STATE) as f:
        return json.load(f)


def _slot_with_app(root, slot):
    d = slots.slot_dir(root, slot) + "/ppmid"
    slots.makedirs(d)
    with open(d + "/app.mpy", "wb") as f:
        f.write(b"x")


def _silent(msg):
    pass


def test_no_pointer_runs_the_root_set():
    root = fresh_root()
    assert slots.choose(root, _silent) == (root, None)
    assert slots.state(root) == {"slot": ""}


def test_an_unreadable_pointer_runs_the_root_set():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    with open(root + slots.STATE, "w") as f:
        f.write("{not json")
    assert slots.choose(root, _silent) == (root, None)
    with open(root + slots.STATE, "w") as f:
        f.write('{"slot": "../x"}')
    assert slots.choose(root, _silent) == (root, None)


def test_switch_then_probation_boots_then_rollback():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    _slot_with_app(root, "a")
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 2, 60, 1)
    for boot in (1, 2):
        path, p = slots.choose(root, _silent)
        assert path == root + "/upd/a" and p["boots"] == boot
    path, p = slots.choose(root, _silent)  # the third boot: past max_boots
    assert path == root and p is None
    st = _state(root)
    assert st["slot"] == "" and st["version"] == "0.1.0" and "probation" not in st
    assert st["last"]["result"] == "rolled-back" and st["last"]["error"]["code"] == slots.E_UPDATE_BOOT
    assert st["last"]["version"] == "0.2.0" and st["last"]["reported"] is False and st["offer"] == "o1"
    s = slots.summary(st)
    assert s["last"] == "rolled-back" and s["error"] == slots.E_UPDATE_BOOT and s["last_version"] == "0.2.0"


def test_confirm_ends_probation_and_keeps_the_set():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    _slot_with_app(root, "a")
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 3, 60, 1)
    slots.choose(root, _silent)
    assert slots.confirm(root, "0.2.0")
    assert not slots.confirm(root, "0.2.0")  # once
    for _ in range(5):  # no more boots counted, no rollback
        assert slots.choose(root, _silent) == (root + "/upd/a", None)
    st = _state(root)
    assert st["last"]["result"] == "applied" and st["last"]["previous"] == "0.1.0"
    slots.mark_reported(root)
    assert _state(root)["last"]["reported"] is True
    s = slots.summary(_state(root))
    assert s == {"slot": "a", "previous": "0.1.0", "probation": False, "last": "applied", "last_version": "0.2.0",
                 "error": None}


def test_the_next_update_goes_to_the_other_slot_and_rolls_back_to_the_running_one():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    assert slots.target_slot(slots.state(root)) == "a"
    _slot_with_app(root, "a")
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 1, 60, 1)
    slots.confirm(root, "0.2.0")
    assert slots.target_slot(slots.state(root)) == "b"
    _slot_with_app(root, "b")
    slots.switch(root, "b", "0.3.0", "0.2.0", "o2", 1, 60, 1)
    assert slots.choose(root, _silent)[0] == root + "/upd/b"
    assert slots.choose(root, _silent) == (root + "/upd/a", None)  # 0.3.0 failed: back to 0.2.0 in a
    assert _state(root)["version"] == "0.2.0"


def test_the_replay_floor_is_raised_by_the_switch_and_kept_by_every_later_write():
    # docs/update.md "Replay": boots on probation, confirm, the report's mark, rollbacks (by
    # boots, by the clock, to an empty slot) and an image switch all keep it; nothing lowers it
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    assert slots.floor(slots.state(root)) == 0  # never updated
    _slot_with_app(root, "a")
    big = 0xFFFFFFFF  # above 2**30: a long int on a 32-bit port, kept as JSON digits
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 2, 60, big - 1)
    assert _state(root)["seq"] == big - 1
    slots.choose(root, _silent)
    slots.confirm(root, "0.2.0")
    slots.mark_reported(root)
    assert slots.floor(_state(root)) == big - 1
    _slot_with_app(root, "b")
    slots.switch(root, "b", "0.3.0", "0.2.0", "o2", 1, 60, big)
    slots.choose(root, _silent)
    slots.choose(root, _silent)  # past max_boots: rolled back to 0.2.0
    st = _state(root)
    assert st["slot"] == "a" and st["last"]["result"] == "rolled-back" and slots.floor(st) == big
    slots.switch(root, "b", "0.3.1", "0.2.0", "o3", 1, 60, 7)  # a lower seq (a caller's bug) never lowers it
    assert slots.floor(_state(root)) == big
    asyncio.run(slots.watch(_Board(), root, 1, _fast_sleep))  # the probation clock's rollback
    assert _state(root)["last"]["error"]["code"] == slots.E_UPDATE_TIMEOUT and slots.floor(_state(root)) == big
    # an image has its own floor: one signed before the set just installed is no replay
    slots.switch_image(root, "ota_1", "1.1.0", "0.2.0", "i1", 60, 5)
    st = _state(root)
    assert slots.floor(st) == big and slots.floor(st, True) == 5 and st["image"]["label"] == "ota_1"
    assert slots.floors(st) == (big, 5)
    slots.choose(root, _silent)
    slots.choose(root, _silent)   # the image's one probation boot ended unmarked: rolled back
    assert slots.floors(_state(root)) == (big, 5)
    slots.switch(root, "b", "0.3.2", "0.2.0", "o4", 1, 60, big)   # a set's switch keeps the image's
    assert slots.floors(_state(root)) == (big, 5)
    slots.rmtree(slots.slot_dir(root, "a"))
    slots.rmtree(slots.slot_dir(root, "b"))
    slots.choose(root, _silent)  # a pointer at an emptied slot: rolled back to the root set
    assert slots.floors(_state(root)) == (big, 5)


def test_a_floor_that_is_not_a_whole_number_counts_as_none():
    for st in ({"slot": ""}, {"slot": "", "seq": True}, {"slot": "", "seq": "12"}, {"slot": "", "seq": None}):
        assert slots.floor(st) == 0, st
    assert slots.floor({"slot": "a", "seq": 12}) == 12


def test_a_pointer_at_an_empty_slot_falls_back_to_the_root_set():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    slots.write_json(root + slots.STATE, {"slot": "b", "version": "0.2.0"})
    assert slots.choose(root, _silent) == (root, None)
    assert _state(root)["last"]["result"] == "rolled-back"


def test_rmtree_removes_a_slot():
    root = fresh_root()
    _slot_with_app(root, "a")
    slots.makedirs(slots.slot_dir(root, "a") + "/ppmid/mqtt")
    with open(slots.slot_dir(root, "a") + "/ppmid/mqtt/x.mpy", "wb") as f:
        f.write(b"1")
    slots.rmtree(slots.slot_dir(root, "a"))
    assert not slots.exists(slots.slot_dir(root, "a"))


class _Board:
    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1


async def _fast_sleep(ms):
    await asyncio.sleep(0)


def test_the_probation_clock_rolls_back_when_nothing_confirms():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    _slot_with_app(root, "a")
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 3, 60, 1)
    b = _Board()
    asyncio.run(slots.watch(b, root, 5, _fast_sleep))
    assert b.resets == 1
    st = _state(root)
    assert st["slot"] == "" and st["last"]["error"]["code"] == slots.E_UPDATE_TIMEOUT


def test_the_probation_clock_stops_once_confirmed():
    root = fresh_root()
    slots.makedirs(root + slots.DIR)
    _slot_with_app(root, "a")
    slots.switch(root, "a", "0.2.0", "0.1.0", "o1", 3, 60, 1)
    b = _Board()
    ticks = [0]

    async def sleep_then_confirm(ms):
        ticks[0] += 1
        if ticks[0] == 2:
            slots.confirm(root, "0.2.0")
    asyncio.run(slots.watch(b, root, 10, sleep_then_confirm))
    assert b.resets == 0 and ticks[0] == 2 and _state(root)["slot"] == "a"


def test_boots_in_a_row_are_counted_until_the_app_starts():
    root = fresh_root()
    assert [slots.count_boot(root) for _ in range(4)] == [1, 2, 3, 4]
    slots.boot_ok(root)
    assert slots.count_boot(root) == 1
    slots.boot_ok(root)
    slots.boot_ok(root)  # twice: nothing to clear
    assert slots.count_boot(root) == 1
