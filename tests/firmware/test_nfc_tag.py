# Tag readers (nfc/tag.py) against scripted tag memories: a Type 2 tag announcing more than
# READ's one-byte page address reaches is refused E_NDEF (it used to raise ValueError and
# end the NFC task), the refusals of both readers, and a fuzz of their length fields
# (capability container sizes, TLV and NLEN lengths, short READ BINARY answers) with fixed
# seeds: only NfcError may come out; a short READ BINARY and a read past its deadline
# (nfc.session_s) are refused E_NDEF (review r12-2). CPython and MicroPython.
from ppmid import envelope
from ppmid.nfc import tag, service
from ppmid.nfc.errors import NfcError
from ppmid.nfc.pn532 import Target

KEY = b"k" * 32


def _cmd_ndef(id="t-1"):
    """An NDEF message holding one application/vnd.ppmid.cmd record with a signed envelope."""
    payload = envelope.to_binary(envelope.sign(KEY, id, bytes(20)))
    mime = b"application/vnd.ppmid.cmd"
    return bytes((0xD2, len(mime), len(payload))) + mime + payload


class Type2Tag:
    """A Type 2 tag memory (pages of 4 bytes from page 0) answering READ with 16 bytes,
    wrapping at its end as NTAGs do. Records every page asked for."""

    def __init__(self, cc, area):
        self.mem = bytes(12) + bytes(cc) + bytes(area)
        self.pages = []

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        assert data[0] == tag.TYPE2_READ and len(data) == 2
        page = data[1]
        self.pages.append(page)
        n = len(self.mem)
        for i in range(16):
            out[i] = self.mem[(page * 4 + i) % n]
        return 16


def _type2_area(msg, size):
    tlv = bytes((0x03, len(msg))) + msg + b"\xfe" if len(msg) < 255 else \
        bytes((0x03, 0xFF, len(msg) >> 8, len(msg) & 0xFF)) + msg + b"\xfe"
    return tlv + bytes(size - len(tlv))


async def test_type2_reads_the_ndef_message():
    msg = _cmd_ndef()
    drv = Type2Tag(b"\xe1\x10\x6d\x00", _type2_area(msg, 872))   # NTAG216
    got = await tag.read_type2(drv, 1, bytearray(64))
    assert bytes(got) == msg
    assert tag.envelope_from_ndef(got, 8192).id == "t-1"
    assert max(drv.pages) < 4 + (len(msg) + 3 + 15) // 16 * 4  # stops once the TLV is in


async def _refused(coro, code):
    try:
        await coro
    except NfcError as e:
        assert e.code == code, e.code
        return e.message
    raise AssertionError("not refused")


async def test_type2_area_beyond_page_255_refused():
    # CC[2] = 0xFF announces 2040 bytes; NULL TLVs never end the read early: the reader
    # would have to ask for page 256, which READ cannot address
    for size_byte in (0x7F, 0xEA, 0xFF):
        drv = Type2Tag(bytes((0xE1, 0x10, size_byte, 0x00)), bytes(2040))
        msg = await _refused(tag.read_type2(drv, 1, bytearray(64)), "E_NDEF")
        assert ("%d bytes" % (size_byte * 8)) in msg and "1008" in msg, msg
        assert drv.pages == [3]
    # the largest area READ reaches is read to its last page
    drv = Type2Tag(b"\xe1\x10\x7e\x00", bytes(1008))
    await _refused(tag.read_type2(drv, 1, bytearray(64)), "E_NDEF")   # no terminator
    assert max(drv.pages) == 252


async def test_type2_refusals():
    msg = _cmd_ndef()
    cases = (
        (b"\x00\x10\x6d\x00", _type2_area(msg, 872)),                  # no CC magic
        (b"\xe1\x20\x6d\x00", _type2_area(msg, 872)),                  # NDEF version 2
        (b"\xe1\x10\x00\x00", _type2_area(msg, 872)),                  # empty area
        (b"\xe1\x10\x02\x00", b"\x03\x20" + bytes(14)),                # TLV past the 16-byte area
        (b"\xe1\x10\x12\x00", bytes(144)),                             # NULLs, no terminator
    )
    for cc, area in cases:
        await _refused(tag.read_type2(Type2Tag(cc, area), 1, bytearray(64)), "E_NDEF")


