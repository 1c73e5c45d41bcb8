# ZigbeeHan's held messages (_recent): a confirmed message is kept only for the window in
# which the CH may refuse it (TransferDataError) and it is sent again; after that window its
# body is let go even when nothing else is sent. The NCP below the HAN is not involved:
# _send_message (tested end to end in tests/test_zigbee_e2e.py) is replaced by a recorder.
# CPython and MicroPython.
import asyncio
from ppmid.clock import sleep_ms
from ppmid.zigbee import han as H
from ppmid.zigbee import tunnel as T
from ppmid.zigbee import tunnel_host as TH   # the CH's frames
from ppmid.zigbee.tunnel_control import transfer_data_error
from ppmid.zigbee.han_counters import named, han_named, TUNNEL
from han_rig import sending_han

CH = 0x0000
WINDOW_S = 0.3


def _han(window_s=WINDOW_S):
    return sending_han(CH, window_s)


APS_ENCRYPTED = 0x0020  # the NCP received the frame APS-encrypted (the CH's link key)


def _refusal(han, status=T.WRONG_DEVICE):
    # the CH's TransferDataError for our newest TransferData, as the NCP delivers it
    frame = T.zcl_header(7, 0x03, False) + bytes((han.tunnel.tunnel_id & 0xFF, han.tunnel.tunnel_id >> 8, status))
    han._incoming({"sender": CH, "message": frame,
                   "aps": {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "options": APS_ENCRYPTED,
                           "group": 0}})


async def _with_resend_loop(han, body):
    task = asyncio.create_task(han._resend_loop())
    try:
        await body()
    finally:
        task.cancel()
        await sleep_ms(0)


def test_refusal_inside_the_window_sends_the_message_again():
    han, sent = _han()

    async def body():
        await han.send(None, b"\xdd\x00first")
        await sleep_ms(50)
        _refusal(han)
        await sleep_ms(150)  # the loop gathers a burst for 50 ms
        assert sent == [b"\xdd\x00first", b"\xdd\x00first"]
        assert han_named(han)["rejected_by_ch"] == 1 and han_named(han)["resent"] == 1
        assert len(han._recent) == 1  # held again, for a new window

    asyncio.run(_with_resend_loop(han, body))


def test_body_is_let_go_after_its_window_without_another_send():
    han, sent = _han()

    async def body():
        await han.send(None, b"\xdd\x00a" * 100)
        await han.send(None, b"\xdd\x00b" * 100)
        assert len(han._recent) == 2
        await sleep_ms(int(WINDOW_S * 1000) + 150)
        assert han._recent == []
        # a refusal after the window finds nothing to send again
        _refusal(han)
        await sleep_ms(150)
        assert len(sent) == 2 and han_named(han)["resent"] == 0

    asyncio.run(_with_resend_loop(han, body))


def test_a_refusal_waiting_for_the_send_lock_keeps_its_body():
    han, sent = _han(window_s=0.1)

    async def body():
        await han.send(None, b"\xdd\x00held")
        async with han._send_lock:  # a long send of another message holds the lock
            _refusal(han)
            await sleep_ms(250)  # past the window
            assert len(han._recent) == 1
        await sleep_ms(100)
        assert sent == [b"\xdd\x00held", b"\xdd\x00held"] and han_named(han)["resent"] == 1

    asyncio.run(_with_resend_loop(han, body))


def test_refusals_of_two_messages_send_both_again_oldest_first():
    han, sent = _han()

    async def body():
        await han.send(None, b"\xdd\x00A")
        await han.send(None, b"\xdd\x00B")
        _refusal(han)
        _refusal(han)   # the CH refused our two newest TransferData frames: B's, then A's
        await sleep_ms(150)
        assert sent == [b"\xdd\x00A", b"\xdd\x00B", b"\xdd\x00A", b"\xdd\x00B"]
        assert han_named(han)["resent"] == 2 and [r[1] for r in han._recent] == [b"\xdd\x00A", b"\xdd\x00B"]

    asyncio.run(_with_resend_loop(han, body))


def test_of_two_equal_held_messages_only_the_refused_one_is_sent_again():
    # the same bytes sent twice within one millisecond are two entries of _recent equal but
    # for their send numbers (review r10-4; before, equal tuples): a refusal of the newest
    # TransferData sends one copy again, not both
    han, sent = _han()
    ticks_ms = H.ticks_ms
    H.ticks_ms = lambda: 5000

    async def body():
        await han.send(None, b"\xdd\x00A")
        await han.send(None, b"\xdd\x00A")
        assert len(han._recent) == 2 and han._recent[0][:5] == han._recent[1][:5]
        _refusal(han)
        await sleep_ms(150)
        assert sent == [b"\xdd\x00A"] * 3 and han_named(han)["resent"] == 1 and len(han._recent) == 2

    try:
        asyncio.run(_with_resend_loop(han, body))
    finally:
        H.ticks_ms = ticks_ms


def test_a_message_refused_only_in_part_is_not_sent_again():
    han, sent = _han()
    recorder = han._send_message

    async def send_message(data, deadline):
        await recorder(data, deadline)
        if data.endswith(b"G"):
            han._sent_pieces = 3   # G went in three GBT blocks

    han._send_message = send_message

    async def body():
        await han.send(None, b"\xdd\x00A")
        await han.send(None, b"\xdd\x00G")
        _refusal(han)   # one block of G's three: the meter may have the other two
        await sleep_ms(150)
        assert sent == [b"\xdd\x00A", b"\xdd\x00G"] and han_named(han)["resent"] == 0
        assert han_named(han)["resend_partial"] == 1 and [r[1] for r in han._recent] == [b"\xdd\x00A"]

    asyncio.run(_with_resend_loop(han, body))


def test_at_most_eight_held():
    han, sent = _han(window_s=60)

    async def body():
        for i in range(11):
            await han.send(None, b"\xdd\x00" + bytes((i,)))
        assert [r[1][2] for r in han._recent] == list(range(3, 11))

    asyncio.run(body())


# ---- a refusal for a message whose send failed is not charged to an older one ---------
# Review 3, M2: B's last TransferData reached the CH, which refused it (TransferDataError: it
# had forgotten the tunnel), and the APS acknowledgement was lost, so B's send failed
# (E_DELIVERY). The refusal is B's: A, confirmed before it, must not go to the HAN again.
# (WRONG_DEVICE: the tunnel stays open, so a wrong resend would go at once, not wait for it.)
def test_a_refusal_after_a_failed_send_sends_no_older_message_again():
    from ppmid.errors import E_DELIVERY
    han, sent = _han()
    recorder = han._send_message

    async def send_message(data, deadline):
        await recorder(data, deadline)
        if data.endswith(b"B"):
            raise H.HanError(E_DELIVERY, "the CH did not acknowledge the message (status 0x66)")

    han._send_message = send_message

    async def body():
        await han.send(None, b"\xdd\x00A")
        try:
            await han.send(None, b"\xdd\x00B")
            assert False, "B's send did not fail"
        except H.HanError as exc:
            assert exc.code == E_DELIVERY
        _refusal(han)
        await sleep_ms(150)
        assert sent == [b"\xdd\x00A", b"\xdd\x00B"]
        assert han_named(han)["rejected_by_ch"] == 1 and han_named(han)["resent"] == 0
        assert han._recent[0][1] == b"\xdd\x00A" and len(han._recent) == 1
        # a second refusal is A's own: A goes again, once
        _refusal(han)
        await sleep_ms(150)
        assert sent == [b"\xdd\x00A", b"\xdd\x00B", b"\xdd\x00A"] and han_named(han)["resent"] == 1

    asyncio.run(_with_resend_loop(han, body))


