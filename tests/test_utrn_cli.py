"""`ppmid utrn check` as field tools call it: `python -m host_tools.cli` in a subprocess,
exit status, one JSON line with --json, one sentence without."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import utrn as host_utrn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = "73943333457189043313"   # gbcs-parser test/utrn.test.ts: counter 1, 100 pounds
GOOD_PENNIES = "73947252416745201637"   # same file: counter 4, 1234 pennies


def ppmid(*args):
    p = subprocess.run([sys.executable, "-m", "host_tools.cli", "utrn", "check"] + list(args),
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stdout + p.stderr
    return p


def ppmid_json(*args):
    p = ppmid("--json", *args)
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    return p.returncode, json.loads(lines[0])


def test_good_json():
    rc, out = ppmid_json(GOOD)
    assert rc == 0
    assert out == {"ok": True, "value_pence": 10000, "value_class": "pounds", "value": 100,
                   "counter": 1, "mac": "D51CA60B"}
    assert list(out) == ["ok", "value_pence", "value_class", "value", "counter", "mac"]
    rc, out = ppmid_json(GOOD_PENNIES)
    assert rc == 0 and out["value_pence"] == 1234 and out["value_class"] == "pennies" and out["mac"] == "3855D663"


def test_good_sentence():
    p = ppmid(GOOD)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.count("\n") == 1 and "10000 pence" in p.stdout and "D51CA60B" in p.stdout


def test_groups_as_a_voucher_prints_them():
    assert ppmid_json("7394", "3333", "4571", "8904", "3313") == (0, ppmid_json(GOOD)[1])
    assert ppmid_json("7394-3333-4571-8904-3313")[0] == 0
    assert ppmid_json("7394 3333 4571 8904 3313")[0] == 0


@pytest.mark.parametrize("digits, code", [
    (GOOD[:19], "E_UTRN_FORMAT"),                       # bad length
    (GOOD + "1", "E_UTRN_FORMAT"),
    ("7394333345718904331A", "E_UTRN_FORMAT"),          # letters
    ("abcdefghijklmnopqrst", "E_UTRN_FORMAT"),
    (GOOD[:19] + "4", "E_UTRN_CHECK"),                  # bad check digit
    (GOOD[1] + GOOD[0] + GOOD[2:], "E_UTRN_CHECK"),       # two digits swapped
    ("74301825837596672005", "E_UTRN_VALUE"),           # value class 3 (public vector)
    (host_utrn.encode(1, 2, 100, b"\0\0\0\0"), "E_UTRN_VALUE"),   # value class 2
    (host_utrn.encode(1, "pennies", 0, b"\0\0\0\1"), "E_UTRN_VALUE"),   # zero value
    (host_utrn.with_check_digit("1" * 19), "E_UTRN_VALUE"),        # below the PPTD range
])
def test_refusals(digits, code):
    rc, out = ppmid_json(digits)
    assert rc == 1
    assert out["ok"] is False and out["code"] == code and out["reason"]
    assert set(out) == {"ok", "code", "reason"}
    p = ppmid(digits)
    assert p.returncode == 1 and p.stdout.count("\n") == 1
    assert p.stdout.startswith("UTRN refused: %s: " % code) and out["reason"] in p.stdout


def test_no_digits_is_a_usage_error():
    p = ppmid()
    assert p.returncode == 2 and "digits" in p.stderr
