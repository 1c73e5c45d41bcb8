# Name lookups that do not block the event loop (docs/platform.md "Name lookups"): an A
# query (ppmid.dns, the codec) over a non-blocking UDP socket, waited for with asyncio
# sleeps as the SNTP client does (ppmid.sntp.query), asked of the resolvers in turn.
# socket.getaddrinfo would do it in one call, but on MicroPython it blocks the whole loop
# while the resolver takes its time: the Zigbee module's ASH frames go unacknowledged (it
# resends after 0.4 s, doubling up to 3.2 s, and declares the link failed after four in a
# row, ~6 s), the watchdog is not fed, the NFC and wired roads stall.
#
# Loaded by the MQTT dial (ppmid.mqtt.handshake) and an SNTP sync (ppmid.sntp) only when
# they have no address for their host yet, and dropped by addrinfo() once it is done; the
# codec is loaded only when the host is a name, not an address.
#
# The resolvers: the config's dns.servers, else the one DHCP gave the Wi-Fi interface (the
# board's wlan.dns_servers()). Each round asks every resolver once; the wait for an answer
# doubles each round (timeout_ms, then twice that), so a lookup gives up after
# 3 * timeout_ms per resolver at most.
from micropython import const
from ppmid.clock import ticks_ms, ticks_diff, sleep_ms
from ppmid.errors import PpmidError

_ROUNDS = const(2)
_POLL_MS = const(20)           # how often a query looks for its answer
_EAGAIN = const(11)            # EAGAIN on Linux and lwIP: nothing received yet
_NXDOMAIN = const(3)


def is_address(host):
    """True when `host` is an IPv4 or IPv6 address, not a name: it needs no lookup."""
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


async def addrinfo(host, port, socktype, dns, wlan=None, log=print):
    """socket.getaddrinfo(host, port, 0, socktype)[0], the event loop running meanwhile: an
    address directly, a name through resolve(). DnsError (E_DNS) when no resolver gave an
    address, OSError on a socket error."""
    import socket
    try:
        if not is_address(host):
            host = (await resolve(host, dns, wlan, log))[0]
        return socket.getaddrinfo(host, port, 0, socktype)[0]
    finally:
        # this module and the codec go once the lookup is done (this call still ends
        # normally): the callers need not know what a lookup loads
        from ppmid.modules import unload
        unload("ppmid.dns_lookup", "ppmid.dns", "ppmid.modules")


async def resolve(name, dns, wlan=None, log=print, sleep=sleep_ms):
    """(IPv4 address, TTL s) of `name`, asked of the resolvers in turn (see above). dns: the
    config's dns settings (servers, port, timeout_ms). DnsError when none gave one; at
    once when one says the name does not exist (NXDOMAIN: another would say the same)."""
    from ppmid.dns import DnsError
    dns = dns or {"servers": [], "port": 53, "timeout_ms": 1000}  # None: config.py's defaults
    servers = dns["servers"] or (wlan.dns_servers() if wlan is not None else [])
    if not servers:
        raise DnsError("no DNS resolver to ask for %s: none in dns.servers and none from DHCP" % name)
    why = None
    for r in range(_ROUNDS):
        for server in servers:
            try:
                got = await _ask(name, server, dns["port"], dns["timeout_ms"] << r, wlan, log, sleep)
            except OSError as exc:
                why = "%s: %r" % (server, exc)
                continue
            except PpmidError as exc:  # ppmid.dns's DnsError, told by its code and not its
                # class: another lookup's end unloads ppmid.dns, the next _ask loads it again,
                # and its DnsError is then a class of its own (review_w5-5)
                if exc.code != "E_DNS" or exc.rcode == _NXDOMAIN:   # (ppmid.dns.E_DNS)
                    raise
                why = "%s: %s" % (server, exc.message)
                continue
            if got is not None:
                return got
            why = "%s: no answer within %d ms" % (server, dns["timeout_ms"] << r)
        if log is not None:
            log("PPMID dns: %s: no usable answer yet (%s)" % (name, why))
    raise DnsError("no address for %s from %s (last: %s)" % (name, ", ".join(servers), why))


async def _ask(name, server, port, timeout_ms, wlan, log, sleep):
    """(address, TTL) from one resolver, None when it gave no answer within timeout_ms.
    A datagram from another address, or whose id is not this query's (a late answer to an
    earlier one, a forgery), is ignored and the wait goes on; a refused answer from the
    resolver itself raises DnsError (the next resolver is asked)."""
    import select
    import socket
    from os import urandom
    from ppmid import dns
    ai = socket.getaddrinfo(server, port, 0, socket.SOCK_DGRAM)[0]
    addr = ai[-1]
    sock = socket.socket(ai[0], ai[1], ai[2])
    if wlan is not None:
        wlan.track(sock)
    try:
        sock.setblocking(False)
        r = urandom(2)
        qid = r[0] << 8 | r[1]
        sock.sendto(dns.query(name, qid), addr)
        t0 = ticks_ms()
        quiet = False
        # recvfrom(512) allocates its 512 bytes before it finds nothing there: ask the
        # poller first, so that 50 polls a second make no garbage
        ready = select.poll()
        ready.register(sock, select.POLLIN)
        while True:
            data = None
            if ready.poll(0):
                try:
                    data, src = sock.recvfrom(512)  # up to 512 bytes: DNS over UDP (RFC 1035 4.2.1)
                except OSError as exc:
                    if exc.args[0] != _EAGAIN:
                        raise
            if data is not None:
                if src == addr and len(data) >= 2 and (data[0] << 8 | data[1]) == qid:
                    return dns.answer(data, qid, name)
                if not quiet and log is not None:  # one line per query: a flood must not flood the console
                    log("PPMID dns: ignored a datagram for %s: %s" % (
                        name, "not from %s" % server if src != addr else "not this query's id"))
                    quiet = True
            if ticks_diff(ticks_ms(), t0) >= timeout_ms:
                return None
            # after an ignored datagram only a yield (the next may be the answer), but a
            # yield still: a stream of forged ones must neither starve the loop nor outlast
            # timeout_ms
            await sleep(_POLL_MS if data is None else 0)
    finally:
        if wlan is not None:
            wlan.untrack(sock)
        sock.close()
