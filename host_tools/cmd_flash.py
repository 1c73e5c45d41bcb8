"""`ppmid flash --port PORT --board NAME --firmware micropython.bin`: put MicroPython on an
ESP32-family board with esptool (erase, then write the image at the chip's offset: 0x1000
on the ESP32, 0x0 on the ESP32-S3/C3, from boards/NAME/board.json "image_offset"), wait for
its REPL, then `ppmid deploy` the firmware. `--dry-run` prints every command instead.
"""
import os
import shlex
import subprocess
import time

from host_tools import cmd_deploy, emuboard
from host_tools.cli import CliError

ESP_IMAGE_MAGIC = 0xE9
BAUD = 460800
REPL_WAIT_S = 30  # first boot formats the filesystem before the REPL answers


def add_arguments(p):
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--board", required=True, help="board name (boards/NAME/board.json)")
    p.add_argument("--firmware", required=True, help="MicroPython image for the chip (micropython.bin)")
    p.add_argument("--baud", type=int, default=BAUD, help="esptool baud rate (default %d)" % BAUD)
    p.add_argument("--no-deploy", action="store_true", help="only write MicroPython, do not deploy firmware/")
    p.add_argument("--dry-run", action="store_true", help="print the esptool and mpremote commands, run nothing")


def esptool_commands(port, board, firmware, baud=BAUD):
    """[erase command, write command] for `board`, or CliError."""
    try:
        definition = emuboard.load_board(board)
    except emuboard.BoardError as exc:
        raise CliError(str(exc))
    offset = definition.get("image_offset")
    if definition.get("chip") == "unix" or offset is None:
        raise CliError("board %s is emulated: there is no MicroPython image to flash (use `ppmid deploy`)" % board)
    check_image(firmware)
    base = [cmd_deploy.tool("esptool"), "--chip", definition["chip"], "--port", port, "--baud", str(baud)]
    return [base + ["erase-flash"],
            base + ["write-flash", "%#x" % int(str(offset), 0), os.path.abspath(firmware)]]


def check_image(path):
    if not os.path.isfile(path):
        raise CliError("firmware file %s does not exist" % path)
    with open(path, "rb") as f:
        head = f.read(1)
    if not head or head[0] != ESP_IMAGE_MAGIC:
        raise CliError("%s is not an ESP32 image (first byte %s, expected 0xe9)"
                       % (path, "0x%02x" % head[0] if head else "missing: empty file"))


def wait_for_repl(port, arch, timeout=REPL_WAIT_S):
    end = time.monotonic() + timeout
    while True:
        try:
            return cmd_deploy.probe(port, arch)
        except cmd_deploy.DeployError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def run(args):
    cmds = esptool_commands(args.port, args.board, args.firmware, args.baud)
    if args.dry_run:
        for cmd in cmds:
            print(" ".join(shlex.quote(c) for c in cmd))
        if not args.no_deploy:
            cmd_deploy.deploy(args.port, args.board, dry_run=True)
        return 0
    for cmd in cmds:
        print("flash: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise CliError("esptool failed: %s" % " ".join(cmd[-2:]))
    if args.no_deploy:
        return 0
    arch = cmd_deploy.board_arch(emuboard.load_board(args.board))
    wait_for_repl(args.port, arch)
    cmd_deploy.deploy(args.port, args.board, log=lambda m: print("deploy: " + m))
    return 0
