"""NDEF cross-checked with ndeflib (CPython only): messages ndeflib builds parse in ours,
ours parse in ndeflib, and what ndeflib refuses we refuse too."""
import os
import random

import pytest

from host_tools import mpcompat

mpcompat.install()

from ppmid.nfc import ndef as ours  # noqa: E402
from ppmid.nfc.errors import NfcError  # noqa: E402

import ndef  # noqa: E402  (ndeflib: `ppmid pn532-emulator --tag` builds NDEF with it)
MIME = "application/vnd.ppmid.cmd"


@pytest.mark.parametrize("size", [0, 1, 255, 256, 1000, 5000])
def test_ndeflib_message_parses_in_ours(size):
    payload = os.urandom(size)
    recs = [ndef.TextRecord("hello"), ndef.Record(MIME, "cmd-1", payload), ndef.UriRecord("https://x.example")]
    msg = b"".join(ndef.message_encoder(recs))
    assert bytes(ours.find_mime(msg)) == payload
    parsed = [(t, bytes(ty), bytes(i)) for t, ty, i, p in ours.records(msg)]
    assert parsed == [(1, b"T", b""), (2, MIME.encode(), b"cmd-1"), (1, b"U", b"")]


@pytest.mark.parametrize("size", [0, 3, 255, 256, 4200])
def test_our_message_parses_in_ndeflib(size):
    payload = os.urandom(size)
    recs = list(ndef.message_decoder(ours.encode_mime(payload)))
    assert len(recs) == 1 and recs[0].type == MIME and recs[0].data == payload


def _ndeflib_verdict(msg, errors):
    try:
        list(ndef.message_decoder(bytes(msg), errors=errors))
        return True
    except ndef.DecodeError:
        return False
    except ValueError:  # ndeflib cannot name some corrupted record types: no verdict
        return None


def test_random_corruptions_agree_with_ndeflib():
    """Corrupt valid messages at random: what we accept ndeflib (strict) accepts; what it
    refuses we refuse; we are stricter only about an empty message and bytes after the
    message-end record (ndeflib stops reading there). We never raise anything but NfcError."""
    rng = random.Random(33)
    # MIME records only: ndeflib then judges structure, not well-known record content
    base = b"".join(ndef.message_encoder([ndef.Record("text/plain", "a", b"x"), ndef.Record(MIME, "", b"\x01" * 40)]))
    compared = refused = 0
    for _ in range(600):
        msg = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            msg[rng.randrange(len(msg))] = rng.randrange(256)
        if rng.random() < 0.3:
            msg = msg[:rng.randrange(len(msg))]
        theirs = _ndeflib_verdict(msg, "strict")
        why = None
        try:
            list(ours.records(bytes(msg)))
            mine = True
        except NfcError as e:
            assert e.code == "E_NDEF"
            mine = False
            why = e.message
        if theirs is None:
            continue
        compared += 1
        refused += not mine
        if theirs and not mine:
            # ndeflib yields nothing for an empty message, and ignores bytes after ME
            assert "after the NDEF message end" in why or why == "NDEF message is empty", (why, bytes(msg).hex())
        else:
            assert mine == theirs, bytes(msg).hex()
    assert compared > 300 and refused > 100
