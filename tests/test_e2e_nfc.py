"""The NFC road end to end on the emulated board: a PN532 emulator on the board's NFC UART
(the app imports the NFC service because the reader answers), a phone running the PPMID app
taps with a signed command; the command reaches the emulated CH once, byte-identical, and the
meter's response goes back to the phone in the same tap."""
import time

from host_tools import emulate as E
from host_tools.pn532_emulator.targets import PhoneApp
from ppmid import envelope

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15}}


def test_phone_tap_command_reaches_the_ch_and_the_response_returns_to_the_phone(tmp_path):
    with E.Emulation(tmp_path / "nfc", overrides=FAST, nfc=True, log=None) as emu:
        assert "nfc=PN532 v1.6" in emu.board.console_text()
        (_, gbcs), (_, forged_gbcs) = E.renumbered_commands(2)
        phone = PhoneApp(envelope.to_binary(envelope.sign(emu.key, "tap-1", gbcs)), id="tap-1")
        emu.pn532.tap(phone, lambda p: p.result is not None, 30)
        assert phone.result is not None, (phone.statuses, emu.board.console_text()[-2000:])
        assert phone.result["status"] == "response", phone.result
        assert emu.ncp.received.count(gbcs) == 1
        sent = [m for m in emu.ncp.sent if m == bytes(phone.result["gbcs"])]
        assert len(sent) == 1, "the phone got the bytes the meter sent"
        assert [s[1] for s in phone.statuses][:1] == ["OK"]

        # a forged command (another key) is refused on the phone with E_AUTH, never relayed
        time.sleep(0.5)  # the reader sees the field empty before the next phone
        bad = PhoneApp(envelope.to_binary(envelope.sign(bytes(32), "tap-2", forged_gbcs)), id="tap-2",
                       uid=b"\x08\x01\x02\x03")
        emu.pn532.tap(bad, lambda p: p.statuses, 15)
        assert bad.statuses and bad.statuses[0][1] == "E_AUTH", bad.statuses
        assert forged_gbcs not in emu.ncp.received
        assert emu.pn532.errors == []
        assert "MemoryError" not in emu.board.console_text()
        # the board reports its heap on this road (a figure within the heap); how much is
        # free at the peak is a memory target: `make bench` (bench_nfc.board_tap_heap_row)
        h = emu.heap_figures()
        assert h["free_min"] is not None and 0 < h["free_min"] < h["heap_bytes"], h
