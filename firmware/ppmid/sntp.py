# SNTP client (the client side of RFC 4330 over an NTPv4 packet): a codec with no I/O
# (request/parse) and SntpClient, the task that keeps the board's wall clock set from the
# configured servers. The app imports this module only when Wi-Fi is configured.
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

from ppmid.clock import sleep_ms

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


def _udp(host, port):
    import socket
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    return s, ai[-1]


class SntpClient:
    """Keeps `clock` set: asks the servers in turn once Wi-Fi is up, retries with a
    doubling pause (retry_s .. retry_max_s) while no usable reply comes, re-syncs every
    resync_s. `set_time(unix_s, ms)` is the board's RTC setter; `on_set` an optional
    coroutine function called after each set (the app republishes its info)."""

    def __init__(self, settings, clock, set_time, wlan=None, log=print, on_set=None, udp=_udp, urandom=None,
                 sleep=sleep_ms):
        self.servers = settings["servers"]
        self.port = settings["port"]
        self.timeout_ms = settings["timeout_ms"]
        self.retry_s = settings["retry_s"]
        self.retry_max_s = settings["retry_max_s"]
        self.resync_s = settings["resync_s"]
        self.clock = clock
        self.set_time = set_time
        self.wlan = wlan
        self.log = log
        self.on_set = on_set
        self.udp = udp
        self.sleep = sleep         # injected: tests move a fake clock instead of waiting
        if urandom is None:
            from os import urandom
        self.urandom = urandom
        self.buf = bytearray(_LEN)
        self.held = None           # (unix_s, ticks) of a big step waiting for a second reply
        self.server = 0
        self.syncs = self.failures = self.ignored = 0

    async def query(self, host):
        """(unix_s, ms) from `host`, or None when no usable reply came within timeout_ms.
        Replies that fail parse() or come from another address are logged and ignored:
        a forged packet must not end the wait for the real one. OSError on a socket error."""
        sock, addr = self.udp(host, self.port)
        if self.wlan is not None:
            self.wlan.track(sock)
        try:
            nonce = self.urandom(8)
            request(self.buf, nonce)
            c = self.clock
            t0 = c.ms()
            sock.sendto(self.buf, addr)
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
                        self.ignored += 1
                        if not quiet:  # one line per query: a flood must not flood the console
                            self.log("PPMID sntp: ignored a reply for %s: %s" % (host, why))
                            quiet = True
                    else:
                        ms += c.diff(c.ms(), t0) // 2
                        return unix + ms // 1000, ms % 1000
                if c.diff(c.ms(), t0) >= self.timeout_ms:
                    return None
                # after an ignored reply only a yield (the next datagram may be the real
                # one), but a yield still: a stream of forged ones must neither starve the
                # other tasks nor outlast timeout_ms
                await self.sleep(_POLL_MS if data is None else 0)
        finally:
            if self.wlan is not None:
                self.wlan.untrack(sock)
            sock.close()

    def apply(self, unix, ms):
        """Set the clock from a reply, under the jump rule. True when it was set."""
        c = self.clock
        step = unix - c.time()
        if c.is_set() and (step > _STEP_S or step < -_STEP_S):
            h = self.held
            if h is None or abs(unix - h[0] - c.diff(c.ms(), h[1]) // 1000) > _AGREE_S:
                self.held = (unix, c.ms())
                self.log("PPMID clock: sntp says %+d s from the %s clock: held until a second reply agrees"
                         % (step, c.source))
                return False
        self.held = None
        was = c.source
        self.set_time(unix, ms)
        c.set_source("sntp", unix)
        self.syncs += 1
        if was != "sntp" or step:
            self.log("PPMID clock: set by sntp: unix=%d step=%+d s (was %s)" % (unix, step, was))
        return True

    def _up(self):
        return self.wlan is None or self.wlan.isconnected()

    async def _pause(self, s):
        # sleep s seconds, cut short when Wi-Fi comes back after a drop (sync at once then)
        was_up = self._up()
        for _ in range(s):
            await self.sleep(1000)
            up = self._up()
            if up and not was_up:
                return
            was_up = up

    async def sync_once(self):
        """One query to the current server; the next pause in seconds."""
        host = self.servers[self.server % len(self.servers)]
        try:
            got = await self.query(host)
        except OSError as exc:
            self.log("PPMID sntp: %s: %r" % (host, exc))
            got = None
        if got is None:
            self.failures += 1
            self.server += 1
            wait = min(self.retry_s << min(self.failures - 1, 16), self.retry_max_s)
            self.log("PPMID sntp: no usable reply from %s: next try in %d s" % (host, wait))
            return wait
        self.failures = 0
        if self.apply(got[0], got[1]):
            if self.on_set is not None:
                try:
                    await self.on_set()
                except Exception as exc:  # noqa: BLE001 - the clock is set; info follows on reconnect
                    self.log("PPMID sntp: on_set: %r" % (exc,))
            return self.resync_s
        self.server += 1           # confirm a held step with another server
        return self.retry_s

    async def run(self):
        while True:
            if not self._up():
                await self.sleep(1000)
                continue
            try:
                wait = await self.sync_once()
            except Exception as exc:  # noqa: BLE001 - the clock task must outlive a bug
                self.log("PPMID sntp: %r" % (exc,))
                wait = self.retry_max_s
            await self._pause(wait)
