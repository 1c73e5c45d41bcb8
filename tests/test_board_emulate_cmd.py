"""`ppmid emulate` (what `make run` runs): board + deploy + banner, the module commissioned
onto the emulated CH's HAN (joined, CBKE, tunnel open), then Ctrl-C stops it all."""
import os
import signal
import subprocess
import sys
import time

from host_tools import boards, emuboard
from ctrl_c import default_sigint


def test_emulate_prints_the_banner_and_stops_on_ctrl_c(tmp_path):
    state = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "emulate", "--state-dir", str(state)],
                         cwd=boards.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=default_sigint)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith("emulate: REPL"):
                break
        assert any(l.startswith("PPMID ready: version=") and "board=emulated" in l for l in lines), lines
        steps = [l.strip() for l in lines if l.startswith("commissioning: ")]
        for want in ("commissioning: joined PAN 0x1a62", "commissioning: cbke: key confirmed, link key stored",
                     "commissioning: tunnel open"):
            assert want in steps, lines
        st = emuboard.read_state(str(state))
        chip, sup = st["pid"], st["supervisor_pid"]
        assert "mpremote connect %s resume" % st["repl"] in lines[-1]
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=90)  # the stop itself takes <1 s; a loaded host far longer
        assert p.returncode == 0, out
        assert "emulate: stopping" in out
        for pid in (chip, sup):
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("process %d still running after Ctrl-C" % pid)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_supervisor_stops_when_its_parent_dies(tmp_path):
    # a test runner killed hard must not leave boards behind
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from host_tools.emuboard import EmulatedBoard\n"
            "b = EmulatedBoard(%r).start()\n"
            "print(b.proc.pid, flush=True)\n"
            "time.sleep(60)\n" % (boards.ROOT, str(tmp_path)))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        sup = int(parent.stdout.readline())
        chip = emuboard.read_state(str(tmp_path))["pid"]
        parent.kill()
        parent.wait()
        for pid in (sup, chip):
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError("process %d outlived the test runner" % pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
