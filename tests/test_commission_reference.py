"""The commissioning codecs against outside references: zigpy's install-code conversion
(CRC check and AES-MMO hash), bellows' EZSP command tables and types for the join and
CBKE commands (ids and serialized layouts, every EZSP version the gateway supports), and
Wireshark's ZCL Key Establishment dissector (tshark) for the cluster 0x0800 frames."""
import importlib
import os
import random
import sys

import pytest

from ppmid.errors import PpmidError
from ppmid.zigbee import installcode as IC
from ppmid.zigbee import keyest as K
from ppmid.zigbee import ezsp_cbke as C
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wireshark_zigbee as WZ  # noqa: E402  (tests/wireshark_zigbee.py)

VERSIONS = (8, 9, 10, 11, 12, 13, 14, 16, 17, 18)


def _with_crc(body):
    crc = IC.crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def test_install_codes_against_zigpy():
    from zigpy.util import convert_install_code
    rnd = random.Random(16)
    for n in IC.CODE_LENGTHS:
        for _ in range(20):
            code = _with_crc(bytes(rnd.randrange(256) for _ in range(n)))
            assert IC.link_key(IC.parse(code)) == bytes(convert_install_code(code))
            bad = bytearray(code)
            bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
            with pytest.raises(ValueError):
                convert_install_code(bytes(bad))
            with pytest.raises(PpmidError) as e:
                IC.parse(bytes(bad))
            assert e.value.code == IC.E_INSTALL_CODE_CRC


COMMANDS = {"startScan": C.START_SCAN, "networkFoundHandler": C.NETWORK_FOUND_HANDLER,
            "scanCompleteHandler": C.SCAN_COMPLETE_HANDLER, "joinNetwork": C.JOIN_NETWORK,
            "leaveNetwork": C.LEAVE_NETWORK, "findAndRejoinNetwork": C.FIND_AND_REJOIN_NETWORK,
            "setInitialSecurityState": C.SET_INITIAL_SECURITY_STATE,
            "getCurrentSecurityState": C.GET_CURRENT_SECURITY_STATE,
            "generateCbkeKeys283k1": C.GENERATE_CBKE_KEYS_283K1,
            "generateCbkeKeysHandler283k1": C.GENERATE_CBKE_KEYS_HANDLER_283K1,
            "calculateSmacs283k1": C.CALCULATE_SMACS_283K1,
            "calculateSmacsHandler283k1": C.CALCULATE_SMACS_HANDLER_283K1,
            "getCertificate283k1": C.GET_CERTIFICATE_283K1,
            "clearTemporaryDataMaybeStoreLinkKey283k1": C.CLEAR_TEMPORARY_DATA_MAYBE_STORE_LINK_KEY_283K1}


