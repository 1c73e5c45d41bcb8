# GBCS decoder (ppmid.gbcs.message): corpus samples field by field, every error path.
# Runs under CPython and MicroPython. Samples: test_gbcs_samples.py (RTDS 4.5.0).
import binascii
from ppmid.gbcs import decode, GbcsError
from ppmid.gbcs import message as M
from ppmid.gbcs import message_fields as F
from test_gbcs_samples import SAMPLES, sample

ERROR_CODES = ("E_TRUNCATED", "E_OVERRUN", "E_TRAILING", "E_TAG", "E_LENGTH", "E_VALUE")


def _hex(mv):
    return binascii.hexlify(bytes(mv)).decode().upper()


def _code(buf):
    try:
        decode(buf)
    except GbcsError as exc:
        assert exc.code in ERROR_CODES, exc.code
        assert len(exc.message) > 10
        return exc.code
    raise AssertionError("decoded without error: " + _hex(buf))


def test_mac_form_command_gbz():
    m = decode(sample("3.3_CS11/CS11_3.3_ERROR_COMMAND"))
    assert m.form == F.FORM_MAC_SIGNED and m.form == "mac+signed"
    assert m.cra == 1 and m.cra_name == "command"
    assert m.counter == 1001
    assert _hex(m.originator) == "90B3D51F30010000"
    assert _hex(m.recipient) == "00DB1234567890A1"
    assert m.message_code == 0x0015
    assert m.date_time is None
    assert m.content_type == "gbz" and m.content_len == 12
    assert _hex(m.content) == "0109010107090004010001030"[:24]
    assert m.has_signature_field and len(m.signature) == 0
    assert _hex(m.mac) == "07381A41244A959E5F765E50"
    assert m.security_control == 0x11
    assert m.supplementary_remote_party_id is None and m.certificate is None
    assert not m.is_gbt and m.block_number is None and m.block_data is None


def test_dlms_request_and_other_information_18():
    m = decode(sample("11.2_ECS52/ECS52_11.2_ERROR_COMMAND"))
    assert (m.message_code, m.content_type, m.content_len, m.counter) == (0x59, "dlms-request", 19, 1002)
    m = decode(sample("11.2_CS08/CS08_11.2_ERROR_COMMAND"))
    assert m.message_code == 0x0129 and m.content_type == "asn1"
    assert _hex(m.recipient) == "00DB1234567890A5"
    assert _hex(m.supplementary_remote_party_id) == "90B3D51F30010000"
    assert m.supplementary_remote_party_counter == 1001
    assert m.supplementary_originator_counter is None and m.certificate is None
    assert len(m.other_information) == 18


def test_response_with_date_time_and_big_counter():
    m = decode(sample("2.2_CS01a/CS01a_2.2_ERROR_RESPONSE"))
    assert m.cra == 2 and m.cra_name == "response"
    assert m.counter == 0x0000000500000000
    assert _hex(m.date_time) == "07DF0101FF000000008000FF"
    assert m.content_type == "dlms-response" and m.message_code == 0x0007


def test_precommand_has_no_signature_field():
    m = decode(sample("2.5_GCS06/GCS06_2.5_ERROR_PRECOMMAND"))
    assert m.form == "signed" and m.cra == 1
    assert m.signature is None and not m.has_signature_field
    assert m.mac is None and m.security_control is None
    assert m.message_code == 0x0070 and m.content_type == "gbz" and m.content_len == 16


def test_signed_alert_with_signature():
    m = decode(sample("NA_GCA-ZigBee/GCA-ZigBee_NA_8F30_ALERT"))
    assert m.form == "signed" and m.cra_name == "alert" and m.counter == 3000
    assert m.message_code == 0x1000 and len(m.signature) == 64
    assert _hex(m.signature).startswith("56B9FF20") and m.mac is None


def test_long_length_forms():
    m = decode(sample("4.13_ECS26a/ECS26a_4.13_ERROR_COMMAND"))      # 82 0103, content 81 CE
    assert m.content_len == 0xCE and m.message_code == 0x003B
    assert _hex(m.mac) == "BBC14595631D958E73851E53"
    m = decode(sample("6.27_ECS29f/ECS29f_6.27_ERROR_COMMAND"))      # 81 84
    assert m.content_len == 0x50 and m.message_code == 0x00D4 and m.counter == 1201


