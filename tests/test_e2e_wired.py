"""The wired road end to end on the emulated board (MicroPython, the deployed firmware): a
laptop's client (host_tools.wired) on the board's wired pty delivers corpus commands
(renumbered so they all pass anti-replay; the embedded ones when ../shared is absent) and
gets each meter's response from the NCP/CH emulator back on the wire; the cable is pulled
mid-trace and plugged back and the results kept meanwhile come on resume; garbage, a
wrong CRC, a huge length, a cut-short frame and a flood are refused with codes while MQTT
keeps relaying; a mixed MQTT + serial trace replays in one run as in `ppmid emulate`."""
import binascii
import os
import time

import pytest

from host_tools import emulate as E
from host_tools import mpcompat
from host_tools.wired import WiredClient, WiredReplayer

mpcompat.install()
from ppmid import envelope  # noqa: E402
from ppmid.gbcs import decode  # noqa: E402
from ppmid.wired import frames as F  # noqa: E402

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40},
        "wired": {"enabled": True, "rate_per_s": 20, "burst": 20}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("wired"), overrides=FAST, log=None, wired=True)
    with e:
        yield e


def _lines(n, prefix):
    lines = E.lines_from(E.renumbered_commands(n), interval_ms=100, prefix=prefix)
    for x in lines:
        x["via"] = "serial"
    return lines


def _ch_answer(emu, cmd):
    c = decode(cmd)
    for m in emu.ncp.sent:
        d = decode(m)
        if (bytes(d.recipient), bytes(d.originator), bytes(d.counter_bytes)) == \
                (bytes(c.originator), bytes(c.recipient), bytes(c.counter_bytes)):
            return m
    return None


def test_commands_by_wire_answered_and_resumed_after_the_cable_is_pulled(emu):
    assert "wired=on" in emu.board.console_text()
    lines = _lines(8, "w")
    wr = WiredReplayer(emu.wired_client, emu.gateway, emu.key, settle_s=40)
    plugs0 = emu.wired_client.stats["plugs"]
    rep = wr.run(lines, unplug_after=4, unplugged_s=1.5)
    assert emu.wired_client.stats["plugs"] == plugs0 + 1
    # the 4th command's response came while the cable was out: kept, and sent on resume
    (resume,) = rep["wired"]["resumes"]
    assert resume["kept"] >= 1 and resume["unknown"] == [], resume
    assert rep["lost_count"] == 0 and rep["mismatches"] == [], (rep["lost"], rep["mismatches"])
    assert rep["responses"] == 8
    for x in lines:
        assert emu.ncp.received.count(bytes(x["gbcs"])) == 1, x["id"]   # once, byte-identical
        want = _ch_answer(emu, x["gbcs"])
        assert rep["per_id"][x["id"]]["response_gbcs"] == binascii.hexlify(want).decode()
    # every result was taken: the gateway keeps nothing more for this laptop
    hello = emu.wired_client.say_hello()
    assert hello["kept"] == 0 and hello["gateway"] == emu.gateway


def test_results_kept_while_unplugged_come_on_resume(emu):
    c = emu.wired_client
    (name, gbcs), = E.renumbered_commands(1)
    env = envelope.to_binary(envelope.sign(emu.key, "kept-1", gbcs))
    assert c.send_envelope(env) == ("ack",)
    c.unplug()
    # the response arrives while nobody listens; the statuses written meanwhile are lost
    # with the cable, the result is kept on the gateway
    end = time.time() + 20
    while time.time() < end and emu.ncp.received.count(gbcs) == 0:
        time.sleep(0.1)
    time.sleep(1.0)
    assert "kept-1" not in c.results
    hello = c.plug()
    assert hello["unknown"] == [] and hello["kept"] >= 1
    assert c.wait_results(["kept-1"], 10) == []
    r = c.results["kept-1"]
    assert r["status"] == "response" and binascii.a2b_base64(r["gbcs"]) == _ch_answer(emu, gbcs)


def _raw(emu):
    """A second, raw view of the wired pty: frames exactly as the test writes them."""
    import serial
    s = serial.Serial(emu.board.state()["uarts"]["wired"], 115200, timeout=0.1)
    s.reset_input_buffer()
    return s


def _answers(s, want, timeout=10):
    d = F.Deframer(0xFFFF)
    got = []
    end = time.time() + timeout
    while time.time() < end and len(got) < want:
        data = s.read(4096)
        pos = 0
        while pos < len(data):
            used, ev = d.feed(memoryview(data)[pos:], 0)
            pos += used
            if isinstance(ev, F.Frame) and ev.type in (F.T_ACK, F.T_NACK):
                p = bytes(ev.payload)
                got.append(("ack", p[0]) if ev.type == F.T_ACK else ("nack",) + F.parse_nack(p)[:2])
    return got


