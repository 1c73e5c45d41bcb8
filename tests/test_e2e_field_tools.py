"""`ppmid emulate --pcap FILE --html FILE` on a short trace: the whole product runs,
tshark reads the capture with its GBCS dissector, and what it shows for every GBCS packet
is what `ppmid gbcs decode` says of the same bytes; the capture holds both roads (the HAN
as the CH saw it, MQTT as the broker carried it) with the gateway's directions; the HTML
report holds the JSON report's numbers. An NFC trace replays through the PN532 emulator."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import emulate as E
from host_tools import trace as tr
from test_captures import TSHARK, assert_like_ppmid_decode, tshark_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ppmid(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def emulate_run(tmp_path_factory, deployed_state_dir):
    tmp = tmp_path_factory.mktemp("field")
    cmds = E.renumbered_commands(4)
    lines = E.lines_from(cmds, interval_ms=500, prefix="f")
    lines.append({"at_ms": 2500, "id": "f-again", "gbcs": cmds[0][1], "via": "mqtt",
                  "expect": {"status": "rejected", "error": "E_REPLAY"}})
    trace = tmp / "t.jsonl"
    tr.save(lines, str(trace))
    out = {"dir": tmp, "lines": lines, "pcap": tmp / "run.pcapng", "report": tmp / "rep.json",
           "html": tmp / "rep.html"}
    run = deployed_state_dir(tmp / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--commissioned", "--state-dir", str(run), "--trace", str(trace), "--report", str(out["report"]),
              "--set", "limits.response_timeout_s=8", "--settle-s", "15", "--pcap", str(out["pcap"]), "--html", str(out["html"]))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out["stdout"] = r.stdout
    out["rep"] = json.loads(out["report"].read_text())
    return out


@pytest.mark.skipif(not TSHARK, reason="tshark not installed")
def test_tshark_decodes_the_emulate_capture_like_ppmid_gbcs_decode(emulate_run):
    rows = tshark_rows(emulate_run["pcap"])
    rep = emulate_run["rep"]
    han_out = [r for r in rows if r["frame.comment"] == "HAN: PPMID -> CH"]
    han_in = [r for r in rows if r["frame.comment"] == "HAN: CH -> PPMID"]
    cmds = [r for r in rows if "/cmd: broker -> gateway" in r["frame.comment"]]
    statuses = [r for r in rows if "/rsp: gateway -> broker" in r["frame.comment"]]
    # every command was published (5 envelopes), relayed once (4 reach the CH) and answered
    assert len(cmds) == 5 and len(han_out) == rep["delivered_to_ch"] == 4
    assert len(han_in) >= rep["responses"] >= 4
    assert {r["frame.p2p_dir"] for r in han_out + statuses} == {"0"} and {r["frame.p2p_dir"] for r in cmds} == {"1"}
    # the statuses as JSON (accepted, relayed...) and the responses as GBCS, with their ids
    assert any("status:accepted" in r["json.member_with_value"] for r in statuses)
    assert sum('"status": "response"' in r["frame.comment"] for r in statuses) == rep["responses"]
    assert any('"code": "E_REPLAY"' in r["frame.comment"] or "E_REPLAY" in r["json.member_with_value"]
               for r in statuses)
    # field by field: cra flag, originator counter, message code, for every GBCS packet
    assert assert_like_ppmid_decode(rows) >= 5 + 4 + 4
    # the HAN copy of a command is the MQTT one: same bytes
    assert {r["exported_pdu.exported_pdu"] for r in han_out} <= {r["exported_pdu.exported_pdu"] for r in cmds}
    assert not any(r["_ws.malformed"] for r in han_out + cmds)


def test_the_html_report_of_the_run_holds_the_json_reports_numbers(emulate_run):
    import matplotlib  # noqa: F401  (a dependency of ppmid: --html draws with it)
    from test_report_html import check_html_holds
    rep = emulate_run["rep"]
    assert "html report: %s" % emulate_run["html"] in emulate_run["stdout"]
    figures = check_html_holds(emulate_run["html"].read_text(encoding="utf-8"), rep)
    assert figures["delivered to CH"] == str(rep["delivered_to_ch"]) == "4"
    assert figures["rejected E_REPLAY"] == "1"


def test_capture_options_are_checked_before_anything_starts(tmp_path):
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--pcap", str(tmp_path / "no" / "x.pcapng"), timeout=60)
    assert r.returncode == 1 and "--pcap" in r.stderr
    assert not os.path.exists(tmp_path / "run" / "board.json")
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--html", str(tmp_path), timeout=60)
    assert r.returncode == 1 and "--html" in r.stderr
    r = ppmid("capture", "--state-dir", str(tmp_path), "--gateway", "00DB1234567890A4", "--out",
              str(tmp_path / "c.pcapng"), timeout=60)
    assert r.returncode == 1 and "no broker state" in r.stderr
    r = ppmid("capture", "--state-dir", str(tmp_path), "--gateway", "nothex", "--out", str(tmp_path / "c.pcapng"),
              timeout=60)
    assert r.returncode == 1 and "16 hex digits" in r.stderr


def test_an_nfc_trace_replays_end_to_end_through_the_pn532_emulator(tmp_path, deployed_state_dir):
    """Phone and tag lines are placed on the emulated reader at their time; the phone's
    command gets its response in the tap, the tag's over MQTT; a forged phone command is
    refused on the phone; the report counts every road like MQTT lines."""
    from ppmid import envelope
    cmds = E.renumbered_commands(4)
    # counters count up in time order (anti-replay): the MQTT command is taken long before the
    # phone's is read, and the one reader serves the phone, then the tag
    lines = [
        {"at_ms": 0, "id": "n-mqtt", "gbcs": cmds[0][1], "via": "mqtt", "expect": {"status": "response"}},
        {"at_ms": 1500, "id": "n-phone", "gbcs": cmds[1][1], "via": "nfc-phone", "expect": {"status": "response"}},
        {"at_ms": 2000, "id": "n-tag", "gbcs": cmds[2][1], "via": "nfc-tag", "expect": {"status": "response"}},
        # the same GBCS again by phone: refused by anti-replay, told to the phone
        {"at_ms": 2500, "id": "n-phone-again", "gbcs": cmds[1][1], "via": "nfc-phone",
         "expect": {"status": "rejected", "error": "E_REPLAY"}},
    ]
    trace = tmp_path / "nfc.jsonl"
    tr.save(lines, str(trace))
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--commissioned", "--state-dir", str(run), "--trace", str(trace), "--report", str(report),
              "--nfc", "--set", "limits.response_timeout_s=10", "--settle-s", "30")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["skipped"] == [] and rep["commands"] == 4 and rep["lost_count"] == 0
    assert rep["mismatches"] == [], rep["mismatches"]
    assert rep["roads"]["nfc-phone"] == {"commands": 2, "final": {"response": 1, "rejected": 1}}
    assert rep["roads"]["nfc-tag"] == {"commands": 1, "final": {"response": 1}}
    assert rep["roads"]["mqtt"] == {"commands": 1, "final": {"response": 1}}
    assert rep["responses"] == 3 and rep["rejected"] == {"E_REPLAY": 1} and rep["delivered_to_ch"] == 3
    assert [t["id"] for t in rep["nfc"]["taps"]] == ["n-phone", "n-tag", "n-phone-again"]
    assert rep["nfc"]["errors"] == []
    assert "via nfc-phone" in r.stdout


def test_nfc_lines_without_nfc_are_skipped_and_said(tmp_path):
    cmds = E.renumbered_commands(1)
    trace = tmp_path / "t.jsonl"
    tr.save([{"at_ms": 0, "id": "t1", "gbcs": cmds[0][1], "via": "nfc-tag"}], str(trace))
    r = ppmid("emulate", "--commissioned", "--state-dir", str(tmp_path / "run"), "--trace", str(trace), "--speed", "0",
              timeout=60)
    # refused on a bad option, but the warning about the NFC line came first (before anything started)
    assert r.returncode == 1 and "add --nfc" in r.stderr


def test_replay_carries_nfc_lines_through_a_pn532_endpoint(tmp_path):
    """`ppmid replay --pn532 ENDPOINT` against a running gateway: the PN532 emulator that the
    board found at boot is taken away, and replay's own takes its place on the NFC UART."""
    cmds = E.renumbered_commands(2)
    # counters count up in time order (anti-replay): the MQTT command is taken long before
    # the phone's is read
    lines = [{"at_ms": 0, "id": "r-mqtt", "gbcs": cmds[0][1], "via": "mqtt", "expect": {"status": "response"}},
             {"at_ms": 1500, "id": "r-phone", "gbcs": cmds[1][1], "via": "nfc-phone", "expect": {"status": "response"}}]
    trace = tmp_path / "t.jsonl"
    tr.save(lines, str(trace))
    report = tmp_path / "rep.json"
    with E.Emulation(tmp_path / "run", overrides={"limits": {"response_timeout_s": 10}}, nfc=True, log=None) as emu:
        emu.pn532.stop()
        emu.pn532 = None
        r = ppmid("replay", str(trace), "--gateway", emu.gateway, "--state-dir", emu.broker_dir, "--report",
                  str(report), "--settle-s", "20", "--pn532", emu.state_dir, "--pcap", str(tmp_path / "r.pcapng"))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        if TSHARK:  # replay's capture sees the MQTT road (the phone's command never crosses the broker)
            comments = [row["frame.comment"] for row in tshark_rows(tmp_path / "r.pcapng")]
            assert sum('cmd: broker -> gateway {"id": "r-mqtt"}' in c for c in comments) == 1, comments
            assert not any('{"id": "r-phone"}' in c for c in comments)
        rep = json.loads(report.read_text())
        assert rep["mismatches"] == [] and rep["skipped"] == []
        assert rep["roads"]["nfc-phone"] == {"commands": 1, "final": {"response": 1}}
        assert rep["nfc"]["taps"][0]["outcome"] == "response"
        assert emu.ncp.received.count(bytes(cmds[1][1])) == 1
    # the broker is gone with the emulation, but the endpoint is checked before connecting
    r = ppmid("replay", str(trace), "--gateway", emu.gateway, "--state-dir", emu.broker_dir, "--report",
              str(report), "--pn532", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "is not a pty or serial device" in r.stderr and "Traceback" not in r.stderr