def test_fields_are_views_into_the_buffer():
    buf = bytearray(sample("3.3_CS11/CS11_3.3_ERROR_COMMAND"))
    m = decode(buf)
    rec = m.recipient
    assert isinstance(rec, memoryview)
    buf[41] ^= 0xFF  # last byte of the recipient (General-Signing at 13, recipient 34..41)
    assert rec[7] == 0xA1 ^ 0xFF
    mv = memoryview(buf)
    assert decode(mv).buf is mv or len(decode(mv).buf) == len(buf)


def test_every_truncation_is_a_clean_error():
    for key in SAMPLES:
        raw = sample(key)
        whole = decode(raw)
        content_end = whole._l[4] + whole.content_len
        for n in range(len(raw)):
            if whole.form == "signed" and n == content_end:
                # a DF message cut right after its content reads as a pre-command (no
                # signature field): valid here, refused by the validator (E_PRECOMMAND)
                assert decode(raw[:n]).signature is None
                continue
            code = _code(raw[:n])
            if key.endswith("PRECOMMAND") or "ALERT" in key:
                continue
            assert code in ("E_TRUNCATED", "E_TAG", "E_OVERRUN", "E_LENGTH"), (key, n, code)


def test_truncated_mac_form_is_E_TRUNCATED():
    raw = sample("3.3_CS11/CS11_3.3_ERROR_COMMAND")
    assert _code(raw[:-1]) == "E_TRUNCATED"
    assert _code(raw[:20]) == "E_TRUNCATED"


def test_trailing_bytes():
    for key in SAMPLES:
        if key.endswith("PRECOMMAND"):
            continue  # a pre-command has no end marker: an extra byte reads as a signature length
        assert _code(sample(key) + b"\x00") == "E_TRAILING", key
    # a pre-command followed by one byte that is not a signature length
    assert _code(sample("2.5_GCS06/GCS06_2.5_ERROR_PRECOMMAND") + b"\x07") == "E_LENGTH"
    # an empty signature followed by garbage
    assert _code(sample("2.5_GCS06/GCS06_2.5_ERROR_PRECOMMAND") + b"\x00\x01") == "E_TRAILING"


def _patched(key, pos, value):
    raw = bytearray(sample(key))
    raw[pos] = value
    return bytes(raw)


def test_bad_tags():
    key = "3.3_CS11/CS11_3.3_ERROR_COMMAND"
    assert _code(_patched(key, 0, 0xDE)) == "E_TAG"
    assert _code(_patched(key, 13, 0xDE)) == "E_TAG"       # General-Signing tag inside DD00
    assert _code(_patched(key, 1, 0x05)) == "E_LENGTH"     # DD followed by neither 00 nor 09
    assert _code(_patched(key, 3, 0x01)) == "E_LENGTH"     # MAC header field not empty
    assert _code(b"") == "E_TRUNCATED" and _code(b"\xdf") == "E_TRUNCATED"


def test_bad_field_lengths_and_values():
    key = "3.3_CS11/CS11_3.3_ERROR_COMMAND"  # GS at 13: 09 at 14, CRA 15, 08 at 24 and 33, date-time 42, other-info 43, content 46, signature 59
    assert _code(_patched(key, 14, 0x08)) == "E_LENGTH"    # transaction-id length
    assert _code(_patched(key, 15, 0x00)) == "E_VALUE"     # CRA 0
    assert _code(_patched(key, 15, 0x04)) == "E_VALUE"     # CRA 4
    assert _code(_patched(key, 24, 0x07)) == "E_LENGTH"    # originator length
    assert _code(_patched(key, 33, 0x09)) == "E_LENGTH"    # recipient length
    assert _code(_patched(key, 42, 0x05)) == "E_LENGTH"    # date-time length
    assert _code(_patched(key, 43, 0x03)) == "E_LENGTH"    # other-information length 3
    assert _code(_patched(key, 43, 0x80)) == "E_LENGTH"    # indefinite length form
    assert _code(_patched(key, 43, 0x83)) == "E_LENGTH"    # 3-byte length form
    assert _code(_patched(key, 46, 0x00)) == "E_LENGTH"    # empty content
    assert _code(_patched(key, 59, 0x20)) == "E_LENGTH"    # signature length 0x20


