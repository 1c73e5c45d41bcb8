"""`ppmid replay` end to end against a real mosquitto (TLS, client certificates, ACLs) and
a gateway double that runs the real relay core (journal, validator, pacing) under
CPython, with a HAN fake that answers, stays silent, or answers late. Checks the report:
responses, timeouts + late, rejections by code, lost commands, mismatches, latency."""
import asyncio
import json
import os
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "firmware"))

from host_tools import mpcompat  # noqa: E402

mpcompat.install()

import test_relay_support as S  # noqa: E402
from ppmid.errors import PpmidError  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/mosquitto"), reason="mosquitto not installed")

EUI = S.PPMID


class GatewayDouble:
    """A gateway made of the real relay core + paho for MQTT + a scripted HAN."""

    def __init__(self, state_dir, fs_root, key, silent=(), late=(), drop=(), persistent=False):
        import paho.mqtt.client as mqtt
        from host_tools.broker import client_paths
        self.silent = set(silent)   # counters the meter never answers
        self.late = set(late)       # counters answered after the budget
        self.drop = set(drop)       # ids the gateway "loses" before accepting (for the lost count)
        self.key = key
        self.fs_root = fs_root
        paths = client_paths(state_dir, EUI)
        with open(os.path.join(state_dir, "broker.json")) as f:
            info = json.load(f)
        # persistent: like the firmware (clean session false), the broker keeps commands
        # for it across a broker restart
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=EUI, clean_session=not persistent)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.tls_set(ca_certs=paths["ca_pem"], certfile=paths["pem"], keyfile=paths["key_pem"])
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("ppmid/v1/%s/cmd" % EUI, 1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()
        self.client.connect(info["host"], info["port"])
        self.client.loop_start()
        self.thread.start()
        assert self.ready.wait(10) and self.subscribed.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self):
        from ppmid.relay.journal import Journal
        from ppmid.relay.journal import JournalCounterStore
        from ppmid.relay.core import Relay
        from ppmid.relay.recovery import recover
        from ppmid.clock import Clock
        from ppmid.gbcs import Validator, decode
        cfg = S.config(response_timeout_s=1)
        self.journal = Journal(self.fs_root)
        self.journal.open()
        han = S.FakeHan()
        gw = self

        async def later(buf):
            # after the budget of the command and of both its copies (1 s each, the relay
            # resends an unanswered command, docs/relay.md): a response that comes late
            await asyncio.sleep(5.5)
            han.deliver(buf)

        def responder(cmd):
            c = decode(cmd).counter
            if c in gw.silent:
                return None
            if c in gw.late:
                asyncio.get_event_loop().create_task(later(S.response_to(cmd)))
                return None
            return S.response_to(cmd)

        async def send(dest, data, paced=None):
            han.sent.append(bytes(data))
            r = responder(bytes(data))
            if r is not None:
                han.deliver(r)
        han.send = send

        class Pub:
            async def publish(self, topic, payload, qos=1, retain=False):
                info = gw.client.publish(topic, payload, qos=qos, retain=retain)
                while not info.is_published():
                    await asyncio.sleep(0.005)

        self.relay = Relay(cfg, self.journal, Validator(cfg, JournalCounterStore(self.journal)), han, Pub(),
                           Clock(), self.key, topic_prefix="ppmid/v1/%s/" % EUI, late_window_s=10,
                           console=None)
        recover(self.relay)
        self.relay.start()
        self.stop_evt = asyncio.Event()
        self.ready.set()
        await self.stop_evt.wait()
        await S.stop_relay(self.relay)

    def _on_message(self, client, userdata, msg):
        from ppmid import envelope
        env = envelope.from_json(msg.payload, 8192)
        if env.id in self.drop:
            return
        fut = asyncio.run_coroutine_threadsafe(self.relay.accept(env, "mqtt"), self.loop)
        try:
            fut.result(5)  # PUBACK only once the command is journaled
        except PpmidError as exc:
            # what the firmware's MQTT intake does with a refusal: publish it with its code
            from ppmid.mqtt.contract import status_json
            client.publish("ppmid/v1/%s/rsp" % EUI, status_json(env.id, "rejected", error=exc), 1)

    def close(self):
        self.loop.call_soon_threadsafe(self.stop_evt.set)
        self.thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    from host_tools.broker import Broker
    state = str(tmp_path / "broker")
    b = Broker(state, gateways=[EUI], users=["test"])
    b.start()
    try:
        yield state
    finally:
        b.stop()


def line(at, id, counter, target=S.ESME, code=0x0007, expect=None):
    import binascii
    obj = {"at_ms": at, "id": id, "gbcs": binascii.hexlify(S.gbcs_message(1, counter, S.SUPPLIER, target, code)).decode()}
    if expect:
        obj["expect"] = expect
    return json.dumps(obj)


