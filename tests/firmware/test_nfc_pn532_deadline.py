# The PN532 driver against a chip (or a noisy HSU line) that never stops sending frames
# other than the one awaited: repeated ACKs, answers to another command (review_w6-3).
# Each wait has one deadline, so such a stream ends in E_NFC_TIMEOUT / E_NFC_NOACK instead
# of holding the NFC road (and at boot, the boot) forever. No timed assertions: the error
# code is checked, asyncio.wait_for only guards against a hang. CPython and MicroPython.
import asyncio

from ppmid.clock import sleep_ms
from ppmid.nfc import frames as F
from ppmid.nfc.pn532 import PN532
from ppmid.nfc.errors import NfcError

_GUARD_S = 5   # far beyond any bound below (200 ms per wait, a few tries)


def chip_frame(code, data=b""):
    out = bytearray(F.frame_size(2 + len(data)))
    n = F.encode(out, F.TFI_CHIP, code, data)
    return bytes(out[:n])


# the answer to GetFirmwareVersion (D5 03): a stale answer while another command waits
STALE = chip_frame(0x03, b"\x32\x01\x06\x07")


class Chatty:
    """An HSU transport whose chip ACKs each command (when `acks`), then sends `noise`
    every `every_ms` forever, never the answer; or, with `answer`, the answer after
    `noise_before` pieces of noise."""
    framed = False

    def __init__(self, noise, every_ms=20, acks=True, answer=None, noise_before=0):
        self.noise = noise
        self.every_ms = every_ms
        self.acks = acks
        self.answer = answer
        self.noise_before = noise_before
        self.pending = b""
        self.sent = 0
        self.writes = []

    async def wakeup(self):
        pass

    async def write(self, data):
        data = bytes(data)
        self.writes.append(data)
        if data not in (F.ACK, F.NACK) and self.acks:
            self.pending += F.ACK

    async def read(self, buf, timeout_ms, hint=0):
        if not self.pending:
            await sleep_ms(min(self.every_ms, timeout_ms))
            if timeout_ms < self.every_ms:
                return 0
            if self.answer is not None and self.sent >= self.noise_before:
                self.pending = self.answer
                self.answer = None
            else:
                self.pending = self.noise
                self.sent += 1
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


async def _code(coro):
    try:
        await asyncio.wait_for(coro, _GUARD_S)
        return "answered"
    except NfcError as e:
        return e.code
    except asyncio.TimeoutError:
        return "HANG"


async def test_a_storm_of_acks_while_the_answer_is_awaited_times_out():
    t = Chatty(F.ACK)
    drv = PN532(t)
    assert await _code(drv.command(0x4A, b"\x01\x00", timeout_ms=200)) == "E_NFC_TIMEOUT"
    assert drv.stats["timeouts"] == 1
    assert t.writes[-1] == F.ACK   # the command was aborted, as for a silent chip


async def test_answers_to_another_command_forever_time_out():
    drv = PN532(Chatty(STALE))
    assert await _code(drv.command(0x4A, b"\x01\x00", timeout_ms=200)) == "E_NFC_TIMEOUT"


async def test_bad_length_checksums_forever_time_out():
    drv = PN532(Chatty(b"\x00\xff\x05\x00garbage"))
    assert await _code(drv.command(0x4A, b"\x01\x00", timeout_ms=200)) == "E_NFC_TIMEOUT"


async def test_stale_frames_instead_of_the_ack_end_in_noack():
    t = Chatty(STALE, acks=False)
    drv = PN532(t, ack_timeout_ms=40, retries=2)
    assert await _code(drv.command(0x4A, b"\x01\x00", timeout_ms=200)) == "E_NFC_NOACK"
    assert drv.stats["resends"] == 3


async def test_the_answer_after_some_stale_frames_is_still_taken():
    # the deadline does not cut the resynchronisation short: stale frames are skipped
    t = Chatty(STALE, answer=chip_frame(0x4B, b"\x00"), noise_before=3)
    drv = PN532(t)
    r = await asyncio.wait_for(drv.command(0x4A, b"\x01\x00", timeout_ms=1000), _GUARD_S)
    assert bytes(r) == b"\x00"


async def test_begin_ends_with_an_error_when_the_chip_chatters():
    # boot.start awaits drv.begin() inline: a chip repeating an old answer must not stop
    # the boot (the wired road, the failed-boot row's removal come after it)
    drv = PN532(Chatty(STALE), response_timeout_ms=200)
    assert await _code(drv.begin()) == "E_NFC_TIMEOUT"
