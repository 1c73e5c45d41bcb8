"""The NCP emulator's own realism: its EZSP policy for messageSentHandler contents (checked
against bellows' schemas and enums) and the UART pacing in both directions (the board's
bytes reach the NCP only at their wire time; the per-direction busy record the benchmark
uses)."""
import os
import time
import tty

import pytest

import bellows  # noqa: F401,E402  (a dependency of ppmid: the NCP emulator frames ASH with it)
from bellows import types as bt  # noqa: E402
from bellows.ezsp.v13.commands import COMMANDS as C13  # noqa: E402
from bellows.ezsp.v14.commands import COMMANDS as C14  # noqa: E402

from host_tools.ncp_emulator import NcpEmulator  # noqa: E402
from host_tools.ncp_emulator.emulator import PacedLine, union_seconds  # noqa: E402
from host_tools.ncp_emulator.ncp import Ncp  # noqa: E402
from ppmid.zigbee import ash  # noqa: E402
from ppmid.zigbee import ezsp as E  # noqa: E402
from host_tools.ncp_emulator import ezsp_ncp as N  # noqa: E402


def test_the_ncp_sides_names_are_the_gateways_private_values_and_bellows():
    # ezsp.py holds these as private consts (CPython keeps them as module attributes; under
    # MicroPython they are not): the NCP's side names them in ezsp_ncp.py, with the same values
    for name in ("SEND_UNICAST", "SEND_REPLY", "INVALID_COMMAND", "FC_RESPONSE", "FC_HIGH", "OUTGOING_DIRECT",
                 "EMBER_NETWORK_UP", "EMBER_NETWORK_DOWN", "SL_NETWORK_UP", "SL_NETWORK_DOWN"):
        assert getattr(N, name) == getattr(E, "_" + name), name
        assert not hasattr(E, name), name
    # the bring-up's commands: han_start.py's private consts
    from ppmid.zigbee import han_start
    for name in ("VERSION", "NETWORK_INIT", "NETWORK_STATE", "MAXIMUM_PAYLOAD_LENGTH", "JOINED_NETWORK"):
        assert getattr(N, name) == getattr(han_start, "_" + name), name
        assert not hasattr(E, name) and not hasattr(han_start, name), name
    # the callbacks and APS options only the HAN takes or sets: han.py's private consts
    from ppmid.zigbee import han
    for name in ("MESSAGE_SENT_HANDLER", "INCOMING_MESSAGE_HANDLER", "APS_ENCRYPTED", "APS_RETRY",
                 "APS_ROUTE_DISCOVERY", "APS_FRAGMENT"):
        assert getattr(N, name) == getattr(han, "_" + name), name
        assert not hasattr(han, name), name
    for name in ("MESSAGE_SENT_HANDLER", "INCOMING_MESSAGE_HANDLER", "APS_OPTION_ENCRYPTION", "APS_OPTION_RETRY",
                 "APS_OPTION_ROUTE_DISCOVERY", "APS_OPTION_FRAGMENT"):
        assert not hasattr(E, name), name
    assert N.MESSAGE_SENT_HANDLER == C13["messageSentHandler"][0] == C14["messageSentHandler"][0]
    assert N.INCOMING_MESSAGE_HANDLER == C13["incomingMessageHandler"][0] == C14["incomingMessageHandler"][0]
    aps = bt.EmberApsOption
    assert (N.APS_ENCRYPTED, N.APS_RETRY, N.APS_ROUTE_DISCOVERY, N.APS_FRAGMENT) == (
        aps.APS_OPTION_ENCRYPTION, aps.APS_OPTION_RETRY, aps.APS_OPTION_ENABLE_ROUTE_DISCOVERY, aps.APS_OPTION_FRAGMENT)
    assert N.VERSION == C13["version"][0] == C14["version"][0]
    assert N.NETWORK_INIT == C13["networkInit"][0] == C14["networkInit"][0]
    assert N.NETWORK_STATE == C13["networkState"][0]
    assert N.MAXIMUM_PAYLOAD_LENGTH == C13["maximumPayloadLength"][0]
    assert N.JOINED_NETWORK == bt.EmberNetworkStatus.JOINED_NETWORK
    assert N.SEND_UNICAST == C13["sendUnicast"][0] == C14["sendUnicast"][0]
    assert N.SEND_REPLY == C13["sendReply"][0] == C14["sendReply"][0]
    assert N.INVALID_COMMAND == C13["invalidCommand"][0]
    assert N.OUTGOING_DIRECT == bt.EmberOutgoingMessageType.OUTGOING_DIRECT
    assert (N.EMBER_NETWORK_UP, N.EMBER_NETWORK_DOWN) == (bt.EmberStatus.NETWORK_UP, bt.EmberStatus.NETWORK_DOWN)
    assert (N.SL_NETWORK_UP, N.SL_NETWORK_DOWN) == (bt.sl_Status.NETWORK_UP, bt.sl_Status.NETWORK_DOWN)


def test_policy_numbers_match_bellows():
    assert N.SET_POLICY == C13["setPolicy"][0] == C14["setPolicy"][0]
    assert N.GET_POLICY == C13["getPolicy"][0]
    assert N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK == bt.EzspPolicyId.MESSAGE_CONTENTS_IN_CALLBACK_POLICY
    assert N.DECISION_MESSAGE_TAG_ONLY == bt.EzspDecisionId.MESSAGE_TAG_ONLY_IN_CALLBACK
    assert N.DECISION_MESSAGE_TAG_AND_CONTENTS == bt.EzspDecisionId.MESSAGE_TAG_AND_CONTENTS_IN_CALLBACK


