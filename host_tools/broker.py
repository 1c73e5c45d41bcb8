"""A test/field broker on loopback, TLS only, client certificates, per-identity rights:
mosquitto (the default engine) or RabbitMQ with its MQTT plugin (host_tools/broker_rabbitmq.py,
state under rabbitmq/). broker.json names the engine; the certificates are the same.

State directory layout (everything `ppmid broker start` makes):
    ca.pem ca.der ca.key.pem            the CA (P-256) that signs the broker and every client
    server.pem server.key.pem           broker certificate (CN/SAN ppmid-broker, localhost, 127.0.0.1)
    clients/<ID>.pem .key.pem           client certificate + key (PEM: paho, mosquitto_sub)
    clients/<ID>.der .key.der           the same in DER (MicroPython's ssl)
    mosquitto.conf acl mosquitto.log data/
    broker.json                         {"host", "port", "pid", "server_hostname", ...}
Identities: a gateway is its EUI-64 (16 upper-case hex); a DCC User is `dcc-user-NAME`; a
monitor (`monitor-NAME`, e.g. `ppmid capture`'s) reads every gateway's topics and writes none.
mosquitto takes the certificate CN as the user name (use_identity_as_username), so the
ACL can give a gateway its own topics only and a DCC User every gateway's.
"""
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import time

from host_tools.errors import ToolError

MOSQUITTO = "/usr/sbin/mosquitto"
ENGINES = ("mosquitto", "rabbitmq")
SERVER_HOSTNAME = "ppmid-broker"
EUI_RE = re.compile(r"^[0-9A-F]{16}$")
USER_RE = re.compile(r"^dcc-user-[A-Za-z0-9_.-]{1,40}$")
# a read-only observer of every gateway's topics, cmd included (`ppmid capture`)
MONITOR_RE = re.compile(r"^monitor-[A-Za-z0-9_.-]{1,40}$")


class BrokerError(Exception):
    """A broker state dir, identity or broker that cannot be used."""

    code = "E_BROKER"


def gateway_identity(eui):
    eui = eui.upper()
    if not EUI_RE.match(eui):
        raise BrokerError("gateway EUI-64 must be 16 hex digits, not %r" % eui)
    return eui


def user_identity(name):
    ident = name if name.startswith("dcc-user-") else "dcc-user-" + name
    if not USER_RE.match(ident):
        raise BrokerError("DCC User name %r: use letters, digits, . _ - (at most 40)" % name)
    return ident


class TlsFileError(ToolError):
    """A client's TLS file (CA, certificate, key) that is missing or not PEM: named, as
    neither ssl's nor cryptography's message says which file it was."""
    code = "E_TLS"


def check_tls_files(ca, cert, key):
    """TlsFileError for the first of these files that cannot be read or holds no PEM block."""
    for what, path in (("CA certificate", ca), ("certificate", cert), ("private key", key)):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise TlsFileError("cannot read the %s %s: %s" % (what, path, exc.strerror or exc))
        if b"-----BEGIN " not in data:
            raise TlsFileError("the %s %s is not a PEM file" % (what, path))


