"""NcpEmulator: the far side of the board's Zigbee UART (a pty), as a thread or a CLI.

    emu = NcpEmulator(master_fd_or_path, ezsp_version=13, log_path="ch.jsonl")
    emu.start()                      # own thread + asyncio loop
    emu.set_faults(byte_error_rate=0.01); emu.reset_ncp(); emu.network_down(2.0)
    emu.send_alert("ESME"); emu.wait_received(5, timeout=30); emu.stop()

The UART is paced both ways at the configured baud (10 bits a byte: 86.8 us at 115200),
as a real one is: bytes to the board reach it when their last bit would have crossed the
wire, and the NCP sees the board's bytes only at their wire time too (a frame when its
closing flag has crossed), queued behind what the board sent before. Each direction
keeps a record of when it carried bytes (`wire(t0, t1)`: the benchmarks' measure of the
UART time an exchange really needed).
If the board process dies the pty stays; the emulator keeps its state and the firmware's
RST brings the link back. If the pty itself goes away (EIO) it reopens the path."""
import asyncio
import collections
import errno
import os
import threading
import time
import tty

from .ch import CommsHub
from .ncp import Faults, Ncp

FLAG = 0x7E


class PacedLine:
    """One direction of a UART. put(data) queues bytes behind those already on the line
    (from `arrival` at the earliest: the moment the sender handed them over); the line
    carries them at byte_time each and hands every piece to deliver(piece) when its last
    byte has crossed (a receiver has a byte only once its stop bit is in). A thread of
    its own sleeps until each piece is due: the asyncio loop's timers are only good to a
    millisecond, a small frame's wire time is a third of that.

    `busy` records (start, end, bytes) of every piece; `late_*` how far behind its due
    time each piece was actually delivered (host scheduling, not the wire)."""

    def __init__(self, name, byte_time, deliver, history=50000):
        self.byte_time = byte_time
        self.deliver = deliver
        self.busy = collections.deque(maxlen=history)
        self.bytes = 0
        self.pieces = 0
        self.late_total = 0.0
        self.late_max = 0.0
        self._clock = 0.0            # when the line is free again
        self._items = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data, arrival=None):
        if not data:
            return
        now = time.monotonic()
        with self._cond:
            start = max(self._clock, now if arrival is None else arrival)
            end = start + len(data) * self.byte_time
            self._clock = end
            self.busy.append((start, end, len(data)))
            self.bytes += len(data)
            self._items.append((end, bytes(data)))
            self._cond.notify()

    def _run(self):
        while True:
            with self._cond:
                while not self._items and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                due, data = self._items[0]
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._cond:
                self._items.popleft()
            late = max(0.0, time.monotonic() - due)
            self.pieces += 1
            self.late_total += late
            self.late_max = max(self.late_max, late)
            try:
                self.deliver(data)
            except Exception:  # noqa: BLE001 - a closed fd at shutdown: the bytes are lost, as on a wire
                pass

    def intervals(self):
        with self._cond:
            return list(self.busy)

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def stats(self):
        return {"bytes": self.bytes, "pieces": self.pieces,
                "late_mean_ms": round(1000 * self.late_total / self.pieces, 3) if self.pieces else 0.0,
                "late_max_ms": round(1000 * self.late_max, 3)}


def union_seconds(intervals, t0, t1):
    """Length of the union of [start, end) intervals, clipped to [t0, t1)."""
    spans = sorted((max(a, t0), min(b, t1)) for a, b in intervals if b > t0 and a < t1)
    total = 0.0
    cur_a = cur_b = None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_b is not None:
        total += cur_b - cur_a
    return total


