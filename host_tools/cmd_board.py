"""`ppmid board`: start, stop and inspect the emulated board; drive its Wi-Fi and reset.

    ppmid board start --board emulated --state-dir DIR   # runs until Ctrl-C / `board stop`
    ppmid board status|stop|kill|reset --state-dir DIR
    ppmid board wifi --state-dir DIR up|down
    ppmid board list                                      # known board definitions
"""
import json

from host_tools import boards, emuboard
from host_tools.cli import CliError, check_state_dir

ACTIONS = ("start", "stop", "status", "kill", "reset", "wifi", "list")


def add_arguments(p):
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("updown", nargs="?", choices=("up", "down"), help="for `wifi`: bring the access point up or down")
    p.add_argument("--board", default="emulated", help="board name (boards/NAME/board.json)")
    p.add_argument("--state-dir", default="run", help="the emulated board's state directory")
    p.add_argument("--heap", help="MicroPython heap, e.g. 256K (default: the board's)")
    # `board wifi --state-dir DIR down`: options between the two positionals
    p.parse_args = p.parse_intermixed_args


def run(args):
    if args.action == "list":
        for name in boards.board_names():
            d = boards.load_board(name)
            print("%-20s %-8s %s" % (name, d.get("chip"), d.get("description", "")))
    elif args.action == "start":
        check_state_dir(args.state_dir)
        return emuboard.Supervisor(args.state_dir, args.board, heap=args.heap).run()
    elif args.action == "status":
        print(json.dumps(emuboard.status(args.state_dir), indent=2))
    elif args.action == "stop":
        emuboard.stop(args.state_dir)
    elif args.action == "kill":
        emuboard.kill_chip(args.state_dir)
    elif args.action == "reset":
        emuboard.press_reset(args.state_dir)
    elif args.action == "wifi":
        emuboard.read_state(args.state_dir)  # no board there: the same message as the other actions
        if not args.updown:
            raise CliError("say `up` or `down`: ppmid board wifi --state-dir DIR up|down")
        emuboard.set_wifi(args.state_dir, args.updown == "up")
        print("wifi %s" % args.updown)
    return 0
