# ppmid.dns (the A query / answer codec) against answers built here byte by byte from
# RFC 1035 (4.1.1 header, 4.1.2 question, 4.1.3 resource record, 4.1.4 compression), and
# ppmid.dns_lookup (resolvers in turn over non-blocking UDP) against a DNS server played by
# a task of the same event loop on loopback: timeouts, the next resolver, forged and late
# datagrams, NXDOMAIN, the loop running meanwhile. CPython and MicroPython.
import os
import socket
import struct

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from ppmid import dns
from ppmid import dns_lookup
from ppmid.dns import E_DNS
# caught as the base class: a test module run before this one in the same CPython process
# may have dropped and reloaded ppmid.dns (its users unload it after each lookup), and
# then its DnsError is not the one imported here
from ppmid.errors import PpmidError as DnsError
from ppmid.clock import sleep_ms

QID = 0xBEEF


def name_bytes(name):
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def header(qid=QID, flags=0x8180, qd=1, an=1, ns=0, ar=0):
    # 0x8180: QR answer, RD, RA, RCODE 0
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name="broker.example", qtype=1, qclass=1):
    return name_bytes(name) + struct.pack(">HH", qtype, qclass)


def rr(owner, rtype, rdata, ttl=300, rclass=1):
    # owner: bytes already on the wire (a name or a pointer)
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


PTR_Q = b"\xc0\x0c"   # a pointer to the question's name, right after the 12-byte header


def a_answer(addr=b"\xc0\x00\x02\x0a", ttl=300, **kw):
    return header(**kw) + question() + rr(PTR_Q, 1, addr, ttl)


def refused(data, word, qid=QID, name="broker.example"):
    try:
        dns.answer(data, qid, name)
    except DnsError as exc:
        assert exc.code == E_DNS
        assert word in exc.message, exc.message
        return exc
    raise AssertionError("accepted an answer that should be refused (%s)" % word)


# ---- the query -----------------------------------------------------------------------
def test_query_is_one_a_in_question_with_recursion_desired():
    q = dns.query("broker.example", 0x1234)
    assert q[:12] == struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x06broker\x07example\x00\x00\x01\x00\x01"
    assert dns.query("broker.example.", 0x1234) == q          # a trailing dot is the same name


def test_query_refuses_what_cannot_be_a_host_name():
    for bad in ("", "a..b", ".", "x" * 64 + ".example", "a." * 127 + "b", "br\u00f6ker.example"):
        try:
            dns.query(bad, 1)
        except DnsError as exc:
            assert exc.code == E_DNS and "host name" in exc.message
            continue
        raise AssertionError("query built for %r" % bad)
    dns.query("x" * 63 + ".example", 1)                        # a 63-byte label is fine


# ---- answers that are used -------------------------------------------------------------
def test_a_record_gives_the_address_and_ttl():
    assert dns.answer(a_answer(), QID, "broker.example") == ("192.0.2.10", 300)
    # names compare without case (RFC 4343) and the question may be given with a final dot
    data = header() + question("Broker.EXAMPLE") + rr(PTR_Q, 1, b"\x0a\x00\x00\x01", 60)
    assert dns.answer(data, QID, "broker.example.") == ("10.0.0.1", 60)


def test_first_a_record_of_several_and_other_types_skipped():
    aaaa = rr(PTR_Q, 28, bytes(16))
    data = header(an=3) + question() + aaaa + rr(PTR_Q, 1, b"\x01\x02\x03\x04", 30) + rr(PTR_Q, 1, b"\x05\x06\x07\x08")
    assert dns.answer(data, QID, "broker.example") == ("1.2.3.4", 30)
    # an authority and additional section after the answers is not read
    assert dns.answer(a_answer(ns=1) + b"junk", QID, "broker.example") == ("192.0.2.10", 300)