def _han_on_air(outcomes):
    """A HAN whose real _send_message runs over a _send_zcl that records each TransferData
    put on air and then raises the next outcome (None: the CH acknowledged it)."""
    han, _ = _han()
    del han._send_message                     # the real one, not _han()'s recorder
    on_air = []

    async def send_zcl(dest, zcl, *args):
        outcome = outcomes.pop(0) if outcomes else None
        if isinstance(outcome, H._NotTaken):
            raise outcome                     # the module refused it: nothing on air
        on_air.append(bytes(zcl)[-1:])
        if outcome is not None:
            raise outcome

    han._send_zcl = send_zcl
    return han, on_air


def _a_then_b_refused(outcome):
    han, on_air = _han_on_air([None, outcome])
    codes = []

    async def body():
        await han.send(None, b"\xdd\x00A")
        try:
            await han.send(None, b"\xdd\x00B")
        except H.HanError as exc:
            codes.append(exc.code)
        _refusal(han)
        await sleep_ms(150)

    asyncio.run(_with_resend_loop(han, body))
    return han, on_air, codes


def test_a_send_that_may_have_reached_the_ch_holds_its_place():
    from ppmid.errors import E_DELIVERY, E_DELIVERY_UNKNOWN
    for outcome in (H.HanError(E_DELIVERY, "no APS ack"), H.HanError(E_DELIVERY_UNKNOWN, "link lost")):
        han, on_air, codes = _a_then_b_refused(outcome)
        assert codes == [outcome.code]
        assert on_air == [b"A", b"B"] and han_named(han)["resent"] == 0 and len(han._recent) == 1


def test_a_send_the_module_refused_outright_holds_no_place():
    # nothing of B went on air (a sendUnicast status that will not change): the CH's refusal
    # can only be A's, and A goes again
    from ppmid.errors import E_DELIVERY
    refused = H._NotTaken("status 0x70")
    refused.for_good = True
    han, on_air, codes = _a_then_b_refused(refused)
    assert codes == [E_DELIVERY]
    assert on_air == [b"A", b"A"] and han_named(han)["resent"] == 1


def _a_then_gbt_b_refused(refusals):
    # A, then B as GBT blocks: block 1 confirmed, block 2's APS ack lost (E_DELIVERY, so
    # E_DELIVERY_UNKNOWN for the message): the CH may have 2 TransferData frames of B
    from ppmid.errors import E_DELIVERY, E_DELIVERY_UNKNOWN
    from ppmid.gbcs import build
    han, on_air = _han_on_air([None, None, H.HanError(E_DELIVERY, "no APS ack")])
    han.tunnel.client_max = 80
    big = build.build_command(9, b"\x90\xb3\xd5\x1f\x30\x01\x00\x00", b"\x00\xdb\x12\x34\x56\x78\x90\xa0",
                              0x0019, b"\xd9" + bytes(150))
    codes = []

    async def body():
        await han.send(None, b"\xdd\x00A")
        try:
            await han.send(None, big)
        except H.HanError as exc:
            codes.append(exc.code)
        assert han_named(han)["gbt_blocks_tx"] > 2 and len(on_air) == 3
        for _ in range(refusals):
            _refusal(han)
        await sleep_ms(150)

    asyncio.run(_with_resend_loop(han, body))
    assert codes == [E_DELIVERY_UNKNOWN]
    return han, on_air


def test_a_gbt_send_that_failed_holds_the_place_of_the_blocks_the_ch_may_have():
    # 2 refusals are B's 2 blocks: nothing goes again
    han, on_air = _a_then_gbt_b_refused(2)
    assert len(on_air) == 3 and han_named(han)["resent"] == 0
    # of 3, the third is A's: A goes again, once, and nothing of B
    han, on_air = _a_then_gbt_b_refused(3)
    assert len(on_air) == 4 and on_air[-1] == b"A" and han_named(han)["resent"] == 1


# ---- incoming APS fragments (_defragment), as the NCP hands them over ----------------
def _fragment(han, index, count, data, sender=CH, seq=9, options=0x8000 | APS_ENCRYPTED):
    aps = {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "src_ep": 1, "dst_ep": 1,
           "options": options, "group": (count << 8) | index, "sequence": seq}
    han._incoming({"sender": sender, "message": data, "aps": aps})


def _in_fragments(frame, count):
    size = (len(frame) + count - 1) // count
    return [frame[i * size:(i + 1) * size] for i in range(count)]


def test_fragments_in_range_deliver_the_whole_message():
    han, _ = _han()
    gbcs = b"\xdd\x00" + bytes(range(40))
    pieces = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, gbcs, False), 3)
    for i in (0, 2, 1):  # any order after the first
        _fragment(han, i, 3, pieces[i])
    assert han._rxq == [gbcs] and han_named(han)["rx_fragments_dropped"] == 0


def test_fragment_index_beyond_the_count_delivers_nothing():
    han, _ = _han()
    gbcs = b"\xdd\x00" + bytes(range(40))
    pieces = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, gbcs, False), 3)
    # count 3 announced, then indexes 7 and 9: three pieces held, but not the message's
    _fragment(han, 0, 3, pieces[0])
    _fragment(han, 7, 3, pieces[1])
    _fragment(han, 9, 3, pieces[2])
    assert han._rxq == [] and han_named(han)["received"] == 0
    assert han_named(han)["rx_fragments_dropped"] == 1 and han._frag is None
    # the same message sent again, whole, still arrives
    for i in range(3):
        _fragment(han, i, 3, pieces[i])
    assert han._rxq == [gbcs] and han_named(han)["rx_fragments_dropped"] == 1


# ---- the tunnel is the CH's alone: another HAN node can neither take it nor feed it ------
OTHER = 0x4F21  # any other node holding the network key (an IHD, a CAD, another PPMID)


def _tunnel_frame(han, zcl, sender, options=APS_ENCRYPTED):
    # a node other than the CH may hold a link key with us too (one the trust centre gave
    # it): its frames come APS-encrypted, and the tunnel is still the CH's alone
    han._incoming({"sender": sender, "message": zcl,
                   "aps": {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "options": options, "group": 0}})


def test_a_request_tunnel_from_another_node_leaves_the_chs_tunnel():
    log = []
    han = H.ZigbeeHan(None, None, {}, log=log.append)
    han.tunnel.handle(CH, TH.request_tunnel(1))
    tid = han.tunnel.tunnel_id
    han.status = "running"
    sent = []

    async def send_zcl(dest, zcl, *args, **kwargs):
        sent.append((dest, bytes(zcl)))

    han._send_zcl = send_zcl  # the real _send_message down to the module
    for seq in (2, 3):
        _tunnel_frame(han, TH.request_tunnel(seq), OTHER)
        dest, reply = han._replies[-1]
        fc, _, _, cmd, p = T.parse_zcl(reply)
        assert dest == OTHER and cmd == TH.REQUEST_TUNNEL_RESPONSE and p[2] == TH.TUNNEL_BUSY
    assert han.tunnel.tunnel_id == tid and han.tunnel.client == CH
    assert named(han.tunnel.counters, TUNNEL)["not_ch"] == 2 and named(han.tunnel.counters, TUNNEL)["opened"] == 1
    assert len([line for line in log if "0x4f21" in line]) == 1  # logged once, counted always

    asyncio.run(han.send(None, b"\xdd\x00next"))
    assert sent == [(CH, TH.transfer_data(sent[0][1][1], tid, b"\xdd\x00next", True))]


