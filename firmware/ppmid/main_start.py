# main.py's start (firmware/main.py): which application set to run, asked of the update
# pointer (ppmid.update.slots, docs/update.md), the safe mode when the sets keep failing,
# and the chosen set's board and app. Imported from the root set, as the pointer is, before
# any set's app. Memory: main.py waits in asyncio.run for as long as the app runs, so all of
# its code stays in the heap (compiled from source, as a board runs it); this code runs once
# per boot, so it lives here and is gone before the app starts (docs/memory.md "Session 10,
# running objects").
import sys

PROBATION_WDT_MS = 30000  # = ppmid.app.WDT_TIMEOUT_MS: armed early, so a hang at import resets


def _choose():
    try:
        from ppmid.update import slots
    except ImportError:  # a package without updates
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
    # forget the root set's package (this module with it): the chosen set's is imported afresh
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


def start():
    """(board, app, watch, probation) of the chosen set, for main.py to run: watch is the
    pointer's probation clock (a coroutine function) when the set is on probation, else
    None. None when the safe mode ran instead (it returns only when the safe mode does). A
    set whose boots are counted and that fails to import or start: its traceback,
    `PPMID crashed: rebooting` and SystemExit(3) (the board resets); where nothing counts the
    boots (no update pointer) the exception itself, so a reboot cannot loop for ever."""
    path, probation, watch, failed = _choose()
    if failed:
        _safe_mode(path, failed)
        return None
    if failed is None:  # nothing counts the boots: a reboot could loop for ever, the REPL it is
        board, app = _start(path, probation)
    else:
        try:
            board, app = _start(path, probation)
        except Exception as e:  # noqa: BLE001 - counted: a rollback on probation, else the safe mode
            sys.print_exception(e)
            print("PPMID crashed: rebooting")
            raise SystemExit(3)  # the ROM (or the port) resets the board
    # where no set was chosen (no update pointer) the root package still holds this module
    from ppmid.modules import unload
    unload(__name__)
    return board, app, watch, probation
