# mp-heapsize: 384K  (a whole file of tests in one 64-bit interpreter: the test code and every module the file loads stay; the app's own 32-bit figures are the heap32 bench rows)
# The gateway's update service (ppmid.update.service) over a stand-in MQTT client and board,
# on a fresh flash filesystem: the pull protocol (repeats, gaps and reorders are ignored
# and the need said again), resume after a power cut (a new Updater on the same flash),
# refusals with their codes, and the switch (waits for the relay, writes the pointer,
# resets). CPython and MicroPython. End to end over the broker: tests/test_e2e_update.py.
import json

import asyncio
from ppmid.update import service as S
from ppmid.update import slots
from ppmid.update.manifest import E_UPDATE_SIGNATURE, E_UPDATE_OLDER
from test_relay_support import fresh_root, fresh_signature_limits
from update_vectors import PUBLIC, REAL_FILES, signed_offer

EUI = "00DB1234567890A4"


class _Client:
    client_id = EUI
    max_packet = 11000

    def __init__(self):
        self.sent = []

    async def publish(self, topic, payload, qos=1, retain=False, wait=True, first=False):
        self.sent.append((topic, json.loads(payload), retain))
        return True

    def last(self):
        return self.sent[-1][1]


class _Board:
    name = "emulated"

    def __init__(self, root):
        self.fs_root = root
        self.resets = 0

    def reset(self):
        self.resets += 1


class _Journal:
    def sync(self):
        pass


class _Relay:
    def __init__(self):
        self.busy = 0
        self.journal = _Journal()

    def info(self):
        if self.busy:
            self.busy -= 1
            return {"queued": 0, "in_flight": 1, "to_publish": 0}
        return {"queued": 0, "in_flight": 0, "to_publish": 0}


def _setup(chunk=1000):
    fresh_signature_limits()
    root = fresh_root(512)
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps({"gateway": EUI, "update": {"public_key": PUBLIC, "chunk": chunk}}))
    return root


def _updater(root, relay=None):
    return S.Updater(_Board(root), relay, _Client(), "0.1.0", log=lambda m: None)


def _chunk(i, off, data):
    return bytes([i >> 8, i & 255, off >> 24, (off >> 16) & 255, (off >> 8) & 255, off & 255]) + data


async def _serve(u, limit=1000, cut=False):
    """Answer each need from the last status until it stops asking (or, cut, after limit
    chunks); returns the last status."""
    for _ in range(limit):
        st = u.client.last()
        if st.get("state") != "downloading" or "file" not in st:
            return st
        i, off = st["file"], st["offset"]
        await u.handle(u.topic + "/data", _chunk(i, off, REAL_FILES[i][off:off + st["chunk"]]))
    if cut:
        return u.client.last()
    raise AssertionError("no end")


async def _settle():
    for _ in range(50):
        await asyncio.sleep(0.01)


def test_a_good_download_switches_into_a_slot_on_probation():
    _good_download("real")


def test_a_format_2_manifest_downloads_and_switches_as_format_1_does():
    # the same set, its files as [path, size, sha256 in base64] (docs/update.md "Manifest formats")
    _good_download("real-v2")


def _good_download(name):
    root = _setup()

    async def go():
        u = _updater(root, _Relay())
        await u.handle(u.topic + "/offer", signed_offer(name, "o1"))
        st = u.client.last()
        assert st["state"] == "downloading" and st["id"] == "o1" and st["file"] == 0 and st["offset"] == 0
        assert st["total"] == sum(len(f) for f in REAL_FILES) and st["chunk"] == 1000
        await _serve(u)
        await _settle()
        return u
    u = asyncio.run(go())
    states = [m[1]["state"] for m in u.client.sent]
    assert states[-1] == "switching" and u.board.resets == 1
    assert all(m[0] == "ppmid/v1/%s/update" % EUI and m[2] for m in u.client.sent)  # retained, on the status topic
    st = slots.state(root)
    assert st["slot"] == "a" and st["version"] == "0.2.0" and st["probation"]["boots"] == 0
    assert st["previous"] == {"slot": "", "version": "0.1.0"}
    with open(root + "/upd/a/ppmid/app.mpy", "rb") as f:
        assert f.read() == REAL_FILES[1]
    assert not slots.exists(root + slots.STAGE)


