"""`make soak`: a three-node RabbitMQ cluster on loopback (host_tools/broker_cluster.py), one
node stopped and restarted under load: a gateway's persistent session (a quorum queue)
carries on from another node and every command the broker accepted (PUBACK) reaches the
gateway. Skipped, with the reason, where rabbitmq-server is not installed."""
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from host_tools import broker_rabbitmq
from host_tools.broker import client_paths
from host_tools.broker_cluster import Cluster
from host_tools.mpcompat import install

install()
from ppmid.mqtt.contract import Topics  # noqa: E402

GW = "00DB1234567890A4"
N = 400


def client(cluster, ident, node, got=None, client_id=None, clean_session=True):
    p = client_paths(cluster.state_dir, ident)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or ident, clean_session=clean_session)
    c.tls_set(ca_certs=p["ca_pem"], certfile=p["pem"], keyfile=p["key_pem"])
    c.max_inflight_messages_set(50)
    c.gone = threading.Event()
    c.on_disconnect = lambda *a: c.gone.set()
    if got is not None:
        c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect("127.0.0.1", cluster.port(node), keepalive=10)
    c.loop_start()
    return c


def connack(cluster, ident, node, client_id):
    """The CONNACK code node `node` gives certificate `ident` asking for `client_id`."""
    p = client_paths(cluster.state_dir, ident)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    c.tls_set(ca_certs=p["ca_pem"], certfile=p["pem"], keyfile=p["key_pem"])
    c.reconnect_delay_set(30, 60)
    codes = []
    c.on_connect = lambda cl, u, flags, rc, props=None: codes.append(getattr(rc, "value", rc))
    c.connect("127.0.0.1", cluster.port(node), keepalive=10)
    c.loop_start()
    try:
        assert wait(lambda: codes, 10), "no CONNACK from node %d" % node
        return codes[0]
    finally:
        c.disconnect()
        c.loop_stop()


def skip_without_rabbitmq():
    if not broker_rabbitmq.available():
        pytest.skip("rabbitmq-server is not installed (%s missing): apt-get install rabbitmq-server"
                    % broker_rabbitmq.SERVER)


# CONNACK "not authorised": 5 on MQTT 3.1.1 (paho VERSION2 reports it as reason code 0x87)
NOT_AUTHORISED = (5, 0x87)


# make soak (the cluster's three nodes take ~35 s to start): the client-id binding on one
# node is in make test, through the gateway's broker (tests/test_e2e_rabbitmq.py
# test_another_identity_using_a_gateways_client_id_cannot_drop_its_queued_commands) and the
# service's answers (tests/test_rabbitmq_clientid_auth.py)
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_node_refuses_a_foreign_client_id(tmp_path):
    """The client-id binding on each node (one service per node): a DCC User's certificate
    asking for the gateway's client id is refused by all three, while the gateway stays
    connected on node 2; the same certificate with its own client ids is let in (so it is
    not every CONNECT refused)."""
    skip_without_rabbitmq()
    with Cluster(tmp_path / "cluster", gateways=[GW]) as cl:
        print("three-node cluster started in %.1f s" % cl.start_s)
        gw = client(cl, GW, 2, clean_session=False)
        try:
            for node in cl.nodes():
                assert connack(cl, "dcc-user-test", node, GW) in NOT_AUTHORISED, node
                assert connack(cl, "dcc-user-test", node, "dcc-user-test") == 0, node
                assert connack(cl, "dcc-user-test", node, "dcc-user-test/tool-%d" % node) == 0, node
                # the node caches the service's answers: an allowed id does not open the others
                assert connack(cl, "dcc-user-test", node, GW) in NOT_AUTHORISED, node
            assert not gw.gone.is_set(), "the gateway was kicked off"
            for node in cl.nodes():
                with open(tmp_path / "cluster" / "rabbitmq-cluster" / ("node%d" % node) / "clientid_auth.log") as f:
                    assert "client id %r" % GW in f.read(), node   # each node asked its own service
        finally:
            gw.disconnect()
            gw.loop_stop()


def wait(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.05)
    return pred()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_node_stopped_and_restarted_under_load_loses_nothing_accepted(tmp_path):
    skip_without_rabbitmq()
    topics = Topics(GW)
    with Cluster(tmp_path / "cluster", gateways=[GW]) as cl:
        assert len(cl.running()) == 3
        got = []
        # the gateway on node 2: its session's queue is a quorum queue on the cluster
        gw = client(cl, GW, 2, got, clean_session=False)
        gw.subscribe(topics.cmd, 1)
        assert wait(lambda: "quorum" in cl.ctl(1, "list_queues", "name", "type", "-q"), 10), \
            cl.ctl(1, "list_queues", "name", "type", "-q")
        dcc = client(cl, "dcc-user-test", 1)
        acked = set()
        dcc.on_publish = lambda c, u, mid, rc, props: acked.add(mid)
        mids = {}
        for i in range(N):
            mids[dcc.publish(topics.cmd, b"cmd-%d" % i, 1).mid] = b"cmd-%d" % i
            time.sleep(0.01)
            if i == N // 3:
                cl.stop_node(2)         # the gateway's node, under load
                assert gw.gone.wait(10)
                gw.loop_stop()
                gw = client(cl, GW, 3, got, clean_session=False)   # it carries on from node 3
                gw.subscribe(topics.cmd, 1)
            if i == 2 * N // 3:
                cl.start_node(2)
        cl.await_node(2)
        assert wait(lambda: len(acked) == N, 60), "%d of %d PUBACKed" % (len(acked), N)
        want = {mids[m] for m in acked}
        assert wait(lambda: want <= set(got), 60), sorted(want - set(got))[:10]
        assert len(cl.running()) == 3
        dcc.disconnect()
        dcc.loop_stop()
        gw.disconnect()
        gw.loop_stop()
