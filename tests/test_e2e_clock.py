"""The gateway's clock end to end on the emulated board: it boots with an ESP32 clock
(epoch 2000, unset); the emulation's SNTP server is held back at first, so commands with
an expiry get E_CLOCK while commands without one pass; once the server answers the clock
is set by SNTP and `info` says so; the RTC keeps the time across a reset, not across a
power cut (kill); forged replies never set it. The emulated CH does not answer reads of
its clock here (SNTP alone sets it); the CH's clock: tests/test_e2e_ch_clock.py."""
import json
import threading
import time

import pytest

from host_tools import emulate as E
from host_tools import mpcompat

mpcompat.install()

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40},
        "sntp": {"retry_max_s": 4, "timeout_ms": 1000}}
HOLD_S = 600   # held until the test releases it


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-clock"), overrides=FAST, log=None, sntp_hold_s=HOLD_S,
                    ch_time="silent")
    with e:
        yield e


def replay(emu, lines, settle_s=20):
    r = emu.replayer(settle_s)
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
    assert rep["lost_count"] == 0, rep["lost"]
    assert rep["mismatches"] == [], rep["mismatches"][:5]
    return rep


def lines(prefix, with_expiry, expect_expiring):
    cmds = E.renumbered_commands(len(with_expiry))
    out = []
    for i, ((_, buf), exp) in enumerate(zip(cmds, with_expiry)):
        x = {"at_ms": i * 100, "id": "%s%d" % (prefix, i), "gbcs": buf, "via": "mqtt"}
        if exp:
            x["expires_in_s"] = 300
            x["expect"] = expect_expiring
        else:
            x["expect"] = {"status": "response"}
        out.append(x)
    return out


def info(emu, want=None, timeout=20):
    """The retained info payload (the first one matching `want`, a predicate)."""
    from host_tools import mqtt_tools as mt
    got = []
    ev = threading.Event()
    c = mt.paho_client(emu.broker_dir, "dcc-user-test")

    def on_message(client, userdata, msg):
        d = json.loads(msg.payload)
        got.append(d)
        if want is None or want(d):
            ev.set()

    c.on_message = on_message
    mt.connect(c, emu.broker_dir)
    c.subscribe("ppmid/v1/%s/info" % emu.gateway, 1)
    try:
        assert ev.wait(timeout), "no matching info: %r" % got[-1:]
    finally:
        c.disconnect()
        c.loop_stop()
    return [d for d in got if want is None or want(d)][-1]


def test_unset_clock_refuses_only_commands_with_an_expiry_until_sntp_answers(emu):
    con = emu.board.console_text()
    assert "PPMID clock: unset, sntp from 127.0.0.1" in con
    assert "set by sntp" not in con
    i = info(emu)
    assert i["clock"] == "unset" and i["clock_synced_at"] is None
    assert emu.sntp.dropped >= 1 and emu.sntp.answered == 0
    rep = replay(emu, lines("held", [True, False, True, False],
                            {"status": "rejected", "error": "E_CLOCK"}))
    assert rep["rejected"] == {"E_CLOCK": 2} and rep["responses"] == 2

    mark = emu.board.mark()
    emu.sntp.release()
    # the client is in its retry backoff (here at most 4 s); the next query is answered
    emu.board.wait_for(r"PPMID clock: set by sntp: unix=(\d+)", 30, since=mark)
    i = info(emu, lambda d: d.get("clock") == "sntp")
    assert abs(i["clock_synced_at"] - time.time()) < 120
    rep = replay(emu, lines("synced", [True, False, True], {"status": "response"}))
    assert rep["responses"] == 3 and not rep["rejected"]


def test_forged_replies_are_ignored_and_logged(emu):
    mark = emu.board.mark()
    emu.sntp.set_mode("spoof")
    try:
        # force a query now: a Wi-Fi drop and return cuts the resync pause short
        emu.board.wifi(False)
        time.sleep(1.5)
        emu.board.wifi(True)
        emu.board.wait_for(r"PPMID sntp: ignored a reply for 127.0.0.1: originate timestamp", 30, since=mark)
        emu.board.wait_for(r"PPMID sntp: no usable reply from 127.0.0.1", 30, since=mark)
    finally:
        emu.sntp.set_mode("good")
    assert "PPMID crashed" not in emu.board.console_text()


def test_rtc_keeps_the_time_across_a_reset_not_across_a_power_cut(emu):
    emu.sntp.set_mode("garbage")    # from here on only the RTC can have set the clock
    try:
        mark = emu.board.mark()
        emu.board.reset()
        emu.board.wait_ready(60, since=mark)
        emu.board.wait_for(r"PPMID clock: rtc, sntp from", 10, since=mark)
        emu.wait_online(60)
        i = info(emu, lambda d: d.get("clock") == "rtc")
        assert i["clock_synced_at"] is None
        rep = replay(emu, lines("kept", [True], {"status": "response"}))
        assert rep["responses"] == 1

        mark = emu.board.mark()
        emu.board.kill()
        emu.board.wait_ready(60, since=mark)
        emu.board.wait_for(r"PPMID clock: unset, sntp from", 10, since=mark)
        emu.wait_online(60)
        rep = replay(emu, lines("cut", [True, False], {"status": "rejected", "error": "E_CLOCK"}))
        assert rep["rejected"] == {"E_CLOCK": 1} and rep["responses"] == 1
    finally:
        emu.sntp.set_mode("good")
    assert "PPMID crashed" not in emu.board.console_text()
