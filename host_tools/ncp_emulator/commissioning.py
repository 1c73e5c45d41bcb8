"""Commissioning onto the emulated HAN: the NCP's join and CBKE commands (the module's
side) and the Communications Hub as trust centre (device log, join admission, the Key
Establishment cluster's server side). docs/zigbee.md "Commissioning" says what is real
and what is modelled:

  real: the EZSP frames (ids, layouts, statuses per version), the Key Establishment
  cluster frames (suite 2, 74-byte certificates, 37-byte ephemeral keys, 16-byte MACs),
  their order, the generate times the CH announces and enforces, Terminate statuses,
  the install-code link key (AES-MMO, checked by the CH against its device log);
  modelled: the elliptic-curve cryptography. Certificates are made up (issuer, subject
  and a public key derived from the node's private key by SHA-256); the shared secret is
  HMAC-SHA256 over both sides' public and ephemeral keys, each side using the public
  keys its own private keys give. Both ends agree only when every certificate matches its
  holder's private key, which is what a real ECMQV exchange decides too; the SMACs are
  MACU = HMAC(Z, 02 || U || V || QEU || QEV) and MACV = HMAC(Z, 03 || V || U || QEV ||
  QEU), cut to 16 bytes, after the SE specification's key confirmation (with HMAC-SHA256
  instead of its AES-MMO HMAC).
"""
import hashlib
import hmac
import os
import struct

from ppmid.zigbee import ezsp as E
from ppmid.zigbee import ezsp_cbke as C
from ppmid.zigbee import installcode as IC
from ppmid.zigbee import keyest as K

# the certificate authority every genuine GB HAN certificate here comes from (made up)
ISSUER = bytes.fromhex("5445535443413031")
EMBER_JOIN_FAILED, EMBER_NO_NETWORK_KEY = 0x94, 0xAD
SL_NO_NETWORK_KEY = 0x0C1B
EMBER_NOT_JOINED, SL_NOT_JOINED = 0x93, 0x17
EMBER_INVALID_CALL, SL_INVALID_STATE = 0x70, 0x02

# The CH's Key Establishment server: the generate times it announces in its Initiate Key
# Establishment Response (seconds it may take) and how long it waits for the PPMID's next
# frame (the PPMID's own announced time, at most this). Wait time in its Terminate frames.
CH_EPHEMERAL_TIME_S = 2
CH_CONFIRM_TIME_S = 2
CH_TERMINATE_WAIT_S = 3
# a joined device with no completed key establishment is told to leave after this long
CBKE_DEADLINE_S = 30


def public_key(private):
    return b"\x02" + hashlib.sha256(b"public" + private).digest() + b"\x00" * 4


def certificate(eui64, private, issuer=ISSUER):
    """A made-up suite 2 certificate of a node: subject = its EUI-64 (big-endian)."""
    return K.make_certificate(hashlib.sha256(eui64).digest()[:8], issuer, eui64, public_key(private))


def _z(own_private, own_eph_private, partner_cert, partner_eph):
    mine = [public_key(own_private), public_key(own_eph_private)]
    theirs = [bytes(partner_cert[-37:]), bytes(partner_eph)]
    statics = sorted([mine[0], theirs[0]])
    ephs = sorted([mine[1], theirs[1]])
    return hmac.new(b"modelled ECMQV", b"".join(statics + ephs), hashlib.sha256).digest()


def smacs(own_private, own_eph_private, own_cert, partner_cert, partner_eph, am_initiator):
    """(MACU, MACV) as the node holding own_private computes them."""
    z = _z(own_private, own_eph_private, partner_cert, partner_eph)
    if am_initiator:
        ucert, vcert, qeu, qev = own_cert, partner_cert, public_key(own_eph_private), partner_eph
    else:
        ucert, vcert, qeu, qev = partner_cert, own_cert, partner_eph, public_key(own_eph_private)
    u, v = K.cert_subject(ucert), K.cert_subject(vcert)
    macu = hmac.new(z, b"\x02" + u + v + qeu + qev, hashlib.sha256).digest()[:16]
    macv = hmac.new(z, b"\x03" + v + u + qev + qeu, hashlib.sha256).digest()[:16]
    return macu, macv