def test_tunnel_frames_from_another_node_are_not_taken():
    han, _ = _han()
    tid = han.tunnel.tunnel_id
    # TransferData with the CH's tunnel id: refused (wrong device), never delivered
    _tunnel_frame(han, TH.transfer_data(2, tid, b"\xdd\x00forged", False), OTHER)
    dest, reply = han._replies[-1]
    fc, _, _, cmd, p = T.parse_zcl(reply)
    assert dest == OTHER and cmd == TH.S_TRANSFER_DATA_ERROR and p[2] == T.WRONG_DEVICE
    assert han._rxq == [] and han_named(han)["received"] == 0
    # nor in APS fragments (not acknowledged, and the CH's reassembly in progress stays)
    zcl = TH.transfer_data(3, tid, b"\xdd\x00" + bytes(60), False)
    _fragment(han, 0, 2, zcl[:40])
    _fragment(han, 0, 2, b"\x11\x04\x02" + bytes(37), sender=OTHER)
    _fragment(han, 1, 2, b"x" * 30, sender=OTHER)
    assert han._ack_count == 1 and han._frag is not None and han._frag[0] >> 8 == CH
    _fragment(han, 1, 2, zcl[40:])
    assert han._rxq == [b"\xdd\x00" + bytes(60)]
    # its TransferDataError does not make us send again, nor its CloseTunnel close the tunnel
    _tunnel_frame(han, transfer_data_error(4, tid, T.NO_SUCH_TUNNEL, False), OTHER)
    _tunnel_frame(han, TH.close_tunnel(5, tid), OTHER)
    assert han.tunnel.tunnel_id == tid and han_named(han)["rejected_by_ch"] == 0 and han._rejected == {}
    assert named(han.tunnel.counters, TUNNEL)["not_ch"] == 5
    # the CH's own TransferData still arrives
    _tunnel_frame(han, TH.transfer_data(6, tid, b"\xdd\x00real", False), CH)
    assert han._rxq[-1] == b"\xdd\x00real"


def test_a_partial_message_left_days_ago_is_not_completed_by_a_later_one():
    # on a 32-bit port (ticks_diff modular at 2**30) a fragment 0 left 6.2 to 12.4 days
    # ago reads as started in the future: stale all the same
    from ppmid.clock import ticks_ms, ticks_add
    han, _ = _han()
    old = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, b"\xdd\x00" + bytes(40), False), 3)
    new = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, b"\xdd\x00" + bytes(range(40)), False), 3)
    _fragment(han, 0, 3, old[0])
    han._frag = (han._frag[0], ticks_add(ticks_ms(), 5000), han._frag[2])  # (key, started_ms, pieces)
    _fragment(han, 1, 3, new[1])
    _fragment(han, 2, 3, new[2])
    assert han._rxq == [] and han_named(han)["rx_fragment_timeouts"] == 1


# ---- incoming reassembly keyed by (sender, APS counter) -----------------------------------
def _acked(han):
    # (APS counter, fragment index) of each fragment acknowledgement waiting for the NCP
    # (sendReply parameters, SEND_REPLY_ACK_LEN bytes each in the ring: ... groupId u16 at
    # 10, the counter at 12)
    from ppmid.zigbee.ezsp import SEND_REPLY_ACK_LEN as n
    slots = len(han._acks) // n
    out = []
    for i in range(han._ack_count):
        at = (han._ack_head + i) % slots * n
        out.append((han._acks[at + 12], han._acks[at + 10]))
    return out


def test_two_interleaved_fragmented_messages_are_never_stitched_together():
    han, _ = _han()
    tid = han.tunnel.tunnel_id
    a = _in_fragments(TH.transfer_data(3, tid, b"\xdd\x00" + b"A" * 40, False), 3)
    b = _in_fragments(TH.transfer_data(4, tid, b"\xdd\x00" + b"B" * 40, False), 3)
    # B's fragment 0 (counter 10) comes between A's (counter 9): B starts over, and A's
    # later fragments are not B's
    _fragment(han, 0, 3, a[0], seq=9)
    _fragment(han, 0, 3, b[0], seq=10)
    _fragment(han, 1, 3, a[1], seq=9)
    _fragment(han, 2, 3, a[2], seq=9)
    assert han._rxq == [] and han_named(han)["received"] == 0
    # A's fragments taken into no message are not acknowledged: the CH repeats or gives up
    assert _acked(han) == [(9, 0), (10, 0)]
    _fragment(han, 1, 3, b[1], seq=10)
    _fragment(han, 2, 3, b[2], seq=10)
    assert han._rxq == [b"\xdd\x00" + b"B" * 40]
    assert han_named(han)["rx_fragments_dropped"] == 3   # A's partial, then its fragments 1 and 2
    # A again, under the next counter the CH's stack gives it, arrives whole
    han._ack_count = 0
    for i in range(3):
        _fragment(han, i, 3, a[i], seq=11)
    assert han._rxq == [b"\xdd\x00" + b"B" * 40, b"\xdd\x00" + b"A" * 40]
    assert _acked(han) == [(11, 0), (11, 1), (11, 2)] and han_named(han)["rx_fragments_dropped"] == 3


def test_the_last_fragment_repeated_after_the_message_is_whole_is_acked_again_not_delivered_twice():
    # with window 1 the CH sends each fragment after our ack of the one before: only the
    # last fragment's ack can be lost once the message is whole. The CH then repeats that
    # fragment; without a second ack its APS retries run out and it counts the message
    # failed (and may send it again under a new counter: a duplicate for the relay)
    han, _ = _han()
    gbcs = b"\xdd\x00" + bytes(range(50))
    pieces = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, gbcs, False), 2)
    _fragment(han, 0, 2, pieces[0], seq=0x51)
    _fragment(han, 1, 2, pieces[1], seq=0x51)
    assert han._rxq == [gbcs] and han._ack_count == 2
    _fragment(han, 1, 2, pieces[1], seq=0x51)      # the same fragment again: its ack was lost
    assert han._ack_count == 3                      # acknowledged again
    assert han._rxq == [gbcs] and han_named(han)["received"] == 1   # delivered once
    assert han._frag is None and han_named(han)["rx_fragments_dropped"] == 0
    # the next message (a new counter) is reassembled as ever
    _fragment(han, 0, 2, pieces[0], seq=0x52)
    _fragment(han, 1, 2, pieces[1], seq=0x52)
    assert han._rxq == [gbcs, gbcs] and han_named(han)["received"] == 2


def test_a_message_sent_again_under_a_new_counter_is_reassembled_whole():
    han, _ = _han()
    gbcs = b"\xdd\x00" + bytes(range(60))
    pieces = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, gbcs, False), 4)
    # the CH gave the message up after two fragments (our acks lost) and sends it again
    # under a new APS counter; a late repeat of the first attempt's fragment 2 comes between
    _fragment(han, 0, 4, pieces[0], seq=0x41)
    _fragment(han, 1, 4, pieces[1], seq=0x41)
    _fragment(han, 0, 4, pieces[0], seq=0x42)
    _fragment(han, 2, 4, pieces[2], seq=0x41)
    assert han._frag[0] & 0xFF == 0x42 and [i for i, p in enumerate(han._frag[2]) if p is not None] == [0]
    for i in (1, 2, 3):
        _fragment(han, i, 4, pieces[i], seq=0x42)
    assert han._rxq == [gbcs] and han_named(han)["received"] == 1
    assert han_named(han)["rx_fragments_dropped"] == 2   # the first attempt, then its late fragment
    # a fragment 0 repeated under the same counter (our ack was lost) keeps what arrived
    two = _in_fragments(TH.transfer_data(4, han.tunnel.tunnel_id, b"\xdd\x00next" + bytes(30), False), 2)
    _fragment(han, 0, 2, two[0], seq=0x43)
    _fragment(han, 0, 2, two[0], seq=0x43)
    _fragment(han, 1, 2, two[1], seq=0x43)
    assert han._rxq == [gbcs, b"\xdd\x00next" + bytes(30)] and han_named(han)["rx_fragments_dropped"] == 2


