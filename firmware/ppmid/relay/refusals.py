# What the relay core does when something is refused or goes wrong (docs/relay.md): a
# command the intake refuses (its sentence; counted, remembered, reported on the roads
# that do not report their own), a full queue's wait before E_BUSY, a send the HAN link
# refuses (back to the queue with a backoff, or failed), the sentence of a failed
# command's status, and that of a finished result whose response body was let go.
#
# Loaded when the first of these happens, and kept: a gateway whose commands all go
# through never imports it, so the running app holds none of this code (docs/memory.md).
import struct
from micropython import const

from ppmid.clock import ticks_ms, ticks_diff, wait_event_ms, sleep_ms
from ppmid.errors import PpmidError, E_HAN_DOWN, E_NO_TUNNEL, E_HAN_DEST, E_HAN_TOO_BIG, E_EXPIRED, E_CLOCK
from ppmid.errors import E_AUTH, E_TOO_LARGE, E_BUSY
from ppmid import envelope as envmod
from ppmid.mqtt.contract import status_json
from ppmid.relay import journal as J
from ppmid.relay import outbox
from ppmid.relay.core import RelayError, E_RATE, E_STALE

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_FAILED = const(6)
_C_REJECTED = const(7)
_C_RETRIES = const(8)
_C_LINK_RESETS = const(9)
_C_SEND_ERRORS = const(10)
_C_ADMIT_WAITS = const(21)

E_INTERNAL = "E_INTERNAL"
_E_REVOKED = "E_REVOKED"   # relay/senders.py's (not imported: loaded only with keys per user)
E_BODY_DROPPED = "E_BODY_DROPPED"   # a recent result's response body is no longer held

# HAN link errors that mean "the bytes were not taken": the command may go again later.
RETRYABLE = (E_HAN_DOWN, E_NO_TUNNEL)
# errors that will not change by trying again: the command fails at once
PERMANENT = (E_HAN_DEST, E_HAN_TOO_BIG)
# anything else (E_DELIVERY, E_DELIVERY_UNKNOWN, OSError...) may have reached the CH: the
# command waits for its response until its budget ends, then goes again like one whose
# response did not come (resend.py: the meter's anti-replay refuses a copy of what it
# already executed)
_RETRY_MIN_MS = const(1000)
_RETRY_MAX_MS = const(30000)
# journal.py's private constants of the records only this module writes, repeated
# (tests/firmware/test_journal.py checks that they agree)
_T_UNSENT = const(0x55)
_T_FAILED = const(0x46)

# the sentences of the intake's refusals that relay.core raises (refusal())
_SAYS = {E_AUTH: "envelope names key %s; this gateway has no keys per DCC User",
         E_TOO_LARGE: "gbcs is larger than the %d bytes allowed",
         E_CLOCK: "gateway clock is not set: cannot check expiry",
         E_EXPIRED: "command expired at %d (now %d)",
         E_BUSY: "%d commands already wait for the HAN: try later",
         E_RATE: "at %s commands/s the %d commands ahead would take it past its expiry"}

_WHY = {E_EXPIRED: "expired before it could be relayed",
        E_CLOCK: "the gateway clock was not set: expiry could not be checked",
        E_STALE: "waited too long for the HAN",
        E_HAN_DOWN: "the HAN link stayed down", E_NO_TUNNEL: "no tunnel to the CH",
        E_HAN_TOO_BIG: "too large for the HAN link", E_HAN_DEST: "not reachable on the HAN",
        J.E_JOURNAL: "its GBCS on flash no longer decodes: never relayed"}


def refusal(code, *args):
    """The RelayError relay.core raises for the intake refusal `code`, its sentence
    filled in with args."""
    return RelayError(code, _SAYS[code] % args)


# the log's sentences of the checks that fail a queued command (why_failed())
_FAILED_SAYS = {E_CLOCK: "gateway clock not set for %d s: cannot check expiry",
                E_EXPIRED: "expired at %d before it could be relayed",
                E_STALE: "waited %d s for the HAN"}


def why_failed(code, value):
    """The log's sentence for a queued command that check `code` failed (relay.core
    _failed), filled in with value (seconds, or the expiry time)."""
    return _FAILED_SAYS[code] % value


def pending_replay(counter, id):
    """The RelayError for a command whose (originator, recipient, counter) is that of a
    live command, whose counter is pending until the device answers it (relay.core
    _accept; docs/relay.md "Anti-replay counters")."""
    return RelayError("E_REPLAY", "originator counter %d is that of command %s, which the gateway "
                      "still holds for this originator and recipient" % (counter, id))