class ModuleCommissioning:
    """The NCP's commissioning state: what its tokens hold (network, certificate, private
    key, whether CBKE stored a link key) survives resets; the rest is RAM."""

    def __init__(self, ncp, eui64, private=None, cert=None):
        self.ncp = ncp
        self.eui64 = eui64
        self.private = private or hashlib.sha256(b"module" + eui64).digest()
        self.cert = cert or certificate(eui64, self.private)
        self.has_network = False      # token: a network to resume (networkInit)
        self.link_key_stored = False  # token: CBKE completed and stored its link key
        self.key_seq = None           # token: the sequence number of the network key it holds
        # token: the extended PAN id of the network it joined (None: whichever the trust centre
        # has, for a module that never joined here); a CH replaced (TrustCentre.replace) forms
        # another network, which this one no longer names: no resume or rejoin finds it
        self.network = None
        self.back_before_rejoin_answer = False   # fault: see find_and_rejoin
        self.leaves = 0               # leaveNetwork commands obeyed
        self.power_on()

    def power_on(self):
        self.security = None          # setInitialSecurityState's preconfigured key
        self.eph_private = None
        self.scanning = False

    def network_on_air(self):
        """True when the tokens hold a network and it is the trust centre's (the one on air)."""
        tc = getattr(self.ncp.ch, "trust_centre", None)
        return self.has_network and (self.network is None or
                                     (tc is not None and self.network == tc.network["extended_pan_id"]))

    def status(self, ember, sl):
        return struct.pack("<I", sl) if self.ncp.version >= 14 else bytes((ember,))

    def ok(self):
        return self.status(0, 0)

    # ---- commands ------------------------------------------------------------------------
    def set_initial_security_state(self, p):
        if len(p) < 43:
            raise ValueError("setInitialSecurityState cut short")
        if self.ncp.joined:
            return self.status(EMBER_INVALID_CALL, SL_INVALID_STATE)
        bitmask = struct.unpack_from("<H", p, 0)[0]
        self.security = bytes(p[2:18]) if bitmask & C.HAVE_PRECONFIGURED_KEY else None
        return self.ok()

    def start_scan(self, p):
        scan_type, mask, duration = struct.unpack_from("<BIB", p, 0)
        if scan_type != C.ACTIVE_SCAN:
            return self.status(0x34, 0x4E)   # MAC_INCORRECT_SCAN_TYPE
        self.ncp.loop.call_later(0.05 * max(1, duration), self._scan_done, mask)
        return self.ok()

    def _scan_done(self, mask):
        ch = self.ncp.ch
        tc = getattr(ch, "trust_centre", None)
        if self.ncp.network_available and tc is not None:
            for net in tc.networks():
                if mask & (1 << net["channel"]):
                    self.ncp.callback(C.NETWORK_FOUND_HANDLER, bytes((net["channel"],))
                                      + struct.pack("<H", net["pan_id"]) + net["extended_pan_id"][::-1]
                                      + bytes((1, 2, 0, 200, 256 - 50)))
        self.ncp.callback(C.SCAN_COMPLETE_HANDLER, b"\x00" + self.ok())

    def join_network(self, p):
        if self.ncp.joined:
            return self.status(EMBER_INVALID_CALL, SL_INVALID_STATE)
        ext = bytes(p[1:9])[::-1]
        pan, _power, channel = struct.unpack_from("<HbB", p, 9)
        self.ncp.loop.call_later(0.05, self._join_result, ext, pan, channel)
        return self.ok()

    def _join_result(self, ext, pan, channel):
        tc = getattr(self.ncp.ch, "trust_centre", None)
        admitted = tc is not None and self.ncp.network_available and \
            tc.admit(self.eui64, self.security, ext, pan, channel)
        if not admitted:
            # the trust centre never sent the network key (not in its device log, or the
            # key it holds is not ours): the join times out on the module
            self.ncp.callback(E.STACK_STATUS_HANDLER, self.status(EMBER_NO_NETWORK_KEY, SL_NO_NETWORK_KEY))
            return
        self.has_network = True
        self.network = ext
        self.link_key_stored = False
        self.got_network_key(tc.network_key_seq)
        # the tokens hold the network joined, and getCurrentSecurityState (and, at v14, the
        # sender named for the CH's frames) the trust centre that admitted us
        c = self.ncp.stack.config
        c.extended_pan_id, c.pan_id, c.channel, c.tc_eui64 = ext, pan, channel, tc.eui64
        self.ncp.join_now()

    def got_network_key(self, seq):
        """The trust centre sent the network key (join, trust-centre rejoin, or a key
        switch while on the network): the module's tokens hold it."""
        self.key_seq = seq
        self.ncp.stack.config.network_key_seq = seq

    def leave(self):
        """The trust centre removed us (a leave without rejoin): the tokens forget the network."""
        self.has_network = False
        self.link_key_stored = False

    def leave_network(self, p):
        """leaveNetwork: off the network, the tokens forget it (the stack reports NETWORK_DOWN)."""
        if not self.ncp.joined and not self.has_network:
            return self.status(EMBER_INVALID_CALL, SL_INVALID_STATE)
        self.leaves += 1
        self.has_network = False
        self.link_key_stored = False
        self.ncp.left_network()
        return self.ok()

    def find_and_rejoin(self, p):
        """findAndRejoinNetwork: only a module holding a network (tokens) can rejoin it. A
        secured rejoin (haveCurrentNetworkKey) is answered only when the key the module
        holds is still the network's; a trust-centre rejoin is decided by the trust centre."""
        have_key, mask = struct.unpack_from("<BI", p, 0)
        if self.ncp.version >= 14 and len(p) < 7:
            raise ValueError("findAndRejoinNetwork v14 needs reason and node type")
        if self.back_before_rejoin_answer and self.has_network:
            # fault: the network came back by itself just before this command (NETWORK_UP
            # goes out first): the module is joined, and refuses the rejoin as such
            self.back_before_rejoin_answer = False
            self.ncp.network_available = True
            self.ncp.join_now()
        if not self.has_network:
            return self.status(EMBER_NOT_JOINED, SL_NOT_JOINED)
        if self.ncp.joined:
            return self.status(EMBER_INVALID_CALL, SL_INVALID_STATE)
        self.ncp.loop.call_later(0.05, self._rejoin_result, bool(have_key), mask)
        return self.ok()

    def _rejoin_result(self, have_key, mask):
        tc = getattr(self.ncp.ch, "trust_centre", None)
        net = tc.network if tc is not None else None
        if net is None or not self.ncp.network_available or not mask & (1 << net["channel"]) \
                or not self.network_on_air():
            # no beacon of our network on those channels (or the CH that formed it was replaced)
            self.ncp.callback(E.STACK_STATUS_HANDLER, self.status(EMBER_NOT_JOINED, SL_NOT_JOINED))
            return
        if not tc.admit_rejoin(self.eui64, have_key, self.key_seq):
            # secured: no rejoin response (the request is secured with a key the network no
            # longer uses, or the device is not the CH's); trust-centre: no network key
            self.ncp.callback(E.STACK_STATUS_HANDLER, self.status(EMBER_NOT_JOINED, SL_NOT_JOINED) if have_key
                              else self.status(EMBER_NO_NETWORK_KEY, SL_NO_NETWORK_KEY))
            return
        if not have_key:
            self.got_network_key(tc.network_key_seq)
        self.ncp.join_now()

    def get_certificate(self, p):
        return self.ok() + self.cert

    def generate_cbke_keys(self, p):
        self.eph_private = os.urandom(32)
        pub = public_key(self.eph_private)
        self.ncp.loop.call_later(0.02, lambda: self.ncp.callback(C.GENERATE_CBKE_KEYS_HANDLER_283K1, self.ok() + pub))
        return self.ok()

    def calculate_smacs(self, p):
        if len(p) < 1 + C.CERT_LEN + C.PUBLIC_KEY_LEN:
            raise ValueError("calculateSmacs283k1 cut short")
        if self.eph_private is None:
            return self.status(EMBER_INVALID_CALL, SL_INVALID_STATE)
        initiator = bool(p[0])
        cert, eph = bytes(p[1:75]), bytes(p[75:112])
        macu, macv = smacs(self.private, self.eph_private, self.cert, cert, eph, initiator)
        self.ncp.loop.call_later(0.02, lambda: self.ncp.callback(C.CALCULATE_SMACS_HANDLER_283K1,
                                                                 self.ok() + macu + macv))
        return self.ok()

    def clear_temporary_data(self, p):
        if p[0] and self.eph_private is not None:
            self.link_key_stored = True
        self.eph_private = None
        return self.ok()


