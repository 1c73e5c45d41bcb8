# The wired road: commands from an engineer's laptop over a dedicated serial port of the
# board (docs/wired.md). Imported only when the config has a "wired" section: its settings
# are checked here (not in ppmid.config, so a gateway without the road carries none of it)
# and ppmid.boot starts the road through start().
from ppmid.errors import ConfigError

# enabled: the off switch; rate_per_s/burst: envelopes the channel takes; keep/keep_bytes:
# results kept for a later connection; frame_timeout_ms: a frame cut short is dropped
# after it; poll_ms: how often a watched command's status is looked at
DEFAULTS = {"enabled": False, "rate_per_s": 5, "burst": 10, "keep": 16, "keep_bytes": 32768,
            "frame_timeout_ms": 500, "poll_ms": 100}
_RANGES = {"rate_per_s": (0.01, 1000), "burst": (1, 1000), "keep": (1, 256),
           "keep_bytes": (1024, 1048576), "frame_timeout_ms": (50, 60000), "poll_ms": (10, 10000)}


def settings(section):
    """The config's "wired" object checked and overlaid on DEFAULTS; None when the road
    is not enabled. Raises ConfigError (E_CONFIG) naming the key."""
    if not isinstance(section, dict):
        raise ConfigError("wired must be an object, not %r" % (section,))
    out = dict(DEFAULTS)
    for k in section:
        if k not in DEFAULTS:
            raise ConfigError("unknown wired key %r" % k)
        out[k] = section[k]
    if not isinstance(out["enabled"], bool):
        raise ConfigError("wired.enabled must be true or false, not %r" % (out["enabled"],))
    for k in _RANGES:
        lo, hi = _RANGES[k]
        v = out[k]
        kinds = (int, float) if k == "rate_per_s" else (int,)
        if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
            raise ConfigError("wired.%s must be %s from %s to %s, not %r"
                              % (k, "a number" if k == "rate_per_s" else "an integer", lo, hi, v))
    return out if out["enabled"] else None


def start(board, cfg, relay):
    """Start the road on the board's wired UART (ppmid.boot); returns the state for the
    status line: "on", or why it is not running."""
    from ppmid.errors import PpmidError
    try:
        uart = board.wired_uart()
    except PpmidError as exc:
        return "error (%s)" % (exc.code,)
    if uart is None:
        return "absent (the board names no wired_uart)"
    import gc
    from ppmid.wired.road import WiredRoad
    gc.collect()
    r, w = uart.streams()
    WiredRoad(r, w, relay, cfg["wired"], cfg["limits"]["max_gbcs"], cfg["gateway"]).start()
    return "on"
