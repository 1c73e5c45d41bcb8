"""A command profile end to end on the emulated board (issue #22): the gateway is
provisioned with `han.profile = prepay`; its retained `info` names the profile and the
number of message codes it admits; a prepayment command is relayed and answered, a
command outside the profile (from the same DCC User, validly signed) is rejected with
E_NOT_ALLOWED and never reaches the Communications Hub."""
import json
import threading

import pytest

from host_tools import emulate as E
from host_tools import mpcompat

mpcompat.install()

from ppmid.gbcs import Validator, decode, profiles  # noqa: E402
from ppmid.gbcs.validate_host import MemoryCounterStore  # noqa: E402
from ppmid import config as C  # noqa: E402

FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40},
        "han": {"profile": "prepay"}}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-profile"), overrides=FAST, log=None)
    with e:
        yield e


def retained_info(emu, timeout=20):
    from host_tools import mqtt_tools as mt
    got = []
    ev = threading.Event()
    c = mt.paho_client(emu.broker_dir, "dcc-user-test")

    def on_message(client, userdata, msg):
        got.append(json.loads(msg.payload))
        ev.set()
    c.on_message = on_message
    mt.connect(c, emu.broker_dir)
    c.subscribe("ppmid/v1/%s/info" % emu.gateway, 1)
    try:
        assert ev.wait(timeout), "no retained info"
    finally:
        c.disconnect()
        c.loop_stop()
    return got[-1]


def test_prepay_profile_in_info_and_a_command_outside_it_refused_end_to_end(emu):
    prepay = profiles.codes("prepay")
    inside = outside = None
    for name, buf in E.renumbered_commands(400):
        code = decode(buf).message_code
        if inside is None and code in prepay:
            inside = buf
        elif outside is None and code not in prepay:
            outside = buf
    assert inside is not None and outside is not None
    info = retained_info(emu)
    expected = Validator(C.validate(emu.config), MemoryCounterStore()).profile[1]
    assert info["profile"] == "prepay"
    assert info["profile_codes"] == expected and 0 < expected <= len(prepay)

    before = len(emu.ncp.received)
    lines = [{"at_ms": 0, "id": "in-profile", "gbcs": inside, "via": "mqtt",
              "expect": {"status": "response"}},
             {"at_ms": 100, "id": "outside-profile", "gbcs": outside, "via": "mqtt",
              "expect": {"status": "rejected", "error": "E_NOT_ALLOWED"}}]
    r = emu.replayer(20)
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
    assert rep["lost_count"] == 0 and rep["mismatches"] == [], rep["mismatches"]
    assert rep["rejected"] == {"E_NOT_ALLOWED": 1}
    assert emu.ncp.received[before:] == [inside]
    assert "PPMID crashed" not in emu.board.console_text()
    # the boot says so only when the profile is `all` (tests/test_e2e_ch_clock.py: the default)
    assert "PPMID profile: all" not in emu.board.console_text()
