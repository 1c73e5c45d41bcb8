# Review r6-4: the messages the HAN sends again after the CH refused them (TransferDataError,
# zigbee/han.py _do_resends) go at the relay's pace (limits.rate_per_s / burst, a token of
# the command's target's and originator's buckets: relay/refusals.py pace), not all
# at once. A real relay (test_relay_support.Rig: journal on flash, fakes outside) over the
# real ZigbeeHan of han_rig (its tunnel open, its sends recorded). Time is the rig's fake
# clock: the relay's pacing sleeps by moving it (refusals.sleep_ms replaced), so every
# send's time below is the fake clock's, not the wall's. CPython and MicroPython.
# mp-heapsize: 384K  (a relay over a flash journal beside the HAN, one per test)
import asyncio
from ppmid.clock import sleep_ms
from ppmid.zigbee import tunnel as T
from ppmid.zigbee.han_counters import han_named
from han_rig import sending_han
from test_relay_support import Rig, config, response_to, eui, ESME

CH = 0x0000
APS_ENCRYPTED = 0x0020
PACE_MS = 500      # rate_per_s 2, burst 1: one message a target (and an originator) per 500 ms
# meters of the HAN beside the rig's own: one command in flight per meter, so a refusal of
# k messages whose commands still wait for their responses names k meters (a refused
# message never reached its meter; one of a command answered, timed out or requeued since
# is not sent again: review r10-1)
METERS = ["00DB12345678910%X" % i for i in range(12)]


def _refusal(han):
    # the CH's TransferDataError for our newest TransferData, as the NCP delivers it
    tid = han.tunnel.tunnel_id
    frame = T.zcl_header(7, 0x03, False) + bytes((tid & 0xFF, tid >> 8, T.WRONG_DEVICE))
    han._incoming({"sender": CH, "message": frame,
                   "aps": {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "options": APS_ENCRYPTED,
                           "group": 0}})


def _refusals():
    """relay/refusals.py as the relay will import it now: earlier test files drop it from
    sys.modules (it is loaded on a refusal and checked unloaded after), so a reference taken
    when this file was imported may be a module the relay no longer uses: patched there, the
    pace slept on the wall clock, 501 ms a turn with the fake clock standing still (the
    whole suite hung here in session 14's CI run, each test to its 300 s timeout)."""
    from ppmid.relay import refusals
    return refusals


class _Paced:
    """The relay over the HAN at 2/s, burst 1; on_air: (fake ms, bytes) of every message the
    HAN put on air, first sends and resends."""

    def __init__(self, rate_per_s=2.0, real_ms=0, burst=1):
        self.han, _ = sending_han(CH, 60)   # a window no test outlives: nothing let go
        self.rig = Rig(cfg=config(rate_per_s=rate_per_s, burst=burst, queue=32), han=self.han)
        self.clock = self.rig.clock
        self.on_air = []
        recorder = self.han._send_message

        async def send_message(data, deadline):
            await recorder(data, deadline)
            self.on_air.append((self.clock.t_ms, bytes(data)))

        self.han._send_message = send_message
        self.rig.validator.devices.extend(eui(m) for m in METERS)
        self.sleeps = []

        async def sleep_on_the_fake_clock(ms):
            self.sleeps.append(ms)
            self.clock.advance(ms)
            if real_ms:
                await sleep_ms(real_ms)   # lets another task run meanwhile, as a real wait does
            else:
                await asyncio.sleep(0)

        self.refusals = refusals = _refusals()
        self._real_sleep = getattr(refusals, "sleep_ms", None)   # (None: a tree without the pacing)
        refusals.sleep_ms = sleep_on_the_fake_clock
        self.counter = 10

    def close(self):
        if self._real_sleep is None:
            delattr(self.refusals, "sleep_ms")
        else:
            self.refusals.sleep_ms = self._real_sleep
        self.rig.journal.close()
        import gc
        gc.collect()

    async def command(self, answer=True, target=ESME, expires=None):
        """One more command to target, dispatched as soon as the pacing lets it and
        answered at once (its target free for the next) unless answer is False (it stays
        "sending": a refusal of it has it sent again)."""
        self.counter += 1
        res = await self.rig.submit("c%d" % self.counter, self.counter, target=target, expires=expires)
        assert res["status"] == "accepted", res
        n = len(self.on_air)
        for _ in range(100):
            w = await self.rig.relay.dispatch_once()
            if w == 0:
                break
            assert w is not None and w > 0, w
            self.clock.advance(w)
        assert len(self.on_air) > n, "not dispatched"
        if answer:
            self.rig.relay.on_han_message(response_to(self.on_air[-1][1]))
        return "c%d" % self.counter

    def gaps(self, since=0):
        t = [a[0] for a in self.on_air[since:]]
        return [t[i + 1] - t[i] for i in range(len(t) - 1)]


