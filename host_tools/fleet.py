"""Several gateways at a glance (`ppmid status`, docs/captures.md "Fleet status"): what
their retained `state` and `info` topics say (docs/mqtt.md), one line per gateway, and
the last command status seen on `rsp` while watching.

`state` is retained and the broker holds `{"state": "offline"}` as each gateway's last
will, so a gateway that died reads offline; `info` (retained) is what the gateway said
when it was last connected, shown as such.
"""
import json
import threading
import time

from host_tools import mpcompat

mpcompat.install()

from ppmid.mqtt.contract import ROOT  # noqa: E402  (firmware module, after mpcompat)


class FleetError(Exception):
    code = "E_FLEET"


class Fleet:
    """What has been heard of each gateway. Fed by on_message (any thread)."""

    def __init__(self):
        self.gateways = {}       # EUI -> {"state", "info", "last", "heard"}
        self.changed = threading.Condition()
        self.version = 0

    def on_message(self, topic, payload, t=None):
        parts = topic.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) + "/" != ROOT:
            return
        eui, leaf = parts[2], parts[3]
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            obj = {"unreadable": bytes(payload[:40]).decode("utf-8", "replace")}
        t = time.time() if t is None else t
        with self.changed:
            g = self.gateways.setdefault(eui, {"state": None, "info": None, "last": None, "heard": None})
            if leaf == "state":
                g["state"] = obj.get("state", "?")
            elif leaf == "info":
                g["info"] = obj
            elif leaf == "rsp":
                g["last"] = {"id": obj.get("id"), "status": obj.get("status"), "at": t,
                             "error": (obj.get("error") or {}).get("code") if isinstance(obj.get("error"), dict)
                             else obj.get("error")}
            else:
                return
            g["heard"] = t
            self.version += 1
            self.changed.notify_all()

    def summary(self, eui, now=None):
        """One gateway as a flat dict (the JSON form of its line)."""
        g = self.gateways[eui]
        info = g["info"] or {}
        now = time.time() if now is None else now
        out = {"gateway": eui, "online": g["state"] == "online", "state": g["state"] or "unknown",
               "fw": info.get("fw"), "board": info.get("board"), "han": info.get("han"),
               "relay": info.get("state"), "health": info.get("health"),
               "queued": info.get("queued"), "in_flight": info.get("in_flight"), "to_publish": info.get("to_publish"),
               "heap_free": info.get("heap_free"), "heap_min": info.get("heap_min"),
               "clock": info.get("clock"), "clock_synced_at": info.get("clock_synced_at"), "last": None,
               "auth": info.get("auth")}   # "locked": every command refused (docs/mqtt.md); else None
        if g["last"]:
            last = dict(g["last"])
            last["ago_s"] = round(now - last.pop("at"), 1)
            out["last"] = last
        return out

    def line(self, eui, now=None):
        s = self.summary(eui, now)
        now = time.time() if now is None else now

        def v(x):
            return "-" if x is None else str(x)

        queue = "-" if s["queued"] is None else "%s queued, %s in flight, %s to publish" % (
            s["queued"], v(s["in_flight"]), v(s["to_publish"]))
        heap = "-" if s["heap_free"] is None else "%s free (min %s)" % (s["heap_free"], v(s["heap_min"]))
        clock = v(s["clock"])
        if s["clock_synced_at"]:
            clock += " (synced %ds ago)" % max(0, now - s["clock_synced_at"])
        relay = v(s["relay"])
        if s["auth"] == "locked":
            relay += " (locked: every command refused)"
        elif s["auth"] is not None:
            relay += " (auth %s)" % s["auth"]
        last = "-"
        if s["last"]:
            L = s["last"]
            last = "%s %s%s (%ss ago)" % (L["id"], L["status"], " " + L["error"] if L.get("error") else "", L["ago_s"])
        return "%s  %-7s  fw %s  han %s  relay %s  queue %s  last %s  heap %s  clock %s" % (
            eui, s["state"], v(s["fw"]), v(s["han"]), relay, queue, last, heap, clock)

    def lines(self, now=None):
        with self.changed:
            return [self.line(e, now) for e in sorted(self.gateways)]


class FleetWatcher:
    """A paho client subscribed to every gateway's state, info and rsp, feeding a Fleet."""

    def __init__(self, fleet, host, port, ca, cert, key, client_id=None):
        self.fleet = fleet
        self.addr = (host, port)
        self.tls = (ca, cert, key)
        self.client_id = client_id
        self._client = None

    def start(self, timeout=10.0):
        import secrets
        import ssl
        import paho.mqtt.client as mqtt
        ca, cert, key = self.tls
        from host_tools.broker import check_tls_files
        check_tls_files(ca, cert, key)
        if self.client_id is None:
            from host_tools.broker import tool_client_id
            self.client_id = tool_client_id(cert, "status-" + secrets.token_hex(3))
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        try:
            c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise FleetError("cannot load the TLS identity: %s" % exc)
        topics = [(ROOT + "+/" + leaf, 1) for leaf in ("state", "info", "rsp")]
        ready = threading.Event()
        result = {}

        def on_connect(client, userdata, flags, rc, properties=None):
            result["rc"] = rc
            if not getattr(rc, "is_failure", rc != 0):
                client.subscribe(topics)  # again after every reconnect (clean session)

        def on_subscribe(client, userdata, mid, rcs, properties=None):
            ready.set()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = lambda client, userdata, msg: self.fleet.on_message(msg.topic, msg.payload)
        try:
            c.connect(self.addr[0], self.addr[1], keepalive=30)
        except (OSError, ValueError) as exc:
            raise FleetError("cannot reach the broker at %s:%s: %s" % (self.addr[0], self.addr[1], exc))
        c.loop_start()
        self._client = c
        if not ready.wait(timeout):
            rc = result.get("rc")
            self.stop()
            raise FleetError("broker refused the connection: %s" % rc if rc is not None
                             else "no answer from the broker within %ss" % timeout)
        return self

    def settle(self, quiet_s=0.5, max_s=5.0):
        """Wait until the retained messages have come (no news for quiet_s)."""
        end = time.monotonic() + max_s
        with self.fleet.changed:
            while time.monotonic() < end:
                v = self.fleet.version
                self.fleet.changed.wait(quiet_s)
                if self.fleet.version == v:
                    return

    def stop(self):
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
