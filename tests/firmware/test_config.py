# Config validation; CPython and MicroPython.
from ppmid import config
from ppmid.config import ConfigError

GOOD = {"gateway": "00db1234567890a4",
        "han": {"devices": [{"eui": "00DB1234567890A0", "type": "ESME"},
                            {"eui": "00DB1234567890A1", "type": "GSME"}]}}


def _err(obj, strict=False):
    try:
        config.validate(obj, strict)
    except ConfigError as exc:
        assert exc.code == "E_CONFIG"
        return exc.message
    raise AssertionError("accepted: %r" % (obj,))


def _with(**kw):
    import json
    obj = json.loads(json.dumps(GOOD))
    for k in kw:
        obj[k] = kw[k]
    return obj


def test_defaults_fill_in():
    cfg = config.validate(_with())
    assert cfg["gateway"] == "00DB1234567890A4"
    assert cfg["limits"]["transfer_size"] == 1500
    assert cfg["limits"]["response_timeout_s"] == 25
    assert cfg["broker"]["port"] == 8883
    assert len(cfg["han"]["devices"]) == 2


def test_device_network_address_and_endpoint_are_kept():
    from ppmid import config
    cfg = config.validate(_with(han={"devices": [{"eui": "00DB1234567890A0", "type": "ESME", "nwk": 0x4A21,
                                                  "endpoint": 9}]}))
    assert cfg["han"]["devices"][0]["nwk"] == 0x4A21 and cfg["han"]["devices"][0]["endpoint"] == 9


def test_partial_section_keeps_other_defaults():
    cfg = config.validate(_with(limits={"queue": 5}))
    assert cfg["limits"]["queue"] == 5 and cfg["limits"]["burst"] == 10


def test_bad_configs_name_the_problem():
    assert "gateway" in _err({})
    assert "16 hex" in _err(_with(gateway="1234"))
    assert "16 hex" in _err(_with(gateway="ZZDB1234567890A4"))
    assert "unknown config key" in _err(_with(colour="red"))
    assert "version" in _err(_with(version=2))
    assert "type" in _err(_with(han={"devices": [{"eui": "00DB1234567890A0", "type": "TOASTER"}]}))
    assert "twice" in _err(_with(han={"devices": [{"eui": "00DB1234567890A0", "type": "ESME"},
                                                  {"eui": "00db1234567890a0", "type": "GSME"}]}))
    assert "message codes" in _err(_with(han={"devices": [], "allow": {"ESME": ["x"]}}))
    assert "unknown device type" in _err(_with(han={"devices": [], "allow": {"FRIDGE": [1]}}))
    # where top-ups go (docs/utrn.md): an ESME's network address and endpoint
    for bad in ({"nwk": 0xFFF8}, {"nwk": -1}, {"nwk": "0x4A21"}, {"nwk": True}, {"endpoint": 0},
                {"endpoint": 241}):
        dev = dict({"eui": "00DB1234567890A0", "type": "ESME"}, **bad)
        assert list(bad)[0] in _err(_with(han={"devices": [dev]})), bad
    assert "max_gbcs" in _err(_with(limits={"max_gbcs": 0}))
    assert "unknown limits key" in _err(_with(limits={"speed": 1}))
    assert "port" in _err(_with(broker={"port": 99999}))


def test_every_section_refuses_unknown_keys_and_wrong_types():
    # a typo in any section must not silently keep the default
    assert "unknown broker key 'hots'" in _err(_with(broker={"hots": "10.0.0.1"}))
    assert "unknown wifi key 'sssid'" in _err(_with(wifi={"sssid": "home"}))
    assert "unknown han key 'device'" in _err(_with(han={"device": []}))
    assert "unknown nfc key 'chunks'" in _err(_with(nfc={"chunks": 100}))
    for name in ("broker", "wifi", "han", "limits", "nfc"):
        assert "%s must be an object" % name in _err(_with(**{name: "x"}))
    assert "broker needs a host" in _err(_with(broker={"host": ""}))
    assert "broker needs a host" in _err(_with(broker={"port": True}))
    assert "server_hostname" in _err(_with(broker={"server_hostname": 5}))
    assert "broker.keepalive_s" in _err(_with(broker={"keepalive_s": 0}))
    assert "broker.keepalive_s" in _err(_with(broker={"keepalive_s": 2.5}))
    assert "wifi.password" in _err(_with(wifi={"password": 1234}))
    assert "nfc.chunk" in _err(_with(nfc={"chunk": 500}))
    assert "nfc.idle_ms" in _err(_with(nfc={"idle_ms": True}))
    assert "nfc.poll_ms" in _err(_with(nfc={"poll_ms": 0}))
    # what is right passes, other keys of the section keep their defaults
    cfg = config.validate(_with(broker={"host": "10.0.0.1", "keepalive_s": 60}, wifi={"ssid": "home"},
                                nfc={"session_s": 5}))
    assert cfg["broker"]["host"] == "10.0.0.1" and cfg["broker"]["port"] == 8883
    assert cfg["broker"]["keepalive_s"] == 60 and cfg["wifi"] == {"ssid": "home", "password": ""}
    assert cfg["nfc"]["session_s"] == 5 and cfg["nfc"]["chunk"] == 240


