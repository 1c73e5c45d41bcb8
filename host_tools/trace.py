"""Command traces (format v1, docs/trace.md): read/write/check them, and build a sample one
from the RTDS corpus's COMMAND files.

    python -m host_tools.trace --corpus ../shared/vectors/gbcs/rtds-4.5.0 --out sample.jsonl

A trace for a fresh gateway must respect anti-replay ordering: many corpus commands share
an originator counter for the same recipient. The builder sorts each (originator,
recipient) pair by counter and, for each line, writes the status the gateway's own
validator (ppmid.gbcs.Validator, run here on the host with fresh counters and the three
test devices) will give: "response" for a command it relays, "rejected" + the code
(E_REPLAY for a counter already used, E_NOT_ALLOWED, E_PRECOMMAND, ...) otherwise.
"""
import argparse
import binascii
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from host_tools import mpcompat  # noqa: E402

mpcompat.install()

VERSION = 1
VIAS = ("mqtt", "nfc-phone", "nfc-tag", "serial")
STATUSES = ("accepted", "relayed", "response", "already-executed", "timeout", "rejected", "failed", "topped-up")
TEST_DEVICES = {"00DB1234567890A0": "ESME", "00DB1234567890A1": "GSME", "00DB1234567890A4": "PPMID"}


class TraceError(Exception):
    """A trace file that is not one (docs/trace.md)."""

    code = "E_TRACE"


MAX_AT_MS = 30 * 86400 * 1000   # a trace longer than a month is a typo, not a plan