def spent_replay(counter):
    """The RelayError for a command whose (originator, recipient, counter) is that of a
    command that ended without a response (relay.core _accept; journal.Journal.spend)."""
    return RelayError("E_REPLAY", "originator counter %d was taken already by a command to this recipient "
                      "that ended without a response: sign the command again with a new counter" % counter)


def commit_failed(relay, e, exc):
    """Command e's response is on flash but its counter's commit failed with exc (a flash
    error): recovery commits it from the response record, and until that reset a replay
    of e could pass, so it is a fault: nothing more is accepted (relay.core answered)."""
    relay.state = "fault"   # first: the heap that failed may fail the sentence too
    relay.fault = "counter of %s not committed: %r" % (e.id, exc)
    relay.log("error", relay.fault)


def busy_share(n, most, q, meter):
    """The E_BUSY for a command whose sender (meter None) or meter already has n commands
    waiting, at most `most` of the queue's q (relay.core _accept, which holds the rule and
    says which share it hit: review_r2 R2-4)."""
    if meter is None:
        return RelayError(E_BUSY, "%d of this sender's commands already wait for the HAN (at most %d "
                          "of the queue's %d per sender): try later" % (n, most, q))
    from binascii import hexlify
    return RelayError(E_BUSY, "%d commands already wait for meter %s (at most %d of the queue's %d "
                      "per meter): try later" % (n, hexlify(meter).decode().upper(), most, q))


def other_code(relay, e, code):
    """A CRA-2 frame from the HAN names live command e's (originator, recipient, counter) but
    carries message code `code`, not e's: not e's response (a GBCS response carries its
    command's code), so unmatched: e stays live, its counter pending (relay.core
    on_han_message; review r4 R4-4)."""
    mine = "unknown" if e.code is None else "0x%04X" % e.code   # None: its body did not decode at boot
    relay.log("warn", "a response naming %s carries message code 0x%04X, not the command's (%s): "
              "unmatched, not an answer" % (e.id, code, mine))


def restarting():
    """The RelayError for a command offered while the relay is in fault (the watchdog
    resets the board soon)."""
    return RelayError(E_BUSY, "the gateway is restarting after a fault: try later")


def accepted_anyway(relay, env, exc):
    """Command env is journaled (accepted) but what follows failed with exc (the counter's
    commit, the status queued): the fault relay.core _accept set says why."""
    relay.fault = "failed after accepting %s: %r" % (env.id, exc)
    relay.log("error", relay.fault)


def undecodable(relay, buf, exc):
    """A message from the HAN that is not GBCS the decoder takes: logged and dropped."""
    relay.log("warn", "undecodable message from the HAN (%d bytes): %r" % (len(buf), exc))


def timed_out(e, budget_s):
    """The error of a command's "timeout" status: no response within its budget."""
    if e.topup:
        # a top-up is never sent twice, and its answer may have come without being recorded
        # (the flash full: a fault, docs/utrn.md): not known, which the sender is told
        return {"code": e.error or "E_TIMEOUT", "message": "no answer from the meter on record within %d s: "
                "it may have applied the top-up (sent again, the UTRN is refused if it did)" % budget_s}
    return {"code": e.error or "E_TIMEOUT", "message": "no response within %d s" % budget_s}


def failure(code):
    """The error of a failed command's status: {"code", "message"}."""
    return {"code": code, "message": _WHY.get(code, "command not relayed")}


def body_dropped(r):
    """A recent result whose response body the relay let go ("gbcs" False: relay.core
    _remember, _finish; docs/relay.md "Results"): its status stays, "gbcs" becomes None
    and the error says why, unless it has one (a top-up's refusal: the meter's code)."""
    r["gbcs"] = None
    if r["error"] is None:
        r["error"] = {"code": E_BODY_DROPPED, "message": "response no longer held by the gateway: "
                      "published over MQTT, or pushed out by newer results"}


async def wait_for_room(relay, env, via):
    """limits.queue commands already wait for the HAN: a command that would be admitted
    but for that bound waits (up to relay.admit_wait_ms) for one of them to go. A
    redelivered id gets its status at once, and a forged one is refused at once."""
    try:
        if env.id in relay.journal.by_id:
            return
        r = relay._recent_result(env.id)
        if r is not None and r["status"] != "rejected":
            return
        relay._verify(env, via)
    except Exception:
        return
    relay.counters[_C_ADMIT_WAITS] += 1
    t0 = ticks_ms()
    while relay._queue_full():
        left = relay.admit_wait_ms - ticks_diff(ticks_ms(), t0)
        if left <= 0:
            break
        relay._room.clear()
        relay._wake_dispatch.set()
        # woken when a command leaves the queue; the slice bounds a missed wake
        await wait_event_ms(relay._room, left if left < 250 else 250)
    relay.log("info", "%s waited %d ms for room in the queue" % (env.id, ticks_diff(ticks_ms(), t0)))


