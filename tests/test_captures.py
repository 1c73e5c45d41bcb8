"""Captures for Wireshark (host_tools.pcap, host_tools.captures, `ppmid gbcs pcap`): tshark
reads what we write with its own GBCS dissector, and its fields are those `ppmid gbcs
decode` gives for the same bytes; directions and comments say who sent what; bad input
is refused with a sentence and leaves no capture behind."""
import base64
import binascii
import json
import os
import shutil
import subprocess
import sys

import pytest

from host_tools import captures, pcap
from host_tools import trace as tr
from test_gbcs_cli import ppmid as ppmid_gbcs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(not TSHARK, reason="tshark not installed")

FIELDS = ("frame.comment", "frame.p2p_dir", "exported_pdu.exported_pdu", "exported_pdu.prot_name",
          "gbcs_message.grouping_header.cra_flag", "gbcs_message.grouping_header.originator_counter",
          "gbcs_message.grouping_header.message_code", "gbcs_message.routing_header.cra_flag",
          "gbcs_message.routing_header.originator_counter", "gbcs_message.routing_header.message_code",
          "json.member_with_value", "_ws.malformed")


def tshark_rows(path):
    """One dict per packet: field -> text ("" when absent), as tshark shows it (a field
    that occurs more than once: its values joined by commas)."""
    p = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]
                       + [a for f in FIELDS for a in ("-e", f)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [dict(zip(FIELDS, line.split("\t"))) for line in p.stdout.splitlines()]


def gbcs_fields(row):
    """(cra, counter, message code) from tshark's grouping header, or its routing header
    for a GBT block; None when tshark saw no GBCS header."""
    for h in ("grouping_header", "routing_header"):
        first = lambda name: row["gbcs_message.%s.%s" % (h, name)].split(",")[0]  # noqa: E731
        if first("cra_flag"):
            return int(first("cra_flag"), 16), int(first("originator_counter")), int(first("message_code"), 16)
    return None


def ours(decoded):
    return ({"command": 1, "response": 2, "alert": 3}[decoded["cra"]], decoded["counter"], decoded["message_code"])


def assert_like_ppmid_decode(rows):
    """Every GBCS packet tshark decoded has the fields `ppmid gbcs decode` gives for its bytes."""
    gbcs_rows = [r for r in rows if r["exported_pdu.prot_name"] == "gbcs_message"]
    assert gbcs_rows
    stdin = "\n".join(r["exported_pdu.exported_pdu"] for r in gbcs_rows) + "\n"
    rc, decoded, err = ppmid_gbcs("decode", "-", stdin=stdin)
    assert len(decoded) == len(gbcs_rows), err
    compared = 0
    for row, d in zip(gbcs_rows, decoded):
        if "error" in d:
            continue
        theirs = gbcs_fields(row)
        assert theirs is not None, row
        assert theirs == ours(d), (row, d)
        compared += 1
    return compared


@needs_tshark
def test_a_corpus_capture_decodes_in_tshark_as_ppmid_gbcs_decode_does(gbcs_corpus, tmp_path):
    out = tmp_path / "corpus.pcapng"
    p = subprocess.run([sys.executable, "-m", "host_tools.cli", "gbcs", "pcap", gbcs_corpus, str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    n_files = sum(len([f for f in fs if f.upper().endswith(".HEX")]) for _, _, fs in os.walk(gbcs_corpus))
    assert "%d packets" % n_files in p.stdout
    rows = tshark_rows(out)
    assert len(rows) == n_files
    # commands, responses and alerts of the corpus: most decode on both sides
    assert assert_like_ppmid_decode(rows) > n_files // 2
    assert {r["frame.comment"].rpartition("/")[2] for r in rows} >= {"ECS01a_1.1.1_IMMEDIATE_ERROR_COMMAND_GBCS.HEX"}


def _corpus_message(corpus, suffix):
    for root, _, files in sorted(os.walk(corpus)):
        for f in sorted(files):
            if f.endswith(suffix):
                with open(os.path.join(root, f)) as fh:
                    return binascii.unhexlify(fh.read().strip())
    raise AssertionError("no %s in the corpus" % suffix)


@needs_tshark
def test_ch_log_and_mqtt_messages_keep_direction_time_and_envelope_fields(gbcs_corpus, tmp_path):
    cmd = _corpus_message(gbcs_corpus, "_COMMAND_GBCS.HEX")
    rsp = _corpus_message(gbcs_corpus, "_RESPONSE_GBCS.HEX")
    out = tmp_path / "mixed.pcapng"
    topic = "ppmid/v1/00DB1234567890A4/"
    with pcap.PcapWriter(str(out)) as w:
        captures.ch_entry(w, {"t": 1790000000.25, "dir": "rx", "hex": cmd.hex(), "len": len(cmd)})
        captures.ch_entry(w, {"t": 1790000001.5, "dir": "tx", "hex": rsp.hex(), "len": len(rsp)})
        envelope = {"id": "c-1", "gbcs": base64.b64encode(cmd).decode(), "mac": "ab" * 32}
        captures.mqtt_message(w, topic + "cmd", json.dumps(envelope).encode(), 1790000002.0)
        captures.mqtt_message(w, topic + "rsp", b'{"id": "c-1", "status": "accepted", "ms": 0}', 1790000003.0)
        captures.mqtt_message(w, topic + "rsp", json.dumps(
            {"id": "c-1", "status": "response", "gbcs": base64.b64encode(rsp).decode()}).encode(), 1790000004.0)
        captures.mqtt_message(w, topic + "rsp", b"\xff not json", 1790000005.0)
    assert w.count == 6
    rows = tshark_rows(out)
    assert [r["frame.p2p_dir"] for r in rows] == ["0", "1", "1", "0", "0", "0"]  # 0 = sent by the gateway
    assert rows[0]["frame.comment"] == "HAN: PPMID -> CH" and rows[1]["frame.comment"] == "HAN: CH -> PPMID"
    assert rows[2]["frame.comment"] == 'MQTT %scmd: broker -> gateway {"id": "c-1"}' % topic  # no mac, no base64
    assert '"status": "response"' in rows[4]["frame.comment"]
    assert rows[3]["exported_pdu.prot_name"] == "json" and "status:accepted" in rows[3]["json.member_with_value"]
    assert "not JSON of the contract" in rows[5]["frame.comment"]
    assert gbcs_fields(rows[2]) == gbcs_fields(rows[0]) and assert_like_ppmid_decode(rows) == 4
    p = subprocess.run([TSHARK, "-r", str(out), "-T", "fields", "-e", "frame.time_epoch"], capture_output=True,
                       text=True, timeout=60)
    assert [round(float(x), 3) for x in p.stdout.split()] == [1790000000.25, 1790000001.5, 1790000002.0,
                                                             1790000003.0, 1790000004.0, 1790000005.0]


@needs_tshark
def test_gbcs_pcap_converts_a_trace_and_a_ch_log(gbcs_corpus, tmp_path):
    cmd = _corpus_message(gbcs_corpus, "_COMMAND_GBCS.HEX")
    trace = tmp_path / "t.jsonl"
    tr.save([{"at_ms": 0, "id": "a", "gbcs": cmd, "via": "mqtt"},
             {"at_ms": 1500, "id": "b", "gbcs": cmd, "via": "nfc-tag"}], str(trace))
    log = tmp_path / "ch.jsonl"
    log.write_text("".join(json.dumps({"t": 1790000000 + i, "dir": d, "hex": cmd.hex()}) + "\n"
                           for i, d in enumerate(("rx", "tx"))))
    for src, kind, n in ((trace, "trace", 2), (log, "ch-log", 2)):
        out = tmp_path / (kind + ".pcapng")
        p = subprocess.run([sys.executable, "-m", "host_tools.cli", "gbcs", "pcap", str(src), str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "(%s)" % kind in p.stdout, p.stderr
        rows = tshark_rows(out)
        assert len(rows) == n and assert_like_ppmid_decode(rows) == n
    rows = tshark_rows(tmp_path / "trace.pcapng")
    assert "id b, via nfc-tag" in rows[1]["frame.comment"]


def test_bad_inputs_are_refused_and_leave_no_capture(tmp_path):
    bad_log = tmp_path / "ch.jsonl"
    bad_log.write_text('{"t": 1, "dir": "rx", "hex": "dd00"}\n{"t": 2, "dir": "sideways", "hex": "00"}\n')
    bad_hex = tmp_path / "m.txt"
    bad_hex.write_text("dd00zz\n")
    bad_trace = tmp_path / "t.jsonl"
    bad_trace.write_text('{"at_ms": -1, "id": "x", "gbcs": "dd00"}\n')
    broken_json = tmp_path / "b.jsonl"
    broken_json.write_text('{"at_ms": 0, "id"\n')
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    for src, says in ((bad_log, "line 2: not a CH log entry"), (bad_hex, "not hex"), (bad_trace, "at_ms"),
                      (empty, "no GBCS message"), (broken_json, "starts like JSON but is not"), (tmp_path / "absent", "no such file")):
        out = tmp_path / "out.pcapng"
        p = subprocess.run([sys.executable, "-m", "host_tools.cli", "gbcs", "pcap", str(src), str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and says in p.stderr and "Traceback" not in p.stderr, (src, p.stderr)
        assert not out.exists()
    p = subprocess.run([sys.executable, "-m", "host_tools.cli", "gbcs", "pcap", str(bad_hex), str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "is a folder" in p.stderr


def test_a_closed_writer_refuses_packets(tmp_path):
    w = pcap.PcapWriter(str(tmp_path / "x.pcapng"))
    w.close()
    with pytest.raises(pcap.PcapError):
        w.gbcs(b"\xdd\x00")
    with pytest.raises(pcap.PcapError):
        pcap.PcapWriter(str(tmp_path / "no" / "such" / "dir.pcapng"))


def test_ncp_emulator_refuses_a_capture_it_cannot_write(tmp_path):
    master, slave = os.openpty()
    try:
        for bad in (str(tmp_path / "no" / "dir" / "x.pcapng"), str(tmp_path)):
            p = subprocess.run([sys.executable, "-m", "host_tools.cli", "ncp-emulator", "--pty", os.ttyname(slave),
                                "--pcap", bad], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert p.returncode == 1 and "--pcap" in p.stderr and "Traceback" not in p.stderr, p.stderr
    finally:
        os.close(master)
        os.close(slave)