def test_cname_chain_is_followed_and_its_shortest_ttl_kept():
    # broker.example -> mq.cloud.example -> edge.cloud.example (A), names compressed:
    # the second CNAME's target reuses "cloud.example" from the first one's data
    q = header(an=3) + question()
    off_mq = len(q) + 12                          # rdata of the first CNAME starts here
    first = rr(PTR_Q, 5, b"\x02mq\x05cloud\x07example\x00", 3600)
    second = rr(struct.pack(">H", 0xC000 | off_mq), 5, b"\x04edge" + struct.pack(">H", 0xC000 | off_mq + 3), 120)
    off_edge = len(q) + len(first) + len(second) - 7   # the second CNAME's rdata (7 bytes)
    a = rr(struct.pack(">H", 0xC000 | off_edge), 1, b"\xc6\x33\x64\x07", 900)
    assert dns.answer(q + first + second + a, QID, "broker.example") == ("198.51.100.7", 120)
    # the same records in another order: the chain, not the order, decides
    assert dns.answer(header(an=2) + question() + rr(b"\x02mq\x00", 1, b"\x01\x01\x01\x01", 50)
                      + rr(PTR_Q, 5, b"\x02mq\x00", 70), QID, "broker.example") == ("1.1.1.1", 50)


def test_ttl_with_the_top_bit_set_is_zero():
    assert dns.answer(a_answer(ttl=0x80000001), QID, "broker.example") == ("192.0.2.10", 0)


# ---- answers that are refused ------------------------------------------------------------
def test_refusals_of_the_header():
    refused(a_answer()[:11], "truncated")
    refused(a_answer(qid=QID ^ 1), "id")
    refused(a_answer(flags=0x0180), "QR")                     # a query, not an answer
    refused(a_answer(flags=0x8980), "opcode")
    refused(a_answer(flags=0x8380), "TC")                     # truncated: would need TCP
    refused(a_answer(qd=0, an=1), "questions")
    refused(a_answer(qd=2), "questions")


def test_rcodes_are_refused_with_their_name_and_number():
    exc = refused(header(flags=0x8183, an=0) + question(), "NXDOMAIN")
    assert exc.rcode == 3
    assert refused(header(flags=0x8182, an=0) + question(), "SERVFAIL").rcode == 2
    assert refused(header(flags=0x8185, an=0) + question(), "REFUSED").rcode == 5
    assert refused(header(flags=0x818B, an=0) + question(), "rcode 11").rcode == 11


def test_question_must_be_ours():
    refused(header() + question("other.example") + rr(PTR_Q, 1, b"\x01\x02\x03\x04"), "question")
    refused(header() + question(qtype=28) + rr(PTR_Q, 1, b"\x01\x02\x03\x04"), "question")
    refused(header() + question(qclass=3) + rr(PTR_Q, 1, b"\x01\x02\x03\x04"), "question")


def test_no_a_record():
    refused(header(an=0) + question(), "no A record")
    refused(header() + question() + rr(PTR_Q, 28, bytes(16)), "no A record")
    # an A record for another name does not answer ours
    refused(header() + question() + rr(b"\x05other\x00", 1, b"\x01\x02\x03\x04"), "no A record")
    # a CNAME whose target has no A record here
    refused(header() + question() + rr(PTR_Q, 5, b"\x02mq\x00"), "no A record for mq")


def test_cname_loop_and_long_chain_are_refused():
    loop = header(an=2) + question() + rr(PTR_Q, 5, b"\x01a\x00") + rr(b"\x01a\x00", 5, PTR_Q)
    refused(loop, "CNAME chain")
    def n(i):
        return b"\x02c" + bytes([0x61 + i]) + b"\x00"      # ca, cb, ...
    chain = rr(PTR_Q, 5, n(0))
    for i in range(9):
        chain += rr(n(i), 5, n(i + 1))
    chain += rr(n(9), 1, b"\x01\x02\x03\x04")                # 10 CNAMEs to the A record
    refused(header(an=11) + question() + chain, "CNAME chain")
    # eight are followed
    short = rr(PTR_Q, 5, n(0))
    for i in range(7):
        short += rr(n(i), 5, n(i + 1))
    short += rr(n(7), 1, b"\x01\x02\x03\x04")
    assert dns.answer(header(an=9) + question() + short, QID, "broker.example") == ("1.2.3.4", 300)


