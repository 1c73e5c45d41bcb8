"""The RabbitMQ engine of `ppmid broker` (Debian `rabbitmq-server` 3.10, its MQTT plugin),
run as our own process, never the system service: everything lives in STATE/rabbitmq/.

    rabbitmq.conf enabled_plugins definitions.json env.json   written here at each start
    mnesia/ (queues, retained messages)  log/  home/ (the Erlang cookie)

Same certificates and identities as mosquitto (host_tools/broker.py): the MQTT listener
takes TLS with a client certificate only (`ssl_cert_login`, user name = the certificate's
CN); each identity is a RabbitMQ user without a password (certificate login only), and
topic authorisation on `amq.topic` gives the same rights as the mosquitto ACL. RabbitMQ
maps the MQTT topic `a/b/c` to the routing key `a.b.c` and checks SUBSCRIBE filters as
written (`+` -> `*`, `#` -> `#`), so the patterns below are over routing keys.

QoS 1 with clean session false: the plugin keeps a session's subscriptions in a durable
classic queue `mqtt-subscription-<client id>qos1` and QoS 1 messages are persistent, so
what it accepted (PUBACK after the queue confirmed) survives a broker restart; retained
messages sit in the plugin's DETS store under mnesia/. RabbitMQ 3.10's MQTT plugin speaks
MQTT 3.1.1 (and 3.1), not 5; the firmware and paho both speak 3.1.1.
"""
import json
import os
import re
import socket
import subprocess
import time

# the scripts behind /usr/sbin/rabbitmq*: those would switch to the `rabbitmq` user and
# lose our environment
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"
SERVER = os.path.join(RABBITMQ_BIN, "rabbitmq-server")
CTL = os.path.join(RABBITMQ_BIN, "rabbitmqctl")
NODE = "ppmid@localhost"
EXCHANGE = "amq.topic"  # the MQTT plugin's default
AUTH_CACHE_TTL_MS = 60000   # the client-id binding's answers, cached (write_node_files)


def available():
    return os.path.exists(SERVER)


