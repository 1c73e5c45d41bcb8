"""The emulated board's supervisor: the MicroPython unix port dressed as an ESP32-class board.

Two parts (board definitions and finding `micropython` are in host_tools.boards):
- `Supervisor` (what `ppmid board start` runs): the board's "hardware". It owns every
  pseudo-terminal (REPL, UARTs), the flash image, the watchdog and the reset line, and
  (re)starts the MicroPython process -- the "chip" -- whenever it exits: a reset, a
  watchdog expiry, a crash, a soft reset (Ctrl-D) or a kill is a reboot, counted in
  DIR/board.json. The ptys live in the supervisor so host emulators stay attached across
  reboots.
- `EmulatedBoard`: a context manager for tests that runs a supervisor in a temp state dir.

Inside the MicroPython process a small ROM script (host_tools/board_scripts/rom.py,
written to DIR/rom.py) mounts the LittleFS2 flash image at "/", runs /boot.py and /main.py
from it and leaves the REPL on the console pty, exactly like a real board. The ROM hands
the board's "hardware" to the firmware as the module `_emuboard` (see
firmware/ppmid/board/emulated.py).

State dir layout: board.json (state, for host tools), board.lock (held by the running
supervisor: one board per state dir), repl/zigbee/nfc/wired (links to the running board's
ptys, removed when it stops), flash.img (LittleFS2 image),
romfs.bin (the romfs partition, on boards with `romfs_bytes`), console.log (everything the board printed), wifi ("1"/"0": the emulated access point),
hw.fifo (firmware -> supervisor: watchdog arm/feed, reset requests), rom.py,
romfs_partition.py, supervisor.log.
Details and contracts: docs/platform.md.
"""
import argparse
import binascii
import errno
import fcntl
import json
import os
import re
import select
import selectors
import signal
import subprocess
import sys
import termios
import time
import tty

from host_tools import board_scripts, boards, deploy
from host_tools.boards import BoardError, heap_bytes, load_board, micropython_binary, mpremote
# the claim of a state dir and its links: ports.PortLock checks them before any tool opens a port
from host_tools.ports import (CLAIM_FILE, PORT_LINKS, BoardNotRunning, check_board_link,  # noqa: F401
                              not_running, older_supervisor, starting, supervisor_runs)

# Exit codes / reasons the supervisor records in board.json "last_exit"/"last_reason".
EXIT_SOFT_RESET = 0      # Ctrl-D at the REPL, sys.exit(0), mpremote soft-reset
EXIT_RESET = 3           # machine reset requested by the firmware (Board.reset())
EXIT_WATCHDOG = 4        # watchdog expired (the supervisor killed the chip)
EXIT_RESET_BUTTON = 5    # `ppmid board reset` / EmulatedBoard.reset()
# not a reboot: the ROM (board_scripts/rom.py _INTERRUPTED) found that a Ctrl-C landed in
# the unix port's garbage collector, which left the heap locked; the chip starts again at
# the REPL, as an ESP32's Ctrl-C leaves it (Supervisor._restart_at_repl)
EXIT_INTERRUPTED = 6
UART_BUFFER_LIMIT = 65536  # bytes queued towards a pty nobody reads before they are dropped
# how long a full pty may take nothing before nobody is deemed to read it: a reader on a
# loaded host is descheduled now and then, and mpremote reads a byte a call, slower than a
# 921,600-baud line there; a live reader makes room within a few tens of ms of running
READER_STALL_S = 2.0
# the most a pty can hold towards its reader: the kernel's tty buffers (64 KB at most; some
# 15 KB here) and the line discipline's 4 KB. More written since we emptied it: a reader took
PTY_HOLDS_AT_MOST = 65536 + 4096
UNTHROTTLED_BACKLOG = 16384  # bytes queued towards a console reader before the chip waits for it (no rate)
# The console protocol of MicroPython's REPL, as mpremote speaks it.
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SOFT_REBOOT_LINE = b"MPY: soft reboot\r\n"  # what the ESP32 port prints; mpremote waits for it
FRIENDLY_PROMPT = b">>> "
CTRL_A, CTRL_B = b"\x01", b"\x02"
RAW_BOOT_TIMEOUT_S = 15  # a soft reset in raw-REPL mode that never gets back to the raw REPL
ROMFS_SECTOR = 4096  # the romfs partition's erase unit (an ESP32's flash sector)

BANNER_RE = r"PPMID ready: version=(\S+) board=(\S+) free_heap=(\d+)"
CLAIM_WAIT_S = 1.0  # a tool's look at the claim holds it for microseconds: a start waits that out


class BoardRunning(BoardError):
    """`ppmid board start` on a state dir whose board runs: a second chip on the same flash."""

    code = "E_BOARD_RUNNING"


def read_state(state_dir):
    """DIR/board.json as the supervisor last wrote it (whole: it writes a copy and renames
    it). BoardError when there is none, or when what is there is not a board's state (a
    JSON object): a file cut short by a full disk, or edited by hand."""
    path = os.path.join(state_dir, "board.json")
    try:
        with open(path) as f:
            st = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        raise BoardError("no emulated board in %s (start one with `ppmid board start --state-dir %s`)"
                         % (state_dir, state_dir))
    except OSError as exc:
        raise BoardError("cannot read %s: %s" % (path, exc.strerror or exc))
    except ValueError as exc:  # not JSON, or not UTF-8
        raise BoardError("%s is not valid JSON (%s): start the board again" % (path, exc))
    if not isinstance(st, dict):
        raise BoardError("%s is not an emulated board's state (a JSON object): start the board again" % path)
    return st


