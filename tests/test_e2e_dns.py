"""The gateway's own name lookup end to end: `ppmid emulate --broker-name` gives the
gateway its broker by name, the emulated board's Wi-Fi gives it loopback as its resolver,
and the emulation's DNS server (host_tools/dns_server.py) answers the name (and the SNTP
server's, given by name here too). The gateway comes online through the address it looked
up (firmware/ppmid/dns_lookup.py), its clock is set by SNTP through the other, it relays
commands, keeps that address across a Wi-Fi drop and looks the name up again after a
broker outage (a dial that got no answer through it); while the resolver stays silent,
the event loop keeps relaying commands from the wired road and the HAN link holds."""
import time

import pytest

from host_tools import emulate as E
from host_tools import mpcompat
from host_tools.wired import WiredReplayer

mpcompat.install()

NAME = "broker.emulated"
FAST = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15, "queue": 40},
        "wired": {"enabled": True, "rate_per_s": 20, "burst": 20},
        # a failed lookup takes 3 x 2.5 s: had it blocked the loop, longer than the NCP's
        # ACK timeouts add up to before it declares the ASH link failed (0.4+0.8+1.6+3.2 s)
        "dns": {"timeout_ms": 2500},
        # the emulation's SNTP server by name too: the SNTP client's lookup runs as well
        "sntp": {"servers": ["time.emulated"]}}


def _emulation(tmp_path_factory):
    return E.Emulation(tmp_path_factory.mktemp("e2e-dns"), overrides=FAST, log=None, broker_name=NAME, wired=True)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with _emulation(tmp_path_factory) as e:
        yield e


@pytest.fixture
def fresh_emu(tmp_path_factory):
    # a board of its own: after the outages above, the MQTT client's reconnect back-off
    # has grown (it starts again only after 30 s connected), and waiting out its pauses
    # cost the silent-resolver test 20 of its 33 s; a new board costs ~2.5 s
    with _emulation(tmp_path_factory) as e:
        yield e


def replay(emu, prefix, n=3):
    lines = [{"at_ms": i * 100, "id": "%s%d" % (prefix, i), "gbcs": buf, "via": "mqtt",
              "expect": {"status": "response"}} for i, (_, buf) in enumerate(E.renumbered_commands(n))]
    r = emu.replayer(20)
    r.connect()
    try:
        rep = r.run(lines)
    finally:
        r.close()
    assert rep["lost_count"] == 0, rep["lost"]
    assert rep["mismatches"] == [], rep["mismatches"][:5]


def test_the_broker_is_reached_by_its_name_through_the_gateways_own_lookup(emu):
    assert emu.config["broker"]["host"] == NAME and "servers" not in emu.config["dns"]
    # online, and the clock set by SNTP (start() waited for both): each name was asked of
    # the emulation's resolver once
    assert sorted(emu.dns.queries) == sorted([NAME, "time.emulated"]) and emu.dns.answered == 2
    assert "PPMID clock: set by sntp" in emu.board.console_text()
    replay(emu, "dns-a")
    text = emu.board.console_text()
    assert "E_DNS" not in text and "PPMID dns:" not in text   # no retry, nothing ignored


def test_a_wifi_drop_reuses_the_address_without_a_new_lookup(emu):
    # the broker answered through the address: the reconnect after the drop dials it again
    asked = len(emu.dns.queries)
    emu.board.wifi(False)
    time.sleep(2.0)
    emu.board.wifi(True)
    replay(emu, "dns-b")
    assert len(emu.dns.queries) == asked, emu.dns.queries


def test_after_a_broker_outage_the_name_is_looked_up_again_and_the_link_recovers(emu):
    # a dial that got no answer through the address drops it (the broker may have moved):
    # the next dial asks the resolver again
    asked = len(emu.dns.queries)
    emu.broker.stop()
    time.sleep(1.5)
    emu.broker.start()
    replay(emu, "dns-c")
    assert emu.dns.queries[asked:] and set(emu.dns.queries[asked:]) == {NAME}, emu.dns.queries


def test_while_the_resolver_is_silent_the_loop_relays_and_the_han_link_holds(fresh_emu):
    emu = fresh_emu
    # The broker goes away and the resolver stops answering: every MQTT dial now waits
    # 3 s for a lookup that fails. Meanwhile commands come by the wired road: they are
    # relayed to the CH and answered, and the ASH link to the module neither fails nor
    # is reset. With the lookup's wait made blocking (time.sleep_ms in place of its
    # asyncio sleep, tried once by hand) this test fails: the NCP reports the link failed.
    mark = emu.board.mark()
    emu.dns.hold(True)
    emu.broker.stop()
    try:
        emu.board.wait_for(r"PPMID dns: broker\.emulated: no usable answer yet", 30, since=mark)
        asked = len(emu.dns.queries)
        ncp = emu.ncp.stats()["ncp"]
        lines = E.lines_from(E.renumbered_commands(6), interval_ms=100, prefix="dns-w")
        for x in lines:
            x["via"] = "serial"
        rep = WiredReplayer(emu.wired_client, emu.gateway, emu.key, settle_s=40).run(lines)
        assert rep["lost_count"] == 0 and rep["mismatches"] == [], (rep["lost"], rep["mismatches"])
        assert rep["responses"] == 6
        emu.board.wait_for(r"mqtt: E_DNS: no address for broker\.emulated", 30, since=mark)
        after = emu.ncp.stats()["ncp"]
        for k in ("link_failures", "resets_by_host"):
            assert after.get(k, 0) == ncp.get(k, 0), (k, ncp, after)
        assert len(emu.dns.queries) >= asked
    finally:
        emu.dns.hold(False)
        emu.broker.start()
    replay(emu, "dns-d")     # the resolver answers again: MQTT is back
