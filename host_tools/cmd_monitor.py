"""`ppmid monitor`: a board's console with the host's time in front of each line and a
log-level filter (docs/captures.md "Console monitor").

    ppmid monitor /dev/ttyUSB0 [--baud 115200] [--level warn] [--grep RE]
    ppmid monitor --state-dir run [--from-start]     # the emulated board's console.log

Levels: error (relay errors, crashes, tracebacks), warn (relay warnings), info (the rest).
Read-only: nothing is sent to the board, so it can run beside `ppmid send` or a replay
on another port. It holds the console's port (host_tools/ports.py): a deploy there is
refused (E_PORT_BUSY), a bare mpremote fails to open it, and the monitor is refused beside
either: one reader gets each byte.
"""
import os
import sys
import time

from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("port", nargs="?", help="serial port or pty of the board's console (REPL UART)")
    p.add_argument("--state-dir", help="an emulated board's state dir: follow its console.log instead")
    p.add_argument("--from-start", action="store_true", help="with --state-dir: the whole log, then follow")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--level", default="info", choices=("info", "warn", "error"),
                   help="show this level and above (default: info, every line)")
    p.add_argument("--grep", metavar="RE", help="only lines matching this regular expression")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")


def run(args):
    from host_tools import console_monitor as cm
    if bool(args.port) == bool(args.state_dir):
        raise CliError("give the console's PORT or --state-dir DIR (one of them)")
    if args.seconds is not None and not 0 < args.seconds <= 30 * 86400:
        raise CliError("--seconds must be from 0 to 30 days")
    if not 300 <= args.baud <= 4000000:
        raise CliError("--baud must be from 300 to 4000000")

    def out(line):
        try:
            print(line, flush=True)
        except BrokenPipeError:  # piped into head: stop quietly
            sys.stderr.close()
            raise KeyboardInterrupt

    try:
        monitor = cm.Monitor(out, args.level, args.grep)
    except cm.MonitorError as exc:
        raise CliError(str(exc))
    until = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        if args.state_dir:
            path = os.path.join(args.state_dir, "console.log")
            if not os.path.isfile(path):
                raise CliError("no console.log in %s: is it an emulated board's state dir?" % args.state_dir)
            cm.follow_file(path, monitor, from_end=not args.from_start, until=until)
        else:
            cm.read_port(args.port, monitor, args.baud, until=until)
    except cm.MonitorError as exc:
        raise CliError(str(exc))
    except KeyboardInterrupt:
        pass
    return 0
