# The MQTT client's counters by name: what tests and host tools read (docs/mqtt.md, the
# client's `stats`). The client counts in a list of ints by its private _C_... indices
# (ppmid/mqtt/client.py; "connects" also ppmid/mqtt/handshake.py's): the names are here, in
# the same order, so that the running firmware does not hold a dict of ten names that no
# gateway report reads. No firmware module imports this one (docs/memory.md, "Session 11,
# the relay, MQTT and app side").

NAMES = ("connects", "connect_failures", "drops", "retransmits", "published", "received",
         "pubacks_withheld", "pings", "oversize", "link_losses")


def named(client):
    """The client's counters (client.stats, a list by index) as a dict by name."""
    stats = client.stats
    if len(stats) != len(NAMES):
        raise ValueError("%d counters for %d names" % (len(stats), len(NAMES)))
    return dict(zip(NAMES, stats))
