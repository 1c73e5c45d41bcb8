# The top-up road of the relay: a UTRN for the ESME, checked, journaled like a command and
# applied with the ZCL Prepayment cluster's Consumer Top Up (GBCS PECS01) straight to the
# meter over the HAN; its Consumer Top Up Response ends it (`topped-up` or `rejected`).
#
# Loaded by the relay with the first top-up (Relay.topups()), or at recovery when the
# journal holds one: a gateway that never sees a top-up never pays for this code, the UTRN
# codec or the Prepayment frames. Spec: docs/utrn.md "Applying a top-up".
import binascii
from micropython import const

from ppmid.errors import PpmidError, E_HAN_DEST, E_EXPIRED
from ppmid import utrn as codec
from ppmid import topup as T
from ppmid.topup import E_UTRN_TARGET
from ppmid.mqtt.contract import status_json
from ppmid.zigbee import prepayment as P
from ppmid.relay.journal import QUEUED, SENDING, TIMED_OUT, JournalError
from ppmid.gbcs.validate import admits, E_NOT_ALLOWED
from micropython import const

# indices of the relay's counters (relay.counters, a list) that this module counts: the
# names, in this order, are relay/report.py's
_C_UNMATCHED = const(13)
_C_RX_BAD = const(15)

# the HAN link's counter of frames it drops unsecured: its index in han.counters (a list of
# ints), the place of "rx_unsecured" in zigbee/han_counters.py's HAN  (_HC_: the HAN's list, not the relay's _C_)
_HC_RX_UNSECURED = const(21)

# a top-up at the ESME is GBCS PECS01: the validator's list for the ESME (han.allow, narrowed
# to han.profile) must hold its message code, as for a GBCS command (review r2 R2-6); the
# refusal's sentence is gbcs/validate_errors.py's _S_NOT_ALLOWED (validate.py's private const;
# tests/firmware/test_topup_profile.py checks the sentence is the validator's, word for word)
_TOPUP_CODE = const(0x0116)
_S_NOT_ALLOWED = const(5)

E_UTRN_DUPLICATE = "E_UTRN_DUPLICATE"  # applied already or in flight (or the meter says so)
E_UTRN_GSME = "E_UTRN_GSME"            # GSME top-ups (PCS01) are not implemented: docs/utrn.md

DEFAULT_ENDPOINT = 1
# Top-ups the meter applied are remembered (E_UTRN_DUPLICATE) in the journal's counters,
# keyed b"U" + PTUT (8 bytes) -> the top-up's seq; the newest UTRN_KEEP of them are kept
# (the meter keeps its own memory). Compaction keeps them like every counter.
UTRN_KEEP = 32
_NO_ORIGINATOR = b"\x00" * 8

# the meter's result -> our stable code (docs/utrn.md); accepted results have none
METER_CODES = {P.RESULT_INVALID: "E_UTRN_INVALID", P.RESULT_DUPLICATE: E_UTRN_DUPLICATE,
               P.RESULT_ERROR: "E_UTRN_METER_ERROR", P.RESULT_MAX_CREDIT: "E_UTRN_MAX_CREDIT",
               P.RESULT_KEYPAD_LOCK: "E_UTRN_KEYPAD_LOCK", P.RESULT_TOO_LARGE: "E_UTRN_TOO_LARGE"}
_WHY = {P.RESULT_INVALID: "the meter found the top-up invalid (its MAC or its counter)",
        P.RESULT_DUPLICATE: "the meter has applied this UTRN already",
        P.RESULT_ERROR: "the meter could not apply the top-up",
        P.RESULT_MAX_CREDIT: "the meter's maximum credit would be exceeded",
        P.RESULT_KEYPAD_LOCK: "the meter's keypad is locked: it takes no top-ups now",
        P.RESULT_TOO_LARGE: "the top-up value is larger than the meter accepts"}
