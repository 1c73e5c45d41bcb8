# The image slots behind the board layer (docs/update.md "Image updates"): the emulated
# board's stand-in partition table (ppmid.board.emulated.ImageSlots over the files the ROM
# opens) and the bootloader's rules it shares with the supervisor (ppmid.board.otadata).
# CPython and MicroPython.
from ppmid.board import otadata
from ppmid.board.emulated import ImageSlots
from scratch_files import open_scratch

SIZE = 4 * 4096


class _Hw:
    pass


def _hw(running="ota_0", rec=None):
    """The ROM's view: two erased partitions and an OTA data record, as host files (scratch
    files: gone from the folder once open, scratch_files.py)."""
    hw = _Hw()
    hw.ota_files = {}
    for label in otadata.LABELS:
        hw.ota_files[label] = open_scratch("ppmid-ota-" + label)
        hw.ota_files[label].write(b"\xff" * SIZE)
    hw.otadata = open_scratch("ppmid-ota-otadata")
    hw.otadata.write(otadata.dump(rec or otadata.initial()))
    hw.ota_running = running
    hw.ota_size = SIZE
    return hw


def _record(hw):
    hw.otadata.seek(0)
    return otadata.parse(hw.otadata.read(otadata.RECORD))


def _reset(hw):
    """What the supervisor does at a hard reset: the bootloader's step, then a new boot."""
    label, rec = otadata.boot_step(_record(hw))
    hw.otadata.seek(0)
    hw.otadata.write(otadata.dump(rec))
    hw.otadata.flush()
    hw.ota_running = label
    return ImageSlots(hw)


def test_the_update_goes_to_the_partition_that_is_not_running():
    assert ImageSlots(_hw("ota_0")).next_update() == ("ota_1", SIZE)
    assert ImageSlots(_hw("ota_1")).next_update() == ("ota_0", SIZE)


def test_blocks_written_read_back():
    s = ImageSlots(_hw())
    block = bytes(range(256)) * 16
    s.write_block("ota_1", 2, block)
    buf = bytearray(4096)
    s.read_block("ota_1", 2, buf)
    assert bytes(buf) == block
    s.read_block("ota_1", 1, buf)
    assert bytes(buf) == b"\xff" * 4096  # untouched blocks stay erased


def test_the_running_partition_and_blocks_outside_are_refused():
    s = ImageSlots(_hw("ota_0"))
    for label, n, data in (("ota_0", 0, bytes(4096)), ("ota_1", 4, bytes(4096)), ("ota_1", -1, bytes(4096)),
                           ("ota_1", 0, bytes(100))):
        try:
            s.write_block(label, n, data)
        except OSError:
            continue
        raise AssertionError("wrote %s block %d (%d bytes)" % (label, n, len(data)))


def test_set_boot_then_mark_valid_keeps_the_new_partition():
    hw = _hw("ota_0")
    ImageSlots(hw).set_boot("ota_1")
    assert _record(hw) == {"boot": "ota_1", "state": "new", "previous": "ota_0"}
    s = _reset(hw)
    assert s.running() == "ota_1" and s.status() == {"running": "ota_1", "state": "pending_verify"}
    s.mark_valid()
    for _ in range(3):
        s = _reset(hw)
        assert s.running() == "ota_1" and s.status()["state"] == "valid"


def test_a_first_boot_not_marked_valid_rolls_back_at_the_next_reset():
    hw = _hw("ota_0")
    ImageSlots(hw).set_boot("ota_1")
    assert _reset(hw).running() == "ota_1"
    s = _reset(hw)  # the new image's first boot ended (crash, watchdog, power cut) unmarked
    assert s.running() == "ota_0"
    rec = _record(hw)
    assert rec["state"] == "aborted" and rec["rolled_back"] == "ota_1"
    assert _reset(hw).running() == "ota_0"  # and it stays there
    s.mark_valid()  # marking the old one valid changes nothing: it never was on trial
    assert _record(hw)["boot"] == "ota_0" and _reset(hw).running() == "ota_0"


def test_an_erased_or_garbled_record_boots_the_first_partition():
    assert otadata.parse(b"\xff" * otadata.RECORD) == otadata.initial()
    assert otadata.parse(b'{"boot": "factory"}') == otadata.initial()
    assert otadata.boot_step(otadata.initial()) == ("ota_0", otadata.initial())
    try:
        otadata.set_boot(otadata.initial(), "ota_7", "ota_0")
    except ValueError:
        pass
    else:
        raise AssertionError("set_boot accepted a partition that does not exist")
