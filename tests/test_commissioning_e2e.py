"""Commissioning under MicroPython over a pty (issue #16): the firmware's ZigbeeHan with an
install code configured, against the NCP emulator started uncommissioned and the emulated
CH as trust centre (host_tools/ncp_emulator/commissioning.py). A fresh module joins and
completes key establishment, then the CH opens the tunnel and a command goes through; a
wrong install code and an EUI missing from the device log are refused with their codes; a
power cut in the middle of key establishment is recovered on the next boot."""
import json

from tests import test_zigbee_e2e as Z
from tests.test_zigbee_e2e import command, stopper  # noqa: F401  (fixture)

from ppmid.zigbee import installcode as IC

CODE = "83FED3407A939723A5C639B26916D505C3B5"          # the Zigbee spec's example, CRC valid
OTHER = "0102030405060708" + "%04X" % int.from_bytes(IC.crc16(bytes.fromhex("0102030405060708")).to_bytes(2, "little"), "big")

# the shared client, reporting the commissioning info too
Z_CLIENT = Z.CLIENT.replace('out(ev="done", status=han.status,',
                            'out(ev="done", commissioning=han.commission.info() if han.commission else None, '
                            'status=han.status,')
assert Z_CLIENT != Z.CLIENT


def run(emu_kwargs, cmds, tmp_path, **opts):
    saved = Z.CLIENT
    Z.CLIENT = Z_CLIENT
    try:
        return Z.run_client(emu_kwargs, cmds, tmp_path, **opts)
    finally:
        Z.CLIENT = saved


def zconfig(tmp_path, code=CODE, **kw):
    z = {"install_code": code, "channels": [20], "state_path": str(tmp_path / "zigbee_commissioned")}
    z.update(kw)
    return {"zigbee": z}


def statuses(events):
    return [e["status"] for e in events if e["ev"] == "status"]


def test_fresh_module_commissions_then_the_tunnel_carries_a_command(tmp_path, stopper):
    cmds = [command(0x2000)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "error" not in c, c
    assert any("joined PAN 0x1a62" in s for s in c["steps"]) and "cbke: key confirmed, link key stored" in c["steps"]
    assert "commissioning" in statuses(events) and done["status"] == "running"
    assert emu.received == cmds
    st = emu.commissioning_state()
    assert st["has_network"] and st["link_key_stored"] and st["tc_counters"]["ke_ok"] == 1
    assert (tmp_path / "zigbee_commissioned").exists()


def test_ezsp_v14_module_commissions_taking_ke_frames_from_the_trust_centres_eui(tmp_path, stopper):
    # v14's incomingMessageHandler names the sender's EUI-64: the CH's KE frames are taken
    # because it is the trust centre's (getCurrentSecurityState), little-endian both
    events, emu, _ = run({"ezsp_version": 14, "commissioning": {"install_code": CODE}}, [], tmp_path,
                         config=zconfig(tmp_path), wait_status="running", wait_s=40)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok" and "ke_not_ch" not in c, c
    assert "cbke: CH certificate, subject 0000b0d5b3ffff00 (the trust centre)" in c["steps"], c["steps"]
    assert emu.commissioning_state()["tc_counters"]["ke_ok"] == 1


def test_wrong_install_code_never_gets_the_network(tmp_path, stopper):
    events, emu, _ = run({"commissioning": {"install_code": OTHER}}, [], tmp_path,
                         config=zconfig(tmp_path), wait_status="running", wait_s=8)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "failed" and c["error"] == "E_COMMISSION_JOIN_REFUSED", c
    assert c["cbke"] is None and events[-1]["status"] == "commission-failed"
    st = emu.commissioning_state()
    assert not st["has_network"] and not st["joined"]
    assert ("join_refused", "link key mismatch") in [tuple(e) for e in st["tc_events"]]
    assert st["tc_counters"]["joins_admitted"] == 0
    assert not (tmp_path / "zigbee_commissioned").exists()


def test_eui_missing_from_the_device_log_is_refused(tmp_path, stopper):
    events, emu, _ = run({"commissioning": {"install_code": None}}, [], tmp_path,
                         config=zconfig(tmp_path), wait_status="running", wait_s=8)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["error"] == "E_COMMISSION_JOIN_REFUSED" and c["attempts"] >= 1, c
    st = emu.commissioning_state()
    assert ("join_refused", "not in the device log") in [tuple(e) for e in st["tc_events"]]


def test_power_cut_mid_cbke_recovers_on_the_next_boot(tmp_path, stopper):
    # first boot: the module joins; the CH's Key Establishment server stays silent, and
    # the board stops (its process ends) while waiting for the Initiate response
    def silence(emu, proc):
        import time
        t0 = time.time()
        while emu.ch is None or emu.ch.trust_centre is None:
            assert time.time() - t0 < 10
            time.sleep(0.01)
        emu.call(setattr, emu.ch.trust_centre, "silent", True)
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, [], tmp_path, before=silence,
                         config=zconfig(tmp_path), wait_status="running", wait_s=4)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "cbke" and c["cbke"] == "running" and "cbke: initiate sent" in c["steps"], c
    st = emu.commissioning_state()
    assert st["has_network"] and not st["link_key_stored"]
    assert not (tmp_path / "zigbee_commissioned").exists()
    # the power cut took the module too (its tokens keep the network); the CH is back
    emu.call(setattr, emu.ch.trust_centre, "silent", False)
    emu.reset_ncp()
    cmds = [command(0x3000)]
    events, emu, _ = run({}, cmds, tmp_path, reuse=Z.run_client.last, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", wait_s=30)
    c = events[-1]["commissioning"]
    assert c["state"] == "commissioned" and c["cbke"] == "ok", c
    # the network was resumed, not joined again: no scan, no join in this boot's steps
    assert not any(s.startswith("scan") or s.startswith("joining") for s in c["steps"]), c["steps"]
    st = emu.commissioning_state()
    assert st["link_key_stored"] and st["tc_counters"]["joins_admitted"] == 1 and st["tc_counters"]["ke_ok"] == 1
    assert emu.received == cmds and (tmp_path / "zigbee_commissioned").exists()
