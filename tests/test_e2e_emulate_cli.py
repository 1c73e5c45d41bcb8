"""`ppmid emulate --trace FILE --report OUT.json` as a user runs it: the whole product comes
up, the trace is replayed through MQTT with a board kill, the report holds the figures the
issue lists and a table is printed; bad options are refused before anything starts. The
update runs start from a state dir whose flash holds the firmware already (conftest
deployed_state_dir: their deploy copies nothing), their point being the update; the trace
replay with a board kill starts from an empty one, as a user's first run does."""
import json
import os
import subprocess
import sys

from host_tools import emulate as E
from host_tools import trace as tr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ppmid(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_emulate_replays_a_trace_with_a_board_kill_and_writes_the_report(tmp_path):
    cmds = E.renumbered_commands(12)
    lines = E.lines_from(cmds, interval_ms=400, prefix="cli")
    # the same GBCS again under a new id: refused by anti-replay, never relayed
    lines.append({"at_ms": 5000, "id": "cli-again", "gbcs": cmds[0][1], "via": "mqtt",
                  "expect": {"status": "rejected", "error": "E_REPLAY"}})
    trace = tmp_path / "t.jsonl"
    tr.save(lines, str(trace))
    report = tmp_path / "out" / "rep.json"
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--trace", str(trace), "--report", str(report),
              "--set", "limits.rate_per_s=20", "--set", "limits.response_timeout_s=8", "--kill-board", "1",
              "--seed", "3", "--settle-s", "25")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    for key in ("commands", "delivered_to_ch", "duplicates_to_ch", "responses", "lost", "rejected",
                "latency_ms", "board_restarts", "peak_heap", "sent_twice", "executed_twice", "already_executed"):
        assert key in rep, key
    assert rep["commands"] == 13 and rep["lost_count"] == 0
    assert rep["rejected"] == {"E_REPLAY": 1}
    assert rep["executed_twice"] == 0                  # the meters' anti-replay
    assert rep["board_restarts"] >= 1 and rep["chaos"]["done"][0][1] == "kill"
    assert rep["config"]["limits"]["rate_per_s"] == 20
    # every command the gateway took was executed once and answered (a copy sent after the
    # kill may have been refused as a replay: already-executed), or timed out
    finals = [rep["per_id"][x["id"]]["final"]["status"] for x in lines[:-1]]
    assert set(finals) <= {"response", "already-executed", "timeout"}, finals
    assert rep["answered"] >= 10, finals
    assert rep["delivered_to_ch"] >= rep["answered"]
    assert rep["duplicates_to_ch"] == rep["replays_refused"]   # every extra copy was refused
    lat = rep["latency_ms"]
    assert lat["n"] == finals.count("response") and lat["p50"] <= lat["p95"] <= lat["max"]
    assert 0 < rep["peak_heap"] < rep["heap"]["heap_bytes"]
    assert "delivered to CH" in r.stdout and "report: %s" % report in r.stdout


def test_emulate_refuses_bad_options_before_starting(tmp_path):
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--set", "limits.rate_per_s", "--no-follow", timeout=60)
    assert r.returncode == 1 and "KEY=VALUE" in r.stderr
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--set", "limits.rate_per_sec=5", "--no-follow", timeout=60)
    assert r.returncode == 1 and "unknown limits key" in r.stderr
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--uart-error-rate", "2", timeout=60)
    assert r.returncode == 1 and "uart-error-rate" in r.stderr
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--gpf-delay-ms", "-5", timeout=60)
    assert r.returncode == 1 and "gpf-delay-ms" in r.stderr
    assert not os.path.exists(tmp_path / "run" / "board.json")


def _update_run(tmp_path, kind, deployed_state_dir):
    lines = E.lines_from(E.renumbered_commands(10), interval_ms=600, prefix="u")
    trace = tmp_path / ("%s.jsonl" % kind)
    tr.save(lines, str(trace))
    report = tmp_path / ("%s.json" % kind)
    run = deployed_state_dir(tmp_path / kind)   # its flash holds the firmware already
    r = ppmid("emulate", "--commissioned", "--state-dir", str(run), "--trace", str(trace), "--report", str(report),
              "--set", "limits.rate_per_s=20", "--set", "limits.response_timeout_s=8", "--settle-s", "20",
              "--update", kind, timeout=600)
    return r, json.loads(report.read_text()) if report.exists() else None


def test_emulate_update_good_is_applied_during_the_replay(tmp_path, deployed_state_dir):
    r, rep = _update_run(tmp_path, "good", deployed_state_dir)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    u = rep["update"]
    assert u["result"] == "applied" and u["error"] is None
    assert u["version_before"] == "0.1.0" and u["version_after"] == u["version_offered"] == "0.1.1"
    assert rep["lost_count"] == 0 and rep["duplicates_to_ch"] == 0 and rep["board_restarts"] >= 1
    assert "update: good -> applied" in r.stdout


def test_emulate_update_bad_signature_and_crash_at_boot(tmp_path, deployed_state_dir):
    r, rep = _update_run(tmp_path, "bad-signature", deployed_state_dir)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    u = rep["update"]
    assert u["result"] == "refused" and u["error"]["code"] == "E_UPDATE_SIGNATURE" and u["version_after"] == "0.1.0"
    assert rep["lost_count"] == 0 and rep["board_restarts"] == 0
    r, rep = _update_run(tmp_path, "crash-at-boot", deployed_state_dir)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    u = rep["update"]
    assert u["result"] == "rolled-back" and u["error"]["code"] == "E_UPDATE_BOOT"
    assert u["version_before"] == u["version_after"] == "0.1.0"
    assert rep["lost_count"] == 0 and rep["duplicates_to_ch"] == 0


def test_emulate_refuses_an_unknown_update_kind(tmp_path):
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--update", "sideways", timeout=60)
    assert r.returncode == 2 and "sideways" in r.stderr
    assert not os.path.exists(tmp_path / "run")
