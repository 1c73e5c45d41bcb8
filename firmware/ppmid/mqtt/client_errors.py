# The sentences of the MQTT client's link failures (why a connection was dropped, what a
# reader or writer hit). Apart from the client because a str constant loaded from a .mpy is
# a heap object for as long as its module is loaded: in client.py these held ~0.7 KB of a
# board's heap for good (docs/memory.md, session 7). The client imports this module when a
# connection fails and drops it again. SENTENCES[i] is the sentence client.py names _S_...
# = const(i) (the same name is in the comment).

SENTENCES = (
    "connection closed",  # 0 _S_CLOSED
    "qos %r not supported (0 or 1)",  # 1 _S_QOS
    "session ended",  # 2 _S_SESSION_ENDED
    "not connected",  # 3 _S_NOT_CONNECTED
    "write failed: %s",  # 4 _S_WRITE_FAILED
    "no PUBACK for packet %d within %ss",  # 5 _S_NO_PUBACK
    "no PINGRESP within %ss",  # 6 _S_NO_PINGRESP
    "remaining length longer than 4 bytes",  # 7 _S_LENGTH_LONG
    "packet of %d bytes exceeds the %d allowed",  # 8 _S_PACKET_LARGE
    "unexpected packet type 0x%02X",  # 9 _S_UNEXPECTED
    "read failed: %s",  # 10 _S_READ_FAILED
    "QoS 2 PUBLISH on a QoS 1 subscription",  # 11 _S_QOS2
    "handler failed for packet %d, PUBACK withheld: %s",  # 12 _S_HANDLER_FAILED
    "write stalled: not sent within %ss",  # 13 _S_WRITE_STALLED
)
