"""Replay a command trace (docs/trace.md) against a gateway through MQTT, as a DCC User.

Each line is signed into an envelope (docs/envelope.md) with the gateway's envelope key,
published on ppmid/v1/EUI/cmd at its at_ms (QoS 1); every message on ppmid/v1/EUI/rsp is
collected. The report says, for the whole run: commands, responses, lost (no final status),
rejected and failed by code, latency (command published -> response received) p50/p95/max
in ms, and the lines whose final status did not match their `expect`.

Works against any gateway that speaks the topic contract: the emulated board, a real
ESP32, or a test double. Lines that travel by NFC (via nfc-phone / nfc-tag) need an NFC
path: pass `nfc=callable(line, envelope)`, and lines by wire (via serial) a serial path
(`serial=callable(line, envelope)`, host_tools.wired); without one they are reported as
skipped. Their statuses are collected on the rsp topic like any other (the gateway
publishes every road's).
"""
import binascii
import json
import os
import socket
import ssl
import threading
import time

from host_tools import mpcompat

mpcompat.install()

from ppmid.mqtt.contract import Topics  # noqa: E402  (firmware module, after mpcompat)

FINAL = ("response", "already-executed", "rejected", "failed", "timeout", "topped-up")
# final statuses that say the meter has the command: its response, or its refusal of a
# copy resent after an uncertain delivery (it executed the first one, docs/relay.md)
ANSWERED = ("response", "already-executed")
CONCLUSIVE = ("response", "already-executed", "rejected", "failed", "topped-up")  # timeout may still be followed by a late response
# a top-up line's target "esme" / "gsme": the test devices unless the caller names others
TEST_TARGETS = {"esme": "00DB1234567890A0", "gsme": "00DB1234567890A1"}


class ReplayError(Exception):
    """A replay that cannot run (broker address, trace, TLS files)."""

    code = "E_REPLAY_RUN"


