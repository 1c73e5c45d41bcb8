# EZSP frame layouts (v8-v13 and v14+), version negotiation, response matching and bad
# input; ZCL tunnel server behaviour. CPython and MicroPython.
import asyncio
import binascii
from ppmid.zigbee import ezsp as E
from ppmid.zigbee.han_counters import named, han_named, EZSP, TUNNEL
from ppmid.zigbee import tunnel as T
from ppmid.zigbee import tunnel_host as TH   # the CH's frames
from ppmid.zigbee.tunnel_control import transfer_data_error
from ppmid.zigbee import han_start as S   # the version negotiation (run after a module reset)


def no_callbacks(fid, params):
    pass  # Ezsp's owner takes its callbacks; these tests have none


def _ncp_side():
    """The module's half of the layouts (responses, callbacks, reading a sendUnicast):
    host_tools/ncp_emulator/ezsp_ncp.py, the emulator's. The host_tools package is CPython
    only, so under MicroPython that one file (plain struct code) runs into a namespace."""
    import sys
    if sys.implementation.name != "micropython":
        from host_tools.ncp_emulator import ezsp_ncp
        return ezsp_ncp

    class Namespace:
        pass

    found = {}
    with open(__file__.rsplit("/", 1)[0] + "/../../host_tools/ncp_emulator/ezsp_ncp.py") as f:
        exec(f.read(), found)
    ns = Namespace()
    for k in found:
        setattr(ns, k, found[k])
    return ns


N = _ncp_side()


def h(s):
    return binascii.unhexlify(s.replace(" ", "").replace("|", ""))


def test_send_unicast_v13_matches_bellows_example():
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140, 0, 0)
    frame = E.command_frame(0, N.SEND_UNICAST, E.send_unicast_params(13, 0x1234, aps, 1, h("01 05 02")))
    assert frame == h("00 00 01 34 00 | 00 34 12 | 09 01 04 07 01 01 40 01 00 00 00 | 01 | 03 01 05 02")
    p = N.parse_send_unicast_params(13, frame[5:])
    assert p["dest"] == 0x1234 and p["tag"] == 1 and p["message"] == h("01 05 02")
    assert p["aps"]["cluster"] == 0x0704 and p["aps"]["options"] == 0x0140


def test_send_unicast_v14_tag_u16():
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140)
    p = E.send_unicast_params(14, 0x1234, aps, 0x0201, b"\xaa")
    assert p[14:16] == h("01 02") and p[16:] == h("01 aa")
    assert N.parse_send_unicast_params(14, p)["tag"] == 0x0201


def test_callback_layouts_roundtrip_both_versions():
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x8040, 0x0300, 7)
    for v in (8, 13, 14, 17):
        assert E.parse_message_sent(v, N.message_sent_params(v, 0x66, 0x0000, aps, 9, b"abc")) == (9, 0x66)
        assert E.parse_message_sent(v, N.message_sent_params(v, 0, 0x0000, aps, 0xC5, b"")) == (0xC5, 0)
        m = N.message_sent_report(v, N.message_sent_params(v, 0x66, 0x0000, aps, 9, b"abc"))
        assert (m["status"], m["dest"], m["tag"], m["message"]) == (0x66, 0, 9, b"abc")
        assert m["aps"]["group"] == 0x0300
        i = E.parse_incoming(v, N.incoming_params(v, aps, 0x0000, b"hello", lqi=200, rssi=-50))
        assert (i["sender"], i["message"], i["lqi"], i["rssi"]) == (0, b"hello", 200, -50)
        assert i["aps"]["sequence"] == 7
    assert E.parse_stack_status(13, b"\x90") is True and E.parse_stack_status(13, b"\x91") is False
    assert E.parse_stack_status(14, h("15000000")) is True and E.parse_stack_status(14, h("16000000")) is False
    assert E.parse_stack_status(14, b"\x90\x00\x00\x00") is None