class _Loop:
    def call_later(self, delay, fn, *args):
        return None


class _Hub:
    def __init__(self, ok=True):
        self.ok = ok
        self.got = []

    def deliver(self, dest, aps, payload):
        self.got.append(payload)
        return self.ok

    def ppmid_left(self):
        pass


def _ready_ncp(version):
    ncp = Ncp(_Loop(), lambda b: None, ezsp_version=version)
    ncp.legacy_done = ncp.negotiated = ncp.joined = True   # not connected: frames stay queued
    ncp.ch = _Hub()
    return ncp


def _replies(ncp):
    out = [E.parse_frame(f) for f in ncp._txq]
    ncp._txq.clear()
    return out


def _unicast(ncp, seq, tag, msg):
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x8140, 0x0d00, 0)
    ncp._ezsp(E.command_frame(seq, N.SEND_UNICAST, E.send_unicast_params(ncp.version, 0x0000, aps, tag, msg)))
    (s1, fc1, fid1, resp), (s2, fc2, fid2, cb) = _replies(ncp)
    assert fid1 == N.SEND_UNICAST and s1 == seq and fid2 == N.MESSAGE_SENT_HANDLER and fc2 & 0x18
    return cb


@pytest.mark.parametrize("version", [8, 13, 14, 17])
def test_message_sent_handler_carries_the_tag_only_by_default(version):
    ncp = _ready_ncp(version)
    msg = bytes(range(80))
    cb = _unicast(ncp, 3, 0x2A, msg)
    m = N.message_sent_report(version, cb)
    assert (m["status"], m["tag"], m["message"]) == (0, 0x2A, b"")
    # bellows reads the same callback: messageLength 0, nothing after it
    sch = C14 if version >= 14 else C13
    d, rest = bt.deserialize_dict(cb, sch["messageSentHandler"][2])
    assert rest == b"" and list(d.values())[-1] == b""
    assert ncp.ch.got == [msg]


@pytest.mark.parametrize("version", [13, 14])
def test_set_policy_tag_and_contents_echoes_the_message(version):
    ncp = _ready_ncp(version)
    sch = C14 if version >= 14 else C13
    ncp._ezsp(E.command_frame(9, N.SET_POLICY, bytes((N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK,
                                                      N.DECISION_MESSAGE_TAG_AND_CONTENTS))))
    [(seq, fc, fid, p)] = _replies(ncp)
    assert (seq, fid) == (9, N.SET_POLICY) and E.parse_status(version, p) == 0
    d, rest = bt.deserialize_dict(p, sch["setPolicy"][2])
    assert rest == b"" and int(list(d.values())[0]) == 0
    ncp._ezsp(E.command_frame(10, N.GET_POLICY, bytes((N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK,))))
    [(seq, fc, fid, p)] = _replies(ncp)
    d, rest = bt.deserialize_dict(p, sch["getPolicy"][2])
    assert rest == b"" and list(d.values())[1] == bt.EzspDecisionId.MESSAGE_TAG_AND_CONTENTS_IN_CALLBACK
    msg = b"\x11\x7e\x7d" * 20
    m = N.message_sent_report(version, _unicast(ncp, 11, 5, msg))
    assert (m["tag"], m["message"]) == (5, msg)
    # and back to tag only
    ncp._ezsp(E.command_frame(12, N.SET_POLICY, bytes((N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK,
                                                       N.DECISION_MESSAGE_TAG_ONLY))))
    _replies(ncp)
    assert N.message_sent_report(version, _unicast(ncp, 13, 6, msg))["message"] == b""


@pytest.mark.parametrize("version", [13, 14])
def test_set_policy_refuses_bad_ids_and_decisions(version):
    ncp = _ready_ncp(version)
    bad_value = 0x21 if version >= 14 else 0x36     # sl INVALID_PARAMETER / EZSP_ERROR_INVALID_VALUE
    bad_id = 0x21 if version >= 14 else 0x37        # ... / EZSP_ERROR_INVALID_ID
    ncp._ezsp(E.command_frame(1, N.SET_POLICY, bytes((N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK, 0x42))))
    [(_, _, _, p)] = _replies(ncp)
    assert E.parse_status(version, p) == bad_value
    ncp._ezsp(E.command_frame(2, N.SET_POLICY, bytes((0x7F, 0x00))))
    [(_, _, _, p)] = _replies(ncp)
    assert E.parse_status(version, p) == bad_id
    ncp._ezsp(E.command_frame(3, N.GET_POLICY, bytes((0x7F,))))
    [(_, _, _, p)] = _replies(ncp)
    assert E.parse_status(version, p) == bad_id
    # the refused decision changed nothing: still tag only
    assert N.message_sent_report(version, _unicast(ncp, 4, 1, b"abc"))["message"] == b""


def test_policies_return_to_defaults_on_reset():
    ncp = _ready_ncp(13)
    ncp._ezsp(E.command_frame(1, N.SET_POLICY, bytes((N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK,
                                                      N.DECISION_MESSAGE_TAG_AND_CONTENTS))))
    assert ncp.policies[N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK] == N.DECISION_MESSAGE_TAG_AND_CONTENTS
    ncp._power_on()
    assert ncp.policies[N.POLICY_MESSAGE_CONTENTS_IN_CALLBACK] == N.DECISION_MESSAGE_TAG_ONLY


