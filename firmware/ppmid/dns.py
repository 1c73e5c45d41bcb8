# DNS (RFC 1035) for the gateway's own name lookups: the codec, no I/O. query() builds an
# A query for one name; answer() checks a resolver's reply to it and gives the first IPv4
# address at the end of its CNAME chain and the smallest TTL along it. The lookup itself
# (non-blocking UDP, the resolvers in turn) is ppmid.dns_lookup, which loads this module
# for one lookup and drops it after (docs/platform.md "Name lookups").
#
# Why not socket.getaddrinfo: on MicroPython it blocks the whole event loop for as long as
# the resolver takes to answer or give up (lwIP's own DNS client retries for seconds), and
# the one asyncio DNS client for MicroPython found does not check answers enough to refuse
# a malformed one (docs/platform.md "Name lookups" says why). The gateway needs one record
# type, and refuses anything it does not understand.
#
# Anti-spoofing: the query id is random (the caller's 16 bits from os.urandom); an answer
# counts only if it echoes that id and our one question, comes from the address asked
# (ppmid.dns_lookup), and its header, question and answer records are well formed (the
# authority and additional sections are not read).
from micropython import const
from ppmid.errors import PpmidError

E_DNS = "E_DNS"

_HEADER = const(12)
_TYPE_A = const(1)
_TYPE_CNAME = const(5)
_CLASS_IN = const(1)
_RD = const(0x0100)            # recursion desired: the resolver does the walk for us
_QR = const(0x8000)
_TC = const(0x0200)
_MAX_NAME = const(255)         # RFC 1035 2.3.4: a name on the wire, length bytes included
_MAX_LABEL = const(63)
_TTL_CAP = const(0x3FFFFFFF)
_MAX_CHAIN = const(8)          # CNAMEs followed within one answer before giving up

_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsError(PpmidError):
    """A name could not be resolved, or an answer was refused; `rcode` is the resolver's
    response code when it gave one (3: the name does not exist), else None."""

    def __init__(self, message, rcode=None):
        super().__init__(E_DNS, message)
        self.rcode = rcode


def query(name, qid):
    """The A query for `name` (a host name, no trailing dot needed) with id `qid` (16 bits),
    as bytes. DnsError when the name cannot be put on the wire."""
    name = name.rstrip(".") if name else name
    if not name or len(name) > _MAX_NAME - 2:
        raise DnsError("%r is not a host name (1 to 253 characters)" % (name,))
    out = bytearray(_HEADER)
    out[0] = qid >> 8 & 0xFF
    out[1] = qid & 0xFF
    out[2] = _RD >> 8
    out[5] = 1                                   # QDCOUNT 1
    for label in name.split("."):
        raw = label.encode()
        if not raw or len(raw) > _MAX_LABEL or len(raw) != len(label):
            raise DnsError("%r is not a host name (empty, over 63 bytes or non-ASCII label)" % (name,))
        out.append(len(raw))
        out.extend(raw)
    out.extend(b"\x00\x00\x01\x00\x01")         # root, QTYPE A, QCLASS IN
    return bytes(out)


def _u16(data, at):
    if at + 2 > len(data):
        raise DnsError("truncated answer (%d bytes)" % len(data))
    return data[at] << 8 | data[at + 1]


def _name(data, at):
    """(the name at `at`, lower case, dotted; the offset after it where it started). A
    compression pointer must point before itself (RFC 1035 4.1.4: to a prior occurrence),
    so a chain of them always ends: a loop is refused, never followed."""
    parts = []
    end = None
    size = 0
    while True:
        if at >= len(data):
            raise DnsError("truncated answer (%d bytes)" % len(data))
        n = data[at]
        if n & 0xC0 == 0xC0:
            ptr = _u16(data, at) & 0x3FFF
            if ptr >= at:
                raise DnsError("compression pointer at %d to %d does not point back (a loop)" % (at, ptr))
            if end is None:
                end = at + 2
            at = ptr
            continue
        if n & 0xC0:
            raise DnsError("label type 0x%02X at %d is not supported" % (n & 0xC0, at))
        if n == 0:
            break
        size += n + 1
        if size > _MAX_NAME - 1 or at + 1 + n > len(data):
            raise DnsError("name at %d is too long or truncated" % at)
        try:
            parts.append(bytes(data[at + 1:at + 1 + n]).decode().lower())
        except (UnicodeError, ValueError):
            raise DnsError("name at %d is not text" % at)
        at += 1 + n
    return ".".join(parts), (at + 1 if end is None else end)


