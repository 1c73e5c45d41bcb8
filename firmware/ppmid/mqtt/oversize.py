# Reading past a PUBLISH larger than the MQTT client's receive buffer (above max_packet, or
# one the buffer could not grow to hold): rare, so this code is loaded by the client's
# _read_packet for it and dropped again, and not held by the running app (docs/memory.md).
# Pure stream reading, no other I/O.
from micropython import const

_HEAD = const(256)  # bytes kept of the message: its topic (the first 252 bytes) and packet id


async def read_head(client, r, first, n):
    """Read the `n` bytes of a PUBLISH body from `r` into the client's receive buffer,
    keeping only a PUBLISH body of its own at the buffer's start: the topic and the packet
    id, and no payload. Returns a view of it (ppmid.mqtt.packets.parse_publish reads it).
    A topic longer than 252 bytes (update/+ matches a level of any length) is cut at a
    character's start and the packet id read from past it: it used to be read as the first
    256 bytes whole, and such a topic "ran past the packet": the link dropped at every
    redelivery (review 94 F3). A topic length beyond the packet is taken as junk and read
    past the same way, within n."""
    head = client._rxmv
    await client._fill(r, head[:2])
    pid = 2 if first & 6 else 0
    tlen = min((head[0] << 8) | head[1], n - 2 - pid)
    keep = got = min(tlen, _HEAD - 4)
    await client._fill(r, head[2:2 + got])
    if keep < tlen:
        while keep and head[1 + keep] & 0xC0 == 0x80:  # a character's continuation byte
            keep -= 1
        if keep and head[1 + keep] >= 0xC0:  # ... and the start of that cut-short character
            keep -= 1
    await _skip(client, r, tlen - got)
    await client._fill(r, head[2 + keep:2 + keep + pid])
    head[0] = keep >> 8
    head[1] = keep & 0xFF
    await _skip(client, r, n - 2 - tlen - pid)
    return head[:2 + keep + pid]


async def _skip(client, r, left):
    # read and throw away `left` bytes, through the buffer's part past the head (the
    # buffer is 512 bytes at least: ppmid.mqtt.handshake.set_up)
    scratch = client._rxmv[_HEAD:]
    while left > 0:
        k = min(left, len(scratch))
        await client._fill(r, scratch[:k])
        left -= k
