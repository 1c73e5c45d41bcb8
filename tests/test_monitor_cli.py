"""`ppmid monitor`: the console's lines with the host's time in front, filtered by level,
from a pty (as a USB serial console would be) and from an emulated board's console.log."""
import os
import re
import subprocess
import sys
import time
import tty

from host_tools.console_monitor import LevelClassifier, LineSplitter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAMP = r"\d\d:\d\d:\d\d\.\d\d\d"


def text(line):
    """The console line itself: after the time (12 characters + space) and the level (5 + space)."""
    return line[19:]

CONSOLE = (b"PPMID ready: version=0.1.0 board=emulated free_heap=241824\r\n"
           b"relay info: journal opened\r\n"
           b"relay warn: HAN busy, retrying in 3 s\r\n"
           b"Traceback (most recent call last):\r\n"
           b'  File "ppmid/app.py", line 12, in run\r\n'
           b"OSError: [Errno 5] EIO\r\n"
           b"PPMID status: running: gateway=00DB1234567890A4\r\n"
           b"relay error: journal write failed\r\n")


def test_levels_of_console_lines():
    c = LevelClassifier()
    lines = LineSplitter().feed(CONSOLE)
    assert [c.level(x) for x in lines] == ["info", "info", "warn", "error", "error", "error", "info", "error"]
    s = LineSplitter()
    assert s.feed(b"half") == [] and s.feed(b" line\r\nnext") == ["half line"] and s.rest() == "next"


def ppmid(*args):
    return subprocess.Popen([sys.executable, "-m", "host_tools.cli", "monitor"] + list(args), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_monitor_a_pty_with_a_level_filter():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        p = ppmid(os.ttyname(slave), "--level", "warn", "--seconds", "3")
        time.sleep(1.0)
        os.write(master, CONSOLE[:70])   # a line split across reads
        time.sleep(0.2)
        os.write(master, CONSOLE[70:])
        out, err = p.communicate(timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert all(re.match(STAMP + " (warn |error) ", x) for x in lines), lines
    assert [text(x) for x in lines] == [
        "relay warn: HAN busy, retrying in 3 s", "Traceback (most recent call last):",
        '  File "ppmid/app.py", line 12, in run', "OSError: [Errno 5] EIO", "relay error: journal write failed"]


def test_monitor_follows_an_emulated_boards_console_log(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"old line before the monitor started\r\n")
    p = ppmid("--state-dir", str(tmp_path), "--grep", "relay", "--seconds", "2.5")
    time.sleep(1.0)
    with open(log, "ab") as f:
        f.write(CONSOLE)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    texts = [text(x) for x in out.splitlines()]
    assert texts == ["relay info: journal opened", "relay warn: HAN busy, retrying in 3 s",
                     "relay error: journal write failed"]
    p = ppmid("--state-dir", str(tmp_path), "--from-start", "--level", "error", "--seconds", "1")
    out, _ = p.communicate(timeout=30)
    assert len(out.splitlines()) == 4  # the traceback (3 lines) and the relay error


def test_monitor_errors(tmp_path):
    for args, says in ((["--state-dir", str(tmp_path)], "no console.log"), ([], "PORT or --state-dir"),
                       ([str(tmp_path / "ttyNONE")], "cannot open"),
                       (["--state-dir", str(tmp_path), "--grep", "("], "not a regular expression")):
        if "regular" in says:
            (tmp_path / "console.log").write_text("")
        p = ppmid(*args, "--seconds", "1")
        out, err = p.communicate(timeout=30)
        assert p.returncode == 1 and says in err and "Traceback" not in err, (args, err)