@pytest.mark.parametrize("version", VERSIONS)
def test_ids_and_layouts_against_bellows(version):
    table = importlib.import_module("bellows.ezsp.v%d.commands" % version).COMMANDS
    for name, fid in COMMANDS.items():
        assert table[name][0] == fid, name
    import bellows.types as t
    # what we send, read with bellows' parameter types
    key = bytes(range(16))
    state, rest = t.EmberInitialSecurityState.deserialize(C.initial_security_state(key))
    assert rest == b"" and state.preconfiguredKey == t.KeyData(key)
    assert state.bitmask == (t.EmberInitialSecurityBitmask.HAVE_PRECONFIGURED_KEY
                             | t.EmberInitialSecurityBitmask.REQUIRE_ENCRYPTED_KEY)
    args = table["startScan"][1]
    vals = {}
    rest = C.start_scan(0x07FFF800, 3)
    for arg, typ in args.items():
        vals[arg], rest = typ.deserialize(rest)
    assert rest == b"" and vals["scanType"] == 1 and vals["channelMask"] == 0x07FFF800 and vals["duration"] == 3
    net = {"channel": 15, "pan_id": 0xBEEF, "extended_pan_id": bytes.fromhex("0011223344556677"),
           "nwk_update_id": 4}
    rest = C.join_network(net)
    node_type, rest = table["joinNetwork"][1]["nodeType"].deserialize(rest)
    params, rest = t.EmberNetworkParameters.deserialize(rest)
    assert rest == b"" and node_type == 2 and params.panId == 0xBEEF and params.radioChannel == 15
    assert str(params.extendedPanId) == "00:11:22:33:44:55:66:77" and params.channels == 1 << 15
    assert params.nwkUpdateId == 4 and params.joinMethod == 0
    cert, pub = bytes(range(74)), bytes(range(100, 137))
    rest = C.calculate_smacs(True, cert, pub)
    for arg, typ in table["calculateSmacs283k1"][1].items():
        vals[arg], rest = typ.deserialize(rest)
    assert rest == b"" and vals["amInitiator"] and bytes(vals["partnerCertificate"]) == cert
    assert bytes(vals["partnerEphemeralPublicKey"]) == pub
    # what the module answers, built with bellows' result types, read by ours
    status = table["getCertificate283k1"][2]["status"]

    def build(name, *values):
        return b"".join(typ(v).serialize() for typ, v in zip(table[name][2].values(), values))
    assert C.parse_certificate(version, build("getCertificate283k1", 0, cert)) == (0, cert)
    assert C.parse_cbke_keys(version, build("generateCbkeKeysHandler283k1", 0, pub)) == (0, pub)
    tc = t.EUI64.convert("00:00:b0:d5:b3:ff:ff:00")   # bellows prints EUI-64s big-endian
    state = t.EmberCurrentSecurityState(bitmask=0x0010, trustCenterLongAddress=tc)
    assert C.parse_security_state(version, build("getCurrentSecurityState", 0, state)) == (
        0, 0x0010, bytes.fromhex("0000b0d5b3ffff00"))
    smac_i, smac_r = bytes(range(16)), bytes(range(16, 32))
    assert C.parse_smacs(version, build("calculateSmacsHandler283k1", 0, smac_i, smac_r)) == (0, smac_i, smac_r)
    assert C.parse_scan_complete(version, build("scanCompleteHandler", 20, 0)) == (20, 0)
    found = t.EmberZigbeeNetwork(channel=20, panId=0x1A62, extendedPanId=t.ExtendedPanId.deserialize(
        bytes.fromhex("eeffc001004b1200"))[0], allowingJoin=True, stackProfile=2, nwkUpdateId=1)
    p = found.serialize() + t.uint8_t(180).serialize() + t.int8s(-60).serialize()
    assert C.parse_network_found(p) == {"channel": 20, "pan_id": 0x1A62, "extended_pan_id":
                                        bytes.fromhex("00124b0001c0ffee"), "allowing_join": True,
                                        "stack_profile": 2, "nwk_update_id": 1, "lqi": 180, "rssi": -60}
    assert len(status(0).serialize()) == (4 if version >= 14 else 1)
    assert C.store_link_key(True) == table["clearTemporaryDataMaybeStoreLinkKey283k1"][1]["storeLinkKey"](1).serialize()


def _air_frame(zcl, s2c):
    # between the CH, trust centre (0x0000), and the PPMID (0x4A7C); KE frames go with NWK
    # security only, unsecured here for the dissector
    src, dst = (0x0000, 0x4A7C) if s2c else (0x4A7C, 0x0000)
    return WZ.air_frame(zcl, K.CLUSTER_KEY_ESTABLISHMENT, src, dst, s2c)


