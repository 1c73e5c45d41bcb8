# After the HAN network went down on a gateway that commissions (zigbee.install_code): the
# module mostly finds it again by itself; if it has not within zigbee.rejoin_after_s, a
# secured rejoin, then a trust-centre one (zigbee/commission.py's rejoin, loaded only then). Apart from han.py
# so that the always-loaded driver carries only the hook (and no attribute: the network
# task is set on it only once one runs), and apart from commission.py so that a short loss
# does not load the commissioning code (docs/zigbee.md "Rejoin and re-commission").
import asyncio

from ppmid.clock import wait_event_ms


def network_task(han):
    """The rejoin or re-commission running for han, or None."""
    return getattr(han, "_net_task", None)


def network_lost(han):
    """ZigbeeHan's hook on NETWORK_DOWN after bring-up: one network task at a time."""
    if network_task(han) is None:
        han._net_task = asyncio.create_task(after_network_loss(han))


async def after_network_loss(han):
    c = han.opts["commission"]
    resets = han.counters["resets"]
    try:
        han._net_event.clear()
        if (not han._net_up and not await wait_event_ms(han._net_event, c.get("rejoin_after_s", 20) * 1000)
                and han.counters["resets"] == resets):   # (a module reset: the supervisor's bring-up decides)
            from ppmid.zigbee.commission import rejoin
            await rejoin(han, c)
    except Exception as exc:  # a link failure: the supervisor resets and comes back
        han._logf("rejoin stopped: %r", exc)
    finally:
        if network_task(han) is asyncio.current_task():
            han._net_task = None
