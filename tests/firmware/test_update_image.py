# Image updates through the board's image slots (docs/update.md "Image updates"): the
# service downloads a signed image into the next OTA app partition of the emulated board's
# stand-in (4 KB blocks, hash read back), points at it and calls set_boot(); the pointer,
# the bootloader's rules and ppmid.update.report then keep it (mark_valid) or roll it back.
# CPython and MicroPython. End to end: tests/test_e2e_update.py.
# mp-heapsize: 320K
# (the stand-in partitions' 4 KB blocks and a 16 KB cache beside the updater, in one
# 64-bit heap: 256K ran out once the offer reader (update/manifest.py) grew in session 7)
import json

import asyncio
from ppmid.board.emulated import ImageSlots
from ppmid.update import report, slots
from ppmid.update import service as S
from ppmid.update.manifest import E_UPDATE_MANIFEST
from test_board_image_slots import SIZE, _hw, _record, _reset
from test_relay_support import fresh_root, fresh_signature_limits
from test_update_service import EUI, _Client, _Relay, _chunk, _settle
from update_vectors import IMAGE, PUBLIC, signed_offer


class _ImageBoard:
    name = "emulated"

    def __init__(self, root, hw):
        self.fs_root = root
        self.hw = hw
        self.resets = 0

    def image_slots(self):
        return ImageSlots(self.hw) if self.hw is not None else None

    def reset(self):
        self.resets += 1


def _setup(hw, chunk=1500):
    fresh_signature_limits()
    root = fresh_root(512)
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps({"gateway": EUI, "update": {"public_key": PUBLIC, "chunk": chunk, "probation_s": 60}}))
    return root, S.Updater(_ImageBoard(root, hw), _Relay(), _Client(), "0.1.0", log=lambda m: None)


async def _serve(u, tamper=None):
    for _ in range(100):
        st = u.client.last()
        if st.get("state") != "downloading" or "file" not in st:
            return st
        off = st["offset"]
        data = IMAGE[off:off + st["chunk"]]
        await u.handle(u.topic + "/data", _chunk(0, off, tamper(off, data) if tamper else data))
    raise AssertionError("no end")


def _partition(hw, label, n):
    f = hw.ota_files[label]
    f.seek(0)
    return f.read(n)


def _download(hw, tamper=None, reorder=False):
    root, u = _setup(hw)

    async def go():
        await u.handle(u.topic + "/offer", signed_offer("image", "i1"))
        st = u.client.last()
        assert st["state"] == "downloading" and (st["file"], st["offset"]) == (0, 0) and st["total"] == len(IMAGE)
        if reorder:  # a chunk from later, then the first one twice: only the needed one is taken
            await u.handle(u.topic + "/data", _chunk(0, 3000, IMAGE[3000:4500]))
            await u.handle(u.topic + "/data", _chunk(0, 0, IMAGE[:1500]))
            await u.handle(u.topic + "/data", _chunk(0, 0, IMAGE[:1500]))
            assert u.stats["ignored"] == 2 and u.client.last()["offset"] == 1500
        await _serve(u, tamper)
        await _settle()
    asyncio.run(go())
    return root, u


def test_an_image_is_written_checked_and_set_to_boot_on_probation():
    hw = _hw("ota_0")
    root, u = _download(hw, reorder=True)
    assert [m[1]["state"] for m in u.client.sent][-1] == "switching" and u.board.resets == 1
    assert _partition(hw, "ota_1", len(IMAGE)) == IMAGE and _partition(hw, "ota_0", 4) == b"\xff" * 4
    assert _record(hw) == {"boot": "ota_1", "state": "new", "previous": "ota_0"}
    st = slots.state(root)
    assert st["probation"]["image"] == "ota_1" and st["probation"]["max_boots"] == 1 and st["slot"] == ""
    assert st["image"] == {"label": "ota_1", "version": "0.2.0"} and st["previous"]["version"] == "0.1.0"
    assert not slots.exists(root + slots.STAGE)


class _Han:
    status = "running"


