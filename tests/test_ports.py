"""One host tool at a time on a board's port (host_tools/ports.py): a second process is
refused with E_PORT_BUSY naming the holder's pid, the port is free again once the holder
ends (killed included), holds nest within one process, and the tools that open a port
(deploy, provision, the wired link, the console monitor) are refused before they send a
byte. The holders are real processes holding real flocks on real ptys."""
import os
import signal
import subprocess
import sys

import pytest

from host_tools import boards, cli, ports, provision
from host_tools.ports import PortBusy, PortLock, PortLockError
from host_tools.wired import WiredClient

HOLD_LOCK = "import sys; from host_tools.ports import PortLock; PortLock(sys.argv[1]).acquire()"
# what mpremote and esptool do on their own open of the port: pyserial's flock on the node
HOLD_NODE = "import sys, serial; s = serial.Serial(sys.argv[1], exclusive=True)"
FREE, BUSY = 0, 3


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def holder(port, how=HOLD_LOCK):
    """A process holding `port` until its stdin closes (or it is killed)."""
    p = subprocess.Popen([sys.executable, "-c", how + "; print('held', flush=True); sys.stdin.read()", port],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=boards.CHECKOUT)
    assert p.stdout.readline() == "held\n"
    return p


def end(p):
    p.stdin.close()
    assert p.wait(10) == 0


def another_process_may_take(port):
    """Whether a fresh process gets the port now (it exits at once, so holds nothing after)."""
    code = ("import sys; from host_tools.ports import PortLock, PortBusy\n"
            "try:\n    PortLock(sys.argv[1]).acquire()\nexcept PortBusy:\n    sys.exit(%d)\n" % BUSY)
    # Popen: a test may stand in for subprocess.run (esptool's runs)
    rc = subprocess.Popen([sys.executable, "-c", code, port], cwd=boards.CHECKOUT).wait(30)
    assert rc in (FREE, BUSY), rc
    return rc == FREE


def test_a_port_held_by_another_tool_is_refused_naming_its_pid_until_it_ends(pty_port):
    p = holder(pty_port)
    try:
        with pytest.raises(PortBusy) as caught:
            PortLock(pty_port).acquire()
        assert caught.value.code == "E_PORT_BUSY"
        said = str(caught.value)
        assert said.startswith("%s is in use by pid %d (-c import sys; " % (pty_port, p.pid)), said
        assert "one tool at a time" in said and "\n" not in said
    finally:
        end(p)
    with PortLock(pty_port):
        assert not another_process_may_take(pty_port)
    assert another_process_may_take(pty_port)


def test_a_killed_holder_leaves_the_port_free(pty_port):
    p = holder(pty_port)
    assert not another_process_may_take(pty_port)
    p.send_signal(signal.SIGKILL)
    assert p.wait(10) == -signal.SIGKILL
    with PortLock(pty_port):
        pass


def test_holds_nest_within_one_process_and_the_outermost_releases(pty_port):
    outer = PortLock(pty_port).acquire()
    with PortLock(pty_port):  # a deploy's mpremote run inside the deploy's hold
        with PortLock(pty_port):
            pass
        assert not another_process_may_take(pty_port)
    assert not another_process_may_take(pty_port)  # the outer hold is still there
    outer.acquire()  # the same holder again: still one hold
    outer.release()
    assert another_process_may_take(pty_port)
    outer.release()  # released twice: nothing more to release, no error
    assert another_process_may_take(pty_port)


def test_a_node_flock_of_another_program_refuses_us_and_ours_does_not_refuse_it(pty_port):
    import serial
    p = holder(pty_port, HOLD_NODE)  # as an mpremote or esptool some other program started
    try:
        with pytest.raises(PortBusy, match="is in use by pid %d " % p.pid):
            PortLock(pty_port).acquire()
    finally:
        end(p)
    # the refusal left no hold behind, and our hold is on a lock file, not the node: the
    # mpremote and esptool runs a deploy or flash starts under it still get their own lock
    with PortLock(pty_port):
        serial.Serial(pty_port, exclusive=True).close()
        assert not another_process_may_take(pty_port)


def test_a_link_to_the_port_and_the_port_are_one(pty_port, tmp_path):
    link = str(tmp_path / "ttyUSB-by-id")
    os.symlink(pty_port, link)
    p = holder(link)
    try:
        with pytest.raises(PortBusy, match="^%s is in use by pid %d" % (pty_port, p.pid)):
            PortLock(pty_port).acquire()
        with pytest.raises(PortBusy, match="^%s \\(%s\\) is in use" % (link, pty_port)):
            PortLock(link).acquire()
    finally:
        end(p)


