"""`ppmid emulate` as a user runs it (what `make run` runs): by default the emulated module
starts with no network, the gateway joins with its provisioned install code and completes
key establishment with the emulated CH, whose device log (STATE_DIR/emulate-device-log.jsonl) holds
the gateway's EUI-64 with that code; the steps are printed before the replay and the
report's "commissioning" says so; with `--ch-install-code` of another code the CH refuses
the join and the report carries the code. Bad install codes are refused before anything
starts. The default start runs on an empty state dir, its deploy copying the firmware as
`make run`'s first run does; the other runs start from a state dir whose flash holds it
already (conftest deployed_state_dir: their deploy copies nothing), their point being the
commissioning."""
import json

from host_tools import emulate as E
from host_tools import trace as tr
from tests.test_e2e_emulate_cli import ppmid

E_SPEC = "83FED3407A939723A5C639B26916D505C3B5"   # emulate's default code (the Zigbee spec's)
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


def test_emulate_commissions_by_default_then_relays(tmp_path):
    report = tmp_path / "rep.json"
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--trace", str(_trace(tmp_path)), "--report",
              str(report), "--settle-s", "10", "--set", "limits.response_timeout_s=15")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    c = rep["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "error" not in c, c
    assert "cbke: key confirmed, link key stored" in c["steps"] and c["steps"][-1] == "tunnel open", c
    assert c["trust_centre"]["counters"]["joins_admitted"] == 1 and c["trust_centre"]["counters"]["ke_ok"] == 1
    assert ["join_admitted", "00db1234567890a4"] in c["trust_centre"]["events"]   # the gateway's EUI-64
    assert json.loads(open(c["device_log"]).readline()) == {
        "eui64": "00DB1234567890A4", "install_code": "83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5"}
    assert rep["answered"] == 2
    # the steps are printed, in order, before the replay starts; the table says how it went
    out = r.stdout
    order = [out.index("commissioning: joined PAN"), out.index("commissioning: cbke: key confirmed"),
             out.index("commissioning: tunnel open"), out.index("emulate: replaying")]
    assert order == sorted(order), out[-3000:]
    assert "commissioning             commissioned (cbke ok" in out


def test_emulate_commissioned_starts_from_a_module_with_the_network(tmp_path, deployed_state_dir):
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--state-dir", str(run), "--trace", str(_trace(tmp_path, 1)), "--report",
              str(report), "--commissioned", "--settle-s", "5", "--set", "limits.response_timeout_s=10")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["commissioning"] == {"state": "preset", "cbke": None, "steps": []} and rep["answered"] == 1
    assert "commissioning: the emulated module holds the network already" in r.stdout
    assert not (tmp_path / "run" / E.EMULATE_DEVICE_LOG).exists()


def test_emulate_with_another_code_in_the_ch_device_log_is_refused(tmp_path, deployed_state_dir):
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--state-dir", str(run), "--trace", str(_trace(tmp_path, 1)), "--report",
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
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--install-code", "12", timeout=60)
    assert r.returncode != 0 and "E_INSTALL_CODE" in r.stderr and "--install-code" in r.stderr


def test_a_power_cut_after_commissioning_resumes_without_joining_again(tmp_path, deployed_state_dir):
    # the default start plus --kill-board: the module keeps the network in its tokens and
    # the gateway its mark of a completed key establishment on flash, so the reboot resumes
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--state-dir", str(run), "--trace", str(_trace(tmp_path, 12)), "--report",
              str(report), "--kill-board", "1", "--seed", "3", "--settle-s", "25",
              "--set", "limits.response_timeout_s=8")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    c = rep["commissioning"]
    assert rep["board_restarts"] >= 1 and rep["lost_count"] == 0, rep
    assert c["state"] == "commissioned" and c["steps"].count("commissioned") == 1, c
    assert c["trust_centre"]["counters"]["joins_admitted"] == 1 and c["trust_centre"]["counters"]["ke_ok"] == 1


def test_emulate_han_outage_with_a_key_switch_reports_the_rejoins(tmp_path, deployed_state_dir):
    # the HAN goes away once and the CH switches its network key meanwhile: the gateway's
    # secured rejoin fails, its trust-centre rejoin brings the new key; the report's steps
    # carry the rejoins and its state the last outcome
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--state-dir", str(run), "--trace", str(_trace(tmp_path, 3)), "--report",
              str(report), "--han-outages", "1", "--han-key-switch", "--seed", "3", "--settle-s", "20",
              "--set", "zigbee.rejoin_after_s=1", "--set", "limits.response_timeout_s=30")
    rep = json.loads(report.read_text())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [w for _, w in rep["chaos"]["done"]] == ["han"] and not rep["chaos"]["errors"], rep["chaos"]
    c = rep["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "error" not in c, c
    steps = c["steps"]
    last = max(i for i, s in enumerate(steps) if s.startswith("secured rejoin asked"))
    assert steps[last + 1].startswith("rejoin failed E_REJOIN_FAILED: the secured rejoin"), steps
    assert steps[last + 2].startswith("trust-centre rejoin asked"), steps
    assert steps[last + 3:last + 5] == ["rejoined (trust-centre rejoin)", "tunnel open"], steps
    assert c["rejoins"] >= 2 and c["recommissions"] == 0, c
    tc = c["trust_centre"]["counters"]
    assert tc["network_key_switches"] == 1 and tc["secured_rejoins_stale_key"] == 1, tc
    assert tc["rejoins_admitted"] == 1 and tc["joins_admitted"] == 1 and tc["ke_ok"] == 1, tc
    assert rep["answered"] == 3 and rep["lost_count"] == 0


def test_emulate_han_key_switch_needs_outages():
    r = ppmid("emulate", "--han-key-switch", "--no-follow")
    assert r.returncode == 1 and "--han-key-switch needs --han-outages" in r.stderr, r.stderr


def test_emulate_with_a_device_log_provision_wrote_commissions(tmp_path, deployed_state_dir):
    """`ppmid provision --install-code new --device-log LOG` then `ppmid emulate --device-log
    LOG`: the gateway gets the code the log holds for it, and the CH admits it."""
    from host_tools import device_log as D
    from tests.test_provision_commission import _provision
    cfg, log, _ = _provision(tmp_path)
    code = D.parse_install_code(cfg["zigbee"]["install_code"])
    assert code != D.parse_install_code(E_SPEC)           # a fresh code, not the default
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already
    r = ppmid("emulate", "--state-dir", str(run), "--device-log", str(log), "--trace",
              str(_trace(tmp_path, 1)), "--report", str(report), "--settle-s", "5",
              "--set", "limits.response_timeout_s=10")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "install code %s; CH device log %s" % (D.printed(code), log) in r.stdout, r.stdout[-3000:]
    c = json.loads(report.read_text())["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and c["device_log"] == str(log), c
