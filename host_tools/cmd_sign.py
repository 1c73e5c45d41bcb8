"""`ppmid sign`: write signed command envelopes to a file, so that the laptop that carries
them to a gateway (`ppmid send --serial`, `ppmid replay --serial`) never holds the key.

One command: `--gbcs HEX | --gbcs-file FILE [--id ID] [--expires-in S] --out FILE` writes
its binary envelope (docs/envelope.md; `--format json`: the MQTT JSON form). A trace:
`--trace TRACE --out SIGNED.jsonl` writes the trace again with each line's binary
envelope (hex) under "envelope" (docs/trace.md); its expiries are fixed now, from
`expires_in_s`. The key: --key-file (32 raw bytes) or the one `ppmid provision` kept in
STATE_DIR/keys/EUI.key (--state-dir with --gateway); `--user NAME` there: the DCC User's
own key for that gateway, named in each envelope (`kid`); `--kid NAME` names a --key-file.
`--private-key PEM --kid NAME`: one command signed with ECDSA P-256 by a DCC User
registered with its public key (docs/envelope.md "Signed envelopes"; either --format).
With the key elsewhere (an HSM, `openssl`): `--signing-input --kid NAME` writes the bytes
to sign for one command, and `--signing-input-file FILE --signature SIG` writes the JSON
envelope (--format) from them and the signature (DER, or 64 bytes r || s).
"""
import binascii
import json
import os
import secrets
import time

from host_tools.cli import CliError


