# mp-heapsize: 1M  (the test keeps every message, ack and reply it fed and saw, and the interleaving cuts a 512K heap up: 336 KB free once held no 2 KB run for a list to grow into; the app's own figures are the heap32 bench rows)
# ZigbeeHan's one receive event (_queued) and its four takers running together: the
# relay's receive() (complete messages), _reply_loop (the tunnel's own replies),
# _ack_loop (APS acknowledgements of incoming fragments) and _resend_loop (the CH's
# refusals of what we sent). The producer is the real
# synchronous receive callback (_incoming) fed frames in bursts; a fake EZSP takes the
# replies and acks with a random latency (seeded). Every message, reply and ack must be
# taken, and a full ack ring must be counted, not dropped silently (review 76, F6).
# A taker that clears the shared event without first looking at its own queue, or that
# awaits between that look and its wait, loses a wake-up: these tests then end with
# something untaken. CPython and MicroPython; a few seconds each.
import asyncio
import random
from ppmid.clock import sleep_ms
from ppmid.zigbee import han as H
from ppmid.zigbee import ezsp as E
from ppmid.zigbee import tunnel as T
from ppmid.zigbee import tunnel_host as TH   # the CH's frames
from ppmid.zigbee.tunnel_control import transfer_data_error
from ppmid.zigbee.han_counters import han_named

CH = 0x0000
APS_ENCRYPTED = 0x0020  # the NCP received the frame APS-encrypted (the CH's link key)
ACK_SLOTS = 4           # han.py's _ACK_SLOTS (a private const cannot be imported)


class FakeEzsp:
    """The NCP's side of sendUnicast (the tunnel's replies) and sendReply (fragment acks):
    each takes 0-7 ms, then confirms; what was sent is recorded."""
    version = 13

    def __init__(self, han):
        self.han = han
        self.unicasts = []
        self.acks = []

    async def send_unicast(self, dest, aps, tag, message):
        await sleep_ms(random.getrandbits(3))
        self.unicasts.append((dest, bytes(message)))
        w = self.han._sent[tag]   # the module's messageSent for this tag: delivered
        w.status = 0
        w.set()
        return 0, len(self.unicasts) & 0xFF

    async def send_reply(self, buf):
        await sleep_ms(random.getrandbits(3))
        self.acks.append(bytes(buf))
        return 0


def _han():
    han = H.ZigbeeHan(None, None, {"rx_queue": 1000})
    replies, _ = han.tunnel.handle(CH, TH.request_tunnel(1))
    assert han.tunnel.tunnel_id is not None and len(replies) == 1
    han.tunnel.events = []
    han.status = "running"
    han._max_payload = 80
    han._ezsp = FakeEzsp(han)
    return han


def _aps(options=APS_ENCRYPTED, group=0, sequence=1):
    return {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "src_ep": 1, "dst_ep": 1,
            "options": options, "group": group, "sequence": sequence}


def _frame(han, zcl, aps):
    han._incoming({"sender": CH, "message": zcl, "aps": aps})


def _ack_of(aps):
    buf = bytearray(E.SEND_REPLY_ACK_LEN)
    E.fragment_ack_into(buf, CH, aps)
    return bytes(buf)


