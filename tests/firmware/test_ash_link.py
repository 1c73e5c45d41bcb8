# ASH link against a scripted NCP over in-memory streams (CPython and MicroPython): reset,
# acknowledgement, NAK and timeout retransmission, duplicates, out-of-order frames, bad
# input, unsolicited RSTACK / ERROR, link failure. Timers are shortened through `timers`.
import asyncio
from ppmid.zigbee import ash
from ppmid.zigbee import ashlink
from ash_ncp import rstack, error, is_data, is_ack, is_nak
from ppmid.zigbee.ashlink import AshLink, AshError, E_ASH_LINK, E_ASH_RESET
from ppmid.zigbee.han_counters import named, LINK, DECODER

# ashlink.py's private _ACK_TIMEOUTS and _ACK_TIMEOUTS_ALIVE (under MicroPython a private
# const is no module attribute): the CPython run checks them against these
ACK_TIMEOUTS = 4
ACK_TIMEOUTS_ALIVE = 32
FAST = (80, 40, 160, 200)


def counts(link):
    # the link's counters by name, as the reports read them (a list by index in the link)
    return named(link.counters, LINK)


class Pipe:
    def __init__(self):
        self.buf = bytearray()
        self.ev = asyncio.Event()

    def push(self, b):
        self.buf += b
        self.ev.set()

    async def read(self, n):
        while not self.buf:
            self.ev.clear()
            await self.ev.wait()
        out = bytes(self.buf[:n])
        self.buf = self.buf[n:]
        return out


class Sink:
    def __init__(self, fn):
        self.fn = fn

    def write(self, b):
        self.fn(bytes(b))

    async def drain(self):
        pass


class FakeNcp:
    """policy(frame_index, control, payload) -> "ack" | "nak" | "drop" for host DATA."""

    def __init__(self, policy=None, answer_rst=True):
        self.to_host = Pipe()
        self.dec = ash.Decoder()
        self.enc = ash.Encoder()
        self.policy = policy or (lambda i, c, p: "ack")
        self.answer_rst = answer_rst
        self.rx_exp = 0
        self.frm = 0
        self.data = []        # (control, payload) of every DATA frame from the host
        self.controls = []    # every control byte from the host
        self.bad = 0

    def from_host(self, b):
        for item in self.dec.feed(b):
            if item[0] == ash.BAD:
                self.bad += 1
                continue
            c, p = item
            self.controls.append(c)
            if c == ash.RST and self.answer_rst:
                self.rx_exp = 0
                self.frm = 0
                self.to_host.push(rstack(self.enc, 0x0B))
            elif is_data(c):
                i = len(self.data)
                self.data.append((c, bytes(p)))
                act = self.policy(i, c, p)
                frm = (c >> 4) & 7
                if act == "drop":
                    continue
                if act == "nak":
                    self.to_host.push(bytes(self.enc.nak(self.rx_exp)))
                    continue
                if frm == self.rx_exp:
                    self.rx_exp = (frm + 1) & 7
                self.to_host.push(bytes(self.enc.ack(self.rx_exp)))

    def send_data(self, payload, frm=None, re_tx=False):
        if frm is None:
            frm = self.frm
            self.frm = (frm + 1) & 7
        self.to_host.push(bytes(self.enc.data(frm, re_tx, self.rx_exp, payload)))


def make(ncp, **kw):
    got = []
    kw.setdefault("ready", lambda: True)
    link = AshLink(ncp.to_host, Sink(ncp.from_host), got.append, timers=FAST, **kw)
    return link, got


async def test_reset_then_send_is_acked():
    ncp = FakeNcp()
    link, got = make(ncp)
    code = await link.reset()
    assert code == 0x0B and link.connected
    assert ncp.controls[0] == ash.RST
    for i in range(10):  # wraps the 3-bit frame numbers
        await link.send(b"cmd%d" % i)
    assert [p for _, p in ncp.data] == [b"cmd%d" % i for i in range(10)]
    assert [(c >> 4) & 7 for c, _ in ncp.data] == [i & 7 for i in range(10)]
    assert counts(link)["retx"] == 0
    await link.close()


