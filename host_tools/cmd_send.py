"""`ppmid send`: publish a signed command (or top-up) envelope to a gateway and print each
status.

Builds the envelope with ppmid.envelope.sign (key: the gateway's envelope key kept by
`ppmid provision` in STATE_DIR/keys/EUI.key, or --key-file), publishes it QoS 1 on
ppmid/v1/EUI/cmd as a DCC User, then prints every status message for that id as one JSON
line until a final one. Exit 0 on `response` (or the --until status), 1 on
rejected/failed/timeout or when nothing final arrives within --timeout.

`--serial PORT` sends it by wire instead (docs/wired.md): to a gateway's wired UART (or
the emulated board's DIR/wired pty), no broker. The envelope is one signed elsewhere
(`--envelope FILE`, from `ppmid sign`: the laptop needs no key) or signed here from
--gbcs and the key. Prints the gateway's answer to the frame, then every status the same
way, the final one with the response.
`--utrn DIGITS --target EUI` sends a top-up instead (docs/utrn.md): exit 0 on
`topped-up`. `--private-key PEM`: signed with ECDSA P-256 by a DCC User registered with
its public key (docs/envelope.md "Signed envelopes"), over MQTT or by wire; such a user
without --private-key is refused here (its commands would go under the gateway's key).
"""
import json
import secrets
import sys
import time

from host_tools.cli import CliError, broker_parties, check_wait, final_error


def add_arguments(p):
    p.add_argument("--state-dir", help="the broker's state dir (ppmid broker start); needed for MQTT")
    p.add_argument("--gateway", metavar="EUI", help="target gateway EUI-64; needed for MQTT")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gbcs", metavar="HEX", help="GBCS command as hex")
    g.add_argument("--gbcs-file", metavar="FILE", help="GBCS command as a binary file")
    g.add_argument("--envelope", metavar="FILE", help="a binary envelope signed by `ppmid sign` (with --serial)")
    p.add_argument("--serial", metavar="PORT", help="send by wire to this serial port, not MQTT")
    p.add_argument("--baud", type=int, default=115200, help="the wired UART's baud rate (default 115200)")
    g.add_argument("--utrn", metavar="DIGITS", help="a top-up: the UTRN's 20 digits (with --target)")
    p.add_argument("--target", metavar="EUI", help="the meter a --utrn top-up is for (its EUI-64)")
    p.add_argument("--id", help="command id (default: random)")
    p.add_argument("--expires-in", type=int, metavar="S", help="expire S seconds from now")
    p.add_argument("--key-file", help="envelope key (32 raw bytes); default: the --user's own key for this gateway "
                        "(STATE_DIR/keys/EUI.users/NAME.key, from ppmid provision --user) if there is one, "
                        "else STATE_DIR/keys/EUI.key")
    p.add_argument("--kid", metavar="NAME", help="the key's name to put in the envelope (with --key-file; "
                        "a --user's own key is named by itself)")
    p.add_argument("--private-key", metavar="FILE", help="sign with ECDSA P-256 (a DCC User registered with "
                        "`ppmid provision --public-key`): its private key, PEM; the envelope names --kid, else --user; "
                        "over MQTT the JSON envelope, with --serial the binary one")
    p.add_argument("--user", default="test", help="DCC User (certificate dcc-user-NAME; its own envelope key "
                        "when the gateway registers one)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a final status")
    p.add_argument("--until", default=None,
                   choices=("accepted", "relayed", "response", "topped-up"),
                   help="stop successfully at this status (default: response; topped-up for --utrn)")


def _until(args):
    if (args.utrn is not None) != (args.target is not None):
        raise CliError("--target goes with --utrn (the meter the top-up is for), and only with it")
    return args.until or ("topped-up" if args.utrn is not None else "response")


def _checked_topup(args):
    """The UTRN's 20 digits and the target EUI, or the reason the gateway would refuse them."""
    from host_tools.utrn import check
    from ppmid import topup as T
    verdict = check(args.utrn)
    if not verdict["ok"]:  # the gateway would refuse it: say why here
        raise CliError("UTRN refused: %s: %s" % (verdict["code"], verdict["reason"]))
    digits = "".join(c for c in args.utrn if c.isdigit())  # the envelope carries the 20 digits
    try:
        target = T.check_target(args.target)
    except T.EnvelopeError as exc:
        raise CliError(str(exc))
    return digits, target


