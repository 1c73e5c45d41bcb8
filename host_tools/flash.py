"""Put MicroPython on an ESP32-family board with esptool (erase, then write the image at
the chip's offset: 0x1000 on the ESP32, 0x0 on the ESP32-S3/C3, from boards/NAME/board.json
"image_offset"), wait for its REPL, then deploy the firmware: what `ppmid flash` runs.
"""
import os
import shlex
import subprocess
import time

from host_tools import boards, deploy
from host_tools.errors import ToolError

ESP_IMAGE_MAGIC = 0xE9
BAUD = 460800
REPL_WAIT_S = 30  # first boot formats the filesystem before the REPL answers


class FlashError(ToolError):
    """A board that cannot be flashed, an image that is not one, esptool failing."""

    code = "E_FLASH"


def esptool_commands(port, board, firmware, baud=BAUD):
    """[erase command, write command] for `board`, or FlashError."""
    try:
        definition = boards.load_board(board)
    except boards.BoardError as exc:
        raise FlashError(str(exc))
    offset = definition.get("image_offset")
    if definition.get("chip") == "unix" or offset is None:
        raise FlashError("board %s is emulated: there is no MicroPython image to flash (use `ppmid deploy`)" % board)
    check_image(firmware)
    base = [boards.tool("esptool"), "--chip", definition["chip"], "--port", port, "--baud", str(baud)]
    return [base + ["erase-flash"],
            base + ["write-flash", "%#x" % int(str(offset), 0), os.path.abspath(firmware)]]


def check_image(path):
    if not os.path.isfile(path):
        raise FlashError("firmware file %s does not exist" % path)
    with open(path, "rb") as f:
        head = f.read(1)
    if not head or head[0] != ESP_IMAGE_MAGIC:
        raise FlashError("%s is not an ESP32 image (first byte %s, expected 0xe9)"
                         % (path, "0x%02x" % head[0] if head else "missing: empty file"))


def wait_for_repl(port, arch, timeout=REPL_WAIT_S):
    end = time.monotonic() + timeout
    while True:
        try:
            return deploy.probe(port, arch)
        except deploy.DeployError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def flash(port, board, firmware, baud=BAUD, then_deploy=True, dry_run=False):
    """Erase and write the image, wait for the REPL, deploy firmware/ (then_deploy). With
    dry_run, print every command instead."""
    cmds = esptool_commands(port, board, firmware, baud)
    if dry_run:
        for cmd in cmds:
            print(" ".join(shlex.quote(c) for c in cmd))
        if then_deploy:
            deploy.deploy(port, board, dry_run=True)
        return
    for cmd in cmds:
        print("flash: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise FlashError("esptool failed: %s" % " ".join(cmd[-2:]))
    if not then_deploy:
        return
    wait_for_repl(port, deploy.board_arch(boards.load_board(board)))
    deploy.deploy(port, board, log=lambda m: print("deploy: " + m))
