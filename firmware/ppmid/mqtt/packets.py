# MQTT 3.1.1 packet codec (OASIS MQTT 3.1.1, section 2 and 3): builds and parses the
# packets the gateway client uses while connected. Pure: no I/O, no board imports. Builders
# return bytes (or a header to send before a payload, so a large payload is never copied);
# parsers take the body after the fixed header (a bytes-like object) and return plain
# values. The packets of a connection's start (CONNECT/CONNACK, SUBSCRIBE/SUBACK) are in
# ppmid.mqtt.handshake, loaded only then; what only host tools and tests use (a whole PUBLISH
# as bytes, reading a remaining length, topic filter matching) in ppmid.mqtt.packets_host.
import struct
from micropython import const

from ppmid.errors import PpmidError

E_PACKET = "E_MQTT_PACKET"

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)  # reserved flag bits 0010 (3.8.1)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)

_MAX_REMAINING = const(268435455)
SUBACK_FAILURE = const(0x80)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


class PacketError(PpmidError):
    def __init__(self, message):
        super().__init__(E_PACKET, message)


# The refusals' sentences, by their index in ppmid.mqtt.packets_errors.SENTENCES (the text)
_S_LENGTH_RANGE = const(0)
_S_STRING_LONG = const(1)
_S_TOPIC = const(2)
_S_TOPIC_WILDCARD = const(3)
_S_FILTER_WILDCARD = const(4)
_S_QOS = const(5)
_S_DUP_QOS0 = const(6)
_S_PID_RANGE = const(7)
_S_QOS3 = const(8)
_S_TRUNCATED = const(9)
_S_TOPIC_PAST = const(10)
_S_TOPIC_UTF8 = const(11)
_S_PID_MISSING = const(12)
_S_PID_ZERO = const(13)
_S_PID_BODY = const(14)


def _refuse(key, arg=None):
    # key: the sentence's _S_... name; its text is ppmid.mqtt.packets_errors', loaded for the
    # refusal and dropped again (as str constants here the sentences held ~0.7 KB of heap)
    from ppmid.modules import sentence
    return PacketError(sentence("ppmid.mqtt.packets_errors", key, arg))


def encode_length(n):
    """Remaining Length (2.2.3): 7 bits per byte, high bit = more bytes follow."""
    if n < 0 or n > _MAX_REMAINING:
        raise _refuse(_S_LENGTH_RANGE, n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_string(s):
    """A UTF-8 encoded string (1.5.3): its length in 2 bytes, then its bytes."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > 0xFFFF:
        raise _refuse(_S_STRING_LONG, len(b))
    return struct.pack(">H", len(b)) + b


def check_topic(topic, wildcards=False):
    """Topic names (4.7): non-empty, no NUL; wildcards only in filters, and whole levels."""
    if not isinstance(topic, str) or not topic or len(topic) > 0xFFFF or "\x00" in topic:
        raise _refuse(_S_TOPIC, (topic,))
    if not wildcards:
        if "+" in topic or "#" in topic:
            raise _refuse(_S_TOPIC_WILDCARD, topic)
        return topic
    levels = topic.split("/")
    for i in range(len(levels)):
        lv = levels[i]
        if ("+" in lv and lv != "+") or ("#" in lv and (lv != "#" or i != len(levels) - 1)):
            raise _refuse(_S_FILTER_WILDCARD, topic)
    return topic


def publish_header(topic, payload_len, qos=0, retain=False, dup=False, pid=0):
    """Fixed header + variable header of a PUBLISH (3.3); the payload follows unchanged."""
    if qos not in (0, 1):
        raise _refuse(_S_QOS, (qos,))
    first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    if qos == 0 and dup:
        raise _refuse(_S_DUP_QOS0)
    t = encode_string(check_topic(topic))
    var_len = len(t) + (2 if qos else 0)
    out = bytearray((first,))
    out += encode_length(var_len + payload_len)
    out += t
    if qos:
        if not 0 < pid <= 0xFFFF:
            raise _refuse(_S_PID_RANGE, (pid,))
        out += struct.pack(">H", pid)
    return out


def parse_publish(first, body):
    """(topic str, payload memoryview into body, qos, retain, dup, pid)."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise _refuse(_S_QOS3)
    mv = memoryview(body)
    if len(mv) < 2:
        raise _refuse(_S_TRUNCATED)
    tlen = (mv[0] << 8) | mv[1]
    pos = 2 + tlen
    if pos > len(mv):
        raise _refuse(_S_TOPIC_PAST)
    try:
        topic = str(bytes(mv[2:pos]), "utf-8")
    except UnicodeError:
        raise _refuse(_S_TOPIC_UTF8)
    pid = 0
    if qos:
        if pos + 2 > len(mv):
            raise _refuse(_S_PID_MISSING)
        pid = (mv[pos] << 8) | mv[pos + 1]
        if pid == 0:
            raise _refuse(_S_PID_ZERO)
        pos += 2
    return topic, mv[pos:], qos, bool(first & 1), bool(first & 0x08), pid


def puback(pid):
    return bytes((PUBACK, 2, pid >> 8, pid & 0xFF))


def parse_packet_id(body):
    """Packet id of a PUBACK (or any body that is just a packet id)."""
    if len(body) != 2:
        raise _refuse(_S_PID_BODY, len(body))
    return (body[0] << 8) | body[1]
