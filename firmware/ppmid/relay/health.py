# The relay's health and its watchdog: the board is reset (by no longer feeding the
# watchdog) when a relay loop has stalled, when a link has been down longer than its
# grace, or after a fault. A reset is the cure for a wedged radio module or Wi-Fi stack,
# and the journal makes it safe (docs/relay.md, "Health").


class Health:
    """beats: {loop name: ms tick of its last pass}, kept by the relay's loops.
    links: [(name, fn() -> bool[, grace_s])]; grace_s: the default grace of a link.
    wdt: fed by tend() while healthy, or None. log(level, msg): the relay's log."""

    def __init__(self, clock, beats, links=(), grace_s=300, stall_ms=60000, wdt=None, log=None):
        self.clock = clock
        self.beats = beats
        self.links = list(links)
        self.grace_ms = grace_s * 1000
        self.stall_ms = stall_ms
        self.wdt = wdt
        self.log = log
        self._down_since = {}    # link name -> ms tick it was first seen down
        self._said = None        # the reason last logged for not feeding

    def check(self, fault=None):
        """(ok, reason): reason "ok" or "degraded" (a link down within its grace) when
        ok, else why not."""
        if fault is not None:
            return False, "fault: " + fault
        clock = self.clock
        now = clock.ms()
        for name in self.beats:
            age = clock.diff(now, self.beats[name])
            if age > self.stall_ms:
                return False, "%s loop stalled for %d ms" % (name, age)
        degraded = False
        for link in self.links:
            name, up = link[0], link[1]
            grace = link[2] * 1000 if len(link) > 2 else self.grace_ms
            try:
                ok = up()
            except Exception:
                ok = False
            if ok:
                self._down_since.pop(name, None)
                continue
            degraded = True
            since = self._down_since.get(name)
            if since is None:
                self._down_since[name] = now
                if self.log is not None:
                    self.log("warn", "%s link down" % name)
            elif clock.diff(now, since) > grace:
                return False, "%s link down for %d s" % (name, clock.diff(now, since) // 1000)
        return True, "degraded" if degraded else "ok"

    def tend(self, ok, why):
        """Feed the watchdog when ok; else say why, once per reason."""
        if ok:
            if self.wdt is not None:
                self.wdt.feed()
            self._said = None
        elif why != self._said:
            if self.log is not None:
                self.log("error", "not feeding the watchdog: " + why)
            self._said = why
