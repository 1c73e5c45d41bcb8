# The relay core: ties intake (MQTT, NFC) to the HAN tunnel and back.
#
#   accept: envelope mac -> id dedupe -> expiry -> GBCS validation (counter above the
#           committed one, and no live command with the same one) -> admission (queue,
#           pacing) -> journal append -> "accepted"
#   dispatch: paced, one in flight per target; expiry checked again; "sending" record
#           written BEFORE the bytes go to the HAN link (so they never go twice) -> "relayed"
#   HAN protection (docs/relay.md): a command goes only when its target's and its
#           originator's token buckets (ratelimit.py) both hold a token and no other
#           command to its target is in flight; E_BUSY beyond limits.queue waiting; E_RATE
#           when pacing cannot meet its expiry (better refused now than failed later)
#   receive: responses correlated by (originator, recipient swapped, same counter) through
#           the journal, and the command's message code (review r4 R4-4); a response
#           commits its command's anti-replay counter (the device answered, so it
#           authenticated the command: review_r2 R2-1); alerts and anything uncorrelated
#           -> alert topic
#   timers: response budget -> "timeout" (a late response is still published, late: true)
#   publish: every status change, QoS 1, through the outbox (outbox.py: functions of the
#           relay, which holds the queue, to_publish, and the publisher); a final status
#           acknowledged -> journal "done"
#   health: loop heartbeats and link checks decide whether the watchdog is fed
#
# No board imports: config, journal, validator, HAN link, publisher, clock, wdt and the
# envelope key are injected. Topic names and payloads: ppmid.mqtt.contract. Policy and
# formats: docs/relay.md.
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

from micropython import const

from ppmid.errors import PpmidError, E_BUSY, E_EXPIRED, E_TOO_LARGE, E_CLOCK, E_AUTH
from ppmid.clock import wait_event_ms, sleep_ms, SET_AFTER
from ppmid import envelope as envmod
from ppmid.mqtt.contract import status_json, alert_json
from ppmid.relay import journal as J
from ppmid.relay import outbox

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_RECEIVED = const(0)
_C_ACCEPTED = const(1)
_C_RELAYED = const(2)
_C_ANSWERED = const(3)
_C_LATE = const(4)
_C_TIMEOUTS = const(5)
_C_DUPLICATES = const(11)
_C_DUPLICATE_RESPONSES = const(12)
_C_UNMATCHED = const(13)
_C_ALERTS = const(14)
_C_RX_BAD = const(15)
_C_MORE = const(22)

E_RATE = "E_RATE"
E_STALE = "E_STALE"

# What is done when something is refused or goes wrong (the intake's refusals, a full
# queue, a send the HAN link refuses, a failed command's sentence): relay/refusals.py,
# loaded when the first of these happens.

FINAL = ("response", "failed", "already-executed")
_RECENT = const(16)
# bytes of response bodies the recent results hold, for a road that collects later (an
# NFC phone whose session ran out, a tag's result, the wired road between two polls):
# newest first, and the newest whatever its size. Without a bound, 16 profile-data reads
# of up to limits.max_gbcs each would outgrow a board's whole heap. 8 KB: the default
# max_gbcs, or a few ordinary responses; a phone comes back within minutes and the wired
# road keeps copies of its own (wired.keep_bytes). MQTT results hold none (_finish).
# Policy: docs/relay.md "Results"
_RECENT_BODY_BYTES = const(8192)
_CLOCK_POLL_MS = const(1000)   # how often held commands look again for a set clock
_LOAD_GRACE_S = const(10)      # a budget end's wait for resend.py to load, then "timeout" inline
_RETRY_MAX_MS = const(30000)   # the longest link back-off: relay/refusals.py's (a private const cannot be imported)

# the relay's state (info "state"; docs/relay.md "Health"): "starting", "recovering" (at
# boot: relay/recovery.py), "running", "degraded" (a link down within its grace), "fault"
# (the relay never stops: the board resets; tests end one with test_relay_support.stop_relay)


class RelayError(PpmidError):
    pass