def parse_line(text, lineno=0):
    """One trace line -> dict with at_ms, id, gbcs (bytes), via, expect (dict or None)."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise TraceError("line %d: not JSON (%s)" % (lineno, exc))
    except RecursionError:
        raise TraceError("line %d: JSON nested too deeply" % lineno)
    if not isinstance(obj, dict):
        raise TraceError("line %d: not a JSON object" % lineno)
    for k in obj:
        if k not in ("at_ms", "id", "gbcs", "utrn", "target", "via", "expect", "expires_in_s", "note", "envelope"):
            raise TraceError("line %d: unknown key %r" % (lineno, k))
    at = obj.get("at_ms")
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= MAX_AT_MS:
        raise TraceError("line %d: at_ms must be an integer from 0 to %d (30 days)" % (lineno, MAX_AT_MS))
    id = obj.get("id")
    if not isinstance(id, str) or not 1 <= len(id) <= 32 or any(not "!" <= c <= "~" for c in id):
        raise TraceError("line %d: id must be 1..32 printable ASCII characters without spaces" % lineno)
    gbcs = utrn = target = None
    if "utrn" in obj or "target" in obj:
        # a top-up: the UTRN as given (the gateway judges it: a trace may test refusals)
        # and its meter, an EUI-64 or "esme" / "gsme" (the replayer resolves them)
        utrn, target = obj.get("utrn"), obj.get("target")
        if "gbcs" in obj:
            raise TraceError("line %d: a line carries gbcs or utrn, not both" % lineno)
        if not isinstance(utrn, str) or not utrn or len(utrn) > 64:
            raise TraceError("line %d: utrn must be a string (the 20 digits)" % lineno)
        if not isinstance(target, str) or not (target in ("esme", "gsme") or len(target) == 16):
            raise TraceError("line %d: target must be \"esme\", \"gsme\" or an EUI-64 (16 hex digits)" % lineno)
    else:
        try:
            gbcs = binascii.unhexlify(obj.get("gbcs", ""))
        except (binascii.Error, TypeError, ValueError):
            raise TraceError("line %d: gbcs must be hex" % lineno)
        if not gbcs:
            raise TraceError("line %d: gbcs is empty" % lineno)
    via = obj.get("via", "mqtt")
    if via not in VIAS:
        raise TraceError("line %d: via must be one of %s" % (lineno, ", ".join(VIAS)))
    expect = obj.get("expect")
    if expect is not None:
        if not isinstance(expect, dict) or any(k not in ("status", "error", "late") for k in expect):
            raise TraceError("line %d: expect must be an object with status / error / late" % lineno)
        if "status" in expect and expect["status"] not in STATUSES:
            raise TraceError("line %d: expect.status must be one of %s" % (lineno, ", ".join(STATUSES)))
        if "error" in expect and not (isinstance(expect["error"], str) and expect["error"].startswith("E_")):
            raise TraceError("line %d: expect.error must be an error code such as \"E_REPLAY\"" % lineno)
        if "late" in expect and not isinstance(expect["late"], bool):
            raise TraceError("line %d: expect.late must be true or false" % lineno)
    exp_in = obj.get("expires_in_s")
    if exp_in is not None and (isinstance(exp_in, bool) or not isinstance(exp_in, int) or not 0 <= exp_in <= MAX_AT_MS // 1000):
        raise TraceError("line %d: expires_in_s must be an integer from 0 to %d" % (lineno, MAX_AT_MS // 1000))
    env = obj.get("envelope")
    if env is not None:
        if utrn is not None:
            raise TraceError("line %d: envelope is for command lines; a top-up line is signed when it is sent" % lineno)
        env = _signed_envelope(env, id, gbcs, lineno)
    out = {"at_ms": at, "id": id, "gbcs": gbcs, "via": via, "expect": expect, "expires_in_s": exp_in,
           "envelope": env}
    if utrn is not None:
        out["utrn"] = utrn
        out["target"] = target
    return out


def _signed_envelope(text, id, gbcs, lineno):
    # a binary envelope signed elsewhere (`ppmid sign --trace`): hex, for this line's id
    # and GBCS bytes (the mac itself only the gateway can check)
    from ppmid import envelope
    try:
        raw = binascii.unhexlify(text)
        env = envelope.from_binary(raw, 65535)
    except (binascii.Error, TypeError, ValueError):
        raise TraceError("line %d: envelope must be hex" % lineno)
    except envelope.EnvelopeError as exc:
        raise TraceError("line %d: envelope is not a binary envelope: %s" % (lineno, exc))
    if env.id != id or bytes(env.gbcs) != gbcs:
        raise TraceError("line %d: envelope is not for this line's id and gbcs" % lineno)
    return raw


def _utf8_lines(f, path):
    try:
        for text in f:
            yield text
    except UnicodeDecodeError as exc:
        raise TraceError("%s is not UTF-8 text (byte 0x%02x at offset %d)" % (path, exc.object[exc.start], exc.start))


def load(path):
    """All lines of a trace, in file order; ids must be unique."""
    out = []
    seen = set()
    with open(path, encoding="utf-8", errors="strict") as f:
        for n, text in enumerate(_utf8_lines(f, path), 1):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            line = parse_line(text, n)
            if line["id"] in seen:
                raise TraceError("line %d: id %r used twice" % (n, line["id"]))
            seen.add(line["id"])
            out.append(line)
    return out


def dump_line(line):
    obj = {"at_ms": line["at_ms"], "id": line["id"]}
    if line.get("utrn") is not None:
        obj["utrn"] = line["utrn"]
        obj["target"] = line["target"]
    else:
        obj["gbcs"] = binascii.hexlify(line["gbcs"]).decode()
    if line.get("via", "mqtt") != "mqtt":
        obj["via"] = line["via"]
    if line.get("expect"):
        obj["expect"] = line["expect"]
    if line.get("expires_in_s") is not None:
        obj["expires_in_s"] = line["expires_in_s"]
    if line.get("note"):
        obj["note"] = line["note"]
    if line.get("envelope") is not None:
        obj["envelope"] = binascii.hexlify(line["envelope"]).decode()
    return json.dumps(obj, sort_keys=True)


def save(lines, path):
    with open(path, "w") as f:
        for line in lines:
            f.write(dump_line(line) + "\n")


def corpus_commands(corpus):
    """(name, bytes) of every COMMAND file (not PRECOMMAND) in the corpus, sorted by name."""
    out = []
    for dirpath, dirs, files in os.walk(corpus):
        dirs.sort()
        for fname in sorted(files):
            up = fname.upper()
            if not up.endswith(".HEX") or "COMMAND" not in up or "PRECOMMAND" in up:
                continue
            with open(os.path.join(dirpath, fname)) as f:
                text = "".join(f.read().split())
            try:
                out.append((fname[:-4], binascii.unhexlify(text)))
            except (binascii.Error, ValueError):
                continue
    return out


def gateway_config(gateway="00DB1234567890A4", devices=None):
    from ppmid import config as C
    devices = devices or TEST_DEVICES
    return C.validate({"gateway": gateway,
                       "han": {"devices": [{"eui": e, "type": t} for e, t in sorted(devices.items())]}})


def build(corpus, interval_ms=1000, devices=None, limit=None, include_rejected=True, start_ms=0):
    """A sample trace from the corpus. Commands to the test devices only; each
    (originator, recipient) pair in counter order; expectations from the firmware
    validator run with fresh counters over exactly this order."""
    from ppmid.gbcs import decode, Validator, GbcsError
    from ppmid.gbcs.validate_host import MemoryCounterStore
    devices = devices or TEST_DEVICES
    cfg = gateway_config(devices=devices)
    cands = []
    for name, buf in corpus_commands(corpus):
        try:
            m = decode(buf)
        except GbcsError:
            continue
        if m.cra != 1:
            continue
        recip = binascii.hexlify(bytes(m.recipient)).decode().upper()
        if recip not in devices:
            continue
        cands.append((binascii.hexlify(bytes(m.originator)).decode().upper(), recip, m.counter, name, buf))
    # anti-replay order: per pair by counter; pairs interleave by their first appearance
    cands.sort(key=lambda c: (c[0], c[1], c[2], c[3]))
    v = Validator(cfg, MemoryCounterStore())
    lines = []
    used = {}
    for orig, recip, counter, name, buf in cands:
        try:
            msg = v.check(buf)
            v.commit(msg)
            expect = {"status": "response"}
        except GbcsError as exc:
            if not include_rejected:
                continue
            expect = {"status": "rejected", "error": exc.code}
        base = "".join(ch for ch in name if ch.isalnum())[:24]
        n = used.get(base, 0)
        used[base] = n + 1
        id = "%s-%d" % (base, n)
        lines.append({"id": id, "gbcs": buf, "via": "mqtt", "expect": expect,
                      "note": "%s -> %s counter %d" % (orig, recip, counter)})
        if limit is not None and len(lines) >= limit:
            break
    for i, line in enumerate(lines):
        line["at_ms"] = start_ms + i * interval_ms
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m host_tools.trace",
                                description="build a sample command trace (v1) from the RTDS corpus")
    p.add_argument("--corpus", default=os.path.join(os.path.dirname(ROOT), "shared", "vectors", "gbcs", "rtds-4.5.0"))
    p.add_argument("--out", required=True)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--limit", type=int)
    p.add_argument("--only-relayable", action="store_true",
                   help="leave out the commands the gateway would reject (replays, pre-commands...)")
    a = p.parse_args(argv)
    if not os.path.isdir(a.corpus):
        print("trace: no corpus at %s" % a.corpus, file=sys.stderr)
        return 1
    lines = build(a.corpus, a.interval_ms, limit=a.limit, include_rejected=not a.only_relayable)
    save(lines, a.out)
    by = {}
    for line in lines:
        k = line["expect"]["status"] + ("" if "error" not in line["expect"] else " " + line["expect"]["error"])
        by[k] = by.get(k, 0) + 1
    print("%d lines -> %s (%s)" % (len(lines), a.out, ", ".join("%s: %d" % kv for kv in sorted(by.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
