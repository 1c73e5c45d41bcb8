"""The client-id binding's HTTP service for RabbitMQ (host_tools/rabbitmq_clientid_auth.py):
its answers, and its life beside the broker (started, asked over HTTP, stopped). The
real broker asking it: tests/test_broker_identity.py (the RabbitMQ cases)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from host_tools import broker_rabbitmq as R
from host_tools.broker import Broker
from host_tools.rabbitmq_clientid_auth import decide

GW_A = "00DB1234567890A0"
USER = "dcc-user-test"


def test_vhost_allows_only_the_certificates_own_client_ids():
    ok = lambda u, c: decide("/vhost", {"username": u, "client_id": c})  # noqa: E731
    assert ok(GW_A, GW_A) == "allow"
    assert ok(USER, USER + "/replay-" + GW_A) == "allow"
    assert ok(USER, GW_A) == "deny"                 # a DCC User's certificate, a gateway's id
    assert ok("00DB1234567890B0", GW_A) == "deny"   # another gateway's
    assert ok(USER, USER + "x") == "deny"           # a longer name is another identity
    assert ok(USER, "") == "deny"
    assert decide("/vhost", {"username": USER}) == "deny"   # no client id (not MQTT): refused
    assert decide("/vhost", {"client_id": USER}) == "deny"


def test_other_questions_are_left_to_the_internal_backend_and_unknown_ones_refused():
    for path in ("/user", "/resource", "/topic"):
        assert decide(path, {"username": USER}) == "allow"
    assert decide("/other", {"username": USER, "client_id": USER}) == "deny"


def test_service_answers_over_http_and_stops_with_the_broker(tmp_path):
    state = str(tmp_path)
    port = R.start_clientid_auth(state)
    info_path = os.path.join(state, "rabbitmq", "clientid_auth.json")
    with open(info_path) as f:
        pid = json.load(f)["pid"]
    try:
        def ask(query):
            with urllib.request.urlopen("http://127.0.0.1:%d/vhost?%s" % (port, query), timeout=5) as r:
                return r.read().decode()
        assert ask("username=%s&vhost=%%2F&client_id=%s" % (GW_A, GW_A)) == "allow"
        assert ask("username=%s&vhost=%%2F&client_id=%s" % (USER, GW_A)) == "deny"
        # a second start (a broker killed and started again) replaces the first service
        port2 = R.start_clientid_auth(state)
        with open(info_path) as f:
            pid2 = json.load(f)["pid"]
        assert pid2 != pid and not _alive_after(pid, 5)
        pid = pid2
        assert port2 > 0
    finally:
        R.stop_clientid_auth(state)
    assert not _alive_after(pid, 5) and not os.path.exists(info_path)
    with open(os.path.join(state, "rabbitmq", "clientid_auth.log")) as f:
        assert "refused: /vhost user %r client id %r" % (USER, GW_A) in f.read()


def _alive_after(pid, timeout):
    """True if pid still runs (not a zombie) after timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.waitpid(pid, os.WNOHANG)   # reap it if it is our child
        except ChildProcessError:
            pass
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split()[2] == "Z":
                    return False
        except OSError:
            return False
        time.sleep(0.05)
    return True


# make soak (a RabbitMQ node started and SIGKILLed): the service's start, answers and stop
# beside a broker are in make test (test_service_answers_over_http_and_stops_with_the_broker)
@pytest.mark.slow
def test_broker_stop_after_the_node_died_stops_the_service_it_left(tmp_path):
    """The node SIGKILLed (a crash, the OOM killer): its client-id service and epmd live
    on; `ppmid broker stop` stops them by their pid files (before: "no broker running",
    and the service stayed)."""
    if not R.available():
        pytest.skip("rabbitmq-server is not installed (%s missing): apt-get install rabbitmq-server" % R.SERVER)
    state = str(tmp_path / "broker")
    b = Broker(state, engine="rabbitmq")
    info = b.start()
    try:
        with open(os.path.join(state, "rabbitmq", "clientid_auth.json")) as f:
            auth_pid = json.load(f)["pid"]
        os.kill(info["pid"], signal.SIGKILL)        # the Erlang VM
        b.proc.wait(30)                             # the script around it ends with it
        assert _alive_after(auth_pid, 1)            # the service outlived its node
        r = _ppmid("broker", "stop", "--state-dir", state)
        assert r.returncode == 0, r.stderr
        assert not _alive_after(auth_pid, 5)
        assert not os.path.exists(os.path.join(state, "rabbitmq", "clientid_auth.json"))
        assert not _listening(int(R.env(state)["ERL_EPMD_PORT"]), 5)    # nor its epmd
        # nothing left to stop: said so, exit 1
        r = _ppmid("broker", "stop", "--state-dir", state)
        assert r.returncode == 1 and "no broker running" in r.stderr, (r.returncode, r.stderr)
    finally:
        b.proc = None
        b.stop()


def _ppmid(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"]
                          + list(args), cwd=root, capture_output=True, text=True, timeout=60)


def _listening(port, timeout):
    """True if something still accepts on loopback port after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        except OSError:
            return False
        if time.monotonic() > end:
            return True
        time.sleep(0.1)
