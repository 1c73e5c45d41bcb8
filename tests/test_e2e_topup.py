"""Top-ups end to end on the emulated board: a DCC User's top-up (MQTT, docs/envelope.md
"Top-ups") -> mosquitto -> the deployed firmware (MicroPython) -> Zigbee UART -> the NCP
emulator -> the emulated ESME's own HAN node (ZCL Consumer Top Up), and its Consumer Top Up
Response back as the final status. The trace lines are docs/trace.md's top-up form; the
meter-side figures come from the emulated ESME (host_tools/ncp_emulator/esme.py)."""
import binascii
import json
import os
import subprocess
import sys
import time

import pytest

from host_tools import emulate as E
from host_tools import utrn as U
from ppmid.gbcs import decode

# a short response budget: the silent-meter test waits for it
FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 6, "queue": 40}}
# a replay whose line ends `timeout` waits its whole settle (a late answer may still come):
# 12 s is the 6 s budget and as long again watched for an answer or a copy after it (20 s
# before: 8 s of each of two tests); a top-up applied late would show in what the meter
# applied (its credit, its count), checked after each of them
TIMEOUT_SETTLE_S = 12


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-topup"), overrides=FAST, log=None)
    with e:
        yield e


def esme(emu):
    return emu.ncp.ch.esme


def replay(emu, lines, settle_s=15, alert_wait_s=0):
    r = emu.replayer(settle_s)
    meter0 = emu.meter_mark()
    r.connect()
    try:
        rep = r.run(lines)
        # an alert may follow the final status (the meter raises it after answering)
        deadline = time.monotonic() + alert_wait_s
        while not r.alerts and time.monotonic() < deadline:
            time.sleep(0.1)
        rep["_messages"] = {i: [m for _, m in v] for i, v in r.received.items()}
        rep["_alerts"] = list(r.alerts)
    finally:
        r.close()
    rep.update(emu.ch_figures(lines, meter0))
    return rep


def final(rep, id):
    return [m for m in rep["_messages"][id] if m["status"] not in ("accepted", "relayed")][-1]


def line(id, utrn, at_ms=0, target="esme", **expect):
    return {"at_ms": at_ms, "id": id, "utrn": utrn, "target": target, "via": "mqtt", "expect": expect or None}


def wipe_journal_and_restart(emu):
    mark = emu.board.mark()
    emu.board.exec(E.JOURNAL_WIPE)   # stops the app, as on a real board
    emu.board.reset()
    emu.board.wait_ready(60, since=mark)
    emu.wait_online(60)


def test_top_up_reaches_the_meter_once_then_duplicates_are_refused_here_and_by_the_meter(emu):
    m = esme(emu)
    credit0, seen0 = m.credit, m.received
    utrn = U.test_utrn(5, "pounds", 12)
    rep = replay(emu, [line("tu-1", utrn, status="topped-up"),
                       line("tu-1-again", utrn, at_ms=3000, status="rejected", error="E_UTRN_DUPLICATE")])
    assert rep["mismatches"] == [] and rep["lost_count"] == 0
    assert m.credit == credit0 + 1200 and m.received == seen0 + 1   # once
    # the meter's figures stay off rsp, which every DCC User identity may read (review r2 R2-3)
    assert "topup" not in final(rep, "tu-1")
    assert rep["topups"] == {"applied": 1, "rejected": 0, "applied_twice": 0}

    # the gateway forgets everything (journal wiped): the same UTRN under a fresh id now
    # reaches the meter, which refuses it (result 0x02) and raises its alert
    wipe_journal_and_restart(emu)
    rep = replay(emu, [line("tu-1-fresh", utrn, status="rejected", error="E_UTRN_DUPLICATE")], alert_wait_s=10)
    assert rep["mismatches"] == [], rep["mismatches"]
    assert "topup" not in final(rep, "tu-1-fresh")
    assert m.credit == credit0 + 1200 and m.received == seen0 + 2
    assert rep["topups"] == {"applied": 0, "rejected": 1, "applied_twice": 0}
    # the meter's duplicate-UTRN alert reached the alert topic
    codes = [decode(binascii.a2b_base64(a["gbcs"])).message_code for a in rep["_alerts"]]
    assert 0x8F51 in codes, codes
    assert "PPMID crashed" not in emu.board.console_text()