def test_message_sent_report_copes_with_no_length_byte():
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0, 0, 0)
    full = N.message_sent_params(13, 0, 0, aps, 7, b"")
    m = N.message_sent_report(13, full[:-1])      # frame ends before messageLength
    assert (m["tag"], m["status"], m["message"]) == (7, 0, b"")


# ---- pacing --------------------------------------------------------------------------------
def test_union_seconds():
    assert union_seconds([], 0, 10) == 0
    assert union_seconds([(1, 2), (1.5, 3), (5, 6)], 0, 10) == pytest.approx(3.0)
    assert union_seconds([(1, 2), (1.5, 3), (5, 6)], 1.5, 5.5) == pytest.approx(2.0)


def test_paced_line_delivers_each_piece_at_its_wire_time():
    got = []
    line = PacedLine("test-line", 0.001, lambda piece: got.append((time.monotonic(), piece)))
    try:
        t0 = time.monotonic()
        line.put(b"a" * 20, t0)          # on the wire t0 .. t0+20 ms
        line.put(b"b" * 10, t0)          # queued behind it: t0+20 .. t0+30 ms
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert [p for _, p in got] == [b"a" * 20, b"b" * 10]
        assert got[0][0] >= t0 + 0.020 and got[1][0] >= t0 + 0.030   # never before its last byte crossed
        iv = line.intervals()
        assert [(round(a - t0, 4), round(b - t0, 4), n) for a, b, n in iv] == [(0, 0.02, 20), (0.02, 0.03, 10)]
    finally:
        line.stop()


