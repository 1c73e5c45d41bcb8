# The start of an MQTT connection (OASIS MQTT 3.1.1 sections 3.1, 3.2, 3.8, 3.9): opening
# the stream, CONNECT/CONNACK, SUBSCRIBE/SUBACK, the codec of those four packets, and the
# task that runs the client's on_up hook once the session is up; and the client's own start
# (set_up: its constructor's work). It runs only when a connection (re)starts or a client is
# made: MQTTClient._session imports it for each connection and MQTTClient() for its set-up,
# and each drops it again (ppmid.modules.unload), so the running app does not hold this code
# (docs/memory.md, sessions 7 and 10). Host tools and tests import the codec from here.
import asyncio
import struct
import sys
from micropython import const

from ppmid.mqtt.packets import (PacketError, CONNECT, CONNACK, SUBSCRIBE, SUBACK_FAILURE, encode_length,
                                encode_string, check_topic)
from ppmid.mqtt.client import MQTTError, E_MQTT_REFUSED, E_MQTT_TIMEOUT, E_MQTT_CLOSED, E_MQTT_SUBSCRIBE
from ppmid.clock import ticks_ms, ticks_diff, wait_for_ms, wait_event_ms

_MP = sys.implementation.name == "micropython"
_RX_MIN = 512  # the client's first receive buffer (it grows to the largest packet: client.py)
_C_CONNECTS = const(0)  # client.stats' index of "connects" (client.py's, named in ppmid/mqtt/link_host.py)

