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
        old = self.journal.get_counter(key)
        if old is not None and old == value:
            return  # nothing new: spare the flash
        self.journal.put_counter(key, value)
