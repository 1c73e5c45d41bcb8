# ISO 7816-4 APDUs over InDataExchange: the answer's last two bytes are the status word.
from micropython import const

from ppmid.nfc.errors import NfcError, E_NFC_PROTO

SW_OK = const(0x9000)
_SW_NOT_FOUND = const(0x6A82)   # SELECT: no such application / file


async def transceive(drv, tg, apdu, out):
    """Send `apdu`; the answer's data goes to out[:n]. Returns (sw, n)."""
    got = await drv.in_data_exchange(tg, apdu, out)
    if got < 2:
        raise NfcError(E_NFC_PROTO, "APDU answer of %d bytes has no status word" % got)
    return (out[got - 2] << 8) | out[got - 1], got - 2


def select_aid(aid):
    return bytes((0x00, 0xA4, 0x04, 0x00, len(aid))) + aid + b"\x00"