def _dir(state_dir):
    return os.path.join(state_dir, "rabbitmq")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ports(state_dir):
    """The Erlang distribution and epmd ports: chosen once per state dir, so a restarted
    node finds its own epmd and no two state dirs share one."""
    path = os.path.join(_dir(state_dir), "ports.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        ports = {"dist": _free_port(), "epmd": _free_port(), "amqp": _free_port()}
        with open(path, "w") as f:
            json.dump(ports, f)
        return ports


def env(state_dir):
    ports = _ports(state_dir)
    d = _dir(state_dir)
    return node_env(d, NODE, ports["dist"], ports["epmd"], ports["amqp"], os.path.join(d, "home"))


def node_env(d, node, dist_port, epmd_port, amqp_port, home):
    """The environment of node `node` whose files are all under `d`."""
    e = dict(os.environ)
    e.update({
        "HOME": home,  # the Erlang cookie: ours, not root's
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_USE_LONGNAME": "false",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),  # AMQP listener is off (rabbitmq.conf)
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
        "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(d, "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
        "RABBITMQ_PID_FILE": os.path.join(d, "rabbitmq.pid"),
        "ERL_CRASH_DUMP": os.path.join(d, "log", "erl_crash.dump"),  # not the caller's cwd
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    })
    e.pop("NOTIFY_SOCKET", None)
    return e


def _mqtt_re(pattern):
    """An MQTT topic pattern of ours (`+` a whole level) -> a regex over routing keys that
    also admits the SUBSCRIBE filter `*` where the pattern has `+`."""
    out = []
    for level in pattern.split("/"):
        if level == "+":
            out.append(r"(\*|[^.*#]+)")
        elif level == "#":
            out.append(r".*")
        else:
            out.append(re.escape(level))
    return r"\.".join(out)


def _alternatives(root, names):
    return "^(%s)$" % "|".join(_mqtt_re(root + n) for n in names)


def definitions(idents):
    """users, permissions and topic permissions for [(identity, kind)] (broker.py's
    identity_kinds: the same rights as its mosquitto ACL)."""
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid.mqtt.contract import ROOT
    from ppmid.mqtt.contract_host import GATEWAY_WRITES, GATEWAY_READS
    users, perms, topic_perms = [], [], []
    # The plugin declares, binds and reads a session's queue `mqtt-subscription-<client
    # id>qos0|1` and publishes to amq.topic. RabbitMQ 3.10 cannot make the certificate's
    # identity the client id (mosquitto's use_username_as_clientid); `ppmid broker` binds
    # them with an HTTP auth service (rabbitmq_clientid_auth.py: a foreign client id is
    # refused at CONNECT; on the cluster, broker_cluster.py, one per node). The queue
    # names are a second guard: a gateway may touch only the queues
    # of the client id that is its EUI, any other identity none named by a bare EUI-64.
    not_a_gateways = r"^(amq\.topic|mqtt-subscription-(?![0-9A-F]{16}qos[01]$).*)$"
    gw_root = ROOT + "{username}/"
    for ident, kind in idents:
        if kind == "gateway":
            # {username} is expanded by RabbitMQ: a gateway's own topics only
            write = _alternatives(gw_root, GATEWAY_WRITES).replace(re.escape("{username}"), "{username}")
            read = _alternatives(gw_root, GATEWAY_READS).replace(re.escape("{username}"), "{username}")
        elif kind == "user":
            write = _alternatives(ROOT + "+/", GATEWAY_READS)
            read = _alternatives(ROOT + "+/", GATEWAY_WRITES)
        elif kind == "monitor":
            write, read = "^$", "^%s$" % _mqtt_re(ROOT + "#")
        else:
            continue
        users.append({"name": ident, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                      "tags": [], "limits": {}})
        vhost_re = (r"^(amq\.topic|mqtt-subscription-%sqos[01])$" % ident) if kind == "gateway" else not_a_gateways
        perms.append({"user": ident, "vhost": "/", "configure": vhost_re, "write": vhost_re, "read": vhost_re})
        topic_perms.append({"user": ident, "vhost": "/", "exchange": EXCHANGE, "write": write, "read": read})
    return {"rabbit_version": "3.10.8", "vhosts": [{"name": "/"}], "users": users, "permissions": perms,
            "topic_permissions": topic_perms}


def conf_text(state_dir, port, defs_path=None, extra=()):
    j = lambda name: os.path.join(state_dir, name)  # noqa: E731
    return "\n".join([
        "# generated by ppmid broker (host_tools/broker_rabbitmq.py)",
        "listeners.tcp = none",  # no AMQP: MQTT over TLS only
        "mqtt.listeners.tcp = none",
        "mqtt.listeners.ssl.default = 127.0.0.1:%d" % port,
        "ssl_options.cacertfile = " + j("ca.pem"),
        "ssl_options.certfile = " + j("server.pem"),
        "ssl_options.keyfile = " + j("server.key.pem"),
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
        "mqtt.ssl_cert_login = true",
        "ssl_cert_login_from = common_name",
        "mqtt.allow_anonymous = false",
        "mqtt.vhost = /",
        "mqtt.exchange = " + EXCHANGE,
        "tcp_listen_options.nodelay = true",
        "load_definitions = " + (defs_path or os.path.join(_dir(state_dir), "definitions.json")),
        "log.console = false",
        "log.file = rabbit.log",
        # info logs a line per user and permission imported: thousands for a fleet
        "log.file.level = warning",
    ] + list(extra) + [""])


def write_definitions(state_dir, idents):
    os.makedirs(_dir(state_dir), exist_ok=True)
    path = os.path.join(_dir(state_dir), "definitions.json")
    with open(path, "w") as f:
        json.dump(definitions(idents), f, indent=1)
    return path


def prepare(state_dir, port, idents, auth_port=None):
    write_node_files(state_dir, _dir(state_dir), port, write_definitions(state_dir, idents), auth_port=auth_port)


def write_node_files(state_dir, d, port, defs_path, extra=(), auth_port=None):
    """A node's files. auth_port: the client-id binding's HTTP service
    (rabbitmq_clientid_auth.py) is asked too, beside the internal backend."""
    for sub in ("mnesia", "log", "home"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    plugins = ["rabbitmq_mqtt"]
    advanced = os.path.join(d, "advanced.config")
    if auth_port:
        plugins += ["rabbitmq_auth_backend_http", "rabbitmq_auth_backend_cache"]
        url = "http://127.0.0.1:%d/" % auth_port
        extra = list(extra) + ["auth_http.http_method = get"] + [
            "auth_http.%s_path = %s%s" % (k, url, k) for k in ("user", "vhost", "resource", "topic")]
        # authenticated by the internal backend (certificate login); authorised only when
        # the internal backend (rights) AND the HTTP one (client id) both allow. The HTTP
        # one is asked through RabbitMQ's cache: every PUBLISH to a topic the connection
        # has not used lately is a question, one HTTP round trip each (a DCC User writing
        # to many gateways' cmd topics); its answers depend on the question alone, so a
        # cached one is never stale (the rights, internal, are not cached).
        with open(advanced, "w") as f:
            f.write("[{rabbit, [{auth_backends, [{rabbit_auth_backend_internal,\n"
                    "    [rabbit_auth_backend_internal, rabbit_auth_backend_cache]}]}]},\n"
                    " {rabbitmq_auth_backend_cache, [{cached_backend, rabbit_auth_backend_http},\n"
                    "    {cache_ttl, %d}]}].\n" % AUTH_CACHE_TTL_MS)
    elif os.path.exists(advanced):
        os.remove(advanced)
    with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
        f.write(conf_text(state_dir, port, defs_path, extra))
    with open(os.path.join(d, "enabled_plugins"), "w") as f:
        f.write("[%s].\n" % ",".join(plugins))
    with open(os.path.join(d, "rabbitmq-env.conf"), "w") as f:
        f.write("# ppmid broker: the environment is set by host_tools/broker_rabbitmq.py\n")


def _auth_info_path(d):
    return os.path.join(d, "clientid_auth.json")


def start_clientid_auth(state_dir, timeout=10.0, node_dir=None):
    """Start the client-id binding's HTTP service (its own process, beside the node whose
    files are in node_dir, default this state dir's single node); returns its port."""
    import sys
    d = node_dir or _dir(state_dir)
    stop_clientid_auth(state_dir, node_dir=d)   # one left over by a broker that was killed
    os.makedirs(d, exist_ok=True)
    path = _auth_info_path(d)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rabbitmq_clientid_auth.py")
    with open(os.path.join(d, "clientid_auth.log"), "ab") as log:
        proc = subprocess.Popen([sys.executable, script, path], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                info = json.load(f)
            if info.get("pid") == proc.pid:
                return info["port"]
        except (OSError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the client-id auth service did not start; see %s"
                               % os.path.join(d, "clientid_auth.log"))
        time.sleep(0.05)


def stop_clientid_auth(state_dir, node_dir=None):
    """Stop the service its pid file names (whether or not its node still runs); True if
    a running service was stopped."""
    import signal
    path = _auth_info_path(node_dir or _dir(state_dir))
    try:
        with open(path) as f:
            pid = json.load(f)["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            ours = b"rabbitmq_clientid_auth" in f.read()
    except OSError:
        ours = False
    if ours:  # the pid may have been reused since
        os.kill(pid, signal.SIGTERM)
    os.remove(path)
    return ours


def command(state_dir):
    return [SERVER]


def log_path(state_dir):
    return os.path.join(_dir(state_dir), "log", "rabbit.log")


def await_startup(state_dir, timeout, **node):
    """Block until the node has booted: its MQTT listener opens before the definitions
    (users, permissions) are applied, so an open port is not enough. (Not a log line: the
    Erlang logger drops lines under a burst, e.g. one per user imported.)"""
    ctl(state_dir, "await_startup", "--timeout", str(max(1, int(timeout))), timeout=timeout + 15, **node)


def server_pid(shell_pid):
    """The Erlang VM under the rabbitmq-server script (the script stays as its parent to
    turn signals into a clean stop); None until it exists."""
    try:
        with open("/proc/%d/task/%d/children" % (shell_pid, shell_pid)) as f:
            kids = [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        return None
    for k in kids:
        try:
            with open("/proc/%d/comm" % k) as f:
                if f.read().startswith("beam"):
                    return k
        except OSError:
            pass
    return None


def ctl(state_dir, *args, timeout=60, node=NODE, node_env=None):
    """rabbitmqctl against this state dir's node (or `node` with `node_env`); returns
    stdout, raises RuntimeError."""
    r = subprocess.run([CTL, "-n", node] + list(args), env=node_env or env(state_dir), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("rabbitmqctl %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()[-400:]))
    return r.stdout


def reload_identities(state_dir, idents, new, timeout=30.0):
    """A running node learns the identities (rabbitmqctl import_definitions, which only
    starts the import); returns once identity `new` has its topic permissions."""
    ctl(state_dir, "import_definitions", write_definitions(state_dir, idents))
    deadline = time.monotonic() + timeout
    while not ctl(state_dir, "list_user_topic_permissions", new, "-q").strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the import did not give %s its rights within %.0fs" % (new, timeout))
        time.sleep(0.2)


def after_stop(state_dir):
    """The node's epmd outlives it (a daemon on our port): stop it too, and the client-id
    binding's service. Also run when the node had died on its own (both outlive it);
    True if the service was still running."""
    if not os.path.isdir(_dir(state_dir)):
        return False   # this state dir never ran RabbitMQ
    left = stop_clientid_auth(state_dir)
    e = env(state_dir)
    subprocess.run(["epmd", "-port", e["ERL_EPMD_PORT"], "-kill"], env=e, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=10)
    return left