def test_board_bytes_reach_the_ncp_at_wire_time(tmp_path):
    """A host frame written in one go is seen by the NCP only once its last byte would
    have crossed at 115200 baud; the wire record counts its bytes and time."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    emu = NcpEmulator(master, log_path=str(tmp_path / "ch.jsonl")).start()
    try:
        seen = []
        feed = emu.ncp.feed
        emu.ncp.feed = lambda data: (seen.append((time.monotonic(), bytes(data))), feed(data))
        frame = bytes(ash.Encoder().rst())   # CANCEL + RST: the NCP answers RSTACK
        garbage = b"\x01\x02\x03" * 100 + b"\x7e"    # 301 bytes of noise, ~26 ms on the wire
        t0 = time.monotonic()
        os.write(slave, garbage + frame)
        deadline = time.monotonic() + 5
        while sum(len(d) for _, d in seen) < len(garbage) + len(frame) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert b"".join(d for _, d in seen) == garbage + frame
        bt_s = 10.0 / 115200
        t_end = seen[-1][0]
        assert t_end - t0 >= (len(garbage) + len(frame)) * bt_s * 0.99
        w = emu.wire(t0 - 1, time.monotonic() + 1)
        assert w["from_host_bytes"] == len(garbage) + len(frame)
        assert w["from_host_s"] == pytest.approx((len(garbage) + len(frame)) * bt_s, rel=0.01)
        # the RSTACK came back after the RST crossed, paced too
        deadline = time.monotonic() + 5
        while emu.wire(t0 - 1, time.monotonic() + 1)["to_host_bytes"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        w = emu.wire(t0 - 1, time.monotonic() + 1)
        assert w["to_host_bytes"] > 0 and w["busy_s"] >= w["from_host_s"]
        assert emu.stats()["uart"]["from_host"]["bytes"] == len(garbage) + len(frame)
    finally:
        emu.stop()
        os.close(slave)


# ---- the NCP's ASH window (UG101 TX_K = 5) ---------------------------------------------------
class _Timer:
    def cancel(self):
        pass


class _TimerLoop:
    def __init__(self):
        self.later = []

    def call_later(self, delay, fn, *args):
        self.later.append((delay, fn))
        return _Timer()


def _frames(raw):
    """ASH frames the NCP wrote (bellows parses them)."""
    from bellows import ash as bash
    out = []
    for chunk in b"".join(raw).split(b"\x7e"):
        if chunk:
            out.append(bash.parse_frame(bytes(bash.AshProtocol._unstuff_bytes(chunk))))
    return out


def _host_data(frm, ack, ezsp, re_tx=False):
    from bellows import ash as bash
    f = bash.DataFrame(frm_num=frm, re_tx=re_tx, ack_num=ack, ezsp_frame=ezsp)
    return bytes(bash.AshProtocol._stuff_bytes(f.to_bytes())) + b"\x7e"


def _connected_ncp(tx_k=5):
    raw = []
    ncp = Ncp(_TimerLoop(), raw.append, ezsp_version=13, tx_k=tx_k)
    ncp.connected = ncp.legacy_done = ncp.negotiated = ncp.joined = True
    ncp.ch = _Hub()
    return ncp, raw


def test_ncp_sends_response_and_callback_without_waiting_for_an_ack():
    from bellows import ash as bash
    ncp, raw = _connected_ncp()
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140, 0, 0)
    ezsp = E.command_frame(1, N.SEND_UNICAST, E.send_unicast_params(13, 0, aps, 9, b"hello"))
    ncp.feed(_host_data(0, 0, ezsp))
    got = _frames(raw)
    # ACK for the host's frame, then the response and the callback back to back (window 5)
    assert isinstance(got[0], bash.AckFrame) and got[0].ack_num == 1
    data = [f for f in got if isinstance(f, bash.DataFrame)]
    assert [f.frm_num for f in data] == [0, 1]
    assert E.parse_frame(data[0].ezsp_frame)[2] == N.SEND_UNICAST
    assert E.parse_frame(data[1].ezsp_frame)[2] == N.MESSAGE_SENT_HANDLER
    assert len(ncp._inflight) == 2
    # a NAK acknowledging frame 0 brings back frame 1 only (go back N from ackNum)
    raw.clear()
    ncp.feed(bytes(bash.AshProtocol._stuff_bytes(bash.NakFrame(res=0, ncp_ready=0, ack_num=1).to_bytes())) + b"\x7e")
    again = [f for f in _frames(raw) if isinstance(f, bash.DataFrame)]
    assert [(f.frm_num, bool(f.re_tx)) for f in again] == [(1, True)]
    assert ncp.counters["retx"] == 1
    # the host's ACK of both empties the window
    ncp.feed(bytes(bash.AshProtocol._stuff_bytes(bash.AckFrame(res=0, ncp_ready=0, ack_num=2).to_bytes())) + b"\x7e")
    assert ncp._inflight == [] and ncp.idle


def test_ncp_window_of_one_waits_for_each_ack():
    from bellows import ash as bash
    ncp, raw = _connected_ncp(tx_k=1)
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140, 0, 0)
    ncp.feed(_host_data(0, 0, E.command_frame(1, N.SEND_UNICAST, E.send_unicast_params(13, 0, aps, 9, b"x"))))
    data = [f for f in _frames(raw) if isinstance(f, bash.DataFrame)]
    assert [f.frm_num for f in data] == [0]           # the callback waits for the ACK
    raw.clear()
    ncp.feed(bytes(bash.AshProtocol._stuff_bytes(bash.AckFrame(res=0, ncp_ready=0, ack_num=1).to_bytes())) + b"\x7e")
    data = [f for f in _frames(raw) if isinstance(f, bash.DataFrame)]
    assert [f.frm_num for f in data] == [1] and E.parse_frame(data[0].ezsp_frame)[2] == N.MESSAGE_SENT_HANDLER


def test_ncp_ack_timeouts_resend_the_window_then_error():
    from bellows import ash as bash
    ncp, raw = _connected_ncp()
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140, 0, 0)
    ncp.feed(_host_data(0, 0, E.command_frame(1, N.SEND_UNICAST, E.send_unicast_params(13, 0, aps, 9, b"x"))))
    for i in range(3):
        raw.clear()
        delay, fire = ncp.loop.later[-1]
        fire()
        again = [f for f in _frames(raw) if isinstance(f, bash.DataFrame)]
        assert [(f.frm_num, bool(f.re_tx)) for f in again] == [(0, True), (1, True)]
        assert ncp.loop.later[-1][0] == pytest.approx(min(3.2, 0.4 * 2 ** (i + 1)))   # the timer doubles
    raw.clear()
    ncp.loop.later[-1][1]()              # the 4th ACK timeout in a row: ERROR 0x51
    assert isinstance(_frames(raw)[0], bash.ErrorFrame) and not ncp.connected
    assert ncp.counters["link_failures"] == 1


# ---- the emulated meters' answer delays --------------------------------------------------------
def test_gpf_delay_is_the_gsme_answer_delay_and_the_esme_answers_at_once():
    """The CH answers a GSME command after the GPF delay it was given (the throughput bench
    runs with 0 and with the default), an ESME command at once; the answer is the GBCS
    response to that command."""
    from host_tools import emulate as EM
    from host_tools.ncp_emulator import ch as CH
    from ppmid.gbcs import decode

    def answers(gpf_delay_s=None):
        loop = _TimerLoop()
        kw = {} if gpf_delay_s is None else {"gpf_delay_s": gpf_delay_s}
        hub = CH.CommsHub(None, loop, corpus_dir=EM.corpus_dir(), **kw)
        got = {}
        for _, buf in EM.renumbered_commands(6):
            title = bytes(decode(buf).recipient).hex().upper()
            del loop.later[:]
            hub._gbcs_from_ppmid(buf)
            [(delay, fn)] = loop.later
            got.setdefault(hub.devices[title].kind, set()).add(delay)
        return got

    assert answers() == {"ESME": {0.0}, "GSME": {CH.GPF_DELAY_S}} and CH.GPF_DELAY_S > 0
    assert answers(0.0) == {"ESME": {0.0}, "GSME": {0.0}}
    assert answers(0.25) == {"ESME": {0.0}, "GSME": {0.25}}
    # and changed on a running hub (the bench does it between its two throughput runs)
    hub = CH.CommsHub(None, _TimerLoop(), corpus_dir=EM.corpus_dir())
    hub.set_gpf_delay(0.0)
    assert sorted((d.kind, d.delay_s) for d in hub.devices.values()) == [("ESME", 0.0), ("GSME", 0.0)]


# ---- the emulated meters' anti-replay ---------------------------------------------------------
@pytest.mark.skipif(not __import__("host_tools.emulate", fromlist=["corpus_dir"]).corpus_dir(),
                    reason="needs ../shared/vectors/gbcs: the anti-replay cases use the corpus's ESME "
                           "commands and responses (the few embedded commands do not cover them)")
def test_a_replayed_command_reaches_the_meter_twice_but_executes_once():
    """GBCS anti-replay per remote party: the second copy of a command (same originator
    counter) is received, not executed, and answered with the refusal alert naming it; a
    later counter from that party, and the same counter from another party, still execute."""
    from host_tools import emulate as EM
    from host_tools.ncp_emulator import ch as CH
    from ppmid.gbcs import decode

    class Loop:          # keeps what the CH schedules: (delay, fn, args)
        def __init__(self):
            self.later = []

        def call_later(self, delay, fn, *args):
            self.later.append((delay, fn, args))
            return _Timer()

    loop = Loop()
    hub = CH.CommsHub(None, loop, corpus_dir=EM.corpus_dir(), gpf_delay_s=0.0)
    (_, first), (_, second) = EM.renumbered_commands(2, recipients=(CH.ESME,))
    assert decode(second).counter == decode(first).counter + 1

    def answer(buf):
        del loop.later[:]
        hub._gbcs_from_ppmid(buf)
        [(_, fn, args)] = loop.later
        assert fn == hub.send_to_ppmid
        return args[0]

    got = [answer(b) for b in (first, first, second, first)]
    assert [decode(m).cra for m in got] == [2, 3, 2, 3]       # response, refusal, response, refusal
    refusal = decode(got[1])
    cmd = decode(first)
    assert refusal.message_code == CH.ALERT_REPLAY_REFUSED
    assert bytes(refusal.originator) == bytes(cmd.recipient) and bytes(refusal.recipient) == bytes(cmd.originator)
    assert bytes(refusal.supplementary_remote_party_id) == bytes(cmd.originator)
    assert refusal.supplementary_remote_party_counter == cmd.counter
    dev = hub.devices[CH.ESME]
    key = (bytes(cmd.originator), cmd.counter)
    assert dev.received_n[key] == 3 and dev.executed_n[key] == 1 and dev.replays_refused == 2
    # the same counter from another remote party is that party's own sequence
    other = bytearray(first)
    pos, _ = EM._find_counter(first)
    other[pos + 9:pos + 17] = bytes.fromhex("90B3D51F30000002")   # the originator title, after 08
    assert bytes(decode(bytes(other)).originator).hex().upper() == "90B3D51F30000002"
    assert decode(answer(bytes(other))).cra == 2


@pytest.mark.skipif(not __import__("host_tools.emulate", fromlist=["corpus_dir"]).corpus_dir(),
                    reason="needs ../shared/vectors/gbcs: the anti-replay cases use the corpus's ESME "
                           "commands and responses (the few embedded commands do not cover them)")
def test_execution_figures_tell_sent_twice_from_executed_twice():
    from host_tools import emulate as EM
    from host_tools.ncp_emulator import ch as CH
    cmds = EM.renumbered_commands(3, recipients=(CH.ESME,))
    lines = EM.lines_from(cmds) + [{"id": "bad", "gbcs": b"\x00", "at_ms": 0}]
    from ppmid.gbcs import decode
    keys = [(CH.ESME, bytes(decode(b).originator).hex().upper(), decode(b).counter) for _, b in cmds]
    figs = EM.execution_figures(lines, {keys[0]: (2, 1), keys[1]: (1, 1)})
    assert figs == {"sent_twice": 1, "executed_twice": 0, "replays_refused": 1}
    figs = EM.execution_figures(lines, {keys[0]: (2, 2), keys[2]: (3, 1)})
    assert figs == {"sent_twice": 2, "executed_twice": 1, "replays_refused": 2}


# ---- the emulated CH's APS reassembly of the PPMID's fragments ---------------------------------
class _SoonLoop:
    """Keeps the frames the CH hands to its ZCL layer (call_soon) instead of running them."""

    def __init__(self):
        self.soon = []

    def call_soon(self, fn, *args):
        self.soon.append(bytes(args[0]))

    def call_later(self, delay, fn, *args):
        return _Timer()


def _fragment(index, count, seq=7):
    from ppmid.zigbee import tunnel as T
    return {"profile": T.PROFILE_SE, "cluster": T.CLUSTER_TUNNELING, "src_ep": 1, "dst_ep": 1,
            "options": 0x8000 | 0x40, "group": (count << 8) | index, "sequence": seq}


def test_ch_reassembly_takes_the_count_from_fragment_0_and_never_completes_short():
    """Review 3, M5: the firmware's han._defragment rules hold in the emulated CH too. An index
    at or above fragment 0's count drops the frame (not acknowledged, nothing delivered); a
    repeated index does not complete a frame early; a later fragment's high byte is no count."""
    from host_tools.ncp_emulator import ch as CH
    loop = _SoonLoop()
    hub = CH.CommsHub(None, loop)
    assert hub.deliver(CH.CH_NWK, _fragment(0, 3), b"CCCC")
    assert not hub.deliver(CH.CH_NWK, _fragment(5, 2), b"DDDD")   # beyond the count: dropped
    assert not hub.deliver(CH.CH_NWK, _fragment(7, 9), b"EEEE")   # no frame any more
    assert not hub.deliver(CH.CH_NWK, _fragment(2, 3), b"FFFF")
    assert loop.soon == [] and hub.counters["rx_fragments_dropped"] == 3
    # a whole frame: the same index twice is one piece, the count is fragment 0's alone
    for index, high, piece in ((0, 3, b"AA"), (1, 0, b"BB"), (1, 0, b"BB"), (2, 9, b"CC")):
        assert hub.deliver(CH.CH_NWK, _fragment(index, high), piece)
        assert loop.soon == ([b"AABBCC"] if index == 2 else [])
    # fragment 0 announcing no fragments starts nothing
    assert not hub.deliver(CH.CH_NWK, _fragment(0, 0), b"GG")
    assert not hub.deliver(CH.CH_NWK, _fragment(1, 0), b"HH")
    assert loop.soon == [b"AABBCC"] and hub.counters["rx_fragments"] == 10


