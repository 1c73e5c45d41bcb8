"""`ppmid provision --install-code new` onto the emulated board writes a code the emulated CH
accepts: the config read back from the board's flash has the code, the device log the
command wrote holds the gateway's EUI-64 with the same code, and the firmware under
MicroPython over a pty, given that config's zigbee section, joins and completes CBKE with
the NCP emulator whose trust centre reads that device log (then the tunnel carries a
command). A code in the log that is not the board's keeps it off the network."""
import json
import re

from host_tools import device_log as D
from host_tools.broker import Broker
from host_tools.emuboard import EmulatedBoard
from tests import test_commissioning_e2e as CE
from tests.test_e2e_emulate_cli import ppmid
from tests.test_zigbee_e2e import command, stopper  # noqa: F401  (fixture)

GW = "00DB1234567890A4"


def _provision(tmp_path):
    state = str(tmp_path / "broker")
    Broker(state, gateways=[GW]).prepare()
    log = tmp_path / "device-log.jsonl"
    with EmulatedBoard(tmp_path / "board") as b:
        r = ppmid("provision", "--port", b.repl, "--gateway", GW, "--state-dir", state,
                  "--broker-host", "127.0.0.1", "--broker-port", "18883", "--install-code", "new",
                  "--device-log", str(log))
        assert r.returncode == 0, r.stdout + r.stderr
        cfg = json.loads(b.exec("print(open('/config.json').read())"))
    return cfg, log, r.stdout


def test_provisioned_code_is_accepted_by_the_emulated_ch(tmp_path, stopper):
    cfg, log, out = _provision(tmp_path)
    code = D.parse_install_code(cfg["zigbee"]["install_code"])
    assert D.read(str(log)) == {bytes.fromhex(GW): code}
    m = re.search(r"install code ((?:[0-9A-F]{4} ){8}[0-9A-F]{4}) ", out)
    assert m and D.parse_install_code(m.group(1)) == code, out
    assert code != D.parse_install_code(CE.CODE)          # `new` made one, not the example

    cmds = [command(0x2100)]
    emu_kwargs = {"commissioning": {"device_log": D.read(str(log)), "eui64": bytes.fromhex(GW)}}
    events, emu, _ = CE.run(emu_kwargs, cmds, tmp_path, expect_rx=1,
                            config=CE.zconfig(tmp_path, code=cfg["zigbee"]["install_code"]),
                            wait_status="running", wait_s=40)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "error" not in c, c
    assert emu.received == cmds
    st = emu.commissioning_state()
    assert ("join_admitted", GW.lower()) in st["tc_events"] and st["tc_counters"]["ke_ok"] == 1


def test_a_log_entry_with_another_code_keeps_the_board_off(tmp_path, stopper):
    cfg, log, _ = _provision(tmp_path)
    D.add(str(log), GW, D.new_install_code())     # the DCC got another code for this EUI
    events, emu, _ = CE.run({"commissioning": {"device_log": D.read(str(log)), "eui64": bytes.fromhex(GW)}}, [],
                            tmp_path, config=CE.zconfig(tmp_path, code=cfg["zigbee"]["install_code"]),
                            wait_status="commission-failed", wait_s=30)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "failed" and c["error"] == "E_COMMISSION_JOIN_REFUSED", c
    assert ("join_refused", "link key mismatch") in emu.commissioning_state()["tc_events"]
