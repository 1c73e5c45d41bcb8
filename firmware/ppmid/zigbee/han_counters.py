# Every counter of a HAN link in one dict, its layers' under their prefixes: what the tests
# and the emulator's reports read. Apart from zigbee/han.py because the gateway itself
# never asks for it (it reports the HAN level, han.counters): no firmware module imports
# this one, so the running app does not hold it (docs/memory.md).


def all_counters(han):
    """han.counters with the ASH link's (ash_), its decoder's (ash_rx_), the EZSP driver's
    (ezsp_) and the tunnel server's (tunnel_)."""
    out = dict(han.counters)
    for prefix, d in (("ash_", han._link.counters), ("ash_rx_", han._link._dec.counters),
                      ("ezsp_", han._ezsp.counters), ("tunnel_", han.tunnel.counters)):
        for k in d:
            out[prefix + k] = d[k]
    return out