def _wanted(relay, e, new):
    # whether command e's message may still go, as the relay would send it itself: not past
    # its expiry (its clock lost: not known, so not for a resend; a new one, which dispatch
    # checked, goes), and for a resend, e still waiting for its response (not answered,
    # timed out, requeued) and not being handed to the HAN again as a copy (review r10-1)
    x = e.expires
    clock = relay.clock
    if x is not None and (clock.time() >= x if clock.is_set() else not new):
        if new:
            raise PpmidError(E_EXPIRED, "expired at %d while the HAN link sent the CH's refused messages "
                                        "first: not relayed" % x)
        return False
    return new or (e.state == J.SENDING and e.seq != relay._handing)


async def pace(relay, buf, new=0):
    """Relay.pace: the command whose message is buf (one the CH refused, which the HAN link
    sends again: zigbee/han.py; new 1: one of ours the HAN sends after such resends) at the
    relay's pace: a token in both its target's and its originator's bucket, as for any
    command (dispatch_once); takes them and returns True. Review r6-4: before, each refusal
    sent up to 8 messages at once, outside limits.rate_per_s/burst.

    Judged before each wait too (review r10-1, r10-2): a resend (new 0) the relay would
    not send itself any more returns False at once (_wanted); a new one (new 1) that
    expired meanwhile raises E_EXPIRED, which send_failed then fails. A message of a
    command the relay does not hold: False, and no token (nothing of ours to pace)."""
    m = relay.decode(buf)
    e = relay._corr.get(J.response_key(m.recipient, m.originator, m.counter_bytes))
    m = None
    if e is None:
        return False   # answered and forgotten, or never ours
    if new:
        # a new one waits for, and takes, a token again only when a resend took tokens
        # while the HAN held it (Relay._handing, marked below): the token the dispatch took
        # for it went by on that resend. A round whose resends were all dropped took none,
        # and its token is still good (review r14-3: it waited a token's time more and took
        # a second one). A mark left by a han.send that failed before this pace is at
        # worst a wait more, once, for e's next handing: the safe side
        _wanted(relay, e, 1)   # raises E_EXPIRED when it expired while it waited
        if getattr(relay, "_resent_during", None) != e.seq:
            return True
        relay._resent_during = None
    target = e.target
    orig = e.originator
    while True:
        # the dispatch loop waits behind this (for the HAN's send lock): paced, not stalled
        relay._beat("dispatch")
        if not _wanted(relay, e, new):
            return False
        now = relay.clock.ms()
        w = relay.target_buckets.wait_ms(target, now)
        wo = relay.originator_buckets.wait_ms(orig, now)
        if wo > w:
            w = wo
        if w == 0:
            break
        await sleep_ms(w if w < 1000 else 1000)
    relay.target_buckets.take(target, now)
    relay.originator_buckets.take(orig, now)
    if not new:
        # a resend took its tokens while the HAN held a new message (if any): that one
        # waits for a token again before it goes (above)
        relay._resent_during = relay._handing
        # the resend goes now: its command's response budget starts again, as a new send's
        # does once han.send returns (review r14-1: it kept what was left of the first
        # send's, and a resend that went late was followed by the relay's copy at once).
        # The HAN does not say when the resend is through: its send_timeout_s is counted in
        # too, so check_timers does not queue a copy while the resend is still being sent
        clock = relay.clock
        relay._deadline[e.seq] = clock.add(now, int((relay.budget_s + relay.han.send_timeout_s) * 1000))
    return True