E_UTRN_RESULT = "E_UTRN_RESULT"  # a result code the meter should not send
# the meter answered the Consumer Top Up with a ZCL Default Response whose status is not
# SUCCESS: it did not carry the command out (not authorised, prepayment off, not supported)
E_UTRN_METER_REFUSED = "E_UTRN_METER_REFUSED"
# the ZCL statuses a meter refusing a command most likely sends (values as zigpy's
# foundation.Status); any other is shown as its number
_ZCL_STATUS = {0x01: "FAILURE", 0x7E: "NOT_AUTHORIZED", 0x80: "MALFORMED_COMMAND",
               0x81: "UNSUP_CLUSTER_COMMAND", 0x85: "INVALID_FIELD", 0x87: "INVALID_VALUE"}


class TopupError(PpmidError):
    pass


def _ptut8(u):
    # the PTUT as 8 bytes (a long int on 32 bits: two small halves, no to_bytes on longs)
    hi = u.ptut >> 32
    lo = u.ptut & 0xFFFFFFFF
    return bytes(((hi >> 24) & 0xFF, (hi >> 16) & 0xFF, (hi >> 8) & 0xFF, hi & 0xFF,
                  (lo >> 24) & 0xFF, (lo >> 16) & 0xFF, (lo >> 8) & 0xFF, lo & 0xFF))


def remember_utrn(journal, ptut8, seq):
    """A top-up the meter applied (or says it already had): refused as a duplicate from
    now on, across restarts. Lazy like every counter record (the response record written
    right after it is synced, and carries it to flash)."""
    journal.put_counter(b"U" + bytes(ptut8), seq)
    keys = [k for k in journal.counters if len(k) == 9 and k[0] == 0x55]
    if len(keys) > UTRN_KEEP:
        keys.sort(key=lambda k: journal.counters[k])
        for k in keys[:len(keys) - UTRN_KEEP]:
            # gone from the next compaction on; should the older file be read again
            # first, the UTRN is only remembered a little longer
            del journal.counters[k]


def utrn_applied(journal, ptut8):
    return (b"U" + bytes(ptut8)) in journal.counters


def meter_refusal(frame):
    """(seq, ZCL status) when frame is the meter's Default Response refusing a Consumer
    Top Up, else None. A SUCCESS one is no answer (the command has its own response, and
    ours asks for no Default Response), a Default Response to another command is not ours."""
    try:
        seq, cmd, status = P.parse_default_response(frame)
    except PpmidError:
        return None
    if cmd != P.CONSUMER_TOP_UP or status == P.ZCL_SUCCESS:
        return None
    return seq, status


def by_id_alone(r):
    """A relay result as a road hands it to whoever names its id and proves nothing else
    (the NFC phone's collect, mode 02; a wired HELLO): a top-up's without the meter's answer
    (the frame, "gbcs", and its figures, "topup": value, credit, source). That is ZCL, not
    GBCS: nothing protects it end to end, so it goes only to the accept that journaled the
    top-up (the phone that delivered it, in that tap; the wire that sent it), not on rsp,
    which every DCC User identity may read (render; review r2 R2-3); a redelivery of its
    bytes proves possession, not ownership (review_w6-4).
    Status and error stay. Other results come back as they are; r itself is not changed."""
    if r is None or "topup" not in r:
        return r
    out = dict(r)
    out["gbcs"] = None
    out["topup"] = None
    return out


