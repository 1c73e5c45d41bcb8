# The anti-replay store's bound (journal.JournalCounterStore; docs/relay.md, "Anti-replay
# counters"), and the spent triples of commands that ended unanswered (spend). Loaded only
# once the journal holds more than PAIRS_KEEP counters, or a command ends without a
# response: a gateway whose meters answer, with a handful of originators, never holds this
# code.
#
# With the legacy envelope key any 8 bytes are an originator, and a counter kept for ever
# per (originator, recipient) pair filled the journal (review 2, M2). Beyond the bound, the
# pair with the lowest counter is dropped and its recipient's floor ("*:<RECIPIENT>") rises
# to that counter. The store reads a pair it does not hold as that floor, so the dropped
# pair's old counters stay refused (E_REPLAY) while its next ones, or a new originator's,
# pass above it. Dropping the lowest raises the floor the least. Only counters a device
# answered get here (relay.core answered: review_r2 R2-1), so a forged command with
# counter 2**64-1, which the meter refuses, can no longer raise a floor.
import struct
from micropython import const

from ppmid.relay.journal import SPENT_KEEP

# journal.py's private record constants (a const with a leading underscore is not a module
# attribute under MicroPython): tests/firmware/test_journal.py checks that they agree
_HEAD = const(4)
_TAIL = const(4)
_T_COUNTER = const(0x43)


def _recipient(key):
    # the validator's keys: "<ORIGINATOR>:<RECIPIENT>", 16 hex digits each
    if len(key) == 33 and key[16] == 0x3A:
        return key[17:]
    return None


def bound(counters, put_counter, keep):
    """Drop pairs from `counters` (key bytes -> int) until at most `keep` remain, raising
    their recipients' floors with put_counter (a journal record, lazy like every counter)."""
    while True:
        n, low = 0, None
        for k in counters:
            if _recipient(k) is not None:
                n += 1
                if low is None or counters[k] < counters[low]:
                    low = k
        if n <= keep:
            return
        v = counters[low]
        floor = b"*:" + _recipient(low)
        if v > counters.get(floor, -1):
            put_counter(floor, v)   # in RAM at once; on flash before the next compaction
        # gone from the next compaction on; until then its record on flash only repeats
        # what the floor says
        del counters[low]


def spend(j, e):
    """GBCS command e leaves journal j unanswered (timed out, failed, already executed): its
    (originator, recipient, counter) is spent, refused E_REPLAY when offered again
    (relay.core _accept), so no command the gateway accepted is relayed twice, and it never
    feeds a floor: a forged counter the meter refused must not (review r4 R4-1). The newest
    SPENT_KEEP are kept, in one ring of bytes (no object per triple to cut the heap up), and
    on flash as counter records whose 24-byte key no other counter has (a compaction keeps
    them, oldest first)."""
    key = e.originator + e.target + e.counter
    if not j.was_spent(key):
        j._append(_T_COUNTER, (b"\x18", key, struct.pack(">Q", e.seq)), sync=False)
        keep(j, key)


def keep(j, key):
    # (the scan's too) into the ring's oldest slot: the record that slot held is dead
    if j.spent is None:
        j.spent = bytearray(24 * SPENT_KEEP)
    i = j.spent_n % SPENT_KEEP * 24
    j.spent[i:i + 24] = key
    j.spent_n += 1
    if j.spent_n > SPENT_KEEP:
        j.dead += _HEAD + 33 + _TAIL
