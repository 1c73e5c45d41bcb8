# General Block Transfer (GBT) for GBCS messages larger than the tunnel's transfer size.
# A GBT block is the `DD 09` form: a routing header (CRA, counter, originator, recipient,
# message code copied from the message's own header) and a GBT header (E0, block control,
# block number from 1, block number ack, block data). Concatenating the block data in block
# number order gives back the original message. Nothing is decrypted or re-signed.
from ppmid.gbcs.message import decode, GbcsError, FORM_GBT, TAG_GENERAL_CIPHERING, TAG_GBT
from ppmid.gbcs import build

DEFAULT_TRANSFER_SIZE = 1500   # GBCS tunnel: maximum incoming transfer size
LAST_BLOCK = 0x80
STREAMING = 0x40
BLOCK_OVERHEAD = 32            # bytes charged per held block on top of its data (memory bound)

E_GBT_NOT_BLOCK = "E_GBT_NOT_BLOCK"          # fed something that is not a DD 09 block
E_GBT_BLOCK_SIZE = "E_GBT_BLOCK_SIZE"        # split: block size too small / too many blocks
E_GBT_MEMORY = "E_GBT_MEMORY"                # reassembly would exceed the memory bound
E_GBT_TIMEOUT = "E_GBT_TIMEOUT"              # a message's blocks stopped arriving
E_GBT_INCONSISTENT = "E_GBT_INCONSISTENT"    # blocks of one message disagree


class GbtError(GbcsError):
    pass


def _prefix(cra, counter, originator, recipient, message_code):
    # DD, transaction-id, titles, empty date-time, other-information (message code), empty key-info
    return (bytes((TAG_GENERAL_CIPHERING,)) + build.transaction_header(cra, counter, originator, recipient)
            + bytes((2, (message_code >> 8) & 0xFF, message_code & 0xFF, 0)))


def _block(prefix, block_number, data, last, block_ack, window, streaming, security_control):
    n = len(data)
    dlen = len(build.encode_length(n))
    out = bytearray(len(prefix) + len(build.encode_length(11 + dlen + n)) + 11 + dlen + n)
    _block_into(out, 0, prefix, block_number, data, last, block_ack, window, streaming, security_control)
    return bytes(out)


def _block_into(out, at, prefix, block_number, data, last, block_ack, window, streaming, security_control):
    # writes the block into out from index at; returns the index after it
    if not 0 <= block_number <= 0xFFFF or not 0 <= block_ack <= 0xFFFF:
        raise GbtError(E_GBT_BLOCK_SIZE, "block numbers are 16-bit: %d / %d" % (block_number, block_ack))
    control = (LAST_BLOCK if last else 0) | (STREAMING if streaming else 0) | (window & 0x3F)
    dlen = build.encode_length(len(data))
    length = build.encode_length(5 + 6 + len(dlen) + len(data))
    p = at + len(prefix)
    out[at:p] = prefix
    out[p:p + len(length)] = length
    p += len(length)
    out[p] = security_control          # security control, then a zero invocation counter
    out[p + 1:p + 5] = b"\0\0\0\0"
    out[p + 5] = TAG_GBT
    out[p + 6] = control
    out[p + 7] = block_number >> 8
    out[p + 8] = block_number & 0xFF
    out[p + 9] = block_ack >> 8
    out[p + 10] = block_ack & 0xFF
    p += 11
    out[p:p + len(dlen)] = dlen
    p += len(dlen)
    out[p:p + len(data)] = data
    return p + len(data)


def build_block(cra, counter, originator, recipient, message_code, block_number, data,
                last=False, block_ack=0, window=1, streaming=False, security_control=0):
    """One GBT block (bytes). An empty `data` makes an acknowledgement block."""
    return _block(_prefix(cra, counter, originator, recipient, message_code), block_number, data,
                  last, block_ack, window, streaming, security_control)


