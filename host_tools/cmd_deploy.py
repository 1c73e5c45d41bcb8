"""`ppmid deploy --port PORT --board NAME`: compile firmware/ and install it on a board
(host_tools.deploy does the work and says how)."""
import os

from host_tools import deploy
from host_tools.boards import FIRMWARE_DIR
from host_tools.progress import Progress


def add_arguments(p):
    p.add_argument("--port", required=True, help="the board's REPL: a serial port, or the emulated board's pty")
    p.add_argument("--board", required=True, help="board name (boards/NAME/board.json)")
    p.add_argument("--firmware-dir", default=FIRMWARE_DIR, help="firmware tree to deploy (default: firmware/)")
    p.add_argument("--build-dir", help="where to put the compiled files (default: a temp dir)")
    p.add_argument("--no-reset", action="store_true", help="do not soft-reset the board afterwards")
    p.add_argument("--scripts-only", action="store_true",
                   help="only boot.py, main.py, install.mpy and board.json; remove /ppmid (for an image with ppmid frozen in)")
    p.add_argument("--dry-run", action="store_true", help="compile, then print the mpremote commands instead of running them")
    p.add_argument("--attempts", type=int, default=deploy.ATTEMPTS,
                   help="probe/copy rounds before giving up when the board resets mid-copy (default %(default)s); "
                        "what is staged is kept for the next run")
    p.add_argument("--romfs", action="store_true",
                   help="the ppmid package as a ROMFS image in the board's romfs partition (run in place), the rest "
                        "on the flash; /ppmid removed from the flash (docs/platform.md)")
    p.add_argument("--force", action="store_true",
                   help="deploy .mpy files even to a board whose heap is smaller than the app's need (a warning)")


def run(args):
    # build, files changed, copied and verified, installed, soft reset: a bar on a
    # terminal, the same lines as ever otherwise (--dry-run prints commands: no bar)
    if args.romfs and args.scripts_only:
        raise deploy.DeployError("--romfs and --scripts-only: the first writes the package into the romfs partition, the "
                        "second is for an image with the package frozen in; choose one")
    bar = Progress("deploy", 6 if args.romfs else 5, tty=False if args.dry_run else None)
    if args.romfs:
        from host_tools import deploy_romfs
        try:
            deploy_romfs.deploy_romfs(args.port, args.board, os.path.abspath(args.firmware_dir),
                                      args.build_dir and os.path.abspath(args.build_dir), reset=not args.no_reset,
                                      dry_run=args.dry_run, log=bar.step, force=args.force, attempts=args.attempts)
        finally:
            bar.close()
        return 0
    try:
        deploy.deploy(args.port, args.board, os.path.abspath(args.firmware_dir),
                      args.build_dir and os.path.abspath(args.build_dir), reset=not args.no_reset,
                      dry_run=args.dry_run, log=bar.step, scripts_only=args.scripts_only, force=args.force,
                      attempts=args.attempts)
    finally:
        bar.close()
    return 0
