# ppmid.sntp and ppmid.sntp_task: the request/reply codec (every reason to refuse a reply,
# the NTP eras) and the client task over a fake UDP socket (timeouts, backoff, resync,
# ignored replies, the jump rule). CPython and MicroPython.
import struct
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from ppmid import sntp
from ppmid.sntp_task import SntpClient
from ppmid.clock import Clock

NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"
NTP_UNIX = 2208988800
UNIX_2026 = 1796083200            # 2026-12-01T00:00:00Z
EPOCH_2000 = 946684800


def reply(unix=UNIX_2026, frac=0, li=0, version=4, mode=4, stratum=2, origin=NONCE, kiss=b"RATE", era=0):
    b = bytearray(48)
    b[0] = li << 6 | version << 3 | mode
    b[1] = stratum
    if stratum == 0:
        b[12:16] = kiss
    b[24:32] = origin
    secs = (unix + NTP_UNIX - (era << 32)) if unix is not None else 0
    struct.pack_into(">II", b, 40, secs, frac)
    return bytes(b)


def _refused(data, word):
    try:
        sntp.parse(data, NONCE)
    except sntp.SntpError as exc:
        assert word in exc.args[0], exc.args[0]
        return
    raise AssertionError("accepted a reply that should be refused (%s)" % word)


def test_request_is_a_48_byte_v4_client_packet_carrying_the_nonce():
    buf = bytearray(b"\xff" * 48)
    sntp.request(buf, NONCE)
    assert len(buf) == 48 and buf[0] == 0x23          # LI 0, VN 4, mode 3
    assert bytes(buf[1:40]) == bytes(39)
    assert bytes(buf[40:48]) == NONCE


def test_good_reply_gives_unix_seconds_and_ms():
    assert sntp.parse(reply(), NONCE) == (UNIX_2026, 0)
    assert sntp.parse(reply(frac=0x80000000), NONCE) == (UNIX_2026, 500)
    assert sntp.parse(reply(frac=0xFFFFFFFF), NONCE)[1] == 999
    assert sntp.parse(reply(version=3), NONCE)[0] == UNIX_2026
    assert sntp.parse(reply(li=1, stratum=15), NONCE)[0] == UNIX_2026   # leap second pending: fine
    assert sntp.parse(reply() + bytes(20), NONCE)[0] == UNIX_2026       # extension fields: ignored


def test_ntp_era_1_after_2036():
    # 2040-01-01 is past the 2036-02-07 wrap of the 32-bit NTP seconds
    unix_2040 = 2208988800
    data = reply(unix_2040, era=1)
    secs = struct.unpack_from(">I", data, 40)[0]
    assert secs < 0x80000000                           # the wrapped value on the wire
    assert sntp.parse(data, NONCE)[0] == unix_2040
    # the last second of era 0
    assert sntp.parse(reply(0xFFFFFFFF - NTP_UNIX), NONCE)[0] == 0xFFFFFFFF - NTP_UNIX


def test_bad_replies_are_refused_with_the_reason():
    _refused(reply()[:47], "short")
    _refused(b"", "short")
    _refused(reply(mode=3), "mode 3")                  # our own request echoed back
    _refused(reply(mode=5), "mode 5")
    _refused(reply(version=0), "version")
    _refused(reply(version=7), "version")
    _refused(reply(stratum=0), "kiss-o'-death")
    _refused(reply(stratum=16), "stratum 16")
    _refused(reply(li=3), "LI=3")
    _refused(reply(origin=b"\x00" * 8), "originate")   # a spoofer who did not see our request
    _refused(reply(unix=None), "zero transmit")
    _refused(reply(unix=EPOCH_2000 + 5), "before 2024")


# ---- the client over a fake socket -----------------------------------------------------
class FakeTime:
    """An ESP32's clock: seconds from 2000, ms ticks; the test moves it."""

    def __init__(self, now2000=5):
        self.ms = now2000 * 1000
        self.tick = 0

    def gmtime(self, secs=0):
        return (2000, 1, 1, 0, 0, 0, 5, 1)

    def time(self):
        return self.ms // 1000

    def ticks_ms(self):
        return self.tick

    def ticks_add(self, a, b):
        return a + b

    def ticks_diff(self, a, b):
        return a - b

    def set_unix(self, unix, ms=0):
        self.ms = (unix - EPOCH_2000) * 1000 + ms


