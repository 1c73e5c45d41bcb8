# After the HAN network went down on a gateway that commissions (zigbee.install_code): the
# module mostly finds it again by itself; if it has not within zigbee.rejoin_after_s, a
# secured rejoin, then a trust-centre one (zigbee/commission.py's rejoin, loaded only then). Apart from han.py
# so that the always-loaded driver carries only the hook (and no attribute: the network
# task is set on it only once one runs), and apart from commission.py so that a short loss
# does not load the commissioning code (docs/zigbee.md "Rejoin and re-commission").
import asyncio
from micropython import const

from ppmid.clock import wait_event_ms

# the HAN link's counter of module resets: its index in han.counters (a list of ints), the
# place of "resets" in zigbee/han_counters.py's HAN
_C_RESETS = const(11)


def network_task(han):
    """The rejoin or re-commission running for han, or None."""
    return getattr(han, "_net_task", None)


def network_lost(han):
    """ZigbeeHan's hook on NETWORK_DOWN after bring-up: one network task at a time."""
    if network_task(han) is None:
        han._net_task = asyncio.create_task(after_network_loss(han))


async def after_network_loss(han):
    c = han.commission_settings
    resets = han.counters[_C_RESETS]
    wait_ms = c.get("rejoin_after_s", 20) * 1000
    backoff = 1
    try:
        # (a module reset: the supervisor's bring-up decides, and cancels this task)
        while not han._net_up and han.counters[_C_RESETS] == resets:
            han._net_event.clear()
            if await wait_event_ms(han._net_event, wait_ms) or han.counters[_C_RESETS] != resets:
                continue    # back by itself (the loop sees whether it stayed), or a reset
            try:
                from ppmid.zigbee.commission import rejoin
                await rejoin(han, c)
                return
            except Exception as exc:
                # Not the end of the watch: a MemoryError loading the commissioning code
                # again (a fragmented heap; docs/zigbee.md "Rejoin and re-commission") left
                # the gateway off the HAN for good. A link failure ends it through the
                # supervisor's reset (the counter above); anything else is tried again.
                han._logf("rejoin stopped: %r; again in %d s", exc, backoff)
                import gc
                gc.collect()
            wait_ms = backoff * 1000
            backoff = min(han.backoff_max_s, backoff * 2)
    finally:
        if network_task(han) is asyncio.current_task():
            han._net_task = None
