"""The emulated Communications Hub: HAN coordinator (NWK 0x0000), tunnel client towards
the PPMID, and the meters behind it (ESME, and GSME behind the GPF).

The CH opens the GB-HRGP tunnel whenever the PPMID (re)joins, takes GBCS commands out of
TransferData, hands them to the addressed device and sends the device's response back;
messages for the PPMID wait (bounded) while there is no tunnel or the PPMID is unreachable.
Every GBCS message the CH receives or sends is logged (JSONL: time, direction, hex)."""
import binascii
import json
import os
import struct
import threading
import time

from ppmid.gbcs import build, gbt, reassembly
from ppmid.gbcs.message import decode
from ppmid.zigbee import tunnel as T
from ppmid.zigbee import tunnel_host as TH   # the CH's frames
from ppmid.zigbee.tunnel_control import transfer_data_error
from ppmid.zigbee import timecluster as TC

from .esme import EmulatedEsme, ESME_NWK

ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
PPMID = "00DB1234567890A4"
SUPPLIER = "90B3D51F30010000"
PPMID_NWK = 0x1234
CH_NWK = 0x0000
# how the CH answers a read of its Time cluster: "good" (its clock, Master|Synchronized),
# "silent" (no answer), "unsynced" (TimeStatus 0: it does not know the time), "unsupported"
# (status UNSUPPORTED_ATTRIBUTE for each attribute)
TIME_MODES = ("good", "silent", "unsynced", "unsupported")


def hexs(b):
    return binascii.hexlify(bytes(b)).decode().upper()


class Corpus:
    """COMMAND -> RESPONSE pairs and ALERTs from the RTDS corpus (if present)."""

    def __init__(self, path):
        self.responses = {}
        self.alerts = {ESME: [], GSME: []}
        if not path or not os.path.isdir(path):
            return
        for folder, _dirs, files in os.walk(path):
            for f in sorted(files):
                if not f.endswith(".HEX"):
                    continue
                full = os.path.join(folder, f)
                if "_COMMAND_" in f:
                    resp = os.path.join(folder, f.replace("_COMMAND_", "_RESPONSE_"))
                    if os.path.exists(resp):
                        self.responses[self._read(full)] = self._read(resp)
                elif "_ALERT_" in f:
                    msg = self._read(full)
                    try:
                        orig = hexs(decode(msg).originator)
                    except Exception:
                        continue
                    if orig in self.alerts:
                        self.alerts[orig].append(msg)

    @staticmethod
    def _read(path):
        with open(path) as fh:
            return binascii.unhexlify("".join(fh.read().split()))


# How long the GPF takes to answer for the (sleepy) GSME. A real GSME is reached only when it
# next wakes, seconds to minutes later; the emulation keeps a short fixed delay so that the
# GSME is the slower of the two meters without making tests slow.
GPF_DELAY_S = 0.05

# The CH's APS layer sending a fragmented message (Zigbee APS fragmentation): a window of
# fragments, then nothing more until the receiver acknowledged every one of them. An
# unacknowledged window goes again after apscAckWaitDuration, at most apscMaxFrameRetries
# times, then the message is given up. The Zigbee spec's figures: 0.05 s x 2 x nwkcMaxDepth
# (15) plus the security processing time, ~1.6 s; 3 retries. Window: 1, EmberZNet's
# default EZSP_CONFIG_FRAGMENT_WINDOW_SIZE (and the NCP's value in stack.py).
FRAGMENT_WINDOW = 1
APS_ACK_TIMEOUT_S = 1.6
APS_RETRIES = 3


# A device's refusal of a replayed command. GBCS devices execute a Remote Party command only
# if its originator counter is above the last one they accepted from that Remote Party
# (docs/emulate.md, "Anti-replay in the emulated meters"). The alert code is the public
# table's "Failed Authentication or Authorisation not covered by other codes" (names:
# Wireshark packet-gbcs.c, SmartDCCInnovation gbcs-parser src/common.ts); which code a given
# meter raises for a stale counter is not in the gathered facts: this is the emulation's
# choice. The alert names the refused command in its other-information (supplementary
# remote party id = the command's originator, supplementary remote party counter = its
# counter), so that the sender can tell which command was refused.
ALERT_REPLAY_REFUSED = 0x8F53


