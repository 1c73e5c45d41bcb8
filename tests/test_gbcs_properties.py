"""Property tests of the GBCS codec over the RTDS corpus (CPython, hypothesis):
truncations and single-byte mutations give a valid decode or a clean GbcsError, never another
exception; a decode rebuilds to the same bytes; GBT split + reassemble is the identity for any
block size, block order and duplicates."""
import binascii
import glob
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ppmid import config
from ppmid.gbcs import GbcsError, Validator, build, decode, gbt, reassembly
from ppmid.gbcs.validate_host import MemoryCounterStore
from ppmid.gbcs.message_fields import FORM_GBT, FORM_MAC_SIGNED

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "shared", "vectors", "gbcs", "rtds-4.5.0")
FILES = sorted(glob.glob(os.path.join(CORPUS, "*", "*.HEX")))
MESSAGES = []
for _f in FILES:
    with open(_f) as _fh:
        MESSAGES.append(binascii.unhexlify(_fh.read().strip()))

needs_corpus = pytest.mark.skipif(not MESSAGES, reason="../shared/vectors/gbcs/rtds-4.5.0 is absent")
CODES = {"E_TRUNCATED", "E_OVERRUN", "E_TRAILING", "E_TAG", "E_LENGTH", "E_VALUE"}
CFG = config.validate({"gateway": "00DB1234567890A4", "han": {"devices": [
    {"eui": "00DB1234567890A0", "type": "ESME"}, {"eui": "00DB1234567890A1", "type": "GSME"},
    {"eui": "00DB1234567890A2", "type": "CHF"}]}})


def decode_or_error(buf):
    """Decode and check every field stays inside the buffer; or return the error code."""
    try:
        m = decode(buf)
    except GbcsError as exc:
        assert exc.code in CODES, exc.code
        assert isinstance(exc.message, str) and exc.message
        return exc.code
    n = len(buf)
    assert m.cra in (1, 2, 3) and 0 <= m.counter < 1 << 64
    assert len(m.originator) == 8 and len(m.recipient) == 8
    assert m.date_time is None or len(m.date_time) == 12
    assert 0 <= m.message_code <= 0xFFFF
    if m.form == FORM_GBT:
        assert 0 < len(m.block_data) + m._l[4] == n or len(m.block_data) == 0
        assert m._l[4] + len(m.block_data) == n
    else:
        assert 0 < m.content_len == len(m.content) and m._l[4] + m.content_len <= n
        assert m.signature is None or len(m.signature) in (0, 64)
        assert (m.mac is not None) == (m.form == FORM_MAC_SIGNED)
        assert m.content_type in ("gbz", "dlms-request", "dlms-response", "dlms-notification", "asn1")
    return m


def rebuild(m):
    """Build the same message again from its decoded fields."""
    signed = build.build_signed(m.cra, m.counter, m.originator, m.recipient, m.message_code, m.content,
                                date_time=m.date_time, signature=m.signature,
                                other_info=bytes(m.other_information)[2:])
    if m.form == FORM_MAC_SIGNED:
        return build.build_mac(signed, m.mac, m.security_control)
    return signed


@needs_corpus
def test_corpus_rebuilds_byte_for_byte():
    for path, raw in zip(FILES, MESSAGES):
        assert rebuild(decode(raw)) == raw, os.path.basename(path)


def _truncations_decode_or_are_refused(lengths):
    valid = 0
    for i, raw in enumerate(MESSAGES):
        for n in lengths(i, len(raw)):
            r = decode_or_error(raw[:n])
            if not isinstance(r, str):
                valid += 1
                assert r.form == "signed" and r.signature is None  # DF cut after its content
    assert valid <= len(MESSAGES)


def _length_form(n):
    # a BER length: short (one byte), 81 nn or 82 nnnn: the decoder reads each differently
    return 1 if n < 0x80 else 2 if n < 0x100 else 3


def _kind(raw):
    """What the decoder branches on in a whole message: its form, content type, signature
    (none, empty or 64 bytes), the length forms of its content and of the whole, and
    whether its other-information carries more than the CRA flag and originator counter."""
    m = decode(raw)
    if m.form == FORM_GBT:
        return (m.form, _length_form(len(m.block_data)), _length_form(len(raw)))
    return (m.form, m.content_type, None if m.signature is None else len(m.signature),
            _length_form(m.content_len), _length_form(len(raw)), len(m.other_information) > 2)


def _one_of_each_kind():
    # the first message of each kind in the corpus' (sorted) order: ~66 of the 1,275
    first = {}
    for i, raw in enumerate(MESSAGES):
        first.setdefault(_kind(raw), i)
    return set(first.values())


