"""Cross-check the firmware MQTT codec against paho-mqtt (an independent implementation).

A one-connection fake broker built on ppmid.mqtt.packets talks to a real paho client:
paho's CONNECT/SUBSCRIBE/PUBLISH/PUBACK must parse with our codec, and our PUBLISH
(QoS 0 and 1, retain, large payloads with multi-byte lengths) must arrive intact in paho.
"""
import socket
import threading

import paho.mqtt.client as mqtt

from ppmid.mqtt import packets as p
from ppmid.mqtt import packets_host
from ppmid.mqtt.handshake import connect as connect_packet


def _read_packet(sock):
    first = sock.recv(1)
    if not first:
        return None, None
    buf = b""
    while True:
        buf += sock.recv(1)
        r = packets_host.decode_length(buf)
        if r is not None:
            break
    n = r[0]
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        assert chunk
        body += chunk
    return first[0], body


def test_paho_and_our_codec_agree():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    seen = {}
    big = bytes(range(256)) * 80  # 20480 bytes: 3-byte remaining length

    def broker():
        conn, _ = srv.accept()
        conn.settimeout(10)
        first, body = _read_packet(conn)
        assert first == p.CONNECT
        seen["connect"] = body
        conn.sendall(b"\x20\x02\x00\x00")
        first, body = _read_packet(conn)
        assert first == p.SUBSCRIBE
        pid = p.parse_packet_id(body[:2])
        seen["subscribe"] = body
        conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
        first, body = _read_packet(conn)
        assert first & 0xF0 == p.PUBLISH
        topic, payload, qos, retain, dup, pid = p.parse_publish(first, body)
        seen["publish"] = (topic, bytes(payload), qos, retain, dup, pid)
        conn.sendall(p.puback(seen["publish"][5]))
        conn.sendall(packets_host.publish("down/q0", b"zero"))
        conn.sendall(packets_host.publish("down/q1", big, qos=1, retain=True, pid=4242))
        first, body = _read_packet(conn)
        seen["puback"] = (first, p.parse_packet_id(body))
        first, body = _read_packet(conn)
        seen["last"] = first
        conn.close()

    t = threading.Thread(target=broker, daemon=True)
    t.start()
    got = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="GW-1", clean_session=False)
    c.will_set("gw/state", b"offline", qos=1, retain=True)

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload, msg.qos, msg.retain))
        if len(got) == 2:
            done.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port, keepalive=45)
    c.loop_start()
    try:
        c.subscribe("down/#", qos=1)
        c.publish("up/x", b"hello", qos=1).wait_for_publish(10)
        assert done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    t.join(10)
    # paho's CONNECT parsed field by field
    body = seen["connect"]
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x2C and body[8:10] == b"\x00\x2d"
    assert connect_packet("GW-1", 45, False, ("gw/state", b"offline", 1, True))[2:] == body
    assert seen["subscribe"][2:] == b"\x00\x06down/#\x01"
    topic, payload, qos, retain, dup, pid = seen["publish"]
    assert (topic, payload, qos, retain, dup) == ("up/x", b"hello", 1, False, False) and pid > 0
    assert seen["puback"] == (p.PUBACK, 4242)
    assert seen["last"] == p.DISCONNECT
    assert got == [("down/q0", b"zero", 0, False), ("down/q1", big, 1, True)]
