"""Fuzzing every firmware parser that takes outside bytes, under CPython with hypothesis
(issue #22, docs/security.md). Property: a parser returns, or raises its module's
documented error (a PpmidError with an E_ code; SntpError for SNTP replies); never another
exception, never a hang (each input gets PER_INPUT_S seconds, on a SIGALRM timer).

Inputs are random bytes, or a valid input of that parser (a signed envelope, a corpus-like
GBCS command, a PUBLISH packet, ...) mutated by a few byte flips, inserts, deletes and a
truncation, so that the fuzzing gets past the first length and tag checks.

Brief in `make test` (EXAMPLES per parser, default 150); `make soak` sets
PPMID_FUZZ_EXAMPLES and PPMID_FUZZ_RESULTS (bench/fuzz_results.json: the inputs each parser
took, stated in README.md). Inputs that once crashed a parser are kept below as explicit
regression cases (REGRESSIONS).
"""
import binascii
import json
import os
import signal
import struct

import pytest

from conftest import setup_reference  # noqa: E402

hypothesis = setup_reference("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from host_tools import mpcompat  # noqa: E402

mpcompat.install()

from ppmid import envelope, config, sntp, utrn  # noqa: E402
from ppmid.errors import PpmidError  # noqa: E402
from ppmid.gbcs import Validator, build, decode, gbt, reassembly  # noqa: E402
from ppmid.gbcs.validate_host import MemoryCounterStore  # noqa: E402
from ppmid.mqtt import packets  # noqa: E402
from ppmid.mqtt import handshake  # noqa: E402
from ppmid.mqtt import packets_host  # noqa: E402
from ppmid.nfc import ndef, frames  # noqa: E402
from ppmid.zigbee import ash, ezsp, tunnel  # noqa: E402
from ppmid.zigbee import chclock, timecluster  # noqa: E402
from ppmid.zigbee.han_start import legacy_version_frame  # noqa: E402

EXAMPLES = int(os.environ.get("PPMID_FUZZ_EXAMPLES", "150"))
RESULTS = os.environ.get("PPMID_FUZZ_RESULTS")
PER_INPUT_S = 2
COUNTS = {}

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=RESULTS is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                database=None)

KEY = bytes(range(32))
SUPPLIER = binascii.unhexlify("90B3D51F30010000")
ESME = "00DB1234567890A0"
PPMID = "00DB1234567890A4"
GBCS = build.build_command(1001, SUPPLIER, binascii.unhexlify(ESME), 0x0019, b"\xd9\x20\x00" + bytes(40))


@pytest.fixture(scope="module", autouse=True)
def _results():
    yield
    if RESULTS:
        old = {}
        try:
            with open(RESULTS) as f:
                old = json.load(f)
        except (OSError, ValueError):
            pass
        for k, v in COUNTS.items():
            old[k] = old.get(k, 0) + v
        with open(RESULTS, "w") as f:
            json.dump(old, f, indent=1, sort_keys=True)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer within %ds" % PER_INPUT_S)


def took(*names):
    # one input for each named parser (the results file counts inputs, not calls)
    for name in names:
        COUNTS[name] = COUNTS.get(name, 0) + 1