# ---- APS security: tunnel frames come from the CH APS-encrypted ---------------------------
def test_an_unencrypted_tunnel_frame_from_0x0000_is_dropped_and_the_tunnel_stays():
    # a node holding only the network key can send as NWK 0x0000, but not APS-encrypt
    # with the CH's link key: what it sends must neither be delivered nor touch the tunnel
    log = []
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=log.append)
    han.tunnel.handle(CH, TH.request_tunnel(1))
    tid = han.tunnel.tunnel_id
    forged = [TH.transfer_data(2, tid, b"\xdd\x00forged", False),
              transfer_data_error(3, tid, T.NO_SUCH_TUNNEL, False),
              TH.close_tunnel(4, tid),
              TH.request_tunnel(5)]
    for zcl in forged:
        _tunnel_frame(han, zcl, CH, options=0)
    zcl = TH.transfer_data(6, tid, b"\xdd\x00" + bytes(60), False)
    _fragment(han, 0, 2, zcl[:40], options=0x8000)
    _fragment(han, 1, 2, zcl[40:], options=0x8000)
    assert han._rxq == [] and han_named(han)["received"] == 0 and han._replies == []
    assert han.tunnel.tunnel_id == tid and named(han.tunnel.counters, TUNNEL)["opened"] == 1
    assert han._rejected == {} and han_named(han)["rejected_by_ch"] == 0
    assert han._ack_count == 0 and han._frag is None and han_named(han)["rx_fragments"] == 0
    assert han_named(han)["rx_unsecured"] == 6
    assert len([line for line in log if "no APS encryption" in line]) == 1  # counted always
    # the CH's own, encrypted, still arrive
    _tunnel_frame(han, TH.transfer_data(7, tid, b"\xdd\x00real", False), CH)
    _fragment(han, 0, 2, zcl[:40])
    _fragment(han, 1, 2, zcl[40:])
    assert han._rxq == [b"\xdd\x00real", b"\xdd\x00" + bytes(60)] and han_named(han)["rx_unsecured"] == 6



def test_a_prepayment_answer_without_aps_encryption_never_reaches_the_top_up():
    # the meter's answer to a top-up ends it (and a "duplicate" makes the UTRN refused for
    # good): one forged by a node with only the network key is dropped before the road
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=lambda *a: None)
    seen = []
    han.on_zcl = lambda sender, cluster, frame, eui64=None: seen.append((sender, cluster, bytes(frame)))
    esme = 0x1234
    answer = b"\x19\x05\x0b\x0c\x00"   # a ZCL frame from the meter, as the road would parse it

    def frame(options):
        han._incoming({"sender": esme, "message": answer,
                       "aps": {"profile": T.PROFILE_SE, "cluster": 0x0705, "options": options, "group": 0}})

    frame(0)
    frame(0x0040)            # retry bit alone: still no APS security
    assert seen == [] and han_named(han)["rx_unsecured"] == 2
    frame(APS_ENCRYPTED)
    assert seen == [(esme, 0x0705, answer)] and han_named(han)["rx_unsecured"] == 2
    # another SE cluster outside the two the gateway acts on goes to the road as before
    han._incoming({"sender": esme, "message": answer,
                   "aps": {"profile": T.PROFILE_SE, "cluster": 0x0702, "options": 0, "group": 0}})
    assert seen[-1] == (esme, 0x0702, answer) and han_named(han)["rx_unsecured"] == 2


def test_a_time_answer_without_aps_encryption_never_reaches_the_clock():
    # the CH's Time answer sets an unset clock (and so decides the commands' expiry): one
    # forged as 0x0000 by a node with only the network key is dropped before the clock code
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=lambda *a: None)
    seen = []
    han.on_time = seen.append
    answer = b"\x18\x07\x01\x00\x00\x00\xe2\x00\x00\x00\x30"

    def frame(options):
        han._incoming({"sender": CH, "message": answer,
                       "aps": {"profile": T.PROFILE_SE, "cluster": 0x000A, "options": options, "group": 0}})

    frame(0)
    assert seen == [] and han_named(han)["rx_unsecured"] == 1
    frame(APS_ENCRYPTED)
    assert len(seen) == 1 and seen[0]["message"] == answer and han_named(han)["rx_unsecured"] == 1

# ---- EZSP v14: the sender's EUI-64 (review 87 F4) ---------------------------------------
def _wire(eui_text):
    # an EUI-64 as a v14 module names a sender: little-endian
    import binascii
    return bytes(reversed(binascii.unhexlify(eui_text)))


TC_WIRE = _wire("0000B0D5B3FFFF00")    # the trust centre: the CH
IHD_WIRE = _wire("00DB1234567890A9")   # another HAN node that may hold a link key with us


def _named(han, zcl, eui, cluster=T.CLUSTER_TUNNELING, sender=CH, options=APS_ENCRYPTED, group=0):
    # a frame as ezsp.parse_incoming gives it at v14 (eui None: below v14)
    han._incoming({"sender": sender, "eui64": eui, "message": zcl,
                   "aps": {"profile": T.PROFILE_SE, "cluster": cluster, "options": options, "group": group,
                           "sequence": 9}})


def test_at_v14_tunnel_frames_not_from_the_trust_centre_are_dropped():
    # APS-encrypted and from NWK 0x0000, but the module names another node's EUI-64: not
    # the CH's, whatever the NWK address says; it neither opens, feeds nor closes the tunnel
    log = []
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=log.append)
    han._tc_eui = TC_WIRE
    _named(han, TH.request_tunnel(1), IHD_WIRE)
    assert han.tunnel.tunnel_id is None and han._replies == []
    _named(han, TH.request_tunnel(2), TC_WIRE)
    tid = han.tunnel.tunnel_id
    assert tid is not None and len(han._replies) == 1
    _named(han, TH.transfer_data(3, tid, b"\xdd\x00forged", False), IHD_WIRE)
    _named(han, TH.close_tunnel(4, tid), IHD_WIRE)
    zcl = TH.transfer_data(5, tid, b"\xdd\x00" + bytes(60), False)
    _named(han, zcl[:40], IHD_WIRE, options=0x8000 | APS_ENCRYPTED, group=(2 << 8) | 0)
    assert han._rxq == [] and han.tunnel.tunnel_id == tid and han._frag is None and han._ack_count == 0
    assert han_named(han)["rx_unsecured"] == 4   # counted with the unencrypted ones
    assert len([line for line in log if "not the trust centre's" in line]) == 1   # counted always
    # the trust centre's own go through, and below v14 (no EUI-64 named) nothing changes
    _named(han, TH.transfer_data(6, tid, b"\xdd\x00real", False), TC_WIRE)
    _named(han, TH.transfer_data(7, tid, b"\xdd\x00v13", False), None)
    assert han._rxq == [b"\xdd\x00real", b"\xdd\x00v13"] and han_named(han)["rx_unsecured"] == 4


def test_at_v14_a_time_answer_not_from_the_trust_centre_never_reaches_the_clock():
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=lambda *a: None)
    han._tc_eui = TC_WIRE
    seen = []
    han.on_time = seen.append
    answer = b"\x18\x07\x01\x00\x00\x00\xe2\x00\x00\x00\x30"
    _named(han, answer, IHD_WIRE, cluster=0x000A)
    assert seen == [] and han_named(han)["rx_unsecured"] == 1
    _named(han, answer, TC_WIRE, cluster=0x000A)
    _named(han, answer, None, cluster=0x000A)
    assert len(seen) == 2 and han_named(han)["rx_unsecured"] == 1
    # a Prepayment answer is the top-up road's to judge (the meter's EUI-64): handed on
    # with the EUI-64 the module named
    zcl = []
    han.on_zcl = lambda sender, cluster, frame, eui64=None: zcl.append((sender, cluster, eui64))
    _named(han, b"\x19\x05\x0b", IHD_WIRE, cluster=0x0705, sender=0x4A21)
    assert zcl == [(0x4A21, 0x0705, IHD_WIRE)] and han_named(han)["rx_unsecured"] == 1


class _SecurityStateEzsp:
    """getCurrentSecurityState as a v14 module answers it (sl_status_t, the security
    bitmask, the trust centre's EUI-64 little-endian); an exception in the list: raised."""
    version = 14

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    async def command(self, fid, params=b""):
        self.asked.append(fid)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


