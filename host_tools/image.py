"""A MicroPython image with the app frozen in, for a board whose heap cannot hold the app as
.mpy files (`make image BOARD=NAME`; `python -m host_tools.image NAME`).

Frozen bytecode runs from flash, so the heap only holds the app's data. The build is
MicroPython's own: its ESP32 port with ESP-IDF, and boards/NAME/manifest.py as
FROZEN_MANIFEST (board.json "micropython_board" and "micropython_variant" name the port's
board). It needs a MicroPython source tree (MICROPY_DIR) and an ESP-IDF environment
(IDF_PATH, idf.py on PATH: ESP-IDF's export.sh sets both); without them it says what is
missing, one sentence each, and builds nothing. Then: `ppmid flash --scripts-only
--firmware <the image>` (or flash it, then `ppmid deploy --scripts-only`).

`manifest_files(board)` runs a board's manifest with stand-ins for the build's manifest
functions and lists the firmware files it freezes (tests compile each for the board).
"""
import os
import shutil
import subprocess
import sys

from host_tools import boards
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


def build_commands(board, env=None):
    """The make command lines of the build, and the image it leaves."""
    env = os.environ if env is None else env
    d = boards.load_board(board)
    top = os.path.abspath(env["MICROPY_DIR"])
    port = os.path.join(top, "ports", "esp32")
    build = "build-ppmid-" + board
    args = ["BOARD=" + d["micropython_board"]]
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
        for sentence in lack:
            print("ppmid: make image: " + sentence, file=sys.stderr)
        return 1
    try:
        image = build(board)
    except ToolError as exc:
        print("ppmid: %s" % exc, file=sys.stderr)
        return 1
    print("image: %s\nnext: ppmid flash --port PORT --board %s --firmware %s --scripts-only" % (image, board, image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
