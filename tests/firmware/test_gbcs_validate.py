# Relay checks (ppmid.gbcs.Validator) and the message-code table (ppmid.gbcs.codes).
# Runs under CPython and MicroPython.
import binascii
from ppmid import config
from ppmid.gbcs import Validator, GbcsError, build, codes, gbt
from ppmid.gbcs.validate_host import MemoryCounterStore, counter_key, device_type, allowed
from test_gbcs_samples import sample

SUPPLIER = binascii.unhexlify("90B3D51F30010000")
ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
PPMID = "00DB1234567890A4"


def _cfg(**over):
    cfg = {"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]}}
    for k in over:
        cfg[k] = over[k]
    return config.validate(cfg)


def _cmd(counter=1001, recipient=ESME, code=0x0019, content=b"\xd9\x20\x00", **kw):
    return build.build_command(counter, SUPPLIER, binascii.unhexlify(recipient), code, content, **kw)


def _code(v, buf):
    try:
        v.check(buf)
    except GbcsError as exc:
        assert len(exc.message) > 10
        return exc.code
    raise AssertionError("accepted")


def test_corpus_commands_pass():
    v = Validator(_cfg(), MemoryCounterStore())
    m = v.check(sample("3.3_CS11/CS11_3.3_ERROR_COMMAND"))        # CS11 to the GSME
    assert m.message_code == 0x0015 and m.counter == 1001
    m = v.check(sample("11.2_ECS52/ECS52_11.2_ERROR_COMMAND"))    # ECS52 to the ESME
    assert m.message_code == 0x0059
    assert v.check(sample("4.13_ECS26a/ECS26a_4.13_ERROR_COMMAND")).content_len == 0xCE


def test_not_a_command():
    v = Validator(_cfg(), MemoryCounterStore())
    assert _code(v, sample("2.2_CS01a/CS01a_2.2_ERROR_RESPONSE")) == "E_NOT_COMMAND"
    assert _code(v, sample("NA_GCA-ZigBee/GCA-ZigBee_NA_8F30_ALERT")) == "E_NOT_COMMAND"
    assert _code(v, sample("2.5_GCS06/GCS06_2.5_ERROR_PRECOMMAND")) == "E_PRECOMMAND"
    block = list(build.split(_cmd(), 30))[0]
    assert _code(v, block) == "E_FORM"


def _security_control_at(buf):
    # the byte after the MAC header's length (81 nn / 82 nnnn, or one byte)
    n = buf[7]
    return 8 if n < 0x80 else 7 + n - 0x7F


def test_mac_header_security_control_must_be_0x11():
    # review 87 F1: 0x11 (authenticated, suite 1) is what every command of the DCC's corpus
    # has; 0x30/0x31 would tell the device the rest is ciphertext, not what was checked here
    v = Validator(_cfg(), MemoryCounterStore())
    for sc in (0x00, 0x01, 0x10, 0x30, 0x31, 0xFF):
        raw = bytearray(_cmd(counter=3000 + sc))
        assert raw[_security_control_at(raw)] == 0x11
        raw[_security_control_at(raw)] = sc
        try:
            v.check(bytes(raw))
            raise AssertionError("accepted with security control 0x%02X" % sc)
        except GbcsError as exc:
            assert exc.code == "E_SECURITY_CONTROL"
            assert ("0x%02X" % sc) in exc.message and "0x11" in exc.message
    # a long MAC-header length (82 nnnn) moves the byte: still found
    big = bytearray(_cmd(counter=4000, content=b"\xd9" + bytes(300)))
    assert big[7] == 0x82
    v.check(bytes(big))
    big[_security_control_at(big)] = 0x31
    assert _code(v, bytes(big)) == "E_SECURITY_CONTROL"
    # nothing refused was committed: the same counters still pass with 0x11
    v.check(_cmd(counter=3000))
    assert v.check(sample("11.2_ECS52/ECS52_11.2_ERROR_COMMAND")).message_code == 0x0059


def test_general_signing_alone_needs_its_signature():
    # review 87 F2: without a MAC header only the 64-byte signature can authenticate the
    # command (the DCC's corpus: 4 of 4 such commands carry one); an empty signature is a
    # pre-command the DCC has not finished, as is one without the field
    v = Validator(_cfg(), MemoryCounterStore())
    content = b"\xd9\x20\x00"
    empty = build.build_signed(1, 1001, SUPPLIER, binascii.unhexlify(ESME), 0x0019, content, signature=b"")
    none = build.build_signed(1, 1001, SUPPLIER, binascii.unhexlify(ESME), 0x0019, content, signature=None)
    signed = build.build_signed(1, 1001, SUPPLIER, binascii.unhexlify(ESME), 0x0019, content, signature=bytes(64))
    for raw in (empty, none):
        try:
            v.check(raw)
            raise AssertionError("accepted")
        except GbcsError as exc:
            assert exc.code == "E_PRECOMMAND"
            assert ("empty signature" in exc.message) == (raw is empty)
    assert v.check(signed).message_code == 0x0019
    # inside a MAC header the MAC authenticates it: an empty signature there is the usual
    # non-critical command
    assert v.check(_cmd(counter=1001)).message_code == 0x0019
    # a real signed command of the corpus, its signature emptied: refused; as sent: taken
    real = sample("NA_CS02aSignature/CS02aSignature_NA_ERROR_COMMAND")
    assert real[0] == 0xDF and real[-65] == 64
    stripped = bytes(real[:-65]) + b"\x00"
    assert _code(v, stripped) == "E_PRECOMMAND"
    assert v.check(real).message_code == 0x0008


def test_malformed_is_refused_with_decoder_codes():
    v = Validator(_cfg(), MemoryCounterStore())
    raw = _cmd()
    assert _code(v, raw[:-1]) == "E_TRUNCATED"
    assert _code(v, raw + b"\x00") == "E_TRAILING"
    assert _code(v, b"\x30" + raw[1:]) == "E_TAG"


def test_unknown_target():
    v = Validator(_cfg(), MemoryCounterStore())
    assert _code(v, _cmd(recipient="00DB1234567890A9")) == "E_UNKNOWN_TARGET"
    assert _code(v, sample("11.2_CS08/CS08_11.2_ERROR_COMMAND")) == "E_UNKNOWN_TARGET"  # to ..A5
    # the message names the unknown device
    try:
        v.check(_cmd(recipient="00DB1234567890A9"))
    except GbcsError as exc:
        assert "00DB1234567890A9" in exc.message


def test_default_allow_list_is_the_code_table():
    v = Validator(_cfg(), MemoryCounterStore())
    v.check(_cmd(code=0x0019))                       # ECS01a to the ESME: allowed
    assert _code(v, _cmd(code=0x006B)) == "E_NOT_ALLOWED"                   # GCS01a to the ESME
    assert _code(v, _cmd(code=0x0019, recipient=GSME)) == "E_NOT_ALLOWED"   # ECS01a to the GSME
    assert _code(v, _cmd(code=0x00CC)) == "E_NOT_ALLOWED"                   # an alert code
    assert _code(v, _cmd(code=0x7777)) == "E_NOT_ALLOWED"                   # unknown code
    assert allowed(v, "ESME") == codes.commands_for("ESME")


def test_configured_allow_list():
    v = Validator(_cfg(han={"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}],
                            "allow": {"ESME": [0x0116, 0x0117]}}), MemoryCounterStore())
    v.check(_cmd(code=0x0116, counter=1))
    assert _code(v, _cmd(code=0x0019, counter=2)) == "E_NOT_ALLOWED"    # not in the ESME list
    v.check(_cmd(code=0x009B, recipient=GSME, counter=3))                # GSME keeps the default
    v2 = Validator(_cfg(han={"devices": [{"eui": ESME, "type": "ESME"}], "allow": {"ESME": []}}),
                   MemoryCounterStore())
    assert _code(v2, _cmd()) == "E_NOT_ALLOWED"


def test_a_code_is_admitted_exactly_when_its_list_holds_it():
    # memory (docs/memory.md, session 10): a device type's codes are an ascending array of
    # 16-bit codes (profiles.han_lists), looked up by bisection; each list against its own
    # set, at every code it holds, their neighbours and the ends of the range
    from array import array
    from ppmid.gbcs.validate import admits
    esme = sorted(codes.commands_for("ESME"))
    for held in ([], [0], [0xFFFF], [0, 0xFFFF], [5, 6, 7], [1, 3], esme, list(range(0, 0x10000, 257))):
        ascending = array("H", held)
        want = set(held)
        probes = set(range(0, 0x200)) | {0xFFFE, 0xFFFF}
        for c in held:
            probes |= {c, max(c - 1, 0), min(c + 1, 0xFFFF)}
        for code in probes:
            assert admits(ascending, code) == (code in want), (held[:4], code)
    # the validator holds them so, ascending, for the code table's defaults and han.allow
    v = Validator(_cfg(han={"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}],
                            "allow": {"ESME": [0x0117, 0x0116, 0x0019]}}), MemoryCounterStore())
    assert list(v._allow["ESME"]) == [0x0019, 0x0116, 0x0117]
    assert list(v._allow["GSME"]) == sorted(codes.commands_for("GSME"))
    assert allowed(v, "ESME") == {0x0019, 0x0116, 0x0117}


def test_replay_and_commit():
    store = MemoryCounterStore()
    v = Validator(_cfg(), store)
    m = v.check(_cmd(counter=10))
    assert store.get(counter_key(m.originator, m.recipient)) is None
    v.check(_cmd(counter=10))          # not committed yet: a rejected command burns nothing
    v.commit(m)
    assert store.get("90B3D51F30010000:00DB1234567890A0") == 10
    assert _code(v, _cmd(counter=10)) == "E_REPLAY"
    assert _code(v, _cmd(counter=9)) == "E_REPLAY"
    v.commit(v.check(_cmd(counter=11)))
    assert store.get(counter_key(m.originator, m.recipient)) == 11
    v.commit(m)                         # an older accepted command never lowers the counter
    assert store.get(counter_key(m.originator, m.recipient)) == 11
    # counters are per originator and recipient
    v.check(_cmd(counter=5, recipient=GSME, code=0x006B))
    big = (1 << 64) - 1
    v.commit(v.check(_cmd(counter=big - 1)))
    v.check(_cmd(counter=big))
    assert _code(v, _cmd(counter=big - 1)) == "E_REPLAY"


def test_counters_survive_a_new_validator():
    store = MemoryCounterStore()
    Validator(_cfg(), store).commit(Validator(_cfg(), store).check(_cmd(counter=50)))
    assert _code(Validator(_cfg(), store), _cmd(counter=50)) == "E_REPLAY"


def test_too_large():
    v = Validator(_cfg(limits={"max_gbcs": 100}), MemoryCounterStore())
    v.check(_cmd(content=b"\xd9" + bytes(20)))
    raw = _cmd(content=b"\xd9" + bytes(200))
    assert _code(v, raw) == "E_TOO_LARGE"
    assert _code(v, b"\x00" * 101) == "E_TOO_LARGE"   # checked before decoding


def test_code_table():
    assert codes.use_case(0x0019) == "ECS01a" and codes.device_types(0x0019) == ("ESME",)
    assert codes.is_command(0x0019) and not codes.is_command(0x00CC)
    assert codes.device_types(0x00CC) == ()
    assert codes.use_case(0x009B) == "PCS01" and codes.device_types(0x009B) == ("GSME",)
    for code in (0x0116, 0x0117, 0x0118):
        assert codes.device_types(code) == ("ESME",) and codes.use_case(code).startswith("PECS")
    assert "PPMID" in codes.device_types(0x0129)
    assert codes.name(0x0019) == "ECS01a Set Tariff and Price on ESME"
    assert codes.name(0x1234) == "unknown 0x1234" and codes.use_case(0x1234) is None
    assert codes.device_types(0x1234) == () and not codes.is_command(0x1234)
    esme = codes.commands_for("ESME")
    assert 0x0019 in esme and 0x006B not in esme and 0x00CC not in esme
    assert 0x006B in codes.commands_for("GSME") and 0x0001 in codes.commands_for("CHF")
    assert codes.commands_for("NOPE") == set()


def test_many_originators_keep_separate_counters():
    # more originator/recipient pairs than the validator's key cache holds
    store = MemoryCounterStore()
    v = Validator(_cfg(), store)
    origins = [bytes((0x90, 0xB3, 0xD5, 0x1F, 0x30, 0x01, 0x00, i)) for i in range(40)]
    for rnd in (1, 2):
        for i, orig in enumerate(origins):
            raw = build.build_command(100 * rnd + i, orig, binascii.unhexlify(ESME), 0x0019, b"\xd9\x00")
            v.commit(v.check(raw))
    for i, orig in enumerate(origins):
        assert store.get(counter_key(orig, binascii.unhexlify(ESME))) == 200 + i
        stale = build.build_command(200 + i, orig, binascii.unhexlify(ESME), 0x0019, b"\xd9\x00")
        assert _code(v, stale) == "E_REPLAY"
    assert device_type(v, binascii.unhexlify(GSME)) == "GSME" and device_type(v, b"\x00" * 8) is None


def _han(**han):
    h = {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]}
    for k in han:
        h[k] = han[k]
    return _cfg(han=h)


