"""The emulated ESME's prepayment side: it takes ZCL Consumer Top Up commands (Prepayment
cluster 0x0705) from the PPMID and answers Consumer Top Up Response, keeping credit in pence.

It checks what a meter checks: the UTRN's form and check digit and its MAC (here the test
stand-in of host_tools/utrn.py, test_mac), its own memory of UTRNs applied (duplicate ->
result 0x02, and a GBCS alert to the PPMID), the top-up's size (0x06) and the credit limit
(0x04, with its alert); a MAC that fails gives 0x01 and the 'not authentic' alert; a keypad lock (0x05) and silence are fault knobs. `applied` lists every credit in
order, so a test can tell a UTRN credited twice. Frames: ppmid.zigbee.prepayment."""
from host_tools import utrn as U
from ppmid.zigbee import prepayment as P

ESME_NWK = 0x4A21          # the emulated ESME's network address (the board's config names it)
ESME_ENDPOINT = 1
# GBCS alert codes a meter raises for a refused UTRN, raised towards the PPMID through the
# tunnel like the CH's other alerts. Names as Wireshark's GBCS dissector gives them
# (`tshark -G values`, field gbcs_gbz.alert_code; tests/test_topup_zcl_reference.py checks them)
ALERT_UTRN_DUPLICATE = 0x8F51      # "Duplicate UTRN entered"
ALERT_UTRN_MAX_CREDIT = 0x8F5B     # "UTRN exceeds Maximum Credit Threshold"
ALERT_UTRN_NOT_AUTHENTIC = 0x8F63  # "UTRN not Authentic"
ALERT_NAMES = {ALERT_UTRN_DUPLICATE: "Duplicate UTRN entered",
               ALERT_UTRN_MAX_CREDIT: "UTRN exceeds Maximum Credit Threshold",
               ALERT_UTRN_NOT_AUTHENTIC: "UTRN not Authentic"}
SOURCE_IHD = 0x02


class EmulatedEsme:
    def __init__(self, credit_pence=1000, max_credit_pence=500000, max_topup_pence=100000, memory=100):
        self.credit = credit_pence
        self.max_credit = max_credit_pence
        self.max_topup = max_topup_pence
        self.memory = memory            # UTRNs remembered for the duplicate check (newest)
        self.seen = []                  # PTUTs applied, oldest first
        self.applied = []               # (utrn text, pence) per credit, in order
        self.rejected = []              # (utrn text, result; None: Default Response) per refusal
        self.received = 0               # Consumer Top Up frames
        self.keypad_lock = False        # fault: result 0x05
        self.silent = False             # fault: takes the frame (APS ack), never answers
        self.unreachable = False        # fault: no APS ack (delivery fails at the PPMID)
        self.result_override = None     # fault: answer this result code whatever comes
        # fault: refuse every top-up with a ZCL Default Response of this status (0x7E
        # NOT_AUTHORIZED: a meter that takes no top-ups from this PPMID)
        self.refuse_status = None

    def handle(self, frame):
        """A ZCL frame for the Prepayment cluster -> (response frame or None, alert code or
        None)."""
        try:
            seq, origin, code = P.parse_request(frame)
        except Exception:
            return None, None
        self.received += 1
        if self.silent:
            return None, None
        text = code.decode("ascii", "replace")
        if self.refuse_status is not None:
            self.rejected.append((text, None))
            return P.default_response(seq, P.CONSUMER_TOP_UP, self.refuse_status), None
        result, pence, alert = self._judge(text)
        if result in P.SUPPLY:
            self.credit += pence
            self.applied.append((text, pence))
        else:
            self.rejected.append((text, result))
        return P.consumer_top_up_response(seq, result, pence if result in P.SUPPLY else 0, SOURCE_IHD,
                                          self.credit), alert

    def _judge(self, text):
        if self.result_override is not None:
            return self.result_override, 0, None
        if self.keypad_lock:
            return P.RESULT_KEYPAD_LOCK, 0, None
        try:
            u = U.codec.decode(text)
        except U.codec.UtrnError:
            return P.RESULT_INVALID, 0, None
        if not U.test_mac_ok(u):
            return P.RESULT_INVALID, 0, ALERT_UTRN_NOT_AUTHENTIC
        if u.ptut in self.seen:
            return P.RESULT_DUPLICATE, 0, ALERT_UTRN_DUPLICATE
        if u.value_pence > self.max_topup:
            return P.RESULT_TOO_LARGE, 0, None
        if self.credit + u.value_pence > self.max_credit:
            return P.RESULT_MAX_CREDIT, 0, ALERT_UTRN_MAX_CREDIT
        self.seen.append(u.ptut)
        del self.seen[:-self.memory]
        return P.RESULT_ACCEPTED_SUPPLY_ENABLED, u.value_pence, None

    def figures(self):
        twice = {}
        for text, _ in self.applied:
            twice[text] = twice.get(text, 0) + 1
        return {"credit": self.credit, "received": self.received, "applied": len(self.applied),
                "rejected": len(self.rejected), "applied_twice": sum(1 for n in twice.values() if n > 1)}
