# The gateway application. For now: print the ready banner, then keep the watchdog fed.
# The relay core replaces the body of run(); keep calling banner(board) once the app is
# up, tools and tests wait for that line (host_tools/emuboard.py BANNER_RE).
import gc

import asyncio
from ppmid import VERSION

WDT_TIMEOUT_MS = 30000  # long enough for an mpremote session after Ctrl-C
FEED_INTERVAL_S = 1


def banner(board):
    gc.collect()
    print("PPMID ready: version=%s board=%s free_heap=%d" % (VERSION, board.name, board.mem_free()))


async def run(board):
    banner(board)
    wdt = board.wdt(WDT_TIMEOUT_MS)
    while True:
        wdt.feed()
        await asyncio.sleep(FEED_INTERVAL_S)