def test_prepay_profile_admits_top_ups_and_refuses_tariffs():
    v = Validator(_han(profile="prepay"), MemoryCounterStore())
    assert v.profile[0] == "prepay"
    v.check(_cmd(code=0x0007, counter=1))                        # CS01a top-up to the ESME
    v.check(_cmd(code=0x0097, recipient=GSME, counter=1))        # CS01b top-up to the GSME
    v.check(_cmd(code=0x0020, counter=1))                        # ECS09 emergency credit
    v.check(_cmd(code=0x004F, counter=1))                        # ECS42 close the load switch
    try:
        v.check(_cmd(code=0x0019, counter=1))                    # ECS01a set tariff: not prepay
        raise AssertionError("accepted")
    except GbcsError as exc:
        assert exc.code == "E_NOT_ALLOWED" and "command profile prepay" in exc.message
    assert _code(v, _cmd(code=0x0050, counter=1)) == "E_NOT_ALLOWED"        # ECS43 open the load switch
    assert _code(v, _cmd(code=0x0007, recipient=GSME, counter=1)) == "E_NOT_ALLOWED"  # ESME code, GSME
    # the count the info payload shows: the profile's codes the HAN's device types admit
    from ppmid.gbcs import profiles
    on_this_han = set()
    for c in profiles.codes("prepay"):
        if "ESME" in codes.device_types(c) or "GSME" in codes.device_types(c):
            on_this_han.add(c)
    assert v.profile[1] == len(on_this_han) and 0 < v.profile[1] < len(profiles.codes("prepay")) + 1


