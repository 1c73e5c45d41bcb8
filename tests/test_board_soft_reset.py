"""Soft reset on the emulated board behaves like MicroPython's on an ESP32 (issue #14): Ctrl-D
in the raw REPL prints `MPY: soft reboot` and comes back in the raw REPL without running
main.py, so plain mpremote (no `resume`) works; in the friendly REPL a soft reset boots the
app. Every mpremote call here is the venv's own, bounded by a timeout."""
import re
import subprocess
import time

import pytest

from host_tools import boards
from host_tools.emuboard import SOFT_REBOOT_LINE, EmulatedBoard

MPREMOTE_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """An emulated board with the real firmware deployed (the deploy uses `resume`)."""
    with EmulatedBoard(tmp_path_factory.mktemp("softreset")) as b:
        b.deploy()
        yield b


def mpremote(b, *args):
    """`mpremote connect REPL ARGS...` as a new user types it: no `resume`."""
    p = subprocess.run([boards.mpremote_path(), "connect", b.repl] + list(args), capture_output=True,
                       text=True, timeout=MPREMOTE_TIMEOUT_S)
    assert p.returncode == 0, "mpremote %s failed: %s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


def soft_resets_since(b, mark):
    return b.console_bytes()[mark:].count(SOFT_REBOOT_LINE)


def test_exec_without_resume_soft_resets_into_the_raw_repl(board):
    mark = board.mark()
    restarts = board.restarts
    assert mpremote(board, "exec", "print(1+1)") == "2\n"
    assert board.restarts == restarts + 1
    assert board.state()["last_reason"] == "soft_reset"
    assert soft_resets_since(board, mark) == 1
    # raw-REPL mode survives the soft reset: main.py did not run, as on an ESP32
    assert b"PPMID ready" not in board.console_bytes()[mark:]


def test_run_and_fs_without_resume(board, tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello from', sys.platform)\n")
    assert mpremote(board, "run", str(script)) == "hello from linux\n"
    data = tmp_path / "data.txt"
    data.write_text("kept on the flash\n")
    mpremote(board, "fs", "cp", str(data), ":/softreset-data.txt")
    assert "softreset-data.txt" in mpremote(board, "fs", "ls", ":/")
    assert mpremote(board, "fs", "cat", ":/softreset-data.txt") == "kept on the flash\n"
    mpremote(board, "fs", "rm", ":/softreset-data.txt")


def test_soft_reset_command_and_a_chain(board):
    mark = board.mark()
    assert mpremote(board, "soft-reset") == ""
    out = mpremote(board, "exec", "print('before')", "soft-reset", "exec", "print('after')")
    assert out == "before\nafter\n"
    assert soft_resets_since(board, mark) == 3  # soft-reset; the chain's first exec and its soft-reset


def test_machine_soft_reset_in_the_raw_repl(board):
    out = mpremote(board, "exec", "import machine; print('going'); machine.soft_reset()", "exec", "print('back')")
    assert out == "going\nback\n"


def test_friendly_soft_reset_boots_the_app(board):
    mpremote(board, "exec", "print(0)")  # leaves the board at the friendly REPL, app stopped
    mark = board.mark()
    with open(board.repl, "wb", buffering=0) as f:
        f.write(b"\r\x03\x02\x04")  # Ctrl-C, Ctrl-B (friendly REPL), Ctrl-D: soft reset
    board.wait_ready(timeout=30, since=mark)
    assert soft_resets_since(board, mark) == 1


def test_board_soft_reset_asks_the_supervisor(board):
    """ppmid.board.emulated.Board.soft_reset(): machine.soft_reset() for the firmware."""
    mark = board.mark()
    restarts = board.restarts
    with open(board.repl, "wb", buffering=0) as f:
        f.write(b"\r\x03\x03\x02")
        time.sleep(0.3)
        f.write(b"import _emuboard; from ppmid.board.emulated import Board; Board(_emuboard).soft_reset()\r")
    board.wait_ready(timeout=30, since=mark)
    assert board.restarts == restarts + 1
    assert board.state()["last_reason"] == "soft_reset" and board.state()["last_exit"] == 0
    text = board.console_bytes()[mark:]
    assert re.search(rb"MPY: soft reboot\r\n.*PPMID ready", text, re.S)


def test_resume_still_works_and_keeps_the_app_stopped(board):
    """`resume` (what deploy and EmulatedBoard.exec use) does not reset the board."""
    restarts = board.restarts
    assert board.exec("print(40 + 2)").strip() == "42"
    assert board.restarts == restarts
