"""`ppmid send`: publish a signed command envelope to a gateway and print each status.

Builds the envelope with ppmid.envelope.sign (key: the gateway's envelope key kept by
`ppmid provision` in STATE_DIR/keys/EUI.key, or --key-file), publishes it QoS 1 on
ppmid/v1/EUI/cmd as a DCC User, then prints every status message for that id as one JSON
line until a final one. Exit 0 on `response` (or the --until status), 1 on
rejected/failed/timeout or when nothing final arrives within --timeout.
"""
import binascii
import json
import secrets
import sys
import time

from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("--state-dir", required=True, help="the broker's state dir (ppmid broker start)")
    p.add_argument("--gateway", required=True, metavar="EUI", help="target gateway EUI-64")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gbcs", metavar="HEX", help="GBCS command as hex")
    g.add_argument("--gbcs-file", metavar="FILE", help="GBCS command as a binary file")
    p.add_argument("--id", help="command id (default: random)")
    p.add_argument("--expires-in", type=int, metavar="S", help="expire S seconds from now")
    p.add_argument("--key-file", help="envelope key (32 raw bytes); default STATE_DIR/keys/EUI.key")
    p.add_argument("--user", default="test", help="DCC User identity (certificate dcc-user-NAME)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a final status")
    p.add_argument("--until", default="response",
                   choices=("accepted", "relayed", "response"), help="stop successfully at this status")


def run(args):
    from host_tools import mqtt_tools as mt
    from host_tools.broker import BrokerError, gateway_identity, user_identity
    try:
        eui = gateway_identity(args.gateway)
        user = user_identity(args.user)
    except BrokerError as exc:
        raise CliError(str(exc))
    if not 0 < args.timeout <= 86400:  # also refuses nan, which would wait for ever
        raise CliError("--timeout must be a number of seconds from 0 to 86400")
    if args.expires_in is not None and not 0 < args.expires_in <= 366 * 86400:
        raise CliError("--expires-in must be from 1 to %d seconds" % (366 * 86400))
    if args.gbcs is not None:
        try:
            gbcs = binascii.unhexlify(args.gbcs.replace(" ", ""))
        except (binascii.Error, ValueError):
            raise CliError("--gbcs is not hex")
    else:
        try:
            with open(args.gbcs_file, "rb") as f:
                gbcs = f.read()
        except OSError as exc:
            raise CliError("cannot read %s: %s" % (args.gbcs_file, exc))
    if not gbcs:
        raise CliError("the GBCS command is empty")
    try:
        if args.key_file:
            with open(args.key_file, "rb") as f:
                key = f.read()
        else:
            key = mt.envelope_key(args.state_dir, eui)
    except (OSError, RuntimeError) as exc:
        raise CliError(str(exc))
    if len(key) != 32:
        raise CliError("envelope key must be 32 bytes, not %d" % len(key))
    id = args.id or "cmd-" + secrets.token_hex(6)
    expires = int(time.time()) + args.expires_in if args.expires_in is not None else None
    try:
        payload = mt.command_json(key, id, gbcs, expires)
    except Exception as exc:  # EnvelopeError (bad id)
        raise CliError(str(exc))
    try:
        cmd = mt.Commander(args.state_dir, eui, user=user, key=key)
    except RuntimeError as exc:
        raise CliError(str(exc))
    try:
        cmd.publish_raw(payload)
        done = (args.until,) + tuple(s for s in mt.FINAL if s != args.until)
        def show(st):
            print(json.dumps(st))
            sys.stdout.flush()
        try:
            statuses = cmd.wait(id, done, timeout=args.timeout, each=show)
        except TimeoutError:
            print(json.dumps({"id": id, "status": "no-answer",
                              "error": {"code": "E_NO_ANSWER", "message": "no final status within %ss" % args.timeout}}))
            sys.stdout.flush()
            return 1
        last = statuses[-1]["status"]
        # already-executed: the meter has the command (it refused a copy resent after a crash)
        return 0 if last == args.until or (args.until == "response" and last == "already-executed") else 1
    finally:
        cmd.close()
