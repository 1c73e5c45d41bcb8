# Commissioning codecs: install code check and its AES-MMO link key, Key Establishment
# cluster frames, the commissioning EZSP parameters. CPython and MicroPython. The outside
# references (zigpy, bellows, Wireshark) are in tests/test_commission_reference.py.
import binascii
from ppmid.errors import PpmidError
from ppmid.zigbee import installcode as IC
from ppmid.zigbee import keyest as K
from ppmid.zigbee import ezsp_cbke as C
from ppmid.zigbee.ezsp import EzspError
from ppmid.zigbee.tunnel import ZclError


def h(s):
    return binascii.unhexlify(s.replace(" ", ""))


def _raises(code, fn, *args):
    try:
        fn(*args)
    except PpmidError as exc:
        assert exc.code == code, (exc.code, code)
        assert exc.message
        return exc
    raise AssertionError("no %s" % code)


# the Zigbee specification's worked example: install code with its CRC -> link key
SPEC_CODE = "83FED3407A939723A5C639B26916D505C3B5"
SPEC_KEY = "66B6900981E1EE3CA4206B6B861C02BB"


def test_spec_example_install_code_to_link_key():
    code = IC.parse(SPEC_CODE)
    assert code == h(SPEC_CODE)
    assert IC.link_key(code) == h(SPEC_KEY)


def test_printed_forms_accepted():
    s = SPEC_CODE
    spaced = " ".join(s[i:i + 4] for i in range(0, len(s), 4))
    assert IC.parse(spaced) == IC.parse(s.lower()) == IC.parse("-".join(s[i:i + 2] for i in range(0, len(s), 2)))
    assert IC.parse(h(s)) == h(s)


def test_every_length_with_its_crc_round_trips_and_a_flipped_digit_is_caught():
    for n in IC.CODE_LENGTHS:
        body = bytes((7 * i + n) & 0xFF for i in range(n))
        crc = IC.crc16(body)
        code = body + bytes((crc & 0xFF, crc >> 8))
        assert IC.parse(code) == code
        assert len(IC.link_key(code)) == 16
        bad = bytearray(code)
        bad[0] ^= 0x01
        _raises(IC.E_INSTALL_CODE_CRC, IC.parse, bytes(bad))


def test_crc16_catalogue_check_value():
    # CRC-16/X-25 of "123456789" is 0x906E (the catalogue's check value)
    assert IC.crc16(b"123456789") == 0x906E


def test_bad_install_codes_have_their_codes():
    _raises(IC.E_INSTALL_CODE, IC.parse, "83FED3407A9397")            # 7 bytes
    _raises(IC.E_INSTALL_CODE, IC.parse, "zz" * 18)
    _raises(IC.E_INSTALL_CODE, IC.parse, "")
    _raises(IC.E_INSTALL_CODE, IC.parse, SPEC_CODE + "00")           # 19 bytes
    e = _raises(IC.E_INSTALL_CODE_CRC, IC.parse, SPEC_CODE[:-4] + "0000")
    assert "B5" in e.message  # says what the CRC should be


def test_aes_mmo_hash_padding_boundaries():
    # lengths around the block and the length field: every one a distinct 16-byte digest
    seen = set()
    for n in (0, 1, 13, 14, 15, 16, 17, 30, 32):
        d = IC.aes_mmo_hash(bytes(range(n)))
        assert len(d) == 16
        seen.add(d)
    assert len(seen) == 9


CERT = K.make_certificate(b"\x01" * 8, h("5445535453454341"), h("000d6f0000a1b2c3"), b"\x02" + bytes(range(36)))
PUB = b"\x03" + bytes(range(100, 136))
MAC = bytes(range(16))


def test_ke_frames_round_trip():
    f = K.parse(K.initiate(0x21, False, CERT, 10, 20))
    assert (f.seq, f.server_to_client, f.command, f.suite, f.ephemeral_time, f.confirm_time) == \
        (0x21, False, K.INITIATE, K.SUITE_2, 10, 20)
    assert f.certificate == CERT and f.name() == "initiate"
    assert K.cert_subject(f.certificate) == h("000d6f0000a1b2c3")
    assert K.cert_issuer(f.certificate) == h("5445535453454341")
    f = K.parse(K.ephemeral_data(3, True, PUB))
    assert (f.server_to_client, f.command, f.public_key) == (True, K.EPHEMERAL_DATA, PUB)
    f = K.parse(K.confirm_key(4, False, MAC))
    assert (f.command, f.mac) == (K.CONFIRM_KEY, MAC)
    f = K.parse(K.terminate(5, True, K.BAD_KEY_CONFIRM, 30))
    assert (f.command, f.status, f.wait_time, f.suite) == (K.TERMINATE, K.BAD_KEY_CONFIRM, 30, K.SUITE_2)


def test_ke_frame_bytes():
    # ZCL header: cluster specific, disable default response (+ server to client)
    assert K.terminate(5, True, 1, 2) == h("19 05 03 01 02 0200")
    assert K.initiate(7, False, CERT, 10, 20)[:7] == h("11 07 00 0200 0a 14")
    assert len(K.initiate(7, False, CERT, 10, 20)) == 3 + 4 + 74


def test_bad_ke_frames_are_errors():
    for frame in (b"\x19\x05", K.terminate(5, True, 1, 2)[:-1], K.ephemeral_data(1, True, PUB) + b"\x00",
                  K.confirm_key(1, True, MAC)[:-1], h("18 05 04 00"), h("1d 3412 05 00 01020000"),
                  h("00 05 01") + PUB):
        try:
            K.parse(frame)
        except ZclError:
            continue
        raise AssertionError("accepted %s" % binascii.hexlify(frame))
    for fn, arg in ((K.ephemeral_data, PUB[:-1]), (K.confirm_key, MAC + b"\x00")):
        _raises(K.E_KE_FRAME, fn, 1, False, arg)
    _raises(K.E_KE_FRAME, K.initiate, 1, False, CERT[:48], 1, 1)