def test_zigbee_install_code_and_extended_pan_id_must_be_strings():
    # review r5-1: an object, a list with a number over 255 or a float escaped as TypeError or
    # ValueError (E_INTERNAL on the host, a traceback and a reboot at every boot): refused on
    # the board too; a list of byte values (it commissioned) only by the host tools (strict)
    from ppmid.zigbee.installcode import crc16
    code = bytes(range(16))
    listed = list(code) + [crc16(code) & 0xFF, crc16(code) >> 8]
    printed = "".join("%02X" % b for b in listed)
    for strict, bads in ((False, ({"a": 1}, {}, [300], [-1], ["00"], 5.5, 5, True)),
                         (True, ({"a": 1}, [300], 5, listed))):
        for bad in bads:
            msg = _err(_with(zigbee={"install_code": bad}), strict)
            assert msg == "zigbee.install_code must be the code as printed (a string of hex digits), not %r" % (bad,), msg
    assert config.validate(_with(zigbee={"install_code": printed}), True)["zigbee"]["install_code"] == printed
    for bad in (["00DB1234567890A0"], 5, {"a": 1}, [0, 219]):
        msg = _err(_with(zigbee={"extended_pan_id": bad}), True)
        assert msg.startswith("zigbee.extended_pan_id must be the CH's extended PAN id"), msg
    for bad in (5, {"00DB1234": 1, "567890A0": 2}, [0, 219], ["00DB1234567890A"], ["00DB", 1]):
        msg = _err(_with(zigbee={"extended_pan_id": bad}))
        assert msg.startswith("zigbee.extended_pan_id must be the CH's extended PAN id"), msg
    assert config.validate(_with(zigbee={"extended_pan_id": "00:DB:12:34:56:78:90:A0"}), True)


def test_the_board_takes_the_install_code_and_pan_id_lists_earlier_firmware_took():
    # review r8-2: a stored config with a list that commissioned before the strict check came
    # in must not stop a gateway after an update (config-error): taken as the string it stands for
    from ppmid.zigbee import installcode as IC
    code = bytes(range(16))
    listed = list(code) + [IC.crc16(code) & 0xFF, IC.crc16(code) >> 8]
    z = config.validate(_with(zigbee={"install_code": listed, "extended_pan_id": ["00DB1234", "567890A0"]}))["zigbee"]
    assert z["install_code"] == "".join("%02X" % b for b in listed)
    assert IC.parse(z["install_code"]) == bytes(listed)
    assert z["extended_pan_id"] == "00DB1234567890A0"
    # a list with a wrong CRC is refused as the string would be
    msg = _err(_with(zigbee={"install_code": listed[:-1] + [listed[-1] ^ 1]}))
    assert msg.startswith("zigbee.install_code: the install code's CRC is "), msg


def test_a_han_device_refuses_unknown_keys_in_the_host_tools():
    # review r5-4: "endpiont": 2 kept endpoint 1, "NWK" left the ESME with no address (every
    # top-up refused E_UTRN_TARGET), seen only at the first top-up
    for key in ("endpiont", "NWK", "name"):
        dev = {"eui": "00db1234567890a0", "type": "ESME", "nwk": 4660, key: 2}
        msg = _err(_with(han={"devices": [dev]}), True)
        assert msg == "han device 00DB1234567890A0: unknown key %r (eui, type, nwk, endpoint)" % key, msg
    dev = {"eui": "00DB1234567890A0", "type": "ESME", "nwk": 4660, "endpoint": 2}
    assert config.validate(_with(han={"devices": [dev]}), True)["han"]["devices"] == [dev]


def test_the_board_ignores_an_unknown_han_device_key_earlier_firmware_took():
    # review r8-2: a "label" earlier firmware ignored turned a working gateway's stored config
    # into config-error after an update; the board drops it (a console line) and runs
    devs = [{"eui": "00db1234567890a0", "type": "ESME", "nwk": 4660, "label": "kitchen", "endpiont": 2},
            {"eui": "00DB1234567890A1", "type": "GSME", "comment": None}]
    got = config.validate(_with(han={"devices": devs}))["han"]["devices"]
    assert got == [{"eui": "00DB1234567890A0", "type": "ESME", "nwk": 4660},
                   {"eui": "00DB1234567890A1", "type": "GSME"}], got
    # what never worked stays refused with its sentence
    msg = _err(_with(han={"devices": [{"eui": "00DB1234567890A0", "type": "ESME", "nwk": 70000, "label": 1}]}))
    assert msg == "han device 00DB1234567890A0: nwk must be an integer from 0 to 65527", msg