class Relay:
    """See the module comment; the constructor's arguments: relay/recovery.py set_up."""

    def __init__(self, *args, **options):
        # the set-up runs once, at boot: its code is boot-only (relay/recovery.py's set_up,
        # which says what the arguments are)
        from ppmid.relay.recovery import set_up
        set_up(self, *args, **options)

    # ---- logging -------------------------------------------------------------------------
    def log(self, level, msg):
        """Every line to the console; over MQTT within the outbox's rate limit."""
        if self.console is not None:
            self.console("relay %s: %s" % (level, msg))
        outbox.log(self, level, msg)

    # ---- intake --------------------------------------------------------------------------
    async def accept(self, env, via="mqtt"):
        """Intake entry point for every transport (docs/relay.md, "Wiring"). Returns once
        the command is on flash (its status dict: {"id", "status"}; for a redelivered id,
        the status it has reached), or raises a PpmidError with the refusal's code. The
        MQTT intake publishes its own `rejected` status; for other roads the relay does.

        When limits.queue commands already wait for the HAN, it waits (up to
        admit_wait_ms) for one of them to go before refusing with E_BUSY: the intake's
        acknowledgement is withheld meanwhile, so a backlog (a broker handing over what
        it kept during an outage) is paced, not refused."""
        if self.admit_wait_ms > 0 and self._queue_full():
            from ppmid.relay import refusals
            await refusals.wait_for_room(self, env, via)
        return self.accept_now(env, via)

    def _queue_full(self):
        n = 0
        for x in self.journal.live.values():
            if x.state == J.QUEUED:
                n += 1
        return n >= self.queue_max

    def _verify(self, env, via):
        # the MAC: the sender when keys per DCC User are configured, else None; raises
        if self.senders:
            return self.senders.verify(env, via)
        if env.kid is not None:
            from ppmid.relay import refusals
            raise refusals.refusal(E_AUTH, env.kid)
        return env.verify(self.key)

    def accept_now(self, env, via="mqtt"):
        self.counters[_C_RECEIVED] += 1
        try:
            return self._accept(env, via)
        except Exception as exc:
            from ppmid.relay import refusals
            raise refusals.refused(self, env, exc, via)

    def topups(self):
        """The top-up road (ppmid.relay.topups), imported on first use: a gateway that
        never gets a top-up does not hold its code."""
        if self._topups is None:
            from ppmid.relay.topups import TopupRoad
            self._topups = TopupRoad(self)
        return self._topups

    def _accept(self, env, via):
        envmod.check_id(env.id)
        topup = getattr(env, "utrn", None) is not None  # a TopupEnvelope (ppmid.topup)
        if not topup and len(env.gbcs) > self.max_gbcs:
            from ppmid.relay import refusals
            raise refusals.refusal(E_TOO_LARGE, self.max_gbcs)
        # mac only: a redelivered command must still find its status
        sender = self._verify(env, via)
        # a redelivery: its status, "again" (the roads hand a top-up's figures only to the
        # accept that journaled it); with keys per DCC User, only to the sender that owns
        # the id (relay/senders.py check_known: review_w6-1)
        e = self.journal.by_id.get(env.id)
        if e is not None:
            if self.senders:
                self.senders.check_known(env.id, sender, e.topup)
            self.counters[_C_DUPLICATES] += 1
            return {"id": e.id, "status": self._result(e, False)["status"], "again": True}
        r = self._recent_result(env.id)
        if r is not None and r["status"] != "rejected":  # a refused id may be tried again
            if self.senders:
                self.senders.check_known(env.id, sender, "topup" in r)
            self.counters[_C_DUPLICATES] += 1
            return {"id": env.id, "status": r["status"], "again": True}
        if self.state == "fault":
            # the watchdog resets the board soon; a command taken now could be lost with
            # the journal's unwritten state, or its counter never recorded. After the id
            # lookup: a redelivery gets its status, not a refusal (review 84 F3)
            from ppmid.relay import refusals
            raise refusals.restarting()
        now_s = self.clock.time()
        if env.expires is not None and not self.clock.is_set():
            from ppmid.relay import refusals
            raise refusals.refusal(E_CLOCK)
        if env.expires is not None and now_s >= env.expires:
            from ppmid.relay import refusals
            raise refusals.refusal(E_EXPIRED, env.expires, now_s)
        if topup:
            msg = None
            if sender:
                self.senders.check_topup(sender)
            target, orig, counter, body = self.topups().admit(env)
        else:
            msg = self.validator.check(env.gbcs)
            if sender:
                self.senders.check(sender, msg)
            target = bytes(msg.recipient)
            orig = bytes(msg.originator)
            counter = bytes(msg.counter_bytes)
            body = env.gbcs
            if self.journal.was_spent(orig + target + counter):
                # a command that ended unanswered had it: whoever kept its bytes must not
                # have it relayed again (review r4 R4-1; Journal.spend)
                from ppmid.relay import refusals
                raise refusals.spent_replay(msg.counter)
        queued = 0
        ahead_t = 1 if target in self.in_flight else 0
        ahead_o = 0
        mine = 0   # queued for this sender (keys per DCC User: its name; owners are RAM only)
        owners = self.senders.owners if sender else None
        for x in self.journal.live.values():
            # a live command's counter is pending (committed only by its response, spent
            # if it ends without one): the same counter again for the same pair is a
            # replay (docs/relay.md "Anti-replay counters")
            if msg is not None and x.counter == counter and x.originator == orig and x.target == target:
                from ppmid.relay import refusals
                raise refusals.pending_replay(msg.counter, x.id)
            if x.state == J.QUEUED:
                queued += 1
                if x.target == target:
                    ahead_t += 1
                if x.originator == orig:
                    ahead_o += 1
                if owners is not None and owners.get(x.id) == sender[0]:
                    mine += 1
        if queued >= self.queue_max:
            from ppmid.relay import refusals
            raise refusals.refusal(E_BUSY, queued)
        # one meter may hold at most three quarters of the queue, one sender (its key; with
        # the legacy key, its originator) half: one DCC User's key cannot shut the others
        # out, of a meter it keeps busy nor of the rest (review_r2 R2-4; docs/relay.md).
        # The rule is here only: the refusal's sentence is given the share hit and its figures
        q = self.queue_max
        waiting = mine if owners is not None else ahead_o   # the sender's, queued
        most = q - 2 * (q >> 2)
        meter = None
        if waiting < most:
            waiting = ahead_t - (target in self.in_flight)   # the meter's, queued: not the one in flight
            most = q - (q >> 2)
            meter = target
        if waiting >= most:
            from ppmid.relay import refusals
            raise refusals.busy_share(waiting, most, q, meter)
        if env.expires is not None:
            # E_RATE when pacing cannot meet its expiry: the commands queued ahead of it for
            # the same target or originator, beyond the burst, at rate_per_s (tokens in hand
            # not counted: pessimistic only beyond the burst) would take it past it: over /
            # rate s >= expires - now_s, compared as the seconds left times the rate, small
            # numbers (now_s + over / rate, a float near 1.8e9, is on a 128 s grid in an
            # ESP32's single-precision float: review r2 R2-7)
            ahead = ahead_t if ahead_t > ahead_o else ahead_o
            over = ahead + 1 - self.burst
            if over > 0 and (env.expires - now_s) * self.rate <= over:
                from ppmid.relay import refusals
                raise refusals.refusal(E_RATE, self.rate, ahead)
        ok = {"id": env.id, "status": "accepted"}   # built before: nothing to allocate after
        e = self.journal.accept(env.id, via, env.expires, now_s, target, orig, counter, body, topup,
                                None if msg is None else msg.message_code)
        # on flash: from here on nothing may turn into a refusal (review 84 F2). Its
        # counter is pending: the response commits it (answered)
        try:
            self.counters[_C_ACCEPTED] += 1
            if self.senders:
                self.senders.own(self, env.id, sender)
            self._emit(e, "accepted")
            self._wake_dispatch.set()
        except Exception as exc:
            # (a status not queued: the restart queues it from the journal.) A fault, so
            # nothing more is accepted before the reset; set
            # first, as the heap that failed may fail the sentence too
            self.fault = "failed after an accept"
            self.state = "fault"
            try:
                from ppmid.relay import refusals
                refusals.accepted_anyway(self, env, exc)
            except Exception:
                pass
        return ok

    def status(self, id):
        """Status name command `id` has reached ("accepted", "relayed", ...) or None."""
        e = self.journal.by_id.get(id)
        if e is not None:
            return self._result(e, False)["status"]
        r = self._recent_result(id)
        return None if r is None else r["status"]

    def result(self, id):
        """NFC contract: None while the command is unknown or still pending (accepted,
        relayed), else {"id", "status", "gbcs" (bytes or None), "error" ({"code",
        "message"} or None), "late", "via" (the road it came by)} for response / timeout /
        failed / rejected. Once
        finished, a response's body may no longer be held ("gbcs" None, error
        E_BODY_DROPPED: _remember): read it when asked, do not keep the dict."""
        e = self.journal.by_id.get(id)
        if e is None:
            r = self._recent_result(id)
            if r is not None and r["gbcs"] is False:
                # a body let go (_remember, _finish): the sentence that says so comes
                # with the refusals' (loaded by the first such read)
                from ppmid.relay import refusals
                refusals.body_dropped(r)
            return r
        r = self._result(e, True)
        if r["status"] in ("accepted", "relayed"):
            return None
        return r

    def delivered(self, id, via):
        """The NFC road that brought command `id` handed its final result over: that
        counts as delivered (premises without a broker must not fill the journal)."""
        e = self.journal.by_id.get(id)
        if e is None or e.via != via:
            return
        # final: "response" (or a top-up's answer), "failed", "already-executed" (the meter
        # had executed it; nothing more will come)
        if e.state == J.ANSWERED or e.state == J.FAILED or e.state == J.ALREADY_EXECUTED:
            self._finish(e, self._result(e, True))

    def _result(self, e, with_body):
        status = self._status.get(e.seq) or ("accepted", "relayed", "response", "timeout", "failed",
                                             "already-executed")[e.state]
        r = {"id": e.id, "status": status, "gbcs": None, "error": None, "late": False, "via": e.via}
        if e.state == J.ANSWERED:
            if e.topup:
                # the meter's answer: "topped-up", or "rejected" with its result's code;
                # the NFC phone gets its Consumer Top Up Response frame as the data
                r["status"], r["topup"], r["error"] = self.topups().outcome(e)
            else:
                r["status"] = "response"
            r["late"] = e.late
            if with_body:
                r["gbcs"] = self.journal.response_body(e)
        elif e.state == J.FAILED:
            r["status"] = "failed"
            from ppmid.relay import refusals
            r["error"] = refusals.failure(e.error)
        elif e.state == J.TIMED_OUT:
            r["status"] = "timeout"
            from ppmid.relay import refusals
            r["error"] = refusals.timed_out(e, self.budget_s)
        return r

    def _remember(self, id, r):
        recent = self._recent
        for i in range(len(recent)):
            if recent[i]["id"] == id:
                del recent[i]
                break
        recent.append(r)
        if len(recent) > _RECENT:
            del recent[0]
        # the bodies held, newest first: the newest whatever its size, then as many as fit
        # the budget; once over it every older one goes too (held only grows)
        held = 0
        for x in reversed(recent):
            b = x["gbcs"]
            if b:
                held += len(b)
                if held > len(b) and held > _RECENT_BODY_BYTES:
                    x["gbcs"] = False  # let go: result() says so

    def _recent_result(self, id):
        for r in self._recent:
            if r["id"] == id:
                return r
        return None

    # ---- dispatch ------------------------------------------------------------------------
    async def dispatch_once(self):
        """Send at most one command. Returns 0 if one went (or failed), else the ms to
        wait before something may be ready (None: nothing can go until an event)."""
        if self.hold_dispatch:
            # the board resets for an update: a command sent now would be in flight at the
            # reset, and sent again by the next boot (the meter refuses the copy)
            return None
        now = self.clock.ms()
        now_s = self.clock.time()
        clock_set = self.clock.is_set()
        best = None
        blocked = []  # (target, originator) pairs held back: keep their counter order
        chosen = None
        for e in self.journal.entries():
            if e.state != J.QUEUED:
                continue
            pair = (e.target, e.originator)
            if e.expires is not None and not clock_set:
                # accepted while the clock was set, and it was lost (a power cut): whether
                # it has expired cannot be known, so it waits for SNTP (same pair after it
                # too, to keep counter order), and fails if the clock stays unset
                if self.clock.diff(now, self._boot_ms) >= self.max_wait_s * 1000:
                    self._failed(e, E_CLOCK, self.max_wait_s)
                else:
                    blocked.append(pair)
                    best = _CLOCK_POLL_MS if best is None or best > _CLOCK_POLL_MS else best
                continue
            if e.expires is not None and now_s >= e.expires:
                self._failed(e, E_EXPIRED, e.expires)
                continue
            if pair in blocked:
                continue
            # one command in flight per target (-1: wait for its response or timeout), and a
            # token in both its target's and its originator's bucket
            w = -1
            if e.target not in self.in_flight:
                w = self.target_buckets.wait_ms(e.target, now)
                wo = self.originator_buckets.wait_ms(e.originator, now)
                if wo > w:
                    w = wo
            r = self._retry.get(e.target)
            if r is not None and r[0] is not None and w >= 0:
                rw = self.clock.diff(r[0], now)
                if rw > w:
                    w = rw
            if w == 0:
                chosen = e
                break
            blocked.append(pair)
            if w > 0 and (best is None or w < best):
                best = w
        if chosen is None:
            return best
        await self._send(chosen)
        return 0

    async def _send(self, e):
        now_s = self.clock.time()
        if e.expires is not None and not self.clock.is_set():
            return  # the clock was lost meanwhile: dispatch holds it (above)
        if e.expires is not None and now_s >= e.expires:  # checked again, right before
            self._failed(e, E_EXPIRED, e.expires)
            return
        body = self.journal.body(e)  # read back from flash
        self.journal.sending(e, now_s + self.budget_s)  # on flash before the HAN has it
        self._room.set()
        now = self.clock.ms()
        self.target_buckets.take(e.target, now)
        self.originator_buckets.take(e.originator, now)
        self.in_flight[e.target] = e.seq
        self._corr[e.key()] = e
        # its response budget starts once the HAN link has it, not while the link holds it
        # (behind the CH's refused messages, each at the pace; review r10-2: it was queued
        # for a copy meanwhile): check_timers skips it until then (a send that may have
        # reached the CH and failed: send_failed starts it; one cancelled: its budget on
        # flash, from the sending record, ends it)
        self._handing = e.seq
        try:
            if e.topup:
                await self.topups().send(e, body)
            else:
                await self.han.send(None, body, self.pace)
        except Exception as exc:
            from ppmid.relay import refusals
            refusals.send_failed(self, e, exc)
            return
        finally:
            self._handing = None
        if e.state == J.SENDING:
            self._deadline[e.seq] = self.clock.add(self.clock.ms(), self.budget_s * 1000)
        self._retry.pop(e.target, None)
        self.counters[_C_RELAYED] += 1
        # a fast response may already have overtaken us; a copy was "relayed" already
        if e.state == J.SENDING and self._status.get(e.seq) != "relayed":
            self._emit(e, "relayed")

    def pace(self, buf, new=0):
        """The pace of a command's message buf that the HAN link sends again, the CH having
        refused it, or (new 1) of one it sends after such resends (zigbee/han.py send's
        `pace`, review r6-4): relay/refusals.py's (a coroutine: the HAN awaits it; True:
        it may go; False: no more, its command is over; E_EXPIRED raised: a new one expired
        meanwhile)."""
        from ppmid.relay import refusals
        return refusals.pace(self, buf, new)

    def _failed(self, e, code, value, said=None):
        # the command fails (relay/refusals.py's fail) with the sentence of the check that
        # failed it (said: its code when the command keeps another one), filled in with value
        if e.resends:
            # a copy waiting: the first went and may have executed, so never "failed ...
            # before it could be relayed": it times out, and its response still counts
            # within the late window (review r4 R4-2)
            self._corr[e.key()] = e
            self.time_out(e, self.clock.time())
            return
        from ppmid.relay import refusals
        refusals.fail(self, e, code, refusals.why_failed(said or code, value))

    def _free_target(self, e):
        # command e is no longer in flight: its target may be sent to again
        if self.in_flight.get(e.target) == e.seq:
            del self.in_flight[e.target]

    # ---- receive -------------------------------------------------------------------------
    def on_han_message(self, buf):
        """One complete GBCS message from the HAN (GBT already reassembled)."""
        try:
            msg = self.decode(buf)
            cra = msg.cra
            key = J.response_key(msg.originator, msg.recipient, msg.counter_bytes)
        except Exception as exc:
            self.counters[_C_RX_BAD] += 1
            from ppmid.relay import refusals
            refusals.undecodable(self, buf, exc)
            return
        if cra == 2:
            e = self._corr.get(key)
            # a command the meter already refused as a replay has its final status: the
            # first copy's response, this late, goes to the alert topic, not a second one;
            # a top-up's answer comes by its own road, never as GBCS (review r4 R4-4)
            if e is not None and e.state != J.ALREADY_EXECUTED and not e.topup:
                # a response carries its command's message code: another one with the same
                # triple is not its answer, and commits nothing (review r4 R4-4)
                if msg.message_code == e.code:
                    self.answered(e, buf)
                    return
                from ppmid.relay import refusals
                refusals.other_code(self, e, msg.message_code)
            self.counters[_C_UNMATCHED] += 1
        else:
            # only after a resend (resend.py) may an alert be a meter's refusal of a copy
            more = self.counters[_C_MORE]
            if more and "resent" in more:
                from ppmid.relay import resend
                if resend.refused(self, msg):
                    return
            self.counters[_C_ALERTS] += 1
        # alerts, and anything no command of ours is waiting for, go to the alert topic
        if self.publisher is not None:
            outbox.put(self, self.topics.alert, alert_json(buf, self.clock.time(), msg), 1)

    def answered(self, e, buf):
        """The response to command e (or a top-up's, from its road) arrived."""
        if e.state == J.ANSWERED:
            self.counters[_C_DUPLICATE_RESPONSES] += 1
            return
        late = e.state == J.TIMED_OUT
        self.journal.response(e, buf, late)
        if not e.topup:
            # the device answered: it authenticated the command, whose counter now counts
            try:
                self.validator.commit_pair(e.originator, e.target, e.counter)
            except Exception as exc:
                from ppmid.relay import refusals
                refusals.commit_failed(self, e, exc)
        self._free_target(e)
        self._deadline.pop(e.seq, None)
        self.counters[_C_ANSWERED] += 1
        if late:
            self.counters[_C_LATE] += 1
        self._emit(e, "response")
        self._wake_dispatch.set()

    def time_out(self, e, now_s):
        """Command e's budget ended with no copy to send: "timeout" (a late response is
        still published, within late_window_s); its target takes the next command."""
        self.journal.timeout(e, now_s + self.late_window_s)
        self._free_target(e)
        self._deadline.pop(e.seq, None)
        self.counters[_C_TIMEOUTS] += 1
        self._emit(e, "timeout")
        self._wake_dispatch.set()

    # ---- timers --------------------------------------------------------------------------
    def check_timers(self):
        now = self.clock.ms()
        now_s = self.clock.time()
        clock_set = self.clock.is_set()
        # no ms tick may be kept for days: a 32-bit port's ticks_diff is right only
        # within 2**29 ms (6.2 days), so passed backoffs go now, and the boot's tick slides
        # along once older than every window measured from it (buckets: ratelimit.py)
        w = (self.max_wait_s + self.late_window_s) * 1000
        if self.clock.diff(now, self._boot_ms) > w:
            self._boot_ms = self.clock.add(now, -w)   # as old as any window needs, no older
        for r in self._retry.values():
            if r[0] is not None and not 0 < self.clock.diff(r[0], now) <= _RETRY_MAX_MS:
                r[0] = None   # passed (a tick wrapped since reads beyond any backoff)
        for e in self.journal.entries():
            if e.state == J.SENDING and e.seq != self._handing:   # (_send: why)
                d = self._deadline.get(e.seq)
                over = self.clock.diff(now, d) >= 0 if d is not None else now_s >= e.deadline
                if over:
                    # no response within its budget: one more copy, or "timeout" (resend.py,
                    # loaded only then and for the alerts after)
                    try:
                        from ppmid.relay.resend import budget_ended
                    except (ImportError, MemoryError):
                        # a heap too cut up (or a flash) that cannot load it: the command
                        # waits a pass or more; _LOAD_GRACE_S past its budget it times out
                        # here with no copy (the safe side), so its meter is not held
                        if (self.clock.diff(now, d) // 1000 if d is not None else now_s - e.deadline) >= _LOAD_GRACE_S:
                            self.log("warn", "%s: no copy (resend.py did not load)" % e.id)
                            self.time_out(e, now_s)
                        continue
                    budget_ended(self, e, now_s)
            elif e.state == J.TIMED_OUT:
                if e.published == "timeout" and (now_s >= e.late_until or (
                        not clock_set and self.clock.diff(now, self._boot_ms) >= self.late_window_s * 1000)):
                    self._finish(e, self._result(e, False))   # its result kept, as the others'
            elif e.state == J.QUEUED:
                if e.expires is not None and now_s >= e.expires:
                    self._failed(e, E_EXPIRED, e.expires)
                # accepted before SNTP set the clock (after a power cut): its wait is not
                # the step the clock took since, it is within this boot's ticks
                elif now_s - e.accepted_at >= self.max_wait_s and (
                        e.accepted_at >= SET_AFTER or not clock_set
                        or self.clock.diff(now, self._boot_ms) >= self.max_wait_s * 1000):
                    self._failed(e, e.error or E_STALE, now_s - e.accepted_at, E_STALE)

    # ---- publishing ----------------------------------------------------------------------
    def _emit(self, e, status):
        self._status[e.seq] = status
        self.to_publish.append((e.seq, status))   # the outbox's (outbox.py) status item
        self._wake_publish.set()

    def _render(self, seq, status):
        # the outbox's rsp payload for a queued status (contract: docs/mqtt.md), built
        # when it goes: "ms" counts from acceptance; None once the command is gone
        e = self.journal.live.get(seq)
        if e is None:
            return None
        now_s = self.clock.time()
        ms = (now_s - e.accepted_at) * 1000 if now_s >= e.accepted_at else None
        if status == "response" and e.topup:
            return self.topups().render(e, ms, now_s)
        if status == "response":
            return status_json(e.id, status, ms, self.journal.response_body(e), None, e.via, now_s, e.late)
        error = None
        if status in ("failed", "timeout"):
            error = self._result(e, False)["error"]
        return status_json(e.id, status, ms, None, error, e.via, now_s)

    def _status_sent(self, seq, status):
        # the broker has the status (or there is no broker): a final one ends the command
        e = self.journal.live.get(seq)
        if e is None:
            return False
        e.published = status
        if status in FINAL:
            # an MQTT command's body is not read back: the broker has it, and no road of
            # MQTT's collects later
            self._finish(e, self._result(e, e.via != "mqtt"))
        return True

    def _finish(self, e, r):
        """Final status delivered: remember it in RAM, forget it on flash."""
        if e.via == "mqtt" and e.state == J.ANSWERED:
            r["gbcs"] = False  # not read back (_status_sent): the broker has it
        self._remember(e.id, r)
        self._forget(e)

    def _forget(self, e):
        if not e.topup and e.state != J.ANSWERED:
            self.journal.spend(e)   # unanswered: its counter is spent, never committed
        k = e.key()
        if self._corr.get(k) is e:
            del self._corr[k]
        self._status.pop(e.seq, None)
        self._deadline.pop(e.seq, None)
        self._free_target(e)
        self.journal.done(e)

    # ---- health --------------------------------------------------------------------------
    # The board is reset (by no longer feeding the watchdog) when a relay loop has stalled,
    # when a link has been down longer than its grace, or after a fault. A reset is the
    # cure for a wedged radio module or Wi-Fi stack, and the journal makes it safe
    # (docs/relay.md, "Health").
    def health(self):
        """(ok, reason): reason "ok" or "degraded" (a link down within its grace) when ok,
        else why not: a loop has stalled, a link has been down longer than its grace, or
        a fault (e.g. flash errors) stopped the relay."""
        if self.fault is not None:
            return False, "fault: " + self.fault
        clock = self.clock
        now = clock.ms()
        for name in self._beats:
            age = clock.diff(now, self._beats[name])
            if age > self.stall_ms:
                return False, "%s loop stalled for %d ms" % (name, age)
        degraded = False
        for link in self.link_checks:
            name, up = link[0], link[1]
            grace = link[2] * 1000 if len(link) > 2 else self.link_grace_ms
            try:
                ok = up()
            except Exception:
                ok = False
            if ok:
                self._down_since.pop(name, None)
                continue
            degraded = True
            since = self._down_since.get(name)
            if since is None:
                self._down_since[name] = now
                self.log("warn", "%s link down" % name)
            elif clock.diff(now, since) > grace:
                return False, "%s link down for %d s" % (name, clock.diff(now, since) // 1000)
        if self.state in ("running", "degraded"):
            self.state = "degraded" if degraded else "running"
        return True, "degraded" if degraded else "ok"

    def info(self, app=None):
        """The relay's part of the info payload (docs/mqtt.md), or with app (ppmid.app's
        _info: its board, HAN, clock, heap figures, update and NFC summaries) the whole
        payload: relay/report.py's, a module loaded for each report and dropped after it
        (cold code, and the counters' names)."""
        from ppmid.relay import report
        d = report.info(self) if app is None else report.gateway(self, app)
        from ppmid.modules import unload
        unload("ppmid.relay.report", "ppmid.modules")
        return d

    # ---- tasks ---------------------------------------------------------------------------
    def start(self):
        """Create the relay's tasks (after ppmid.relay.recovery.recover(relay)). Returns them
        (also kept in _tasks). Boot-only code: relay/recovery.py."""
        from ppmid.relay.recovery import start_tasks
        return start_tasks(self)

    async def _guard(self, name, loop):
        # a loop (a coroutine) that dies stops its heartbeat: health() then says why, and
        # the watchdog (no longer fed) resets the board
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fault = "%s loop died: %r" % (name, exc)
            self.state = "fault"
            self.log("error", self.fault)

    def _beat(self, name):
        self._beats[name] = self.clock.ms()

    async def _dispatch_loop(self):
        while True:
            self._beat("dispatch")
            self._wake_dispatch.clear()
            wait = await self.dispatch_once()
            if wait == 0:
                await asyncio.sleep(0)
                continue
            await wait_event_ms(self._wake_dispatch, 1000 if wait is None or wait > 1000 else wait)

    async def _receive_loop(self):
        # no heartbeat: it rightly blocks in han.receive(); the HAN link's own health
        # comes through link_checks
        while True:
            buf = await self.han.receive()
            self.on_han_message(buf)

    def house_once(self):
        """Timers, then health; feed the watchdog only when healthy. Returns (ok, why)."""
        self._beat("house")
        try:
            self.check_timers()
            self.journal.sync()  # lazy records (done, timeout, counters) reach flash
        except Exception as exc:
            self.fault = "timers: %r" % (exc,)
            self.state = "fault"
        ok, why = self.health()
        # feed the watchdog when healthy; else say why, once per reason
        if ok:
            if self.wdt is not None:
                self.wdt.feed()
            self._said = None
        elif why != self._said:
            self.log("error", "not feeding the watchdog: " + why)
            self._said = why
        return ok, why

    async def _house_loop(self):
        while True:
            self.house_once()
            await sleep_ms(500)