class FakeSocket:
    """A non-blocking UDP socket: answers from `script` ([(delay_ms, bytes or callable(nonce),
    src)] per request), EAGAIN otherwise. Time moves only when the client sleeps."""

    def __init__(self, net, addr):
        self.net = net
        self.addr = addr
        self.closed = False
        self.inbox = []

    def sendto(self, data, addr):
        assert addr == self.addr and len(data) == 48
        self.net.sent.append((bytes(data), addr))
        nonce = bytes(data[40:48])
        for delay, what, src in self.net.answers.pop(0) if self.net.answers else ():
            payload = what(nonce) if callable(what) else what
            self.inbox.append((self.net.time.tick + delay, payload, src or addr))

    def recvfrom(self, n):
        for i, (at, payload, src) in enumerate(self.inbox):
            if at <= self.net.time.tick:
                del self.inbox[i]
                return payload[:n], src
        raise OSError(11)

    def close(self):
        self.closed = True


class Net:
    def __init__(self, time):
        self.time = time
        self.sent = []
        self.answers = []      # per request: [(delay_ms, bytes | fn(nonce), src or None)]
        self.socks = []

    def udp(self, host, port):
        if host == "down.example":
            raise OSError(-2)  # DNS failure
        s = FakeSocket(self, (host, port))
        self.socks.append(s)
        return s, s.addr


def good(unix=UNIX_2026, frac=0):
    return lambda nonce: reply(unix, frac=frac, origin=nonce)


SETTINGS = {"servers": ["a.example", "b.example"], "port": 123, "timeout_ms": 1000, "retry_s": 2,
            "retry_max_s": 16, "resync_s": 600}


def rig(settings=SETTINGS):
    t = FakeTime()
    net = Net(t)
    clock = Clock(t, "unset")
    logs = []
    sets = []

    def set_time(unix, ms):
        sets.append((unix, ms))
        t.set_unix(unix, ms)

    c = SntpClient(settings, clock, set_time, log=logs.append, udp=net.udp,
                        urandom=lambda n: bytes([len(net.sent) + 1]) * n, sleep=fake_sleep(t))
    return c, t, net, clock, logs, sets


def fake_sleep(t):
    # time moves by the slept amount: the client's waits run instantly
    async def sleep(ms):
        t.tick += ms
        t.ms += ms
        await asyncio.sleep(0)
    return sleep


async def test_first_reply_sets_an_unset_clock_with_half_the_round_trip():
    c, t, net, clock, logs, sets = rig()
    assert not clock.is_set() and clock.source == "unset"
    net.answers = [[(100, good(frac=0x80000000), None)]]
    wait = await c.sync_once()
    assert wait == 600                                   # resync_s
    assert sets == [(UNIX_2026, 550)]                     # 500 ms + half of the 100 ms round trip
    assert clock.is_set() and clock.source == "sntp" and clock.synced_at == UNIX_2026
    assert clock.time() == UNIX_2026
    assert any("set by sntp" in x and "was unset" in x for x in logs)
    assert all(s.closed for s in net.socks)
    # the protocol's code is held for the sync only (docs/memory.md)
    assert "ppmid.sntp" not in sys.modules


async def test_a_sync_that_fails_with_a_bug_drops_the_protocol_and_the_task_goes_on():
    c, t, net, clock, logs, sets = rig()

    def broken(host, port):
        raise ValueError("bug in the socket layer")
    c.udp = broken
    try:
        await c.sync_once()
        raise AssertionError("the bug must reach the task's loop")
    except ValueError:
        pass
    assert "ppmid.sntp" not in sys.modules
    # the loop logs it, waits retry_max_s, and tries again
    task = asyncio.create_task(c.run())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    assert any("PPMID sntp: ValueError" in x for x in logs) and not clock.is_set()


