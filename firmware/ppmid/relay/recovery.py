# The relay's boot-time code, for the app's start-up (ppmid.boot): its set-up (the work of
# the Relay constructor) and its recovery, which rebuilds the relay's RAM state from the
# journal (already opened). Boot-only: the app drops this module once everything runs
# (ppmid.boot.BOOT_ONLY), so the running gateway does not keep its code in the heap
# (docs/memory.md); a later call (a Relay made in a test) imports it again.
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

from ppmid.mqtt.contract import Topics
from ppmid.relay.ratelimit import TokenBuckets
from ppmid.relay import outbox
from ppmid.relay import journal as J
from micropython import const

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_REJECTED = const(7)
_C_RECOVERED = const(20)
_C_MORE = const(22)


def set_up(relay, config, journal, validator, han, publisher, clock, envelope_key,
           decode=None, wdt=None, topic_prefix=None, late_window_s=None,
           max_wait_s=900, link_checks=(), link_grace_s=300, stall_ms=60000,
           console=print, log_rate_per_s=0.1, log_burst=5, admit_wait_ms=4000, senders=None):
    """Relay(...)'s work (the constructor passes its arguments on). topic_prefix: instead
    of the contract's "ppmid/v1/EUI/" (contract.Topics), for a test's private tree."""
    lim = config["limits"]
    # of the config the running relay reads only the HAN's devices (the top-up road's
    # meters, relay/topups.py): the rest of it (~1 KB on a 32-bit heap) is left to go
    relay.devices = config["han"]["devices"]
    relay.journal = journal
    relay.validator = validator
    relay.han = han
    relay.clock = clock
    relay.key = envelope_key
    relay.senders = senders  # keys per DCC User (relay/senders.py), when configured
    if decode is None:
        from ppmid.gbcs import decode
    relay.decode = decode
    relay.max_gbcs = lim["max_gbcs"]
    relay.budget_s = int(lim["response_timeout_s"])
    relay.queue_max = int(lim["queue"])
    relay.late_window_s = late_window_s if late_window_s is not None else 4 * relay.budget_s
    relay.max_wait_s = max_wait_s
    # how long accept() waits for room in a full queue before E_BUSY: the intake's
    # acknowledgement (PUBACK) is withheld meanwhile, so the broker paces a backlog
    # (well under the MQTT keepalive and ack timeout, docs/relay.md)
    relay.admit_wait_ms = admit_wait_ms
    # HAN protection (docs/relay.md): token buckets per target device and per originator,
    # one command in flight per target (target -> its seq)
    relay.rate = lim["rate_per_s"]
    relay.burst = lim["burst"]
    relay.target_buckets = TokenBuckets(relay.rate, relay.burst, clock.diff)
    relay.originator_buckets = TokenBuckets(relay.rate, relay.burst, clock.diff)
    relay.in_flight = {}
    relay.topics = Topics(config.get("gateway"), topic_prefix)
    relay.console = console
    relay.state = "starting"
    relay.fault = None
    relay._corr = {}          # response key -> Entry (sending, timed out, answered)
    relay._deadline = {}      # seq -> ms tick of the response deadline (this boot)
    relay._handing = None     # seq of the command core._send is handing to the HAN link now
    # (relay._resent_during, refusals.pace's, is set with the first resend: not held before)
    relay._status = {}        # seq -> last status emitted
    relay._retry = {}         # target -> [ms tick when it may be tried again (None: passed), backoff ms]
    relay._recent = []        # result dicts of finished or rejected commands, oldest first ("gbcs" False: a body let go)
    relay.hold_dispatch = False  # the updater's, once idle before its reset: nothing more goes to the HAN
    relay._beats = {}         # loop name -> ms tick of its last pass
    relay._boot_ms = clock.ms()   # recovery sets it again: the start of this boot
    relay._wake_dispatch = asyncio.Event()
    relay._room = asyncio.Event()   # set when a queued command leaves the queue
    relay._tasks = []
    relay._topups = None      # the top-up road, loaded with the first top-up (topups())
    # by index (the _C_X below; their names: relay/report.py, loaded for a report):
    # the intake's refusals by code at _C_REJECTED, the resend road's at _C_MORE (None
    # until its first: relay/resend.py's count)
    relay.counters = c = [0] * 23
    c[_C_REJECTED] = {}
    c[_C_MORE] = None
    # the outbox (relay/outbox.py): what waits for the broker, and the broker's publisher,
    # which the app sets once the MQTT link exists
    relay.publisher = publisher
    relay.to_publish = []
    relay._wake_publish = asyncio.Event()
    relay._log_bucket = TokenBuckets(log_rate_per_s, log_burst, clock.diff, 1)
    # health (Relay.health): [(name, fn() -> bool[, grace_s])], the app appends the MQTT link's
    # once it exists
    relay.link_checks = list(link_checks)
    relay.link_grace_ms = link_grace_s * 1000
    relay.stall_ms = stall_ms
    relay.wdt = wdt
    relay._down_since = {}    # link name -> ms tick it was first seen down
    relay._said = None        # the reason last logged for not feeding the watchdog


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
        relay.counters[_C_RECOVERED] += 1
        if e.resends:
            # copies went before this boot: a meter's refusal of one must still reach
            # resend.refused, which core.on_han_message asks only once "resent" is counted
            from ppmid.relay.resend import count
            count(relay, "resent", 0)
        lost = e.code is None and not e.topup
        if lost:
            # its journaled GBCS no longer decodes (relay/journal_scan.py): nothing answers it
            relay.log("warn", "%s: its GBCS on flash does not decode: no response will answer it" % e.id)
        try:
            if e.topup:
                relay.topups()  # its responses must find their road
            elif e.state == J.ANSWERED:
                # a crash between the response record and the counter record must not
                # reopen the counter: commit again (the store only ever goes up). Only an
                # answered command's: the others' are pending (their live entries)
                relay.validator.commit_pair(e.originator, e.target, e.counter)
        except Exception as exc:
            relay.log("warn", "recommit of %s failed: %r" % (e.id, exc))
        if lost and e.state in (J.QUEUED, J.SENDING):
            # nor is it sent (again), as the relay forwards only GBCS its decoder takes (the
            # typical cause: a decoder made stricter by an update, review r7-3). Never sent:
            # it fails (refusals.failure says why); else it may have reached the meter: no
            # copy, it times out now. Either way its counter is spent once it is forgotten
            if e.state == J.QUEUED and not e.resends:
                from ppmid.relay import refusals
                refusals.fail(relay, e, J.E_JOURNAL, "its GBCS on flash does not decode")
            else:
                relay._corr[e.key()] = e   # as core._failed's: a meter's refusal of a copy still finds it
                relay.time_out(e, clock.time())
            continue
        if e.state == J.QUEUED:
            if e.resends:
                # queued for a copy (its budget ended, or found sending at an earlier boot),
                # and the copy has not gone: the first's response may still come, and must
                # find it, as resend.requeue keeps it findable within the boot it was queued
                # (before, a restart in between lost it: the meter's answer went to the alert
                # topic, the command timed out; the relay crash soak)
                relay._corr[e.key()] = e
            relay._emit(e, "accepted")
        elif e.state == J.SENDING:
            # a top-up is never sent twice: a ZCL Consumer Top Up carries no GBCS
            # counter, so a copy would reach the meter as a duplicate UTRN
            if not e.topup:
                # its bytes may have left before the crash: queued for one more copy if it
                # has copies left (resend.py, loaded only then)
                from ppmid.relay.resend import requeue
                if requeue(relay, e):
                    continue
            # handed to the HAN link before the restart (or about to be), and sent
            # again as often as allowed: it waits for its response until its budget ends
            relay._corr[e.key()] = e
            relay.in_flight[e.target] = e.seq
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


def start_tasks(relay):
    """Relay.start's work: the four loops, each under the relay's guard."""
    relay._tasks = [asyncio.create_task(relay._guard("dispatch", relay._dispatch_loop())),
                    asyncio.create_task(relay._guard("receive", relay._receive_loop())),
                    asyncio.create_task(relay._guard("publish", outbox.run(relay))),
                    asyncio.create_task(relay._guard("house", relay._house_loop()))]
    return relay._tasks
