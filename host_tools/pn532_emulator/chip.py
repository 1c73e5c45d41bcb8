"""The emulated PN532: HSU framing on a pty, paced at the baud rate, one RF field in which
tests place and remove virtual targets (host_tools.pn532_emulator.targets).

Timing model: a frame from the host counts as received when its last byte would have
crossed the wire (bytes * 10 / baud after the previous one); the ACK follows `ack_delay`
later; each frame we send is written to the pty when its last byte would have crossed the
wire. InDataExchange adds the RF time (bytes * 9 bits at `rf_kbps`, when set) and the
target's own latency. A host ACK aborts the pending command; a NACK repeats the last
response; a frame with a bad checksum is ignored (the PN532 stays silent).

Besides what the firmware uses, the command set covers what nfcpy's pn532 driver sends
(Diagnose, SetParameters, SetSerialBaudRate, PowerDown, Read/WriteRegister on a CIU register
map, InCommunicateThru with the CIU's CRC bits honoured); docs/nfc.md lists it.
"""
import os
import select
import termios
import threading
import time
import tty

from host_tools.pn532_emulator import wire


def crc_a(data):
    """ISO/IEC 14443-3 CRC_A: CRC-16/CCITT polynomial, reflected, preset 0x6363; the two
    bytes go on air low byte first."""
    crc = 0x6363
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


