"""`ppmid gbcs`: decode and check GBCS messages with the firmware codec (ppmid.gbcs).

    ppmid gbcs decode [PATH|-]                  # one JSON object per message
    ppmid gbcs check --config CONFIG [PATH|-]   # the same plus the relay's verdict

PATH: a .HEX file (one message), any other file (one hex message per line; blank lines and
lines starting with # are skipped), or a folder (every *.HEX below it, sorted). `-` or no
PATH: lines from stdin. In check mode the anti-replay counters live in memory: a command
accepted earlier in the same run makes a later one with the same counter a replay.
Exit status 0 when every message decoded (and, for check, was accepted), 1 otherwise.
"""
import binascii
import json
import os
import sys

from host_tools import mpcompat
from host_tools.cli import CliError

mpcompat.install()

from ppmid.gbcs import decode, GbcsError, Validator, MemoryCounterStore, codes  # noqa: E402
from ppmid import config as gw_config  # noqa: E402


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for name, help_text in (("decode", "print the fields of each message as JSON"),
                            ("check", "decode and give the relay's verdict for each message")):
        a = sub.add_parser(name, help=help_text)
        a.add_argument("path", nargs="?", default="-",
                       help="hex file (a message per line), .HEX file, folder of .HEX files, or - (stdin)")
        if name == "check":
            a.add_argument("--config", required=True, help="gateway config JSON (docs/config.md)")


def _hex(mv):
    return None if mv is None else binascii.hexlify(bytes(mv)).decode().upper()


def message_json(msg):
    """The decoded fields of one message as a JSON-ready dict."""
    out = {
        "form": msg.form,
        "cra": msg.cra_name,
        "counter": msg.counter,
        "originator": _hex(msg.originator),
        "recipient": _hex(msg.recipient),
        "message_code": msg.message_code,
        "message_name": codes.name(msg.message_code),
        "date_time": _hex(msg.date_time),
        "content_type": msg.content_type,
        "content_len": None if msg.is_gbt else msg.content_len,
        "signature_len": None if msg.signature is None else len(msg.signature),
        "mac": _hex(msg.mac),
    }
    if msg.is_gbt:
        out["block_number"] = msg.block_number
        out["last_block"] = msg.last_block
        out["block_ack"] = msg.block_ack
        out["block_data_len"] = len(msg.block_data)
    return out


def _error(code, message):
    return {"error": {"code": code, "message": message}}


def _parse_hex(text):
    text = "".join(text.split())
    if not text:
        return None
    if len(text) % 2:
        raise ValueError("odd number of hex digits (%d)" % len(text))
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        bad = [c for c in text if c not in "0123456789abcdefABCDEF"][:1]
        raise ValueError("not hex: %r is not a hex digit" % (bad[0] if bad else text[:8]))


def iter_inputs(path):
    """Yield (source, text) for each message in PATH or stdin."""
    if path == "-":
        for i, line in enumerate(sys.stdin, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield "-:%d" % i, line
        return
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if f.upper().endswith(".HEX"))
        if not found:
            raise CliError("no .HEX files under %s" % path)
        for f in found:
            with open(f) as fh:
                yield f, fh.read()
        return
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise CliError("cannot read %s: %s" % (path, exc.strerror or exc))
    if path.upper().endswith(".HEX"):
        yield path, text
        return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield "%s:%d" % (path, i), line


def _load_config(path):
    if not path:
        raise CliError("check needs --config CONFIG (the gateway config JSON, docs/config.md)")
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise CliError("cannot read config %s: %s" % (path, exc.strerror or exc))
    try:
        return gw_config.loads(text)
    except gw_config.ConfigError as exc:
        raise CliError("config %s: %s" % (path, exc.message))


def run(args):
    validator = None
    if args.action == "check":
        validator = Validator(_load_config(getattr(args, "config", None)), MemoryCounterStore())
    failures = 0
    seen = 0
    for source, text in iter_inputs(args.path):
        try:
            raw = _parse_hex(text)
        except ValueError as exc:
            out = _error("E_HEX", str(exc))
            raw = None
        else:
            if raw is None:
                continue
            seen += 1
            try:
                out = message_json(decode(raw))
            except GbcsError as exc:
                out = _error(exc.code, exc.message)
        if validator is not None and "error" not in out:
            try:
                validator.commit(validator.check(raw))
                out["verdict"] = {"relay": True}
            except GbcsError as exc:
                out["verdict"] = {"relay": False, "code": exc.code, "message": exc.message}
        ok = "error" not in out and out.get("verdict", {"relay": True})["relay"]
        failures += 0 if ok else 1
        out["source"] = source
        try:
            print(json.dumps(out), flush=True)
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stderr.close()
            return 1 if failures else 0
    if not seen and not failures:
        raise CliError("no GBCS message in %s" % ("the input" if args.path == "-" else args.path))
    return 1 if failures else 0
