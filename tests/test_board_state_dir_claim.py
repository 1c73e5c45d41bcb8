"""One emulated board per state dir, and no tool writing through a stopped board's links
(review r5-2). A second `ppmid board start` on a running board's dir ran a second chip on
the same flash.img and replaced hw.fifo and the links under the first; a stopped board left
DIR/repl, DIR/zigbee ... pointing at /dev/pts numbers the kernel then gave to other
programs, and `ppmid deploy --port DIR/repl` or `ppmid ncp-emulator --state-dir DIR` wrote
into those. Every pty here is one this test made (os.openpty), never another program's."""
import json
import os
import signal
import subprocess
import sys

import pytest

from host_tools import boards, emuboard, nfc_road, provision
from host_tools.emuboard import EmulatedBoard

GATEWAY = "00DB1234567890A4"


def ppmid(*argv, timeout=30):
    """(exit status, last stderr line) of `ppmid ARGV` in a process of its own; a command
    that does not end (an emulator serving a pty it should have refused) is stopped."""
    p = subprocess.Popen([sys.executable, "-m", "host_tools.cli"] + list(argv), cwd=boards.ROOT,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGINT)  # a supervisor stops its chip on Ctrl-C; SIGKILL would orphan it
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        return "timeout", err
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in out + err, err
    return p.returncode, lines[-1] if lines else ""


def pending(master):
    """What the tools wrote into our pty (b"" when nothing)."""
    os.set_blocking(master, False)
    try:
        return os.read(master, 4096)
    except BlockingIOError:
        return b""


def test_a_second_start_on_a_running_board_is_refused_and_a_stop_removes_the_links(tmp_path):
    d = str(tmp_path / "B")
    with EmulatedBoard(d) as b:
        before = b.state()
        fifo = os.stat(os.path.join(d, "hw.fifo")).st_ino
        links = {n: os.readlink(os.path.join(d, n)) for n in emuboard.PORT_LINKS if os.path.islink(os.path.join(d, n))}
        assert links["repl"] == before["repl"] and links["zigbee"] == before["uarts"]["zigbee"]
        for name in links:  # the running board's own links pass
            emuboard.check_board_link(os.path.join(d, name))
        rc, line = ppmid("board", "start", "--state-dir", d)
        assert rc == 1 and line == ("ppmid: E_BOARD_RUNNING: the board in %s is running (supervisor pid %d): "
                                    "`ppmid board stop --state-dir %s` first; a second start would run a second "
                                    "chip on the same flash" % (d, b.proc.pid, d)), line
        # the first board untouched: its fifo, its links, its chip
        after = b.state()
        assert os.stat(os.path.join(d, "hw.fifo")).st_ino == fifo
        assert {n: os.readlink(os.path.join(d, n)) for n in links} == links
        assert (after["supervisor_pid"], after["pid"]) == (before["supervisor_pid"], before["pid"])
        # review r8-6: the fixtures' (and `ppmid emulate`'s) start says the supervisor's refusal
        # in one line, with its code, not "supervisor exited with 1:" and the log's tail
        second = EmulatedBoard(d)
        with pytest.raises(emuboard.BoardRunning) as exc:
            second.start()
        assert exc.value.code == "E_BOARD_RUNNING" and str(exc.value) == line[len("ppmid: E_BOARD_RUNNING: "):], \
            str(exc.value)
        second.stop()
        # a link changed to a pty that is not the board's is refused, though the board runs
        master, slave = os.openpty()
        try:
            os.unlink(os.path.join(d, "repl"))
            os.symlink(os.ttyname(slave), os.path.join(d, "repl"))
            rc, line = ppmid("deploy", "--port", os.path.join(d, "repl"), "--board", "emulated")
            said = "ppmid: E_BOARD_NOT_RUNNING: %s points at %s, but the board running in %s has its repl on %s" % (
                os.path.join(d, "repl"), os.ttyname(slave), d, before["repl"])
            assert rc == 1 and line.startswith(said), line
            assert pending(master) == b""
            os.unlink(os.path.join(d, "repl"))
            os.symlink(before["repl"], os.path.join(d, "repl"))
        finally:
            os.close(master)
            os.close(slave)
    # stopped: no link is left to a pty the kernel will give to someone else
    assert [n for n in emuboard.PORT_LINKS if os.path.lexists(os.path.join(d, n))] == []
    assert emuboard.read_state(d)["running"] is False and not emuboard.supervisor_runs(d)
    # review r8-6: a link a clean stop removed is refused as docs/platform.md says, not with
    # each tool's "does not exist" / "no such pty"
    gone = "ppmid: E_BOARD_NOT_RUNNING: the emulated board in %s is not running, so it has no %s (its links go when it " \
           "stops): nothing was written; start it with `ppmid board start --state-dir %s`"
    for argv, name in ((("deploy", "--port", os.path.join(d, "repl"), "--board", "emulated"), "repl"),
                       (("ncp-emulator", "--pty", os.path.join(d, "zigbee")), "zigbee"),
                       (("pn532-emulator", "--pty", os.path.join(d, "nfc")), "nfc")):
        rc, line = ppmid(*argv, timeout=20)
        assert rc == 1 and line == gone % (d, os.path.join(d, name), d), (argv, line)
    with pytest.raises(nfc_road.NfcRoadError) as exc:  # replay --pn532 DIR/nfc
        nfc_road.open_reader(os.path.join(d, "nfc"))
    assert exc.value.code == "E_BOARD_NOT_RUNNING", str(exc.value)
    # and the claim went with it: the dir starts again
    with EmulatedBoard(d) as b:
        assert b.state()["supervisor_pid"] == b.proc.pid and os.path.islink(os.path.join(d, "repl"))


