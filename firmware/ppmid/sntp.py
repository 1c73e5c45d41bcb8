# SNTP client (the client side of RFC 4330 over an NTPv4 packet): a codec with no I/O
# (request/parse) and one sync of the task that keeps the board's wall clock set
# (ppmid.sntp_task.SntpClient, whose state these functions take as `client`): the query
# and the jump rule; and the task's set-up (set_up: its constructor's work, at boot). The
# task loads this module for each sync, and for its set-up, and drops it after.
#
# Anti-spoofing: the request's transmit timestamp is a random 8-byte nonce, not our clock
# (which may be unset); a reply counts only if its originate timestamp echoes that nonce
# and it comes from the address we asked. The time is taken from the server's transmit
# timestamp plus half the round trip measured with ticks, so our own (perhaps unset) clock
# never enters the arithmetic.
#
# The jump rule (docs/platform.md "Clock"): the first time a clock is set, or any
# correction up to _STEP_S, is applied at once; a reply more than _STEP_S away from a clock
# that is already set is held and applied only when the next reply (asked for after
# retry_s, from the next server) agrees with it within _AGREE_S. One stray or lying reply
# cannot move a set clock.
from micropython import const
import struct
from ppmid.errors import PpmidError

_LEN = const(48)
_NTP_UNIX = const(2208988800)      # seconds from 1900-01-01 (NTP) to 1970-01-01 (unix)
_ERA1 = const(2085978496)          # 2**32 - _NTP_UNIX: NTP era 1 starts 2036-02-07
_UNIX_MIN = const(1704067200)      # 2024-01-01: a server earlier than this is broken
_POLL_MS = const(20)               # how often a query looks for its reply
_EAGAIN = const(11)                # EAGAIN on Linux and lwIP: nothing received yet
_STEP_S = const(30)
_AGREE_S = const(2)


class SntpError(Exception):
    pass


def request(buf, nonce):
    """Fill `buf` (48 bytes) with a client request whose transmit timestamp is `nonce`."""
    for i in range(_LEN):
        buf[i] = 0
    buf[0] = 0x23                  # LI 0, version 4, mode 3 (client)
    buf[40:48] = nonce
    return buf


def parse(data, nonce):
    """Check a server reply to the request carrying `nonce`; return (unix_s, ms) of its
    transmit timestamp, or raise SntpError saying why it is not usable."""
    if len(data) < _LEN:
        raise SntpError("short reply (%d bytes)" % len(data))
    b0 = data[0]
    if b0 & 7 != 4:
        raise SntpError("mode %d, not a server reply" % (b0 & 7))
    if not 1 <= (b0 >> 3) & 7 <= 4:
        raise SntpError("version %d" % ((b0 >> 3) & 7))
    if b0 >> 6 == 3:
        raise SntpError("server not synchronised (LI=3)")
    if data[1] == 0:
        raise SntpError("kiss-o'-death %r" % (bytes(data[12:16]),))
    if data[1] > 15:
        raise SntpError("stratum %d" % data[1])
    if bytes(data[24:32]) != bytes(nonce):
        raise SntpError("originate timestamp is not our request's")
    secs, frac = struct.unpack_from(">II", data, 40)
    if secs == 0 and frac == 0:
        raise SntpError("zero transmit timestamp")
    # 32-bit NTP seconds wrap in 2036: values below 2**31 are read as era 1 (2036-2104),
    # the others as era 0 (1968-2036)
    unix = secs - _NTP_UNIX if secs & 0x80000000 else secs + _ERA1
    if unix < _UNIX_MIN:
        raise SntpError("time %d is before 2024" % unix)
    return unix, (frac >> 16) * 1000 >> 16


async def _udp(host, port, client):
    # a name is looked up without blocking the event loop (ppmid.dns_lookup, loaded only
    # then); a server that answered keeps its address (client.known) until a query to it fails
    import socket
    k = client.known
    client.known = None  # given back by query() on a usable reply
    if k is not None and k[0] == host:
        ai = k[1]
    else:
        from ppmid.dns_lookup import addrinfo
        ai = await addrinfo(host, port, socket.SOCK_DGRAM, client.dns, client.wlan, client.log)
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    return s, ai


