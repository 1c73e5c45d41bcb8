# The anti-replay store's bound (journal.JournalCounterStore; docs/relay.md, "Anti-replay
# counters"). Loaded only once the journal holds more than PAIRS_KEEP counters: a gateway
# with a handful of originators never holds this code.
#
# With the legacy envelope key any 8 bytes are an originator, and a counter kept for ever
# per (originator, recipient) pair filled the journal (review 2, M2). Beyond the bound, the
# pair with the lowest counter is dropped and its recipient's floor ("*:<RECIPIENT>") rises
# to that counter. The store reads a pair it does not hold as that floor, so the dropped
# pair's old counters stay refused (E_REPLAY) while its next ones, or a new originator's,
# pass above it. Dropping the lowest raises the floor the least. Only counters a device
# answered get here (relay.core answered: review_r2 R2-1), so a forged command with
# counter 2**64-1, which the meter refuses, can no longer raise a floor.


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