async def test_at_v14_the_trust_centre_is_read_when_unknown_and_frames_wait_for_it():
    import struct
    import sys
    from ppmid.zigbee import ezsp as E
    log = []
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=log.append)
    state = struct.pack("<IH", 0, 0x0010) + TC_WIRE
    han._ezsp = _SecurityStateEzsp([E.EzspError(E.E_EZSP, "no answer"),
                                     struct.pack("<IH", 0, 0) + bytes(8),   # the module knows none
                                     state])
    assert han._tc_eui is None
    for _ in range(3):
        # the CH's frame is dropped while the trust centre is unknown, and starts a read
        _named(han, TH.request_tunnel(1), TC_WIRE)
        assert han.tunnel.tunnel_id is None
        await sleep_ms(20)
    assert han._ezsp.asked == [0x0069, 0x0069, 0x0069] and han._tc_eui == TC_WIRE
    assert han_named(han)["rx_unsecured"] == 3
    assert len([line for line in log if "trust centre unknown" in line]) == 2
    _named(han, TH.request_tunnel(2), TC_WIRE)
    assert han.tunnel.tunnel_id is not None
    # the read's code leaves the heap again (boot-only han_start, the CBKE commands)
    assert "ppmid.zigbee.han_start" not in sys.modules and "ppmid.zigbee.ezsp_cbke" not in sys.modules
    # a network that comes up at v14 with the trust centre unknown: read then, not at the
    # CH's first frame
    han._tc_eui = None
    han._ezsp.answers = [state]
    han._on_callback(E.STACK_STATUS_HANDLER, struct.pack("<I", 0x15))   # sl_Status NETWORK_UP
    await sleep_ms(20)
    assert han._ezsp.asked[-1] == 0x0069 and han._tc_eui == TC_WIRE and han._net_up


class _Unloadable:
    """What `from ... import name` meets in sys.modules for a module whose load failed (a
    MemoryError on a cut-up heap): an ImportError."""


async def test_at_v14_a_trust_centre_read_whose_code_cannot_load_is_tried_again():
    # review_w5-2: the read is loaded on use (han_start, ezsp_cbke); a load that fails once
    # must not leave the trust centre "being read" for good (every CH frame dropped, the
    # tunnel never opened until a reset): the next frame tries again
    import struct
    import sys
    log = []
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S}, log=log.append)
    state = struct.pack("<IH", 0, 0x0010) + TC_WIRE
    han._ezsp = _SecurityStateEzsp([state, state])
    for name in ("ppmid.zigbee.han_start", "ppmid.zigbee.ezsp_cbke"):
        sys.modules.pop(name, None)
    # 1. han_start itself cannot load: the frame is dropped, no crash, nothing asked
    sys.modules["ppmid.zigbee.han_start"] = _Unloadable()
    try:
        _named(han, TH.request_tunnel(1), TC_WIRE)
    finally:
        del sys.modules["ppmid.zigbee.han_start"]
    await sleep_ms(20)
    assert han._tc_eui is None and han._ezsp.asked == [] and han.tunnel.tunnel_id is None
    assert len([line for line in log if "trust centre not read" in line]) == 1
    # 2. han_start loads, but the read's CBKE commands cannot: unknown again, not b""
    sys.modules["ppmid.zigbee.ezsp_cbke"] = _Unloadable()
    try:
        _named(han, TH.request_tunnel(2), TC_WIRE)
        await sleep_ms(20)
    finally:
        sys.modules.pop("ppmid.zigbee.ezsp_cbke", None)   # (the read's end may drop it)
    assert han._tc_eui is None and han._ezsp.asked == [] and han.tunnel.tunnel_id is None
    assert len([line for line in log if "trust centre unknown" in line]) == 1
    # 3. the heap has room again: the next CH frame starts the read, the one after opens
    _named(han, TH.request_tunnel(3), TC_WIRE)
    await sleep_ms(20)
    assert han._ezsp.asked == [0x0069] and han._tc_eui == TC_WIRE
    _named(han, TH.request_tunnel(4), TC_WIRE)
    assert han.tunnel.tunnel_id is not None
    assert han_named(han)["rx_unsecured"] == 3


# ---- outgoing APS fragments (_send_zcl): one APS counter for the whole frame -------------
class _CountingEzsp:
    """sendUnicast as the NCP answers it: accepted, a fresh APS counter each time, and the
    CH's acknowledgement (messageSentHandler status 0) straight after."""
    version = 13

    def __init__(self, han):
        self.han = han
        self.frames = []      # the EmberApsFrame of each sendUnicast, parsed
        self.counter = 0x40

    async def send_unicast(self, dest, aps, tag, message):
        from ppmid.zigbee import ezsp as E
        self.frames.append(E.parse_aps(aps))
        w = self.han._sent[tag]
        w.status = 0
        w.set()
        self.counter += 1
        return 0, self.counter


def test_every_aps_fragment_carries_the_counter_the_module_gave_fragment_0():
    # review 3, M4: a receiver keys its reassembly by (sender, APS counter)
    han, _ = _han()
    han._ezsp = _CountingEzsp(han)
    han._max_payload = 22                        # 20 bytes of frame per fragment
    asyncio.run(han._send_zcl(CH, bytes(range(50))))
    frames = han._ezsp.frames
    assert [f["group"] for f in frames] == [0x0300, 0x0301, 0x0302]
    assert [f["options"] & 0x8000 for f in frames] == [0x8000] * 3
    assert [f["sequence"] for f in frames] == [0, 0x41, 0x41]   # not 0x42, 0x43: fragment 0's
    # the next frame takes the module's next counter, whatever the host put in fragment 0
    han._ezsp.frames = []
    asyncio.run(han._send_zcl(CH, bytes(range(30))))
    assert [f["sequence"] for f in han._ezsp.frames] == [0, 0x44]


# ---- the failure sentences live in ppmid.zigbee.han_errors, loaded to say one -------------
class _RefusingEzsp:
    """sendUnicast as a module that refuses the frame (status), or takes it and then
    reports the CH's APS status for it (sent)."""
    version = 13

    def __init__(self, han, status=0, sent=0):
        self.han, self.status, self.sent = han, status, sent

    async def send_unicast(self, dest, aps, tag, message):
        if not self.status:
            w = self.han._sent[tag]
            w.status = self.sent
            w.set()
        return self.status, 1


def _failure(coro):
    async def run():
        try:
            await coro
        except H.HanError as exc:
            return exc
        except H._NotTaken as exc:
            return exc
        raise AssertionError("no failure")
    return asyncio.run(run())


def test_failure_sentences_are_loaded_when_needed_and_dropped_after():
    # a refusal still carries the whole sentence with its values and its code, and the
    # sentences' module goes again (the link does not hold it)
    import sys
    from ppmid.errors import E_HAN_DEST, E_HAN_TOO_BIG, E_HAN_DOWN, E_NO_TUNNEL, E_DELIVERY
    from ppmid.zigbee import ezsp as E
    gone = lambda: "ppmid.zigbee.han_errors" not in sys.modules  # noqa: E731
    log = []
    han = H.ZigbeeHan(None, None, {"max_message": 16, "send_timeout_s": 0}, log=log.append)
    e = _failure(han.send(0x1234, b"\xdd\x00"))
    assert (e.code, e.message) == (E_HAN_DEST, "only the Communications Hub is reachable (dest 4660)") and gone()
    e = _failure(han.send(None, bytes(20)))
    assert (e.code, e.message) == (E_HAN_TOO_BIG, "GBCS message of 20 bytes exceeds 16") and gone()
    han.status, han.status_detail = "resetting", "the module reset"
    e = _failure(han.send(None, b"\xdd\x00"))
    assert (e.code, e.message) == (E_HAN_DOWN, "Zigbee HAN link is resetting the module reset") and gone()
    han.status = "no-tunnel"
    e = _failure(han.send(None, b"\xdd\x00"))
    assert (e.code, e.message) == (E_NO_TUNNEL, "no GB-HRGP tunnel open from the Communications Hub") and gone()
    han._max_payload = 82
    han._ezsp = _RefusingEzsp(han, status=0x70)
    e = _failure(han._send_zcl(CH, b"zcl"))
    assert isinstance(e, H._NotTaken) and str(e) == "the module refused to send (status 0x70)" and gone()
    assert e.for_good == (not E.refused_for_now(13, 0x70))
    han._ezsp = _RefusingEzsp(han, sent=0x66)
    e = _failure(han._send_zcl(CH, b"zcl"))
    assert (e.code, e.message) == (E_DELIVERY, "the CH did not acknowledge the message (status 0x66)") and gone()
    # a rare log line too, and only when there is a log to write it to
    han._incoming({"sender": CH, "message": b"\x01\x00\x02",
                   "aps": {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "options": 0, "group": 0}})
    assert log[-1] == "han: cluster 0x0704 frame from 0x0000: no APS encryption" and gone()
    # without a log nothing is loaded: a stand-in module stays where a load would drop it
    sys.modules["ppmid.zigbee.han_errors"] = log
    try:
        H.ZigbeeHan(None, None, {})._logf(0)  # a sentence key: loaded only for a log
        assert sys.modules["ppmid.zigbee.han_errors"] is log
    finally:
        del sys.modules["ppmid.zigbee.han_errors"]


