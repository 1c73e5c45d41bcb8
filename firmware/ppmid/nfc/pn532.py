# PN532 driver over an injected transport (hsu.HsuTransport or i2c.I2cTransport).
#
# Every exchange is: command frame -> ACK (within ack_timeout_ms) -> response frame. A
# missing ACK makes us abort (send ACK) and resend; a response with a bad checksum makes us
# send NACK (the PN532 repeats it); a response that does not come in time makes us abort the
# command. All waiting is on asyncio, so polling for cards never stalls the other tasks.
# Buffers are allocated once; a response is a memoryview into the receive buffer, valid
# until the next command.
from micropython import const

from ppmid.clock import ticks_ms, ticks_diff, ticks_add, sleep_ms
from ppmid.nfc import frames as F
from ppmid.nfc.errors import (NfcError, E_NFC_NOACK, E_NFC_TIMEOUT, E_NFC_FRAME, E_NFC_CHIP,
                              E_NFC_GONE, E_NFC_LENGTH)

_CMD_GET_FIRMWARE_VERSION = const(0x02)
_CMD_SAM_CONFIGURATION = const(0x14)
_CMD_RF_CONFIGURATION = const(0x32)
_CMD_IN_DATA_EXCHANGE = const(0x40)
_CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)
_CMD_IN_RELEASE = const(0x52)

_DEP_MAX = const(262)     # data bytes one InDataExchange carries each way
_MI = const(0x40)        # "more information" bit (status byte, and Tg byte when sending)
_RX_SIZE = const(300)    # one extended frame of TFI + code + status + 262 data, with slack

# Re-initialising a PN532 that does not answer (or after a fault): wait 1 s, doubling to
# 30 s (docs/nfc.md). Here, with the driver, because both the service and the boot-time
# standby (a reader that missed the boot probe) use it and the standby loads only this.
REINIT_FIRST_MS = const(1000)
REINIT_MAX_MS = const(30000)

# InDataExchange / InListPassiveTarget status codes meaning "the target is not there"
_GONE = (0x01, 0x27, 0x29, 0x2B)
STATUS_TEXT = {0x01: "target timeout", 0x02: "CRC error", 0x0B: "RF protocol error",
               0x0E: "buffer overflow", 0x13: "format error", 0x25: "DEP state",
               0x27: "not acceptable", 0x29: "target released", 0x2B: "card disappeared"}


class Target:
    """A target found by InListPassiveTarget (106 kbps type A)."""
    # no __slots__: MicroPython ignores them, and their tuple is heap the app holds (docs/memory.md)

    def __init__(self, tg, sens_res, sel_res, uid, ats):
        self.tg = tg
        self.sens_res = sens_res
        self.sel_res = sel_res
        self.uid = uid
        self.ats = ats

    def iso_dep(self):
        return bool(self.sel_res & 0x20)

    def type2(self):
        return not self.sel_res & 0x60


