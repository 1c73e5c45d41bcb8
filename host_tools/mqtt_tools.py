"""Host-side MQTT helpers shared by `ppmid send`, `ppmid provision`, tests and benchmarks:
paho clients authenticated with a broker identity, signed command payloads, the set of
files a gateway needs on its flash, and a MicroPython gateway script that runs the real
firmware link (client + intake) with a small file-journal accept hook.
"""
import binascii
import json
import os
import queue
import secrets
import sys
import threading
import time

from host_tools import board_scripts, mpcompat
from host_tools.broker import check_tls_files, client_paths, gateway_identity, issue

mpcompat.install()

from ppmid.mqtt.contract import Topics  # noqa: E402  (firmware module, after mpcompat)

class BrokerLinkError(RuntimeError):
    """The broker of a state dir cannot be used: no or a broken broker.json (E_BROKER), not
    reached (E_CONNECT), no answer (E_TIMEOUT). A RuntimeError, as the commands catch."""

    def __init__(self, message, code="E_BROKER"):
        super().__init__(message)
        self.code = code


FINAL = ("response", "already-executed", "rejected", "timeout", "failed", "topped-up")


def broker_info(state_dir):
    path = os.path.join(state_dir, "broker.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except OSError:
        raise BrokerLinkError("no broker.json in %s: run `ppmid broker start --state-dir %s`" % (state_dir, state_dir))
    except ValueError as exc:
        raise BrokerLinkError("%s is not valid JSON (%s): start the broker again" % (path, exc))
    if not isinstance(info, dict) or not isinstance(info.get("host"), str) or not isinstance(info.get("port"), int):
        raise BrokerLinkError("%s does not name the broker's host and port: start the broker again" % path)
    return info


def paho_client(state_dir, ident, client_id=None, clean_session=True, info=None):
    """A connected-ready paho client (not yet connected) using `ident`'s certificate.
    The broker makes the certificate's identity the client id whatever the client sends
    (mosquitto), or refuses a client id other than IDENTITY or IDENTITY/... (RabbitMQ;
    docs/security.md), so the identity is the default, and one identity has one connection
    at a time: a second client on the same certificate takes the first one's place."""
    import paho.mqtt.client as mqtt
    paths = client_paths(state_dir, ident)
    if not os.path.exists(paths["pem"]):
        raise RuntimeError("no certificate for %s in %s (ppmid broker issue)" % (ident, state_dir))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=client_id or ident,
                    clean_session=clean_session)
    check_tls_files(paths["ca_pem"], paths["pem"], paths["key_pem"])
    c.tls_set(ca_certs=paths["ca_pem"], certfile=paths["pem"], keyfile=paths["key_pem"])
    return c


def connect(client, state_dir, timeout=10):
    """Connect and start the network loop; raise if the broker refuses."""
    info = broker_info(state_dir)
    done = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, reason_code, properties=None):
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(info["host"], info["port"], keepalive=30)
    except (OSError, ValueError) as exc:  # refused, unknown host, TLS, bad port
        raise BrokerLinkError("cannot reach the broker at %s:%s: %s" % (info["host"], info["port"], exc), "E_CONNECT")
    client.loop_start()
    if not done.wait(timeout):
        client.loop_stop()
        raise BrokerLinkError("no CONNACK from the broker within %ss" % timeout, "E_TIMEOUT")
    rc = result["rc"]
    if getattr(rc, "is_failure", rc != 0):
        client.loop_stop()
        raise BrokerLinkError("broker refused the connection: %s" % rc, "E_CONNECT")
    client.on_connect = None
    try:  # paho leaves Nagle on: a PUBACK then a PUBLISH would wait ~40 ms for an ACK
        import socket
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
    return client


def key_path(state_dir, eui):
    return os.path.join(state_dir, "keys", gateway_identity(eui) + ".key")


def _secret_file(path, create, missing):
    # a 32-byte secret kept on the host: read, or made once (random, mode 0600) when asked
    if not os.path.exists(path):
        if not create:
            raise RuntimeError(missing)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    with open(path, "rb") as f:
        return f.read()