async def test_a_refusal_of_eight_messages_sends_them_again_at_the_pace():
    p = _Paced()
    try:
        for m in METERS[:8]:
            await p.command(False, m)
        first = list(p.on_air)
        assert len(first) == 8 and min(p.gaps()) >= PACE_MS   # the relay's own pacing
        for _ in range(8):
            _refusal(p.han)
        async with p.han._send_lock:
            await p.han._do_resends()
        again = p.on_air[8:]
        # every one again, oldest first, each a token of the pace after the one before
        # (before review r6-4: all eight at the same instant)
        assert [a[1] for a in again] == [a[1] for a in first]
        assert min(p.gaps(7)) >= PACE_MS, p.gaps(7)
        assert again[-1][0] - first[-1][0] >= 8 * PACE_MS
        named = han_named(p.han)
        assert (named["rejected_by_ch"], named["resent"], named["resend_failed"], named["resend_dropped"]) == (8, 8, 0, 0)
        assert [r[1] for r in p.han._recent] == [a[1] for a in first]   # held again, in order
        # the resends took the buckets' tokens: the next command waits for one
        await p.command()
        assert len(p.on_air) == 17 and p.gaps(15)[0] >= PACE_MS, p.gaps(15)
    finally:
        p.close()


async def test_a_flood_of_refusals_never_exceeds_the_pace():
    # a CH (or a node posing as it) refusing everything, again and again, while the relay
    # keeps dispatching: resends and new commands together stay at one per 500 ms, a new
    # command waiting behind the resends included (its own token went by while they went)
    p = _Paced()
    try:
        for m in METERS[:8]:
            await p.command(False, m)
        for m in METERS[8:12]:
            for _ in range(8):
                _refusal(p.han)
            await p.command(False, m)   # han.send: the refused ones first, then it
        named = han_named(p.han)
        assert named["rejected_by_ch"] == 32 and named["resent"] == 32 and named["sent"] == 12
        assert named["resend_dropped"] == 0
        assert len(p.on_air) == 8 + 4 * 9
        assert min(p.gaps()) >= PACE_MS, p.gaps()
        span = p.on_air[-1][0] - p.on_air[0][0]
        assert span >= (len(p.on_air) - 1) * PACE_MS
    finally:
        p.close()


async def test_paced_resends_keep_the_order_and_a_failed_sends_place():
    # A, then B whose send failed after its TransferData may have reached the CH (it holds
    # its place, no body), then C: two refusals are C's and B's; C goes again, paced; B,
    # whose sender had the failure, never; A, delivered, is not charged
    from ppmid.errors import E_DELIVERY
    from ppmid.zigbee import han as H
    p = _Paced()
    try:
        await p.command()                        # A
        recorder = p.han._send_message

        async def failing(data, deadline):
            await recorder(data, deadline)
            raise H.HanError(E_DELIVERY, "the CH did not acknowledge the message")

        p.han._send_message = failing
        await p.command(True, METERS[0])         # B: the relay has E_DELIVERY
        p.han._send_message = recorder
        await p.command(False, METERS[1])        # C: waits for its response
        a, b, c = [x[1] for x in p.on_air]
        _refusal(p.han)
        _refusal(p.han)
        async with p.han._send_lock:
            await p.han._do_resends()
        assert [x[1] for x in p.on_air] == [a, b, c, c]
        assert min(p.gaps()) >= PACE_MS, p.gaps()
        named = han_named(p.han)
        assert (named["resent"], named["resend_failed"], named["send_failed"]) == (1, 0, 1)
        assert [r[1] for r in p.han._recent] == [a, c]
    finally:
        p.close()


async def test_the_dispatch_loop_waiting_behind_slow_resends_is_not_taken_for_stalled():
    # at 1 command per 100 s (limits.rate_per_s 0.01) two resends take 200 s, well past the
    # relay's stall_ms (60 s): the dispatch loop, which would be waiting for the HAN's send
    # lock meanwhile, is kept marked alive by the pace, so the watchdog is still fed
    p = _Paced(rate_per_s=0.01)
    try:
        await p.command(False, METERS[0])
        await p.command(False, METERS[1])
        for _ in range(2):
            _refusal(p.han)
        p.rig.relay._beat("dispatch")   # as the loop does before it dispatches (and waits)
        t0 = p.clock.t_ms
        async with p.han._send_lock:
            await p.han._do_resends()
        assert len(p.on_air) == 4 and p.clock.t_ms - t0 >= 200000 > p.rig.relay.stall_ms
        assert min(p.gaps()) >= 100000, p.gaps()
        assert p.rig.relay.health() == (True, "ok")
    finally:
        p.close()


