"""`ppmid emulate --state-dir run`: the gateway on the emulated board, for a newcomer's
`make run`. Starts the board (supervisor) in the state dir, deploys firmware/ to it, waits
for the ready banner and then shows the board's console until Ctrl-C.
(The relay core adds the broker and the NCP/CH emulator here.)
"""
import sys
import time

from host_tools import emuboard
from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("--state-dir", default="run", help="the emulated board's state directory (default: run)")
    p.add_argument("--board", default="emulated", help="emulated board definition (default: emulated)")
    p.add_argument("--no-deploy", action="store_true", help="boot what is already in the board's flash")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for the ready banner")


def start_board(args):
    """Start the board, deploy, wait for the banner; returns (EmulatedBoard, banner match)."""
    board = emuboard.EmulatedBoard(args.state_dir, board=args.board)
    board.start()
    try:
        mark = 0
        if not args.no_deploy:
            mark = board.mark()
            from host_tools import cmd_deploy
            cmd_deploy.deploy(board.repl, args.board, log=lambda m: print("deploy: " + m, flush=True))
        banner = board.wait_ready(args.timeout, since=mark)
    except BaseException:
        board.stop()
        raise
    return board, banner


def follow_console(board, since):
    """Copy the console log to stdout until Ctrl-C."""
    pos = since
    while True:
        data = board.console_bytes()
        if len(data) > pos:
            sys.stdout.write(data[pos:].decode("utf-8", "replace").replace("\r\n", "\n"))
            sys.stdout.flush()
            pos = len(data)
        if board.proc is not None and board.proc.poll() is not None:
            raise CliError("the emulated board's supervisor exited (%s)" % board.proc.returncode)
        time.sleep(0.1)


def run(args):
    try:
        board, banner = start_board(args)
    except (emuboard.BoardError, emuboard.BoardTimeout) as exc:
        raise CliError(str(exc))
    try:
        st = board.state()
        print(banner.group(0).decode())
        print("emulate: REPL %s (mpremote connect %s resume), UARTs %s, state dir %s; Ctrl-C to stop"
              % (st["repl"], st["repl"], st["uarts"], board.state_dir), flush=True)
        follow_console(board, banner.end())
    except KeyboardInterrupt:
        print("\nemulate: stopping", flush=True)
    finally:
        board.stop()
    return 0