def test_bad_top_ups_are_refused_with_their_codes_and_never_reach_the_meter(emu):
    m = esme(emu)
    seen0 = m.received
    good = U.test_utrn(6, "pennies", 250)
    lines = [
        line("b-format", good[:19], status="rejected", error="E_UTRN_FORMAT"),
        line("b-check", good[:19] + str((int(good[19]) + 3) % 10), at_ms=100, status="rejected", error="E_UTRN_CHECK"),
        line("b-value", U.encode(1, 2, 5, b"\0\0\0\0"), at_ms=200, status="rejected", error="E_UTRN_VALUE"),
        line("b-target", good, at_ms=300, target="00DB1234567890FF", status="rejected", error="E_UTRN_TARGET"),
        line("b-gsme", good, at_ms=400, target="gsme", status="rejected", error="E_UTRN_GSME"),
        # a forged MAC inside the UTRN passes every check a PPMID can make: the meter says no
        line("b-mac", U.encode(6, "pennies", 250, b"\xde\xad\xbe\xef"), at_ms=500, status="rejected",
             error="E_UTRN_INVALID"),
        line("good", good, at_ms=800, status="topped-up"),
    ]
    rep = replay(emu, lines)
    assert rep["mismatches"] == [], rep["mismatches"]
    assert m.received == seen0 + 2   # only the forged-MAC one and the good one


def test_meter_that_never_answers_gives_a_final_status_and_the_gateway_keeps_working(emu):
    m = esme(emu)
    emu.ncp.call(setattr, m, "silent", True)
    try:
        rep = replay(emu, [line("silent-1", U.test_utrn(7, "pounds", 3), status="timeout")], settle_s=TIMEOUT_SETTLE_S)
    finally:
        emu.ncp.call(setattr, m, "silent", False)
    assert rep["mismatches"] == [], rep["mismatches"]
    # a GBCS command and another top-up still go through
    cmds = E.renumbered_commands(1, start=None)
    lines = E.lines_from(cmds, interval_ms=200, prefix="after")
    lines.append(line("after-topup", U.test_utrn(8, "pounds", 4), at_ms=500, status="topped-up"))
    rep = replay(emu, lines)
    assert rep["mismatches"] == [] and rep["responses"] == 1, rep["mismatches"]
    assert rep["topups"]["applied"] == 1 and rep["topups"]["applied_twice"] == 0
    assert "PPMID crashed" not in emu.board.console_text()


def test_meter_refusing_with_a_default_response_ends_rejected_not_timeout(emu):
    # a meter that takes no top-ups from this PPMID answers with a ZCL Default Response
    m = esme(emu)
    credit0 = m.credit
    text = U.test_utrn(30, "pounds", 3)
    emu.ncp.call(setattr, m, "refuse_status", 0x7E)
    try:
        rep = replay(emu, [line("refused", text, status="rejected", error="E_UTRN_METER_REFUSED")], settle_s=5)
    finally:
        emu.ncp.call(setattr, m, "refuse_status", None)
    assert rep["mismatches"] == [], rep["mismatches"]
    f = final(rep, "refused")
    assert "topup" not in f and "0x7E NOT_AUTHORIZED" in f["error"]["message"]
    assert m.credit == credit0
    # not used up: the same UTRN goes once the meter takes top-ups
    rep = replay(emu, [line("refused-again", text, status="topped-up")])
    assert rep["mismatches"] == [], rep["mismatches"]
    assert m.credit == credit0 + 300


def test_keypad_lock_and_an_unreachable_meter_end_clearly_and_nothing_is_applied(emu):
    m = esme(emu)
    credit0 = m.credit
    locked = U.test_utrn(20, "pounds", 2)
    emu.ncp.call(setattr, m, "keypad_lock", True)
    try:
        rep = replay(emu, [line("locked", locked, status="rejected", error="E_UTRN_KEYPAD_LOCK")])
    finally:
        emu.ncp.call(setattr, m, "keypad_lock", False)
    assert rep["mismatches"] == [], rep["mismatches"]
    assert "topup" not in final(rep, "locked")
    # no APS acknowledgement from the meter: it may or may not have it, so it is never
    # sent again; the top-up ends at its response budget
    gone = U.test_utrn(21, "pounds", 2)
    emu.ncp.call(setattr, m, "unreachable", True)
    try:
        rep = replay(emu, [line("gone", gone, status="timeout")], settle_s=TIMEOUT_SETTLE_S)
    finally:
        emu.ncp.call(setattr, m, "unreachable", False)
    assert rep["mismatches"] == [], rep["mismatches"]
    assert m.credit == credit0
    # unlocked and reachable again: the locked UTRN may be used now (it was never applied)
    rep = replay(emu, [line("unlocked", locked, status="topped-up")])
    assert rep["mismatches"] == [], rep["mismatches"]
    assert m.credit == credit0 + 200


