# The PN532 driver over the I2C transport, against a fake machine.I2C that speaks the
# PN532's I2C protocol: every read transaction starts with a status byte (0x01 = a frame
# is ready, then the frame), the chip is not ready for a few polls after each command,
# and it may NAK its address (OSError) while waking up; reading the status byte alone leaves
# a ready frame in the chip (as the ESPHome and Adafruit PN532 I2C drivers rely on).
# CPython and MicroPython.
import asyncio

from ppmid.nfc.i2c import I2cTransport
from ppmid.nfc.pn532 import PN532
from ppmid.errors import PpmidError


def _frame(payload):
    # written here on purpose, not with ppmid.nfc.frames: an independent encoder
    body = bytes([0xD5]) + payload
    n = len(body)
    if n < 256:
        head = bytes([0, 0, 0xFF, n, (256 - n) & 0xFF])
    else:
        head = bytes([0, 0, 0xFF, 0xFF, 0xFF, n >> 8, n & 0xFF, (256 - (n >> 8) - (n & 0xFF)) & 0xFF])
    return head + body + bytes([(256 - sum(body) & 0xFF) & 0xFF, 0])


ACK = b"\x00\x00\xff\x00\xff\x00"


class FakePN532I2C:
    def __init__(self, busy_polls=3, naks=0):
        self.busy_polls = busy_polls
        self.naks = naks
        self.queue = []          # frames the chip will hand out, in order
        self.busy = 0
        self.written = []
        self.reads = 0
        self.card = None         # (uid, sel_res) or None
        self.answer = None       # bytes the card answers InDataExchange with
        self.corrupt_next = False

    def writeto(self, addr, buf):
        assert addr == 0x24
        if self.naks:
            self.naks -= 1
            raise OSError(19)  # ENODEV: address not acknowledged
        buf = bytes(buf)
        self.written.append(buf)
        if buf == ACK:
            self.queue = []
            return
        if buf == b"\x00\x00\xff\xff\x00\x00":   # NACK: repeat the last response
            self.queue.append(self.last)
            return
        if buf == b"\x00":
            return  # wake-up poke
        i = buf.index(b"\x00\xff")
        n = buf[i + 2]
        if n == 0xFF:
            n = buf[i + 4] * 256 + buf[i + 5]
            body = buf[i + 7:i + 7 + n]
        else:
            body = buf[i + 4:i + 4 + n]
        assert body[0] == 0xD4
        code, data = body[1], body[2:]
        self.queue.append(ACK)
        resp = self.respond(code, data)
        if resp is not None:
            self.last = _frame(bytes([code + 1]) + resp)
            out = self.last
            if self.corrupt_next:
                self.corrupt_next = False
                out = bytearray(out)
                out[-2] ^= 0xFF
                out = bytes(out)
            self.queue.append(out)
        self.busy = self.busy_polls

    def respond(self, code, data):
        if code == 0x02:
            return b"\x32\x01\x06\x07"
        if code in (0x14, 0x32):
            return b""
        if code == 0x4A:
            if self.card is None:
                return b"\x00"
            uid, sel = self.card
            return bytes([1, 1, 0, 4, sel, len(uid)]) + uid
        if code == 0x40:
            if self.card is None:
                return b"\x01"
            return b"\x00" + self.answer
        if code == 0x52:
            return b"\x00"
        return None  # silent

    def readfrom_into(self, addr, buf):
        assert addr == 0x24
        self.reads += 1
        if self.naks:
            self.naks -= 1
            raise OSError(19)
        for i in range(len(buf)):
            buf[i] = 0xAA  # filler that is not a frame
        if self.busy or not self.queue:
            if self.busy:
                self.busy -= 1
            buf[0] = 0x00
            return
        if len(buf) == 1:
            buf[0] = 0x01   # the status byte alone: the frame stays for the next read
            return
        frame = self.queue.pop(0)
        buf[0] = 0x01
        k = min(len(frame), len(buf) - 1)
        buf[1:1 + k] = frame[:k]
        if self.queue and frame == ACK:
            self.busy = self.busy_polls


def _driver(fake):
    return PN532(I2cTransport(fake, poll_ms=1), ack_timeout_ms=30)


async def test_begin_and_version_over_i2c():
    fake = FakePN532I2C(naks=2)
    drv = _driver(fake)
    assert await drv.begin() == (0x32, 1, 6, 7)
    # the commands went out as PN532 frames: SAMConfiguration, GetFirmwareVersion, RFConfiguration
    sent = [w for w in fake.written if len(w) > 6]
    assert sent[0] == bytes.fromhex("0000ff05fbd4140100011600")  # SAMConfiguration normal, IRQ on
    assert [w[6] for w in sent] == [0x14, 0x02, 0x32]
    assert fake.reads > 6  # it polled through the busy status bytes