class PN532:
    def __init__(self, transport, ack_timeout_ms=40, retries=2, response_timeout_ms=1000):
        self.t = transport
        self.ack_timeout_ms = ack_timeout_ms
        self.retries = retries
        self.response_timeout_ms = response_timeout_ms
        self._tx = bytearray(F.frame_size(2 + 1 + _DEP_MAX))
        self._rx = bytearray(_RX_SIZE)
        self._rxv = memoryview(self._rx)
        self._s = 0       # first unconsumed byte in _rx
        self._n = 0       # bytes in _rx
        self.stats = {"commands": 0, "resends": 0, "nacks": 0, "aborts": 0, "timeouts": 0}

    # ---- frame layer ---------------------------------------------------------------
    def _discard_input(self):
        self._s = 0
        self._n = 0

    async def _next(self, deadline, hint):
        """Next frame: (kind, off, length) with off into _rx, or (None, 0, 0) once the
        ticks_ms `deadline` has passed. Frames with a bad length checksum are skipped
        (resynchronisation). The deadline is the caller's whole wait, not this frame's: a
        chip or line that keeps sending frames nobody waits for (repeated ACKs, answers to
        another command) must not hold a command forever (review_w6-3)."""
        framed = self.t.framed
        while True:
            if self._s >= self._n:
                self._s = self._n = 0
            avail = self._n - self._s
            if avail:
                base = self._s
                kind, end, off, ln = F.scan(self._rxv[base:self._n], avail, _RX_SIZE - 10)
                self._s = base + end
                if kind == F.KIND_BAD_LCS:
                    continue
                if kind != F.NEED_MORE:
                    if framed:  # I2C: one read is one frame; what follows is filler
                        self._s = self._n
                    return kind, base + off, ln
                if framed:  # a truncated I2C read cannot be continued
                    self._s = self._n
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return None, 0, 0
            if self._s >= self._n:
                self._s = self._n = 0
            elif self._s and self._n > _RX_SIZE // 2:
                rest = self._n - self._s
                self._rx[0:rest] = self._rx[self._s:self._n]
                self._s, self._n = 0, rest
            if self._n >= _RX_SIZE:
                self._s = self._n = 0  # garbage that never forms a frame
            got = await self.t.read(self._rxv[self._n:], left, hint)
            if got:
                self._n += got

    async def abort(self):
        """Cancel whatever the PN532 is doing (an ACK from the host)."""
        self.stats["aborts"] += 1
        await self.t.write(F.ACK)
        await sleep_ms(2)
        self._discard_input()

    async def command(self, code, data=b"", data2=b"", timeout_ms=None):
        """Run one command; return a memoryview of the response data after the code."""
        if timeout_ms is None:
            timeout_ms = self.response_timeout_ms
        self.stats["commands"] += 1
        n = F.encode(self._tx, F.TFI_HOST, code, data, data2)
        frame = memoryview(self._tx)[:n]
        for attempt in range(self.retries + 1):
            self._discard_input()
            await self.t.write(frame)
            if await self._wait_ack():
                break
            self.stats["resends"] += 1
            await self.abort()
        else:
            raise NfcError(E_NFC_NOACK, "PN532 did not acknowledge command 0x%02X (%d tries)" % (code, self.retries + 1))
        nacks = 0
        # one deadline for the answer, whatever else comes meanwhile
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while True:
            kind, off, ln = await self._next(deadline, _RX_SIZE - 10)
            if kind is None:
                self.stats["timeouts"] += 1
                await self.abort()
                raise NfcError(E_NFC_TIMEOUT, "PN532 gave no response to command 0x%02X within %d ms" % (code, timeout_ms))
            if kind == F.KIND_ACK:
                continue  # a late duplicate ACK
            if kind in (F.KIND_BAD_DCS, F.KIND_TOO_LONG, F.KIND_NACK):
                if nacks < self.retries:
                    nacks += 1
                    self.stats["nacks"] += 1
                    await self.t.write(F.NACK)
                    continue
                await self.abort()
                raise NfcError(E_NFC_FRAME, "PN532 response to 0x%02X stayed corrupt after %d NACKs" % (code, nacks))
            if kind == F.KIND_ERROR:
                raise NfcError(E_NFC_CHIP, "PN532 sent an error frame for command 0x%02X" % code)
            rx = self._rx
            if ln < 2 or rx[off] != F.TFI_CHIP or rx[off + 1] != code + 1:
                continue  # a stale response to an aborted command
            return self._rxv[off + 2:off + ln]

    async def _wait_ack(self):
        deadline = ticks_add(ticks_ms(), self.ack_timeout_ms)
        while True:
            kind, off, ln = await self._next(deadline, 6)
            if kind is None:
                return False
            if kind == F.KIND_ACK:
                return True
            # anything else before the ACK is stale (a response to an aborted command)

    # ---- commands -----------------------------------------------------------------
    async def begin(self, passive_retries=2):
        """Wake the chip, put the SAM in normal mode, bound activation retries.
        Returns (ic, version, revision, support)."""
        await self.t.wakeup()
        await self.sam_configuration()
        ver = await self.get_firmware_version()
        # item 5: MxRtyATR, MxRtyPSL, MxRtyPassiveActivation (finite: polls return)
        await self.rf_configuration(0x05, bytes((0xFF, 0x01, passive_retries)))
        return ver

    async def get_firmware_version(self):
        r = await self.command(_CMD_GET_FIRMWARE_VERSION)
        if len(r) != 4:
            raise NfcError(E_NFC_FRAME, "GetFirmwareVersion answer has %d bytes, not 4" % len(r))
        return (r[0], r[1], r[2], r[3])

    async def sam_configuration(self, mode=1, timeout=0, irq=1):
        await self.command(_CMD_SAM_CONFIGURATION, bytes((mode, timeout, irq)))

    async def rf_configuration(self, item, data):
        await self.command(_CMD_RF_CONFIGURATION, bytes((item,)), data)

    async def in_list_passive_target(self, timeout_ms=None):
        """One 106 kbps type A target, or None when none answered."""
        r = await self.command(_CMD_IN_LIST_PASSIVE_TARGET, b"\x01\x00", timeout_ms=timeout_ms)
        if len(r) < 1:
            raise NfcError(E_NFC_FRAME, "InListPassiveTarget answer is empty")
        if r[0] == 0:
            return None
        if len(r) < 6 or 6 + r[5] > len(r):
            raise NfcError(E_NFC_FRAME, "InListPassiveTarget answer truncated")
        uid_len = r[5]
        uid = bytes(r[6:6 + uid_len])
        ats = b""
        p = 6 + uid_len
        if p < len(r):
            ats = bytes(r[p + 1:p + r[p]]) if r[p] else b""
        return Target(r[1], bytes(r[2:4]), r[4], uid, ats)

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        """Send `data` to target `tg` (chaining above 262 bytes), put the answer in the
        bytearray/memoryview `out` (gathering MI chained parts); return its length."""
        n = len(data)
        mv = memoryview(data)
        pos = 0
        while True:
            part = n - pos
            more = part > _DEP_MAX
            if more:
                part = _DEP_MAX
            r = await self.command(_CMD_IN_DATA_EXCHANGE, bytes((tg | (_MI if more else 0),)),
                                   mv[pos:pos + part], timeout_ms)
            pos += part
            self._check_status(r)
            if not more:
                break
        got = 0
        while True:
            m = len(r) - 1
            if got + m > len(out):
                raise NfcError(E_NFC_LENGTH, "target answer larger than %d bytes" % len(out))
            out[got:got + m] = r[1:]
            got += m
            if not r[0] & _MI:
                return got
            r = await self.command(_CMD_IN_DATA_EXCHANGE, bytes((tg,)), b"", timeout_ms)
            self._check_status(r)

    def _check_status(self, r):
        if len(r) < 1:
            raise NfcError(E_NFC_FRAME, "InDataExchange answer is empty")
        st = r[0] & 0x3F
        if st:
            text = STATUS_TEXT.get(st, "error")
            if st in _GONE:
                raise NfcError(E_NFC_GONE, "target left the field (PN532 status 0x%02X, %s)" % (st, text))
            raise NfcError(E_NFC_CHIP, "InDataExchange failed (PN532 status 0x%02X, %s)" % (st, text))

    async def in_release(self, tg=0):
        await self.command(_CMD_IN_RELEASE, bytes((tg,)))