class _ShortRead(Type2Tag):
    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        await Type2Tag.in_data_exchange(self, tg, data, out)
        return 4 if data[1] > 3 else 16


async def test_type2_short_read_refused():
    drv = _ShortRead(b"\xe1\x10\x6d\x00", _type2_area(_cmd_ndef(), 872))
    await _refused(tag.read_type2(drv, 1, bytearray(64)), "E_NDEF")


class Type4Tag:
    """A Type 4 tag behind its (already selected) NDEF application: CC file E1 03 and an
    NDEF file; `short`: READ BINARY answers at most that many bytes."""

    def __init__(self, cc, ndef_file, short=None):
        self.files = {b"\xe1\x03": bytes(cc), bytes(cc[9:11]): bytes(ndef_file)}
        self.cur = None
        self.short = short

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        data = bytes(data)
        if data[1] == 0xA4:
            fid = data[5:7]
            self.cur = self.files.get(fid)
            r = b"\x90\x00" if self.cur is not None else b"\x6a\x82"
        elif data[1] == 0xB0 and self.cur is not None:
            off = (data[2] << 8) | data[3]
            want = data[4]
            if self.short is not None:
                want = min(want, self.short)
            r = self.cur[off:off + want] + b"\x90\x00"
        else:
            r = b"\x6d\x00"
        out[:len(r)] = r
        return len(r)


def _cc4(mle=0x3B, fid=b"\xe1\x04", fmax=0x0800, access=0x00):
    return bytes((0x00, 0x0F, 0x20, mle >> 8, mle & 0xFF, 0x00, 0x34, 0x04, 0x06)) + fid + \
        bytes((fmax >> 8, fmax & 0xFF, access, 0x00))


async def test_type4_reads_and_refuses():
    msg = _cmd_ndef()
    nfile = bytes((len(msg) >> 8, len(msg) & 0xFF)) + msg
    got = await tag.read_type4(Type4Tag(_cc4(), nfile), 1, bytearray(264), 8400)
    assert bytes(got) == msg
    await _refused(tag.read_type4(Type4Tag(_cc4(access=0x80), nfile), 1, bytearray(264), 8400), "E_NDEF")
    await _refused(tag.read_type4(Type4Tag(_cc4(fmax=10), nfile), 1, bytearray(264), 8400), "E_NFC_LENGTH")
    await _refused(tag.read_type4(Type4Tag(_cc4(), nfile), 1, bytearray(264), 50), "E_NFC_LENGTH")
    await _refused(tag.read_type4(Type4Tag(_cc4(), b"\x00\x00" + msg), 1, bytearray(264), 8400), "E_NFC_LENGTH")
    # NLEN says more than the file holds: READ BINARY comes back empty there
    await _refused(tag.read_type4(Type4Tag(_cc4(), b"\x01\x00" + msg[:40]), 1, bytearray(264), 8400), "E_NDEF")
    await _refused(tag.read_type4(Type4Tag(_cc4(), nfile, short=1), 1, bytearray(264), 8400), "E_NDEF")


class _Lcg:
    """A fixed pseudo-random sequence (the same on CPython and MicroPython)."""

    def __init__(self, seed):
        self.x = seed

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def _fuzzed_area(rng, size):
    """A TLV area made of plausible TLVs with random lengths, then random bytes."""
    out = bytearray()
    while len(out) < size:
        k = rng.next(8)
        if k == 0:
            out += b"\x00"
        elif k == 1:
            out += b"\xfe"
        elif k in (2, 3):
            out += bytes((0x01 + rng.next(2), rng.next(256)))
        elif k == 4:
            out += bytes((0x03, 0xFF, rng.next(256), rng.next(256)))
        elif k == 5:
            out += bytes((0x03, rng.next(256)))
        else:
            out += bytes((rng.next(256),))
    return bytes(out[:size])


