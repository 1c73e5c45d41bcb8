# The wired road: an engineer's laptop on a dedicated serial port of the board sends
# binary envelopes in frames (ppmid.wired.frames, docs/wired.md) and gets back, on the
# same port, an ACK or a NACK with a code for each frame, the statuses of its commands as
# they move and their final result, which is kept (bounded) until the laptop says it has
# it (TAKEN), so a cable pulled mid-trace loses nothing: on reconnect a HELLO asks for
# what is kept.
#
# Commands go through the relay core exactly like MQTT and NFC ones (envelope mac, id
# dedupe, expiry, GBCS validation, admission and pacing, journal): `relay.accept(env,
# "serial")`. Statuses are read back from the relay (status(id) / result(id)), polled
# every poll_ms while a command is watched, so the relay core needs no hook for this road.
#
# A flood cannot take the board: the channel's own token bucket refuses envelopes beyond
# rate_per_s before the mac is even computed (E_WIRE_RATE), NACKs are rate limited too
# (beyond them errors are only counted), every frame is handled to the end before the
# next is read (the UART buffer, then the sender, absorb the rest), and the task yields
# between two frames.
import json

from ppmid.errors import PpmidError
from ppmid.clock import ticks_ms, ticks_diff, sleep_ms, wait_for_ms
from ppmid.mqtt.contract import status_json
from ppmid.relay.ratelimit import TokenBuckets
from ppmid.wired import frames as F

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

VIA = "serial"
PROTOCOL = 1
_FINAL = ("response", "failed", "rejected", "topped-up", "already-executed")
_READ = 256          # bytes read from the UART at a time
_WATCH_MAX = 64      # commands whose statuses are followed at once
_NACK_RATE = 20      # NACKs per second (burst as many) before errors are only counted


def max_payload(max_gbcs):
    """Largest frame payload the gateway takes: a binary command envelope with the
    largest GBCS allowed (docs/envelope.md: 3 + id 32 + kid 1 + 32 + expires 4 + 2 + gbcs +
    a public-key user's signature 64, where a mac takes 32; nfc/phone.max_envelope alike)."""
    return 138 + max_gbcs


def decode_envelope(payload, max_gbcs):
    """The intake decides what an envelope frame carries: a binary command envelope or a
    top-up (docs/envelope.md), as on NFC."""
    from ppmid import envelope
    return envelope.from_binary_any(payload, max_gbcs)


