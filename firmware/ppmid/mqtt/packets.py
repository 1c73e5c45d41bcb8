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


def encode_length(n):
    """Remaining Length (2.2.3): 7 bits per byte, high bit = more bytes follow."""
    if n < 0 or n > _MAX_REMAINING:
        raise PacketError("remaining length %d out of range" % n)
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
        raise PacketError("string of %d bytes is too long for MQTT" % len(b))
    return struct.pack(">H", len(b)) + b


def check_topic(topic, wildcards=False):
    """Topic names (4.7): non-empty, no NUL; wildcards only in filters, and whole levels."""
    if not isinstance(topic, str) or not topic or len(topic) > 0xFFFF or "\x00" in topic:
        raise PacketError("invalid topic %r" % (topic,))
    if not wildcards:
        if "+" in topic or "#" in topic:
            raise PacketError("wildcard in topic name %r" % topic)
        return topic
    levels = topic.split("/")
    for i in range(len(levels)):
        lv = levels[i]
        if ("+" in lv and lv != "+") or ("#" in lv and (lv != "#" or i != len(levels) - 1)):
            raise PacketError("misplaced wildcard in topic filter %r" % topic)
    return topic


def publish_header(topic, payload_len, qos=0, retain=False, dup=False, pid=0):
    """Fixed header + variable header of a PUBLISH (3.3); the payload follows unchanged."""
    if qos not in (0, 1):
        raise PacketError("qos %r not supported (0 or 1)" % (qos,))
    first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    if qos == 0 and dup:
        raise PacketError("DUP set on a QoS 0 PUBLISH")
    t = encode_string(check_topic(topic))
    var_len = len(t) + (2 if qos else 0)
    out = bytearray((first,))
    out += encode_length(var_len + payload_len)
    out += t
    if qos:
        if not 0 < pid <= 0xFFFF:
            raise PacketError("packet id %r out of range" % (pid,))
        out += struct.pack(">H", pid)
    return out


def parse_publish(first, body):
    """(topic str, payload memoryview into body, qos, retain, dup, pid)."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise PacketError("PUBLISH with QoS 3")
    mv = memoryview(body)
    if len(mv) < 2:
        raise PacketError("PUBLISH truncated")
    tlen = (mv[0] << 8) | mv[1]
    pos = 2 + tlen
    if pos > len(mv):
        raise PacketError("PUBLISH topic runs past the packet")
    try:
        topic = str(bytes(mv[2:pos]), "utf-8")
    except UnicodeError:
        raise PacketError("PUBLISH topic is not UTF-8")
    pid = 0
    if qos:
        if pos + 2 > len(mv):
            raise PacketError("PUBLISH packet id missing")
        pid = (mv[pos] << 8) | mv[pos + 1]
        if pid == 0:
            raise PacketError("PUBLISH packet id 0")
        pos += 2
    return topic, mv[pos:], qos, bool(first & 1), bool(first & 0x08), pid


def puback(pid):
    return bytes((PUBACK, 2, pid >> 8, pid & 0xFF))


def parse_packet_id(body):
    """Packet id of a PUBACK (or any body that is just a packet id)."""
    if len(body) != 2:
        raise PacketError("packet-id body of %d bytes (expected 2)" % len(body))
    return (body[0] << 8) | body[1]
