"""A MicroPython image with the app frozen in, for a board whose heap cannot hold the app as
.mpy files (`make image BOARD=NAME`; `python -m host_tools.image NAME`).

Frozen bytecode runs from flash, so the heap only holds the app's data. The build is
MicroPython's own: its ESP32 port with ESP-IDF, and boards/NAME/manifest.py as
FROZEN_MANIFEST (board.json "micropython_board" and "micropython_variant" name the port's
board). It needs a MicroPython source tree (MICROPY_DIR) and an ESP-IDF environment
(IDF_PATH, idf.py on PATH: ESP-IDF's export.sh sets both); without them it says what is
missing, one sentence each, and builds nothing. Then: `ppmid flash --scripts-only
--firmware <the image>` (or flash it, then `ppmid deploy --scripts-only`).

A board whose board.json has `romfs_bytes` (esp32-devkitc-romfs, esp32s3-devkitc-1-n8r8-romfs)
gets, instead, the image for `ppmid deploy --romfs`: the port's own frozen modules only (a
frozen ppmid would be imported before /rom: sys.path is ['', '.frozen', '/rom', ...]),
MICROPY_VFS_ROM on, and the board's partition table (board.json "partition_table", checked
by host_tools/partitions.py) with its romfs partition. MicroPython's ESP32 port takes both
through a board directory (BOARD_DIR): `romfs_board_files` writes one beside the build,
which includes the stock board (and variant) and adds an sdkconfig fragment (the table, the
flash size, the bootloader's app rollback when the table has OTA slots) and the define.
Then: `ppmid flash --erase-all --romfs` (the table moves the filesystem; the deploy
after esptool is `ppmid deploy --romfs`).

`manifest_files(board)` runs a board's manifest with stand-ins for the build's manifest
functions and lists the firmware files it freezes (tests compile each for the board).
"""
import os
import shutil
import subprocess
import sys

from host_tools import boards, partitions
from host_tools.errors import ToolError


class ImageError(ToolError):
    code = "E_IMAGE"


def manifest_files(board):
    """[(absolute path, name in the image)] of the firmware files boards/BOARD/manifest.py
    freezes, and [the port manifests it includes]. A manifest runs from its own directory."""
    bdir = os.path.join(boards.BOARDS_DIR, board)
    path = os.path.join(bdir, "manifest.py")
    files, includes = [], []

    def package(name, files_=None, base_path=".", opt=None, **kw):
        base = os.path.normpath(os.path.join(bdir, base_path))
        if files_ is None:
            for d, subdirs, names in os.walk(os.path.join(base, name)):
                subdirs.sort()
                for n in sorted(names):
                    if n.endswith(".py"):
                        full = os.path.join(d, n)
                        files.append((full, os.path.relpath(full, base)))
        else:
            for f in files_:
                files.append((os.path.join(base, name, f), os.path.join(name, f)))

    def module(name, base_path=".", **kw):
        full = os.path.normpath(os.path.join(bdir, base_path, name))
        files.append((full, name))

    env = {"include": lambda p, **kw: includes.append(p),
           "package": lambda name, files=None, base_path=".", opt=None, **kw: package(name, files, base_path, opt),
           "module": module, "require": lambda *a, **kw: None, "freeze": lambda *a, **kw: None}
    here = os.getcwd()
    os.chdir(bdir)
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), env)
    finally:
        os.chdir(here)
    return files, includes


def missing(board, env=None):
    """Sentences naming what the image build for `board` lacks (empty: ready to build)."""
    env = os.environ if env is None else env
    out = []
    try:
        definition = boards.load_board(board)
    except boards.BoardError as exc:
        return ["%s (make image BOARD=NAME)." % exc]
    if definition.get("chip") == "unix" or not definition.get("micropython_board"):
        return ["board %s has no MicroPython ESP32 image to build (board.json names no \"micropython_board\")." % board]
    top = env.get("MICROPY_DIR")
    if not top:
        out.append("MICROPY_DIR is not set: point it at a MicroPython source tree (with ports/esp32).")
    elif not os.path.isfile(os.path.join(top, "ports", "esp32", "Makefile")):
        out.append("MICROPY_DIR=%s is not a MicroPython source tree (no ports/esp32/Makefile)." % top)
    idf = env.get("IDF_PATH")
    if not idf:
        out.append("IDF_PATH is not set: source ESP-IDF's export.sh (the version MicroPython's ports/esp32 "
                   "README names).")
    elif not os.path.isdir(idf):
        out.append("IDF_PATH=%s is not a directory." % idf)
    if not shutil.which("idf.py", path=env.get("PATH")):
        out.append("idf.py is not on PATH: source ESP-IDF's export.sh.")
    return out


def is_romfs_board(definition):
    """The board's image is the ROMFS one (its definition has a romfs partition)."""
    return bool(definition.get("romfs_bytes")) and definition.get("chip") != "unix"


def _flash_size_option(flash_bytes):
    mb = flash_bytes // (1024 * 1024)
    if mb * 1024 * 1024 != flash_bytes or mb not in (2, 4, 8, 16, 32, 64, 128):
        raise ImageError("flash_size %d bytes: not an ESP-IDF flash size (2M to 128M)" % flash_bytes)
    lines = ["CONFIG_ESPTOOLPY_FLASHSIZE_%dMB=y" % mb]
    if mb != 4:  # the port's sdkconfig.base chooses 4MB: unset it, as its sdkconfig.flash_2MiB does
        lines.insert(0, "CONFIG_ESPTOOLPY_FLASHSIZE_4MB=n")
    return lines