def test_a_sentence_that_cannot_be_loaded_still_refuses_with_its_code():
    # no heap or no flash for han_errors: the send is refused all the same, with its code,
    # and the sentence's key and values for a text (never another error in its place)
    import sys
    from ppmid.errors import E_HAN_DEST

    class Unreadable:  # what an import finds in sys.modules: a module without SENTENCES
        pass
    sys.modules["ppmid.zigbee.han_errors"] = Unreadable()
    try:
        han = H.ZigbeeHan(None, None, {})
        e = _failure(han.send(0x1234, b"\xdd\x00"))
        assert e.code == E_HAN_DEST and e.message.startswith("han sentence ") and "4660" in e.message
    finally:
        del sys.modules["ppmid.zigbee.han_errors"]


def test_every_sentence_key_names_its_sentence():
    # han.py's _S_X = const(i) and han_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the failures run on both above")
    from ppmid.zigbee import han_errors as HE
    from ppmid.gbcs import reassembly   # (it says the link's lost incoming GBT messages)
    from ppmid.zigbee import han_start  # (the supervisor's verdicts)
    from sentence_keys import check_keys
    check_keys((H, reassembly, han_start), HE)


# ---- review 90: incoming APS fragments bounded, GBT timeouts said ------------------------
def test_fragments_announcing_more_than_the_tunnel_takes_are_never_held():
    # review 90 F5: fragment 0 announced 255 fragments and ~18 KB was held before the
    # tunnel's 1500-byte check refused the joined 20 KB. Now fragment 0 is enough to drop
    # it (not acknowledged: the CH learns it was not delivered)
    han, _ = _han()
    limit = han.tunnel.max_incoming   # 1500
    for count, size in ((255, 80), (20, 80), (2, limit + 8)):
        _fragment(han, 0, count, b"\x01" * size, seq=count & 0xFF)
        assert han._frag is None and _acked(han) == [], (count, size)
    assert han_named(han)["rx_fragments_dropped"] == 3
    # within the bound it is held, until what its later fragments bring passes the bound
    # (a fragment 0 of 1 byte announcing 255, then 100-byte ones: ~25 KB, were all held)
    _fragment(han, 0, 255, b"\x01", seq=7)
    assert han._frag is not None and _acked(han) == [(7, 0)]
    for i in range(1, 16):
        _fragment(han, i, 255, b"\x01" * 100, seq=7)
    # (the partial is (key, started, pieces)): the bytes held so far are at the bound
    assert han._frag is not None and sum(len(p) for p in han._frag[2] if p is not None) == 1 + 1500
    _fragment(han, 1, 255, b"\x01" * 100, seq=7)   # a repeat counts once
    assert han._frag is not None
    _fragment(han, 16, 255, b"\x01" * 100, seq=7)
    assert han._frag is None and han_named(han)["rx_fragments_dropped"] == 4
    # a message that fits still arrives whole
    gbcs = b"\xdd\x00" + bytes(range(200))
    pieces = _in_fragments(TH.transfer_data(3, han.tunnel.tunnel_id, gbcs, False), 3)
    for i in range(3):
        _fragment(han, i, 3, pieces[i], seq=8)
    assert han._rxq == [gbcs]


def test_two_messages_under_one_aps_counter_are_not_joined():
    # review 90 F6: the sender's APS counter came round (or it restarted) while our partial
    # of its message under that counter waits: a fragment 0 unlike the one held starts over
    han, _ = _han()
    tid = han.tunnel.tunnel_id
    a = _in_fragments(TH.transfer_data(3, tid, b"\xdd\x00" + b"A" * 40, False), 3)
    b = _in_fragments(TH.transfer_data(4, tid, b"\xdd\x00" + b"B" * 40, False), 3)
    _fragment(han, 0, 3, a[0], seq=9)
    _fragment(han, 1, 3, a[1], seq=9)
    _fragment(han, 0, 3, b[0], seq=9)      # same counter, another message
    _fragment(han, 2, 3, b[2], seq=9)
    assert han._rxq == [] and han_named(han)["rx_fragments_dropped"] == 1
    _fragment(han, 1, 3, b[1], seq=9)
    assert han._rxq == [b"\xdd\x00" + b"B" * 40]
    # another count under one counter: another message too
    c = _in_fragments(TH.transfer_data(5, tid, b"\xdd\x00" + b"C" * 40, False), 2)
    _fragment(han, 0, 3, a[0], seq=12)
    _fragment(han, 1, 3, a[1], seq=12)
    _fragment(han, 0, 2, c[0], seq=12)
    _fragment(han, 1, 2, c[1], seq=12)
    assert han._rxq[-1] == b"\xdd\x00" + b"C" * 40 and len(han._rxq) == 2
    # the same fragment 0 again (our ack lost) is a repeat, not a new message
    _fragment(han, 0, 3, a[0], seq=13)
    _fragment(han, 0, 3, a[0], seq=13)
    _fragment(han, 1, 3, a[1], seq=13)
    _fragment(han, 2, 3, a[2], seq=13)
    assert han._rxq[-1] == b"\xdd\x00" + b"A" * 40 and han_named(han)["rx_fragments_dropped"] == 2


def test_an_incoming_gbt_message_that_times_out_is_logged_and_counted():
    # review 90 F4 (and F1 through the link): a message whose blocks stop arriving is said
    # in the log and counted when a later block expires it; a block numbered far past any
    # message the bound holds is refused, and the next message still arrives
    from ppmid.clock import ticks_ms, ticks_add
    from ppmid.gbcs import build
    from ppmid.gbcs.reassembly import Reassembler
    han, _ = _han()
    lines = []
    han._log = lines.append
    orig, recip = bytes(range(1, 9)), bytes(range(11, 19))
    han._deliver(build.build_block(0x01, 7, orig, recip, 0x0001, 65535, b"x"))
    assert han._rxq == [] and han._gbt.pending() == 0
    assert any("E_GBT_MEMORY" in line for line in lines), lines
    han._gbt.feed(build.build_block(0x01, 8, orig, recip, 0x0001, 2, b"x"), ticks_add(ticks_ms(), -61000))
    assert "rx_gbt_timeouts" not in han_named(han)
    whole = build.build_command(5, orig, recip, 0x0001, bytes(20))
    han._deliver(build.build_block(0x01, 5, orig, recip, 0x0001, 1, whole, last=True))
    assert han._rxq == [whole] and han_named(han)["rx_gbt_timeouts"] == 1
    assert han._gbt.timed_out == [] and han._gbt.pending() == 0
    lost = [line for line in lines if "incoming GBT message lost" in line]
    assert len(lost) == 1 and "E_GBT_TIMEOUT" in lost[0] and "counter 8" in lost[0], lines
    assert isinstance(han._gbt, Reassembler)


