# Tag sessions (one way): read the NDEF message of an NTAG21x (Type 2) or a Type 4 tag,
# take the binary command envelope from its application/vnd.ppmid.cmd record and hand it
# to the relay. Nothing is written back to the tag.
#
# A tag (or a phone emulating one) chooses how fast it answers, and each APDU may take up
# to the driver's response timeout (the PN532 waits through the target's WTX requests), so
# a read is bounded twice (review r12-2): a READ BINARY must bring every byte it asks for,
# which bounds the APDUs at ceil(NLEN / step), and the whole read has a deadline
# (nfc.session_s, passed by the service), checked before each READ.
from ppmid import envelope
from ppmid.clock import ticks_ms, ticks_diff
from ppmid.nfc import ndef
from ppmid.nfc.apdu import transceive, SW_OK
from ppmid.nfc.errors import NfcError, E_NDEF, E_NFC_LENGTH

NDEF_AID = b"\xd2\x76\x00\x00\x85\x01\x01"
TYPE2_READ = 0x30
# READ takes a one-byte page address and the data area starts at page 4, so 4-page steps
# reach at most pages 4..255: 1008 bytes (NTAG216 has 872). A larger area (NTAG I2C plus
# 2k announces 1904 bytes) needs SECTOR_SELECT, which we do not send: such a tag is refused.
_T2_MAX = 1008


def _in_time(start, time_ms):
    if time_ms is not None and ticks_diff(ticks_ms(), start) >= time_ms:
        raise NfcError(E_NDEF, "tag read took longer than %d s: refused (take the tag away and tap again)"
                       % ((time_ms + 999) // 1000))


async def read_type2(drv, tg, scratch, time_ms=None):
    """NDEF message bytes of a Type 2 tag. `scratch`: a bytearray of >= 64 bytes.
    `time_ms`: how long the whole read may take (None: no bound)."""
    start = ticks_ms()
    n = await drv.in_data_exchange(tg, bytes((TYPE2_READ, 3)), scratch)
    if n != 16:
        raise NfcError(E_NDEF, "Type 2 READ returned %d bytes, not 16" % n)
    if scratch[0] != 0xE1 or scratch[1] >> 4 != 1:
        raise NfcError(E_NDEF, "no NDEF capability container on the tag (CC %02X %02X)" % (scratch[0], scratch[1]))
    size = scratch[2] * 8
    if size == 0 or size > _T2_MAX:
        raise NfcError(E_NDEF, "tag data area of %d bytes is not supported (this reader reads 1..%d bytes, pages 4 to 255)" % (size, _T2_MAX))
    area = bytearray(size)
    got = 0
    page = 4
    loc = None
    while got < size:
        _in_time(start, time_ms)
        n = await drv.in_data_exchange(tg, bytes((TYPE2_READ, page)), scratch)
        if n != 16:
            raise NfcError(E_NDEF, "Type 2 READ of page %d returned %d bytes" % (page, n))
        take = min(16, size - got)
        area[got:got + take] = scratch[:take]
        got += take
        page += 4
        loc = ndef.type2_ndef_tlv(memoryview(area)[:got])
        if loc is not None and loc[0] + loc[1] <= got:
            break
    if loc is None:
        raise NfcError(E_NDEF, "the tag's TLV area has no terminator")
    off, ln = loc
    if off + ln > size:
        raise NfcError(E_NDEF, "NDEF TLV length %d runs past the tag's %d-byte area" % (ln, size))
    return memoryview(area)[off:off + ln]


async def read_type4(drv, tg, scratch, limit, time_ms=None):
    """NDEF message bytes of a Type 4 tag whose NDEF application is already selected.
    `time_ms`: how long the whole read may take (None: no bound)."""
    start = ticks_ms()
    sw, n = await _apdu(drv, tg, b"\x00\xa4\x00\x0c\x02\xe1\x03", scratch)
    if sw != SW_OK:
        raise NfcError(E_NDEF, "Type 4 tag has no CC file (SW %04X)" % sw)
    sw, n = await _apdu(drv, tg, b"\x00\xb0\x00\x00\x0f", scratch)
    if sw != SW_OK or n < 15:
        raise NfcError(E_NDEF, "Type 4 CC file unreadable (SW %04X, %d bytes)" % (sw, n))
    mle = (scratch[3] << 8) | scratch[4]
    if scratch[7] != 0x04 or scratch[8] < 6:
        raise NfcError(E_NDEF, "Type 4 CC file has no NDEF file control TLV")
    fid = bytes(scratch[9:11])
    fmax = (scratch[11] << 8) | scratch[12]
    if scratch[13] != 0x00:
        raise NfcError(E_NDEF, "Type 4 NDEF file is not readable (access 0x%02X)" % scratch[13])
    step = min(max(mle, 15), 250)
    sw, n = await _apdu(drv, tg, b"\x00\xa4\x00\x0c\x02" + fid, scratch)
    if sw != SW_OK:
        raise NfcError(E_NDEF, "Type 4 NDEF file %s not found (SW %04X)" % (fid, sw))
    sw, n = await _apdu(drv, tg, b"\x00\xb0\x00\x00\x02", scratch)
    if sw != SW_OK or n != 2:
        raise NfcError(E_NDEF, "Type 4 NLEN unreadable (SW %04X)" % sw)
    nlen = (scratch[0] << 8) | scratch[1]
    if nlen == 0 or nlen + 2 > fmax or nlen > limit:
        raise NfcError(E_NFC_LENGTH, "Type 4 NDEF length %d not acceptable (file %d, limit %d)" % (nlen, fmax, limit))
    msg = bytearray(nlen)
    got = 0
    while got < nlen:
        _in_time(start, time_ms)
        want = min(step, nlen - got)
        off = 2 + got
        sw, n = await _apdu(drv, tg, bytes((0x00, 0xB0, off >> 8, off & 0xFF, want)), scratch)
        if sw != SW_OK:
            raise NfcError(E_NDEF, "Type 4 READ BINARY at %d failed (SW %04X)" % (off, sw))
        # ISO 7816 allows a short answer only at the end of the file, and no READ asks past
        # NLEN (whose end is within the file's announced size): a short answer is refused
        if n != want:
            raise NfcError(E_NDEF, "Type 4 READ BINARY at %d returned %d bytes, asked %d" % (off, n, want))
        msg[got:got + n] = scratch[:n]
        got += n
    return msg


async def _apdu(drv, tg, apdu, scratch):
    return await transceive(drv, tg, apdu, scratch)


def envelope_from_ndef(msg, max_gbcs):
    """The envelope (command or top-up) carried by the message's application/vnd.ppmid.cmd
    record."""
    payload = ndef.find_mime(msg)
    return envelope.from_binary_any(payload, max_gbcs)