COMMANDS = {C.SET_INITIAL_SECURITY_STATE: ModuleCommissioning.set_initial_security_state,
            C.START_SCAN: ModuleCommissioning.start_scan,
            C.JOIN_NETWORK: ModuleCommissioning.join_network,
            C.LEAVE_NETWORK: ModuleCommissioning.leave_network,
            C.FIND_AND_REJOIN_NETWORK: ModuleCommissioning.find_and_rejoin,
            C.GET_CERTIFICATE_283K1: ModuleCommissioning.get_certificate,
            C.GENERATE_CBKE_KEYS_283K1: ModuleCommissioning.generate_cbke_keys,
            C.CALCULATE_SMACS_283K1: ModuleCommissioning.calculate_smacs,
            C.CLEAR_TEMPORARY_DATA_MAYBE_STORE_LINK_KEY_283K1: ModuleCommissioning.clear_temporary_data}


class _KeSession:
    def __init__(self, cert):
        self.cert = cert
        self.state = "initiated"     # -> "ephemeral" -> done
        self.partner_eph = None
        self.eph_private = os.urandom(32)
        self.timer = None


class TrustCentre:
    """The CH's trust-centre half: its network, its device log (EUI-64 -> install code,
    what the DCC adds for the installer), its certificate and the Key Establishment
    server. `ch` is the CommsHub (ch.ncp reaches the PPMID's module)."""

    def __init__(self, ch, device_log, eui64=bytes.fromhex("0000b0d5b3ffff00"), issuer=ISSUER,
                 extra_networks=(), cbke_deadline_s=CBKE_DEADLINE_S, cert_issuer=None, cert_subject=None,
                 silent=False):
        self.ch = ch
        self.device_log = {bytes(k): IC.parse(v) for k, v in device_log.items()}
        self.eui64 = eui64
        self.private = hashlib.sha256(b"ch" + eui64).digest()
        # its own certificate's issuer: cert_issuer rehearses a CH from another CA; its
        # subject: cert_subject rehearses a certificate of another device (an IHD's, from our CA)
        self.cert = certificate(cert_subject or eui64, self.private, issuer=cert_issuer or issuer)
        self.issuer = issuer
        self.network = {"channel": 20, "pan_id": 0x1A62, "extended_pan_id": bytes.fromhex("00124b0001c0ffee")}
        # another CH answering the scan: {"channel", "pan_id", "extended_pan_id"} each
        self.extra_networks = list(extra_networks)
        self.cbke_deadline_s = cbke_deadline_s
        self.joined = {}            # eui -> True once CBKE completed
        self.network_key_seq = 0    # the network key in use (switch_network_key: the next one)
        self.session = None
        self._deadline = None
        self.counters = {"joins_admitted": 0, "joins_refused": 0, "ke_initiated": 0, "ke_ok": 0,
                         "ke_terminated": 0, "ke_timeouts": 0, "removed": 0, "rejoins_admitted": 0,
                         "rejoins_refused": 0, "secured_rejoins_admitted": 0, "secured_rejoins_stale_key": 0,
                         "network_key_switches": 0}
        self.events = []            # (what, detail) for tests and the emulate report
        self.silent = silent        # fault: the Key Establishment server answers nothing

    def _event(self, what, detail=""):
        self.events.append((what, detail))
        self.ch.log("tc: %s %s" % (what, detail))

    def networks(self):
        return [self.network] + self.extra_networks

    def admit(self, eui, link_key, ext, pan, channel):
        if (ext, pan, channel) != (self.network["extended_pan_id"], self.network["pan_id"], self.network["channel"]):
            self.counters["joins_refused"] += 1
            self._event("join_refused", "another network")
            return False
        code = self.device_log.get(eui)
        if code is None or link_key != IC.link_key(code):
            self.counters["joins_refused"] += 1
            self._event("join_refused", "not in the device log" if code is None else "link key mismatch")
            return False
        self.counters["joins_admitted"] += 1
        self._event("join_admitted", eui.hex())
        self.joined[eui] = False
        self._arm_deadline()
        return True

    def admit_rejoin(self, eui, have_key, key_seq=None):
        """A rejoin. Secured (have_key, the module's network key key_seq): the parent
        accepts the request only if it is secured with the network key in use, so a device
        that was away over a key switch gets no answer (modelled: also refused once the
        device is out of the device log). Trust-centre (no network key): admitted, the
        network key sent again under the device's link key, only for a device still in
        the device log that completed key establishment."""
        if eui in self.device_log and have_key and key_seq != self.network_key_seq:
            self.counters["secured_rejoins_stale_key"] += 1
            self._event("secured_rejoin_unanswered", "network key %s, in use %d" % (key_seq, self.network_key_seq))
            return False
        if eui in self.device_log and (have_key or self.joined.get(eui, False)):
            self.counters["rejoins_admitted"] += 1
            if have_key:
                self.counters["secured_rejoins_admitted"] += 1
            self._event("rejoin_admitted", eui.hex() + (" secured" if have_key else " trust-centre"))
            return True
        self.counters["rejoins_refused"] += 1
        self._event("rejoin_refused", "not in the device log" if eui not in self.device_log else "no key establishment")
        return False

    def switch_network_key(self):
        """The CH switches to a new network key: devices on the network get it; one away
        (the PPMID's module while the HAN is down for it) keeps the old one, and only a
        trust-centre rejoin brings it the new one."""
        self.network_key_seq = (self.network_key_seq + 1) & 0xFF
        self.counters["network_key_switches"] += 1
        self._event("network_key_switched", str(self.network_key_seq))
        m = self.ch.ncp.commissioning
        if self.ch.ncp.joined and m is not None:
            m.got_network_key(self.network_key_seq)

    def replace(self, eui64, pan_id=None):
        """Another CH takes this one's place (the installer swaps a failed CH): -> its
        TrustCentre, with its own EUI-64, key pair and certificate (this one's issuer), a
        fresh network key, this one's device log (the DCC puts the HAN devices in the new
        CH's) and no device that completed key establishment with it; the other CHs
        answering the scan (extra_networks) are still there. It forms its own
        network: on this one's channel, extended PAN id its EUI-64 (what a coordinator uses
        when none is configured), PAN id pan_id (default this one's + 1). This one stops:
        no Key Establishment session or deadline of it runs on."""
        eui64 = bytes(eui64)
        if len(eui64) != 8 or eui64 == self.eui64:
            raise ValueError("the new CH needs an EUI-64 of 8 bytes other than %s" % self.eui64.hex())
        new = TrustCentre(self.ch, {}, eui64=eui64, issuer=self.issuer, cbke_deadline_s=self.cbke_deadline_s)
        new.device_log = dict(self.device_log)
        new.extra_networks = list(self.extra_networks)   # the neighbours' CHs stay on the air
        new.network = {"channel": self.network["channel"],
                       "pan_id": (self.network["pan_id"] + 1) & 0xFFFF if pan_id is None else pan_id,
                       "extended_pan_id": eui64}
        self._stop_session()
        if self._deadline:
            self._deadline.cancel()
            self._deadline = None
        self._event("replaced", "by %s" % eui64.hex())
        new._event("installed", "in place of %s, network %s" % (self.eui64.hex(), eui64.hex()))
        return new

    def cbke_done(self, eui):
        return self.joined.get(eui, False)

    def _arm_deadline(self):
        if self._deadline:
            self._deadline.cancel()
        self._deadline = self.ch.loop.call_later(self.cbke_deadline_s, self._deadline_passed)

    def on_rejoin(self, eui):
        """The module resumed its network (networkInit): if key establishment never
        completed, the deadline runs again."""
        if not self.joined.get(eui, False):
            self._arm_deadline()

    def _deadline_passed(self):
        self._deadline = None
        eui = self.ch.ncp.commissioning.eui64
        if self.ch.ncp.joined and not self.joined.get(eui, False):
            self.counters["removed"] += 1
            self._event("removed", "no key establishment within %ss" % self.cbke_deadline_s)
            self.ch.ncp.removed_by_trust_centre()

    def forget(self, eui):
        """The device log loses the PPMID (change of tenancy, new install)."""
        self.device_log.pop(eui, None)
        self.joined.pop(eui, None)
        if self.ch.ncp.joined and self.ch.ncp.commissioning.eui64 == eui:
            self.ch.ncp.removed_by_trust_centre()

    # ---- Key Establishment server ----------------------------------------------------------
    def _send(self, frame):
        # network security only: the exchange is what gives the two ends their link key
        self.ch.ncp.incoming(0x0000, 0x0109, K.CLUSTER_KEY_ESTABLISHMENT, frame, encrypted=False)

    def _terminate(self, seq, status):
        self.counters["ke_terminated"] += 1
        self._event("ke_terminated", K.TERMINATE_NAMES.get(status, status))
        self._stop_session()
        self._send(K.terminate(seq, True, status, CH_TERMINATE_WAIT_S))

    def _stop_session(self):
        if self.session and self.session.timer:
            self.session.timer.cancel()
        self.session = None

    def _expect(self, seconds):
        s = self.session
        if s.timer:
            s.timer.cancel()
        s.timer = self.ch.loop.call_later(seconds, self._timed_out, s)

    def _timed_out(self, s):
        if self.session is s:
            self.counters["ke_timeouts"] += 1
            self._event("ke_timeout", s.state)
            self.session = None

    def ke_frame(self, frame):
        if self.silent:
            return
        try:
            f = K.parse(frame)
        except Exception:
            self._terminate(frame[1] if len(frame) > 1 else 0, K.BAD_MESSAGE)
            return
        if f.server_to_client:
            return
        eui = self.ch.ncp.commissioning.eui64
        if f.command == K.INITIATE:
            self.counters["ke_initiated"] += 1
            if f.suite != K.SUITE_2:
                return self._terminate(f.seq, K.UNSUPPORTED_SUITE)
            if K.cert_issuer(f.certificate) != self.issuer:
                return self._terminate(f.seq, K.UNKNOWN_ISSUER)
            if K.cert_subject(f.certificate) != eui or eui not in self.device_log:
                return self._terminate(f.seq, K.INVALID_CERTIFICATE)
            self._stop_session()
            self.session = _KeSession(f.certificate)
            self._event("ke_initiated", eui.hex())
            self._expect(min(f.ephemeral_time or 1, 10) + 1)
            self._send(K.initiate(f.seq, True, self.cert, CH_EPHEMERAL_TIME_S, CH_CONFIRM_TIME_S))
        elif f.command == K.EPHEMERAL_DATA:
            s = self.session
            if s is None or s.state != "initiated":
                return self._terminate(f.seq, K.BAD_MESSAGE)
            s.partner_eph = f.public_key
            s.state = "ephemeral"
            self._expect(min(CH_CONFIRM_TIME_S * 5, 10) + 1)
            self._send(K.ephemeral_data(f.seq, True, public_key(s.eph_private)))
        elif f.command == K.CONFIRM_KEY:
            s = self.session
            if s is None or s.state != "ephemeral":
                return self._terminate(f.seq, K.BAD_MESSAGE)
            macu, macv = smacs(self.private, s.eph_private, self.cert, s.cert, s.partner_eph, False)
            if f.mac != macu:
                return self._terminate(f.seq, K.BAD_KEY_CONFIRM)
            self._stop_session()
            self.joined[eui] = True
            self.counters["ke_ok"] += 1
            self._event("ke_ok", eui.hex())
            if self._deadline:
                self._deadline.cancel()
                self._deadline = None
            self._send(K.confirm_key(f.seq, True, macv))
            self.ch.ppmid_joined()    # now the tunnel
        elif f.command == K.TERMINATE:
            self._event("ke_terminated_by_ppmid", K.TERMINATE_NAMES.get(f.status, f.status))
            self._stop_session()
