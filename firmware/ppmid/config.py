# Gateway configuration: one dict of defaults, overlaid by /config.json from flash (written
# by `ppmid provision`), validated up front so that a bad config stops the links with a
# clear status instead of failing later. Schema and files: docs/config.md.
# Boot-only: the app validates the config, keeps the plain dict and drops this module
# (ppmid.boot.drop, ppmid.modules.unload), so nothing that runs later may hold a name from here.
from ppmid.errors import ConfigError, E_CONFIG  # noqa: F401  (ConfigError: importers use this name)

DEVICE_TYPES = ("ESME", "GSME", "GPF", "CHF", "PPMID", "HCALCS", "IHD")

DEFAULTS = {
    "version": 1,
    "gateway": None,  # this gateway's EUI-64 (its PPMID system title), 16 hex digits
    "wifi": {"ssid": "", "password": ""},
    "broker": {"host": "127.0.0.1", "port": 8883, "server_hostname": "ppmid-broker",
               "keepalive_s": 30},
    "han": {"devices": [], "allow": {}, "profile": "all"},
    # keys per DCC User (docs/security.md), checked by ppmid.relay.users_config only when
    # present: {"keys": {name: {"role", "originators", "revoked"}}, "roles", "legacy_key"}
    "users": None,
    "limits": {
        "max_gbcs": 8192,          # largest command accepted, bytes
        "transfer_size": 1500,     # tunnel transfer size; larger messages go as GBT blocks
        "response_timeout_s": 25,  # per-command response budget (on-demand commands)
        "rate_per_s": 1.0,         # token bucket per target device and per originator
        "burst": 10,
        "queue": 32,               # commands waiting for the HAN before E_BUSY
    },
    # NFC intake (docs/nfc.md): session_s a tapped phone waits for the response; chunk APDU
    # data bytes per GET/PUT; poll_ms result polling inside a phone session; idle_ms pause
    # between two target polls
    "nfc": {"session_s": 20, "chunk": 240, "poll_ms": 200, "idle_ms": 250, "keepalive_ms": 1000},
    # the wall clock (docs/platform.md "Clock"): SNTP servers asked in turn once Wi-Fi is
    # up; timeout_ms per query; retry_s doubling up to retry_max_s while none answers;
    # resync_s between two syncs
    "sntp": {"servers": ["pool.ntp.org"], "port": 123, "timeout_ms": 2000, "retry_s": 2,
             "retry_max_s": 300, "resync_s": 3600},
    # name lookups (broker.host, sntp.servers given as names; docs/platform.md "Name
    # lookups"): servers the resolvers' IPv4 addresses ([]: the one DHCP gave the Wi-Fi
    # interface); timeout_ms the first wait for an answer, doubled for the second round
    "dns": {"servers": [], "port": 53, "timeout_ms": 1000},
    # the wall clock from the Communications Hub's ZCL Time cluster (docs/platform.md
    # "Clock"), for homes without WAN: read once the HAN is up while no SNTP reply set the
    # clock; timeout_ms per read; retry_s doubling up to retry_max_s while none is usable;
    # resync_s between two reads while the CH is the clock's source
    "ch_clock": {"enabled": True, "timeout_ms": 3000, "retry_s": 5, "retry_max_s": 600, "resync_s": 10800},
    # application updates (docs/update.md): public_key the operator's ECDSA P-256 key as an
    # uncompressed point in hex ("" refuses every update); a new set must run and connect
    # within probation_boots boots and probation_s seconds or the previous one comes
    # back; chunk the data bytes asked for per MQTT message
    "update": {"public_key": "", "probation_boots": 3, "probation_s": 300, "chunk": 1024},
}


def _merge(base, over):
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        if k in base and isinstance(base[k], dict) and isinstance(over[k], dict):
            out[k] = _merge(base[k], over[k])
        else:
            out[k] = over[k]
    return out


def eui_bytes(text, what="EUI-64"):
    """16 hex digits -> 8 bytes, or ConfigError."""
    import binascii
    if not isinstance(text, str) or len(text) != 16:
        raise ConfigError("%s must be 16 hex digits, not %r" % (what, text))
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise ConfigError("%s must be 16 hex digits, not %r" % (what, text))


def _number(section, key, lo, hi, name="limits", kinds=(int, float)):
    v = section[key]
    if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:
        raise ConfigError("%s.%s must be %s from %s to %s, not %r"
                          % (name, key, "a number" if float in kinds else "an integer", lo, hi, v))


def _section(sec, name):
    """A config section must be an object of known keys (a typo must not silently keep a
    default)."""
    if not isinstance(sec, dict):
        raise ConfigError("%s must be an object, not %r" % (name, sec))
    for k in sec:
        if k not in DEFAULTS[name]:
            raise ConfigError("unknown %s key %r" % (name, k))


