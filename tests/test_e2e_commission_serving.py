"""The gateway keeps serving over MQTT while commissioning fails (issue #16, "bad input"):
the emulated CH's device log holds another install code, so every join is refused; the
retained state says online, the retained info (republished at the next connect) carries
the HAN status and the commissioning error; a DCC User's command is taken and its status
published. Once the installer puts the right code in the device log, the gateway's next
attempt commissions and the command taken meanwhile reaches the CH and is answered:
nothing already accepted is lost. The whole product on the emulated board (host_tools.emulate)."""
import threading
import time

from host_tools import emulate as E
from host_tools import mpcompat
from tests.test_e2e_clock import info

mpcompat.install()
from ppmid.zigbee import installcode as IC  # noqa: E402

CODE = "83FED3407A939723A5C639B26916D505C3B5"
OTHER = "0102030405060708D46D"   # valid, not the gateway's
FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15},
        "zigbee": {"backoff_max_s": 2}}


def test_mqtt_state_info_and_commands_are_served_while_commissioning_fails(tmp_path):
    emu = E.Emulation(tmp_path / "emu", overrides=FAST, log=None,
                      commissioning={"install_code": CODE, "ch_install_code": OTHER})
    with emu:
        mark = emu.console_start
        emu.board.wait_for(rb"commission: failed E_COMMISSION_JOIN_REFUSED", 60, since=mark)
        # a reconnect republishes the retained info, which now carries the failure
        emu.board.wifi(False)
        time.sleep(1.5)
        emu.board.wifi(True)
        emu.wait_online(30)
        i = info(emu, lambda d: (d.get("commissioning") or {}).get("error") == "E_COMMISSION_JOIN_REFUSED", 40)
        assert i["han"] in ("commissioning", "commission-failed"), i
        c = i["commissioning"]
        assert c["state"] in ("failed", "scanning", "joining") and c["attempts"] >= 2, c
        assert "this PPMID's EUI-64 is not in the CH's device log" in c["detail"], c
        assert any(s.startswith("failed E_COMMISSION_JOIN_REFUSED") for s in c["steps"]), c

        # a command while the HAN is not there: taken (statuses over MQTT), held, not lost
        (_, buf), = E.renumbered_commands(1)
        lines = [{"at_ms": 0, "id": "held0", "gbcs": buf, "via": "mqtt", "expect": {"status": "response"}}]
        r = emu.replayer(settle_s=60)   # (it returns once every command has its final status)
        r.connect()
        out = {}
        t = threading.Thread(target=lambda: out.update(rep=r.run(lines)), daemon=True)
        t.start()
        try:
            time.sleep(4)
            assert not emu.ncp.received, "a command reached the CH before the gateway was on its HAN"
            assert "commission: commissioned" not in emu.board.console_text()[mark:]
            # the installer has the right code put in the CH's device log (through the DCC)
            eui = bytes.fromhex(emu.gateway)
            emu.ncp.call(emu.ncp.ch.trust_centre.device_log.__setitem__, eui, IC.parse(CODE))
            t.join(90)
            assert not t.is_alive(), "the replay did not finish"
        finally:
            r.close()
        rep = out["rep"]
        st = rep["per_id"]["held0"]["statuses"]
        assert st[0] == "accepted" and st[-1] == "response", rep["per_id"]
        assert rep["lost_count"] == 0 and rep["responses"] == 1, rep
        assert emu.ncp.received == [bytes(buf)]
        c = emu.commissioning_report()
        assert c["state"] == "commissioned" and c["cbke"] == "ok", c
        assert c["trust_centre"]["counters"]["joins_refused"] >= 2 and c["trust_centre"]["counters"]["joins_admitted"] == 1
