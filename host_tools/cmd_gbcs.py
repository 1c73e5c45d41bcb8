"""`ppmid gbcs`: decode and check GBCS messages with the firmware codec (ppmid.gbcs).

    ppmid gbcs decode [PATH|-]                  # one JSON object per message
    ppmid gbcs decode --reassemble [PATH|-]     # the same, then one line per GBT message
    ppmid gbcs check --config CONFIG [PATH|-]   # the same plus the relay's verdict
    ppmid gbcs pcap IN OUT.pcapng               # a capture for Wireshark (docs/captures.md)

PATH: a .HEX file (one message), any other file (one hex message per line; blank lines and
lines starting with # are skipped), or a folder (every *.HEX below it, sorted). `-` or no
PATH: lines from stdin. In check mode the anti-replay counters live in memory: a command
accepted earlier in the same run makes a later one with the same counter a replay.
With --reassemble, GBT blocks are grouped by (originator, recipient, counter) and, once the
whole input is read, each group gives one more line: the rebuilt message (`"reassembled":
true`, `"hex"` and its fields), or why not (`"incomplete": true` with `"missing_blocks"`, or
an error for conflicting duplicates and inconsistent blocks).
Exit status 0 when every message decoded (and, for check, was accepted, for --reassemble,
was rebuilt), 1 otherwise.
"""
import json
import os
import sys

from host_tools import mpcompat
from host_tools.cli import CliError

mpcompat.install()

from ppmid.gbcs import decode, GbcsError, Validator  # noqa: E402
from ppmid.gbcs.validate_host import MemoryCounterStore  # noqa: E402
from ppmid import config as gw_config  # noqa: E402
from host_tools.gbcs_tools import GbcsInputError, GbtCollector, message_json, iter_inputs, error_json, parse_hex  # noqa: E402


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for name, help_text in (("decode", "print the fields of each message as JSON"),
                            ("check", "decode and give the relay's verdict for each message"),
                            ("pcap", "write the messages as a pcapng capture for Wireshark")):
        a = sub.add_parser(name, help=help_text)
        if name == "pcap":
            a.add_argument("path", help="hex file, .HEX file, folder of .HEX files, command trace or CH log (JSONL)")
            a.add_argument("out", help="the pcapng file to write")
            continue
        a.add_argument("path", nargs="?", default="-",
                       help="hex file (a message per line), .HEX file, folder of .HEX files, or - (stdin)")
        if name == "decode":
            a.add_argument("--reassemble", action="store_true",
                           help="also rebuild GBT messages from their blocks (any order, duplicates)")
        if name == "check":
            a.add_argument("--config", required=True, help="gateway config JSON (docs/config.md)")


def _load_config(path):
    if not path:
        raise CliError("check needs --config CONFIG (the gateway config JSON, docs/config.md)")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode()
    except OSError as exc:
        raise CliError("cannot read config %s: %s" % (path, exc.strerror or exc))
    except UnicodeDecodeError as exc:
        raise CliError("config %s is not UTF-8 text (byte 0x%02x at offset %d)"
                       % (path, exc.object[exc.start], exc.start))
    try:
        return gw_config.loads(text, strict=True)  # where a config is written: typos refused
    except gw_config.ConfigError as exc:
        raise CliError("config %s: %s" % (path, exc.message))


def _pcap(args):
    from host_tools import captures, pcap
    from host_tools.trace import TraceError
    if os.path.isdir(args.out):
        raise CliError("%s is a folder: give the capture file to write" % args.out)
    try:
        with pcap.PcapWriter(args.out) as writer:
            kind = captures.convert(args.path, writer)
    except (captures.CaptureError, pcap.PcapError, TraceError, GbcsInputError) as exc:
        if os.path.isfile(args.out):
            os.remove(args.out)  # no half capture left behind that looks like a whole one
        raise CliError(str(exc))
    print("%s: %d packets from %s (%s)" % (args.out, writer.count, args.path, kind))
    return 0


def run(args):
    if args.action == "pcap":
        return _pcap(args)
    validator = None
    if args.action == "check":
        validator = Validator(_load_config(getattr(args, "config", None)), MemoryCounterStore())
    collector = GbtCollector() if getattr(args, "reassemble", False) else None
    failures = 0
    seen = 0
    for source, text in iter_inputs(args.path):
        try:
            raw = parse_hex(text)
        except ValueError as exc:
            out = error_json("E_HEX", str(exc))
            raw = None
        else:
            if raw is None:
                continue
            seen += 1
            try:
                msg = decode(raw)
                out = message_json(msg)
            except GbcsError as exc:
                out = error_json(exc.code, exc.message)
            else:
                if collector is not None:
                    out = collector.add(raw, msg, source) or out
        if validator is not None and "error" not in out:
            try:
                validator.commit(validator.check(raw))
                out["verdict"] = {"relay": True}
            except GbcsError as exc:
                out["verdict"] = {"relay": False, "code": exc.code, "message": exc.message}
        ok = "error" not in out and out.get("verdict", {"relay": True})["relay"]
        failures += 0 if ok else 1
        out["source"] = source
        if not _emit(out):
            return 1 if failures else 0
    if not seen and not failures:
        raise CliError("no GBCS message in %s" % ("the input" if args.path == "-" else args.path))
    for out in collector.results() if collector is not None else ():
        failures += 0 if out["reassembled"] else 1
        if not _emit(out):
            break
    return 1 if failures else 0


def _emit(out):
    """Print one JSON line; False once the reader has gone (e.g. piped into `head`)."""
    try:
        print(json.dumps(out), flush=True)
        return True
    except BrokenPipeError:
        sys.stderr.close()
        return False