def test_truncated_anywhere_is_refused_never_a_crash():
    whole = a_answer()
    for n in range(len(whole)):
        try:
            dns.answer(whole[:n], QID, "broker.example")
        except DnsError as exc:
            assert exc.code == E_DNS
            continue
        raise AssertionError("accepted the first %d bytes" % n)


def test_compression_pointer_loops_and_forward_pointers_are_refused():
    # a pointer to itself, in the answer's owner name
    base = header() + question()
    self_ptr = struct.pack(">H", 0xC000 | len(base))
    refused(base + rr(self_ptr, 1, b"\x01\x02\x03\x04"), "loop")
    # two names pointing at each other: the second points forward, refused
    refused(header() + b"\xc0\x0e\xc0\x0c" + struct.pack(">HH", 1, 1), "loop")
    # the question's name pointing at the header (backwards, but garbage labels)
    refused(header() + b"\xc0\x00" + struct.pack(">HH", 1, 1), "label type")


def test_bad_record_contents_are_refused():
    refused(header() + question() + rr(PTR_Q, 1, b"\x01\x02\x03"), "not 4")
    refused(header() + question() + rr(PTR_Q, 5, b"\x02mq\x00\x00"), "does not fill")
    refused(header() + question() + rr(b"\x40" + b"x" * 64 + b"\x00", 1, b"\x01\x02\x03\x04"), "label type")
    refused(header() + question() + PTR_Q + struct.pack(">HHIH", 1, 1, 5, 40) + b"\x01\x02\x03\x04", "truncated")
    refused(header() + question() + rr(b"\x02\xff\xfe\x00", 1, b"\x01\x02\x03\x04"), "not text")


def test_is_address_tells_literals_from_names():
    for a in ("127.0.0.1", "192.0.2.255", "::1", "fe80::1"):
        assert dns_lookup.is_address(a), a
    for n in ("broker.example", "localhost", "broker1", "1.2.3", "1.2.3.256", "1.2.3.4.5", "01.2.3.example"):
        assert not dns_lookup.is_address(n), n


# ---- the lookup over loopback UDP ----------------------------------------------------------
class Resolver:
    """A DNS server on 127.0.0.1, a task of the test's event loop. `reply(query)` gives what
    to do with each query: a list of (delay_ms, bytes, from_other_socket)."""

    def __init__(self, reply, host="127.0.0.1", port=0):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # MicroPython's socket has no getsockname(): bind a port of our choosing
        for _ in range(50):
            self._port = port or 20000 + (os.urandom(2)[0] << 8 | os.urandom(1)[0]) % 30000
            try:
                self.sock.bind(socket.getaddrinfo(host, self._port)[0][-1])
                break
            except OSError:
                if port:
                    raise
        self.sock.setblocking(False)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # a forger's socket
        self.queries = []
        self.task = None

    def port(self):
        return self._port

    async def serve(self):
        while True:
            try:
                q, src = self.sock.recvfrom(512)
            except OSError:
                await sleep_ms(5)
                continue
            self.queries.append(q)
            for delay, data, forged in self.reply(q):
                if delay:
                    await sleep_ms(delay)
                (self.other if forged else self.sock).sendto(data, src)

    def __enter__(self):
        self.task = asyncio.create_task(self.serve())
        return self

    def __exit__(self, *exc):
        self.task.cancel()
        self.sock.close()
        self.other.close()


def good(q, addr=b"\x7f\x00\x00\x05", ttl=60):
    # the answer a resolver gives to query q: its header with QR/RA, the question, one A
    return q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:] + rr(PTR_Q, 1, addr, ttl)