class WiredRoad:
    """reader, writer: asyncio streams on the wired UART. relay: the relay core (accept,
    status, result, delivered). settings: the config's checked "wired" section."""

    def __init__(self, reader, writer, relay, settings, max_gbcs, gateway=None, log=print,
                 decode=decode_envelope):
        self.reader = reader
        self.writer = writer
        self.relay = relay
        self.max_gbcs = max_gbcs
        self.gateway = gateway
        self.log = log
        self.decode = decode
        self.poll_ms = settings["poll_ms"]
        self.keep = settings["keep"]
        self.keep_bytes = settings["keep_bytes"]
        self.deframer = F.Deframer(max_payload(max_gbcs), settings["frame_timeout_ms"])
        self._rx = bytearray(_READ)
        self._envelopes = TokenBuckets(settings["rate_per_s"], settings["burst"], ticks_diff, 1)
        self._nacks = TokenBuckets(_NACK_RATE, _NACK_RATE, ticks_diff, 1)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.kept = []       # [(id, RESULT payload)] oldest first, until TAKEN
        self.watched = {}    # id -> last status sent
        # ids this wire delivered (ENVELOPE) and no HELLO has named since: a top-up's RESULT
        # carries the meter's figures to them alone (relay/topups.py by_id_alone)
        self.proven = set()
        self.stats = {"frames": 0, "envelopes": 0, "accepted": 0, "refused": 0, "rate": 0,
                      "nacks": 0, "nacks_dropped": 0, "results": 0, "taken": 0,
                      "kept_dropped": 0, "write_errors": 0}
        self._tasks = []

    # ---- tasks ---------------------------------------------------------------------------
    def start(self):
        self._tasks = [asyncio.create_task(self.run()), asyncio.create_task(self.watch())]
        return self._tasks

    async def run(self):
        """Read and answer frames forever."""
        d = self.deframer
        rx = self._rx
        has_readinto = hasattr(self.reader, "readinto")
        while True:
            try:
                try:
                    if has_readinto:
                        n = await wait_for_ms(self.reader.readinto(rx), d.timeout_ms)
                        data = memoryview(rx)[:n or 0]
                    else:
                        data = await wait_for_ms(self.reader.read(_READ), d.timeout_ms)
                except asyncio.TimeoutError:
                    data = b""
                if not data and not d.pending():
                    continue
                await self.feed(data)
                err = d.expire(ticks_ms(), ticks_diff)
                if err is not None:
                    await self._refuse(err.seq, err.code, err.message)
            except Exception as exc:  # a read that failed, or a turn that raised outside a
                # frame's handler (a MemoryError refusing a deframing error): said, and the
                # road goes on; a road that ended was deaf until a reboot (review r6-6)
                self.log("wired: read or turn failed: %r" % (exc,))
                await sleep_ms(1000)

    async def feed(self, data):
        """Handle every frame and error in `data` (bytes read from the UART)."""
        d = self.deframer
        pos = 0
        n = len(data)
        while pos < n:
            used, ev = d.feed(data[pos:], ticks_ms())
            pos += used
            if ev is None:
                continue
            if isinstance(ev, F.Frame):
                self.stats["frames"] += 1
                try:
                    await self._frame(ev)
                except PpmidError as exc:
                    await self._refuse(ev.seq, exc.code, exc.message)
                except Exception as exc:  # a bug must not end the road: say so, go on
                    self.log("wired: frame 0x%02X failed: %r" % (ev.type, exc))
                    await self._refuse(ev.seq, "E_INTERNAL", "internal error: %r" % (exc,))
            else:
                await self._refuse(ev.seq, ev.code, ev.message)
            await asyncio.sleep(0)  # MQTT, NFC and the HAN run between two frames

    async def watch(self):
        """Follow the watched commands' statuses; a final one becomes a kept RESULT."""
        while True:
            if not self.watched:
                self._wake.clear()
                await self._wake.wait()
            for id in list(self.watched):
                last = self.watched.get(id)
                try:
                    await self._follow(id)
                except Exception as exc:  # (a MemoryError rendering a large response, a
                    # journal read): said, and the id watched again, so the next poll tries
                    # once more; a watch that ended streamed and kept no result again
                    # (review r6-6)
                    self.log("wired: %s not followed: %r" % (id, exc))
                    self.watched[id] = last
            await sleep_ms(self.poll_ms)

    # ---- frames --------------------------------------------------------------------------
    async def _frame(self, fr):
        t = fr.type
        if t == F.T_ENVELOPE:
            await self._envelope(fr)
        elif t == F.T_HELLO:
            await self._hello(fr)
        elif t == F.T_TAKEN:
            id = _id(fr.payload)
            self.stats["taken"] += 1
            self._drop_kept(id)
            self.watched.pop(id, None)
            delivered = getattr(self.relay, "delivered", None)
            if delivered is not None:
                delivered(id, VIA)  # no broker: the journal need not wait for one
            await self._send(F.T_ACK, fr.seq, bytes((fr.seq,)))
        else:
            raise PpmidError(F.E_WIRE_TYPE, "frame type 0x%02X is not one the gateway takes" % t)

    async def _envelope(self, fr):
        self.stats["envelopes"] += 1
        now = ticks_ms()
        if self._envelopes.wait_ms(0, now):
            self.stats["rate"] += 1
            raise PpmidError(F.E_WIRE_RATE, "more envelopes than the channel takes per second: send it again later")
        self._envelopes.take(0, now)
        seq = fr.seq
        try:
            env = self.decode(fr.payload, self.max_gbcs)
            r = await self.relay.accept(env, VIA)
        except PpmidError:
            self.stats["refused"] += 1
            raise
        self.stats["accepted"] += 1
        id = r["id"]
        env = None
        await self._send(F.T_ACK, seq, bytes((seq,)))
        self._watch(id)
        if "again" not in r:
            # this accept journaled it: a top-up's figures are this wire's (a redelivered
            # id's status is no proof of ownership: review_w6-4)
            self.proven.add(id)
        await self._status(id, r["status"])

    async def _hello(self, fr):
        p = fr.payload
        if len(p) < 1 or p[0] != PROTOCOL:
            raise PpmidError(F.E_WIRE_PAYLOAD, "HELLO protocol version %s not supported (want %d)"
                             % (p[0] if len(p) else "missing", PROTOCOL))
        ids = _ids(p, 1, self.keep + _WATCH_MAX)
        if not ids:
            ids = [k[0] for k in self.kept] + list(self.watched)
        unknown = []
        for id in ids:
            if self._kept(id) is None and id not in self.watched and self.relay.status(id) is None:
                unknown.append(id)
        info = {"v": PROTOCOL, "gateway": self.gateway, "max_payload": self.deframer.max_payload,
                "kept": len(self.kept), "unknown": unknown}
        await self._send(F.T_HELLO, fr.seq, json.dumps(info).encode())
        for id in ids:
            if id in unknown:
                continue
            self.proven.discard(id)   # named by id alone: statuses, and a top-up's without figures
            k = self._kept(id)
            if k is not None:
                await self._send(F.T_RESULT, 0, k)
                continue
            self.watched.pop(id, None)  # _follow sends its current status again
            self._watch(id)
            await self._follow(id, again=True)

    # ---- statuses and results ------------------------------------------------------------
    def _watch(self, id):
        if id in self.watched:
            return
        if len(self.watched) >= _WATCH_MAX:
            # the oldest is no longer followed here; HELLO asks for it again
            for k in self.watched:
                del self.watched[k]
                self.proven.discard(k)
                break
        self.watched[id] = None
        self._wake.set()

    async def _follow(self, id, again=False):
        s = self.relay.status(id)
        last = self.watched.get(id)
        if s in _FINAL or (s is None and last is not None):
            r = self.relay.result(id) if s is not None else None
            self.watched.pop(id, None)
            await self._result(id, r, last)
        elif s is not None and (s != last or again):
            await self._status(id, s)

    async def _status(self, id, s):
        if s in _FINAL:
            self.watched.pop(id, None)
            await self._result(id, self.relay.result(id), s)
            return
        self.watched[id] = s
        # a HELLO may name another road's command (docs/wired.md): its own road is told
        e = self.relay.journal.by_id.get(id)
        await self._send(F.T_STATUS, 0, status_json(id, s, via=e.via if e is not None else None))

    async def _result(self, id, r, last):
        if r is None:
            # the relay forgot it (a timeout past its late window, or pushed out of its
            # short memory): say what is known, once; which road it came by is not
            err = {"code": "E_TIMEOUT" if last == "timeout" else "E_WIRE_LOST",
                   "message": "no response known for this command"}
            payload = kept = status_json(id, "timeout", error=err)
        else:
            payload = kept = _result_json(id, r)
            if "topup" in r:
                # the meter's answer to a top-up (ZCL, no GBCS protection): to the wire that
                # sent it, now; what is kept for a HELLO, which proves only the id, without it
                from ppmid.relay.topups import by_id_alone
                kept = _result_json(id, by_id_alone(r))
                if id not in self.proven:
                    payload = kept
        # the frame first (for a large response the likeliest MemoryError, review r6-6):
        # one that raised changed nothing, so watch's retry sends the same RESULT (a
        # top-up's figures to this wire again) and counts it once (review r9-5)
        frame = F.encode(F.T_RESULT, 0, payload)
        self._keep(id, kept)
        self.proven.discard(id)
        self.stats["results"] += 1
        await self._write(frame)

    def _keep(self, id, payload):
        self._drop_kept(id)
        self.kept.append((id, payload))
        total = 0
        for k in self.kept:
            total += len(k[1])
        while len(self.kept) > self.keep or (total > self.keep_bytes and len(self.kept) > 1):
            total -= len(self.kept[0][1])
            del self.kept[0]
            self.stats["kept_dropped"] += 1

    def _kept(self, id):
        for k in self.kept:
            if k[0] == id:
                return k[1]
        return None

    def _drop_kept(self, id):
        for i in range(len(self.kept)):
            if self.kept[i][0] == id:
                del self.kept[i]
                return

    # ---- writing -------------------------------------------------------------------------
    async def _refuse(self, seq, code, message):
        now = ticks_ms()
        if self._nacks.wait_ms(0, now):
            self.stats["nacks_dropped"] += 1
            return
        self._nacks.take(0, now)
        self.stats["nacks"] += 1
        await self._send(F.T_NACK, 0, F.nack_payload(0 if seq is None else seq, code, message))

    async def _send(self, ftype, seq, payload):
        await self._write(F.encode(ftype, seq, payload))

    async def _write(self, frame):
        async with self._lock:
            try:
                self.writer.write(frame)
                await self.writer.drain()
            except OSError as exc:
                # nobody on the other end is not an error of ours: the result stays kept
                self.stats["write_errors"] += 1
                self.log("wired: write failed: %r" % (exc,))


def _result_json(id, r):
    return status_json(id, r["status"], None, r.get("gbcs"), r.get("error"), r.get("via"),
                       None, r.get("late") or None, r.get("topup"))


def _id(payload):
    from ppmid.envelope import check_id
    try:
        return check_id(str(bytes(payload), "ascii"))
    except (UnicodeError, PpmidError):
        raise PpmidError(F.E_WIRE_PAYLOAD, "TAKEN must carry a command id (1..32 printable ASCII)")


def _ids(p, pos, most):
    # HELLO: a list of ids, each a u8 length and the id; at most `most` (what the road can
    # keep and watch: more could name nothing it holds, and a frame full of 2-byte ids
    # would build thousands of strings), repeats dropped
    out = []
    n = len(p)
    count = 0
    while pos < n:
        k = p[pos]
        if pos + 1 + k > n:
            raise PpmidError(F.E_WIRE_PAYLOAD, "HELLO id list is cut short")
        count += 1
        if count > most:
            raise PpmidError(F.E_WIRE_PAYLOAD, "HELLO names more than the %d ids the gateway keeps or follows" % most)
        id = _id(p[pos + 1:pos + 1 + k])
        if id not in out:
            out.append(id)
        pos += 1 + k
    return out