def test_ch_reassembly_is_keyed_by_the_aps_counter():
    """Review 3, M4: every fragment of one frame carries fragment 0's APS counter; one with
    another counter is not part of it: not acknowledged, and the frame in progress stays."""
    from host_tools.ncp_emulator import ch as CH
    loop = _SoonLoop()
    hub = CH.CommsHub(None, loop)
    assert hub.deliver(CH.CH_NWK, _fragment(0, 2, seq=10), b"AAAA")
    assert not hub.deliver(CH.CH_NWK, _fragment(1, 2, seq=0), b"BBBB")
    assert loop.soon == [] and hub.counters["rx_fragments_dropped"] == 1
    assert hub.deliver(CH.CH_NWK, _fragment(1, 2, seq=10), b"CCCC")
    assert loop.soon == [b"AAAACCCC"]


@pytest.mark.parametrize("version", [13, 14])
def test_ncp_sends_a_later_fragment_with_the_hosts_aps_counter(version):
    """Fragment 0 (and an unfragmented frame) gets the NCP's next APS counter, returned by
    sendUnicast; a fragment with index > 0 goes with the counter the host put in its frame."""
    ncp = _ready_ncp(version)
    seen = []
    ncp.ch.deliver = lambda dest, aps, payload: seen.append(aps["sequence"]) or True

    def send(seq, group, aps_seq, options=0x8140):
        aps = E.aps_frame(0x0109, 0x0704, 1, 1, options, group, aps_seq)
        ncp._ezsp(E.command_frame(seq, N.SEND_UNICAST, E.send_unicast_params(ncp.version, 0, aps, seq, b"x")))
        (_, _, fid, resp), (_, _, _, cb) = _replies(ncp)
        status, counter = E.parse_send_unicast_response(version, resp)
        assert fid == N.SEND_UNICAST and status == 0
        assert N.message_sent_report(version, cb)["aps"]["sequence"] == counter
        return counter

    first = send(1, 0x0300, 0)                  # fragment 0 of 3: the host's 0 is not used
    assert first == ncp._aps_seq
    assert send(2, 0x0301, first) == first      # fragments 1 and 2: the host's counter
    assert send(3, 0x0302, first) == first
    assert send(4, 0x0000, first, options=0x0140) == (first + 1) & 0xFF   # not fragmented
    assert seen == [first, first, first, (first + 1) & 0xFF]


