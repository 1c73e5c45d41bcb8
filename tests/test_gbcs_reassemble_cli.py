"""`ppmid gbcs decode --reassemble` (host_tools/gbcs_tools.py GbtCollector): GBT streams made by
splitting big RTDS corpus messages with the firmware's build.split, shuffled and duplicated
with fixed seeds, must rebuild the original; missing blocks, conflicting duplicates,
malformed blocks, interleaved streams and foreign blocks are reported."""
import binascii
import glob
import os
import random

import pytest

from host_tools.gbcs_tools import GbtCollector, message_json
from ppmid.gbcs import decode, build
from test_gbcs_cli import ppmid


def _hex(b):
    return binascii.hexlify(b).decode().upper()


def big_messages(corpus, min_len=600):
    """Corpus messages of at least min_len bytes, one per (originator, recipient, counter):
    RTDS reuses counters across files, and two messages with one key are one GBT stream."""
    seen = set()
    out = []
    for path in sorted(glob.glob(os.path.join(corpus, "*", "*.HEX"))):
        with open(path) as f:
            raw = binascii.unhexlify(f.read().strip())
        if len(raw) < min_len:
            continue
        m = decode(raw)
        key = (bytes(m.originator), bytes(m.recipient), m.counter)
        if key not in seen:
            seen.add(key)
            out.append(raw)
    return out


def shuffled(blocks, rng, dup_rate=0.3):
    """The blocks plus duplicates of about dup_rate of them, in a random order."""
    stream = list(blocks) + [b for b in blocks if rng.random() < dup_rate]
    rng.shuffle(stream)
    return stream


def lines(blocks):
    return "\n".join(_hex(b) for b in blocks) + "\n"


def split_blocks(raw, size):
    return list(build.split(raw, size))


def test_collector_rebuilds_shuffled_duplicated_streams(gbcs_corpus):
    # in-process, many seeds and block sizes: the collector alone, no subprocess
    msgs = big_messages(gbcs_corpus)
    assert len(msgs) >= 20
    rng = random.Random(20)
    for trial in range(40):
        picked = rng.sample(msgs, 3)
        stream = []
        for raw in picked:
            stream += split_blocks(raw, rng.choice((1, 7, 64, 200, 500, len(raw) - 1)))
        c = GbtCollector()
        for i, blk in enumerate(shuffled(stream, rng)):
            assert c.add(blk, decode(blk), "s:%d" % i) is None
        res = c.results()
        assert [r["reassembled"] for r in res] == [True] * 3, (trial, res)
        assert sorted(r["hex"] for r in res) == sorted(_hex(raw) for raw in picked)


def test_collector_refuses_blocks_after_the_last(gbcs_corpus):
    raw, blocks = _one_stream(gbcs_corpus)
    m = decode(raw)
    extra = build.build_block(m.cra, m.counter, bytes(m.originator), bytes(m.recipient), m.message_code,
                            len(blocks) + 2, b"\x00", last=True)
    for stream in (blocks + [extra], [extra] + blocks):
        c = GbtCollector()
        for i, blk in enumerate(stream):
            c.add(blk, decode(blk), "s:%d" % i)
        (r,) = c.results()
        assert r["reassembled"] is False and r["error"]["code"] == "E_GBT_INCONSISTENT", r
        assert "hex" not in r


def test_cli_reassembles_interleaved_shuffled_duplicated_corpus_streams(gbcs_corpus):
    msgs = big_messages(gbcs_corpus)[:25]
    rng = random.Random(7)
    stream = []
    for raw in msgs:
        stream += split_blocks(raw, rng.randint(100, 600))
    stream = shuffled(stream, rng)
    rc, out, err = ppmid("decode", "--reassemble", "-", stdin=lines(stream))
    assert rc == 0, err
    per_block, rebuilt = out[:len(stream)], out[len(stream):]
    # the per-block lines are those of plain `decode`, in input order
    assert [o["block_number"] for o in per_block] == [decode(b).block_number for b in stream]
    assert all(o["form"] == "gbt" and o["source"] == "-:%d" % (i + 1) for i, o in enumerate(per_block))
    assert len(rebuilt) == len(msgs)
    by_hex = {_hex(raw): raw for raw in msgs}
    for r in rebuilt:
        assert r["reassembled"] is True
        raw = by_hex.pop(r["hex"])
        want = message_json(decode(raw))
        assert {k: r[k] for k in want} == want
        assert r["blocks"] == len(r["sources"]) and r["blocks"] >= 2
    assert not by_hex