async def test_bad_and_spoofed_replies_are_ignored_and_the_real_one_still_counts():
    c, t, net, clock, logs, sets = rig()
    bad = [reply(origin=b"\x00" * 8), reply(stratum=0), reply(li=3), reply(mode=3), b"\x24" * 20,
           reply(unix=None)]
    net.answers = [[(10 * i, lambda n, b=b: b, None) for i, b in enumerate(bad)]
                   + [(90, good(), ("6.6.6.6", 123)),        # right answer, wrong source
                      (200, good(), None)]]
    assert await c.sync_once() == 600
    assert sets and sets[0][0] == UNIX_2026
    assert c.ignored == 7
    # one line per query, not one per forged packet
    assert len([x for x in logs if "ignored" in x]) == 1
    assert "originate" in [x for x in logs if "ignored" in x][0]


async def test_only_bad_replies_is_a_failure_with_backoff_and_the_next_server():
    c, t, net, clock, logs, sets = rig()
    net.answers = [[(10, reply(stratum=0), None)]]
    waits = [await c.sync_once()]
    for _ in range(5):                                  # nobody answers at all
        waits.append(await c.sync_once())
    assert waits == [2, 4, 8, 16, 16, 16]               # doubling from retry_s up to retry_max_s
    assert sets == [] and not clock.is_set()
    hosts = [a[0] for _, a in net.sent]
    assert hosts == ["a.example", "b.example"] * 3       # servers in turn
    assert any("no usable reply from a.example: next try in 2 s" in x for x in logs)
    # then one answers: the pause is back to resync_s and the backoff starts again
    net.answers = [[(5, good(), None)]]
    assert await c.sync_once() == 600
    net.answers = []
    assert await c.sync_once() == 2


async def test_a_flood_of_bad_replies_yields_and_ends_at_the_timeout():
    # forged datagrams arriving faster than they are read: each ignored one must still
    # give the event loop a turn, and the query must end at timeout_ms with None
    c, t, net, clock, logs, sets = rig()
    slept = []
    sleep = c.sleep

    async def counting_sleep(ms):
        slept.append(ms)
        await sleep(ms)
    c.sleep = counting_sleep

    class FloodSocket(FakeSocket):
        def recvfrom(self, n):
            self.net.time.tick += 1  # reading a datagram takes time on a real board
            self.net.time.ms += 1
            return reply(origin=b"\x00" * 8), ("10.0.0.66", 123)

    def udp(host, port):
        s = FloodSocket(net, (host, port))
        net.socks.append(s)
        return s, s.addr
    c.udp = udp
    assert await sntp.query(c, "a.example") is None
    assert t.tick == SETTINGS["timeout_ms"] and c.ignored == len(slept) + 1 == 1000
    assert all(ms == 0 for ms in slept)
    assert len([x for x in logs if "ignored" in x]) == 1 and net.socks[0].closed


async def test_socket_and_dns_errors_count_as_failures():
    c, t, net, clock, logs, sets = rig(dict(SETTINGS, servers=["down.example"]))
    assert await c.sync_once() == 2
    assert any("down.example" in x for x in logs)


async def test_resync_corrects_small_drift_at_once():
    c, t, net, clock, logs, sets = rig()
    net.answers = [[(0, good(), None)]]
    await c.sync_once()
    t.ms += 600 * 1000 + 3000                            # resync_s later, 3 s fast
    net.answers = [[(0, good(UNIX_2026 + 600), None)]]
    assert await c.sync_once() == 600
    assert sets[-1][0] == UNIX_2026 + 600 and clock.time() == UNIX_2026 + 600
    assert any("step=-3 s" in x for x in logs)