def test_profile_narrows_a_configured_allow_list_and_all_is_the_default():
    v = Validator(_han(profile="prepay", allow={"ESME": [0x0007, 0x0019]}), MemoryCounterStore())
    v.check(_cmd(code=0x0007, counter=1))
    assert _code(v, _cmd(code=0x0019, counter=2)) == "E_NOT_ALLOWED"   # allowed for ESME, not prepay
    v_all = Validator(_cfg(), MemoryCounterStore())
    assert v_all.profile[0] == "all"
    assert v_all.profile[1] == len(codes.commands_for("ESME") | codes.commands_for("GSME"))
    v_all.check(_cmd(code=0x0019, counter=1))
    hht = Validator(_han(profile="hht"), MemoryCounterStore())
    hht.check(_cmd(code=0x0059, counter=1))                            # ECS52 firmware version read
    assert _code(hht, _cmd(code=0x0007, counter=1)) == "E_NOT_ALLOWED"  # no top-ups from an HHT


def test_unknown_profile_is_a_config_error():
    for bad in ("prepaid", "", 3, None, ["prepay"]):
        try:
            _han(profile=bad)
            raise AssertionError("accepted %r" % (bad,))
        except config.ConfigError as exc:
            assert "han.profile must be one of all, hht, prepay" in str(exc)