def test_bad_inputs_refused_with_codes_while_mqtt_keeps_relaying(emu):
    emu.wired_client.close()   # the raw port stands in for the laptop in this test
    try:
        s = _raw(emu)
        try:
            s.write(b"\x00garbage\xff" * 4)
            bad = bytearray(F.encode(F.T_ENVELOPE, 11, b"x" * 40))
            bad[-1] ^= 0x55
            s.write(bytes(bad))
            s.write(b"\xa5\x5a\x02\x0c\xff\xf0")                      # 65520 announced
            s.write(F.encode(F.T_ENVELOPE, 13, b"\x01\x00\x03abc"))   # not an envelope
            s.write(F.encode(0x77, 14, b""))                          # unknown type
            s.write(F.encode(F.T_ENVELOPE, 15, b"\x01\x00")[:7])      # cut short
            s.flush()
            got = _answers(s, 6)
            codes = [g[2] for g in got]
            assert F.E_WIRE_SYNC in codes and ("nack", 11, F.E_WIRE_CRC) in got, got
            assert ("nack", 12, F.E_WIRE_LENGTH) in got and ("nack", 13, "E_ENVELOPE") in got, got
            assert ("nack", 14, F.E_WIRE_TYPE) in got, got
            assert ("nack", 15, F.E_WIRE_TIMEOUT) in _answers(s, 1, 5) + got
            # a flood of forged envelopes: refused by the channel's rate limit or the mac
            (_, forged), (_, good) = E.renumbered_commands(2)
            env = envelope.to_binary(envelope.sign(bytes(32), "forged", forged))
            s.write(b"".join(F.encode(F.T_ENVELOPE, 100 + i % 100, env) for i in range(300)))
            s.flush()
            # meanwhile a DCC User's command over MQTT goes through
            r = emu.replayer(settle_s=30)
            try:
                rep = r.run([{"at_ms": 0, "id": "mqtt-during-flood", "gbcs": good, "via": "mqtt",
                              "expect": {"status": "response"}}])
            finally:
                r.close()
            assert rep["responses"] == 1 and rep["mismatches"] == [], rep
            flood = _answers(s, 40, 5)
            fcodes = set(g[2] for g in flood if g[0] == "nack")
            assert fcodes and fcodes <= {"E_AUTH", F.E_WIRE_RATE, F.E_WIRE_SYNC, F.E_WIRE_CRC}, fcodes
            assert forged not in emu.ncp.received
            since_boot = emu.board.console_bytes()[emu.console_start:]
            assert b"Traceback" not in since_boot and b"MemoryError" not in since_boot
        finally:
            s.close()
    finally:
        emu.wired_client.open()


def test_mixed_mqtt_and_serial_trace_in_one_replay(emu):
    lines = E.lines_from(E.renumbered_commands(6), interval_ms=100, prefix="mix")
    for x in lines[::2]:
        x["via"] = "serial"
    rep = emu.replay(lines)
    assert rep["lost_count"] == 0 and rep["mismatches"] == [], (rep["lost"], rep["mismatches"])
    assert rep["responses"] == 6 and rep["skipped"] == []
    # the serial lines' results also came on the wire, the MQTT ones did not
    assert all(rep["wired"]["results"].get(x["id"]) == "response" for x in lines[::2]), rep["wired"]
    assert not any(x["id"] in rep["wired"]["results"] for x in lines[1::2])
    assert rep["duplicates_to_ch"] == 0


def test_repl_in_use_leaves_the_wired_port_silent_and_nothing_is_accepted(emu):
    """It stops the app and resets the board; the tests after it find the gateway running."""
    from host_tools.boards import mpremote
    c = emu.wired_client
    # mpremote interrupts the running gateway (Ctrl-C), as on any MicroPython board
    assert "repl here" in mpremote(emu.board.repl, ["exec", "print('repl here')"])
    (_, gbcs), = E.renumbered_commands(1)
    env = envelope.to_binary(envelope.sign(emu.key, "during-repl", gbcs))
    tries, timeout = c.tries, c.ack_timeout_s
    c.tries, c.ack_timeout_s = 2, 1.0
    try:
        assert c.send_envelope(env) is None       # no answer: the laptop knows nothing was taken
    finally:
        c.tries, c.ack_timeout_s = tries, timeout
    assert gbcs not in emu.ncp.received
    mark = emu.board.mark()
    emu.board.reset()
    emu.board.wait_ready(60, since=mark)
    emu.wait_online(60)
    assert "wired=on" in emu.board.console_bytes()[mark:].decode("utf-8", "replace")
    assert c.send_envelope(env) == ("ack",)      # the same envelope, once the app runs again
    assert c.wait_results(["during-repl"], 30) == [] and c.results["during-repl"]["status"] == "response"
    assert emu.ncp.received.count(gbcs) == 1


