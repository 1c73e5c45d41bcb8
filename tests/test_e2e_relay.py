"""End to end on the emulated board: a DCC User (paho, TLS client certificate) -> mosquitto
-> the deployed firmware on the emulated board (MicroPython, the board's heap) -> Zigbee
UART (pty, 115200 baud) -> NCP + Communications Hub emulator -> the meter's response
all the way back. Everything is the product: `host_tools.emulate.Emulation` provisions
and deploys exactly what `ppmid emulate` does."""
import binascii
import json
import os

import pytest

from host_tools import emulate as E
from host_tools import mpcompat

mpcompat.install()
from ppmid.gbcs import build, decode  # noqa: E402

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e"), overrides=FAST, log=None)
    with e:
        yield e


def _no_mismatch(rep):
    assert rep["lost_count"] == 0, rep["lost"]
    assert rep["mismatches"] == [], rep["mismatches"][:5]


def _ch_messages(emu, lines):
    got = {}
    for m in emu.ncp.received:
        got[m] = got.get(m, 0) + 1
    return [got.get(bytes(x["gbcs"]), 0) for x in lines]


def _responses_match_ch(emu, rep, lines):
    """Each command's response on the rsp topic is the bytes the CH sent back for it."""
    sent = {}
    for m in emu.ncp.sent:
        d = decode(m)
        sent[(bytes(d.recipient), bytes(d.originator), bytes(d.counter_bytes))] = m
    for x in lines:
        c = decode(x["gbcs"])
        want = sent.get((bytes(c.originator), bytes(c.recipient), bytes(c.counter_bytes)))
        assert want is not None, x["id"]
        statuses = [m for m in rep["_messages"][x["id"]] if m.get("status") == "response"]
        assert statuses and binascii.a2b_base64(statuses[-1]["gbcs"]) == want, x["id"]


def replay(emu, lines, **kw):
    r = emu.replayer(kw.pop("settle_s", None))
    r.connect()
    try:
        rep = r.run(lines)
        rep["_messages"] = {i: [m for _, m in v] for i, v in r.received.items()}
    finally:
        r.close()
    rep.update(emu.ch_figures(lines))
    return rep


def replay_in_windows(emu, lines, window):
    """Replay `lines` `window` at a time, back to back, each window once the previous one is
    answered: the gateway never holds more than `window` unanswered commands, whatever the
    host's speed, so no sustained rate is asked of it (a rate would fail a slow host by
    E_BUSY with nothing wrong). The report of all the windows together."""
    r = emu.replayer()
    r.connect()
    rep = {"commands": 0, "responses": 0, "lost": [], "mismatches": []}
    try:
        for i in range(0, len(lines), window):
            part = r.run([dict(x, at_ms=0) for x in lines[i:i + window]])
            for k in ("commands", "responses", "lost", "mismatches"):
                rep[k] += part[k]
        rep["_messages"] = {i: [m for _, m in v] for i, v in r.received.items()}
    finally:
        r.close()
    rep["lost_count"] = len(rep["lost"])
    rep.update(emu.ch_figures(lines))
    return rep


def test_200_corpus_commands_reach_the_ch_once_and_every_response_returns(emu):
    cmds = E.renumbered_commands(200)
    lines = E.lines_from(cmds, prefix="bulk")
    # 20 outstanding at most: within the queue (40) and the burst (50), so every command
    # must be accepted and answered however slowly this host runs
    rep = replay_in_windows(emu, lines, window=20)
    _no_mismatch(rep)
    assert rep["commands"] == 200 and rep["responses"] == 200
    # byte-identical, exactly once each
    assert _ch_messages(emu, lines) == [1] * 200
    assert rep["delivered_to_ch"] == 200 and rep["duplicates_to_ch"] == 0
    _responses_match_ch(emu, rep, lines)
    assert "PPMID crashed" not in emu.board.console_text()