class Wlan:
    def __init__(self, servers):
        self.servers = servers
        self.tracked = 0
        self.open = 0

    def dns_servers(self):
        return self.servers

    def track(self, sock):
        self.tracked += 1
        self.open += 1

    def untrack(self, sock):
        self.open -= 1


def settings(port, servers=("127.0.0.1",), timeout_ms=150):
    return {"servers": list(servers), "port": port, "timeout_ms": timeout_ms}


async def test_lookup_answers_and_the_loop_runs_meanwhile():
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    with Resolver(lambda q: [(100, good(q), False)]) as srv:
        log = []
        wlan = Wlan([])
        got = await dns_lookup.resolve("broker.example", settings(srv.port()), wlan, log.append)
        assert got == ("127.0.0.5", 60)
        assert len(srv.queries) == 1 and srv.queries[0][12:] == question()
        assert wlan.tracked == 1 and wlan.open == 0          # the socket was given back
    t.cancel()
    # the ticker ran while the lookup waited 100 ms for its answer: the loop was not blocked
    assert ticks[0] >= 3, ticks


async def test_addrinfo_resolves_a_name_and_takes_an_address_as_it_is():
    with Resolver(lambda q: [(0, good(q, b"\x7f\x00\x00\x01"), False)]) as srv:
        ai = await dns_lookup.addrinfo("broker.example", 8883, socket.SOCK_STREAM, settings(srv.port()), None, None)
        assert ai == socket.getaddrinfo("127.0.0.1", 8883, 0, socket.SOCK_STREAM)[0]
        ai = await dns_lookup.addrinfo("127.0.0.2", 123, socket.SOCK_DGRAM, settings(srv.port()), None, None)
        assert ai == socket.getaddrinfo("127.0.0.2", 123, 0, socket.SOCK_DGRAM)[0]
        assert len(srv.queries) == 1                          # the address needed no query


async def test_forged_and_late_datagrams_are_ignored_the_answer_taken():
    def reply(q):
        wrong_id = bytes([q[0] ^ 0xFF]) + good(q, b"\x01\x01\x01\x01")[1:]
        return [(0, good(q, b"\x06\x06\x06\x06"), True),     # right id, wrong source port
                (0, wrong_id, False),                        # right source, another query's id
                (20, good(q), False)]
    with Resolver(reply) as srv:
        log = []
        assert (await dns_lookup.resolve("broker.example", settings(srv.port()), None, log.append))[0] == "127.0.0.5"
        assert len(log) == 1 and "ignored" in log[0], log     # one line per query


async def _refused_lookup(word, *resolvers, servers=("127.0.0.1",), wlan=None):
    log = []
    try:
        got = await dns_lookup.resolve("broker.example", settings(resolvers[0].port(), servers), wlan, log.append)
    except DnsError as exc:
        assert exc.code == E_DNS and word in exc.message, exc.message
        return exc, log
    raise AssertionError("resolved to %r" % (got,))


async def test_no_answer_times_out_and_the_next_resolver_is_asked():
    # two resolvers on one port: 127.0.0.2 never answers, 127.0.0.1 does
    with Resolver(lambda q: [(0, good(q), False)]) as srv:
        with Resolver(lambda q: [], "127.0.0.2", srv.port()) as silent:
            log = []
            got = await dns_lookup.resolve("broker.example", settings(srv.port(), ("127.0.0.2", "127.0.0.1")),
                                           None, log.append)
            assert got == ("127.0.0.5", 60)
            assert len(silent.queries) == 1 and len(srv.queries) == 1


async def test_servfail_and_garbage_move_on_to_the_next_resolver():
    def servfail(q):
        return [(0, q[:2] + b"\x81\x82" + q[4:], False)]
    with Resolver(lambda q: [(0, good(q), False)]) as srv:
        with Resolver(servfail, "127.0.0.2", srv.port()):
            with Resolver(lambda q: [(0, q[:2] + b"\x81\x80\x00\x01", False)], "127.0.0.3", srv.port()):
                got = await dns_lookup.resolve("broker.example",
                                               settings(srv.port(), ("127.0.0.2", "127.0.0.3", "127.0.0.1")), None, None)
                assert got[0] == "127.0.0.5"