def test_ppmid_send_utrn_tops_up_and_refuses_bad_input(emu):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def ppmid(*args):
        return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"]
                              + list(args), cwd=root, capture_output=True, text=True, timeout=120)

    m = esme(emu)
    credit0 = m.credit
    utrn = U.test_utrn(9, "pennies", 777)
    spaced = " ".join(utrn[i:i + 4] for i in range(0, 20, 4))   # as printed on a receipt
    base = ["send", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--timeout", "30"]
    r = ppmid(*base, "--utrn", spaced, "--target", E.ESME, "--id", "cli-topup")
    assert r.returncode == 0, r.stdout + r.stderr
    last = json.loads(r.stdout.splitlines()[-1])
    assert last["status"] == "topped-up" and "topup" not in last and m.credit == credit0 + 777
    # the same UTRN again: the gateway refuses it, exit 1
    r = ppmid(*base, "--utrn", utrn, "--target", E.ESME, "--id", "cli-topup-2")
    assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_UTRN_DUPLICATE"
    # refused by the tool before anything is sent
    r = ppmid(*base, "--utrn", utrn[:19] + str((int(utrn[19]) + 1) % 10), "--target", E.ESME)
    assert r.returncode == 1 and "E_UTRN_CHECK" in r.stderr and r.stdout == ""
    r = ppmid(*base, "--utrn", utrn)
    assert r.returncode == 1 and "--target" in r.stderr
    r = ppmid(*base, "--gbcs", "dd00", "--target", E.ESME)
    assert r.returncode == 1 and "--target" in r.stderr
    assert m.credit == credit0 + 777


def test_top_ups_by_phone_and_by_tag_credit_the_meter_once(tmp_path):
    # its own emulation: the NFC reader must be there at boot for the NFC service to load
    from host_tools.pn532_emulator.targets import PhoneApp, Type2Tag, ndef_mime_message
    from ppmid import topup
    from ppmid.zigbee import prepayment as P
    with E.Emulation(tmp_path / "nfc", overrides=FAST, nfc=True, log=None) as emu:
        m = esme(emu)
        credit0 = m.credit
        utrn = U.test_utrn(11, "pounds", 20)
        phone = PhoneApp(topup.to_binary(topup.sign(emu.key, "tap-topup", utrn, E.ESME)), id="tap-topup")
        emu.pn532.place(phone)
        end = time.time() + 20
        while time.time() < end and phone.result is None:
            time.sleep(0.1)
        emu.pn532.remove()
        assert phone.result is not None, (phone.statuses, emu.board.console_text()[-2000:])
        assert phone.result["status"] == "topped-up", phone.result
        # the data pushed to the phone is the meter's answer
        r = P.parse_response(phone.result["gbcs"])
        assert (r.result, r.value, r.credit) == (0x10, 2000, credit0 + 2000) and m.credit == credit0 + 2000

        # the same UTRN on a tag (another id): refused here, the meter is not asked again
        time.sleep(0.5)
        seen = m.received
        tag_env = topup.to_binary(topup.sign(emu.key, "tag-topup-dup", utrn, E.ESME))
        mark = emu.board.mark()
        emu.pn532.place(Type2Tag(ndef_mime_message(tag_env)))
        emu.board.wait_for(r"session failed: E_UTRN_DUPLICATE", 15, since=mark)
        emu.pn532.remove()
        assert m.received == seen and m.credit == credit0 + 2000

        # a fresh UTRN on a tag: the meter is credited once
        time.sleep(0.5)
        utrn2 = U.test_utrn(12, "pennies", 345)
        env2 = topup.to_binary(topup.sign(emu.key, "tag-topup", utrn2, E.ESME))
        emu.pn532.place(Type2Tag(ndef_mime_message(env2), uid=b"\x04\x99\x88\x77\x66\x55\x44"))
        end = time.time() + 20
        while time.time() < end and m.credit != credit0 + 2345:
            time.sleep(0.1)
        time.sleep(1.0)   # a tag stays on the reader: it must not be applied twice
        emu.pn532.remove()
        assert m.credit == credit0 + 2345 and [u for u, _ in m.applied].count(utrn2) == 1
        assert "PPMID crashed" not in emu.board.console_text()