def test_what_is_not_a_serial_device_here_is_not_locked(tmp_path, pty_port):
    (tmp_path / "file").write_text("")
    # /dev/null: given as a port that is not one by many tests at once, which must not
    # refuse each other
    for port in ("socket://127.0.0.1:7", str(tmp_path / "no-such-port"), "a0", str(tmp_path / "file"),
                 str(tmp_path), os.devnull, "/dev/zero"):
        assert ports.device_path(port) is None, port
        with PortLock(port):
            assert another_process_may_take(port), port
    for port in (None, "bad\0port"):
        assert ports.device_path(port) is None
        PortLock(port).acquire().release()
    assert not os.path.exists(ports.lock_file(str(tmp_path / "no-such-port")))
    assert ports.device_path(pty_port) == pty_port


def test_an_unusable_lock_directory_is_a_clear_error(pty_port, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(ports, "LOCK_DIR", str(tmp_path / "file" / "locks"))
    with pytest.raises(PortLockError) as caught:
        PortLock(pty_port).acquire()
    assert caught.value.code == "E_PORT_LOCK" and "cannot make the port lock directory" in str(caught.value)
    assert not isinstance(caught.value, PortBusy)


def _lock_dir(tmp_path, monkeypatch, owner=None, mode=0o1777):
    d = tmp_path / "locks"
    d.mkdir()
    os.chmod(d, mode)
    if owner is not None:
        os.chown(d, owner, owner)
    monkeypatch.setattr(ports, "LOCK_DIR", str(d))
    return d


def _nobody():
    import pwd
    if os.geteuid() != 0:
        pytest.skip("handing a directory to another user takes root")
    return pwd.getpwnam("nobody").pw_uid


def test_a_symlink_planted_as_the_lock_file_is_refused_and_its_target_not_made(pty_port, tmp_path, monkeypatch):
    # review_w10-6: another user, first in the shared lock directory (theirs, sticky), links
    # the port's lock file to a path of their choosing; our tool must not create it
    d = _lock_dir(tmp_path, monkeypatch, owner=_nobody() if os.geteuid() == 0 else None)
    victim = tmp_path / "etc-nologin"
    os.symlink(str(victim), ports.lock_file(pty_port))
    with pytest.raises(PortLockError) as caught:
        PortLock(pty_port).acquire()
    assert caught.value.code == "E_PORT_LOCK" and "is a symbolic link" in str(caught.value), str(caught.value)
    assert not os.path.lexists(str(victim))
    os.remove(ports.lock_file(pty_port))  # removed: the port locks again
    with PortLock(pty_port):
        assert _held_here(pty_port)
    assert sorted(os.listdir(str(d))) == [os.path.basename(ports.lock_file(pty_port))]


def _held_here(port):
    # the lock file (in the patched LOCK_DIR, which a fresh process would not use) is a
    # regular file and flocked: another open of it cannot take the lock
    import fcntl
    path = ports.lock_file(port)
    assert os.path.isfile(path) and not os.path.islink(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_fifo_as_the_lock_file_is_refused_without_waiting(pty_port, tmp_path, monkeypatch):
    _lock_dir(tmp_path, monkeypatch)
    os.mkfifo(ports.lock_file(pty_port))
    with pytest.raises(PortLockError, match="not a regular file"):
        PortLock(pty_port).acquire()


def test_a_lock_file_made_under_a_strict_umask_is_readable_by_every_user(pty_port, tmp_path, monkeypatch):
    # review_w10-7: umask 077 made it 0600, so another user's read-only open failed
    _lock_dir(tmp_path, monkeypatch)
    old = os.umask(0o077)
    try:
        with PortLock(pty_port):
            pass
    finally:
        os.umask(old)
    assert os.stat(ports.lock_file(pty_port)).st_mode & 0o777 == 0o644


def test_a_lock_directory_that_is_a_link_or_anyones_to_rewrite_is_refused(pty_port, tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    os.chmod(real, 0o1777)
    os.symlink(str(real), str(tmp_path / "link"))
    monkeypatch.setattr(ports, "LOCK_DIR", str(tmp_path / "link"))
    with pytest.raises(PortLockError, match="is a symbolic link, not a directory"):
        PortLock(pty_port).acquire()
    assert os.listdir(str(real)) == []
    nobody = _nobody()
    d = _lock_dir(tmp_path, monkeypatch, owner=nobody, mode=0o777)  # another user's, no sticky bit
    with pytest.raises(PortLockError, match=r"belongs to uid %d and every user may replace its files \(mode 777"
                       % nobody):
        PortLock(pty_port).acquire()
    os.chmod(str(d), 0o1777)  # another user's with the sticky bit, as /tmp: shared, as meant
    with PortLock(pty_port):
        assert _held_here(pty_port)


# ---- the tools that open a port ---------------------------------------------------------

def test_the_cli_says_a_busy_port_in_one_line(pty_port, capsys):
    p = holder(pty_port)
    try:
        for argv in (["monitor", pty_port, "--seconds", "5"],
                     ["deploy", "--port", pty_port, "--board", "emulated"],  # refused before the build
                     ["ncp-emulator", "--pty", pty_port],  # the emulated board's Zigbee and NFC ptys
                     ["pn532-emulator", "--pty", pty_port]):
            rc = cli.main(argv)
            err = capsys.readouterr().err
            assert rc == 1 and err.startswith("ppmid: E_PORT_BUSY: %s is in use by pid %d (" % (pty_port, p.pid)), err
            assert err.count("\n") == 1 and "Traceback" not in err
    finally:
        end(p)


def test_provision_is_refused_before_its_first_mpremote_run(pty_port):
    ran = []
    p = holder(pty_port)
    try:
        with pytest.raises(PortBusy):
            provision.write(pty_port, {"/config.json": b"{}"}, mpremote=lambda *a, **k: ran.append(a))
    finally:
        end(p)
    assert ran == []


def test_the_wired_link_holds_the_port_while_open(pty_port):
    p = holder(pty_port)
    try:
        with pytest.raises(PortBusy):
            WiredClient(pty_port).open()
    finally:
        end(p)
    c = WiredClient(pty_port).open()
    try:
        assert not another_process_may_take(pty_port)
        # its pyserial open flocks the node too: an mpremote started by hand refuses itself
        bare = subprocess.run([boards.mpremote_path(), "connect", pty_port, "resume", "exec", "print(1)"],
                              capture_output=True, text=True, timeout=60)
        assert bare.returncode == 1 and "failed to access %s" % pty_port in bare.stderr, bare.stderr
        c.unplug()  # the cable pulled: the port closed and free
        assert another_process_may_take(pty_port)
    finally:
        c.close()


def test_a_deploy_holds_the_emulated_boards_port_from_build_to_reset_and_then_frees_it(tmp_path):
    from host_tools.emuboard import EmulatedBoard
    seen = []  # (what the deploy said, whether another process could take the port then)
    with EmulatedBoard(tmp_path / "board") as b:
        b.deploy(log=lambda msg: seen.append((msg, another_process_may_take(b.repl))))
        assert [m for m, _ in seen][-1] == "soft reset"
        # said before its first mpremote run, between runs, and after the reset: held throughout
        assert len(seen) >= 4 and not any(free for _, free in seen), seen
        assert another_process_may_take(b.repl)
        assert b.exec("print(6 * 7)").strip() == "42"  # an mpremote run after it gets the port


def test_a_romfs_deploy_holds_the_port_from_build_to_reset_and_during_its_copies(tmp_path, monkeypatch):
    # review_w10-1: as a plain deploy holds it, the image's copies included
    from host_tools import deploy, deploy_romfs
    from host_tools.emuboard import EmulatedBoard
    seen = []
    real = deploy._run_mpremote

    def watched(cmd, what, *a, **k):  # the copies, which take no PortLock of their own
        if "cp" in cmd:
            seen.append(("during " + what, another_process_may_take(cmd[2])))
        return real(cmd, what, *a, **k)

    monkeypatch.setattr(deploy, "_run_mpremote", watched)
    with EmulatedBoard(tmp_path / "board") as b:
        deploy_romfs.deploy_romfs(b.repl, "emulated", log=lambda m: seen.append((m, another_process_may_take(b.repl))))
        said = [m for m, _ in seen]
        assert said[-1] == "soft reset" and any(m.startswith("during copy") for m in said), said
        assert not any(free for _, free in seen), seen
        assert another_process_may_take(b.repl)
        b.wait_ready(60)  # after the reset the board takes an mpremote run again
        assert b.exec("print(6 * 7)").strip() == "42"


def test_a_flash_is_refused_before_esptool_and_holds_the_port_around_its_runs(pty_port, tmp_path, monkeypatch):
    from host_tools import flash
    from tests.test_flash import image_for
    image = image_for(tmp_path, "esp32s3-devkitc-1-n8r8")
    ran = []  # esptool stood in for: whether another process could take the port during each run

    def esptool(cmd):
        ran.append((cmd[-3], another_process_may_take(pty_port)))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(flash.subprocess, "run", esptool)  # the module's: another_process_may_take uses Popen
    p = holder(pty_port)
    try:
        with pytest.raises(PortBusy, match="is in use by pid %d " % p.pid):
            flash.flash(pty_port, "esp32s3-devkitc-1-n8r8", image, then_deploy=False)
    finally:
        end(p)
    assert ran == []
    flash.flash(pty_port, "esp32s3-devkitc-1-n8r8", image, then_deploy=False)
    assert ran == [("write-flash", False)]
    assert another_process_may_take(pty_port)