# CIU registers (the PN512 core inside the PN532) as the emulator starts: the PN512 reset
# values, except TxMode/RxMode, which the PN532 firmware leaves at 106 kbps type A with
# CRC on (bit 7) after SAMConfiguration. Addresses nfcpy reads or writes; any other
# address reads 0 and keeps what is written.
REG_TXMODE, REG_RXMODE, REG_TXCONTROL, REG_FIFODATA = 0x6302, 0x6303, 0x6304, 0x6339
CRC_EN = 0x80
CIU_RESET = {
    0x6301: 0x3B, 0x6302: 0x80, 0x6303: 0x80, 0x6304: 0x80, 0x6305: 0x00, 0x6306: 0x10,
    0x6307: 0x84, 0x6308: 0x84, 0x6309: 0x4D, 0x630A: 0x00, 0x630B: 0x00, 0x630C: 0x62,
    0x630D: 0x00, 0x630E: 0x00, 0x630F: 0xEB, 0x6311: 0xFF, 0x6312: 0xFF, 0x6313: 0x88,
    0x6314: 0x26, 0x6315: 0x87, 0x6316: 0x48, 0x6317: 0x88, 0x6318: 0x20, 0x6319: 0x20,
    0x631A: 0x00, 0x631B: 0x00, 0x631C: 0x00, 0x631D: 0x00, 0x631E: 0x00, 0x631F: 0x00,
    0x6331: 0x20, 0x6332: 0x80, 0x6333: 0x00, 0x6334: 0x14, 0x6335: 0x00, 0x6336: 0x00,
    0x6337: 0x21, 0x6338: 0x00, 0x6339: 0x00, 0x633A: 0x00, 0x633B: 0x08, 0x633C: 0x10,
    0x633D: 0x00, 0x633E: 0x80,
}
# SetSerialBaudRate's index (PN532 user manual)
BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)


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
        self._thru_timeout = 0x0A   # RFConfiguration item 2, third byte (InCommunicateThru)
        self.params = 0x14          # SetParameters: fAutomaticATR_RES | fAutomaticRATS
        self.registers = dict(CIU_RESET)
        self._new_baud = None       # SetSerialBaudRate: applies once the host ACKs
        self.power_downs = 0
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
        """An emulator on the pty or serial device at path; OSError when it cannot be
        opened or is not a terminal (a regular file: termios refuses it, ENOTTY)."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
        except termios.error as exc:
            os.close(fd)
            raise OSError(exc.args[0], "not a pty or serial device", path)
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

    def tap(self, target, done, timeout_s):
        """A phone or tag held to the reader: target in the field until done(target) or
        timeout_s, then taken away; returns done(target)."""
        self.place(target)
        end = time.monotonic() + timeout_s
        try:
            while not done(target) and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            self.remove()
        return done(target)

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
        if self._new_baud and ev[0] != "bad":
            # the PN532 answers SetSerialBaudRate at the old rate and switches on the host's
            # ACK; on a pty that ACK can be flushed away when the host reopens the tty at
            # the new rate, so the next frame also counts
            self._note("baud rate now %d" % self._new_baud)
            self.baud, self._new_baud = self._new_baud, None
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
            elif data[:1] == b"\x02" and len(data) >= 4:
                self._thru_timeout = data[3]
            elif data[:1] == b"\x01" and len(data) >= 2:
                self._field(data[1] & 1)
            self._respond(seq, code, b"", later)
        elif code == 0x00:  # Diagnose
            self._diagnose(seq, data, later)
        elif code == 0x04:  # GetGeneralStatus
            tg = b""
            if self._active and self.target is not None:
                tg = b"\x01\x00\x00\x00"  # Tg 1, 106 kbps both ways, type A
            field = self.registers[REG_TXCONTROL] & 3 != 0
            self._respond(seq, code, bytes([0, field, len(tg) // 4]) + tg + b"\x00", later)
        elif code == 0x06:  # ReadRegister: big-endian addresses, one value each
            if len(data) % 2 or not data:
                self._syntax(seq, later)
                return
            vals = bytes(self.registers.get((data[i] << 8) | data[i + 1], 0)
                         for i in range(0, len(data), 2))
            self._respond(seq, code, vals, later)
        elif code == 0x08:  # WriteRegister: (address, value) triplets
            if len(data) % 3 or not data:
                self._syntax(seq, later)
                return
            for i in range(0, len(data), 3):
                self._write_register((data[i] << 8) | data[i + 1], data[i + 2])
            self._respond(seq, code, b"", later)
        elif code == 0x10:  # SetSerialBaudRate
            if len(data) != 1 or data[0] >= len(BAUDS):
                self._syntax(seq, later)
                return
            self._new_baud = BAUDS[data[0]]
            self._respond(seq, code, b"", later)
        elif code == 0x12:  # SetParameters
            if len(data) != 1:
                self._syntax(seq, later)
                return
            self.params = data[0]
            self._respond(seq, code, b"", later)
        elif code == 0x16:  # PowerDown: the next frame from the host wakes it up
            self.power_downs += 1
            self._field(0)
            self._respond(seq, code, b"\x00", later)
        elif code == 0x42:  # InCommunicateThru
            self._thru(seq, data, t)
        elif code == 0x44:  # InDeselect
            if self.target is not None and self._active:
                self.target.deselect()
            self._respond(seq, code, b"\x00", later)
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

    def _syntax(self, seq, when):
        self._pending = None
        self._send(wire.ERROR, when)

    def _diagnose(self, seq, data, when):
        test = data[:1]
        if test == b"\x00":      # communication line test: the frame comes back as sent
            self._respond(seq, 0x00, data, when)
        elif test in (b"\x01", b"\x02"):  # ROM / RAM test: passed
            self._respond(seq, 0x00, b"\x00", when)
        else:
            self._syntax(seq, when)

    def _write_register(self, addr, value):
        self.registers[addr] = value
        if addr == REG_TXCONTROL and not value & 3:
            self._field(0)

    def _field(self, on):
        """RF field on/off (RFConfiguration item 1, PowerDown, TxControl): off resets targets."""
        if on:
            self.registers[REG_TXCONTROL] |= 0x03
            return
        self.registers[REG_TXCONTROL] &= ~0x03 & 0xFF
        if self._active and self.target is not None:
            self.target.deselect()
        self._active = False

    def _list(self, seq, data, t):
        if len(data) < 2:
            self._syntax(seq, t)
            return
        self._field(1)
        tg = self.target
        if data[1] != 0x00:
            # 212/424 F, 106 B, Jewel: none of our targets answers those modulations
            self._respond(seq, 0x4A, b"\x00", t + 0.001 * (min(self._retries, 10) + 1))
            return
        want = bytes(data[2:])
        if len(want) > 4 and want[0] == 0x88:   # cascade tags from a full UID
            want = want[1:]
            if len(want) > 7 and want[3] == 0x88:
                want = want[:3] + want[4:]
        if tg is not None and want and want != tg.uid:
            tg = None   # the host selects one UID; ours is another
        if tg is not None:
            rats = bool(self.params & 0x10) and bool(tg.ats)
            if rats:
                tg.level4()
            else:
                tg.level3()
            self._active = True
            self._chain_in = bytearray()
            self._chain_out = b""
            # the firmware leaves the CIU at 106 kbps type A with CRC on both ways
            self.registers[REG_TXMODE] = CRC_EN
            self.registers[REG_RXMODE] = CRC_EN
            body = bytes([1, 1]) + tg.sens_res + bytes([tg.sel_res, len(tg.uid)]) + tg.uid
            if rats:
                body += bytes([len(tg.ats) + 1]) + tg.ats
            self._respond(seq, 0x4A, body, t + 0.002 + self._rf(20 + len(tg.ats)))
        elif self._retries != 0xFF or want:
            # each activation attempt costs ~1 ms on air (REQA + timeout); the REQA is
            # still in the CIU FIFO afterwards (nfcpy reads it to tell "no tag" apart)
            self.registers[REG_FIFODATA] = 0x26
            self._respond(seq, 0x4A, b"\x00", t + 0.001 * (min(self._retries, 0xFE) + 1))
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
        if reply is None:   # the target stayed silent (a halted tag)
            self._respond(seq, 0x40, b"\x01", t + self.gone_delay)
            return
        self._chain_out = bytes(reply)
        self._deliver(seq, t + self._rf(len(apdu) + len(reply) + 8) + tg.latency)

    def _thru(self, seq, data, t):
        """InCommunicateThru: one raw frame to the target, its raw answer back. With the
        CIU's TX CRC off (TxMode bit 7) the host's bytes end in its own CRC_A; with RX CRC
        off the target's answer comes back with its CRC_A, and a 4-bit ACK/NAK as one byte
        (with RX CRC on the chip reports such a short frame as a CRC error)."""
        n = self._thru_timeout
        wait = 0.1 if n == 0 else (100 << (n - 1)) / 1e6
        silent = (b"\x01", t + wait)
        tg = self.target
        frame = bytes(data)
        if not self.registers[REG_TXMODE] & CRC_EN:
            if len(frame) < 3 or crc_a(frame[:-2]) != frame[-2:]:
                self._respond(seq, 0x42, *silent)   # a bad CRC: the target ignores it
                return
            frame = frame[:-2]
        if tg is None or not self._active or not frame:
            self._respond(seq, 0x42, *silent)
            return
        try:
            reply = tg.frame(frame)
        except TargetGone:
            if self.target is tg:
                self.target = None
                self._active = False
            self._respond(seq, 0x42, b"\x01", t + min(wait, self.gone_delay))
            return
        if reply is None:
            self._respond(seq, 0x42, *silent)
            return
        rx_crc = self.registers[REG_RXMODE] & CRC_EN
        if isinstance(reply, int):
            out = b"\x02" if rx_crc else bytes([0, reply & 0x0F])
        else:
            out = b"\x00" + bytes(reply) + (b"" if rx_crc else crc_a(reply))
        if len(out) > 263:
            out = b"\x07"   # more than the chip's buffer holds
        self._respond(seq, 0x42, out, t + self._rf(len(frame) + len(out) + 4) + tg.latency)

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