async def test_every_resolver_silent_gives_e_dns_after_two_rounds():
    with Resolver(lambda q: []) as a:
        with Resolver(lambda q: [], "127.0.0.2", a.port()) as b:
            exc, log = await _refused_lookup("no address for broker.example", a, servers=("127.0.0.1", "127.0.0.2"))
            assert "no answer within 300 ms" in exc.message       # the second round waits twice as long
            assert len(a.queries) == 2 and len(b.queries) == 2
            assert len(log) == 2 and "no usable answer yet" in log[0]


async def test_nxdomain_ends_the_lookup_at_once():
    def nx(q):
        return [(0, q[:2] + b"\x81\x83" + q[4:], False)]
    with Resolver(nx) as srv:
        with Resolver(lambda q: [(0, good(q), False)], "127.0.0.2", srv.port()) as other:
            exc, _ = await _refused_lookup("NXDOMAIN", srv, servers=("127.0.0.1", "127.0.0.2"))
            assert exc.rcode == 3 and len(other.queries) == 0


async def test_no_a_record_and_cname_without_target_are_refused():
    with Resolver(lambda q: [(0, q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:]
                              + rr(PTR_Q, 5, b"\x02mq\x00"), False)]) as srv:
        await _refused_lookup("no A record for mq", srv)


async def test_no_resolver_anywhere_is_a_clear_error():
    with Resolver(lambda q: []) as srv:
        exc, _ = await _refused_lookup("none in dns.servers and none from DHCP", srv, servers=(), wlan=Wlan([]))
        assert not srv.queries


async def test_the_boards_resolvers_are_used_when_none_is_configured():
    with Resolver(lambda q: [(0, good(q), False)]) as srv:
        wlan = Wlan(["127.0.0.1"])
        assert (await dns_lookup.resolve("broker.example", settings(srv.port(), ()), wlan, None))[0] == "127.0.0.5"
        assert wlan.tracked == 1 and wlan.open == 0


async def test_a_lookup_that_ends_meanwhile_does_not_stop_another_moving_on():
    # review_w5-5: two lookups at once (the SNTP sync and the MQTT dial at boot). The first
    # ends and unloads ppmid.dns; the second's next query loads it again, whose DnsError is
    # another class: a SERVFAIL from that resolver went past the second's `except` and
    # ended its lookup instead of asking the next resolver
    import sys

    def servfail(q):
        return [(0, q[:2] + b"\x81\x82" + q[4:], False)]
    with Resolver(lambda q: [(0, good(q), False)]) as srv:
        with Resolver(lambda q: [], "127.0.0.3", srv.port()) as silent:      # 150 ms
            with Resolver(servfail, "127.0.0.2", srv.port()) as failing:
                slow = asyncio.create_task(dns_lookup.addrinfo(
                    "slow.example", 8883, socket.SOCK_STREAM,
                    settings(srv.port(), ("127.0.0.3", "127.0.0.2", "127.0.0.1")), None, None))
                await sleep_ms(20)                   # its first query is out, waiting
                ai = await dns_lookup.addrinfo("fast.example", 8883, socket.SOCK_STREAM,
                                               settings(srv.port()), None, None)
                assert ai == socket.getaddrinfo("127.0.0.5", 8883, 0, socket.SOCK_STREAM)[0]
                assert "ppmid.dns" not in sys.modules   # the first's end dropped the codec
                assert not failing.queries              # asked only after that
                ai = await slow
                assert ai == socket.getaddrinfo("127.0.0.5", 8883, 0, socket.SOCK_STREAM)[0]
                assert len(silent.queries) == 1 and len(failing.queries) == 1 and len(srv.queries) == 2
