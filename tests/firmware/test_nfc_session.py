# Phone session and service logic with a fake driver (APDU level): exact APDU bytes of
# docs/nfc.md, status words for each refusal, settings checks. CPython and MicroPython.
import binascii
import struct

from ppmid import envelope
from ppmid.errors import PpmidError
from ppmid.nfc import phone, service
from ppmid.nfc.errors import NfcError

KEY = b"k" * 32


class Gone(Exception):
    pass


class FakeDriver:
    """in_data_exchange() routed to a tiny scripted phone; records every APDU."""

    def __init__(self, env_bytes, id, crc=None, leave_after=None):
        self.env = env_bytes
        self.id = id
        self.crc = binascii.crc32(env_bytes) & 0xFFFFFFFF if crc is None else crc
        self.apdus = []
        self.leave_after = leave_after
        self.result = None
        self.statuses = []

    async def in_data_exchange(self, tg, data, out):
        data = bytes(data)
        self.apdus.append(data)
        if self.leave_after is not None and len(self.apdus) > self.leave_after:
            raise NfcError("E_NFC_GONE", "target left the field")
        ins = data[1]
        if ins == 0x10:
            off = struct.unpack(">I", data[5:9])[0]
            r = self.env[off:off + data[9]] + b"\x90\x00"
        elif ins == 0x30:
            self.statuses.append(((data[2] << 8) | data[3], data[5:5 + data[4]]))
            r = b"\x90\x00"
        elif ins == 0x50:
            self.result = {"head": data[5:], "data": b""}
            r = b"\x90\x00"
        elif ins == 0x52:
            self.result["data"] += data[9:]
            r = b"\x90\x00"
        elif ins == 0x54:
            r = b"\x90\x00"
        else:
            r = b"\x6d\x00"
        out[:len(r)] = r
        return len(r)

    def hello(self):
        ident = self.id.encode()
        return struct.pack(">BBIIB", 1, 1, len(self.env), self.crc, len(ident)) + ident


class Intake:
    def __init__(self, answer=None, reject=None):
        self.answer = answer
        self.reject = reject
        self.accepted = []

    async def accept(self, env, via):
        if self.reject:
            raise PpmidError(self.reject, "no")
        env.verify(KEY)
        self.accepted.append((env.id, via, bytes(env.gbcs)))

    def result(self, id):
        return self.answer


def _env(id="c-42", size=300, key=KEY):
    return envelope.to_binary(envelope.sign(key, id, bytes(size)))


async def _run(drv, intake, **kw):
    s = phone.PhoneSession(drv, 1, intake, 8192, session_ms=kw.get("session_ms", 1000), poll_ms=5, keepalive_ms=20)
    return await s.run(drv.hello())


async def test_apdus_match_the_documented_example():
    env = _env(size=300 - 3 - 4 - 2 - 32)  # a 300-byte envelope, as in docs/nfc.md
    assert len(env) == 300
    drv = FakeDriver(env, "c-42")
    ans = {"status": "response", "gbcs": bytes(range(64)), "error": None}
    o = await _run(drv, Intake(answer=ans))
    assert o["outcome"] == "delivered"
    a = drv.apdus
    assert a[0] == bytes.fromhex("8010000004000000 00F0".replace(" ", ""))
    assert a[1] == bytes.fromhex("80100000040000 00F03C".replace(" ", ""))
    assert a[2] == bytes.fromhex("80309000024F4B")
    crc = binascii.crc32(bytes(range(64))) & 0xFFFFFFFF
    assert a[3] == bytes.fromhex("805000000A0000000040") + struct.pack(">I", crc) + b"\x00"
    assert a[4] == bytes.fromhex("805200004400000000") + bytes(range(64))
    assert a[5] == bytes.fromhex("80540000")
    assert len(a) == 6


async def test_refusals_get_their_status_words():
    cases = [
        (FakeDriver(_env(), "c-42", crc=1), Intake(), "E_NFC_CRC", 0x6A80),
        (FakeDriver(_env(key=b"x" * 32), "c-42"), Intake(), "E_AUTH", 0x6982),
        (FakeDriver(_env(), "c-43"), Intake(), "E_NFC_PROTO", 0x6A80),
        (FakeDriver(_env(), "c-42"), Intake(reject="E_BUSY"), "E_BUSY", 0x6985),
        (FakeDriver(_env(), "c-42"), Intake(reject="E_EXPIRED"), "E_EXPIRED", 0x6985),
    ]
    for drv, intake, code, sw in cases:
        o = await _run(drv, intake)
        assert o["outcome"] == "rejected" and o["code"] == code, (code, o)
        assert drv.statuses[-1][0] == sw and drv.statuses[-1][1].startswith(code.encode()), drv.statuses
        assert intake.accepted == []


