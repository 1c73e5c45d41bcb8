# The journal's compaction, for Journal.compact: the live commands (with their latest
# state), the counters and the spent triples written to a new file that replaces the
# journal by an atomic rename (format: relay/journal.py's header, docs/relay.md). It runs at open and when an
# append would cross max_bytes, so Journal.compact loads this module for each compaction
# and drops it again after: the running gateway does not keep its code in the heap
# (docs/memory.md).
import os
import struct
from micropython import const

from ppmid.relay.journal import MAGIC, T_HEADER, SPENT_KEEP, E_JOURNAL, JournalError, _ACCEPT_FMT, _exists, _put, _via_byte
from ppmid.relay.journal import _sending_payload
from ppmid.relay.journal import SENDING, QUEUED, ANSWERED, TIMED_OUT, FAILED, ALREADY_EXECUTED

# journal.py's private record constants (a const with a leading underscore is not a module
# attribute under MicroPython, so they cannot be imported): tests/firmware/test_journal.py
# checks that the two agree
_HEAD = const(4)
_NO_EXPIRY = const(0xFFFFFFFF)
_T_ACCEPT = const(0x41)
_T_SENDING = const(0x53)
_T_UNSENT = const(0x55)
_T_RESPONSE = const(0x52)
_T_TIMEOUT = const(0x54)
_T_FAILED = const(0x46)
_T_COUNTER = const(0x43)
_T_RESEND = const(0x51)
_T_ALREADY = const(0x58)
_ACCEPT_FIXED = const(14)


def _close_quietly(f):
    try:
        f.close()
    except Exception:
        pass


def rewrite(j):
    """Compact journal j (see the module comment)."""
    if j._torn and j._f is not None:
        # a handle a write failed on: read the bodies through a fresh one
        _close_quietly(j._f)
        j._f = None
    entries = j.entries()
    src = None
    if j._f is not None:
        src = j._f
    elif _exists(j.path):
        src = open(j.path, "rb")
    out = open(j.tmp_path, "wb")
    written = 0
    try:
        written += _put(out, T_HEADER, (MAGIC, struct.pack(">I", j.next_seq)))
        for key in j.counters:
            written += _put(out, _T_COUNTER, (bytes((len(key),)), key, struct.pack(">Q", j.counters[key])))
        n = j.spent_n
        for k in range(n - SPENT_KEEP if n > SPENT_KEEP else 0, n):   # oldest first
            i = k % SPENT_KEEP * 8
            written += _put(out, _T_COUNTER, (b"\x08", j.spent[i:i + 8], struct.pack(">Q", k)))
        moves = []
        for e in entries:
            if not e.body_off:
                continue   # being accepted (Journal.accept): its record comes after this copy
            body = b""
            if e.body_len:
                src.seek(e.body_off)
                body = src.read(e.body_len)
                if len(body) != e.body_len:
                    raise JournalError(E_JOURNAL, "journal short read during compaction")
            idb = e.id.encode()
            fixed = struct.pack(_ACCEPT_FMT, e.seq, _NO_EXPIRY if e.expires is None else e.expires,
                                e.accepted_at, _via_byte(e.via, e.topup), len(idb))
            body_off = written + _HEAD + _ACCEPT_FIXED + len(idb) + 24
            written += _put(out, _T_ACCEPT, (fixed, idb, e.target, e.originator, e.counter, body))
            rsp_off = 0
            if e.state == SENDING:
                rec = (_T_SENDING, (_sending_payload(e, e.deadline),))
            elif e.state == QUEUED and e.resends:
                rec = (_T_RESEND, (struct.pack(">IHB", e.seq, min(e.retries, 0xFFFF), min(e.resends, 0xFF)),))
            elif e.state == ALREADY_EXECUTED:
                rec = (_T_ALREADY, (struct.pack(">I", e.seq),))
            elif e.state == QUEUED and e.retries:
                rec = (_T_UNSENT, (struct.pack(">IH", e.seq, min(e.retries, 0xFFFF)),))
            elif e.state == ANSWERED:
                rsp = b""
                if e.rsp_len:
                    src.seek(e.rsp_off)
                    rsp = src.read(e.rsp_len)
                rec = (_T_RESPONSE, (struct.pack(">IB", e.seq, 1 if e.late else 0), rsp))
                rsp_off = written + _HEAD + 5
            elif e.state == TIMED_OUT:
                rec = (_T_TIMEOUT, (struct.pack(">IIB", e.seq, e.late_until, min(e.resends, 0xFF)),))
            elif e.state == FAILED:
                rec = (_T_FAILED, (struct.pack(">I", e.seq), (e.error or "E_FAILED").encode()))
            else:
                rec = None
            tail = 0
            if rec is not None:
                tail = _put(out, rec[0], rec[1])
                written += tail
            moves.append((e, body_off, rsp_off, tail))
        out.flush()
        out.close()
    except BaseException:
        # no room for the new file (ENOSPC): drop what was written of it, the journal
        # stays as it was
        _close_quietly(out)
        os.remove(j.tmp_path)
        raise
    finally:
        if src is not None and src is not j._f:
            src.close()
    if j._f is not None:
        j._f.close()
        j._f = None
    os.rename(j.tmp_path, j.path)  # atomic on LittleFS: old or new, never half
    j._torn = False
    for e, body_off, rsp_off, tail in moves:
        e.body_off = body_off
        e.tail = tail
        if rsp_off:
            e.rsp_off = rsp_off
    j.size = written
    j.dead = 0
    j.bytes_written += written
    j.compactions += 1
    j.lazy = 0
