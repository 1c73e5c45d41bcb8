"""One host tool at a time on a board's serial port.

Two tools on one port (a `ppmid deploy` while `ppmid send --serial` talks to the gateway, a
second deploy or flash, `ppmid monitor` beside mpremote) each get part of the other's bytes
and fail in confusing ways, or corrupt a deploy. Every place in host_tools that opens a
board's port (pyserial, or mpremote and esptool runs) holds a PortLock for as long as it
uses it; a second tool is refused at once with PortBusy (E_PORT_BUSY) naming the port and,
where /proc/locks shows it, the pid holding it. Nobody waits and nothing is killed.

The lock is an exclusive flock, taken without waiting, on a lock file named after the
port's device (LOCK_DIR/dev_ttyUSB0.lock for /dev/ttyUSB0, or for a symlink to it). Not on
the device node itself: mpremote and esptool flock the node on their own open of the port
(pyserial's exclusive=True), so a lock we held on the node around their run would refuse
them. Our pyserial opens take that node lock too (exclusive=True), and the node's flock is
looked up in /proc/locks when the lock file is taken: an mpremote, esptool or exclusive
pyserial open that some other program started on the port refuses us as well (Linux only).

A flock belongs to the open file, so it dies with the process holding it, however the
process ends (killed included): no stale lock to clean up. Within one process the lock is
re-entrant (a flash deploys, a deploy runs many mpremote commands: each holds the port
again without refusing itself); it is released when the outermost holder lets go.

The lock directory is every user's (mode 1777), so nothing in it is trusted: a lock file is
opened without following a symlink and must be a regular file; a directory that is a
symlink, or another user's without the sticky bit, is refused (_open_lock_file).

A port that is an emulated board's link (DIR/repl, DIR/zigbee, ...) is refused
(BoardNotRunning, E_BOARD_NOT_RUNNING) unless that board runs now and the link still names
its pty (check_board_link; the board's claim, DIR/board.lock, is described below it).

Not detected: a program that takes neither lock (screen, minicom, cat, another vendor's
tool, pyserial without exclusive=True); a tool running with another TMPDIR (another lock
directory) is seen only while one of its mpremote/esptool/pyserial opens holds the node.
Where fcntl is absent (Windows) nothing is locked (Windows opens a COM port for one program
at a time itself, but nothing holds it between a deploy's runs). On macOS the lock file works; the
/proc/locks look-up does not exist there.
"""
import json
import os
import stat
import sys
import tempfile
import threading

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, every PortLock is a no-op
    fcntl = None

from host_tools.errors import ToolError

LOCK_DIR = os.path.join(tempfile.gettempdir(), "ppmid-port-locks")
PROC_LOCKS = "/proc/locks"

_guard = threading.Lock()
_held = {}  # lock file path -> [fd, depth]: this process's holds


class PortLockError(ToolError):
    """The port's lock file cannot be made or opened (a lock directory of another user's,
    not writable)."""

    code = "E_PORT_LOCK"


class PortBusy(PortLockError):
    """Another tool (another process) holds the board's port."""

    code = "E_PORT_BUSY"


class BoardNotRunning(ToolError):
    """A tool given a stopped emulated board's pty (a link in its state dir, or a UART its
    board.json names): the kernel may have given that pty to another program since."""

    code = "E_BOARD_NOT_RUNNING"


# An emulated board's state dir (host_tools/emuboard.py): its running supervisor holds an
# exclusive flock on DIR/board.lock for its whole life. The kernel drops it however the
# process ends (SIGKILL included), so it says "a board runs here now" where board.json
# cannot: a killed supervisor leaves "running": true behind, and the kernel hands its pid and
# its /dev/pts numbers to other programs.
CLAIM_FILE = "board.lock"
PORT_LINKS = ("repl", "zigbee", "nfc", "wired")  # DIR/NAME -> the running board's pty