def block_overhead(data_len):
    """Bytes a GBT block adds around `data_len` bytes of data."""
    return 34 + 11 + len(build.encode_length(data_len)) + len(build.encode_length(data_len + 11 + 3))


def split(message, block_data_size, window=1, security_control=0):
    """Split a DD00/DF message into GBT blocks of at most block_data_size data bytes each.
    Returns an iterator of bytes (one block at a time, so only one block is built at once);
    the routing header copies the message's own header. Checks happen before the first block."""
    return _split(message, block_data_size, window, security_control)[1]


def _split(message, block_data_size, window=1, security_control=0, into=None, at=0):
    # (number of blocks, iterator of them)
    msg = decode(message)
    if msg.form == FORM_GBT:
        raise GbtError(E_GBT_NOT_BLOCK, "cannot split a GBT block; split the whole message")
    if block_data_size < 1:
        raise GbtError(E_GBT_BLOCK_SIZE, "block data size must be at least 1, not %d" % block_data_size)
    n = len(msg.buf)
    count = (n + block_data_size - 1) // block_data_size
    if count > 0xFFFF:
        raise GbtError(E_GBT_BLOCK_SIZE, "%d blocks needed: more than 65535" % count)
    prefix = _prefix(msg.cra, msg.counter, msg.originator, msg.recipient, msg.message_code)
    if into is not None:
        return count, _blocks_into(into, at, prefix, msg.buf, block_data_size, count, window, security_control)
    return count, _blocks(prefix, msg.buf, block_data_size, count, window, security_control)


def _blocks(prefix, buf, size, count, window, security_control):
    for i in range(count):
        yield _block(prefix, i + 1, buf[i * size:(i + 1) * size], i == count - 1, 0, window, False,
                     security_control)


def _blocks_into(out, at, prefix, buf, size, count, window, security_control):
    mv = memoryview(out)
    for i in range(count):
        end = _block_into(out, at, prefix, i + 1, buf[i * size:(i + 1) * size], i == count - 1, 0, window,
                          False, security_control)
        yield mv[at:end]


def split_for_transfer(message, transfer_size=DEFAULT_TRANSFER_SIZE):
    """[message] if it fits the tunnel's transfer size, else GBT blocks (an iterator) that each
    fit it."""
    if len(message) <= transfer_size:
        return [bytes(message)]
    return blocks_for_transfer(message, transfer_size)[1]


def blocks_for_transfer(message, transfer_size=DEFAULT_TRANSFER_SIZE, into=None, at=0):
    """split_for_transfer for a sender that must know how many pieces there are before the
    first goes out, but should hold only one at a time: (count, iterator).
    into: a bytearray of at least at + transfer_size bytes that every block is built in, from
    index at (room for the sender's own header before it), one after the other: the
    iterator then gives a memoryview of that block in into, valid until the next is taken,
    and the send allocates no block."""
    if len(message) <= transfer_size:
        return 1, iter((bytes(message),))
    size = transfer_size - block_overhead(transfer_size)
    if size < 1:
        raise GbtError(E_GBT_BLOCK_SIZE, "transfer size %d leaves no room for block data" % transfer_size)
    while size + 1 + block_overhead(size + 1) <= transfer_size:
        size += 1  # a smaller block may use a shorter length form
    if into is not None and len(into) < at + transfer_size:
        raise GbtError(E_GBT_BLOCK_SIZE, "a buffer of %d bytes cannot hold a %d-byte block at %d" % (len(into), transfer_size, at))
    return _split(message, size, into=into, at=at)