async def test_reset_without_answer_raises():
    ncp = FakeNcp(answer_rst=False)
    link, _ = make(ncp)
    try:
        await link.reset(attempts=2)
    except AshError as e:
        assert e.code == E_ASH_RESET
    else:
        raise AssertionError("no error")
    assert ncp.controls.count(ash.RST) == 2
    await link.close()


async def test_nak_and_timeout_retransmit_with_retx_bit():
    # first copy NAKed, second dropped (timeout), third acknowledged
    ncp = FakeNcp(lambda i, c, p: ("nak", "drop", "ack")[i] if i < 3 else "ack")
    link, _ = make(ncp)
    await link.reset()
    await link.send(b"hello")
    assert [p for _, p in ncp.data] == [b"hello"] * 3
    assert [bool(c & 8) for c, _ in ncp.data] == [False, True, True]
    assert counts(link)["rx_nak"] == 1 and counts(link)["ack_timeouts"] == 1
    await link.close()


async def test_four_timeouts_fail_the_link():
    ncp = FakeNcp(lambda i, c, p: "drop")
    fails = []
    link, _ = make(ncp, on_fail=fails.append)
    await link.reset()
    try:
        await link.send(b"lost")
    except AshError as e:
        assert e.code == E_ASH_LINK and "timeouts" in e.message
        assert e.on_wire  # the frame went out: the NCP may have run it
    else:
        raise AssertionError("no error")
    assert link.failed.is_set() and not link.connected
    assert len(ncp.data) == 4 and len(fails) == 1
    # while the link is down a send never touches the wire, and says so
    try:
        await link.send(b"never")
    except AshError as e:
        assert not e.on_wire and e.code == E_ASH_LINK
    else:
        raise AssertionError("no error")
    assert len(ncp.data) == 4
    # and the link comes back with a reset
    ncp.policy = lambda i, c, p: "ack"
    await link.reset()
    await link.send(b"again")
    assert ncp.data[-1][1] == b"again"
    await link.close()


async def test_frames_waiting_for_the_window_are_not_on_the_wire_at_a_failure():
    # window of 1: the first frame is written (and lost), the second waits for space; when
    # the link fails the first may be in the NCP, the second certainly is not
    ncp = FakeNcp(lambda i, c, p: "drop")
    link, _ = make(ncp, tx_k=1)
    await link.reset()
    t1 = asyncio.create_task(link.send(b"first"))
    t2 = asyncio.create_task(link.send(b"second"))
    errs = []
    for t in (t1, t2):
        try:
            await t
        except AshError as e:
            errs.append(e)
    assert len(errs) == 2 and errs[0].on_wire and not errs[1].on_wire
    assert errs[0] is not errs[1]
    assert [p for _, p in ncp.data] == [b"first"] * 4
    await link.close()


async def test_owner_can_fail_the_link():
    # han.py does this when an acknowledged command gets no EZSP answer (ends out of step)
    ncp = FakeNcp()
    fails = []
    link, _ = make(ncp, on_fail=fails.append)
    await link.reset()
    link.fail("no EZSP response")
    assert not link.connected and link.failed.is_set() and len(fails) == 1
    assert "no EZSP response" in fails[0].message and counts(link)["link_failures"] == 1
    link.fail("again")                   # already down: nothing more
    assert len(fails) == 1
    await link.reset()
    await link.send(b"back")
    assert ncp.data[-1][1] == b"back"
    await link.close()


async def test_window_keeps_several_frames_in_flight():
    held = []
    ncp = FakeNcp(lambda i, c, p: "drop" if i < 3 else "ack")
    link, _ = make(ncp, tx_k=3)
    await link.reset()
    tasks = [asyncio.create_task(link.send(b"f%d" % i)) for i in range(3)]
    await asyncio.sleep(0.02)
    # all three went out before any acknowledgement
    assert [p for _, p in ncp.data[:3]] == [b"f0", b"f1", b"f2"]
    for t in tasks:
        await t
    assert counts(link)["retx"] >= 3
    await link.close()


