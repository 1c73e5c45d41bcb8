"""Cross-checks against bellows (pinned 1.2.1) and zigpy: every ASH frame our codec emits
parses in bellows, and every frame bellows builds parses in ours; EZSP frames the same
way against bellows' command schemas; ZCL headers against zigpy."""
import random

import pytest

import bellows  # noqa: F401  (a dependency of ppmid: the NCP emulator frames ASH with it)
from bellows import ash as bash  # noqa: E402

from ppmid.zigbee import ash  # noqa: E402

AshProtocol = bash.AshProtocol


def test_bellows_pinned():
    import importlib.metadata
    assert importlib.metadata.version("bellows") == "1.2.1"


def ours_to_bellows(wire):
    assert wire[-1] == 0x7E
    return bash.parse_frame(AshProtocol._unstuff_bytes(wire[:-1]))


def bellows_to_ours(frame):
    wire = bytes(AshProtocol._stuff_bytes(frame.to_bytes())) + b"\x7e"
    out = ash.Decoder().feed(wire)
    assert len(out) == 1 and out[0][0] != ash.BAD, out
    return out[0]


def test_control_frames_both_ways():
    e = ash.Encoder()
    assert isinstance(ours_to_bellows(e.rst()[1:]), bash.RstFrame)
    f = ours_to_bellows(bytes(e.encode(ash.RSTACK, b"\x02\x0b")))  # the module's frame: the codec has no helper
    assert isinstance(f, bash.RStackFrame) and f.reset_code == 0x0B
    for n in range(8):
        for rdy in (False, True):
            f = ours_to_bellows(bytes(e.ack(n, rdy)))
            assert isinstance(f, bash.AckFrame) and f.ack_num == n and bool(f.ncp_ready) == rdy
            f = ours_to_bellows(bytes(e.nak(n, rdy)))
            assert isinstance(f, bash.NakFrame) and f.ack_num == n and bool(f.ncp_ready) == rdy
            c, p = bellows_to_ours(bash.AckFrame(res=0, ncp_ready=rdy, ack_num=n))
            assert c == 0x80 | (8 if rdy else 0) | n and p == b""
            c, p = bellows_to_ours(bash.NakFrame(res=0, ncp_ready=rdy, ack_num=n))
            assert c == 0xA0 | (8 if rdy else 0) | n
    assert bellows_to_ours(bash.RstFrame())[0] == ash.RST
    c, p = bellows_to_ours(bash.RStackFrame(version=2, reset_code=bellows.types.NcpResetCode(2)))
    assert c == ash.RSTACK and p == b"\x02\x02"


def test_data_frames_both_ways_random():
    rng = random.Random(1234)
    e = ash.Encoder()
    for i in range(500):
        n = rng.randrange(0, ash.MAX_DATA + 1)
        data = bytes(rng.choice((0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A, rng.randrange(256))) for _ in range(n))
        frm, ack, retx = rng.randrange(8), rng.randrange(8), rng.randrange(2)
        f = ours_to_bellows(bytes(e.data(frm, retx, ack, data)))
        assert isinstance(f, bash.DataFrame)
        assert (f.frm_num, bool(f.re_tx), f.ack_num, f.ezsp_frame) == (frm, bool(retx), ack, data)
        c, p = bellows_to_ours(bash.DataFrame(frm_num=frm, re_tx=retx, ack_num=ack, ezsp_frame=data))
        assert c == (frm << 4) | (8 if retx else 0) | ack and bytes(p) == data


def test_bellows_rejects_our_corrupted_frame():
    # sanity of the oracle itself: a flipped bit must fail there as it fails here
    wire = bytearray(ash.Encoder().data(1, 0, 2, b"\x01\x02\x03"))
    wire[2] ^= 0x04
    with pytest.raises(bash.ParsingError):
        ours_to_bellows(bytes(wire))
    assert ash.Decoder().feed(bytes(wire))[0][0] == ash.BAD


# ---- EZSP frames against bellows' command schemas ----------------------------------------
from bellows import types as bt  # noqa: E402
from bellows.ezsp.v13.commands import COMMANDS as C13  # noqa: E402
from bellows.ezsp.v14.commands import COMMANDS as C14  # noqa: E402