@pytest.mark.parametrize("version", [13, 14])
def test_incoming_frames_report_aps_encryption_as_a_module_does(version):
    """The CH's tunnel frames come APS-encrypted (EMBER_APS_OPTION_ENCRYPTION in the
    incomingMessageHandler's options), every fragment of one message under one APS counter;
    Key Establishment frames and a forger's come with network security only."""
    ncp = _ready_ncp(version)

    def handed():
        out = []
        for _, _, fid, p in _replies(ncp):
            assert fid == N.INCOMING_MESSAGE_HANDLER
            out.append(E.parse_incoming(version, p)["aps"])
        return out

    ncp.incoming(0x0000, 0x0109, 0x0704, bytes(200))          # the CH's: 3 APS fragments
    frags = handed()
    assert [a["group"] for a in frags] == [0x0300, 0x0301, 0x0302]
    assert all(a["options"] & 0x8020 == 0x8020 for a in frags)
    assert len({a["sequence"] for a in frags}) == 1
    ncp.incoming(0x0000, 0x0109, 0x0704, b"\x01\x02", encrypted=False)   # a forger's
    (forged,) = handed()
    assert forged["options"] & 0x0020 == 0 and forged["sequence"] != frags[0]["sequence"]

    from types import SimpleNamespace
    from host_tools.ncp_emulator.commissioning import TrustCentre
    tc = SimpleNamespace(ch=SimpleNamespace(ncp=ncp))          # the trust centre's KE server
    TrustCentre._send(tc, b"\x09\x01\x00")                     # a Key Establishment frame
    (ke,) = handed()
    assert ke["cluster"] == 0x0800 and ke["options"] & 0x0020 == 0

# ---- the emulated CH as the HAN's time source (ZCL Time cluster) -------------------------------
class _RunLoop(_SoonLoop):
    """Runs what the CH hands on at once."""

    def call_soon(self, fn, *args):
        fn(*args)


class _AirToPpmid:
    def __init__(self):
        self.frames = []
        self.reachable = True

    def can_reach_host(self):
        return self.reachable

    def incoming(self, sender, profile, cluster, payload):
        self.frames.append((sender, profile, cluster, payload))