async def test_late_result_gets_e_nfc_late_after_pending_keepalives():
    drv = FakeDriver(_env(), "c-42")
    intake = Intake(answer=None)
    o = await _run(drv, intake, session_ms=100)
    assert o["outcome"] == "late" and o["accepted"] is True
    assert drv.statuses[0] == (0x9000, b"OK")
    assert (0x6310, b"PENDING") in drv.statuses
    assert drv.statuses[-1][0] == 0x6400 and drv.statuses[-1][1].startswith(b"E_NFC_LATE")


async def test_phone_leaving_is_gone_not_an_error_status():
    drv = FakeDriver(_env(size=1000), "c-42", leave_after=2)
    intake = Intake()
    o = await _run(drv, intake)
    assert o == {"outcome": "gone", "id": "c-42", "code": "E_NFC_GONE", "accepted": False}
    assert drv.statuses == [] and intake.accepted == []


async def test_bad_hello_refused():
    drv = FakeDriver(_env(), "c-42")
    s = phone.PhoneSession(drv, 1, Intake(), 8192)
    for hello in (b"", b"\x01\x01", drv.hello()[:-1], b"\x02" + drv.hello()[1:],
                  b"\x01\x07" + drv.hello()[2:], drv.hello()[:10] + b"\x02\x00\x01"):
        o = await s.run(hello)
        assert o["outcome"] == "rejected" and o["code"] in ("E_NFC_PROTO", "E_ID"), (hello, o)


def test_status_words():
    assert phone.status_word("E_AUTH") == 0x6982
    assert phone.status_word("E_TOO_LARGE") == 0x6A84
    assert phone.status_word("E_GBCS_TARGET") == 0x6985
    assert phone.status_word("weird") == 0x6F00


def test_settings_checked():
    assert service.settings({})["chunk"] == 240
    assert service.settings({"nfc": {"session_s": 5}})["session_s"] == 5
    for bad in ({"nfc": {"chunk": 500}}, {"nfc": {"typo": 1}}, {"nfc": {"poll_ms": -1}}, {"nfc": {"idle_ms": True}}):
        try:
            service.settings(bad)
            assert False, bad
        except PpmidError as e:
            assert e.code == "E_CONFIG"


class _Streams:
    def streams(self):
        return ("reader", "writer")


class _Board:
    def __init__(self, nfc):
        self.info = {"nfc": nfc} if nfc is not None else {}

    def nfc_uart(self):
        return _Streams()

    def nfc_i2c(self):
        return "i2c-bus"


def driver_for(board):
    """A PN532 on the bus the board definition names, None without a reader: the wiring
    ppmid.boot._nfc_driver does, kept here (with a refusal of an unknown bus) to check that
    the transports take what a board hands out."""
    from ppmid.nfc.pn532 import PN532
    spec = board.info.get("nfc") or {}
    bus = spec.get("bus")
    if bus == "uart":
        from ppmid.nfc.hsu import HsuTransport
        reader, writer = board.nfc_uart().streams()
        return PN532(HsuTransport(reader, writer))
    if bus == "i2c":
        from ppmid.nfc.i2c import I2cTransport
        return PN532(I2cTransport(board.nfc_i2c(), spec.get("addr", 0x24)))
    if bus is None:
        return None
    raise PpmidError("E_CONFIG", "board nfc.bus %r is not uart or i2c" % bus)


def test_driver_for_board_bus():
    d = driver_for(_Board({"bus": "uart", "id": 2}))
    assert type(d.t).__name__ == "HsuTransport" and d.t.reader == "reader" and not d.t.framed
    d = driver_for(_Board({"bus": "i2c", "id": 0}))
    assert type(d.t).__name__ == "I2cTransport" and d.t.i2c == "i2c-bus" and d.t.address == 0x24
    assert driver_for(_Board(None)) is None
    try:
        driver_for(_Board({"bus": "spi"}))
        assert False
    except PpmidError as e:
        assert e.code == "E_CONFIG"


def test_boot_builds_the_driver_the_board_names():
    # ppmid.boot._nfc_driver itself, with the keys boards/*/board.json use ("addr")
    from ppmid import boot
    d = boot._nfc_driver(_Board({"bus": "i2c", "id": 0, "sda": 8, "scl": 9, "addr": 0x25}))
    assert type(d.t).__name__ == "I2cTransport" and d.t.i2c == "i2c-bus" and d.t.address == 0x25
    d = boot._nfc_driver(_Board({"bus": "i2c", "id": 0}))
    assert d.t.address == 0x24
    d = boot._nfc_driver(_Board({"bus": "uart", "id": 2}))
    assert type(d.t).__name__ == "HsuTransport" and d.t.reader == "reader"
    assert boot._nfc_driver(_Board(None)) is None