def test_short_responses_and_callbacks_are_ezsp_errors():
    # found by tests/test_fuzz_parsers.py: these raised IndexError / struct.error
    cases = [(E.parse_incoming, 8, b""), (E.parse_incoming, 8, bytes(18)), (E.parse_incoming, 14, bytes(30)),
             (E.parse_message_sent, 8, bytes(15)), (E.parse_message_sent, 14, bytes(19)),
             (E.parse_status, 8, b""), (E.parse_status, 14, bytes(3)), (E.parse_stack_status, 14, b""),
             (E.parse_send_unicast_response, 8, b"\x00"), (E.parse_send_unicast_response, 14, bytes(4))]
    for fn, version, p in cases:
        try:
            fn(version, p)
            raise AssertionError("accepted %d bytes" % len(p))
        except E.EzspError as exc:
            assert exc.code == "E_EZSP" and "truncated" in exc.message
    try:
        E.parse_aps(bytes(12), 2)
        raise AssertionError("accepted")
    except E.EzspError as exc:
        assert "truncated" in exc.message
    assert E.parse_status(8, b"\x00") == 0 and E.parse_send_unicast_response(8, b"\x00\x05") == (0, 5)


def test_parse_frame_errors():
    for bad in (b"", b"\x01\x80", b"\x01\x80\x02\x00\x00"):
        try:
            E.parse_frame(bad)
        except E.EzspError:
            continue
        raise AssertionError("accepted %r" % bad)
    assert E.parse_frame(h("05 80 01 18 00 02")) == (5, 0x80, 0x18, b"\x02")
    assert E.parse_frame(h("05 80 00 08 02"), legacy=True) == (5, 0x80, 0, b"\x08\x02")


class FakeLink:
    """Answers like an NCP of the given version; `script` overrides per frame id."""

    def __init__(self, version, script=None):
        self.version = version
        self.ezsp = None
        self.sent = []
        self.script = script or {}

    async def send(self, frame):
        self.sent.append(bytes(frame))
        seq = frame[0]
        if frame[2] == 0 and len(frame) == 4:  # legacy version
            self.ezsp.on_frame(bytes((seq, 0x80, 0, self.version, 2, 0x20, 0x74)))
            return
        fid = frame[3] | (frame[4] << 8)
        if fid in self.script:
            r = self.script[fid](seq)
            if r is not None:
                self.ezsp.on_frame(r)
            return
        if fid == N.VERSION:
            self.ezsp.on_frame(N.response_frame(seq, fid, bytes((self.version, 2, 0x20, 0x74))))
        else:
            self.ezsp.on_frame(N.response_frame(seq, N.INVALID_COMMAND, b"\x58"))


async def test_negotiation_legacy_then_extended():
    link = FakeLink(13)
    cbs = []
    ez = E.Ezsp(link, lambda fid, p: cbs.append(fid))
    link.ezsp = ez
    assert await S.negotiate(ez, 13) == 13
    assert link.sent[0] == h("00 00 00 0d")
    assert link.sent[1] == h("01 00 01 00 00 0d")
    assert S.stack_version_text(ez.stack_version) == "7.4.2.0"


async def test_newer_module_version_is_accepted_older_refused():
    link = FakeLink(16)
    ez = E.Ezsp(link, no_callbacks)
    link.ezsp = ez
    assert await S.negotiate(ez, 13) == 16
    for v in (4, 7, 99):
        link = FakeLink(v)
        ez = E.Ezsp(link, no_callbacks)
        link.ezsp = ez
        try:
            await S.negotiate(ez, 13)
        except E.EzspError as e:
            assert e.code == E.E_MODULE_UNSUPPORTED and ("v%d" % v) in e.message
        else:
            raise AssertionError("v%d accepted" % v)


async def test_unknown_command_invalid_command_and_orphans():
    link = FakeLink(13)
    ez = E.Ezsp(link, no_callbacks, timeout_s=0.2)
    link.ezsp = ez
    await S.negotiate(ez, 13)
    try:
        await ez.command(0x0123)
    except E.EzspError as e:
        assert "0x0123" in e.message
    else:
        raise AssertionError("no error")
    assert named(ez.counters, EZSP)["invalid_command"] == 1
    # a response to nothing, a garbage frame and a non-response: counted, dropped
    ez.on_frame(N.response_frame(77, N.NETWORK_STATE, b"\x02"))
    ez.on_frame(b"\x01")
    ez.on_frame(E.command_frame(3, N.NETWORK_STATE))
    assert named(ez.counters, EZSP)["orphan_responses"] == 1 and named(ez.counters, EZSP)["bad_frames"] == 2
    # no answer at all: a timeout error, not a hang
    link.script[N.NETWORK_STATE] = lambda seq: None
    try:
        await ez.command(N.NETWORK_STATE)
    except E.EzspError as e:
        assert e.code == E.E_EZSP_TIMEOUT and e.on_wire
    else:
        raise AssertionError("no error")


