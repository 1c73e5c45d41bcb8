# ASH link, host side (UG101): reset / RSTACK, DATA numbering, ACK / NAK, retransmission
# with an adaptive timeout, a window of up to TX_K frames, nRdy both ways, and link-failure
# detection. I/O only through the asyncio streams it is given; the codec is ash.py.
# The link never resets itself: on failure it fails every waiting sender with AshError and
# sets `failed`; the owner (han.py) decides when to reset it again.
import asyncio
from micropython import const

from ppmid.errors import PpmidError
from ppmid.zigbee import ash

from ppmid.clock import ticks_ms, ticks_diff, ticks_add, sleep_ms, wait_event_ms

E_ASH_RESET = "E_ASH_RESET"
E_ASH_LINK = "E_ASH_LINK"

# UG101 says 1.6 s to start and 400 ms at least. The adaptive estimate stays at least 4x
# the measured round trip, so a slow module still raises it (and a silent one doubles it);
# low values let a noisy line recover from a damaged frame in tens of milliseconds (the
# module NAKs only the first damaged frame of a reject condition, so the rest cost a
# timeout each), and a spurious resend is a duplicate the module ACKs and drops. Karn's
# rule takes samples only from frames sent once, few on a noisy line: hence a low start.
# (all private: a public const is a name and a module-dict entry the running app holds;
# tests/firmware/test_ash_link.py checks the ones its counts use, docs/memory.md session 11)
_T_RX_ACK_INIT = const(400)
_T_RX_ACK_MIN = const(50)
_T_RX_ACK_MAX = const(3200)
_T_REMOTE_NOTRDY = const(1000)
_T_TX_ACK_DELAY = const(20)
_T_RSTACK_MAX = const(3200)
_ACK_TIMEOUTS = const(4)         # in a row, with no sign of life from the NCP (UG101)
# in a row while the NCP is alive (heard since the frame first went out, or within
# T_ALIVE): the line damages our frames; UG101's 4 would fail the link (and leave a
# command uncertain) on ~1 in 8 frames of 110 bytes at a 1% byte error rate. A damaged
# frame is NAKed once per reject condition (UG101), so an alive module can stay silent
# through several of our retransmissions
_ACK_TIMEOUTS_ALIVE = const(32)
_ALIVE_X_MAX = const(2)          # T_ALIVE = 2 x T_RX_ACK_MAX (6.4 s)
_GIVE_UP_X_MAX = const(5)        # a frame unacknowledged 5 x T_RX_ACK_MAX (16 s) fails anyway
_DOUBLE_ACK_MS = const(2000)     # after a damaged frame, ACKs go twice for this long
_TX_K_MAX = const(5)
_TICK_MS = const(20)
_NAK_REPEAT_MS = const(3)   # see _handle: a damaged frame while rejecting is NAKed again

# The link's counters: one list of ints, by these indices. Their names are
# zigbee/han_counters.py's LINK (in this order), which only tests and reports load: as a
# dict's keys they were names the firmware interned for reports it never makes
# (docs/memory.md, session 10).
_C_TX_DATA = const(0)
_C_RETX = const(1)
_C_RX_DATA = const(2)
_C_RX_DUP = const(3)
_C_RX_OUT_OF_ORDER = const(4)
_C_TX_NAK = const(5)
_C_RX_NAK = const(6)
_C_ACK_TIMEOUTS = const(7)
_C_RESETS = const(8)
_C_LINK_FAILURES = const(9)
_C_UNSOLICITED_RSTACK = const(10)
_C_RX_ERROR_FRAMES = const(11)
_C_UNKNOWN_FRAMES = const(12)
_C_RX_WHILE_DOWN = const(13)
_C_REMOTE_NOT_READY = const(14)
_C_NOT_TAKEN_AT_RESET = const(15)
_C_RX_STRAY_ACK = const(16)
_C_DAMAGED_RSTACK = const(17)
_C_LOST_RSTACK = const(18)
_COUNTERS = const(19)