def _ttl(t):
    # RFC 2181 8: a TTL with the top bit set is read as 0; kept to a small int on the 32-bit
    # port (31-bit signed) by a cap of 34 years
    return 0 if t & 0x80000000 else min(t, _TTL_CAP)


def answer(data, qid, name):
    """(dotted IPv4 address, TTL in seconds) from a resolver's reply to query(name, qid), or
    DnsError saying why the reply is not usable (with the rcode when the resolver gave one)."""
    if len(data) < _HEADER:
        raise DnsError("truncated answer (%d bytes)" % len(data))
    got = _u16(data, 0)
    if got != qid:
        raise DnsError("answer id %d is not the query's %d" % (got, qid))
    flags = _u16(data, 2)
    if not flags & _QR:
        raise DnsError("not an answer (QR is 0)")
    if flags & 0x7800:
        raise DnsError("opcode %d is not a standard query" % (flags >> 11 & 15))
    if flags & _TC:
        raise DnsError("truncated answer (TC set)")
    rcode = flags & 15
    if rcode:
        raise DnsError("%s for %s (rcode %d)" % (_RCODES.get(rcode, "error"), name, rcode), rcode)
    if _u16(data, 4) != 1:
        raise DnsError("%d questions echoed, not our one" % _u16(data, 4))
    want = name.rstrip(".").lower()
    qname, at = _name(data, _HEADER)
    if qname != want or _u16(data, at) != _TYPE_A or _u16(data, at + 2) != _CLASS_IN:
        raise DnsError("the question echoed (%s) is not ours (%s A IN)" % (qname, want))
    at += 4
    # one pass over the answer section: where each CNAME points, and the A records
    cnames = {}
    addrs = []
    for _ in range(_u16(data, 6)):
        owner, at = _name(data, at)
        rtype = _u16(data, at)
        rclass = _u16(data, at + 2)
        ttl = _u16(data, at + 4) << 16 | _u16(data, at + 6)
        rdlen = _u16(data, at + 8)
        at += 10
        if at + rdlen > len(data):
            raise DnsError("truncated answer (%d bytes)" % len(data))
        if rclass == _CLASS_IN and rtype == _TYPE_CNAME:
            target, stop = _name(data, at)
            if stop != at + rdlen:
                raise DnsError("CNAME record of %s does not fill its data" % owner)
            cnames[owner] = (target, ttl)
        elif rclass == _CLASS_IN and rtype == _TYPE_A:
            if rdlen != 4:
                raise DnsError("A record of %s has %d bytes, not 4" % (owner, rdlen))
            addrs.append((owner, "%d.%d.%d.%d" % (data[at], data[at + 1], data[at + 2], data[at + 3]), ttl))
        at += rdlen
    # follow the chain from our name; the TTL of the result is that of its shortest link
    ttl = _TTL_CAP
    for _ in range(_MAX_CHAIN + 1):
        for owner, addr, t in addrs:
            if owner == want:
                return addr, min(ttl, _ttl(t))
        link = cnames.get(want)
        if link is None:
            raise DnsError("no A record for %s in the answer" % want)
        want = link[0]
        ttl = min(ttl, _ttl(link[1]))
    raise DnsError("CNAME chain longer than %d for %s" % (_MAX_CHAIN, name))