def parse_broker_url(url):
    """mqtts://host:port, host:port or host -> (host, port). TLS is always used."""
    if "://" in url:
        scheme, url = url.split("://", 1)
        if scheme not in ("mqtts", "ssl", "tls"):
            raise ReplayError("broker URL scheme %r: only TLS (mqtts://) is supported" % scheme)
    url = url.rstrip("/")
    if url.startswith("["):
        host, _, rest = url[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif url.count(":") == 1:
        host, port = url.split(":")
    else:
        host, port = url, ""
    try:
        return host, int(port) if port else 8883
    except ValueError:
        raise ReplayError("broker port %r is not a number" % port)


def identity_from_state_dir(state_dir, user="dcc-user-test"):
    """(host, port, ca, cert, key) from a `ppmid broker start --state-dir` directory."""
    path = os.path.join(state_dir, "broker.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except OSError:
        raise ReplayError("no broker.json in %s (ppmid broker start --state-dir %s)" % (state_dir, state_dir))
    except ValueError as exc:  # as host_tools.mqtt_tools.broker_info says it
        raise ReplayError("%s is not valid JSON (%s): start the broker again" % (path, exc))
    if not isinstance(info, dict) or not isinstance(info.get("port"), int):
        raise ReplayError("%s does not name the broker's port: start the broker again" % path)
    ident = user if user.startswith("dcc-user-") else "dcc-user-" + user
    base = os.path.join(state_dir, "clients", ident)
    paths = (os.path.join(state_dir, "ca.pem"), base + ".pem", base + ".key.pem")
    for p in paths:
        if not os.path.exists(p):
            raise ReplayError("missing %s (ppmid broker issue --state-dir %s --user %s)" % (p, state_dir, ident[9:]))
    return (info.get("host", "127.0.0.1"), info["port"]) + paths


def envelope_payload(key, line, now_s, targets=None, kid=None):
    """(envelope, JSON text) of a trace line signed with key; kid: the key's name, carried
    in the envelope (keys per DCC User), or None."""
    from ppmid import envelope
    expires = None if line.get("expires_in_s") is None else int(now_s) + line["expires_in_s"]
    if line.get("utrn") is not None:
        return topup_payload(key, line, expires, targets or TEST_TARGETS, kid)
    env = envelope.sign(key, line["id"], line["gbcs"], expires, kid)
    obj = {"id": env.id, "gbcs": binascii.b2a_base64(line["gbcs"], newline=False).decode(),
           "mac": binascii.hexlify(env.mac).decode()}
    if expires is not None:
        obj["expires"] = expires
    if kid is not None:
        obj["kid"] = kid
    return env, json.dumps(obj)


def topup_payload(key, line, expires, targets, kid=None):
    """A top-up line (docs/trace.md) signed into its envelope (docs/envelope.md "Top-ups")."""
    from ppmid import topup
    target = targets.get(line["target"], line["target"]).upper()
    env = topup.TopupEnvelope(line["id"], line["utrn"], target, expires,
                              topup.compute_mac(key, line["id"], expires, target, line["utrn"], kid), kid)
    obj = {"id": env.id, "utrn": env.utrn, "target": target, "mac": binascii.hexlify(env.mac).decode()}
    if expires is not None:
        obj["expires"] = expires
    if kid is not None:
        obj["kid"] = kid
    return env, json.dumps(obj)


def error_code(m):
    """The error code of a status message: "error" is {"code", "message"} in the topic
    contract; a bare string is accepted too."""
    e = m.get("error")
    if isinstance(e, dict):
        return e.get("code")
    return e if isinstance(e, str) else None


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(1, -(-len(s) * p // 100))  # ceil
    return s[int(k) - 1]


class Replayer:
    """client_id: the DCC User's MQTT client id, stable by default ("IDENTITY/replay-EUI",
    IDENTITY the certificate's; broker.tool_client_id):
    the session is persistent (clean session false), so the broker keeps the statuses
    the gateway publishes while we are disconnected (a broker restart) and hands them over
    when we are back. The session is wiped before connecting (nothing stale from an
    earlier run) and dropped by close(). Two replays to one gateway at once need two ids."""

    def __init__(self, host, port, gateway, key, ca, cert, keyfile, speed=1.0, settle_s=40.0,
                 nfc=None, client_id=None, out=print, connect_timeout=10.0, serial=None, targets=None):
        self.host, self.port = host, port
        self.gateway = gateway.upper()
        self.key = key
        self.kid = None  # the key's name when it is a DCC User's own (keys per DCC User)
        self.tls = (ca, cert, keyfile)
        self.speed = speed
        self.settle_s = settle_s
        self.nfc = nfc
        self.serial = serial
        if cert is not None:
            from host_tools.broker import check_tls_files, tool_client_id
            check_tls_files(ca, cert, keyfile)
            if client_id is None:
                client_id = tool_client_id(cert, "replay-%s" % self.gateway)
        self.client_id = client_id  # None only without a certificate: a report-only replayer
        self.out = out
        self.connect_timeout = connect_timeout
        self.progress = None  # progress(lines handed over so far, total): a host_tools.progress bar
        self.targets = dict(targets or TEST_TARGETS)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.received = {}   # id -> [(t_monotonic, message dict)]
        self.alerts = []
        self.foreign = 0     # rsp messages for ids not in the trace
        self._acked = set()  # mids of our PUBLISHes the broker has PUBACKed
        self.client = None

    # ---- MQTT ----------------------------------------------------------------------------
    def _client(self, clean_session=False):
        import paho.mqtt.client as mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean_session)
        ca, cert, keyfile = self.tls
        c.tls_set(ca_certs=ca, certfile=cert, keyfile=keyfile, cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(0.2, 2)
        # a command published while the broker is away stays in paho's queue and goes on
        # reconnect: no limit on that queue or on the messages in flight
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        return c

    def _on_message(self, client, userdata, msg):
        t = time.monotonic()
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            return
        with self._cond:
            if msg.topic.endswith("/alert"):
                self.alerts.append(obj)
            elif isinstance(obj, dict) and isinstance(obj.get("id"), str):
                self.received.setdefault(obj["id"], []).append((t, obj))
            self._cond.notify_all()

    def note(self, id, obj, t=None):
        """A status that came by another road than MQTT (a phone's result, host_tools.nfc_road):
        counted as if it had come on rsp."""
        with self._cond:
            self.received.setdefault(id, []).append((time.monotonic() if t is None else t, obj))
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()

    def drop_session(self):
        """Connect once with clean session true: the broker forgets our session and
        whatever it queued for it. Best effort (False if the broker is unreachable)."""
        c = self._client(clean_session=True)
        done = threading.Event()
        c.on_connect = lambda client, userdata, flags, rc, properties=None: done.set()
        try:
            c.connect(self.host, self.port, keepalive=10)
        except (OSError, ssl.SSLError):
            return False
        c.loop_start()
        ok = done.wait(self.connect_timeout)
        c.disconnect()
        c.loop_stop()
        return ok

    def connect(self):
        self.drop_session()
        c = self._client()
        ready = threading.Event()
        state = {}

        def on_connect(client, userdata, flags, rc, properties=None):
            state["rc"] = rc
            if not rc.is_failure:
                # renewed on every connect: a broker that lost its sessions must not
                # leave us deaf
                topics = Topics(self.gateway)
                client.subscribe([(topics.rsp, 1), (topics.alert, 1)])

        def on_subscribe(client, userdata, mid, rcs, properties=None):
            state["sub"] = rcs
            ready.set()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        try:
            c.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise ReplayError("cannot connect to the broker at %s:%d: %s" % (self.host, self.port, exc))
        try:  # no Nagle: a PUBLISH after a PUBACK would wait for the peer's delayed ACK
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        c.loop_start()
        if not ready.wait(self.connect_timeout):
            c.loop_stop()
            rc = state.get("rc")
            raise ReplayError("broker did not accept us (%s)" % (rc if rc is not None else "no CONNACK"))
        if any(getattr(r, "is_failure", False) for r in state.get("sub", [])):
            c.loop_stop()
            raise ReplayError("broker refused the subscription to the rsp/alert topics (ACL?)")
        self.client = c
        return c

    def close(self):
        c = self.client
        if c is not None:
            c.disconnect()
            c.loop_stop()
            self.client = None
            # drop our persistent session, or the broker keeps queueing statuses for it
            self.drop_session()

    def publish(self, topic, payload):
        """Publish QoS 1; never raises for a broker that is away: paho keeps the message
        and sends it when it has reconnected. Returns its mid (see wait_published)."""
        info = self.client.publish(topic, payload, qos=1)
        if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN (queued for reconnect)
            self.out("replay: publish on %s not queued: rc %s" % (topic, info.rc))
            return None
        return info.mid

    def wait_published(self, mids, timeout):
        """Wait up to timeout s until the broker has PUBACKed every mid; the mids still
        unacknowledged (their commands will show as lost if they never arrive)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                left = [m for m in mids if m is not None and m not in self._acked]
                if not left or time.monotonic() >= deadline:
                    return left
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    # ---- run -----------------------------------------------------------------------------
    def run(self, lines):
        """Publish every line at its time, collect statuses, return the report dict."""
        if self.client is None:
            self.connect()
        topic = Topics(self.gateway).cmd
        sent = {}        # id -> t_monotonic
        skipped = []
        pubs = []
        t0 = time.monotonic()
        wall0 = time.time()
        for n, line in enumerate(sorted(lines, key=lambda x: x["at_ms"])):
            if self.progress is not None:
                self.progress(n, len(lines))
            due = t0 + line["at_ms"] / 1000.0 / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            env, payload = envelope_payload(self.key, line, time.time(), self.targets, self.kid)
            via = line.get("via", "mqtt")
            if via != "mqtt":
                path = self.serial if via == "serial" else self.nfc
                if path is None:
                    skipped.append({"id": line["id"], "why": "via %s needs %s path" % (
                        via, "a serial" if via == "serial" else "an NFC")})
                    continue
                sent[line["id"]] = time.monotonic()
                path(line, env)
                continue
            sent[line["id"]] = time.monotonic()
            pubs.append(self.publish(topic, payload))
        if self.progress is not None:
            self.progress(len(lines), len(lines))
        unacked = self.wait_published(pubs, self.connect_timeout + self.settle_s)
        if unacked:
            self.out("replay: %d commands not acknowledged by the broker" % len(unacked))
        last = time.monotonic()
        deadline = last + self.settle_s
        with self._cond:
            while time.monotonic() < deadline:
                if all(self._final(i, conclusive=True) for i in sent):
                    break
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.report(lines, sent, skipped, time.time() - wall0, t0)

    def _final(self, id, conclusive=False):
        msgs = self.received.get(id, ())
        final = None
        for t, m in msgs:
            if m.get("status") in FINAL:
                final = (t, m)
                if m["status"] in ANSWERED + ("topped-up",):
                    break  # a response (late or not), the meter's refusal of a copy, or a top-up's answer ends the story
        if conclusive and final is not None and final[1]["status"] == "timeout":
            return None
        return final

    def report(self, lines, sent, skipped, duration_s, t_start=None):
        by_id = {x["id"]: x for x in lines}
        t_start = min(sent.values(), default=0.0) if t_start is None else t_start
        rep = {"version": 1, "gateway": self.gateway, "duration_s": round(duration_s, 3),
               "commands": len(sent), "responses": 0, "already_executed": 0, "answered": 0, "late": 0,
               "timeouts": 0, "lost": [],
               "rejected": {}, "failed": {}, "latency_ms": {"n": 0, "p50": None, "p95": None, "max": None},
               "mismatches": [], "skipped": skipped, "alerts": len(self.alerts), "per_id": {}, "roads": {},
               # as the gateway reported them; `ppmid emulate` replaces these with what the
               # emulated meter did (docs/trace.md)
               "topups": {"applied": 0, "rejected": 0, "applied_twice": 0}}
        applied_utrns = {}
        lat = []
        with self._lock:
            for id in sent:
                fin = self._final(id)
                statuses = [m.get("status") for t, m in self.received.get(id, ())]
                via = by_id[id].get("via", "mqtt")
                entry = {"statuses": statuses, "via": via, "sent_s": round(sent[id] - t_start, 3)}
                road = rep["roads"].setdefault(via, {"commands": 0, "final": {}})
                road["commands"] += 1
                got = None
                if fin is None:
                    rep["lost"].append(id)
                else:
                    t, m = fin
                    got = {"status": m["status"]}
                    code = error_code(m)
                    if code:
                        got["error"] = code
                    if m["status"] == "response":
                        rep["responses"] += 1
                        ms = int(round((t - sent[id]) * 1000))
                        lat.append(ms)
                        entry["latency_ms"] = ms
                        if m.get("late"):
                            rep["late"] += 1
                            got["late"] = True
                    elif m["status"] == "topped-up":
                        rep["topups"]["applied"] += 1
                        u = by_id[id].get("utrn")
                        applied_utrns[u] = applied_utrns.get(u, 0) + 1
                        ms = int(round((t - sent[id]) * 1000))
                        entry["latency_ms"] = ms
                        # (the meter's figures are not on rsp: docs/security.md "Top-up figures")
                    elif m["status"] == "already-executed":
                        rep["already_executed"] += 1
                    elif m["status"] == "timeout":
                        rep["timeouts"] += 1
                    elif m["status"] == "rejected":
                        code = code or "?"
                        if isinstance(m.get("error"), dict) and m["error"].get("message"):
                            entry["refusal"] = m["error"]["message"]   # its sentence: which rule refused it
                        rep["rejected"][code] = rep["rejected"].get(code, 0) + 1
                        if by_id[id].get("utrn") is not None:
                            rep["topups"]["rejected"] += 1
                    elif m["status"] == "failed":
                        code = code or "?"
                        rep["failed"][code] = rep["failed"].get(code, 0) + 1
                entry["final"] = got
                final_name = got["status"] if got else "lost"
                road["final"][final_name] = road["final"].get(final_name, 0) + 1
                exp = by_id[id].get("expect")
                if exp:
                    ok = got is not None and all(got.get(k, False if k == "late" else None) == v
                                                 for k, v in exp.items())
                    if not ok:
                        rep["mismatches"].append({"id": id, "expect": exp, "got": got})
                rep["per_id"][id] = entry
        rep["topups"]["applied_twice"] = sum(1 for n in applied_utrns.values() if n > 1)
        if lat:
            rep["latency_ms"] = {"n": len(lat), "p50": percentile(lat, 50), "p95": percentile(lat, 95),
                                 "max": max(lat)}
        rep["answered"] = rep["responses"] + rep["already_executed"]
        rep["lost_count"] = len(rep["lost"])
        rep["foreign"] = sum(1 for i in self.received if i not in sent)
        return rep


def table(rep):
    """The report as a short text table."""
    lat = rep["latency_ms"]
    rows = [("gateway", rep["gateway"]), ("commands", rep["commands"]), ("responses", rep["responses"]),
            ("already executed", rep.get("already_executed", 0)),
            ("  late", rep["late"]), ("timeouts", rep["timeouts"]), ("lost", rep["lost_count"])]
    for code in sorted(rep["rejected"]):
        rows.append(("rejected " + code, rep["rejected"][code]))
    for code in sorted(rep["failed"]):
        rows.append(("failed " + code, rep["failed"][code]))
    rows.append(("latency ms p50/p95/max", "%s / %s / %s (n=%d)" % (lat["p50"], lat["p95"], lat["max"], lat["n"])))
    rows.append(("expectation mismatches", len(rep["mismatches"])))
    roads = rep.get("roads") or {}
    if set(roads) - {"mqtt"}:
        for via in sorted(roads):
            finals = ", ".join("%s %d" % (k, v) for k, v in sorted(roads[via]["final"].items()))
            rows.append(("via " + via, "%d (%s)" % (roads[via]["commands"], finals)))
    if rep["skipped"]:
        rows.append(("skipped", len(rep["skipped"])))
    t = rep.get("topups") or {}
    if any(t.values()):
        rows.append(("top-ups applied/rejected/twice", "%s / %s / %s" % (t.get("applied"), t.get("rejected"),
                                                                      t.get("applied_twice"))))
    rows.append(("alerts", rep["alerts"]))
    w = max(len(r[0]) for r in rows)
    out = ["%s  %s" % (k.ljust(w), v) for k, v in rows]
    for m in rep["mismatches"][:20]:
        out.append("  mismatch %s: expected %s, got %s" % (m["id"], json.dumps(m["expect"], sort_keys=True),
                                                          json.dumps(m["got"], sort_keys=True)))
    return "\n".join(out)