def test_nested_length_overrun_in_mac_form():
    key = "3.3_CS11/CS11_3.3_ERROR_COMMAND"
    # content length 0x0C -> 0x10: the content now swallows the signature byte and runs into the MAC
    assert _code(_patched(key, 46, 0x10)) in ("E_OVERRUN", "E_LENGTH", "E_TRAILING")
    # content length 0x0C -> 0x30: runs past the General-Signing part (which ends at the MAC)
    assert _code(_patched(key, 46, 0x30)) == "E_OVERRUN"
    # MAC header length one too big / small
    assert _code(_patched(key, 7, 0x41)) == "E_TRUNCATED"
    assert _code(_patched(key, 7, 0x3F)) == "E_TRAILING"
    assert _code(b"\xdd\x00\x00\x00\x00\x00\x00\x05\x11\x00\x00\x00\x00") == "E_LENGTH"


def test_content_type_classification():
    from ppmid.gbcs import build
    for first, kind in ((b"\x01\x09\x00", "gbz"), (b"\xd9\x00", "dlms-request"), (b"\xda", "dlms-response"),
                        (b"\x0f\x00", "dlms-notification"), (b"\x30\x03\x02\x01\x00", "asn1"), (b"\x01", "asn1"),
                        (b"\x01\x08", "asn1")):
        raw = build.build_signed(1, 5, b"\x11" * 8, b"\x22" * 8, 0x0019, first)
        assert decode(raw).content_type == kind, (first, kind)


def test_host_only_fields_load_on_first_read_and_other_names_stay_attribute_errors():
    # the fields the relay never reads are ppmid.gbcs.message_fields' (loaded at the first
    # such read, so a board does not hold them); a name that is not one of them stays an
    # AttributeError, even one the module has for itself (_counter, FIELDS)
    import sys
    from ppmid.modules import unload
    unload("ppmid.gbcs.message_fields")
    m = decode(sample("3.3_CS11/CS11_3.3_ERROR_COMMAND"))
    assert m.cra == 1 and m.message_code and m.has_signature_field
    assert m.counter == 1001 and not m.is_gbt
    assert "ppmid.gbcs.message_fields" not in sys.modules
    assert len(m.mac) == 12  # the MAC-signed form's MAC: the gateway never reads it either
    assert "ppmid.gbcs.message_fields" in sys.modules
    assert m.content_type == "gbz" and m.cra_name == "command"
    # a GBT block's fields (the reassembly's) read the same way: None for another form
    assert m.block_number is None and m.block_data is None and m.last_block is None
    assert not hasattr(m, "send") and not hasattr(m, "_counter") and not hasattr(m, "FIELDS")
    try:
        m.no_such_field
    except AttributeError:
        pass
    else:
        raise AssertionError("a missing name must stay an AttributeError")


def test_error_sentences_are_loaded_for_a_refusal_and_dropped_after():
    # the decoder's sentences live in ppmid.gbcs.message_errors (not held by the decoder):
    # a refusal still carries the whole sentence with its values, and the module goes again
    import sys
    cases = ((b"\xdd", "E_TRUNCATED", "message is 1 bytes long: too short for any GBCS form"),
             (b"\xab\x00", "E_TAG", "first byte must be DD (General-Ciphering) or DF (General-Signing), not AB"),
             (b"\xdd\x00\x00\x00", "E_TRUNCATED", "message ends inside the MAC header"))
    for raw, code, text in cases:
        try:
            decode(raw)
        except GbcsError as exc:
            assert (exc.code, exc.message) == (code, text), (exc.code, exc.message)
        else:
            raise AssertionError("decoded " + _hex(raw))
        assert "ppmid.gbcs.message_errors" not in sys.modules


def test_every_error_key_names_its_sentence():
    # message.py's _S_X / _F_X = const(i) and message_errors' "# i _S_X" comments agree, and
    # every sentence formats with the arguments its kind takes
    import sys
    if sys.implementation.name != "cpython":
        class SkipTest(Exception):  # tests/mp_runner.py reports it as skipped
            pass
        raise SkipTest("reads the sources (CPython's re and file paths); the decoder runs on both above")
    from ppmid.gbcs import message_errors as ME
    from sentence_keys import check_keys
    check_keys((M,), ME, "_[SF]_", len(ME.FIELDS))
    for key in range(len(ME.SENTENCES)):
        s = ME.sentence(key, 1 if key < 3 else (None if "%" not in ME.SENTENCES[key]
                                                 else (1, 2) if ME.SENTENCES[key].count("%") == 2 else 7))
        assert s and "%" not in s, s