class AshError(PpmidError):
    # on_wire: whether the NCP may have taken the DATA frame of the failed send(): it was
    # written to the UART at least once and nothing proves otherwise. Unknown = True: the
    # safe assumption. False after an unsolicited RSTACK for frames the NCP had not
    # acknowledged (see _handle).
    on_wire = True


# The failures' and rare log lines' sentences, by their index in
# ppmid.zigbee.ashlink_errors.SENTENCES (the text)
_S_CLOSED = const(0)
_S_LINK_UP = const(1)
_S_NO_RSTACK = const(2)
_S_FRAME_LARGE = const(3)
_S_WRITE_FAILED = const(4)
_S_NUMBERS_LOST = const(5)
_S_ACK_TIMEOUTS = const(6)
_S_ACK_TIMEOUTS_SILENT = const(7)
_S_RESET_DAMAGED = const(8)
_S_RESET_CODE = const(9)
_S_ASH_ERROR = const(10)
_S_ON_FRAME = const(11)
_S_TURN_FAILED = const(12)


def _text(key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.zigbee.ashlink_errors', loaded when
    # the link needs one and dropped again (as str constants here the sentences held
    # ~0.7 KB). Never raises: the link's own loops fail the link with it, and a heap or a
    # flash that cannot load the module must not stop them (the text is then its key).
    try:
        from ppmid.modules import sentence
        return sentence("ppmid.zigbee.ashlink_errors", key, arg)
    except Exception:
        return "ash sentence %d" % key


class AshLink:
    """on_frame(ezsp_bytes) is called (synchronously) for every new in-order DATA frame;
    ready() -> bool says whether the host can take more (when not, our ACKs carry nRdy)."""

    def __init__(self, reader, writer, on_frame, ready, tx_k=_TX_K_MAX, log=None, on_fail=None,
                 timers=None):
        self._reader = reader
        self._writer = writer
        self._on_frame = on_frame
        self._ready = ready
        self._tx_k = max(1, min(_TX_K_MAX, tx_k))
        self._log = log
        self._on_fail = on_fail          # on_fail(AshError), synchronous, on a real failure
        # (_T_RX_ACK_INIT, MIN, MAX, _T_RSTACK_MAX) in ms: UG101's values unless told otherwise
        self._timers = timers or (_T_RX_ACK_INIT, _T_RX_ACK_MIN, _T_RX_ACK_MAX, _T_RSTACK_MAX)
        self._enc = ash.Encoder()
        self._dec = ash.Decoder()
        self._wlock = asyncio.Lock()
        self._space = asyncio.Event()      # window space (or failure): wakes senders
        self._rstack = asyncio.Event()
        self.failed = asyncio.Event()
        self.failure = None                # AshError of the last failure
        self.connected = False
        self.reset_code = None
        self._tasks = []
        self.counters = [0] * _COUNTERS   # by _C_... index (above)
        self._t_ack = None
        self._clear()

    def _clear(self):
        self._frm = 0           # next frame number we assign
        self._ack_rx = 0        # oldest frame not yet acknowledged by the peer
        self._rx_exp = 0        # next frame number we expect (our ackNum)
        self._reject = False
        self._last_nak = ticks_ms()
        self._pending = {}      # frm -> the frame's Event (send)
        if self._t_ack is None:
            self._t_ack = self._timers[0]
        else:
            # a reset does not change the line: keep the learned round trip, only undo
            # the back-off (a noisy line gives few clean samples to relearn it from)
            self._t_ack = max(self._timers[1], min(self._t_ack, self._timers[0]))
        self._timeouts = 0
        self._deadline = None   # ms tick when the oldest unacked frame times out
        self._notrdy_until = None
        self._heard = 0         # valid frames from the NCP in this session
        self._heard_ms = None   # ms tick of the last one
        self._stray = 0         # evidence of a module that lost our numbering (see _on_ack)
        self._bad_items = 0     # damaged frames handled
        # damage count at the last intact frame: damaged frames handled so far, and cancelled /
        # substituted ones (counted by the decoder for its whole chunk at once: it may run
        # ahead, never behind)
        self._damage_ok = self._bad_items + self._dec.cut()
        self._noisy_until = None  # ms tick until which our ACKs are written twice

    def _logf(self, fmt, *args):
        if self._log:
            self._log("ash: " + (fmt % args if args else fmt))

    # ---- lifecycle --------------------------------------------------------------------
    async def close(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self._fail(AshError(E_ASH_LINK, _text(_S_CLOSED)), count=False)

    async def reset(self, attempts=3):
        """Send RST until the NCP answers RSTACK; then the link is up (frame numbers 0)."""
        if not self._tasks:  # the link's loops run from the first reset on
            self._tasks = [asyncio.create_task(self._rx_loop()), asyncio.create_task(self._timer_loop())]
        self._fail(AshError(E_ASH_LINK, "link reset"), count=False)
        self.counters[_C_RESETS] += 1
        for _ in range(attempts):
            self._rstack.clear()
            self._dec.reset()
            await self._write(self._enc.rst())
            if not await wait_event_ms(self._rstack, self._timers[3]):
                self._logf("no RSTACK")
                continue
            self._clear()
            self.failed.clear()
            self.failure = None
            self.connected = True
            self._space.set()
            if self._log:
                self._logf(_text(_S_LINK_UP, self.reset_code or 0))
            return self.reset_code
        raise AshError(E_ASH_RESET, _text(_S_NO_RSTACK, attempts))

    # ---- sending ----------------------------------------------------------------------
    async def send(self, ezsp_frame):
        """Send one EZSP frame; return when the NCP acknowledged it. Raises AshError."""
        if len(ezsp_frame) > ash.MAX_DATA:
            raise AshError(E_ASH_LINK, _text(_S_FRAME_LARGE, (len(ezsp_frame), ash.MAX_DATA)))
        while True:
            if not self.connected:
                raise self._error(self.failure, False)
            # the window: fewer than tx_k frames unacknowledged, and no nRdy from the module
            if self._notrdy_until is not None and ticks_diff(self._notrdy_until, ticks_ms()) <= 0:
                self._notrdy_until = None
            if self._notrdy_until is None and len(self._pending) < self._tx_k:
                break
            self._space.clear()
            await self._space.wait()
        frm = self._frm
        self._frm = (frm + 1) & 7
        # the frame until the NCP acknowledges it: an Event (set when acknowledged, or when
        # the link failed) that carries the frame's state (no class of its own: a type
        # object and its dict less for a board to hold; docs/memory.md, session 10)
        entry = asyncio.Event()
        entry.frame = bytes(ezsp_frame)   # the EZSP frame
        entry.sent_ms = entry.first_ms = ticks_ms()   # the latest and the first transmission
        entry.retx = False        # sent more than once: no round-trip sample (Karn)
        entry.error = None        # AshError when the link failed before the ACK
        entry.on_wire = False     # written to the UART at least once (the NCP may have it)
        entry.heard = self._heard  # valid frames heard from the NCP before it first went out
        self._pending[frm] = entry
        try:
            await self._send_data(frm, entry, False)
        except OSError as exc:
            self._fail(AshError(E_ASH_LINK, _text(_S_WRITE_FAILED, (exc,))))
        await entry.wait()
        if entry.error is not None:
            raise self._error(entry.error, entry.on_wire)

    @staticmethod
    def _error(err, on_wire):
        # a fresh exception per sender: the link's failure is shared, on_wire is not
        if err is None:
            err = AshError(E_ASH_LINK, "link is down")
        out = AshError(err.code, err.message)
        out.on_wire = on_wire
        return out

    async def _send_data(self, frm, entry, re_tx):
        if re_tx:
            entry.retx = True
            self.counters[_C_RETX] += 1
        else:
            self.counters[_C_TX_DATA] += 1
        entry.sent_ms = ticks_ms()
        entry.on_wire = True  # from here on the NCP may have it, even if the write fails midway
        if self._deadline is None or re_tx:
            # the clock runs from the latest (re)transmission: a NAK-triggered resend
            # must get a whole timeout of its own
            self._deadline = ticks_add(ticks_ms(), self._t_ack)
        await self._write(bytes(self._enc.data(frm, re_tx, self._rx_exp, entry.frame)))

    async def _write(self, data):
        async with self._wlock:
            self._writer.write(data)
            await self._writer.drain()

    async def _resend_from(self, frm):
        # go back N: every unacknowledged frame from `frm` on, in order, marked reTx
        n = (self._frm - frm) & 7
        for i in range(n):
            f = (frm + i) & 7
            e = self._pending.get(f)
            if e is not None and self.connected:
                await self._send_data(f, e, True)

    # ---- timers -----------------------------------------------------------------------
    async def _timer_loop(self):
        while True:
            await sleep_ms(_TICK_MS)
            try:
                if not self.connected:
                    continue
                if self._notrdy_until is not None and ticks_diff(ticks_ms(), self._notrdy_until) >= 0:
                    self._notrdy_until = None
                    self._space.set()
                if self._deadline is None or not self._pending:
                    self._deadline = None
                    continue
                if ticks_diff(ticks_ms(), self._deadline) < 0:
                    continue
                self.counters[_C_ACK_TIMEOUTS] += 1
                self._timeouts += 1
                now = ticks_ms()
                oldest = self._pending.get(self._ack_rx)
                alive = oldest is not None and (self._heard > oldest.heard or (
                    self._heard_ms is not None and ticks_diff(now, self._heard_ms) < _ALIVE_X_MAX * self._timers[2]))
                limit = _ACK_TIMEOUTS_ALIVE if alive else _ACK_TIMEOUTS
                if self._timeouts >= _ACK_TIMEOUTS and oldest is not None and ticks_diff(now, oldest.first_ms) > _GIVE_UP_X_MAX * self._timers[2]:
                    limit = 0
                if self._stray >= 2:
                    # the module answers with frame numbers of a session that is not ours: its
                    # answers prove nothing, and waiting longer will not help
                    limit = _ACK_TIMEOUTS
                if self._timeouts >= limit:
                    if self._stray >= 2:
                        self.counters[_C_LOST_RSTACK] += 1
                        self._module_reset(_text(_S_NUMBERS_LOST))
                        continue
                    self._fail(AshError(E_ASH_LINK, _text(_S_ACK_TIMEOUTS if alive else _S_ACK_TIMEOUTS_SILENT,
                                                          self._timeouts)))
                    continue
                if not alive:
                    # UG101's back-off is for a module that is slow or gone; a module that keeps
                    # answering is retried at the running estimate
                    self._t_ack = min(self._timers[2], self._t_ack * 2)
                self._deadline = ticks_add(ticks_ms(), self._t_ack)
                await self._resend_from(self._ack_rx)
            except Exception as exc:
                self._turn_failed(exc)

    def _turn_failed(self, exc):
        # One turn of the link's receive or timer loop raised: a write that failed (an ACK,
        # a NAK, a resend: a pty whose other end went away, a UART driver error) or a heap
        # that could not hold what the turn built. The link fails (the NCP may lack our
        # answer; the supervisor resets it) and the loop goes on: it is the UART's only
        # reader (or the only retransmitter), so a loop that ended left every later reset
        # waiting for an RSTACK nobody read (review r6-3). A cancel is no Exception.
        self._fail(AshError(E_ASH_LINK, _text(_S_TURN_FAILED, (exc,))))

    # ---- receiving --------------------------------------------------------------------
    async def _rx_loop(self):
        while True:
            try:
                try:
                    chunk = await self._reader.read(256)
                except OSError as exc:
                    self._logf("read error %r", exc)
                    chunk = b""
                if not chunk:
                    await sleep_ms(100)
                    continue
                for item in self._dec.feed(chunk):
                    await self._handle(item)
            except Exception as exc:
                # the whole pass: the read (a new chunk each time) and the decoder (a frame
                # each) allocate more than _handle does (review r9-2). A decoder that
                # raised kept its state half-written: it starts again at the next flag.
                # The rest of the chunk goes with it; the link is failed and reset anyway.
                # A pause, so an error that persists is no hot spin
                self._dec.reset()
                self._turn_failed(exc)
                await sleep_ms(100)

    async def _handle(self, item):
        control = item[0]
        if control == ash.BAD:
            self._bad_items += 1
            self._logf("bad frame: %s", item[1])
            self._noisy_until = ticks_add(ticks_ms(), _DOUBLE_ACK_MS)
            if (self.connected and item[1] == "crc" and item[2] == ash.RSTACK
                    and item[3] == 5 and self._bad_items + self._dec.cut() - self._damage_ok == 1):
                # RSTACK's control byte and RSTACK's length (control, 2 bytes, CRC), right
                # after an intact frame: the damage is in its version, reset code or CRC,
                # so the module did reset. (A longer frame split by a byte damaged into a
                # flag or a cancel leaves a damaged or cancelled piece before its tail,
                # and gets no such verdict.)
                self.counters[_C_DAMAGED_RSTACK] += 1
                self._module_reset(_text(_S_RESET_DAMAGED))
                return
            # UG101 sends one NAK per reject condition. We also NAK a damaged frame that
            # arrives while already rejecting: on a noisy line the NCP otherwise waits out
            # its ACK timer for every damaged retransmission, and 4 of those in a row are
            # a link failure (ERROR 0x51) that leaves any send in flight uncertain. Each
            # NAK brings back one retransmission, so this does not snowball; the short
            # guard only merges the pieces of one frame split by a damaged flag byte.
            if self.connected and (not self._reject or ticks_diff(ticks_ms(), self._last_nak) >= _NAK_REPEAT_MS):
                await self._nak()
            return
        self._damage_ok = self._bad_items + self._dec.cut()
        if self.connected:
            self._heard += 1
            self._heard_ms = ticks_ms()
        if control == ash.RSTACK:
            payload = item[1]
            if len(payload) == 2 and payload[0] == ash.ASH_VERSION:
                self.reset_code = payload[1]
                if self.connected:
                    # The NCP reset on its own. A frame it took was acknowledged at once,
                    # and that ACK (or a later frame's ackNum) came before this RSTACK on
                    # the same wire; a frame it had not acknowledged died with its old
                    # session. A copy arriving after the reset cannot run either: the new
                    # session refuses every EZSP command before the version exchange and
                    # is off the network until networkInit. So those frames were not taken.
                    # (Not covered: the module's ACK and its answers all damaged on the
                    # wire, then a reset within the ~0.4 s before it resends: see
                    # docs/zigbee.md.)
                    self.counters[_C_UNSOLICITED_RSTACK] += 1
                    self._module_reset(_text(_S_RESET_CODE, payload[1]))
                self._rstack.set()
            return
        if control == ash.ERROR:
            self.counters[_C_RX_ERROR_FRAMES] += 1
            code = item[1][1] if len(item[1]) > 1 else 0
            self._fail(AshError(E_ASH_LINK, _text(_S_ASH_ERROR, code)))
            return
        # control bytes (UG101): DATA 0x00-0x7F, ACK 0x80-0x9F, NAK 0xA0-0xBF; any other
        # (an RST from the module, a value ASH does not define) is counted and dropped
        ack_or_nak = control & 0xC0 == 0x80
        if control & 0x80 and not ack_or_nak:
            self.counters[_C_UNKNOWN_FRAMES] += 1
            return
        if not self.connected:
            self.counters[_C_RX_WHILE_DOWN] += 1
            return
        nak = control & 0xE0 == 0xA0
        self._on_ack(control & 7, nak)
        if ack_or_nak:
            if control & 8:
                self.counters[_C_REMOTE_NOT_READY] += 1
                self._notrdy_until = ticks_add(ticks_ms(), _T_REMOTE_NOTRDY)
            else:
                self._notrdy_until = None
                self._space.set()
            if nak:
                self.counters[_C_RX_NAK] += 1
                await self._resend_from(control & 7)
            return
        # DATA
        frm = (control >> 4) & 7
        if frm == self._rx_exp:
            self._rx_exp = (frm + 1) & 7
            self._reject = False
            self.counters[_C_RX_DATA] += 1
            try:
                self._on_frame(item[1])
            except Exception as exc:  # the upper layer's bug must not kill the link
                if self._log:
                    self._logf(_text(_S_ON_FRAME, (exc,)))
            await self._ack()
        elif control & 8 and ((self._rx_exp - frm) & 7) <= _TX_K_MAX:
            # a retransmission of something we already have: our ACK was lost
            self.counters[_C_RX_DUP] += 1
            await self._ack()
        else:
            self.counters[_C_RX_OUT_OF_ORDER] += 1
            if not self._reject:
                await self._nak()

    def _module_reset(self, why):
        """The module reset on its own (see the RSTACK case in _handle): frames it had not
        acknowledged were not taken."""
        for e in self._pending.values():
            if e.on_wire:
                self.counters[_C_NOT_TAKEN_AT_RESET] += 1
            e.on_wire = False
        self._fail(AshError(E_ASH_LINK, why))

    def _on_ack(self, ack_num, nak):
        n = (ack_num - self._ack_rx) & 7
        if n > ((self._frm - self._ack_rx) & 7):
            # an ackNum for frames we never sent. A module that reset (and whose RSTACK
            # we lost) answers our frames with 0: a NAK(0) (a module NAKs with its own
            # expected number) counts as proof, an ACK(0) only as half of one, since a
            # late ACK of ours can be 0 too (one in 8)
            if ack_num == 0 and self._pending:
                self._stray += 2 if nak else 1
                self.counters[_C_RX_STRAY_ACK] += 1
            return
        if n == 0:
            self._stray = 0  # an answer in step with our numbering
            return
        now = ticks_ms()
        for i in range(n):
            f = (self._ack_rx + i) & 7
            e = self._pending.pop(f, None)
            if e is None:
                continue
            if not e.retx:  # Karn: only frames sent once give an honest round trip
                rtt = ticks_diff(now, e.sent_ms)
                self._t_ack = max(self._timers[1], min(self._timers[2], (self._t_ack * 7) // 8 + rtt // 2))
            e.set()
        self._ack_rx = ack_num
        self._timeouts = 0
        self._stray = 0
        self._deadline = ticks_add(now, self._t_ack) if self._pending else None
        self._space.set()

    async def _ack(self):
        frame = bytes(self._enc.ack(self._rx_exp, not self._ready()))
        if self._noisy_until is not None:
            if ticks_diff(self._noisy_until, ticks_ms()) > 0:
                # on a damaging line a lost ACK costs the NCP an ACK timeout, and 4 in a
                # row make it give up (ERROR) with our command's answer undelivered; a
                # second copy is 5 bytes and the NCP ignores an ackNum it already has
                frame += frame
            else:
                self._noisy_until = None
        await self._write(frame)

    async def _nak(self):
        self._reject = True
        self._last_nak = ticks_ms()
        self.counters[_C_TX_NAK] += 1
        await self._write(bytes(self._enc.nak(self._rx_exp, not self._ready())))

    def fail(self, reason):
        """The owner saw the link misbehave (e.g. no EZSP response to an acknowledged
        command: frame numbers out of step after a lost RSTACK): a link failure like any."""
        if self.connected:
            self._fail(AshError(E_ASH_LINK, reason))

    def _fail(self, err, count=True):
        was = self.connected
        self.connected = False
        if count and was:
            self.counters[_C_LINK_FAILURES] += 1
            self._logf("%s", err)
        if was or self.failure is None:
            self.failure = err
        for e in self._pending.values():
            e.error = err
            e.set()
        self._pending = {}
        self._deadline = None
        self._space.set()
        self.failed.set()
        if count and was and self._on_fail:
            self._on_fail(err)
