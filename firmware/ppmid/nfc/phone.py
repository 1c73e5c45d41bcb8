# Phone session: the gateway (reader) drives the PPMID app on a phone in HCE mode.
#
#   SELECT AID F0 50 50 4D 49 44 01 -> HELLO (version, mode, total, crc32, id)
#   mode 1 (deliver): GET chunks -> check length + CRC-32 -> envelope -> intake.accept()
#                     -> STATUS 9000 "OK" -> wait for the result (STATUS 6310 "PENDING"
#                     keepalives) -> RESULT header, PUT chunks, COMMIT
#   mode 2 (collect): wait for the result of an earlier id, then RESULT/PUT/COMMIT
#   failure: STATUS <status word> <code> 00 <message>, nothing relayed; once STATUS OK
#            was sent (the command is journaled) only 6400 E_NFC_LATE: collect later
# The app-side contract is docs/nfc.md ("Phone protocol").
import binascii
import struct
from micropython import const

from ppmid import envelope
from ppmid.clock import ticks_ms, ticks_diff, sleep_ms
from ppmid.errors import PpmidError, E_AUTH, E_TOO_LARGE, E_EXPIRED, E_ENVELOPE, E_ID, E_BUSY
from ppmid.nfc.apdu import transceive, SW_OK
from ppmid.nfc.errors import (NfcError, E_NFC_PROTO, E_NFC_LENGTH, E_NFC_CRC, E_NFC_LATE,
                              E_NFC_GONE, E_NFC_NOACK, E_NFC_TIMEOUT, E_NFC_FRAME, E_NFC_CHIP,
                              E_NFC_UNKNOWN)

AID = b"\xf0\x50\x50\x4d\x49\x44\x01"   # F0 "PPMID" 01
VERSION = const(1)
_MODE_DELIVER = const(1)
_MODE_COLLECT = const(2)
_CLA = const(0x80)
_INS_GET = const(0x10)
_INS_STATUS = const(0x30)
_INS_RESULT = const(0x50)
_INS_PUT = const(0x52)
_INS_COMMIT = const(0x54)

_SW_PENDING = const(0x6310)
_SW_LATE = const(0x6400)
_SW_BAD_DATA = const(0x6A80)
_SW_NOT_FOUND = const(0x6A88)
_SW_TOO_LARGE = const(0x6A84)
_SW_SECURITY = const(0x6982)
_SW_REFUSED = const(0x6985)
_SW_UNKNOWN = const(0x6F00)

# error code -> status word the phone gets with it (the code is authoritative)
_SW_FOR = {
    E_AUTH: _SW_SECURITY,
    E_TOO_LARGE: _SW_TOO_LARGE,
    E_EXPIRED: _SW_REFUSED,
    E_ENVELOPE: _SW_BAD_DATA,
    E_ID: _SW_BAD_DATA,
    E_NFC_CRC: _SW_BAD_DATA,
    E_NFC_LENGTH: _SW_BAD_DATA,
    E_NFC_PROTO: _SW_BAD_DATA,
    E_NFC_LATE: _SW_LATE,
    E_NFC_UNKNOWN: _SW_NOT_FOUND,
}
# the RESULT header's status byte (docs/nfc.md, step 4); 05: the meter had executed the
# command already (a resent copy refused as a replay): done, not to be sent again
RESULT_STATUS = {"response": 0, "timeout": 1, "failed": 2, "rejected": 3, "topped-up": 4,
                 "already-executed": 5}
_HELLO_MIN = const(11)   # version, mode, total u32, crc u32, id_len
# errors that mean we can no longer talk to the phone (no STATUS can be sent)
LINK_ERRORS = (E_NFC_GONE, E_NFC_NOACK, E_NFC_TIMEOUT, E_NFC_FRAME, E_NFC_CHIP)


def status_word(code):
    return _SW_FOR.get(code, _SW_REFUSED if code.startswith("E_") else _SW_UNKNOWN)


def max_envelope(max_gbcs):
    # version, flags, id_len, id (32), kid_len, kid (32), expires (4), gbcs_len (2), gbcs, and
    # a public-key user's signature (64) where a mac (32) goes; wired/road.max_payload alike
    return 3 + envelope.ID_MAX + 1 + envelope.ID_MAX + 4 + 2 + max_gbcs + 2 * envelope.MAC_LEN


