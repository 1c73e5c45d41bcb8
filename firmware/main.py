# main.py: start the gateway. A crash reboots the board; Ctrl-C (e.g. from mpremote)
# drops to the REPL as on any MicroPython board.
# Before anything else it asks the update pointer which application set to run
# (ppmid.update.slots, docs/update.md): the root set, or a slot an update switched to. A
# set that fails to import or start reboots the board: on probation the next boot counts
# towards the rollback (and the probation clock runs beside the app); otherwise, after
# SAFE_AFTER boots in a row that did not start the app, the next one starts the safe mode
# (ppmid.update.safe: MQTT state, info and the update topics, the REPL) instead, once.
import sys

PROBATION_WDT_MS = 30000  # = ppmid.app.WDT_TIMEOUT_MS: armed early, so a hang at import resets


def _choose():
    try:
        from ppmid.update import slots
    except ImportError:  # no ppmid package (a frozen image not flashed yet), or one without updates
        return None, None, None, None
    path, probation = slots.choose("")
    watch = slots.watch if probation is not None else None
    failed = 0
    if probation is None:
        failed = slots.count_boot("") - 1
        if failed >= slots.SAFE_AFTER:
            slots.boot_ok("")  # safe mode this once: the next reset tries the app again
        else:
            failed = 0
    # forget the root set's package: the chosen set's is imported afresh
    for name in list(sys.modules):
        if name == "ppmid" or name.startswith("ppmid."):
            del sys.modules[name]
    return path, probation, watch, failed


def _start(path, probation):
    # the chosen set's board and app
    if path and path != "/":
        sys.path.insert(0, path)
    from ppmid.board import load
    board = load(path + "/board.json" if path and path != "/" else None)
    if probation is not None:
        board.wdt(PROBATION_WDT_MS)
    from ppmid import app
    return board, app


def _safe_mode(path, failed):
    # a failure here leaves the REPL: the safe mode is the last resort
    if path and path != "/":
        sys.path.insert(0, path)
    from ppmid.board import load
    board = load(path + "/board.json" if path and path != "/" else None)
    import asyncio
    from ppmid.update import safe
    asyncio.run(safe.run(board, failed))


def _main():
    path, probation, watch, failed = _choose()
    if failed:
        _safe_mode(path, failed)
        return
    if failed is None:  # nothing counts the boots: a reboot could loop for ever, the REPL it is
        board, app = _start(path, probation)
    else:
        try:
            board, app = _start(path, probation)
        except Exception as e:  # noqa: BLE001 - counted: a rollback on probation, else the safe mode
            sys.print_exception(e)
            print("PPMID crashed: rebooting")
            raise SystemExit(3)  # the ROM (or the port) resets the board
    import asyncio
    from ppmid.clock import sleep_ms

    async def _run():
        if watch is not None:
            asyncio.create_task(watch(board, "", probation.get("seconds", 300), sleep_ms))
        await app.run(board)

    try:
        asyncio.run(_run())
        print("PPMID app returned: rebooting")
    except KeyboardInterrupt:
        raise
    except Exception as e:
        sys.print_exception(e)
        print("PPMID crashed: rebooting")
    board.reset()


_main()
