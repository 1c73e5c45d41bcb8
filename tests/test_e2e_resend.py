"""Exactly-once execution across a power cut, end to end on the emulated board: a command
whose bytes may have left when the board died is sent again after the restart (once per
recovery, docs/relay.md "Crash policy"), and the emulated meter's anti-replay makes sure it
is executed once whatever the HAN carried (docs/emulate.md).

The NCP emulator's mute fault stops the send at a known point: the NCP takes the
command's DATA frame, then nothing reaches the gateway until its next reset, so the
gateway's send hangs with the journal's "sending" record on flash; the board is killed
there. With mute_runs the CH got the command (the module took the bytes and sent them);
without, the bytes never got past the module, which for the meter is the same as a power
cut between the "sending" record and the UART write (that exact point is covered under
MicroPython by tests/firmware/test_relay_recovery.py and the random kills of
tests/test_relay_crash.py)."""
import threading
import time

import pytest

from host_tools import emulate as E

CFG = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("resend"), overrides=CFG, log=None)
    with e:
        yield e


def _wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def _kill_mid_send(emu, runs, prefix):
    """One ESME command; the NCP goes mute when it takes the command (running it or not);
    the board is killed then. Returns (replay report, the line, its executions entry)."""
    ncp = emu.ncp.ncp
    seen = emu.ncp.call(lambda: ncp._unicasts_seen)
    emu.ncp.set_faults(mute_unicast=seen + 1, mute_runs=runs)
    muted0 = emu.ncp.stats()["ncp"]["muted"]
    cmds = E.renumbered_commands(1, recipients=(E.ESME,))
    lines = E.lines_from(cmds, prefix=prefix)
    errors = []

    def killer():
        try:
            _wait(lambda: emu.ncp.stats()["ncp"]["muted"] > muted0, 60, "the NCP to take the command")
            emu.board.kill()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(repr(exc))

    mark = emu.board.mark()
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    r = emu.replayer(settle_s=90)
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
        t.join(70)
        emu.ncp.set_faults(mute_unicast=0, mute_runs=True)
    assert errors == [], errors
    rep.update(emu.ch_figures(lines))
    from ppmid.gbcs import decode
    m = decode(cmds[0][1])
    key = (E.ESME, bytes(m.originator).hex().upper(), m.counter)
    console = emu.board.console_bytes()[mark:].decode(errors="replace")
    return rep, lines[0], emu.ncp.executions().get(key, (0, 0)), console


def test_kill_after_the_module_took_the_bytes_executes_once_and_answers(emu):
    rep, line, (received, executed), console = _kill_mid_send(emu, True, "took")
    final = rep["per_id"][line["id"]]["final"]
    assert final is not None and final["status"] in ("response", "already-executed"), rep["per_id"]
    assert executed == 1 and received >= 1
    assert rep["executed_twice"] == 0 and rep["answered"] == 1
    # the restart found it sending and queued a copy (unless the first copy's response,
    # held by the CH, came back first: then no copy went)
    assert "sending it again (copy 1" in console, console[-3000:]
    if received == 2:
        assert final["status"] == "already-executed" and rep["already_executed"] == 1
        assert rep["sent_twice"] == 1 and rep["replays_refused"] == 1


def test_kill_before_the_bytes_left_the_module_sends_it_again_and_it_is_answered(emu):
    rep, line, (received, executed), console = _kill_mid_send(emu, False, "lost")
    final = rep["per_id"][line["id"]]["final"]
    assert final == {"status": "response"}, rep["per_id"]
    assert (received, executed) == (1, 1)            # the copy was the first the meter saw
    assert rep["delivered_to_ch"] == 1 and rep["executed_twice"] == 0 and rep["answered"] == 1
    assert "sending it again (copy 1" in console, console[-3000:]