async def test_callbacks_dispatched_and_bad_ones_survived():
    got = []

    def cb(fid, p):
        if fid == 0x9999:
            raise ValueError("broken")
        got.append((fid, p))
    link = FakeLink(13)
    ez = E.Ezsp(link, cb)
    link.ezsp = ez
    await S.negotiate(ez, 13)
    ez.on_frame(N.response_frame(0, E.STACK_STATUS_HANDLER, b"\x90", callback=0x10))
    ez.on_frame(N.response_frame(0, 0x9999, b"", callback=0x10))
    assert got == [(E.STACK_STATUS_HANDLER, b"\x90")] and named(ez.counters, EZSP)["bad_frames"] == 1


def test_zcl_header_and_tunnel_commands():
    assert T.zcl_header(5, TH.S_TRANSFER_DATA, True) == h("19 05 01")
    assert TH.zcl_header_manufacturer(5, TH.REQUEST_TUNNEL, False, 0x1234) == h("15 34 12 05 00")
    assert T.parse_zcl(h("15 34 12 05 00 aa")) == (0x15, 0x1234, 5, 0, b"\xaa")
    assert TH.request_tunnel(1) == h("11 01 00 06 ff ff 00 dc 05")


def test_tunnel_server_request_transfer_and_errors():
    s = T.TunnelServer(max_incoming=100)
    replies, data = s.handle(0x0000, TH.request_tunnel(1, max_in=1500))
    assert data is None and s.tunnel_id is not None and s.client_max == 1500
    fc, _, _, cmd, p = T.parse_zcl(replies[0])
    assert fc & T.FC_SERVER_TO_CLIENT and cmd == TH.REQUEST_TUNNEL_RESPONSE
    tid = p[0] | (p[1] << 8)
    assert p[2] == TH.TUNNEL_OK and p[3:5] == h("6400")
    # data both ways
    r, data = s.handle(0x0000, TH.transfer_data(2, tid, b"\xdf\x09gbcs", False))
    assert r == [] and data == b"\xdf\x09gbcs"
    # the gateway's TransferData is built in place: the GBCS bytes already in the buffer,
    # the header written in front of them
    frame = bytearray(T.TRANSFER_DATA_AT + 10)
    frame[T.TRANSFER_DATA_AT:T.TRANSFER_DATA_AT + 4] = b"resp"
    seq = s.next_seq()
    mv = s.outgoing_into(frame, 4)
    assert isinstance(mv, memoryview) and bytes(mv) == TH.transfer_data(seq + 1, tid, b"resp", True)
    fc, _, _, cmd, p = T.parse_zcl(mv)
    assert fc & T.FC_SERVER_TO_CLIENT and cmd == TH.S_TRANSFER_DATA and p == tid.to_bytes(2, "little") + b"resp"
    assert bytes(s.outgoing_into(frame, 4)) == TH.transfer_data(seq + 2, tid, b"resp", True)  # again: new seq

    def err(reply):
        fc, _, _, cmd, p = T.parse_zcl(reply)
        assert cmd == TH.S_TRANSFER_DATA_ERROR
        return p[2]
    assert err(s.handle(0x0000, TH.transfer_data(3, tid + 1, b"x", False))[0][0]) == T.NO_SUCH_TUNNEL
    assert err(s.handle(0x4444, TH.transfer_data(3, tid, b"x", False))[0][0]) == T.WRONG_DEVICE
    assert err(s.handle(0x0000, TH.transfer_data(3, tid, bytes(101), False))[0][0]) == TH.DATA_OVERFLOW
    # wrong protocol, flow control, busy
    for frame, status in ((TH.request_tunnel(4, protocol=2), TH.TUNNEL_PROTOCOL_UNSUPPORTED),
                          (TH.request_tunnel(4, flow_control=1), TH.TUNNEL_FLOW_CONTROL_UNSUPPORTED)):
        assert T.parse_zcl(s.handle(0, frame)[0][0])[4][2] == status
    assert s.tunnel_id == tid  # refused requests leave the open tunnel alone
    s.busy = True
    assert T.parse_zcl(s.handle(0, TH.request_tunnel(5))[0][0])[4][2] == TH.TUNNEL_BUSY
    s.busy = False
    # re-request replaces; the CH's TransferDataError(no such tunnel) and CloseTunnel close
    s.handle(0, TH.request_tunnel(6))
    assert s.tunnel_id != tid
    s.handle(0, transfer_data_error(7, s.tunnel_id, T.NO_SUCH_TUNNEL, False))
    assert s.tunnel_id is None
    s.handle(0, TH.request_tunnel(8))
    s.handle(0, TH.close_tunnel(9, s.tunnel_id))
    assert s.tunnel_id is None
    try:
        s.outgoing_into(bytearray(6), 1)
    except T.ZclError as e:
        assert e.code == "E_NO_TUNNEL"
    else:
        raise AssertionError("no error")
    # garbage and server->client frames are counted, not fatal
    assert s.handle(0, b"\x01") == ([], None)
    assert s.handle(0, T.zcl_header(1, 0, True)) == ([], None)
    assert named(s.counters, TUNNEL)["bad_zcl"] == 1 and named(s.counters, TUNNEL)["unknown_commands"] == 1
    kinds = [e[0] for e in s.events]
    assert kinds.count("open") == 3 and "error" in kinds and kinds.count("closed") == 3