def _one_stream(corpus, size=300):
    raw = big_messages(corpus, 1500)[0]
    blocks = split_blocks(raw, size)
    assert len(blocks) >= 5
    return raw, blocks


def test_missing_blocks_are_named(gbcs_corpus):
    raw, blocks = _one_stream(gbcs_corpus)
    other = big_messages(gbcs_corpus)[5]
    complete = split_blocks(other, 250)
    stream = [b for i, b in enumerate(blocks) if i not in (1, 3)] + complete
    rng = random.Random(3)
    rc, out, _ = ppmid("decode", "--reassemble", "-", stdin=lines(shuffled(stream, rng)))
    assert rc == 1
    res = [o for o in out if "reassembled" in o]
    assert len(res) == 2
    bad = [r for r in res if not r["reassembled"]][0]
    m = decode(raw)
    assert bad["incomplete"] is True and bad["missing_blocks"] == [2, 4] and bad["last_block_seen"] is True
    assert bad["counter"] == m.counter and bad["originator"] == _hex(bytes(m.originator))
    assert bad["error"]["code"] == "E_GBT_INCOMPLETE" and "2,4" in bad["error"]["message"]
    assert "hex" not in bad and bad["blocks"] == len(blocks) - 2
    good = [r for r in res if r["reassembled"]][0]
    assert good["hex"] == _hex(other)
    # without the last block, the count is unknown: the gaps below the highest block seen
    rc, out, _ = ppmid("decode", "--reassemble", "-", stdin=lines(blocks[:1] + blocks[2:-1]))
    r = out[-1]
    assert rc == 1 and r["incomplete"] is True and r["missing_blocks"] == [2]
    assert r["last_block_seen"] is False and "the last block" in r["error"]["message"]


def test_interleaved_counters_and_a_foreign_originator(gbcs_corpus):
    raw, blocks = _one_stream(gbcs_corpus)
    m = decode(raw)
    # a second message: the same one with the next counter in its header (the titles are
    # the same, so only the counter tells the two streams apart)
    cb = bytes(m.counter_bytes)
    at = raw.index(cb)
    raw2 = raw[:at] + (m.counter + 1).to_bytes(8, "big") + raw[at + 8:]
    assert decode(raw2).counter == m.counter + 1
    other_counter = split_blocks(raw2, 350)
    foreign = decode(blocks[2])
    stray = build.build_block(m.cra, m.counter, b"\x90\xB3\xD5\x1F\x30\x00\x00\x99", bytes(m.recipient),
                            m.message_code, 3, bytes(foreign.block_data))
    rng = random.Random(11)
    stream = shuffled(blocks + other_counter, rng) + [stray]
    rc, out, _ = ppmid("decode", "--reassemble", "-", stdin=lines(stream))
    assert rc == 1  # the stray block's message is incomplete
    res = out[len(stream):]
    assert len(res) == 3
    done = sorted((r for r in res if r["reassembled"]), key=lambda r: r["counter"])
    assert [r["counter"] for r in done] == [m.counter, m.counter + 1]
    assert done[0]["hex"] == _hex(raw) and done[1]["hex"] == _hex(raw2)
    stray_res = [r for r in res if r["originator"] == "90B3D51F30000099"][0]
    assert stray_res["incomplete"] is True and stray_res["missing_blocks"] == [1, 2]
    assert stray_res["blocks"] == 1