def certificate_identity(certfile):
    """The identity (CN) a client certificate names: the MQTT user name both engines take
    from it, and the start of every client id it may use (docs/security.md)."""
    x509, _, _, _, NameOID, _ = _crypto()
    try:
        with open(certfile, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    except OSError as exc:
        raise TlsFileError("cannot read the certificate %s: %s" % (certfile, exc.strerror or exc))
    except (ValueError, IndexError) as exc:  # not PEM, not a certificate, or no CN
        raise TlsFileError("the certificate %s is not a PEM certificate with a common name (%s)"
                           % (certfile, str(exc).split(".")[0]))


def tool_client_id(certfile, tool):
    """A DCC-side tool's own client id on a certificate: IDENTITY/tool. mosquitto replaces
    any client id by the identity (use_username_as_clientid); RabbitMQ's binding
    (rabbitmq_clientid_auth.py) accepts the identity and IDENTITY/anything, so one
    certificate keeps one session per tool there."""
    return "%s/%s" % (certificate_identity(certfile), tool)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- certificates ---------------------------------------------------------------------
def _crypto():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _write(path, data, mode=0o600):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save(dirpath, stem, cert, key):
    _, _, ser, _, _, _ = _crypto()
    _write(os.path.join(dirpath, stem + ".pem"), cert.public_bytes(ser.Encoding.PEM), 0o644)
    _write(os.path.join(dirpath, stem + ".der"), cert.public_bytes(ser.Encoding.DER), 0o644)
    _write(os.path.join(dirpath, stem + ".key.pem"), key.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    _write(os.path.join(dirpath, stem + ".key.der"), key.private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()))


def _load_ca(state_dir):
    x509, _, ser, _, _, _ = _crypto()
    out = []
    for name, load in (("ca.pem", x509.load_pem_x509_certificate),
                       ("ca.key.pem", lambda b: ser.load_pem_private_key(b, None))):
        path = os.path.join(state_dir, name)
        try:
            with open(path, "rb") as f:
                out.append(load(f.read()))
        except (ValueError, TypeError) as exc:  # not PEM, or a key with a password
            raise TlsFileError("%s is not the broker's CA in PEM (%s): start the broker again in a fresh state dir"
                               % (path, str(exc).split(".")[0]))
    return out[0], out[1]


def _issue(ca_cert, ca_key, cn, server=False, days=825):
    x509, hashes, _, ec, NameOID, EKU = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(ca_cert.subject)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH if server else EKU.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName(cn), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_ca(state_dir):
    x509, hashes, _, ec, NameOID, _ = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PPMID test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    _save(state_dir, "ca", cert, key)
    scert, skey = _issue(cert, key, SERVER_HOSTNAME, server=True)
    _save(state_dir, "server", scert, skey)


def client_paths(state_dir, ident):
    base = os.path.join(state_dir, "clients", ident)
    return {"pem": base + ".pem", "key_pem": base + ".key.pem", "der": base + ".der",
            "key_der": base + ".key.der", "ca_pem": os.path.join(state_dir, "ca.pem"),
            "ca_der": os.path.join(state_dir, "ca.der")}


def monitor_identity(state_dir, ident):
    """The paths of read-only identity `ident` (`monitor-NAME`) in a `ppmid broker` state
    dir, issued on first use: the tools that only watch (`ppmid capture`, `ppmid status`)
    each have their own, so they never share a connection with a DCC User's tool (the
    broker makes the certificate's identity the client id)."""
    if not MONITOR_RE.match(ident):
        raise BrokerError("%r is not a monitor identity (monitor-NAME)" % ident)
    paths = client_paths(state_dir, ident)
    if not os.path.exists(paths["pem"]):
        if not os.path.exists(paths["ca_pem"]):
            raise BrokerError("%s is not a broker state dir (no ca.pem): ppmid broker start --state-dir DIR"
                              % state_dir)
        Broker(state_dir, users=()).add_identity(ident)
    return paths


def issue(state_dir, ident):
    """Issue (once) a client certificate whose CN is `ident`. Returns its paths."""
    paths = client_paths(state_dir, ident)
    if not os.path.exists(paths["pem"]):
        os.makedirs(os.path.join(state_dir, "clients"), exist_ok=True)
        ca_cert, ca_key = _load_ca(state_dir)
        cert, key = _issue(ca_cert, ca_key, ident)
        _save(os.path.join(state_dir, "clients"), ident, cert, key)
    return paths


def identity_kinds(state_dir):
    """[(identity, "gateway" | "user" | "monitor")] of every certificate issued (the
    engines give rights by kind)."""
    out = []
    for ident in identities(state_dir):
        kind = ("gateway" if EUI_RE.match(ident) else "user" if USER_RE.match(ident)
                else "monitor" if MONITOR_RE.match(ident) else None)
        if kind:
            out.append((ident, kind))
    return out


def identities(state_dir):
    d = os.path.join(state_dir, "clients")
    if not os.path.isdir(d):
        return []
    return sorted(f[:-4] for f in os.listdir(d) if f.endswith(".pem") and not f.endswith(".key.pem"))


# ---- mosquitto config -----------------------------------------------------------------
def acl_text(idents):
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid.mqtt.contract import ROOT
    from ppmid.mqtt.contract_host import GATEWAY_WRITES, GATEWAY_READS
    lines = ["# generated by ppmid broker: do not edit",
             "# every gateway (user name = its EUI-64, from its certificate): its own topics only"]
    lines += ["pattern read %s%%u/%s" % (ROOT, name) for name in GATEWAY_READS]
    lines += ["pattern write %s%%u/%s" % (ROOT, name) for name in GATEWAY_WRITES]
    lines.append("")
    for ident in idents:
        if USER_RE.match(ident):
            lines += ["user " + ident]
            lines += ["topic write %s+/%s" % (ROOT, name) for name in GATEWAY_READS]
            lines += ["topic read %s+/%s" % (ROOT, name) for name in GATEWAY_WRITES]
            lines.append("")
        elif MONITOR_RE.match(ident):
            lines += ["user " + ident, "topic read %s#" % ROOT, ""]
    return "\n".join(lines) + "\n"


def conf_text(state_dir, port):
    j = lambda name: os.path.join(state_dir, name)  # noqa: E731
    lines = ["# generated by ppmid broker",
             "per_listener_settings false",
             "allow_anonymous false",
             "listener %d 127.0.0.1" % port,
             "cafile " + j("ca.pem"),
             "certfile " + j("server.pem"),
             "keyfile " + j("server.key.pem"),
             "require_certificate true",
             "use_identity_as_username true",
             # the client id is the certificate's identity, whatever the client sends: no
             # certificate can take over (kick, or wipe the queue of) another's session
             "use_username_as_clientid true",
             "acl_file " + j("acl"),
             "persistence true",
             "persistence_location " + j("data") + "/",
             "autosave_interval 1",
             "max_queued_messages 1000",
             "set_tcp_nodelay true",  # small MQTT packets: no Nagle stalls (40 ms each)
             "log_dest file " + j("mosquitto.log"),
             "log_type error", "log_type warning", "log_type notice", "log_type information",
             "connection_messages true"]
    if os.geteuid() == 0:
        lines.append("user root")  # mosquitto would drop to `mosquitto`, which cannot read the keys
    return "\n".join(lines) + "\n"


def _alive(pid):
    # broker.json is ours, but may be hand-edited: no pid (or 0, which kill() takes as our
    # own process group) is no broker
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Broker:
    """One broker process for one state dir, engine "mosquitto" or "rabbitmq" (default: the
    engine broker.json names, else mosquitto). start() is idempotent on the certificates:
    the CA and identities survive restarts (clients keep working), the port is kept once
    chosen."""

    def __init__(self, state_dir, gateways=(), users=("dcc-user-test",), engine=None):
        self.state_dir = os.path.abspath(state_dir)
        self.gateways = [gateway_identity(g) for g in gateways]
        self.users = [user_identity(u) for u in users]
        self.proc = None
        if engine is None:
            engine = (self.info() or {}).get("engine", "mosquitto")
        if engine not in ENGINES:
            raise BrokerError("broker engine %r: choose one of %s" % (engine, ", ".join(ENGINES)))
        self.engine = engine

    @property
    def info_path(self):
        return os.path.join(self.state_dir, "broker.json")

    def info(self):
        try:
            with open(self.info_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @property
    def port(self):
        return self.info()["port"]

    def _rabbitmq(self):
        from host_tools import broker_rabbitmq
        return broker_rabbitmq

    def _write_rights(self):
        """The engine's rights for every identity issued: mosquitto's ACL file, RabbitMQ's
        definitions (users and topic permissions)."""
        if self.engine == "mosquitto":
            with open(os.path.join(self.state_dir, "acl"), "w") as f:
                f.write(acl_text(identities(self.state_dir)))

    def prepare(self):
        os.makedirs(os.path.join(self.state_dir, "data"), exist_ok=True)
        if not os.path.exists(os.path.join(self.state_dir, "ca.pem")):
            make_ca(self.state_dir)
        for ident in self.gateways + self.users:
            issue(self.state_dir, ident)
        self._write_rights()

    def add_identity(self, ident):
        """Issue a certificate and give a running broker its rights (mosquitto: SIGHUP
        rereads the ACL; RabbitMQ: rabbitmqctl import_definitions, a few seconds)."""
        paths = issue(self.state_dir, ident)
        self._write_rights()
        info = self.info()
        if info and _alive(info.get("pid")):
            if self.engine == "mosquitto":
                os.kill(info["pid"], signal.SIGHUP)
                time.sleep(0.3)
            else:
                try:
                    self._rabbitmq().reload_identities(self.state_dir, identity_kinds(self.state_dir), ident)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    raise BrokerError("RabbitMQ did not take the new identity %s: %s" % (ident, exc))
        return paths

    def _spawn(self, port):
        """Write the engine's config and start its process; returns (argv, log to read)."""
        if self.engine == "mosquitto":
            if not os.path.exists(MOSQUITTO):
                raise BrokerError("mosquitto not found at %s (apt-get install mosquitto)" % MOSQUITTO)
            conf = os.path.join(self.state_dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(conf_text(self.state_dir, port))
            argv, env, logname = [MOSQUITTO, "-c", conf], None, os.path.join(self.state_dir, "mosquitto.log")
        else:
            rmq = self._rabbitmq()
            if not rmq.available():
                raise BrokerError("rabbitmq-server not found at %s (apt-get install rabbitmq-server)" % rmq.SERVER)
            try:
                auth_port = rmq.start_clientid_auth(self.state_dir)
            except RuntimeError as exc:
                raise BrokerError(str(exc))
            rmq.prepare(self.state_dir, port, identity_kinds(self.state_dir), auth_port)
            argv, env, logname = rmq.command(self.state_dir), rmq.env(self.state_dir), rmq.log_path(self.state_dir)
        log = open(os.path.join(self.state_dir, self.engine + ".stderr"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, env=env)
        log.close()
        return logname

    def start(self, port=None, timeout=None):
        info = self.info()
        if info and _alive(info.get("pid")):
            raise BrokerError("a broker is already running for %s (pid %d, port %d)"
                              % (self.state_dir, info["pid"], info["port"]))
        if timeout is None:  # RabbitMQ boots an Erlang VM and its database: seconds, not ms
            timeout = 10.0 if self.engine == "mosquitto" else 90.0
        self.prepare()
        if port is None:
            port = info["port"] if info else free_port()
        t0 = time.monotonic()
        rmq = self._rabbitmq() if self.engine == "rabbitmq" else None
        logname = self._spawn(port)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                self._cleanup()
                raise BrokerError("%s exited with %d; see %s" % (self.engine, self.proc.returncode, logname))
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError("%s did not listen on port %d within %.0fs; see %s"
                                      % (self.engine, port, timeout, logname))
                time.sleep(0.05)
        if rmq:
            try:
                rmq.await_startup(self.state_dir, max(1.0, deadline - time.monotonic()))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                self.stop()
                raise BrokerError("rabbitmq did not finish starting: %s; see %s" % (exc, logname))
        pid = self.proc.pid
        if rmq:  # the VM, not the script around it: its memory, its signals
            pid = rmq.server_pid(self.proc.pid) or pid
        out = {"host": "127.0.0.1", "port": port, "pid": pid, "engine": self.engine,
               "server_hostname": SERVER_HOSTNAME, "state_dir": self.state_dir,
               "ca": os.path.join(self.state_dir, "ca.pem"),
               "start_s": round(time.monotonic() - t0, 2)}
        with open(self.info_path, "w") as f:
            json.dump(out, f, indent=1)
        return out

    def _cleanup(self):
        """What outlives the engine's process (RabbitMQ: the client-id service, epmd);
        True if the client-id service was still running."""
        if self.engine == "rabbitmq":
            return self._rabbitmq().after_stop(self.state_dir)
        return False

    def stop(self, timeout=None):
        """SIGTERM (mosquitto saves its persistence file; RabbitMQ stops cleanly), then
        SIGKILL if needed. True if anything was stopped: a RabbitMQ node that died on its
        own leaves its client-id service and epmd running, and they are stopped here too."""
        if timeout is None:
            timeout = 10.0 if self.engine == "mosquitto" else 60.0
        info = self.info()
        pid = (info or {}).get("pid") if info and info.get("pid") and _alive(info["pid"]) else None
        if pid is None and self.proc:
            pid = self.proc.pid
        if not pid:
            return self._cleanup()
        stopped = False
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                if self.proc:
                    self.proc.poll()
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped = True
        if self.proc:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return self._cleanup() or stopped

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
