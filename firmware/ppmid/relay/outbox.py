# The relay's outbox: what waits for the broker, oldest first. One message is published at
# a time and the next waits for its PUBACK, so a command's statuses arrive in order.
#
# Queued items are tuples, told apart by their length:
#   (seq, status)           a command's status; its rsp payload is built when it goes, from
#                           the journal (a response body stays on flash until then)
#   (topic, payload, qos)   a message built already: an alert, an NFC rejection, a log line
# Statuses are bounded by the live commands. Built messages are bounded by _BUILT (beyond
# it they are dropped and counted), and log lines also by a token bucket: a chatty fault
# must not crowd out statuses or the heap. (Items are not __slots__ objects: MicroPython
# keeps an instance's attributes in a table of their own, so on the unix port a 3-field
# item took 96 bytes against 64 as a tuple, and the classes ~0.5 KB more.)
#
# Functions of the relay (relay/core.py), which holds the queue and what it needs (set up
# by relay/recovery.py set_up): relay.to_publish (the queue), relay._wake_publish (set
# when something is queued), relay._log_bucket, and relay.publisher: publish(topic,
# payload, qos, retain) returning once PUBACKed, or None (no broker: queued statuses still
# complete). An Outbox class of its own until session 9: its class, constructor and
# instance were heap the app held for nothing (docs/memory.md).
from micropython import const

from ppmid.clock import sleep_ms, wait_event_ms
from ppmid.mqtt.contract import log_json

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_PUBLISHED = const(16)
_C_PUBLISH_ERRORS = const(17)
_C_PUB_DROPPED = const(18)
_C_LOGS_DROPPED = const(19)

_BUILT = const(24)
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)


def put(relay, topic, payload, qos):
    """Queue a built message; False (counted as dropped) when _BUILT already wait."""
    if not _room(relay.to_publish):
        relay.counters[_C_PUB_DROPPED] += 1
        return False
    relay.to_publish.append((topic, payload, qos))
    relay._wake_publish.set()
    return True


def log(relay, level, msg):
    """A log line for the log topic (QoS 0), within the rate limit, else dropped."""
    if relay.publisher is None:
        return
    now = relay.clock.ms()
    bucket = relay._log_bucket
    if bucket.wait_ms("log", now) == 0 and _room(relay.to_publish):
        bucket.take("log", now)
        relay.to_publish.append((relay.topics.log, log_json(level, msg, relay.clock.time()), 0))
        relay._wake_publish.set()
    else:
        relay.counters[_C_LOGS_DROPPED] += 1


def _room(q):
    n = 0
    for item in q:
        if len(item) == 3:
            n += 1
    return n < _BUILT


async def publish_once(relay):
    """Publish the oldest pending message; True if there was one. Returns once the broker
    acknowledged it (QoS 1) or raises (then it stays at the head). A status goes as the
    relay renders it (relay._render; None: finished meanwhile), and the relay hears that
    the broker has it (relay._status_sent), at once when there is no broker."""
    q = relay.to_publish
    if not q:
        return False
    item = q[0]
    publisher = relay.publisher
    if len(item) == 2:
        seq, status = item
        if publisher is None:
            live = relay._status_sent(seq, status)
            q.pop(0)
            if live:
                relay.counters[_C_PUBLISHED] += 1
            return True
        payload = relay._render(seq, status)
        if payload is None:  # finished meanwhile (e.g. its result read over NFC)
            q.pop(0)
            return True
        await publisher.publish(relay.topics.rsp, payload, 1, False)
    else:
        if publisher is not None:
            await publisher.publish(item[0], item[1], item[2], False)
    if q and q[0] is item:
        q.pop(0)
    relay.counters[_C_PUBLISHED] += 1
    if len(item) == 2:
        relay._status_sent(seq, status)
    return True


async def run(relay):
    """The publish loop: drains the queue, backing off while the broker is away; the
    relay's "publish" heartbeat once a pass, except while a publish waits for the broker."""
    backoff = _BACKOFF_MIN_MS
    wake = relay._wake_publish
    while True:
        relay._beat("publish")
        wake.clear()
        if not relay.to_publish:
            await wait_event_ms(wake, 5000)
            continue
        try:
            # the publisher waits for the broker (across its reconnects), and this loop with
            # it: its heartbeat is not checked meanwhile. A broker that is away is the mqtt
            # link check's, with its own grace; premises without WAN must not be reset
            # every stall_ms (60 s) for it (review 94)
            relay._beats.pop("publish", None)
            await publish_once(relay)
            backoff = _BACKOFF_MIN_MS
        except Exception as exc:
            relay.counters[_C_PUBLISH_ERRORS] += 1
            # the console only: a log line would queue behind the failing message
            if relay.console is not None:
                relay.console("relay warn: publish failed: %r" % (exc,))
            await sleep_ms(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_MS)