# CONNACK return codes (3.2.2.3)
CONNACK_TEXT = {
    0: "accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def connect(client_id, keepalive, clean_session=False, will=None, username=None, password=None):
    """CONNECT (3.1). will = (topic, payload bytes, qos, retain) or None."""
    flags = 0
    if clean_session:
        flags |= 0x02
    body = bytearray(b"\x00\x04MQTT\x04")  # protocol name, level 4 = 3.1.1
    tail = bytearray(encode_string(client_id))
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        if wqos not in (0, 1, 2):
            raise PacketError("will qos %r" % (wqos,))
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        tail += encode_string(check_topic(wtopic))
        tail += encode_string(wpayload)
    if username is not None:
        flags |= 0x80
        tail += encode_string(username)
    if password is not None:
        if username is None:
            raise PacketError("password without user name")
        flags |= 0x40
        tail += encode_string(password)
    if not 0 <= keepalive <= 0xFFFF:
        raise PacketError("keepalive %r out of range" % (keepalive,))
    body.append(flags)
    body += struct.pack(">H", keepalive)
    body += tail
    return bytes(bytearray((CONNECT,)) + encode_length(len(body)) + body)


def parse_connack(body):
    """(session_present, return_code)."""
    if len(body) != 2:
        raise PacketError("CONNACK body of %d bytes (expected 2)" % len(body))
    if body[0] & 0xFE:
        raise PacketError("CONNACK reserved flags set")
    return bool(body[0] & 1), body[1]


def subscribe(pid, topics):
    """SUBSCRIBE (3.8) for [(topic filter, qos), ...]."""
    if not 0 < pid <= 0xFFFF:
        raise PacketError("packet id %r out of range" % (pid,))
    if not topics:
        raise PacketError("SUBSCRIBE needs at least one topic filter")
    body = bytearray(struct.pack(">H", pid))
    for topic, qos in topics:
        if qos not in (0, 1, 2):
            raise PacketError("subscription qos %r" % (qos,))
        body += encode_string(check_topic(topic, True))
        body.append(qos)
    return bytes(bytearray((SUBSCRIBE,)) + encode_length(len(body)) + body)


def parse_suback(body):
    """(pid, [granted qos or 0x80 per filter])."""
    if len(body) < 3:
        raise PacketError("SUBACK truncated")
    codes = list(body[2:])
    for c in codes:
        if c not in (0, 1, 2, SUBACK_FAILURE):
            raise PacketError("SUBACK return code 0x%02X" % c)
    return (body[0] << 8) | body[1], codes


async def _open_stream_cpython(host, port, ssl_ctx, server_hostname, track):
    # CPython (host tools and tests): asyncio's own streams
    if ssl_ctx is None:
        r, w = await asyncio.open_connection(host, port)
    else:
        r, w = await asyncio.open_connection(host, port, ssl=ssl_ctx, server_hostname=server_hostname or host)
    if track is not None:
        track(w.get_extra_info("socket"))
    return r, w


def open_stream(host, port, ssl_ctx, server_hostname, track, known=None, dns=None, wlan=None):
    """(reader, writer) of a new TCP (+ TLS) connection: what client.tls_connector's
    connect returns, awaited by the client. MicroPython (its coroutines are generators):
    asyncio.open_connection, plus TCP_NODELAY (each MQTT packet is small; Nagle + delayed
    ACK cost ~40 ms per exchange) and `track` on the raw socket before connect(), as the
    board asks. known: the connector's [address], kept across its connections (MicroPython).
    dns, wlan: for a host given by name (ppmid.dns_lookup, MicroPython)."""
    if not _MP:
        return _open_stream_cpython(host, port, ssl_ctx, server_hostname, track)
    return _mp_open_stream(host, port, ssl_ctx, server_hostname, track, known or [None], dns, wlan)


def _mp_open_stream(host, port, ssl_ctx, server_hostname, track, known, dns, wlan):
    import socket
    from errno import EINPROGRESS
    from asyncio import core, StreamReader
    from ppmid.mqtt.client import _TlsStream  # the stream lives as long as the connection
    # A name is looked up without blocking the event loop (ppmid.dns_lookup: socket.getaddrinfo
    # would hold it for as long as DNS takes), within the connect timeout the client puts
    # on this dial; the address is looked up again only when the last TLS connection did
    # not get an answer from the broker through it (known[0] is given back by
    # client._TlsStream.wait_closed).
    ai = known[0]
    if ai is None:
        from ppmid.dns_lookup import addrinfo  # which drops itself once done
        ai = yield from addrinfo(host, port, socket.SOCK_STREAM, dns, wlan)
    known[0] = None
    raw = socket.socket(ai[0], ai[1], ai[2])
    # From here until the stream is returned (the client's session closes it from then on),
    # any failure closes the socket: above all the connect timeout's cancel, thrown in at the
    # yield below when the broker does not answer the SYN (firewall, dead host). Left open,
    # each such dial held one of the ESP32 lwIP's ~10 sockets for good (review r13-2).
    try:
        if track is not None:
            track(raw)
        try:
            raw.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: same numbers on Linux and lwIP
        except (OSError, AttributeError):
            pass
        raw.setblocking(False)
        try:
            raw.connect(ai[-1])
        except OSError as exc:
            if exc.errno != EINPROGRESS:
                raise
        yield core._io_queue.queue_write(raw)   # writable: the TCP connection is up (or failed)
        if ssl_ctx is None:
            stream = StreamReader(raw)
            stream.raw = raw
            return stream, stream
        # the handshake runs inside the first non-blocking reads/writes of the stream
        s = ssl_ctx.wrap_socket(raw, server_hostname=server_hostname or host, do_handshake_on_connect=False)
        s.setblocking(False)
        stream = _TlsStream(s, raw, known, ai)
        return stream, stream
    except BaseException:  # CancelledError included
        raw.close()
        untrack = getattr(wlan, "untrack", None)
        if untrack is not None:
            untrack(raw)
        raise


def set_up(client, client_id, connect, keepalive=30, will=None, handler=None, on_up=None,
           queue_size=16, window=4, max_packet=16384, ack_timeout=10, connect_timeout=15,
           backoff_min=0.5, backoff_max=60, wlan=None, log=None):
    """MQTTClient(client_id, connect, **options)'s work: its options (these defaults) and
    its initial state. keepalive, ack_timeout, connect_timeout, backoff_min, backoff_max:
    seconds; will: (topic, payload, qos, retain) or None; queue_size: messages waiting to
    be sent at most; window: QoS 1 messages in flight at most; max_packet: the largest
    packet kept (an oversized PUBLISH is read past and answered by client.oversize)."""
    client.client_id = client_id
    client._connect = connect
    client.keepalive = keepalive
    client.will = will
    client.handler = handler
    client.oversize = None     # async oversize(topic, size, qos, dup): answer a too-big PUBLISH (or a malformed one: topic None, size its PacketError)
    client._oversize = 0
    client.on_up = on_up
    client.queue_size = queue_size
    client.window = window
    client.max_packet = max_packet
    client.ack_timeout = ack_timeout
    client.connect_timeout = connect_timeout
    client.backoff_min = backoff_min
    client.backoff_max = backoff_max
    client.wlan = wlan
    client.log = log
    client._subs = []          # [(filter, qos)], renewed on every connect
    client._queue = []         # messages waiting to be sent (lists: ppmid.mqtt.client's _M_ indices)
    client._inflight = []      # QoS 1 messages sent, waiting for PUBACK (in send order)
    client._pid = 0
    client._wake = asyncio.Event()
    client._space = asyncio.Event()
    client._suback = None      # the body of the last SUBACK
    client._subevt = asyncio.Event()
    client._writing = False
    client._w = None
    client._dead = None        # reason the current connection died, or None
    client._ping_at = None
    client._tx_at = 0
    client._rx_at = 0          # ticks_ms of the last packet's start read (client._read_packet)
    client._in_handler = False  # the reader waits for the handler: nothing is read
    client._stopping = False
    client._online = None  # the ticks_ms of the last accepted CONNACK
    client._poisoned = False
    client.backoff_delay = 0   # the last reconnect delay chosen (before jitter)
    client._rx = bytearray(_RX_MIN)  # grows to the packet; past client._RX_KEEP, let go after it
    client._rxmv = memoryview(client._rx)
    client._rx_kept = (client._rx, client._rxmv)  # up to _RX_KEEP: what a larger one gives way to
    client._readinto = False
    client.up = asyncio.Event()
    client.state = "offline"
    client.last_error = None
    client.session_present = False
    client.stats = [0] * 11  # by the client's _C_X indices (ppmid/mqtt/link_host.py names them)


async def start(client):
    """Dial and have the CONNECT accepted: returns the reader stream, with client._w set
    (from then on the client's session cleans the connection up) and client._online (now)."""
    try:
        r, w = await wait_for_ms(client._connect(), int(client.connect_timeout * 1000))
    except asyncio.TimeoutError:
        raise MQTTError(E_MQTT_TIMEOUT, "TCP/TLS connect took longer than %ss" % client.connect_timeout)
    client._w = w
    client._readinto = hasattr(r, "readinto")
    await client._write(connect(client.client_id, client.keepalive, False, client.will))
    try:
        first, body = await wait_for_ms(client._read_packet(r), int(client.ack_timeout * 1000))
    except asyncio.TimeoutError:
        raise MQTTError(E_MQTT_TIMEOUT, "no CONNACK within %ss" % client.ack_timeout)
    if first != CONNACK:
        raise MQTTError(E_MQTT_REFUSED, "expected CONNACK, got packet type 0x%02X" % first)
    present, rc = parse_connack(body)
    if rc:
        raise MQTTError(E_MQTT_REFUSED, "broker refused the connection: %s (%d)"
                        % (CONNACK_TEXT.get(rc, "?"), rc))
    client._online = ticks_ms()
    client.session_present = present
    client.stats[_C_CONNECTS] += 1
    return r


async def subscribe_all(client):
    """SUBSCRIBE every registered filter and wait for its SUBACK, which the client's reader
    task leaves in client._suback (its body, parsed here)."""
    subs = client._subs
    pid = client._next_pid()
    client._suback = None
    client._subevt.clear()
    await client._write(subscribe(pid, subs))
    # A persistent session's queued messages may come before the SUBACK, and the
    # handler may hold the reader on them (pacing): that time does not count.
    t0 = ticks_ms()
    ack_ms = int(client.ack_timeout * 1000)
    while not client._subevt.is_set():
        if client._in_handler:
            t0 = ticks_ms()
        elif ticks_diff(ticks_ms(), t0) > ack_ms:
            raise MQTTError(E_MQTT_TIMEOUT, "no SUBACK within %ss" % client.ack_timeout)
        await wait_event_ms(client._subevt, 100)
    if client._dead:
        raise MQTTError(E_MQTT_CLOSED, client._dead)
    spid, codes = parse_suback(client._suback)
    if spid != pid or len(codes) != len(subs):
        raise MQTTError(E_MQTT_SUBSCRIBE, "SUBACK does not match the SUBSCRIBE")
    for i in range(len(codes)):
        if codes[i] == SUBACK_FAILURE:
            # A refused filter (an ACL denial, an authorisation backend's passing failure) is
            # a failed connection: the link drops (so the will says offline), the client backs
            # off and subscribes again. Staying connected left the gateway `online` but deaf,
            # with the broker dropping every command sent to it, until the next reconnect,
            # weeks away (review r13-5).
            raise MQTTError(E_MQTT_SUBSCRIBE, "broker refused subscription to %s" % (subs[i][0],))


async def run_on_up(client):
    """The client's on_up hook, in its own task once a session is up; what it raises is
    noted, not raised (the session goes on)."""
    try:
        await client.on_up(client.session_present)
    except Exception as exc:  # noqa: BLE001
        client._note(exc)
