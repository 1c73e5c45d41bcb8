"""`ppmid emulate --commission` as a user runs it: the emulated module starts with no
network, the gateway joins with its provisioned install code and completes key
establishment with the emulated CH, and the report's "commissioning" says so; with
`--ch-install-code` of another code the CH refuses the join and the report carries the
code. Bad install codes are refused before anything starts."""
import json

from host_tools import emulate as E
from host_tools import trace as tr
from tests.test_e2e_emulate_cli import ppmid

OTHER = "0102030405060708D46D"   # a valid code (CRC checked below), not the gateway's


def _trace(tmp_path, n=2):
    cmds = E.renumbered_commands(n)
    trace = tmp_path / "t.jsonl"
    tr.save(E.lines_from(cmds, interval_ms=300, prefix="com"), str(trace))
    return trace


def test_other_code_is_valid():
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid.zigbee import installcode
    assert installcode.parse(OTHER)


def test_emulate_commission_joins_and_relays(tmp_path):
    report = tmp_path / "rep.json"
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--trace", str(_trace(tmp_path)), "--report",
              str(report), "--commission", "--settle-s", "10", "--set", "limits.response_timeout_s=15")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    c = rep["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "error" not in c, c
    assert "cbke: key confirmed, link key stored" in c["steps"]
    assert c["trust_centre"]["counters"]["joins_admitted"] == 1 and c["trust_centre"]["counters"]["ke_ok"] == 1
    assert rep["answered"] == 2


def test_emulate_with_another_code_in_the_ch_device_log_is_refused(tmp_path):
    report = tmp_path / "rep.json"
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--trace", str(_trace(tmp_path, 1)), "--report",
              str(report), "--ch-install-code", OTHER, "--settle-s", "3", "--set", "limits.response_timeout_s=5")
    rep = json.loads(report.read_text())
    c = rep["commissioning"]
    assert c["state"] == "failed" and c["error"] == "E_COMMISSION_JOIN_REFUSED", c
    assert c["trust_centre"]["counters"]["joins_admitted"] == 0
    assert ["join_refused", "link key mismatch"] in c["trust_centre"]["events"]
    assert rep["answered"] == 0 and r.returncode in (0, 1)


def test_emulate_refuses_bad_install_codes(tmp_path):
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--ch-install-code", OTHER[:-4] + "0000", timeout=60)
    assert r.returncode != 0 and "E_INSTALL_CODE_CRC" in r.stderr and "--ch-install-code" in r.stderr
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--commission", "--install-code", "12", timeout=60)
    assert r.returncode != 0 and "E_INSTALL_CODE" in r.stderr