def test_tunnel_control_frames_load_their_module_and_drop_it():
    # the CH's TransferData into the open tunnel is tunnel.py's own; every other frame
    # loads zigbee/tunnel_control.py for it, which is gone again after (docs/memory.md)
    import sys
    name = "ppmid.zigbee.tunnel_control"
    s = T.TunnelServer(max_incoming=100)
    replies, data = s.handle(0, TH.request_tunnel(1))
    assert data is None and T.parse_zcl(replies[0])[4][2] == TH.TUNNEL_OK and s.tunnel_id == 1
    assert name not in sys.modules
    assert s.handle(0, TH.transfer_data(2, 1, b"gbcs", False)) == ([], b"gbcs")
    assert name not in sys.modules and named(s.counters, TUNNEL)["rx_data"] == 1
    # refusals and other nodes go through it as well, and leave it dropped
    assert T.parse_zcl(s.handle(0x4444, TH.transfer_data(3, 1, b"x", False))[0][0])[4][2] == T.WRONG_DEVICE
    assert T.parse_zcl(s.handle(0, TH.transfer_data(4, 1, bytes(101), False))[0][0])[4][2] == TH.DATA_OVERFLOW
    assert name not in sys.modules and named(s.counters, TUNNEL)["not_ch"] == 1 and named(s.counters, TUNNEL)["tx_transfer_errors"] == 1


def test_tunnel_control_that_cannot_load_drops_the_frame_not_the_link():
    # no heap or no flash for tunnel_control.py: the frame is counted, reported as an
    # event and dropped (the CH requests the tunnel again); the open tunnel still carries
    # the CH's data, and the next frame loads the module again
    import sys
    name = "ppmid.zigbee.tunnel_control"

    class Unloadable:  # what an import finds in sys.modules: reading it fails as a full heap does
        def __getattr__(self, attr):
            raise MemoryError("memory allocation failed")
    s = T.TunnelServer(max_incoming=100)
    s.handle(0, TH.request_tunnel(1))
    sys.modules[name] = Unloadable()
    try:
        assert s.handle(0, TH.request_tunnel(2)) == ([], None)
        assert s.handle(0, TH.close_tunnel(3, 1)) == ([], None)
        assert named(s.counters, TUNNEL)["unhandled"] == 2 and s.events[-2:] == [("unhandled", 0), ("unhandled", 1)]
        assert s.tunnel_id == 1 and named(s.counters, TUNNEL)["requests"] == 1
        assert s.handle(0, TH.transfer_data(4, 1, b"gbcs", False)) == ([], b"gbcs")
    finally:
        del sys.modules[name]
    s.handle(0, TH.close_tunnel(5, 1))
    assert s.tunnel_id is None and named(s.counters, TUNNEL)["closed"] == 1 and name not in sys.modules