def test_repeats_gaps_and_reorders_are_ignored_and_the_need_said_again():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real"))
        await u.handle(u.topic + "/data", _chunk(0, 0, REAL_FILES[0][:10]))
        assert u.client.last()["offset"] == 10
        await u.handle(u.topic + "/data", _chunk(0, 0, REAL_FILES[0][:10]))   # a repeat
        await u.handle(u.topic + "/data", _chunk(0, 15, REAL_FILES[0][15:]))  # a gap
        await u.handle(u.topic + "/data", _chunk(1, 0, REAL_FILES[1][:50]))   # a reorder
        assert u.stats["ignored"] == 3
        st = u.client.last()
        assert (st["file"], st["offset"]) == (0, 10)
        await _serve(u)
        await _settle()
        return u
    u = asyncio.run(go())
    assert u.board.resets == 1


def test_a_power_cut_mid_download_resumes_where_the_flash_stopped():
    root = _setup(chunk=700)

    async def first():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        await _serve(u, limit=3, cut=True)  # board.json and part of app.mpy, then the "power cut"
        return u.client.last()
    cut = asyncio.run(first())
    assert cut["file"] == 1 and 0 < cut["offset"] < len(REAL_FILES[1])

    async def second():
        u = _updater(root)  # a new boot: nothing in RAM
        await u.handle(u.topic + "/offer", signed_offer("real", "o2"))
        st = u.client.last()
        assert (st["file"], st["offset"]) == (cut["file"], cut["offset"]) and st["id"] == "o2"
        await _serve(u)
        await _settle()
        return u
    u = asyncio.run(second())
    assert u.board.resets == 1 and slots.state(root)["slot"] == "a"
    assert u.stats["bytes"] == len(REAL_FILES[1]) - cut["offset"]


def test_a_corrupted_file_is_refused_and_the_slot_cleared():
    _corrupted_file("real")


def test_a_corrupted_file_is_refused_under_format_2_too():
    # the base64 digest is compared as the hex one is: one flipped bit is found
    _corrupted_file("real-v2")


def _corrupted_file(name):
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer(name))
        bad = bytearray(REAL_FILES[0])
        bad[3] ^= 1
        await u.handle(u.topic + "/data", _chunk(0, 0, bytes(bad)))
        return u
    u = asyncio.run(go())
    st = u.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_HASH and "board.json" in st["error"]["message"]
    assert not slots.exists(root + "/upd/a") and not slots.exists(root + slots.STAGE)
    assert slots.state(root) == {"slot": ""} and u.board.resets == 0


def test_more_data_than_the_file_size_is_refused():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real"))
        await u.handle(u.topic + "/data", _chunk(0, 0, REAL_FILES[0] + b"++"))
        return u
    st = asyncio.run(go()).client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_HASH


def test_a_short_data_message_is_refused_with_a_code():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real"))
        await u.handle(u.topic + "/data", b"\x00\x00")
        return u
    st = asyncio.run(go()).client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_CHUNK


def test_refusals_write_nothing():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("wrong-key", "w"))
        a = u.client.last()
        u.version = "0.2.0"
        await u.handle(u.topic + "/offer", signed_offer("real", "o"))
        return a, u.client.last()
    a, b = asyncio.run(go())
    assert a["state"] == "refused" and a["error"]["code"] == E_UPDATE_SIGNATURE and a["id"] == "w"
    assert b["state"] == "refused" and b["error"]["code"] == E_UPDATE_OLDER and b["version"] == "0.2.0"
    assert not slots.exists(root + "/upd/a") and not slots.exists(root + slots.STAGE)


def test_the_same_version_offered_again_on_probation_is_told_to_wait():
    root = _setup()
    slots.makedirs(root + slots.DIR)
    slots.switch(root, "a", "0.2.0", "0.1.0", "x", 3, 60, 1)

    async def go():
        u = _updater(root)
        u.version = "0.2.0"
        await u.handle(u.topic + "/offer", signed_offer("real", "again"))
        return u.client.last()
    st = asyncio.run(go())
    assert st["state"] == "probation" and st["id"] == "again" and "error" not in st
    assert slots.state(root)["probation"]["boots"] == 0  # nothing changed


