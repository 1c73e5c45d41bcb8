"""`ppmid flash --port PORT --board NAME --firmware micropython.bin [--erase-all]`: put
MicroPython on an ESP32-family board with esptool (the filesystem kept unless --erase-all),
wait for its REPL, then `ppmid deploy` the firmware
(host_tools.flash). `--dry-run` prints every command instead.
"""
from host_tools import flash


def add_arguments(p):
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--board", required=True, help="board name (boards/NAME/board.json)")
    p.add_argument("--firmware", required=True, help="MicroPython image for the chip (micropython.bin)")
    p.add_argument("--baud", type=int, default=flash.BAUD, help="esptool baud rate (default %d)" % flash.BAUD)
    p.add_argument("--no-deploy", action="store_true", help="only write MicroPython, do not deploy firmware/")
    p.add_argument("--scripts-only", action="store_true",
                   help="the image has the app frozen in (make image): deploy only boot.py, main.py, install.mpy, board.json")
    p.add_argument("--romfs", action="store_true",
                   help="the image has a romfs partition (make image for a -romfs board): deploy the package into it "
                        "(ppmid deploy --romfs)")
    p.add_argument("--force", action="store_true",
                   help="deploy .mpy files even to a board whose heap is smaller than the app's need (a warning)")
    p.add_argument("--erase-all", action="store_true",
                   help="erase the whole flash first: DESTROYS the gateway's journal, anti-replay counters, UTRN "
                        "memory, keys and config (default: keep the filesystem partition)")
    p.add_argument("--dry-run", action="store_true", help="print the esptool and mpremote commands, run nothing")


def run(args):
    flash.flash(args.port, args.board, args.firmware, args.baud, then_deploy=not args.no_deploy, dry_run=args.dry_run,
                scripts_only=args.scripts_only, force=args.force, erase_all=args.erase_all, romfs=args.romfs)
    return 0