def supervisor_runs(state_dir):
    """Whether a supervisor runs the emulated board in `state_dir` now (it holds
    DIR/board.lock). The look takes a shared flock and drops it at once: it succeeds only
    when nobody holds the supervisor's exclusive one."""
    if fcntl is None:  # no ptys, no emulated boards
        return False
    try:
        fd = os.open(os.path.join(state_dir, CLAIM_FILE),
                     os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # no claim file: no board was started here by these tools
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK: the supervisor holds it
        return True
    except OSError:
        # a filesystem without file locks (ENOLCK, EOPNOTSUPP...): no supervisor of these
        # tools runs there (its claim is refused, review r8-3), so its links are refused
        return False
    finally:
        os.close(fd)  # (drops our shared flock, when we got it)
    return False


def older_supervisor(state_dir, pid):
    """Whether process `pid` is a supervisor started by a ppmid from before board.lock
    (review r8-5: it holds no claim, so supervisor_runs says no): alive, its command line a
    board start or host_tools.emuboard, its --state-dir this dir (read against its cwd)."""
    if type(pid) is not int or pid < 1 or pid == os.getpid():
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
        cwd = os.readlink("/proc/%d/cwd" % pid)
    except (OSError, ValueError):  # gone, another user's, or no /proc
        return False
    if "host_tools.emuboard" not in argv and not ("board" in argv and "start" in argv):
        return False
    for i, arg in enumerate(argv):
        given = argv[i + 1] if arg == "--state-dir" and i + 1 < len(argv) else \
            arg[len("--state-dir="):] if arg.startswith("--state-dir=") else None
        if given and os.path.realpath(os.path.join(cwd, given)) == os.path.realpath(state_dir):
            return True
    return False


def not_running(state_dir, what):
    return BoardNotRunning("the emulated board in %s is not running, so %s may now be another program's (the "
                           "kernel reuses /dev/pts numbers): nothing was written; start it with `ppmid board start "
                           "--state-dir %s`" % (state_dir, what, state_dir))


def starting(state_dir):
    return BoardNotRunning("the emulated board in %s is starting: its ptys are not there yet (board.json and the "
                           "links still named the run before's): nothing was written; try again once it is up"
                           % state_dir)


def check_board_link(port):
    """Refuse (BoardNotRunning) a port that is one of an emulated board's links (DIR/repl,
    DIR/zigbee, ...: `ppmid deploy --port DIR/repl`) unless that board runs now and the link
    still names its pty. A stopped board's link (a killed supervisor cannot remove it) points
    at a /dev/pts number the kernel gives to the next program that asks, another engineer's
    terminal or board: a tool that followed it would write into that. A link a clean stop
    removed is refused the same way (review r8-6: "does not exist", "no such pty" said less),
    so callers check before their own look at the path. Other ports pass."""
    if not isinstance(port, str) or "://" in port:
        return
    missing = not os.path.lexists(port)
    if not (missing or os.path.islink(port)):
        return
    state_dir, name = os.path.split(os.path.abspath(port))
    board_json = os.path.join(state_dir, "board.json")
    if name not in PORT_LINKS or not os.path.isfile(board_json):
        return
    if missing:
        if not supervisor_runs(state_dir):
            raise BoardNotRunning("the emulated board in %s is not running, so it has no %s (its links go when it "
                                  "stops): nothing was written; start it with `ppmid board start --state-dir %s`"
                                  % (state_dir, port, state_dir))
        return  # running, without that UART (or still starting): the tool's own look says so
    target = os.readlink(port)
    if not supervisor_runs(state_dir):
        raise not_running(state_dir, "the pty its link %s names (%s)" % (port, target))
    try:  # (written whole by the supervisor: a copy renamed over it)
        with open(board_json) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = None
    st = st if isinstance(st, dict) else {}
    if st.get("starting"):  # a link made before this run's board.json: not vouched for yet
        raise starting(state_dir)
    uarts = st.get("uarts") if isinstance(st.get("uarts"), dict) else {}
    now = st.get("repl") if name == "repl" else uarts.get(name)
    if target != now:
        raise BoardNotRunning("%s points at %s, but the board running in %s has its %s on %s: the link is not "
                              "this board's (left over, or changed by hand): nothing was written; use %s"
                              % (port, target, state_dir, name, now, now))


def device_path(port):
    """The port's device as the kernel names it (a /dev/serial/by-id/ link resolved), or
    None for what is not a character device here (an mpremote shortcut such as `a0`, a
    socket:// URL, a missing path, a regular file) and for the kernel's memory devices
    (/dev/null, which tests and scripts give as a port that is not one, many at a time):
    those are not locked, and the tool fails on them as it did."""
    if not isinstance(port, str) or "://" in port:
        return None
    try:
        st = os.stat(port)
    except (OSError, ValueError):
        return None
    device = os.path.realpath(port)
    if not stat.S_ISCHR(st.st_mode) or device == os.devnull:
        return None
    if sys.platform.startswith("linux") and os.major(st.st_rdev) == 1:  # null, zero, full, random
        return None
    return device


def lock_file(device):
    return os.path.join(LOCK_DIR, device.strip("/").replace("/", "_") + ".lock")


class PortLock:
    """Hold `port` for this process: `with PortLock(port): ...`, or acquire()/release()
    for a holder whose use spans calls (a wired link's open and close). acquire() raises
    PortBusy when another process holds it."""

    def __init__(self, port):
        self.port = port
        self._key = None

    def acquire(self):
        if self._key is not None:
            return self
        # a stopped emulated board's link (DIR/repl) names a pty the kernel may have given
        # to another program: BoardNotRunning before anything opens it
        check_board_link(self.port)
        device = device_path(self.port)
        if device is None or fcntl is None:
            return self
        key = lock_file(device)
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            fd = _open_lock_file(key)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # EWOULDBLOCK: another process holds it
                holder = flock_holder(fd)
                os.close(fd)
                raise PortBusy(busy_sentence(self.port, device, holder))
            holder = flock_holder(device)
            if holder is not None:  # an mpremote/esptool/pyserial open, not ours, holds the node
                os.close(fd)
                raise PortBusy(busy_sentence(self.port, device, holder))
            _held[key] = [fd, 1]
            self._key = key
        return self

    def release(self):
        key, self._key = self._key, None
        if key is None:
            return
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.close(entry[0])  # closing the file drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


LOCK_FILE_MODE = 0o644  # others need only read (a flock needs no write access)
# opened as a plain file only: a symlink planted in the shared directory is not followed
# (its target would be created as our user: review_w10-6), a FIFO does not block the open
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_lock_file(path):
    """The lock file, read-only (a flock needs no write access, so the file one user made
    serves another), in a directory any user may add to, as /tmp itself. Refused
    (PortLockError) when the directory or the file is not what this module makes: the
    directory a symlink, or writable by others without the sticky bit and owned by neither
    root nor us (anyone could swap the lock files); the file a symlink or not a regular file."""
    _check_lock_dir()
    try:
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, LOCK_FILE_MODE)
        except FileExistsError:
            fd = os.open(path, _OPEN_FLAGS)
        else:
            # made here: readable by every user whatever our umask (077 would leave it 0600,
            # and then another user could not open it until a reboot: review_w10-7)
            os.fchmod(fd, LOCK_FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise PortLockError("the port lock %s is a symbolic link (someone else's, in a directory every user "
                                "may write to): refused, nothing created; remove it" % path)
        raise PortLockError("cannot open the port lock %s: %s" % (path, exc.strerror or exc))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PortLockError("the port lock %s is not a regular file: refused; remove it" % path)
    return fd


def _check_lock_dir():
    if not os.path.lexists(LOCK_DIR):
        try:
            os.mkdir(LOCK_DIR)
            os.chmod(LOCK_DIR, 0o1777)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PortLockError("cannot make the port lock directory %s: %s" % (LOCK_DIR, exc.strerror or exc))
    try:
        st = os.lstat(LOCK_DIR)
    except OSError as exc:
        raise PortLockError("cannot make the port lock directory %s: %s" % (LOCK_DIR, exc.strerror or exc))
    if not stat.S_ISDIR(st.st_mode):
        raise PortLockError("the port lock directory %s is %s, not a directory: refused; remove it"
                            % (LOCK_DIR, "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"))
    ours = st.st_uid in (0, os.geteuid()) if hasattr(os, "geteuid") else True
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX and not ours:
        raise PortLockError("the port lock directory %s belongs to uid %d and every user may replace its files "
                            "(mode %o, no sticky bit): refused; remove it" % (LOCK_DIR, st.st_uid,
                                                                           st.st_mode & 0o7777))


def flock_holder(target):
    """(pid, command line) of the process, not this one, /proc/locks names as holding a
    flock on `target` (a path or an open fd); (0, "") when the lock is held but its pid is
    not known (another pid namespace); None when none is listed or there is no /proc/locks."""
    try:
        st = os.fstat(target) if isinstance(target, int) else os.stat(target)
        with open(PROC_LOCKS) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 3310 00:1a:3 0 EOF"; "1: -> FLOCK ..." is a waiter
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, ino = fields[5].split(":")
            where = (int(major, 16), int(minor, 16), int(ino))
            pid = int(fields[4])
        except ValueError:
            continue
        if where != want or pid == os.getpid():
            continue
        return (pid, command_line(pid)) if pid > 0 else (0, "")
    return None


def command_line(pid):
    """`ppmid deploy --port /dev/ttyUSB0 ...` for a pid, short; "" when it cannot be read."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return ""
    args = [a for a in args if a]
    if len(args) > 1 and os.path.basename(args[0]).startswith("python"):
        args = args[1:]  # the interpreter: the script or -m module says more
        if args[0] == "-m" and len(args) > 1:
            args = args[1:]
    if not args:
        return ""
    args[0] = os.path.basename(args[0])
    text = " ".join(args)
    return text if len(text) <= 80 else text[:77] + "..."


def busy_sentence(port, device, holder):
    name = port if device == port else "%s (%s)" % (port, device)
    if holder is None or holder[0] == 0:
        who = "another process"
    else:
        who = "pid %d%s" % (holder[0], " (%s)" % holder[1] if holder[1] else "")
    return ("%s is in use by %s: one tool at a time on a board's port; run this again once it has "
            "finished (or stop it)" % (name, who))
