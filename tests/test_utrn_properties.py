"""Property tests of the UTRN check digit and codec (CPython, hypothesis).

Verhoeff's guarantee, for GBCS's variant: every single-digit substitution and every swap
of two adjacent different digits in a UTRN, the check digit included, is caught.

Why it holds for the variant (checked exhaustively below, not only sampled): GBCS's final
table 14.8c is P[1] applied to the group inverse, so a UTRN is valid exactly when the
product, in the dihedral group D5, of P[k](digit) over all 20 digits is the identity, with
k = 4, 5, 6, 7, 0, 1, ... from the left (the check digit gets k = 7). That is Verhoeff's
scheme with its step count running left to right from 4 instead of right to left from 0,
and his two facts hold for every step k: each P[k] is a permutation (so one changed digit
changes the product) and P[k](a)·P[k+1](b) != P[k](b)·P[k+1](a) for a != b (so an adjacent
swap changes it). No adjacent transposition escapes, including the one with the check
digit. Not guaranteed, and not claimed: swaps across one digit, twin errors (aa -> bb).
"""
import pytest
from hypothesis import given, settings, strategies as st

from host_tools import utrn as host_utrn
from ppmid import utrn
from ppmid.errors import E_UTRN_CHECK

P = [[utrn._P[10 * k + d] - 48 for d in range(10)] for k in range(8)]
D = [[utrn._D[10 * x + y] - 48 for y in range(10)] for x in range(10)]
FINAL = [utrn._I[x] - 48 for x in range(10)]


def inverse(x):
    return next(y for y in range(10) if D[x][y] == 0)


def product_with_check_digit(digits20):
    acc = 0
    for i, ch in enumerate(digits20):
        acc = D[acc][P[(4 + i) % 8][int(ch)]]
    return acc


def code_of(text):
    try:
        utrn.decode(text)
    except utrn.UtrnError as exc:
        return exc.code
    return None


valid_utrns = st.builds(host_utrn.encode,
                        counter=st.integers(0, 1023),
                        value_class=st.sampled_from(["pennies", "pounds"]),
                        value=st.integers(1, 8191),
                        mac4=st.binary(min_size=4, max_size=4))
any_digits19 = st.text(alphabet="0123456789", min_size=19, max_size=19)


# ---- the tables and the algebra, exhaustively --------------------------------------------
def test_tables_are_verhoeff_s_group_and_permutations():
    assert P[0] == list(range(10))
    for k in range(1, 8):
        assert P[k] == [P[1][P[k - 1][d]] for d in range(10)]       # row k is P[1] to the k
    assert [P[1][P[7][d]] for d in range(10)] == P[0]               # P[1] has order 8
    for x in range(10):
        assert sorted(D[x]) == list(range(10)) and D[0][x] == D[x][0] == x
        for y in range(10):
            for z in range(10):
                assert D[D[x][y]][z] == D[x][D[y][z]]                 # a group


def test_the_final_table_is_p1_of_the_inverse():
    assert FINAL == [P[1][inverse(x)] for x in range(10)]
    assert FINAL != [inverse(x) for x in range(10)]                  # not the textbook table


@given(any_digits19)
@settings(max_examples=500, deadline=None)
def test_valid_means_the_product_is_the_identity(digits19):
    check = str(utrn.check_digit(digits19))
    assert product_with_check_digit(digits19 + check) == 0
    for other in "0123456789":
        if other != check:
            assert product_with_check_digit(digits19 + other) != 0


def test_no_adjacent_swap_leaves_the_product_alone_at_any_step():
    for k in range(8):
        for a in range(10):
            for b in range(10):
                if a != b:
                    assert D[P[k][a]][P[(k + 1) % 8][b]] != D[P[k][b]][P[(k + 1) % 8][a]], (k, a, b)


# ---- sampled: on real UTRNs, through decode ----------------------------------------------
@given(valid_utrns)
@settings(max_examples=300, deadline=None)
def test_every_single_substitution_is_caught(text):
    assert code_of(text) is None
    for i in range(20):
        for d in "0123456789":
            if d != text[i]:
                assert code_of(text[:i] + d + text[i + 1:]) == E_UTRN_CHECK, (text, i, d)


@given(valid_utrns)
@settings(max_examples=300, deadline=None)
def test_every_adjacent_transposition_is_caught(text):
    for i in range(19):
        if text[i] != text[i + 1]:
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
            assert code_of(swapped) == E_UTRN_CHECK, (text, i)


@given(any_digits19)
@settings(max_examples=500, deadline=None)
def test_the_check_digit_catches_the_same_on_any_19_digits(digits19):
    # not only in the PPTD range: the guarantee is the check digit's, not the range's
    full = digits19 + str(utrn.check_digit(digits19))
    for i in range(19):
        if full[i] != full[i + 1]:
            swapped = full[:i] + full[i + 1] + full[i] + full[i + 2:]
            assert utrn.check_digit(swapped[:19]) != int(swapped[19]), (full, i)


@given(st.integers(0, 1023), st.sampled_from(["pennies", "pounds"]), st.integers(1, 8191),
       st.binary(min_size=4, max_size=4))
@settings(max_examples=300, deadline=None)
def test_encode_then_decode_gives_the_fields_back(counter, value_class, value, mac4):
    u = utrn.decode(host_utrn.encode(counter, value_class, value, mac4))
    assert (u.counter, u.value_class, u.value, u.mac) == (counter, value_class, value, mac4)
    assert u.value_pence == value * (100 if value_class == "pounds" else 1)


def test_encode_rebuilds_the_public_vectors():
    # SmartDCCInnovation/gbcs-parser test/utrn.test.ts: the fields its generator was given,
    # with the MAC bytes its dummy keys produced (the last 8 hex digits of each PTUT)
    assert host_utrn.encode(1, "pounds", 100, bytes.fromhex("d51ca60b")) == "73943333457189043313"
    assert host_utrn.encode(4, "pennies", 1234, bytes.fromhex("3855d663")) == "73947252416745201637"
    assert host_utrn.encode(1, "pounds", 8191, bytes.fromhex("ae316057"))[:19] == "7394368095646343255"


def test_encode_refuses_fields_that_do_not_fit():
    for args in ((1024, 0, 1, b"1234"), (0, 4, 1, b"1234"), (0, "euros", 1, b"1234"), (0, 0, 8192, b"1234"),
                 (-1, 0, 1, b"1234"), (0, 0, 1, b"123"), (True, 0, 1, b"1234")):
        with pytest.raises(host_utrn.UtrnEncodeError):
            host_utrn.encode(*args)
    with pytest.raises(host_utrn.UtrnEncodeError):
        host_utrn.with_check_digit("739433334571890433")