async def test_a_command_waiting_for_the_resend_tasks_lock_goes_a_token_after_the_resends():
    # the resend task (not send()) holds the send lock through three paced resends while the
    # relay dispatches a new command: it waits for the lock, then for a token again, so it
    # does not follow the last resend at once
    p = _Paced(real_ms=20)
    task = asyncio.create_task(p.han._resend_loop())
    try:
        for m in METERS[:3]:
            await p.command(False, m)
        for _ in range(3):
            _refusal(p.han)
        for _ in range(200):            # the task gathers the burst (50 ms), takes the lock
            if p.han._send_lock.locked():
                break
            await sleep_ms(5)
        # while it holds it, a resend waits for its pace (the only wait under the lock here)
        assert p.han._send_lock.locked() and han_named(p.han)["resent"] < 3
        await p.command()               # dispatched while the resends go
        assert han_named(p.han)["resent"] == 3 and len(p.on_air) == 7
        assert [a[1] for a in p.on_air[3:6]] == [a[1] for a in p.on_air[:3]]
        assert min(p.gaps()) >= PACE_MS, p.gaps()
    finally:
        task.cancel()
        await sleep_ms(0)
        p.close()


# ---- review r10: what the pace judges, and what waits behind it -------------------------
def _house_during_pace(p):
    # the board's house loop (relay.check_timers every 500 ms) runs while a pace sleeps
    paced_sleep = p.refusals.sleep_ms

    async def sleep_and_house(ms):
        await paced_sleep(ms)
        p.rig.relay.check_timers()

    p.refusals.sleep_ms = sleep_and_house


async def _dispatch(p, times=1):
    # the dispatch loop, the clock moved to each wait it names (a token, a backoff)
    for _ in range(200):
        w = await p.rig.relay.dispatch_once()
        if w == 0:
            times -= 1
            if not times:
                return
        else:
            assert w is not None, "nothing to dispatch"
            p.clock.advance(w)
    raise AssertionError("not dispatched")


def _statuses(p, id):
    seq = p.rig.journal.by_id[id].seq
    return [x[1] for x in p.rig.relay.to_publish if x[0] == seq]   # (the outbox's status items)


async def test_a_resend_whose_command_expires_while_it_waits_is_not_sent():
    # r10-1: at 0.1/s (10 s a token) a command expiring 5 s after it went is refused by the
    # CH; its resend waits for a token, and by the token it has expired: the relay would
    # never relay it then, and the HAN no longer does (it went 5 s after its expiry). The
    # relay's budget then ends it "timeout", no copy (it has expired)
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.1)
    try:
        expires = p.clock.time() + 5
        id = await p.command(False, expires=expires)
        t0 = p.clock.t_ms
        _refusal(p.han)
        async with p.han._send_lock:
            await p.han._do_resends()
        named = han_named(p.han)
        assert len(p.on_air) == 1 and (named["resent"], named["resend_dropped"], named["resend_failed"]) == (0, 1, 0)
        assert 5000 <= p.clock.t_ms - t0 < 6000, p.clock.t_ms - t0    # dropped once it expired
        assert p.han._recent == [] and p.han._rejected == {}            # nothing held for it
        p.clock.advance(p.rig.relay.budget_s * 1000)
        p.rig.relay.check_timers()
        e = p.rig.journal.by_id[id]
        assert e.state == J.TIMED_OUT and e.resends == 0 and _statuses(p, id)[-1] == "timeout"
        assert len(p.on_air) == 1
    finally:
        p.close()


async def test_a_resend_whose_budget_ends_while_it_waits_leaves_it_to_the_relays_copy():
    # r10-1: at 0.01/s (100 s a token), the house loop running: the command's budget (25 s)
    # ends while its resend waits: the relay queues its copy, and the HAN drops its resend
    # (the message went twice, the HAN's resend at 100 s after the relay's copy, or after
    # its "timeout" had an expiry passed). The copy is the only second one on air
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01)
    try:
        id = await p.command(False)
        t0 = p.clock.t_ms
        _refusal(p.han)
        _house_during_pace(p)
        async with p.han._send_lock:
            await p.han._do_resends()
        e = p.rig.journal.by_id[id]
        assert len(p.on_air) == 1 and han_named(p.han)["resend_dropped"] == 1
        assert e.state == J.QUEUED and e.resends == 1
        assert p.clock.t_ms - t0 <= (p.rig.relay.budget_s + 1) * 1000     # not a token's 100 s
        await _dispatch(p)                                                 # the relay's copy
        assert len(p.on_air) == 2 and p.on_air[1][1] == p.on_air[0][1] and e.state == J.SENDING
    finally:
        p.close()