def envelope_key(state_dir, eui, create=False):
    """The gateway's envelope key kept on the host (the DCC User side of the secret)."""
    path = key_path(state_dir, eui)
    return _secret_file(path, create, "no envelope key at %s (ppmid provision creates it)" % path)


def user_key_path(state_dir, eui, name):
    return os.path.join(state_dir, "keys", gateway_identity(eui) + ".users", name + ".key")


def user_key(state_dir, eui, name, create=False):
    """A DCC User's own envelope key for one gateway (config users.keys, docs/security.md),
    kept on the host beside the gateway's key; created (32 random bytes) when asked."""
    path = user_key_path(state_dir, eui, name)
    return _secret_file(path, create, "no envelope key for user %s at %s (ppmid provision --user)" % (name, path))


def config_key(state_dir, eui, create=False):
    """The gateway's config key (/secrets/config.key): new DCC User keys travel wrapped
    under it in a signed users update (ppmid users push). Only the operator holds it
    besides the gateway; created (32 random bytes) when asked."""
    path = os.path.join(state_dir, "keys", gateway_identity(eui) + ".config.key")
    return _secret_file(path, create, "no config key at %s (ppmid provision writes it)" % path)


def sender_key(state_dir, eui, user):
    """(key, kid) a DCC User signs with: its own key for this gateway, named in the
    envelope (`kid`), when `ppmid provision --user` registered one; else the gateway's key
    and no kid (the legacy key, docs/security.md "Keys per DCC User"). RuntimeError for a
    user the gateway knows by its public key: it signs with its private key, and the legacy
    key would send its commands as someone else's."""
    name = user[9:] if user.startswith("dcc-user-") else user
    if os.path.exists(user_key_path(state_dir, eui, name)):
        return user_key(state_dir, eui, name), name
    refuse_public_key_user(state_dir, eui, name)
    return envelope_key(state_dir, eui), None


def refuse_public_key_user(state_dir, eui, name):
    """RuntimeError when the users this host last gave the gateway (the users registry of
    `ppmid provision` and `ppmid users push`) register `name` by a public key."""
    from host_tools.users_registry import read_registry
    keys = read_registry(state_dir, eui)["users"].get("keys") or {}
    if "public_key" in (keys.get(name) or {}):
        raise RuntimeError("%s is registered on %s with a public key: it signs with --private-key FILE "
                           "(its P-256 private key), not with an envelope key" % (name, gateway_identity(eui)))


def command_json(key, id, gbcs, expires=None, kid=None):
    """Signed JSON command (docs/mqtt.md), bytes; kid: the key's name, or None."""
    from ppmid import envelope
    env = envelope.sign(key, id, gbcs, expires, kid)
    obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs, newline=False).decode(),
           "mac": env.mac.hex()}
    if expires is not None:
        obj["expires"] = expires
    if kid is not None:
        obj["kid"] = kid
    return json.dumps(obj).encode()


def topup_json(key, id, utrn, target, expires=None, kid=None):
    """Signed JSON top-up (docs/envelope.md "Top-ups"), bytes. The UTRN goes as given:
    the gateway judges it."""
    from ppmid import topup
    env = topup.sign(key, id, utrn, target, expires, kid)
    obj = {"id": id, "utrn": utrn, "target": env.target, "mac": env.mac.hex()}
    if expires is not None:
        obj["expires"] = expires
    if kid is not None:
        obj["kid"] = kid
    return json.dumps(obj).encode()


