# The relay journal: an append-only file on the board's flash (LittleFS) holding one record
# per state change of every accepted command, plus the anti-replay counters. RAM keeps only
# an index of the live commands (offsets into the file); GBCS bodies are read back from
# flash when they are needed. Format and recovery policy: docs/relay.md.
#
# Record frame (all integers big-endian):
#   A7 | type u8 | length u16 | payload | crc32(type, length, payload) u32
# A torn or corrupt tail fails the length or CRC check: the scan stops there, and the
# journal is rewritten (compacted) before anything else is appended to it.
import binascii
import hashlib
import os
import struct
from micropython import const

from ppmid.errors import PpmidError, E_BUSY

E_JOURNAL = "E_JOURNAL"

MAGIC = b"PPMIDJ1"
_SYNC = const(0xA7)
_HEAD = const(4)
_TAIL = const(4)
# A spent triple is kept as 8 bytes of its SHA-256, in the ring and as the key of its record
# on flash (no other counter key is 8 bytes long: the pairs' are 33 and 18): the ring is 512
# bytes, not 1,536, and a triple never spent is taken for one with odds of about 64 in 2**64
_SPENT_W = const(8)
_NO_EXPIRY = const(0xFFFFFFFF)
_ENOSPC = const(28)
MAX_BYTES = const(32768)   # the file's default bound

# record types
T_HEADER = const(0x48)    # 'H' magic, next sequence number
_T_ACCEPT = const(0x41)    # 'A' a command accepted (carries the GBCS body)
_T_SENDING = const(0x53)   # 'S' about to hand the bytes to the HAN link
_T_UNSENT = const(0x55)    # 'U' the HAN link refused before taking the bytes: back to the queue
_T_RESPONSE = const(0x52)  # 'R' correlated response (carries its GBCS body)
_T_TIMEOUT = const(0x54)   # 'T' response budget exceeded
_T_FAILED = const(0x46)    # 'F' ended without a response (code)
_T_DONE = const(0x44)      # 'D' final status acknowledged by the broker: forget the command
_T_COUNTER = const(0x43)   # 'C' anti-replay counter key -> value
_T_RESEND = const(0x51)    # 'Q' found sending at a restart: queued again (bounded resends)
_T_ALREADY = const(0x58)   # 'X' the meter refused the resent copy: it had executed the first
# 'U' and 'F' are written by relay/refusals.py (a send the HAN link refused, a failed
# command), 'Q' and 'X' by
# relay/resend.py: rare records, whose code the running app need not hold

# command states (Entry.state)
QUEUED = const(0)
SENDING = const(1)
ANSWERED = const(2)
TIMED_OUT = const(3)
FAILED = const(4)
ALREADY_EXECUTED = const(5)

VIAS = ("mqtt", "nfc-phone", "nfc-tag", "serial")  # append only: stored as the index
_VIA_TOPUP = const(0x80)  # in the accept record's via byte: a UTRN top-up, not a GBCS command

# A: seq, expires, accepted_at, via, id_len | id | target 8 | originator 8 | counter 8 | gbcs
# (a top-up: via | 0x80, originator zero, counter = the PTUT, body = the 20 UTRN digits)
_ACCEPT_FMT = ">IIIBB"
_ACCEPT_FIXED = const(14)


class JournalError(PpmidError):
    pass


class Entry:
    """One live command in the RAM index. Bodies stay on flash (body_off/rsp_off)."""

    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, seq, id, via, expires, accepted_at, target, originator, counter):
        self.seq = seq
        self.id = id
        self.via = via
        self.expires = expires          # unix s or None
        self.accepted_at = accepted_at  # unix s
        self.target = target            # 8 bytes (recipient of the command)
        self.originator = originator    # 8 bytes
        self.counter = counter          # 8 bytes, as on the wire
        self.state = QUEUED
        self.deadline = 0               # unix s: end of the response budget (SENDING)
        self.late_until = 0             # unix s: a late response is still correlated
        self.late = False
        self.error = None
        self.body_off = 0
        self.body_len = 0
        self.rsp_off = 0
        self.rsp_len = 0
        self.retries = 0
        self.resends = 0                # copies sent again after a restart found it sending
        self.published = None           # last status name the broker acknowledged (RAM only)
        self.topup = False              # a UTRN top-up (ppmid.relay.topups), not a GBCS command
        self.code = None                # its GBCS message code, which its response carries (None: a top-up)
        self.tail = 0                   # bytes of its latest state record (a compaction keeps it)

    def key(self):
        """Correlation key of the expected response: its originator is our target."""
        return bytes(self.target) + bytes(self.originator) + bytes(self.counter)