def nfc_settings(section):
    """The NFC settings: the defaults overlaid by the config's "nfc" object, checked."""
    if section is not None:
        _section(section, "nfc")
    out = {}
    for k in DEFAULTS["nfc"]:
        out[k] = DEFAULTS["nfc"][k]
    for k in section or {}:
        out[k] = section[k]
        _number(out, k, 1, 3600000, "nfc", (int,))
    _number(out, "chunk", 16, 240, "nfc", (int,))
    return out


def validate(cfg, strict=False):
    """Return the merged, checked config dict (defaults filled in). Raises ConfigError.
    strict: the host tools, where a config is written, also refuse what earlier firmware
    took and a gateway may hold today (docs/config.md "Taken at boot, refused by the
    tools"); the board takes it, with a line, so an update never stops a working gateway."""
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a JSON object")
    if cfg.get("version", 1) != 1:
        raise ConfigError("config version %r is not supported (expected 1)" % cfg.get("version"))
    if "dns" in cfg and cfg["dns"] is None:
        # what validate() itself leaves for the defaults: a checked config checks again
        cfg = dict(cfg)
        del cfg["dns"]
    for k in cfg:
        if k not in DEFAULTS and k not in ("wired", "zigbee"):
            raise ConfigError("unknown config key %r" % k)
        if isinstance(DEFAULTS.get(k), dict):
            _section(cfg[k], k)
    out = _merge(DEFAULTS, cfg)
    if out["gateway"] is None:
        raise ConfigError("gateway (this PPMID's EUI-64) is missing")
    eui_bytes(out["gateway"], "gateway")
    out["gateway"] = out["gateway"].upper()
    han = out["han"]
    if not isinstance(han.get("devices"), list):
        raise ConfigError("han.devices must be a list")
    seen = set()
    for d in han["devices"]:
        if not isinstance(d, dict) or "eui" not in d or "type" not in d:
            raise ConfigError("each han device needs eui and type: %r" % (d,))
        eui_bytes(d["eui"], "han device eui")
        d["eui"] = d["eui"].upper()
        for k in list(d):  # a typo ("endpiont") must not silently keep the default
            if k not in ("eui", "type", "nwk", "endpoint"):
                if strict:
                    raise ConfigError("han device %s: unknown key %r (eui, type, nwk, endpoint)" % (d["eui"], k))
                print("PPMID config: han device %s: unknown key %r ignored" % (d["eui"], k))
                del d[k]
        if d["type"] not in DEVICE_TYPES:
            raise ConfigError("han device type %r is not one of %s" % (d["type"], ", ".join(DEVICE_TYPES)))
        # where top-ups go (docs/utrn.md): the device's NWK address and SE endpoint
        for k, lo, hi in (("nwk", 0, 0xFFF7), ("endpoint", 1, 240)):
            if k in d and (isinstance(d[k], bool) or not isinstance(d[k], int) or not lo <= d[k] <= hi):
                raise ConfigError("han device %s: %s must be an integer from %d to %d" % (d["eui"], k, lo, hi))
        if d["eui"] in seen:
            raise ConfigError("han device %s is listed twice" % d["eui"])
        seen.add(d["eui"])
    allow = han.get("allow")
    if not isinstance(allow, dict):
        raise ConfigError("han.allow must be an object of device type -> list of message codes")
    for t in allow:
        if t not in DEVICE_TYPES:
            raise ConfigError("han.allow names unknown device type %r" % t)
        codes = allow[t]
        if not isinstance(codes, list) or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 0xFFFF for c in codes):
            raise ConfigError("han.allow.%s must be a list of message codes (0..65535)" % t)
    from ppmid.gbcs.profiles import NAMES as PROFILES
    if han.get("profile") not in PROFILES:
        raise ConfigError("han.profile must be one of %s, not %r" % (", ".join(PROFILES), han.get("profile")))
    if out["users"] is not None:
        from ppmid.relay.users_config import check
        out["users"] = check(out["users"], PROFILES)
    lim = out["limits"]
    # sizes and counts are whole numbers: a transfer_size of 1500.5 reached the tunnel's
    # RequestTunnel answer and failed every one (review r4 R4-3, the class of r1-2)
    _number(lim, "max_gbcs", 64, 65535, "limits", (int,))
    _number(lim, "transfer_size", 64, 65535, "limits", (int,))
    _number(lim, "response_timeout_s", 1, 86400)
    _number(lim, "rate_per_s", 0.001, 1000)
    _number(lim, "burst", 1, 1000, "limits", (int,))
    _number(lim, "queue", 1, 1000, "limits", (int,))
    b = out["broker"]
    if not isinstance(b.get("host"), str) or not b["host"] or isinstance(b.get("port"), bool) \
            or not isinstance(b.get("port"), int) or not 0 < b["port"] < 65536:
        raise ConfigError("broker needs a host (string) and a port (1..65535)")
    if b["server_hostname"] is not None and not isinstance(b["server_hostname"], str):
        raise ConfigError("broker.server_hostname must be a string (the name in the broker's certificate)")
    # MQTT 3.1.1 keepalive is 16 bits of seconds; the client pings after half of it, so
    # very short ones only load the link, and 0 (no keepalive) would hide a dead broker
    _number(b, "keepalive_s", 5, 65535, "broker", (int,))
    w = out["wifi"]
    for k in ("ssid", "password"):
        if not isinstance(w[k], str):
            raise ConfigError("wifi.%s must be a string" % k)
    out["nfc"] = nfc_settings(cfg.get("nfc"))
    if "wired" in cfg:
        # the optional wired road checks its own section (ppmid.wired): a gateway without
        # it loads none of that, and its config has a "wired" key only when it is on
        from ppmid.wired import settings
        out["wired"] = settings(cfg["wired"])
        if out["wired"] is None:
            del out["wired"]
    if "zigbee" in cfg:
        # commissioning onto the HAN (docs/zigbee.md): the install code and the channels,
        # checked by the commissioning module (dropped after boot like this one)
        from ppmid.zigbee.commission import settings as zigbee_settings
        out["zigbee"] = zigbee_settings(cfg["zigbee"], strict)
        # the HAN link's own keys (zigbee/han_start.py DEFAULTS), checked as the other
        # sections' are: a string or a bool crashed the link. The timings (review_w5-1: a
        # backoff_max_s of 0.5 left a rejoin waiting with no time-out) are seconds, fractions
        # allowed: the keys ending "_s"; the others (review r1-2: a max_message "8192" failed
        # every send, an ezsp_version "13" every bring-up) whole numbers, transfer_size and
        # max_message in the bounds of the limits they override
        z = out["zigbee"]
        for k, lo, hi in (("send_timeout_s", 1, 3600), ("sent_timeout_s", 1, 600), ("network_timeout_s", 1, 600),
                          ("backoff_max_s", 1, 3600), ("unsupported_retry_s", 1, 86400),
                          ("resend_window_s", 1, 600), ("ezsp_version", 8, 18), ("transfer_size", 64, 65535),
                          ("max_message", 64, 65535), ("rx_queue", 1, 64)):
            if k in z:
                _number(z, k, lo, hi, "zigbee", (int, float) if k[-2:] == "_s" else (int,))
    s = out["sntp"]
    if not isinstance(s["servers"], list) or len(s["servers"]) > 4 or \
            any(not isinstance(h, str) or not h for h in s["servers"]):
        raise ConfigError("sntp.servers must be a list of up to 4 host names or addresses ([] for none)")
    _number(s, "port", 1, 65535, "sntp", (int,))
    _number(s, "timeout_ms", 100, 60000, "sntp", (int,))
    _number(s, "retry_s", 1, 3600, "sntp", (int,))
    _number(s, "retry_max_s", s["retry_s"], 86400, "sntp", (int,))
    _number(s, "resync_s", 60, 604800, "sntp", (int,))
    d = out["dns"]
    if not isinstance(d["servers"], list) or len(d["servers"]) > 4 or \
            any(not isinstance(h, str) or ":" in h for h in d["servers"]):
        raise ConfigError("dns.servers must be a list of up to 4 IPv4 addresses ([]: the resolver DHCP gives)")
    if d["servers"]:
        from ppmid.dns_lookup import is_address  # dropped with this module (ppmid.boot.BOOT_ONLY)
        for h in d["servers"]:
            if not is_address(h):
                raise ConfigError("dns.servers: %r is not an IPv4 address (a resolver is given by address)" % (h,))
    _number(d, "port", 1, 65535, "dns", (int,))
    _number(d, "timeout_ms", 100, 30000, "dns", (int,))
    if d == DEFAULTS["dns"]:
        out["dns"] = None  # the defaults, which ppmid.dns_lookup has too: the running app holds no dict for them
    c = out["ch_clock"]
    if not isinstance(c["enabled"], bool):
        raise ConfigError("ch_clock.enabled must be true or false, not %r" % (c["enabled"],))
    _number(c, "timeout_ms", 100, 60000, "ch_clock", (int,))
    _number(c, "retry_s", 1, 3600, "ch_clock", (int,))
    _number(c, "retry_max_s", c["retry_s"], 86400, "ch_clock", (int,))
    _number(c, "resync_s", 60, 604800, "ch_clock", (int,))
    u = out["update"]
    k = u["public_key"]
    if not isinstance(k, str) or k and (len(k) != 130 or not k.lower().startswith("04")
                                        or any(c not in "0123456789abcdefABCDEF" for c in k)):
        raise ConfigError("update.public_key must be \"\" or a P-256 public key: 130 hex digits starting 04")
    _number(u, "probation_boots", 1, 20, "update", (int,))
    _number(u, "probation_s", 30, 86400, "update", (int,))
    _number(u, "chunk", 64, 16384, "update", (int,))
    return out


def loads(text, strict=False):
    import json
    try:
        obj = json.loads(text)
    except ValueError:
        raise ConfigError("config is not valid JSON")
    return validate(obj, strict)


def load(path="/config.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("no config at %s: provision the gateway (ppmid provision)" % path)
    return loads(text)
