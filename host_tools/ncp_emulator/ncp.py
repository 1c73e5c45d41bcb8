"""The module side of the UART: an EFR32-like EmberZNet NCP speaking ASH + EZSP (v8 and
later; a lower configured version answers only the legacy version frame, like an old
module would). ASH framing uses bellows' frame classes (an independent implementation of
the codec the firmware has its own copy of); the link logic here is ours.

Everything runs on one asyncio loop; see emulator.py for the thread wrapper and the pty."""
import random
import struct
import time

from bellows import ash as bash

from ppmid.zigbee import ezsp as E

from host_tools.ncp_emulator import ezsp_ncp as N
from host_tools.ncp_emulator import stack as S
from host_tools.ncp_emulator.commissioning import COMMANDS as COMMISSIONING_COMMANDS

FLAG, ESC, XON, XOFF, SUB, CAN = 0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A
RESERVED = (FLAG, ESC, XON, XOFF, SUB, CAN)
RESET_SOFTWARE = 0x0B
RESET_POWER_ON = 0x02
ACK_TIMEOUTS = 4
TX_K = 5                 # UG101: DATA frames the NCP sends before it must have an acknowledgement
ERROR_ACK_TIMEOUTS = 0x51
T_RETX = 0.4             # NCP's first retransmission timeout (UG101 T_RX_ACK_MIN), doubled per timeout
T_RX_ACK_MAX = 3.2
STACK_TYPE = 2
EMBER_SUCCESS = 0x00
EMBER_DELIVERY_FAILED = 0x66
EMBER_NETWORK_DOWN_STATUS = 0x93
SL_DELIVERY_FAILED = 0x0C02
SL_NETWORK_DOWN = 0x16
EZSP_SUCCESS = 0x00
EZSP_ERROR_INVALID_VALUE = 0x36
EZSP_ERROR_INVALID_ID = 0x37
EZSP_ERROR_VERSION_NOT_SET = 0x30   # invalidCommand before the version command (UG100 EzspStatus)
EZSP_ERROR_INVALID_FRAME_ID = 0x31  # invalidCommand: a frame id this NCP does not know
EZSP_ERROR_TRUNCATED = 0x33         # invalidCommand: parameters cut short
SL_ZIGBEE_EZSP_ERROR = 0x0C1E       # v14+: sl_status_t for any EZSP-level error
SL_INVALID_PARAMETER = 0x21
# EzspPolicyId values a v8+ NCP knows (UG100; 0x04 is the one the emulator acts on) and
# their power-on decisions. MESSAGE_CONTENTS_IN_CALLBACK_POLICY: by default the
# messageSentHandler carries the tag only (messageLength 0); "tag and contents" echoes
# the whole message back over the UART.
POLICY_IDS = range(0x00, 0x0D)
DEFAULT_POLICIES = {N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK: N.DECISION_MESSAGE_TAG_ONLY}
MESSAGE_CONTENTS_DECISIONS = (N.DECISION_MESSAGE_TAG_ONLY, N.DECISION_MESSAGE_TAG_AND_CONTENTS)
STACK_COMMAND_SINCE = S.SINCE


def wire(frame):
    return bytes(bash.AshProtocol._stuff_bytes(frame.to_bytes())) + b"\x7e"


