"""What goes into a capture (docs/captures.md): GBCS traffic from the NCP/CH emulator's log,
from MQTT (commands, statuses, responses, alerts of one gateway) and from hex or trace
files, written as pcapng by host_tools.pcap.

Direction is always the PPMID gateway's: outbound = sent by the gateway (to the CH over
the HAN, or to the broker), inbound = received by it. The comment of each packet says
the road and the direction in words, and for MQTT the envelope's fields other than the
GBCS bytes (id, status, via, error...).
"""
import base64
import binascii
import json
import os
import threading
import time

from host_tools import pcap


class CaptureError(Exception):
    code = "E_CAPTURE"


# ---- the HAN side: the CH emulator's GBCS log entries ----------------------------------------
def ch_entry(writer, entry):
    """One CH log entry ({"t", "dir": "rx"|"tx", "hex", ...}: rx = the CH received it from
    the PPMID) as one packet."""
    outbound = entry["dir"] == "rx"
    comment = "HAN: %s" % ("PPMID -> CH" if outbound else "CH -> PPMID")
    if entry.get("gbt_block"):
        comment += ", one GBT block"
    writer.gbcs(binascii.unhexlify(entry["hex"]), t=entry.get("t"), outbound=outbound, comment=comment)


# ---- the MQTT side ---------------------------------------------------------------------------
_OUTBOUND_TOPICS = ("rsp", "alert", "state", "info", "log")


def mqtt_message(writer, topic, payload, t=None):
    """One MQTT message of a gateway's topics as one packet: its GBCS message (a command,
    a response, an alert) when it carries one, the JSON itself otherwise (statuses, state,
    info). A payload that is not the JSON of the contract is still captured, as JSON text,
    with a comment that says so: a capture shows what was on the wire."""
    leaf = topic.rpartition("/")[2]
    outbound = leaf in _OUTBOUND_TOPICS
    where = "MQTT %s: %s" % (topic, "gateway -> broker" if outbound else "broker -> gateway")
    try:
        obj = json.loads(payload)
    except ValueError:
        obj = None
    gbcs = None
    if isinstance(obj, dict) and isinstance(obj.get("gbcs"), str):
        try:
            gbcs = base64.b64decode(obj["gbcs"], validate=True)
        except (binascii.Error, ValueError):
            gbcs = None
    if gbcs:
        rest = {k: v for k, v in obj.items() if k not in ("gbcs", "mac")}
        writer.gbcs(gbcs, t=t, outbound=outbound, comment="%s %s" % (where, json.dumps(rest, sort_keys=True)))
    else:
        note = "" if isinstance(obj, dict) else " (not JSON of the contract)"
        writer.json(bytes(payload), t=t, outbound=outbound, comment=where + note)


class BrokerCapture:
    """Subscribes to every topic of one gateway (cmd included) and writes each message to
    `writer`. Needs an identity that may read them: a `monitor-NAME` certificate of a
    `ppmid broker` state dir (host_tools.broker; read-only on every gateway's topics)."""

    def __init__(self, broker_dir, gateway, writer, ident="monitor-capture"):
        self.broker_dir = broker_dir
        self.gateway = gateway.upper()
        self.writer = writer
        self.ident = ident
        self.count = 0
        self._client = None
        self._lock = threading.Lock()

    def start(self, timeout=10):
        from host_tools import mqtt_tools as mt
        from host_tools.broker import BrokerError, monitor_identity
        try:
            monitor_identity(self.broker_dir, self.ident)
        except BrokerError as exc:
            raise CaptureError(str(exc))
        subscribed = threading.Event()
        c = mt.paho_client(self.broker_dir, self.ident)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a, **k: subscribed.set()
        try:
            mt.connect(c, self.broker_dir, timeout)
        except RuntimeError as exc:
            raise CaptureError(str(exc))
        topic = "%s%s/#" % (_root(), self.gateway)
        # paho reconnects by itself after a broker restart, but a clean session has lost
        # the subscription: make it again on every connect
        c.on_connect = lambda client, *a, **k: client.subscribe(topic, 1)
        c.subscribe(topic, 1)
        self._client = c
        if not subscribed.wait(timeout):
            self.stop()
            raise CaptureError("the broker did not confirm the subscription within %ss" % timeout)
        return self

    def _on_message(self, client, userdata, msg):
        with self._lock:
            mqtt_message(self.writer, msg.topic, msg.payload, time.time())
            self.count += 1

    def stop(self):
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


def _root():
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid.mqtt.contract import ROOT
    return ROOT


# ---- files: hex messages, command traces, CH logs --------------------------------------------
def _first_line(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
    return ""


def convert(path, writer, start_t=None):
    """Write the messages of `path` to `writer`; returns the kind of input it was: "ch-log"
    (the NCP emulator's --log JSONL, with its times and directions), "trace" (a command
    trace, docs/trace.md: packets at start_t + at_ms, outbound from the DCC User) or "hex"
    (one message per line, a .HEX file or a folder of them, 1 ms apart). CaptureError or
    the readers' own errors (TraceError, GbcsInputError) for bad input."""
    start_t = time.time() if start_t is None else start_t
    if not os.path.exists(path):
        raise CaptureError("no such file or folder: %s" % path)
    if not os.path.isdir(path) and _first_line(path).startswith("{"):
        try:
            first = json.loads(_first_line(path))
        except ValueError as exc:
            raise CaptureError("%s: the first line starts like JSON but is not (%s)" % (path, exc))
        if isinstance(first, dict) and "dir" in first and "hex" in first:
            _convert_ch_log(path, writer)
            return "ch-log"
        from host_tools.trace import load
        for line in load(path):
            writer.gbcs(line["gbcs"], t=start_t + line["at_ms"] / 1000.0, outbound=False,
                        comment="trace %s: id %s, via %s" % (os.path.basename(path), line["id"], line["via"]))
        return "trace"
    from host_tools.gbcs_tools import iter_inputs, parse_hex
    n = 0
    for source, text in iter_inputs(path):
        try:
            raw = parse_hex(text)
        except ValueError as exc:
            raise CaptureError("%s: %s" % (source, exc))
        if raw is None:
            continue
        writer.gbcs(raw, t=start_t + n / 1000.0, comment=source)
        n += 1
    if not n:
        raise CaptureError("no GBCS message in %s" % path)
    return "hex"


def _convert_ch_log(path, writer):
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if entry.get("dir") not in ("rx", "tx"):
                    raise ValueError("dir must be rx or tx")
                ch_entry(writer, entry)
            except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
                raise CaptureError("%s line %d: not a CH log entry (%s)" % (path, i, exc))