def build_ack(block, block_number=1, window=1):
    """Acknowledgement of a received block: no data, block_ack = that block's number, routing
    header with originator and recipient swapped (it travels back to the sender)."""
    m = block if hasattr(block, "block_ack") else decode(block)
    if m.form != FORM_GBT:
        raise GbtError(E_GBT_NOT_BLOCK, "only a GBT block can be acknowledged")
    return build_block(m.cra, m.counter, m.recipient, m.originator, m.message_code, block_number, b"",
                       block_ack=m.block_number, window=window)


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
    arriving for timeout_ms. Keyed by (originator, recipient, counter). now_ms: a monotonic
    millisecond clock that does not wrap (the caller accumulates ticks_diff on a board)."""

    def __init__(self, max_bytes=8192, timeout_ms=30000):
        self.max_bytes = max_bytes
        self.timeout_ms = timeout_ms
        self.held = 0
        self._pending = {}
        self.acks = {}        # key -> highest block number acknowledged to us (ack blocks)
        self.timed_out = []   # GbtErrors of messages expired inside feed() (last 8 kept)
        self._done = {}       # key -> completion time: late duplicates of a completed message

    def pending(self):
        return len(self._pending)

    def _drop(self, key):
        p = self._pending.pop(key, None)
        if p is not None:
            self.held -= p.held

    def expire(self, now_ms):
        """Drop messages idle for timeout_ms; returns a GbtError(E_GBT_TIMEOUT) per message."""
        out = []
        for key in list(self._done):
            if now_ms - self._done[key] >= self.timeout_ms:
                del self._done[key]
        for key in list(self._pending):
            p = self._pending[key]
            if now_ms - p.touched >= self.timeout_ms:
                self._drop(key)
                upto = p.last or (max(p.blocks) if p.blocks else 0)
                missing = ",".join(str(i) for i in range(1, upto + 1) if i not in p.blocks)
                if not p.last:
                    missing = (missing + "," if missing else "") + "the last block"
                out.append(GbtError(E_GBT_TIMEOUT, "GBT message (counter %d) timed out after %d ms; missing "
                                    "block(s): %s" % (_counter_of(key), self.timeout_ms, missing)))
        return out

    def feed(self, block_buf, now_ms):
        """Add one block. Returns the complete message (bytes) when its last missing block
        arrives, else None. Raises GbcsError (bad block) or GbtError."""
        for exc in self.expire(now_ms):
            self.timed_out.append(exc)
            if len(self.timed_out) > 8:
                self.timed_out.pop(0)
        m = decode(block_buf)
        if m.form != FORM_GBT:
            raise GbtError(E_GBT_NOT_BLOCK, "expected a GBT block (DD 09), got a %s message" % m.form)
        key = bytes(m.originator) + bytes(m.recipient) + bytes(m.counter_bytes)
        data = m.block_data
        if len(data) == 0:  # acknowledgement
            if m.block_ack > self.acks.get(key, 0):
                self.acks[key] = m.block_ack
            return None
        if key in self._done:
            return None  # a late duplicate of a message already delivered
        num = m.block_number
        if num == 0:
            raise GbtError(E_GBT_INCONSISTENT, "GBT block number 0 (numbers start at 1)")
        p = self._pending.get(key)
        if p is None:
            p = _Pending(m.cra, m.message_code, now_ms)
            self._pending[key] = p
        elif p.cra != m.cra or p.code != m.message_code:
            self._drop(key)
            raise GbtError(E_GBT_INCONSISTENT, "GBT blocks of one message disagree on CRA or message code")
        p.touched = now_ms
        if m.last_block:
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
                if oldest is None or self._done[k] < self._done[oldest]:
                    oldest = k
            del self._done[oldest]
        self._done[key] = now_ms
        try:
            inner = decode(whole)
        except GbcsError as exc:
            raise GbtError(E_GBT_INCONSISTENT, "reassembled message is malformed: " + exc.message)
        if (inner.form == FORM_GBT or inner.counter != m.counter or inner.message_code != m.message_code
                or bytes(inner.originator) != bytes(m.originator) or bytes(inner.recipient) != bytes(m.recipient)):
            raise GbtError(E_GBT_INCONSISTENT, "reassembled message does not match its GBT routing header")
        return whole


def _counter_of(key):
    v = 0
    for x in key[16:24]:
        v = (v << 8) | x
    return v

