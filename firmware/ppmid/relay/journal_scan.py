# The journal's set-up and mount-time recovery, for Journal's constructor and Journal.open:
# read every intact record and rebuild the index (format and policy: relay/journal.py's
# header, docs/relay.md). Boot-only: the app drops this module once everything runs
# (ppmid.boot.BOOT_ONLY), so the running gateway does not keep its code in the heap; a
# later Journal or open() imports it again.
import binascii
import os
import struct
from micropython import const

from ppmid.gbcs.message import decode
from ppmid.relay.journal import MAGIC, T_HEADER, VIAS, SPENT_KEEP, Entry, _exists, _ACCEPT_FMT
from ppmid.relay.journal import SENDING, QUEUED, ANSWERED, TIMED_OUT, FAILED, ALREADY_EXECUTED

# journal.py's private record constants (a const with a leading underscore is not a module
# attribute under MicroPython, so they cannot be imported): tests/firmware/test_journal.py
# checks that the two agree
_SYNC = const(0xA7)
_HEAD = const(4)
_TAIL = const(4)
_NO_EXPIRY = const(0xFFFFFFFF)
_T_ACCEPT = const(0x41)
_T_SENDING = const(0x53)
_T_UNSENT = const(0x55)
_T_RESPONSE = const(0x52)
_T_TIMEOUT = const(0x54)
_T_FAILED = const(0x46)
_T_DONE = const(0x44)
_T_COUNTER = const(0x43)
_T_RESEND = const(0x51)
_T_ALREADY = const(0x58)
_ACCEPT_FIXED = const(14)
_VIA_TOPUP = const(0x80)
_ENOSPC = const(28)


def set_up(j, root, max_bytes, max_live, name):
    """Journal's constructor (relay/journal.py): run once, at boot."""
    root = root.rstrip("/")
    j.path = (root or "") + "/" + name
    j.tmp_path = j.path + ".new"
    j.max_bytes = max_bytes
    j.reserve = max_bytes // 4
    j.max_live = max_live
    j.live = {}        # seq -> Entry
    j.by_id = {}       # id -> Entry
    j.counters = {}    # key (bytes) -> int
    j.spent = None     # the spent triples' ring (Journal.spend), made by the first
    j.spent_n = 0      # triples spent since the journal was opened (the ring's next: % SPENT_KEEP)
    j.next_seq = 1
    j.size = 0
    j.dead = 0         # bytes of the file a compaction would drop (Journal._append)
    j._f = None
    j._torn = False    # an append failed part way: rewrite from RAM before the next
    # statistics (the wear benchmark reads these)
    j.bytes_written = 0
    j.appends = 0
    j.syncs = 0
    j.lazy = 0             # records written since the last sync
    j.compactions = 0
    j.torn_tail = False


def open_journal(j):
    """Journal.open: mount-time recovery (read every intact record, rebuild the index, and
    compact, which drops a torn tail and finished commands). Returns the live entries in
    acceptance order."""
    d = j.path[:j.path.rfind("/")]
    if d and not _exists(d):
        os.mkdir(d)
    if _exists(j.tmp_path):
        if _exists(j.path):
            os.remove(j.tmp_path)   # a compaction that never reached its rename
        else:
            os.rename(j.tmp_path, j.path)
    if _exists(j.path):
        scan(j)
    try:
        j.compact()
    except OSError as exc:
        # a full flash (ENOSPC) has no room for the compacted copy: boot on the file as
        # scanned rather than fail every boot (safe mode would stop the relaying). A torn
        # tail, if any, is rewritten away before the next append (_torn), once there is room
        if exc.args[0] != _ENOSPC or not _exists(j.path):
            raise
        j._torn = j.torn_tail
    return j.entries()


def scan(j):
    f = open(j.path, "rb")
    try:
        head = bytearray(_HEAD)
        pos = 0
        first = True
        j.quarantined = False
        while True:
            n = f.readinto(head)
            if not n:
                break
            if n < _HEAD or head[0] != _SYNC:
                j.torn_tail = True
                break
            rtype = head[1]
            ln = (head[2] << 8) | head[3]
            body = f.read(ln + _TAIL)
            if len(body) < ln + _TAIL:
                j.torn_tail = True
                break
            crc = binascii.crc32(head[1:])
            crc = binascii.crc32(memoryview(body)[:ln], crc) & 0xFFFFFFFF
            if struct.unpack_from(">I", body, ln)[0] != crc:
                j.torn_tail = True
                break
            if first and (rtype != T_HEADER or bytes(body[:len(MAGIC)]) != MAGIC):
                j.torn_tail = True
                break
            first = False
            _apply(j, rtype, memoryview(body)[:ln], pos + _HEAD)
            pos += _HEAD + ln + _TAIL
    finally:
        f.close()
    j.size = pos   # where the intact records end (open() may keep the file as it is)
    # what a compaction would drop (open() keeps the file as scanned when the flash has no
    # room for the copy): the file but for the header, the counters, and each live command's
    # accept and latest state records
    keep = _HEAD + len(MAGIC) + 4 + _TAIL
    for key in j.counters:
        keep += len(key) + 17
    keep += min(j.spent_n, SPENT_KEEP) * (8 + 17)
    for e in j.live.values():
        keep += _HEAD + _ACCEPT_FIXED + len(e.id) + 24 + e.body_len + _TAIL + e.tail
    j.dead = pos - keep if pos > keep else 0
    if first and j.torn_tail:
        # no intact header: not our journal, or damaged at its start. Keep it aside
        # as evidence and start afresh rather than stop the gateway.
        if _exists(j.path + ".bad"):
            os.remove(j.path + ".bad")
        os.rename(j.path, j.path + ".bad")
        j.quarantined = True


