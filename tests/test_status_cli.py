"""`ppmid status`: two gateways (the firmware's MQTT link under MicroPython, each with its
last will) on a real mosquitto; one is SIGKILLed and reads offline (the broker published
its will), the other stays online with its firmware and HAN from the retained info; the
watch mode sees the change and the last command status."""
import json
import signal
import subprocess
import sys
import time

import pytest

from test_mqtt_gateway import GW_A, GW_B, ROOT, Gateway, Watcher, broker, wait_for  # noqa: F401 (fixture)
from ctrl_c import default_sigint


def ppmid(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_gateways(broker, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("fleet")
    gws = [Gateway(broker, tmp, eui=eui).start() for eui in (GW_A, GW_B)]
    watchers = [Watcher(broker, g.eui, ident) for g, ident in zip(gws, ("dcc-user-watch", "dcc-user-watch-b"))]
    try:
        for g, w in zip(gws, watchers):
            wait_for(lambda: w.state() == "online" and "info" in w.msgs, "%s online" % g.eui, gw=g)
        yield gws
    finally:
        for w in watchers:
            w.close()
        for g in gws:
            g.kill()


def by_gateway(stdout):
    return {json.loads(line)["gateway"]: json.loads(line) for line in stdout.splitlines()}


def test_status_shows_one_online_and_one_killed_gateway_offline(broker, two_gateways):  # noqa: F811
    a, b = two_gateways
    r = ppmid("status", "--state-dir", broker.state_dir, "--json")
    assert r.returncode == 0, r.stderr
    now = by_gateway(r.stdout)
    assert now[GW_A]["online"] and now[GW_B]["online"]
    b.kill()
    w = Watcher(broker, GW_B)
    try:
        wait_for(lambda: w.state() == "offline", "the broker to publish B's will")
    finally:
        w.close()
    r = ppmid("status", "--state-dir", broker.state_dir, "--json")
    assert r.returncode == 0, r.stderr
    now = by_gateway(r.stdout)
    assert now[GW_A]["online"] and now[GW_A]["state"] == "online"
    assert not now[GW_B]["online"] and now[GW_B]["state"] == "offline"
    # the retained info is what each said when last connected
    assert now[GW_A]["fw"] == now[GW_B]["fw"] == "test" and now[GW_A]["han"] == "none"
    r = ppmid("status", "--state-dir", broker.state_dir)
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert lines[GW_A].split()[1] == "online" and lines[GW_B].split()[1] == "offline"
    assert "fw test" in lines[GW_A] and "han none" in lines[GW_B]


def test_watch_sees_a_command_status(broker, two_gateways):  # noqa: F811
    a, _ = two_gateways
    # nothing here stops A (the first test asserts it stayed online): its process having
    # exited is the firmware crashing, a failure; its console says why
    assert a.proc.poll() is None, "gateway A's firmware exited (%s):\n%s" % (a.proc.returncode, a.output())
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "status", "--state-dir", broker.state_dir,
                          "--watch", "--seconds", "15"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    first = p.stdout.readline()  # the watch is subscribed once it has shown the fleet (rsp is not retained)
    s = ppmid("send", "--state-dir", broker.state_dir, "--gateway", GW_A, "--gbcs", "dd00", "--id", "watch-1",
              "--until", "accepted", "--timeout", "20")
    time.sleep(1)  # the watch got the status when `send` did; give it a moment to print it
    p.send_signal(signal.SIGINT)  # Ctrl-C ends a watch with status 0
    out, err = p.communicate(timeout=60)
    out = first + out
    assert s.returncode == 0, s.stdout + s.stderr
    assert p.returncode == 0, err
    a_lines = [line for line in out.splitlines() if line.split()[1] == GW_A]
    assert a_lines and "last -" in a_lines[0]
    assert any("last watch-1 accepted" in line for line in a_lines[1:]), out


def test_status_errors_are_one_line(tmp_path):
    r = ppmid("status", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "no broker.json" in r.stderr
    r = ppmid("status")
    assert r.returncode == 1 and "--broker URL or --state-dir" in r.stderr
    r = ppmid("status", "--state-dir", str(tmp_path), "--seconds", "5")
    assert r.returncode == 1 and "--watch" in r.stderr


def test_capture_from_the_broker_sees_commands_statuses_and_retained_state(broker, two_gateways, tmp_path):  # noqa: F811
    from test_captures import TSHARK, tshark_rows
    if not TSHARK:
        pytest.skip("tshark not installed")
    a, _ = two_gateways
    # nothing here stops A (the first test asserts it stayed online): its process having
    # exited is the firmware crashing, a failure; its console says why
    assert a.proc.poll() is None, "gateway A's firmware exited (%s):\n%s" % (a.proc.returncode, a.output())
    out = tmp_path / "gw.pcapng"
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "capture", "--state-dir", broker.state_dir,
                          "--gateway", GW_A, "--out", str(out), "--seconds", "15"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    assert p.stdout.readline().startswith("capture: %s -> " % GW_A)  # subscribed
    s = ppmid("send", "--state-dir", broker.state_dir, "--gateway", GW_A, "--gbcs", "dd00", "--id", "cap-1",
              "--until", "accepted", "--timeout", "20")
    time.sleep(1)
    p.send_signal(signal.SIGINT)  # Ctrl-C closes the capture and says how many packets
    stdout, err = p.communicate(timeout=60)
    assert s.returncode == 0 and p.returncode == 0, err
    rows = tshark_rows(out)
    comments = [r["frame.comment"] for r in rows]
    topic = "MQTT ppmid/v1/%s/" % GW_A
    # the monitor identity reads the command topic, which a DCC User cannot
    assert any(c.startswith(topic + 'cmd: broker -> gateway {"id": "cap-1"') for c in comments), comments
    assert topic + "state: gateway -> broker" in comments and topic + "info: gateway -> broker" in comments
    acc = [r for r in rows if r["frame.comment"] == topic + "rsp: gateway -> broker"]
    assert any("status:accepted" in r["json.member_with_value"] and "id:cap-1" in r["json.member_with_value"]
               for r in acc)
    assert "%d packets" % len(rows) in stdout


def test_a_locked_down_gateway_reads_so():
    # its retained info's "auth": "locked" (no DCC User key in use, the legacy key off:
    # every command refused, docs/mqtt.md); a gateway without the field reads as before
    from host_tools.fleet import Fleet
    fleet = Fleet()
    for eui, info in ((GW_A, {"fw": "0.1.0", "han": "running", "state": "running", "auth": "locked"}),
                      (GW_B, {"fw": "0.1.0", "han": "running", "state": "running"})):
        fleet.on_message("ppmid/v1/%s/state" % eui, b'{"state": "online"}', 100.0)
        fleet.on_message("ppmid/v1/%s/info" % eui, json.dumps(info).encode(), 100.0)
    assert fleet.summary(GW_A, 100.0)["auth"] == "locked" and fleet.summary(GW_B, 100.0)["auth"] is None
    assert "  relay running (locked: every command refused)  queue -" in fleet.line(GW_A, 100.0)
    assert "  relay running  queue -" in fleet.line(GW_B, 100.0)
