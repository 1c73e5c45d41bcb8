# Anti-replay counter store for the GBCS validator, persisted in the relay journal: the
# validator's commit() puts a counter only after the command's accept record is on flash,
# and the relay re-commits live commands at recovery, so a crash between the two writes
# cannot reopen a counter (see docs/relay.md).


class JournalCounterStore:
    """get(key) -> int or None; put(key, int). Keys are bytes or str (stored as bytes)."""

    def __init__(self, journal):
        self.journal = journal

    def get(self, key):
        return self.journal.get_counter(key)

    def put(self, key, value):
        """Anti-replay counters only go up: a lower or equal value is ignored (no write),
        which makes committing a command's counter again harmless."""
        old = self.journal.get_counter(key)
        if old is not None and value <= old:
            return
        self.journal.put_counter(key, value)
