# A ZigbeeHan whose tunnel the CH has opened and whose sends are recorded, not made (the NCP
# below is not involved; _send_message is tested end to end in tests/test_zigbee_e2e.py):
# the rig of tests/firmware/test_zigbee_han.py and test_zigbee_han_net.py. CPython and
# MicroPython.
from ppmid.zigbee import han as H
from ppmid.zigbee import tunnel_host as TH   # the CH's frames


def sending_han(ch, window_s):
    """(han, sent): the HAN running, its tunnel opened by `ch`, `sent` every message's bytes."""
    han = H.ZigbeeHan(None, None, {"resend_window_s": window_s})
    replies, _ = han.tunnel.handle(ch, TH.request_tunnel(1))
    assert han.tunnel.tunnel_id is not None and len(replies) == 1
    han.tunnel.events = []
    han.status = "running"  # the link is up: send() goes straight to _send_message
    sent = []

    async def send_message(data, deadline):
        han._sent_tid = han.tunnel.tunnel_id
        han._sent_pieces = 1
        sent.append(bytes(data))

    han._send_message = send_message
    return han, sent
