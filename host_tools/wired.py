"""The laptop's end of the wired road (docs/wired.md): frames over a serial port (a USB
serial adapter on the board's wired UART, or the emulated board's DIR/wired pty).

The framing is the firmware's own (ppmid.wired.frames, imported through mpcompat), so
both ends cannot drift apart. `WiredClient` sends envelopes and collects what the gateway
says: an ACK or a NACK per frame, STATUS and RESULT messages (the MQTT rsp JSON of
docs/mqtt.md), each RESULT of a command it sent or named in a HELLO answered with TAKEN
once it is recorded. A RESULT of any other command (an earlier run's, a `ppmid send` that
timed out) is kept apart in `others` and not taken: the gateway keeps it for its sender. `unplug()` / `plug()`
close and reopen the port like a cable pulled and plugged back: on plug the client sends
a HELLO naming the commands it has no result for, and the gateway sends what it kept.
`WiredReplayer` replays a trace (docs/trace.md) over the wire and reports like
host_tools.replay.
"""
import binascii
import json
import threading
import time

from host_tools import mpcompat

mpcompat.install()

from ppmid.wired import frames as F  # noqa: E402  (firmware module, after mpcompat)

# NACK codes after which the same frame may simply go again (nothing was accepted)
RETRY_CODES = (F.E_WIRE_CRC, F.E_WIRE_TIMEOUT, F.E_WIRE_RATE, F.E_WIRE_SYNC, "E_BUSY")
FINAL = ("response", "rejected", "failed")
# ids in one HELLO: the gateway refuses more than wired.keep + 64 (road.py's _WATCH_MAX);
# 32 ids of at most 32 bytes (envelope.ID_MAX) make a payload of at most 1,057 bytes, within
# the frame a gateway takes from limits.max_gbcs 920 up (the default is 8192)
HELLO_IDS = 32


class WiredError(Exception):
    """The wired road's laptop side: a port that cannot be opened, a gateway that does not answer."""

    code = "E_WIRED"


def envelope_bytes(key, line, now_s=None, targets=None):
    """The binary envelope of a trace line: the one signed elsewhere (`ppmid sign`, the
    line's "envelope"), else signed here with `key` (a command, or a top-up for a line with
    "utrn": its "target" resolved through `targets`, default the test meters)."""
    if line.get("envelope") is not None:
        return bytes(line["envelope"])
    if key is None:
        raise WiredError("line %s has no signed envelope and no envelope key was given" % line["id"])
    now_s = time.time() if now_s is None else now_s
    if line.get("utrn") is not None:
        from host_tools.replay import envelope_payload
        return _binary(envelope_payload(key, line, now_s, targets)[0])
    from ppmid import envelope
    expires = None if line.get("expires_in_s") is None else int(now_s) + line["expires_in_s"]
    return envelope.to_binary(envelope.sign(key, line["id"], line["gbcs"], expires))


def envelope_id(env_bytes):
    from ppmid import envelope
    return envelope.from_binary_any(env_bytes, 65535).id


