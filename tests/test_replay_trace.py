"""Trace format v1 (docs/trace.md): parsing refuses bad lines with a line number; the
sample builder respects anti-replay order and predicts what the firmware validator says."""
import binascii
import json

import pytest

from host_tools import trace as tr
from host_tools.replay import percentile, parse_broker_url, ReplayError


def write(tmp_path, lines):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_load_good_trace_with_defaults(tmp_path):
    path = write(tmp_path, ['# comment', '{"at_ms": 0, "id": "a", "gbcs": "df09"}', '',
                            '{"at_ms": 5, "id": "b", "gbcs": "DF09", "via": "nfc-tag", '
                            '"expect": {"status": "rejected", "error": "E_REPLAY"}}'])
    lines = tr.load(path)
    assert [x["id"] for x in lines] == ["a", "b"]
    assert lines[0]["via"] == "mqtt" and lines[0]["expect"] is None and lines[0]["gbcs"] == b"\xdf\x09"
    assert lines[1]["via"] == "nfc-tag" and lines[1]["expect"]["error"] == "E_REPLAY"
    # round trip
    tr.save(lines, str(tmp_path / "o.jsonl"))
    assert [x["gbcs"] for x in tr.load(str(tmp_path / "o.jsonl"))] == [b"\xdf\x09", b"\xdf\x09"]


@pytest.mark.parametrize("text,what", [
    ('not json', "not JSON"),
    ('[1]', "not a JSON object"),
    ('{"at_ms": -1, "id": "a", "gbcs": "00"}', "at_ms"),
    ('{"at_ms": true, "id": "a", "gbcs": "00"}', "at_ms"),
    ('{"at_ms": 0, "id": "", "gbcs": "00"}', "id"),
    ('{"at_ms": 0, "id": "a b", "gbcs": "00"}', "id"),
    ('{"at_ms": 0, "id": "a", "gbcs": "zz"}', "hex"),
    ('{"at_ms": 0, "id": "a", "gbcs": ""}', "empty"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "via": "ble"}', "via"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "expect": {"status": "great"}}', "expect.status"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "expect": {"colour": 1}}', "expect must"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "speed": 1}', "unknown key"),
    ('{"at_ms": 1%s, "id": "a", "gbcs": "00"}' % ("0" * 400), "at_ms must be an integer from 0"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "expect": {"status": "rejected", "error": 5}}', "expect.error"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "expect": {"status": "response", "late": "yes"}}', "expect.late"),
    ('{"at_ms": 0, "id": "a", "gbcs": "00", "expires_in_s": 99999999999}', "expires_in_s"),
    ("[" * 100000, "nested too deeply"),
])
def test_bad_lines_are_refused_with_their_line_number(tmp_path, text, what):
    path = write(tmp_path, ['{"at_ms": 0, "id": "ok", "gbcs": "00"}', text])
    with pytest.raises(tr.TraceError) as ei:
        tr.load(path)
    assert "line 2" in str(ei.value) and what in str(ei.value)


def test_a_trace_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"at_ms": 0, "id": "ok", "gbcs": "00"}\n\xff\xfe\n')
    with pytest.raises(tr.TraceError, match="not UTF-8"):
        tr.load(str(path))


def test_duplicate_ids_refused(tmp_path):
    path = write(tmp_path, ['{"at_ms": 0, "id": "a", "gbcs": "00"}', '{"at_ms": 1, "id": "a", "gbcs": "00"}'])
    with pytest.raises(tr.TraceError, match="used twice"):
        tr.load(path)


def test_sample_trace_from_corpus_respects_anti_replay(gbcs_corpus):
    from ppmid.gbcs import decode, Validator, GbcsError
    from ppmid.gbcs.validate_host import MemoryCounterStore
    lines = tr.build(gbcs_corpus, interval_ms=250)
    assert len(lines) > 50
    assert [x["at_ms"] for x in lines] == [i * 250 for i in range(len(lines))]
    assert len({x["id"] for x in lines}) == len(lines)
    # replaying the expectations through a fresh validator gives exactly them
    v = Validator(tr.gateway_config(), MemoryCounterStore())
    relayable = 0
    last = {}
    for x in lines:
        m = decode(x["gbcs"])
        assert m.cra == 1
        rec = binascii.hexlify(bytes(m.recipient)).decode().upper()
        assert rec in tr.TEST_DEVICES
        try:
            v.commit(v.check(x["gbcs"]))
            got = {"status": "response"}
            pair = (bytes(m.originator), bytes(m.recipient))
            assert m.counter > last.get(pair, -1)
            last[pair] = m.counter
            relayable += 1
        except GbcsError as exc:
            got = {"status": "rejected", "error": exc.code}
        assert got == x["expect"], x["id"]
    assert relayable >= 20
    only = tr.build(gbcs_corpus, include_rejected=False)
    assert len(only) == relayable and all(x["expect"]["status"] == "response" for x in only)


def test_trace_cli_writes_a_loadable_file(gbcs_corpus, tmp_path, capsys):
    out = str(tmp_path / "s.jsonl")
    assert tr.main(["--corpus", gbcs_corpus, "--out", out, "--limit", "10"]) == 0
    assert len(tr.load(out)) == 10
    assert "10 lines" in capsys.readouterr().out


def test_percentile_and_broker_url():
    assert percentile([5], 50) == 5
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([3, 1, 2], 100) == 3
    assert parse_broker_url("mqtts://127.0.0.1:8884") == ("127.0.0.1", 8884)
    assert parse_broker_url("broker.example") == ("broker.example", 8883)
    assert parse_broker_url("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ReplayError):
        parse_broker_url("mqtt://plain:1883")
    with pytest.raises(ReplayError):
        parse_broker_url("host:port")
