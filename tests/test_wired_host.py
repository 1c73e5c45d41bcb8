"""The wired road's host side without a board: the framing's CRC against CPython's own
CRC-CCITT (binascii.crc_hqx, an independent implementation), trace lines carrying an
envelope signed elsewhere, and the client against a pty whose far end a test plays."""
import binascii
import json
import os
import random
import threading
import time
import tty

import pytest

from host_tools import mpcompat, trace as tr
from host_tools.wired import WiredClient, WiredError

mpcompat.install()
from ppmid import envelope  # noqa: E402
from ppmid.wired import frames as F  # noqa: E402

KEY = bytes(range(32))


def test_crc16_matches_binascii_crc_hqx():
    rnd = random.Random(7)
    for n in (0, 1, 2, 7, 64, 1000, 8265):
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        assert F.crc16(data) == binascii.crc_hqx(data, 0xFFFF), n


def _line(id="l-1", gbcs=b"\xdf\x09\x01", **kw):
    obj = {"at_ms": 0, "id": id, "gbcs": gbcs.hex(), "via": "serial"}
    obj.update(kw)
    return json.dumps(obj)


def test_trace_line_with_a_signed_envelope():
    env = envelope.to_binary(envelope.sign(KEY, "l-1", b"\xdf\x09\x01"))
    line = tr.parse_line(_line(envelope=env.hex()), 1)
    assert line["envelope"] == env and line["via"] == "serial"
    assert tr.parse_line(tr.dump_line(line), 1)["envelope"] == env
    other = envelope.to_binary(envelope.sign(KEY, "l-2", b"\xdf\x09\x01"))
    for bad, why in ((other.hex(), "not for this line"), ("zz", "must be hex"), ("0102", "not a binary envelope")):
        with pytest.raises(tr.TraceError) as e:
            tr.parse_line(_line(envelope=bad), 3)
        assert why in str(e.value) and "line 3" in str(e.value)


class FakeGateway:
    """The gateway's end of a pty: ACKs envelopes after `drop` of them went unanswered
    (lost with a pulled cable), then sends a RESULT for each."""

    def __init__(self, drop=0, nack=None, hello=True, kept=(), hello_info=None):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self.drop = drop
        self.nack = nack
        self.seen = []
        self.taken = []
        self.hellos = []
        self.hello = hello
        self.hello_info = hello_info  # the HELLO answer's JSON text, when not the usual one
        self.kept = list(kept)  # ids of results the gateway keeps: sent on a HELLO naming
        self.stop = False       # them (or none), and after each ACK, as an earlier command ends
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        d = F.Deframer(0xFFFF)
        import select
        while not self.stop:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            data = os.read(self.master, 4096)
            pos = 0
            while pos < len(data):
                used, ev = d.feed(memoryview(data)[pos:], 0)
                pos += used
                if isinstance(ev, F.Frame):
                    self.frame(ev.type, ev.seq, bytes(ev.payload))

    def frame(self, t, seq, p):
        if t == F.T_TAKEN:
            self.taken.append(p.decode())
            return
        if t == F.T_HELLO and self.hello:
            self.hellos.append(p)
            named = _hello_ids(p)
            info = {"v": 1, "gateway": "00DB1234567890A4", "kept": len(self.kept),
                    "unknown": [i for i in named if i not in self.kept]}
            os.write(self.master, F.encode(F.T_HELLO, seq, self.hello_info or json.dumps(info).encode()))
            for id in self.kept:
                if id in named or not named:
                    self.result(id)
            return
        if t != F.T_ENVELOPE:
            return
        self.seen.append(seq)
        if len(self.seen) <= self.drop:
            return
        env = envelope.from_binary(p, 65535)
        if self.nack:
            os.write(self.master, F.encode(F.T_NACK, seq, F.nack_payload(seq, self.nack, "refused")))
            return
        os.write(self.master, F.encode(F.T_ACK, seq, bytes((seq,))))
        for id in self.kept:
            self.result(id)
        self.result(env.id)

    def result(self, id):
        res = {"id": id, "status": "response", "gbcs": "AQI=", "via": "serial"}
        os.write(self.master, F.encode(F.T_RESULT, 0, json.dumps(res).encode()))

    def close(self):
        self.stop = True
        self.t.join(2)
        os.close(self.master)
        os.close(self._slave)


def _hello_ids(p):
    ids, pos = [], 1
    while pos < len(p):
        ids.append(p[pos + 1:pos + 1 + p[pos]].decode())
        pos += 1 + p[pos]
    return ids


