"""Test/bench fixture: run firmware NFC code under MicroPython against the emulator.

`Scenario(path, body)` starts `micropython -X heapsize=...` on a script made of the prelude
host_tools/board_scripts/nfc_scenario.py (opens the driver on the pty, defines a fake relay
intake) and `body`; the script reports with `report(**kw)` lines (`@@{json}`) and can wait
for the host with `await step(name)`.
"""
import json
import os
import subprocess
import sys
import tempfile

from host_tools import board_scripts, boards

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = boards.FIRMWARE_DIR
KEY = b"nfc-test-envelope-key-0123456789"



def micropython():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    return here if os.path.exists(here) else "micropython"


class Scenario:
    def __init__(self, path, body, heap="256K", timeout=60):
        src = board_scripts.source("nfc_scenario.py") + "\n" + body
        fd, self.script = tempfile.mkstemp(suffix=".py", prefix="nfc_scenario_")
        with os.fdopen(fd, "w") as f:
            f.write(src)
        self.timeout = timeout
        self.lines = []
        argv = [FIRMWARE, path, KEY.hex()]
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + heap, self.script] + argv,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def next(self):
        """Next report dict; raises with the script's output when it ends first."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(5)
                raise AssertionError("MicroPython scenario ended (exit %s):\n%s" % (self.proc.returncode, "".join(self.lines[-40:])))
            self.lines.append(line)
            if line.startswith("@@"):
                return json.loads(line[2:])

    def until_step(self, name):
        r = self.next()
        assert r.get("step") == name, r
        return r

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self):
        """All remaining reports; checks a clean exit."""
        out = []
        try:
            while True:
                out.append(self.next())
        except AssertionError:
            if self.proc.returncode != 0:
                raise
        return out

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.script)
        except OSError:
            pass