def test_every_han_and_tunnel_counter_index_names_its_counter():
    # the HAN link and its tunnel server count by private _C_X = const(i) indices, and so
    # do the modules that count in their lists (the commissioning, the rejoin, the top-up
    # road, the GBT reassembly, the tunnel's control frames); zigbee/han_counters.py names
    # them (x, lower case) at index i, for reports: every module's indices agree with the
    # names, each is used where defined, every name is counted somewhere, and the owners'
    # lists are as long as the names
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the counters run on both above")
    import re
    from ppmid.zigbee import han_counters as HC, commission, rejoin, tunnel_control
    from ppmid.relay import topups
    from ppmid.gbcs import reassembly
    for owner, others, names in ((H, (commission, rejoin, topups, reassembly), HC.HAN),
                                 (T, (tunnel_control,), HC.TUNNEL)):
        counted = set()
        for mod in (owner,) + others:
            src = open(mod.__file__).read()
            # (the top-up road counts in the relay's list too: its HAN indices are _HC_X)
            pre = "_HC_" if mod is topups else "_C_"
            keys = re.findall(r"^" + pre + r"(\w+) = const\((\d+)\)", src, re.M)
            assert keys and all(names[int(i)] == k.lower() for k, i in keys), (mod.__name__, keys)
            used = set(re.findall(r"\[" + pre + r"(\w+)\]", src))
            assert used == set(k for k, _ in keys), (mod.__name__, used ^ set(k for k, _ in keys))
            counted |= set(k.lower() for k, _ in keys)
        assert counted == set(names), set(names) ^ counted
        assert re.search(r"^_COUNTERS = const\(%d\)" % len(names), open(owner.__file__).read(), re.M)


def test_a_report_names_every_counter_and_a_gbt_timeout_only_once_counted():
    # all_counters (the emulator's and tests' report): the HAN level by name, its layers
    # under their prefixes; rx_gbt_timeouts appears once one was counted, as when the
    # counters were a dict the reassembly added the key to
    from ppmid.zigbee.han_counters import all_counters, HAN
    han, _ = _han()
    han.counters[HAN.index("resets")] = 3
    han.tunnel.counters[TUNNEL.index("not_ch")] = 2
    report = all_counters(han)
    assert report["resets"] == 3 and report["tunnel_not_ch"] == 2 and report["ash_resets"] == 0
    assert "rx_gbt_timeouts" not in report and "ezsp_timeouts" in report and "ash_rx_crc" in report
    assert len(report) == len(HAN) - 1 + len(TUNNEL) + 19 + 7 + 7
    han.counters[HAN.index("rx_gbt_timeouts")] = 1
    assert all_counters(han)["rx_gbt_timeouts"] == 1
    han.counters.append(0)   # a list that no longer matches the names is refused, not misread
    try:
        all_counters(han)
        assert False, "a list longer than the names was read"
    except ValueError:
        pass


def test_the_options_are_the_links_attributes_from_the_config():
    # zigbee/han_init.py's options set the HAN's options as its attributes: the defaults
    # (han_start's DEFAULTS), limits.transfer_size / max_gbcs, the zigbee section's own
    # keys; the section itself is commission_settings only with an install code; han_init
    # and han_start are dropped after it
    import sys
    code = "83FED3407A939723A5C639B26916D505C3B5"
    z = {"send_timeout_s": 5, "rx_queue": 2, "install_code": code}
    han = H.ZigbeeHan(None, None, {"limits": {"transfer_size": 600, "max_gbcs": 4000}, "zigbee": z})
    assert (han.transfer_size, han.max_message, han.send_timeout_s, han.rx_queue) == (600, 4000, 5, 2)
    assert (han.sent_timeout_s, han.resend_window_s, han.ezsp_version) == (10, 10, 13)   # defaults
    assert han.commission_settings is z and han.tunnel.max_incoming == 600
    assert "ppmid.zigbee.han_start" not in sys.modules and "ppmid.zigbee.han_init" not in sys.modules
    assert han._ready()
    han._rxq = [b"\xdd\x00a", b"\xdd\x00b"]
    assert not han._ready()   # the link reads rx_queue: the NCP is held off at 2 messages
    # the zigbee keys over the limits' (a config without sections is taken as the section)
    han = H.ZigbeeHan(None, None, {"max_message": 100, "backoff_max_s": 0.5, "install_code": ""})
    assert (han.max_message, han.backoff_max_s, han.transfer_size) == (100, 0.5, 1500)
    assert han.commission_settings is None
    han = H.ZigbeeHan(None, None)
    assert (han.max_message, han.commission_settings) == (8192, None)


# ---- the network's changes; the supervisor's verdicts: han_start's, loaded for them --------
def test_the_network_going_down_and_up_moves_the_status_and_closes_the_tunnel():
    # (a stackStatusHandler is handled by the running link itself: moved into han_start.py
    # it cost a ~4 KB load at every network loss, which the rejoin after it then lacked on
    # tests/test_commissioning_rejoin_e2e.py's 256 KB heap; docs/memory.md, session 12)
    import sys
    from ppmid.zigbee import ezsp as E
    han, _ = _han()
    han._ezsp.version = 13
    han._up = han._net_up = han._link.connected = True
    han.status = "starting"
    han._update_status()
    assert han.status == "running"
    sys.modules.pop("ppmid.zigbee.han_start", None)
    han._on_callback(E.STACK_STATUS_HANDLER, b"\x91")   # EmberStatus NETWORK_DOWN
    assert not han._net_up and han.tunnel.tunnel_id is None and han.status == "network-down"
    han._net_event.clear()
    han._on_callback(E.STACK_STATUS_HANDLER, b"\x90")   # NETWORK_UP: the CH asks for a tunnel again
    assert han._net_up and han._net_event.is_set() and han.status == "no-tunnel"
    han._on_callback(E.STACK_STATUS_HANDLER, b"\x93")   # another status (NOT_JOINED): no change
    assert han._net_up and han.status == "no-tunnel" and "ppmid.zigbee.han_start" not in sys.modules
    assert han._link.connected


async def _supervised(han, failure, ms=60):
    # han.run() for `ms` with a bring-up that fails with `failure`
    async def bring_up():
        raise failure
    han._bring_up = bring_up
    task = asyncio.create_task(han.run())
    await sleep_ms(ms)
    task.cancel()
    await sleep_ms(0)


async def test_the_supervisors_verdicts_are_loaded_for_a_failure():
    import sys
    from ppmid.zigbee import ezsp as E
    from ppmid.zigbee.ashlink import AshError
    log = []
    han = H.ZigbeeHan(None, None, {"unsupported_retry_s": 10, "backoff_max_s": 10}, log=log.append)
    sys.modules.pop("ppmid.zigbee.han_start", None)
    # a module that cannot be used: said in the status, tried again after unsupported_retry_s
    resets = []
    han._link_lost = lambda: resets.append(1)
    await _supervised(han, E.EzspError(E.E_MODULE_UNSUPPORTED, "Zigbee module speaks EZSP v5"))
    assert (han.status, han.status_detail) == ("module-unsupported", "Zigbee module speaks EZSP v5")
    assert resets == [] and "ppmid.zigbee.han_start" not in sys.modules
    # a failed link or bring-up, the HAN's own refusal, a bug: logged, then the backoff
    await _supervised(han, AshError("E_ASH_RESET", "no RSTACK after 3 RST"))
    assert log[-1] == "han: bring-up failed: E_ASH_RESET: no RSTACK after 3 RST" and resets == [1]
    await _supervised(han, H.HanError("E_HAN_DOWN", "module payload limit 0 is unusable"))
    assert log[-1] == "han: E_HAN_DOWN: module payload limit 0 is unusable" and resets == [1, 1]
    await _supervised(han, ValueError("a bug"))
    assert log[-1] == "han: supervisor: unexpected ValueError('a bug',)" or log[-1] == \
        "han: supervisor: unexpected ValueError('a bug')"
    assert han.status != "module-unsupported" and "ppmid.zigbee.han_start" not in sys.modules


