"""The firmware MQTT link under MicroPython against the real mosquitto (TLS, client
certificates, ACLs): connect, commands end to end, every bad input, redelivery when the
accept hook fails, broker restart mid-stream, and the last will when the board is killed.
"""
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest

from host_tools.broker import Broker, client_paths
from host_tools import mqtt_tools as mt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
GW_A = "00DB1234567890A0"
GW_B = "00DB1234567890B0"
GBCS = bytes.fromhex("DD000000000000000000") + bytes(range(60))


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else "micropython"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("broker")
    # "watch": the Watcher's own identity (the broker makes it the client id, so a
    # Watcher and a Commander on one certificate would kick each other off)
    b = Broker(str(d), gateways=[GW_A, GW_B], users=["test", "watch", "watch-b"])
    b.start()
    yield b
    b.stop()


class Gateway:
    """The firmware link running in `micropython` on a directory standing in for flash."""

    def __init__(self, broker, tmp, eui=GW_A, mode="", files=None, **cfg_over):
        self.root = str(tmp / ("flash-" + eui))
        self.eui = eui
        self.key = mt.envelope_key(broker.state_dir, eui, create=True)
        if files is None:
            cfg = mt.gateway_config(eui, broker.info(), **cfg_over)
            files = mt.gateway_files(broker.state_dir, eui, cfg, self.key)
        mt.write_tree(self.root, files)
        self.script = str(tmp / "gateway.py")
        with open(self.script, "w") as f:
            f.write(mt.GATEWAY_SCRIPT)
        self.mode = mode
        self.lines = []
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=256K", self.script, FIRMWARE, self.root, self.mode],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def journal(self):
        try:
            with open(os.path.join(self.root, "journal.log")) as f:
                return [x.strip() for x in f if x.strip()]
        except OSError:
            return []

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def output(self):
        return "\n".join(self.lines[-40:])