def test_fragment_ack_layout():
    # the ack of fragment 3 of a message from the CH: back to 0x0000, endpoints swapped,
    # the fragment's options and APS counter, groupId 0xFF03, no payload
    aps = E.parse_aps(E.aps_frame(0x0109, 0x0704, 2, 1, 0x8060, (7 << 8) | 3, 0x42))
    buf = bytearray(E.SEND_REPLY_ACK_LEN)
    E.fragment_ack_into(buf, 0x0000, aps)
    assert bytes(buf) == h("0000 | 0901 0407 01 02 6080 03ff 42 | 00")
    E.fragment_ack_into(buf, 0x1234, E.parse_aps(E.aps_frame(0x0109, 0x0704, 1, 1, 0x8000, 0x0200, 9)))
    assert bytes(buf) == h("3412 | 0901 0407 01 01 0080 00ff 09 | 00")   # the same buffer, reused


async def test_send_reply_status_per_version():
    for v, status in ((13, b"\x00"), (14, b"\x00\x00\x00\x00"), (13, b"\x66"), (14, b"\x02\x0c\x00\x00")):
        link = FakeLink(v, {N.SEND_REPLY: lambda seq, s=status: N.response_frame(seq, N.SEND_REPLY, s)})
        ez = E.Ezsp(link, no_callbacks)
        link.ezsp = ez
        await S.negotiate(ez, 13)
        buf = bytearray(E.SEND_REPLY_ACK_LEN)
        E.fragment_ack_into(buf, 0, E.parse_aps(E.aps_frame(0x0109, 0x0704, 1, 1, 0x8000, 0x0200, 9)))
        got = await ez.send_reply(buf)
        assert got == {b"\x00": 0, b"\x66": 0x66}.get(status, 0x0C02 if status[0] == 2 else 0)
        assert link.sent[-1][3:5] == b"\x39\x00" and link.sent[-1][5:] == bytes(buf)


class _ResetLink(FakeLink):
    """The ASH link below ZigbeeHan._bring_up: its reset answers at once."""
    connected = True

    async def reset(self):
        return 0x0B   # RSTACK: software reset


def _han_on(version, script=None):
    import sys
    from ppmid.zigbee import han as H
    han = H.ZigbeeHan(None, None, {})
    # the constructor (han_init) and the options' DEFAULTS (han_start): loaded and dropped
    assert "ppmid.zigbee.han_start" not in sys.modules and "ppmid.zigbee.han_init" not in sys.modules
    link = _ResetLink(version, script)
    han._link = link
    han._ezsp = link.ezsp = E.Ezsp(link, han._on_callback)
    return H, han


async def test_bring_up_leaves_nothing_of_han_start_loaded():
    # han_start.py is the HAN's start-up code: the running link must not hold it, whether
    # the bring-up succeeded or failed (docs/memory.md)
    import sys
    payload = {N.MAXIMUM_PAYLOAD_LENGTH: lambda seq: N.response_frame(seq, N.MAXIMUM_PAYLOAD_LENGTH, b"\x52"),
               N.NETWORK_STATE: lambda seq: N.response_frame(seq, N.NETWORK_STATE, b"\x02")}
    H, han = _han_on(13, payload)
    await han._bring_up()
    assert han._up and han._net_up and han._max_payload == 0x52
    assert han.module == {"ezsp_version": 13, "stack_version": "7.4.2.0", "stack_type": 2, "reset_code": 0x0B}
    assert han.status == "no-tunnel" and han_named(han)["resets"] == 1
    assert "ppmid.zigbee.han_start" not in sys.modules
    # an unusable payload limit, then a module too old: errors as before, module dropped
    payload[N.MAXIMUM_PAYLOAD_LENGTH] = lambda seq: N.response_frame(seq, N.MAXIMUM_PAYLOAD_LENGTH, b"\x05")
    for version, code in ((13, "E_HAN_DOWN"), (7, E.E_MODULE_UNSUPPORTED)):
        H, han = _han_on(version, payload)
        try:
            await han._bring_up()
        except Exception as exc:
            assert exc.code == code, exc
        else:
            raise AssertionError("bring-up passed")
        assert not han._up and "ppmid.zigbee.han_start" not in sys.modules


