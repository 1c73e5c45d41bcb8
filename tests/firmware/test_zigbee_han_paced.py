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
from ppmid.relay import refusals
from ppmid.zigbee import tunnel as T
from ppmid.zigbee.han_counters import han_named
from han_rig import sending_han
from test_relay_support import Rig, config, response_to

CH = 0x0000
APS_ENCRYPTED = 0x0020
PACE_MS = 500      # rate_per_s 2, burst 1: one message a target (and an originator) per 500 ms


def _refusal(han):
    # the CH's TransferDataError for our newest TransferData, as the NCP delivers it
    tid = han.tunnel.tunnel_id
    frame = T.zcl_header(7, 0x03, False) + bytes((tid & 0xFF, tid >> 8, T.WRONG_DEVICE))
    han._incoming({"sender": CH, "message": frame,
                   "aps": {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "options": APS_ENCRYPTED,
                           "group": 0}})


class _Paced:
    """The relay over the HAN at 2/s, burst 1; on_air: (fake ms, bytes) of every message the
    HAN put on air, first sends and resends."""

    def __init__(self, rate_per_s=2.0, real_ms=0):
        self.han, _ = sending_han(CH, 60)   # a window no test outlives: nothing let go
        self.rig = Rig(cfg=config(rate_per_s=rate_per_s, burst=1, queue=32), han=self.han)
        self.clock = self.rig.clock
        self.on_air = []
        recorder = self.han._send_message

        async def send_message(data, deadline):
            await recorder(data, deadline)
            self.on_air.append((self.clock.t_ms, bytes(data)))

        self.han._send_message = send_message
        self.sleeps = []

        async def sleep_on_the_fake_clock(ms):
            self.sleeps.append(ms)
            self.clock.advance(ms)
            if real_ms:
                await sleep_ms(real_ms)   # lets another task run meanwhile, as a real wait does
            else:
                await asyncio.sleep(0)

        self._real_sleep = getattr(refusals, "sleep_ms", None)   # (None: a tree without the pacing)
        refusals.sleep_ms = sleep_on_the_fake_clock
        self.counter = 10

    def close(self):
        if self._real_sleep is None:
            delattr(refusals, "sleep_ms")
        else:
            refusals.sleep_ms = self._real_sleep
        self.rig.journal.close()
        import gc
        gc.collect()

    async def command(self):
        """One more command to the ESME, dispatched as soon as the pacing lets it and
        answered at once (its target free for the next)."""
        self.counter += 1
        res = await self.rig.submit("c%d" % self.counter, self.counter)
        assert res["status"] == "accepted", res
        n = len(self.on_air)
        for _ in range(100):
            w = await self.rig.relay.dispatch_once()
            if w == 0:
                break
            assert w is not None and w > 0, w
            self.clock.advance(w)
        assert len(self.on_air) > n, "not dispatched"
        self.rig.relay.on_han_message(response_to(self.on_air[-1][1]))

    def gaps(self, since=0):
        t = [a[0] for a in self.on_air[since:]]
        return [t[i + 1] - t[i] for i in range(len(t) - 1)]


async def test_a_refusal_of_eight_messages_sends_them_again_at_the_pace():
    p = _Paced()
    try:
        for _ in range(8):
            await p.command()
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
        assert (named["rejected_by_ch"], named["resent"], named["resend_failed"]) == (8, 8, 0)
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
        for _ in range(8):
            await p.command()
        for _ in range(4):
            for _ in range(8):
                _refusal(p.han)
            await p.command()       # han.send: the refused ones first, then it
        named = han_named(p.han)
        assert named["rejected_by_ch"] == 32 and named["resent"] == 32 and named["sent"] == 12
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
        await p.command()                        # B: the relay has E_DELIVERY
        p.han._send_message = recorder
        await p.command()                        # C
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
        await p.command()
        await p.command()
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
        for _ in range(3):
            await p.command()
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