def add_arguments(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gbcs", metavar="HEX", help="one GBCS command as hex")
    g.add_argument("--gbcs-file", metavar="FILE", help="one GBCS command as a binary file")
    g.add_argument("--trace", metavar="TRACE", help="a trace (docs/trace.md): sign every line")
    g.add_argument("--signing-input-file", metavar="FILE", help="the bytes a DCC User signed (from "
                   "--signing-input): write their JSON envelope with --signature")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the envelope(s)")
    p.add_argument("--key-file", help="the gateway's envelope key (32 raw bytes)")
    p.add_argument("--state-dir", help="the broker's state dir holding keys/EUI.key (with --gateway)")
    p.add_argument("--gateway", metavar="EUI", help="the gateway whose key to use from --state-dir")
    p.add_argument("--user", metavar="NAME", help="sign with this DCC User's own key for the gateway "
                        "(STATE_DIR/keys/EUI.users/NAME.key) and name it in the envelope")
    p.add_argument("--kid", metavar="NAME", help="the key's name to put in the envelope (with --key-file)")
    p.add_argument("--id", help="command id (default: random); one command only")
    p.add_argument("--expires-in", type=int, metavar="S", help="expire S seconds from now; one command only")
    p.add_argument("--format", choices=("binary", "json"), default="binary",
                   help="one command: the binary envelope (default) or the MQTT JSON one")
    p.add_argument("--private-key", metavar="PEM", help="sign with this DCC User's P-256 private key instead "
                        "(registered by ppmid provision --public-key); needs --kid")
    p.add_argument("--signing-input", action="store_true", help="write the bytes a P-256 key signs for one "
                   "command (needs --kid), to sign elsewhere (openssl dgst -sha256 -sign, an HSM)")
    p.add_argument("--signature", metavar="FILE", help="the ECDSA P-256 signature of --signing-input-file "
                   "(DER as openssl writes it, or 64 bytes r || s)")


def load_key(args):
    """The envelope key from --key-file or --state-dir/--gateway, or CliError."""
    if args.key_file:
        path = args.key_file
    elif args.state_dir and args.gateway:
        path = os.path.join(args.state_dir, "keys", args.gateway.upper() + ".key")
    else:
        raise CliError("say which envelope key signs: --key-file FILE, or --state-dir DIR --gateway EUI")
    from host_tools.keys import read_envelope_key
    return read_envelope_key(path)


def signing_key(args, own_key=False):
    """(key, kid): a DCC User's own key named by itself (--user NAME with --state-dir and
    --gateway, when ppmid provision registered one), else load_key's and --kid (which goes
    only with --key-file), or CliError. own_key (`ppmid sign`): a --user with no key of its
    own is refused, not signed for with the gateway's key (`ppmid send --user` falls back
    to it: there --user is also the broker identity it sends as)."""
    kid = getattr(args, "kid", None)
    if kid is not None and not args.key_file:
        raise CliError("--kid goes with --key-file (a --user's own key is named by itself)")
    user = getattr(args, "user", None)
    if own_key and user and (args.key_file or not (args.state_dir and args.gateway)):
        raise CliError("--user NAME signs with that DCC User's own key: give --state-dir DIR --gateway EUI "
                       "(not --key-file; a --key-file's key is named with --kid)")
    if user and not args.key_file and args.state_dir and args.gateway:
        from host_tools import mqtt_tools as mt
        name = user[9:] if user.startswith("dcc-user-") else user
        try:
            path = mt.user_key_path(args.state_dir, args.gateway, name)
        except Exception as exc:  # BrokerError: not an EUI
            raise CliError(str(exc))
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read(), name
        try:
            mt.refuse_public_key_user(args.state_dir, args.gateway, name)
        except RuntimeError as exc:
            raise CliError(str(exc))
        if own_key:  # a mistyped name would sign with the gateway's key, the user's limits gone
            raise CliError("no envelope key for DCC User %s on %s (%s): give it one with `ppmid provision --user "
                           "%s ...`, or sign with --key-file" % (name, args.gateway.upper(), path, name))
    return load_key(args), kid


def read_gbcs(args):
    if args.gbcs is not None:
        try:
            gbcs = binascii.unhexlify("".join(args.gbcs.split()))
        except (binascii.Error, ValueError):
            raise CliError("--gbcs is not hex")
    else:
        try:
            with open(args.gbcs_file, "rb") as f:
                gbcs = f.read()
        except OSError as exc:
            raise CliError("cannot read %s: %s" % (args.gbcs_file, exc.strerror))
    if not gbcs:
        raise CliError("the GBCS command is empty")
    if len(gbcs) > 65535:
        raise CliError("the GBCS command is %d bytes; an envelope holds at most 65535" % len(gbcs))
    return gbcs


def run(args):
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid import envelope
    if args.signing_input or args.signing_input_file or args.signature:
        return _run_signing_input(args)
    if args.private_key:
        return _run_p256(args)
    key, kid = signing_key(args, own_key=True)
    if args.trace:
        if args.id or args.expires_in is not None:
            raise CliError("--id and --expires-in are for one command; a trace gives its own")
        from host_tools.cmd_replay import load_trace
        from host_tools import trace as tr
        lines = load_trace(args.trace)
        now = int(time.time())
        for line in lines:
            exp = None if line.get("expires_in_s") is None else now + line["expires_in_s"]
            line["envelope"] = envelope.to_binary(envelope.sign(key, line["id"], line["gbcs"], exp, kid))
            line["expires_in_s"] = None   # fixed in the envelope now
        tr.save(lines, args.out)
        print("signed %d lines -> %s" % (len(lines), args.out))
        return 0
    gbcs = read_gbcs(args)
    if args.expires_in is not None and not 0 < args.expires_in <= 366 * 86400:
        raise CliError("--expires-in must be from 1 to %d seconds" % (366 * 86400))
    id = args.id or "cmd-" + secrets.token_hex(6)
    expires = int(time.time()) + args.expires_in if args.expires_in is not None else None
    try:
        env = envelope.sign(key, id, gbcs, expires, kid)
    except envelope.EnvelopeError as exc:
        raise CliError(str(exc))
    if args.format == "binary":
        data = envelope.to_binary(env)
    else:
        obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs, newline=False).decode(),
               "mac": binascii.hexlify(env.mac).decode()}
        if expires is not None:
            obj["expires"] = expires
        if kid is not None:
            obj["kid"] = kid
        data = (json.dumps(obj) + "\n").encode()
    try:
        with open(args.out, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CliError("cannot write %s: %s" % (args.out, exc.strerror))
    print("signed %s (%d bytes of GBCS) -> %s" % (id, len(gbcs), args.out))
    return 0


def _run_signing_input(args):
    # a DCC User whose P-256 key is out of our reach: the bytes to sign out, the signature in
    from host_tools import p256_envelope
    if args.signing_input_file:
        if not args.signature or args.signing_input or args.key_file or args.private_key:
            raise CliError("--signing-input-file goes with --signature FILE (and no key)")
        data, sig = _read(args.signing_input_file), _read(args.signature)
        try:
            id, gbcs, expires, kid = p256_envelope.parse_signing_input(data)
            out = p256_envelope.envelope_bytes(id, gbcs, expires, kid, p256_envelope.raw_signature(sig), args.format)
        except ValueError as exc:
            raise CliError(str(exc))
        _write(args.out, out)
        print("envelope %s (P-256, kid %s, %s) -> %s" % (id, kid, args.format, args.out))
        return 0
    if args.signature:
        raise CliError("--signature goes with --signing-input-file FILE (the bytes it signs)")
    if args.trace or not args.kid or args.key_file or args.private_key:
        raise CliError("--signing-input writes one command's bytes to sign: give --kid NAME "
                       "(no --trace, no --key-file, no --private-key)")
    id, gbcs, expires = _one_command(args)
    from ppmid.envelope import EnvelopeError
    try:
        data = p256_envelope.signing_input(id, gbcs, expires, args.kid)
    except EnvelopeError as exc:  # a bad id or kid
        raise CliError(str(exc))
    _write(args.out, data)
    print("signing input of %s (kid %s, %d bytes) -> %s" % (id, args.kid, len(data), args.out))
    return 0


def _one_command(args):
    # (id, gbcs, expires) of the one command on the command line
    gbcs = read_gbcs(args)
    if args.expires_in is not None and not 0 < args.expires_in <= 366 * 86400:
        raise CliError("--expires-in must be from 1 to %d seconds" % (366 * 86400))
    id = args.id or "cmd-" + secrets.token_hex(6)
    return id, gbcs, int(time.time()) + args.expires_in if args.expires_in is not None else None


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError("cannot read %s: %s" % (path, exc.strerror))


def _write(path, data):
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise CliError("cannot write %s: %s" % (path, exc.strerror))


def _run_p256(args):
    # one command, in the form --format asks (the signature serves both)
    from host_tools import p256_envelope
    if args.trace or not args.kid or args.key_file:
        raise CliError("--private-key signs one command: give --kid NAME (no --trace, no --key-file)")
    id, gbcs, expires = _one_command(args)
    from ppmid.envelope import EnvelopeError
    key = p256_envelope.load_private(args.private_key)  # KeyFileError: ppmid prints it, exit 1
    try:
        sig = p256_envelope.signature(key, id, gbcs, expires, args.kid)
    except EnvelopeError as exc:  # a bad id or kid
        raise CliError(str(exc))
    _write(args.out, p256_envelope.envelope_bytes(id, gbcs, expires, args.kid, sig, args.format))
    print("signed %s (P-256, kid %s, %s) -> %s" % (id, args.kid, args.format, args.out))
    return 0