class NcpEmulator:
    def __init__(self, pty, baud=115200, ezsp_version=13, max_payload=82, log_path=None, corpus_dir=None,
                 faults=None, hold_max=32, busy_retry_s=3.0, verbose=False, tx_k=None, gpf_delay_s=None,
                 ch_options=None, commissioning=None):
        self.pty = pty
        self.baud = baud
        self.byte_time = 10.0 / baud if baud else 0.0
        self.ezsp_version = ezsp_version
        self.max_payload = max_payload
        self.log_path = log_path
        self.corpus_dir = corpus_dir
        self.faults = faults or Faults()
        self.hold_max = hold_max
        self.busy_retry_s = busy_retry_s
        self.verbose = verbose
        self.tx_k = tx_k                   # the NCP's ASH window; None: UG101's TX_K (5)
        self.gpf_delay_s = gpf_delay_s     # the GSME's answer delay; None: ch.GPF_DELAY_S
        self.ch_options = ch_options or {}  # CommsHub keywords (fragment_window, aps_ack_timeout_s...)
        # None: the module is commissioned already (resumes its network at once). A dict:
        # the module starts with no network and the CH is trust centre (commissioning.py):
        # "install_code" the code the CH's device log holds for the module's EUI-64 (None:
        # the EUI is not in the log), or "device_log" the whole log {EUI-64 bytes: code}
        # (host_tools/device_log.py reads it from a file); "eui64" the module's EUI-64
        # (bytes; default the emulated stack's); "trust_centre" TrustCentre keywords;
        # "module_certificate" the certificate in the module's tokens instead of its own (a
        # factory mistake: another subject, another key); "network_down" True: the HAN is
        # not on the air at start (network_up(resume=False) brings it)
        self.commissioning = commissioning
        self.messages = []                 # emulator log lines (also printed when verbose)
        self.loop = None
        self.ncp = None
        self.ch = None
        self._fd = None
        self._own_fd = False
        self._thread = None
        self._ready = threading.Event()
        self._stop = None
        self.to_host = None          # PacedLine NCP -> board
        self.from_host = None        # PacedLine board -> NCP
        self.bytes_in = 0            # read from the board (as they arrived on the pty)
        self.bytes_out = 0           # written to the board

    def _log(self, msg):
        line = "%.3f %s" % (time.time(), msg)
        self.messages.append(line)
        if len(self.messages) > 2000:
            del self.messages[:1000]
        if self.verbose:
            print(line, flush=True)

    # ---- lifecycle ---------------------------------------------------------------------
    def _open(self):
        if isinstance(self.pty, int):
            self._fd, self._own_fd = self.pty, False
        else:
            self._fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY)
            self._own_fd = True
            try:
                tty.setraw(self._fd)
            except Exception:
                pass
        os.set_blocking(self._fd, False)

    async def main(self):
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._open()
        self.to_host = PacedLine("ncp-uart-tx", self.byte_time, self._write_to_host)
        self.from_host = PacedLine("ncp-uart-rx", self.byte_time,
                                   lambda piece: self.loop.call_soon_threadsafe(self._feed_ncp, piece))
        kw = {} if self.tx_k is None else {"tx_k": self.tx_k}
        self.ncp = Ncp(self.loop, self._send, self.ezsp_version, self.max_payload, self.faults, log=self._log, **kw)
        kw = {} if self.gpf_delay_s is None else {"gpf_delay_s": self.gpf_delay_s}
        kw.update(self.ch_options)
        self.ch = CommsHub(self.ncp, self.loop, self.log_path, self.corpus_dir, self.hold_max, self.busy_retry_s,
                           log=self._log, **kw)
        self.ncp.ch = self.ch
        if self.commissioning is not None:
            from host_tools.ncp_emulator.commissioning import ModuleCommissioning, TrustCentre
            if self.commissioning.get("eui64"):
                self.ncp.stack.config.eui64 = bytes(self.commissioning["eui64"])
            eui = self.ncp.stack.config.eui64
            self.ncp.commissioning = ModuleCommissioning(self.ncp, eui, cert=self.commissioning.get("module_certificate"))
            if self.commissioning.get("network_down"):
                self.ncp.network_available = False
            device_log = self.commissioning.get("device_log")
            if device_log is None:
                code = self.commissioning.get("install_code")
                device_log = {eui: code} if code else {}
            self.ch.trust_centre = TrustCentre(self.ch, device_log, **self.commissioning.get("trust_centre", {}))
            # the module learns the trust centre's EUI-64 at the join (getCurrentSecurityState)
            self.ncp.stack.config.tc_eui64 = self.ch.trust_centre.eui64
        self.loop.add_reader(self._fd, self._readable)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.to_host.stop()
            self.from_host.stop()
            try:
                self.loop.remove_reader(self._fd)
            except Exception:
                pass
            if self._own_fd:
                os.close(self._fd)
            self.ch.close()

    def _readable(self):
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO and not isinstance(self.pty, int):
                # the other side went away: try the path again shortly
                self.loop.remove_reader(self._fd)
                os.close(self._fd)
                self.loop.call_later(0.5, self._reopen)
                return
            data = b""
        if not data:
            return
        self.bytes_in += len(data)
        # on the wire from now (behind what is already on it); the NCP gets each frame
        # when its closing flag has crossed
        now = time.monotonic()
        start = 0
        while start < len(data):
            end = data.find(FLAG, start)
            end = len(data) if end < 0 else end + 1
            self.from_host.put(data[start:end], now)
            start = end

    def _feed_ncp(self, piece):
        if self.ncp is not None:
            self.ncp.feed(piece)

    def _reopen(self):
        try:
            self._open()
            self.loop.add_reader(self._fd, self._readable)
        except OSError:
            self.loop.call_later(0.5, self._reopen)

    def _send(self, data):
        """NCP -> board (on the loop thread): the fault model's bit errors, then the line."""
        self.to_host.put(self.ncp.damage(data, self.faults.byte_error_rate))

    def _write_to_host(self, data):
        # the line's thread, when the piece's last byte has crossed the wire
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            except (OSError, TypeError):
                return  # no reader on the pty (or it is being reopened): lost, as on a real wire
            view = view[n:]
            self.bytes_out += n

    def start(self):
        """Run in a daemon thread; returns when the emulator is listening."""
        failed = []

        def serve():
            try:
                asyncio.run(self.main())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
                failed.append(exc)
                self._ready.set()
        self._thread = threading.Thread(target=serve, name="ncp-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("NCP emulator did not start")
        if failed:  # e.g. the pty or the log could not be opened: say so now, not in a thread
            raise failed[0]
        return self

    def stop(self):
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(5)

    def call(self, fn, *args):
        """Run fn(*args) on the emulator's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(self._call(fn, args), self.loop)
        return fut.result(10)

    @staticmethod
    async def _call(fn, args):
        return fn(*args)

    # ---- faults and actions ------------------------------------------------------------
    def set_faults(self, **kw):
        def apply():
            for k, v in kw.items():
                if not hasattr(self.faults, k):
                    raise AttributeError("unknown fault %r" % k)
                setattr(self.faults, k, v)
        self.call(apply)

    def lose_answers(self, n):
        """Fault: the meters' next n answers (responses, refusals) are lost before the CH."""
        self.call(setattr, self.ch, "lose_answers", n)

    def set_ch_time(self, mode, offset_s=None):
        """How the CH answers a read of its clock (ch.TIME_MODES), from now on."""
        self.call(self.ch.set_time_mode, mode, offset_s)

    def set_gpf_delay(self, seconds):
        """The GSME's answer delay from now on (the GPF's; see ch.GPF_DELAY_S)."""
        self.call(self.ch.set_gpf_delay, seconds)

    def commissioning_state(self):
        """What the module's tokens and the trust centre say (None: not commissioning)."""
        def snap():
            m, tc = self.ncp.commissioning, self.ch.trust_centre
            if m is None:
                return None
            return {"has_network": m.has_network, "link_key_stored": m.link_key_stored, "key_seq": m.key_seq,
                    "leaves": m.leaves, "joined": self.ncp.joined, "tc_eui64": tc.eui64.hex().upper(),
                    "tc_events": list(tc.events), "tc_counters": dict(tc.counters)}
        return self.call(snap)

    def forget_ppmid(self):
        """The CH's device log loses the PPMID: it is removed from the network."""
        self.call(lambda: self.ch.trust_centre.forget(self.ncp.commissioning.eui64))

    def switch_network_key(self):
        """The CH switches the HAN's network key (a module away at the time misses it: its
        secured rejoin goes unanswered, a trust-centre rejoin brings it the new key)."""
        self.call(self.ch.trust_centre.switch_network_key)

    def replace_ch(self, eui64, pan_id=None):
        """The installer replaces the CH by another unit (eui64, bytes or hex): a new trust
        centre with its own EUI-64 and certificate, forming its own network on the same
        channel (extended PAN id its EUI-64, PAN id pan_id, default the old one's + 1), its
        device log the old one's (the DCC adds the PPMID to the new CH's). The old network
        goes off the air: a module on it sees NETWORK_DOWN, and its tokens keep that network,
        which neither a resume nor a rejoin finds again: only a fresh commissioning (an
        ordered re-commission) joins the new CH, and from that join the module names the new
        trust centre (getCurrentSecurityState; at v14 the sender of the CH's frames). The
        meters stay (paired again to the new CH); the tunnel and what the old CH held for
        the PPMID go with it. Returns the old trust centre's EUI-64 (hex). Commissioning
        emulations only (ValueError otherwise, or for an EUI-64 that is not 8 bytes or is
        the old one's)."""
        if isinstance(eui64, str):
            eui64 = bytes.fromhex(eui64.replace(":", "").replace("-", ""))
        return self.call(self._replace_ch, bytes(eui64), pan_id)

    def _replace_ch(self, eui64, pan_id):
        old = self.ch.trust_centre
        if old is None:
            raise ValueError("replace_ch: the CH is not a trust centre here (the module started commissioned)")
        self.ch.trust_centre = old.replace(eui64, pan_id)
        if self.ncp.joined:
            self.ncp.left_network()      # NETWORK_DOWN; the tokens keep the old network
        self.ch.dropped_held += len(self.ch.held)
        self.ch.held = []
        self._log("ch replaced: trust centre %s -> %s" % (old.eui64.hex(), eui64.hex()))
        return old.eui64.hex().upper()

    def back_before_rejoin_answer(self):
        """Fault: the network comes back by itself just before the module answers the next
        findAndRejoinNetwork, which it then refuses as already joined (INVALID_CALL)."""
        self.call(setattr, self.ncp.commissioning, "back_before_rejoin_answer", True)

    def reset_ncp(self):
        self.call(self.ncp.inject_reset)

    def network_down(self, seconds=None):
        self.call(self.ncp.set_network, False)
        if seconds is not None:
            self.loop.call_soon_threadsafe(lambda: self.loop.call_later(seconds, self.ncp.set_network, True))

    def refuse_sends(self, status, count=1):
        """The module answers the next `count` sendUnicasts with `status` (an EmberStatus,
        or an sl_Status from EZSP v14), as a module out of buffers does: nothing on air."""
        self.call(self.ncp.refusals.extend, [status] * count)

    def network_up(self, resume=True):
        """The HAN is back; resume False: the module needs a rejoin to find it (ncp.set_network)."""
        self.call(self.ncp.set_network, True, resume)

    def tunnel_busy(self, seconds):
        """The CH stops acknowledging APS frames for `seconds` (delivery failures)."""
        self.call(setattr, self.ch, "refuse_until", time.time() + seconds)

    def close_tunnel(self, reopen_after_s=None):
        self.call(self.ch.close_tunnel, reopen_after_s)

    def forget_tunnel(self, reopen_after_s=None):
        self.call(self.ch.forget_tunnel, reopen_after_s)

    def request_tunnel(self):
        self.call(self.ch.request_tunnel)

    def forge_from_ch(self, zcl, eui64=None):
        """A Tunneling cluster frame as a HAN node holding the network key only sends it
        posing as the CH: NWK source 0x0000, no APS encryption (it lacks the CH's link key).
        APS-fragmented when it does not fit one frame. eui64 (bytes or hex): instead a node
        holding a link key of its own with us (an old CH, another node the trust centre
        gave a partner key) sends it as 0x0000, APS-encrypted under that key: the frame has
        the encryption bit, and at v14 the module names that EUI-64 as its sender."""
        if eui64 is None:
            self.call(self.ncp.incoming, 0x0000, 0x0109, 0x0704, bytes(zcl), False)
            return
        if isinstance(eui64, str):
            eui64 = bytes.fromhex(eui64)
        self.call(self.ncp.incoming, 0x0000, 0x0109, 0x0704, bytes(zcl), True, bytes(eui64))

    def send_raw(self, data):
        """Bytes straight onto the wire to the board (garbage, hand-made frames)."""
        self.loop.call_soon_threadsafe(self._send, bytes(data))

    def send_ezsp(self, frame):
        """An EZSP frame from the NCP through its ASH link (unknown ids, orphan responses)."""
        self.call(self.ncp.queue, bytes(frame))

    def send_alert(self, device="ESME"):
        return self.call(self.ch.alert, device)

    def send_to_ppmid(self, msg):
        return self.call(self.ch.send_to_ppmid, bytes(msg))

    # ---- inspection --------------------------------------------------------------------
    @property
    def received(self):
        """GBCS messages the CH received from the PPMID (whole messages, in order)."""
        return list(self.ch.received)

    def executions(self):
        """Per command reaching the emulated meters: {(recipient, originator, counter) hex/int:
        (received, executed)}; a replay is received again but never executed again."""
        def snap():
            out = {}
            for title, dev in self.ch.devices.items():
                for (party, counter), n in dev.received_n.items():
                    out[(title, party.hex().upper(), counter)] = (n, dev.executed_n.get((party, counter), 0))
            return out
        return self.call(snap)

    @property
    def sent(self):
        return list(self.ch.sent)

    def tunnel_open(self):
        return self.ch.tunnel_id is not None

    def wait_until(self, predicate, timeout):
        deadline = time.time() + timeout
        with self.ch.changed:
            while not predicate():
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.ch.changed.wait(min(left, 0.1))
        return True

    def wait_received(self, n, timeout):
        return self.wait_until(lambda: len(self.ch.received) >= n, timeout)

    def wire(self, t0, t1):
        """What the UART carried between monotonic times t0 and t1: bytes each way (pieces
        cut at the window's edges count pro rata), seconds each way was busy, and
        `busy_s`, the time at least one direction was carrying bytes (full duplex: the
        two directions overlap, so this is not their sum)."""
        out = {}
        spans = []
        for name, line in (("to_host", self.to_host), ("from_host", self.from_host)):
            iv = line.intervals()
            n = 0.0
            for a, b, k in iv:
                if b > t0 and a < t1:
                    n += k if b == a else k * (min(b, t1) - max(a, t0)) / (b - a)
            out[name + "_bytes"] = round(n, 1)
            out[name + "_s"] = union_seconds([(a, b) for a, b, _ in iv], t0, t1)
            spans += [(a, b) for a, b, _ in iv]
        out["busy_s"] = union_seconds(spans, t0, t1)
        out["byte_time_s"] = self.byte_time
        return out

    def stats(self):
        return {"ncp": dict(self.ncp.counters), "ch": dict(self.ch.counters), "held": len(self.ch.held),
                "dropped_held": self.ch.dropped_held, "received": len(self.ch.received), "sent": len(self.ch.sent),
                "tunnel_id": self.ch.tunnel_id, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "uart": {"to_host": self.to_host.stats(), "from_host": self.from_host.stats()},
                "policies": dict(self.ncp.policies), "faults": self.faults.as_dict()}