async def test_fuzz_type2_length_fields():
    for seed in range(1, 301):
        rng = _Lcg(seed)
        size_byte = rng.next(256)
        area = _fuzzed_area(rng, 2040)
        drv = Type2Tag(bytes((0xE1, 0x10, size_byte, 0x00)), area)
        try:
            got = await tag.read_type2(drv, 1, bytearray(64))
        except NfcError:
            pass
        else:
            assert 0 < size_byte <= 126 and len(got) <= size_byte * 8, (seed, size_byte)
        assert max(drv.pages) <= 255, seed


async def test_fuzz_type4_length_fields():
    msg = _cmd_ndef()
    for seed in range(1, 201):
        rng = _Lcg(seed)
        nlen = rng.next(0x10000) if rng.next(2) else rng.next(len(msg) + 8)
        fmax = rng.next(0x10000)
        mle = rng.next(0x10000)
        body = bytes(rng.next(256) for _ in range(rng.next(400)))
        short = rng.next(40) if rng.next(3) == 0 else None
        drv = Type4Tag(_cc4(mle=mle, fmax=fmax), bytes((nlen >> 8, nlen & 0xFF)) + body, short)
        try:
            got = await tag.read_type4(drv, 1, bytearray(264), 8400)
        except NfcError:
            pass
        else:
            assert len(got) == nlen and 0 < nlen <= 8400 and nlen + 2 <= fmax, seed


class _Intake:
    def __init__(self):
        self.accepted = []

    async def accept(self, env, via):
        self.accepted.append(env.id)

    def result(self, id):
        return None


class _TagReader:
    """The service's view of a PN532 with a Type 2 tag in the field."""

    def __init__(self, tag_memory):
        self.tag = tag_memory
        self.released = 0

    async def in_list_passive_target(self, timeout_ms=None):
        return Target(1, b"\x00\x44", 0x00, b"\x04\x11\x22\x33\x44\x55\x66", b"")

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        return await self.tag.in_data_exchange(tg, data, out)

    async def in_release(self, tg=0):
        self.released += 1


async def test_service_refuses_an_oversized_type2_tag_and_counts_it():
    intake = _Intake()
    drv = _TagReader(Type2Tag(b"\xe1\x10\xff\x00", bytes(2040)))
    svc = service.NfcService(drv, intake)
    o = await svc.poll_once()
    assert o["outcome"] == "rejected" and o["code"] == "E_NDEF", o
    assert svc.stats["rejected"] == 1 and svc.stats["last_code"] == "E_NDEF"
    assert drv.released == 1 and intake.accepted == []


class _DribblingType4Tag:
    """A Type 4 tag (or a phone emulating one) announcing NLEN `nlen` that answers each
    READ BINARY of the message with `per_read` bytes (None: all it is asked), on `clock`
    (each APDU takes `apdu_ms`). Counts the APDUs."""

    def __init__(self, nlen, per_read=None, mle=0xFA, clock=None, apdu_ms=0):
        self.nlen = nlen
        self.per_read = per_read
        self.cc = _cc4(mle=mle, fmax=0xFFFF)
        self.clock = clock
        self.apdu_ms = apdu_ms
        self.apdus = 0
        self.cur = None

    async def in_data_exchange(self, tg, data, out, timeout_ms=None):
        data = bytes(data)
        self.apdus += 1
        if self.clock is not None:
            self.clock[0] += self.apdu_ms
        if data[1] == 0xA4 and data[2] == 0x04:      # SELECT by name: the NDEF application only
            r = b"\x90\x00" if data[5:5 + data[4]] == tag.NDEF_AID else b"\x6a\x82"
        elif data[1] == 0xA4:
            self.cur = data[5:7]
            r = b"\x90\x00"
        elif data[1] == 0xB0 and self.cur == b"\xe1\x03":
            r = self.cc + b"\x90\x00"
        elif data[1] == 0xB0:
            off = (data[2] << 8) | data[3]
            want = data[4]
            if off == 0:
                r = bytes((self.nlen >> 8, self.nlen & 0xFF))[:want]
            else:
                r = bytes(want if self.per_read is None else min(want, self.per_read))
            r += b"\x90\x00"
        else:
            r = b"\x6d\x00"
        out[:len(r)] = r
        return len(r)


