# A malformed PUBLISH from the broker (a broker's bug: packet id 0, a topic that is not UTF-8
# or runs past the packet, QoS 2 on our QoS 1 subscriptions). A persistent session redelivers
# such a message first at every connect until it is PUBACKed, so dropping the link over it
# made the link flap for ever and starved every command queued behind it (review r13-4), as
# an oversized one did before ppmid.mqtt.oversize. Rare: the client's _incoming loads this
# for it and it drops itself again (the running app does not hold this code).
from micropython import const

from ppmid.mqtt.packets import puback

_C_MALFORMED = const(10)  # client.stats' index of "malformed" (named in ppmid/mqtt/link_host.py)


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
        unload("ppmid.mqtt.malformed", "ppmid.modules")
