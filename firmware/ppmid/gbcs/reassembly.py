# Reassembly of incoming GBT blocks (the receiving half of gbcs/gbt.py): only loaded when
# the Communications Hub sends a message in blocks, so that a gateway that only sends large
# commands never holds it (docs/memory.md).
from micropython import const

from ppmid.clock import ticks_diff
from ppmid.gbcs.message import decode, GbcsError
from ppmid.gbcs.gbt import (GbtError, BLOCK_OVERHEAD, E_GBT_NOT_BLOCK, E_GBT_MEMORY, E_GBT_TIMEOUT,
                            E_GBT_INCONSISTENT)


# A GBT block's fields (None for a message of another form), read by the gateway only here:
# in message.py they were held by every gateway from boot. Host tools and tests read them
# as msg.block_number and the others (ppmid.gbcs.message_fields hands them over).
def gbt_tag_at(m):
    # where a GBT block's E0 tag lies in m.buf (the header position in Message._k)
    return (m._k >> 2) & 0x3F


def last_block(m):
    return bool(m.buf[gbt_tag_at(m) + 1] & 0x80) if m.is_gbt else None


def block_number(m):
    g = gbt_tag_at(m)
    return (m.buf[g + 2] << 8) | m.buf[g + 3] if m.is_gbt else None


def block_ack(m):
    g = gbt_tag_at(m)
    return (m.buf[g + 4] << 8) | m.buf[g + 5] if m.is_gbt else None


def block_data(m):
    if not m.is_gbt:
        return None
    c = m._k >> 8
    return m.buf[c:c + m._n]


# Bytes charged per partial message on top of its blocks: its _Pending, its blocks dict, its
# 24-byte key and its slot in _pending take about 190 bytes of heap on a 32-bit port
# (measured on the plain 32-bit unix build, review 90 F2). Charged when it is created, so
# that partials of one byte each cannot hold five times the bound.
PENDING_OVERHEAD = 192
_MISSING_NAMED = 8    # missing block numbers named in a timeout's sentence, then a count
_S_GBT_LOST = const(32)   # the sentence of that number in zigbee/han_errors.py
# where the HAN link counts a message lost so in the counters it hands over (a list of
# ints): the place of "rx_gbt_timeouts" in zigbee/han_counters.py's HAN
_C_RX_GBT_TIMEOUTS = const(22)


class _Pending:
    def __init__(self, cra, code, now_ms):
        self.cra = cra
        self.code = code
        self.blocks = {}      # block number -> bytes
        self.last = 0         # number of the last block, once seen
        self.held = 0         # bytes charged against the memory bound
        self.touched = now_ms