async def test_a_big_step_of_a_set_clock_needs_two_agreeing_replies():
    c, t, net, clock, logs, sets = rig()
    net.answers = [[(0, good(), None)]]
    await c.sync_once()
    n = len(sets)
    # one reply says the clock is a day off: held, not applied; asked again soon
    net.answers = [[(0, good(UNIX_2026 + 86400), None)]]
    assert await c.sync_once() == 2
    assert len(sets) == n and abs(clock.time() - UNIX_2026) < 5
    assert any("held until a second reply agrees" in x for x in logs)
    # the next reply disagrees with it (the real time): a small correction, applied
    net.answers = [[(0, good(clock.time()), None)]]
    assert await c.sync_once() == 600
    assert abs(clock.time() - UNIX_2026) < 5 and c.held is None
    # two agreeing replies for a real step (2 s apart, counting the time between them)
    base = clock.time()
    net.answers = [[(0, good(base + 3600), None)]]
    assert await c.sync_once() == 2
    t.tick += 2000
    t.ms += 2000
    net.answers = [[(0, good(base + 3602), None)]]
    assert await c.sync_once() == 600
    assert abs(clock.time() - (base + 3602)) <= 1
    assert any("step=+36" in x for x in logs)


async def test_a_clock_kept_by_the_rtc_is_set_and_takes_small_corrections():
    t = FakeTime()
    t.set_unix(UNIX_2026)
    clock = Clock(t, "rtc")
    assert clock.is_set() and clock.source == "rtc" and clock.synced_at is None
    net = Net(t)
    sets = []
    c = SntpClient(SETTINGS, clock, lambda u, m: sets.append(u), log=lambda m: None, udp=net.udp,
                        urandom=lambda n: b"\x07" * n)
    assert sntp.apply(c, UNIX_2026 + 1, 0) and clock.source == "sntp" and sets == [UNIX_2026 + 1]


async def test_on_set_is_called_after_each_set_and_its_failure_is_logged():
    c, t, net, clock, logs, sets = rig()
    called = []

    async def on_set():
        called.append(clock.source)
        raise OSError("broker away")
    c.on_set = on_set
    net.answers = [[(0, good(), None)]]
    assert await c.sync_once() == 600
    assert called == ["sntp"] and any("on_set" in x for x in logs)


class Wlan:
    def __init__(self, up):
        self.up = up
        self.tracked = []

    def isconnected(self):
        return self.up

    def track(self, s):
        self.tracked.append(s)

    def untrack(self, s):
        self.tracked.remove(s)