def run(args):
    if args.serial:
        return run_serial(args)
    if args.envelope:
        raise CliError("--envelope goes by wire: add --serial PORT (over MQTT the command is signed here)")
    if not args.state_dir or not args.gateway:
        raise CliError("over MQTT --state-dir and --gateway are needed (or --serial PORT)")
    from host_tools import mqtt_tools as mt
    eui, user = broker_parties(args.gateway, args.user)
    check_wait(args.timeout)
    if args.expires_in is not None and not 0 < args.expires_in <= 366 * 86400:
        raise CliError("--expires-in must be from 1 to %d seconds" % (366 * 86400))
    topup = args.utrn is not None
    until = _until(args)
    if topup:
        digits, target = _checked_topup(args)
        gbcs = None
    else:
        from host_tools.cmd_sign import read_gbcs
        gbcs = read_gbcs(args)
    kid = args.kid
    if args.private_key:
        return _send_signed(args, mt, eui, user, gbcs, until, (digits, target) if topup else None)
    if kid is not None and not args.key_file:
        raise CliError("--kid goes with --key-file (a --user's own key is named by itself)")
    try:
        if args.key_file:
            with open(args.key_file, "rb") as f:
                key = f.read()
        else:
            key, kid = mt.sender_key(args.state_dir, eui, user)
    except (OSError, RuntimeError) as exc:
        raise CliError(str(exc))
    if len(key) != 32:
        raise CliError("envelope key must be 32 bytes, not %d" % len(key))
    id = args.id or ("topup-" if topup else "cmd-") + secrets.token_hex(6)
    expires = int(time.time()) + args.expires_in if args.expires_in is not None else None
    from ppmid.envelope import EnvelopeError
    try:
        if topup:
            payload = mt.topup_json(key, id, digits, target, expires, kid)
        else:
            payload = mt.command_json(key, id, gbcs, expires, kid)
    except EnvelopeError as exc:  # a bad id or kid
        raise CliError(str(exc))
    try:
        cmd = mt.Commander(args.state_dir, eui, user=user, key=key)
    except RuntimeError as exc:
        raise CliError(str(exc))
    return _publish_and_wait(args, cmd, payload, id, until)


def _final(id, status, until):
    """Exit status 0 when the command's final status is the one asked for (already-executed
    counts for a response: the meter has the command, it refused a copy resent after a
    crash), else 1 with the errors' one line on stderr (its JSON is on stdout already)."""
    last = status.get("status")
    if last == until or (until == "response" and last == "already-executed"):
        return 0
    final_error("command %s" % id, last, status.get("error"))
    return 1


def _no_final(id, status):
    """A final status the tool itself decides (no answer, a nack on the wire): its JSON on
    stdout as the gateway's are, and the errors' line on stderr; exit status 1."""
    print(json.dumps(status))
    sys.stdout.flush()
    final_error("command %s" % id, status["status"], status["error"])
    return 1


def _publish_and_wait(args, cmd, payload, id, until):
    from host_tools import mqtt_tools as mt
    try:
        cmd.publish_raw(payload)
        done = (until,) + tuple(s for s in mt.FINAL if s != until)
        def show(st):
            print(json.dumps(st))
            sys.stdout.flush()
        try:
            statuses = cmd.wait(id, done, timeout=args.timeout, each=show)
        except TimeoutError:
            return _no_final(id, {"id": id, "status": "no-answer", "error": {
                "code": "E_NO_ANSWER", "message": "no final status within %ss" % args.timeout}})
        # already-executed: the meter has the command (it refused a copy resent after a crash)
        return _final(id, statuses[-1], until)
    finally:
        cmd.close()


def _send_signed(args, mt, eui, user, gbcs, until, topup):
    # the public-key envelope over MQTT (JSON): a command, or a top-up (topup: its digits, target)
    id = args.id or ("topup-" if topup else "cmd-") + secrets.token_hex(6)
    expires = int(time.time()) + args.expires_in if args.expires_in is not None else None
    payload = _p256_signed(args, user, id, expires, gbcs, topup, "json")
    try:
        cmd = mt.Commander(args.state_dir, eui, user=user)
    except RuntimeError as exc:
        raise CliError(str(exc))
    return _publish_and_wait(args, cmd, payload, id, until)


