# Build GBCS messages from fields: for tests, the emulated meters' responses and host tools.
# Signatures and MACs are opaque bytes here: the gateway never signs, MACs or decrypts.
from ppmid.gbcs.message import (decode, GbcsError, E_LENGTH, E_VALUE, TAG_GENERAL_CIPHERING, TAG_GENERAL_SIGNING,
                                MAC_LEN)
from ppmid.gbcs.message_fields import FORM_MAC_SIGNED, FORM_GBT
# the length form lives with the GBT split, the gateway's only use of it (so it does not load
# these builders): build.encode_length stays a valid name here
from ppmid.gbcs.gbt import (encode_length, _block_into,  # noqa: F401
                            _split, blocks_for_transfer, DEFAULT_TRANSFER_SIZE, GbtError, E_GBT_NOT_BLOCK)


def _u64(v):
    if v < 0 or v >= 1 << 64:
        raise GbcsError(E_VALUE, "counter %d is not an unsigned 64-bit number" % v)
    out = bytearray(8)
    for i in range(8):
        out[7 - i] = (v >> (8 * i)) & 0xFF
    return bytes(out)


def _eui(v, what):
    v = bytes(v)
    if len(v) != 8:
        raise GbcsError(E_LENGTH, "%s must be 8 bytes, not %d" % (what, len(v)))
    return v


def transaction_header(cra, counter, originator, recipient, date_time=None):
    """09 CRA counter(8) 08 originator 08 recipient, then the date-time element."""
    if cra not in (1, 2, 3):
        raise GbcsError(E_VALUE, "CRA flag must be 1, 2 or 3, not %r" % (cra,))
    parts = [b"\x09", bytes((cra,)), _u64(counter), b"\x08", _eui(originator, "originator"),
             b"\x08", _eui(recipient, "recipient")]
    if date_time is None:
        parts.append(b"\x00")
    else:
        date_time = bytes(date_time)
        if len(date_time) != 12:
            raise GbcsError(E_LENGTH, "date-time must be 12 bytes, not %d" % len(date_time))
        parts.append(b"\x0c" + date_time)
    return b"".join(parts)


def _block_prefix(cra, counter, originator, recipient, message_code):
    # a block's routing header from fields: DD, transaction-id, titles, empty date-time,
    # other-information (message code), empty key-info (gbt._prefix copies a message's)
    return (bytes((TAG_GENERAL_CIPHERING,)) + transaction_header(cra, counter, originator, recipient)
            + bytes((2, (message_code >> 8) & 0xFF, message_code & 0xFF, 0)))


def build_signed(cra, counter, originator, recipient, message_code, content, date_time=None,
                 signature=b"", other_info=b""):
    """A General-Signing (DF) message. signature=None omits the field (a pre-command);
    b"" gives an empty signature (00). other_info: the optional bytes after the message code
    (supplementary remote party id, counters, certificate)."""
    content = bytes(content)
    if not content:
        raise GbcsError(E_LENGTH, "content is empty")
    oi = bytes(((message_code >> 8) & 0xFF, message_code & 0xFF)) + bytes(other_info)
    parts = [bytes((TAG_GENERAL_SIGNING,)), transaction_header(cra, counter, originator, recipient, date_time),
             encode_length(len(oi)), oi, encode_length(len(content)), content]
    if signature is not None:
        signature = bytes(signature)
        if len(signature) not in (0, 64):
            raise GbcsError(E_LENGTH, "signature must be 0 or 64 bytes, not %d" % len(signature))
        parts.append(bytes((len(signature),)) + signature)
    return b"".join(parts)


def build_mac(signed, mac=None, security_control=0x11, invocation_counter=0):
    """Wrap a General-Signing message in the MAC header (DD 00 ...) with a 12-byte MAC
    (opaque bytes: zeros unless given)."""
    signed = bytes(signed)
    mac = bytes(MAC_LEN) if mac is None else bytes(mac)
    if len(mac) != MAC_LEN:
        raise GbcsError(E_LENGTH, "MAC must be 12 bytes, not %d" % len(mac))
    body = bytes((security_control,)) + _u64(invocation_counter)[4:] + signed + mac
    return bytes((TAG_GENERAL_CIPHERING, 0, 0, 0, 0, 0, 0)) + encode_length(len(body)) + body


def build_command(counter, originator, recipient, message_code, content, mac=None, signature=b"",
                  other_info=b"", date_time=None):
    """A command in the MAC-header form, as the DCC sends them."""
    return build_mac(build_signed(1, counter, originator, recipient, message_code, content,
                                  date_time, signature, other_info), mac)


def make_response(command_buf, content=b"\x00", signature=b"", mac=None, date_time=None, cra=2):
    """The response to a command: same counter and message code, originator and recipient
    swapped, in the command's form (MAC header if the command had one)."""
    cmd = decode(command_buf)
    signed = build_signed(cra, cmd.counter, cmd.recipient, cmd.originator, cmd.message_code,
                          content, date_time, signature)
    if cmd.form == FORM_MAC_SIGNED:
        return build_mac(signed, mac)
    return signed


# ---- GBT blocks as bytes (the gateway builds them into its send buffer: gbcs/gbt.py) ----
def _block(prefix, block_number, data, last, block_ack, window, streaming, security_control):
    n = len(data)
    dlen = len(encode_length(n))
    out = bytearray(len(prefix) + len(encode_length(11 + dlen + n)) + 11 + dlen + n)
    _block_into(out, 0, prefix, block_number, data, last, block_ack, window, streaming, security_control)
    return bytes(out)


def build_block(cra, counter, originator, recipient, message_code, block_number, data,
                last=False, block_ack=0, window=1, streaming=False, security_control=0):
    """One GBT block (bytes). An empty `data` makes an acknowledgement block."""
    return _block(_block_prefix(cra, counter, originator, recipient, message_code), block_number, data,
                  last, block_ack, window, streaming, security_control)


def split(message, block_data_size, window=1, security_control=0):
    """Split a DD00/DF message into GBT blocks of at most block_data_size data bytes each.
    Returns an iterator of bytes (one block at a time, so only one block is built at once);
    the routing header copies the message's own header. Checks happen before the first block."""
    return _split(message, block_data_size, window, security_control)[1]


def blocks(prefix, buf, size, count, window, security_control):
    # gbt._split's pieces as bytes, one block at a time
    for i in range(count):
        yield _block(prefix, i + 1, buf[i * size:(i + 1) * size], i == count - 1, 0, window, False,
                     security_control)


def split_for_transfer(message, transfer_size=DEFAULT_TRANSFER_SIZE):
    """[message] if it fits the tunnel's transfer size, else GBT blocks (an iterator) that each
    fit it."""
    if len(message) <= transfer_size:
        return [bytes(message)]
    return blocks_for_transfer(message, transfer_size)[1]


def build_ack(block, block_number=1, window=1):
    """Acknowledgement of a received block: no data, block_ack = that block's number, routing
    header with originator and recipient swapped (it travels back to the sender)."""
    m = block if hasattr(block, "block_ack") else decode(block)
    if m.form != FORM_GBT:
        raise GbtError(E_GBT_NOT_BLOCK, "only a GBT block can be acknowledged")
    return build_block(m.cra, m.counter, m.recipient, m.originator, m.message_code, block_number, b"",
                       block_ack=m.block_number, window=window)