async def test_target_and_exchange_over_i2c():
    fake = FakePN532I2C()
    drv = _driver(fake)
    await drv.begin()
    assert await drv.in_list_passive_target() is None
    fake.card = (b"\x04\x01\x02\x03\x04\x05\x06", 0x00)
    fake.answer = bytes(range(16))
    t = await drv.in_list_passive_target()
    assert t.uid == b"\x04\x01\x02\x03\x04\x05\x06" and t.type2() and not t.iso_dep()
    out = bytearray(64)
    n = await drv.in_data_exchange(t.tg, b"\x30\x04", out)
    assert bytes(out[:n]) == bytes(range(16))
    fake.answer = bytes(250)
    n = await drv.in_data_exchange(t.tg, b"\x30\x04", bytearray(300))
    assert n == 250


async def test_corrupt_i2c_response_is_nacked_and_repeated():
    fake = FakePN532I2C()
    drv = _driver(fake)
    await drv.begin()
    fake.corrupt_next = True
    assert await drv.get_firmware_version() == (0x32, 1, 6, 7)
    assert drv.stats["nacks"] == 1


async def test_card_gone_and_silent_chip_over_i2c():
    fake = FakePN532I2C()
    drv = _driver(fake)
    await drv.begin()
    fake.card = (b"\x08\x01\x02\x03", 0x20)
    t = await drv.in_list_passive_target()
    fake.card = None
    try:
        await drv.in_data_exchange(t.tg, b"\x00\xa4", bytearray(16))
        assert False, "no error"
    except PpmidError as e:
        assert e.code == "E_NFC_GONE"
    try:
        await drv.command(0x60, b"", timeout_ms=50)  # fake ignores InAutoPoll: times out
        assert False, "no error"
    except PpmidError as e:
        assert e.code == "E_NFC_TIMEOUT"
    assert fake.written[-1] == ACK  # the pending command was aborted
    assert await drv.get_firmware_version() == (0x32, 1, 6, 7)


async def test_polling_lets_other_tasks_run():
    fake = FakePN532I2C(busy_polls=20)
    drv = _driver(fake)
    ticks = []

    async def other():
        for i in range(1000):
            ticks.append(i)
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await drv.begin()
    assert len(ticks) >= 20  # the other task ran while the driver waited for the chip
    task.cancel()


class _BusClock:
    """A fake ticks clock for ppmid.nfc.i2c: transfers advance it by the time they take on
    a 400 kHz bus (9 bit times a byte, the address byte included), sleeps by their length."""

    def __init__(self):
        self.us = 0
        self.bus_us = 0

    def ticks_ms(self):
        return self.us // 1000

    async def sleep_ms(self, ms):
        self.us += ms * 1000
        await asyncio.sleep(0)

    def transfer(self, nbytes):
        t = (nbytes + 1) * 9 * 1000000 // 400000
        self.us += t
        self.bus_us += t


class _BusyChip:
    """A PN532 on I2C that stays busy (the phone's HCE app is still working)."""

    def __init__(self, clock):
        self.clock = clock
        self.read_sizes = []

    def writeto(self, addr, buf):
        self.clock.transfer(len(buf))

    def readfrom_into(self, addr, buf):
        self.clock.transfer(len(buf))
        self.read_sizes.append(len(buf))
        buf[0] = 0x00


async def test_timeout_counts_bus_time_and_polls_the_status_byte_alone():
    from ppmid.nfc import i2c
    clock = _BusClock()
    chip = _BusyChip(clock)
    saved = (i2c.ticks_ms, i2c.sleep_ms)
    i2c.ticks_ms, i2c.sleep_ms = clock.ticks_ms, clock.sleep_ms
    try:
        # the transport of the module patched here: another test may have unloaded and
        # re-imported ppmid.nfc (boot does), leaving this file's I2cTransport the old one's
        t = i2c.I2cTransport(chip)
        n = await t.read(memoryview(bytearray(290)), 1000, 290)   # a response's wait
    finally:
        i2c.ticks_ms, i2c.sleep_ms = saved
    assert n == 0
    # the deadline holds within one poll and one status read, bus time included
    assert 1000 <= clock.us // 1000 <= 1000 + t.poll_ms + 1, clock.us
    # only status bytes were read while the chip was busy: the loop was held briefly
    assert set(chip.read_sizes) == {1}, set(chip.read_sizes)
    assert clock.bus_us * 10 < clock.us, (clock.bus_us, clock.us)

