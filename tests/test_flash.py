"""`ppmid flash`: esptool erase + write at the chip's image offset, then deploy; checked with
--dry-run (no ESP32 attached here) and on its failure paths."""
import subprocess
import sys

import pytest

from host_tools import boards, flash
from host_tools.flash import FlashError

ROOT = boards.ROOT

CHIPS = {  # board -> (esptool --chip, image offset)
    "esp32-devkitc": ("esp32", "0x1000"),
    "esp32s3-devkitc-1": ("esp32s3", "0x0"),
    "esp32c3-devkitm-1": ("esp32c3", "0x0"),
}


def ppmid(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "micropython.bin"
    path.write_bytes(b"\xe9\x03\x02\x20" + bytes(1020))
    return str(path)


@pytest.mark.parametrize("board", sorted(CHIPS))
def test_dry_run_prints_erase_write_and_deploy(board, image):
    chip, offset = CHIPS[board]
    p = ppmid("flash", "--port", "/dev/ttyUSB7", "--board", board, "--firmware", image, "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith("esptool --chip %s --port /dev/ttyUSB7 --baud 460800 erase-flash" % chip)
    assert lines[1].endswith("esptool --chip %s --port /dev/ttyUSB7 --baud 460800 write-flash %s %s"
                             % (chip, offset, image))
    arch = boards.load_board(board)["mpy_arch"]
    assert any("mpy-cross -march=%s" % arch in line and "ppmid/app.py" in line for line in lines)
    assert any("mpremote connect /dev/ttyUSB7 resume fs mkdir :/.deploy-new" in line for line in lines)


def test_offsets_come_from_the_board_files(image):
    for board, (chip, offset) in CHIPS.items():
        erase, write = flash.esptool_commands("/dev/x", board, image)
        assert erase[-1] == "erase-flash"
        assert write[-3:] == ["write-flash", offset, image]
        assert write[write.index("--chip") + 1] == chip


def test_bad_input(tmp_path, image):
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", str(tmp_path / "missing.bin"),
              "--dry-run")
    assert p.returncode == 1 and "does not exist" in p.stderr
    not_image = tmp_path / "readme.txt"
    not_image.write_text("hello")
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp32-devkitc", "--firmware", str(not_image), "--dry-run")
    assert p.returncode == 1 and "not an ESP32 image" in p.stderr
    p = ppmid("flash", "--port", "/dev/x", "--board", "emulated", "--firmware", image, "--dry-run")
    assert p.returncode == 1 and "emulated" in p.stderr and "ppmid deploy" in p.stderr
    p = ppmid("flash", "--port", "/dev/x", "--board", "esp8266", "--firmware", image, "--dry-run")
    assert p.returncode == 1 and "unknown board 'esp8266'" in p.stderr
    with pytest.raises(FlashError):
        flash.check_image(str(tmp_path))