class PhoneSession:
    """One tap. `run()` returns an outcome dict for the service's statistics:
    {"outcome": "relayed" | "delivered" | "late" | "rejected" | "gone", "id", "code"}."""

    def __init__(self, drv, tg, intake, max_gbcs, chunk=240, session_ms=20000, poll_ms=200,
                 keepalive_ms=1000, scratch=None):
        if not 16 <= chunk <= 240:
            raise ValueError("chunk must be 16..240")
        self.drv = drv
        self.tg = tg
        self.intake = intake
        self.max_gbcs = max_gbcs
        self.chunk = chunk
        self.session_ms = session_ms
        self.poll_ms = poll_ms
        self.keepalive_ms = keepalive_ms
        self.rx = scratch if scratch is not None else bytearray(264)
        self.tx = bytearray(9 + chunk)
        self.id = None
        self.accepted = False
        self.fresh = False

    async def _apdu(self, apdu):
        return await transceive(self.drv, self.tg, apdu, self.rx)

    async def run(self, hello):
        """`hello`: the data of the SELECT answer (already checked to be SW 9000)."""
        try:
            return await self._run(hello)
        except PpmidError as e:   # NfcError and the relay's refusals
            if e.code in LINK_ERRORS:
                # the phone (or the link to it) is gone: the journal keeps what was accepted
                return {"outcome": "gone", "id": self.id, "code": e.code, "accepted": self.accepted}
            if self.accepted and e.code != E_NFC_LATE:
                # The command is journaled and goes to the meter whatever the phone does
                # now: an error STATUS would tell the app "nothing was relayed", so it is
                # told what LATE says (kept: collect later), with the cause. Counted late;
                # the cause is the outcome's code.
                await self._tell(NfcError(E_NFC_LATE, "%s is accepted and journaled; %s: collect its result with a tap in mode 02, or it goes out over MQTT" % (self.id, e.message)))
                return {"outcome": "late", "id": self.id, "code": e.code, "accepted": True}
            await self._tell(e)
            outcome = "late" if e.code == E_NFC_LATE else "rejected"
            return {"outcome": outcome, "id": self.id, "code": e.code, "accepted": self.accepted}
        except MemoryError:
            # a cut-up heap mid-session (the top-up code's import on a version-2 envelope, a
            # STATUS's bytes): the phone is still told, as the other refusals (review r12-3);
            # the service counts it in memory_errors ("memory" in the outcome)
            import gc
            gc.collect()
            if self.accepted:
                err = NfcError(E_NFC_LATE, "%s is accepted and journaled; no room on the gateway for the rest: collect its result with a tap in mode 02, or it goes out over MQTT" % self.id)
            else:
                err = PpmidError(E_BUSY, "no room on the gateway now: tap again later")
            try:
                await self._tell(err)
            except MemoryError:
                pass   # not even the STATUS fits: the supervisor's collect and the next tap
            return {"outcome": "late" if self.accepted else "rejected", "id": self.id,
                    "code": err.code, "accepted": self.accepted, "memory": True}

    async def _tell(self, err):
        try:
            await self.status(status_word(err.code), err.code, err.message)
        except PpmidError:
            pass  # the phone left; nothing more to say

    async def status(self, sw, code, message=""):
        data = code.encode()
        if message:
            data += b"\x00" + message.encode()[:200 - len(data)]
        apdu = bytes((_CLA, _INS_STATUS, sw >> 8, sw & 0xFF, len(data))) + data
        rsw, n = await self._apdu(apdu)
        if rsw != SW_OK:
            raise NfcError(E_NFC_PROTO, "phone answered STATUS with SW %04X" % rsw)

    async def _run(self, hello):
        if len(hello) < _HELLO_MIN:
            raise NfcError(E_NFC_PROTO, "HELLO of %d bytes is too short" % len(hello))
        version, mode, total, crc, id_len = struct.unpack_from(">BBIIB", hello, 0)
        if version != VERSION:
            raise NfcError(E_NFC_PROTO, "app protocol version %d not supported (want %d)" % (version, VERSION))
        if _HELLO_MIN + id_len != len(hello):
            raise NfcError(E_NFC_PROTO, "HELLO length does not match its id length")
        try:
            self.id = envelope.check_id(str(bytes(hello[_HELLO_MIN:]), "ascii"))
        except UnicodeError:
            raise NfcError(E_NFC_PROTO, "HELLO id is not ASCII")
        if mode == _MODE_DELIVER:
            # Always pulled, even when a result exists: accept() is idempotent and checks
            # the mac, so only a holder of the signed command gets its result this way.
            await self._deliver(total, crc)
        elif mode != _MODE_COLLECT:
            raise NfcError(E_NFC_PROTO, "HELLO mode %d unknown" % mode)
        else:
            # an id the relay does not know has no result coming: said at once, not after
            # a session of PENDING ending in "tap again later" (review_w6-6)
            status = getattr(self.intake, "status", None)
            if status is not None and status(self.id) is None:
                raise NfcError(E_NFC_UNKNOWN, "unknown id %s: never received, refused before it was journaled, or forgotten since (a restart); nothing will come for it" % self.id)
        result = await self._wait_result()
        if result is None:
            raise NfcError(E_NFC_LATE, "no response yet for %s: tap again later, or it will be published over MQTT" % self.id)
        if "topup" in result and not self.fresh:
            # by id alone (a collect, or a delivery of an id the relay knew already: the
            # bytes of a tag or of another phone's envelope prove possession, not
            # ownership, review_w6-4): a top-up's status, not the meter's figures
            # (relay/topups.py by_id_alone)
            from ppmid.relay.topups import by_id_alone
            result = by_id_alone(result)
        await self._push(result)
        delivered = getattr(self.intake, "delivered", None)
        if delivered is not None:
            delivered(self.id, "nfc-phone")
        return {"outcome": "delivered", "id": self.id, "code": None, "accepted": self.accepted}

    async def _deliver(self, total, crc):
        limit = max_envelope(self.max_gbcs)
        if total > limit:
            raise NfcError(E_TOO_LARGE, "envelope of %d bytes is larger than the %d allowed" % (total, limit))
        if total < 3 + 1 + 2 + 1 + envelope.MAC_LEN:
            raise NfcError(E_NFC_LENGTH, "envelope length %d is too small" % total)
        try:
            buf = bytearray(total)
        except MemoryError:  # a fragmented heap (the allocator has collected already)
            raise PpmidError(E_BUSY, "no room for a %d-byte envelope now: tap again later" % total)
        apdu = bytearray(b"\x80\x10\x00\x00\x04\x00\x00\x00\x00\x00")
        apdu[0] = _CLA
        apdu[1] = _INS_GET
        off = 0
        running = 0
        while off < total:
            want = min(self.chunk, total - off)
            struct.pack_into(">IB", apdu, 5, off, want)
            sw, n = await self._apdu(apdu)
            if sw != SW_OK:
                if off and sw == 0x6B00:
                    raise NfcError(E_NFC_LENGTH, "phone announced %d bytes but has only %d" % (total, off))
                raise NfcError(E_NFC_PROTO, "phone answered GET at %d with SW %04X" % (off, sw))
            if n != want:
                raise NfcError(E_NFC_LENGTH, "phone sent %d bytes at offset %d, asked %d" % (n, off, want))
            buf[off:off + n] = self.rx[:n]
            running = binascii.crc32(memoryview(self.rx)[:n], running)
            off += n
        if running & 0xFFFFFFFF != crc:
            raise NfcError(E_NFC_CRC, "CRC-32 of the %d bytes received is %08X, phone announced %08X" % (total, running & 0xFFFFFFFF, crc))
        env = envelope.from_binary_any(buf, self.max_gbcs)  # a command, or a top-up (version 2)
        if env.id != self.id:
            raise NfcError(E_NFC_PROTO, "envelope id %s differs from the announced %s" % (env.id, self.id))
        r = await self.intake.accept(env, "nfc-phone")  # raises PpmidError when refused
        self.accepted = True
        # this tap's accept journaled it (not a redelivery's status): the figures are its own
        self.fresh = r is not None and "again" not in r
        env = buf = None
        await self.status(SW_OK, "OK")

    async def _wait_result(self):
        start = ticks_ms()
        last_keepalive = start
        while True:
            r = self.intake.result(self.id)
            if r is not None:
                return r
            now = ticks_ms()
            if ticks_diff(now, start) >= self.session_ms:
                return None
            if ticks_diff(now, last_keepalive) >= self.keepalive_ms:
                # also tells us whether the phone is still there
                await self.status(_SW_PENDING, "PENDING")
                last_keepalive = ticks_ms()
            await sleep_ms(self.poll_ms)

    async def _push(self, result):
        gbcs = result.get("gbcs") or b""
        err = result.get("error") or {}
        code = (err.get("code") or "").encode()[:32]
        message = (err.get("message") or "").encode()[:64]
        status = RESULT_STATUS.get(result.get("status"), 2)
        crc = binascii.crc32(gbcs) & 0xFFFFFFFF
        head = struct.pack(">BIIB", status, len(gbcs), crc, len(code)) + code + message
        for attempt in range(2):
            sw, n = await self._apdu(bytes((_CLA, _INS_RESULT, 0, 0, len(head))) + head)
            if sw != SW_OK:
                raise NfcError(E_NFC_PROTO, "phone answered RESULT with SW %04X" % sw)
            tx = self.tx
            tx[0] = _CLA
            tx[1] = _INS_PUT
            tx[2] = 0
            tx[3] = 0
            mv = memoryview(gbcs)
            off = 0
            while off < len(gbcs):
                k = min(self.chunk, len(gbcs) - off)
                tx[4] = 4 + k
                struct.pack_into(">I", tx, 5, off)
                tx[9:9 + k] = mv[off:off + k]
                sw, n = await self._apdu(memoryview(tx)[:9 + k])
                if sw != SW_OK:
                    raise NfcError(E_NFC_PROTO, "phone answered PUT at %d with SW %04X" % (off, sw))
                off += k
            sw, n = await self._apdu(bytes((_CLA, _INS_COMMIT, 0, 0)))
            if sw == SW_OK:
                return
        raise NfcError(E_NFC_CRC, "phone refused the response twice (COMMIT SW %04X)" % sw)
