# The retained info follows the HAN (issue #16): a change of the HAN's status (which is
# also how commissioning's state and last failure show: commissioning, commission-failed,
# rejoining, rejoin-failed, then no-tunnel/running) republishes info, so a DCC User does
# not read the state of the last connect during a long commissioning failure or after a
# rejoin. Paced: the changes of a burst settle into one info, and at most one goes out
# every EVERY_MS, so a flapping HAN cannot flood the broker; the last change is always
# published in the end (the info is built when it goes out, not when the change came).
# Loaded by the link (Link.__call__, ZigbeeHan's on_status hook) at a change while it is
# online (a change while offline needs nothing: the next connect publishes the info
# anyway), and dropped again once its publication is out with no other change pending: a
# running gateway's HAN changes rarely, so it does not hold this code between changes
# (docs/memory.md, session 10). Its state is kept on the link (set only once used), so it
# outlives the module: _info_task, the pending publication; _info_at, the ticks of the
# last one. A change whose load fails (MemoryError) is logged by the HAN (on_status
# failed) and shows with the next change or connect.
import asyncio

from ppmid.clock import sleep_ms, ticks_ms, ticks_diff

EVERY_MS = 5000   # at most one info this often (not const: tests shorten it)
SETTLE_MS = 250   # a burst (resetting, starting, no-tunnel, running) gives one info


def changed(link):
    """A change the info shows: publish it once the pace allows (one pending at a time)."""
    if getattr(link, "_info_task", None) is None:
        link._info_task = asyncio.create_task(_publish(link))


async def _publish(link):
    at = getattr(link, "_info_at", None)
    # the last info may be days old: a 32-bit port's ticks_diff then reads it negative
    since = EVERY_MS if at is None else ticks_diff(ticks_ms(), at)
    wait = max(SETTLE_MS, EVERY_MS - since) if 0 <= since < EVERY_MS else SETTLE_MS
    try:
        await sleep_ms(wait)
    finally:
        link._info_task = None   # a change from now on is published by the next one
    try:
        if link.client.state == "online":  # else: the next connect publishes the info
            link._info_at = ticks_ms()
            await link.republish_info()
    except Exception as exc:  # noqa: BLE001 - no trace from a task; the next connect publishes it
        if link.client.log:
            link.client.log("mqtt: info not published: %r" % (exc,))
    finally:
        _drop(link)


def _drop(link):
    # no change came while this publication went out: this code goes until the next one
    # (a change meanwhile has its own task, which drops the module when it is done)
    if link._info_task is None:
        try:
            from ppmid.modules import unload
            unload("ppmid.mqtt.info_follow", "ppmid.modules")
        except Exception:  # noqa: BLE001 - MemoryError: it stays until the next publication
            pass
