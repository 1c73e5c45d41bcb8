"""Cross-check of the firmware GBCS decoder against Wireshark's GBCS dissector (tshark).

Every message of the RTDS corpus is decoded by ppmid.gbcs and, in ONE pcap and ONE tshark
run, by tshark's `gbcs_message` dissector (user DLT 147); the fields are compared one by
one. GBT blocks that we build by splitting corpus messages go through tshark the same way
(tshark also reassembles them: the reassembled message must be the original).
"""
import binascii
import glob
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from ppmid.gbcs import decode
from ppmid.gbcs import message as M
from ppmid.gbcs import message_fields as F  # content types

TSHARK = shutil.which("tshark")
TEXT2PCAP = shutil.which("text2pcap")
UAT = 'uat:user_dlts:"User 0 (DLT=147)","gbcs_message","0","","0",""'

pytestmark = pytest.mark.skipif(not (TSHARK and TEXT2PCAP), reason="tshark/text2pcap not installed")


def corpus_files(corpus):
    return sorted(glob.glob(os.path.join(corpus, "*", "*.HEX")))


def read_hex(path):
    with open(path) as f:
        return binascii.unhexlify(f.read().strip())


def write_pcap(messages, path):
    """All messages as consecutive frames of one pcap (text2pcap hex-dump input)."""
    txt = path + ".txt"
    with open(txt, "w") as f:
        for msg in messages:
            for off in range(0, len(msg), 16):
                f.write("%06x %s\n" % (off, " ".join("%02x" % x for x in msg[off:off + 16])))
    subprocess.run([TEXT2PCAP, "-q", "-l", "147", txt, path], check=True, capture_output=True)


def tshark_packets(pcap):
    """One dict per frame: field name -> list of (pos, size, show, value) and a few extras."""
    proc = subprocess.run([TSHARK, "-r", pcap, "-o", UAT, "-T", "pdml"], check=True,
                          capture_output=True)
    packets = []
    for _, el in ET.iterparse(_bytes_io(proc.stdout), events=("end",)):
        if el.tag != "packet":
            continue
        fields = {}
        extras = {"malformed": False, "content": None}
        for node in el.iter():
            name = node.get("name")
            if node.tag == "proto" and name == "_ws.malformed":
                extras["malformed"] = True
            if node.tag == "proto" and name == "gbcs_gbz":
                extras["content"] = (int(node.get("pos")), int(node.get("size")))
            if node.tag == "field" and name == "" and node.get("show") in ("GBCS DLMS", "GBCS ASN.1"):
                extras["content"] = (int(node.get("pos")), int(node.get("size")))
            if node.tag == "field" and name:
                fields.setdefault(name, []).append(
                    (int(node.get("pos", "0")), int(node.get("size", "0")), node.get("show"), node.get("value")))
        fields["_extras"] = extras
        packets.append(fields)
        el.clear()
    return packets


def _bytes_io(data):
    import io
    return io.BytesIO(data)


def _one(fields, name):
    vals = fields.get(name, [])
    assert len(vals) == 1, "%s: %r" % (name, vals)
    return vals[0]


def _hex(mv):
    return None if mv is None else binascii.hexlify(bytes(mv)).decode()


def compare_message(msg, pkt, where):
    """Assert that our decode of a DD00/DF message equals tshark's, field by field."""
    gh = "gbcs_message.grouping_header."
    t = msg._l[0]
    if msg.form == F.FORM_MAC_SIGNED:
        assert _one(pkt, "gbcs_message.mac_header.general_ciphering")[3] == "dd", where
        assert int(_one(pkt, "gbcs_message.mac_header.security_control_byte")[2], 16) == msg.security_control
        assert _one(pkt, "gbcs_message.mac")[3] == _hex(msg.mac), where
        assert _one(pkt, "gbcs_message.mac")[0] == len(msg.buf) - 12, where
    else:
        assert "gbcs_message.mac_header.general_ciphering" not in pkt, where
        assert "gbcs_message.mac" not in pkt and msg.mac is None, where
    assert _one(pkt, gh + "general_signing")[0] == t - 1, where
    assert int(_one(pkt, gh + "cra_flag")[2], 16) == msg.cra, where
    assert int(_one(pkt, gh + "originator_counter")[2]) == msg.counter, where
    assert _one(pkt, gh + "business_originator_id")[3] == _hex(msg.originator), where
    assert _one(pkt, gh + "business_target_id")[3] == _hex(msg.recipient), where
    if msg.date_time is None:
        assert gh + "date_time" not in pkt, where
    else:
        dt = _one(pkt, gh + "date_time")
        assert (dt[0], dt[1]) == (t + 29, 12), where
        assert binascii.hexlify(bytes(msg.buf[dt[0]:dt[0] + 12])).decode() == _hex(msg.date_time)
    assert int(_one(pkt, gh + "message_code")[2], 16) == msg.message_code, where
    for ours, name in ((msg.supplementary_remote_party_id, "supplementary_remote_party_id"),
                       (msg.certificate, "supplementary_remote_party_ka_certificate")):
        if ours is None:
            assert gh + name not in pkt, where
        else:
            assert _one(pkt, gh + name)[3] == _hex(ours), where
    for ours, name in ((msg.supplementary_remote_party_counter, "supplementary_remote_party_counter"),
                       (msg.supplementary_originator_counter, "supplementary_remote_party_originator_counter")):
        if ours is None:
            assert gh + name not in pkt, where
        else:
            assert int(_one(pkt, gh + name)[2]) == ours, where
    # content: position, length and type
    content = pkt["_extras"]["content"]
    assert content == (msg._l[4], msg.content_len), (where, content)
    kind = msg.content_type
    if kind == F.CONTENT_GBZ:
        assert int(_one(pkt, "gbcs_gbz.profile_id")[2], 16) == 0x0109, where
    elif kind in (F.CONTENT_DLMS_REQUEST, F.CONTENT_DLMS_RESPONSE, F.CONTENT_DLMS_NOTIFICATION):
        assert "gbcs_gbz.profile_id" not in pkt
        assert bytes(msg.content[:1]) in (b"\xd9", b"\xda", b"\x0f"), where
    # signature (tshark calls it KRP): absent field -> tshark runs off the end (malformed)
    sig = msg.signature
    if sig is None:
        assert "gbcs_message.krp" not in pkt and pkt["_extras"]["malformed"], where
    elif len(sig) == 0:
        assert "gbcs_message.krp" not in pkt and not pkt["_extras"]["malformed"], where
    else:
        krp = _one(pkt, "gbcs_message.krp")
        assert (krp[0], krp[3]) == (msg._l[6], _hex(sig)), where
        assert not pkt["_extras"]["malformed"], where