@pytest.fixture
def stale_board(tmp_path):
    """A state dir as a killed supervisor leaves it: "running" and live-looking pids in
    board.json, links to ptys. The ptys are this test's own (the kernel's reuse of a stopped
    board's numbers, made certain), and the pids a sleeping child's."""
    d = tmp_path / "B"
    d.mkdir()
    ptys = {name: os.openpty() for name in ("repl", "zigbee", "nfc")}
    names = {name: os.ttyname(s) for name, (m, s) in ptys.items()}
    sleeper = subprocess.Popen(["sleep", "60"])
    (d / "board.json").write_text(json.dumps({
        "running": True, "supervisor_pid": sleeper.pid, "pid": sleeper.pid, "repl": names["repl"],
        "uarts": {"zigbee": names["zigbee"], "nfc": names["nfc"]}}))
    for name, path in names.items():
        os.symlink(path, str(d / name))
    (d / "board.lock").write_text("")  # left by the supervisor; nobody holds it
    yield str(d), {name: m for name, (m, s) in ptys.items()}, sleeper
    sleeper.kill()
    sleeper.wait()
    for m, s in ptys.values():
        os.close(m)
        os.close(s)


def test_no_tool_writes_through_a_stopped_boards_links(stale_board):
    d, masters, sleeper = stale_board
    word = "ppmid: E_BOARD_NOT_RUNNING: the emulated board in %s is not running, so " % d
    rc, line = ppmid("deploy", "--port", os.path.join(d, "repl"), "--board", "emulated")
    assert rc == 1 and line.startswith(word + "the pty its link %s/repl names" % d), line
    rc, line = ppmid("ncp-emulator", "--state-dir", d, timeout=20)
    assert rc == 1 and line.startswith(word + "the zigbee UART its board.json names"), line
    rc, line = ppmid("ncp-emulator", "--pty", os.path.join(d, "zigbee"), timeout=20)
    assert rc == 1 and line.startswith(word + "the pty its link %s/zigbee names" % d), line
    rc, line = ppmid("pn532-emulator", "--state-dir", d, timeout=20)
    assert rc == 1 and line.startswith(word + "the nfc UART its board.json names"), line
    with pytest.raises(emuboard.BoardNotRunning, match="is not running"):  # provision's copy step
        provision.write(os.path.join(d, "repl"), {"/config.json": b"{}"})
    for endpoint in (os.path.join(d, "nfc"), d):  # `ppmid replay --pn532 DIR|DIR/nfc`'s reader (review r8-1)
        with pytest.raises(nfc_road.NfcRoadError) as exc:
            nfc_road.open_reader(endpoint).stop()
        assert exc.value.code == "E_BOARD_NOT_RUNNING" and str(exc.value).startswith(word[len("ppmid: E_BOARD_NOT_RUNNING: "):]), str(exc.value)
    for name, master in masters.items():
        assert pending(master) == b"", name
    # board.json's pids are not the board's any more: nothing is signalled
    for action in ("stop", "reset", "kill"):
        rc, line = ppmid("board", action, "--state-dir", d)
        assert rc == 1 and "is not running (board.json names" in line and "not signalled" in line, (action, line)
    assert sleeper.poll() is None


