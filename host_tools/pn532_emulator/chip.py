"""The emulated PN532: HSU framing on a pty, paced at the baud rate, one RF field in which
tests place and remove virtual targets (host_tools.pn532_emulator.targets).

Timing model: a frame from the host counts as received when its last byte would have
crossed the wire (bytes * 10 / baud after the previous one); the ACK follows `ack_delay`
later; each frame we send is written to the pty when its last byte would have crossed the
wire. InDataExchange adds the RF time (bytes * 9 bits at `rf_kbps`, when set) and the
target's own latency. A host ACK aborts the pending command; a NACK repeats the last
response; a frame with a bad checksum is ignored (the PN532 stays silent).
"""
import os
import select
import threading
import time
import tty

from host_tools.pn532_emulator import wire


class Faults:
    """Fault hooks; counters are decremented as faults fire."""

    def __init__(self):
        self.corrupt_responses = 0   # next N responses go out with a bad DCS (NACK fixes)
        self.drop_acks = 0           # next N commands: no ACK, no answer (lost)
        self.late_ack_s = 0.0        # delay every ACK by this much (0: off)
        self.late_acks = 0           # ... for the next N commands only (0 with late_ack_s: all)
        self.drop_responses = 0      # next N commands: ACK but never answer


class PN532Emulator:
    FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])  # IC PN532, version 1.6, support 7

    def __init__(self, fd, baud=115200, ack_delay=0.0005, rf_kbps=None, gone_delay=0.03,
                 log=None):
        self.fd = fd
        self.baud = baud
        self.ack_delay = ack_delay
        self.rf_kbps = rf_kbps
        self.gone_delay = gone_delay
        self.log = log
        self.faults = Faults()
        self.target = None
        self.lock = threading.Lock()
        self.commands = []          # (code, data) of every command received, for tests
        self.bad_frames = 0
        self.errors = []            # internal errors (a test should find none)
        self.rx_bytes = 0           # bytes received from / sent to the host (wire budget)
        self.tx_bytes = 0
        self._parser = wire.Parser()
        self._rx_free = 0.0
        self._tx_free = 0.0
        self._actions = []          # [due, seq, fn]
        self._seq = 0
        self._pending = None        # seq of the command being processed
        self._last_response = None
        self._waiting_list = None   # (seq, params) of an InListPassiveTarget waiting for a target
        self._retries = 0xFF        # RFConfiguration item 5, MxRtyPassiveActivation
        self._active = False        # target activated by InListPassiveTarget
        self._chain_in = bytearray()
        self._chain_out = b""
        self._thread = None
        self._stop = False
        self._slave_fd = None

    # ---- construction --------------------------------------------------------------
    @classmethod
    def on_new_pty(cls, **kw):
        """(emulator, slave_path): the firmware opens slave_path."""
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        emu = cls(master, **kw)
        emu._slave_fd = slave  # keep it open so the master never sees EIO between users
        return emu, os.ttyname(slave)

    @classmethod
    def on_path(cls, path, **kw):
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return cls(fd, **kw)

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="pn532-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        if self._thread:
            self._thread.join(2)
        for fd in (self.fd, self._slave_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- the RF field ----------------------------------------------------------------
    def place(self, target):
        with self.lock:
            self.target = target
            self._active = False

    def remove(self):
        with self.lock:
            self.target = None
            self._active = False

    # ---- timing helpers --------------------------------------------------------------
    def _wire(self, n):
        return n * 10.0 / self.baud

    def _rf(self, n):
        return 0.0 if not self.rf_kbps else n * 9.0 / (self.rf_kbps * 1000.0)

    def _at(self, due, fn):
        self._seq += 1
        self._actions.append([due, self._seq, fn])

    def _send(self, frame, earliest):
        start = max(earliest, self._tx_free)
        done = start + self._wire(len(frame))
        self._tx_free = done
        self._at(done, lambda: self._write(frame))
        return done

    def _write(self, data):
        self.tx_bytes += len(data)
        try:
            os.write(self.fd, data)
        except OSError:
            pass

    def _note(self, text):
        if self.log:
            self.log(text)

    # ---- main loop -------------------------------------------------------------------
    def _loop(self):
        while not self._stop:
            now = time.monotonic()
            with self.lock:
                due = [a for a in self._actions if a[0] <= now]
                if due:
                    due.sort()
                    for a in due:
                        self._actions.remove(a)
                    for a in due:
                        try:
                            a[2]()
                        except Exception as exc:
                            self.errors.append(repr(exc))
                            self._note("internal error: %r" % (exc,))
                            self._pending = None
                    continue
                nxt = min((a[0] for a in self._actions), default=now + 0.05)
            timeout = max(0.0, min(nxt - now, 0.05))
            try:
                r, _, _ = select.select([self.fd], [], [], timeout)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            arrival = time.monotonic()
            self.rx_bytes += len(data)
            self._rx_free = max(self._rx_free, arrival) + self._wire(len(data))
            with self.lock:
                for ev in self._parser.feed(data):
                    try:
                        self._event(ev, self._rx_free)
                    except Exception as exc:  # a broken virtual target must not kill the chip
                        self.errors.append(repr(exc))
                        self._note("internal error: %r" % (exc,))
                        self._pending = None

    def _event(self, ev, t):
        if ev[0] == "ack":
            if self._pending is not None:
                self._note("host ACK: abort pending command")
            self._pending = None
            self._waiting_list = None
        elif ev[0] == "nack":
            if self._last_response is not None:
                self._send(self._maybe_corrupt(self._last_response), t)
        elif ev[0] == "bad":
            self.bad_frames += 1
            self._note("bad frame from host (%s): ignored" % ev[1])
        else:
            _, tfi, payload = ev
            if tfi != 0xD4 or not payload:
                self._send(wire.ERROR, t)
                return
            self._command(payload[0], bytes(payload[1:]), t)

    def _command(self, code, data, t):
        self.commands.append((code, data))
        f = self.faults
        if f.drop_acks > 0:
            f.drop_acks -= 1
            self._note("fault: command 0x%02X lost (no ACK)" % code)
            return
        self._seq += 1
        seq = self._pending = self._seq
        self._waiting_list = None
        ack_at = t + self.ack_delay
        if f.late_ack_s:
            ack_at += f.late_ack_s
            if f.late_acks > 0:
                f.late_acks -= 1
                if f.late_acks == 0:
                    f.late_ack_s = 0.0
        ack_done = self._send(wire.ACK, ack_at)
        if f.drop_responses > 0:
            f.drop_responses -= 1
            self._pending = None
            return
        self._at(ack_done, lambda: self._execute(seq, code, data, ack_done))

    def _respond(self, seq, code, payload, when):
        if self._pending != seq:
            return  # aborted by the host
        self._pending = None
        frame = wire.encode_frame(0xD5, bytes([code + 1]) + bytes(payload))
        self._last_response = frame
        self._send(self._maybe_corrupt(frame), when)

    def _maybe_corrupt(self, frame):
        if self.faults.corrupt_responses <= 0:
            return frame
        self.faults.corrupt_responses -= 1
        bad = bytearray(frame)
        bad[-2] ^= 0x5A
        self._note("fault: response sent with a bad checksum")
        return bytes(bad)

    # ---- commands --------------------------------------------------------------------
    def _execute(self, seq, code, data, t):
        if self._pending != seq:
            return
        later = t + 0.0003
        if code == 0x02:
            self._respond(seq, code, self.FIRMWARE, later)
        elif code == 0x14:  # SAMConfiguration
            self._respond(seq, code, b"", later)
        elif code == 0x32:  # RFConfiguration
            if data[:1] == b"\x05" and len(data) >= 4:
                self._retries = data[3]
            self._respond(seq, code, b"", later)
        elif code == 0x4A:  # InListPassiveTarget
            self._list(seq, data, t)
        elif code == 0x40:  # InDataExchange
            self._exchange(seq, data, t)
        elif code == 0x52:  # InRelease
            if self.target is not None and self._active:
                self.target.deselect()
            self._active = False
            self._chain_in = bytearray()
            self._chain_out = b""
            self._respond(seq, code, b"\x00", later)
        else:
            self._pending = None
            self._send(wire.ERROR, later)

    def _list(self, seq, data, t):
        if len(data) < 2 or data[1] != 0x00:
            self._pending = None
            self._send(wire.ERROR, t)
            return
        if self.target is not None:
            tg = self.target
            tg.activate()
            self._active = True
            self._chain_in = bytearray()
            self._chain_out = b""
            body = bytes([1, 1]) + tg.sens_res + bytes([tg.sel_res, len(tg.uid)]) + tg.uid
            if tg.ats:
                body += bytes([len(tg.ats) + 1]) + tg.ats
            self._respond(seq, 0x4A, body, t + 0.002 + self._rf(20 + len(tg.ats)))
        elif self._retries != 0xFF:
            # each activation attempt costs ~1 ms on air (REQA + timeout)
            self._respond(seq, 0x4A, b"\x00", t + 0.001 * (self._retries + 1))
        else:
            self._waiting_list = (seq, t)
            self._at(t + 0.01, lambda: self._poll_wait(seq))

    def _poll_wait(self, seq):
        if self._pending != seq or self._waiting_list is None:
            return
        if self.target is not None:
            self._waiting_list = None
            self._list(seq, b"\x01\x00", time.monotonic())
        else:
            self._at(time.monotonic() + 0.01, lambda: self._poll_wait(seq))

    def _exchange(self, seq, data, t):
        tg = self.target
        if not data:
            self._pending = None
            self._send(wire.ERROR, t)
            return
        if data[0] & 0x3F != 1 or not self._active:
            self._respond(seq, 0x40, b"\x27", t + 0.0005)  # not acceptable: no such target
            return
        if tg is None:
            self._respond(seq, 0x40, b"\x01", t + self.gone_delay)  # target timeout
            return
        more = data[0] & 0x40
        body = data[1:]
        if not body and self._chain_out:
            # host fetches the rest of a chained response
            self._deliver(seq, t)
            return
        self._chain_in += body
        if more:
            self._respond(seq, 0x40, b"\x00", t + self._rf(len(body) + 4))
            return
        apdu = bytes(self._chain_in)
        self._chain_in = bytearray()
        try:
            reply = tg.exchange(apdu)
        except TargetGone:
            if self.target is tg:
                self.target = None
                self._active = False
            self._respond(seq, 0x40, b"\x01", t + self.gone_delay)
            return
        self._chain_out = bytes(reply)
        self._deliver(seq, t + self._rf(len(apdu) + len(reply) + 8) + tg.latency)

    def _deliver(self, seq, when):
        out = self._chain_out
        if len(out) > 262:
            self._chain_out = out[262:]
            self._respond(seq, 0x40, b"\x40" + out[:262], when)
        else:
            self._chain_out = b""
            self._respond(seq, 0x40, b"\x00" + out, when)


class TargetGone(Exception):
    """Raised by a virtual target when it leaves the field during an exchange."""