def _p256_signed(args, user, id, expires, gbcs, topup, form):
    """The envelope (form "json" for MQTT, "binary" for the wire) signed with the P-256
    private key in --private-key, naming --kid, else the DCC User: a command (gbcs) or a
    top-up (topup: its digits and target)."""
    from host_tools import mpcompat, p256_envelope
    mpcompat.install()
    from ppmid.envelope import EnvelopeError
    if args.key_file:
        raise CliError("--private-key and --key-file: one or the other")
    kid = args.kid or (user[9:] if user.startswith("dcc-user-") else user)
    try:
        if form == "json":
            if topup:
                return p256_envelope.topup_json(args.private_key, id, topup[0], topup[1], expires, kid)
            return p256_envelope.command_json(args.private_key, id, gbcs, expires, kid)
        key = p256_envelope.load_private(args.private_key)
        if topup:
            return p256_envelope.topup_binary(key, id, topup[0], topup[1], expires, kid)
        sig = p256_envelope.signature(key, id, gbcs, expires, kid)
        return p256_envelope.envelope_bytes(id, gbcs, expires, kid, sig, "binary")
    except EnvelopeError as exc:  # a bad id or kid (an unreadable key file is a KeyFileError)
        raise CliError(str(exc))


def _wired_envelope(args):
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid import envelope
    if args.envelope:
        if args.private_key:
            raise CliError("--envelope is signed already: no --private-key with it")
        try:
            with open(args.envelope, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CliError("cannot read %s: %s" % (args.envelope, exc.strerror))
        try:
            env = envelope.from_binary(data, 65535)
        except envelope.EnvelopeError as exc:
            raise CliError("%s is not a binary envelope (ppmid sign writes one): %s" % (args.envelope, exc))
        return env.id, data
    from host_tools.cmd_sign import signing_key, read_gbcs
    if args.expires_in is not None and not 0 < args.expires_in <= 366 * 86400:
        raise CliError("--expires-in must be from 1 to %d seconds" % (366 * 86400))
    id = args.id or "cmd-" + secrets.token_hex(6)
    expires = int(time.time()) + args.expires_in if args.expires_in is not None else None
    if args.private_key:  # a DCC User registered by its public key: the signature where the mac goes
        top = _checked_topup(args) if args.utrn is not None else None
        gbcs = None if top else read_gbcs(args)
        return id, _p256_signed(args, args.user, id, expires, gbcs, top, "binary")
    if args.utrn is not None:
        from ppmid import topup
        digits, target = _checked_topup(args)
        key, kid = signing_key(args)
        try:
            return id, topup.to_binary(topup.sign(key, id, digits, target, expires, kid))
        except envelope.EnvelopeError as exc:
            raise CliError(str(exc))
    gbcs = read_gbcs(args)
    key, kid = signing_key(args)
    try:
        return id, envelope.to_binary(envelope.sign(key, id, gbcs, expires, kid))
    except envelope.EnvelopeError as exc:
        raise CliError(str(exc))


def run_serial(args):
    from host_tools.wired import WiredClient, WiredError
    check_wait(args.timeout)
    until = _until(args)
    id, data = _wired_envelope(args)

    def show(obj):
        print(json.dumps(obj))
        sys.stdout.flush()

    c = WiredClient(args.serial, args.baud)
    try:
        c.open()
    except WiredError as exc:
        raise CliError(str(exc))
    try:
        got = c.send_envelope(data, id)
        if got is None:
            return _no_final(id, {"id": id, "status": "no-answer", "error": {
                "code": "E_NO_ANSWER", "message": "the gateway did not answer on %s" % args.serial}})
        if got[0] == "nack":
            return _no_final(id, {"id": id, "status": "rejected", "via": "serial",
                                  "error": {"code": got[1], "message": got[2]}})
        done = (until,) + tuple(s for s in ("response", "already-executed", "failed", "topped-up") if s != until)
        shown = 0
        noted = set()
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            with c._cond:
                msgs = [m for _, m in c.received.get(id, [])]
                others = [(i, m) for i, m in c.others.items() if i not in noted]
            for other, m in others:
                # e.g. an earlier send that gave up waiting: not this command's, so not TAKEN
                noted.add(other)
                print("ppmid: note: the gateway sent the result of another command, %s (%s); "
                      "not taken: it stays on the gateway for a send of that envelope again"
                      % (other, m.get("status")), file=sys.stderr)
            for m in msgs[shown:]:
                show(m)
                if m.get("status") in done:
                    return _final(id, m, until)
            shown = len(msgs)
            time.sleep(0.05)
        return _no_final(id, {"id": id, "status": "no-answer", "error": {
            "code": "E_NO_ANSWER", "message": "no final status within %ss" % args.timeout}})
    finally:
        c.close()
