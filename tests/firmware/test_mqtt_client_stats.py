# The MQTT client's counters (ppmid.mqtt.client): a list by private _C_X indices, named by
# ppmid.mqtt.link_host (tests and host tools). Apart from test_mqtt_client.py, which other
# test modules import (its fake broker), so that their MicroPython heap does not carry these.
from ppmid.mqtt.client import MQTTClient
from ppmid.mqtt.link_host import stats


def test_the_client_counts_in_a_list_named_by_link_host():
    # the client's counters are a list (its private _C_X indices); ppmid.mqtt.link_host
    # names them, for tests and host tools: a fresh client has each at 0, by name
    c = MQTTClient("00DB1234567890A0", None)
    assert isinstance(c.stats, list)
    assert stats(c) == {"connects": 0, "connect_failures": 0, "drops": 0, "retransmits": 0,
                        "published": 0, "received": 0, "pubacks_withheld": 0, "pings": 0,
                        "oversize": 0, "link_losses": 0, "malformed": 0}
    c.stats[9] += 2
    assert stats(c)["link_losses"] == 2
    c.stats.append(0)  # a counter with no name: said, not zipped away
    try:
        stats(c)
        raise AssertionError("12 counters named by 11 names")
    except ValueError as exc:
        assert "12 counters for 11 names" in str(exc)


def test_every_client_counter_index_names_its_counter():
    # client.py, handshake.py and oversize.py count by private _C_X = const(i) indices; link_host.STATS
    # names them (x, lower case, at index i): each module's indices agree with the names,
    # every one it defines is used, and every name is counted somewhere
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); stats() runs on both")
    import re
    from ppmid.mqtt import client, handshake, link_host, oversize
    seen = set()
    for mod in (client, handshake, oversize):
        src = open(mod.__file__).read()
        keys = re.findall(r"^_C_(\w+) = const\((\d+)\)", src, re.M)
        assert keys, mod.__name__
        for k, i in keys:
            assert link_host.STATS[int(i)] == k.lower(), (mod.__name__, k, i)
            seen.add(k.lower())
        used = set(re.findall(r"\[_C_(\w+)\]", src))
        assert used == set(k for k, _ in keys), (mod.__name__, used ^ set(k for k, _ in keys))
    assert seen == set(link_host.STATS), set(link_host.STATS) - seen
