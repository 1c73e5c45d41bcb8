"""Top-ups in the host tools: the trace line form (docs/trace.md), the replayer's signed
top-up payload (the gateway's own envelope code verifies it), `ppmid send`'s JSON, and the
UTRNs the emulated ESME accepts (host_tools/utrn.py test_utrn / esme.py)."""
import json

import pytest

from host_tools import mqtt_tools as mt
from host_tools import replay, trace
from host_tools import utrn as U
from host_tools.ncp_emulator.esme import EmulatedEsme
from ppmid import topup
from ppmid.zigbee import prepayment as P

KEY = bytes(range(32))
GOOD = "73943333457189043313"


def test_trace_top_up_lines_parse_and_round_trip():
    text = json.dumps({"at_ms": 5, "id": "t-1", "utrn": GOOD, "target": "esme", "expect": {"status": "topped-up"}})
    line = trace.parse_line(text, 1)
    assert (line["utrn"], line["target"], line["gbcs"]) == (GOOD, "esme", None)
    assert trace.parse_line(trace.dump_line(line), 1) == line
    for bad, why in (({"utrn": GOOD}, "target"), ({"utrn": 7, "target": "esme"}, "utrn"),
                     ({"utrn": GOOD, "target": "meter"}, "target"),
                     ({"utrn": GOOD, "target": "esme", "gbcs": "dd00"}, "not both")):
        obj = dict({"at_ms": 0, "id": "x"}, **bad)
        with pytest.raises(trace.TraceError, match=why):
            trace.parse_line(json.dumps(obj), 3)


def test_replayer_signs_top_ups_the_gateway_verifies():
    line = {"id": "t-1", "utrn": GOOD, "target": "esme", "expires_in_s": 60}
    env, payload = replay.envelope_payload(KEY, line, 1800000000, {"esme": "00db1234567890a0"})
    obj = json.loads(payload)
    assert obj["target"] == "00DB1234567890A0" and obj["expires"] == 1800000060 and "gbcs" not in obj
    topup.from_json_obj(obj).verify(KEY, 1800000000)
    # an EUI target goes as given; ppmid send's payload is the same form
    env, payload = replay.envelope_payload(KEY, dict(line, target="00DB1234567890A1"), 0)
    topup.from_json_obj(json.loads(payload)).verify(KEY)
    topup.from_json_obj(json.loads(mt.topup_json(KEY, "s-1", GOOD, "00db1234567890a0"))).verify(KEY)


def test_replay_report_counts_top_ups():
    r = replay.Replayer("h", 1, "00DB1234567890A4", KEY, None, None, None)
    lines = [{"id": "a", "utrn": GOOD, "at_ms": 0}, {"id": "b", "utrn": GOOD, "at_ms": 0},
             {"id": "c", "utrn": "1", "at_ms": 0}]
    r.received = {"a": [(1.0, {"id": "a", "status": "topped-up", "topup": {"value": 5}})],
                  "b": [(1.0, {"id": "b", "status": "topped-up"})],
                  "c": [(1.0, {"id": "c", "status": "rejected", "error": {"code": "E_UTRN_FORMAT"}})]}
    rep = r.report(lines, {"a": 0.5, "b": 0.5, "c": 0.5}, [], 1.0)
    # the same UTRN topped up under two ids: what applied_twice is there to show
    assert rep["topups"] == {"applied": 2, "rejected": 1, "applied_twice": 1}
    assert "top-ups applied/rejected/twice" in replay.table(rep)


def test_emulated_esme_judges_like_a_meter():
    m = EmulatedEsme(credit_pence=100, max_credit_pence=10000, max_topup_pence=5000)

    def top_up(text, seq=1):
        rsp, alert = m.handle(P.consumer_top_up(seq, text.encode()))
        r = P.parse_response(rsp)
        assert r.seq == seq
        return r.result, r.value, r.credit, alert

    good = U.test_utrn(1, "pounds", 10)
    assert top_up(good) == (0x10, 1000, 1100, None)
    assert top_up(good) == (0x02, 0, 1100, 0x8F51)                           # duplicate, alert
    assert top_up(U.encode(2, "pounds", 10, b"\0\0\0\0"))[0] == 0x01          # MAC under another key
    assert top_up(good[:19] + str((int(good[19]) + 1) % 10))[0] == 0x01       # check digit
    assert top_up(U.test_utrn(3, "pounds", 51))[0] == 0x06                   # larger than one top-up may be
    assert top_up(U.test_utrn(4, "pounds", 50))[0] == 0x10
    assert top_up(U.test_utrn(5, "pounds", 40))[0] == 0x04                   # past the credit limit
    m.keypad_lock = True
    assert top_up(U.test_utrn(6, "pennies", 1))[0] == 0x05
    assert m.figures() == {"credit": 6100, "received": 8, "applied": 2, "rejected": 6, "applied_twice": 0}
    m.keypad_lock, m.silent = False, True
    assert m.handle(P.consumer_top_up(1, good.encode())) == (None, None)
    m.silent, m.refuse_status = False, 0x7E
    rsp, alert = m.handle(P.consumer_top_up(9, U.test_utrn(7, "pounds", 1).encode()))
    assert P.parse_default_response(rsp) == (9, P.CONSUMER_TOP_UP, 0x7E) and alert is None
    assert m.credit == 6100 and m.rejected[-1][1] is None


def test_ncp_emulator_console_sets_the_esme_knobs():
    from host_tools.cmd_ncp_emulator import esme_command
    m = EmulatedEsme()
    assert esme_command(m, [])["credit"] == 1000
    esme_command(m, ["keypad-lock", "on"])
    assert m.keypad_lock
    esme_command(m, ["keypad-lock", "off"])
    esme_command(m, ["silent", "on"])
    assert not m.keypad_lock and m.silent
    for bad in (["keypad-lock"], ["credit", "on"], ["silent", "maybe"]):
        with pytest.raises(ValueError):
            esme_command(m, bad)