def wait_for(cond, what, timeout=30, gw=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s%s" % (what, "\n" + gw.output() if gw else ""))


class Watcher:
    """A DCC User watching retained state/info of a gateway."""

    def __init__(self, broker, eui, ident="dcc-user-watch"):
        # two Watchers at once need two identities (one connection per certificate)
        self.msgs = {}
        self.c = mt.paho_client(broker.state_dir, ident)
        self.c.on_message = lambda c, u, m: self.msgs.__setitem__(m.topic.rsplit("/", 1)[1], json.loads(m.payload))
        mt.connect(self.c, broker.state_dir)
        self.c.subscribe("ppmid/v1/%s/state" % eui, 1)
        self.c.subscribe("ppmid/v1/%s/info" % eui, 1)

    def state(self):
        return self.msgs.get("state", {}).get("state")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def gateway(broker, tmp_path):
    gws = []

    def make(**kw):
        g = Gateway(broker, tmp_path, **kw)
        gws.append(g)
        return g
    yield make
    for g in gws:
        g.kill()


def test_tls_client_certificate_connect_state_and_info(broker, gateway):
    w = Watcher(broker, GW_A)
    gw = gateway().start()
    try:
        wait_for(lambda: w.state() == "online", "retained state online", gw=gw)
        wait_for(lambda: "info" in w.msgs, "retained info", gw=gw)
        assert w.msgs["info"]["board"] == "unix"
    finally:
        w.close()
    log = open(os.path.join(broker.state_dir, "mosquitto.log")).read()
    assert "as %s" % GW_A in log or "u'%s'" % GW_A in log  # authenticated by its certificate CN


def test_commands_end_to_end_and_every_bad_input(broker, gateway):
    gw = gateway(limits={"max_gbcs": 512}).start()
    cmd = mt.Commander(broker.state_dir, GW_A, key=gw.key)
    try:
        cmd.send("ok-1", GBCS)
        got = cmd.wait("ok-1", ("accepted",))
        assert got[-1]["status"] == "accepted"
        good = json.loads(mt.command_json(gw.key, "bad-mac", GBCS))
        good["mac"] = "00" * 32
        cases = [
            (b"{not json", None, "E_ENVELOPE"),
            (json.dumps({"id": "no-gbcs", "mac": "00" * 32}).encode(), "no-gbcs", "E_ENVELOPE"),
            (json.dumps({"id": "b64", "gbcs": "@@@@", "mac": "00" * 32}).encode(), "b64", "E_ENVELOPE"),
            (json.dumps({"id": "x" * 33, "gbcs": "AAAA", "mac": "00" * 32}).encode(), None, "E_ID"),
            (mt.command_json(gw.key, "big", bytes(513)), "big", "E_TOO_LARGE"),
            (json.dumps(good).encode(), "bad-mac", "E_AUTH"),
            (mt.command_json(b"\x07" * 32, "other-key", GBCS), "other-key", "E_AUTH"),
            (mt.command_json(gw.key, "expired", GBCS, expires=int(time.time()) - 5), "expired", "E_EXPIRED"),
        ]
        for payload, id, code in cases:
            cmd.publish_raw(payload)
            st = cmd.wait(id, ("rejected",))[-1]
            assert st["error"]["code"] == code, (payload[:60], st)
            assert st["error"]["message"]
        # Larger than the client's receive limit (never below 16 KB: an update offer must
        # fit, ppmid.mqtt.link): skipped unread, refused, acknowledged.
        cmd.publish_raw(mt.command_json(gw.key, "huge", bytes(13000)))
        st = cmd.wait(None, ("rejected",))[-1]
        assert st["error"]["code"] == "E_TOO_LARGE", st
        cmd.send("ok-2", GBCS, expires=int(time.time()) + 600)
        assert cmd.wait("ok-2", ("accepted",))[-1]["status"] == "accepted"
        assert gw.proc.poll() is None, gw.output()
        assert gw.journal() == ["ok-1", "ok-2"]
    finally:
        cmd.close()


def test_acl_gateway_cannot_read_another_gateways_cmd_and_no_anonymous(broker, gateway):
    # Gateway B (its own certificate) tries to read A's commands and to forge A's responses.
    seen = []
    spy = mt.paho_client(broker.state_dir, GW_B)
    spy.on_message = lambda c, u, m: seen.append(m.topic)
    granted = []
    spy.on_subscribe = lambda c, u, mid, rcs, props=None: granted.extend(rcs)
    mt.connect(spy, broker.state_dir)
    spy.subscribe("ppmid/v1/%s/cmd" % GW_A, 1)
    spy.subscribe("ppmid/v1/+/cmd", 1)
    spy.subscribe("ppmid/v1/%s/cmd" % GW_B, 1)
    cmd = mt.Commander(broker.state_dir, GW_A, key=b"k" * 32)
    try:
        wait_for(lambda: len(granted) == 3, "SUBACKs")
        # mosquitto 2.0 may grant the subscription and filter at delivery: what matters is
        # that nothing of A's is ever delivered to B.
        spy.publish("ppmid/v1/%s/rsp" % GW_A, json.dumps({"id": "forged", "status": "response"}), 1).wait_for_publish(5)
        cmd.publish_raw(b'{"id": "for-A"}')
        cmd.publish_raw(b'{"id": "for-B"}', topic="ppmid/v1/%s/cmd" % GW_B)
        wait_for(lambda: seen, "B's own command")
        assert seen == ["ppmid/v1/%s/cmd" % GW_B]
        time.sleep(0.5)  # give a wrongly routed message its chance to arrive
        assert seen == ["ppmid/v1/%s/cmd" % GW_B]
        with pytest.raises(TimeoutError):
            cmd.wait("forged", ("response",), timeout=1)
    finally:
        spy.disconnect()
        spy.loop_stop()
        cmd.close()
    # No certificate: the TLS handshake itself is refused.
    info = broker.info()
    import socket
    ctx = ssl.create_default_context(cafile=client_paths(broker.state_dir, GW_A)["ca_pem"])
    ctx.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection((info["host"], info["port"]), 5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")
                if not s.recv(4):
                    raise ConnectionError("closed")


def test_accept_failure_withholds_puback_then_broker_redelivers(broker, gateway):
    gw = gateway(mode="fail:2").start()
    cmd = mt.Commander(broker.state_dir, GW_A, key=gw.key)
    try:
        cmd.send("retry-1", GBCS)
        assert cmd.wait("retry-1", ("accepted",), timeout=60)[-1]["status"] == "accepted"
        assert gw.journal() == ["retry-1"]
        assert sum(1 for x in gw.lines if x == "FAIL retry-1") == 2, gw.output()
    finally:
        cmd.close()


def test_broker_restart_mid_stream_loses_no_accepted_command(broker, gateway):
    gw = gateway(mode="slow:20").start()
    w = Watcher(broker, GW_A)
    wait_for(lambda: w.state() == "online", "online", gw=gw)
    w.close()
    cmd = mt.Commander(broker.state_dir, GW_A, key=gw.key, client_id="dcc-restart", )
    ids = ["r-%d" % i for i in range(30)]
    try:
        for i, id in enumerate(ids):
            cmd.send(id, GBCS)
            if i == 10:
                cmd.close()
                broker.restart()
                cmd = mt.Commander(broker.state_dir, GW_A, key=gw.key, client_id="dcc-restart")
        wait_for(lambda: set(ids) <= set(gw.journal()), "every command journaled", timeout=90, gw=gw)
        # Responses come back after the reconnect (the persistent DCC session buffers them).
        for id in ids[11:]:
            assert cmd.wait(id, ("accepted",), timeout=60)[-1]["status"] == "accepted"
    finally:
        cmd.close()


def test_last_will_offline_when_board_killed(broker, gateway):
    w = Watcher(broker, GW_A)
    gw = gateway().start()
    try:
        wait_for(lambda: w.state() == "online", "online", gw=gw)
        gw.kill()
        wait_for(lambda: w.state() == "offline", "last will: offline", timeout=90)
    finally:
        w.close()
    # Retained: a newcomer sees offline too.
    w2 = Watcher(broker, GW_A)
    try:
        wait_for(lambda: w2.state() == "offline", "retained offline")
    finally:
        w2.close()


def test_missing_or_bad_config_stops_the_link_with_a_clear_status(broker, gateway, tmp_path):
    cfg = mt.gateway_config(GW_A, broker.info())
    files = mt.gateway_files(broker.state_dir, GW_A, cfg, b"k" * 32)
    del files["/certs/gateway.der"]
    gw = gateway(files=files).start()
    assert gw.proc.wait(30) == 3
    wait_for(lambda: any("STATE config-error" in x for x in gw.lines), "config-error line")
    assert "gateway certificate missing" in gw.output()
    files["/certs/gateway.der"] = b"x"
    files["/config.json"] = b'{"gateway": "nothex"}'
    (tmp_path / "2").mkdir()
    gw2 = Gateway(broker, tmp_path / "2", files=files).start()
    assert gw2.proc.wait(30) == 3
    wait_for(lambda: any("E_CONFIG" in x for x in gw2.lines), "E_CONFIG line")


def test_wifi_drop_mid_stream_no_accepted_command_lost(broker, gateway, tmp_path):
    # The emulated board's WLAN shim (ppmid.board.emulated.WLAN) closes the tracked
    # sockets when its access point (a file) goes down, as the real Wi-Fi loss would.
    ap = tmp_path / "wifi"
    ap.write_bytes(b"1")
    gw = gateway(mode="slow:10,wifi:%s" % ap).start()
    w = Watcher(broker, GW_A)
    cmd = mt.Commander(broker.state_dir, GW_A, key=gw.key)
    ids = ["w-%d" % i for i in range(40)]
    try:
        wait_for(lambda: w.state() == "online", "online", gw=gw)
        for i, id in enumerate(ids):
            cmd.send(id, GBCS)
            if i == 15:
                ap.write_bytes(b"0")
                wait_for(lambda: w.state() == "offline", "will after the Wi-Fi drop", gw=gw)
        assert len(gw.journal()) < len(ids)  # the rest waits in the broker's session
        ap.write_bytes(b"1")
        wait_for(lambda: set(ids) <= set(gw.journal()), "every command journaled", timeout=90, gw=gw)
        for id in ids:
            assert cmd.wait(id, ("accepted",), timeout=60)[-1]["status"] == "accepted"
        wait_for(lambda: w.state() == "online", "online again", gw=gw)
        assert gw.proc.poll() is None
    finally:
        cmd.close()
        w.close()


def test_unusable_certificate_is_a_config_error(broker, tmp_path):
    cfg = mt.gateway_config(GW_A, broker.info())
    files = mt.gateway_files(broker.state_dir, GW_A, cfg, b"k" * 32)
    files["/certs/gateway.key.der"] = b"not a key"
    gw = Gateway(broker, tmp_path, files=files).start()
    try:
        assert gw.proc.wait(30) == 3
        wait_for(lambda: any("certificates on flash are not usable" in x for x in gw.lines), "config-error line")
    finally:
        gw.kill()