async def query(client, host):
    """(unix_s, ms) from `host` (the client's port, timeout, socket and nonce source), or None when no usable reply came within timeout_ms.
    Replies that fail parse() or come from another address are logged and ignored:
    a forged packet must not end the wait for the real one. OSError on a socket error,
    DnsError (E_DNS) when the host's name was not resolved."""
    if client.udp is None:
        sock, ai = await _udp(host, client.port, client)
        addr = ai[-1]
    else:
        sock, addr = client.udp(host, client.port)
        ai = None
    if client.wlan is not None:
        client.wlan.track(sock)
    try:
        nonce = client.urandom(8)
        buf = request(bytearray(_LEN), nonce)
        c = client.clock
        t0 = c.ms()
        sock.sendto(buf, addr)
        quiet = False
        while True:
            try:
                data, src = sock.recvfrom(64)
            except OSError as exc:
                if exc.args[0] != _EAGAIN:
                    raise
                data = None
            if data is not None:
                why = "reply from another address" if src != addr else None
                if why is None:
                    try:
                        unix, ms = parse(data, nonce)
                    except SntpError as exc:
                        why = exc.args[0]
                if why is not None:
                    client.ignored += 1
                    if not quiet:  # one line per query: a flood must not flood the console
                        client.log("PPMID sntp: ignored a reply for %s: %s" % (host, why))
                        quiet = True
                else:
                    if ai is not None:
                        client.known = (host, ai)
                    ms += c.diff(c.ms(), t0) // 2
                    return unix + ms // 1000, ms % 1000
            if c.diff(c.ms(), t0) >= client.timeout_ms:
                return None
            # after an ignored reply only a yield (the next datagram may be the real one),
            # but a yield still: a stream of forged ones must neither starve the other
            # tasks nor outlast timeout_ms
            await client.sleep(_POLL_MS if data is None else 0)
    finally:
        if client.wlan is not None:
            client.wlan.untrack(sock)
        sock.close()


def apply(client, unix, ms, source="sntp"):
    """Set the client's clock from a reply, under the jump rule. True when it was set.
    The jump rule's one place: the CH's clock (ppmid.zigbee.chclock, source "ch") goes
    through it too, with a client of the same attributes."""
    c = client.clock
    step = unix - c.time()
    if c.is_set() and (step > _STEP_S or step < -_STEP_S):
        h = client.held
        if h is None or abs(unix - h[0] - c.diff(c.ms(), h[1]) // 1000) > _AGREE_S:
            client.held = (unix, c.ms())
            client.log("PPMID clock: %s says %+d s from the %s clock: held until a second reply agrees"
                       % (source, step, c.source))
            return False
    client.held = None
    was = c.source
    client.set_time(unix, ms)
    c.set_source(source, unix)
    client.syncs += 1
    if was != source or step:
        client.log("PPMID clock: set by %s: unix=%d step=%+d s (was %s)" % (source, unix, step, was))
    return True


def set_up(client, settings, clock, set_time, wlan=None, log=print, on_set=None, udp=None, urandom=None,
           sleep=None, dns=None):
    """SntpClient(settings, clock, set_time, **options)'s work (ppmid.sntp_task): the
    settings and options (see SntpClient) and the task's state."""
    client.servers = settings["servers"]
    client.port = settings["port"]
    client.timeout_ms = settings["timeout_ms"]
    client.retry_s = settings["retry_s"]
    client.retry_max_s = settings["retry_max_s"]
    client.resync_s = settings["resync_s"]
    client.clock = clock
    client.set_time = set_time
    client.wlan = wlan
    client.log = log
    client.on_set = on_set
    client.udp = udp
    client.dns = dns
    if sleep is None:
        from ppmid.clock import sleep_ms as sleep
    client.sleep = sleep         # injected: tests move a fake clock instead of waiting
    if urandom is None:
        from os import urandom
    client.urandom = urandom
    client.held = None           # (unix_s, ticks) of a big step waiting for a second reply
    client.known = None          # (host, getaddrinfo entry) of the server that last answered
    client.server = 0
    client.syncs = client.failures = client.ignored = 0


async def sync_once(client):
    """One query to the client's current server; the next pause in seconds."""
    host = client.servers[client.server % len(client.servers)]
    try:
        got = await query(client, host)
    except OSError as exc:
        client.log("PPMID sntp: %s: %r" % (host, exc))
        got = None
    except PpmidError as exc:  # E_DNS: its name was not resolved; the next server is tried
        client.log("PPMID sntp: %s: %s" % (host, exc))
        got = None
    if got is None:
        client.failures += 1
        client.server += 1
        wait = min(client.retry_s << min(client.failures - 1, 16), client.retry_max_s)
        client.log("PPMID sntp: no usable reply from %s: next try in %d s" % (host, wait))
        return wait
    client.failures = 0
    if apply(client, got[0], got[1]):
        if client.on_set is not None:
            try:
                await client.on_set()
            except Exception as exc:  # noqa: BLE001 - the clock is set; info follows on reconnect
                client.log("PPMID sntp: on_set: %r" % (exc,))
        return client.resync_s
    client.server += 1           # confirm a held step with another server
    return client.retry_s
