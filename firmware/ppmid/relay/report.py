# The relay's info report (Relay.info: the info topic's relay part, docs/mqtt.md, and with
# the app's part the whole payload: gateway), and its
# counters by name, as the report gives them and tests and the benchmarks read them. Loaded
# by Relay.info for each report and dropped after it: the running relay holds neither the
# report's code nor a dict of counter names. The relay counts in a list of ints by private
# _C_X = const(i) indices (relay/core.py and the modules that count with it)
# (docs/memory.md, "Session 10, relay counters").
#
# _NAMES: the names in index order (a test checks every module's _C_X against them: x in
# lower case at index i). One string split for each report, not 22 literals: a .mpy interns
# every short literal for good when it loads, and a split's words are heap strings that go
# with the report. At index 22 (_C_MORE) the resend road's counters (relay/resend.py's
# count): None until the first, then a list [name, n, name, n, ...] in the order they were
# first counted (a dict's order would be its hash table's on MicroPython).
from ppmid import VERSION
from ppmid.relay.journal import QUEUED, SENDING

_NAMES = ("received accepted relayed answered late timeouts failed rejected retries "
          "link_resets send_errors duplicates duplicate_responses unmatched alerts rx_bad "
          "published publish_errors pub_dropped logs_dropped recovered admit_waits")


def info(relay):
    """Relay.info's work: state, health, the commands in hand, the journal, the counters."""
    queued = sending = 0
    for e in relay.journal.live.values():
        if e.state == QUEUED:
            queued += 1
        elif e.state == SENDING:
            sending += 1
    ok, why = relay.health()
    d = {"state": relay.state, "health": why, "live": len(relay.journal.live), "queued": queued,
         "in_flight": sending, "to_publish": len(relay.to_publish), "journal_bytes": relay.journal.size,
         "journal_compactions": relay.journal.compactions, "counters": named(relay.counters)}
    s = relay.senders
    if s is not None and s.legacy_key is None:
        for x in s.senders:
            if not x[4]:   # a key not revoked: some envelope may pass
                break
        else:
            # no key of a DCC User in use and the legacy key off (a lockdown, review r2 R2-2):
            # every envelope is refused, which a field team reads here (docs/mqtt.md "info");
            # absent otherwise, to keep the retained payload small
            d["auth"] = "locked"
    return d


def gateway(relay, app):
    """The info topic's whole payload (docs/mqtt.md): the relay's part (info) and the app's.
    app: (board, han, clock, heap, update, nfc) as ppmid.app's _info holds them: heap the
    app's figures (free, min); update the update pointer's summary (ppmid.update.slots),
    nfc the NFC road's counters, each None when there is none."""
    board, han, clock, heap, update, nfc = app
    d = info(relay)
    d["fw"] = VERSION
    d["board"] = board.name
    d["han"] = han.status
    d["module"] = han.module
    if han.commission is not None:  # commissioning ran since boot (docs/zigbee.md)
        d["commissioning"] = han.commission.info()
    d["heap_free"] = heap["free"]
    d["heap_min"] = heap["min"]
    d["clock"] = clock.source
    d["clock_synced_at"] = clock.synced_at
    d["profile"], d["profile_codes"] = relay.validator.profile
    if update is not None:
        d["update"] = update
    if nfc is not None:
        d["nfc"] = nfc
    return d


def named(c):
    """The relay's counters `c` (a list by index) as the dict info reports: the names in
    index order (the order CPython's dict keeps), then the resend road's as first counted."""
    names = _NAMES.split()
    if len(c) != len(names) + 1:
        raise ValueError("%d relay counters for %d" % (len(c), len(names) + 1))
    d = {}
    for i in range(len(names)):
        d[names[i]] = c[i]
    more = c[-1] or ()
    for i in range(0, len(more), 2):
        d[more[i]] = more[i + 1]
    return d
