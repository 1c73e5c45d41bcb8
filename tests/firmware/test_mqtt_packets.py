# MQTT 3.1.1 codec: byte layouts from the OASIS spec, round trips, and every refusal.
from ppmid.mqtt import packets as p
from ppmid.mqtt import handshake as h  # CONNECT/CONNACK, SUBSCRIBE/SUBACK
from ppmid.mqtt import packets_host  # publish as bytes, decode_length, topic_matches
from ppmid.mqtt.packets import PacketError


def _err(fn, *args):
    try:
        fn(*args)
    except PacketError as exc:
        assert exc.code == "E_MQTT_PACKET"
        return exc.message
    raise AssertionError("no PacketError from %r%r" % (fn, args))


def test_remaining_length_boundaries_from_spec_table():
    # 2.2.3 table: the first and last value of each byte count.
    cases = [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
             (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
             (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")]
    for n, enc in cases:
        assert p.encode_length(n) == enc, n
        assert packets_host.decode_length(enc) == (n, len(enc))
        assert packets_host.decode_length(b"\x30" + enc + b"xyz", 1) == (n, 1 + len(enc))
    _err(p.encode_length, 268435456)
    _err(p.encode_length, -1)


def test_decode_length_incomplete_and_overlong():
    assert packets_host.decode_length(b"") is None
    assert packets_host.decode_length(b"\x80") is None
    assert packets_host.decode_length(b"\xff\xff\xff") is None
    _err(packets_host.decode_length, b"\xff\xff\xff\xff\x01")


def test_connect_layout():
    pkt = h.connect("00DB1234567890A0", 30, clean_session=False,
                    will=("ppmid/v1/00DB1234567890A0/state", b'{"state":"offline"}', 1, True))
    assert pkt[0] == 0x10
    n, pos = packets_host.decode_length(pkt, 1)
    assert n == len(pkt) - pos
    body = pkt[pos:]
    assert body[:7] == b"\x00\x04MQTT\x04"
    # will flag 0x04, will qos 1 (0x08), will retain 0x20, no clean session
    assert body[7] == 0x2C
    assert body[8:10] == b"\x00\x1e"
    assert body[10:12] == b"\x00\x10" and body[12:28] == b"00DB1234567890A0"
    assert body[28:30] == b"\x00\x1f" and body[30:61] == b"ppmid/v1/00DB1234567890A0/state"
    assert body[61:63] == b"\x00\x13" and body[63:] == b'{"state":"offline"}'


def test_connect_clean_user_password():
    pkt = h.connect("c", 0, clean_session=True, username="u", password=b"pw")
    assert pkt == b"\x10\x14\x00\x04MQTT\x04\xc2\x00\x00\x00\x01c\x00\x01u\x00\x02pw"
    _err(h.connect, "c", 0, False, None, None, b"pw")
    _err(h.connect, "c", 70000)
    _err(h.connect, "c", 10, False, ("a/+", b"x", 1, False))


def test_connack():
    assert h.parse_connack(b"\x00\x00") == (False, 0)
    assert h.parse_connack(b"\x01\x00") == (True, 0)
    assert h.parse_connack(b"\x00\x05") == (False, 5)
    assert h.CONNACK_TEXT[5] == "not authorized"
    _err(h.parse_connack, b"\x00")
    _err(h.parse_connack, b"\x02\x00")


def test_publish_qos1_round_trip_and_flags():
    payload = bytes(range(256)) * 3
    pkt = packets_host.publish("a/b", payload, qos=1, retain=True, dup=True, pid=0x1234)
    assert pkt[0] == 0x30 | 0x08 | 0x02 | 0x01
    n, pos = packets_host.decode_length(pkt, 1)
    assert n == 2 + 3 + 2 + len(payload) and pos == 3
    topic, body, qos, retain, dup, pid = p.parse_publish(pkt[0], pkt[pos:])
    assert (topic, qos, retain, dup, pid) == ("a/b", 1, True, True, 0x1234)
    assert bytes(body) == payload


def test_publish_qos0_has_no_packet_id():
    pkt = packets_host.publish("t", b"hi")
    assert pkt == b"\x30\x05\x00\x01thi"
    assert p.parse_publish(pkt[0], pkt[2:])[1:] is not None
    topic, body, qos, retain, dup, pid = p.parse_publish(pkt[0], pkt[2:])
    assert (topic, bytes(body), qos, retain, dup, pid) == ("t", b"hi", 0, False, False, 0)


def test_publish_header_matches_whole_packet():
    hdr = p.publish_header("x/y", 5, qos=1, pid=7)
    assert bytes(hdr) + b"12345" == packets_host.publish("x/y", b"12345", qos=1, pid=7)


def test_publish_refusals():
    _err(packets_host.publish, "a/+", b"x")
    _err(packets_host.publish, "a/#", b"x")
    _err(packets_host.publish, "", b"x")
    _err(packets_host.publish, "t", b"x", 2)
    _err(packets_host.publish, "t", b"x", 1, False, False, 0)
    _err(packets_host.publish, "t", b"x", 0, False, True)
    _err(p.parse_publish, 0x36, b"\x00\x01t\x00\x01")       # qos 3
    _err(p.parse_publish, 0x30, b"\x00")                    # truncated
    _err(p.parse_publish, 0x30, b"\x00\x09abc")             # topic past end
    _err(p.parse_publish, 0x32, b"\x00\x01t\x00")           # pid missing
    _err(p.parse_publish, 0x32, b"\x00\x01t\x00\x00")       # pid 0
    _err(p.parse_publish, 0x30, b"\x00\x02\xff\xfe")        # not UTF-8


def test_puback_and_pingreq():
    assert p.puback(0x0102) == b"\x40\x02\x01\x02"
    assert p.parse_packet_id(b"\x01\x02") == 0x0102
    _err(p.parse_packet_id, b"\x01")
    assert p.PINGREQ_PACKET == b"\xc0\x00" and p.DISCONNECT_PACKET == b"\xe0\x00"


def test_subscribe_layout_and_suback():
    pkt = h.subscribe(10, [("a/b", 1), ("c/+/d", 0)])
    assert pkt == b"\x82\x10\x00\x0a\x00\x03a/b\x01\x00\x05c/+/d\x00"
    assert h.parse_suback(b"\x00\x0a\x01\x80") == (10, [1, 0x80])
    _err(h.parse_suback, b"\x00\x0a")
    _err(h.parse_suback, b"\x00\x0a\x03")
    _err(h.subscribe, 0, [("a", 1)])
    _err(h.subscribe, 1, [])
    _err(h.subscribe, 1, [("a/b#", 1)])
    _err(h.subscribe, 1, [("a/#/b", 1)])


def test_topic_matches():
    assert packets_host.topic_matches("ppmid/v1/+/cmd", "ppmid/v1/00DB1234567890A0/cmd")
    assert not packets_host.topic_matches("ppmid/v1/+/cmd", "ppmid/v1/00DB1234567890A0/rsp")
    assert packets_host.topic_matches("sport/#", "sport")
    assert packets_host.topic_matches("#", "a/b/c")
    assert not packets_host.topic_matches("a/b", "a/b/c")
    assert not packets_host.topic_matches("a/b/c", "a/b")


def test_refusal_sentences_are_loaded_for_a_refusal_and_dropped_after():
    # the codec's sentences live in ppmid.mqtt.packets_errors (not held by the codec): a
    # refusal still carries the whole sentence with its values, and the module goes again
    import sys
    cases = ((lambda: p.check_topic("a/+"), "wildcard in topic name 'a/+'"),
             (lambda: p.publish_header("t", 1, qos=2), "qos 2 not supported (0 or 1)"),
             (lambda: p.parse_packet_id(b"\x00"), "packet-id body of 1 bytes (expected 2)"),
             (lambda: p.parse_publish(0x32, b"\x00\x01t"), "PUBLISH packet id missing"))
    for fn, text in cases:
        try:
            fn()
        except PacketError as exc:
            assert (exc.code, exc.message) == ("E_MQTT_PACKET", text), (exc.code, exc.message)
        else:
            raise AssertionError("not refused: " + text)
        assert "ppmid.mqtt.packets_errors" not in sys.modules


def test_every_refusal_key_names_its_sentence():
    # packets.py's _S_X = const(i) and packets_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the refusals run on both above")
    from ppmid.mqtt import packets_errors as PE
    from sentence_keys import check_keys
    check_keys((p,), PE)