async def test_a_resend_of_a_command_answered_while_it_waits_is_not_sent():
    # r10-1: the response comes while the resend waits for its token (the refusal was
    # stale, or forged): the meter has the command, the HAN does not send it again
    p = _Paced()
    paced_sleep = p.refusals.sleep_ms

    async def sleep_and_answer(ms):
        if len(p.rig.relay.to_publish) < 3:
            p.rig.relay.on_han_message(response_to(p.on_air[0][1]))
        await paced_sleep(ms)

    try:
        id = await p.command(False)
        _refusal(p.han)
        p.refusals.sleep_ms = sleep_and_answer
        async with p.han._send_lock:
            await p.han._do_resends()
        assert _statuses(p, id)[-1] == "response"
        assert len(p.on_air) == 1 and han_named(p.han)["resend_dropped"] == 1
    finally:
        p.close()


async def test_a_resend_of_a_command_the_relay_hands_over_again_as_its_copy_is_not_sent():
    # r10-1: the command's budget ends while its resend sleeps for a token, and within that
    # sleep the relay queues its copy and dispatches it (a token came): the copy waits for
    # the send lock the resend holds. The resend sees a command "sending" again, but the
    # relay's own copy of it (Relay._handing): not sent, or the message would go three times
    import asyncio
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01)
    paced_sleep = p.refusals.sleep_ms
    copy = []

    async def sleep_then_copy(ms):
        await paced_sleep(ms)
        if not copy and p.clock.t_ms - t0 >= p.rig.relay.budget_s * 1000:
            p.rig.relay.check_timers()              # the budget ended: its copy queued
            assert e.state == J.QUEUED
            p.clock.advance(100000)                 # a token for it
            copy.append(asyncio.create_task(p.rig.relay.dispatch_once()))
            for _ in range(5):
                await asyncio.sleep(0)              # _send: "sending", then the HAN's lock
            assert e.state == J.SENDING and p.rig.relay._handing == e.seq

    try:
        id = await p.command(False)
        e = p.rig.journal.by_id[id]
        t0 = p.clock.t_ms
        _refusal(p.han)
        p.refusals.sleep_ms = sleep_then_copy
        async with p.han._send_lock:
            await p.han._do_resends()
        assert copy and han_named(p.han)["resend_dropped"] == 1 and len(p.on_air) == 1
        assert await copy[0] == 0                   # the copy goes once the lock is free
        assert [a[1] for a in p.on_air] == [p.on_air[0][1]] * 2 and e.resends == 1
        assert e.state == J.SENDING and p.rig.relay._handing is None
    finally:
        p.close()


def _slow_resends(p, ms):
    # each resend takes ms on the fake clock to go (a GBT message, the module's retries: up
    # to send_timeout_s), the house loop running every second meanwhile
    recorder = p.han._send_message

    async def slow(data, deadline):
        if any(a[1] == bytes(data) for a in p.on_air):
            for _ in range(ms // 1000):
                p.clock.advance(1000)
                p.rig.relay.check_timers()
        await recorder(data, deadline)

    p.han._send_message = slow


async def _a_refused_and_n_accepted(p, expires_in=None):
    # A from another originator (ACB) to METERS[0], sent and refused by the CH; N, the
    # supplier's to the ESME, accepted (expiring expires_in s on, or never); the house loop
    # runs while a pace sleeps. Returns N's id
    from test_relay_support import ACB
    p.counter += 1
    res = await p.rig.submit("a", p.counter, target=METERS[0], originator=ACB)
    assert res["status"] == "accepted", res
    await _dispatch(p)
    _refusal(p.han)
    p.counter += 1
    n = "c%d" % p.counter
    res = await p.rig.submit(n, p.counter, expires=None if expires_in is None else p.clock.time() + expires_in)
    assert res["status"] == "accepted", res
    _house_during_pace(p)
    return n


async def _behind_a_slow_round(p, expires_in=None):
    # burst 2, the house loop running: A from another originator (ACB) to METERS[0], refused
    # by the CH; N dispatched at once (the supplier's and the ESME's tokens are free):
    # han.send sends A's resend first (a second token of ACB and of METERS[0]: it goes at
    # once, charged while N waits), which takes 30 s to go, longer than a budget (25 s);
    # then N waits for a token again (the burst's second: at once). Returns N's id
    n = await _a_refused_and_n_accepted(p, expires_in)
    _slow_resends(p, 30000)
    await _dispatch(p)
    return n


async def test_a_command_waiting_behind_paced_resends_is_not_sent_twice():
    # r10-2: N's 25 s budget ran out while han.send held it (30 s behind A's resend): the
    # relay queued it for a copy, then han.send sent N, and the dispatch its copy (N twice
    # on air, a copy of MAX_RESENDS used up). Its budget now runs once the HAN link has it
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01, burst=2)
    try:
        t_dispatch = p.clock.t_ms
        n = await _behind_a_slow_round(p)
        e = p.rig.journal.by_id[n]
        n_bytes = p.on_air[-1][1]
        assert len(p.on_air) == 3 and p.on_air[1][1] == p.on_air[0][1]   # A, its resend, N
        assert p.clock.t_ms - t_dispatch >= 30000 > p.rig.relay.budget_s * 1000   # N held 30 s
        assert e.state == J.SENDING and e.resends == 0 and _statuses(p, n) == ["accepted", "relayed"]
        assert p.clock.diff(p.rig.relay._deadline[e.seq], p.clock.ms()) == p.rig.relay.budget_s * 1000
        p.clock.advance(p.rig.relay.budget_s * 1000 - 1000)
        p.rig.relay.check_timers()
        assert e.state == J.SENDING                                # its budget is not over yet
        assert [a[1] for a in p.on_air].count(n_bytes) == 1
        p.clock.advance(1000)
        p.rig.relay.check_timers()
        assert e.state == J.QUEUED and e.resends == 1              # now it is: one copy, later
    finally:
        p.close()