async def test_incoming_data_duplicates_out_of_order_and_garbage():
    ncp = FakeNcp()
    link, got = make(ncp)
    await link.reset()
    ncp.send_data(b"one")
    ncp.send_data(b"one", frm=0, re_tx=True)       # our ACK was "lost": a duplicate
    ncp.send_data(b"three", frm=2)                 # frame 1 missing: out of order
    ncp.to_host.push(b"\x00\x13\x55garbage\x7e")   # garbage: a bad frame
    bad = bytearray(ncp.enc.data(1, False, 0, b"two"))
    bad[2] ^= 0x40                                  # CRC error
    ncp.to_host.push(bytes(bad))
    ncp.send_data(b"two", frm=1, re_tx=True)
    await asyncio.sleep(0.05)
    assert got == [b"one", b"two"]
    c = counts(link)
    assert c["rx_dup"] == 1 and c["rx_out_of_order"] == 1 and c["tx_nak"] == 1
    rx = named(link._dec.counters, DECODER)
    assert rx["crc"] + rx["too_short"] >= 2
    # acks went back for everything accepted; one NAK for the reject condition
    acks = [x for x in ncp.controls if is_ack(x)]
    naks = [x for x in ncp.controls if is_nak(x)]
    assert len(naks) == 1 and acks[-1] & 7 == 2
    await link.close()


async def test_unsolicited_rstack_and_error_frame_fail_the_link():
    ncp = FakeNcp(lambda i, c, p: "drop")
    link, _ = make(ncp)
    await link.reset()
    t = asyncio.create_task(link.send(b"pending"))
    await asyncio.sleep(0.01)
    ncp.to_host.push(rstack(ncp.enc, 0x02))
    try:
        await t
    except AshError as e:
        assert "reset" in e.message
    else:
        raise AssertionError("no error")
    assert counts(link)["unsolicited_rstack"] == 1
    await link.reset()
    ncp.to_host.push(error(ncp.enc, 0x51))
    await asyncio.sleep(0.02)
    assert not link.connected and counts(link)["rx_error_frames"] == 1
    assert "0x51" in link.failure.message
    await link.close()


async def test_host_not_ready_sets_nrdy_in_acks():
    ncp = FakeNcp()
    ready = [True]
    link, got = make(ncp, ready=lambda: ready[0])
    await link.reset()
    ready[0] = False
    ncp.send_data(b"x")
    await asyncio.sleep(0.02)
    acks = [x for x in ncp.controls if is_ack(x)]
    assert acks and acks[-1] & 0x08
    await link.close()


async def test_frames_the_link_does_not_take_are_counted_and_dropped():
    # the link tells frames apart by their control byte itself (UG101): DATA 0x00-0x7F,
    # ACK 0x80-0x9F, NAK 0xA0-0xBF, RSTACK, ERROR; anything else is counted and dropped
    ncp = FakeNcp()
    link, got = make(ncp)
    ncp.send_data(b"early")  # before the link is up: not delivered, not acknowledged
    await link.reset()
    await asyncio.sleep(0.02)
    assert counts(link)["rx_while_down"] == 1 and got == []
    for control in (ash.RST, 0xC3, 0xE0, 0xFF):
        ncp.to_host.push(bytes(ncp.enc.encode(control)))
    await asyncio.sleep(0.02)
    c = counts(link)
    assert c["unknown_frames"] == 4 and link.connected
    assert c["rx_nak"] == 0 and c["remote_not_ready"] == 0 and c["rx_data"] == 0
    # the module's nRdy (in an ACK, then in a NAK) holds our next frame back until an
    # ACK without it
    ncp.to_host.push(bytes(ncp.enc.ack(0, True)))
    ncp.to_host.push(bytes(ncp.enc.nak(0, True)))
    await asyncio.sleep(0.02)
    c = counts(link)
    assert c["remote_not_ready"] == 2 and c["rx_nak"] == 1
    sent = len(ncp.data)
    t = asyncio.create_task(link.send(b"held"))
    await asyncio.sleep(0.05)
    assert len(ncp.data) == sent and not t.done()
    ncp.to_host.push(bytes(ncp.enc.ack(0)))
    await t
    assert ncp.data[-1][1] == b"held" and got == []
    await link.close()