async def _wait_until(done, ms=3000):
    for _ in range(ms // 5):
        if done():
            return True
        await sleep_ms(5)
    return done()


async def _cancel(tasks):
    for t in tasks:
        t.cancel()
    await sleep_ms(10)   # each cancel lands (not awaited: a bug that swallowed one would hang here)


async def _run(seed, rounds):
    """rounds of random frames, interleaved: a whole message, a TransferData on an unknown
    tunnel (the tunnel answers it: a reply), the CH's refusal of a TransferData of ours
    (for the resend loop: nothing is held, so nothing goes again), a message in two APS
    fragments (two acks, one message). Returns what was wanted and what was taken."""
    random.seed(seed)
    han = _han()
    ez = han._ezsp
    got = []

    async def relay():   # the relay's reader: sometimes slow to come back
        while True:
            got.append(await han.receive())
            if random.getrandbits(2) == 0:
                await sleep_ms(random.getrandbits(3))

    tasks = [asyncio.create_task(han._reply_loop()), asyncio.create_task(han._ack_loop()),
             asyncio.create_task(han._resend_loop()), asyncio.create_task(relay())]
    try:
        tid = han.tunnel.tunnel_id
        want_msgs, want_replies, want_acks = [], [], []
        refusals = 0
        aps_seq = 0
        for i in range(rounds):
            kind = random.getrandbits(3)
            if kind < 2:
                body = b"\xdd\x00m%d" % i
                _frame(han, TH.transfer_data(i & 0xFF, tid, body, False), _aps())
                want_msgs.append(body)
            elif kind == 2:
                other = tid ^ 0x55
                _frame(han, TH.transfer_data(i & 0xFF, other, b"x", False), _aps())
                want_replies.append(other)
            elif kind == 3:
                _frame(han, transfer_data_error(i & 0xFF, tid, T.WRONG_DEVICE, False), _aps())
                refusals += 1
            else:
                aps_seq = (aps_seq + 1) & 0xFF
                body = b"\xdd\x00f%d" % i + bytes(30)
                f = TH.transfer_data(i & 0xFF, tid, body, False)
                half = len(f) // 2
                for k, piece in enumerate((f[:half], f[half:])):
                    aps = _aps(0x8000 | APS_ENCRYPTED, 0x0200 | k, aps_seq)
                    _frame(han, piece, aps)
                    want_acks.append(_ack_of(aps))
                want_msgs.append(body)
            pause = random.getrandbits(2)   # a burst (no yield), one yield, or a few ms
            if pause == 1:
                await sleep_ms(0)
            elif pause == 2:
                await sleep_ms(random.getrandbits(3))
            # room in the 4-slot ack ring for the next pair: a full ring drops an ack by
            # design (test below); here nothing may be lost
            room = await _wait_until(lambda: han._ack_count <= ACK_SLOTS - 2, 1000)
            assert room, "seed %d, round %d: the ack taker left %d acks in the ring" % (seed, i, han._ack_count)
        await _wait_until(lambda: (len(got) == len(want_msgs) and len(ez.unicasts) == len(want_replies)
                                   and len(ez.acks) == len(want_acks) and not han._rejected))
    finally:
        await _cancel(tasks)
    assert refusals and han_named(han)["rejected_by_ch"] == refusals and han._rejected == {}, (
        "seed %d: %d refusals, counted %d, left %r" % (seed, refusals, han_named(han)["rejected_by_ch"], han._rejected))
    return han, want_msgs, want_replies, want_acks, got


async def test_four_takers_take_every_message_reply_ack_and_refusal():
    for seed in range(3):
        han, want_msgs, want_replies, want_acks, got = await _run(seed, 150)
        ez = han._ezsp
        assert want_msgs and want_replies and want_acks   # every kind was in the mix
        assert [bytes(m) for m in got] == want_msgs, "seed %d: %d of %d messages" % (seed, len(got), len(want_msgs))
        assert ez.acks == want_acks, "seed %d: %d of %d acks, ring %d, counted sent %d failed %d" % (
            seed, len(ez.acks), len(want_acks), han._ack_count, han_named(han)["rx_fragment_acks"],
            han_named(han)["rx_fragment_ack_failed"])
        assert len(ez.unicasts) == len(want_replies), "seed %d: %d of %d replies" % (
            seed, len(ez.unicasts), len(want_replies))
        for (dest, zcl), other in zip(ez.unicasts, want_replies):
            # the tunnel's TransferDataError: that tunnel id, no such tunnel
            assert dest == CH and zcl[-3:] == bytes((other & 0xFF, other >> 8, T.NO_SUCH_TUNNEL))
        c = han_named(han)
        assert (c["rx_fragment_acks"], c["rx_fragment_ack_failed"]) == (len(want_acks), 0)
        assert c["rx_fragments_dropped"] == 0 and han._rxq == [] and han._replies == []
        han = got = want_msgs = want_acks = ez = None   # not held through the next seed


async def test_an_overfull_ack_ring_is_counted_and_the_rest_still_taken():
    # three fragmented messages in one burst: six acks for a 4-slot ring before the ack
    # taker runs; the two that do not fit are counted (the CH repeats those fragments),
    # the four that do are sent, and the three messages all reach the relay
    random.seed(7)
    han = _han()
    ez = han._ezsp
    tasks = [asyncio.create_task(han._reply_loop()), asyncio.create_task(han._ack_loop())]
    try:
        await sleep_ms(0)   # the takers are waiting
        tid = han.tunnel.tunnel_id
        acks, bodies = [], []
        for i in range(3):
            body = b"\xdd\x00f%d" % i + bytes(30)
            f = TH.transfer_data(i, tid, body, False)
            half = len(f) // 2
            for k, piece in enumerate((f[:half], f[half:])):
                aps = _aps(0x8000 | APS_ENCRYPTED, 0x0200 | k, 10 + i)
                _frame(han, piece, aps)
                acks.append(_ack_of(aps))
            bodies.append(body)
        assert han_named(han)["rx_fragment_ack_failed"] == 2
        got = []
        for _ in bodies:
            got.append(bytes(await asyncio.wait_for(han.receive(), 2)))
        assert got == bodies
        assert await _wait_until(lambda: len(ez.acks) == ACK_SLOTS)
        await sleep_ms(20)   # nothing more comes: the dropped two are not sent late
    finally:
        await _cancel(tasks)
    assert ez.acks == acks[:ACK_SLOTS]
    c = han_named(han)
    assert (c["rx_fragment_acks"], c["rx_fragment_ack_failed"]) == (ACK_SLOTS, 2)