class WiredClient:
    def __init__(self, port, baud=115200, log=None, ack_timeout_s=8.0, tries=6, retry_pause_s=0.5):
        self.port = port
        self.baud = baud
        self.log = log or (lambda m: None)
        self.ack_timeout_s = ack_timeout_s
        self.tries = tries
        self.retry_pause_s = retry_pause_s
        self._cond = threading.Condition()
        self._wlock = threading.Lock()
        self._ser = None
        self._hold = None        # the PortLock while the port is open
        self._thread = None
        self._stop = False
        self._seq = 0
        self.answers = {}        # seq -> ("ack",) | ("nack", code, message)
        self.received = {}       # id -> [(t_monotonic, message dict)] statuses and results
        self.results = {}        # id -> final message dict
        self.asked = set()       # ids sent or named in a HELLO here: only their RESULTs are TAKEN
        self.others = {}         # id -> RESULT of a command not sent or asked for here (not TAKEN)
        self.channel_errors = []  # (code, message) NACKs not about one of our frames
        self.hello = None        # the gateway's last HELLO answer
        self.stats = {"frames_sent": 0, "resends": 0, "acks": 0, "nacks": 0, "results": 0,
                      "taken": 0, "plugs": 0, "bad_frames": 0,
                      "others": 0}

    # ---- the port ------------------------------------------------------------------------
    def open(self):
        import serial
        if isinstance(self.baud, bool) or not isinstance(self.baud, int) or self.baud <= 0:
            # pyserial's ValueError would read as a bug of ours
            raise WiredError("--baud must be a positive whole number (e.g. 115200), not %r" % (self.baud,))
        from host_tools.ports import PortLock
        hold = PortLock(self.port).acquire()  # PortBusy: a deploy or another link has the port
        try:
            ser = serial.Serial(self.port, self.baud, timeout=0.05, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            hold.release()
            raise WiredError("cannot open %s: %s" % (self.port, exc))
        self._hold = hold
        # what the gateway said while nobody listened is stale: the HELLO asks again
        ser.reset_input_buffer()
        self._ser = ser
        self._stop = False
        self._thread = threading.Thread(target=self._reader, name="wired-reader", daemon=True)
        self._thread.start()
        return self

    def close(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._ser is not None:
            try:
                self._ser.close()
            except OSError:
                pass
            self._ser = None
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
        return False

    def unplug(self):
        """The cable pulled: the port is closed; the gateway carries on."""
        self.close()

    def plug(self, timeout=10.0):
        """The cable plugged back: reopen and ask for the results of every command seen
        without one. Returns the gateway's HELLO answer."""
        self.stats["plugs"] += 1
        self.open()
        return self.say_hello(self.pending_ids(), timeout)

    def pending_ids(self):
        with self._cond:
            return [i for i in self.received if i not in self.results]

    # ---- sending -------------------------------------------------------------------------
    def _next_seq(self):
        self._seq = self._seq % 255 + 1   # 1..255: seq 0 on a NACK means "no frame of yours"
        return self._seq

    def _write(self, frame):
        if self._ser is None:
            raise WiredError("the port is not open")
        with self._wlock:
            self._ser.write(frame)
            self._ser.flush()
        self.stats["frames_sent"] += 1

    def send_frame(self, ftype, payload, timeout):
        """Send one frame; its answer ("ack",) / ("nack", code, message) / ("hello", the
        HELLO answer's JSON, checked by say_hello), or None when nothing came within timeout."""
        seq = self._next_seq()
        with self._cond:
            self.answers.pop(seq, None)
        self._write(F.encode(ftype, seq, payload))
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self.answers and time.monotonic() < deadline:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            return self.answers.pop(seq, None)

    def say_hello(self, ids=(), timeout=10.0):
        """HELLO naming `ids` (the gateway then sends their kept results and statuses, which
        this client takes); with none, the gateway sends everything it keeps, which this
        client records under `others` and leaves there. Many ids go in several HELLOs of
        HELLO_IDS at most (the gateway refuses one naming more than it keeps or follows).
        Returns the gateway's (last) answer, its "unknown" the ids unknown in any of them."""
        ids = list(ids)
        with self._cond:
            self.asked.update(ids)
        got = None
        unknown = []
        for at in range(0, len(ids), HELLO_IDS) if ids else (0,):
            got = self._hello_once(ids[at:at + HELLO_IDS], timeout)
            unknown += got.get("unknown") or []
        got["unknown"] = unknown
        return got

    def _hello_once(self, ids, timeout):
        payload = bytes((1,)) + b"".join(bytes((len(i),)) + i.encode() for i in ids)
        for attempt in range(self.tries):
            got = self.send_frame(F.T_HELLO, payload, timeout / self.tries)
            if got is not None and got[0] == "hello":
                info = got[1]
                if not isinstance(info, dict) or not isinstance(info.get("gateway"), str) \
                        or not isinstance(info.get("unknown", []), list):
                    raise WiredError("the gateway's HELLO answer is not the documented object "
                                     '({"v", "gateway": EUI, "max_payload", "kept", "unknown": [ids]}): %.80r' % (info,))
                return info
            if got is not None and got[0] == "nack" and got[1] not in RETRY_CODES:
                raise WiredError("the gateway refused HELLO: %s %s" % (got[1], got[2]))
        raise WiredError("no HELLO answer from the gateway on %s" % self.port)

    def send_envelope(self, env_bytes, id=None):
        """Deliver one binary envelope: ("ack",) once the gateway journaled it (or knew
        it already), ("nack", code, message) when it was refused, None when no answer came
        after every try. Frames lost on the way, or refused by the channel (CRC, rate,
        busy), go again: the relay takes an id once, so a resend never doubles it."""
        id = id or envelope_id(env_bytes)
        with self._cond:
            self.received.setdefault(id, [])
            self.asked.add(id)
        got = None
        for attempt in range(self.tries):
            if attempt:
                self.stats["resends"] += 1
                time.sleep(self.retry_pause_s * attempt)
            try:
                got = self.send_frame(F.T_ENVELOPE, env_bytes, self.ack_timeout_s)
            except (OSError, WiredError) as exc:
                # the port went away (a USB adapter pulled out): reopen it when it is back,
                # and ask for what was kept meanwhile
                self.log("wired: %s not sent: %s" % (id, exc))
                got = None
                from host_tools.ports import BoardNotRunning
                try:
                    self.close()
                    self.plug(self.ack_timeout_s)
                except (OSError, WiredError, BoardNotRunning) as again:
                    # (an emulated board restarting: refused until its new ptys are there)
                    self.log("wired: %s still unreachable: %s" % (self.port, again))
                continue
            if got is not None and got[0] == "hello":
                got = None  # not an answer to an envelope: as none
            if got is None or (got[0] == "nack" and got[1] in RETRY_CODES):
                continue
            break
        if got is not None and got[0] == "nack" and got[1] not in RETRY_CODES:
            msg = {"id": id, "status": "rejected", "via": "serial",
                   "error": {"code": got[1], "message": got[2]}}
            self._record(msg, final=True)
        return got

    def wait_results(self, ids, timeout):
        """Wait until every id has a final result (or timeout); the ids still without."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                left = [i for i in ids if i not in self.results]
                if not left or time.monotonic() >= deadline:
                    return left
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    # ---- receiving -----------------------------------------------------------------------
    def _record(self, msg, final):
        with self._cond:
            id = msg.get("id")
            self.received.setdefault(id, []).append((time.monotonic(), msg))
            if final:
                self.results[id] = msg
            self._cond.notify_all()

    def _reader(self):
        d = F.Deframer(0xFFFF)
        ser = self._ser
        while not self._stop:
            try:
                data = ser.read(4096)
            except (OSError, TypeError, AttributeError) as exc:
                # closed under us (close()), or the port went away: the next send reopens it
                if not self._stop:
                    self.log("wired: reading %s failed: %s" % (self.port, exc))
                return
            now = int(time.monotonic() * 1000)
            mv = memoryview(data)
            pos = 0
            while pos < len(mv):
                used, ev = d.feed(mv[pos:], now)
                pos += used
                if ev is not None:
                    try:
                        self._event(ev)
                    except Exception as exc:  # noqa: BLE001 - one odd frame must not end the reader
                        self.stats["bad_frames"] += 1
                        self.log("wired: a frame from the gateway not understood: %r" % (exc,))
            err = d.expire(now, lambda a, b: a - b)
            if err is not None:
                self.stats["bad_frames"] += 1

    def _event(self, ev):
        if isinstance(ev, F.WireError):
            self.stats["bad_frames"] += 1
            self.log("wired: bad frame from the gateway: %s %s" % (ev.code, ev.message))
            return
        t = ev.type
        p = bytes(ev.payload)
        if t == F.T_ACK:
            self.stats["acks"] += 1
            with self._cond:
                self.answers[p[0] if p else ev.seq] = ("ack",)
                self._cond.notify_all()
        elif t == F.T_NACK:
            self.stats["nacks"] += 1
            seq, code, message = F.parse_nack(p)
            with self._cond:
                if seq:
                    self.answers[seq] = ("nack", code, message)
                else:
                    self.channel_errors.append((code, message))
                self._cond.notify_all()
        elif t in (F.T_STATUS, F.T_RESULT, F.T_HELLO):
            try:
                msg = json.loads(p)
            except ValueError:
                msg = None
            if t == F.T_HELLO:  # checked by say_hello, which says what is wrong with it
                with self._cond:
                    self.hello = msg
                    self.answers[ev.seq] = ("hello", msg)
                    self._cond.notify_all()
                return
            if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
                # not the rsp JSON of docs/mqtt.md: a bad frame, as one that is not JSON
                # (before review 94 W3 a list or a number ended the reader thread)
                self.stats["bad_frames"] += 1
                self.log("wired: bad frame from the gateway: a status that is not a JSON object with an id: %.80r" % (p,))
                return
            final = t == F.T_RESULT
            id = msg.get("id")
            with self._cond:
                mine = id in self.asked
                if not mine:
                    # another command's (an earlier run's, a send that timed out): TAKEN
                    # would make the gateway forget a result its sender never got
                    self.stats["others"] += 1
                    if final:
                        self.others[id] = msg
                    self._cond.notify_all()
            if not mine:
                if final:
                    self.log("wired: the result of %s, a command not sent or asked for here: left on the gateway" % id)
                return
            if final:
                self.stats["results"] += 1
            self._record(msg, final)
            if final:
                self._taken(id)

    def _taken(self, id):
        # recorded: the gateway may forget it (no ACK awaited here, the reader thread
        # must not block; a lost TAKEN only means the result comes again on HELLO)
        if not isinstance(id, str):
            return
        try:
            self._write(F.encode(F.T_TAKEN, self._next_seq(), id.encode()))
            self.stats["taken"] += 1
        except (OSError, WiredError):
            pass


class WiredReplayer:
    """Replay trace lines over the wire (lines with any via; a mixed trace in `ppmid
    emulate` sends only its "serial" lines this way). The report has the shape of
    host_tools.replay's, plus "wired" (the channel's figures) and each response's GBCS
    bytes (hex) under per_id, so the report can be uploaded once back online."""

    def __init__(self, client, gateway, key=None, speed=1.0, settle_s=40.0, out=print):
        self.client = client
        self.gateway = (gateway or "").upper()
        self.key = key
        self.speed = speed
        self.settle_s = settle_s
        self.out = out
        self.alerts = []
        self.sent = {}
        self.resumes = []   # the gateway's HELLO answer at each reconnect
        self._lock = client._cond
        self.received = client.received

    from host_tools.replay import Replayer as _R
    _final = _R._final
    report = _R.report
    del _R

    def send_line(self, line, env=None):
        """Deliver one trace line now (also the `serial` path of a MQTT replay)."""
        if env is None or line.get("envelope") is not None:
            data = envelope_bytes(self.key, line)
        else:
            data = _binary(env)
        self.sent[line["id"]] = time.monotonic()
        return self.client.send_envelope(data, line["id"])

    def run(self, lines, unplug_after=None, unplugged_s=1.0):
        """Send every line at its time; `unplug_after`: pull the cable after that many
        lines for unplugged_s seconds, then plug it back (the test of resume)."""
        t0 = time.monotonic()
        wall0 = time.time()
        n = 0
        for line in sorted(lines, key=lambda x: x["at_ms"]):
            due = t0 + line["at_ms"] / 1000.0 / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send_line(line)
            n += 1
            if unplug_after is not None and n == unplug_after:
                self.client.unplug()
                time.sleep(unplugged_s)
                self.resumes.append(self.client.plug())
        left = self.client.wait_results(list(self.sent), self.settle_s)
        if left:
            # one more HELLO: a result may have come while a frame was in the air
            try:
                self.client.say_hello(left, 5.0)
            except WiredError:
                pass
            self.client.wait_results(left, 3.0)
        rep = self.report(lines, self.sent, [], time.time() - wall0)
        with self._lock:
            for id, msg in self.client.results.items():
                if id in rep["per_id"] and msg.get("gbcs"):
                    rep["per_id"][id]["response_gbcs"] = binascii.hexlify(binascii.a2b_base64(msg["gbcs"])).decode()
        rep["wired"] = dict(self.client.stats, port=self.client.port, channel_errors=len(self.client.channel_errors),
                            resumes=[{"kept": h.get("kept"), "unknown": h.get("unknown")} for h in self.resumes])
        with self._lock:
            # results of commands not in this run: left on the gateway (not TAKEN)
            rep["wired"]["not_taken"] = [{"id": i, "status": m.get("status")} for i, m in sorted(self.client.others.items())]
        return rep


def _binary(env):
    """A signed envelope of either kind in its binary form (docs/envelope.md)."""
    if getattr(env, "utrn", None) is not None:
        from ppmid import topup
        return topup.to_binary(env)
    from ppmid import envelope
    return envelope.to_binary(env)