def test_settings_from_the_gateway_config():
    from ppmid import config
    cfg = config.validate({"gateway": "00DB1234567890A0", "nfc": {"session_s": 5}})
    s = service.settings(cfg)
    assert s["session_s"] == 5 and s["chunk"] == 240 and s["idle_ms"] == 250
    assert service.settings(config.validate({"gateway": "00DB1234567890A0"})) == service.DEFAULTS


def _no_room_for(size):
    """A bytearray() for phone.py that has no room for `size` bytes (a fragmented heap)."""
    real = bytearray

    def alloc(*args):
        if args and args[0] == size:
            raise MemoryError("memory allocation failed, allocating %d bytes" % size)
        return real(*args)
    return alloc


async def test_no_room_for_the_envelope_is_e_busy_not_a_crash():
    env = _env(size=4000)
    drv = FakeDriver(env, "c-42")
    intake = Intake()
    phone.bytearray = _no_room_for(len(env))
    try:
        o = await _run(drv, intake)
    finally:
        del phone.bytearray
    assert o["outcome"] == "rejected" and o["code"] == "E_BUSY", o
    sw, data = drv.statuses[-1]
    assert sw == 0x6985 and data.startswith(b"E_BUSY\x00") and b"tap again later" in data, drv.statuses
    assert intake.accepted == []
    o = await _run(FakeDriver(env, "c-42"), intake)   # the next tap, with room again
    assert o["outcome"] == "late" and intake.accepted[0][0] == "c-42"


class _DeliveredIntake(Intake):
    def __init__(self, answer=None):
        Intake.__init__(self, answer)
        self.delivered_ids = []

    def delivered(self, id, via):
        self.delivered_ids.append((id, via))


async def test_already_executed_is_its_own_result_status_and_is_delivered():
    # the meter executed the command (a resent copy was refused as a replay): the phone must
    # not be told "failed" (02), which invites sending it again
    drv = FakeDriver(_env(), "c-42")
    intake = _DeliveredIntake(answer={"status": "already-executed", "gbcs": None, "error": None})
    o = await _run(drv, intake)
    assert o["outcome"] == "delivered", o
    head = drv.result["head"]
    assert head[0] == 5 == phone.RESULT_STATUS["already-executed"], head
    assert struct.unpack(">IIB", head[1:10]) == (0, 0, 0)   # no data, no error code
    assert intake.delivered_ids == [("c-42", "nfc-phone")]
    assert sorted(phone.RESULT_STATUS.values()) == [0, 1, 2, 3, 4, 5]


class _Hiccup(FakeDriver):
    """A phone that answers the `nth` APDU with instruction `ins` (every one: nth 0) with
    status word `sw`."""

    def __init__(self, env_bytes, id, ins, sw, nth=1):
        FakeDriver.__init__(self, env_bytes, id)
        self.ins, self.sw, self.nth = ins, sw, nth
        self.seen = 0

    async def in_data_exchange(self, tg, data, out):
        if data[1] == self.ins:
            self.seen += 1
            if self.nth in (0, self.seen):
                self.apdus.append(bytes(data))
                out[0], out[1] = self.sw >> 8, self.sw & 0xFF
                return 2
        return await FakeDriver.in_data_exchange(self, tg, data, out)


async def test_hiccup_after_accept_says_kept_not_refused():
    # once STATUS OK went out the command is journaled: whatever the phone does then, it is
    # told 64 00 E_NFC_LATE (collect later), never a refusal, and the tap counts as late
    ans = {"status": "response", "gbcs": b"\x01\x02", "error": None}
    cases = ((0x30, 0x6F00, 1, None, "E_NFC_PROTO"),    # the OK STATUS itself
             (0x30, 0x6A80, 2, None, "E_NFC_PROTO"),    # a PENDING keepalive
             (0x50, 0x6F00, 1, ans, "E_NFC_PROTO"),     # the RESULT header
             (0x54, 0x6A80, 0, ans, "E_NFC_CRC"))       # COMMIT, both times
    for ins, sw, nth, answer, cause in cases:
        drv = _Hiccup(_env(), "c-42", ins, sw, nth)
        intake = Intake(answer=answer)
        o = await _run(drv, intake, session_ms=200)
        assert intake.accepted and o["accepted"] is True, (ins, o)
        assert o["outcome"] == "late" and o["code"] == cause, (ins, o)
        errors = [st for st in drv.statuses if st[0] not in (0x9000, 0x6310)]
        assert len(errors) == 1 and errors[0][0] == 0x6400, (ins, drv.statuses)
        assert errors[0][1].startswith(b"E_NFC_LATE\x00c-42 is accepted and journaled"), errors


