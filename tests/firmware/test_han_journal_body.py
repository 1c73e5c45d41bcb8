# The HAN sending a command the relay journaled (ppmid.relay.journal.Body): read from the
# journal block by block as each GBT block is built, and again for a resend in the CH's
# window; a body gone from the journal by then is a resend failure, never other bytes.
# (Apart from test_zigbee_han.py: with the journal and the flash rig, that module's
# MicroPython heap is too small.) CPython and MicroPython.
import asyncio
from ppmid.clock import sleep_ms
from ppmid.zigbee import han as H
from ppmid.zigbee import tunnel as T
from ppmid.zigbee import tunnel_host as TH   # the CH's frames
from ppmid.zigbee.han_counters import han_named

CH = 0x0000
APS_ENCRYPTED = 0x0020


def _han():
    han = H.ZigbeeHan(None, None, {"resend_window_s": 5})
    han.tunnel.handle(CH, TH.request_tunnel(1))
    han.tunnel.events = []
    han.status = "running"  # the link is up: send() goes straight to _send_message
    return han, None


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


def _journaled(n):
    # a command of n bytes journaled as the relay does, and the HAN (real _send_message,
    # the CH's transfer size 200) whose send_zcl records every TransferData it puts on air
    from ppmid.gbcs import build
    from ppmid.relay import journal as J
    from test_relay_support import fresh_root
    raw = build.build_command(9, b"\x90\xb3\xd5\x1f\x30\x01\x00\x00", b"\x00\xdb\x12\x34\x56\x78\x90\xa0",
                              0x0019, bytes(range(256)) * (n // 256) + b"\xd9")
    j = J.Journal(fresh_root())
    j.open()
    e = j.accept("c-1", "mqtt", None, 1000, raw[30:38], raw[21:29], raw[12:20], raw)
    j.sending(e, 2000)
    han, _ = _han()
    han.tunnel.client_max = 200
    log = []
    han._log = log.append
    on_air = []

    async def send_zcl(dest, zcl, *args):
        on_air.append(bytes(zcl))

    han._send_zcl = send_zcl
    return raw, j, e, han, on_air, log


def test_a_journaled_body_is_read_block_by_block_and_again_for_a_resend():
    # the relay hands the HAN the journal's Body: the TransferData frames are those of the
    # bytes, and a refusal in the window reads them from the journal again, even after a
    # compaction moved the record
    from ppmid.relay import journal as J
    raw, j, e, han, on_air, log = _journaled(700)
    _, k, _, want_han, want, _ = _journaled(700)

    async def body():
        await want_han.send(None, raw)
        await han.send(None, J.Body(j, e))
        assert on_air == want and len(on_air) == han_named(han)["gbt_blocks_tx"] == 4
        assert han._recent[-1][1].e is e                  # held: the entry, not its bytes
        for x in [j.accept("c-%d" % i, "mqtt", None, 1000, b"T" * 8, b"O" * 8, bytes(8), b"x" * 300)
                  for i in range(2, 5)]:
            j.done(x)
        j.put_counter(b"k", 5)                             # a compaction writes it before c-1
        off = e.body_off
        j.compact()
        assert e.body_off > off
        for _ in range(4):                                 # the message's 4 TransferData frames
            _refusal(han)
        await sleep_ms(150)
        assert len(on_air) == 8 and han_named(han)["resent"] == 1
        # the same GBT blocks (the ZCL header's sequence number is the next one's)
        at = T.TRANSFER_DATA_AT
        assert [z[at:] for z in on_air[4:]] == [z[at:] for z in want]

    asyncio.run(_with_resend_loop(han, body))
    j.close()
    k.close()


def test_a_resend_whose_journaled_body_is_gone_fails_as_a_resend_failure():
    # the command was done (its final status acknowledged) and its record compacted away
    # inside the window: nothing is sent, not another command's bytes; counted and logged
    from ppmid.relay import journal as J
    raw, j, e, han, on_air, log = _journaled(700)

    async def body():
        await han.send(None, J.Body(j, e))
        assert len(on_air) == 4
        j.done(e)
        j.accept("c-2", "mqtt", None, 1000, b"T" * 8, b"O" * 8, bytes(8), b"\xee" * 700)
        j.compact()
        for _ in range(4):
            _refusal(han)
        await sleep_ms(150)
        assert len(on_air) == 4
        assert han_named(han)["resent"] == 0 and han_named(han)["resend_failed"] == 1
        assert len(han._recent) == 0
        assert log[-1] == ("han: message refused by the CH could not be sent again: "
                           "E_JOURNAL: bytes 0-64 of command c-1 are not in the journal"), log

    asyncio.run(_with_resend_loop(han, body))
    j.close()


def test_a_body_that_cannot_be_read_fails_the_send_and_holds_the_place_of_what_went():
    # the first send's read fails (here the command is done under it; on a board a flash
    # error): the send fails with the read's error, counted, and a message whose first
    # blocks went on air holds their place for the CH's refusals
    from ppmid.relay import journal as J
    raw, j, e, han, on_air, log = _journaled(700)

    class FailsAt:
        def __init__(self, body, at):
            self.body = body
            self.at = at

        def __len__(self):
            return len(self.body)

        def __getitem__(self, s):
            if (s.start or 0) >= self.at:
                j.done(e)
            return self.body[s]

    async def body():
        for at, pieces in ((0, 0), (1, 1)):   # the head, or the second block's data, fails
            del on_air[:]
            j.live[e.seq] = e
            try:
                await han.send(None, FailsAt(J.Body(j, e), at))
            except J.JournalError as exc:
                assert exc.code == "E_JOURNAL"
            else:
                raise AssertionError("no JournalError")
            assert len(on_air) == pieces and han._sent_pieces == pieces
        assert han_named(han)["send_failed"] == 2 and han_named(han)["sent"] == 0
        assert [r[1] for r in han._recent] == [None]       # the second's first block holds its place

    asyncio.run(_with_resend_loop(han, body))
    j.close()