async def test_too_big_frame_refused():
    ncp = FakeNcp()
    link, _ = make(ncp)
    await link.reset()
    try:
        await link.send(bytes(ash.MAX_DATA + 1))
    except AshError:
        pass
    else:
        raise AssertionError("no error")
    assert link.connected
    await link.close()


async def test_ack_timeouts_across_the_ticks_wrap():
    # the link's clock starts 150 ms before ticks_ms wraps (MicroPython; on CPython the
    # stand-in never wraps): a retransmission timer set before the wrap fires after it,
    # and four timeouts still fail the link, no sooner and no later
    from ppmid import clock as ticks
    import sys
    shift = 0
    if sys.implementation.name == "micropython":
        shift = ticks.ticks_diff(ticks.ticks_add(0, -150), ticks.ticks_ms())
    real = ashlink.ticks_ms
    ashlink.ticks_ms = lambda: ticks.ticks_add(real(), shift)
    try:
        ncp = FakeNcp(lambda i, c, p: ("drop", "ack")[i] if i < 2 else "drop")
        link, _ = make(ncp)
        await link.reset()
        await link.send(b"one")            # first copy lost, the timer brings it back
        assert [p for _, p in ncp.data] == [b"one"] * 2 and counts(link)["ack_timeouts"] == 1
        try:
            await link.send(b"two")
        except AshError as e:
            assert "timeouts" in e.message
        else:
            raise AssertionError("no error")
        assert counts(link)["ack_timeouts"] == 5 and len(ncp.data) == 6
        await link.close()
    finally:
        ashlink.ticks_ms = real



async def failure(aw):
    """The AshError an awaitable ends with (none: the test fails)."""
    try:
        await aw
    except AshError as e:
        return e
    raise AssertionError("no error")


async def test_a_module_that_answers_is_retried_past_four_timeouts():
    # The first copy is damaged and NAKed (the module is alive and hears us); the next
    # nine copies are lost on a noisy line (silent: UG101's NCP NAKs once per reject
    # condition). Four timeouts would fail the link and leave the frame uncertain; a
    # module that has answered gets up to ACK_TIMEOUTS_ALIVE, at the running timeout.
    ncp = FakeNcp(lambda i, c, p: "nak" if i == 0 else ("drop" if i < 10 else "ack"))
    fails = []
    got = []
    # T_RX_ACK_MAX 400 ms: a frame may go unacknowledged up to 2 s (5 x MAX)
    link = AshLink(ncp.to_host, Sink(ncp.from_host), got.append, lambda: True, timers=(40, 20, 400, 200),
                   on_fail=fails.append)
    await link.reset()
    await link.send(b"noisy")
    assert link.connected and not fails
    assert counts(link)["ack_timeouts"] == 9 and len(ncp.data) == 11
    assert all(c & 8 for c, _ in ncp.data[1:])     # every later copy marked reTx
    # ...but not forever: a module heard once and then silent for good fails the link
    # (after ACK_TIMEOUTS_ALIVE timeouts, or 5 x T_RX_ACK_MAX, whichever comes first)
    ncp.policy = lambda i, c, p: "nak" if i == 11 else "drop"
    before = counts(link)["ack_timeouts"]
    e = await failure(link.send(b"gone"))
    assert "ACK timeouts in a row" in e.message and e.on_wire
    assert len(fails) == 1 and not link.connected
    assert ACK_TIMEOUTS < counts(link)["ack_timeouts"] - before <= ACK_TIMEOUTS_ALIVE
    await link.close()