async def test_a_command_that_expires_behind_paced_resends_is_not_sent():
    # r10-2: N expires 10 s after its dispatch, while han.send waits behind the round (30
    # s): its second pace raises E_EXPIRED, N is never on air and fails E_EXPIRED, as the
    # dispatch fails one that expired in the queue (it went 20 s after its expiry)
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01, burst=2)
    try:
        n = await _behind_a_slow_round(p, expires_in=10)
        e = p.rig.journal.by_id[n]
        assert len(p.on_air) == 2 and p.on_air[1][1] == p.on_air[0][1]   # A and its resend only
        assert e.state == J.FAILED and e.error == "E_EXPIRED" and _statuses(p, n)[-1] == "failed"
        named = han_named(p.han)
        assert (named["sent"], named["send_failed"]) == (1, 0)     # nothing of N went, nor failed
        assert p.rig.relay.counters[8] == 0                        # not a link's retry
        assert e.target not in p.rig.relay.in_flight and p.rig.relay._handing is None
    finally:
        p.close()


async def test_a_copy_that_expires_behind_paced_resends_times_out():
    # r10-2, a copy: the first went and may have executed, so one expiring behind the
    # round is not "failed ... never relayed" but "timeout", as requeue rules
    from ppmid.relay import journal as J
    from test_relay_support import ACB
    p = _Paced(rate_per_s=0.01, burst=2)
    try:
        n = await p.command(False, expires=p.clock.time() + 40)    # N to the ESME, at T0
        e = p.rig.journal.by_id[n]
        p.clock.advance(20000)
        p.counter += 1
        res = await p.rig.submit("a", p.counter, target=METERS[0], originator=ACB)
        assert res["status"] == "accepted", res
        await _dispatch(p)                      # A, at T0 + 20 s
        _refusal(p.han)
        p.clock.advance(5000)                   # T0 + 25 s
        p.rig.relay.check_timers()              # N's budget over: its copy queued (not A's)
        assert e.state == J.QUEUED and e.resends == 1
        _house_during_pace(p)
        _slow_resends(p, 30000)
        await _dispatch(p)                      # N's copy behind A's resend (30 s), then its pace
        assert e.state == J.TIMED_OUT and _statuses(p, n)[-1] == "timeout"
        assert [a[1] for a in p.on_air].count(p.on_air[0][1]) == 1   # the copy never went
        assert han_named(p.han)["resent"] == 1
    finally:
        p.close()


async def test_a_send_behind_paced_resends_has_its_whole_send_timeout():
    # r10-3: han.send's deadline (send_timeout_s) was taken before the paced round and its
    # second pace (30 s here): N reached _send_message past it, and a transient refusal of
    # the module (no buffers, for now), which a fresh deadline retries, failed it at once
    from ppmid.zigbee import han as H
    p = _Paced(rate_per_s=0.01, burst=2)
    real_ticks = H.ticks_ms
    H.ticks_ms = p.clock.ms           # the HAN's deadlines on the fake clock too
    left = []
    recorder = p.han._send_message

    async def send_message(data, deadline):
        left.append(H.ticks_diff(deadline, H.ticks_ms()))
        await recorder(data, deadline)

    p.han._send_message = send_message
    try:
        await _behind_a_slow_round(p)
        assert len(p.on_air) == 3 and left[-1] == int(p.han.send_timeout_s * 1000), left
    finally:
        H.ticks_ms = real_ticks
        p.close()


