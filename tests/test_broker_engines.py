"""The broker engine choice (host_tools/broker.py) and RabbitMQ's rights as data, without a
running broker: the topic permissions give each identity kind what the mosquitto ACL gives
(checked with Python's re, whose syntax for these patterns is PCRE's, RabbitMQ's), and the
refusals are clear. tests/test_e2e_rabbitmq.py checks the same rights on a real node."""
import re

import pytest

from host_tools import broker as B
from host_tools import broker_rabbitmq as R

GW_A, GW_B = "00DB1234567890A4", "00DB1234567890B5"


def rights(kind, ident):
    d = R.definitions([(ident, kind)])
    tp, = d["topic_permissions"]
    perm, = d["permissions"]
    # RabbitMQ expands {username} before matching
    expand = lambda rx: rx.replace("{username}", ident)  # noqa: E731
    return expand(tp["read"]), expand(tp["write"]), perm["configure"]


def key(topic):
    return topic.replace("/", ".").replace("+", "*")   # what RabbitMQ checks for an MQTT topic or filter


CASES = [  # (kind, ident, read or write, MQTT topic or filter, allowed)
    ("gateway", GW_A, "read", "ppmid/v1/%s/cmd" % GW_A, True),
    ("gateway", GW_A, "read", "ppmid/v1/%s/update/+" % GW_A, True),
    ("gateway", GW_A, "read", "ppmid/v1/%s/cmd" % GW_B, False),
    ("gateway", GW_A, "read", "ppmid/v1/+/cmd", False),
    ("gateway", GW_A, "read", "ppmid/v1/#", False),
    ("gateway", GW_A, "read", "ppmid/v1/%s/rsp" % GW_A, False),
    ("gateway", GW_A, "write", "ppmid/v1/%s/rsp" % GW_A, True),
    ("gateway", GW_A, "write", "ppmid/v1/%s/state" % GW_A, True),
    ("gateway", GW_A, "write", "ppmid/v1/%s/rsp" % GW_B, False),
    ("gateway", GW_A, "write", "ppmid/v1/%s/cmd" % GW_A, False),
    ("user", "dcc-user-test", "write", "ppmid/v1/%s/cmd" % GW_B, True),
    ("user", "dcc-user-test", "write", "ppmid/v1/%s/rsp" % GW_B, False),
    ("user", "dcc-user-test", "read", "ppmid/v1/+/rsp", True),
    ("user", "dcc-user-test", "read", "ppmid/v1/%s/state" % GW_A, True),
    ("user", "dcc-user-test", "read", "ppmid/v1/+/cmd", False),
    ("user", "dcc-user-test", "read", "ppmid/v1/#", False),
    ("monitor", "monitor-x", "read", "ppmid/v1/#", True),
    ("monitor", "monitor-x", "read", "ppmid/v1/%s/cmd" % GW_A, True),
    ("monitor", "monitor-x", "write", "ppmid/v1/%s/cmd" % GW_A, False),
]


@pytest.mark.parametrize("kind,ident,op,topic,allowed", CASES, ids=["%s-%s-%s" % (c[0], c[2], c[3]) for c in CASES])
def test_topic_permissions_match_the_mosquitto_acl(kind, ident, op, topic, allowed):
    read, write, _ = rights(kind, ident)
    assert bool(re.match(read if op == "read" else write, key(topic))) is allowed


def test_session_queues_are_their_identitys():
    _, _, gw = rights("gateway", GW_A)
    _, _, user = rights("user", "dcc-user-test")
    assert re.match(gw, "mqtt-subscription-%sqos1" % GW_A)
    assert not re.match(gw, "mqtt-subscription-%sqos1" % GW_B)
    assert not re.match(user, "mqtt-subscription-%sqos1" % GW_A)      # no gateway's session
    assert re.match(user, "mqtt-subscription-dcc-user-test/replay-%sqos1" % GW_A)  # the replay's own


def test_engine_refusals_are_clear(tmp_path, monkeypatch):
    with pytest.raises(B.BrokerError, match="broker engine 'kafka'"):
        B.Broker(str(tmp_path / "a"), engine="kafka")
    monkeypatch.setattr(R, "SERVER", str(tmp_path / "no-rabbitmq-server"))
    b = B.Broker(str(tmp_path / "b"), gateways=[GW_A], engine="rabbitmq")
    with pytest.raises(B.BrokerError, match=r"rabbitmq-server not found .*\(apt-get install rabbitmq-server\)"):
        b.start()
    assert b.info() is None


def test_the_engine_of_a_state_dir_is_remembered(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "broker.json").write_text('{"host": "127.0.0.1", "port": 1, "pid": 0, "engine": "rabbitmq"}')
    assert B.Broker(str(d)).engine == "rabbitmq"
    assert B.Broker(str(tmp_path / "fresh")).engine == "mosquitto"