async def test_unsolicited_rstack_means_unacknowledged_frames_were_not_taken():
    # "first" is acknowledged, "second" never is; the module resets on its own. Its ACK
    # for anything it took would have come before the RSTACK, and a new session refuses
    # commands until the version exchange: "second" was not taken (on_wire False), so
    # the owner may send it again
    ncp = FakeNcp(lambda i, c, p: "ack" if i == 0 else "drop")
    link, _ = make(ncp)
    await link.reset()
    await link.send(b"first")
    t = asyncio.create_task(link.send(b"second"))
    await asyncio.sleep(0.01)
    assert [p for _, p in ncp.data] == [b"first", b"second"]
    ncp.to_host.push(rstack(ncp.enc, 0x02))
    e = await failure(t)
    assert not e.on_wire and "reset" in e.message
    assert counts(link)["not_taken_at_reset"] == 1 and counts(link)["unsolicited_rstack"] == 1
    # an ERROR frame is different: the module gave up on its own frames, and ours may
    # have been taken with their ACKs lost: still uncertain
    await link.reset()
    t = asyncio.create_task(link.send(b"third"))
    await asyncio.sleep(0.01)
    ncp.to_host.push(error(ncp.enc, 0x51))
    e = await failure(t)
    assert e.on_wire and "0x51" in e.message
    await link.close()


async def test_acks_go_twice_after_a_damaged_frame():
    ncp = FakeNcp()
    link, _ = make(ncp)
    await link.reset()
    ncp.send_data(b"clean")
    await asyncio.sleep(0.02)
    acks = [x for x in ncp.controls if is_ack(x)]
    assert len(acks) == 1                   # a clean line: one ACK a frame
    bad = bytearray(ncp.enc.data(1, False, 0, b"next"))
    bad[2] ^= 0x40                          # CRC error: the line damages frames now
    ncp.to_host.push(bytes(bad))
    ncp.send_data(b"next", re_tx=True)
    await asyncio.sleep(0.02)
    acks = [x for x in ncp.controls if is_ack(x)]
    assert len(acks) == 3 and acks[1] == acks[2] and acks[1] & 7 == 2
    await link.close()


async def test_a_damaged_rstack_is_still_a_module_reset():
    # the RSTACK's reset code byte is damaged (CRC error), its control byte and length
    # are intact: no other frame from the module has that shape, so the module did reset
    # and the unacknowledged frame was not taken
    ncp = FakeNcp(lambda i, c, p: "drop")
    link, _ = make(ncp)
    await link.reset()
    t = asyncio.create_task(link.send(b"pending"))
    await asyncio.sleep(0.01)
    bad = bytearray(rstack(ncp.enc, 0x02))
    assert bad[0] == ash.RSTACK and bad[-1] == 0x7E and len(bad) == 6
    bad[2] ^= 0x01
    ncp.to_host.push(bytes(bad))
    e = await failure(t)
    assert not e.on_wire and "damaged RSTACK" in e.message
    assert counts(link)["damaged_rstack"] == 1 and counts(link)["not_taken_at_reset"] == 1
    # a damaged frame of any other shape is only a NAK
    await link.reset()
    bad = bytearray(ncp.enc.data(0, False, 0, b"xyz"))
    bad[3] ^= 0x01
    ncp.to_host.push(bytes(bad))
    await asyncio.sleep(0.02)
    assert link.connected and counts(link)["damaged_rstack"] == 1
    await link.close()


async def test_a_module_that_reset_unseen_answers_ack_zero_and_frames_were_not_taken():
    # The module reset and its RSTACK was lost entirely. The new session expects frame 0
    # and answers our frame 1 (and each resend) with ackNum 0, outside our window. Those
    # answers prove nothing: after UG101's 4 timeouts the link fails as a module reset, and
    # the frame was not taken (a fresh module runs no command before the version exchange).
    ncp = FakeNcp()
    link, _ = make(ncp)
    await link.reset()
    await link.send(b"first")                # frame 0, acknowledged (ackNum 1)
    ncp.rx_exp = 0                           # the unseen reset
    ncp.policy = lambda i, c, p: "nak" if i == 1 else "ack"   # NAK(0), then ACK(0)s
    e = await failure(link.send(b"second"))
    assert not e.on_wire and "RSTACK was lost" in e.message
    c = counts(link)
    assert c["lost_rstack"] == 1 and c["rx_stray_ack"] >= 2 and c["ack_timeouts"] == ACK_TIMEOUTS
    assert c["not_taken_at_reset"] == 1
    await link.close()


