"""The firmware's HMAC against CPython's hmac module (the reference), on random inputs."""
import hashlib
import hmac

from hypothesis import given, strategies as st

from ppmid import envelope


@given(key=st.binary(max_size=200), data=st.binary(max_size=500))
def test_hmac_matches_cpython(key, data):
    assert envelope.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()


def test_mac_message_layout():
    key = b"K" * 32
    expected = hmac.new(key, b"ppmid-cmd-v1\x00abc\x00170\x00\x01\x02", hashlib.sha256).digest()
    assert envelope.compute_mac(key, "abc", 170, b"\x01\x02") == expected
    expected = hmac.new(key, b"ppmid-cmd-v1\x00abc\x00\x00\x01\x02", hashlib.sha256).digest()
    assert envelope.compute_mac(key, "abc", None, b"\x01\x02") == expected