def romfs_board_files(board, env=None):
    """(the board directory for MicroPython's BOARD_DIR, {file name: text}) of a ROMFS
    board's image: the stock board (and variant) included, plus MICROPY_VFS_ROM and an
    sdkconfig fragment with the board's partition table."""
    env = os.environ if env is None else env
    d = boards.load_board(board)
    table_path, table = partitions.board_table(board, d)
    if not table_path:
        raise ImageError("board %s has romfs_bytes but no partition_table in its board.json" % board)
    port = os.path.join(os.path.abspath(env["MICROPY_DIR"]), "ports", "esp32")
    stock = os.path.join(port, "boards", d["micropython_board"])
    cmake = ["# Written by ppmid's host_tools/image.py for board %s: the port's %s%s with a romfs partition"
             % (board, d["micropython_board"], " " + d["micropython_variant"] if d.get("micropython_variant") else ""),
             "include(%s/mpconfigboard.cmake)" % stock]
    if d.get("micropython_variant"):
        cmake.append("include(%s/mpconfigvariant_%s.cmake)" % (stock, d["micropython_variant"]))
    cmake += ["list(APPEND SDKCONFIG_DEFAULTS ${MICROPY_BOARD_DIR}/sdkconfig.ppmid)",
              "list(APPEND MICROPY_DEF_BOARD MICROPY_VFS_ROM=1)", ""]
    sdk = ["# Written by ppmid's host_tools/image.py for board %s" % board,
           "CONFIG_PARTITION_TABLE_CUSTOM=y",
           'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % table_path]
    sdk += _flash_size_option(boards.heap_bytes(d["flash_size"]))
    if partitions.ota_slots(table):
        # an image update's first boot is rolled back unless the app marks it valid (docs/update.md)
        sdk.append("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y")
    header = ['#include "%s/mpconfigboard.h"' % stock, ""]
    return os.path.join(port, "build-ppmid-%s-board" % board), {
        "mpconfigboard.cmake": "\n".join(cmake), "sdkconfig.ppmid": "\n".join(sdk) + "\n",
        "mpconfigboard.h": "\n".join(header)}


def build_commands(board, env=None):
    """The make command lines of the build, and the image it leaves."""
    env = os.environ if env is None else env
    d = boards.load_board(board)
    top = os.path.abspath(env["MICROPY_DIR"])
    port = os.path.join(top, "ports", "esp32")
    build = "build-ppmid-" + board
    args = ["BOARD=" + d["micropython_board"]]
    if is_romfs_board(d):
        # the variant comes in through the board directory's cmake; the port's own frozen
        # modules only: a frozen ppmid would shadow /rom
        board_dir, _ = romfs_board_files(board, env)
        args.append("BOARD_DIR=" + board_dir)
        manifest = os.path.join(port, "boards", "manifest.py")
    else:
        if d.get("micropython_variant"):
            args.append("BOARD_VARIANT=" + d["micropython_variant"])
        manifest = os.path.join(boards.BOARDS_DIR, board, "manifest.py")
    cmds = [["make", "-C", os.path.join(top, "mpy-cross")],
            ["make", "-C", port] + args + ["BUILD=" + build, "submodules"],
            ["make", "-C", port] + args + ["BUILD=" + build, "FROZEN_MANIFEST=" + manifest]]
    return cmds, os.path.join(port, build, "firmware.bin")


def build(board, env=None, log=print):
    lack = missing(board, env)
    if lack:
        raise ImageError(" ".join(lack))
    cmds, image = build_commands(board, env)
    if is_romfs_board(boards.load_board(board)):
        board_dir, files = romfs_board_files(board, env)
        os.makedirs(board_dir, exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(board_dir, name), "w") as f:
                f.write(text)
        log("image: board directory %s (%s)" % (board_dir, ", ".join(sorted(files))))
    for cmd in cmds:
        log("image: " + " ".join(cmd))
        if subprocess.run(cmd, env=env).returncode != 0:
            raise ImageError("the MicroPython build failed: %s" % " ".join(cmd))
    if not os.path.isfile(image):
        raise ImageError("the MicroPython build left no %s" % image)
    return image


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    board = argv[0] if argv else ""
    lack = missing(board)
    if lack:
        # the errors' one line each, `ppmid: E_CODE: sentence`: a board there is none of is
        # E_BOARD, as everywhere; what the build lacks, E_IMAGE
        try:
            boards.load_board(board)
            code = ImageError.code
        except boards.BoardError:
            code = boards.BoardError.code
        for sentence in lack:
            print("ppmid: %s: make image: %s" % (code, sentence), file=sys.stderr)
        return 1
    try:
        image = build(board)
    except ToolError as exc:
        print("ppmid: %s: %s" % (exc.code, exc), file=sys.stderr)
        return 1
    if is_romfs_board(boards.load_board(board)):
        # its partition table moves the filesystem: MicroPython could not mount the old one
        print("image: %s\nnext: ppmid flash --port PORT --board %s --firmware %s --erase-all --romfs"
              % (image, board, image))
    else:
        print("image: %s\nnext: ppmid flash --port PORT --board %s --firmware %s --scripts-only" % (image, board, image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
