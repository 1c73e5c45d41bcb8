"""`ppmid pn532-emulator` as a process: attached to a pty (directly or through a board
state dir), it serves a phone holding a command to the firmware NFC service running under
MicroPython, and saves the result the gateway pushed."""
import base64
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty

import pytest

from host_tools import mpcompat

mpcompat.install()

from ppmid import envelope  # noqa: E402
from host_tools.pn532_emulator.fixture import Scenario, KEY, ROOT  # noqa: E402
from ctrl_c import default_sigint
from conftest import setup_reference

pytestmark = pytest.mark.timeout(120)

BODY = """
async def main():
    drv = open_driver()
    intake = FakeIntake(respond_after=1)
    svc = NfcService(drv, intake, poll_ms=20)
    await svc.start()
    o = await poll_until(svc, 200)
    report(outcome=o, accepted=intake.accepted)
asyncio.run(main())
"""


def _cli(args):
    return subprocess.Popen([sys.executable, "-m", "host_tools.cli", "pn532-emulator"] + args,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=default_sigint)


class PtyBridge:
    """Two pty pairs joined master to master, as the emulated board's supervisor joins
    the board's UART pty and the host's: both sides get a path they can open."""

    def __init__(self):
        self.fds = []
        self.paths = []
        for _ in range(2):
            m, sl = os.openpty()
            tty.setraw(m)
            tty.setraw(sl)
            self.fds += [m, sl]
            self.paths.append(os.ttyname(sl))
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        a, b = self.fds[0], self.fds[2]
        while not self.stop:
            r, _, _ = select.select([a, b], [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(b if fd == a else a, data)

    def close(self):
        self.stop = True
        self.thread.join(2)
        for fd in self.fds:
            os.close(fd)


@pytest.mark.parametrize("via_state_dir", [False, True])
def test_cli_emulator_serves_a_phone(tmp_path, via_state_dir):
    bridge = PtyBridge()
    host_side, board_side = bridge.paths
    gbcs = bytes(range(200)) * 5
    env_file = tmp_path / "cmd.bin"
    env_file.write_bytes(envelope.to_binary(envelope.sign(KEY, "cli-1", gbcs)))
    claim = None
    if via_state_dir:
        (tmp_path / "board.json").write_text(json.dumps({"uarts": {"nfc": host_side}}))
        # a running board's supervisor holds its claim: the emulator serves only a live board's UART
        claim = open(tmp_path / "board.lock", "w")
        fcntl.flock(claim, fcntl.LOCK_EX)
        where = ["--state-dir", str(tmp_path)]
    else:
        where = ["--pty", host_side]
    proc = _cli(where + ["--phone", str(env_file)])
    lines = []
    try:
        while True:  # wait until the emulator is attached
            line = proc.stdout.readline()
            assert line, "emulator exited: %s" % "".join(lines)
            lines.append(line)
            if "PN532 v1.6 on" in line:
                break
        s = Scenario(board_side, BODY)
        r = s.next()
        s.finish()
        s.close()
        assert r["outcome"]["outcome"] == "delivered", r
        assert r["accepted"][0]["id"] == "cli-1"
        result_file = tmp_path / "cmd.bin.result.json"
        for _ in range(100):
            if result_file.exists():
                break
            time.sleep(0.05)
        saved = json.loads(result_file.read_text())
        assert saved["status"] == "response"
        assert base64.b64decode(saved["gbcs"]) == b"R:" + bytes(reversed(gbcs))
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)  # a loaded CI host (2 cores) may be slow to stop it
        bridge.close()
        if claim:
            claim.close()
    assert "phone statuses: 9000 OK" in "".join(lines) + out


def test_cli_refuses_a_non_envelope(tmp_path):
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"\x07hello")
    proc = _cli(["--pty", "/dev/null", "--phone", str(bad)])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "not a binary command or top-up envelope" in out


def test_cli_state_dir_without_nfc_uart(tmp_path):
    (tmp_path / "board.json").write_text(json.dumps({"uarts": {"zigbee": "/dev/null"}}))
    proc = _cli(["--state-dir", str(tmp_path)])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "uarts.nfc" in out


def test_cli_new_pty_linked_under_dev_for_nfcpy(tmp_path):
    """`--new-pty --link /dev/NAME`: nfcpy opens "tty:NAME:pn532" and reads the tag; the
    link goes when the emulator is stopped (SIGTERM)."""
    nfc = setup_reference("nfc")
    if not os.access("/dev", os.W_OK):
        pytest.skip("needs a writable /dev")
    name = "ttyPN532EMU-cli-%d" % os.getpid()
    link = "/dev/" + name
    data = envelope.to_binary(envelope.sign(KEY, "cli-2", b"\x01\x02\x03"))
    env_file = tmp_path / "cmd.bin"
    env_file.write_bytes(data)
    proc = _cli(["--new-pty", "--link", link, "--tag", str(env_file), "--tag-model", "ntag213"])
    lines = []
    try:
        while True:
            line = proc.stdout.readline()
            assert line, "emulator exited: %s" % "".join(lines)
            lines.append(line)
            if line.startswith("pn532-emulator: %s -> /dev/" % link):
                break
        clf = nfc.ContactlessFrontend("tty:%s:pn532" % name)
        try:
            tag = clf.connect(rdwr={"on-connect": lambda t: False, "iterations": 20, "interval": 0.05})
            assert tag.product == "NXP NTAG213"
            assert bytes(tag.ndef.records[0].data) == data
        finally:
            clf.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert not os.path.lexists(link)