def test_the_nfc_roads_reader_holds_its_port_as_the_other_tools_do(tmp_path):
    # review r8-1: `replay --pn532` opened its port without a PortLock, so a second reader
    # (or a pn532-emulator) could serve the same pty; the hold goes with the reader's stop
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        reader = nfc_road.open_reader(path)
        try:
            rc, line = ppmid("pn532-emulator", "--pty", path, timeout=20)
            assert rc == 1 and line.startswith("ppmid: E_PORT_BUSY: "), line
        finally:
            reader.stop()
        nfc_road.open_reader(path).stop()  # let go: it opens again
    finally:
        os.close(master)
        os.close(slave)


def test_a_port_that_is_no_state_dirs_link_passes(tmp_path):
    # the check refuses a board's stale links only: other ports pass as they did
    master, slave = os.openpty()
    try:
        emuboard.check_board_link(os.ttyname(slave))
        os.symlink(os.ttyname(slave), str(tmp_path / "repl"))  # a link, but no board.json beside it
        emuboard.check_board_link(str(tmp_path / "repl"))
    finally:
        os.close(master)
        os.close(slave)


NO_FLOCK = """import errno, fcntl, sys
def flock(fd, op):  # as NFS without lockd, some CIFS, 9p and FUSE mounts answer
    raise OSError(errno.ENOLCK, "No locks available")
fcntl.flock = flock
from host_tools import ports
assert ports.supervisor_runs(sys.argv[2]) is False, "a filesystem without locks is no running board"
from host_tools.cli import main
sys.exit(main(sys.argv[1:2] + ["start", "--state-dir", sys.argv[2]]))
"""


