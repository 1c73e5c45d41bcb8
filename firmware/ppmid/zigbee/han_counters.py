# Every counter of a HAN link in one dict, its layers' under their prefixes: what the tests
# and the emulator's reports read. Apart from zigbee/han.py because the gateway itself
# never asks for it (it reports the HAN level, han.counters): no firmware module imports
# this one, so the running app does not hold it (docs/memory.md).
#
# The ASH link, its decoder and the EZSP driver count in a list of ints (their private
# _C_... indices): the names are here, in the same order, so that the running firmware
# does not intern ~33 names only a report reads (docs/memory.md, session 10).

# zigbee/ashlink.py's AshLink.counters
LINK = ("tx_data", "retx", "rx_data", "rx_dup", "rx_out_of_order", "tx_nak", "rx_nak",
        "ack_timeouts", "resets", "link_failures", "unsolicited_rstack", "rx_error_frames",
        "unknown_frames", "rx_while_down", "remote_not_ready", "not_taken_at_reset",
        "rx_stray_ack", "damaged_rstack", "lost_rstack")
# zigbee/ash.py's Decoder.counters
DECODER = ("frames", "crc", "too_long", "too_short", "cancel", "substitute", "bad_escape")
# zigbee/ezsp.py's Ezsp.counters
EZSP = ("commands", "responses", "callbacks", "orphan_responses", "bad_frames",
        "invalid_command", "timeouts")


def named(counters, names):
    """One layer's counters (a list by index) as a dict by name (LINK, DECODER or EZSP)."""
    if len(counters) != len(names):
        raise ValueError("%d counters for %d names" % (len(counters), len(names)))
    return dict(zip(names, counters))


def all_counters(han):
    """han.counters with the ASH link's (ash_), its decoder's (ash_rx_), the EZSP driver's
    (ezsp_) and the tunnel server's (tunnel_)."""
    out = dict(han.counters)
    for prefix, d in (("ash_", named(han._link.counters, LINK)),
                      ("ash_rx_", named(han._link._dec.counters, DECODER)),
                      ("ezsp_", named(han._ezsp.counters, EZSP)), ("tunnel_", han.tunnel.counters)):
        for k in d:
            out[prefix + k] = d[k]
    return out