def uart_pty(state_dir, name):
    """The host end of the emulated board's UART `name` (zigbee, nfc, wired) that its
    board.json names, for an emulator or client to attach to. BoardError when the board's
    state names none (the board was not started, has no such UART, or its state is broken);
    BoardNotRunning when the board is not running now (the pty it named is no longer its)."""
    st = read_state(state_dir)
    if st.get("starting") and supervisor_runs(state_dir):
        raise starting(state_dir)
    uarts = st.get("uarts")
    pty = uarts.get(name) if isinstance(uarts, dict) else None
    if not isinstance(pty, str) or not pty:
        raise BoardError("%s names no %s UART (uarts.%s): is it this board's state dir, and does the board "
                         "have one?" % (os.path.join(state_dir, "board.json"), name, name))
    if not supervisor_runs(state_dir):
        raise not_running(state_dir, "the %s UART its board.json names (%s)" % (name, pty))
    return pty


def older_sentence(state_dir, pid):
    return ("the board in %s is running (supervisor pid %d), started by an older ppmid: it holds no board.lock, so "
            "these tools neither signal it nor start a second chip on its flash: stop it with `kill %d`, then start "
            "it again with this ppmid" % (state_dir, pid, pid))


def write_json_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def set_wifi(state_dir, up):
    """Bring the emulated access point up or down (the firmware polls this file)."""
    path = os.path.join(state_dir, "wifi")
    if not os.path.exists(path):
        raise BoardError("no emulated board in %s" % state_dir)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"1" if up else b"0", 0)
    finally:
        os.close(fd)


def status(state_dir):
    """What `ppmid board status` shows: the state without the board definition, and whether
    the emulated access point is up."""
    st = dict(read_state(state_dir))
    st.pop("definition", None)
    try:
        with open(os.path.join(state_dir, "wifi"), "rb") as f:
            st["wifi"] = "up" if f.read(1) == b"1" else "down"
    except OSError:
        pass
    return st


def _otadata_module():
    """The firmware's otadata model (one place for the bootloader's rules), loaded by path:
    the host tools do not import the firmware package."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_ppmid_otadata", os.path.join(boards.FIRMWARE_DIR, "ppmid", "board", "otadata.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _signal(state_dir, pid, sig, what):
    if not pid:
        raise BoardError("the emulated board in this state dir is not running")
    # a pid from a hand-edited board.json: -1 or 0 would signal every process of this user
    if type(pid) is not int or pid < 1:
        raise BoardError("board.json names no process for %s (pid %r): start the board again" % (what, pid))
    # a killed supervisor left "running" and its pids in board.json; the kernel may have
    # given those pids to other programs since
    if not supervisor_runs(state_dir):
        supervisor = read_state(state_dir).get("supervisor_pid")
        if older_supervisor(state_dir, supervisor):  # (review r8-5: it was called "not running")
            raise BoardRunning(older_sentence(state_dir, supervisor))
        raise BoardError("the emulated board in %s is not running (board.json names %s pid %d from when it ran; "
                         "not signalled)" % (state_dir, what, pid))
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise BoardError("%s (pid %d) is not running" % (what, pid))


def stop(state_dir):
    """Stop the supervisor of the board in `state_dir` (and with it the chip)."""
    st = read_state(state_dir)
    _signal(state_dir, st.get("supervisor_pid") if st.get("running") else None, signal.SIGTERM, "the supervisor")


def kill_chip(state_dir):
    """SIGKILL the MicroPython process (a power cut); the supervisor reboots it."""
    _signal(state_dir, read_state(state_dir).get("pid"), signal.SIGKILL, "the MicroPython process")


def press_reset(state_dir):
    st = read_state(state_dir)
    _signal(state_dir, st.get("supervisor_pid") if st.get("running") else None, signal.SIGUSR1, "the supervisor")


# ---- supervisor -----------------------------------------------------------------------
class _Link:
    """Copies bytes between two pty master fds (both non-blocking), with bounded queues."""

    def __init__(self, name, a, b, a_slave, b_slave, tee=None, filter_ab=None, watch_ba=None, rate=None,
                 holds=False):
        self.name = name
        # bytes/s each way, as a UART at a baud rate moves them (8N1: 10 bits a byte); None:
        # as fast as the ptys go (some 400 KB/s here, far more than any board's serial link)
        self.rate = rate
        # a reader that takes bytes holds the writer back (may_read) instead of the queue
        # towards it dropping past UART_BUFFER_LIMIT: always with a rate, and on the console
        # without one too (mpremote reading a long print on a loaded host is slower than
        # the chip prints)
        self.holds = holds or bool(rate)
        self.allowance = {a: 0.0, b: 0.0}
        self.stamp = {a: time.monotonic(), b: time.monotonic()}
        self.fds = (a, b)
        self.slaves = {a: a_slave, b: b_slave}
        self.pending = {a: bytearray(), b: bytearray()}  # data waiting to be written TO fd
        # when fd's pty last turned full (a write took nothing), None while it takes bytes
        self.full_since = {a: None, b: None}
        # nobody reads fd's pty: it stayed full READER_STALL_S and we dropped; until a reader
        # shows up: it types into it, or more went into it than it holds (room that appears
        # in a full pty is no sign of one: the kernel moves up to 4 KB from its tty buffers
        # into the line discipline's on its own after a flush)
        self.absent = {a: False, b: False}
        self.written_since_flush = {a: 0, b: 0}
        self.tee = tee  # called with data flowing a -> b
        self.filter_ab = filter_ab  # data flowing a -> b: returns what to pass on
        self.watch_ba = watch_ba  # called with data flowing b -> a

    def other(self, fd):
        return self.fds[1] if fd == self.fds[0] else self.fds[0]

    def backlog_bound(self):
        # bytes the rate may hold back towards a reader that takes them: one pump step's
        # allowance and some (the pump comes back within 20 ms while anything is pending);
        # unthrottled, about a pty's worth
        if not self.rate:
            return UNTHROTTLED_BACKLOG
        return max(256, int(self.rate * 0.04))

    def may_read(self, fd):
        """Whether the pump reads `fd` now. With a rate, not while the bytes it sent wait for
        the line (more than backlog_bound towards a reader that takes them): the pty's own
        buffer then fills and blocks the writer, as a UART's TX FIFO blocks a print, instead
        of the queue growing past UART_BUFFER_LIMIT and dropping (review_w10-2). The console
        holds without a rate too, past UNTHROTTLED_BACKLOG. A pty nobody reads
        (nobody_reads) does not hold the writer up: a UART with nothing
        attached sends on, and those bytes are lost, as before."""
        to = self.other(fd)
        return not self.holds or self.nobody_reads(to) or len(self.pending[to]) <= self.backlog_bound()

    def nobody_reads(self, fd):
        """Whether fd's pty has nobody reading it: judged so before, or full and taking
        nothing for READER_STALL_S. A pty full for a moment is a slow reader, not a missing
        one: on a loaded host the reader is descheduled and its pty (~15 KB) fills in some
        0.2 s at 921,600 baud; taking one full write for "nobody reads" dropped half of a
        300 KB print that mpremote was reading."""
        since = self.full_since[fd]
        return self.absent[fd] or (since is not None and time.monotonic() - since > READER_STALL_S)

    def on_read(self, fd):
        try:
            # with a rate, at most what the bound lets through: one read never overruns it
            data = os.read(fd, self.backlog_bound() if self.rate else 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open (cannot happen: we hold the slaves)
            return
        if not data:
            return
        self.absent[fd] = False  # whoever typed this has fd's pty open: mpremote types first, then reads
        if fd == self.fds[0]:
            if self.tee:
                self.tee(data)
            if self.filter_ab:
                data = self.filter_ab(data)
        elif self.watch_ba:
            self.watch_ba(data)
        if data:
            self.send(self.other(fd), data)

    def drain(self, fd):
        """Pass on everything `fd` holds now (what a chip printed just before it exited)."""
        for _ in range(64):
            if not select.select([fd], [], [], 0)[0]:
                return
            self.on_read(fd)

    def send(self, fd, data):
        q = self.pending[fd]
        q += data
        self.flush(fd)
        if len(q) > UART_BUFFER_LIMIT and (not self.holds or self.nobody_reads(fd)):
            # nobody reads this end: drop the stale bytes, like a UART with nothing attached
            try:
                termios.tcflush(self.slaves[fd], termios.TCIFLUSH)
            except termios.error:
                pass
            # the room the flush made is ours, not a reader's: it stays absent
            self.absent[fd], self.full_since[fd], self.written_since_flush[fd] = True, None, 0
            del q[:len(q) - UART_BUFFER_LIMIT // 2]

    def flush(self, fd):
        q = self.pending[fd]
        while q:
            chunk = q
            if self.rate:
                # what the line moved since the last write, at most one pump step's worth
                # (the pump comes back within 20 ms while anything is pending)
                now = time.monotonic()
                self.allowance[fd] = min(self.allowance[fd] + (now - self.stamp[fd]) * self.rate,
                                         max(64.0, self.rate * 0.02))
                self.stamp[fd] = now
                if self.allowance[fd] < 1:
                    return
                chunk = q[:int(self.allowance[fd])]
            try:
                n = os.write(fd, chunk)
            except (BlockingIOError, InterruptedError):
                if self.full_since[fd] is None:
                    self.full_since[fd] = time.monotonic()
                return
            except OSError:
                q.clear()
                return
            self.full_since[fd] = None  # it took bytes: the stall, if any, starts again
            self.written_since_flush[fd] += n
            if self.written_since_flush[fd] > PTY_HOLDS_AT_MOST:
                self.absent[fd] = False
            del q[:n]
            if self.rate:
                self.allowance[fd] -= n

    def wants_write(self):
        return [fd for fd in self.fds if self.pending[fd]]


def _open_pty(raw=True):
    master, slave = os.openpty()
    if raw:
        tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def romfs_size(value, where):
    """The romfs partition's size in bytes (0: none), or BoardError: a whole number of 4 KB
    sectors, as a partition table's entry is."""
    if value is None:
        return 0
    if type(value) is not int or value < 0 or value % ROMFS_SECTOR:
        raise BoardError("%s: romfs_bytes %r: a whole number of %d-byte sectors (0: no romfs partition)"
                         % (where, value, ROMFS_SECTOR))
    return value