def test_a_state_dir_without_file_locks_is_refused_naming_board_lock(tmp_path):
    # review r8-3: `ppmid: E_IO: I/O: No locks available` (exit 3), and supervisor_runs said
    # "running" for every dir there; now a sentence naming board.lock, and no board starts
    d = str(tmp_path / "N")
    os.makedirs(d)
    (tmp_path / "N" / "board.lock").write_text("")  # left by an earlier start: supervisor_runs looks at it
    p = subprocess.run([sys.executable, "-c", NO_FLOCK, "board", d], cwd=boards.ROOT, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 1 and lines[-1] == (
        "ppmid: E_BOARD: cannot lock %s/board.lock (No locks available, ENOLCK): the state dir %s is on a filesystem "
        "without file locks, where one board per state dir cannot be held: use a state dir on a local filesystem "
        "(/tmp, your home)" % (d, d)), p.stderr
    assert "Traceback" not in p.stderr and not os.path.lexists(os.path.join(d, "repl"))


def test_a_starting_supervisor_vouches_for_no_pty_of_the_run_before(stale_board):
    # review r8-4: from the claim on, the dir says "running", while board.json and a killed
    # run's links still named its ptys (maybe another program's now) until the new run's
    # board.json: uart_pty returned them and check_board_link passed them
    d, masters, sleeper = stale_board
    sup = emuboard.Supervisor(d, quiet=True)
    sup._claim()  # the first step of _prepare; the ptys come later
    try:
        assert emuboard.supervisor_runs(d)
        assert [n for n in emuboard.PORT_LINKS if os.path.lexists(os.path.join(d, n))] == []
        st = emuboard.read_state(d)
        assert (st["running"], st["starting"], st["supervisor_pid"], st["uarts"]) == (False, True, os.getpid(), {})
        for name in ("zigbee", "nfc"):
            with pytest.raises(emuboard.BoardNotRunning, match="is starting: its ptys are not there yet"):
                emuboard.uart_pty(d, name)
        # a link made before this run's board.json is not vouched for either
        master, slave = os.openpty()
        try:
            os.symlink(os.ttyname(slave), os.path.join(d, "repl"))
            with pytest.raises(emuboard.BoardNotRunning, match="is starting"):
                emuboard.check_board_link(os.path.join(d, "repl"))
            assert pending(master) == b""
        finally:
            os.close(master)
            os.close(slave)
        rc, line = ppmid("ncp-emulator", "--state-dir", d, timeout=20)
        assert rc == 1 and line.startswith("ppmid: E_BOARD_NOT_RUNNING: the emulated board in %s is starting" % d), line
    finally:
        sup._release()
    for name, master in masters.items():
        assert pending(master) == b"", name


def test_a_wired_reconnect_that_meets_a_starting_board_tries_again(monkeypatch):
    # review r8-4: plug() raised BoardNotRunning (a ToolError) out of send_envelope's retry
    # loop, which caught only OSError and WiredError: `send --serial DIR/wired` aborted
    from host_tools import wired
    client = wired.WiredClient("/nonexistent/B/wired", tries=3, retry_pause_s=0.0, ack_timeout_s=0.1)
    sends, plugs = [], []

    def send_frame(*a):  # the port lost (the board restarts), then the board answers
        sends.append(a)
        if len(sends) < 3:
            raise OSError(5, "Input/output error")
        return ("ack",)

    def plug(timeout):  # the first reopen meets the new supervisor before its ptys are there
        plugs.append(timeout)
        if len(plugs) == 1:
            raise emuboard.BoardNotRunning("the emulated board in B is starting")
        return {}
    monkeypatch.setattr(client, "send_frame", send_frame)
    monkeypatch.setattr(client, "plug", plug)
    assert client.send_envelope(b"x", id="a") == ("ack",)
    assert (len(sends), len(plugs)) == (3, 2)


def test_a_board_started_by_an_older_ppmid_is_neither_called_stopped_nor_started_twice(tmp_path):
    # review r8-5: a supervisor from before board.lock holds none: `board stop` said "not
    # running", and `board start` ran a second chip on its flash. A sleeping process with an
    # older supervisor's command line stands in for one (it makes no pty, writes nothing)
    d = str(tmp_path / "B")
    os.makedirs(d)
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "host_tools.emuboard",
                              "--state-dir", "B"], cwd=str(tmp_path))
    try:
        with open(os.path.join(d, "board.json"), "w") as f:
            json.dump({"running": True, "supervisor_pid": older.pid, "pid": older.pid, "repl": None, "uarts": {}}, f)
        said = ("ppmid: E_BOARD_RUNNING: the board in %s is running (supervisor pid %d), started by an older ppmid: it "
                "holds no board.lock, so these tools neither signal it nor start a second chip on its flash: stop it "
                "with `kill %d`, then start it again with this ppmid" % (d, older.pid, older.pid))
        rc, line = ppmid("board", "start", "--state-dir", d)
        assert (rc, line) == (1, said)
        for action in ("stop", "reset", "kill"):
            rc, line = ppmid("board", action, "--state-dir", d)
            assert (rc, line) == (1, said), (action, line)
        assert older.poll() is None and not os.path.exists(os.path.join(d, "flash.img"))
        # another program with that pid (not a board's command line): not running, as before
        assert not emuboard.older_supervisor(d, os.getpid()) and not emuboard.older_supervisor(d, 1)
    finally:
        older.kill()
        older.wait()
    assert not emuboard.older_supervisor(d, older.pid)