async def test_type4_short_read_binary_is_refused_at_once():
    # review r12-2: a tag announcing NLEN at the service's limit that answered each READ
    # BINARY with one byte was read to the end: 8,398 APDUs for one tap (each may take the
    # driver's 1 s response timeout: hours). A short answer before NLEN is refused now
    from ppmid.nfc import phone
    limit = phone.max_envelope(8192) + 64
    drv = _DribblingType4Tag(limit, per_read=1)
    said = await _refused(tag.read_type4(drv, 1, bytearray(264), limit), "E_NDEF")
    assert "returned 1 bytes, asked 250" in said, said
    # SELECT CC, READ CC, SELECT NDEF, READ NLEN, READ 250 (1 byte): refused there
    assert drv.apdus == 5, drv.apdus
    # the same tag answering in full is read to the end (the zeros are no NDEF message,
    # which is the caller's business)
    drv = _DribblingType4Tag(limit)
    got = await tag.read_type4(drv, 1, bytearray(264), limit)
    assert len(got) == limit and drv.apdus == 4 + (limit + 249) // 250


class _Clock:
    """Stands in for tag.ticks_ms: the tag advances it by its APDU time."""

    def __init__(self):
        self.now = [0]
        self.saved = tag.ticks_ms

    def __enter__(self):
        tag.ticks_ms = lambda: self.now[0]
        return self.now

    def __exit__(self, *a):
        tag.ticks_ms = self.saved


async def test_a_tag_read_has_a_deadline():
    # review r12-2: each APDU may take up to the driver's response timeout (the PN532 waits
    # through the tag's WTX requests), so full answers at the slowest pace (MLe 15: 560
    # READs at the default limit) still held the road for minutes. The whole read has a
    # deadline: past it the next READ is not sent
    with _Clock() as now:
        drv = _DribblingType4Tag(8000, mle=15, clock=now, apdu_ms=1000)
        said = await _refused(tag.read_type4(drv, 1, bytearray(264), 8400, 5000), "E_NDEF")
        assert "longer than 5 s" in said, said
        assert drv.apdus == 5 and now[0] == 5000, (drv.apdus, now[0])
        # Type 2: at most 63 READs by design, bounded by the same deadline
        t2 = Type2Tag(b"\xe1\x10\x7e\x00", bytes(1008))   # 1008 bytes, no terminator

        async def slow(tg, data, out, timeout_ms=None):
            now[0] += 1000
            return await Type2Tag.in_data_exchange(t2, tg, data, out)
        t2.in_data_exchange = slow
        said = await _refused(tag.read_type2(t2, 1, bytearray(64), 3000), "E_NDEF")
        assert "longer than 3 s" in said and len(t2.pages) == 3, (said, t2.pages)
        # a read that ends within its deadline is untouched: 4 + 2 READs of 15 bytes
        drv = _DribblingType4Tag(30, mle=15, clock=now, apdu_ms=1000)
        now[0] = 0
        assert len(await tag.read_type4(drv, 1, bytearray(264), 8400, 6001)) == 30
        assert drv.apdus == 6


async def test_service_bounds_a_tag_read_by_session_s():
    # the service passes nfc.session_s as the tag read's deadline
    with _Clock() as now:
        drv = _DribblingType4Tag(8000, mle=15, clock=now, apdu_ms=1000)
        reader = _TagReader(drv)

        async def iso_dep_target(timeout_ms=None):
            return Target(1, b"\x00\x04", 0x20, b"\x08\x11\x22\x33", b"")
        reader.in_list_passive_target = iso_dep_target
        intake = _Intake()
        svc = service.NfcService(reader, intake, session_s=6)
        o = await svc.poll_once()
        assert o["outcome"] == "rejected" and o["code"] == "E_NDEF", o
        # SELECT app (refused), SELECT NDEF app, then the read's own 4 APDUs and 2 READs
        # (1 s each): 6 s from the read's start, no further READ
        assert drv.apdus == 8 and svc.stats["rejected"] == 1 and intake.accepted == [], drv.apdus
        assert reader.released == 1