def run(name, fn, *args, errors=(PpmidError,)):
    """fn(*args) must return or raise one of `errors` (with an E_ code when a PpmidError)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(PER_INPUT_S)
    try:
        return fn(*args)
    except errors as exc:
        if isinstance(exc, PpmidError):
            assert exc.code.startswith("E_") and exc.message, exc
        return exc
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@st.composite
def mutated(draw, seed):
    b = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from("fidt"))
        i = draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "f" and b:
            b[i] = draw(st.integers(0, 255))
        elif op == "i":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "d" and b:
            del b[i:i + draw(st.integers(1, 8))]
        elif op == "t":
            del b[i:]
    return bytes(b)


def inputs(*seeds, max_size=600):
    return st.one_of(st.binary(max_size=max_size), *[mutated(s) for s in seeds])


# ---- envelope (MQTT JSON, NFC binary) -------------------------------------------------------
ENV = envelope.sign(KEY, "c-42", GBCS, 1790000000)
ENV_JSON = json.dumps({"id": "c-42", "gbcs": binascii.b2a_base64(GBCS).decode().strip(),
                       "expires": 1790000000, "mac": bytes(ENV.mac).hex()}).encode()
ENV_BIN = bytes(envelope.to_binary(ENV))
KID_ENV = envelope.sign(KEY, "c-43", GBCS, None, "supplier-a")   # an envelope naming its key
KID_JSON = json.dumps({"id": "c-43", "gbcs": binascii.b2a_base64(GBCS).decode().strip(), "kid": "supplier-a",
                       "mac": bytes(KID_ENV.mac).hex()}).encode()
KID_BIN = bytes(envelope.to_binary(KID_ENV))


@FUZZ
@given(inputs(ENV_JSON, ENV_JSON.replace(b'"expires": 1790000000, ', b""), KID_JSON))
def test_envelope_json(buf):
    took("envelope json")
    e = run("envelope json", envelope.from_json, buf, 4096)
    if isinstance(e, envelope.Envelope):
        run("envelope json", e.verify, KEY, 1700000000)
    run("envelope json in place", envelope.lift_gbcs_in_place, bytearray(buf), 4096)


@FUZZ
@given(st.dictionaries(st.sampled_from(["id", "gbcs", "mac", "expires", "kid", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80),
                                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))))
def test_envelope_json_objects(obj):
    took("envelope json")
    run("envelope json", envelope.from_json_obj, obj, 4096)


@FUZZ
@given(inputs(ENV_BIN, KID_BIN))
def test_envelope_binary(buf):
    took("envelope binary")
    e = run("envelope binary", envelope.from_binary, buf, 4096)
    if isinstance(e, envelope.Envelope):
        run("envelope binary", e.verify, KEY, 1700000000)


# ---- signed users updates (ppmid.relay.users_update: the parts that read outside bytes) ------
def _users_offer():
    import sys
    from tests.conftest import FIRMWARE_TESTS
    sys.path.insert(0, FIRMWARE_TESTS)
    import users_vectors
    return users_vectors.offer("rotate"), users_vectors.CONFIG_KEY


USERS_OFFER, USERS_CONFIG_KEY = _users_offer()


@FUZZ
@given(inputs(USERS_OFFER, max_size=1200))
def test_users_update_offer(buf):
    from ppmid.relay import users_update as UU
    took("users update offer")
    got = run("users update offer", UU.parse_offer, buf)
    if isinstance(got, tuple):
        doc = run("users update offer", UU.parse, got[1], PPMID, 0)
        if isinstance(doc, dict):
            for name in doc["new_keys"]:
                run("users update offer", UU.unwrap, USERS_CONFIG_KEY, name, doc["new_keys"][name])


# ---- GBCS: decoder, relay validation, GBT reassembly ----------------------------------------
VALIDATOR = Validator(config.validate({"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"}]}}),
                      MemoryCounterStore())
BLOCKS = list(build.split(GBCS, 20))


@FUZZ
@given(inputs(GBCS, *BLOCKS[:2]))
def test_gbcs_decode_and_validate(buf):
    took("gbcs message", "gbcs validator")
    m = run("gbcs decode", decode, buf)
    if not isinstance(m, Exception):
        for attr in ("message_code", "counter", "originator", "recipient", "cra", "form"):
            run("gbcs decode", getattr, m, attr)
    run("gbcs validate", VALIDATOR.check, buf)


@FUZZ
@given(st.lists(inputs(*BLOCKS), min_size=1, max_size=4))
def test_gbt_reassembly(blocks):
    took("gbt reassembly")
    r = reassembly.Reassembler(max_bytes=4096)
    for i, b in enumerate(blocks):
        run("gbt reassembly", r.feed, b, i * 10)


# ---- MQTT packets from the broker -----------------------------------------------------------
PUB = packets_host.publish("ppmid/v1/%s/cmd" % PPMID, ENV_JSON, 1, pid=7)


def _split_packet(buf):
    n, pos = packets_host.decode_length(buf, 1)
    return buf[0], buf[pos:]


@FUZZ
@given(inputs(bytes(PUB), b"\x30\x05\x00\x01t\x01\x02", b"\x20\x02\x00\x00", b"\x90\x03\x00\x01\x01"),
       st.integers(0, 255))
def test_mqtt_packets(buf, first):
    took("mqtt packets")
    run("mqtt packets", packets_host.decode_length, buf, 1 if buf else 0)
    body = memoryview(buf[2:])
    run("mqtt packets", packets.parse_publish, buf[0] if buf else first, body)
    run("mqtt packets", packets.parse_publish, first, memoryview(buf))
    run("mqtt packets", handshake.parse_connack, buf)
    run("mqtt packets", handshake.parse_suback, buf)
    run("mqtt packets", packets.parse_packet_id, buf)


# ---- NFC: NDEF records, Type 2 tag area, PN532 frames ----------------------------------------
NDEF = bytes(ndef.encode_mime(ENV_BIN))
TLV = b"\x01\x03\xa0\x0c\x34\x03" + bytes((len(NDEF),)) + NDEF + b"\xfe"


@FUZZ
@given(inputs(NDEF, TLV))
def test_ndef(buf):
    took("ndef")
    run("ndef", ndef.records, buf)
    run("ndef", ndef.find_mime, buf)
    run("ndef", ndef.type2_ndef_tlv, buf)


@FUZZ
@given(inputs(bytes(frames.command(0x4A, b"\x01\x00")), b"\x00\x00\xff\x00\xff\x00",
              b"\x00\x00\xff\xff\xff\x01\x00\xff\xd5" + bytes(255) + b"\x2b\x00"))
def test_pn532_frames(buf):
    took("pn532 frames")
    n = len(buf)
    pos = 0
    for _ in range(n + 2):  # each scan drops `end` bytes or needs more: bounded
        kind, end, off, length = run("pn532 frames", frames.scan, buf[pos:], n - pos)
        assert 0 <= end <= n - pos
        if kind in (frames.KIND_FRAME, frames.KIND_BAD_DCS, frames.KIND_ERROR):
            assert off + length <= n - pos
        if end == 0:
            break
        pos += end


# ---- Zigbee module: ASH frames, EZSP frames, ZCL tunnel frames -------------------------------
ENC = ash.Encoder()
ASH = bytes(ENC.data(1, False, 2, ezsp.command_frame(3, 0x0045, bytes(20)))) + bytes(ENC.ack(3)) + bytes(ENC.encode(ash.RSTACK, b"\x02\x02"))


@FUZZ
@given(inputs(ASH), st.integers(1, 64))
def test_ash_decoder(buf, chunk):
    took("ash decoder")
    d = ash.Decoder()
    for i in range(0, len(buf), chunk):
        for f in run("ash decoder", d.feed, buf[i:i + chunk]):
            assert len(f) in (2, 4)


EZSP_FRAMES = [ezsp.command_frame(1, 0x0045, bytes(30)), ezsp.command_frame(2, 0x003F, bytes(12)),
               ezsp.command_frame(3, 0x0019, b"\x90"), legacy_version_frame(0, 13)]


@FUZZ
@given(inputs(*EZSP_FRAMES), st.sampled_from([8, 13, 14, 18]))
def test_ezsp_frames(buf, version):
    took("ezsp frames", "zcl tunnel frames")
    run("ezsp frames", ezsp.parse_frame, buf)
    run("ezsp frames", ezsp.parse_frame, buf, True)
    for fn in (ezsp.parse_incoming, ezsp.parse_message_sent, ezsp.parse_stack_status,
               ezsp.parse_send_unicast_response, ezsp.parse_status):
        run("ezsp frames", fn, version, buf)
    run("ezsp frames", ezsp.parse_aps, buf)
    run("zcl tunnel", tunnel.parse_zcl, buf)


# ---- SNTP replies, UTRN codes ----------------------------------------------------------------
NONCE = bytes(range(8))
SNTP = bytes((0x24, 2, 0, 0)) + bytes(20) + NONCE + bytes(8) + struct.pack(">II", 3950000000, 1 << 31)


@FUZZ
@given(inputs(SNTP, max_size=80))
def test_sntp_reply(buf):
    took("sntp reply")
    run("sntp reply", sntp.parse, buf, NONCE, errors=(sntp.SntpError,))


# ---- the CH's time (ZCL Time cluster answers) ------------------------------------------------
TIME_ANSWERS = [timecluster.time_response(7, 850000000, 3), timecluster.time_response(7, 0, 0, status=0x86)]


@FUZZ
@given(inputs(*TIME_ANSWERS, max_size=40))
def test_ch_time_answer(buf):
    took("ch time answer")
    run("ch time answer", timecluster.parse_time, buf, 7)
    m = {"sender": 0, "aps": {"profile": 0x0109, "cluster": 0x000A}, "message": buf}
    out = run("ch time answer", chclock.accept, m, 7)
    # what is taken is a time a set clock can read: never before the floor
    assert isinstance(out, PpmidError) or out >= 1704067200


@FUZZ
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789 -", max_size=30),
                 mutated(b"73943333457189043313").map(lambda b: b.decode("latin-1"))))
def test_utrn(text):
    took("utrn")
    run("utrn", utrn.decode, text)


# ---- inputs that once crashed a parser (kept as regression cases) ----------------------------
# (parser, function, arguments): each raised IndexError or struct.error before the fix
REGRESSIONS = [
    ("ezsp incomingMessageHandler, empty", ezsp.parse_incoming, (8, b"")),
    ("ezsp incomingMessageHandler, 1 byte", ezsp.parse_incoming, (8, b"\x00")),
    ("ezsp incomingMessageHandler v14, short", ezsp.parse_incoming, (14, bytes(20))),
    ("ezsp messageSentHandler, short", ezsp.parse_message_sent, (8, bytes(5))),
    ("ezsp messageSentHandler v14, short", ezsp.parse_message_sent, (14, bytes(10))),
    ("ezsp status, empty", ezsp.parse_status, (8, b"")),
    ("ezsp status v14, short", ezsp.parse_status, (14, b"\x00")),
    ("ezsp stackStatusHandler, empty", ezsp.parse_stack_status, (8, b"")),
    ("ezsp sendUnicast response, 1 byte", ezsp.parse_send_unicast_response, (8, b"\x00")),
    ("ezsp sendUnicast response v14, short", ezsp.parse_send_unicast_response, (14, b"\x00\x00")),
    ("ezsp APS frame, short", ezsp.parse_aps, (b"\x00" * 5,)),
]


@pytest.mark.parametrize("name,fn,args", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_regressions(name, fn, args):
    out = run(name, fn, *args)
    assert isinstance(out, ezsp.EzspError) and out.code == "E_EZSP"