def test_every_corpus_message_matches_tshark(gbcs_corpus, tmp_path):
    files = corpus_files(gbcs_corpus)
    assert len(files) == 1275
    raws = [read_hex(f) for f in files]
    pcap = str(tmp_path / "corpus.pcap")
    write_pcap(raws, pcap)
    packets = tshark_packets(pcap)
    assert len(packets) == len(raws)
    forms = {}
    for path, raw, pkt in zip(files, raws, packets):
        msg = decode(raw)
        forms[msg.form] = forms.get(msg.form, 0) + 1
        compare_message(msg, pkt, os.path.basename(path))
    assert forms == {F.FORM_MAC_SIGNED: 815, F.FORM_SIGNED: 460}


def compare_block(blk, pkt, where):
    rh = "gbcs_message.routing_header."
    gh = "gbcs_message.gbt_header."
    assert _one(pkt, rh + "general_ciphering")[3] == "dd", where
    assert int(_one(pkt, rh + "cra_flag")[2], 16) == blk.cra, where
    assert int(_one(pkt, rh + "originator_counter")[2]) == blk.counter, where
    assert _one(pkt, rh + "business_originator_id")[3] == _hex(blk.originator), where
    assert _one(pkt, rh + "business_target_id")[3] == _hex(blk.recipient), where
    assert int(_one(pkt, rh + "message_code")[2], 16) == blk.message_code, where
    assert int(_one(pkt, rh + "security_control_byte")[2], 16) == blk.security_control, where
    assert int(_one(pkt, gh + "block_control")[2], 16) == blk.block_control, where
    assert (_one(pkt, gh + "block_control.last_block")[2] in ("1", "True")) == blk.last_block, where
    assert int(_one(pkt, gh + "block_control.window")[2]) == blk.block_control & 0x3F, where
    assert int(_one(pkt, gh + "block_number")[2]) == blk.block_number, where
    assert int(_one(pkt, gh + "block_number_ack")[2]) == blk.block_ack, where
    # the element_length that ends where the block data starts is the block data length
    data_pos = blk._l[4]
    lens = [v for v in pkt["gbcs_message.element_length"] if v[0] + v[1] == data_pos]
    assert lens and int(lens[0][2]) == len(blk.block_data), where  # [0]: this block, not the reassembled message


def test_gbt_blocks_of_split_corpus_messages_match_tshark(gbcs_corpus, tmp_path):
    from ppmid.gbcs import build
    files = corpus_files(gbcs_corpus)
    frames, meta = [], []
    for i, path in enumerate(files):
        raw = read_hex(path)
        size = (37, 100, 127, 128, 255, 256, 600, 1449)[i % 8]
        if len(raw) <= size:
            size = max(1, len(raw) // 2)
        blocks = list(build.split(raw, size))
        for j, blk in enumerate(blocks):
            frames.append(blk)
            meta.append((path, raw, j == len(blocks) - 1))
        if i % 10 == 0:  # an acknowledgement block (no data) now and then
            frames.append(build.build_ack(blocks[0]))
            meta.append((path, raw, False))
    pcap = str(tmp_path / "gbt.pcap")
    write_pcap(frames, pcap)
    packets = tshark_packets(pcap)
    assert len(packets) == len(frames)
    reassembled = 0
    for blk_raw, (path, raw, last), pkt in zip(frames, meta, packets):
        where = os.path.basename(path)
        blk = decode(blk_raw)
        compare_block(blk, pkt, where)
        # tshark flags a reassembled pre-command (no signature field) as malformed, as above
        assert pkt["_extras"]["malformed"] == (last and decode(raw).signature is None), where
        if last:
            # tshark reassembled the blocks and dissected the original message again
            assert int(_one(pkt, "gbcs_message.gbt.reassembled.length")[2]) == len(raw), where
            inner = decode(raw)
            counters = [int(v[2]) for v in pkt.get("gbcs_message.grouping_header.originator_counter", [])]
            assert counters == [inner.counter], where
            codes = [int(v[2], 16) for v in pkt.get("gbcs_message.grouping_header.message_code", [])]
            assert codes == [inner.message_code], where
            reassembled += 1
    assert reassembled == len(files)
