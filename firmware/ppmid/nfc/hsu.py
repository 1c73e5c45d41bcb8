# PN532 over HSU (its UART, 115200 8N1 by default): the transport the driver is given on
# boards with `"nfc": {"bus": "uart"}`. Works on asyncio streams over a machine.UART, or
# over board.ptyuart.PtyUart on the emulated board.
import asyncio

from ppmid.clock import sleep_ms, wait_for_ms

# HSU wake-up: 55 55 then enough 00s for the PN532 to leave power-down (>= 14 in practice)
WAKEUP = b"\x55\x55" + bytes(16)


class HsuTransport:
    framed = False  # a byte stream: frames may be split across reads

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self._readinto = hasattr(reader, "readinto")

    async def wakeup(self):
        await self.write(WAKEUP)
        await sleep_ms(2)

    async def write(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, buf, timeout_ms, hint=0):
        """Read what has arrived into memoryview `buf` (waiting at most timeout_ms);
        return the count, 0 on timeout."""
        try:
            if self._readinto:
                return await wait_for_ms(self.reader.readinto(buf), timeout_ms) or 0
            data = await wait_for_ms(self.reader.read(len(buf)), timeout_ms)
        except asyncio.TimeoutError:
            return 0
        n = len(data)
        buf[:n] = data
        return n