def _via_byte(via, topup):
    return (VIAS.index(via) if via in VIAS else 0) | (_VIA_TOPUP if topup else 0)


def response_key(originator, recipient, counter):
    return bytes(originator) + bytes(recipient) + bytes(counter)


def _put(f, rtype, parts):
    """Write one framed record to f part by part (a command's record is not first copied
    into one more buffer as large as the command); returns its length."""
    n = 0
    for p in parts:
        n += len(p)
    if n > 0xFFFF:
        raise JournalError(E_JOURNAL, "record of %d bytes is too large" % n)
    head = bytes((_SYNC, rtype, n >> 8, n & 0xFF))
    crc = binascii.crc32(head[1:])
    f.write(head)
    for p in parts:
        crc = binascii.crc32(p, crc)
        f.write(p)
    f.write(struct.pack(">I", crc & 0xFFFFFFFF))
    return n + _HEAD + _TAIL


def _sending_payload(e, deadline):
    # seq, deadline, retries, resends (older journals end after retries: resends 0)
    return struct.pack(">IIHB", e.seq, deadline, min(e.retries, 0xFFFF), min(e.resends, 0xFF))


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Journal:
    """Append-only journal in `root` (a directory on the flash filesystem).

    max_bytes bounds the file: compaction runs when an append would cross it and the
    compaction helps; accepting a new command needs `reserve` bytes left over after that, so
    the records that finish the commands already accepted always fit. Responses waiting for
    the broker can take the file past max_bytes (docs/relay.md "The journal"). max_live bounds
    the index (E_BUSY beyond)."""

    def __init__(self, root, max_bytes=MAX_BYTES, max_live=48, name="relay.jnl"):
        # the set-up and the open run once, at boot: their code is relay/journal_scan.py's
        # (set_up, which says what each attribute is), boot-only as the recovery scan
        from ppmid.relay.journal_scan import set_up
        set_up(self, root, max_bytes, max_live, name)

    # ---- open / recover --------------------------------------------------------------
    def open(self):
        """Mount-time recovery: read every intact record, rebuild the index, and compact
        (which drops a torn tail and finished commands). Returns the live entries in
        acceptance order. Its code is relay/journal_scan.py's (open_journal)."""
        from ppmid.relay.journal_scan import open_journal
        return open_journal(self)

    def entries(self):
        # in acceptance order (seq); a loop, not a sort key: one function less held
        live = self.live
        out = []
        for seq in sorted(live):
            out.append(live[seq])
        return out

    def _index(self, e):
        self.live[e.seq] = e
        self.by_id[e.id] = e

    def _unindex(self, e):
        self.live.pop(e.seq, None)
        if self.by_id.get(e.id) is e:
            del self.by_id[e.id]

    # ---- writing ---------------------------------------------------------------------
    def _handle(self):
        if self._f is None:
            self._f = open(self.path, "r+b")
            self._f.seek(0, 2)
        return self._f

    def sync(self):
        """Make lazy records durable now (the relay calls this when idle)."""
        if self.lazy and self._f is not None:
            self._torn = True
            self._f.flush()
            self._torn = False
            self.syncs += 1
            self.lazy = 0

    def _append(self, rtype, parts, need_reserve=False, sync=True, e=None):
        """Append one record (compacting first when that makes room); with sync, it and
        every lazy record before it are durable once this returns. e: the command whose
        state record this is (it supersedes e's previous one). Returns the offset of its
        payload."""
        n = _HEAD + _TAIL
        for p in parts:
            n += len(p)
        limit = self.max_bytes - (self.reserve if need_reserve else 0)
        if self._torn or self.size + n > limit:
            # compact only when that helps (review 84 F1): for an accept, when the copy makes
            # room for it; for a record of a command in hand (never refused: it may go past
            # the bound), when the copy leaves an eighth of the bound free, so that a journal
            # held near its bound by answers waiting for the broker is not rewritten for
            # every record; for any, when the copy is at most half the file (compactions
            # then write no more than the records they drop)
            room = limit + self.dead - self.size - n
            if self._torn or room >= (0 if need_reserve else self.reserve // 2) or self.dead * 2 >= self.size:
                try:
                    self.compact()
                except OSError as exc:
                    # no room on the flash for the copy: the record goes without it (an
                    # accept is refused below); a torn file must be rewritten first
                    if self._torn or exc.args[0] != _ENOSPC:
                        raise
            if need_reserve and self.size + n > limit:
                raise JournalError(E_BUSY, "journal full (%d bytes live): try later" % (self.size - self.dead))
        f = self._handle()
        f.seek(0, 2)
        off = self.size
        # torn until the record is whole and (with sync) on flash: ENOSPC or EIO part way
        # leaves a partial record that self.size does not count, so every later offset
        # would fall short of its bytes (and the next boot's scan would stop at the torn
        # record). A torn journal is rewritten from RAM before its next append.
        self._torn = True
        written = _put(f, rtype, parts)
        if sync:
            f.flush()  # LittleFS: lfs_file_sync
            self.syncs += 1
            self.lazy = 0
        else:
            self.lazy += 1
        self._torn = False
        self.size += written
        self.bytes_written += written
        self.appends += 1
        if e is not None:
            self.dead += e.tail
            e.tail = n
        return off + _HEAD

    def accept(self, id, via, expires, accepted_at, target, originator, counter, gbcs, topup=False, code=None):
        """Journal a new command (topup: a UTRN top-up, gbcs then its digits; code: a GBCS
        command's message code, kept in RAM: the scan reads it from the body). Raises
        JournalError(E_BUSY) when the index or the file is full. Returns its Entry (state
        QUEUED)."""
        if len(self.live) >= self.max_live:
            raise JournalError(E_BUSY, "%d commands in hand already: try later" % len(self.live))
        idb = id.encode()
        seq = self.next_seq
        fixed = struct.pack(_ACCEPT_FMT, seq, _NO_EXPIRY if expires is None else expires,
                            accepted_at, _via_byte(via, topup), len(idb))
        e = Entry(seq, id, via, expires, accepted_at, bytes(target), bytes(originator), bytes(counter))
        e.topup = topup
        e.code = code
        # indexed first: the dicts' growth (a MemoryError on a cut-up heap) must come before
        # the record is on flash, after which the command is accepted (review 84 F2). A
        # compaction in _append skips it (body_off 0: not written yet)
        try:
            self._index(e)
            pay = self._append(_T_ACCEPT, (fixed, idb, e.target, e.originator, e.counter, gbcs), True)
        except BaseException:
            self._unindex(e)
            raise
        e.body_off = pay + _ACCEPT_FIXED + len(idb) + 24
        e.body_len = len(gbcs)
        self.next_seq = seq + 1
        return e

    def sending(self, e, deadline):
        self._append(_T_SENDING, (_sending_payload(e, deadline),), e=e)
        e.state = SENDING
        e.deadline = deadline

    def response(self, e, gbcs, late):
        pay = self._append(_T_RESPONSE, (struct.pack(">IB", e.seq, 1 if late else 0), gbcs), e=e)
        e.state = ANSWERED
        e.late = late
        e.rsp_off = pay + 5
        e.rsp_len = len(gbcs)

    # Lazy records (no sync of their own; the next synced record or sync() carries them):
    # losing one in a crash only repeats work that is safe to repeat: a timeout decided
    # again, a final status published again (receivers dedupe by id), a counter that
    # recovery commits again from the live command's accept record.
    def timeout(self, e, late_until):
        self._append(_T_TIMEOUT, (struct.pack(">IIB", e.seq, late_until, min(e.resends, 0xFF)),), sync=False, e=e)
        e.state = TIMED_OUT
        e.late_until = late_until

    def done(self, e):
        if e.seq not in self.live:
            return
        self._append(_T_DONE, (struct.pack(">I", e.seq),), sync=False)
        self._unindex(e)
        # its accept record, its latest state record and this one: the next compaction's
        self.dead += len(e.id) + e.body_len + e.tail + (_HEAD + _ACCEPT_FIXED + 24 + _TAIL + 12)

    def put_counter(self, key, value):
        if isinstance(key, str):
            key = key.encode()
        key = bytes(key)
        if len(key) > 255:
            raise JournalError(E_JOURNAL, "counter key too long")
        self._append(_T_COUNTER, (bytes((len(key),)), key, struct.pack(">Q", value)), sync=False)
        if key in self.counters:
            self.dead += len(key) + 17  # the key's previous record, as long as this one
        self.counters[key] = value

    def was_spent(self, key):
        """Whether the 24-byte (originator, recipient, counter) `key` is spent: its command
        ended unanswered (Journal.spend; review r4 R4-1); or `key` the triple's 8-byte digest
        (spent_digest), as the boot's scan reads them."""
        ring = self.spent
        if ring is None:
            return False
        if len(key) != _SPENT_W:
            key = spent_digest(key)
        end = min(self.spent_n, SPENT_KEEP) * _SPENT_W
        i = ring.find(key, 0, end)
        while i > 0 and i % _SPENT_W:   # a match across two slots is none
            i = ring.find(key, i + 1, end)
        return i >= 0

    # ---- reading bodies back ---------------------------------------------------------
    def _read(self, off, n):
        f = self._handle()
        f.seek(off)
        buf = f.read(n)
        f.seek(0, 2)
        if len(buf) != n:
            raise JournalError(E_JOURNAL, "journal short read at %d" % off)
        return buf

    def body(self, e):
        """The command's GBCS bytes, read back from flash."""
        return self._read(e.body_off, e.body_len)

    def response_body(self, e):
        return self._read(e.rsp_off, e.rsp_len) if e.rsp_len else b""

    def spend(self, e):
        """GBCS command e leaves unanswered (timed out, failed, already executed): its
        (originator, recipient, counter) is spent, refused E_REPLAY when offered again
        (relay.core _accept), so no command the gateway accepted is relayed twice, and it
        never feeds a floor: a forged counter the meter refused must not (review r4 R4-1).
        The newest SPENT_KEEP are kept as 8-byte digests (spent_digest), in one ring of
        bytes (no object per triple to cut the heap up), and on flash as counter records
        whose 8-byte key no other counter has (a compaction writes them oldest first). Here, not in a module loaded when needed:
        a gateway whose meter ever missed an answer would hold that module from its boot's
        scan on, and loading it at a spend failed on a cut-up heap."""
        d = spent_digest(e.originator + e.target + e.counter)
        if self.was_spent(d):
            return
        self._append(_T_COUNTER, (b"\x08", d, struct.pack(">Q", e.seq)), sync=False)
        # into the ring's oldest slot (journal_scan.py's _apply does the same at boot)
        if self.spent is None:
            self.spent = bytearray(_SPENT_W * SPENT_KEEP)
        i = self.spent_n % SPENT_KEEP * _SPENT_W
        self.spent[i:i + _SPENT_W] = d
        self.spent_n += 1
        if self.spent_n > SPENT_KEEP:
            self.dead += _HEAD + 17 + _TAIL   # the record of the slot it took

    # ---- compaction ------------------------------------------------------------------
    def compact(self):
        """Rewrite the journal with only the live commands and the counters, into a new
        file that replaces the old one by an atomic rename."""
        # the code is loaded for each compaction and dropped after it: it runs at open and
        # when an append would cross max_bytes, so the running gateway seldom needs it
        from ppmid.relay.journal_compact import rewrite
        try:
            rewrite(self)
        finally:
            from ppmid.modules import unload
            unload("ppmid.relay.journal_compact", "ppmid.modules")

    def close(self):
        """Close the file (syncing lazy records). A crash is a close that never happens."""
        if self._f is not None:
            self._f.close()
            self._f = None


# The validator's anti-replay counter store, kept in the journal: the relay commits a
# command's counter (Validator.commit_pair) only once its response record is on flash (the
# device answered: review_r2 R2-1), and re-commits answered live commands at recovery, so a
# crash between the two writes cannot reopen a counter; until then the counter is pending,
# held by the command's live accept record (docs/relay.md "Anti-replay counters"). Here,
# not in a module of its own (~1 KB of heap for one, on a 32-bit board: docs/memory.md).
# Bounded at PAIRS_KEEP pairs (relay/counter_floor.py, loaded when the bound is first
# crossed): a pair the store no longer holds reads as its recipient's floor.
PAIRS_KEEP = const(64)
# Spent triples kept (Journal.spend): a command that ended unanswered further back than
# this many others may be offered again; its envelope's expiry is the sender's guard
# (docs/relay.md "Anti-replay counters")
SPENT_KEEP = const(64)


def spent_digest(triple):
    return hashlib.sha256(triple).digest()[:_SPENT_W]


class JournalCounterStore:
    """get(key) -> int or None; put(key, int). Keys are bytes or str (stored as bytes)."""

    def __init__(self, journal):
        self.journal = journal

    def get(self, key):
        if isinstance(key, str):
            key = key.encode()
        key = bytes(key)
        counters = self.journal.counters
        v = counters.get(key)
        if v is None and len(key) == 33:
            # a "<ORIGINATOR>:<RECIPIENT>" pair not held: its recipient's floor
            v = counters.get(b"*" + key[16:])
        return v

    def put(self, key, value):
        """Anti-replay counters only go up: a lower or equal value is ignored (no write),
        which makes committing a command's counter again harmless."""
        old = self.get(key)
        if old is not None and value <= old:
            return
        self.journal.put_counter(key, value)
        if len(self.journal.counters) > PAIRS_KEEP:
            from ppmid.relay.counter_floor import bound
            bound(self.journal.counters, self.journal.put_counter, PAIRS_KEEP)