async def test_a_refusal_that_came_while_a_resend_waited_is_charged_to_a_frame_sent_before_it():
    # r10-4: A, then B through one tunnel; the CH refuses both, the second refusal arriving
    # while B's resend waits for its token. It names a frame the CH had when it came (A's),
    # never B's resend sent after it: A goes again (before, B three times and A never)
    p = _Paced()
    paced_sleep = p.refusals.sleep_ms
    fired = []

    async def sleep_and_refuse(ms):
        if not fired:
            fired.append(1)
            _refusal(p.han)          # the CH's second TransferDataError, for A
        await paced_sleep(ms)

    try:
        await p.command(False, METERS[0])    # A
        await p.command(False, METERS[1])    # B
        a, b = [x[1] for x in p.on_air]
        _refusal(p.han)                      # the first, for B (the newest)
        p.refusals.sleep_ms = sleep_and_refuse
        async with p.han._send_lock:
            await p.han._do_resends()        # B, paced; the second refusal meanwhile
        assert fired and p.han._rejected
        async with p.han._send_lock:
            await p.han._do_resends()        # A
        assert ["A" if x[1] == a else "B" for x in p.on_air] == ["A", "B", "B", "A"]
        named = han_named(p.han)
        assert (named["rejected_by_ch"], named["resent"], named["resend_dropped"]) == (2, 2, 0)
        assert [r[1] for r in p.han._recent] == [b, a]         # held again, in the order sent
    finally:
        p.close()


async def test_a_top_up_after_a_refused_command_is_never_two_frames_in_a_token():
    # r10-5: A to the ESME (answered), then the CH refuses A while a top-up for the ESME is
    # dispatched: the top-up (its tokens taken at dispatch, then waiting for the send lock)
    # followed A's paced resend at once, two frames to the meter in one token. A's resend
    # is no longer sent (its command is over: r10-1), and a resend of one still waiting for
    # its response holds the meter (one command in flight a meter), so no top-up to it can
    # be behind it
    import asyncio
    from test_relay_support import Rig, KEY
    from test_topup import topup_config, make
    from ppmid import topup
    p = _Paced(real_ms=20)
    p.rig.journal.close()
    p.rig = Rig(cfg=topup_config(rate_per_s=2.0, burst=1, queue=32), han=p.han)
    p.clock = p.rig.clock
    p.han._up = p.han._net_up = True
    p.han._link.connected = True
    p.han._max_payload = 100

    async def send_zcl(dest, zcl, cluster=None, endpoint=None, *a):
        p.on_air.append((p.clock.t_ms, "topup"))

    p.han._send_zcl = send_zcl
    task = asyncio.create_task(p.han._resend_loop())
    try:
        await p.command()                       # A to the ESME, answered
        _refusal(p.han)
        for _ in range(200):                    # the resend task takes the lock, A's resend waits
            if p.han._send_lock.locked():
                break
            await sleep_ms(5)
        res = await p.rig.accept_env(topup.sign(KEY, "t-1", make(value=250), ESME, None))
        assert res["status"] == "accepted", res
        await _dispatch(p)
        assert [x if x == "topup" else "A" for _, x in p.on_air] == ["A", "topup"]
        assert p.gaps()[-1] >= PACE_MS and han_named(p.han)["resend_dropped"] == 1
    finally:
        task.cancel()
        await sleep_ms(0)
        p.close()



# ---- review r14: a resend's budget, a top-up behind a round, a drop's token -------------
async def test_a_late_resend_has_a_whole_budget_before_the_relays_copy():
    # r14-1: A (unanswered) at T0, the CH refuses it, and its resend goes 24.6 s later (the
    # send lock or the pace held it). A's budget used to end 0.4 s after the resend, and the
    # relay's copy followed it at once: the meter got A twice within a second. The budget
    # now starts again when the resend goes (its send_timeout_s counted in: the HAN does not
    # say when the resend is through)
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=1.0)
    try:
        id = await p.command(False, METERS[0])
        e = p.rig.journal.by_id[id]
        t0 = p.clock.t_ms
        _refusal(p.han)
        p.clock.advance(24600)
        async with p.han._send_lock:
            await p.han._do_resends()
        t_resend = p.on_air[-1][0]
        assert len(p.on_air) == 2 and t_resend - t0 == 24600
        budget_ms = (p.rig.relay.budget_s + p.han.send_timeout_s) * 1000
        for at in (25100, 49000, t_resend - t0 + budget_ms - 1):
            p.clock.advance(t0 + at - p.clock.t_ms)
            p.rig.relay.check_timers()            # the house loop
            assert e.state == J.SENDING and e.resends == 0, at
        assert await p.rig.relay.dispatch_once() is None and len(p.on_air) == 2   # no copy
        p.clock.advance(1)
        p.rig.relay.check_timers()                # a whole budget after the resend: now
        assert e.state == J.QUEUED and e.resends == 1
        await _dispatch(p)
        assert [a[1] for a in p.on_air] == [p.on_air[0][1]] * 3
    finally:
        p.close()


