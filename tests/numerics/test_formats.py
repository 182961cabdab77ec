"""Format parser: every accepted form round-trips, everything else names the accepted forms."""
import itertools

import pytest

from lowbit.numerics.formats import FP32, MLS, Mogami, PoT, parse


def test_all_mls_forms_round_trip():
    for ex, mx, eg, mg, group in itertools.product(range(5), range(8), range(9), range(2), ("nc", "n", "c", "none")):
        if ex + mx == 0:
            continue
        fmt = parse(f"mls:{ex},{mx},g={eg},{mg},group={group}")
        assert fmt == MLS(ex, mx, eg, mg, group)
        assert parse(str(fmt)) == fmt


def test_defaults_and_short_forms():
    assert parse("mls:2,1") == MLS(2, 1, 8, 1, "nc") and str(parse("mls:2,1,g=8,1,group=nc")) == "mls:2,1"
    assert parse("pot:4") == PoT(4) and str(PoT()) == "pot:4"
    assert parse("mogami:bf16") == Mogami("bf16") and str(parse("mogami:fp32")) == "mogami:fp32"
    assert parse("fp32") == FP32() and str(FP32()) == "fp32"
    assert parse(" MLS:2, 4 ") == MLS(2, 4)
    fmt = MLS(1, 1)
    assert parse(fmt) is fmt  # a parsed format passes through unchanged


def test_properties():
    f = MLS(2, 4)
    assert (f.exmin, f.code_bits, f.int_bits, f.max_int) == (-3, 7, 7, 31 << 2)
    assert MLS(0, 4).max_int == 15 and MLS(0, 4).exmin == 0
    assert PoT().code_bits == 5 and PoT().max_code == 15
    assert Mogami("bf16").code_bits == 16


@pytest.mark.parametrize("bad", ["", "mls", "mls:2", "mls:5,1", "mls:0,0", "mls:2,8", "mls:2,1,g=9,1",
                                 "mls:2,1,g=8,2", "mls:2,1,g=8,1,group=x", "pot:3", "pot:", "mogami:fp16",
                                 "int8", "fp16", "mls:-1,2"])
def test_invalid_strings_name_accepted_forms(bad):
    with pytest.raises(ValueError, match="accepted"):
        parse(bad)


def test_non_string_rejected():
    with pytest.raises(ValueError, match="accepted"):
        parse(3)


@pytest.mark.parametrize("bad", ["mls:" + "9" * 5000, "mls:2," + "1" * 5000, "pot:" + "4" * 5000, "x" * 100_000,
                                 "mogami:" + "b" * 100_000])
def test_huge_format_strings_get_a_short_error(bad):
    """5,000 digits hit Python's int-conversion limit; 100,000 characters were echoed whole (issue 14)."""
    with pytest.raises(ValueError, match="longer than any format") as err:
        parse(bad)
    assert len(str(err.value)) < 400 and f"{len(bad)} characters" in str(err.value)
    assert parse("mls:4,7,g=8,1,group=none") == MLS(4, 7, 8, 1, "none")  # the longest form still parses