def test_replay_report_against_a_gateway_running_the_relay_core(broker, tmp_path, capsys):
    from host_tools import cli
    key = os.urandom(32)
    kdir = os.path.join(broker, "keys")
    os.makedirs(kdir, exist_ok=True)
    with open(os.path.join(kdir, EUI + ".key"), "wb") as f:
        f.write(key)
    gw = GatewayDouble(broker, str(tmp_path), key, silent={13}, late={14}, drop={"dropped"})
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join([
        line(0, "ok-1", 10, expect={"status": "response"}),
        line(50, "ok-2", 11, target=S.GSME, code=0x0097, expect={"status": "response"}),
        line(100, "replayed", 10, expect={"status": "rejected", "error": "E_REPLAY"}),
        line(150, "not-allowed", 12, target=S.GSME, code=0x0007, expect={"status": "rejected", "error": "E_NOT_ALLOWED"}),
        line(200, "wrong-expect", 12, expect={"status": "rejected"}),        # it is relayed: a mismatch
        line(300, "silent", 13, target=S.GSME, code=0x0097, expect={"status": "timeout"}),
        line(350, "late", 14, target=S.GSME, code=0x0097, expect={"status": "response", "late": True}),
        line(400, "dropped", 15),
        line(450, "unknown", 16, target=S.ACB),
    ]) + "\n")
    report = tmp_path / "report.json"
    try:
        rc = cli.main(["replay", str(trace), "--gateway", EUI.lower(), "--report", str(report),
                       "--state-dir", broker, "--settle-s", "10", "--speed", "1", "--client-id", "dcc-run-1"])
    finally:
        gw.close()
    assert rc == 1  # "dropped" got no final status: the report is written, the exit status says so
    with open(os.path.join(broker, "mosquitto.log")) as f:
        log = f.read()
    # persistent session (clean session 0); the broker `ppmid broker` starts makes the
    # certificate's identity the client id, whatever --client-id says (docs/security.md)
    assert " as dcc-user-test (p2, c0," in log and " as dcc-run-1 " not in log
    rep = json.loads(report.read_text())
    cap = capsys.readouterr()
    out = cap.out
    assert "latency ms p50/p95/max" in out and "mismatch wrong-expect" in out
    assert "1 command(s) lost" in cap.err
    assert rep["commands"] == 9
    assert rep["responses"] == 4 and rep["late"] == 1  # ok-1, ok-2, wrong-expect, late
    assert rep["rejected"] == {"E_REPLAY": 1, "E_NOT_ALLOWED": 1, "E_UNKNOWN_TARGET": 1}
    assert rep["lost"] == ["dropped"] and rep["lost_count"] == 1
    assert rep["timeouts"] == 1 and rep["per_id"]["silent"]["final"] == {"status": "timeout", "error": "E_TIMEOUT"}
    assert [m["id"] for m in rep["mismatches"]] == ["wrong-expect"]
    lat = rep["latency_ms"]
    assert lat["n"] == 4 and 0 <= lat["p50"] <= lat["p95"] <= lat["max"]
    assert rep["per_id"]["ok-1"]["statuses"][0] == "accepted"
    assert rep["per_id"]["ok-1"]["statuses"][-1] == "response"


def test_replay_cli_errors(tmp_path, broker, capsys):
    from host_tools import cli
    t = tmp_path / "t.jsonl"
    t.write_text(line(0, "a", 1) + "\n")
    assert cli.main(["replay", str(t), "--gateway", "XYZ", "--report", str(tmp_path / "r.json"),
                     "--state-dir", broker]) == 1
    assert "16 hex digits" in capsys.readouterr().err
    # no envelope key in the state dir
    assert cli.main(["replay", str(t), "--gateway", EUI, "--report", str(tmp_path / "r.json"),
                     "--state-dir", broker]) == 1
    assert "envelope key" in capsys.readouterr().err
    # nowhere to connect
    assert cli.main(["replay", str(t), "--gateway", EUI, "--report", str(tmp_path / "r.json")]) == 1
    assert "--broker" in capsys.readouterr().err
    # a broken trace
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"at_ms": 0}\n')
    assert cli.main(["replay", str(bad), "--gateway", EUI, "--report", str(tmp_path / "r.json"),
                     "--state-dir", broker]) == 1
    assert "line 1" in capsys.readouterr().err
    # wrong certificate: a user identity that does not exist
    kf = tmp_path / "k"
    kf.write_bytes(b"x" * 32)
    assert cli.main(["replay", str(t), "--gateway", EUI, "--report", str(tmp_path / "r.json"),
                     "--state-dir", broker, "--user", "nobody", "--envelope-key", str(kf)]) == 1
    assert "nobody" in capsys.readouterr().err
    # refused before anything is sent: what would only fail after the run, or never end
    for bad_args, what in ((["--speed", "0"], "--speed"), (["--speed", "nan"], "--speed"),
                           (["--settle-s", "-5"], "--settle-s"), (["--report", str(tmp_path)], "directory")):
        argv = ["replay", str(t), "--gateway", EUI, "--report", str(tmp_path / "r.json"), "--state-dir", broker,
                "--envelope-key", str(kf)] + bad_args
        assert cli.main(argv) == 1, bad_args
        assert what in capsys.readouterr().err, bad_args
    kf.write_bytes(b"x" * 4)
    assert cli.main(["replay", str(t), "--gateway", EUI, "--report", str(tmp_path / "r.json"),
                     "--state-dir", broker, "--envelope-key", str(kf)]) == 1
    assert "32 bytes" in capsys.readouterr().err


