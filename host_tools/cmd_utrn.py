"""`ppmid utrn`: check a UTRN top-up code as a PPMID does, without keys (docs/utrn.md).

    ppmid utrn check [--json] DIGITS...

DIGITS: the 20 digits, in one argument or in groups as a voucher prints them
(`7394 3333 4571 8904 3313`); spaces and hyphens between digits are ignored.
Exit status 0 when the firmware would pass the UTRN on, 1 when it refuses it. With --json,
one line: {"ok": true, "value_pence", "value_class", "value", "counter", "mac"} or
{"ok": false, "code", "reason"}; without, one sentence. Both on stdout.
"""
import json

from host_tools import utrn


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    a = sub.add_parser("check", help="check the form, check digit and fields of a UTRN")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("digits", nargs="+", help="the 20 digits (groups separated by spaces or hyphens are fine)")


def run(args):
    result = utrn.check(" ".join(args.digits))
    print(json.dumps(result) if args.json else utrn.sentence(result))
    return 0 if result["ok"] else 1
