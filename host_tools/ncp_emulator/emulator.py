"""NcpEmulator: the far side of the board's Zigbee UART (a pty), as a thread or a CLI.

    emu = NcpEmulator(master_fd_or_path, ezsp_version=13, log_path="ch.jsonl")
    emu.start()                      # own thread + asyncio loop
    emu.set_faults(byte_error_rate=0.01); emu.reset_ncp(); emu.network_down(2.0)
    emu.send_alert("ESME"); emu.wait_received(5, timeout=30); emu.stop()

Bytes to the board are paced at the configured baud (10 bits a byte: 86.8 us at 115200).
If the board process dies the pty stays; the emulator keeps its state and the firmware's
RST brings the link back. If the pty itself goes away (EIO) it reopens the path."""
import asyncio
import errno
import os
import threading
import time
import tty

from .ch import CommsHub
from .ncp import Faults, Ncp


class NcpEmulator:
    def __init__(self, pty, baud=115200, ezsp_version=13, max_payload=82, log_path=None, corpus_dir=None,
                 faults=None, hold_max=32, busy_retry_s=3.0, verbose=False):
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
        self.messages = []                 # emulator log lines (also printed when verbose)
        self.loop = None
        self.ncp = None
        self.ch = None
        self._fd = None
        self._own_fd = False
        self._thread = None
        self._ready = threading.Event()
        self._txq = None
        self._stop = None
        self.bytes_in = 0
        self.bytes_out = 0

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
        self._txq = asyncio.Queue()
        self._open()
        self.ncp = Ncp(self.loop, self._txq.put_nowait, self.ezsp_version, self.max_payload, self.faults, log=self._log)
        self.ch = CommsHub(self.ncp, self.loop, self.log_path, self.corpus_dir, self.hold_max, self.busy_retry_s,
                           log=self._log)
        self.ncp.ch = self.ch
        self.loop.add_reader(self._fd, self._readable)
        writer = asyncio.ensure_future(self._writer())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            writer.cancel()
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
        self.ncp.feed(data)

    def _reopen(self):
        try:
            self._open()
            self.loop.add_reader(self._fd, self._readable)
        except OSError:
            self.loop.call_later(0.5, self._reopen)

    async def _writer(self):
        # pace at the baud: a frame's bytes leave no faster than the UART could carry them
        clock = time.monotonic()
        while True:
            data = await self._txq.get()
            f = self.faults
            if f.byte_error_rate:
                data = bytearray(data)
                for i in range(len(data)):
                    if f.rng.random() < f.byte_error_rate:
                        data[i] ^= 1 << f.rng.randrange(8)
                        self.ncp.counters["bytes_corrupted"] += 1
            view = memoryview(bytes(data))
            while view:
                try:
                    n = os.write(self._fd, view)
                except BlockingIOError:
                    await asyncio.sleep(0.002)
                    continue
                except OSError:
                    break  # no reader on the pty: the bytes are lost, as on a real wire
                view = view[n:]
                self.bytes_out += n
                now = time.monotonic()
                clock = max(clock, now) + n * self.byte_time
                delay = clock - now
                if delay > 0.001:
                    await asyncio.sleep(delay)

    def start(self):
        """Run in a daemon thread; returns when the emulator is listening."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.main()), name="ncp-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("NCP emulator did not start")
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

    def reset_ncp(self):
        self.call(self.ncp.inject_reset)

    def network_down(self, seconds=None):
        self.call(self.ncp.set_network, False)
        if seconds is not None:
            self.loop.call_soon_threadsafe(lambda: self.loop.call_later(seconds, self.ncp.set_network, True))

    def network_up(self):
        self.call(self.ncp.set_network, True)

    def tunnel_busy(self, seconds):
        """The CH stops acknowledging APS frames for `seconds` (delivery failures)."""
        self.call(setattr, self.ch, "refuse_until", time.time() + seconds)

    def close_tunnel(self, reopen_after_s=None):
        self.call(self.ch.close_tunnel, reopen_after_s)

    def forget_tunnel(self, reopen_after_s=None):
        self.call(self.ch.forget_tunnel, reopen_after_s)

    def request_tunnel(self):
        self.call(self.ch.request_tunnel)

    def send_raw(self, data):
        """Bytes straight onto the wire to the board (garbage, hand-made frames)."""
        self.loop.call_soon_threadsafe(self._txq.put_nowait, bytes(data))

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

    def stats(self):
        return {"ncp": dict(self.ncp.counters), "ch": dict(self.ch.counters), "held": len(self.ch.held),
                "dropped_held": self.ch.dropped_held, "received": len(self.ch.received), "sent": len(self.ch.sent),
                "tunnel_id": self.ch.tunnel_id, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "faults": self.faults.as_dict()}
