"""Commissioning failures under MicroPython over a pty (issue #16, "bad input"), the ones
the other commissioning tests do not show: no network found, the CH terminating key
establishment, a key establishment step timing out. Each gives its code in `info` and the
log, and the gateway retries with backoff (at least the wait time of the CH's Terminate)
and commissions once the cause is gone. The firmware's ZigbeeHan against the NCP emulator
with the CH as trust centre (host_tools/ncp_emulator/commissioning.py)."""
import hashlib
import time

from tests import test_commissioning_rejoin_e2e as RJ
from tests.test_zigbee_e2e import stopper  # noqa: F401  (fixture)

from host_tools.ncp_emulator import commissioning as M

CODE = RJ.CODE


def _details(events, status):
    return [e["detail"] for e in events if e["ev"] == "status" and e["status"] == status]


def test_no_network_found_is_retried_until_the_ch_is_on_the_air(tmp_path, stopper):
    def later(emu, proc):
        time.sleep(4)                    # some scans find nothing
        emu.network_up(resume=False)
    events, emu, _ = RJ.run({"commissioning": {"install_code": CODE, "network_down": True}}, [], tmp_path,
                            before=later, config=RJ.zconfig(tmp_path, backoff_max_s=2), wait_status="running",
                            wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    failed = _details(events, "commission-failed")
    assert failed and all(d.startswith("E_COMMISSION_NO_NETWORK: no Zigbee PRO network open for joining") for d in failed)
    assert done["status"] == "running" and c["state"] == "commissioned" and c["attempts"] >= 2, c
    assert c["attempts"] <= 6, c        # backoff: 1 s, 2 s, 2 s... over ~4 s, not a scan loop
    st = emu.commissioning_state()
    assert st["tc_counters"]["joins_admitted"] == 1 and st["tc_counters"]["ke_ok"] == 1


def test_ch_terminating_key_establishment_gives_its_status_and_waits(tmp_path, stopper):
    # the module's certificate names another device (a factory mistake): the CH terminates
    # with invalid_certificate and a wait time of 3 s, every time
    eui = bytes.fromhex("000d6f0000a1b2c3")
    cert = M.certificate(bytes.fromhex("000d6f0000ffffff"), hashlib.sha256(b"module" + eui).digest())
    events, emu, _ = RJ.run({"commissioning": {"install_code": CODE, "module_certificate": cert}}, [], tmp_path,
                            config=RJ.zconfig(tmp_path), wait_status="running", wait_s=8)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert done["status"] == "commission-failed" and c["error"] == "E_CBKE_TERMINATED" and c["cbke"] == "failed", c
    assert c["detail"] == "the CH terminated key establishment: invalid_certificate (wait 3 s)", c
    assert any(s.startswith("failed E_CBKE_TERMINATED: the CH terminated") for s in c["steps"]), c
    # retried (key establishment only: the module is on the network), never sooner than the CH's wait
    assert 2 <= c["attempts"] <= 3, c
    st = emu.commissioning_state()
    assert st["tc_counters"]["joins_admitted"] == 1 and st["tc_counters"]["ke_terminated"] >= 2
    assert st["tc_counters"]["ke_ok"] == 0 and not st["link_key_stored"]
    assert not (tmp_path / "zigbee_commissioned").exists()


def test_key_establishment_step_timing_out(tmp_path, stopper):
    def answer_later(emu, proc):
        time.sleep(5)                    # the CH's Key Establishment server comes back
        emu.call(setattr, emu.ch.trust_centre, "silent", False)
    events, emu, _ = RJ.run({"commissioning": {"install_code": CODE, "trust_centre": {"silent": True}}}, [],
                            tmp_path, before=answer_later, config=RJ.zconfig(tmp_path, ke_timeout_s=1, backoff_max_s=2),
                            wait_status="running", wait_s=30)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    failed = _details(events, "commission-failed")
    assert failed and failed[0] == "E_CBKE_TIMEOUT: no initiate response from the CH within 1000 ms", failed
    assert done["status"] == "running" and c["state"] == "commissioned" and c["cbke"] == "ok", c
    assert c["attempts"] >= 2, c
    st = emu.commissioning_state()
    # one join: the retries were key establishment only
    assert st["tc_counters"]["joins_admitted"] == 1 and st["tc_counters"]["ke_ok"] == 1