@pytest.mark.skipif(not (WZ.TSHARK and WZ.TEXT2PCAP), reason=WZ.MISSING)
def test_ke_frames_against_wireshark(tmp_path):
    subject = bytes.fromhex("000d6f0000a1b2c3")
    issuer = bytes.fromhex("5445535453454341")
    cert = K.make_certificate(bytes(range(1, 9)), issuer, subject, b"\x02" + bytes(range(36)))
    qe = b"\x03" + bytes(range(50, 86))
    mac = bytes(range(200, 216))
    frames = [(K.initiate(1, False, cert, 10, 20), False), (K.initiate(1, True, cert, 12, 22), True),
              (K.ephemeral_data(2, False, qe), False), (K.ephemeral_data(2, True, qe), True),
              (K.confirm_key(3, False, mac), False), (K.confirm_key(3, True, mac), True),
              (K.terminate(4, True, K.BAD_KEY_CONFIRM, 30), True)]
    packets = WZ.dissect(tmp_path, [_air_frame(z, s2c) for z, s2c in frames])
    assert len(packets) == len(frames)
    for p in packets:
        assert "_ws.malformed" not in p and "_ws.expert" not in p, p
        assert p["zbee_aps.cluster"] == "0x0800"

    def hexf(p, name):
        return bytes.fromhex(p[name].replace(":", ""))
    for p, cmd_field in ((packets[0], "zbee_zcl_se.ke.cmd.srv_rx.id"), (packets[1], "zbee_zcl_se.ke.cmd.srv_tx.id")):
        assert p[cmd_field] == "0x00"
        assert p["zbee_zcl_se.ke.attr.suite"] == "0x0002"
        assert hexf(p, "zbee_zcl_se.ke.cert.subject") == subject
        assert hexf(p, "zbee_zcl_se.ke.cert.issuer") == issuer
        assert int(p["zbee_zcl_se.ke.cert.serialno"], 0) == int.from_bytes(bytes(range(1, 9)), "big"), p["zbee_zcl_se.ke.cert.serialno"]
    assert packets[0]["zbee_zcl_se.ke.init.ephemeral.time"] == "10"
    assert packets[0]["zbee_zcl_se.ke.init.confirm.time"] == "20"
    assert hexf(packets[2], "zbee_zcl_se.ke.qeu") == qe and hexf(packets[3], "zbee_zcl_se.ke.qev") == qe
    assert hexf(packets[4], "zbee_zcl_se.ke.macu") == mac and hexf(packets[5], "zbee_zcl_se.ke.macv") == mac
    assert packets[6]["zbee_zcl_se.ke.cmd.srv_tx.id"] == "0x03"
    assert int(packets[6]["zbee_zcl_se.ke.terminate.status"], 0) == K.BAD_KEY_CONFIRM
    assert int(packets[6]["zbee_zcl_se.ke.terminate.wait.time"], 0) == 30


@pytest.mark.parametrize("version", VERSIONS)
def test_rejoin_and_leave_layouts_against_bellows(version):
    """findAndRejoinNetwork and leaveNetwork as we send them, read with bellows' argument
    types of that version (v14 added the rejoin reason, the node type and leave options);
    the no-network-key and not-joined statuses against bellows' EmberStatus / sl_Status."""
    import bellows.types as t
    table = importlib.import_module("bellows.ezsp.v%d.commands" % version).COMMANDS
    rest = C.find_and_rejoin(version, 0x07FFF800)
    vals = {}
    for arg, typ in table["findAndRejoinNetwork"][1].items():
        vals[arg], rest = typ.deserialize(rest)
    assert rest == b"" and vals["haveCurrentNetworkKey"] == 0 and vals["channelMask"] == 0x07FFF800
    if version >= 14:
        assert set(vals) == {"haveCurrentNetworkKey", "channelMask", "reason", "nodeType"}
        assert vals["nodeType"] == t.EmberNodeType.ROUTER
    rest = C.leave_network(version)
    for arg, typ in table["leaveNetwork"][1].items():
        vals[arg], rest = typ.deserialize(rest)
    assert rest == b""
    status = t.sl_Status.ZIGBEE_NO_NETWORK_KEY_RECEIVED if version >= 14 else t.EmberStatus.NO_NETWORK_KEY_RECEIVED
    assert C.no_network_key(version, int(status))
    # only NOT_JOINED says the module holds no network; INVALID_CALL (joined already) does not
    not_joined = t.sl_Status.NOT_JOINED if version >= 14 else t.EmberStatus.NOT_JOINED
    invalid = t.sl_Status.INVALID_STATE if version >= 14 else t.EmberStatus.INVALID_CALL
    assert C.holds_no_network(version, int(not_joined)) and not C.holds_no_network(version, int(invalid))
