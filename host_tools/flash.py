"""Put MicroPython on an ESP32-family board with esptool (write the image at the chip's
offset: 0x1000 on the ESP32, 0x0 on the ESP32-S3/C3, from boards/NAME/board.json
"image_offset"; erase the whole chip first only with --erase-all), wait for its REPL, then
deploy the firmware: what `ppmid flash` runs.

Without an erase the filesystem partition survives: MicroPython's ESP32 firmware.bin is the
bootloader, the partition table (0x8000) and the app (0x10000) in one file, the gaps filled
with 0xff (ports/esp32/makeimg.py), and the port's partition tables put the "vfs"
filesystem partition after the app partition, beyond the end of the image. esptool
write-flash erases only the sectors it writes. So a gateway in service keeps its journal,
counters, UTRN memory, keys and config; NVS (0x9000) and otadata, inside the gap, are reset.

Before esptool runs, the image must be an ESP32-family app image for the board's chip: first
byte 0xE9, and the chip id of its extended header (16-bit little-endian at offset 12) equal
to the one esptool gives the board's chip (IMAGE_CHIP_ID in esptool/targets/*.py).
"""
import importlib.metadata
import os
import shlex
import subprocess
import time

from host_tools import boards, deploy, deploy_romfs
from host_tools.errors import ToolError
from host_tools.ports import PortLock

ESP_IMAGE_MAGIC = 0xE9
CHIP_ID_OFFSET = 12  # 8-byte image header, then the extended header: wp pin, 3 drive bytes, chip id
HEADER_LEN = 24      # both headers
# esptool --chip name -> the image's chip id (esptool 5.x targets' IMAGE_CHIP_ID;
# tests/test_flash.py checks this table against the installed esptool)
IMAGE_CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13,
                  "esp32h2": 16}
BAUD = 460800
REPL_WAIT_S = 30  # first boot formats the filesystem before the REPL answers


class FlashError(ToolError):
    """A board that cannot be flashed, an image that is not one, esptool failing."""

    code = "E_FLASH"


# what each way says before esptool runs (and in --dry-run)
KEEPS_FS = ("the filesystem partition is kept (the journal, anti-replay counters, UTRN memory, keys, "
            "certificates and config): write-flash rewrites only %#x..%#x (bootloader, partition table, app); "
            "should the new image's partition table move the filesystem, MicroPython formats it at boot")
ERASES_ALL = ("--erase-all: the whole flash is erased first. Destroyed: the journal (accepted commands not yet "
              "relayed, results not yet delivered), the anti-replay counters and floors, the UTRN memory, "
              "the envelope key, certificates and config. Provision the board again afterwards (ppmid provision)")


def esptool_commands(port, board, firmware, baud=BAUD, erase_all=False):
    """[write command], or [erase command, write command] with erase_all, for `board`; or
    FlashError."""
    try:
        definition = boards.load_board(board)
    except boards.BoardError as exc:
        raise FlashError(str(exc))
    offset = definition.get("image_offset")
    if definition.get("chip") == "unix" or offset is None:
        raise FlashError("board %s is emulated: there is no MicroPython image to flash (use `ppmid deploy`)" % board)
    check_image(firmware, definition["chip"])
    erase, write = esptool_verbs()
    base = [boards.tool("esptool"), "--chip", definition["chip"], "--port", port, "--baud", str(baud)]
    cmds = [base + [write, "%#x" % int(str(offset), 0), os.path.abspath(firmware)]]
    return [base + [erase]] + cmds if erase_all else cmds


def what_it_does(board, firmware, erase_all):
    """The sentence saying what `ppmid flash` keeps or destroys on the board."""
    if erase_all:
        return ERASES_ALL
    offset = int(str(boards.load_board(board)["image_offset"]), 0)
    return KEEPS_FS % (offset, offset + os.path.getsize(firmware))


def esptool_verbs(version=None):
    """(erase, write) as the installed esptool spells them: 5.x takes erase-flash/write-flash
    (pyproject.toml asks for >= 5), 4.x only erase_flash/write_flash."""
    if version is None:
        try:
            version = importlib.metadata.version("esptool")
        except importlib.metadata.PackageNotFoundError:
            version = "5"
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 5
    return ("erase-flash", "write-flash") if major >= 5 else ("erase_flash", "write_flash")