def test_ezsp_commissioning_parameters():
    key = h(SPEC_KEY)
    p = C.initial_security_state(key)
    assert len(p) == 43 and p[:2] == h("0009") and p[2:18] == key and p[18:] == bytes(25)
    assert C.start_scan(0x07FFF800, 3) == h("01 00f8ff07 03")
    net = C.parse_network_found(h("14 621a eeffc001004b1200 01 02 00 c8 d3"))
    assert net == {"channel": 20, "pan_id": 0x1A62, "extended_pan_id": h("00124b0001c0ffee"),
                   "allowing_join": True, "stack_profile": 2, "nwk_update_id": 0, "lqi": 200, "rssi": -45}
    assert C.join_network(net) == h("02 eeffc001004b1200 621a 08 14 00 0000 00 00001000")
    for v, st in ((13, b"\x00"), (14, b"\x00\x00\x00\x00")):
        assert C.parse_scan_complete(v, b"\x14" + st) == (20, 0)
        assert C.parse_certificate(v, st + CERT) == (0, CERT)
        assert C.parse_cbke_keys(v, st + PUB) == (0, PUB)
        assert C.parse_smacs(v, st + MAC + PUB[:16]) == (0, MAC, PUB[:16])
    assert C.calculate_smacs(True, CERT, PUB) == b"\x01" + CERT + PUB


def test_ezsp_rejoin_and_leave_parameters():
    # trust-centre rejoin: haveCurrentNetworkKey false, the channel mask; v14 adds the
    # rejoin reason (application event 1) and our node type (router)
    assert C.find_and_rejoin(13, 1 << 20) == h("00 00001000")
    assert C.find_and_rejoin(14, 1 << 20) == h("00 00001000 ff 02")
    assert C.find_and_rejoin(13, 0x07FFF800, True) == h("01 00f8ff07")
    assert C.leave_network(13) == b"" and C.leave_network(14) == b"\x00"
    assert C.no_network_key(13, 0xAD) and C.no_network_key(14, 0x0C1B)
    assert not C.no_network_key(13, 0x0C1B) and not C.no_network_key(14, 0xAD) and not C.no_network_key(13, 0)
    # findAndRejoinNetwork: only NOT_JOINED means "no network held"; INVALID_CALL / INVALID_STATE,
    # what a joined module answers, and success do not
    assert C.holds_no_network(13, 0x93) and C.holds_no_network(14, 0x17)
    assert not C.holds_no_network(13, 0x70) and not C.holds_no_network(14, 0x02) and not C.holds_no_network(13, 0)
    assert not C.holds_no_network(14, 0x93)


def test_ezsp_commissioning_bad_input():
    for fn, args in ((C.parse_network_found, (b"\x14" * 15,)), (C.parse_certificate, (13, b"\x00" + CERT[:-1])),
                     (C.parse_cbke_keys, (14, b"\x00\x00\x00\x00" + PUB[:-1])),
                     (C.parse_smacs, (13, b"\x00" + MAC)), (C.initial_security_state, (b"\x00" * 15,)),
                     (C.calculate_smacs, (True, CERT, PUB[:-1]))):
        try:
            fn(*args)
        except EzspError:
            continue
        raise AssertionError("%r accepted" % (fn,))


def test_zigbee_config_section_checked():
    from ppmid import config
    from ppmid.errors import ConfigError
    base = {"gateway": "00DB1234567890A4"}
    ok = dict(base, zigbee={"install_code": "83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5", "channels": [11, 20],
                            "ke_endpoint": 9})
    assert config.validate(ok)["zigbee"]["channels"] == [11, 20]
    ext = dict(base, zigbee={"install_code": SPEC_CODE, "extended_pan_id": "00:12:4b:00:01:c0:ff:ee",
                             "rejoin_after_s": 5})
    assert config.validate(ext)["zigbee"]["extended_pan_id"] == "00:12:4b:00:01:c0:ff:ee"
    from ppmid.zigbee.commission import extended_pan_id
    assert extended_pan_id("00:12:4b:00:01:c0:ff:ee") == h("00124b0001c0ffee")
    assert "zigbee" not in config.validate(base)
    for z, words in (({"install_code": SPEC_CODE[:-4] + "0000"}, "E_INSTALL_CODE_CRC"),
                     ({"install_code": "0102"}, "E_INSTALL_CODE"),
                     ({"install_code": SPEC_CODE, "channel": [20]}, "unknown zigbee key"),
                     ({"channels": [10]}, "channels"), ({"channels": []}, "channels"),
                     ({"ke_endpoint": 0}, "ke_endpoint"), ({"state_path": "/x"}, "unknown zigbee key"),
                     ({"extended_pan_id": "00124b0001c0ff"}, "extended_pan_id"),
                     ({"extended_pan_id": "00124b0001c0ffzz"}, "extended_pan_id"),
                     ({"extended_pan_id": 5}, "extended_pan_id"),
                     ({"rejoin_after_s": 0}, "rejoin_after_s"), ({"rejoin_after_s": True}, "rejoin_after_s"),
                     ("83FE", "must be an object")):
        try:
            config.validate(dict(base, zigbee=z))
        except ConfigError as exc:
            assert words in str(exc), (z, str(exc))
            continue
        raise AssertionError("accepted %r" % (z,))
