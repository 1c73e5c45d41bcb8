"""`ppmid status`: one line per gateway from the broker's retained `state` and `info` topics
(online, firmware, HAN, relay queue, last command, heap, clock); docs/captures.md.

    ppmid status --state-dir BROKER [--json]
    ppmid status --state-dir BROKER --watch [--seconds S]
    ppmid status --broker mqtts://HOST:PORT --ca ca.pem --cert user.pem --key user.key.pem

--watch follows: on a terminal the table is redrawn as things change; otherwise each change
is one more line, with the time in front. `last` is the last status seen on `rsp` since the
command started (nothing retains it).
"""
import json
import sys
import time

from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("--state-dir", help="broker state dir (ppmid broker start): its address, and the read-only "
                                         "identity monitor-status (issued there on first use)")
    p.add_argument("--user", help="read as this DCC User of --state-dir instead of monitor-status")
    p.add_argument("--broker", metavar="URL", help="mqtts://host:port (default: from --state-dir)")
    p.add_argument("--ca", help="CA certificate (PEM)")
    p.add_argument("--cert", help="client certificate (PEM) of an identity that reads state/info/rsp")
    p.add_argument("--key", help="its private key (PEM)")
    p.add_argument("--json", action="store_true", help="one JSON object per gateway instead of text")
    p.add_argument("--watch", action="store_true", help="keep following until Ctrl-C (or --seconds)")
    p.add_argument("--seconds", type=float, help="with --watch: stop after this long")


def _identity(args):
    from host_tools.broker import BrokerError, monitor_identity
    from host_tools.replay import ReplayError, identity_from_state_dir, parse_broker_url
    host = port = ca = cert = key = None
    try:
        if args.state_dir and args.user:
            host, port, ca, cert, key = identity_from_state_dir(args.state_dir, args.user)
        elif args.state_dir:
            # its own read-only identity: a DCC User's tool on the same certificate would
            # take this connection's place (the broker's client id is the certificate's)
            from host_tools.mqtt_tools import broker_info
            try:
                info = broker_info(args.state_dir)
                p = monitor_identity(args.state_dir, "monitor-status")
            except (RuntimeError, BrokerError) as exc:
                raise CliError(str(exc))
            host, port = info["host"], info["port"]
            ca, cert, key = p["ca_pem"], p["pem"], p["key_pem"]
        if args.broker:
            host, port = parse_broker_url(args.broker)
    except ReplayError as exc:
        raise CliError(str(exc))
    ca, cert, key = args.ca or ca, args.cert or cert, args.key or key
    if host is None:
        raise CliError("say where the broker is: --broker URL or --state-dir DIR")
    if not (ca and cert and key):
        raise CliError("TLS identity needed: --ca/--cert/--key or --state-dir DIR")
    return host, port, ca, cert, key


def _print(fleet, as_json, stamp=""):
    if as_json:
        for eui in sorted(fleet.gateways):
            print(json.dumps(fleet.summary(eui), sort_keys=True))
    else:
        for line in fleet.lines():
            print(stamp + line)
    sys.stdout.flush()


def run(args):
    from host_tools.fleet import Fleet, FleetError, FleetWatcher
    if args.seconds is not None and (not args.watch or not 0 < args.seconds <= 30 * 86400):
        raise CliError("--seconds goes with --watch, from 0 to 30 days")
    fleet = Fleet()
    watcher = FleetWatcher(fleet, *_identity(args))
    try:
        watcher.start()
    except FleetError as exc:
        raise CliError(str(exc))
    try:
        watcher.settle()
        if not args.watch:
            if not fleet.gateways:
                raise CliError("no gateway has a retained state or info on this broker")
            _print(fleet, args.json)
            return 0
        tty = sys.stdout.isatty() and not args.json
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        shown = {}
        redraw_at = 0.0
        while deadline is None or time.monotonic() < deadline:
            with fleet.changed:
                fleet.changed.wait(0.5)
            now = time.time()
            current = {e: _without_ages(fleet.summary(e, now)) for e in sorted(fleet.gateways)}
            if tty:
                if current != shown or time.monotonic() >= redraw_at:  # ages tick: redraw now and then
                    sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S") + "  ppmid status --watch\n")
                    _print(fleet, False)
                    redraw_at = time.monotonic() + 5
            else:
                for eui, summary in current.items():
                    if shown.get(eui) != summary:
                        if args.json:
                            print(json.dumps(fleet.summary(eui, now), sort_keys=True), flush=True)
                        else:
                            print("%s %s" % (time.strftime("%H:%M:%S"), fleet.line(eui, now)), flush=True)
            shown = current
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        watcher.stop()


def _without_ages(summary):
    s = dict(summary)
    if s.get("last"):
        s["last"] = {k: v for k, v in s["last"].items() if k != "ago_s"}
    return s
