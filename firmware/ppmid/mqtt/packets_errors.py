# The sentences of the MQTT codec's refusals (ppmid.mqtt.packets raises them as PacketError,
# E_MQTT_PACKET). Apart from the codec because a str constant loaded from a .mpy is a heap
# object for as long as its module is loaded: in packets.py these held ~0.7 KB of a board's
# heap for good (docs/memory.md, session 7). The codec imports this module for each refusal
# and drops it again. SENTENCES[i] is the sentence packets.py names _S_... = const(i) (the
# same name is in the comment).

SENTENCES = (
    "remaining length %d out of range",  # 0 _S_LENGTH_RANGE
    "string of %d bytes is too long for MQTT",  # 1 _S_STRING_LONG
    "invalid topic %r",  # 2 _S_TOPIC
    "wildcard in topic name %r",  # 3 _S_TOPIC_WILDCARD
    "misplaced wildcard in topic filter %r",  # 4 _S_FILTER_WILDCARD
    "qos %r not supported (0 or 1)",  # 5 _S_QOS
    "DUP set on a QoS 0 PUBLISH",  # 6 _S_DUP_QOS0
    "packet id %r out of range",  # 7 _S_PID_RANGE
    "PUBLISH with QoS 3",  # 8 _S_QOS3
    "PUBLISH truncated",  # 9 _S_TRUNCATED
    "PUBLISH topic runs past the packet",  # 10 _S_TOPIC_PAST
    "PUBLISH topic is not UTF-8",  # 11 _S_TOPIC_UTF8
    "PUBLISH packet id missing",  # 12 _S_PID_MISSING
    "PUBLISH packet id 0",  # 13 _S_PID_ZERO
    "packet-id body of %d bytes (expected 2)",  # 14 _S_PID_BODY
)