class Device:
    def __init__(self, title, kind, corpus, delay_s=0.0):
        self.title = title
        self.kind = kind
        self.corpus = corpus
        self.delay_s = delay_s          # GSME: the GPF answers for the sleepy meter
        self.received = []
        self.alert_counter = 0x0100000000000000 | (1 if kind == "GSME" else 0)
        self.last_counter = {}          # remote party (originator title bytes) -> last accepted counter
        # per command, keyed by (originator bytes, counter): how often it reached the
        # device, and how often the device executed it (never more than once)
        self.received_n = {}
        self.executed_n = {}
        self.replays_refused = 0

    def handle(self, msg):
        """-> the GBCS response bytes (CRA 2, same counter, titles swapped), or for a
        replayed command (counter not above the last accepted from its originator) the
        refusal alert; the command is then not executed."""
        self.received.append(msg)
        m = decode(msg)
        party, counter = bytes(m.originator), m.counter
        key = (party, counter)
        self.received_n[key] = self.received_n.get(key, 0) + 1
        last = self.last_counter.get(party)
        if last is not None and counter <= last:
            self.replays_refused += 1
            return self.replay_alert(party, counter)
        self.last_counter[party] = counter
        self.executed_n[key] = self.executed_n.get(key, 0) + 1
        canned = self.corpus.responses.get(bytes(msg))
        if canned is not None:
            return canned
        return build.make_response(msg, content=b"\x00")

    def replay_alert(self, party, counter):
        self.alert_counter += 1
        return build.build_signed(3, self.alert_counter, bytes.fromhex(self.title), party, ALERT_REPLAY_REFUSED,
                                  b"\x0f\x00\x00\x00\x00\x00", other_info=party + counter.to_bytes(8, "big"))

    def alert(self, message_code=None):
        canned = self.corpus.alerts.get(self.title)
        if canned and message_code is None:
            return canned[self.alert_counter % len(canned)]
        self.alert_counter += 1
        return build.build_signed(3, self.alert_counter, bytes.fromhex(self.title), bytes.fromhex(SUPPLIER),
                                  0x8F66 if message_code is None else message_code,
                                 b"\x0f\x00\x00\x00\x00\x00")


class _Outgoing:
    """A message to the PPMID on its way in APS fragments."""

    def __init__(self, frags, seq):
        self.frags = frags
        self.seq = seq           # its APS counter: the acks carry it
        self.base = 0            # first fragment of the window in flight
        self.acked = set()
        self.tries = 0           # retransmissions of this window