class _Link:
    def __init__(self):
        self.client = _Client()
        self.client.state = "online"

    async def republish_info(self):
        pass


def _boot(root, hw):
    """A reset: the bootloader's step, main.py's choice, then ppmid.boot's settle."""
    s = _reset(hw)
    path, probation = slots.choose(root, lambda m: None)
    link = _Link()
    summary = {}
    asyncio.run(report.settle(root, "0.1.0", _Han(), link, summary, log=lambda m: None,
                              images=lambda: ImageSlots(hw)))
    return s, link.client.last() if link.client.sent else None, summary


def test_the_new_image_confirmed_is_marked_valid_and_reported_applied():
    hw = _hw("ota_0")
    root, _ = _download(hw)
    s, st, summary = _boot(root, hw)
    assert s.running() == "ota_1" and _record(hw)["state"] == "valid"
    assert st["state"] == "applied" and st["version"] == "0.2.0" and st["previous"] == "0.1.0" and st["id"] == "i1"
    assert summary["image"] == {"label": "ota_1", "version": "0.2.0", "running": "ota_1"} and summary["last"] == "applied"
    s, st, _ = _boot(root, hw)  # and it stays
    assert s.running() == "ota_1" and st is None


def test_an_image_whose_first_boot_ends_unmarked_is_rolled_back():
    hw = _hw("ota_0")
    root, _ = _download(hw)
    assert _reset(hw).running() == "ota_1"  # its first boot: crashes before it connects
    assert slots.choose(root, lambda m: None)[1]["boots"] == 1
    s, st, summary = _boot(root, hw)  # the bootloader went back, and so does the pointer
    assert s.running() == "ota_0" and _record(hw)["state"] == "aborted"
    assert st["state"] == "rolled-back" and st["error"]["code"] == slots.E_UPDATE_BOOT and st["version"] == "0.2.0"
    assert "image" not in slots.state(root) and "probation" not in slots.state(root)


def test_a_power_cut_before_set_boot_is_rolled_back_not_reported_applied():
    hw = _hw("ota_0")
    root, _ = _setup(hw)
    slots.makedirs(root + slots.DIR)
    slots.switch_image(root, "ota_1", "0.2.0", "0.1.0", "i1", 60, 1)  # the pointer, and then the cut
    s, st, _ = _boot(root, hw)
    assert s.running() == "ota_0"
    assert st["state"] == "rolled-back" and st["error"]["code"] == slots.E_UPDATE_BOOT
    assert "ota_1" in st["error"]["message"]


def test_a_corrupted_image_is_refused_and_nothing_boots_differently():
    hw = _hw("ota_0")
    root, u = _download(hw, tamper=lambda off, d: (bytes([d[0] ^ 1]) + d[1:]) if off == 4500 else d)
    st = u.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_HASH and st["id"] == "i1", st
    assert u.board.resets == 0 and _record(hw)["state"] == "valid" and _record(hw)["boot"] == "ota_0"
    assert "probation" not in slots.state(root) and not slots.exists(root + slots.STAGE)


def _refusal(hw, name):
    root, u = _setup(hw)
    asyncio.run(u.handle(u.topic + "/offer", signed_offer(name, "x")))
    return u.client.last()


def test_refusals_image_too_big_both_kinds_no_partitions():
    st = _refusal(_hw(), "image-too-big")  # 20,000 bytes for a 16 KB partition
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_SPACE and str(SIZE) in st["error"]["message"]
    st = _refusal(_hw(), "image-and-files")
    assert st["state"] == "refused" and st["error"]["code"] == E_UPDATE_MANIFEST
    st = _refusal(None, "image")
    assert st["state"] == "refused" and st["error"]["code"] == E_UPDATE_MANIFEST and "partitions" in st["error"]["message"]


class _FailingSlots(ImageSlots):
    def write_block(self, label, n, buf):
        if n >= 1:
            raise OSError(28)  # ENOSPC: the flash refuses the second block
        ImageSlots.write_block(self, label, n, buf)


