"""`ppmid send` and `ppmid broker` as commands (subprocesses), against the MicroPython link."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import mqtt_tools as mt
from tests.test_mqtt_gateway import GW_A, GW_B, Gateway, wait_for  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ppmid(*args, timeout=120):
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("brk"))
    r = ppmid("broker", "start", "--state-dir", d, "--gateway", GW_A, "--gateway", GW_B)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert json.load(open(os.path.join(d, "broker.json")))["port"] == info["port"]
    again = ppmid("broker", "start", "--state-dir", d)
    assert again.returncode == 1 and "already running" in again.stderr
    yield d
    r = ppmid("broker", "stop", "--state-dir", d)
    assert r.returncode == 0, r.stderr
    r = ppmid("broker", "stop", "--state-dir", d)
    assert r.returncode == 1 and "no broker running" in r.stderr


class _B:
    def __init__(self, d):
        self.state_dir = d

    def info(self):
        return mt.broker_info(self.state_dir)


def test_send_prints_statuses_and_exit_codes(state, tmp_path):
    gw = Gateway(_B(state), tmp_path, eui=GW_A).start()
    try:
        r = ppmid("send", "--state-dir", state, "--gateway", GW_A, "--gbcs", "dd00" + "00" * 30,
                  "--id", "cli-1", "--until", "accepted", "--expires-in", "300")
        assert r.returncode == 0, r.stdout + r.stderr + gw.output()
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert lines == [{"id": "cli-1", "status": "accepted", "ms": 0}]
        keyfile = tmp_path / "wrong.key"
        keyfile.write_bytes(b"\x01" * 32)
        r = ppmid("send", "--state-dir", state, "--gateway", GW_A, "--gbcs", "dd00", "--id", "cli-2",
                  "--key-file", str(keyfile), "--until", "accepted")
        assert r.returncode == 1
        st = json.loads(r.stdout.splitlines()[-1])
        assert st["status"] == "rejected" and st["error"]["code"] == "E_AUTH"
        # and the errors' one line on stderr (review r5-8: it said nothing there)
        assert r.stderr == "ppmid: E_AUTH: command cli-2 rejected: %s\n" % st["error"]["message"], r.stderr
        assert gw.journal() == ["cli-1"]
    finally:
        gw.kill()


def test_send_without_answer_times_out_nonzero(state):
    mt.envelope_key(state, GW_B, create=True)
    r = ppmid("send", "--state-dir", state, "--gateway", GW_B, "--gbcs", "dd00", "--timeout", "1")
    assert r.returncode == 1
    st = json.loads(r.stdout.splitlines()[-1])
    assert st["error"]["code"] == "E_NO_ANSWER"
    assert r.stderr == "ppmid: E_NO_ANSWER: command %s no-answer: no final status within 1.0s\n" % st["id"], r.stderr


def test_send_usage_errors(state):
    r = ppmid("send", "--state-dir", state, "--gateway", "XYZ", "--gbcs", "dd00")
    assert r.returncode == 1 and r.stderr.startswith("ppmid: ") and "16 hex digits" in r.stderr
    r = ppmid("send", "--state-dir", state, "--gateway", GW_A, "--gbcs", "zz")
    assert r.returncode == 1 and r.stderr.startswith("ppmid: ") and "not hex" in r.stderr
    r = ppmid("send", "--state-dir", state, "--gateway", GW_A, "--gbcs", "dd00", "--id", "a b")
    assert r.returncode == 1 and r.stderr.startswith("ppmid: E_ID")
    r = ppmid("send", "--state-dir", str(state) + "-none", "--gateway", GW_A, "--gbcs", "dd00",
              "--key-file", __file__)
    assert r.returncode == 1 and "must be 32 bytes" in r.stderr


def test_a_status_that_is_not_a_json_object_is_ignored_not_raised_into_paho(capsys):
    # paho 2.x re-raises what on_message raises, which ends its network thread: send would
    # then hear nothing more and wait for its timeout (review L2)
    import queue
    import threading
    from types import SimpleNamespace
    c = mt.Commander.__new__(mt.Commander)
    c.statuses, c.all, c.lock = {}, queue.Queue(), threading.Lock()
    deep = b"[" * 100000 + b"]" * 100000
    for payload in (b"[1]", b'"x"', b"3", b"null", deep):
        c._on_message(None, None, SimpleNamespace(topic="ppmid/v1/GW/rsp", payload=payload))
    assert c.all.empty() and c.statuses == {}
    assert capsys.readouterr().err.count("not a JSON object") == 5
    c._on_message(None, None, SimpleNamespace(topic="ppmid/v1/GW/rsp", payload=b'{"id": "a1", "status": "accepted"}'))
    assert c.statuses["a1"].get_nowait() == {"id": "a1", "status": "accepted"}