from ppmid.zigbee import ezsp as E  # noqa: E402
from host_tools.ncp_emulator import ezsp_ncp as N  # noqa: E402
from ppmid.zigbee import tunnel as T  # noqa: E402
from ppmid.zigbee import tunnel_host as TH  # noqa: E402


def schemas(version):
    return C14 if version >= 14 else C13


def bellows_aps(a):
    return bt.EmberApsFrame(profileId=a["profile"], clusterId=a["cluster"], sourceEndpoint=a["src_ep"],
                            destinationEndpoint=a["dst_ep"], options=a["options"], groupId=a["group"],
                            sequence=a["sequence"])


@pytest.mark.parametrize("version", [8, 13, 14, 17])
def test_our_send_unicast_parses_in_bellows(version):
    rng = random.Random(version)
    for _ in range(50):
        msg = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90)))
        aps_d = {"profile": 0x0109, "cluster": 0x0704, "src_ep": 1, "dst_ep": 1,
                 "options": rng.choice((0x0140, 0x8160)), "group": rng.randrange(0x10000), "sequence": rng.randrange(256)}
        tag = rng.randrange(0x10000 if version >= 14 else 0x100)
        frame = E.command_frame(7, N.SEND_UNICAST, E.send_unicast_params(
            version, 0x1234, E.aps_frame(**aps_d), tag, msg))
        seq, fc, fid, params = E.parse_frame(frame)
        assert fid == schemas(version)["sendUnicast"][0]
        d, rest = bt.deserialize_dict(params, schemas(version)["sendUnicast"][1])
        assert rest == b""
        vals = list(d.values())
        assert vals[1] == 0x1234 and vals[3] == tag and vals[4] == msg
        assert vals[2] == bellows_aps(aps_d)


@pytest.mark.parametrize("version", [8, 13, 14, 17])
def test_bellows_callbacks_parse_in_ours(version):
    rng = random.Random(100 + version)
    sch = schemas(version)
    for _ in range(50):
        msg = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 90)))
        aps_d = {"profile": 0x0109, "cluster": 0x0704, "src_ep": 1, "dst_ep": 1,
                 "options": 0x8040, "group": rng.randrange(0x10000), "sequence": rng.randrange(256)}
        aps = bellows_aps(aps_d)
        tag = rng.randrange(0x10000 if version >= 14 else 0x100)
        status = rng.choice((0, 0x66)) if version < 14 else rng.choice((0, 0x0C02))
        if version >= 14:
            sent = bt.serialize_dict([status, 0, 0x0000, aps, tag, msg], {}, sch["messageSentHandler"][2])
            inc = bt.serialize_dict([0, aps, 0x0000, bt.EUI64.convert("00:0d:6f:00:0a:bc:de:f0"), 0xFF, 0xFF,
                                     200, -45, 123456, msg], {}, sch["incomingMessageHandler"][2])
        else:
            sent = bt.serialize_dict([0, 0x0000, aps, tag, status, msg], {}, sch["messageSentHandler"][2])
            inc = bt.serialize_dict([0, aps, 200, -45, 0x0000, 0xFF, 0xFF, msg], {}, sch["incomingMessageHandler"][2])
        m = N.message_sent_report(version, sent)
        assert E.parse_message_sent(version, sent) == (tag, status)   # what the gateway reads
        assert (m["status"], m["tag"], m["message"], m["dest"]) == (status, tag, msg, 0)
        assert m["aps"] == aps_d
        i = E.parse_incoming(version, inc)
        assert (i["message"], i["lqi"], i["rssi"], i["sender"]) == (msg, 200, -45, 0)
        assert i["aps"] == aps_d
        # and ours (the emulator's NCP side) parse in bellows
        ours = N.incoming_params(version, E.aps_frame(**aps_d), 0, msg, lqi=200, rssi=-45)
        d, rest = bt.deserialize_dict(ours, sch["incomingMessageHandler"][2])
        assert rest == b"" and list(d.values())[-1] == msg
        ours = N.message_sent_params(version, status, 0, E.aps_frame(**aps_d), tag, msg)
        d, rest = bt.deserialize_dict(ours, sch["messageSentHandler"][2])
        assert rest == b"" and list(d.values())[-1] == msg