# ---- the DCC User's side across broker outages -------------------------------------------
@pytest.fixture
def broker_obj(tmp_path):
    from host_tools.broker import Broker
    state = str(tmp_path / "broker")
    b = Broker(state, gateways=[EUI], users=["test"])
    b.start()
    try:
        yield b, state
    finally:
        b.stop()


def _replayer(state, key, **kw):
    from host_tools.replay import Replayer, identity_from_state_dir
    host, port, ca, cert, keyfile = identity_from_state_dir(state)
    return Replayer(host, port, EUI, key, ca, cert, keyfile, out=lambda m: None, **kw)


def _wait(cond, s=15):
    import time
    end = time.monotonic() + s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _gateway_publisher(state):
    import paho.mqtt.client as mqtt
    from host_tools.broker import client_paths
    paths = client_paths(state, EUI)
    with open(os.path.join(state, "broker.json")) as f:
        info = json.load(f)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=EUI + "-pub")
    c.tls_set(ca_certs=paths["ca_pem"], certfile=paths["pem"], keyfile=paths["key_pem"])
    c.connect(info["host"], info["port"])
    c.loop_start()
    return c


def test_command_published_while_the_broker_is_down_is_sent_on_reconnect(broker_obj, tmp_path):
    b, state = broker_obj
    key = os.urandom(32)
    gw = GatewayDouble(state, str(tmp_path / "gw"), key, persistent=True)
    r = _replayer(state, key, settle_s=20)
    r.connect()
    restart = threading.Timer(1.5, b.start)
    try:
        b.stop()
        assert _wait(lambda: not r.client.is_connected()), "paho did not notice the broker going"
        restart.start()
        # published while the broker is down: no exception, queued, sent on reconnect
        rep = r.run([{"at_ms": 0, "id": "down-1", "gbcs": S.gbcs_message(1, 10, S.SUPPLIER, S.ESME)}])
    finally:
        restart.join()
        r.close()
        gw.close()
    assert rep["commands"] == 1 and rep["lost_count"] == 0, rep
    assert rep["responses"] == 1, rep["per_id"]
    assert rep["per_id"]["down-1"]["statuses"][0] == "accepted"


def test_statuses_published_while_the_replayer_is_away_are_kept_across_a_broker_restart(broker_obj):
    b, state = broker_obj
    r = _replayer(state, b"k" * 32)
    assert r.client_id == "dcc-user-test/replay-" + EUI   # stable: the session is found again
    r.connect()
    gw = _gateway_publisher(state)
    try:
        r.client.disconnect()
        r.client.loop_stop()
        b.stop()
        b.start()                      # the session and its subscriptions are on the broker's disk
        assert _wait(gw.is_connected), "gateway publisher did not reconnect"
        gw.publish("ppmid/v1/%s/rsp" % EUI, json.dumps({"id": "away-1", "status": "response"}), qos=1).wait_for_publish(10)
        r.client.reconnect()
        r.client.loop_start()
        assert _wait(lambda: "away-1" in r.received), "status published while away was lost"
        r.close()
        # close() dropped the session: nothing is queued for that client id any more
        gw.publish("ppmid/v1/%s/rsp" % EUI, json.dumps({"id": "after-1", "status": "response"}), qos=1).wait_for_publish(10)
        r2 = _replayer(state, b"k" * 32)
        seen = {}

        import paho.mqtt.client as mqtt
        c = r2._client()
        c.on_connect = lambda client, u, flags, rc, p=None: seen.setdefault("present", flags.session_present)
        c.on_message = r2._on_message
        with open(os.path.join(state, "broker.json")) as f:
            info = json.load(f)
        c.connect(info["host"], info["port"])
        c.loop_start()
        assert _wait(lambda: "present" in seen)
        import time
        time.sleep(0.5)
        c.disconnect()
        c.loop_stop()
        assert seen["present"] is False and r2.received == {}
        r2.drop_session()
        del mqtt
    finally:
        gw.disconnect()
        gw.loop_stop()
