# The PUBLISHes the MQTT client cannot hand to its handler: reading past one larger than its
# receive buffer (above max_packet, or one the buffer could not grow to hold), and answering
# a malformed one. Rare, so this code is loaded by the client's _read_packet or _incoming
# for it and dropped again, and not held by the running app (docs/memory.md). Stream
# reading and the PUBACK, no other I/O. (One module, not two: each file is a line of an
# update offer's manifest, which is at the client's packet cap: tests/test_update_sign.py.)
from micropython import const

from ppmid.mqtt.packets import puback

_HEAD = const(256)  # bytes kept of the message: its topic (the first 252 bytes) and packet id
_C_MALFORMED = const(10)  # client.stats' index of "malformed" (named in ppmid/mqtt/link_host.py)


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


# A malformed PUBLISH (a broker's bug: packet id 0, a topic that is not UTF-8 or runs past
# the packet, QoS 2 on our QoS 1 subscriptions). A persistent session redelivers such a
# message first at every connect until it is PUBACKed, so dropping the link over it made the
# link flap for ever and starved every command queued behind it (review r13-4), as an
# oversized one did before read_head.
async def answer(client, first, n, exc):
    """The PUBLISH of `first` whose `n`-byte body (in the client's receive buffer) the codec
    refused with `exc`: with a usable packet id (QoS 1, the id where it belongs, not 0) it is
    refused through the client's oversize hook (the intake answers `rejected`, "id": null,
    with exc's code and sentence, on rsp) and PUBACKed, so the broker lets it go. Without
    one no PUBACK can name it: exc is raised (the reader drops the link, as before) and the
    session is marked poisoned, so the reconnects back off instead of spinning; each repeat
    is counted and on the console (client.log)."""
    try:
        client.stats[_C_MALFORMED] += 1
        body = client._rxmv
        pid = 0
        if (first >> 1) & 3 == 1 and n >= 2:
            pos = 2 + ((body[0] << 8) | body[1])
            if pos + 2 <= n:
                pid = (body[pos] << 8) | body[pos + 1]
        body = None
        if not pid:
            client._poisoned = True
            raise exc
        if client.oversize is not None:
            try:
                await client.oversize(None, exc, 1, bool(first & 0x08))
            except Exception as e:  # noqa: BLE001 - it is refused either way
                client._note(e)
        await client._write(puback(pid))
    finally:
        from ppmid.modules import unload
        unload("ppmid.mqtt.oversize", "ppmid.modules")


# A retained message on a topic the gateway reads (a DCC User's PUBLISH on cmd or update/+
# with retain set): the broker hands it over again, RETAIN set, at every SUBSCRIBE, so at
# every connect, however old it is; the relay's id and counter checks stop a second relay,
# but each connect answered it again (`rejected` E_REPLAY after its `response`: review r13-3)
E_RETAINED = "E_RETAINED"


async def retained(client, topic, qos, dup):
    """Refuse a retained PUBLISH through the client's oversize hook (the intake answers
    `rejected`, "id": null, E_RETAINED, on rsp, or on the update topic for the update
    family); the client PUBACKs it after. Each connect refuses it again, until the retained
    message is cleared (an empty retained PUBLISH on its topic)."""
    try:
        if client.oversize is not None:
            from ppmid.errors import PpmidError
            err = PpmidError(E_RETAINED, "messages for the gateway must not be published retained: "
                                         "clear the retained message on %s" % topic)
            try:
                await client.oversize(topic, err, qos, dup)
            except Exception as e:  # noqa: BLE001 - it is refused either way
                client._note(e)
    finally:
        from ppmid.modules import unload
        unload("ppmid.mqtt.oversize", "ppmid.modules")