def test_loads_and_load_errors():
    try:
        config.loads("{oops")
    except ConfigError as exc:
        assert "JSON" in exc.message
    else:
        raise AssertionError
    try:
        config.load("/nonexistent/config.json")
    except ConfigError as exc:
        assert "provision" in exc.message
    else:
        raise AssertionError


def test_sntp_section():
    cfg = config.validate(_with())
    s = cfg["sntp"]
    assert s["servers"] == ["pool.ntp.org"] and s["port"] == 123 and s["resync_s"] == 3600
    cfg = config.validate(_with(sntp={"servers": ["127.0.0.1"], "port": 40123}))
    assert cfg["sntp"]["servers"] == ["127.0.0.1"] and cfg["sntp"]["port"] == 40123
    assert cfg["sntp"]["timeout_ms"] == 2000 and cfg["sntp"]["retry_max_s"] == 300
    assert config.validate(_with(sntp={"servers": []}))["sntp"]["servers"] == []
    assert "unknown sntp key 'server'" in _err(_with(sntp={"server": "a"}))
    assert "sntp must be an object" in _err(_with(sntp=["a"]))
    assert "sntp.servers" in _err(_with(sntp={"servers": "pool.ntp.org"}))
    assert "sntp.servers" in _err(_with(sntp={"servers": [""]}))
    assert "sntp.servers" in _err(_with(sntp={"servers": ["a", "b", "c", "d", "e"]}))
    assert "sntp.port" in _err(_with(sntp={"port": 0}))
    assert "sntp.resync_s" in _err(_with(sntp={"resync_s": 1}))
    assert "sntp.retry_max_s" in _err(_with(sntp={"retry_s": 10, "retry_max_s": 5}))
    assert "sntp.timeout_ms" in _err(_with(sntp={"timeout_ms": 1.5}))


def test_dns_section():
    # the defaults (servers [] : the board's DHCP resolver, port 53, 1000 ms) are None: the
    # lookup's own defaults, no dict kept by the running app
    assert config.validate(_with())["dns"] is None
    assert config.validate(_with(dns={"servers": [], "port": 53}))["dns"] is None
    assert config.DEFAULTS["dns"] == {"servers": [], "port": 53, "timeout_ms": 1000}
    d = config.validate(_with(dns={"servers": ["192.168.1.1", "9.9.9.9"], "port": 5353}))["dns"]
    assert d["servers"] == ["192.168.1.1", "9.9.9.9"] and d["port"] == 5353 and d["timeout_ms"] == 1000
    assert "unknown dns key 'server'" in _err(_with(dns={"server": "1.1.1.1"}))
    assert "dns.servers" in _err(_with(dns={"servers": "1.1.1.1"}))
    assert "dns.servers" in _err(_with(dns={"servers": ["1.1.1.1"] * 5}))
    assert "dns.servers" in _err(_with(dns={"servers": [53]}))
    assert "dns.servers" in _err(_with(dns={"servers": ["::1"]}))
    assert "'dns.example' is not an IPv4 address" in _err(_with(dns={"servers": ["dns.example"]}))
    assert "'1.2.3.999' is not an IPv4 address" in _err(_with(dns={"servers": ["1.2.3.999"]}))
    assert "dns.port" in _err(_with(dns={"port": 70000}))
    assert "dns.timeout_ms" in _err(_with(dns={"timeout_ms": 10}))
    # a checked config checks again unchanged (tests and the users update re-validate):
    # the None validate() leaves for the defaults is no "dns must be an object" error
    once = config.validate(_with())
    assert config.validate(once) == once and config.validate(once)["dns"] is None
    custom = config.validate(_with(dns={"servers": ["9.9.9.9"]}))
    assert config.validate(custom)["dns"] == custom["dns"]


def test_ch_clock_section():
    c = config.validate(_with())["ch_clock"]
    assert c == {"enabled": True, "timeout_ms": 3000, "retry_s": 5, "retry_max_s": 600, "resync_s": 10800}
    c = config.validate(_with(ch_clock={"enabled": False, "retry_s": 1, "retry_max_s": 2}))["ch_clock"]
    assert c["enabled"] is False and (c["retry_s"], c["retry_max_s"], c["resync_s"]) == (1, 2, 10800)
    assert "unknown ch_clock key 'enable'" in _err(_with(ch_clock={"enable": True}))
    assert "ch_clock must be an object" in _err(_with(ch_clock=True))
    assert "ch_clock.enabled must be true or false" in _err(_with(ch_clock={"enabled": 1}))
    assert "ch_clock.timeout_ms" in _err(_with(ch_clock={"timeout_ms": 50}))
    assert "ch_clock.retry_s" in _err(_with(ch_clock={"retry_s": 0}))
    assert "ch_clock.retry_max_s" in _err(_with(ch_clock={"retry_s": 10, "retry_max_s": 5}))
    assert "ch_clock.resync_s" in _err(_with(ch_clock={"resync_s": 59}))
    assert "ch_clock.resync_s" in _err(_with(ch_clock={"resync_s": "3600"}))


