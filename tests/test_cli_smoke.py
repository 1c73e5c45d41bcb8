"""Every `ppmid` command run as a user runs it: a fresh `python -m host_tools.cli` process
from the checkout, nothing set up by this test suite (conftest.py has already put firmware/
on this process's path; a child process does not inherit that). For each command, `--help`
and one call that must be refused cheaply (a missing state dir, file or board) end in a
usage text or one `ppmid: ...` line, never E_INTERNAL (exit 3) or a traceback.

The table must name every command in cli.COMMANDS, so a new command cannot skip this."""
import os
import subprocess
import sys

import pytest

from host_tools import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = "00DB1234567890A4"


def refused_call(name, tmp):
    """The arguments of one call of command `name` that is refused before it does any
    real work: with `tmp` an empty folder, `missing` a path that does not exist."""
    missing = os.path.join(tmp, "missing")
    signed_order = ["--state-dir", missing, "--gateway", GATEWAY, "--key", os.path.join(missing, "op.pem"),
                    "--timeout", "2"]
    return {
        "board": ["status", "--state-dir", missing],
        "deploy": ["--port", os.path.join(missing, "tty"), "--board", "nosuch", "--dry-run"],
        "flash": ["--port", os.path.join(missing, "tty"), "--board", "nosuch",
                  "--firmware", os.path.join(missing, "fw.bin"), "--dry-run"],
        "provision": ["--port", os.path.join(missing, "tty"), "--gateway", GATEWAY, "--state-dir", missing],
        "gbcs": ["decode", os.path.join(missing, "x.hex")],
        "utrn": ["check", "123"],
        "broker": ["status", "--state-dir", missing],
        "sign": ["--gbcs", "DD00", "--out", os.path.join(tmp, "x.env")],
        "send": ["--state-dir", missing, "--gateway", GATEWAY, "--gbcs", "DD00", "--timeout", "2"],
        "ncp-emulator": ["--pty", os.path.join(missing, "pty")],
        "pn532-emulator": ["--pty", os.path.join(missing, "pty")],
        "release": ["--board", "nosuch", "--key", os.path.join(missing, "k.pem"), "--out", os.path.join(tmp, "rel")],
        "update": ["--state-dir", missing, "--gateway", GATEWAY, "--release", os.path.join(missing, "rel"),
                   "--timeout", "2"],
        "users": ["push"] + signed_order,
        "commission": signed_order,
        "replay": ["--report", os.path.join(tmp, "r.json"), "--state-dir", missing, "--gateway", GATEWAY,
                   os.path.join(missing, "trace.json")],
        "emulate": ["--state-dir", os.path.join(tmp, "emu"), "--board", "nosuch"],
        "capture": ["--state-dir", missing, "--gateway", GATEWAY, "--out", os.path.join(tmp, "x.pcapng"),
                    "--seconds", "1"],
        "monitor": ["--state-dir", missing, "--seconds", "1"],
        "status": ["--state-dir", missing],
    }[name]


def ppmid(*argv):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # as a user's shell has it: nothing points at firmware/
    env.pop("PPMID_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(argv), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_table_names_every_command(tmp_path):
    for name in cli.COMMANDS:
        refused_call(name, str(tmp_path))  # a KeyError names the command left out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_help_and_a_refused_call_in_a_fresh_process(name, tmp_path):
    rc, out = ppmid(name, "--help")
    assert rc == 0 and ("usage: ppmid " + name) in out, out
    rc, out = ppmid(name, *refused_call(name, str(tmp_path)))
    assert "Traceback" not in out and "E_INTERNAL" not in out, out
    assert rc == 1, (rc, out)  # refused by the command itself: not a usage error (2), not a crash (3)
    assert not os.path.exists(os.path.join(str(tmp_path), "missing")), "a refused call created its state dir"
