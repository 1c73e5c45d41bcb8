# A small asyncio MQTT 3.1.1 client for the gateway (umqtt.simple blocks and has no QoS 1
# retransmission). One connection at a time, kept up for ever:
#   - persistent session (clean session false) so the broker queues QoS 1 commands while
#     the gateway is away; a last will marks it offline;
#   - subscriptions are renewed on every connect (a broker that lost its session store
#     must not leave the gateway deaf);
#   - outgoing QoS 1 PUBLISHes stay in flight until PUBACKed and are resent with DUP after
#     a reconnect; a PUBACK or PINGRESP that does not come within `ack_timeout`, or a
#     write that does not drain within it, means the link is dead (silent Wi-Fi loss,
#     half-open TCP): drop it and reconnect;
#   - incoming QoS 1 PUBLISHes are PUBACKed only after the handler has returned; if the
#     handler raises, the connection is dropped without a PUBACK so that the broker
#     redelivers the message on the next connect (nothing acknowledged is ever lost);
#   - reconnects back off exponentially with jitter; the outgoing queue is bounded and
#     counts what it drops.
# The client never touches `network`: it is given `connect`, a coroutine function returning
# (reader, writer) asyncio streams (see tls_connector), and optionally a `wlan` with
# isconnected() to wait on before dialling.
import asyncio
import random
from micropython import const

from ppmid.errors import PpmidError
from ppmid.mqtt import packets as p
from ppmid.clock import ticks_ms, ticks_diff, sleep_ms, wait_for_ms, wait_event_ms

E_MQTT_REFUSED = "E_MQTT_REFUSED"
E_MQTT_TIMEOUT = "E_MQTT_TIMEOUT"
E_MQTT_CLOSED = "E_MQTT_CLOSED"
E_MQTT_SUBSCRIBE = "E_MQTT_SUBSCRIBE"

# the client's counters (client.stats, a list of ints, made by ppmid.mqtt.handshake.set_up)
# by these indices; their names, in this order, are ppmid/mqtt/link_host.py's STATS (tests and
# host tools read them by name there): a list holds no names, a dict held ten for reports no
# gateway makes (docs/memory.md, "Session 11, the relay, MQTT and app side")
_C_CONNECTS = const(0)
_C_CONNECT_FAILURES = const(1)
_C_DROPS = const(2)
_C_RETRANSMITS = const(3)
_C_PUBLISHED = const(4)
_C_RECEIVED = const(5)
_C_PUBACKS_WITHHELD = const(6)
_C_PINGS = const(7)
_C_OVERSIZE = const(8)
_C_LINK_LOSSES = const(9)

# A receive buffer (the first one is 512 bytes: ppmid.mqtt.handshake.set_up) grows to the
# largest packet up to this size and is kept; one larger is allocated for its message alone
# and let go once the message is handled: a large command's JSON (5.6 KB for 4 KB of GBCS) is not held through its own send, when the body
# read back from the journal and the GBT blocks are live too (docs/memory.md). The next
# large message allocates its buffer again; the boot's gc.threshold keeps the free heap in
# one piece for that (bench/heap32/frag.py).
_RX_KEEP = const(2048)
# The reconnect backoff starts again only after a connection stayed up this long: a broker
# that drops the client within a second of its CONNACK (a second gateway with the same
# client id taking the session over, each in turn; a broker that kicks the client) must
# not be redialled at backoff_min for ever. 30 s: the app's keepalive, by which an idle
# connection has had a PINGRESP too (docs/mqtt.md; review 94 F2)
_STABLE_MS = const(30000)


# The failures' sentences, by their index in ppmid.mqtt.client_errors.SENTENCES (the text)
_S_CLOSED = const(0)
_S_QOS = const(1)
_S_SESSION_ENDED = const(2)
_S_NOT_CONNECTED = const(3)
_S_WRITE_FAILED = const(4)
_S_NO_PUBACK = const(5)
_S_NO_PINGRESP = const(6)
_S_LENGTH_LONG = const(7)
_S_PACKET_LARGE = const(8)
_S_UNEXPECTED = const(9)
_S_READ_FAILED = const(10)
_S_QOS2 = const(11)
_S_HANDLER_FAILED = const(12)
_S_WRITE_STALLED = const(13)


