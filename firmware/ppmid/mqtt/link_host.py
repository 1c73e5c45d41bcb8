# What only host tools and tests do with a gateway's link (ppmid.mqtt.link): stop it
# gracefully. A board never stops its link (it runs until a reset, and the broker then
# publishes its will), so the running app does not hold this code (docs/memory.md,
# session 9); nothing in the firmware imports this module.
from ppmid.mqtt.contract import state_json
from ppmid.clock import wait_for_ms


async def stop(link, timeout=2):
    """Say offline ourselves, then DISCONNECT: a graceful DISCONNECT suppresses the will."""
    if link.client.state == "online":
        try:
            await wait_for_ms(link.client.publish(link.topics.state, state_json("offline"), 1, True),
                              int(timeout * 1000))
        except Exception:  # noqa: BLE001 - best effort; the will covers a dead link
            pass
    await link.client.stop()
