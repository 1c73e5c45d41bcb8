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


def wait(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.05)
    return pred()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_node_stopped_and_restarted_under_load_loses_nothing_accepted(tmp_path):
    if not broker_rabbitmq.available():
        pytest.skip("rabbitmq-server is not installed (%s missing): apt-get install rabbitmq-server"
                    % broker_rabbitmq.SERVER)
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
