"""The gateway's clock from the Communications Hub end to end on the emulated board, as in
a home without WAN: SNTP never answers (the emulation's server is held back for the whole
module), so only the CH's ZCL Time cluster can set the clock. While the emulated CH does
not answer, or answers that it is not synchronised, commands with an expiry get E_CLOCK
(commands without one pass); once it answers, the clock is set by the CH, `info` says
`ch`, and the same commands pass, by MQTT and by wire (the road for such homes: review F9's
repro). The SNTP twin of this test: tests/test_e2e_clock.py."""
import re
import time

import pytest

from host_tools import emulate as E
from host_tools import mpcompat

from tests.test_e2e_clock import replay, lines, info

mpcompat.install()
from ppmid import envelope  # noqa: E402

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40},
        "ch_clock": {"retry_s": 1, "retry_max_s": 2, "timeout_ms": 1000},
        "wired": {"enabled": True, "rate_per_s": 20, "burst": 20}}
HOLD_S = 3600   # SNTP never answers in this module


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-ch-clock"), overrides=FAST, log=None, sntp_hold_s=HOLD_S,
                    ch_time="silent", wired=True)
    with e:
        yield e


def by_wire(emu, id, expires_in_s=300):
    """One command with an expiry over the wired road: the gateway's answer to it."""
    (_, gbcs), = E.renumbered_commands(1)
    env = envelope.to_binary(envelope.sign(emu.key, id, gbcs, int(time.time()) + expires_in_s))
    return emu.wired_client.send_envelope(env)


def test_no_wan_clock_is_set_by_the_ch_and_expiring_commands_pass_after(emu):
    emu.board.wait_for(r"PPMID clock: no usable time from the CH", 30)
    i = info(emu)
    assert i["clock"] == "unset" and i["clock_synced_at"] is None
    assert emu.sntp.answered == 0
    rep = replay(emu, lines("silent", [True, False], {"status": "rejected", "error": "E_CLOCK"}))
    assert rep["rejected"] == {"E_CLOCK": 1} and rep["responses"] == 1
    got = by_wire(emu, "wire-unset")
    assert got[:2] == ("nack", "E_CLOCK"), got

    # a CH that does not know the time itself is not believed
    mark = emu.board.mark()
    emu.ncp.set_ch_time("unsynced")
    emu.board.wait_for(r"PPMID clock: ignored a time answer: the CH's clock is not synchronised", 30, since=mark)
    assert "set by ch" not in emu.board.console_text()
    rep = replay(emu, lines("unsynced", [True], {"status": "rejected", "error": "E_CLOCK"}))
    assert rep["rejected"] == {"E_CLOCK": 1}

    mark = emu.board.mark()
    reads = emu.ncp.ch.time_reads
    emu.ncp.set_ch_time("good")
    emu.board.wait_for(r"PPMID clock: set by ch: unix=(\d+) .*\(was unset\)", 30, since=mark)
    assert emu.ncp.ch.time_reads > reads
    i = info(emu, lambda d: d.get("clock") == "ch")
    assert abs(i["clock_synced_at"] - time.time()) < 120
    rep = replay(emu, lines("ch", [True, False, True], {"status": "response"}))
    assert rep["responses"] == 3 and not rep["rejected"]
    assert by_wire(emu, "wire-ch") == ("ack",)
    assert emu.sntp.answered == 0          # the CH alone set it
    assert "PPMID crashed" not in emu.board.console_text()
    # no han.profile here: the default, `all`, which the boot names (docs/security.md "Hardening")
    assert re.search(r"PPMID profile: all \(\d+ message codes relayed\): han.profile narrows it",
                     emu.board.console_text())
