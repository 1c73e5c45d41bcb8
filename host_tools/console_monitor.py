"""A board's console, line by line, with the host's time in front and a log-level filter
(`ppmid monitor`, docs/captures.md "Console monitor").

The firmware prints plain lines: the relay's as `relay LEVEL: ...` (error, warn, info),
the app's as `PPMID what: ...`, and MicroPython's tracebacks. `LevelClassifier` gives each
line a level: error for `relay error:`, `PPMID crashed`, `config-error` and every line of a
traceback (up to and including its exception line); warn for `relay warn:`; info for the
rest. Nothing here talks to the board: it reads a serial port or pty (pyserial) or follows
the emulated board's console.log.
"""
import os
import re
import time

LEVELS = ("info", "warn", "error")

_ERROR_RE = re.compile(r"^(relay error:|PPMID crashed|.*config-error)")
_WARN_RE = re.compile(r"^relay warn:")
_EXCEPTION_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


class MonitorError(Exception):
    code = "E_MONITOR"


class LevelClassifier:
    """level(line) -> "info" | "warn" | "error"; remembers whether a traceback is open."""

    def __init__(self):
        self._in_traceback = False

    def level(self, line):
        if line.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
            return "error"
        if self._in_traceback:
            # the frames are indented; the first line that is not ends the traceback
            if not line.startswith(" "):
                self._in_traceback = False
            return "error"
        if _ERROR_RE.match(line):
            return "error"
        if _WARN_RE.match(line):
            return "warn"
        if _EXCEPTION_RE.match(line):
            return "error"
        return "info"


class LineSplitter:
    """Bytes in, whole text lines out (CR LF or LF; a lone CR is dropped)."""

    def __init__(self):
        self._buf = b""

    def feed(self, data):
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        return [x.rstrip(b"\r").decode("utf-8", "replace") for x in lines]

    def rest(self):
        out, self._buf = self._buf, b""
        return out.rstrip(b"\r").decode("utf-8", "replace") if out else None


def stamp(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) + ".%03d" % int((t % 1) * 1000)


class Monitor:
    """Feeds bytes from a source to `out(text_line)` with timestamps, keeping lines at or
    above `min_level` (and matching `pattern`, a regex, when given)."""

    def __init__(self, out, min_level="info", pattern=None, with_level=True):
        if min_level not in LEVELS:
            raise MonitorError("level must be one of %s" % ", ".join(LEVELS))
        self.out = out
        self.min_rank = LEVELS.index(min_level)
        try:
            self.pattern = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise MonitorError("--grep %r is not a regular expression: %s" % (pattern, exc))
        self.with_level = with_level
        self.classifier = LevelClassifier()
        self.splitter = LineSplitter()
        self.shown = 0
        self.seen = 0

    def feed(self, data, t=None):
        t = time.time() if t is None else t
        for line in self.splitter.feed(data):
            self._line(line, t)

    def flush(self, t=None):
        rest = self.splitter.rest()
        if rest:
            self._line(rest, time.time() if t is None else t)

    def _line(self, line, t):
        self.seen += 1
        level = self.classifier.level(line)  # every line: a traceback's state depends on it
        if LEVELS.index(level) < self.min_rank:
            return
        if self.pattern is not None and not self.pattern.search(line):
            return
        self.shown += 1
        self.out("%s %s%s" % (stamp(t), "%-5s " % level if self.with_level else "", line))


def read_port(port, monitor, baud=115200, until=None, stop=None):
    """Read a serial port or pty until `until` (time.monotonic()) or stop() is true."""
    import serial
    from host_tools.ports import PortLock
    hold = PortLock(port).acquire()  # PortBusy: mpremote or a deploy has the port
    try:
        s = serial.Serial(port, baud, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        hold.release()
        raise MonitorError("cannot open %s: %s" % (port, exc))
    try:
        while (until is None or time.monotonic() < until) and not (stop and stop()):
            try:
                data = s.read(4096)
            except serial.SerialException as exc:
                raise MonitorError("%s: %s (board unplugged?)" % (port, exc))
            if data:
                monitor.feed(data)
    finally:
        s.close()
        hold.release()
        monitor.flush()


def follow_file(path, monitor, from_end=True, until=None, stop=None, poll_s=0.1):
    """Follow a growing file (the emulated board's console.log), like tail -f; a file that
    shrinks (a new board state dir) is read again from its start."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise MonitorError("cannot read %s: %s" % (path, exc.strerror or exc))
    with f:
        if from_end:
            f.seek(0, os.SEEK_END)
        while (until is None or time.monotonic() < until) and not (stop and stop()):
            data = f.read(65536)
            if data:
                monitor.feed(data)
                continue
            if os.path.getsize(path) < f.tell():
                f.seek(0)
            time.sleep(poll_s)
    monitor.flush()