class Commander:
    """A DCC User session: publishes commands to one gateway and collects every status
    message on its rsp topic, by id (thread-safe queue per id)."""

    def __init__(self, state_dir, eui, user="dcc-user-test", client_id=None, key=None):
        self.eui = gateway_identity(eui)
        self.topics = Topics(self.eui)
        self.state_dir = state_dir
        self.key = key
        self.statuses = {}
        self.all = queue.Queue()
        self.lock = threading.Lock()
        self.client = paho_client(state_dir, user, client_id)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()
        connect(self.client, state_dir)
        self.client.subscribe(self.topics.rsp, qos=1)
        if not self.subscribed.wait(10):
            raise RuntimeError("no SUBACK for the rsp topic")

    def _on_message(self, c, userdata, msg):
        # paho's network thread calls this and dies on any exception from it (paho 2.x
        # re-raises), after which nothing more is received: a status that is not a JSON
        # object (a faulty gateway or broker) is ignored with a warning, as replay.py does
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            obj = {"raw": msg.payload.decode(errors="replace")}
        except RecursionError:
            obj = None
        if not isinstance(obj, dict):
            print("ppmid: warning: ignored a message on %s that is not a JSON object: %r"
                  % (msg.topic, bytes(msg.payload[:40])), file=sys.stderr)
            return
        with self.lock:
            q = self.statuses.setdefault(obj.get("id"), queue.Queue())
        q.put(obj)
        self.all.put(obj)

    def publish_raw(self, payload, topic=None, qos=1):
        info = self.client.publish(topic or self.topics.cmd, payload, qos=qos)
        info.wait_for_publish(10)
        return info

    def send(self, id, gbcs, expires=None):
        return self.publish_raw(command_json(self.key, id, gbcs, expires))

    def wait(self, id, statuses=FINAL, timeout=30, each=None):
        """Status dicts for `id` up to and including the first whose status is in
        `statuses`; raises TimeoutError."""
        with self.lock:
            q = self.statuses.setdefault(id, queue.Queue())
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s status for %r within %ss (got %r)" % ("/".join(statuses), id, timeout, out))
            try:
                obj = q.get(timeout=left)
            except queue.Empty:
                continue
            out.append(obj)
            if each is not None:
                each(obj)
            if obj.get("status") in statuses:
                return out

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def gateway_config(eui, info, **over):
    """A /config.json dict for a gateway on this broker (validated by ppmid.config)."""
    from ppmid import config
    cfg = {"version": 1, "gateway": gateway_identity(eui),
           "broker": {"host": info["host"], "port": info["port"],
                      "server_hostname": info.get("server_hostname", "ppmid-broker"), "keepalive_s": 30}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    config.validate(json.loads(json.dumps(cfg)), strict=True)  # raises ConfigError on a bad override
    return cfg


def gateway_files(state_dir, eui, cfg, key):
    """{flash path: bytes} of everything `ppmid provision` writes (docs/config.md)."""
    eui = gateway_identity(eui)
    paths = issue(state_dir, eui)
    with open(paths["ca_der"], "rb") as f:
        ca = f.read()
    with open(paths["der"], "rb") as f:
        cert = f.read()
    with open(paths["key_der"], "rb") as f:
        pkey = f.read()
    files = {"/config.json": (json.dumps(cfg, indent=1) + "\n").encode(),
             "/certs/ca.der": ca, "/certs/gateway.der": cert, "/certs/gateway.key.der": pkey,
             "/secrets/envelope.key": key, "/secrets/config.key": config_key(state_dir, eui, create=True)}
    keys = (cfg.get("users") or {}).get("keys") or {}
    for name in keys:
        if "public_key" not in keys[name]:  # a public-key user has no secret on the gateway
            files["/secrets/users/%s.key" % name] = user_key(state_dir, eui, name, create=True)
    return files


def write_tree(root, files):
    """Write gateway files under a host directory (a stand-in flash for micropython runs)."""
    for path, data in files.items():
        full = root + path
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


# A MicroPython program (host_tools/board_scripts/mqtt_gateway.py): the real firmware link
# with a small file-journal accept hook standing in for the relay. argv: FIRMWARE_DIR ROOT
# [MODES]; the tests and the benchmark write it to a file and run it with `micropython`.
GATEWAY_SCRIPT = board_scripts.source("mqtt_gateway.py")
