"""`ppmid broker start|stop|issue|status --state-dir DIR [--engine mosquitto|rabbitmq]`: a
broker on loopback, TLS only, client certificates (host_tools/broker.py)."""
import json

from host_tools.cli import CliError, check_state_dir


def add_arguments(p):
    p.add_argument("action", choices=("start", "stop", "issue", "status"))
    p.add_argument("--state-dir", required=True, help="certificates, config, log and broker.json live here")
    p.add_argument("--gateway", action="append", default=[], metavar="EUI",
                   help="issue a gateway certificate (CN = EUI-64); repeatable")
    p.add_argument("--user", action="append", default=[], metavar="NAME",
                   help="issue a DCC User certificate (CN = dcc-user-NAME); repeatable; default: test")
    p.add_argument("--port", type=int, help="TCP port (default: a free one, kept across restarts)")
    p.add_argument("--engine", choices=("mosquitto", "rabbitmq"),
                   help="start: the broker to run (default: the one this state dir ran last, else mosquitto)")


def run(args):
    from host_tools.broker import Broker, BrokerError, gateway_identity, user_identity
    if args.port is not None and not 1024 <= args.port <= 65535:
        raise CliError("--port must be from 1024 to 65535 (the broker runs unprivileged on loopback)")
    check_state_dir(args.state_dir)
    try:
        b = Broker(args.state_dir, args.gateway, args.user or ["test"], engine=args.engine)
        if args.action == "start":
            info = b.start(args.port)
            print(json.dumps(info))
        elif args.action == "stop":
            if not b.stop():
                raise CliError("no broker running for %s" % args.state_dir)
        elif args.action == "issue":
            if b.info() is None:
                b.prepare()
            for g in args.gateway:
                print(json.dumps(b.add_identity(gateway_identity(g))))
            for u in args.user:
                print(json.dumps(b.add_identity(user_identity(u))))
        else:
            info = b.info()
            if info is None:
                raise CliError("no broker state in %s" % args.state_dir)
            from host_tools.broker import _alive
            info["running"] = _alive(info.get("pid"))
            print(json.dumps(info))
    except BrokerError as exc:
        raise CliError(str(exc))
    return 0