class MQTTError(PpmidError):
    pass


def _text(key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.mqtt.client_errors', loaded when a
    # connection fails and dropped again (as str constants here the sentences held ~0.7 KB)
    from ppmid.modules import sentence
    return sentence("ppmid.mqtt.client_errors", key, arg)


# A message waiting to go or to be PUBACKed: a list by these indices, not an instance of a
# class of its own (a 9-attribute instance took ~100 bytes of heap against 64 as a list, and
# the class, its constructor and its names ~0.2 KB held by the running app: docs/memory.md,
# "Session 12, the app's reaction and ready")
_M_TOPIC = const(0)
_M_PAYLOAD = const(1)
_M_QOS = const(2)
_M_RETAIN = const(3)
_M_PID = const(4)
_M_SENT_AT = const(5)   # ticks_ms of its last write
_M_DONE = const(6)      # asyncio.Event for a waiting publisher, or None
_M_SENT = const(7)      # times put on the wire
_M_CONN = const(8)      # the connection (stats[_C_CONNECTS]) it last went out on


class _TlsStream:
    """MicroPython only: an asyncio reader/writer over a non-blocking TLS socket that,
    once the handshake is done, waits on the raw socket instead of the TLS object.

    Why: asyncio's own Stream would register the TLS object with select.poll. It has no
    file descriptor, and the unix port's poll (the emulated board) then cannot block in
    the kernel: it polls in 1 ms steps, so every pass of the event loop costs a
    millisecond for as long as the connection is open (measured: the HAN driver's dozen
    task switches per APS fragment took ~7 ms). On the ESP32 it makes no difference.

    Why it is correct: after the handshake, a TLS read that would block needs more bytes
    from the socket (a record arrives whole or not at all), and a write that would block
    needs room in the socket. During the handshake, and if a write ever makes no progress
    after the socket said it had room (a TLS layer wanting to read), it waits on the TLS
    object, which knows which way it needs to go."""

    def __init__(self, tls, raw, known=None, ai=None):
        self.s = tls
        self.raw = raw
        self.out_buf = b""
        self._direct = False   # a read succeeded: the handshake is done
        self.known = known     # the connector's cached address (handshake._mp_open_stream) and this one's
        self.ai = ai

    def readinto(self, buf):
        from asyncio import core
        while True:
            n = self.s.readinto(buf)
            if n is not None:
                if n:
                    self._direct = True
                return n
            yield core._io_queue.queue_read(self.raw if self._direct else self.s)

    def write(self, buf):
        if not self.out_buf:
            n = self.s.write(buf)
            if n == len(buf):
                return
            if n:
                buf = buf[n:]
        self.out_buf += buf

    def drain(self):
        from asyncio import core
        stuck = False
        while self.out_buf:
            n = self.s.write(self.out_buf)
            if n:
                self.out_buf = self.out_buf[n:]
                stuck = False
                continue
            yield core._io_queue.queue_write(self.raw if self._direct and not stuck else self.s)
            stuck = True

    def close(self):
        pass

    async def wait_closed(self):
        self.s.close()
        if self._direct and self.known is not None:
            self.known[0] = self.ai  # the broker answered at this address: the next connect reuses it


def tls_connector(host, port, ssl_ctx=None, server_hostname=None, track=None, dns=None, wlan=None):
    """A `connect` coroutine function for MQTTClient: TCP (+ TLS with ssl_ctx, checking
    the broker certificate against server_hostname). `track(sock)` is called with the new
    socket (the board's WLAN closes tracked sockets when Wi-Fi drops). dns, wlan: the
    config's dns settings and the board's WLAN, for a host given by name (ppmid.dns_lookup)."""
    known = [None]  # the broker's address (MicroPython), kept across reconnects

    def connect():
        from ppmid.mqtt.handshake import open_stream  # loaded for each connection anyway
        return open_stream(host, port, ssl_ctx, server_hostname, track, known, dns, wlan)
    return connect


class MQTTClient:
    """handler: `async handler(topic, payload, qos, dup)`; payload is a memoryview valid
    only until the handler returns. Returning = PUBACK (QoS 1); raising = no PUBACK and the
    connection is dropped so the broker redelivers. A handler must not await the PUBACK of
    its own QoS 1 publish (the reader is waiting for it): use publish(..., wait=False).

    on_up: optional `async on_up(session_present)` run in its own task after every
    successful connect + subscribe (e.g. publish retained state/info)."""

    def __init__(self, client_id, connect, **options):
        # The options, their defaults and the initial state are ppmid.mqtt.handshake.set_up's,
        # loaded for it and dropped again, as after each connection's start: the running app
        # does not hold code that runs once (docs/memory.md, session 10). An unknown option
        # is a TypeError, as it was.
        from ppmid.mqtt import handshake
        try:
            handshake.set_up(self, client_id, connect, **options)
        finally:
            handshake = None
            from ppmid.modules import unload
            unload("ppmid.mqtt.handshake", "ppmid.modules")

    # ---- public API -------------------------------------------------------------------
    def subscribe(self, topic, qos=1):
        """Register a subscription; it is (re)sent on every connect."""
        p.check_topic(topic, True)
        self._subs.append((topic, qos))

    def pending(self):
        return len(self._queue) + len(self._inflight)

    async def publish(self, topic, payload, qos=1, retain=False, wait=True, first=False):
        """Queue a PUBLISH. wait=True: wait for queue space, then (QoS 1) return once the
        broker has PUBACKed it, across reconnects if need be; QoS 0 returns once written
        (True) or once its write failed (False: lost, as QoS 0 allows, and counted in drops).
        wait=False: never blocks; returns False (and counts a drop) when the queue is full,
        True when queued. first=True (QoS 1, with wait=False): while connected the message
        is written before publish returns, ahead of the queue and the in-flight window:
        for what a handler must have on the wire before the PUBACK of the message it
        handles (a rejection): if the link dies in between, the broker redelivers that
        message, and this one is resent with DUP. Raises PacketError on a bad topic or qos."""
        if isinstance(payload, str):
            payload = payload.encode()
        p.check_topic(topic)
        if qos not in (0, 1):
            raise p.PacketError(_text(_S_QOS, (qos,)))
        if first and qos and not wait and self._w is not None and self._dead is None \
                and self.pending() < self.queue_size:  # bounded like the queue
            m = [topic, payload, qos, retain, 0, 0, None, 0, 0]
            m[_M_PID] = self._next_pid()
            self._inflight.append(m)
            try:
                await self._send(m, False)
            except MQTTError:
                pass  # held in flight: resent with DUP after the reconnect
            return True
        while self.pending() >= self.queue_size:
            if not wait:
                self.stats[_C_DROPS] += 1
                return False
            self._space.clear()
            await self._space.wait()
        m = [topic, payload, qos, retain, 0, 0, asyncio.Event() if wait else None, 0, 0]
        self._queue.append(m)
        self._wake.set()
        if wait:
            await m[_M_DONE].wait()
            return m[_M_SENT] > 0  # False: a QoS 0 message whose write failed (lost, counted in drops)
        return True

    async def run(self):
        """Connect and stay connected until stop()."""
        try:
            attempt = 0
            while not self._stopping:
                if self.wlan is not None and not self.wlan.isconnected():
                    self.state = "wifi-down"
                    while not self.wlan.isconnected() and not self._stopping:
                        await sleep_ms(250)
                    continue
                self._online = None
                self._poisoned = False
                try:
                    self.state = "connecting"
                    await self._session()
                except Exception as exc:  # noqa: BLE001 - every failure means: back off, retry
                    try:
                        self._note(exc)
                    except Exception:  # (a MemoryError noting a MemoryError): the loop goes on
                        pass
                if self._stopping:
                    break
                if self._online is not None:
                    self.stats[_C_LINK_LOSSES] += 1
                    # up for 30 s: the back-off starts again. An age that reads negative is one
                    # past half the tick period (6.2 days on the ESP32), old, as elsewhere
                    # (review_w5-4; misread only within 30 s of a multiple of 12.4 days)
                    up_ms = ticks_diff(ticks_ms(), self._online)
                    if not self._poisoned and (up_ms < 0 or up_ms >= _STABLE_MS):
                        attempt = 0
                    # else: the handler refused a message the broker will redeliver at once;
                    # keep backing off so that a persistent failure does not spin
                else:
                    self.stats[_C_CONNECT_FAILURES] += 1
                self.state = "backoff"
                delay = min(self.backoff_max, self.backoff_min * (1 << min(attempt, 16)))
                self.backoff_delay = delay
                attempt += 1
                # full jitter on the upper half: spreads a fleet's reconnects after an outage
                await sleep_ms(int((delay / 2 + delay / 2 * random.getrandbits(10) / 1024) * 1000))
            self.state = "stopped"
        except BaseException:
            # the road's one task ended by a failure (nothing in the firmware stops it
            # so): the relay's health check sees it through Link.running (review_w5-3)
            self.state = "ended"
            raise

    async def stop(self):
        """Graceful DISCONNECT (the broker then does not publish the will)."""
        self._stopping = True
        w = self._w
        if w is not None and self._dead is None:
            try:
                await self._write(p.DISCONNECT_PACKET)
            except Exception:  # noqa: BLE001
                pass
        self._kill("stopped")

    # ---- connection -------------------------------------------------------------------
    def _note(self, exc):
        if isinstance(exc, PpmidError):
            self.last_error = str(exc)
        else:
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
        if self.log:
            self.log("mqtt: " + self.last_error)

    def _kill(self, reason):
        if self._dead is None:
            self._dead = reason
        self.up.clear()
        self._wake.set()
        self._subevt.set()
        w = self._w
        if w is not None:
            # MicroPython's Stream.close() does nothing (wait_closed() closes the socket), so
            # close the socket itself: a task blocked reading it then wakes with an error.
            try:
                w.close()
                s = getattr(w, "s", None)
                if s is not None:
                    s.close()
            except Exception:  # noqa: BLE001
                pass

    async def _session(self):
        """One connection's life; sets self._online to the ticks_ms of the CONNACK that
        accepted it. Its start (dialling, CONNECT/CONNACK, SUBSCRIBE/SUBACK) is ppmid.mqtt.handshake's, imported
        for each connection and dropped once the session is up: the running app does not
        hold that code."""
        self._dead = None
        self._ping_at = None
        reader = None
        try:
            from ppmid.mqtt import handshake
            try:
                r = await handshake.start(self)
                reader = asyncio.create_task(self._reader(r))
                if self._subs:
                    await handshake.subscribe_all(self)
                if self.on_up is not None:
                    asyncio.create_task(handshake.run_on_up(self))  # runs once this task waits
            finally:
                # the connection's start is done (or failed): its code goes until the next one
                handshake = None
                from ppmid.modules import unload
                unload("ppmid.mqtt.handshake", "ppmid.modules")
            self.state = "online"
            self.up.set()
            await self._sender()
            if self._dead and not self._stopping:
                raise MQTTError(E_MQTT_CLOSED, self._dead)
        finally:
            w = self._w
            if w is not None:  # connected: start() got as far as the stream
                self._kill(self._dead or _text(_S_SESSION_ENDED))
                self._w = None
                if reader is not None:
                    reader.cancel()
                    try:
                        await reader
                    except BaseException:  # noqa: BLE001 - CancelledError included
                        pass
                try:
                    await w.wait_closed()
                except Exception:  # noqa: BLE001
                    pass
                untrack = getattr(self.wlan, "untrack", None)
                if untrack is not None:
                    untrack(getattr(w, "raw", None) or getattr(w, "s", None))

    def _next_pid(self):
        while True:
            self._pid = self._pid % 0xFFFF + 1
            for m in self._inflight:
                if m[_M_PID] == self._pid:
                    break
            else:
                return self._pid

    async def _write(self, *parts):
        w = self._w
        if w is None or self._dead:
            raise MQTTError(E_MQTT_CLOSED, self._dead or _text(_S_NOT_CONNECTED))
        # One writer at a time: a drain in progress owns the stream's output buffer, so
        # a second packet must not be appended (or drained) until it is done. A flag, not
        # an asyncio.Lock: the uncontended path (nearly always) then allocates nothing.
        while self._writing:
            await sleep_ms(2)
            if self._dead:
                raise MQTTError(E_MQTT_CLOSED, self._dead)
        self._writing = True
        try:
            for part in parts:
                w.write(part)
            # MicroPython's Stream.write sends at once when it can; drain only leftovers.
            # Bounded: on a half-open connection with a full send buffer the drain would
            # wait for TCP's own give-up (minutes), before any PUBACK/PINGRESP check.
            if getattr(w, "out_buf", True):
                await wait_for_ms(w.drain(), int(self.ack_timeout * 1000))
        except asyncio.TimeoutError:
            self._kill(_text(_S_WRITE_STALLED, self.ack_timeout))
            raise MQTTError(E_MQTT_TIMEOUT, self._dead)
        except Exception as exc:  # noqa: BLE001
            why = _text(_S_WRITE_FAILED, (exc,))
            self._kill(why)
            raise MQTTError(E_MQTT_CLOSED, why)
        finally:
            self._writing = False
        self._tx_at = ticks_ms()

    async def _send(self, m, dup):
        hdr = p.publish_header(m[_M_TOPIC], len(m[_M_PAYLOAD]), m[_M_QOS], m[_M_RETAIN], dup, m[_M_PID])
        m[_M_SENT_AT] = ticks_ms()
        m[_M_SENT] += 1
        m[_M_CONN] = self.stats[_C_CONNECTS]
        await self._write(hdr, m[_M_PAYLOAD])

    async def _sender(self):
        # Resend whatever the last connection left unacknowledged, in order, with DUP.
        for m in list(self._inflight):
            if m[_M_CONN] == self.stats[_C_CONNECTS]:
                continue  # already went on this connection (publish(first=True))
            self.stats[_C_RETRANSMITS] += 1
            await self._send(m, True)
        ka_ms = self.keepalive * 500  # ping after half the keepalive without sending or receiving
        ack_ms = int(self.ack_timeout * 1000)
        while self._dead is None:
            self._wake.clear()
            while self._queue and len(self._inflight) < self.window and self._dead is None:
                m = self._queue.pop(0)
                if m[_M_QOS]:
                    m[_M_PID] = self._next_pid()
                    self._inflight.append(m)
                try:
                    await self._send(m, False)
                except BaseException:
                    if not m[_M_QOS]:  # in neither list now: lost (QoS 0 allows it), but its
                        m[_M_SENT] = 0  # waiting publisher is told (False), not left waiting for ever
                        self.stats[_C_DROPS] += 1
                        self._finish(m)
                    raise
                if not m[_M_QOS]:
                    self.stats[_C_PUBLISHED] += 1
                    self._finish(m)
            if self._dead is not None:
                break
            now = ticks_ms()
            # While the handler holds the reader (e.g. the relay waits for room to pace a
            # backlog), a PUBACK or PINGRESP may sit unread behind the message it handles:
            # only time the reader spent free to read counts against ack_timeout (the
            # stamps restart when the handler gives the reader back: _incoming).
            if not self._in_handler:
                if self._inflight and ticks_diff(now, self._inflight[0][_M_SENT_AT]) > ack_ms:
                    self._kill(_text(_S_NO_PUBACK, (self._inflight[0][_M_PID], self.ack_timeout)))
                    break
                if self._ping_at is not None and ticks_diff(now, self._ping_at) > ack_ms:
                    self._kill(_text(_S_NO_PINGRESP, self.ack_timeout))
                    break
            # keepalive: ping after half the keepalive without sending, or without
            # receiving: our own QoS 0 log lines (no PUBACK to wait for) must not keep the
            # ping, the one check on a broker's side that went silent (a half-open link, a
            # stalled stream), from going out (review r13-1). While the handler holds the
            # reader nothing is read, and the answer to an earlier ping may be unread: ping
            # on what we send alone then, so the broker keeps hearing from us
            quiet = ticks_diff(now, self._tx_at)
            if not self._in_handler:
                quiet = max(quiet, ticks_diff(now, self._rx_at))
            if self.keepalive and (self._ping_at is None or self._in_handler) and quiet >= ka_ms:
                if self._ping_at is None:
                    self._ping_at = now
                self.stats[_C_PINGS] += 1
                await self._write(p.PINGREQ_PACKET)
            await wait_event_ms(self._wake, 500)

    def _finish(self, m):
        if m[_M_DONE] is not None:
            m[_M_DONE].set()
        self._space.set()

    # ---- reading ----------------------------------------------------------------------
    async def _read_packet(self, r):
        self._shrink_rx()  # a large buffer a PUBLISH left (refused before its handler, or no handler)
        # The fixed header into the buffer's start (the body overwrites it), read as the body
        # is (readinto on MicroPython): its first two bytes at once, as every packet has
        # them, then one byte more for each that the remaining length's continuation bit
        # announces
        h = self._rxmv[:2]
        await self._fill(r, h)
        self._rx_at = ticks_ms()  # the broker's side is alive (the keepalive ping's clock)
        first = h[0]
        h = h[1:]
        n = 0
        shift = 0
        while True:
            n |= (h[0] & 0x7F) << shift
            if not h[0] & 0x80:
                break
            shift += 7
            if shift > 21:
                raise p.PacketError(_text(_S_LENGTH_LONG))
            await self._fill(r, h)
        h = None  # a view of the buffer: the grown one below must not keep it alive
        self._oversize = 0
        if len(self._rx) < n <= self.max_packet:
            had = len(self._rx)
            self._rxmv = self._rx = None  # let the old buffer go before allocating the new one
            if n <= _RX_KEEP:
                self._rx_kept = None  # ... and the kept one, which this one replaces
            try:
                self._rx = bytearray(n)
            except MemoryError:
                # no block that large free now: skip this packet as if it were over
                # max_packet, with the kept buffer (or one the size the old one was)
                self._rx = self._rx_kept[0] if self._rx_kept else bytearray(had)
            self._rxmv = memoryview(self._rx)
            if self._rx_kept is None:
                self._rx_kept = (self._rx, self._rxmv)
        if n > len(self._rx):
            if first & 0xF0 != p.PUBLISH:
                raise p.PacketError(_text(_S_PACKET_LARGE, (n, self.max_packet)))
            # An oversized PUBLISH is read past, keeping its topic and packet id, then
            # answered and PUBACKed: refusing it by dropping the link would only make the
            # broker redeliver it for ever. Rare: that code is ppmid.mqtt.oversize's,
            # loaded for it and dropped again
            from ppmid.mqtt import oversize
            try:
                head = await oversize.read_head(self, r, first, n)
            finally:
                oversize = None
                from ppmid.modules import unload
                unload("ppmid.mqtt.oversize", "ppmid.modules")
            self._oversize = n
            return first, head
        mv = self._rxmv[:n]
        if n:
            await self._fill(r, mv)
        return first, mv

    async def _fill(self, r, mv):
        n = len(mv)
        if not self._readinto:
            mv[:] = await r.readexactly(n)
            return
        got = 0
        while got < n:  # MicroPython: straight into the buffer, no copy
            k = await r.readinto(mv[got:] if got else mv)
            if not k:
                raise EOFError(_text(_S_CLOSED))
            got += k

    async def _reader(self, r):
        try:
            while self._dead is None:
                first, body = await self._read_packet(r)
                kind = first & 0xF0
                if kind == p.PUBLISH:
                    # _incoming takes the message's length, not its view: a view passed
                    # from here stays in this task's frame after the call (a stack slot the
                    # next call does not reach, scanned by the GC all the same), and kept a
                    # grown buffer alive, the 5.6 KB of a 4 KB command's JSON, through the
                    # command's send and until the next packet (docs/memory.md, session 9)
                    n = len(body)
                    body = None
                    await self._incoming(first, n)
                elif kind == p.PUBACK:
                    pid = p.parse_packet_id(body)
                    for m in self._inflight:
                        if m[_M_PID] == pid:
                            self._inflight.remove(m)  # the first equal list: pids in flight are unique
                            self.stats[_C_PUBLISHED] += 1
                            self._finish(m)
                            self._wake.set()
                            break
                    # else: a PUBACK for a packet we no longer hold (a duplicate after a resend)
                elif kind == p.SUBACK:
                    self._suback = bytes(body)  # parsed by ppmid.mqtt.handshake, which waits for it
                    self._subevt.set()
                elif kind == p.PINGRESP:
                    self._ping_at = None
                else:
                    raise p.PacketError(_text(_S_UNEXPECTED, first))
        except Exception as exc:  # noqa: BLE001 - EOF, OSError, PacketError: the link is gone
            self._note(exc)
            self._kill(_text(_S_READ_FAILED, (exc,)))

    async def _incoming(self, first, n):
        # n: the length of the body that _read_packet read (an oversized PUBLISH's head)
        body = self._rxmv[:n]
        try:
            topic, payload, qos, retain, dup, pid = p.parse_publish(first, body)
            if qos == 2:
                raise p.PacketError(_text(_S_QOS2))
        except p.PacketError as exc:
            # a broker's bug, redelivered first at every connect: refused and PUBACKed when
            # its packet id is usable, else the link drops (ppmid.mqtt.oversize, loaded for it)
            from ppmid.mqtt.oversize import answer
            return await answer(self, first, n, exc)
        self.stats[_C_RECEIVED] += 1
        if self._oversize:
            self.stats[_C_OVERSIZE] += 1
            if self.oversize is not None:
                try:
                    await self.oversize(topic, self._oversize, qos, dup)
                except Exception as exc:  # noqa: BLE001 - it is refused either way
                    self._note(exc)
        elif retain:
            # a retained message, handed over again at every SUBSCRIBE (each connect): refused
            # (ppmid.mqtt.oversize, loaded for it), then PUBACKed below (review r13-3)
            from ppmid.mqtt.oversize import retained
            await retained(self, topic, qos, dup)
        elif self.handler is not None:
            self._in_handler = True
            try:
                await self.handler(topic, payload, qos, dup)
            except Exception as exc:  # noqa: BLE001
                self.stats[_C_PUBACKS_WITHHELD] += 1
                self._poisoned = True
                self._note(exc)
                # No PUBACK: drop the link so that the broker redelivers after reconnect.
                self._kill(_text(_S_HANDLER_FAILED, (pid, exc)))
                return
            finally:
                self._in_handler = False
                # what we wait for may have sat unread behind this message: the ack
                # timeouts count from now (stamps, not a comparison with an old tick,
                # so tick wrap-around over a long session is harmless)
                now = ticks_ms()
                for m in self._inflight:
                    m[_M_SENT_AT] = now
                if self._ping_at is not None:
                    self._ping_at = now
                self._shrink_rx()
        payload = body = None  # views of the buffer: a grown one goes with them
        if qos:
            await self._write(p.puback(pid))

    def _shrink_rx(self):
        # the handler is done with the message (journaled, or refused): a buffer larger
        # than _RX_KEEP made for it goes, before its command is sent and while nothing reads
        # into it; the kept one was held for this, so nothing is allocated here
        if self._rx is not self._rx_kept[0]:
            self._rx, self._rxmv = self._rx_kept