def ppmid(*args, timeout=120):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", "import sys; from host_tools.cli import main; sys.exit(main())"]
                          + [str(a) for a in args], cwd=root, capture_output=True, text=True, timeout=timeout)


def test_sign_then_send_and_replay_by_wire_without_the_key_on_the_laptop(emu, tmp_path):
    import json
    key = tmp_path / "envelope.key"
    key.write_bytes(emu.key)
    port = emu.board.state()["uarts"]["wired"]
    (_, one), *rest = E.renumbered_commands(4)
    # the office: signs one command and a trace
    r = ppmid("sign", "--key-file", key, "--gbcs", one.hex(), "--id", "cli-1", "--out", tmp_path / "cli-1.env")
    assert r.returncode == 0, r.stderr
    trace = tmp_path / "t.jsonl"
    from host_tools import trace as tr
    lines = E.lines_from(rest, interval_ms=50, prefix="cli-t")
    for x in lines:
        x["via"] = "serial"
    tr.save(lines, str(trace))
    r = ppmid("sign", "--key-file", key, "--trace", trace, "--out", tmp_path / "signed.jsonl")
    assert r.returncode == 0, r.stderr
    assert all("envelope" in json.loads(t) for t in open(tmp_path / "signed.jsonl"))
    emu.wired_client.close()   # the CLI is the laptop now
    try:
        # the laptop: no key anywhere on its command lines
        r = ppmid("send", "--serial", port, "--envelope", tmp_path / "cli-1.env", "--timeout", 30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = [json.loads(t) for t in r.stdout.splitlines()]
        assert out[0]["status"] == "accepted" and out[-1]["status"] == "response", out
        assert binascii.a2b_base64(out[-1]["gbcs"]) == _ch_answer(emu, one)
        rep_path = tmp_path / "rep.json"
        r = ppmid("replay", tmp_path / "signed.jsonl", "--serial", port, "--report", rep_path, "--settle-s", 30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        rep = json.load(open(rep_path))
        assert rep["responses"] == 3 and rep["lost_count"] == 0 and rep["gateway"] == emu.gateway
        assert all(rep["per_id"][x["id"]]["response_gbcs"] == _ch_answer(emu, x["gbcs"]).hex() for x in lines)
        # refusals, each one line and exit 1
        r = ppmid("replay", trace, "--serial", port, "--report", tmp_path / "r2.json")
        assert r.returncode == 1 and "--envelope-key" in r.stderr, r.stderr
        r = ppmid("send", "--serial", str(tmp_path / "no-such-port"), "--envelope", tmp_path / "cli-1.env")
        assert r.returncode == 1 and "cannot open" in r.stderr, r.stderr
        r = ppmid("send", "--serial", port, "--envelope", key)
        assert r.returncode == 1 and "not a binary envelope" in r.stderr, r.stderr
        bad = tmp_path / "short.key"
        bad.write_bytes(b"x" * 5)
        r = ppmid("sign", "--key-file", bad, "--gbcs", "00", "--out", tmp_path / "x.env")
        assert r.returncode == 1 and "32 bytes" in r.stderr, r.stderr
        # a forged envelope sent by the CLI: rejected with the relay's code
        forged = envelope.to_binary(envelope.sign(bytes(32), "cli-forged", one))
        (tmp_path / "forged.env").write_bytes(forged)
        r = ppmid("send", "--serial", port, "--envelope", tmp_path / "forged.env")
        assert r.returncode == 1 and json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "E_AUTH", r.stdout
        assert r.stderr.startswith("ppmid: E_AUTH: command cli-forged rejected"), r.stderr  # the errors' line too
    finally:
        emu.wired_client.open()


def test_ppmid_replay_with_a_broker_and_a_serial_port_splits_the_trace_by_via(emu, tmp_path):
    import json
    from host_tools import trace as tr
    lines = E.lines_from(E.renumbered_commands(4), interval_ms=100, prefix="rmix")
    for x in lines[::2]:
        x["via"] = "serial"
    trace = tmp_path / "mixed.jsonl"
    tr.save(lines, str(trace))
    emu.wired_client.close()
    try:
        rep_path = tmp_path / "rep.json"
        r = ppmid("replay", trace, "--serial", emu.board.state()["uarts"]["wired"], "--state-dir", emu.broker_dir,
                  "--gateway", emu.gateway, "--report", rep_path, "--settle-s", 30)
        assert r.returncode == 0, (r.stdout, r.stderr)
    finally:
        emu.wired_client.open()
    rep = json.load(open(rep_path))
    assert rep["responses"] == 4 and rep["lost_count"] == 0 and rep["skipped"] == []
    assert rep["wired"]["acks"] >= 2
    by_wire = set(x["id"] for x in lines[::2])
    assert by_wire <= set(rep["wired"]["results"]) and not set(rep["wired"]["results"]) - by_wire


def test_ppmid_emulate_replays_a_trace_mixing_mqtt_and_serial_lines(tmp_path, deployed_state_dir):
    import json
    from host_tools import trace as tr
    cmds = E.renumbered_commands(6)
    lines = E.lines_from(cmds, interval_ms=200, prefix="emu")
    for x in lines[1::2]:
        x["via"] = "serial"
    # the same GBCS again by wire under a new id: anti-replay refuses it on this road too
    lines.append({"at_ms": 2000, "id": "emu-again", "gbcs": cmds[0][1], "via": "serial",
                  "expect": {"status": "rejected", "error": "E_REPLAY"}})
    trace = tmp_path / "mixed.jsonl"
    tr.save(lines, str(trace))
    report = tmp_path / "rep.json"
    run = deployed_state_dir(tmp_path / "run")   # its flash holds the firmware already: the deploy copies nothing
    r = ppmid("emulate", "--commissioned", "--state-dir", run, "--trace", trace, "--report", report,
              "--set", "limits.rate_per_s=20", "--settle-s", "25", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["commands"] == 7 and rep["lost_count"] == 0 and rep["mismatches"] == [], rep["mismatches"]
    assert rep["responses"] == 6 and rep["rejected"] == {"E_REPLAY": 1} and rep["duplicates_to_ch"] == 0
    assert rep["wired"]["acks"] >= 3 and rep["wired"]["nacks"] >= 1
    assert all(rep["wired"]["results"].get(x["id"]) == "response" for x in lines[1:6:2]), rep["wired"]


def test_top_ups_by_wire_credit_the_meter_once_and_a_duplicate_is_refused(emu, tmp_path):
    # the wire carries the top-up envelope (docs/envelope.md version 2) like NFC does
    import json
    from host_tools import utrn as U
    from host_tools.wired import WiredReplayer
    m = emu.ncp.ch.esme
    credit0, seen0 = m.credit, m.received
    utrn = U.test_utrn(21, "pennies", 350)
    c = emu.wired_client
    wr = WiredReplayer(c, emu.gateway, emu.key)
    line = {"at_ms": 0, "id": "wire-topup", "utrn": utrn, "target": "esme", "via": "serial"}
    assert wr.send_line(line)[0] == "ack"
    assert c.wait_results(["wire-topup"], 30) == []
    res = c.results["wire-topup"]
    assert res["status"] == "topped-up" and res["topup"]["value"] == 350, res
    assert m.credit == credit0 + 350 and m.received == seen0 + 1
    # the same UTRN again under a fresh id: refused here, never reaches the meter
    got = wr.send_line(dict(line, id="wire-topup-2"))
    assert got[0] == "nack" and got[1] == "E_UTRN_DUPLICATE", got
    # by the CLI on the laptop, with the key: a second UTRN tops up, a bad one is refused
    key = tmp_path / "envelope.key"
    key.write_bytes(emu.key)
    port = emu.board.state()["uarts"]["wired"]
    c.close()
    try:
        utrn2 = U.test_utrn(22, "pounds", 5)
        r = ppmid("send", "--serial", port, "--key-file", key, "--utrn", utrn2, "--target", E.ESME,
                  "--id", "wire-cli-topup", "--timeout", 30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        last = json.loads(r.stdout.splitlines()[-1])
        assert last["status"] == "topped-up" and last["topup"]["value"] == 500, last
        r = ppmid("send", "--serial", port, "--key-file", key, "--utrn", utrn2[:19] + str((int(utrn2[19]) + 1) % 10),
                  "--target", E.ESME)
        assert r.returncode == 1 and "E_UTRN_CHECK" in r.stderr, r.stderr
    finally:
        c.open()
    assert m.credit == credit0 + 350 + 500 and m.received == seen0 + 2
