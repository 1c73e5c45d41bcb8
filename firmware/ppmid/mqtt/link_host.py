# What only host tools and tests do with a gateway's link (ppmid.mqtt.link): stop it
# gracefully, and read its client's counters by name. A board never stops its link (it runs
# until a reset, and the broker then publishes its will), and no gateway report carries
# the client's counters, so the running app does not hold this code or these names
# (docs/memory.md, sessions 9 and 11); nothing in the firmware imports this module. (Here,
# not in a module of their own: each file is a line of an update's manifest, which must fit
# the client's packet cap: tests/test_update_sign.py.)
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


# the MQTT client's counters (client.stats, a list of ints by its private _C_X indices:
# ppmid/mqtt/client.py, "connects" also ppmid/mqtt/handshake.py's, "malformed"
# ppmid/mqtt/oversize.py's), named in index order
STATS = ("connects", "connect_failures", "drops", "retransmits", "published", "received",
         "pubacks_withheld", "pings", "oversize", "link_losses", "malformed")


def stats(client):
    """The client's counters (client.stats, a list by index) as a dict by name."""
    c = client.stats
    if len(c) != len(STATS):
        raise ValueError("%d counters for %d names" % (len(c), len(STATS)))
    return dict(zip(STATS, c))