class TopupRoad:
    def __init__(self, relay):
        self.relay = relay
        self.meters = {}      # EUI (16 upper-case hex) -> han.devices entry
        for d in relay.devices:
            self.meters[d["eui"]] = d
        self._tsn = 0
        self._waiting = {}    # meter NWK address -> (ZCL sequence number, Entry)
        relay.han.on_zcl = self.on_zcl
        # loaded at recovery: a top-up sent before the restart may still be answered; its
        # ZCL sequence number was not journaled, so its meter's next answer is taken
        for e in relay.journal.live.values():
            if e.topup and e.state in (SENDING, TIMED_OUT):
                dev = self.meters.get(binascii.hexlify(e.target).decode().upper())
                if dev is not None and dev.get("nwk") is not None:
                    self._waiting[dev["nwk"]] = (None, e)

    # ---- accept: everything that can be checked before the HAN ------------------------
    def admit(self, env):
        """(target 8 bytes, originator, counter, body) to journal, or TopupError /
        UtrnError with the code that says why not."""
        u = codec.decode(T.strict_digits(env.utrn))
        target = T.check_target(env.target)
        dev = self.meters.get(target)
        if dev is None:
            raise TopupError(E_UTRN_TARGET, "%s is not a meter on this gateway's HAN" % target)
        if dev["type"] == "GSME":
            raise TopupError(E_UTRN_GSME, "top-ups for the gas meter (GBCS PCS01, through the CH) are not "
                                          "implemented: key the UTRN in at the meter")
        if dev["type"] != "ESME":
            raise TopupError(E_UTRN_TARGET, "%s is a %s: only a meter takes top-ups" % (target, dev["type"]))
        v = self.relay.validator
        if not admits(v._allow["ESME"], _TOPUP_CODE):
            from ppmid.modules import sentence
            raise TopupError(E_NOT_ALLOWED, sentence("ppmid.gbcs.validate_errors", _S_NOT_ALLOWED,
                                                     (_TOPUP_CODE, "ESME", target, v.profile[0])))
        if dev.get("nwk") is None:
            raise TopupError(E_UTRN_TARGET, "the ESME's network address is not configured (han.devices nwk)")
        ptut8 = _ptut8(u)
        j = self.relay.journal
        if utrn_applied(j, ptut8):
            raise TopupError(E_UTRN_DUPLICATE, "this UTRN was applied already")
        for x in j.live.values():
            # only one queued or on its way blocks it. One that failed or timed out may go
            # again (docs/utrn.md): the meter's own memory of the UTRNs it applied refuses
            # the copy (0x02) should the first have reached it after all, and that answer
            # is remembered here. One the meter answered is in utrn_applied when it was
            # applied (remember_utrn runs before answered); one it refused (keypad lock,
            # invalid...) may go again at once, even while its result still waits in the
            # journal for a broker (review_w6-2)
            if x.topup and x.counter == ptut8 and (x.state == QUEUED or x.state == SENDING):
                raise TopupError(E_UTRN_DUPLICATE, "this UTRN is already on its way to the meter (%s)" % x.id)
        return binascii.unhexlify(target), _NO_ORIGINATOR, ptut8, env.utrn.encode()

    # ---- dispatch --------------------------------------------------------------------
    async def send(self, e, body):
        """Consumer Top Up to the meter (the relay wrote the sending record already);
        raises the HAN link's HanError as han.send does."""
        dev = self.meters.get(binascii.hexlify(e.target).decode().upper())
        if dev is None or dev.get("nwk") is None:
            raise TopupError(E_HAN_DEST, "the meter is no longer in han.devices")
        self._tsn = (self._tsn + 1) & 0xFF
        nwk = dev["nwk"]
        self._waiting[nwk] = (self._tsn, e)
        frame = P.consumer_top_up(self._tsn, body)
        clock = self.relay.clock

        def judge():
            # judged again once the HAN's send lock is ours, as han.send judges a command
            # after the CH's refused messages (the relay's pace): the relay checked its
            # expiry right before, but a paced round of resends may have held the lock
            # since (review r14-2: it went after its expiry, and was "relayed").
            # E_EXPIRED: not sent, and the relay fails it (refusals.send_failed)
            x = e.expires
            if x is not None and clock.is_set() and clock.time() >= x:
                raise TopupError(E_EXPIRED, "expired at %d while it waited for the HAN link: not sent" % x)

        await self.relay.han.send_zcl(nwk, P.CLUSTER_PREPAYMENT, dev.get("endpoint", DEFAULT_ENDPOINT), frame, judge)

    # ---- receive (synchronous: from the HAN link's callback) -------------------------
    def on_zcl(self, sender, cluster, frame, eui64=None):
        """A ZCL frame from a HAN device outside the tunnel (ZigbeeHan.on_zcl); eui64: the
        sender's EUI-64 as a v14 module names it (little-endian), None below v14."""
        if cluster != P.CLUSTER_PREPAYMENT:
            self.relay.counters[_C_RX_BAD] += 1
            return
        w = self._waiting.get(sender)
        if eui64 is not None and w is not None and bytes(reversed(bytes(eui64))) != bytes(w[1].target):
            # the answer must come from the meter the top-up went to: its NWK address and
            # the encryption bit do not say so (another node holding a link key may send as
            # it); the HAN link counts it with the frames it drops unsecured (rx_unsecured)
            han = self.relay.han
            han.counters[_HC_RX_UNSECURED] += 1
            if han.counters[_HC_RX_UNSECURED] == 1:
                self.relay.log("warn", "Prepayment frame from 0x%04X: its sender EUI-64 is not the meter's" % sender)
            return
        try:
            self.on_frame(sender, frame)
        except (OSError, JournalError) as exc:
            # the answer could not be journaled (the flash full or failing): a fault, as a
            # GBCS response's failing record is (core.py, _guard): intake stops, health says
            # why, the watchdog resets. Not swallowed: the top-up would have ended `timeout`
            # with the gateway running on as if nothing were wrong (review 90, docs/utrn.md)
            relay = self.relay
            relay.fault = "top-up response from 0x%04X not journaled: %r" % (sender, exc)
            relay.state = "fault"
            relay.log("error", relay.fault)
        except Exception as exc:  # noqa: BLE001 - the HAN link's callback must never fail
            self.relay.log("error", "top-up response from 0x%04X: %r" % (sender, exc))

    def on_frame(self, sender, frame):
        relay = self.relay
        w = self._waiting.get(sender)
        r = None
        try:
            r = P.parse_response(frame)
            seq = r.seq
        except PpmidError as exc:
            refused = meter_refusal(frame)
            if refused is None:
                relay.counters[_C_RX_BAD] += 1
                relay.log("warn", "Prepayment frame from 0x%04X not understood: %s" % (sender, exc))
                return
            seq = refused[0]
        if w is None or (w[0] is not None and w[0] != seq):
            relay.counters[_C_UNMATCHED] += 1
            relay.log("warn", "Consumer Top Up answer from 0x%04X (seq %d) matches no top-up" % (sender, seq))
            return
        e = w[1]
        if e.seq not in relay.journal.live:
            return
        # a refusal (Default Response) is journaled as the answer; the UTRN is not used up
        if r is not None and (r.accepted() or r.result == P.RESULT_DUPLICATE):
            # applied (now or before): refused locally from now on
            remember_utrn(relay.journal, e.counter, e.seq)
        relay.answered(e, frame)
        # (only once journaled: an answer that could not be is still awaited)
        del self._waiting[sender]

    # ---- status ----------------------------------------------------------------------
    def outcome(self, e):
        """(status, topup dict, error dict or None) of an answered top-up."""
        body = self.relay.journal.response_body(e)
        try:
            r = P.parse_response(body)
        except PpmidError as exc:
            refused = meter_refusal(body)
            if refused is None:
                return "rejected", None, {"code": E_UTRN_RESULT, "message": str(exc)}
            status = refused[1]
            return "rejected", {"zcl_status": status}, {
                "code": E_UTRN_METER_REFUSED,
                "message": "the meter refused the top-up (ZCL status 0x%02X %s): not applied" % (
                    status, _ZCL_STATUS.get(status, "unknown"))}
        t = {"result": r.result, "value": r.value, "credit": r.credit,
             "source": P.SOURCES[r.source] if r.source < len(P.SOURCES) else r.source}
        if r.accepted():
            t["supply"] = P.SUPPLY[r.result]
            return "topped-up", t, None
        code = METER_CODES.get(r.result)
        if code is None:
            return "rejected", t, {"code": E_UTRN_RESULT, "message": "the meter answered result 0x%02X, "
                                   "which no meter should send: not applied as far as we know" % r.result}
        return "rejected", t, {"code": code, "message": _WHY[r.result]}

    def render(self, e, ms, now_s):
        # the rsp status of an answered top-up: its status and error, not the meter's figures
        # (outcome's "topup": value, credit...). They are ZCL, not GBCS, so nothing protects
        # them end to end, and every DCC User identity may read every gateway's rsp
        # (host_tools/broker.py's ACL): they go only to the road that delivered the top-up,
        # as by_id_alone says (review r2 R2-3)
        status, _, error = self.outcome(e)
        return status_json(e.id, status, ms, None, error, e.via, now_s, e.late)
