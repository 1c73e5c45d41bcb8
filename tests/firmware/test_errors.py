# Runs under CPython (pytest) and MicroPython (tests/mp_runner.py).
from ppmid.errors import PpmidError


def test_error_carries_code_and_sentence():
    err = PpmidError("E_TEST", "a test failure")
    assert err.code == "E_TEST"
    assert err.message == "a test failure"
    assert str(err) == "E_TEST: a test failure"
    assert err.as_dict() == {"code": "E_TEST", "message": "a test failure"}


def test_error_is_an_exception():
    try:
        raise PpmidError("E_X", "x")
    except Exception as exc:
        assert exc.code == "E_X"
    else:
        raise AssertionError("not raised")


async def test_async_tests_run():
    import asyncio
    await asyncio.sleep(0)
    assert PpmidError("E_A", "a").code == "E_A"


def test_cross_layer_codes_are_one_registry():
    # every code is its own name (the strings are the wire contract), and the layers that
    # raise or match a code use the registry's object, not a copy of the string
    from ppmid import errors, envelope
    from ppmid.zigbee import han, tunnel
    from ppmid.relay import core, journal, refusals
    from ppmid.gbcs import validate
    names = ("E_HAN_DOWN", "E_NO_TUNNEL", "E_HAN_DEST", "E_HAN_TOO_BIG", "E_DELIVERY",
             "E_DELIVERY_UNKNOWN", "E_ENVELOPE", "E_ID", "E_AUTH", "E_EXPIRED", "E_TOO_LARGE",
             "E_CLOCK", "E_BUSY")
    for name in names:
        assert getattr(errors, name) == name
    for mod, which in ((han, names[:6]), (envelope, names[6:11]), (core, ("E_BUSY", "E_EXPIRED", "E_TOO_LARGE", "E_CLOCK")),
                       (journal, ("E_BUSY",)), (validate, ("E_TOO_LARGE",)),
                       (tunnel, ("E_NO_TUNNEL",))):
        for name in which:
            assert getattr(mod, name) is getattr(errors, name), (mod, name)
    assert refusals.RETRYABLE == (errors.E_HAN_DOWN, errors.E_NO_TUNNEL)
    assert refusals.PERMANENT == (errors.E_HAN_DEST, errors.E_HAN_TOO_BIG)
