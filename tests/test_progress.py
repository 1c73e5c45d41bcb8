"""host_tools.progress: a bar redrawn in place on a terminal, the same plain lines as
before elsewhere; and the commands use it that way (no control characters in a log)."""
import io
import os
import pty
import subprocess
import sys

from host_tools.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plain_mode_prints_the_steps_and_a_line_per_tenth():
    out = io.StringIO()
    bar = Progress("deploy", 3, stream=out)
    assert not bar.tty
    bar.step("built 5 files")
    bar.step("2 of 5 files changed")
    bar.close()
    assert out.getvalue() == "deploy: built 5 files\ndeploy: 2 of 5 files changed\n"
    out = io.StringIO()
    bar = Progress("replay", 40, stream=out)
    for n in range(41):
        bar.update(n)
    lines = out.getvalue().splitlines()
    assert lines[0] == "replay: 4/40" and lines[-1] == "replay: 40/40" and len(lines) == 10
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_terminal_mode_redraws_one_line():
    out = io.StringIO()
    bar = Progress("emulate", 4, stream=out, tty=True, width=8)
    bar.step("broker on 127.0.0.1:1883")
    bar.step("board started")
    assert bar.render() == "[####....] 2/4 emulate: board started"
    for _ in range(5):  # more steps than planned: full, not broken
        bar.step("more")
    assert bar.render() == "[########] 4/4 emulate: more"
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r\x1b[2K") == 8


def test_deploy_dry_run_output_is_plain_even_on_a_terminal(tmp_path):
    """`--dry-run` prints commands to copy and paste: never a bar."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "deploy", "--port", "/dev/null", "--board",
                          "emulated", "--dry-run", "--build-dir", str(tmp_path / "b")], cwd=ROOT, stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    # read the terminal while the command writes: its listing is longer than a pty's buffer
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: the command closed its end
            break
        if not data:
            break
        chunks.append(data)
    p.stderr_text = p.stderr.read().decode()
    p.wait(timeout=120)
    os.close(master)
    out = b"".join(chunks).decode()
    assert p.returncode == 0, p.stderr_text
    assert "deploy: built" in out and "\x1b" not in out
