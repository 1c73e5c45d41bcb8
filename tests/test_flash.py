"""`ppmid flash`: esptool erase + write at the chip's image offset, then deploy; checked with
--dry-run (no ESP32 attached here) and on its failure paths."""
import subprocess
import sys

import pytest

from host_tools import boards, flash
from host_tools.flash import FlashError

ROOT = boards.ROOT
pytestmark = pytest.mark.usefixtures("tmpdir_in_tmp_path")  # --dry-run's build folder

CHIPS = {  # board -> (esptool --chip, image offset)
    "esp32-devkitc": ("esp32", "0x1000"),
    "esp32s3-devkitc-1": ("esp32s3", "0x0"),
    "esp32s3-devkitc-1-n8r8": ("esp32s3", "0x0"),
    "esp32c3-devkitm-1": ("esp32c3", "0x0"),
}


def ppmid(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def fake_image(path, chip_id, magic=0xE9, size=1024):
    """An app image's first bytes: magic, segment count, flash mode/size, entry point, then the
    extended header with the chip id (16-bit little-endian) at byte 12."""
    head = bytes([magic, 3, 2, 0x20]) + bytes(4) + bytes([0xEE, 0, 0, 0]) + chip_id.to_bytes(2, "little")
    path.write_bytes(head + bytes(size - len(head)))
    return str(path)


def image_for(tmp_path, board):
    chip = boards.load_board(board)["chip"]
    return fake_image(tmp_path / ("micropython-%s.bin" % chip), flash.IMAGE_CHIP_IDS[chip])


@pytest.fixture
def image(tmp_path):
    return fake_image(tmp_path / "micropython.bin", 0)  # an ESP32 image


@pytest.mark.parametrize("board", sorted(CHIPS))
def test_dry_run_prints_write_and_deploy_and_keeps_the_filesystem(board, tmp_path):
    chip, offset = CHIPS[board]
    image = image_for(tmp_path, board)
    # boards whose heap cannot hold the app take an image with it frozen in (make image)
    psram = boards.load_board(board)["psram"]
    extra = [] if psram else ["--scripts-only"]
    p = ppmid("flash", "--port", "/dev/ttyUSB7", "--board", board, "--firmware", image, "--dry-run", *extra)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    # by default nothing is erased: the gateway's filesystem (journal, keys, config) stays
    end = int(offset, 16) + 1024
    assert lines[0].startswith("# the filesystem partition is kept") and "%s..%#x" % (offset, end) in lines[0]
    assert lines[1].endswith("esptool --chip %s --port /dev/ttyUSB7 --baud 460800 write-flash %s %s"
                             % (chip, offset, image))
    assert not any("erase" in line for line in lines[1:])
    arch = boards.load_board(board)["mpy_arch"]
    assert any("mpy-cross -march=%s" % arch in line and "ppmid/app.py" in line for line in lines)
    copy = [line for line in lines if " fs mkdir " in line]
    assert len(copy) == 1 and ("ppmid/app.mpy" in copy[0]) == psram  # frozen in: only the scripts go
    assert any("mpremote connect /dev/ttyUSB7 resume fs mkdir :/.deploy-new" in line for line in lines)


@pytest.mark.parametrize("board", ["esp32-devkitc", "esp32s3-devkitc-1-n8r8"])
def test_erase_all_is_asked_for_and_says_what_it_destroys(board, tmp_path):
    chip, offset = CHIPS[board]
    image = image_for(tmp_path, board)
    extra = [] if boards.load_board(board)["psram"] else ["--scripts-only"]
    p = ppmid("flash", "--port", "/dev/ttyUSB7", "--board", board, "--firmware", image, "--dry-run", "--erase-all",
              *extra)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("# --erase-all: the whole flash is erased")
    for lost in ("journal", "anti-replay counters", "UTRN memory", "envelope key", "config", "ppmid provision"):
        assert lost in lines[0], lost
    assert lines[1].endswith("esptool --chip %s --port /dev/ttyUSB7 --baud 460800 erase-flash" % chip)
    assert lines[2].endswith("write-flash %s %s" % (offset, image))


def test_offsets_come_from_the_board_files(tmp_path):
    for board, (chip, offset) in CHIPS.items():
        image = image_for(tmp_path, board)
        write, = flash.esptool_commands("/dev/x", board, image)
        assert write[-3:] == ["write-flash", offset, image]
        assert write[write.index("--chip") + 1] == chip
        erase, write_too = flash.esptool_commands("/dev/x", board, image, erase_all=True)
        assert erase[-1] == "erase-flash" and write_too == write


def test_a_real_flash_runs_only_write_flash_unless_erase_all(tmp_path, monkeypatch):
    # esptool stood in for: the commands flash() runs, in order, and what it printed first
    ran = []
    monkeypatch.setattr(flash.subprocess, "run", lambda cmd: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    image = image_for(tmp_path, "esp32s3-devkitc-1-n8r8")
    flash.flash("/dev/x", "esp32s3-devkitc-1-n8r8", image, then_deploy=False)
    assert [c[-3] for c in ran] == ["write-flash"]
    ran.clear()
    flash.flash("/dev/x", "esp32s3-devkitc-1-n8r8", image, then_deploy=False, erase_all=True)
    assert [c[-1] for c in ran][0] == "erase-flash" and ran[1][-3] == "write-flash"


def test_chip_ids_are_esptools():
    from esptool.targets import CHIP_DEFS
    for chip, chip_id in flash.IMAGE_CHIP_IDS.items():
        assert CHIP_DEFS[chip].IMAGE_CHIP_ID == chip_id, chip


def test_every_real_board_has_a_known_chip():
    for name in boards.board_names():
        chip = boards.load_board(name)["chip"]
        assert chip == "unix" or chip in flash.IMAGE_CHIP_IDS, name


def test_esptool_spelling_follows_its_version():
    import importlib.metadata
    assert int(importlib.metadata.version("esptool").split(".")[0]) >= 5  # what pyproject.toml asks for
    assert flash.esptool_verbs() == ("erase-flash", "write-flash")
    assert flash.esptool_verbs("5.6.0") == ("erase-flash", "write-flash")
    assert flash.esptool_verbs("4.7.0") == ("erase_flash", "write_flash")


@pytest.mark.parametrize("board,wrong_chip", [("esp32c3-devkitm-1", "esp32"), ("esp32-devkitc", "esp32s3"),
                                              ("esp32s3-devkitc-1", "esp32c3")])
def test_an_image_for_another_chip_is_refused_before_esptool(board, wrong_chip, tmp_path, monkeypatch):
    image = fake_image(tmp_path / "other.bin", flash.IMAGE_CHIP_IDS[wrong_chip])
    ran = []
    with monkeypatch.context() as m, pytest.raises(FlashError) as exc:
        m.setattr(flash.subprocess, "run", lambda *a, **k: ran.append(a))
        flash.flash("/dev/x", board, image, then_deploy=False)
    assert ran == []  # esptool never started
    chip = boards.load_board(board)["chip"]
    assert "image for %s" % wrong_chip in str(exc.value) and "board's chip is %s" % chip in str(exc.value)
    p = ppmid("flash", "--port", "/dev/x", "--board", board, "--firmware", image, "--dry-run")
    assert p.returncode == 1 and p.stderr.startswith("ppmid: ") and "image for %s" % wrong_chip in p.stderr
    assert "esptool --chip" not in p.stdout


def test_a_board_too_small_for_mpy_files_is_refused_before_esptool(tmp_path, monkeypatch):
    image = image_for(tmp_path, "esp32-devkitc")
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", image, "--dry-run")
    assert p.returncode == 1 and "esptool" not in p.stdout
    assert p.stderr.startswith("ppmid: E_DEPLOY: board esp32-devkitc has a 112640-byte Python heap") and "make image" in p.stderr
    ran = []
    with monkeypatch.context() as m, pytest.raises(FlashError.__bases__[0], match="would not fit"):
        m.setattr(flash.subprocess, "run", lambda *a, **k: ran.append(a))
        flash.flash("/dev/x", "esp32-devkitc", image)
    assert ran == []


def test_bad_input(tmp_path, image):
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", str(tmp_path / "missing.bin"),
              "--dry-run")
    assert p.returncode == 1 and "does not exist" in p.stderr
    not_image = tmp_path / "readme.txt"
    not_image.write_text("hello")
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", str(not_image), "--dry-run")
    assert p.returncode == 1 and "not an ESP32 image (first byte 0x68" in p.stderr
    wrong_magic = fake_image(tmp_path / "e8.bin", 0, magic=0xE8)
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", wrong_magic, "--dry-run")
    assert p.returncode == 1 and "first byte 0xe8, expected 0xe9" in p.stderr
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", str(empty), "--dry-run")
    assert p.returncode == 1 and "not an ESP32 image: the file is empty" in p.stderr
    short = tmp_path / "short.bin"
    short.write_bytes(b"\xe9\x03\x02\x20")
    with pytest.raises(FlashError, match="shorter than its 24-byte header"):
        flash.check_image(str(short), "esp32")
    p = ppmid("flash", "--port", "/dev/x", "--board", "emulated", "--firmware", image, "--dry-run")
    assert p.returncode == 1 and "emulated" in p.stderr and "ppmid deploy" in p.stderr
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp8266", "--firmware", image, "--dry-run")
    assert p.returncode == 1 and "unknown board 'esp8266'" in p.stderr
    with pytest.raises(FlashError):
        flash.check_image(str(tmp_path), "esp32")
