# The sentences of the HAN link's failures and of its rare log lines (zigbee/han.py): a
# refused or uncertain send, a module that does not take a frame, a lost tunnel reply,
# an incoming message dropped. Apart from the link because a str constant loaded from a
# .mpy is a heap object for as long as its module is loaded (docs/memory.md); han.py
# loads this module when it says one and drops it again. SENTENCES[i] is the sentence
# han.py names _S_... = const(i) (the same name is in the comment).

SENTENCES = (
    "only the Communications Hub is reachable (dest %r)",  # 0 _S_DEST
    "GBCS message of %d bytes exceeds %d",  # 1 _S_TOO_BIG
    "on_status failed: %r",  # 2 _S_ON_STATUS
    "no GB-HRGP tunnel open from the Communications Hub",  # 3 _S_NO_TUNNEL
    "Zigbee HAN link is %s %s",  # 4 _S_HAN_DOWN
    "bring-up failed: %s",  # 5 _S_BRING_UP (said by zigbee/han_start.py)
    "supervisor: unexpected %r",  # 6 _S_UNEXPECTED (zigbee/han_start.py, or han.py when it cannot load)
    "cluster 0x%04x frame from 0x%04x: no APS encryption",  # 7 _S_UNSECURED
    "fragment ack dropped: %d waiting",  # 8 _S_ACK_DROPPED
    "sendReply status 0x%x",  # 9 _S_REPLY_STATUS
    "fragment ack not sent: %r",  # 10 _S_ACK_NOT_SENT
    "GBT block dropped: %s",  # 11 _S_BLOCK_DROPPED
    "incoming queue full: message dropped",  # 12 _S_QUEUE_FULL
    "%d of %d GBT blocks refused by the CH: not sent again",  # 13 _S_PARTIAL
    "message refused by the CH could not be sent again: %s",  # 14 _S_RESEND_FAILED
    "tunnel reply lost: %s",  # 15 _S_REPLY_LOST
    "cannot split into GBT blocks: %s",  # 16 _S_NO_SPLIT
    "the GB-HRGP tunnel closed",  # 17 _S_TUNNEL_CLOSED
    "not sent within %ss: %s",  # 18 _S_NOT_SENT
    "GBT blocks 1-%d of %d reached the CH, block %d could not be sent within %ss (%s)",  # 19 _S_BLOCK_LATE
    "GBT blocks 1-%d of %d reached the CH, then: %s",  # 20 _S_BLOCKS_THEN
    "%d bytes need more than %d APS fragments",  # 21 _S_FRAGMENTS
    "sendUnicast: %s",  # 22 _S_UNICAST
    "no EZSP response to an acknowledged sendUnicast",  # 23 _S_NO_RESPONSE
    "the link failed after the module may have taken the message (%s)",  # 24 _S_MAY_HAVE
    "link failed (%s)",  # 25 _S_LINK_FAILED
    "the module refused to send (status 0x%x)",  # 26 _S_REFUSED
    "the module took the message but the link failed before it reported delivery",  # 27 _S_TOOK_UNCONFIRMED
    "no confirmation of fragment %d",  # 28 _S_UNCONFIRMED
    "the CH did not acknowledge the message (status 0x%x)",  # 29 _S_NOT_ACKED
    "the CH did not acknowledge fragment %d (status 0x%x)",  # 30 _S_FRAGMENT_NOT_ACKED
    "cluster 0x%04x frame from 0x%04x: its sender EUI-64 is not the trust centre's",  # 31 _S_WRONG_EUI
    "incoming GBT message lost: %s",  # 32 _S_GBT_LOST (said by ppmid.gbcs.reassembly)
    "trust centre not read (%r): read again at the next frame",  # 33 _S_TC_NOT_READ
    "resend task turn failed (%r): it goes on",  # 34 _S_RESEND_LOOP
)