def test_profile_counts_are_the_ones_docs_config_md_states():
    # docs/config.md "Command profiles" states these counts
    from ppmid.gbcs import profiles
    n_all = 0
    for line in codes.TABLE.split("\n"):
        if len(line) > 7 and line[5] == "C":
            n_all += 1
    assert (n_all, len(profiles.codes("prepay")), len(profiles.codes("hht"))) == (211, 25, 22)
    assert profiles.codes("all") is None


def test_refusal_sentences_are_loaded_for_a_refusal_and_dropped_after():
    # the checks' sentences live in ppmid.gbcs.validate_errors (not held by the validator):
    # a refusal still carries the whole sentence with its values, and the module goes again
    import sys
    v = Validator(_cfg(), MemoryCounterStore())
    v.commit(v.check(_cmd(counter=1001)))
    cases = ((_cmd(counter=1001), "E_REPLAY",
              "originator counter 1001 is not above the last accepted (1001) for this originator and recipient"),
             (_cmd(recipient=PPMID), "E_UNKNOWN_TARGET",
              "recipient 00DB1234567890A4 is not on this gateway's HAN device list"))
    for raw, code, text in cases:
        try:
            v.check(raw)
        except GbcsError as exc:
            assert (exc.code, exc.message) == (code, text), (exc.code, exc.message)
        else:
            raise AssertionError("accepted")
        assert "ppmid.gbcs.validate_errors" not in sys.modules


def test_every_refusal_key_names_its_sentence():
    # validate.py's _S_X = const(i) and validate_errors' "# i _S_X" comments agree
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the refusals run on both above")
    from ppmid.gbcs import validate, validate_errors as VE
    from sentence_keys import check_keys
    check_keys((validate,), VE)