async def test_run_waits_for_wifi_and_a_pause_ends_when_wifi_comes_back():
    c, t, net, clock, logs, sets = rig()
    c.wlan = Wlan(False)
    # no Wi-Fi: no query at all
    task = asyncio.create_task(c.run())
    await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert net.sent == []
    task.cancel()
    # a long pause (600 s after a sync) is cut short by Wi-Fi coming back after a drop: the
    # next sync comes at once, not 600 s later
    c.wlan.up = True
    synced = []
    sync_once = c.sync_once

    async def one_sync():
        synced.append(t.tick)
        return 600
    c.sync_once = one_sync
    task = asyncio.create_task(c.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(synced) == 1
    c.wlan.up = False
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(synced) == 1          # down: still pausing
    c.wlan.up = True
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    assert len(synced) == 2 and synced[1] - synced[0] < 600 * 1000
    c.sync_once = sync_once
    # without the drop the pause runs its full length
    synced.clear()
    c.sync_once = one_sync
    task = asyncio.create_task(c.run())
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    assert len(synced) == 1
    c.sync_once = sync_once
    # a query's socket is tracked (closed by a Wi-Fi drop) and untracked after
    net.answers = [[(0, good(), None)]]
    await c.sync_once()
    assert c.wlan.tracked == [] and net.socks[-1].closed


async def test_the_apps_hook_republishes_the_info_only_while_the_link_is_online():
    from ppmid.sntp_task import republisher

    class Link:
        def __init__(self, state):
            self.client = type("Client", (), {})()
            self.client.state = state
            self.published = 0

        async def republish_info(self):
            self.published += 1
    await republisher(None)()   # no MQTT configured: nothing to tell
    offline, online = Link("connecting"), Link("online")
    await republisher(offline)()
    await republisher(online)()
    assert (offline.published, online.published) == (0, 1)


async def test_a_server_that_answered_is_not_looked_up_again_until_it_fails():
    # The real socket path (no udp hook), with `socket` and the name lookup
    # (ppmid.dns_lookup, which each sync drops after it) replaced, so lookups are counted.
    c, t, net, clock, logs, sets = rig()
    c.udp = None
    lookups = []

    class UdpSocket(FakeSocket):
        def setblocking(self, flag):
            assert flag is False

    class Sockets:
        SOCK_DGRAM = 2

        def getaddrinfo(self, host, port, af, kind):
            return [(2, kind, 0, "", (host, port))]

        def socket(self, *a):
            s = UdpSocket(net, (lookups[-1], 123))  # bound to the address looked up last
            net.socks.append(s)
            return s

    class Lookup:
        async def addrinfo(self, host, port, kind, dns, wlan, log):
            lookups.append(host)
            return Sockets().getaddrinfo(host, port, 0, kind)[0]
    saved = sys.modules.get("socket")
    sys.modules["socket"] = Sockets()
    try:
        for answer in (True, True, False, True, True, False, True):
            t.ms += 3600 * 1000
            now = clock.time() if clock.is_set() else UNIX_2026
            net.answers = [[(0, good(now), None)]] if answer else [[]]
            sys.modules["ppmid.dns_lookup"] = Lookup()
            await c.sync_once()
    finally:
        sys.modules.pop("ppmid.dns_lookup", None)
        if saved is None:
            del sys.modules["socket"]
        else:
            sys.modules["socket"] = saved
    # a answered twice (one lookup), failed; b was looked up, answered twice, failed; a again
    assert lookups == ["a.example", "b.example", "a.example"], lookups
    assert [s.addr[0] for s in net.socks] == ["a.example"] * 3 + ["b.example"] * 3 + ["a.example"]
    assert c.failures == 0 and len(sets) == 5


async def test_a_name_that_does_not_resolve_is_a_failed_query_and_the_next_server_is_asked():
    # The real socket path with the name lookup (ppmid.dns_lookup) replaced by one that
    # refuses with E_DNS, as after NXDOMAIN or no resolver answering: no crash, the usual
    # back-off, the next server next time.
    from ppmid.errors import PpmidError
    c, t, net, clock, logs, sets = rig()
    c.udp = None
    asked = []

    class Lookup:
        async def addrinfo(self, host, port, kind, dns, wlan, log):
            asked.append((host, dns))
            raise PpmidError("E_DNS", "NXDOMAIN for %s (rcode 3)" % host)
    c.dns = {"servers": ["192.0.2.53"], "port": 53, "timeout_ms": 1000}
    sys.modules["ppmid.dns_lookup"] = Lookup()
    try:
        wait = await c.sync_once()
    finally:
        sys.modules.pop("ppmid.dns_lookup", None)
    assert asked == [("a.example", c.dns)]
    assert wait == c.retry_s and c.failures == 1 and c.server == 1 and not sets
    assert any("E_DNS: NXDOMAIN for a.example" in line for line in logs), logs


def test_a_new_client_has_its_defaults_and_leaves_ppmid_sntp_unloaded():
    # the constructor's work is ppmid.sntp.set_up, loaded for it and dropped again, as after
    # each sync (docs/memory.md, session 10); an unknown option is still refused
    from ppmid import clock as clock_module
    import ppmid.sntp  # noqa: F401 - loaded, as during a sync
    c = SntpClient(SETTINGS, Clock(), lambda u, m: None)
    assert "ppmid.sntp" not in sys.modules and "ppmid.modules" not in sys.modules
    assert c.sleep is clock_module.sleep_ms and c.log is print and c.urandom is not None
    assert c.wlan is None and c.on_set is None and c.udp is None and c.dns is None
    assert (c.servers, c.port, c.resync_s) == (SETTINGS["servers"], SETTINGS["port"], SETTINGS["resync_s"])
    assert c.held is None and c.known is None and c.server == c.syncs == c.failures == c.ignored == 0
    import ppmid.sntp  # noqa: F401,F811
    try:
        SntpClient(SETTINGS, Clock(), lambda u, m: None, sleeps=None)
    except TypeError:
        pass
    else:
        raise AssertionError("an unknown option was taken")
    assert "ppmid.sntp" not in sys.modules
