"""Our Prepayment cluster frames (ppmid.zigbee.prepayment) against two outside codecs:
zigpy's ZCL header and field types (zigpy's Prepayment cluster defines no commands, so
the payload is read with its basic types), and Wireshark's ZCL Smart Energy dissector
(tshark, with the frames inside an unsecured 802.15.4 / NWK / APS data frame on the SE
profile, cluster 0x0705), both ways: what we send and what we parse."""
import os
import subprocess
import sys

import pytest

from ppmid.zigbee import prepayment as P
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wireshark_zigbee as WZ  # noqa: E402  (tests/wireshark_zigbee.py)

UTRN = b"73943333457189043313"
RESPONSES = [(0x37, P.RESULT_ACCEPTED_SUPPLY_ENABLED, 250, 2, -1250), (0, P.RESULT_DUPLICATE, 0, 1, 0),
             (0xFF, P.RESULT_KEYPAD_LOCK, 0x7FFFFFFF, 0, -0x80000000), (9, 0x7E, -5, 7, 123456)]


def test_frames_against_zigpy():
    from zigpy.zcl import foundation as f
    import zigpy.types as t
    for seq in (0, 0x37, 0xFF):
        ours = P.consumer_top_up(seq, UTRN)
        hdr, rest = f.ZCLHeader.deserialize(ours)
        assert hdr.frame_control.is_cluster and hdr.frame_control.direction == f.Direction.Client_to_Server
        assert hdr.tsn == seq and hdr.command_id == P.CONSUMER_TOP_UP and hdr.manufacturer is None
        origin, rest = t.enum8.deserialize(rest)
        code, rest = t.LVBytes.deserialize(rest)
        assert (origin, code, rest) == (P.ORIGIN_IHD, UTRN, b"")
    for seq, result, value, source, credit in RESPONSES:
        # zigpy builds the response; we parse it
        theirs = f.ZCLHeader.cluster(seq, P.CONSUMER_TOP_UP_RESPONSE, manufacturer=None,
                                     direction=f.Direction.Server_to_Client)
        body = t.uint8_t(result).serialize() + t.int32s(value).serialize() + t.uint8_t(source).serialize() \
            + t.int32s(credit).serialize()
        r = P.parse_response(theirs.serialize() + body)
        assert (r.seq, r.result, r.value, r.source, r.credit) == (seq, result, value, source, credit)
        # and ours reads back the same with zigpy
        hdr, rest = f.ZCLHeader.deserialize(P.consumer_top_up_response(seq, result, value, source, credit))
        assert hdr.direction == f.Direction.Server_to_Client and hdr.command_id == 3 and rest == body


def test_default_response_against_zigpy():
    # the meter's refusal: a general command 0x0B, payload command id then status
    from zigpy.zcl import foundation as f
    for seq, status in ((0x37, f.Status.NOT_AUTHORIZED), (0, f.Status.UNSUP_CLUSTER_COMMAND),
                        (0xFF, f.Status.MALFORMED_COMMAND)):
        theirs = f.ZCLHeader.general(seq, f.GeneralCommand.Default_Response,
                                     direction=f.Direction.Server_to_Client)
        schema = f.GENERAL_COMMANDS[f.GeneralCommand.Default_Response].schema
        frame = theirs.serialize() + schema(command_id=P.CONSUMER_TOP_UP, status=status).serialize()
        assert P.parse_default_response(frame) == (seq, P.CONSUMER_TOP_UP, int(status))
        hdr, rest = f.ZCLHeader.deserialize(P.default_response(seq, P.CONSUMER_TOP_UP, int(status)))
        assert hdr.frame_control.is_general and hdr.direction == f.Direction.Server_to_Client
        assert hdr.command_id == f.GeneralCommand.Default_Response and hdr.tsn == seq
        rsp, rest = schema.deserialize(rest)
        assert (rsp.command_id, rsp.status, rest) == (P.CONSUMER_TOP_UP, status, b"")


def _air_frame(zcl, s2c):
    # between the ESME (0x4A21) and the PPMID (0x1234)
    src, dst = (0x4A21, 0x1234) if s2c else (0x1234, 0x4A21)
    return WZ.air_frame(zcl, 0x0705, src, dst, s2c)


@pytest.mark.skipif(not (WZ.TSHARK and WZ.TEXT2PCAP), reason=WZ.MISSING)
def test_frames_against_wireshark(tmp_path):
    frames = [P.consumer_top_up(0x37, UTRN)] + [P.consumer_top_up_response(*r) for r in RESPONSES]
    packets = WZ.dissect(tmp_path, [_air_frame(z, i > 0) for i, z in enumerate(frames)])
    assert len(packets) == len(frames)
    p = packets[0]
    assert p["zbee_aps.cluster"] == "0x0705" and p["zbee_aps.profile"] == "0x0109"
    assert p["zbee_zcl.dir"] == "0" and p["zbee_zcl.cmd.tsn"] == "55"
    assert p["zbee_zcl_se.pp.cmd.srv_rx.id"] == "0x04"
    assert p["zbee_zcl_se.pp.consumer_top_up.originating_device"] == "2"
    assert bytes.fromhex(p["zbee_zcl_se.pp.consumer_top_up.top_up_code"].replace(":", "")) == UTRN
    for p, (seq, result, value, source, credit) in zip(packets[1:], RESPONSES):
        assert p["zbee_zcl.dir"] == "1" and p["zbee_zcl.cmd.tsn"] == str(seq)
        assert p["zbee_zcl_se.pp.cmd.srv_tx.id"] == "0x03"
        pre = "zbee_zcl_se.pp.consumer_top_up_response."
        assert (p[pre + "result_type"], p[pre + "top_up_value"], p[pre + "source_of_top_up"],
                p[pre + "credit_remaining"]) == (str(result), str(value), str(source), str(credit))
        assert "_ws.malformed" not in p


@pytest.mark.skipif(not WZ.TSHARK, reason="tshark not installed")
def test_the_emulated_meters_utrn_alert_codes_are_wiresharks():
    # the alert codes the emulated ESME raises for refused UTRNs, against the names in
    # Wireshark's GBCS dissector (its value table for gbcs_gbz.alert_code)
    from host_tools.ncp_emulator import esme
    out = subprocess.run([WZ.TSHARK, "-G", "values"], capture_output=True, text=True, timeout=120).stdout
    names = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1] == "gbcs_gbz.alert_code":
            names[int(parts[2])] = parts[3]
    assert names, "tshark lists no GBCS alert codes"
    for code, name in esme.ALERT_NAMES.items():
        assert names.get(code) == name, (hex(code), names.get(code))