class Faults:
    """Fault knobs; all off by default. Rates are probabilities per byte / per frame."""

    def __init__(self, byte_error_rate=0.0, drop_rate=0.0, late_ack_rate=0.0, late_ack_ms=600,
                 reset_every=0, seed=None, byte_error_rate_from_host=None, mute_unicast=0,
                 mute_runs=True):
        self.byte_error_rate = byte_error_rate   # each byte to the host: one bit flipped
        # bytes from the host: the same rate unless given separately
        self.byte_error_rate_from_host = byte_error_rate if byte_error_rate_from_host is None \
            else byte_error_rate_from_host
        self.drop_rate = drop_rate               # whole frames lost, both directions
        self.late_ack_rate = late_ack_rate       # NCP ACKs held back by late_ack_ms
        self.late_ack_ms = late_ack_ms
        self.reset_every = reset_every           # NCP resets itself after every N host DATA frames
        # the NCP takes the mute_unicast-th sendUnicast of tunnel data (TransferData or an
        # APS fragment; 1 = the first; 0 = off), runs
        # it if mute_runs (the CH gets the message), then nothing it sends reaches the host
        # (no ACK, answer, callback or ERROR) until the host's next RST
        self.mute_unicast = mute_unicast
        self.mute_runs = mute_runs
        self.rng = random.Random(seed)

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "rng"}