async def test_collect_hiccup_is_still_a_transfer_error():
    # mode 02 relays nothing: a broken RESULT exchange keeps its 6A80
    drv = _Hiccup(_env(), "c-42", 0x50, 0x6F00)
    ident = b"c-42"
    hello = struct.pack(">BBIIB", 1, 2, 0, 0, len(ident)) + ident
    s = phone.PhoneSession(drv, 1, Intake(answer={"status": "response", "gbcs": b"\x01", "error": None}),
                           8192, session_ms=200, poll_ms=5, keepalive_ms=20)
    o = await s.run(hello)
    assert o["outcome"] == "rejected" and o["code"] == "E_NFC_PROTO" and o["accepted"] is False, o
    assert drv.statuses[-1][0] == 0x6A80, drv.statuses


class _NoRoomIntake(Intake):
    """Accepts (journals), then has no room when the session asks for the result."""

    def result(self, id):
        raise MemoryError("memory allocation failed")


async def test_a_memoryerror_mid_session_still_gives_the_phone_a_status():
    # review r12-3: PhoneSession.run caught PpmidError only, so a MemoryError (the top-up
    # code's import by from_binary_any on a cut-up heap, a STATUS's bytes) went to the
    # service's supervisor and the phone got no STATUS at all. Before accept: 69 85 E_BUSY
    saved = envelope.from_binary_any

    def no_room(buf, max_gbcs):
        raise MemoryError("memory allocation failed")
    envelope.from_binary_any = no_room
    try:
        drv = FakeDriver(_env(), "c-42")
        intake = Intake()
        o = await _run(drv, intake)
    finally:
        envelope.from_binary_any = saved
    assert o["outcome"] == "rejected" and o["code"] == "E_BUSY" and o["memory"] is True, o
    assert o["accepted"] is False and intake.accepted == []
    assert len(drv.statuses) == 1, drv.statuses
    sw, data = drv.statuses[0]
    assert sw == 0x6985 and data.startswith(b"E_BUSY\x00") and b"tap again later" in data, drv.statuses
    # after accept (journaled): 64 00 E_NFC_LATE "is accepted and journaled", counted late
    drv = FakeDriver(_env(), "c-42")
    intake = _NoRoomIntake()
    o = await _run(drv, intake)
    assert o["outcome"] == "late" and o["code"] == "E_NFC_LATE" and o["accepted"] is True, o
    assert intake.accepted and intake.accepted[0][0] == "c-42"
    assert drv.statuses[0][0] == 0x9000, drv.statuses          # the OK went out first
    sw, data = drv.statuses[-1]
    assert sw == 0x6400 and data.startswith(b"E_NFC_LATE\x00c-42 is accepted and journaled"), drv.statuses


class _PhoneReader:
    """The service's view of a PN532 with a phone running the PPMID app in the field."""

    def __init__(self, phone_driver):
        self.phone = phone_driver
        self.released = 0

    async def in_list_passive_target(self, timeout_ms=None):
        from ppmid.nfc.pn532 import Target
        return Target(1, b"\x00\x04", 0x20, b"\x08\x11\x22\x33", b"")

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        if data[1] == 0xA4:    # SELECT of the app: its HELLO
            r = self.phone.hello() + b"\x90\x00"
            out[:len(r)] = r
            return len(r)
        return await self.phone.in_data_exchange(tg, data, out)

    async def in_release(self, tg=0):
        self.released += 1


async def test_the_service_counts_a_phone_sessions_memoryerror_and_keeps_the_chip():
    # the session answers the phone itself; the service counts it in memory_errors, releases
    # the target and the chip stays ready (no re-initialisation for a tap's MemoryError)
    reader = _PhoneReader(FakeDriver(_env(), "c-42"))
    svc = service.NfcService(reader, _NoRoomIntake())
    svc.ready = True
    o = await svc.poll_once()
    assert o["outcome"] == "late" and o["code"] == "E_NFC_LATE", o
    assert svc.stats["memory_errors"] == 1 and svc.stats["last_fault"] == "MemoryError", svc.stats
    assert svc.stats["late"] == 1 and svc.stats["relayed"] == 1 and svc.stats["last_code"] == "E_NFC_LATE"
    assert svc.ready is True and reader.released == 1
