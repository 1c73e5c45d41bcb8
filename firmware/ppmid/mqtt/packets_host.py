# The MQTT 3.1.1 codec's pieces that only host tools and tests use (the fake brokers of the
# tests, the fleet load generator, the benchmarks): a whole PUBLISH as bytes, reading a
# remaining length, matching a topic filter. Apart from ppmid.mqtt.packets so that the
# gateway does not load them; nothing in the firmware imports this module.
from ppmid.mqtt.packets import PacketError, publish_header


def decode_length(buf, pos=0):
    """(value, next_pos), or None when buf ends before the length does. A fifth length
    byte is a protocol error."""
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise PacketError("remaining length longer than 4 bytes")


def publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    return bytes(publish_header(topic, len(payload), qos, retain, dup, pid) + payload)


def topic_matches(filter, topic):
    """True when the topic name matches the filter (4.7.1 wildcards)."""
    f = filter.split("/")
    t = topic.split("/")
    for i in range(len(f)):
        if f[i] == "#":
            return True
        if i >= len(t):
            return False
        if f[i] != "+" and f[i] != t[i]:
            return False
    return len(f) == len(t)