class Ncp:
    """send_bytes(bytes) writes to the UART (paced by the caller); ch is the emulated
    Communications Hub (deliver(aps, payload) from the PPMID; it calls ncp.incoming())."""

    def __init__(self, loop, send_bytes, ezsp_version=13, max_payload=82, faults=None,
                 stack_version=0x7420, log=None, tx_k=TX_K, node=None):
        self.loop = loop
        self._raw_send = send_bytes
        self.version = ezsp_version
        self.max_payload = max_payload
        self.refusals = []   # statuses for the next sendUnicasts (refuse_sends fault)
        self.stack_version = stack_version
        self.faults = faults or Faults()
        self.log = log or (lambda msg: None)
        self.ch = None
        self.tx_k = max(1, min(7, tx_k))  # the NCP's ASH window (UG101: 5)
        self.network_available = True     # the HAN is there to join (fault: network down)
        self.counters = {"rx_frames": 0, "rx_bad": 0, "rx_cancel": 0, "rx_substitute": 0, "rx_too_long": 0,
                         "rx_dup": 0, "rx_out_of_order": 0, "tx_data": 0, "retx": 0, "tx_nak": 0,
                         "rx_nak": 0, "resets_by_host": 0, "resets_injected": 0, "ezsp_commands": 0,
                         "ezsp_unknown": 0, "ezsp_before_version": 0, "send_unicast": 0,
                         "callbacks": 0, "link_failures": 0, "bytes_corrupted": 0, "frames_dropped": 0, "acks_delayed": 0,
                         "muted": 0}
        self._buf = bytearray()
        self._skip = False
        self._esc_seen = False
        self._reset_pending = False
        self._data_count = 0         # host DATA frames accepted, ever (reset_every counts these)
        self._unicasts_seen = 0      # sendUnicast frames accepted, ever (mute_unicast counts these)
        self.muted = False           # fault: everything towards the host is lost until RST
        # the stack's start-up, network and security commands (stack.py); node: a NodeConfig
        self.stack = S.Stack(self, node)
        self._stack_commands = S.COMMANDS
        # an uncommissioned module (commissioning.ModuleCommissioning): join and CBKE
        # commands, a network only once the trust centre admitted it; None: the module is
        # commissioned already and resumes its network at once (the default)
        self.commissioning = None
        self._power_on()

    # ---- state ---------------------------------------------------------------------------
    def _power_on(self):
        self.connected = False      # ASH: no RSTACK sent yet
        self.legacy_done = False
        self.negotiated = False
        self.joined = False
        self._frm = 0
        self._rx_exp = 0
        self._reject = False
        self._host_ready = True
        self._txq = []               # EZSP frames waiting for the window
        self._inflight = []          # [frame number, EZSP frame] sent, not yet acknowledged, oldest first
        self._timeouts = 0           # ACK timeouts in a row (UG101: ACK_TIMEOUTS of them is a failure)
        self._retx_handle = None
        self._aps_seq = 0
        self._frag = {}
        self.policies = dict(DEFAULT_POLICIES)   # RAM on the NCP: back to defaults on reset
        self.stack.power_on()
        if getattr(self, "commissioning", None) is not None:
            self.commissioning.power_on()

    @property
    def idle(self):
        return not self._txq and not self._inflight

    def damage(self, data, rate):
        """The fault model's bit errors: each byte, with probability rate, gets one random
        bit flipped (counted in bytes_corrupted)."""
        if not rate:
            return data
        f = self.faults
        data = bytearray(data)
        for i in range(len(data)):
            if f.rng.random() < rate:
                data[i] ^= 1 << f.rng.randrange(8)
                self.counters["bytes_corrupted"] += 1
        return data

    def can_reach_host(self):
        return self.connected and self.negotiated and self.joined

    # ---- UART in -------------------------------------------------------------------------
    def feed(self, data):
        data = self.damage(data, self.faults.byte_error_rate_from_host)
        for b in data:
            if b == FLAG:
                if not self._skip and self._buf:
                    self._frame(bytes(self._buf))
                self._buf.clear()
                self._skip = False
            elif b == CAN:
                if self._buf:
                    self.counters["rx_cancel"] += 1
                self._buf.clear()
                self._skip = False
            elif b == SUB:
                self.counters["rx_substitute"] += 1
                self._buf.clear()
                self._skip = True
            elif b in (XON, XOFF) or self._skip:
                continue
            else:
                self._buf.append(b)
                if len(self._buf) > 2 * 131:
                    self.counters["rx_too_long"] += 1
                    self._buf.clear()
                    self._skip = True

    def _frame(self, stuffed):
        if self.faults.drop_rate and self.faults.rng.random() < self.faults.drop_rate:
            self.counters["frames_dropped"] += 1
            return
        try:
            frame = bash.parse_frame(bytes(bash.AshProtocol._unstuff_bytes(stuffed)))
        except Exception as exc:
            self.counters["rx_bad"] += 1
            self.log("ncp: bad frame from host (%s)" % exc)
            if self.connected and not self._reject:
                self._nak()
            return
        self.counters["rx_frames"] += 1
        if isinstance(frame, bash.RstFrame):
            self.counters["resets_by_host"] += 1
            self.muted = False
            self._reset(RESET_SOFTWARE)
            return
        if not self.connected:
            return  # a real NCP ignores everything but RST until it has sent RSTACK
        if isinstance(frame, (bash.AckFrame, bash.NakFrame, bash.DataFrame)):
            self._host_ack(frame.ack_num)
        if isinstance(frame, bash.AckFrame):
            self._host_ready = not frame.ncp_ready   # the bit is nRdy: set = host not ready
            self._pump()
        elif isinstance(frame, bash.NakFrame):
            self.counters["rx_nak"] += 1
            self._host_ready = not frame.ncp_ready
            if self._inflight and self.connected:
                # UG101: a NAK brings the frames back at once (go back N: every one not
                # acknowledged); only ACK timeouts count towards the link failure, so this
                # retransmission is not one of them
                self._resend_all()
        elif isinstance(frame, bash.DataFrame):
            self._data(frame)

    def _data(self, frame):
        if frame.frm_num == self._rx_exp:
            self._rx_exp = (self._rx_exp + 1) & 7
            self._reject = False
            if self.faults.mute_unicast and self._is_tunnel_data(frame.ezsp_frame):
                self._unicasts_seen += 1
                if self._unicasts_seen == self.faults.mute_unicast:
                    self.log("ncp: fault: sendUnicast taken, then silent until RST")
                    self.counters["muted"] += 1
                    self.muted = True
                    if not self.faults.mute_runs:
                        return
            self._ack()
            self._data_count += 1
            self._ezsp(frame.ezsp_frame)
            n = self.faults.reset_every
            if n and self._data_count % n == 0:
                self.inject_reset()
        elif frame.re_tx and ((self._rx_exp - frame.frm_num) & 7) in (1, 2, 3, 4, 5):
            self.counters["rx_dup"] += 1
            self._ack()
        else:
            self.counters["rx_out_of_order"] += 1
            if not self._reject:
                self._nak()

    @staticmethod
    def _is_callback(frame):
        # extended frame control, low byte: callback type in bits 3-4 (legacy frames: none)
        return len(frame) > 2 and frame[1] != 0x80 and frame[1] & 0x18 != 0

    def _is_tunnel_data(self, frame):
        """A sendUnicast carrying tunnel data: a TransferData or any APS fragment (what
        mute_unicast counts; RequestTunnelResponse and other single ZCL frames do not)."""
        if not (self.negotiated and len(frame) >= 5 and frame[2] & 3 == 1
                and (frame[3] | (frame[4] << 8)) == N.SEND_UNICAST):
            return False
        try:
            m = N.parse_send_unicast_params(self.version, frame[5:])
        except Exception:
            return False
        if m["aps"]["options"] & 0x8000:
            return True
        z = m["message"]
        cmd_at = 4 if len(z) > 0 and z[0] & 0x04 else 2
        return len(z) > cmd_at and z[cmd_at] == 0x01

    # ---- ASH out -------------------------------------------------------------------------
    def _send_bytes(self, data):
        if not self.muted:
            self._raw_send(data)

    def _emit(self, frame):
        if self.faults.drop_rate and self.faults.rng.random() < self.faults.drop_rate:
            self.counters["frames_dropped"] += 1
            return
        self._send_bytes(wire(frame))

    def _ack(self):
        f = self.faults
        frame = bash.AckFrame(res=0, ncp_ready=0, ack_num=self._rx_exp)
        if f.late_ack_rate and f.rng.random() < f.late_ack_rate:
            self.counters["acks_delayed"] += 1
            gen = self._generation
            self.loop.call_later(f.late_ack_ms / 1000, lambda: gen == self._generation and self._emit(frame))
            return
        self._emit(frame)

    def _nak(self):
        self._reject = True
        self.counters["tx_nak"] += 1
        self._emit(bash.NakFrame(res=0, ncp_ready=0, ack_num=self._rx_exp))

    def _host_ack(self, ack_num):
        # ackNum acknowledges every frame before it
        inf = self._inflight
        n = (ack_num - inf[0][0]) & 7 if inf else 0
        if 0 < n <= len(inf):
            del inf[:n]
            self._timeouts = 0
            if self._retx_handle:
                self._retx_handle.cancel()
                self._retx_handle = None
            if inf:
                self._arm_timer()
            self._pump()

    def queue(self, ezsp_frame):
        self._txq.append(ezsp_frame)
        self._pump()

    def _pump(self):
        # UG101: up to TX_K frames out without an acknowledgement (a response and the
        # callback that follows it go back to back, as on a real NCP)
        while self.connected and self._txq and len(self._inflight) < self.tx_k:
            i = 0
            if not self._host_ready:
                # nRdy: hold callbacks for a while, as the NCP does; responses still go
                while i < len(self._txq) and self._is_callback(self._txq[i]):
                    i += 1
                if i == len(self._txq):
                    self.loop.call_later(0.05, self._pump)
                    return
            frame = self._txq.pop(i)
            frm = self._frm
            self._frm = (frm + 1) & 7
            self._inflight.append([frm, frame])
            self.counters["tx_data"] += 1
            self._emit(bash.DataFrame(frm_num=frm, re_tx=False, ack_num=self._rx_exp, ezsp_frame=frame))
            if len(self._inflight) == 1:
                self._arm_timer()

    def _resend_all(self):
        for frm, frame in self._inflight:
            self.counters["retx"] += 1
            self._emit(bash.DataFrame(frm_num=frm, re_tx=True, ack_num=self._rx_exp, ezsp_frame=frame))
        self._arm_timer()

    def _arm_timer(self):
        # the clock runs for the oldest unacknowledged frame, from its latest (re)send.
        # UG101's timer doubles after each ACK timeout (up to T_RX_ACK_MAX); a fast link's
        # adaptive estimate sits at the minimum, T_RETX
        if self._retx_handle:
            self._retx_handle.cancel()
        gen = self._generation
        wait = min(T_RX_ACK_MAX, T_RETX * (1 << self._timeouts))
        self._retx_handle = self.loop.call_later(wait, lambda: gen == self._generation and self._ack_timeout())

    def _ack_timeout(self):
        if not self._inflight or not self.connected:
            return
        self._timeouts += 1
        if self._timeouts >= ACK_TIMEOUTS:
            # UG101: too many ACK timeouts: the NCP reports ERROR (0x51) and waits for RST
            self.log("ncp: host never acknowledged frame %d; ERROR 0x51" % self._inflight[0][0])
            self.counters["link_failures"] += 1
            self._generation += 1
            self._power_on()
            self._send_bytes(wire(bash.ErrorFrame(version=2, reset_code=ERROR_ACK_TIMEOUTS)))
            if self.ch:
                self.ch.ppmid_left()
            return
        self._resend_all()

    # ---- resets --------------------------------------------------------------------------
    _generation = 0

    def _reset(self, code):
        self._generation += 1
        was_joined = self.joined
        self._power_on()
        self.connected = True
        self._emit_rstack(code)
        if was_joined and self.ch:
            self.ch.ppmid_left()

    def _emit_rstack(self, code):
        # RSTACK is never dropped by the fault model: losing it only costs the host a retry
        self._send_bytes(wire(bash.RStackFrame(version=2, reset_code=code)))

    def inject_reset(self):
        """Reset the NCP on its own (watchdog-like) at its next idle moment."""
        self._reset_pending = True
        self._maybe_reset()

    def _maybe_reset(self):
        if not self._reset_pending:
            return
        if not self.idle:
            self.loop.call_later(0.01, self._maybe_reset)
            return
        self._reset_pending = False
        self.counters["resets_injected"] += 1
        self.log("ncp: injected reset")
        self._reset(RESET_POWER_ON)

    # ---- EZSP ----------------------------------------------------------------------------
    def _status(self, s):
        return N.status_params(self.version, s)

    def _respond(self, seq, fid, params, legacy=False):
        if legacy:
            self.queue(bytes((seq, 0x80, fid & 0xFF)) + params)
        else:
            self.queue(N.response_frame(seq, fid, params))

    def callback(self, fid, params):
        self.counters["callbacks"] += 1
        self.queue(N.response_frame(0, fid, params, callback=0x10))

    def _ezsp(self, frame):
        self.counters["ezsp_commands"] += 1
        if len(frame) < 3:
            return
        seq = frame[0]
        version_payload = bytes((self.version, STACK_TYPE)) + struct.pack("<H", self.stack_version)
        if not self.legacy_done or self.version < 8:
            # only the legacy version frame is understood first
            if frame[1] == 0x00 and frame[2] == 0x00 and len(frame) >= 4:
                self.legacy_done = True
                self._respond(seq, 0, version_payload, legacy=True)
            else:
                self.counters["ezsp_before_version"] += 1
            return
        if len(frame) < 5 or frame[2] & 3 != 1:
            self.counters["ezsp_unknown"] += 1
            return
        fid = frame[3] | (frame[4] << 8)
        p = frame[5:]
        if not self.negotiated and fid != N.VERSION:
            self.counters["ezsp_before_version"] += 1
            self._invalid_command(seq, EZSP_ERROR_VERSION_NOT_SET)
            return
        if fid == N.VERSION:
            self.negotiated = True
            self._respond(seq, fid, version_payload)
        elif fid == N.NETWORK_STATE:
            self._respond(seq, fid, bytes((2 if self.joined else 0,)))
        elif fid == N.NETWORK_INIT:
            self.stack.initialized = True
            if self.commissioning is not None and not self.commissioning.has_network:
                # nothing in the tokens to resume: EMBER_NOT_JOINED / SL_STATUS_NOT_JOINED
                self._respond(seq, fid, self._status(0x17 if self.version >= 14 else 0x93))
                return
            self._respond(seq, fid, self._status(0))
            # a commissioned router resumes its network from tokens at once: the host's next
            # command (bellows `info` reads the node id straight after) sees it joined
            self.loop.call_later(0, self._try_join)
        elif fid == N.MAXIMUM_PAYLOAD_LENGTH:
            self._respond(seq, fid, bytes((self.max_payload,)))
        elif fid == N.SEND_UNICAST:
            self._send_unicast(seq, p)
        elif fid == N.SEND_REPLY:
            self._send_reply(seq, p)
        elif fid == N.SET_POLICY and len(p) >= 2:
            self._respond(seq, fid, self._status(self._set_policy(p[0], p[1])))
        elif fid == N.GET_POLICY and len(p) >= 1:
            if p[0] in POLICY_IDS:
                self._respond(seq, fid, self._status(EZSP_SUCCESS) + bytes((self.policies.get(p[0], 0),)))
            else:
                self._respond(seq, fid, self._status(self._invalid(EZSP_ERROR_INVALID_ID)) + b"\x00")
        elif self.commissioning is not None and fid in COMMISSIONING_COMMANDS:
            try:
                params = COMMISSIONING_COMMANDS[fid](self.commissioning, p)
            except (IndexError, struct.error, ValueError) as exc:
                self.log("ncp: truncated %s (%s)" % (hex(fid), exc))
                self._invalid_command(seq, EZSP_ERROR_TRUNCATED)
                return
            self._respond(seq, fid, params)
        else:
            handler = self._stack_commands.get(fid)
            if handler is None or self.version < STACK_COMMAND_SINCE.get(fid, 8):
                self.counters["ezsp_unknown"] += 1
                self._invalid_command(seq, EZSP_ERROR_INVALID_FRAME_ID)
                return
            try:
                params = handler(self.stack, p)
            except (IndexError, struct.error, ValueError) as exc:
                # a command cut short: the NCP's frame parser stops at the end of the buffer
                self.log("ncp: truncated %s (%s)" % (hex(fid), exc))
                self.counters["ezsp_unknown"] += 1
                self._invalid_command(seq, EZSP_ERROR_TRUNCATED)
                return
            self._respond(seq, fid, params)

    def _invalid_command(self, seq, ezsp_code):
        """invalidCommand: the reason is an EzspStatus byte up to v13; from v14 every status
        is a 4-byte sl_status_t and the NCP reports EZSP-level failures as
        SL_STATUS_ZIGBEE_EZSP_ERROR (the EzspStatus detail stays on the NCP)."""
        self._respond(seq, N.INVALID_COMMAND, self._status(SL_ZIGBEE_EZSP_ERROR if self.version >= 14 else ezsp_code))

    def _invalid(self, ezsp_code):
        # v14 replaced EzspStatus with sl_Status: invalid id, value and call are all
        # INVALID_PARAMETER (the mapping hosts use when they read an old NCP, too)
        return SL_INVALID_PARAMETER if self.version >= 14 else ezsp_code

    def _set_policy(self, policy, decision):
        if policy not in POLICY_IDS:
            return self._invalid(EZSP_ERROR_INVALID_ID)
        if policy == N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK and decision not in MESSAGE_CONTENTS_DECISIONS:
            return self._invalid(EZSP_ERROR_INVALID_VALUE)
        self.policies[policy] = decision
        return EZSP_SUCCESS

    def _try_join(self):
        if self.commissioning is not None and not self.commissioning.network_on_air():
            return   # no network in the tokens, or the one they hold is gone (a CH replaced)
        if self.connected and self.negotiated and not self.joined and self.network_available:
            self.joined = True
            up = N.SL_NETWORK_UP if self.version >= 14 else N.EMBER_NETWORK_UP
            self.callback(E.STACK_STATUS_HANDLER, self._status(up))
            if self.ch:
                self.ch.ppmid_joined()

    def join_now(self):
        """The trust centre admitted the module (commissioning.py): on the network now."""
        self._try_join()

    def removed_by_trust_centre(self):
        """The trust centre told the module to leave: network down, tokens cleared."""
        self.commissioning.leave()
        if self.joined:
            self.joined = False
            down = N.SL_NETWORK_DOWN if self.version >= 14 else N.EMBER_NETWORK_DOWN
            self.callback(E.STACK_STATUS_HANDLER, self._status(down))
            if self.ch:
                self.ch.ppmid_left()

    def left_network(self):
        """The module left (leaveNetwork): NETWORK_DOWN to the host."""
        if self.joined:
            self.joined = False
            down = N.SL_NETWORK_DOWN if self.version >= 14 else N.EMBER_NETWORK_DOWN
            self.callback(E.STACK_STATUS_HANDLER, self._status(down))
            if self.ch:
                self.ch.ppmid_left()

    def set_network(self, available, resume=True):
        """The HAN disappears (available False) or comes back. resume False: the module does
        not find it again by itself (it missed the CH's channel change or a network key
        update while away): only a rejoin the host asks for brings it back."""
        self.network_available = available
        if not available and self.joined:
            self.left_network()
        elif available and resume:
            self._try_join()

    def _send_unicast(self, seq, p):
        self.counters["send_unicast"] += 1
        try:
            m = N.parse_send_unicast_params(self.version, p)
        except Exception as exc:
            self.log("ncp: bad sendUnicast (%s)" % exc)
            self._respond(seq, N.SEND_UNICAST, self._status(0x01 if self.version < 14 else 0x21) + b"\x00")
            return
        if len(m["message"]) > self.max_payload:
            self._respond(seq, N.SEND_UNICAST, self._status(0x74 if self.version < 14 else 0x0C05) + b"\x00")
            return
        if not self.joined:
            code = SL_NETWORK_DOWN if self.version >= 14 else EMBER_NETWORK_DOWN_STATUS
            self._respond(seq, N.SEND_UNICAST, self._status(code) + b"\x00")
            return
        if self.refusals:
            # a fault: refused with the given status (e.g. no buffers), nothing on air
            code = self.refusals.pop(0)
            self.counters["send_refused"] = self.counters.get("send_refused", 0) + 1
            self._respond(seq, N.SEND_UNICAST, self._status(code) + b"\x00")
            return
        if m["aps"]["options"] & 0x8000 and m["aps"]["group"] & 0xFF:
            # a later block of a fragmented message goes on air with the host's APS counter:
            # every block of one message carries the same one (Silicon Labs' EmberZNet
            # "Message Fragmentation" API reference, fragment-host.h, and its host
            # fragmentation code, which sends each later block with the frame whose sequence
            # sendUnicast returned for block 0). What a real NCP does with it is not
            # checked on hardware.
            aps_seq = m["aps"]["sequence"]
        else:
            aps_seq = self.next_aps_seq()
        m["aps"]["sequence"] = aps_seq
        self._respond(seq, N.SEND_UNICAST, self._status(0) + bytes((aps_seq,)))
        ok = self.ch.deliver(m["dest"], m["aps"], m["message"]) if self.ch else False
        status = 0 if ok else (SL_DELIVERY_FAILED if self.version >= 14 else EMBER_DELIVERY_FAILED)
        aps = E.aps_frame(**{k: m["aps"][k] for k in ("profile", "cluster", "src_ep", "dst_ep", "options",
                                                          "group", "sequence")})
        # the message comes back in the callback only if the host asked for it (setPolicy)
        echo = m["message"] if self.policies.get(N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK) == \
            N.DECISION_MESSAGE_TAG_AND_CONTENTS else b""
        self.callback(N.MESSAGE_SENT_HANDLER,
                      N.message_sent_params(self.version, status, m["dest"], aps, m["tag"], echo))

    def _send_reply(self, seq, p):
        """sendReply: hosts use it for the APS acknowledgement of a fragment they received
        (no payload, groupId 0xFF00 | index); it goes over the air to the fragment's sender."""
        self.counters["send_reply"] = self.counters.get("send_reply", 0) + 1
        try:
            dest = struct.unpack_from("<H", p, 0)[0]
            aps = E.parse_aps(p, 2)
            n = p[13]
            if len(p) < 14 + n:
                raise ValueError("message truncated")
        except (IndexError, struct.error, ValueError) as exc:
            self.log("ncp: bad sendReply (%s)" % exc)
            self._invalid_command(seq, EZSP_ERROR_TRUNCATED)
            return
        if not self.joined:
            self._respond(seq, N.SEND_REPLY, self._status(SL_NETWORK_DOWN if self.version >= 14
                                                          else EMBER_NETWORK_DOWN_STATUS))
            return
        self._respond(seq, N.SEND_REPLY, self._status(0))
        if self.ch and aps["options"] & 0x8000:
            self.ch.fragment_ack(dest, aps)

    def next_aps_seq(self):
        self._aps_seq = (self._aps_seq + 1) & 0xFF
        return self._aps_seq

    def incoming(self, sender, profile, cluster, payload, encrypted=True, eui64=None):
        """Over the air from the CH to the PPMID, whole: APS-fragmented to the module's
        limit, all fragments at once (the CH's windowed sender uses incoming_fragment), every
        fragment under one APS counter. encrypted, eui64: see incoming_fragment."""
        frags = self.fragments(payload)
        seq = self.next_aps_seq()
        for i, frag in enumerate(frags):
            self.incoming_fragment(sender, profile, cluster, seq, i, len(frags), frag, encrypted, eui64)
        return True

    def fragments(self, payload):
        """payload cut to what one APS frame carries here (the extended header: 2 bytes)."""
        if len(payload) <= self.max_payload:
            return [payload]
        size = self.max_payload - 2
        return [payload[i:i + size] for i in range(0, len(payload), size)]

    def incoming_fragment(self, sender, profile, cluster, seq, index, count, frag, encrypted=True, eui64=None):
        """One APS frame from the air (a fragment when count > 1): an incomingMessageHandler.
        encrypted: the frame came APS-secured, which the module reports with
        EMBER_APS_OPTION_ENCRYPTION (0x0020) in the frame's options. The CH secures its Smart
        Energy application clusters (Tunneling, Prepayment) with the link key; Key
        Establishment runs before there is one, under network security alone, and so does
        a frame forged by a node that holds the network key only. eui64 (big-endian): the
        sender v14 names, where it is not the node's own (None): a node holding a link key
        of its own with us that sends as another's NWK address."""
        options = 0x0040 | (0x0020 if encrypted else 0)
        group = 0
        if count > 1:
            options |= 0x8000
            group = (count << 8) | index
        aps = E.aps_frame(profile, cluster, 1, 1, options, group, seq)
        # v14 names the sender's EUI-64 (little-endian, as every EUI-64 in EZSP): the
        # trust centre's for the CH, the ESME's for the emulated meter (a real module knows
        # the EUI-64 of whoever secured the frame: its link key is looked up by it)
        if eui64 is not None:
            eui64 = bytes(eui64)[::-1]
        elif sender == 0x0000:
            eui64 = self.stack.config.tc_eui64[::-1]
        else:
            eui64 = (self.ch.eui64_of(sender) if self.ch is not None else bytes(8))[::-1]
        self.callback(N.INCOMING_MESSAGE_HANDLER, N.incoming_params(self.version, aps, sender, frag, eui64=eui64))

    def now(self):
        return time.time()