def test_ch_answers_a_time_read_with_its_clock_and_as_its_mode_says():
    import time
    from host_tools.ncp_emulator import ch as CH
    from ppmid.zigbee import timecluster as TC
    air = _AirToPpmid()
    hub = CH.CommsHub(air, _RunLoop())
    aps = {"profile": 0x0109, "cluster": 0x000A, "src_ep": 1, "dst_ep": 1, "options": 0x40, "group": 0, "sequence": 1}
    assert hub.deliver(CH.CH_NWK, aps, TC.read_time(5))
    (sender, profile, cluster, frame), = air.frames
    assert (sender, profile, cluster) == (0x0000, 0x0109, 0x000A)
    zcl, status = TC.parse_time(frame, 5)
    assert abs(zcl + 946684800 - time.time()) < 5 and status == TC.MASTER | TC.SYNCHRONIZED
    hub.set_time_mode("good", offset_s=-3600)
    hub.deliver(CH.CH_NWK, aps, TC.read_time(6))
    assert abs(TC.parse_time(air.frames[-1][3], 6)[0] + 946684800 + 3600 - time.time()) < 5
    hub.set_time_mode("unsynced")
    hub.deliver(CH.CH_NWK, aps, TC.read_time(7))
    assert TC.parse_time(air.frames[-1][3], 7)[1] == 0
    hub.set_time_mode("unsupported")
    hub.deliver(CH.CH_NWK, aps, TC.read_time(8))
    with pytest.raises(TC.ZclError, match="read failed"):
        TC.parse_time(air.frames[-1][3], 8)
    n = len(air.frames)
    hub.set_time_mode("silent")
    hub.deliver(CH.CH_NWK, aps, TC.read_time(9))
    hub.set_time_mode("good")
    air.reachable = False
    hub.deliver(CH.CH_NWK, aps, TC.read_time(10))
    assert len(air.frames) == n and hub.time_reads == 6
    hub.deliver(CH.CH_NWK, aps, b"\x10\x01")                     # not a read: counted, not answered
    assert hub.counters["bad_zcl"] == 1 and hub.time_reads == 6
    with pytest.raises(ValueError):
        hub.set_time_mode("late")


def test_at_v14_frames_name_the_senders_eui64_as_a_module_does():
    """v14's incomingMessageHandler names the sender's EUI-64: for the CH the trust centre's,
    the one getCurrentSecurityState gives (the gateway holds the tunnel and Time frames to
    it), for the emulated ESME the meter's own (the top-up road holds its answers to it)."""
    from host_tools.ncp_emulator.ch import ESME, CommsHub
    from host_tools.ncp_emulator.esme import ESME_NWK
    from ppmid.zigbee import ezsp_cbke
    ncp = _ready_ncp(14)
    ncp.ch.eui64_of = lambda nwk: CommsHub.eui64_of(None, nwk)
    ncp._ezsp(E.command_frame(1, ezsp_cbke.GET_CURRENT_SECURITY_STATE, b""))
    ((_, _, fid, p),) = _replies(ncp)
    status, _, tc = ezsp_cbke.parse_security_state(14, p)
    assert fid == ezsp_cbke.GET_CURRENT_SECURITY_STATE and status == 0 and tc != bytes(8)
    ncp.incoming(0x0000, 0x0109, 0x0704, b"\x01\x02")
    ncp.incoming(ESME_NWK, 0x0109, 0x0705, b"\x09\x01")
    ncp.incoming(0x7777, 0x0109, 0x0705, b"\x09\x01")     # no node here has that address
    names = [E.parse_incoming(14, q)["eui64"] for _, _, _, q in _replies(ncp)]
    assert names == [tc[::-1], bytes.fromhex(ESME)[::-1], bytes(8)]


# ---- the CH replaced by another unit (NcpEmulator.replace_ch) ---------------------------------
class _Held:
    """A loop that keeps what it is given to run later (nothing runs by itself)."""

    def __init__(self):
        self.later = []

    def call_later(self, delay, fn, *args):
        self.later.append((fn, args))
        return _Timer()

    def call_soon(self, fn, *args):
        self.later.append((fn, args))


def _commissioning_module(version=14):
    """A v14 module, uncommissioned, the emulated CH as trust centre (its device log holding
    the module), every EZSP frame the module sends kept in a list."""
    from host_tools.ncp_emulator import ch as CH
    from host_tools.ncp_emulator.commissioning import ModuleCommissioning, TrustCentre
    from ppmid.zigbee import installcode as IC
    code = "83FED3407A939723A5C639B26916D505C3B5"
    ncp = Ncp(_Held(), lambda b: None, ezsp_version=version)
    sent = []
    ncp.queue = sent.append
    ncp.connected = ncp.legacy_done = ncp.negotiated = True
    hub = CH.CommsHub(ncp, ncp.loop)
    ncp.ch = hub
    eui = bytes.fromhex("00db1234567890a4")
    ncp.commissioning = m = ModuleCommissioning(ncp, eui)
    hub.trust_centre = TrustCentre(hub, {eui: code})
    ncp.stack.config.tc_eui64 = hub.trust_centre.eui64
    m.security = IC.link_key(IC.parse(code))
    return ncp, hub, m, sent


def _stack_statuses(sent, version=14):
    out = []
    for f in sent:
        _, _, fid, p = E.parse_frame(f)
        if fid == E.STACK_STATUS_HANDLER:
            out.append(E.parse_status(version, p))
    sent.clear()
    return out


def _security_state_tc(ncp):
    from ppmid.zigbee import ezsp_cbke as C
    p = ncp.stack.get_current_security_state(b"")
    status, _, tc = C.parse_security_state(ncp.version, p)
    return status, tc