def test_no_other_offer_while_a_set_is_on_probation():
    root = _setup()
    slots.makedirs(root + slots.DIR)
    slots.switch(root, "a", "0.1.5", "0.0.9", "x", 3, 60, 1)

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real", "p"))
        return u.client.last()
    st = asyncio.run(go())
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_BUSY
    assert st["id"] == "p" and st["version"] == "0.2.0"  # its sender hears it


def test_the_switch_waits_for_commands_in_flight():
    root = _setup()
    relay = _Relay()
    relay.busy = 3

    async def go():
        u = _updater(root, relay)
        await u.handle(u.topic + "/offer", signed_offer("real"))
        await _serve(u)
        await asyncio.sleep(0.05)
        assert u.board.resets == 0 and slots.state(root) == {"slot": ""}  # still waiting
        for _ in range(100):
            await asyncio.sleep(0.05)
            if u.board.resets:
                break
        return u
    u = asyncio.run(go())
    assert relay.busy == 0 and u.board.resets == 1 and slots.state(root)["slot"] == "a"


def test_data_before_any_offer_is_ignored():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/data", _chunk(0, 0, b"abc"))
        return u
    u = asyncio.run(go())
    assert u.client.sent == [] and u.stats["ignored"] == 1


def test_a_resume_whose_file_went_bad_on_flash_is_refused_and_starts_afresh():
    root = _setup()

    async def go():
        u = _updater(root)
        await u.handle(u.topic + "/offer", signed_offer("real", "o1"))
        await _serve(u, limit=1, cut=True)  # board.json complete
        with open(root + "/upd/a/board.json", "r+b") as f:
            f.write(b"X")  # the flash lost a bit while the board was off
        u2 = _updater(root)
        await u2.handle(u2.topic + "/offer", signed_offer("real", "o2"))
        return u2
    u2 = asyncio.run(go())
    st = u2.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_HASH and st["id"] == "o2"
    assert not slots.exists(root + slots.STAGE) and not slots.exists(root + "/upd/a")


def test_an_unexpected_failure_is_refused_not_raised_to_the_link():
    root = _setup()
    board = _Board(root)

    class _Link:
        client = _Client()
    _Link.client.max_packet = None  # the updater trips over it (always a number on a real client)
    S._updater[:] = []
    try:
        async def go():
            await S.handle((board, None, _Link, "0.1.0"), "ppmid/v1/%s/update/offer" % EUI, signed_offer("real", "o"))
        asyncio.run(go())
    finally:
        S._updater[:] = []
    st = _Link.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_INTERNAL and st["id"] == "o"


def test_an_offer_the_heap_has_no_room_for_is_refused_busy_and_nothing_is_dropped():
    # a fragmented heap with no block as large as the manifest's text: E_BUSY with the
    # offer's id (read without that block), not E_UPDATE_INTERNAL, and no stage dropped
    root = _setup()
    board = _Board(root)

    class _Link:
        client = _Client()
    S._updater[:] = []
    try:
        async def go():
            await S.handle((board, None, _Link, "0.1.0"), "ppmid/v1/%s/update/offer" % EUI, signed_offer("real", "o"))
            u = S._updater[0]
            stage = u.stage

            def no_room(payload):
                raise MemoryError("memory allocation failed, allocating 11792 bytes")
            u.offer = no_room
            await S.handle((board, None, _Link, "0.1.0"), "ppmid/v1/%s/update/offer" % EUI, signed_offer("real", "o2"))
            assert u.stage is stage and stage is not None  # the download under way is kept
        asyncio.run(go())
    finally:
        S._updater[:] = []
    st = _Link.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == "E_BUSY" and st["id"] == "o", st  # the download's


def test_a_first_offer_the_heap_has_no_room_for_names_its_id_read_from_the_raw_offer():
    root = _setup()
    board = _Board(root)

    class _Link:
        client = _Client()
    S._updater[:] = []
    real_offer = S.Updater.offer

    async def no_room(self, payload):
        raise MemoryError("memory allocation failed, allocating 11792 bytes")
    S.Updater.offer = no_room
    try:
        asyncio.run(S.handle((board, None, _Link, "0.1.0"), "ppmid/v1/%s/update/offer" % EUI,
                             signed_offer("real", "o3")))
    finally:
        S.Updater.offer = real_offer
        S._updater[:] = []
    st = _Link.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == "E_BUSY" and st["id"] == "o3", st
    import sys
    assert "ppmid.mqtt.refusal" not in sys.modules
