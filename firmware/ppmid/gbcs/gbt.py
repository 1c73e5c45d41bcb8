# General Block Transfer (GBT) for GBCS messages larger than the tunnel's transfer size.
# A GBT block is the `DD 09` form: a routing header (CRA, counter, originator, recipient,
# message code copied from the message's own header) and a GBT header (E0, block control,
# block number from 1, block number ack, block data). Concatenating the block data in block
# number order gives back the original message. Nothing is decrypted or re-signed.
from micropython import const

from ppmid.gbcs.message import decode, GbcsError, TAG_GENERAL_CIPHERING, TAG_GBT, E_LENGTH

DEFAULT_TRANSFER_SIZE = 1500   # GBCS tunnel: maximum incoming transfer size
LAST_BLOCK = 0x80
STREAMING = 0x40
BLOCK_OVERHEAD = 32            # bytes charged per held block on top of its data (memory bound)

E_GBT_NOT_BLOCK = "E_GBT_NOT_BLOCK"          # fed something that is not a DD 09 block
E_GBT_BLOCK_SIZE = "E_GBT_BLOCK_SIZE"        # split: block size too small / too many blocks
E_GBT_MEMORY = "E_GBT_MEMORY"                # reassembly would exceed the memory bound
E_GBT_TIMEOUT = "E_GBT_TIMEOUT"              # a message's blocks stopped arriving
E_GBT_INCONSISTENT = "E_GBT_INCONSISTENT"    # blocks of one message disagree


class GbtError(GbcsError):
    pass


# The errors' sentences, by their index in ppmid.gbcs.gbt_errors.SENTENCES (the text)
_S_NEGATIVE_LENGTH = const(0)
_S_LENGTH_TOO_BIG = const(1)
_S_BLOCK_NUMBERS = const(2)
_S_SPLIT_A_BLOCK = const(3)
_S_BLOCK_DATA_SIZE = const(4)
_S_TOO_MANY_BLOCKS = const(5)
_S_NO_ROOM = const(6)
_S_BUFFER_TOO_SMALL = const(7)


def _error(cls, code, key, arg):
    # cls(code, sentence): key is the sentence's _S_... name; its text is
    # ppmid.gbcs.gbt_errors', loaded for the error and dropped again (as str constants here
    # the sentences were held with gbt.py, which the gateway keeps after its first large command)
    from ppmid.modules import sentence
    return cls(code, sentence("ppmid.gbcs.gbt_errors", key, arg))


# ---- the length form: the only encoding the gateway does (a block's routing header copies
# its message's); gbcs/build.py builds whole messages with it, and single blocks, splits
# into bytes and acknowledgements (host tools and tests)
def encode_length(n):
    """GBCS length: one byte below 0x80, else 81 nn or 82 nnnn."""
    if n < 0:
        raise _error(GbcsError, E_LENGTH, _S_NEGATIVE_LENGTH, n)
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return bytes((0x82, n >> 8, n & 0xFF))
    raise _error(GbcsError, E_LENGTH, _S_LENGTH_TOO_BIG, n)


def _prefix(msg):
    # a block's routing header, from its message's: DD, the transaction-id (09 CRA counter)
    # and titles (08 originator 08 recipient) as they are, an empty date-time, the
    # other-information (02 and the message code), an empty key-info
    code = msg.message_code
    out = bytearray(34)
    out[0] = TAG_GENERAL_CIPHERING
    out[1] = 9
    out[2] = msg.cra
    out[3:11] = msg.counter_bytes
    out[11] = 8
    out[12:20] = msg.originator
    out[20] = 8
    out[21:29] = msg.recipient
    out[30] = 2
    out[31] = code >> 8
    out[32] = code & 0xFF
    return out


def _block_into(out, at, prefix, block_number, data, last, block_ack, window, streaming, security_control):
    # writes the block into out from index at; returns the index after it
    if not 0 <= block_number <= 0xFFFF or not 0 <= block_ack <= 0xFFFF:
        raise _error(GbtError, E_GBT_BLOCK_SIZE, _S_BLOCK_NUMBERS, (block_number, block_ack))
    control = (LAST_BLOCK if last else 0) | (STREAMING if streaming else 0) | (window & 0x3F)
    dlen = encode_length(len(data))
    length = encode_length(5 + 6 + len(dlen) + len(data))
    p = at + len(prefix)
    out[at:p] = prefix
    out[p:p + len(length)] = length
    p += len(length)
    out[p] = security_control          # security control, then a zero invocation counter
    out[p + 1:p + 5] = b"\0\0\0\0"
    out[p + 5] = TAG_GBT
    out[p + 6] = control
    out[p + 7] = block_number >> 8
    out[p + 8] = block_number & 0xFF
    out[p + 9] = block_ack >> 8
    out[p + 10] = block_ack & 0xFF
    p += 11
    out[p:p + len(dlen)] = dlen
    p += len(dlen)
    out[p:p + len(data)] = data
    return p + len(data)


def block_overhead(data_len):
    """Bytes a GBT block adds around `data_len` bytes of data."""
    return 34 + 11 + len(encode_length(data_len)) + len(encode_length(data_len + 11 + 3))


def _split(message, block_data_size, window=1, security_control=0, into=None, at=0):
    # (number of blocks, iterator of them)
    msg = decode(message)
    if msg.is_gbt:
        raise _error(GbtError, E_GBT_NOT_BLOCK, _S_SPLIT_A_BLOCK, None)
    if block_data_size < 1:
        raise _error(GbtError, E_GBT_BLOCK_SIZE, _S_BLOCK_DATA_SIZE, block_data_size)
    n = len(msg.buf)
    count = (n + block_data_size - 1) // block_data_size
    if count > 0xFFFF:
        raise _error(GbtError, E_GBT_BLOCK_SIZE, _S_TOO_MANY_BLOCKS, count)
    prefix = _prefix(msg)
    if into is not None:
        return count, _blocks_into(into, at, prefix, msg.buf, block_data_size, count, window, security_control)
    # a block per piece, as bytes: for host tools and tests (the gateway builds into its buffer)
    from ppmid.gbcs.build import blocks
    return count, blocks(prefix, msg.buf, block_data_size, count, window, security_control)


def _blocks_into(out, at, prefix, buf, size, count, window, security_control):
    mv = memoryview(out)
    for i in range(count):
        end = _block_into(out, at, prefix, i + 1, buf[i * size:(i + 1) * size], i == count - 1, 0, window,
                          False, security_control)
        yield mv[at:end]


def blocks_for_transfer(message, transfer_size=DEFAULT_TRANSFER_SIZE, into=None, at=0):
    """build.split_for_transfer for a sender that must know how many pieces there are before the
    first goes out, but should hold only one at a time: (count, iterator).
    into: a bytearray of at least at + transfer_size bytes that every block is built in, from
    index at (room for the sender's own header before it), one after the other: the
    iterator then gives a memoryview of that block in into, valid until the next is taken,
    and the send allocates no block."""
    if len(message) <= transfer_size:
        return 1, iter((bytes(message),))
    size = transfer_size - block_overhead(transfer_size)
    if size < 1:
        raise _error(GbtError, E_GBT_BLOCK_SIZE, _S_NO_ROOM, transfer_size)
    while size + 1 + block_overhead(size + 1) <= transfer_size:
        size += 1  # a smaller block may use a shorter length form
    if into is not None and len(into) < at + transfer_size:
        raise _error(GbtError, E_GBT_BLOCK_SIZE, _S_BUFFER_TOO_SMALL, (len(into), transfer_size, at))
    return _split(message, size, into=into, at=at)