def test_stack_status_and_version_layouts_in_bellows():
    d, _ = bt.deserialize_dict(N.status_params(13, N.EMBER_NETWORK_UP), C13["stackStatusHandler"][2])
    assert d["status"] == bt.EmberStatus.NETWORK_UP
    d, _ = bt.deserialize_dict(N.status_params(14, N.SL_NETWORK_UP), C14["stackStatusHandler"][2])
    assert d["status"] == bt.sl_Status.NETWORK_UP
    d, _ = bt.deserialize_dict(N.status_params(14, N.SL_NETWORK_DOWN), C14["stackStatusHandler"][2])
    assert d["status"] == bt.sl_Status.NETWORK_DOWN
    assert E.parse_stack_status(13, bt.EmberStatus.NETWORK_DOWN.serialize()) is False
    # the first version frame: bellows' legacy header is ours
    from ppmid.zigbee.han_start import legacy_version_frame   # run only after a module reset
    assert legacy_version_frame(0, 13) == bytes([0, 0, C13["version"][0]]) + bt.uint8_t(13).serialize()


# ---- ZCL headers against zigpy -----------------------------------------------------------
def test_zcl_headers_against_zigpy():
    from zigpy.zcl import foundation as f
    for seq in (0, 1, 0x7F, 0xFF):
        for cmd, s2c in ((TH.REQUEST_TUNNEL, False), (TH.TRANSFER_DATA, False), (TH.S_TRANSFER_DATA, True),
                         (TH.REQUEST_TUNNEL_RESPONSE, True), (TH.S_TRANSFER_DATA_ERROR, True)):
            ours = T.zcl_header(seq, cmd, s2c)
            hdr, rest = f.ZCLHeader.deserialize(ours + b"\xaa")
            assert rest == b"\xaa" and hdr.tsn == seq and hdr.command_id == cmd
            assert hdr.frame_control.is_cluster and hdr.frame_control.disable_default_response
            assert bool(hdr.frame_control.direction) == s2c
            theirs = f.ZCLHeader.cluster(seq, cmd, manufacturer=None,
                                         direction=f.Direction.Server_to_Client if s2c else f.Direction.Client_to_Server)
            theirs.frame_control = theirs.frame_control.replace(disable_default_response=True)
            fc, manu, tsn, c, p = T.parse_zcl(theirs.serialize() + b"\x01\x00")
            assert (manu, tsn, c, p) == (None, seq, cmd, b"\x01\x00") and bool(fc & T.FC_SERVER_TO_CLIENT) == s2c
    ours = TH.zcl_header_manufacturer(9, TH.REQUEST_TUNNEL, False, 0x1234)
    hdr, _ = f.ZCLHeader.deserialize(ours)
    assert hdr.manufacturer == 0x1234 and hdr.tsn == 9


@pytest.mark.parametrize("version", [13, 14, 18])
def test_fragment_ack_matches_bellows_send_reply(version):
    # our sendReply parameters decode with bellows' schema for the version, and carry what
    # bellows itself puts in a fragment ack (groupId 0xFF00 | index, endpoints swapped)
    import importlib
    from ppmid.zigbee import ezsp as E
    sch = importlib.import_module("bellows.ezsp.v%d.commands" % version).COMMANDS
    fid, req, _rsp = sch["sendReply"]
    assert fid == N.SEND_REPLY
    aps = E.parse_aps(E.aps_frame(0x0109, 0x0704, 2, 1, 0x8060, (7 << 8) | 3, 0x42))
    buf = bytearray(E.SEND_REPLY_ACK_LEN)
    E.fragment_ack_into(buf, 0x0000, aps)
    data = bytes(buf)
    out = {}
    for name, typ in req.items():
        out[name], data = typ.deserialize(data)
    assert data == b""
    f = out["apsFrame"]
    assert out["sender"] == 0 and out["messageContents"] == b""
    assert (f.profileId, f.clusterId, f.sourceEndpoint, f.destinationEndpoint) == (0x0109, 0x0704, 1, 2)
    assert f.options == 0x8060 and f.groupId == 0xFF03 and f.sequence == 0x42
