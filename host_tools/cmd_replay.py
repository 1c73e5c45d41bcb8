"""`ppmid replay TRACE --gateway EUI --report OUT.json (--state-dir DIR | --broker URL --ca --cert --key)`

Replays a command trace (docs/trace.md) through MQTT against any gateway, as a DCC User;
writes a JSON report and prints a table. Build a sample trace from the corpus with
`python -m host_tools.trace --out sample.jsonl`.
"""
import json
import os
import sys

from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("trace", help="trace file (JSON lines, format v1)")
    p.add_argument("--gateway", required=True, metavar="EUI", help="the gateway's EUI-64 (16 hex digits)")
    p.add_argument("--report", required=True, metavar="OUT.json", help="where to write the report")
    p.add_argument("--broker", metavar="URL", help="mqtts://host:port (default: from --state-dir)")
    p.add_argument("--state-dir", help="broker state dir (ppmid broker start): address and dcc-user certificate")
    p.add_argument("--user", default="test", help="DCC User identity in --state-dir (default: test)")
    p.add_argument("--ca", help="CA certificate (PEM)")
    p.add_argument("--cert", help="DCC User client certificate (PEM)")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--envelope-key", metavar="FILE",
                   help="the gateway's envelope key (32 raw bytes; default: STATE_DIR/keys/EUI.key)")
    p.add_argument("--speed", type=float, default=1.0, help="time scale: 2 = twice as fast (default 1)")
    p.add_argument("--settle-s", type=float, default=40.0,
                   help="after the last command, wait this long for final statuses (default 40)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id of the persistent session (default ppmid-replay-EUI; "
                        "two replays to one gateway at once need two; the broker `ppmid broker` "
                        "starts uses the certificate's identity instead: there use --user)")


def check_run_options(speed, settle_s, report):
    """Refuse what would fail only after the whole replay ran (also for emulate): a speed
    or settle time that is not a sensible number, a report path that cannot be written."""
    if not 0.01 <= speed <= 1000:  # also nan
        raise CliError("--speed must be from 0.01 to 1000 (2 = twice as fast)")
    if settle_s is not None and not 0 <= settle_s <= 86400:
        raise CliError("--settle-s must be from 0 to 86400 seconds")
    if os.path.isdir(report):
        raise CliError("--report %s is a directory; give a file name" % report)
    parent = os.path.dirname(os.path.abspath(report))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise CliError("cannot create the report's folder %s: %s" % (parent, exc.strerror))
    if not os.access(parent, os.W_OK):
        raise CliError("cannot write the report in %s" % parent)


def load_trace(path):
    """A trace file's lines, or CliError naming the file and the problem (also for emulate)."""
    from host_tools import trace as tr
    try:
        lines = tr.load(path)
    except OSError as exc:
        raise CliError("cannot read %s: %s" % (path, exc.strerror))
    except tr.TraceError as exc:
        raise CliError("%s: %s" % (path, exc))
    if not lines:
        raise CliError("%s holds no commands" % path)
    return lines


def run(args):
    from host_tools.replay import Replayer, ReplayError, identity_from_state_dir, parse_broker_url, table
    eui = args.gateway.upper()
    if len(eui) != 16 or any(c not in "0123456789ABCDEF" for c in eui):
        raise CliError("--gateway must be 16 hex digits")
    check_run_options(args.speed, args.settle_s, args.report)
    lines = load_trace(args.trace)
    try:
        host = port = ca = cert = key = None
        if args.state_dir:
            host, port, ca, cert, key = identity_from_state_dir(args.state_dir, args.user)
        if args.broker:
            host, port = parse_broker_url(args.broker)
        ca, cert, key = args.ca or ca, args.cert or cert, args.key or key
        if host is None:
            raise CliError("say where the broker is: --broker URL or --state-dir DIR")
        if not (ca and cert and key):
            raise CliError("TLS identity needed: --ca/--cert/--key or --state-dir DIR")
        kpath = args.envelope_key
        if kpath is None and args.state_dir:
            kpath = os.path.join(args.state_dir, "keys", eui + ".key")
        if kpath is None:
            raise CliError("--envelope-key FILE is needed to sign the commands")
        try:
            with open(kpath, "rb") as f:
                envelope_key = f.read()
        except OSError as exc:
            raise CliError("cannot read the envelope key %s: %s" % (kpath, exc.strerror))
        if len(envelope_key) != 32:
            raise CliError("the envelope key %s must be 32 bytes, not %d" % (kpath, len(envelope_key)))
        r = Replayer(host, port, eui, envelope_key, ca, cert, key, speed=args.speed, settle_s=args.settle_s,
                     client_id=args.client_id)
        try:
            rep = r.run(lines)
        finally:
            r.close()
    except ReplayError as exc:
        raise CliError(str(exc))
    rep["trace"] = os.path.abspath(args.trace)
    with open(args.report, "w") as f:
        json.dump(rep, f, indent=1, sort_keys=True)
    print(table(rep))
    print("report: %s" % args.report)
    if rep["lost_count"]:
        print("ppmid: %d command(s) lost: no final status" % rep["lost_count"], file=sys.stderr)
        return 1
    return 0
