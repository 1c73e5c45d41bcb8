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
