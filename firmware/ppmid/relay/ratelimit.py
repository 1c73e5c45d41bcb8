# Token buckets: HAN protection, one set per target device and one per originator (the
# relay's pacing, relay/core.py), and the outbox's log lines, the wired road's envelopes,
# bad envelope and update signatures. Times are ms ticks compared through an injected diff
# (time.ticks_diff on the board), so wrap-around of the tick counter is harmless as long as
# no stamp is older than half the tick period (2**29 ms, 6.2 days on an ESP32). So a stamp
# reading negative counts as long refilled, and a bucket found full is forgotten
# (docs/relay.md, "HAN protection").
from micropython import const

_MAX_KEYS = const(64)


class TokenBuckets:
    """rate_per_s tokens per second up to burst, per key. Milli-tokens, integers only."""

    def __init__(self, rate_per_s, burst, diff, max_keys=_MAX_KEYS):
        self.rate = rate_per_s       # tokens per second
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
            # too many keys: forget buckets that are full again; if still too many, the
            # fullest go first (forgetting a bucket only ever grants tokens early: never
            # a refusal)
            for k in list(self._b):
                if self._level(k, now) >= self.full:
                    del self._b[k]
            while len(self._b) > self.max_keys:
                best = None
                for k in self._b:
                    if best is None or self._level(k, now) > self._level(best, now):
                        best = k
                del self._b[best]
