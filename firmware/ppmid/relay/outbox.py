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
from micropython import const

from ppmid.clock import sleep_ms, wait_event_ms
from ppmid.mqtt.contract import log_json
from ppmid.relay.ratelimit import TokenBuckets

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

_BUILT = const(24)
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)


class Outbox:
    """publisher: publish(topic, payload, qos, retain) returning once PUBACKed, or None
    (no broker: queued statuses still complete). topics: contract.Topics. counters: the
    relay's dict (published, publish_errors, pub_dropped, logs_dropped). render(seq,
    status) -> rsp payload, or None when the command is gone; sent(seq, status) -> False
    when it is gone, called once the broker has the status (or at once without one)."""

    def __init__(self, publisher, topics, clock, counters, render, sent, console=print,
                 log_rate_per_s=0.1, log_burst=5):
        self.publisher = publisher
        self.topics = topics
        self.clock = clock
        self.counters = counters
        self.render = render
        self.sent = sent
        self.console = console
        self._log_bucket = TokenBuckets(log_rate_per_s, log_burst, clock.diff, 1)
        self._q = []
        self.wake = asyncio.Event()

    def __len__(self):
        return len(self._q)

    def status(self, seq, status):
        self._q.append((seq, status))
        self.wake.set()

    def put(self, topic, payload, qos):
        """Queue a built message; False (counted as dropped) when _BUILT already wait."""
        if not self._room():
            self.counters["pub_dropped"] += 1
            return False
        self._q.append((topic, payload, qos))
        self.wake.set()
        return True

    def log(self, level, msg):
        """A log line for the log topic (QoS 0), within the rate limit, else dropped."""
        if self.publisher is None:
            return
        now = self.clock.ms()
        if self._log_bucket.wait_ms("log", now) == 0 and self._room():
            self._log_bucket.take("log", now)
            self._q.append((self.topics.log, log_json(level, msg, self.clock.time()), 0))
            self.wake.set()
        else:
            self.counters["logs_dropped"] += 1

    def _room(self):
        n = 0
        for item in self._q:
            if len(item) == 3:
                n += 1
        return n < _BUILT

    async def publish_once(self):
        """Publish the oldest pending message; True if there was one. Returns once the
        broker acknowledged it (QoS 1) or raises (then it stays at the head)."""
        if not self._q:
            return False
        item = self._q[0]
        if len(item) == 2:
            seq, status = item
            if self.publisher is None:
                live = self.sent(seq, status)
                self._q.pop(0)
                if live:
                    self.counters["published"] += 1
                return True
            payload = self.render(seq, status)
            if payload is None:  # finished meanwhile (e.g. its result read over NFC)
                self._q.pop(0)
                return True
            await self.publisher.publish(self.topics.rsp, payload, 1, False)
        else:
            if self.publisher is not None:
                await self.publisher.publish(item[0], item[1], item[2], False)
        if self._q and self._q[0] is item:
            self._q.pop(0)
        self.counters["published"] += 1
        if len(item) == 2:
            self.sent(seq, status)
        return True

    async def run(self, beat):
        """The publish loop: drains the queue, backing off while the broker is away.
        beat(name): the relay's heartbeat, once a pass."""
        backoff = _BACKOFF_MIN_MS
        while True:
            beat("publish")
            self.wake.clear()
            if not self._q:
                await wait_event_ms(self.wake, 5000)
                continue
            try:
                await self.publish_once()
                backoff = _BACKOFF_MIN_MS
            except Exception as exc:
                self.counters["publish_errors"] += 1
                # the console only: a log line would queue behind the failing message
                if self.console is not None:
                    self.console("relay warn: publish failed: %r" % (exc,))
                await sleep_ms(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_MS)