async def test_a_supervisors_verdict_that_cannot_load_is_logged_and_the_link_reset_again():
    # no heap or no flash for han_start: the failure is said as a bug would be (its text
    # intact), and the supervisor resets again after its backoff, not stopped
    import sys
    from ppmid.zigbee import ezsp as E
    log = []
    han = H.ZigbeeHan(None, None, {}, log=log.append)
    tries = []

    async def bring_up():
        tries.append(1)
        raise E.EzspError(E.E_MODULE_UNSUPPORTED, "Zigbee module speaks EZSP v5")
    han._bring_up = bring_up
    sys.modules["ppmid.zigbee.han_start"] = _Unloadable()
    try:
        task = asyncio.create_task(han.run())
        await sleep_ms(700)    # the first backoff is 500 ms
        task.cancel()
        await sleep_ms(0)
    finally:
        del sys.modules["ppmid.zigbee.han_start"]
    # tried again after the backoff, not after unsupported_retry_s (60 s), which the verdict
    # would have said in the status
    assert len(tries) == 2 and han.status != "module-unsupported"
    assert log[-1].startswith("han: supervisor: unexpected EzspError(") and "v5" in log[-1]


# ---- review r6-1: what incoming tunnel frames queue is bounded ---------------------------
def test_tunnel_replies_are_bounded_and_the_ones_dropped_counted():
    # a node (or an NCP posing as one) sending GetSupportedProtocols faster than our
    # answers go out: at most half the reply slots are its, the rest dropped and counted,
    # and the CH's RequestTunnel still finds a slot (its answer is how the tunnel opens)
    han = H.ZigbeeHan(None, None, {})
    n = 300
    for i in range(n):
        _tunnel_frame(han, bytes((0x01, i & 0xFF, 0x06, 0)), OTHER + (i & 0xFF))
    slots = H._REPLY_SLOTS if hasattr(H, "_REPLY_SLOTS") else 4   # a private const under MicroPython
    assert len(han._replies) == slots // 2
    assert han_named(han)["replies_dropped"] == n - slots // 2
    _tunnel_frame(han, TH.request_tunnel(9), CH)
    assert han.tunnel.tunnel_id is not None and han._replies[-1][0] == CH
    fc, _, seq, cmd, p = T.parse_zcl(han._replies[-1][1])
    assert seq == 9 and cmd == TH.REQUEST_TUNNEL_RESPONSE and p[2] == 0
    # the CH's own frames fill the slots, no more
    for i in range(n):
        _tunnel_frame(han, bytes((0x01, i & 0xFF, 0x06, 0)), CH)
    assert len(han._replies) == slots
    assert han_named(han)["replies_dropped"] == 2 * n - slots // 2 - 1


def test_a_queued_reply_goes_out_and_its_slot_is_free_again():
    # the bound is on what waits, not on what is ever answered
    han = H.ZigbeeHan(None, None, {})
    sent = []

    async def send_zcl(dest, zcl, *args, **kwargs):
        sent.append(dest)

    han._send_zcl = send_zcl

    async def body():
        task = asyncio.create_task(han._reply_loop())
        try:
            for i in range(10):
                _tunnel_frame(han, bytes((0x01, i, 0x06, 0)), OTHER)
                await sleep_ms(0)
                await sleep_ms(0)
        finally:
            task.cancel()
            await sleep_ms(0)
    asyncio.run(body())
    assert sent == [OTHER] * 10 and han_named(han)["replies_dropped"] == 0


def test_refusals_naming_tunnels_we_sent_nothing_through_are_counted_not_held():
    # TransferDataErrors from the CH (or the NCP posing as it) naming any tunnel id: only
    # one a held message went through is kept for the resend loop, so _rejected stays
    # within _RECENT_MAX + 1 keys whatever the ids named
    han, sent = _han()
    asyncio.run(han.send(None, b"\xdd\x00held"))
    tid = han.tunnel.tunnel_id
    n = 500
    for i in range(n):
        other = (tid + 1 + i) & 0xFFFF
        _tunnel_frame(han, transfer_data_error(i & 0xFF, other, T.WRONG_DEVICE, False), CH)
    assert han._rejected == {} and han_named(han)["rejected_by_ch"] == n
    _refusal(han)   # the held message's own tunnel: kept, and sent again
    assert list(han._rejected) == [tid] and han._rejected[tid][0] == 1 and han_named(han)["rejected_by_ch"] == n + 1

    async def body():
        await han._do_resends()
    asyncio.run(body())
    assert sent == [b"\xdd\x00held", b"\xdd\x00held"]


# ---- review r6-5: the reply and resend tasks outlive one failure ---------------------------
def test_a_reply_that_raises_memoryerror_is_lost_and_the_next_one_still_goes():
    # the CH's first RequestTunnel: its answer's frame cannot be built (a MemoryError);
    # the CH asks again, and that answer goes out: the task did not end
    log = []
    han = H.ZigbeeHan(None, None, {}, log=log.append)
    sent = []

    async def send_zcl(dest, zcl, *args, **kwargs):
        if not sent:
            sent.append(None)
            raise MemoryError("memory allocation failed, allocating 96 bytes")
        sent.append((dest, bytes(zcl)))

    han._send_zcl = send_zcl

    async def body():
        task = asyncio.create_task(han._reply_loop())
        try:
            for seq in (1, 2):
                _tunnel_frame(han, TH.request_tunnel(seq), CH)
                for _ in range(3):
                    await sleep_ms(0)
            assert not task.done()
        finally:
            task.cancel()
            await sleep_ms(0)
    asyncio.run(body())
    assert len(sent) == 2 and sent[1][0] == CH and han._replies == []
    fc, _, seq, cmd, p = T.parse_zcl(sent[1][1])
    assert seq == 2 and cmd == TH.REQUEST_TUNNEL_RESPONSE and p[2] == 0
    assert [line for line in log if "memory allocation" in line]


def test_a_resend_that_raises_memoryerror_is_counted_and_the_next_one_still_goes():
    han, sent = _han()
    fail = [True]
    record = han._send_message

    async def send_message(data, deadline):
        if len(sent) == 2 and fail[0]:   # the first resend: its frame cannot be built
            fail[0] = False
            raise MemoryError("memory allocation failed, allocating 8197 bytes")
        await record(data, deadline)

    han._send_message = send_message

    async def body():
        task = asyncio.create_task(han._resend_loop())
        try:
            await han.send(None, b"\xdd\x00A")
            await han.send(None, b"\xdd\x00B")
            _refusal(han)
            _refusal(han)
            await sleep_ms(150)
            assert not task.done()
        finally:
            task.cancel()
            await sleep_ms(0)
    asyncio.run(body())
    # A's resend failed (counted, not sent), B's went
    assert sent == [b"\xdd\x00A", b"\xdd\x00B", b"\xdd\x00B"]
    assert han_named(han)["resend_failed"] == 1 and han_named(han)["resent"] == 1


# ---- review r6-2: a join onto another CH at v14 reads the trust centre again -------------
async def test_at_v14_a_network_up_after_the_bring_up_reads_the_trust_centre_again():
    # a re-commission onto another CH (the order's "changed CH"), or a rejoin: the network
    # comes up under a trust centre that may not be the one the bring-up read. Read again,
    # so the new CH's tunnel frames are taken (before, all were dropped until a reset)
    import struct
    from ppmid.zigbee import ezsp as E
    old, new = _wire("0000B0D5B3FFFF00"), _wire("0000B0D5B3FFFF77")
    han = H.ZigbeeHan(None, None, {"resend_window_s": WINDOW_S})
    han._tc_eui = old          # as the last bring-up left it
    han._up = True             # the link is past its bring-up
    han._ezsp = _SecurityStateEzsp([struct.pack("<IH", 0, 0x0010) + new])
    han._on_callback(E.STACK_STATUS_HANDLER, struct.pack("<I", 0x15))   # NETWORK_UP
    await sleep_ms(20)
    assert han._ezsp.asked == [0x0069] and han._tc_eui == new
    _named(han, TH.request_tunnel(1), new)
    assert han.tunnel.tunnel_id is not None and han_named(han)["rx_unsecured"] == 0
    # the old CH's frames are now the ones dropped
    _named(han, TH.request_tunnel(2), old)
    assert han_named(han)["rx_unsecured"] == 1