def test_a_replaced_ch_is_a_new_trust_centre_on_its_own_network_that_only_a_fresh_join_reaches():
    """NcpEmulator.replace_ch: another unit with another EUI-64 takes the CH's place. The
    module on the old network sees it go down; its tokens keep that network, which neither a
    resume (networkInit) nor a secured or trust-centre rejoin finds any more; a scan finds
    the new CH's network (extended PAN id its EUI-64, PAN id the old one's + 1), whose trust
    centre holds the old one's device log (a neighbour's CH still answers on its channel);
    once the module left and joined it, it names the new trust centre
    (getCurrentSecurityState, and at v14 the sender of the CH's frames).
    forge_from_ch(eui64=...) names another sender, APS-encrypted. Bad uses are refused."""
    from types import SimpleNamespace
    from host_tools.ncp_emulator.emulator import NcpEmulator
    from ppmid.zigbee import ezsp_cbke as C
    ncp, hub, m, sent = _commissioning_module()
    old = hub.trust_centre
    net = old.network
    neighbour = {"channel": 15, "pan_id": 0x7777, "extended_pan_id": bytes(range(8))}   # another home's CH
    old.extra_networks.append(neighbour)
    m._join_result(net["extended_pan_id"], net["pan_id"], net["channel"])
    assert ncp.joined and _stack_statuses(sent) == [N.SL_NETWORK_UP]
    assert _security_state_tc(ncp) == (0, old.eui64)
    new_eui = bytes.fromhex("0000b0d5b3ff7e21")
    emu = SimpleNamespace(ch=hub, ncp=ncp, _log=lambda msg: None)
    assert NcpEmulator._replace_ch(emu, new_eui, None) == old.eui64.hex().upper()
    new = hub.trust_centre
    assert new is not old and new.eui64 == new_eui and new.device_log == old.device_log and new.joined == {}
    assert new.extra_networks == [neighbour] and new.network_key_seq == 0
    assert new.network == {"channel": net["channel"], "pan_id": net["pan_id"] + 1, "extended_pan_id": new_eui}
    assert ("replaced", "by " + new_eui.hex()) in old.events
    assert not ncp.joined and _stack_statuses(sent) == [N.SL_NETWORK_DOWN] and hub.tunnel_id is None
    # the tokens still hold the old network: it is not on the air
    assert m.has_network and not m.network_on_air()
    ncp._try_join()                               # a resume (networkInit) finds nothing
    for secured in (True, False):                 # nor does either rejoin
        m._rejoin_result(secured, 1 << net["channel"])
    assert not ncp.joined and _stack_statuses(sent) == [0x17, 0x17]   # SL_STATUS_NOT_JOINED
    assert new.counters["rejoins_admitted"] == 0
    # a scan finds the new CH's network alone
    m._scan_done(1 << net["channel"])
    found = [E.parse_frame(f) for f in sent]
    sent.clear()
    beacons = [p for _, _, fid, p in found if fid == C.NETWORK_FOUND_HANDLER]
    assert len(beacons) == 1 and beacons[0][3:11] == new_eui[::-1] and beacons[0][1:3] == bytes((0x63, 0x1A))
    # leave, join: the module names the new trust centre
    assert m.leave_network(b"\x00") == m.ok() and not m.has_network
    m._join_result(new_eui, net["pan_id"] + 1, net["channel"])
    assert ncp.joined and _stack_statuses(sent) == [N.SL_NETWORK_UP]
    assert new.counters["joins_admitted"] == 1 and m.network == new_eui and m.network_on_air()
    assert _security_state_tc(ncp) == (0, new_eui)
    ncp.incoming(0x0000, 0x0109, 0x0704, b"\x01\x02")
    ncp.incoming(0x0000, 0x0109, 0x0704, b"\x01\x03", True, old.eui64)   # forge_from_ch(eui64=...)
    got = [E.parse_incoming(14, p) for _, _, _, p in (E.parse_frame(f) for f in sent)]
    assert [g["eui64"] for g in got] == [new_eui[::-1], old.eui64[::-1]]
    assert all(g["aps"]["options"] & N.APS_ENCRYPTED for g in got)
    # refused: the same EUI-64, one of another length, a CH that is no trust centre
    with pytest.raises(ValueError, match="other than"):
        NcpEmulator._replace_ch(emu, new_eui, None)
    with pytest.raises(ValueError, match="8 bytes"):
        NcpEmulator._replace_ch(emu, b"\x01\x02", None)
    hub.trust_centre = None
    with pytest.raises(ValueError, match="not a trust centre"):
        NcpEmulator._replace_ch(emu, bytes(8), None)


def test_ncp_emulator_console_replace_ch(monkeypatch, capsys):
    """`ppmid ncp-emulator`'s console: `replace-ch EUI` calls replace_ch; without an EUI-64,
    or with one replace_ch refuses, it says why and goes on."""
    import io
    from host_tools import cmd_ncp_emulator as cli
    calls = []

    class FakeEmu:
        def replace_ch(self, eui):
            calls.append(eui)
            if eui == "zz":
                raise ValueError("non-hexadecimal number found in fromhex() arg at position 0")
            return "0000B0D5B3FFFF00"

    monkeypatch.setattr("sys.stdin", io.StringIO("replace-ch 0000b0d5b3ff7e21\nreplace-ch\nreplace-ch zz\n"))
    cli._console(FakeEmu())
    out = capsys.readouterr().out.splitlines()
    assert calls == ["0000b0d5b3ff7e21", "zz"]
    assert out == ["trust centre 0000B0D5B3FFFF00 replaced by 0000B0D5B3FF7E21", "ok",
                   "error: usage: replace-ch EUI-64 (16 hex digits)",
                   "error: non-hexadecimal number found in fromhex() arg at position 0"]
