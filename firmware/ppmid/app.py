# The gateway application: config -> journal -> validator -> HAN link -> relay -> MQTT link
# (-> NFC when the board has a reader), wired as docs/relay.md "Wiring" says. Tools and
# tests wait for the ready banner (host_tools/emuboard.py BANNER_RE): banner(board) is
# printed once everything is started, and also when the board has no usable config (it
# stays up, links down, for re-provisioning: docs/config.md).
#
# Memory: on the emulated board the whole firmware's bytecode lives in the heap (an ESP32
# image freezes it into flash instead; docs/emulate.md). The start-up is in ppmid.boot,
# which imports one subsystem at a time with a gc.collect() in between (their load garbage
# never piles up) and is dropped with the other boot-only modules once everything runs:
# what stays here is what the running gateway uses, including the closures it keeps (the
# link's info, the relay's link checks; the SNTP hook is sntp_task.py's), which must not
# come from boot.py (a function holds its module's globals, so one would keep all of
# boot.py alive). A heap task watches the free heap and prints `PPMID heap: free=N min=N` (live heap, after
# a collect) when the minimum moves (host tools report it).
import gc

import asyncio
from micropython import const
from ppmid import VERSION
from ppmid.clock import sleep_ms

WDT_TIMEOUT_MS = const(30000)  # long enough for an mpremote session after Ctrl-C (boot.py arms it)
_HEAP_SAMPLE_MS = const(250)    # the heap task's period: a glance at gc.mem_free() (no collect)
_HEAP_COLLECT_MS = const(1000)  # at most one gc.collect() this often, and only when it may show a new minimum
_HEAP_REPORT_S = const(30)      # a heap line (after a collect) at least this often, even when nothing changed
_FLASH_REPORT_S = const(2)      # journal write figures at most this often, when they change

heap = {"free": 0, "min": None}


def banner(board):
    gc.collect()
    print("PPMID ready: version=%s board=%s free_heap=%d" % (VERSION, board.name, board.mem_free()))


def _sample_heap(board):
    gc.collect()
    free = board.mem_free()
    heap["free"] = free
    if heap["min"] is None or free < heap["min"]:
        heap["min"] = free
        return True
    return False


def _is(obj, attr, value):
    # a link check for the relay: is obj.attr value now?
    return lambda: getattr(obj, attr) == value


def _info(board, relay, han, clock, update=None, nfc=None):
    # the link's info payload (docs/mqtt.md): the relay's, and what only the app knows;
    # update: a dict when an update ever ran (kept current by ppmid.update.report); nfc:
    # the NFC road's counters when the board names a reader (kept by ppmid.nfc.service).
    # Put together by ppmid.relay.report (gateway), which Relay.info loads for each report
    # and drops after it: the running app holds only this closure, not the assembly's code
    app = (board, han, clock, heap, update, nfc)
    return lambda: relay.info(app)


def _ch_clock_read():
    from ppmid.zigbee.chclock import run
    return run


async def _ch_clock(han, clock, set_time, st, link):
    # The clock from the CH's ZCL Time cluster (docs/platform.md "Clock"; started by the
    # boot): once the HAN runs, each read loads ppmid.zigbee.chclock, which drops itself
    # after; this loop and st (ch_clock's settings and state) are all that stays between.
    wait = 1
    while wait:
        while wait > 0:
            # in steps: resync_s may be a week, and a sleep over 2**29 ms overflows the
            # ticks of a 32-bit port (OverflowError: the task would end)
            step = min(wait, 3600)
            await sleep_ms(step * 1000)
            wait -= step
        wait = 1
        if han.status == "running":
            try:
                run = _ch_clock_read()
            except Exception as exc:   # MemoryError in a fragmented heap: later, not never
                print("PPMID clock: the CH clock read could not load (%r); retry in 60 s" % (exc,))
                exc = None
                gc.collect()
                wait = 60
                continue
            wait = await run(han, clock, set_time, st, link)
            run = None


async def run(board):
    from ppmid import boot
    journal = await boot.start(board)  # it prints the status line
    boot.drop()  # the start-up code and the boot-only modules (ppmid.boot.BOOT_ONLY)
    if journal is None:  # no usable config: stay up for re-provisioning (this road alone keeps boot.py)
        await boot.idle(board)
        return
    boot = None
    _sample_heap(board)
    banner(board)
    print("PPMID heap: free=%d min=%d" % (heap["free"], heap["min"]))
    # the heap task: the app's own task from here on (its loop here, not in a coroutine
    # of its own that this one would wait on: one frame fewer held for the app's life)
    # The live heap is only known after a collect, and a collect stops everything else
    # (a few ms on an ESP32, more with PSRAM). So: glance at the free heap every
    # _HEAP_SAMPLE_MS without collecting; collect only when the glance (live + garbage)
    # is below the lowest live figure seen, i.e. when the collect may show a new
    # minimum, at most every _HEAP_COLLECT_MS; and every _HEAP_REPORT_S for the report.
    # An idle gateway then hardly collects, a busy one at most once a second (it used to
    # be four times). Also reports the journal's flash writes (wear), at most every
    # _FLASH_REPORT_S.
    n = 0
    collected = reported = 0
    written = -1
    flash_at = 0
    while True:
        n += 1
        low = heap["min"] is None or board.mem_free() < heap["min"]
        if (low and n - collected >= _HEAP_COLLECT_MS // _HEAP_SAMPLE_MS) or n - reported >= _HEAP_REPORT_S * 1000 // _HEAP_SAMPLE_MS:
            collected = n
            if _sample_heap(board) or n - reported >= _HEAP_REPORT_S * 1000 // _HEAP_SAMPLE_MS:
                reported = n
                print("PPMID heap: free=%d min=%d" % (heap["free"], heap["min"]))
        if journal.bytes_written != written and n - flash_at >= _FLASH_REPORT_S * 1000 // _HEAP_SAMPLE_MS:
            written = journal.bytes_written
            flash_at = n
            print("PPMID flash: journal_written=%d appends=%d syncs=%d compactions=%d" % (
                written, journal.appends, journal.syncs, journal.compactions))
        await sleep_ms(_HEAP_SAMPLE_MS)
