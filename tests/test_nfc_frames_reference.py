"""PN532 frames cross-checked against nfcpy's PN53x framing (CPython only).

Our host-command frames must be exactly what nfcpy's Chipset.command() writes, and frames
nfcpy's parser accepts (built by the emulator's independent codec) must decode in ours."""
import logging

import pytest

from host_tools import mpcompat

mpcompat.install()

from ppmid.nfc import frames as F  # noqa: E402
from host_tools.pn532_emulator import wire  # noqa: E402

from conftest import setup_reference  # noqa: E402

pn532 = setup_reference("nfc.clf.pn532")


class CaptureTransport:
    """nfcpy transport stand-in: records writes, answers reads from a queue."""

    def __init__(self, replies):
        self.written = []
        self.replies = list(replies)

    def write(self, frame):
        self.written.append(bytes(frame))

    def read(self, timeout):
        if not self.replies:
            raise IOError(110, "timeout")
        return bytearray(self.replies.pop(0))

    def close(self):
        pass


def nfcpy_command(code, data, reply):
    t = CaptureTransport([F.ACK, reply])
    chip = pn532.Chipset(t, logging.getLogger("nfcpy-test"))
    result = chip.command(code, bytearray(data), timeout=0.1)
    return t.written[0], bytes(result)


@pytest.mark.parametrize("size", [0, 1, 3, 200, 251, 252, 253, 254, 255, 262])
def test_host_frames_match_nfcpy(size):
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    reply = wire.encode_frame(0xD5, bytes([0x41, 0x00]) + b"ok")
    written, result = nfcpy_command(0x40, data, reply)
    assert written == F.command(0x40, data)
    assert result == b"\x00ok"


@pytest.mark.parametrize("size", [0, 1, 250, 252, 253, 254, 255, 300, 600])
def test_chip_frames_decode_in_both(size):
    """A response frame (normal or extended) decodes identically in nfcpy and in ours."""
    payload = bytes([0x41, 0x00]) + bytes((i * 13) & 0xFF for i in range(size))
    reply = wire.encode_frame(0xD5, payload)
    _, nfcpy_result = nfcpy_command(0x40, b"\x01", reply)
    buf = bytearray(reply)
    kind, end, off, ln = F.scan(buf, len(buf))
    assert kind == F.KIND_FRAME
    assert bytes(buf[off:off + ln]) == b"\xd5" + payload
    assert nfcpy_result == payload[1:]


def test_our_chip_side_encoding_decodes_in_nfcpy():
    out = bytearray(700)
    data = bytes(range(256)) + b"xyz"
    n = F.encode(out, F.TFI_CHIP, 0x41, b"\x00", data)
    _, result = nfcpy_command(0x40, b"\x01", bytes(out[:n]))
    assert result == b"\x00" + data


def test_error_frame_raises_in_nfcpy_and_scans_as_error_in_ours():
    with pytest.raises(pn532.Chipset.Error):
        nfcpy_command(0x40, b"\x01", F.ERROR)
    assert wire.ERROR == F.ERROR
    assert F.scan(bytearray(F.ERROR), len(F.ERROR))[0] == F.KIND_ERROR


def test_ack_constant_matches_nfcpy():
    assert bytes(pn532.Chipset.ACK) == F.ACK == wire.ACK


@pytest.mark.parametrize("corrupt", [3, 4, -2])
def test_corrupt_frames_rejected_by_both(corrupt):
    frame = bytearray(wire.encode_frame(0xD5, b"\x41\x00hello"))
    frame[corrupt] ^= 0x01
    with pytest.raises(IOError):
        nfcpy_command(0x40, b"\x01", bytes(frame))
    kind = F.scan(frame, len(frame))[0]
    assert kind in (F.KIND_BAD_LCS, F.KIND_BAD_DCS)