def emulated_definition(board):
    """boards/BOARD/board.json of a board this module can start (chip "unix"), or BoardError
    for an unknown board or a real one."""
    definition = load_board(board)
    if definition.get("chip") != "unix":
        raise BoardError("board %r is a real %s board: only emulated boards (chip \"unix\") can be started"
                         % (board, definition.get("chip")))
    return definition


class Supervisor:
    def __init__(self, state_dir, board="emulated", heap=None, micropython=None, quiet=False, parent_pid=None,
                 wdt_max_ms=None, repl_baud=None, romfs_bytes=None):
        self.state_dir = os.path.abspath(state_dir)
        self.parent_pid = parent_pid  # stop when this process is gone (a test runner killed hard)
        # tests: the watchdog fires after at most this long without a feed, whatever the
        # firmware armed, so that a deploy outlasts it as a full one outlasts 30 s on a
        # 115200-baud ESP32 (docs/platform.md "`ppmid deploy`")
        self.wdt_max_s = wdt_max_ms / 1000.0 if wdt_max_ms else None
        # the console's speed: a real board's REPL is a UART (115200 baud through a DevKitC's
        # USB bridge); unset, the ptys move bytes as fast as the host does, and a test that
        # needs a copy to outlast a window on any host sets it
        if repl_baud is not None and (not isinstance(repl_baud, int) or not 300 <= repl_baud <= 4000000):
            raise BoardError("repl baud %r: an integer from 300 to 4000000" % (repl_baud,))
        self.repl_baud = repl_baud
        self.definition = emulated_definition(board)
        self.board = board
        self.heap = heap or self.definition.get("heap", "256K")
        heap_bytes(self.heap)
        # the romfs partition (docs/emulate.md "ROMFS"): the board definition's, or the
        # caller's (tests start a board without one, or with a small one)
        self.romfs_bytes = romfs_size(self.definition.get("romfs_bytes") if romfs_bytes is None else romfs_bytes,
                                      "board %s" % board if romfs_bytes is None else "--romfs-bytes")
        self.micropython = micropython or micropython_binary()
        self.quiet = quiet
        self.proc = None
        self.stopping = False
        self.restarts = 0
        self.last_exit = None
        self.last_reason = None
        self.kill_reason = None
        self.wdt_timeout = None
        self.wdt_deadline = None
        self.spawned_at = None
        self.fast_failures = 0
        self.sel = selectors.DefaultSelector()
        self.links = []
        self._held = set()  # link fds left out of the select: _hold_back
        self.hw_buf = b""
        self.rtc_ms = None  # the emulated RTC: set by the firmware (T), lost on a power cut
        # MicroPython's pyexec mode, tracked from the console bytes: True from the chip's
        # raw-REPL banner until the host's Ctrl-B. A soft reset keeps it (as on an ESP32,
        # whose soft reset returns to the raw REPL and skips main.py); other resets clear it.
        self.raw_repl = False
        # whether the host's last word was to enter the raw REPL (Ctrl-A after any Ctrl-B):
        # what mpremote types right after its Ctrl-C, for _restart_at_repl
        self.raw_asked = False
        self._chip_tail = b""      # the end of the chip's output, for a banner split in two reads
        self._raw_boot = None      # chip output held back while a soft reset returns to raw REPL
        self._raw_boot_asked = False
        self._raw_boot_deadline = None
        self.claim_fd = None
        self.repl, self.uarts = None, {}

    # -- set-up
    def _claim(self):
        """Hold DIR/board.lock for as long as this supervisor lives, or BoardRunning: a
        second supervisor would start a second chip on the same flash image (two LittleFS
        writers), replace hw.fifo and the links under the first, and leave it orphaned."""
        path = os.path.join(self.state_dir, CLAIM_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise BoardError("cannot open %s (%s): the board's claim on its state dir lives there; check the "
                             "dir's owner and permissions" % (path, exc.strerror or exc))
        end = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < end:
                    time.sleep(0.05)
                    continue
            except OSError as exc:
                # a filesystem without file locks (NFS without lockd, some CIFS, 9p and FUSE
                # mounts: ENOLCK, EOPNOTSUPP, ENOSYS). Refused rather than started unclaimed:
                # nothing would then stop a second chip on the same flash, nor tell a tool that
                # the board stopped and its ptys went to other programs (review r8-3). POSIX
                # locks (lockf) are no fallback: Linux runs flock on NFS through them
                os.close(fd)
                raise BoardError("cannot lock %s (%s, %s): the state dir %s is on a filesystem without file locks, "
                                 "where one board per state dir cannot be held: use a state dir on a local "
                                 "filesystem (/tmp, your home)" % (path, exc.strerror or exc,
                                                                  errno.errorcode.get(exc.errno, exc.errno),
                                                                  self.state_dir))
            from host_tools.ports import flock_holder
            holder = flock_holder(fd)
            os.close(fd)
            raise BoardRunning("the board in %s is running (supervisor pid %s): `ppmid board stop --state-dir %s` "
                               "first; a second start would run a second chip on the same flash"
                               % (self.state_dir, holder[0] if holder and holder[0] else "unknown", self.state_dir))
        # a board started by an older ppmid holds no board.lock, and runs on this flash
        try:
            st = read_state(self.state_dir)
        except BoardError:
            st = {}
        pid = st.get("supervisor_pid")
        if st.get("running") and older_supervisor(self.state_dir, pid):
            os.close(fd)
            raise BoardRunning(older_sentence(self.state_dir, pid))
        self.claim_fd = fd
        # from here the dir says "running" (the flock), while board.json and the links of the
        # run before (a killed one's) still name ptys the kernel may have given to other
        # programs: until _spawn writes this run's, there are none (review r8-4), and the
        # tools refuse a board that is "starting"
        for name in PORT_LINKS:
            try:
                os.unlink(os.path.join(self.state_dir, name))
            except OSError:
                pass
        write_json_atomic(os.path.join(self.state_dir, "board.json"),
                          {"board": self.board, "running": False, "starting": True, "supervisor_pid": os.getpid(),
                           "pid": None, "repl": None, "uarts": {}})

    def _release(self):
        """What stops with the board: its links (their ptys go with it, and the kernel gives
        the numbers to other programs), then the claim."""
        for name, path in [("repl", self.repl)] + sorted(self.uarts.items()):
            link = os.path.join(self.state_dir, name)
            try:
                if path and os.readlink(link) == path:  # ours, not one a newer board made
                    os.unlink(link)
            except OSError:
                pass
        if self.claim_fd is not None:
            os.close(self.claim_fd)
            self.claim_fd = None

    def _prepare(self):
        d = self.state_dir
        os.makedirs(d, exist_ok=True)
        self._claim()
        flash_size = int(self.definition.get("fs_size", 2 * 1024 * 1024))
        self.flash_path = os.path.join(d, "flash.img")
        if not os.path.exists(self.flash_path) or os.path.getsize(self.flash_path) == 0:
            with open(self.flash_path, "wb") as f:  # erased NOR flash reads 0xff
                f.write(b"\xff" * flash_size)
        elif os.path.getsize(self.flash_path) != flash_size:
            raise BoardError("%s is %d bytes, board %s has %d bytes of flash (cut short, or another board's): "
                             "remove it to start from an erased flash, which loses what the gateway kept "
                             "(journal, keys, config)"
                             % (self.flash_path, os.path.getsize(self.flash_path), self.board, flash_size))
        self.flash_size = flash_size
        self._prepare_ota()
        self._prepare_romfs()
        uid_path = os.path.join(d, "unique_id")
        if not os.path.exists(uid_path):
            with open(uid_path, "w") as f:
                f.write(binascii.hexlify(os.urandom(6)).decode())
        with open(uid_path) as f:
            self.unique_id = f.read().strip()
        with open(os.path.join(d, "wifi"), "wb") as f:
            f.write(b"1")
        fifo = os.path.join(d, "hw.fifo")
        if os.path.exists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        self.hw_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.sel.register(self.hw_fd, selectors.EVENT_READ, ("hw", None))
        for name in ("rom.py", "romfs_partition.py"):
            with open(os.path.join(d, name), "w") as f:
                f.write(board_scripts.source(name))
        self.console = open(os.path.join(d, "console.log"), "ab", buffering=0)

        # Console: outer pty (for mpremote) <-> inner pty (the chip's controlling tty).
        out_m, out_s, self.repl = _open_pty()
        in_m, in_s, _ = _open_pty()
        self.inner_slave = in_s
        attrs = termios.tcgetattr(in_s)
        # Raw, but keep ISIG so a 0x03 from mpremote interrupts a running main.py with
        # KeyboardInterrupt (the unix port only sees Ctrl-C as SIGINT while it runs code).
        attrs[3] |= termios.ISIG | termios.NOFLSH
        attrs[6][termios.VINTR] = b"\x03"
        for c in (termios.VQUIT, termios.VSUSP):
            attrs[6][c] = b"\x00"
        self.inner_attrs = attrs
        termios.tcsetattr(in_s, termios.TCSANOW, attrs)
        self._add_link(_Link("console", in_m, out_m, in_s, out_s, tee=self.console.write,
                             filter_ab=self._from_chip, watch_ba=self._from_host,
                             rate=self.repl_baud / 10.0 if self.repl_baud else None, holds=True))

        self.uarts, self.board_uarts = {}, {}
        for key in ("zigbee_uart", "nfc", "wired_uart"):
            spec = self.definition.get(key)
            if not spec or not spec.get("pty"):
                continue
            b_m, b_s, b_path = _open_pty()
            h_m, h_s, h_path = _open_pty()
            self._add_link(_Link(spec["pty"], b_m, h_m, b_s, h_s))
            self.board_uarts[spec["pty"]] = b_path
            self.uarts[spec["pty"]] = h_path
        for name, path in [("repl", self.repl)] + sorted(self.uarts.items()):
            link = os.path.join(d, name)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(path, link)

    # -- the stand-in partition table (docs/update.md "Image updates")
    def _prepare_ota(self):
        """Two app partitions (erased) and the OTA data next to the flash image."""
        self.ota_size = int(self.definition.get("ota_size", 1024 * 1024))
        self.ota_running = None
        otadata = _otadata_module()
        for label in otadata.LABELS:
            path = os.path.join(self.state_dir, label + ".bin")
            if not os.path.exists(path) or os.path.getsize(path) != self.ota_size:
                with open(path, "wb") as f:
                    f.write(b"\xff" * self.ota_size)
        path = os.path.join(self.state_dir, "otadata")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(otadata.dump(otadata.initial()))

    def _prepare_romfs(self):
        """The romfs partition as a file (erased: 0xff), when the board has one."""
        self.romfs_path = os.path.join(self.state_dir, "romfs.bin")
        if not self.romfs_bytes:
            return
        if not os.path.exists(self.romfs_path):
            with open(self.romfs_path, "wb") as f:
                f.write(b"\xff" * self.romfs_bytes)
        elif os.path.getsize(self.romfs_path) != self.romfs_bytes:
            raise BoardError("%s is %d bytes, the board's romfs partition %d (another board's, or another "
                             "romfs_bytes): remove it to start from an erased partition"
                             % (self.romfs_path, os.path.getsize(self.romfs_path), self.romfs_bytes))

    def _ota_boot(self):
        """The bootloader's step at a hard reset or power-on: which partition boots (a new
        one's first boot, or the previous one when that first boot was not marked valid)."""
        otadata = _otadata_module()
        path = os.path.join(self.state_dir, "otadata")
        with open(path, "rb") as f:
            rec = otadata.parse(f.read(otadata.RECORD))
        label, rec = otadata.boot_step(rec)
        with open(path, "r+b") as f:
            f.write(otadata.dump(rec))
        if rec.get("state") == "aborted" and label != self.ota_running:
            self.console.write(("\r\n[emuboard] bootloader: %s was not marked valid: booting %s\r\n"
                                % (rec.get("rolled_back"), label)).encode())
        self.ota_running = label

    def _add_link(self, link):
        self.links.append(link)
        for fd in link.fds:
            self.sel.register(fd, selectors.EVENT_READ, ("link", link))

    def _hold_back(self):
        # a link fd whose bytes wait for the line is left out of the select (not skipped
        # after it: a readable fd that is not read would wake the select at once, a busy loop)
        for link in self.links:
            for fd in link.fds:
                want = link.may_read(fd)
                if want and fd in self._held:
                    self._held.discard(fd)
                    self.sel.register(fd, selectors.EVENT_READ, ("link", link))
                elif not want and fd not in self._held:
                    self._held.add(fd)
                    self.sel.unregister(fd)

    def state(self):
        return {
            "board": self.board, "definition": self.definition, "heap": self.heap,
            "repl": self.repl, "uarts": self.uarts, "board_uarts": self.board_uarts,
            "pid": self.proc.pid if self.proc and self.proc.poll() is None else None,
            "supervisor_pid": os.getpid(), "running": not self.stopping,
            "restarts": self.restarts, "last_exit": self.last_exit, "last_reason": self.last_reason,
            "spawned_at": self.spawned_at, "unique_id": self.unique_id,
            "flash": self.flash_path, "flash_size": self.flash_size,
            "console": self.console.name, "wifi_file": os.path.join(self.state_dir, "wifi"),
            "rtc_ms": self.rtc_ms,
            "ota": {"running": self.ota_running, "size": self.ota_size},
            "romfs": {"path": self.romfs_path, "size": self.romfs_bytes} if self.romfs_bytes else None,
        }

    def _write_state(self):
        write_json_atomic(os.path.join(self.state_dir, "board.json"), self.state())

    def _console_note(self, text):
        data = ("\r\n[emuboard] %s\r\n" % text).encode()
        self.console.write(data)
        self.links[0].send(self.links[0].fds[1], data)

    # -- the console: raw-REPL mode across soft resets
    def _from_host(self, data):
        a, b = data.rfind(CTRL_A), data.rfind(CTRL_B)
        if b > a:
            self.raw_repl = False
        if a != b:
            self.raw_asked = a > b

    def _from_chip(self, data):
        seen = self._chip_tail + data
        if RAW_REPL_BANNER in seen:
            self.raw_repl = True
            seen = seen[seen.rindex(RAW_REPL_BANNER) + len(RAW_REPL_BANNER):]
        self._chip_tail = seen[-len(RAW_REPL_BANNER):]
        if self._raw_boot is None:
            return data
        # A soft reset in raw-REPL mode: the unix port comes up in its friendly REPL, so the
        # supervisor types Ctrl-A for the host at the first prompt and hides that REPL's
        # banner: the host sees boot.py's output, then the raw REPL, as from an ESP32.
        buf = self._raw_boot
        buf += data
        if not self._raw_boot_asked and FRIENDLY_PROMPT in buf:
            self._raw_boot_asked = True
            console = self.links[0]
            console.send(console.fds[0], CTRL_A)
        at = buf.find(RAW_REPL_BANNER)
        if at < 0:
            return b""
        banner = buf.rfind(b"MicroPython ", 0, at)
        out = bytes(buf[:banner if banner >= 0 else at]) + bytes(buf[at:])
        self._raw_boot = None
        self._raw_boot_deadline = None
        return out

    def _end_raw_boot(self, why):
        """Stop holding back the chip's output (it did not get to the raw REPL)."""
        if self._raw_boot is None:
            return
        held, self._raw_boot = bytes(self._raw_boot), None
        self._raw_boot_deadline = None
        console = self.links[0]
        console.send(console.fds[1], held)
        self._console_note("soft reset: no raw REPL (%s)" % why)

    # -- the chip
    def _spawn(self, raw_repl=False, interrupted=False):
        """Start the chip. interrupted: again at the REPL after a Ctrl-C that landed in the
        unix port's GC (_restart_at_repl): no reboot, so no bootloader step, and the
        watchdog the app armed runs on, as through an ESP32's Ctrl-C."""
        termios.tcsetattr(self.inner_slave, termios.TCSANOW, self.inner_attrs)
        termios.tcflush(self.inner_slave, termios.TCIFLUSH)
        if not interrupted:
            self.wdt_timeout = self.wdt_deadline = None
        self.kill_reason = None
        self._drain_hw()
        self.spawned_at = time.time()
        if not interrupted and (self.last_reason != "soft_reset" or self.ota_running is None):
            self._ota_boot()  # the bootloader runs at a hard reset, not at a soft one
        self._write_state()  # the ROM reads board.json (restarts, ptys) at boot
        env = dict(os.environ, EMUBOARD_DIR=self.state_dir)
        env.pop("EMUBOARD_RAW_REPL", None)
        env.pop("EMUBOARD_INTERRUPTED", None)
        if interrupted:  # the ROM skips main.py: the Ctrl-C stopped the app
            env["EMUBOARD_INTERRUPTED"] = "1"
        if raw_repl:  # the ROM skips main.py, as the ESP32 port does in raw-REPL mode
            env["EMUBOARD_RAW_REPL"] = "1"
            self._raw_boot = bytearray()
            self._raw_boot_asked = False
            self._raw_boot_deadline = time.monotonic() + RAW_BOOT_TIMEOUT_S
        s = self.inner_slave

        def make_ctty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        # the romfs partition is a bytearray on the chip's heap (on an ESP32: mapped flash,
        # outside it), so the chip gets its size on top, with the GC's tables for it (1/64:
        # 2 + 1 bits a 32-byte block, rounded up), and the app keeps the heap board.json names
        heapsize = heap_bytes(self.heap) + self.romfs_bytes + self.romfs_bytes // 64
        self.proc = subprocess.Popen(
            [self.micropython, "-X", "heapsize=%d" % heapsize, "-i", os.path.join(self.state_dir, "rom.py")],
            stdin=s, stdout=s, stderr=s, cwd=self.state_dir, env=env,
            start_new_session=True, preexec_fn=make_ctty, close_fds=True)
        self._write_state()

    def _restart_at_repl(self):
        """The ROM found that a Ctrl-C landed in the unix port's garbage collector (rom.py
        _INTERRUPTED: MICROPY_ASYNC_KBD_INTR raises KeyboardInterrupt from the SIGINT
        handler wherever the C code is; there it left the heap locked, and the chip died of
        it, a crash taken for a hard reset). An ESP32's Ctrl-C stops main.py at a bytecode
        and leaves the board at the REPL, not reset: the chip starts again there (main.py not
        run, boot.py run again), with no bootloader step, the RTC and the armed watchdog as
        they were, not counted in restarts nor in last_reason. The host's Ctrl-A that came
        with its Ctrl-C (mpremote entering the raw REPL) went with the old chip's input: it
        is typed again at the first prompt, as after a soft reset in raw-REPL mode."""
        console = self.links[0]
        console.drain(console.fds[0])
        self._end_raw_boot("the chip exited first")
        self.proc = None
        if self.stopping:
            return
        raw_repl, self.raw_repl = self.raw_asked, False
        self._console_note("Ctrl-C landed in the unix port's garbage collector (heap locked): the chip starts "
                           "again at the REPL, as an ESP32's Ctrl-C leaves it (not a reboot)")
        self._spawn(raw_repl=raw_repl, interrupted=True)

    def _reaped(self, code):
        if self.kill_reason is not None and self.kill_reason[0] == "interrupted":
            self._restart_at_repl()
            return
        if self.kill_reason is not None:
            reason, code = self.kill_reason
        elif code == EXIT_SOFT_RESET:
            reason = "soft_reset"
        elif code < 0:
            reason = "killed" if code in (-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT) else "crash"
        else:
            reason = "crash"
        self.last_exit, self.last_reason = code, reason
        console = self.links[0]
        console.drain(console.fds[0])  # what the chip printed last goes out before the reboot line
        self._end_raw_boot("the chip exited first")
        raw_repl = self.raw_repl and reason == "soft_reset"
        self.raw_repl = False
        if reason == "killed":  # a power cut: the ESP32's RTC (no battery) starts again at 2000
            self.rtc_ms = None
        lived = time.time() - (self.spawned_at or 0)
        self.proc = None
        if self.stopping:
            return
        self.restarts += 1
        self.fast_failures = self.fast_failures + 1 if lived < 1.0 else 0
        if reason == "soft_reset":  # the host sees the ESP32 port's line, the log both
            self.console.write(("\r\n[emuboard] reboot: %s (exit %s)\r\n" % (reason, code)).encode())
            self.console.write(SOFT_REBOOT_LINE)
            console.send(console.fds[1], SOFT_REBOOT_LINE)
        else:
            self._console_note("reboot: %s (exit %s)" % (reason, code))
        self._write_state()
        if self.fast_failures > 3:  # a boot loop: slow down like a brown-out detector would
            self._pump(min(2.0, 0.2 * self.fast_failures))
        self._spawn(raw_repl=raw_repl)

    def _kill_chip(self, reason, code):
        if self.proc and self.proc.poll() is None and self.kill_reason is None:
            self.kill_reason = (reason, code)
            self.proc.kill()

    def _drain_hw(self):
        try:
            while os.read(self.hw_fd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self.hw_buf = b""

    def _on_hw(self):
        try:
            self.hw_buf += os.read(self.hw_fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        while b"\n" in self.hw_buf:
            line, self.hw_buf = self.hw_buf.split(b"\n", 1)
            cmd, arg = line[:1], line[1:]
            if cmd == b"F" and self.wdt_timeout:
                self.wdt_deadline = time.monotonic() + self.wdt_timeout
            elif cmd == b"W":
                self.wdt_timeout = max(1, int(arg or 5000)) / 1000.0
                if self.wdt_max_s:
                    self.wdt_timeout = min(self.wdt_timeout, self.wdt_max_s)
                self.wdt_deadline = time.monotonic() + self.wdt_timeout
            elif cmd == b"T":
                self.rtc_ms = int(arg)
            elif cmd == b"R":
                code = int(arg or EXIT_RESET)
                self._kill_chip("soft_reset" if code == 0 else "interrupted" if code == EXIT_INTERRUPTED else "reset",
                                code)

    def _pump(self, timeout):
        end = time.monotonic() + timeout
        while True:
            for link in self.links:
                for fd in link.wants_write():
                    link.flush(fd)
            now = time.monotonic()
            if now >= end:
                return
            wait = end - now
            if self.wdt_deadline is not None:
                wait = max(0.0, min(wait, self.wdt_deadline - now))
            self._hold_back()
            events = self.sel.select(min(wait, 0.02) if any(l.wants_write() for l in self.links) else wait)
            for key, _ in events:
                kind, link = key.data
                if kind == "hw":
                    self._on_hw()
                else:
                    link.on_read(key.fd)
            if self._raw_boot_deadline is not None and time.monotonic() > self._raw_boot_deadline:
                self._end_raw_boot("no raw-REPL banner within %ss" % RAW_BOOT_TIMEOUT_S)
            if self.wdt_deadline is not None and time.monotonic() > self.wdt_deadline:
                self.wdt_deadline = None
                self._console_note("watchdog expired (%.1f s without feed): reset" % self.wdt_timeout)
                self._kill_chip("watchdog", EXIT_WATCHDOG)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGUSR1:
            self._kill_chip("reset_button", EXIT_RESET_BUTTON)
        else:
            self.stopping = True

    def run(self, ready=None):
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(s, self._on_signal)
        try:
            self._prepare()
        except BaseException:
            self._release()
            raise
        self._spawn()
        if not self.quiet:
            print("emulated board %s: REPL %s, UARTs %s, state %s" % (self.board, self.repl, self.uarts, self.state_dir),
                  flush=True)
        try:
            while not self.stopping:
                self._pump(0.1)
                if self.parent_pid and os.getppid() != self.parent_pid:
                    break
                if self.proc is not None:
                    code = self.proc.poll()
                    if code is not None:
                        self._reaped(code)
        finally:
            self.stopping = True
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._write_state()
            self.console.close()
            self._release()
        return 0


# ---- test-side context manager --------------------------------------------------------
class BoardTimeout(AssertionError):
    pass


class EmulatedBoard:
    """An emulated board running under a supervisor subprocess, for tests and tools.

        with EmulatedBoard(tmp_path) as b:
            b.deploy()                      # mpremote over b.repl, then reboot
            b.wait_for(r"PPMID ready")      # the console, pexpect-style
            out = b.exec("print(1 + 1)")    # interrupts main.py, like a real board
    """

    def __init__(self, state_dir, board="emulated", heap=None, start_timeout=20, wdt_max_ms=None, repl_baud=None,
                 romfs_bytes=None):
        self.state_dir = os.path.abspath(str(state_dir))
        self.romfs_bytes = romfs_bytes
        self.repl_baud = repl_baud
        self.board = board
        self.heap = heap
        self.wdt_max_ms = wdt_max_ms
        self.start_timeout = start_timeout
        self.proc = None
        self._cursor = 0
        emulated_definition(board)

    # -- life cycle
    def start(self):
        os.makedirs(self.state_dir, exist_ok=True)
        cmd = [sys.executable, "-m", "host_tools.emuboard", "--state-dir", self.state_dir, "--board", self.board,
               "--parent-pid", str(os.getpid())]
        if self.heap:
            cmd += ["--heap", str(self.heap)]
        if self.wdt_max_ms:
            cmd += ["--wdt-max-ms", str(self.wdt_max_ms)]
        if self.repl_baud:
            cmd += ["--repl-baud", str(self.repl_baud)]
        if self.romfs_bytes is not None:
            cmd += ["--romfs-bytes", str(self.romfs_bytes)]
        log = open(os.path.join(self.state_dir, "supervisor.log"), "ab")
        try:
            log_at = log.tell()  # (appended: older runs' lines are before it)
            self.proc = subprocess.Popen(cmd, cwd=boards.CHECKOUT, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        end = time.monotonic() + self.start_timeout
        while True:
            try:
                st = read_state(self.state_dir)
                if st.get("supervisor_pid") == self.proc.pid and st.get("pid"):
                    break
            except (BoardError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise self._exit_error(log_at)
            if time.monotonic() > end:
                self.stop()
                raise BoardError("emulated board did not start in %ss" % self.start_timeout)
            time.sleep(0.02)
        self._cursor = len(self.console_bytes())
        return self

    def stop(self):
        """Stop the supervisor: SIGINT, then SIGTERM, then SIGKILL (and the chip with it)."""
        if not self.proc:
            return
        for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 3), (signal.SIGKILL, 3)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        # if the supervisor died hard, do not leave the chip running
        try:
            pid = read_state(self.state_dir).get("pid")
            if pid and self.proc.returncode == -signal.SIGKILL:
                os.kill(pid, signal.SIGKILL)
        except (BoardError, ValueError, ProcessLookupError, PermissionError):
            pass
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- state
    def state(self):
        return read_state(self.state_dir)

    @property
    def repl(self):
        return self.state()["repl"]

    @property
    def uarts(self):
        return self.state()["uarts"]

    @property
    def restarts(self):
        return self.state()["restarts"]

    @property
    def pid(self):
        return self.state()["pid"]

    # -- console
    def console_bytes(self):
        try:
            with open(os.path.join(self.state_dir, "console.log"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def console_text(self):
        return self.console_bytes().decode("utf-8", "replace")

    def mark(self):
        """The current end of the console log, for wait_for(since=...)."""
        return len(self.console_bytes())

    def _exit_error(self, log_at):
        """Why the supervisor started from log_at in supervisor.log ended: its own refusal
        (`ppmid: E_CODE: sentence`, main's last line) as that error in one line
        (BoardRunning for a dir whose board runs, review r8-6), else this run's log tail."""
        try:
            with open(os.path.join(self.state_dir, "supervisor.log"), "rb") as f:
                f.seek(log_at)
                text = f.read().decode("utf-8", "replace").replace("\r", "")
        except OSError:
            text = ""
        lines = [line for line in text.splitlines() if line.strip()]
        said = re.match(r"ppmid: (E_[A-Z0-9_]+): (.+)$", lines[-1]) if lines else None
        if said and "Traceback" not in text:
            exc = (BoardRunning if said.group(1) == BoardRunning.code else BoardError)(said.group(2))
            exc.code = said.group(1)
            return exc
        return BoardError("emulated board supervisor exited with %s:\n%s"
                          % (self.proc.returncode, "\n".join(lines[-25:]) or "(nothing in supervisor.log)"))

    def _tail(self, name, lines=25):
        try:
            with open(os.path.join(self.state_dir, name), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return "(no %s)" % name
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def wait_for(self, regex, timeout=15, since=None):
        """Wait until `regex` appears in the console after `since` (default: after the
        previous wait_for match, pexpect-style) and return the match. On timeout, raise
        BoardTimeout showing the last console lines."""
        pattern = re.compile(regex.encode() if isinstance(regex, str) else regex)
        start = self._cursor if since is None else since
        end = time.monotonic() + timeout
        while True:
            data = self.console_bytes()
            m = pattern.search(data, start)
            if m:
                self._cursor = m.end()
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise BoardError("the board supervisor exited (%s) while waiting for %r; console:\n%s"
                                 % (self.proc.returncode, regex, self._tail("console.log")))
            if time.monotonic() > end:
                raise BoardTimeout("no %r on the console within %ss; last console lines:\n%s"
                                   % (regex, timeout, self._tail("console.log")))
            time.sleep(0.02)

    def wait_ready(self, timeout=20, since=None):
        return self.wait_for(BANNER_RE, timeout, since)

    # -- actions
    def exec(self, code, timeout=30):
        """Run `code` on the board with `mpremote resume exec` and return its output. Like on
        a real board this interrupts main.py (the app stops until the next reboot)."""
        return mpremote(self.repl, ["exec", code], timeout=timeout)

    def deploy(self, wait=True, timeout=60, **kw):
        """Compile and copy firmware/ with `ppmid deploy`, reboot, and (wait=True) return
        the ready-banner match."""
        mark = self.mark()
        deploy.deploy(self.repl, self.board, log=kw.pop("log", None), **kw)
        if wait:
            return self.wait_ready(timeout, since=mark)
        return None

    def kill(self):
        """SIGKILL the MicroPython process (power cut); the supervisor reboots it."""
        pid = self.pid
        if not pid:
            raise BoardError("the chip is not running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def reset(self):
        """Press the reset button."""
        os.kill(self.proc.pid, signal.SIGUSR1)

    def wifi(self, up):
        set_wifi(self.state_dir, up)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.emuboard")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--board", default="emulated")
    ap.add_argument("--heap")
    ap.add_argument("--parent-pid", type=int, help="stop when this (parent) process exits")
    ap.add_argument("--wdt-max-ms", type=int,
                    help="tests: the watchdog fires after at most this many ms without a feed, whatever the firmware armed")
    ap.add_argument("--repl-baud", type=int,
                    help="the console moves bytes as a UART at this baud rate (8N1) would; default: as fast as the host")
    ap.add_argument("--romfs-bytes", type=int,
                    help="the romfs partition's size (0: none); default: the board definition's romfs_bytes")
    args = ap.parse_args(argv)
    try:
        sup = Supervisor(args.state_dir, args.board, heap=args.heap, parent_pid=args.parent_pid,
                         wdt_max_ms=args.wdt_max_ms, repl_baud=args.repl_baud, romfs_bytes=args.romfs_bytes)
        return sup.run()
    except BoardError as exc:  # (a flash image of the wrong size, ...): one line in supervisor.log
        print("ppmid: %s: %s" % (exc.code, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