def _apply(j, rtype, p, off):
    if rtype == T_HEADER:
        seq = struct.unpack_from(">I", p, len(MAGIC))[0]
        if seq > j.next_seq:
            j.next_seq = seq
        return
    if rtype == _T_COUNTER:
        kl = p[0]
        key = bytes(p[1:1 + kl])
        v = struct.unpack_from(">Q", p, 1 + kl)[0]
        if kl == 8:   # a spent triple's digest (Journal.spend): in the file's order, oldest first
            if not j.was_spent(key):
                # as Journal.spend puts it in its ring (here: boot-only code)
                if j.spent is None:
                    j.spent = bytearray(8 * SPENT_KEEP)
                i = j.spent_n % SPENT_KEEP * 8
                j.spent[i:i + 8] = key
                j.spent_n += 1
        elif v > j.counters.get(key, -1):
            j.counters[key] = v
        return
    seq = struct.unpack_from(">I", p, 0)[0]
    if rtype == _T_ACCEPT:
        seq, exp, at, via, il = struct.unpack_from(_ACCEPT_FMT, p, 0)
        pos = _ACCEPT_FIXED
        id = str(bytes(p[pos:pos + il]), "ascii")
        pos += il
        topup = bool(via & _VIA_TOPUP)
        via &= 0x7F
        e = Entry(seq, id, VIAS[via] if via < len(VIAS) else "mqtt",
                  None if exp == _NO_EXPIRY else exp, at,
                  bytes(p[pos:pos + 8]), bytes(p[pos + 8:pos + 16]), bytes(p[pos + 16:pos + 24]))
        pos += 24
        e.topup = topup
        if not topup:
            # the message code relay.core matches a response's against (review r4 R4-4): the
            # body was checked at accept and the record's CRC holds. None when it does not
            # decode (a decoder made stricter since): no response answers that command,
            # which times out, its counter spent, the safe side (relay/recovery.py says so)
            try:
                e.code = decode(p[pos:]).message_code
            except Exception:  # noqa: BLE001 - a boot must not stop on one record
                pass
        e.body_off = off + pos
        e.body_len = len(p) - pos
        j._index(e)
        if seq >= j.next_seq:
            j.next_seq = seq + 1
        return
    e = j.live.get(seq)
    if e is None:
        return  # a record about a command already done (or compacted away)
    e.tail = _HEAD + len(p) + _TAIL   # a state record: the latest is what a compaction keeps
    if rtype == _T_SENDING:
        e.state = SENDING
        e.deadline = struct.unpack_from(">I", p, 4)[0]
        if len(p) >= 10:
            e.retries = struct.unpack_from(">H", p, 8)[0]
        if len(p) >= 11:
            e.resends = p[10]
    elif rtype == _T_UNSENT:
        e.state = QUEUED
        e.retries = struct.unpack_from(">H", p, 4)[0]
    elif rtype == _T_RESPONSE:
        e.state = ANSWERED
        e.late = bool(p[4])
        e.rsp_off = off + 5
        e.rsp_len = len(p) - 5
    elif rtype == _T_TIMEOUT:
        e.state = TIMED_OUT
        e.late_until = struct.unpack_from(">I", p, 4)[0]
        if len(p) >= 9:  # (older journals end after late_until: the S record's count stays)
            e.resends = p[8]
    elif rtype == _T_FAILED:
        e.state = FAILED
        e.error = str(bytes(p[4:]), "ascii")
    elif rtype == _T_DONE:
        j._unindex(e)
    elif rtype == _T_RESEND:
        e.state = QUEUED
        e.retries = struct.unpack_from(">H", p, 4)[0]
        e.resends = p[6]
    elif rtype == _T_ALREADY:
        e.state = ALREADY_EXECUTED