class Reassembler:
    """Collects GBT blocks (any order, duplicates ignored, also late duplicates of a message
    delivered less than timeout_ms ago) into whole messages, holding at most
    max_bytes (block data + BLOCK_OVERHEAD per block) and dropping a message whose blocks stop
    arriving for timeout_ms. Keyed by (originator, recipient, counter). Each partial message
    is charged PENDING_OVERHEAD more, and a block numbered past what max_bytes could ever
    hold is refused. now_ms: ticks_ms(), compared through ticks_diff, so its wrap is harmless
    (a stamp reading negative, more than half the tick period old, counts as stale)."""

    def __init__(self, max_bytes=8192, timeout_ms=30000, logs=None, counters=None):
        self.max_bytes = max_bytes
        self.timeout_ms = timeout_ms
        self.held = 0
        self._pending = {}
        self.timed_out = []   # GbtErrors of messages expired inside feed() (last 8 kept)
        # the HAN link's (zigbee/han.py): its sentence logger and counters (a list of ints),
        # to say and count a message expired inside feed() instead of keeping it in
        # timed_out. Here and not in the link, whose code is resident: this module loads
        # with the first GBT block
        self._logs = logs
        self._counters = counters
        self._done = {}       # key -> completion time: late duplicates of a completed message

    def pending(self):
        return len(self._pending)

    def _stale(self, now_ms, then_ms):
        return not 0 <= ticks_diff(now_ms, then_ms) < self.timeout_ms

    def _drop(self, key):
        p = self._pending.pop(key, None)
        if p is not None:
            self.held -= p.held

    def expire(self, now_ms):
        """Drop messages idle for timeout_ms; returns a GbtError(E_GBT_TIMEOUT) per message."""
        out = []
        for key in list(self._done):
            if self._stale(now_ms, self._done[key]):
                del self._done[key]
        for key in list(self._pending):
            p = self._pending[key]
            if self._stale(now_ms, p.touched):
                self._drop(key)
                upto = p.last or (max(p.blocks) if p.blocks else 0)
                # every held key is in 1..upto (blocks past the last are refused), and a
                # message may miss up to max_bytes // 33 blocks: the first few are named
                missing = []
                for i in range(1, upto + 1):
                    if i not in p.blocks:
                        if len(missing) == _MISSING_NAMED:
                            missing.append("... (%d missing)" % (upto - len(p.blocks)))
                            break
                        missing.append(str(i))
                missing = ",".join(missing)
                if not p.last:
                    missing = (missing + "," if missing else "") + "the last block"
                out.append(GbtError(E_GBT_TIMEOUT, "GBT message (counter %d) timed out after %d ms; missing "
                                    "block(s): %s" % (_counter_of(key), self.timeout_ms, missing)))
        return out

    def feed(self, block_buf, now_ms):
        """Add one block. Returns the complete message (bytes) when its last missing block
        arrives, else None. Raises GbcsError (bad block) or GbtError."""
        for exc in self.expire(now_ms):
            if self._logs is not None:
                self._counters[_C_RX_GBT_TIMEOUTS] += 1
                self._logs(_S_GBT_LOST, exc)   # "incoming GBT message lost: %s"
                continue
            self.timed_out.append(exc)
            if len(self.timed_out) > 8:
                self.timed_out.pop(0)
        m = decode(block_buf)
        if not m.is_gbt:
            # (m.form loads message_fields: the HAN hands over DD 09 only, so not on a board)
            raise GbtError(E_GBT_NOT_BLOCK, "expected a GBT block (DD 09), got a %s message" % m.form)
        key = bytes(m.originator) + bytes(m.recipient) + bytes(m.counter_bytes)
        data = block_data(m)
        if len(data) == 0:
            # an acknowledgement: nothing is kept, since our sender does not wait for them
            # (each block's delivery is the APS confirmation, zigbee/han.py)
            return None
        if key in self._done:
            return None  # a late duplicate of a message already delivered
        num = block_number(m)
        if num == 0:
            raise GbtError(E_GBT_INCONSISTENT, "GBT block number 0 (numbers start at 1)")
        if num > (self.max_bytes - PENDING_OVERHEAD) // (BLOCK_OVERHEAD + 1):
            # a message of that many blocks, of a byte each, would not fit the bound: it
            # can never complete, and a number this far out is no guide to what is missing
            self._drop(key)
            raise GbtError(E_GBT_MEMORY, "GBT block number %d: a message of that many blocks needs more "
                           "than %d bytes; message dropped" % (num, self.max_bytes))
        p = self._pending.get(key)
        if p is None:
            if self.held + PENDING_OVERHEAD > self.max_bytes:
                raise GbtError(E_GBT_MEMORY, "GBT reassembly needs more than %d bytes; message dropped"
                               % self.max_bytes)
            p = _Pending(m.cra, m.message_code, now_ms)
            p.held = PENDING_OVERHEAD
            self.held += PENDING_OVERHEAD
            self._pending[key] = p
        elif p.cra != m.cra or p.code != m.message_code:
            self._drop(key)
            raise GbtError(E_GBT_INCONSISTENT, "GBT blocks of one message disagree on CRA or message code")
        p.touched = now_ms
        if last_block(m):
            if p.last and p.last != num:
                self._drop(key)
                raise GbtError(E_GBT_INCONSISTENT, "two last blocks (%d and %d)" % (p.last, num))
            if p.blocks and max(p.blocks) > num:
                self._drop(key)
                raise GbtError(E_GBT_INCONSISTENT, "block %d follows the last block %d" % (max(p.blocks), num))
            p.last = num
        elif p.last and num >= p.last:
            self._drop(key)
            raise GbtError(E_GBT_INCONSISTENT, "block %d follows the last block %d" % (num, p.last))
        old = p.blocks.get(num)
        if old is not None:
            if old != bytes(data):
                self._drop(key)
                raise GbtError(E_GBT_INCONSISTENT, "block %d received twice with different data" % num)
            return None  # duplicate
        cost = len(data) + BLOCK_OVERHEAD
        if self.held + cost > self.max_bytes:
            self._drop(key)
            raise GbtError(E_GBT_MEMORY, "GBT reassembly needs more than %d bytes; message dropped"
                           % self.max_bytes)
        p.blocks[num] = bytes(data)
        p.held += cost
        self.held += cost
        if not p.last or len(p.blocks) != p.last:
            return None
        whole = b"".join(p.blocks[i] for i in range(1, p.last + 1))
        self._drop(key)
        if len(self._done) >= 16:  # bounded: forget the oldest
            oldest = None
            for k in self._done:
                if oldest is None or ticks_diff(self._done[k], self._done[oldest]) < 0:
                    oldest = k
            del self._done[oldest]
        self._done[key] = now_ms
        try:
            inner = decode(whole)
        except GbcsError as exc:
            raise GbtError(E_GBT_INCONSISTENT, "reassembled message is malformed: " + exc.message)
        if (inner.is_gbt or inner.counter != m.counter or inner.message_code != m.message_code
                or bytes(inner.originator) != bytes(m.originator) or bytes(inner.recipient) != bytes(m.recipient)):
            raise GbtError(E_GBT_INCONSISTENT, "reassembled message does not match its GBT routing header")
        return whole


def _counter_of(key):
    v = 0
    for x in key[16:24]:
        v = (v << 8) | x
    return v