def _bad_lines(emu):
    base = E.renumbered_commands(3, start=None)
    ok1, ok2, _ = [b for _, b in base]
    # unknown target: a fresh command to a meter that is not on this gateway's HAN
    m = decode(ok2)
    stranger = build.build_command(m.counter + 7, bytes(m.originator), bytes.fromhex("00DB1234567890FF"),
                                   m.message_code, b"\x01\x02\x03")
    lines = [
        {"at_ms": 0, "id": "good-1", "gbcs": ok1, "expect": {"status": "response"}},
        # the same GBCS again under another id: its counter is spent
        {"at_ms": 300, "id": "replayed", "gbcs": ok1, "expect": {"status": "rejected", "error": "E_REPLAY"}},
        {"at_ms": 400, "id": "expired", "gbcs": ok2, "expires_in_s": -5,
         "expect": {"status": "rejected", "error": "E_EXPIRED"}},
        {"at_ms": 500, "id": "stranger", "gbcs": stranger, "expect": {"status": "rejected", "error": "E_UNKNOWN_TARGET"}},
        {"at_ms": 600, "id": "toolarge", "gbcs": bytes(ok2[:40]) + bytes(8200),
         "expect": {"status": "rejected", "error": "E_TOO_LARGE"}},
    ]
    for x in lines:
        x["via"] = "mqtt"
    return lines, ok2


def test_bad_commands_are_rejected_with_their_codes_and_never_reach_the_ch(emu):
    lines, ok2 = _bad_lines(emu)
    before = list(emu.ncp.received)
    rep = replay(emu, lines, settle_s=20)
    _no_mismatch(rep)
    assert rep["rejected"] == {"E_REPLAY": 1, "E_EXPIRED": 1, "E_UNKNOWN_TARGET": 1, "E_TOO_LARGE": 1}
    new = emu.ncp.received[len(before):]
    assert new == [lines[0]["gbcs"]], "only the good command reaches the CH"

    # forged: signed with another key -> E_AUTH; then the genuine one still goes through
    forged_lines = [{"at_ms": 0, "id": "forged", "gbcs": ok2, "via": "mqtt",
                     "expect": {"status": "rejected", "error": "E_AUTH"}}]
    r = emu.replayer(20)
    r.key = bytes(32)
    r.connect()
    try:
        frep = r.run(forged_lines)
    finally:
        r.close()
    _no_mismatch(frep)
    assert emu.ncp.received[len(before) + 1:] == []
    genuine = [{"at_ms": 0, "id": "genuine", "gbcs": ok2, "via": "mqtt", "expect": {"status": "response"}}]
    _no_mismatch(replay(emu, genuine))
    assert emu.ncp.received[len(before) + 1:] == [ok2]
    info = emu.board.console_text()
    assert "PPMID crashed" not in info


def big_command(size, counter):
    """A command of exactly `size` bytes to the ESME, from the shape of a corpus command."""
    name, ref = E.renumbered_commands(1)[0]
    m = decode(ref)
    fill = size - 64
    for _ in range(20):
        buf = build.build_command(counter, bytes(m.originator), bytes(m.recipient), m.message_code,
                                  bytes((i * 31 + 7) & 0xFF for i in range(fill)))
        if len(buf) == size:
            break
        fill += size - len(buf)
    assert len(buf) == size, len(buf)
    return buf


def test_4kb_command_crosses_as_gbt_blocks_and_its_response_returns(emu):
    c = decode(E.renumbered_commands(1)[0][1])
    buf = big_command(4096, c.counter + 1000)
    lines = [{"at_ms": 0, "id": "big-4k", "gbcs": buf, "via": "mqtt", "expect": {"status": "response"}}]
    log = os.path.join(emu.state_dir, "ch.jsonl")
    start = os.path.getsize(log)
    rep = replay(emu, lines)
    _no_mismatch(rep)
    assert _ch_messages(emu, lines) == [1]
    with open(log) as f:
        f.seek(start)
        entries = [json.loads(x) for x in f if x.strip()]
    blocks = [x for x in entries if x.get("gbt_block") and x["dir"] == "rx"]
    assert len(blocks) >= 3, "a 4 KB command must travel as GBT blocks (transfer size 1500)"
    assert all(x["len"] <= 1500 for x in blocks)
    _responses_match_ch(emu, rep, lines)