async def test_a_budget_ending_while_the_resend_is_being_sent_queues_no_copy():
    # r14-1: A's budget ends while its resend is inside _send_message (a GBT message, the
    # module's retries: up to send_timeout_s). The house loop used to queue A's copy then,
    # and the dispatch sent it right after the resend: A three times on air
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=1.0)
    recorder = p.han._send_message
    copy = []

    async def slow_send(data, deadline):
        if len(p.on_air) == 1 and not copy:   # the resend, which takes 25 s to go
            p.clock.advance(25000)
            p.rig.relay.check_timers()
            # the dispatch loop meanwhile (a task: a copy would wait for the lock held here)
            copy.append(asyncio.create_task(p.rig.relay.dispatch_once()))
            for _ in range(5):
                await asyncio.sleep(0)
        await recorder(data, deadline)

    try:
        id = await p.command(False, METERS[0])
        e = p.rig.journal.by_id[id]
        _refusal(p.han)
        p.han._send_message = slow_send
        async with p.han._send_lock:
            await p.han._do_resends()
        assert await copy[0] is None          # nothing to dispatch: A is still sending
        assert e.state == J.SENDING and e.resends == 0
        assert [a[1] for a in p.on_air] == [p.on_air[0][1]] * 2 and han_named(p.han)["resent"] == 1
    finally:
        p.close()


class _TopUpBehindARound:
    """r14-2's rig, at 0.05/s (20 s a token), burst 1: A to the GSME, unanswered, refused by
    the CH; the resend task takes the send lock and A's resend waits 20 s for the GSME's
    token. `async with` it: it yields the _Paced once the lock is held; a top-up for the
    ESME (whose tokens are free) is dispatched meanwhile and waits for the lock."""

    async def __aenter__(self):
        from test_relay_support import Rig
        from test_topup import topup_config, GSME
        p = self.p = _Paced(rate_per_s=0.05, real_ms=20)
        p.rig.journal.close()
        p.rig = Rig(cfg=topup_config(rate_per_s=0.05, burst=1, queue=32), han=p.han)
        p.clock = p.rig.clock
        p.han._up = p.han._net_up = True
        p.han._link.connected = True
        p.han._max_payload = 100

        async def send_zcl(dest, zcl, cluster=None, endpoint=None, *a):
            p.on_air.append((p.clock.t_ms, "topup"))

        p.han._send_zcl = send_zcl
        self.task = asyncio.create_task(p.han._resend_loop())
        await p.command(False, target=GSME)     # A to the GSME, no response
        _refusal(p.han)
        for _ in range(200):                    # the resend task holds the lock, A's resend waits
            if p.han._send_lock.locked():
                break
            await sleep_ms(5)
        assert p.han._send_lock.locked()
        return p

    async def __aexit__(self, *exc):
        self.task.cancel()
        await sleep_ms(0)
        self.p.close()


def _topup(p, expires):
    from test_relay_support import KEY
    from test_topup import make
    from ppmid import topup
    return p.rig.accept_env(topup.sign(KEY, "t-1", make(value=250), ESME, expires))


async def test_a_top_up_that_expires_behind_a_paced_round_is_not_sent():
    # r14-2: a top-up expiring 5 s after it was accepted, behind the round, went ~15 s after
    # its expiry, "relayed". Now judged once the lock is its: failed E_EXPIRED, never on air
    from ppmid.relay import journal as J
    async with _TopUpBehindARound() as p:
        expires = p.clock.time() + 5
        res = await _topup(p, expires)
        assert res["status"] == "accepted", res
        await _dispatch(p)                      # the top-up: dispatched at once, then the lock
        e = p.rig.journal.by_id["t-1"]
        assert p.clock.time() > expires         # the lock was its only after its expiry
        assert e.state == J.FAILED and e.error == "E_EXPIRED" and _statuses(p, "t-1") == ["accepted", "failed"]
        assert [x for _, x in p.on_air].count("topup") == 0 and len(p.on_air) == 2    # A and its resend
        assert not p.rig.relay.in_flight.get(e.target) and p.rig.relay._handing is None
        assert p.rig.relay.counters[8] == 0     # not a link's retry