def _one_message_of_each_kind():
    # every cut of one message of each kind (~21,000 decodes): measured with a line trace
    # of ppmid/gbcs/message.py, it takes every path (the lines run and the refusal) that
    # every cut of every message takes. The whole set (~310,000 decodes) is the soak's, below
    sample = _one_of_each_kind()
    return lambda i, size: range(size) if i in sample else ()


@needs_corpus
def test_truncations_of_every_kind_of_corpus_message_decode_or_are_refused():
    _truncations_decode_or_are_refused(_one_message_of_each_kind())


@needs_corpus
@pytest.mark.slow
def test_every_truncation_of_every_corpus_message():
    # `make soak`: every length of every message (~2-3 minutes on this machine)
    _truncations_decode_or_are_refused(lambda i, size: range(size))


@needs_corpus
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_single_byte_mutation_is_decoded_or_refused(data):
    raw = bytearray(data.draw(st.sampled_from(MESSAGES)))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    decode_or_error(bytes(raw))
    v = Validator(CFG, MemoryCounterStore())
    try:
        v.commit(v.check(bytes(raw)))
    except GbcsError as exc:
        assert exc.code.startswith("E_")


@needs_corpus
def test_header_byte_mutations_exhaustively():
    # every position of the routing header region of a few messages, with length-ish values
    for raw in MESSAGES[::97]:
        for pos in range(min(len(raw), 64)):
            for value in (0x00, 0x01, 0x08, 0x09, 0x0C, 0x7F, 0x80, 0x81, 0x82, 0x83, 0xDD, 0xDF, 0xE0, 0xFF,
                          raw[pos] ^ 1):
                mutated = bytearray(raw)
                mutated[pos] = value
                decode_or_error(bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_random_bytes_never_crash(blob):
    decode_or_error(blob)
    decode_or_error(b"\xdf\x09" + blob)
    decode_or_error(b"\xdd\x00\x00\x00\x00\x00\x00" + blob)
    decode_or_error(b"\xdd\x09" + blob)


@needs_corpus
@settings(max_examples=400, deadline=None)
@given(st.data())
def test_split_then_reassemble_is_identity(data):
    raw = data.draw(st.sampled_from(MESSAGES))
    size = data.draw(st.integers(1, len(raw) + 10))
    blocks = list(build.split(raw, size))
    assert len(blocks) == (len(raw) + size - 1) // size
    order = data.draw(st.permutations(range(len(blocks))))
    dups = data.draw(st.lists(st.integers(0, len(blocks) - 1), max_size=5))
    feed = [blocks[i] for i in order] + [blocks[i] for i in dups]
    r = reassembly.Reassembler(max_bytes=len(raw) + gbt.BLOCK_OVERHEAD * len(blocks) + reassembly.PENDING_OVERHEAD,
                               timeout_ms=10)
    out = []
    for blk in feed:
        got = r.feed(blk, 0)
        if got is not None:
            out.append(got)
    # duplicates arriving after completion are ignored: never a second output
    assert out == [raw]
    for blk in blocks:
        m = decode(blk)
        assert m.form == FORM_GBT and len(m.block_data) <= size


@needs_corpus
@settings(max_examples=100, deadline=None)
@given(st.data())
def test_split_for_transfer_fits(data):
    raw = data.draw(st.sampled_from(MESSAGES))
    transfer = data.draw(st.integers(60, 2000))
    blocks = list(build.split_for_transfer(raw, transfer))
    assert all(len(b) <= transfer for b in blocks)
    if len(raw) <= transfer:
        assert blocks == [raw]
    else:
        r = reassembly.Reassembler(1 << 20, 1000)
        assert [x for x in (r.feed(b, 0) for b in blocks) if x is not None] == [raw]


@needs_corpus
def test_every_corpus_command_has_a_form_the_validator_takes():
    # review 87 F1/F2: the validator's form checks (security control 0x11 in a MAC header, a
    # 64-byte signature on a General-Signing command without one) refuse no real command
    # and every pre-command; what else it says (unknown target, not allowed) comes later
    cfg = config.validate({"gateway": "00DB1234567890A4", "limits": {"max_gbcs": 8192},
                           "han": {"devices": CFG["han"]["devices"]}})
    v = Validator(cfg, MemoryCounterStore())
    seen = {"command": 0, "pre-command": 0}
    for path, raw in zip(FILES, MESSAGES):
        if decode(raw).cra != 1:
            continue
        try:
            v.check(raw)
            code = None
        except GbcsError as exc:
            code = exc.code
        if path.endswith("PRECOMMAND_GBCS.HEX"):
            seen["pre-command"] += 1
            assert code == "E_PRECOMMAND", path
        else:
            seen["command"] += 1
            assert code not in ("E_PRECOMMAND", "E_SECURITY_CONTROL", "E_TOO_LARGE"), (path, code)
    assert seen == {"command": 501, "pre-command": 178}