def test_malformed_block_and_conflicting_duplicate(gbcs_corpus):
    raw, blocks = _one_stream(gbcs_corpus)
    other = big_messages(gbcs_corpus)[5]
    ok_blocks = split_blocks(other, 400)
    changed = bytearray(blocks[2])
    changed[-1] ^= 0xFF  # block 3 again, one data byte different
    stream = blocks + [bytes(changed)] + ok_blocks
    text = lines(stream[:4]) + _hex(blocks[1])[:-40] + "\nXYZ\n" + lines(stream[4:])
    rc, out, _ = ppmid("decode", "--reassemble", "-", stdin=text)
    assert rc == 1
    assert out[4]["error"]["code"] == "E_TRUNCATED" and out[4]["source"] == "-:5"
    assert out[5]["error"]["code"] == "E_HEX"
    res = [o for o in out if "reassembled" in o]
    assert len(res) == 2
    conflict, good = res
    assert conflict["reassembled"] is False and conflict["conflicting_blocks"] == [3]
    assert conflict["error"]["code"] == "E_GBT_INCONSISTENT" and "hex" not in conflict
    assert conflict["sources"] == ["-:3", "-:%d" % (len(blocks) + 3)]
    assert good["reassembled"] is True and good["hex"] == _hex(other)


def test_block_zero_and_plain_messages_and_acks(gbcs_corpus):
    raw, blocks = _one_stream(gbcs_corpus)
    m = decode(raw)
    zero = build.build_block(m.cra, m.counter, bytes(m.originator), bytes(m.recipient), m.message_code,
                           0, b"\x01\x02")
    ack = build.build_ack(blocks[0])
    stream = [raw, zero, ack] + blocks[::-1]
    rc, out, _ = ppmid("decode", "--reassemble", "-", stdin=lines(stream))
    assert rc == 1  # block 0
    assert out[0]["form"] != "gbt" and "reassembled" not in out[0]
    assert out[1]["error"]["code"] == "E_GBT_INCONSISTENT" and "number 0" in out[1]["error"]["message"]
    assert out[2]["block_ack"] == 1 and out[2]["block_data_len"] == 0
    res = [o for o in out if "reassembled" in o]
    assert len(res) == 1 and res[0]["reassembled"] is True and res[0]["hex"] == _hex(raw)
    # without --reassemble: today's output, one line per input line
    rc, out, _ = ppmid("decode", "-", stdin=lines(blocks))
    assert rc == 0 and len(out) == len(blocks) and not [o for o in out if "reassembled" in o]


def test_reassemble_is_a_decode_option():
    rc, out, err = ppmid("check", "--reassemble", "--config", "x", "-", stdin="")
    assert rc != 0 and "--reassemble" in err


def test_tshark_reassembles_the_same_shuffled_stream(gbcs_corpus, tmp_path):
    # Wireshark's GBCS dissector also reassembles GBT: for one shuffled, duplicated stream its
    # rebuilt message must agree with ours on length, counter and message code
    import test_gbcs_tshark as T
    if not (T.TSHARK and T.TEXT2PCAP):
        pytest.skip("tshark/text2pcap not installed")
    raw, blocks = _one_stream(gbcs_corpus)
    stream = shuffled(blocks, random.Random(5))
    rc, out, err = ppmid("decode", "--reassemble", "-", stdin=lines(stream))
    assert rc == 0, err
    ours = out[-1]
    assert ours["reassembled"] is True and ours["hex"] == _hex(raw)
    pcap = str(tmp_path / "stream.pcap")
    T.write_pcap(stream, pcap)
    theirs = [p for p in T.tshark_packets(pcap) if "gbcs_message.gbt.reassembled.length" in p]
    assert len(theirs) == 1
    pkt = theirs[0]
    assert int(T._one(pkt, "gbcs_message.gbt.reassembled.length")[2]) == len(ours["hex"]) // 2
    assert [int(v[2]) for v in pkt["gbcs_message.grouping_header.originator_counter"]] == [ours["counter"]]
    assert [int(v[2], 16) for v in pkt["gbcs_message.grouping_header.message_code"]] == [ours["message_code"]]