def test_zigbee_link_timings_are_numbers_of_seconds():
    # review_w5-1: the HAN link's own timing keys (zigbee/han_start.py DEFAULTS) passed
    # unchecked: a backoff_max_s of 0.5 left a rejoin waiting with no time-out, a string
    # crashed the link's waits
    z = config.validate(_with(zigbee={"backoff_max_s": 2.5, "send_timeout_s": 45}))["zigbee"]
    assert (z["backoff_max_s"], z["send_timeout_s"]) == (2.5, 45)
    for key, hi in (("send_timeout_s", 3600), ("sent_timeout_s", 600), ("network_timeout_s", 600),
                    ("backoff_max_s", 3600), ("unsupported_retry_s", 86400), ("resend_window_s", 600)):
        assert config.validate(_with(zigbee={key: 1}))["zigbee"][key] == 1
        assert config.validate(_with(zigbee={key: hi}))["zigbee"][key] == hi
        for bad in (0.5, 0, -3, hi + 1, "30", True, None, [30]):
            msg = _err(_with(zigbee={key: bad}))
            assert msg == "zigbee.%s must be a number from 1 to %d, not %r" % (key, hi, bad), msg


def test_zigbee_driver_sizes_and_counts_are_whole_numbers_in_bounds():
    # review r1-2: the HAN driver's other keys passed unchecked, and each crashed at run time:
    # a max_message "8192" failed every send, an rx_queue "16" dropped every incoming message,
    # an ezsp_version "13" failed every bring-up (the watchdog then reset the board for good)
    for key, lo, hi in (("ezsp_version", 8, 18), ("transfer_size", 64, 65535), ("max_message", 64, 65535),
                        ("rx_queue", 1, 64)):
        assert config.validate(_with(zigbee={key: lo}))["zigbee"][key] == lo
        assert config.validate(_with(zigbee={key: hi}))["zigbee"][key] == hi
        for bad in (lo - 1, hi + 1, float(lo), str(lo), "8k", True, None, [lo]):
            msg = _err(_with(zigbee={key: bad}))
            assert msg == "zigbee.%s must be an integer from %d to %d, not %r" % (key, lo, hi, bad), msg
    # the zigbee section's sizes override limits.transfer_size / max_gbcs: the same bounds
    z = config.validate(_with(zigbee={"transfer_size": 128, "max_message": 4096, "rx_queue": 4}))["zigbee"]
    assert (z["transfer_size"], z["max_message"], z["rx_queue"]) == (128, 4096, 4)


def test_limits_sizes_and_counts_are_whole_numbers_in_bounds():
    # review r4 R4-3: limits.transfer_size and max_gbcs feed the same HAN attributes as the
    # zigbee section's sizes; 1500.5 passed and every RequestTunnel answer then raised
    for key, lo, hi in (("max_gbcs", 64, 65535), ("transfer_size", 64, 65535), ("burst", 1, 1000),
                        ("queue", 1, 1000)):
        assert config.validate(_with(limits={key: lo}))["limits"][key] == lo
        assert config.validate(_with(limits={key: hi}))["limits"][key] == hi
        for bad in (lo + 0.5, float(lo), lo - 1, hi + 1, str(lo), True, None):
            msg = _err(_with(limits={key: bad}))
            assert msg == "limits.%s must be an integer from %d to %d, not %r" % (key, lo, hi, bad), msg
    # a rate and a time may still be fractions
    lim = config.validate(_with(limits={"rate_per_s": 0.5, "response_timeout_s": 2.5}))["limits"]
    assert (lim["rate_per_s"], lim["response_timeout_s"]) == (0.5, 2.5)


def test_every_key_the_zigbee_driver_takes_from_the_config_is_checked():
    # the class of review_w5-1 and r1-2: a key zigbee/han_start.py DEFAULTS lets the section
    # set but validate() does not check reaches the link as given
    from ppmid.zigbee.han_start import DEFAULTS
    for key in DEFAULTS:
        msg = _err(_with(zigbee={key: "30"}))
        assert msg.startswith("zigbee.%s must be " % key) and msg.endswith(", not '30'"), msg
