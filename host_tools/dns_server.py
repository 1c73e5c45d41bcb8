"""A small DNS server on loopback for the emulated gateway (`ppmid emulate --broker-name`,
tests): the resolver the emulated board's Wi-Fi gives it, so that the firmware's own name
lookups (firmware/ppmid/dns_lookup.py) run for real.

It answers A queries (RFC 1035) for the names it is given with their IPv4 address (TTL
60 s), NXDOMAIN for any other name, NOTIMP for anything but one A/IN question, from a
thread. Written here apart from the firmware's codec, so that a shared mistake cannot make
both sides agree. For tests it can be held back (queries read and dropped):

    with DnsServer({"broker.emulated": "127.0.0.1"}) as srv:
        cfg["broker"]["host"] = "broker.emulated"
        cfg["dns"] = {"servers": ["127.0.0.1"], "port": srv.port}
"""
import socket
import struct
import threading

from host_tools.udp_server import LoopbackUdpServer

TTL_S = 60
_NOERROR, _FORMERR, _NXDOMAIN, _NOTIMP = 0, 1, 3, 4


def _question(data):
    """(name lower case, qtype, qclass, offset after the question) of a query's first
    question; ValueError when it is not readable (no compression expected in a query)."""
    at = 12
    labels = []
    while True:
        n = data[at]
        if n == 0:
            break
        if n > 63:
            raise ValueError("label length %d" % n)
        labels.append(data[at + 1:at + 1 + n].decode("ascii").lower())
        at += 1 + n
    qtype, qclass = struct.unpack_from(">HH", data, at + 1)
    return ".".join(labels), qtype, qclass, at + 5


def build_answer(query, names):
    """The answer to a query (bytes), or None when it is not a query to answer at all."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack_from(">HHH", query, 0)
    if flags & 0x8000:
        return None                                              # an answer, not a query
    rd = flags & 0x0100
    try:
        name, qtype, qclass, end = _question(query)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError):
        return struct.pack(">HHHHHH", qid, 0x8080 | rd | _FORMERR, 0, 0, 0, 0)
    question = query[12:end]
    if qdcount != 1 or qtype != 1 or qclass != 1:
        rcode, answers = _NOTIMP, b""
    elif name not in names:
        rcode, answers = _NXDOMAIN, b""
    else:
        addr = socket.inet_aton(names[name])
        # the owner name is a pointer to the question's, at offset 12
        rcode, answers = _NOERROR, b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, TTL_S, 4) + addr
    # QR, AA, RD as asked, RA
    head = struct.pack(">HHHHHH", qid, 0x8480 | rd | rcode, 1, 1 if answers else 0, 0, 0)
    return head + question + answers


class DnsServer(LoopbackUdpServer):
    NAME = "dns-server"

    def __init__(self, names, host="127.0.0.1", port=0, hold=False, log=None):
        super().__init__(host, port, log)
        self.names = {k.lower().rstrip("."): v for k, v in names.items()}
        self.queries = []      # the names asked, in order
        self._hold = threading.Event()
        if hold:
            self._hold.set()

    def start(self):
        super().start()
        self.log("DNS server on %s:%d for %s" % (self.host, self.port, ", ".join(sorted(self.names))))
        return self

    def hold(self, on=True):
        """Read queries and drop them (a resolver that does not answer) until hold(False)."""
        if on:
            self._hold.set()
        else:
            self._hold.clear()

    def answer(self, data):
        try:
            self.queries.append(_question(data)[0])
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            self.queries.append(None)
        if self._hold.is_set():
            return None
        return build_answer(data, self.names)
