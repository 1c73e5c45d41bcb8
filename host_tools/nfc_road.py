"""The NFC road of a trace replay (docs/trace.md, docs/nfc.md): lines with `"via":
"nfc-phone"` or `"nfc-tag"` are carried through a PN532 emulator on the board's NFC UART.

At the line's time the replayer hands the signed envelope here; a phone (the PPMID app,
PhoneApp) or a tag holding it in an NDEF record is placed on the reader. One
reader has one field: taps are served one after the other, in trace order, each with the
field seen empty in between (the reader serves a target again only then). A phone stays
until the gateway pushed it the result (or refused the command, or `phone_wait_s`
passed); its result is also the command's final status in the report, since a result
the phone took need not be published over MQTT. A tag stays `tag_hold_s` and is read
one way; its statuses come over MQTT like any other command's.
"""
import os
import queue
import threading
import time

from host_tools import mpcompat

mpcompat.install()

from ppmid import envelope as _envelope  # noqa: E402  (firmware module, after mpcompat)

VIAS = ("nfc-phone", "nfc-tag")


class NfcRoadError(Exception):
    code = "E_NFC_ROAD"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:  # a board's or a port's own refusal keeps its code
            self.code = code


def reader_path(endpoint):
    """The host end of the board's PN532 UART: a pty or serial device path as given, or
    for an emulated board's state dir, the pty its board.json names (uarts.nfc)."""
    if os.path.isdir(endpoint):
        from host_tools.emuboard import BoardError, BoardNotRunning, uart_pty
        try:
            return uart_pty(endpoint, "nfc")
        except (BoardError, BoardNotRunning) as exc:
            raise NfcRoadError(str(exc), exc.code)
    from host_tools.errors import ToolError
    from host_tools.ports import check_board_link
    try:
        check_board_link(endpoint)  # DIR/nfc of a stopped board: E_BOARD_NOT_RUNNING, not "not a pty"
    except ToolError as exc:
        raise NfcRoadError(str(exc), exc.code)
    if not os.path.exists(endpoint) or os.path.isfile(endpoint):
        raise NfcRoadError("%s is not a pty or serial device (nor an emulated board's state dir)" % endpoint)
    return endpoint


def open_reader(endpoint, baud=115200):
    """A started PN532 emulator on `endpoint` (reader_path). The line is set to `baud`
    (a USB-UART wired to a real board's PN532 pins needs it; a pty ignores it). The port is
    held as the other tools hold theirs (a PortLock, let go by the emulator's stop): a
    stopped board's link (DIR/nfc) is refused before anything opens the pty it names,
    which may be another program's now, and a port another tool serves is PortBusy."""
    import termios
    from host_tools.pn532_emulator.chip import PN532Emulator
    from host_tools.errors import ToolError
    from host_tools.ports import PortLock
    path = reader_path(endpoint)
    try:
        hold = PortLock(path).acquire()
    except ToolError as exc:  # BoardNotRunning, PortBusy, PortLockError
        raise NfcRoadError(str(exc), exc.code)
    try:
        emu = PN532Emulator.on_path(path, baud=baud)
    except OSError as exc:
        hold.release()
        raise NfcRoadError("cannot open %s: %s" % (path, exc.strerror or exc))
    stop = emu.stop

    def stop_and_let_go():
        try:
            stop()
        finally:
            hold.release()
    emu.stop = stop_and_let_go
    try:
        attrs = termios.tcgetattr(emu.fd)
        speed = getattr(termios, "B%d" % baud, None)
        if speed is not None:
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(emu.fd, termios.TCSANOW, attrs)
    except termios.error:
        pass  # not a terminal device: nothing to set
    return emu.start()


class NfcRoad:
    """Callable as a Replayer's `nfc`: road(line, envelope). `note(id, status_dict)` is
    where a phone's result goes (Replayer.note)."""

    def __init__(self, pn532, note, phone_wait_s=40.0, tag_hold_s=1.5, gap_s=0.4, log=None):
        self.pn532 = pn532
        self.note = note
        self.phone_wait_s = phone_wait_s
        self.tag_hold_s = tag_hold_s
        self.gap_s = gap_s
        self.log = log or (lambda m: None)
        self.taps = []          # (id, via, placed at time.time(), outcome)
        self.errors = []
        self._queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nfc-road", daemon=True)
        self._thread.start()

    def __call__(self, line, env):
        if line["via"] not in VIAS:
            raise ValueError("not an NFC road: %r" % line["via"])
        self._queue.put((line, _envelope.to_binary(env)))

    def _target(self, line, binary):
        from host_tools.pn532_emulator.targets import PhoneApp, Type2Tag, Type4Tag, ndef_mime_message
        if line["via"] == "nfc-phone":
            # a phone's UID is random per tap (docs/nfc.md)
            return PhoneApp(binary, id=line["id"], uid=b"\x08" + os.urandom(3))
        msg = ndef_mime_message(binary)
        if len(msg) + 4 <= Type2Tag.SIZES["ntag216"]:  # + the NDEF TLV's header and terminator
            return Type2Tag(msg, uid=b"\x04" + os.urandom(6))
        # a command too big for the largest NTAG goes on a Type 4 tag (no such size limit)
        return Type4Tag(msg, uid=b"\x08" + os.urandom(3))

    def _run(self):
        while not self._stop.is_set():
            try:
                line, binary = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._tap(line, binary)
            except Exception as exc:  # noqa: BLE001 - recorded in the report, the replay goes on
                self.errors.append("%s: %r" % (line["id"], exc))
            finally:
                self.pn532.remove()
                self._stop.wait(self.gap_s)
                self._queue.task_done()  # counted as under way until here (stop() drains)

    def _tap(self, line, binary):
        target = self._target(line, binary)
        placed = time.time()
        self.pn532.place(target)
        self.log("nfc: %s %s placed" % (line["via"], line["id"]))
        if line["via"] == "nfc-tag":
            self._stop.wait(self.tag_hold_s)
            read = target.apdus or getattr(target, "frames", None)
            self.taps.append((line["id"], line["via"], placed, "read" if read else "unread"))
            return
        deadline = time.monotonic() + self.phone_wait_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if target.result is not None:
                r = target.result
                status = {"id": line["id"], "status": r["status"], "via": line["via"], "road": "phone"}
                if r.get("code"):
                    status["error"] = {"code": r["code"], "message": r.get("message", "")}
                self.note(line["id"], status)
                self.taps.append((line["id"], line["via"], placed, r["status"]))
                return
            refused = [s for s in target.statuses if s[1] != "OK"]
            if refused:
                sw, code, message = refused[0]
                self.note(line["id"], {"id": line["id"], "status": "rejected", "via": line["via"], "road": "phone",
                                       "error": {"code": code, "message": message}})
                self.taps.append((line["id"], line["via"], placed, "rejected"))
                return
            time.sleep(0.05)
        self.taps.append((line["id"], line["via"], placed, "no result on the phone"))

    def report(self):
        """The report's "nfc" entry: each tap's id, road and outcome; errors placing a target."""
        return {"taps": [{"id": i, "via": v, "outcome": o} for i, v, _, o in self.taps], "errors": list(self.errors)}

    def pending(self):
        return self._queue.qsize()

    def stop(self, drain_s=15.0):
        """Let the taps under way and queued finish (a phone may still be waiting for its
        result when the same result has already come over MQTT), at most drain_s, then stop."""
        end = time.monotonic() + drain_s
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)
