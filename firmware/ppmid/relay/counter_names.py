# The relay's counters by name, as info reports them (relay.core's Relay.info) and tests and
# the benchmarks read them. The relay counts in a list of ints by private _C_X = const(i)
# indices (relay/core.py and the modules that count with it), so that the running firmware
# holds no dict of 22 names for a report: Relay.info loads this module for each report and
# drops it after (docs/memory.md, "Session 10, relay counters").
#
# _NAMES: the names in index order (a test checks every module's _C_X against them: x in
# lower case at index i). One string split for each report, not 22 literals: a .mpy interns
# every short literal for good when it loads, and a split's words are heap strings that go
# with the report. At index 22 (_C_MORE) the resend road's counters (relay/resend.py's
# count): None until the first, then a list [name, n, name, n, ...] in the order they were
# first counted (a dict's order would be its hash table's on MicroPython).
_NAMES = ("received accepted relayed answered late timeouts failed rejected retries "
          "link_resets send_errors duplicates duplicate_responses unmatched alerts rx_bad "
          "published publish_errors pub_dropped logs_dropped recovered admit_waits")


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