class _NotLoadable:
    def __getattr__(self, name):
        raise ImportError("han_init must not load here")


async def test_a_bring_up_does_not_load_the_constructors_code():
    # review r11-1: han_start is loaded again at every module reset; the constructor's code
    # (zigbee/han_init.py) is boot-only and must not come with it
    import sys
    from ppmid.zigbee import han_start
    assert not any(hasattr(han_start, n) for n in ("set_up", "_set_up", "_options")), dir(han_start)
    payload = {N.MAXIMUM_PAYLOAD_LENGTH: lambda seq: N.response_frame(seq, N.MAXIMUM_PAYLOAD_LENGTH, b"\x52"),
               N.NETWORK_STATE: lambda seq: N.response_frame(seq, N.NETWORK_STATE, b"\x02")}
    H, han = _han_on(13, payload)
    sys.modules["ppmid.zigbee.han_init"] = _NotLoadable()
    try:
        await han._bring_up()
    finally:
        del sys.modules["ppmid.zigbee.han_init"]
    assert han._up and han.status == "no-tunnel"


async def test_bring_up_without_a_network_waits_then_says_network_down():
    # networkInit accepted but no stackStatusHandler NETWORK_UP within network_timeout_s
    script = {N.MAXIMUM_PAYLOAD_LENGTH: lambda seq: N.response_frame(seq, N.MAXIMUM_PAYLOAD_LENGTH, b"\x52"),
              N.NETWORK_STATE: lambda seq: N.response_frame(seq, N.NETWORK_STATE, b"\x00"),
              N.NETWORK_INIT: lambda seq: N.response_frame(seq, N.NETWORK_INIT, b"\x00")}
    H, han = _han_on(13, script)
    han.network_timeout_s = 0.05
    logged = []
    han._log = logged.append
    await han._bring_up()
    assert han._up and not han._net_up and han.status == "network-down"
    assert "han: networkInit status 0x0" in logged and "han: no network-up within 0.05s" in logged


def _message(fn, *args):
    try:
        fn(*args)
    except E.EzspError as exc:
        return exc.message
    raise AssertionError("accepted")


async def _command_message(ez, fid):
    try:
        await ez.command(fid)
    except E.EzspError as exc:
        return exc.message
    raise AssertionError("no error")


