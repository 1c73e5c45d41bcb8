"""The gateway keeps serving over MQTT and NFC while commissioning fails (issue #16, "bad
input"): the emulated CH's device log holds another install code, so every join is
refused; the retained state says online, the retained info (republished at the next
connect) carries the HAN status and the commissioning error; a DCC User's command over
MQTT is taken and its status published; a phone's command is taken (OK), the phone told
E_NFC_LATE when its session ends, a forged one refused (E_AUTH). Once the installer puts
the right code in the device log, the gateway's next attempt commissions, both commands
taken meanwhile reach the CH and are answered (MQTT status; the phone's result on a later
tap): nothing already accepted is lost. The whole product on the emulated board
(host_tools.emulate, with the PN532 emulator)."""
import threading
import time

from host_tools import emulate as E
from host_tools import mpcompat
from host_tools.pn532_emulator.targets import PhoneApp
from tests.test_e2e_clock import info

mpcompat.install()
from ppmid import envelope  # noqa: E402
from ppmid.zigbee import installcode as IC  # noqa: E402

CODE = "83FED3407A939723A5C639B26916D505C3B5"
OTHER = "0102030405060708D46D"   # valid, not the gateway's
FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15},
        "zigbee": {"backoff_max_s": 2}, "nfc": {"session_s": 3}}


def _tap(emu, phone, done, timeout=20):
    emu.pn532.place(phone)
    end = time.time() + timeout
    while time.time() < end and not done(phone):
        time.sleep(0.1)
    emu.pn532.remove()
    time.sleep(0.5)   # the reader sees the field empty before the next phone


def test_mqtt_state_info_and_commands_are_served_while_commissioning_fails(tmp_path):
    emu = E.Emulation(tmp_path / "emu", overrides=FAST, log=None, nfc=True,
                      commissioning={"install_code": CODE, "ch_install_code": OTHER})
    with emu:
        mark = emu.console_start
        emu.board.wait_for(rb"commission: failed E_COMMISSION_JOIN_REFUSED", 60, since=mark)
        # a reconnect republishes the retained info, which now carries the failure
        emu.board.wifi(False)
        time.sleep(1.5)
        emu.board.wifi(True)
        emu.wait_online(30)
        # (the info follows each attempt: wait for one that says the refusal was retried,
        # rather than read the first after the reconnect, which a loaded host can take
        # before the second attempt: CI, session 9)
        i = info(emu, lambda d: (d.get("commissioning") or {}).get("error") == "E_COMMISSION_JOIN_REFUSED"
                 and (d.get("commissioning") or {}).get("attempts", 0) >= 2, 40)
        assert i["han"] in ("commissioning", "commission-failed"), i
        c = i["commissioning"]
        assert c["state"] in ("failed", "scanning", "joining") and c["attempts"] >= 2, c
        assert "this PPMID's EUI-64 is not in the CH's device log" in c["detail"], c
        assert any(s.startswith("failed E_COMMISSION_JOIN_REFUSED") for s in c["steps"]), c

        # a phone's command while the HAN is not there: taken, the phone told it is late;
        # a forged one refused at once
        (_, tapped), (_, buf), (_, forged) = E.renumbered_commands(3)
        phone = PhoneApp(envelope.to_binary(envelope.sign(emu.key, "tap-held", tapped)), id="tap-held")
        _tap(emu, phone, lambda p: any(s[1] == "E_NFC_LATE" for s in p.statuses))
        codes = [s[1] for s in phone.statuses]
        assert codes[0] == "OK" and codes[-1] == "E_NFC_LATE" and phone.result is None, phone.statuses
        bad = PhoneApp(envelope.to_binary(envelope.sign(bytes(32), "tap-bad", forged)), id="tap-bad",
                       uid=b"\x08\x01\x02\x03")
        _tap(emu, bad, lambda p: p.statuses)
        assert bad.statuses and bad.statuses[0][1] == "E_AUTH", bad.statuses

        # a command over MQTT: taken (statuses over MQTT), held, not lost
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
        assert sorted(emu.ncp.received) == sorted([bytes(tapped), bytes(buf)])
        # the phone's result on a later tap
        collect = PhoneApp(collect_id="tap-held", uid=b"\x08\x05\x06\x07")
        _tap(emu, collect, lambda p: p.result is not None)
        assert collect.result is not None and collect.result["status"] == "response", collect.statuses
        assert emu.pn532.errors == []
        c = emu.commissioning_report()
        assert c["state"] == "commissioned" and c["cbke"] == "ok", c
        assert c["trust_centre"]["counters"]["joins_refused"] >= 2 and c["trust_centre"]["counters"]["joins_admitted"] == 1