def chip_name(chip_id):
    for name, cid in IMAGE_CHIP_IDS.items():
        if cid == chip_id:
            return name
    return "chip id %d" % chip_id


def check_image(path, chip):
    """FlashError unless `path` is an ESP32-family app image built for `chip` (esptool's name)."""
    if os.path.isdir(path):
        raise FlashError("%s is a folder: give the firmware image file (micropython.bin)" % path)
    if not os.path.isfile(path):
        raise FlashError("firmware file %s does not exist" % path)
    with open(path, "rb") as f:
        head = f.read(HEADER_LEN)
    if not head:
        raise FlashError("%s is not an ESP32 image: the file is empty" % path)
    if head[0] != ESP_IMAGE_MAGIC:
        raise FlashError("%s is not an ESP32 image (first byte 0x%02x, expected 0xe9)" % (path, head[0]))
    if len(head) < HEADER_LEN:
        raise FlashError("%s is not an ESP32 image: %d bytes, shorter than its %d-byte header"
                         % (path, len(head), HEADER_LEN))
    want = IMAGE_CHIP_IDS.get(chip)
    if want is None:
        raise FlashError("no image chip id known for chip %s" % chip)
    got = int.from_bytes(head[CHIP_ID_OFFSET:CHIP_ID_OFFSET + 2], "little")
    if got != want:
        raise FlashError("%s is an image for %s (chip id %d at byte %d), but the board's chip is %s (chip id %d): "
                         "use the MicroPython image for %s" % (path, chip_name(got), got, CHIP_ID_OFFSET, chip, want,
                                                               chip))


def wait_for_repl(port, arch, definition=None, timeout=REPL_WAIT_S):
    end = time.monotonic() + timeout
    while True:
        try:
            return deploy.probe(port, arch, definition)
        except deploy.DeployError:
            if time.monotonic() > end:
                raise
            time.sleep(1)


def flash(port, board, firmware, baud=BAUD, then_deploy=True, dry_run=False, scripts_only=False, force=False,
          erase_all=False, romfs=False):
    """Write the image (erase the whole chip first only with erase_all), wait for the REPL,
    deploy firmware/ (then_deploy; with scripts_only, for an image with the app frozen in;
    with romfs, `ppmid deploy --romfs`, for the image `make image` builds for a board with a
    romfs partition). With dry_run, print every command instead. A deploy that would be
    refused (no romfs partition, the board's heap) is refused before esptool. Says first
    what is kept or destroyed."""
    if romfs and scripts_only:
        raise deploy.DeployError("--romfs and --scripts-only: the first puts the package in the romfs partition, the "
                                 "second is for an image with the package frozen in; choose one")
    cmds = esptool_commands(port, board, firmware, baud, erase_all)
    if then_deploy and romfs:
        definition = boards.load_board(board)
        deploy_romfs.partition_bytes(board, definition)
        deploy_romfs.romfs_heap_fits(board, definition, force)
    elif then_deploy and not scripts_only:
        deploy.heap_fits(board, boards.load_board(board), force)
    note = what_it_does(board, firmware, erase_all)
    if dry_run:
        print("# " + note)
        for cmd in cmds:
            print(" ".join(shlex.quote(c) for c in cmd))
        if then_deploy and romfs:
            deploy_romfs.deploy_romfs(port, board, dry_run=True, force=True)
        elif then_deploy:
            deploy.deploy(port, board, dry_run=True, scripts_only=scripts_only, force=True)
        return
    # held from the first esptool run to the deploy's reset (esptool locks the port only
    # while each run lasts); PortBusy before anything is written when another tool has it
    with PortLock(port):
        print("flash: " + note, flush=True)
        for cmd in cmds:
            print("flash: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                raise FlashError("esptool failed: %s" % " ".join(cmd[-2:]))
        if not then_deploy:
            return
        definition = boards.load_board(board)
        wait_for_repl(port, deploy.board_arch(definition), definition)
        if romfs:
            deploy_romfs.deploy_romfs(port, board, log=lambda m: print("deploy: " + m), force=True)
        else:
            deploy.deploy(port, board, log=lambda m: print("deploy: " + m), scripts_only=scripts_only, force=True)