def _until(cond, s=3.0):
    end = time.time() + s
    while time.time() < end and not cond():
        time.sleep(0.02)
    return cond()


def test_client_sends_again_when_no_answer_comes_and_takes_the_result():
    gw = FakeGateway(drop=2)
    try:
        c = WiredClient(gw.path, ack_timeout_s=0.3, retry_pause_s=0.05).open()
        env = envelope.to_binary(envelope.sign(KEY, "again-1", b"\xdf\x09\x01"))
        assert c.send_envelope(env) == ("ack",)
        assert c.stats["resends"] == 2 and len(gw.seen) == 3
        assert c.wait_results(["again-1"], 3) == []
        end = time.time() + 3
        while time.time() < end and not gw.taken:
            time.sleep(0.05)
        assert gw.taken == ["again-1"]
        c.close()
    finally:
        gw.close()


def test_client_reports_a_refusal_as_a_rejected_result_without_resending():
    gw = FakeGateway(nack="E_AUTH")
    try:
        with WiredClient(gw.path, ack_timeout_s=1) as c:
            env = envelope.to_binary(envelope.sign(KEY, "forged-1", b"\xdf\x09\x01"))
            got = c.send_envelope(env)
            assert got[:2] == ("nack", "E_AUTH") and c.stats["resends"] == 0
            assert c.results["forged-1"]["status"] == "rejected"
            assert c.results["forged-1"]["error"]["code"] == "E_AUTH"
    finally:
        gw.close()


def test_client_gives_up_after_its_tries_and_says_so(tmp_path):
    gw = FakeGateway(drop=100, hello=False)
    try:
        with WiredClient(gw.path, ack_timeout_s=0.1, tries=3, retry_pause_s=0.01) as c:
            env = envelope.to_binary(envelope.sign(KEY, "nobody", b"\xdf\x09\x01"))
            assert c.send_envelope(env) is None and len(gw.seen) == 3
            with pytest.raises(WiredError):
                c.say_hello(timeout=0.3)
    finally:
        gw.close()
    with pytest.raises(WiredError, match="cannot open"):
        WiredClient(str(tmp_path / "no-port")).open()


def test_client_reopens_a_port_that_went_away_and_asks_for_what_was_kept():
    gw = FakeGateway()
    try:
        c = WiredClient(gw.path, ack_timeout_s=0.5, retry_pause_s=0.05).open()
        first = envelope.to_binary(envelope.sign(KEY, "before", b"\xdf\x09\x01"))
        c.received["waiting"] = []           # a command seen earlier, no result yet
        c._ser.close()                       # the USB adapter pulled out under the client
        assert c.send_envelope(first) == ("ack",)
        # it asks for both: the one seen earlier and the one whose send failed
        assert c.stats["plugs"] == 1 and gw.hellos == [b"\x01\x07waiting\x06before"]
        c.close()
    finally:
        gw.close()


def test_client_takes_only_the_results_of_commands_it_sent_or_asked_for():
    # review 94 W1: an earlier `ppmid send` gave up waiting for "earlier-1"; its RESULT comes
    # on the wire while this client sends "mine-2". Taking it would make the gateway forget
    # a result its sender never got: it is kept apart (others) and not TAKEN.
    gw = FakeGateway(kept=["earlier-1"])
    try:
        with WiredClient(gw.path, ack_timeout_s=1) as c:
            env = envelope.to_binary(envelope.sign(KEY, "mine-2", b"\xdf\x09\x01"))
            assert c.send_envelope(env) == ("ack",)
            assert c.wait_results(["mine-2"], 3) == []
            assert _until(lambda: "earlier-1" in c.others and gw.taken)
            time.sleep(0.2)
            assert gw.taken == ["mine-2"]
            assert "earlier-1" not in c.received and "earlier-1" not in c.results
            assert c.others["earlier-1"]["status"] == "response" and c.stats["others"] == 1
            assert c.pending_ids() == []  # nor asked for on the next plug
            # named in a HELLO, it is asked for: then its result is taken
            assert c.say_hello(["earlier-1"], 3)["unknown"] == []
            assert _until(lambda: "earlier-1" in c.results and "earlier-1" in gw.taken)
    finally:
        gw.close()


