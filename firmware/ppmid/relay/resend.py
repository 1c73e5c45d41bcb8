# Delivery at least once, execution exactly once (docs/relay.md, "Crash policy" and
# "Resend after a timeout"). A command found in state "sending" at a restart, or whose
# response did not come within its budget (the bytes, or the answer, may have been lost on
# the way: a damaged UART frame, a module reset), may or may not have reached the meter: it
# is queued again for one more copy (paced like any command, at most MAX_RESENDS copies
# over all restarts and timeouts, counted in the journal). GBCS devices execute a
# command only if its originator counter is above the last one they accepted from that
# remote party, so a copy of a command the meter already executed is refused, not executed
# again: that refusal (an alert naming the command) ends the command as "already-executed".
#
# Loaded only when a recovery finds such a command or a budget ends without a response
# (budget_ended: a copy, or the timeout), and then for the alerts that follow: a gateway
# whose commands are all answered never imports it. Top-ups are never sent again (a ZCL
# Consumer Top Up carries no GBCS counter): an unanswered one only times out here.
import struct
from micropython import const

from ppmid.relay import journal as J

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_ANSWERED = const(3)
_C_MORE = const(22)

MAX_RESENDS = const(2)
# The alert the emulated meters raise for a stale counter (host_tools/ncp_emulator/ch.py):
# "Failed Authentication or Authorisation not covered by other codes". Its other-information
# carries the refused command's originator and counter (supplementary remote party id and
# counter). Which alert a real meter raises was not found in public sources (docs/emulate.md).
REPLAY_REFUSED_ALERT = const(0x8F53)

# the journal records only this module writes (journal.py's private constants, repeated:
# tests/firmware/test_journal.py checks that they agree)
_T_RESEND = const(0x51)
_T_ALREADY = const(0x58)


def record_resend(j, e):
    """Journal j's record of command e going back to the queue for one more copy (found
    sending at a restart, or its budget ended unanswered)."""
    e.resends += 1
    j._append(_T_RESEND, (struct.pack(">IHB", e.seq, min(e.retries, 0xFFFF), min(e.resends, 0xFF)),), e=e)
    e.state = J.QUEUED


def record_already_executed(j, e):
    """Journal j's record of the meter refusing command e's copy: it executed the first."""
    j._append(_T_ALREADY, (struct.pack(">I", e.seq),), e=e)
    e.state = J.ALREADY_EXECUTED


def count(relay, name, n=1):
    """Add n to this road's counter `name` among the relay's (at _C_MORE: a list [name, n,
    ...] in the order first counted, relay/report.py), made at 0 when first counted
    (n=0 makes it without counting: recovery, for a command resent before the restart)."""
    more = relay.counters[_C_MORE]
    if more is None:
        more = relay.counters[_C_MORE] = []
    if name in more:
        more[more.index(name) + 1] += n
    else:
        more += (name, n)


def requeue(relay, e, timed_out=False):
    """Command e may have reached the meter without an answer reaching us: found sending
    at a restart, or (timed_out) its budget ended without a response. Queue it for another
    copy, unless it already had its MAX_RESENDS; True if queued (the caller then leaves it
    alone), else the caller lets it wait for its budget or times it out. It keeps its
    place (its seq) ahead of later commands, so a meter sees one pair's counters in order."""
    if e.resends >= MAX_RESENDS:
        return False
    if e.expires is not None and relay.clock.is_set() and relay.clock.time() >= e.expires:
        # past its expiry a copy may not go: it waits for its budget and times out (it
        # may have been executed, so never "failed E_EXPIRED", which says it never went)
        return False
    if timed_out:
        relay._free_target(e)
        relay._deadline.pop(e.seq, None)
        relay._wake_dispatch.set()
        count(relay, "resent_after_timeout")
    record_resend(relay.journal, e)
    # the first copy's response may still come (the meter answered before the crash, the
    # CH held it, it was slow): it stays correlatable meanwhile, and then no copy goes
    relay._corr[e.key()] = e
    count(relay, "resent")
    relay.log("info", "%s may have reached the meter unanswered (%s): sending it again (copy %d of at most %d)"
              % (e.id, "no response within %d s" % relay.budget_s if timed_out else "restart", e.resends, MAX_RESENDS))
    return True


def budget_ended(relay, e, now_s):
    """relay.check_timers: command e got no response within its budget. Queued for one more
    copy if it has copies left (a top-up never: its ZCL frame carries no GBCS counter),
    else it times out (a late response is still published, within late_window_s)."""
    if not e.topup and requeue(relay, e, True):
        return
    relay.time_out(e, now_s)


def refused(relay, msg):
    """An alert from the HAN (decoded): True if it is the meter's refusal of a copy we
    resent, which then ends that command as already-executed."""
    if msg.message_code != REPLAY_REFUSED_ALERT:
        return False
    oi = msg.other_information
    if len(oi) < 18:
        return False
    e = relay._corr.get(bytes(msg.originator) + bytes(oi[2:10]) + bytes(oi[10:18]))
    if e is None or not e.resends or e.state not in (J.SENDING, J.TIMED_OUT):
        return False
    record_already_executed(relay.journal, e)
    relay._free_target(e)
    relay._deadline.pop(e.seq, None)
    relay.counters[_C_ANSWERED] += 1
    count(relay, "already_executed")
    relay.log("info", "%s: the meter refused the copy as a replay: it executed the first one" % e.id)
    relay._emit(e, "already-executed")
    relay._wake_dispatch.set()
    return True
