"""A RabbitMQ cluster on loopback (the soak's, tests/test_rabbitmq_cluster.py): `size` nodes
`ppmid1@localhost`..., each with its own MQTT TLS port, database and log under
STATE/rabbitmq-cluster/nodeN/, one epmd and one Erlang cookie for them all, the same CA,
certificates and rights as `ppmid broker --engine rabbitmq` (host_tools/broker_rabbitmq.py).

Sessions' queues are **quorum** queues here (`mqtt.durable_queue_type = quorum`): each
message a node accepted (PUBACK after the queue confirmed it) is on a majority of nodes,
so stopping one node of three loses nothing and its sessions carry on from another node.
(Classic queues, the single node's, live on one node: its sessions would wait for it.)

Each node runs the client-id binding of the single node (rabbitmq_clientid_auth.py): its
own service, pid file and log under nodeN/, started and stopped with the node, so a
certificate can use only its own client ids on every node and a node stopped leaves the
others' bindings alone.
"""
import json
import os
import signal
import socket
import subprocess
import time

from host_tools import broker as B
from host_tools import broker_rabbitmq as R


class Cluster:
    def __init__(self, state_dir, size=3, gateways=(), users=("dcc-user-test",)):
        self.state_dir = os.path.abspath(state_dir)
        self.size = size
        self.certs = B.Broker(self.state_dir, gateways, users, engine="rabbitmq")
        self.procs = {}
        self.layout = None

    def _dir(self, i=None):
        d = os.path.join(self.state_dir, "rabbitmq-cluster")
        return d if i is None else os.path.join(d, "node%d" % i)

    def name(self, i):
        return "ppmid%d@localhost" % i

    def prepare(self):
        self.certs.prepare()
        os.makedirs(os.path.join(self._dir(), "home"), exist_ok=True)
        path = os.path.join(self._dir(), "cluster.json")
        try:
            with open(path) as f:
                self.layout = json.load(f)
        except (OSError, ValueError):
            self.layout = {"epmd": B.free_port(), "nodes": [
                {"dist": B.free_port(), "amqp": B.free_port(), "mqtt": B.free_port()} for _ in range(self.size)]}
            with open(path, "w") as f:
                json.dump(self.layout, f)
        self.defs = R.write_definitions(self.state_dir, B.identity_kinds(self.state_dir))
        extra = ["cluster_formation.peer_discovery_backend = classic_config"]
        extra += ["cluster_formation.classic_config.nodes.%d = %s" % (i, self.name(i)) for i in self.nodes()]
        extra += ["mqtt.durable_queue_type = quorum"]
        self.extra = extra

    def nodes(self):
        return range(1, self.size + 1)

    def port(self, i):
        return self.layout["nodes"][i - 1]["mqtt"]

    def env(self, i):
        n = self.layout["nodes"][i - 1]
        return R.node_env(self._dir(i), self.name(i), n["dist"], self.layout["epmd"], n["amqp"],
                          os.path.join(self._dir(), "home"))  # one cookie for all

    def ctl(self, i, *args, timeout=60):
        return R.ctl(self.state_dir, *args, timeout=timeout, node=self.name(i), node_env=self.env(i))

    def start_node(self, i, timeout=120.0):
        """Node i with its own client-id binding service (its port is only known once the
        service listens, so the node's files are written here, at each start)."""
        try:
            auth_port = R.start_clientid_auth(self.state_dir, node_dir=self._dir(i))
        except RuntimeError as exc:
            raise B.BrokerError("cluster node %s: %s" % (self.name(i), exc))
        R.write_node_files(self.state_dir, self._dir(i), self.port(i), self.defs, self.extra, auth_port=auth_port)
        log = open(os.path.join(self._dir(i), "stderr.log"), "ab")
        self.procs[i] = subprocess.Popen(R.command(self.state_dir), env=self.env(i), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        log.close()

    def await_node(self, i, timeout=120.0):
        """Its MQTT port first (epmd is up by then: rabbitmqctl needs it), then its boot's end."""
        deadline = time.monotonic() + timeout
        while True:
            if self.procs[i].poll() is not None:
                raise B.BrokerError("cluster node %s exited; see %s" % (self.name(i), self._dir(i)))
            try:
                socket.create_connection(("127.0.0.1", self.port(i)), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise B.BrokerError("cluster node %s did not listen within %.0fs" % (self.name(i), timeout))
                time.sleep(0.1)
        try:
            R.await_startup(self.state_dir, timeout, node=self.name(i), node_env=self.env(i))
        except (RuntimeError, subprocess.SubprocessError) as exc:
            raise B.BrokerError("cluster node %s did not start: %s; see %s"
                                % (self.name(i), exc, os.path.join(self._dir(i), "log", "rabbit.log")))

    def start(self):
        """The first node forms the cluster; the others join it (started together they
        could each form one of their own)."""
        if not R.available():
            raise B.BrokerError("rabbitmq-server not found at %s (apt-get install rabbitmq-server)" % R.SERVER)
        self.prepare()
        t0 = time.monotonic()
        try:
            self.start_node(1)
            self.await_node(1)
            for i in list(self.nodes())[1:]:
                self.start_node(i)
            for i in list(self.nodes())[1:]:
                self.await_node(i)
        except BaseException:
            self.stop()   # nodes, their services and epmd: nothing left behind
            raise
        self.start_s = time.monotonic() - t0
        return self

    def running(self):
        """Names of the running cluster members, as node 1... sees them."""
        for i in self.nodes():
            if i in self.procs and self.procs[i].poll() is None:
                out = json.loads(self.ctl(i, "cluster_status", "--formatter", "json"))
                return sorted(out.get("running_nodes", []))
        return []

    def stop_node(self, i, timeout=60.0):
        """A clean stop (SIGTERM to the script, which stops the node), then its client-id
        service (also when the node had died on its own)."""
        p = self.procs.pop(i, None)
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        R.stop_clientid_auth(self.state_dir, node_dir=self._dir(i))

    def stop(self):
        for i in sorted(self.nodes(), reverse=True):
            self.stop_node(i)
        if self.layout:
            subprocess.run(["epmd", "-port", str(self.layout["epmd"]), "-kill"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=10,
                           env=dict(os.environ, ERL_EPMD_PORT=str(self.layout["epmd"])))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