def refused(relay, env, exc, via):
    """accept_now's refusal: records it and returns the error to raise (a PpmidError as
    it came; anything else, a bug or a flash error, as E_INTERNAL)."""
    if not isinstance(exc, PpmidError):  # a bug must not take the intake down
        relay.log("error", "accept crashed: %r" % (exc,))
        if isinstance(exc, OSError):
            # flash I/O failed: stop feeding the watchdog; the reset recovers the
            # journal from its last good record
            relay.fault = "flash error in accept: %r" % (exc,)
            relay.state = "fault"
        exc = RelayError(E_INTERNAL, "internal error: %r" % (exc,))
    code = getattr(exc, "code", E_INTERNAL)
    rej = relay.counters[_C_REJECTED]
    rej[code] = rej.get(code, 0) + 1
    id = getattr(env, "id", None)
    try:
        envmod.check_id(id)
    except PpmidError:
        id = None
    error = {"code": code, "message": getattr(exc, "message", str(exc))}
    # a forged envelope (E_AUTH) must not overwrite the status of a real command
    prev = None if id is None else relay._recent_result(id)
    if id is not None and (id in relay.journal.by_id or (prev is not None and prev["status"] != "rejected")):
        relay.log("warn", "%s for id %s, which names a known command: not recorded" % (code, id))
        # nor published under that id: the MQTT intake's rejection has "id": null
        exc.known_id = True
        return exc
    if code == E_AUTH or code == _E_REVOKED or getattr(exc, "proves_no_key", False):
        # no key proved: the id is whoever sent it's choice. Neither remembered (16 forged
        # NFC taps, which need no key, would push the real results a phone may still
        # collect out of the recent 16) nor published under that id on rsp; the road that
        # brought it told its sender (the MQTT intake publishes its own). review_w6-5; the
        # signature limiter's E_RATE, raised before any verify (envelope_sig.py), too:
        # review r2 R2-5
        return exc
    if id is not None:
        relay._remember(id, {"id": id, "status": "rejected", "gbcs": None, "error": error})
    # the MQTT intake publishes its own rejections (before its PUBACK)
    if relay.publisher is not None and id is not None and via != "mqtt":
        outbox.put(relay, relay.topics.rsp, status_json(id, "rejected", error=error, via=via,
                                                        at=relay.clock.time()), 1)
    return exc


def fail(relay, e, code, why):
    """Command e ends "failed" with code; why: the log's sentence."""
    record_failed(relay.journal, e, code)
    relay._room.set()
    relay.counters[_C_FAILED] += 1
    relay.log("info", "%s failed: %s %s" % (e.id, code, why))
    relay._emit(e, "failed")


def record_failed(j, e, code):
    """Journal j's record of command e ending without a response: failed with code."""
    j._append(_T_FAILED, (struct.pack(">I", e.seq), code.encode()), e=e)
    e.state = J.FAILED
    e.error = code


def record_unsent(j, e):
    """Journal j's record of command e going back to the queue: the HAN link refused it
    before taking the bytes."""
    e.retries += 1
    j._append(_T_UNSENT, (struct.pack(">IH", e.seq, min(e.retries, 0xFFFF)),), e=e)
    e.state = J.QUEUED


def _release(relay, e):
    relay._free_target(e)
    relay._deadline.pop(e.seq, None)
    k = e.key()
    if relay._corr.get(k) is e and e.state not in (J.TIMED_OUT, J.ANSWERED):
        del relay._corr[k]
    relay._wake_dispatch.set()


def send_failed(relay, e, exc):
    """relay._send's HAN link raised exc for command e ("sending" when it was handed over)."""
    code = getattr(exc, "code", None)
    counters = relay.counters
    if code in RETRYABLE and e.state == J.SENDING:
        # not taken by the link: back to the queue, that target backs off
        record_unsent(relay.journal, e)
        _release(relay, e)
        clock = relay.clock
        r = relay._retry.get(e.target)
        backoff = _RETRY_MIN_MS if r is None else min(r[1] * 2, _RETRY_MAX_MS)
        if r is None:
            counters[_C_LINK_RESETS] += 1
        relay._retry[e.target] = [clock.add(clock.ms(), backoff), backoff]
        counters[_C_RETRIES] += 1
        e.error = code
        relay.log("warn", "%s not relayed (%s): retry in %d ms" % (e.id, code, backoff))
        return
    if code == E_EXPIRED and e.state == J.SENDING:
        # it expired while the HAN link sent the CH's refused messages first (pace):
        # never relayed, failed as dispatch fails it (a copy of one that went: timeout)
        _release(relay, e)
        relay._failed(e, E_EXPIRED, e.expires)
        return
    counters[_C_SEND_ERRORS] += 1
    if code in PERMANENT and e.state == J.SENDING:
        _release(relay, e)
        fail(relay, e, code, "the HAN link refused it: %s" % (getattr(exc, "message", exc),))
        return
    # anything else may have reached the CH: never resend, wait for the budget, from now
    # (check_timers left it alone while the HAN held it: core._send)
    if e.state == J.SENDING:
        relay._deadline[e.seq] = relay.clock.add(relay.clock.ms(), relay.budget_s * 1000)
    e.error = code or E_INTERNAL
    relay.log("warn", "%s: HAN send failed (%r); waiting for a response until its budget ends" % (e.id, exc))