class CommsHub:
    def __init__(self, ncp, loop, log_path=None, corpus_dir=None, hold_max=32, busy_retry_s=3.0,
                 transfer_size=1500, log=None, gpf_delay_s=GPF_DELAY_S, fragment_window=FRAGMENT_WINDOW,
                 aps_ack_timeout_s=APS_ACK_TIMEOUT_S, aps_retries=APS_RETRIES, on_record=None,
                 time_mode="good", time_offset_s=0):
        self.ncp = ncp
        self.on_record = on_record      # called with each log entry (e.g. a pcap tap)
        self.loop = loop
        self.log = log or (lambda m: None)
        corpus = Corpus(corpus_dir)
        self.devices = {ESME: Device(ESME, "ESME", corpus), GSME: Device(GSME, "GSME", corpus, gpf_delay_s)}
        self.esme = EmulatedEsme()      # the ESME's own HAN node: top-ups (esme.py)
        self.tunnel_id = None
        self.ppmid_max = None
        self.transfer_size = transfer_size
        self.busy_retry_s = busy_retry_s
        self.request_retry_s = 2.0
        self.hold_max = hold_max
        self.held = []                  # messages for the PPMID waiting for a tunnel
        self.dropped_held = 0
        self.received = []              # every GBCS message from the PPMID, in order
        self.sent = []
        self.refuse_until = 0.0         # fault: the CH does not acknowledge (busy)
        self.tunnel_requests = 0
        self.counters = {"tunnel_requests": 0, "tunnel_refused": 0, "transfer_errors_rx": 0,
                         "rx_fragments": 0, "rx_fragments_dropped": 0, "bad_zcl": 0,
                         "unknown_recipient": 0, "not_gbcs": 0,
                         "tx_fragments": 0, "tx_fragment_retries": 0, "tx_fragment_giveups": 0,
                         "tx_fragment_aborted": 0, "rx_fragment_acks": 0, "rx_fragment_acks_stray": 0,
                         "fragment_acks_dropped": 0, "answers_lost": 0, "tunnel_response_unmatched": 0}
        self.fragment_window = max(1, fragment_window)
        self.aps_ack_timeout_s = aps_ack_timeout_s
        self.aps_retries = aps_retries
        self.drop_fragment_acks = False  # fault: the PPMID's fragment acks are lost on air
        self.lose_answers = 0            # fault: the meters' next N answers are lost on their way
        self._out = None                 # _Outgoing being sent in fragments
        self._outq = []                  # ZCL frames for the PPMID behind it, in order
        self._out_timer = None
        self._seq = 0
        self._request_seq = None         # the sequence number of our last RequestTunnel
        self._frag = None
        self._reasm = reassembly.Reassembler(65536, 60000)
        self._request_handle = None
        self._log_lock = threading.Lock()
        self._log_file = open(log_path, "a") if log_path else None
        self.changed = threading.Condition()
        self.trust_centre = None        # commissioning.TrustCentre when the PPMID must commission
        # the CH's clock as the HAN's time source (ZCL Time cluster, _time_read): TIME_MODES
        self.time_mode = time_mode
        self.time_offset_s = time_offset_s  # the CH's clock minus the host's
        self.time_reads = 0

    # ---- log -----------------------------------------------------------------------------
    def set_gpf_delay(self, seconds):
        """How long the GPF takes to answer for the GSME from now on."""
        for dev in self.devices.values():
            if dev.kind == "GSME":
                dev.delay_s = seconds

    def _record(self, direction, msg, **extra):
        entry = {"t": round(time.time(), 6), "dir": direction, "hex": hexs(msg), "len": len(msg)}
        entry.update(extra)
        with self._log_lock:
            if not extra.get("gbt_block"):
                (self.received if direction == "rx" else self.sent).append(bytes(msg))
            if self._log_file:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()
            if self.on_record is not None:
                self.on_record(entry)
        with self.changed:
            self.changed.notify_all()

    def close(self):
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def eui64_of(self, nwk):
        """The EUI-64 (big-endian) of a node on this emulated HAN other than the CH, as a
        module learns it from the frames that node secures: the ESME's; bytes(8) for an
        address no node here has."""
        return bytes.fromhex(ESME) if nwk == ESME_NWK else bytes(8)

    # ---- PPMID presence ------------------------------------------------------------------
    def ppmid_joined(self):
        # a (re)joining PPMID gets a fresh tunnel request (its tunnel state may be gone);
        # as trust centre, only once it completed key establishment
        self.tunnel_id = None
        tc = self.trust_centre
        if tc is not None and not tc.cbke_done(self.ncp.commissioning.eui64):
            tc.on_rejoin(self.ncp.commissioning.eui64)
            return
        self._schedule_request(0.1)

    def ppmid_left(self):
        self.tunnel_id = None
        # the PPMID's stack is gone (reset, left the network): what was on its way to it
        # is for a tunnel that no longer exists
        if self._out is not None or self._outq:
            self.counters["tx_fragment_aborted"] += (self._out is not None) + len(self._outq)
            self._out = None
            self._outq = []
            self._cancel_out_timer()
        if self._request_handle:
            self._request_handle.cancel()
            self._request_handle = None

    def _schedule_request(self, delay):
        if self._request_handle:
            self._request_handle.cancel()
        self._request_handle = self.loop.call_later(delay, self.request_tunnel)

    def _next_seq(self):
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def request_tunnel(self):
        self._request_handle = None
        if self.tunnel_id is not None:
            return
        if self.ncp.can_reach_host():
            self.counters["tunnel_requests"] += 1
            self._request_seq = self._next_seq()
            self._to_ppmid(TH.request_tunnel(self._request_seq, max_in=self.transfer_size))
        if self.ncp.joined and (self.trust_centre is None or
                                self.trust_centre.cbke_done(self.ncp.commissioning.eui64)):
            # the request or its answer can be lost: ask again until the tunnel is open
            self._schedule_request(self.request_retry_s)

    def close_tunnel(self, reopen_after_s=None):
        """Fault: the CH closes the tunnel (CloseTunnel), and asks again later if told to."""
        if self.tunnel_id is not None:
            self._to_ppmid(TH.close_tunnel(self._next_seq(), self.tunnel_id))
        self.tunnel_id = None
        if reopen_after_s is not None:
            self._schedule_request(reopen_after_s)

    def forget_tunnel(self, reopen_after_s=None):
        """Fault: the CH loses its tunnel silently (restart); the PPMID learns it from a
        TransferDataError when it next sends."""
        self.tunnel_id = None
        if reopen_after_s is not None:
            self._schedule_request(reopen_after_s)

    # ---- from the PPMID ------------------------------------------------------------------
    def deliver(self, dest, aps, payload):
        """An APS frame from the PPMID reached the CH; False = no APS ack (busy fault)."""
        if time.time() < self.refuse_until:
            return False
        if dest == ESME_NWK:
            return self._to_esme(aps, payload)
        if dest != CH_NWK:
            return False
        if self.trust_centre is not None and aps["profile"] == T.PROFILE_SE and aps["cluster"] == 0x0800:
            self.loop.call_soon(self.trust_centre.ke_frame, bytes(payload))
            return True
        if aps["profile"] == T.PROFILE_SE and aps["cluster"] == TC.CLUSTER_TIME:
            self.loop.call_soon(self._time_read, bytes(payload))
            return True
        if aps["profile"] != T.PROFILE_SE or aps["cluster"] != T.CLUSTER_TUNNELING:
            return True
        if aps["options"] & 0x8000:
            self.counters["rx_fragments"] += 1
            taken, payload = self._fragment_in(aps, payload)
            if payload is None:
                return taken
        self.loop.call_soon(self._zcl, payload)
        return True

    def _fragment_in(self, aps, payload):
        """One APS fragment of a frame from the PPMID -> (acknowledged, the whole frame once
        its last fragment is here, else None). The rules of the firmware's han._defragment:
        the count is read from fragment 0 alone (on air a later fragment's extended header
        carries only its index); an index at or above that count drops the frame (it cannot
        be whole); a frame is complete only when every index below the count is here. A
        frame is keyed by its APS counter, which every fragment of it carries, as a real APS
        layer keys it by sender and counter (the sender here is always the PPMID). A fragment
        that belongs to no frame in progress (another counter) is not acknowledged and leaves
        that frame alone: the PPMID's send of it fails."""
        index = aps["group"] & 0xFF
        if index == 0:
            count = aps["group"] >> 8
            self._frag = (aps["sequence"], count, {}) if count else None
        if self._frag is None or self._frag[0] != aps["sequence"]:
            self.counters["rx_fragments_dropped"] += 1
            return False, None
        _, count, parts = self._frag
        if index >= count:
            self.counters["rx_fragments_dropped"] += 1
            self._frag = None
            return False, None
        parts[index] = payload
        if len(parts) < count:
            return True, None
        self._frag = None
        return True, b"".join(parts[i] for i in range(count))

    def _to_esme(self, aps, payload):
        # the ESME is a node of its own: the PPMID's Prepayment commands reach it directly
        if self.esme.unreachable:
            return False
        if aps["profile"] == T.PROFILE_SE and aps["cluster"] == 0x0705:
            self.loop.call_soon(self._esme_zcl, bytes(payload))
        return True

    def _esme_zcl(self, frame):
        rsp, alert = self.esme.handle(frame)
        if rsp is not None and self.ncp.can_reach_host():
            self.ncp.incoming(ESME_NWK, T.PROFILE_SE, 0x0705, rsp)
        if alert is not None:
            self.send_to_ppmid(self.devices[ESME].alert(alert))
        with self.changed:
            self.changed.notify_all()

    def set_time_mode(self, mode, offset_s=None):
        if mode not in TIME_MODES:
            raise ValueError("time mode %r: one of %s" % (mode, ", ".join(TIME_MODES)))
        self.time_mode = mode
        if offset_s is not None:
            self.time_offset_s = offset_s

    def _time_read(self, frame):
        """A Read Attributes of the Time cluster from the PPMID: answered with the CH's
        clock (the host's plus time_offset_s, in ZCL seconds from 2000) and TimeStatus
        Master|Synchronized, or as time_mode says."""
        try:
            seq, attrs = TC.parse_read(frame)
        except Exception:
            self.counters["bad_zcl"] += 1
            return
        self.time_reads += 1
        if self.time_mode == "silent" or not self.ncp.can_reach_host():
            return
        zcl = int(time.time()) + self.time_offset_s - 946684800
        status = 0 if self.time_mode == "unsynced" else TC.MASTER | TC.SYNCHRONIZED
        if self.time_mode == "unsupported":
            rsp = TC.time_response(seq, 0, 0, attrs, TC.STATUS_UNSUPPORTED_ATTRIBUTE)
        else:
            rsp = TC.time_response(seq, zcl, status, [a for a in attrs if a in (TC.ATTR_TIME, TC.ATTR_TIME_STATUS)])
        self.ncp.incoming(CH_NWK, T.PROFILE_SE, TC.CLUSTER_TIME, rsp)

    def _zcl(self, frame):
        try:
            fc, manu, seq, cmd, p = T.parse_zcl(frame)
        except Exception:
            self.counters["bad_zcl"] += 1
            return
        if not fc & T.FC_SERVER_TO_CLIENT:
            self.counters["bad_zcl"] += 1
            return
        if cmd == TH.REQUEST_TUNNEL_RESPONSE:
            if seq != self._request_seq:
                # a stack matches a response to its request by the transaction sequence
                # number: an answer with another number answers nothing we asked
                self.counters["tunnel_response_unmatched"] += 1
                self.log("ch: RequestTunnelResponse with sequence %d, not our request's %s: ignored"
                         % (seq, self._request_seq))
                return
            tid, status, max_in = struct.unpack_from("<HBH", p, 0)
            if status == TH.TUNNEL_OK:
                self.tunnel_id, self.ppmid_max = tid, max_in
                self.log("ch: tunnel %d open (PPMID takes %d bytes)" % (tid, max_in))
                self._flush_held()
            else:
                self.counters["tunnel_refused"] += 1
                self.log("ch: tunnel refused, status %d" % status)
                if status == TH.TUNNEL_BUSY:
                    self._schedule_request(self.busy_retry_s)
        elif cmd == TH.S_TRANSFER_DATA:
            tid = p[0] | (p[1] << 8)
            if tid != self.tunnel_id:
                self._to_ppmid(transfer_data_error(self._next_seq(), tid, T.NO_SUCH_TUNNEL, False))
                return
            self._gbcs_from_ppmid(p[2:])
        elif cmd == TH.S_TRANSFER_DATA_ERROR:
            self.counters["transfer_errors_rx"] += 1
            if p[2] == T.NO_SUCH_TUNNEL:
                self.tunnel_id = None
                self._schedule_request(0.1)
        elif cmd == TH.TUNNEL_CLOSURE_NOTIFICATION:
            self.tunnel_id = None

    def _gbcs_from_ppmid(self, msg):
        if len(msg) >= 2 and msg[0] == 0xDD and msg[1] == 0x09:
            self._record("rx", msg, gbt_block=True)
            try:
                whole = self._reasm.feed(msg, int(time.time() * 1000))
            except Exception as exc:
                self.log("ch: GBT block dropped: %s" % exc)
                return
            if whole is None:
                return
            msg = bytes(whole)
        self._record("rx", msg)
        try:
            m = decode(msg)
            recipient = hexs(m.recipient)
            cra = m.cra
        except Exception as exc:
            self.counters["not_gbcs"] += 1
            self.log("ch: not GBCS: %s" % exc)
            return
        dev = self.devices.get(recipient)
        if dev is None or cra != 1:
            self.counters["unknown_recipient"] += 1
            return
        try:
            response = dev.handle(msg)
        except Exception as exc:
            self.log("ch: %s could not answer: %s" % (dev.kind, exc))
            return
        if self.lose_answers:
            # the meter executed the command; its answer never reaches the CH
            self.lose_answers -= 1
            self.counters["answers_lost"] += 1
            return
        self.loop.call_later(dev.delay_s, self.send_to_ppmid, response)

    # ---- to the PPMID --------------------------------------------------------------------
    def _to_ppmid(self, zcl):
        """One ZCL frame for the PPMID: at once if it fits one APS frame and nothing is
        ahead of it, else in order behind the fragmented message being sent."""
        if not self.ncp.can_reach_host():
            return False
        if self._out is None and not self._outq and len(self.ncp.fragments(zcl)) == 1:
            return self.ncp.incoming(CH_NWK, T.PROFILE_SE, T.CLUSTER_TUNNELING, zcl)
        self._outq.append(bytes(zcl))
        if self._out is None:
            self._next_out()
        return True

    def _next_out(self):
        while self._out is None and self._outq:
            zcl = self._outq.pop(0)
            if not self.ncp.can_reach_host():
                self.counters["tx_fragment_aborted"] += 1
                continue
            frags = self.ncp.fragments(zcl)
            if len(frags) == 1:
                self.ncp.incoming(CH_NWK, T.PROFILE_SE, T.CLUSTER_TUNNELING, zcl)
                continue
            self._out = _Outgoing(frags, self.ncp.next_aps_seq())
            self._send_window()

    def _send_window(self):
        o = self._out
        for i in range(o.base, min(o.base + self.fragment_window, len(o.frags))):
            if i in o.acked:
                continue
            self.counters["tx_fragments"] += 1
            if self.ncp.can_reach_host():   # otherwise lost on air: the timer brings it back
                self.ncp.incoming_fragment(CH_NWK, T.PROFILE_SE, T.CLUSTER_TUNNELING, o.seq, i,
                                           len(o.frags), o.frags[i])
        self._cancel_out_timer()
        self._out_timer = self.loop.call_later(self.aps_ack_timeout_s, self._window_timeout, o)

    def _cancel_out_timer(self):
        if self._out_timer:
            self._out_timer.cancel()
            self._out_timer = None

    def _window_timeout(self, o):
        self._out_timer = None
        if o is not self._out:
            return
        o.tries += 1
        if o.tries > self.aps_retries:
            # as a real sender: the message is lost, the next one goes
            self.counters["tx_fragment_giveups"] += 1
            self.log("ch: no APS ack for fragments %d.. of %d after %d retries: message given up"
                     % (o.base, len(o.frags), self.aps_retries))
            self._out = None
            self._next_out()
            return
        self.counters["tx_fragment_retries"] += 1
        self._send_window()

    def fragment_ack(self, dest, aps):
        """An APS fragment acknowledgement from the PPMID (its host's sendReply): groupId
        0xFF00 | the fragment's index, the message's APS counter."""
        if dest != CH_NWK:
            self.counters["fragment_acks_elsewhere"] = self.counters.get("fragment_acks_elsewhere", 0) + 1
            self.last_ack_elsewhere = dest
            return
        if self.drop_fragment_acks:
            self.counters["fragment_acks_dropped"] += 1
            return
        o = self._out
        index = aps["group"] & 0xFF
        if o is None or aps["sequence"] != o.seq or not o.base <= index < min(o.base + self.fragment_window,
                                                                                len(o.frags)):
            self.counters["rx_fragment_acks_stray"] += 1
            return
        self.counters["rx_fragment_acks"] += 1
        o.acked.add(index)
        end = min(o.base + self.fragment_window, len(o.frags))
        if all(i in o.acked for i in range(o.base, end)):
            self._cancel_out_timer()
            o.base, o.tries = end, 0
            if end >= len(o.frags):
                self._out = None
                self._next_out()
            else:
                self._send_window()

    def send_to_ppmid(self, msg):
        """A GBCS message for the PPMID: now if the tunnel is up, else held (bounded)."""
        if self.tunnel_id is None or not self.ncp.can_reach_host():
            if len(self.held) >= self.hold_max:
                self.held.pop(0)
                self.dropped_held += 1
            self.held.append(bytes(msg))
            if self.ncp.can_reach_host() and self._request_handle is None:
                self._schedule_request(0.1)
            return False
        limit = self.ppmid_max or 1500
        for piece in build.split_for_transfer(msg, limit):
            self._to_ppmid(TH.transfer_data(self._next_seq(), self.tunnel_id, piece, False))
        self._record("tx", msg)
        return True

    def _flush_held(self):
        held, self.held = self.held, []
        for m in held:
            self.send_to_ppmid(m)

    def alert(self, device=ESME):
        dev = self.devices[device if device in self.devices else {"ESME": ESME, "GSME": GSME}[device]]
        msg = dev.alert()
        self.send_to_ppmid(msg)
        return msg
