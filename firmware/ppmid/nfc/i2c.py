# PN532 over I2C (address 0x24), for boards with `"nfc": {"bus": "i2c"}`. `i2c` is a
# machine.I2C-like object (writeto(addr, buf), readfrom_into(addr, buf)) injected by the
# board. Every read transaction starts with a status byte: bit 0 set when a frame is
# ready, and the frame follows in the same transaction; until then we poll the status byte
# alone, sleeping between polls so that other tasks run. A PN532 that is still waking up
# NAKs its address (OSError): treated as "not ready".
from ppmid.clock import sleep_ms, ticks_ms, ticks_diff

ADDRESS = 0x24


class I2cTransport:
    framed = True  # each successful read holds exactly one frame (then filler)

    def __init__(self, i2c, address=ADDRESS, poll_ms=2, max_frame=290):
        self.i2c = i2c
        self.address = address
        self.poll_ms = poll_ms
        self._buf = bytearray(1 + max_frame)
        self._mv = memoryview(self._buf)
        self.nak_count = 0

    async def wakeup(self):
        # The PN532 wakes on its address; give it time to start its I2C interface.
        try:
            self.i2c.writeto(self.address, b"\x00")
        except OSError:
            self.nak_count += 1
        await sleep_ms(5)

    async def write(self, data):
        for attempt in range(3):
            try:
                self.i2c.writeto(self.address, data)
                return
            except OSError:  # address NAK: chip busy or asleep; the driver retries on no ACK
                self.nak_count += 1
                await sleep_ms(self.poll_ms)

    async def read(self, buf, timeout_ms, hint=0):
        """Poll until a frame is ready (at most timeout_ms); copy it into `buf`, return its
        length; 0 on timeout. `hint` = expected frame size (6 for an ACK).
        machine.I2C transfers block the event loop (a 291-byte read takes ~6.5 ms at
        400 kHz), so while the chip is busy only its status byte is read (~50 us); the
        frame is read, status byte first again, once bit 0 says it is there (a status
        read alone leaves the frame in the chip). The deadline is on the ticks clock,
        so the time the transfers take counts."""
        size = min(len(buf), len(self._buf) - 1, hint or len(buf))
        start = ticks_ms()
        while True:
            if self._ready(self._mv[:1]):
                rd = self._mv[:1 + size]
                if self._ready(rd):
                    buf[:size] = rd[1:1 + size]
                    return size
            if ticks_diff(ticks_ms(), start) >= timeout_ms:
                return 0
            await sleep_ms(self.poll_ms)

    def _ready(self, rd):
        # one read transaction into `rd`: whether its status byte says a frame is ready
        try:
            self.i2c.readfrom_into(self.address, rd)
            return rd[0] & 0x01
        except OSError:
            self.nak_count += 1
            return 0