async def test_no_reset_verdict_without_proof():
    # (1) a damaged RSTACK-shaped tail right after another damaged piece may be the end
    # of a longer frame split by a byte damaged into a flag: no verdict, the frame stays
    # pending (and, here, is then acknowledged)
    ncp = FakeNcp(lambda i, c, p: "drop" if i == 0 else "ack")
    link, _ = make(ncp)
    await link.reset()
    t = asyncio.create_task(link.send(b"pending"))
    await asyncio.sleep(0.01)
    bad = bytearray(rstack(ncp.enc, 0x02))
    bad[2] ^= 0x01
    ncp.to_host.push(b"\x21\x43\x65\x87\x7e" + bytes(bad))   # a damaged piece, then the tail
    await t
    assert link.connected and counts(link)["damaged_rstack"] == 0
    # (2) one ACK(0) outside the window may be a late ACK of ours: a frame whose ACKs are
    # then all lost fails the link as uncertain, never as "module reset"
    ncp.policy = lambda i, c, p: "drop"
    t = asyncio.create_task(link.send(b"taken?"))
    await asyncio.sleep(0.01)
    ncp.to_host.push(bytes(ncp.enc.ack(0)))
    e = await failure(t)
    assert e.on_wire and "ACK timeouts" in e.message
    assert counts(link)["rx_stray_ack"] == 1 and counts(link)["lost_rstack"] == 0
    await link.close()


async def test_failure_sentences_are_loaded_when_needed_and_dropped_after():
    # the link's sentences live in ppmid.zigbee.ashlink_errors (not held by the link): a
    # failure still carries the whole sentence with its values, and the module goes again
    import sys
    gone = lambda: "ppmid.zigbee.ashlink_errors" not in sys.modules
    e = await failure(make(FakeNcp(answer_rst=False))[0].reset(attempts=2))
    assert (e.code, e.message) == (E_ASH_RESET, "the Zigbee module did not answer RST (2 attempts)") and gone()
    logs = []
    ncp = FakeNcp(lambda i, c, p: "drop")
    link, _ = make(ncp, log=logs.append)
    await link.reset()
    assert logs[-1] == "ash: link up, reset code 0x0b" and gone()
    e = await failure(link.send(bytes(ash.MAX_DATA + 1)))
    assert e.message == "EZSP frame of %d bytes exceeds ASH's %d" % (ash.MAX_DATA + 1, ash.MAX_DATA) and gone()
    e = await failure(link.send(b"lost"))
    assert e.message == "4 ACK timeouts in a row and no word from the module: link failure" and gone()
    await link.reset()
    t = asyncio.create_task(link.send(b"pending"))
    await asyncio.sleep(0.01)
    ncp.to_host.push(rstack(ncp.enc, 0x02))
    assert (await failure(t)).message == "the Zigbee module reset (code 0x02)" and gone()
    await link.reset()
    ncp.to_host.push(error(ncp.enc, 0x51))
    await asyncio.sleep(0.02)
    assert link.failure.message == "the Zigbee module reported ASH error 0x51" and gone()
    await link.reset()
    await link.close()
    assert link.failure.message == "link closed" and gone()


