# main.py: start the gateway. A crash reboots the board; Ctrl-C (e.g. from mpremote)
# drops to the REPL as on any MicroPython board.
# Before anything else it asks the update pointer which application set to run
# (ppmid.update.slots, docs/update.md; through ppmid.main_start): the root set, or a slot an update switched to. A
# set that fails to import or start reboots the board: on probation the next boot counts
# towards the rollback (and the probation clock runs beside the app); otherwise, after
# SAFE_AFTER boots in a row that did not start the app, the next one starts the safe mode
# (ppmid.update.safe: MQTT state, info and the update topics, the REPL) instead, once.
import sys

# Memory: this file's code stays in the heap while the app runs (main.py waits in
# asyncio.run), compiled from source; what runs once per boot (the choice of the set, the
# safe mode, the set's start) is ppmid.main_start's, gone before the app starts.


def _main():
    from ppmid.main_start import start
    started = start()
    start = None  # a function holds its module: this frame lives as long as the app
    if started is None:  # the safe mode ran
        return
    board, app, watch, probation = started
    started = None
    import asyncio
    if watch is not None:
        # the probation clock beside the app, made before asyncio.run runs both (it sleeps
        # first): no coroutine of main.py's own waits on the app for its life
        from ppmid.clock import sleep_ms
        asyncio.create_task(watch(board, "", probation.get("seconds", 300), sleep_ms))
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
