# Stand-in `socket` for the heap gauge: the webassembly port has no network. A socket's
# other end is a peer the harness serves on a port (serve(): the gauge's broker, SNTP
# server and DNS resolver, bench/heap32/h32.py); with nothing served there the connection
# fails as with no route, as before the gauge had peers (the rows without Wi-Fi).
#
# The port's asyncio has no I/O poller either (no core._io_queue, no streams): the part
# of one the firmware calls on a board (queue_read/queue_write, ppmid.mqtt.client's TLS
# stream and ppmid.mqtt.handshake's dial) is here, for these sockets only, and installed
# at import, before the gauge's baseline, as the port's own would be (in the unix port's
# runs, bench/heap32/frozen32.py, in place of its own poller, which cannot see them).
import io
from errno import EINPROGRESS

import asyncio
from asyncio import core
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

AF_INET = 2
SOCK_STREAM = 1
SOCK_DGRAM = 2
_EAGAIN = 11   # as lwIP and Linux number it: the firmware compares with 11 (ppmid.sntp)
_POLLIN = 1
_POLLOUT = 4
_MP_STREAM_POLL = 3

_peers = {}   # port: peer (h32's), given each socket that reaches it
# A file the peer sends (a command's PUBLISH) arrives in TCP segments, the next one a
# millisecond after the last was read, as over a network: the reader's buffer for it is
# live between the event loop's turns, where the exact samples are taken. Delivered at
# once, the whole PUBLISH was read and handled in one turn, and once the send no longer
# held the body (docs/memory.md, "Session 12, the 4 KB command's transient") no exact
# sample saw the command's bytes (tests/test_heap32.py checks that the peak does).
_SEGMENT = 1460


def serve(port, peer):
    """Have `peer` answer on `port`: peer.opened(sock) for a connection (TCP),
    peer.received(sock, data, addr) for each write or datagram sent to it."""
    _peers[port] = peer


def getaddrinfo(host, port, af=0, socktype=0, *a):
    # addresses only: a name goes through the firmware's own lookup (ppmid.dns_lookup),
    # which calls this with the address it found
    parts = host.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise OSError(-2)
    return [(AF_INET, socktype or SOCK_STREAM, 0, "", (host, port))]


class socket(io.IOBase):
    def __init__(self, af=AF_INET, kind=SOCK_STREAM, proto=0):
        self.kind = kind
        self.peer = None
        self.addr = None
        self._rx = []        # what the peer sent: bytes, or (file, n) read on demand
        self._from = None    # a datagram's source
        self._task = None    # the task waiting to read (queue_read)
        self._next = None    # ticks_ms when a file's next segment is there (None: now)
        self.closed = False

    # -- the peer's side
    def deliver(self, data, src=None):
        """The peer sends `data` (bytes, or (open file, n bytes) read straight into the
        reader's buffer: no copy of it here) to this socket, waking its reader."""
        self._rx.append(data)
        self._from = src
        t = self._task
        if t is not None:
            # its reader runs a millisecond later, as after a network's round trip: the
            # event loop first goes back to node, where the port collects (docs/memory.md);
            # woken at once, a chain of such exchanges ran as one call from node, and the
            # samples between its steps held all of that call's garbage
            self._task = None
            t.data = None
            core._task_queue.push(t, ticks_add(ticks_ms(), 1))

    # -- what the firmware calls
    def setsockopt(self, *a):
        pass

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        peer = _peers.get(addr[1])
        if peer is None:
            raise OSError(113)  # EHOSTUNREACH
        self.peer = peer
        self.addr = addr
        peer.opened(self)
        raise OSError(EINPROGRESS)   # non-blocking, as lwIP answers

    def write(self, buf):
        if self.closed or self.peer is None:
            raise OSError(128 if self.closed else 107)
        self.peer.received(self, buf, self.addr)
        return len(buf)

    send = write

    def _waiting(self):
        # a file's next segment is not there yet
        if self._next is not None and ticks_diff(self._next, ticks_ms()) > 0:
            return True
        self._next = None
        return False

    def readinto(self, buf):
        # non-blocking: None when nothing is there (a TLS socket's answer too)
        if not self._rx:
            if self.closed:
                return 0
            return None
        if self._waiting():
            return None
        head = self._rx[0]
        if isinstance(head, tuple):
            f, n = head
            k = f.readinto(memoryview(buf)[:min(len(buf), n, _SEGMENT)])
            n -= k
            if n:
                self._rx[0] = (f, n)
                self._next = ticks_add(ticks_ms(), 1)
            else:
                f.close()
                self._rx.pop(0)
            return k
        k = min(len(buf), len(head))
        buf[:k] = head[:k]
        if k < len(head):
            self._rx[0] = head[k:]
        else:
            self._rx.pop(0)
        return k

    def sendto(self, buf, addr):
        peer = _peers.get(addr[1])
        if peer is not None:
            peer.received(self, buf, addr)

    def recvfrom(self, n):
        if not self._rx:
            raise OSError(_EAGAIN)
        return self._rx.pop(0)[:n], self._from

    def ioctl(self, req, arg):
        # select.poll on this socket (ppmid.dns_lookup asks before recvfrom)
        if req == _MP_STREAM_POLL:
            return (arg & _POLLIN if self._rx else 0) | (arg & _POLLOUT)
        return 0

    def close(self):
        if not self.closed:
            self.closed = True
            if self.peer is not None:
                self.peer.closed(self)
            self.deliver(b"")

    def remove(self, task):
        # asyncio cancels a task waiting here (Task.cancel calls its data's remove)
        if self._task is task:
            self._task = None


class _IOQueue:
    # the poller for this module's sockets only: they are woken by deliver(), and the
    # gauge has no other socket or stream to poll
    def wait_io_event(self, dt):
        # a port whose loop waits here between tasks (unix: frozen32.py's runs)
        sleep_ms(dt if dt >= 0 else 1)

    def queue_read(self, s):
        s = getattr(s, "sock", s)   # a stand-in SSLSocket (standins/ssl.py): its socket
        if s.closed or (s._rx and not s._waiting()):
            core._task_queue.push(core.cur_task)
        elif s._rx:  # a file's next segment: there a millisecond after the last
            core._task_queue.push(core.cur_task, s._next)
        else:
            s._task = core.cur_task
            core.cur_task.data = s

    def queue_write(self, s):
        # the peers take everything at once: always writable
        core._task_queue.push(core.cur_task)


core._io_queue = _IOQueue()
# asyncio.StreamReader/StreamWriter are h32's (the UARTs' stand-ins): the firmware wraps a
# plain socket in a StreamReader only for a broker without TLS (ppmid.mqtt.handshake), and
# the gauge's config has certificates
