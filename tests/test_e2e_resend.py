"""Exactly-once execution across a power cut or a lost answer, end to end on the emulated
board: a command whose bytes may have left when the board died is sent again after the
restart (once per recovery, docs/relay.md "Crash policy"), one whose answer never came is
sent again when its budget ends ("Resend after a timeout"), and the emulated meter's
anti-replay makes sure it is executed once whatever the HAN carried (docs/emulate.md).

The NCP emulator's mute fault stops the send at a known point: the NCP takes one of the
command's APS fragments, then nothing reaches the gateway until its next reset, so the
gateway's send hangs with the journal's "sending" record on flash; the board is killed
there. Muted at the last fragment, which it runs, the CH got the whole command (the module
took the bytes and sent them); muted at the first, not run, the bytes never got past the
module, which for the meter is the same as a power cut between the "sending" record and
the UART write (that exact point is covered under
MicroPython by tests/firmware/test_relay_recovery.py and the random kills of
tests/test_relay_crash.py)."""
import threading
import time

import pytest

from host_tools import emulate as E

pytestmark = pytest.mark.skipif(not E.corpus_dir(), reason="needs ../shared/vectors/gbcs: the kill cases use "
                                "the corpus's ESME commands and responses (the embedded few do not cover them)")

# The response budget (limits.response_timeout_s) each test runs with. No kill test needs
# a budget to end: each command's story ends by the copy sent after the restart (answered,
# or refused as a replay), so they run with a budget longer than any of their waits; a
# budget that ended would send a copy besides, which shows in the meter's counts they
# check, and a short one would fail them on a host slow to reboot the board and answer.
# The lost-answer test is about the budget ending: a short one, 10 s (the copy it then
# sends is answered within a second here).
KILL_BUDGET_S = 120
LOST_ANSWER_BUDGET_S = 10


def _limits(budget_s):
    return {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": budget_s, "queue": 40}}


class OneEmulation:
    """One emulation at a time, started with the budget a test asks for (a new one when the
    budget changes, the previous one stopped first): the kill tests share one, the
    lost-answer test gets its own."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.emu = None
        self.budget_s = None

    def with_budget(self, budget_s):
        if self.budget_s != budget_s:
            self.close()
            e = E.Emulation(self.tmp_path_factory.mktemp("resend-%ds" % budget_s), overrides=_limits(budget_s),
                            log=None)
            self.emu = e.__enter__()
            self.budget_s = budget_s
        return self.emu

    def close(self):
        if self.emu is not None:
            self.emu.stop()
            self.emu, self.budget_s = None, None


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    one = OneEmulation(tmp_path_factory)
    try:
        yield one
    finally:
        one.close()


@pytest.fixture
def emu(emulation):
    return emulation.with_budget(KILL_BUDGET_S)


@pytest.fixture
def emu_lost_answer(emulation):
    return emulation.with_budget(LOST_ANSWER_BUDGET_S)


def _wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def _fragments(gbcs):
    # APS fragments of one TransferData carrying it (ZCL header and tunnel id: 5 bytes;
    # 80 bytes of it a fragment, as in test_zigbee_e2e)
    return -(-(len(gbcs) + 5) // (82 - 2))


def _kill_mid_send(emu, runs, prefix, lose_answer=False):
    """One ESME command; the NCP goes mute when it takes the command's last fragment and
    runs it (runs: the CH has the command) or its first and drops it (the CH has nothing);
    the board is killed then. lose_answer: the meter's answer to it is lost (it executed
    the command, nothing says so). Returns (replay report, the line, its executions entry,
    the console since)."""
    ncp = emu.ncp.ncp
    cmds = E.renumbered_commands(1, recipients=(E.ESME,))
    if lose_answer:
        emu.ncp.lose_answers(1)
    seen = emu.ncp.call(lambda: ncp._unicasts_seen)
    emu.ncp.set_faults(mute_unicast=seen + (_fragments(cmds[0][1]) if runs else 1), mute_runs=runs)
    muted0 = emu.ncp.stats()["ncp"]["muted"]
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
        emu.ncp.lose_answers(0)
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
    print("kill after the module took the bytes: final %s, meter received %d, executed %d" % (final, received, executed))
    assert final is not None and final["status"] in ("response", "already-executed"), rep["per_id"]
    assert executed == 1 and received >= 1 and rep["delivered_to_ch"] == 1
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


def test_kill_after_the_meter_executed_and_its_answer_was_lost_ends_already_executed(emu):
    # the meter executed the command and its answer was lost: the copy sent after the
    # restart is refused as a replay, and that refusal ends the command
    rep, line, (received, executed), console = _kill_mid_send(emu, True, "gone", lose_answer=True)
    final = rep["per_id"][line["id"]]["final"]
    assert final == {"status": "already-executed"}, rep["per_id"]
    assert (received, executed) == (2, 1)
    assert rep["already_executed"] == 1 and rep["answered"] == 1 and rep["executed_twice"] == 0
    assert rep["sent_twice"] == 1 and rep["replays_refused"] == 1
    assert "sending it again (copy 1" in console and "refused the copy as a replay" in console, console[-3000:]


def test_an_answer_lost_without_a_crash_is_sent_again_after_its_budget_and_ends_already_executed(emu_lost_answer):
    # no power cut: the meter executed the command and its answer was lost on the HAN. When
    # the command's budget (response_timeout_s) ends, the relay sends a copy
    # (docs/relay.md "Resend after a timeout"); the meter refuses it as a replay, and that
    # refusal ends the command: answered, executed once. Before the resend on timeout, this
    # command ended `timeout`.
    emu = emu_lost_answer
    cmds = E.renumbered_commands(1, recipients=(E.ESME,))
    lines = E.lines_from(cmds, prefix="quiet")
    mark = emu.board.mark()
    restarts = emu.board.restarts
    emu.ncp.lose_answers(1)
    r = emu.replayer(settle_s=90)
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
        emu.ncp.lose_answers(0)
    rep.update(emu.ch_figures(lines))
    from ppmid.gbcs import decode
    m = decode(cmds[0][1])
    received, executed = emu.ncp.executions().get((E.ESME, bytes(m.originator).hex().upper(), m.counter), (0, 0))
    console = emu.board.console_bytes()[mark:].decode(errors="replace")
    assert rep["per_id"][lines[0]["id"]]["final"] == {"status": "already-executed"}, rep["per_id"]
    assert (received, executed) == (2, 1)
    assert rep["answered"] == 1 and rep["executed_twice"] == 0 and rep["already_executed"] == 1
    assert emu.board.restarts == restarts                # no power cut, no reset
    assert "sending it again (copy 1" in console and "no response within" in console, console[-3000:]
    assert "refused the copy as a replay" in console, console[-3000:]