def test_a_hello_naming_nothing_takes_nothing_and_many_ids_go_in_several_hellos():
    from host_tools.wired import HELLO_IDS
    gw = FakeGateway(kept=["other-run-1"])
    try:
        with WiredClient(gw.path, ack_timeout_s=1) as c:
            c.say_hello([], 3)  # "everything kept": recorded apart, left on the gateway
            assert _until(lambda: "other-run-1" in c.others)
            time.sleep(0.2)
            assert gw.taken == [] and c.results == {}
            ids = ["t-%d" % i for i in range(HELLO_IDS * 2 + 1)] + ["other-run-1"]
            got = c.say_hello(ids, 6)
            assert [len(_hello_ids(h)) for h in gw.hellos[1:]] == [HELLO_IDS, HELLO_IDS, 2]
            assert sum((_hello_ids(h) for h in gw.hellos[1:]), []) == ids
            assert got["unknown"] == ids[:-1]
            assert _until(lambda: gw.taken == ["other-run-1"])
    finally:
        gw.close()


def _cli(capsys, *argv):
    from host_tools import cli
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_ppmid_send_serial_reports_another_commands_result_and_leaves_it(tmp_path, capsys):
    gw = FakeGateway(kept=["earlier-1"])
    key = tmp_path / "k"
    key.write_bytes(KEY)
    try:
        rc, out, err = _cli(capsys, "send", "--serial", gw.path, "--gbcs", "DF0901", "--key-file", key,
                            "--id", "mine-2", "--timeout", 5)
        assert rc == 0, (out, err)
        assert [json.loads(x)["id"] for x in out.splitlines()] == ["mine-2"]
        assert "the result of another command, earlier-1 (response); not taken" in err, err
        time.sleep(0.2)
        assert gw.taken == ["mine-2"]
    finally:
        gw.close()


def test_ppmid_replay_serial_says_hello_with_its_trace_ids_and_reports_what_it_left(tmp_path, capsys):
    gw = FakeGateway(kept=["other-run-1", "t-1"])
    key = tmp_path / "k"
    key.write_bytes(KEY)
    trace = tmp_path / "t.jsonl"
    trace.write_text(_line("t-1", via="serial") + "\n" + _line("t-2", via="serial") + "\n")
    rep = tmp_path / "r.json"
    try:
        rc, out, err = _cli(capsys, "replay", trace, "--serial", gw.path, "--envelope-key", key,
                            "--report", rep, "--settle-s", 5)
        assert rc == 0, (out, err)
        assert _hello_ids(gw.hellos[0]) == ["t-1", "t-2"]
        r = json.loads(rep.read_text())
        assert r["wired"]["not_taken"] == [{"id": "other-run-1", "status": "response"}]
        time.sleep(0.2)
        assert "other-run-1" not in gw.taken and {"t-1", "t-2"} <= set(gw.taken)
    finally:
        gw.close()


def test_gateway_answers_that_are_json_but_not_objects_are_bad_frames_not_a_dead_reader():
    # review 94 W3: a STATUS of [] ended the reader thread (AttributeError): every later
    # answer went unread
    gw = FakeGateway()
    try:
        with WiredClient(gw.path, ack_timeout_s=1) as c:
            for odd in (b"[]", b"5", b'"text"', b'{"status": "response"}', b'{"id": 7}'):
                os.write(gw.master, F.encode(F.T_STATUS, 0, odd))
                os.write(gw.master, F.encode(F.T_RESULT, 0, odd))
            assert _until(lambda: c.stats["bad_frames"] == 10)
            assert c._thread.is_alive() and c.results == {} and gw.taken == []
            env = envelope.to_binary(envelope.sign(KEY, "after-1", b"\xdf\x09\x01"))
            assert c.send_envelope(env) == ("ack",)
            assert c.wait_results(["after-1"], 3) == []
    finally:
        gw.close()


@pytest.mark.parametrize("answer", [b"[]", b"5", b"null", b'{"v": 1}', b'{"gateway": 5}',
                                    b'{"gateway": "00DB1234567890A4", "unknown": 3}'])
def test_an_odd_hello_answer_is_a_coded_error(answer, tmp_path, capsys):
    gw = FakeGateway(hello_info=answer)
    key = tmp_path / "k"
    key.write_bytes(KEY)
    trace = tmp_path / "t.jsonl"
    trace.write_text(_line("t-1", via="serial") + "\n")
    try:
        with WiredClient(gw.path, ack_timeout_s=1) as c:
            with pytest.raises(WiredError, match="HELLO answer is not the documented object"):
                c.say_hello(["x"], 3)
        rc, out, err = _cli(capsys, "replay", trace, "--serial", gw.path, "--envelope-key", key,
                            "--report", tmp_path / "r.json")
        assert rc == 1 and err.startswith("ppmid: E_WIRED: the gateway's HELLO answer is not"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        gw.close()
