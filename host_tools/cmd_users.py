"""`ppmid users push`: rotate, revoke, add or remove a gateway's DCC User keys by a signed
users update over MQTT, no visit (docs/security.md "Signed users updates").

    ppmid users push --state-dir DIR --gateway EUI --key operator.pem
        [--user NAME --role ROLE --originators ORIG[,ORIG] ...] [--role-profile ROLE=PROFILE]
        [--rotate NAME] [--revoke NAME] [--remove NAME] [--users FILE] [--sequence N] [--lock-down]

Starts from what the gateway was last given (STATE_DIR/keys/EUI.users.json, or --users
FILE), applies the options, signs it with the operator's update key (ppmid release
--make-key) and prints the gateway's status as JSON. Exit 0 when it says "applied".
"""
import json

from host_tools.cli import CliError, add_signed_order_arguments, broker_parties, check_wait, print_final


def add_arguments(p):
    from host_tools.provision import add_user_arguments
    p.add_argument("action", choices=("push",))
    add_signed_order_arguments(p, "the update's sequence (default: the last applied + 1)")
    add_user_arguments(p)
    p.add_argument("--rotate", action="append", default=[], metavar="NAME", help="a new key for NAME; repeatable")
    p.add_argument("--revoke", action="append", default=[], metavar="NAME", help="revoke NAME's key; repeatable")
    p.add_argument("--remove", action="append", default=[], metavar="NAME", help="forget NAME; repeatable")
    p.add_argument("--users", metavar="FILE", help="a users section (JSON) to send instead of the last one given")
    p.add_argument("--lock-down", action="store_true",
                   help="send a section that leaves no key in use with the legacy key off: the gateway then refuses every command")


def run(args):
    from host_tools import provision, users_update as U
    eui, ident = broker_parties(args.gateway, args.broker_user)
    check_wait(args.timeout, args.sequence)
    users = None
    if args.users:
        try:
            with open(args.users) as f:
                users = json.load(f)
        except (OSError, ValueError) as exc:
            raise CliError("cannot read --users %s: %s" % (args.users, exc))
    specs, role_defs = provision.split_user_tokens(args.user_tokens)
    if specs or role_defs:
        base = users if users is not None else U.read_registry(args.state_dir, eui)["users"]
        users = provision.merge_users(base, specs, role_defs)
    st = U.push(args.state_dir, eui, args.key, user=ident, timeout=args.timeout, users=users,
                rotate=args.rotate, revoke=args.revoke, remove=args.remove, sequence=args.sequence,
                lock_down=args.lock_down)
    return print_final(st, "applied", "users update")
