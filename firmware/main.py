# main.py: start the gateway. A crash reboots the board; Ctrl-C (e.g. from mpremote)
# drops to the REPL as on any MicroPython board.
import sys


def _main():
    from ppmid.board import load
    board = load()
    import asyncio
    from ppmid import app
    try:
        asyncio.run(app.run(board))
        print("PPMID app returned: rebooting")
    except KeyboardInterrupt:
        raise
    except Exception as e:
        sys.print_exception(e)
        print("PPMID crashed: rebooting")
    board.reset()


_main()
