# HAN protection: token buckets per target device and per originator. Times are ms ticks
# compared through an injected diff (time.ticks_diff on the board), so wrap-around of the
# tick counter is harmless as long as no stamp is older than half the tick period (2**29 ms,
# 6.2 days on an ESP32). So a stamp reading negative counts as long refilled, and a bucket
# found full is forgotten (docs/relay.md, "HAN protection").
from micropython import const

_MAX_KEYS = const(64)


class TokenBuckets:
    """rate_per_s tokens per second up to burst, per key. Milli-tokens, integers only."""

    def __init__(self, rate_per_s, burst, diff, max_keys=_MAX_KEYS):
        self.rate = rate_per_s       # tokens per second
        self.burst = burst
        self.full = int(burst * 1000)
        self.diff = diff             # diff(a, b) -> a - b in ms
        self.max_keys = max_keys
        self._b = {}                 # key -> [milli-tokens, stamp_ms]

    def _level(self, key, now):
        b = self._b.get(key)
        if b is None:
            return self.full
        d = self.diff(now, b[1])
        if d < 0:
            return self.full  # more than half the tick period ago: refilled long since
        level = b[0] + int(d * self.rate)  # ms * tokens/s = milli-tokens
        return self.full if level >= self.full else level

    def wait_ms(self, key, now):
        """0 when a token is there now, else ms until one will be."""
        level = self._level(key, now)
        if level >= self.full:
            self._b.pop(key, None)  # refilled: its stamp need not age toward the wrap
            return 0
        if level >= 1000:
            return 0
        return int((1000 - level) / self.rate) + 1

    def take(self, key, now):
        level = self._level(key, now) - 1000
        self._b[key] = [level, now]
        if len(self._b) > self.max_keys:
            self.prune(now)

    def prune(self, now):
        """Forget buckets that are full again; if still too many, the fullest go first
        (forgetting a bucket only ever grants tokens early: never a refusal)."""
        for k in list(self._b):
            if self._level(k, now) >= self.full:
                del self._b[k]
        while len(self._b) > self.max_keys:
            best = None
            for k in self._b:
                if best is None or self._level(k, now) > self._level(best, now):
                    best = k
            del self._b[best]


class Pacer:
    """The relay's admission and pacing rules for the HAN:
    - a command goes out only when its target's and its originator's buckets both hold a
      token, and no other command to the same target is in flight (one at a time);
    - commands waiting for that are queued, up to limits.queue (the relay's bound); beyond
      it: E_BUSY;
    - E_RATE when the command carries an expiry that pacing cannot meet: the commands
      already queued ahead of it for the same target or originator, at rate_per_s, would
      take it past its expiry (better refused now than accepted and failed later)."""

    def __init__(self, rate_per_s, burst, diff):
        self.targets = TokenBuckets(rate_per_s, burst, diff)
        self.originators = TokenBuckets(rate_per_s, burst, diff)
        self.rate = rate_per_s
        self.burst = burst
        self.in_flight = {}  # target -> seq

    def ready_ms(self, target, originator, now):
        """0 if a command (target, originator) may go now, else ms to wait (-1: target
        busy with a command in flight, wait for its response or timeout)."""
        if target in self.in_flight:
            return -1
        a = self.targets.wait_ms(target, now)
        b = self.originators.wait_ms(originator, now)
        return a if a > b else b

    def sent(self, target, originator, seq, now):
        self.targets.take(target, now)
        self.originators.take(originator, now)
        self.in_flight[target] = seq

    def finished(self, target, seq):
        if self.in_flight.get(target) == seq:
            del self.in_flight[target]

    def admission_wait_s(self, ahead_target, ahead_originator):
        """Rough seconds before a new command could go, given how many queued commands
        share its target / originator (tokens in hand are not counted: pessimistic only
        beyond the burst)."""
        ahead = ahead_target if ahead_target > ahead_originator else ahead_originator
        over = ahead + 1 - self.burst
        if over <= 0:
            return 0
        return over / self.rate