def test_a_partition_write_failure_is_refused_with_e_update_flash():
    hw = _hw("ota_0")
    root, u = _setup(hw)
    u.board.image_slots = lambda: _FailingSlots(hw)

    async def go():
        await u.handle(u.topic + "/offer", signed_offer("image", "f1"))
        await _serve(u)
    asyncio.run(go())
    st = u.client.last()
    assert st["state"] == "refused" and st["error"]["code"] == S.E_UPDATE_FLASH and st["id"] == "f1", st
    assert u.stage is None and _record(hw)["boot"] == "ota_0" and u.board.resets == 0


def test_settling_forgets_what_it_loaded_but_not_an_updater_loaded_meanwhile():
    import sys
    hw = _hw("ota_0")
    root, _ = _download(hw)
    import ppmid.update.service  # noqa: F401 - loaded, as by an offer that comes during probation
    s, st, _ = _boot(root, hw)
    assert st["state"] == "applied"
    left = [m for m in ("ppmid.update", "ppmid.update.report", "ppmid.update.slots", "ppmid.modules")
            if m in sys.modules]
    assert left == [] and "ppmid.update.service" in sys.modules, left


def test_set_boot_refusing_the_image_is_refused_with_its_id_and_the_next_offer_is_handled():
    # ESP-IDF's set_boot validates the image (chip, header, secure boot) and raises: the
    # switch task must say so, put the pointer back and take offers again (review M3)
    hw = _hw("ota_0")
    root, u = _setup(hw)

    class Refusing(ImageSlots):
        def set_boot(self, label):
            raise OSError(22)
    u.board.image_slots = lambda: Refusing(hw)
    before = slots.state(root)

    async def go():
        await u.handle(u.topic + "/offer", signed_offer("image", "i1"))
        await _serve(u)
        await _settle()
        st = u.client.last()
        assert st["state"] == "refused" and st["id"] == "i1" and st["version"] == "0.2.0", st
        assert st["error"]["code"] == S.E_UPDATE_IMAGE and "ota_1" in st["error"]["message"], st
        assert not u.switching and u.stage is None and u.board.resets == 0
        assert slots.state(root) == before and not slots.exists(root + slots.STAGE)
        assert _record(hw)["boot"] == "ota_0"
        await u.handle(u.topic + "/offer", signed_offer("image", "i2"))  # taken afresh
        st = u.client.last()
        assert st["state"] == "downloading" and st["id"] == "i2" and st["offset"] == 0, st
    asyncio.run(go())


def test_a_deploy_before_a_rollback_was_reported_keeps_the_result_for_its_sender():
    # `ppmid deploy` refuses an image's first boot (E_DEPLOY_PROBATION), but once that boot
    # failed and was rolled back, a deploy before the app reported it went through and
    # dropped the result (install.forget_updates): the update's sender never got its
    # answer (review of session 14's probation hang). The deploy keeps an unreported result
    # and its offer id; the deployed set reports it, once
    import install
    hw = _hw("ota_0")
    root, _ = _download(hw)
    slots.rollback(root, slots.E_UPDATE_BOOT, "version 0.2.0 did not start")  # main.py's boot count
    install.forget_updates(root)
    st = slots.state(root)
    assert st["slot"] == "" and st["offer"] == "i1" and st["last"]["result"] == "rolled-back", st
    assert st["last"]["reported"] is False and slots.floor(st, image=True) > 0, st  # the floor kept too
    link = _Link()
    summary = {}
    asyncio.run(report.settle(root, "0.1.0", _Han(), link, summary, log=lambda m: None))
    out = link.client.last()
    assert out["state"] == "rolled-back" and out["id"] == "i1" and out["error"]["code"] == "E_UPDATE_BOOT", out
    assert out["version"] == "0.2.0" and out["running"] == "0.1.0", out
    # reported: a later deploy keeps nothing of it (the floors alone), and nothing is said again
    install.forget_updates(root)
    assert "last" not in slots.state(root) and "offer" not in slots.state(root), slots.state(root)
    link = _Link()
    asyncio.run(report.settle(root, "0.1.0", _Han(), link, {}, log=lambda m: None))
    assert not link.client.sent
