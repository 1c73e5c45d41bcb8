"""`ppmid board`: start, stop and inspect the emulated board; drive its Wi-Fi and reset.

    ppmid board start --board emulated --state-dir DIR   # runs until Ctrl-C / `board stop`
    ppmid board status|stop|kill|reset --state-dir DIR
    ppmid board wifi --state-dir DIR up|down
    ppmid board list                                      # known board definitions
"""
import json
import os
import signal

from host_tools import emuboard
from host_tools.cli import CliError

ACTIONS = ("start", "stop", "status", "kill", "reset", "wifi", "list")


def add_arguments(p):
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("updown", nargs="?", choices=("up", "down"), help="for `wifi`: bring the access point up or down")
    p.add_argument("--board", default="emulated", help="board name (boards/NAME/board.json)")
    p.add_argument("--state-dir", default="run", help="the emulated board's state directory")
    p.add_argument("--heap", help="MicroPython heap, e.g. 256K (default: the board's)")
    # `board wifi --state-dir DIR down`: options between the two positionals
    p.parse_args = p.parse_intermixed_args


def _signal(pid, sig, what):
    if not pid:
        raise CliError("the emulated board in this state dir is not running")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise CliError("%s (pid %d) is not running" % (what, pid))


def run(args):
    try:
        if args.action == "list":
            for name in emuboard.board_names():
                d = emuboard.load_board(name)
                print("%-20s %-8s %s" % (name, d.get("chip"), d.get("description", "")))
            return 0
        if args.action == "start":
            return emuboard.Supervisor(args.state_dir, args.board, heap=args.heap).run()
        st = emuboard.read_state(args.state_dir)
        if args.action == "status":
            st = dict(st)
            st.pop("definition", None)
            try:
                with open(st["wifi_file"], "rb") as f:
                    st["wifi"] = "up" if f.read(1) == b"1" else "down"
            except OSError:
                pass
            print(json.dumps(st, indent=2))
        elif args.action == "stop":
            _signal(st.get("supervisor_pid") if st.get("running") else None, signal.SIGTERM, "the supervisor")
        elif args.action == "kill":
            _signal(st.get("pid"), signal.SIGKILL, "the MicroPython process")
        elif args.action == "reset":
            _signal(st.get("supervisor_pid") if st.get("running") else None, signal.SIGUSR1, "the supervisor")
        elif args.action == "wifi":
            if not args.updown:
                raise CliError("say `up` or `down`: ppmid board wifi --state-dir DIR up|down")
            emuboard.set_wifi(args.state_dir, args.updown == "up")
            print("wifi %s" % args.updown)
    except emuboard.BoardError as exc:
        raise CliError(str(exc))
    return 0