async def test_a_top_up_behind_a_paced_round_within_its_expiry_goes():
    # r14-2, the other side: the same round, a top-up expiring a minute on goes once the
    # lock is free ("relayed"), judged and not failed
    async with _TopUpBehindARound() as p:
        res = await _topup(p, p.clock.time() + 60)
        assert res["status"] == "accepted", res
        await _dispatch(p)
        assert [x if x == "topup" else "A" for _, x in p.on_air] == ["A", "A", "topup"]
        assert _statuses(p, "t-1") == ["accepted", "relayed"]


async def test_a_resend_dropped_at_once_costs_the_next_command_no_second_token():
    # r14-3: rate 0.1/s, burst 1. A to METERS[0], refused by the CH, then answered (the
    # refusal was stale, or forged): its resend is dropped without a token. N, from the
    # same originator, is dispatched at its token: han.send drops A's resend, and N used
    # to wait for a token again (10 s, ten 1 s sleeps) and take a second one. No resend
    # took a token while the HAN held N: N's own is still good, and it goes at once
    p = _Paced(rate_per_s=0.1)
    try:
        await p.command(False, METERS[0])
        _refusal(p.han)
        p.rig.relay.on_han_message(response_to(p.on_air[0][1]))   # A answered
        p.counter += 1
        res = await p.rig.submit("c%d" % p.counter, p.counter, target=METERS[1])
        assert res["status"] == "accepted", res
        w = await p.rig.relay.dispatch_once()
        while w:                                # N's token (10 s after A's)
            p.clock.advance(w)
            w = await p.rig.relay.dispatch_once()
        t_token = p.clock.t_ms
        assert han_named(p.han)["resend_dropped"] == 1 and len(p.on_air) == 2
        assert p.on_air[-1][0] == t_token and p.sleeps == []        # N at its token, no wait
        # one token taken for N: the originator's next is 10 s on, not 20
        orig = p.rig.journal.by_id["c%d" % p.counter].originator
        assert p.rig.relay.originator_buckets.wait_ms(orig, p.clock.ms()) < 11000   # (two: 20 s)
    finally:
        p.close()


async def _behind_a_dropped_resend(p, expires_in=None):
    # 0.01/s (100 s a token), burst 1, the house loop running: A from ACB to METERS[0], sent
    # and refused by the CH; N (the supplier's, to the ESME: its tokens free) dispatched at
    # once: han.send's round first, where A's resend waits for METERS[0]'s token (100 s) until
    # A's budget ends (25 s): dropped, no token taken. Returns N's id
    n = await _a_refused_and_n_accepted(p, expires_in)
    await _dispatch(p)
    return n


async def test_a_command_that_expires_while_a_resend_waits_and_is_dropped_is_not_sent():
    # r14-3's fix keeps r10-2's judge: a round whose resend waited 25 s and was dropped took
    # no token, so N does not wait again, but it is judged again: it expired 10 s after its
    # dispatch, so it is never on air and fails E_EXPIRED
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01)
    try:
        t0 = p.clock.t_ms
        n = await _behind_a_dropped_resend(p, expires_in=10)
        e = p.rig.journal.by_id[n]
        assert han_named(p.han)["resend_dropped"] == 1 and len(p.on_air) == 1   # A only
        assert p.clock.t_ms - t0 >= p.rig.relay.budget_s * 1000
        assert e.state == J.FAILED and e.error == "E_EXPIRED" and _statuses(p, n)[-1] == "failed"
    finally:
        p.close()


async def test_a_command_behind_a_resend_dropped_after_a_wait_goes_at_once():
    # the same round, N without an expiry: it goes as soon as A's resend is dropped (25 s),
    # not a token later (before r14-3: 100 s more, and a second token)
    from ppmid.relay import journal as J
    p = _Paced(rate_per_s=0.01)
    try:
        t0 = p.clock.t_ms
        n = await _behind_a_dropped_resend(p)
        e = p.rig.journal.by_id[n]
        assert han_named(p.han)["resend_dropped"] == 1 and len(p.on_air) == 2
        waited = p.on_air[-1][0] - t0
        assert p.rig.relay.budget_s * 1000 <= waited <= (p.rig.relay.budget_s + 2) * 1000, waited
        assert e.state == J.SENDING and _statuses(p, n) == ["accepted", "relayed"]
    finally:
        p.close()
