# The relay's boot-time recovery, for the app's start-up (ppmid.boot): rebuild the relay's
# RAM state from the journal (already opened). Boot-only: the app drops this module once
# everything runs (ppmid.boot.BOOT_ONLY), so the running gateway does not keep its code
# in the heap (docs/memory.md); a later call imports it again.
from ppmid.relay import journal as J


def recover(relay):
    """Correlation of commands sent before the restart, statuses to publish again,
    anti-replay counters; then the relay runs (relay.start() creates its tasks)."""
    relay.state = "recovering"
    clock = relay.clock
    now = clock.ms()
    # After a power cut an ESP32 has no clock until SNTP answers (docs/platform.md), so
    # the unix times on flash cannot be compared with "now": budgets and windows of
    # recovered commands then run on this boot's ticks, from the boot.
    relay._boot_ms = now
    unset = not clock.is_set()
    for e in relay.journal.entries():
        relay.counters["recovered"] += 1
        try:
            if e.topup:
                relay.topups()  # its responses must find their road
            else:
                # a crash between the accept record and the counter record must not
                # reopen the counter: commit again (the store only ever goes up)
                relay.validator.commit(relay.decode(relay.journal.body(e)))
        except Exception as exc:
            relay.log("warn", "recommit of %s failed: %r" % (e.id, exc))
        if e.state == J.QUEUED:
            relay._emit(e, "accepted")
        elif e.state == J.SENDING:
            # a top-up is never sent twice: a ZCL Consumer Top Up carries no GBCS
            # counter, so a copy would reach the meter as a duplicate UTRN
            if not e.topup and relay._resend(e, 0):
                continue
            # handed to the HAN link before the restart (or about to be), and sent
            # again as often as allowed: it waits for its response until its budget ends
            relay._corr[e.key()] = e
            relay.pacer.in_flight[e.target] = e.seq
            relay._status[e.seq] = "relayed"
            if unset:
                relay._deadline[e.seq] = clock.add(now, relay.budget_s * 1000)
        elif e.state == J.ANSWERED:
            relay._corr[e.key()] = e
            relay._emit(e, "response")
        elif e.state == J.TIMED_OUT:
            relay._corr[e.key()] = e
            relay._emit(e, "timeout")
        elif e.state == J.FAILED:
            relay._emit(e, "failed")
        elif e.state == J.ALREADY_EXECUTED:
            relay._corr[e.key()] = e
            relay._emit(e, "already-executed")
    relay.state = "running"
    relay._wake_dispatch.set()
