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

    def __init__(self, drop=0, nack=None, hello=True):
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
        self.stop = False
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
            info = {"v": 1, "gateway": "00DB1234567890A4", "kept": 0, "unknown": []}
            os.write(self.master, F.encode(F.T_HELLO, seq, json.dumps(info).encode()))
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
        res = {"id": env.id, "status": "response", "gbcs": "AQI=", "via": "serial"}
        os.write(self.master, F.encode(F.T_RESULT, 0, json.dumps(res).encode()))

    def close(self):
        self.stop = True
        self.t.join(2)
        os.close(self.master)
        os.close(self._slave)


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