async def test_driver_sentences_are_loaded_when_needed_and_dropped_after():
    # the driver's sentences live in ppmid.zigbee.ezsp_errors (not held by the driver): a
    # failure still carries the whole sentence with its values, and the module goes again
    import sys
    gone = lambda: "ppmid.zigbee.ezsp_errors" not in sys.modules
    assert _message(E.parse_frame, b"\x01\x80") == "EZSP frame too short (2 bytes)" and gone()
    assert _message(E.parse_frame, h("05 80 02 18 00")) == "unsupported EZSP frame format 0x02"
    assert _message(E.parse_aps, bytes(12), 2) == "EZSP parameters truncated (12 bytes, need 13)"
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140)
    assert _message(E.send_unicast_params, 13, 1, aps, 1, bytes(256)) == "message of 256 bytes cannot go in one sendUnicast"
    logs = []
    link = FakeLink(13)
    ez = E.Ezsp(link, lambda fid, p: 1 // 0, log=logs.append, timeout_s=0.1)
    link.ezsp = ez
    assert await _command_message(ez, N.NETWORK_STATE) == "version not negotiated" and gone()
    await S.negotiate(ez, 13)
    assert await _command_message(ez, 0x0123) == "the NCP rejected command 0x0123 (invalidCommand status 88)"
    link.script[N.NETWORK_STATE] = lambda seq: N.response_frame(seq, N.NETWORK_INIT, b"\x00")
    assert await _command_message(ez, N.NETWORK_STATE) == "response id 0x0017 to command 0x0018"
    link.script[N.NETWORK_STATE] = lambda seq: None
    assert await _command_message(ez, N.NETWORK_STATE) == "no response to networkState" and gone()
    link.script[0x0123] = lambda seq: None
    assert await _command_message(ez, 0x0123) == "no response to 0x123"
    # the two running commands, whose ids ezsp.py holds as private consts, by name too
    link.script[N.SEND_UNICAST] = link.script[N.SEND_REPLY] = lambda seq: None
    assert await _command_message(ez, N.SEND_UNICAST) == "no response to sendUnicast"
    assert await _command_message(ez, N.SEND_REPLY) == "no response to sendReply" and gone()
    # and the bring-up's, han_start.py's private consts
    link.script[N.MAXIMUM_PAYLOAD_LENGTH] = link.script[N.NETWORK_INIT] = lambda seq: None
    assert await _command_message(ez, N.MAXIMUM_PAYLOAD_LENGTH) == "no response to maximumPayloadLength"
    assert await _command_message(ez, N.NETWORK_INIT) == "no response to networkInit"
    ez.on_frame(N.response_frame(77, N.NETWORK_STATE, b"\x02"))
    assert logs[-1] == "ezsp: response to nothing (seq 77, id 0x0018) dropped"
    ez.on_frame(N.response_frame(0, 0x9999, b"", callback=0x10))
    assert logs[-1].startswith("ezsp: callback 0x9999 dropped: ZeroDivisionError(") and gone()


def test_a_sentence_that_cannot_be_loaded_still_refuses():
    # no heap or no flash for ezsp_errors: the refusal keeps its code, the sentence's key
    # stands in for its text (the link's receive loop parses frames with it)
    import sys

    class Unreadable:  # what an import finds in sys.modules: a module without `sentence`
        pass
    sys.modules["ppmid.zigbee.ezsp_errors"] = Unreadable()
    try:
        try:
            E.parse_frame(b"")
            raise AssertionError("accepted")
        except E.EzspError as exc:
            assert (exc.code, exc.message) == ("E_EZSP", "ezsp sentence 1")
    finally:
        del sys.modules["ppmid.zigbee.ezsp_errors"]


def test_every_sentence_key_names_its_sentence():
    # ezsp.py's _S_X = const(i) and ezsp_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the failures run on both above")
    from ppmid.zigbee import ezsp_errors as EE
    from sentence_keys import check_keys
    check_keys((E,), EE)


def test_refusals_for_now_are_read_by_the_layout_s_status_values():
    # sendUnicast statuses that mean "not now": EmberStatus before v14 (NO_BUFFERS,
    # MAX_MESSAGE_LIMIT_REACHED, NETWORK_DOWN, NOT_JOINED, NETWORK_BUSY), sl_Status from
    # v14 (ALLOCATION_FAILED, MAX_MESSAGE_LIMIT_REACHED, NETWORK_DOWN, NOT_JOINED, BUSY,
    # TRANSMIT_BUSY, NO_MORE_RESOURCE); the other layout's values mean nothing of the kind
    ember = (0x18, 0x72, 0x91, 0x93, 0xA1)
    sl = (0x19, 0x0C03, 0x16, 0x17, 0x04, 0x34, 0x1A)
    for v in (8, 13):
        assert [E.refused_for_now(v, s) for s in ember] == [True] * 5
        assert [E.refused_for_now(v, s) for s in sl + (0, 0x70)] == [False] * 9
    for v in (14, 18):
        assert [E.refused_for_now(v, s) for s in sl] == [True] * 7
        assert [E.refused_for_now(v, s) for s in ember + (0, 0x70)] == [False] * 7


def test_a_message_sent_report_ends_its_fragments_wait_with_the_status():
    # the HAN reads the tag and the status of messageSentHandler, both layouts: the waiting
    # fragment gets the CH's APS status; a tag nothing waits for is counted, not an error
    import asyncio
    from ppmid.zigbee import han as H
    aps = E.aps_frame(0x0109, 0x0704, 1, 1, 0x0140, 0, 3)
    for v, tag in ((13, 0xC5), (14, 0x1C5)):
        han = H.ZigbeeHan(None, None, {})
        han._ezsp.version = v
        w = asyncio.Event()
        w.status = None
        han._sent[tag] = w
        han._on_callback(N.MESSAGE_SENT_HANDLER, N.message_sent_params(v, 0x66, 0x0000, aps, tag, b""))
        assert w.is_set() and w.status == 0x66, v
        han._on_callback(N.MESSAGE_SENT_HANDLER, N.message_sent_params(v, 0, 0x0000, aps, tag + 1, b""))
        assert han_named(han)["callbacks_unknown"] == 1 and w.status == 0x66, v