async def test_a_sentence_that_cannot_be_loaded_still_fails_the_link():
    # no heap or no flash for ashlink_errors: the link fails all the same, with its code
    # and the sentence's key for a text (the link's loops must not die of it)
    import sys

    class Unreadable:  # what an import finds in sys.modules: a module without SENTENCES
        pass
    sys.modules["ppmid.zigbee.ashlink_errors"] = Unreadable()
    try:
        e = await failure(make(FakeNcp(answer_rst=False))[0].reset(attempts=1))
        assert (e.code, e.message) == (E_ASH_RESET, "ash sentence 2")
        ncp = FakeNcp()
        link, _ = make(ncp)
        await link.reset()
        ncp.to_host.push(error(ncp.enc, 0x51))
        await asyncio.sleep(0.02)
        assert not link.connected and link.failure.message == "ash sentence 10"
        await link.reset()  # the loops lived on
        await link.send(b"x")
        await link.close()
    finally:
        del sys.modules["ppmid.zigbee.ashlink_errors"]


def test_every_sentence_key_names_its_sentence():
    # ashlink.py's _S_X = const(i) and ashlink_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the failures run on both above")
    from ppmid.zigbee import ashlink_errors as AE
    from sentence_keys import check_keys
    check_keys((ashlink,), AE)


def test_every_counter_index_names_its_counter():
    # the ASH link, its decoder and the EZSP driver count by private _C_X = const(i)
    # indices; zigbee/han_counters.py names them (x, lower case) at index i, for reports:
    # the two agree, every index is used, and the list is as long as the names
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the counters run on both above")
    import re
    from ppmid.zigbee import ezsp, han_counters as HC
    for mod, names in ((ashlink, HC.LINK), (ash, HC.DECODER), (ezsp, HC.EZSP)):
        src = open(mod.__file__).read()
        keys = re.findall(r"^_C_(\w+) = const\((\d+)\)", src, re.M)
        assert [(k.lower(), int(i)) for k, i in keys] == [(n, i) for i, n in enumerate(names)], mod.__name__
        assert re.search(r"^_COUNTERS = const\(%d\)" % len(names), src, re.M), mod.__name__
        used = set(re.findall(r"\[_C_(\w+)\]", src))
        assert used == set(k for k, _ in keys), (mod.__name__, used ^ set(k for k, _ in keys))


def test_the_link_limits_are_those_the_tests_use():
    # the timing limits are private consts of ashlink.py (a public const is a name and a
    # module-dict entry the running app holds: docs/memory.md, session 11); under CPython
    # they are plain globals, so the values the tests above count against are checked here
    import sys
    if sys.implementation.name == "micropython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("private consts are no module attributes under MicroPython: compared in the CPython run")
    assert (ashlink._ACK_TIMEOUTS, ashlink._ACK_TIMEOUTS_ALIVE) == (ACK_TIMEOUTS, ACK_TIMEOUTS_ALIVE)
    assert (ashlink._T_RX_ACK_MIN, ashlink._T_RX_ACK_MAX) == (50, 3200)   # ms; UG101's T_RX_ACK_MAX
    for name in ("ACK_TIMEOUTS", "ACK_TIMEOUTS_ALIVE", "T_RX_ACK_MIN", "T_RX_ACK_MAX"):
        assert not hasattr(ashlink, name), name


class _FailingSink(Sink):
    """The NCP's side, but once armed the next write that is not an RST (written behind a
    CANCEL byte, 0x1A) raises OSError(EIO), once: a pty whose other end went away, a
    USB-serial adapter's glitch, a UART driver error."""

    def __init__(self, fn):
        super().__init__(fn)
        self.armed = False

    def write(self, b):
        b = bytes(b)
        if self.armed and b[0] != 0x1A:
            self.armed = False
            raise OSError(5, "EIO")
        self.fn(b)


async def test_a_failed_write_answering_the_ncp_fails_the_link_and_the_reader_goes_on():
    # review r6-3: the ACK of the NCP's DATA frame cannot be written. The link fails (the
    # supervisor resets it) and the receive loop, the UART's only reader, keeps reading:
    # the next reset's RSTACK is read, and the link is up again
    ncp = FakeNcp()
    fails = []
    sink = _FailingSink(ncp.from_host)
    got = []
    link = AshLink(ncp.to_host, sink, got.append, ready=lambda: True, timers=FAST, on_fail=fails.append)
    await link.reset()
    sink.armed = True
    ncp.send_data(b"\x00\x80\x01\x00\x00")
    for _ in range(20):
        await asyncio.sleep(0.01)
        if fails:
            break
    assert got == [b"\x00\x80\x01\x00\x00"] and not sink.armed
    assert len(fails) == 1 and not link.connected and "EIO" in repr(fails[0].message)
    assert not link._tasks[0].done() and not link._tasks[1].done()
    assert await link.reset(attempts=2) == 0x0B and link.connected
    await link.send(b"after")
    assert ncp.data[-1][1] == b"after"
    await link.close()


