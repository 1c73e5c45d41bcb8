# Every counter of a HAN link in one dict, its layers' under their prefixes: what the tests
# and the emulator's reports read. Apart from zigbee/han.py because the gateway itself
# never asks for it: no firmware module imports this one, so the running app does not
# hold it (docs/memory.md).
#
# The HAN link, its tunnel server, the ASH link, its decoder and the EZSP driver count in
# lists of ints (their private _C_... indices): the names are here, in the same order, so
# that the running firmware does not intern ~67 names only a report reads (docs/memory.md,
# session 10).

# zigbee/han.py's ZigbeeHan.counters; rx_gbt_timeouts, counted by gbcs/reassembly.py, is
# reported once one happened (as when the counters were a dict it added itself to)
HAN = ("sent", "send_failed", "send_retries", "fragments_tx", "gbt_blocks_tx", "received",
       "rx_dropped", "rx_fragments", "rx_fragment_timeouts", "rx_not_tunnel", "rx_gbt_blocks",
       "resets", "callbacks_unknown", "rejected_by_ch", "resent", "resend_failed",
       "delivery_unknown", "resend_partial", "rx_fragment_acks", "rx_fragment_ack_failed",
       "rx_fragments_dropped", "rx_unsecured", "rx_gbt_timeouts", "replies_dropped", "resend_dropped")
# zigbee/tunnel.py's TunnelServer.counters (zigbee/tunnel_control.py counts in it too)
TUNNEL = ("requests", "opened", "refused", "closed", "rx_data", "tx_data", "rx_transfer_errors",
          "tx_transfer_errors", "bad_zcl", "unknown_commands", "not_ch", "unhandled")

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
    """One layer's counters (a list by index) as a dict by name (HAN, TUNNEL, LINK, DECODER
    or EZSP)."""
    if len(counters) != len(names):
        raise ValueError("%d counters for %d names" % (len(counters), len(names)))
    return dict(zip(names, counters))


def han_named(han):
    """The HAN link's own counters by name: rx_gbt_timeouts only once one was counted."""
    out = named(han.counters, HAN)
    if not out["rx_gbt_timeouts"]:
        del out["rx_gbt_timeouts"]
    return out


def all_counters(han):
    """The HAN link's counters (han_named) with the ASH link's (ash_), its decoder's
    (ash_rx_), the EZSP driver's (ezsp_) and the tunnel server's (tunnel_)."""
    out = han_named(han)
    for prefix, d in (("ash_", named(han._link.counters, LINK)),
                      ("ash_rx_", named(han._link._dec.counters, DECODER)),
                      ("ezsp_", named(han._ezsp.counters, EZSP)),
                      ("tunnel_", named(han.tunnel.counters, TUNNEL))):
        for k in d:
            out[prefix + k] = d[k]
    return out