async def test_a_failed_resend_in_the_timer_fails_the_link_and_the_timer_goes_on():
    # the timer's retransmission cannot be written: the link fails, the timer task lives on
    # and retransmits for the next session
    def first_copy_lost(i, c, p):
        if i == 0:
            sink.armed = True   # the next write is the timer's retransmission of it
            return "drop"
        return "ack"
    ncp = FakeNcp(first_copy_lost)
    sink = _FailingSink(ncp.from_host)
    link = AshLink(ncp.to_host, sink, [].append, ready=lambda: True, timers=FAST)
    await link.reset()
    try:
        await asyncio.wait_for(link.send(b"lost"), 5)   # (without the fix: no answer ever)
    except AshError as e:
        assert e.code == E_ASH_LINK and "EIO" in e.message and e.on_wire
    else:
        raise AssertionError("no error")
    assert not link._tasks[0].done() and not link._tasks[1].done()
    ncp.policy = lambda i, c, p: "drop" if i == 1 else "ack"   # the next session's first copy lost
    await link.reset()
    await link.send(b"again")   # only the timer's retransmission gets it through
    assert [p for _, p in ncp.data[1:]] == [b"again", b"again"] and ncp.data[-1][0] & 8
    await link.close()


class _FlakyPipe(Pipe):
    # the UART's read raises once when armed (a heap that cannot hold the 256-byte chunk)
    armed = False

    async def read(self, n):
        if self.armed:
            self.armed = False
            raise MemoryError("memory allocation failed, allocating 256 bytes")
        return await Pipe.read(self, n)


async def _reader_fails_once(where):
    # review r9-2: a MemoryError from the receive loop's own read or from the decoder, not
    # from _handle: the link fails (the supervisor resets it), the loop, the UART's only
    # reader, goes on, so the next reset's RSTACK is read
    from ash_ncp import rstack
    pipe = _FlakyPipe()
    enc = ash.Encoder()
    fails = []
    link = AshLink(pipe, Sink([].append), [].append, ready=lambda: True, timers=FAST, on_fail=fails.append)
    t = asyncio.create_task(link.reset())
    await asyncio.sleep(0.01)
    pipe.push(rstack(enc, 2))
    assert await t == 2 and link.connected
    if where == "read":
        pipe.armed = True       # the read after the one waiting now
    else:
        feed = link._dec.feed

        def failing_feed(chunk):
            link._dec.feed = feed
            link._dec._n = 3    # as a feed that ran part of the way: its state half-kept
            raise MemoryError("memory allocation failed (decoder)")
        link._dec.feed = failing_feed
    pipe.push(bytes(enc.data(0, False, 0, b"\x00\x80\x01\x00\x00")))
    for _ in range(20):
        await asyncio.sleep(0.01)
        if fails:
            break
    assert len(fails) == 1 and not link.connected and "MemoryError" in fails[0].message, fails
    assert not link._tasks[0].done(), link._tasks[0]
    assert link._dec._n == 0 or where == "read"
    t = asyncio.create_task(link.reset(attempts=2))
    await asyncio.sleep(0.01)
    pipe.push(rstack(enc, 2))
    assert await t == 2 and link.connected
    await link.close()


async def test_a_memory_error_in_the_receive_loops_read_fails_the_link_and_it_reads_on():
    await _reader_fails_once("read")


async def test_a_memory_error_in_the_decoder_fails_the_link_and_the_loop_reads_on():
    await _reader_fails_once("feed")
