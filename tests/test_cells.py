"""addin.cells: one rule per kind of cell value (blank, Excel error, boolean, number, text, text list),
each refusal naming the cell; and addin.backoff's delays. Values as openpyxl, pandas, numpy and COM give them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from addin.backoff import Backoff
from addin.cells import (
    COM_ERROR_CODES,
    ERROR_VALUES,
    CellError,
    boolean,
    error_value,
    is_blank,
    number,
    text,
    text_list,
)


@pytest.mark.parametrize("value", [None, "", "   ", float("nan"), np.float64("nan"), pd.NaT])
def test_blanks(value):
    assert is_blank(value) and number(value, "X") is None and text(value, "X") == "" and text_list(value, "X") == ()
    assert boolean(value, "X", default=True) is True


@pytest.mark.parametrize("value", [0, 0.0, "0", "x", False, pd.NA])
def test_not_blanks(value):
    assert not is_blank(value)


def test_error_values_as_text_and_as_com_codes():
    assert error_value(" #n/a ") == "#N/A" and error_value(-2146826246) == "#N/A"
    assert error_value(-2146826281) == "#DIV/0!" and error_value(np.int64(-2146826273)) == "#VALUE!"
    assert set(COM_ERROR_CODES.values()) <= ERROR_VALUES and "#DATA!" in ERROR_VALUES
    assert error_value("#hashtag") is None and error_value(True) is None and error_value(42) is None
    for read in (lambda v: boolean(v, "Cell"), lambda v: number(v, "Cell"), lambda v: text(v, "Cell"),
                 lambda v: text_list(v, "Cell")):
        with pytest.raises(CellError, match="^Cell: the cell holds the Excel error #REF!"):
            read("#REF!")


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (np.bool_(True), True), (1, True), (0.0, False), (np.int64(1), True),
    ("TRUE", True), (" false ", False), ("Yes", True), ("no", False), ("1", True), ("0", False),
    ("y", True), ("N", False), ("on", True), ("OFF", False),
])
def test_one_boolean_rule(value, expected):
    assert boolean(value, "Flag") is expected


@pytest.mark.parametrize("value", ["maybe", "yeſ", "ＹＥＳ", "tru", 2, 0.5, -1, "1.0", None, "  "])
def test_everything_else_is_not_a_boolean_and_the_error_names_the_cell(value):
    with pytest.raises(CellError) as err:
        boolean(value, "History!HistoryUseRTH")
    assert err.value.name == "History!HistoryUseRTH" and str(err.value).startswith("History!HistoryUseRTH: expected")


@pytest.mark.parametrize("value, expected", [
    (5, 5.0), (np.int64(7), 7.0), (2.5, 2.5), (" 1,000 ", 1000.0), ("1.5e2", 150.0), ("-3", -3.0), ("\u00a012", 12.0),
])
def test_numbers(value, expected):
    assert number(value, "Qty") == expected


@pytest.mark.parametrize("value", [True, np.bool_(False), float("inf"), -math.inf, "nan", "inf", "1,0,0", "ten",
                                   "1_000", [1]])
def test_not_numbers(value):
    with pytest.raises(CellError, match="^Qty: expected a positive number"):
        number(value, "Qty", "a positive number")


def test_text_and_text_lists():
    assert text(17.0, "Ref") == "17" and text("  a   b ", "Ref") == "a b"
    with pytest.raises(CellError, match="^Ref: expected text"):
        text(True, "Ref")
    assert text_list("stk, fut; STK ,, cash", "k") == ("STK", "FUT", "CASH")
    assert text_list(["a", " b", None, "A"], "k") == ("A", "B")


def test_backoff_doubles_to_the_cap_and_jitters_within_its_band():
    delays = iter(Backoff(0.01, 0.5))
    assert [round(next(delays), 3) for _ in range(8)] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    assert next(iter(Backoff(3.0, 1.0))) == 3.0            # the first delay is the start, even above the cap
    jittered = iter(Backoff(1.0, 2.0, jitter=0.2))
    first, second, third = next(jittered), next(jittered), next(jittered)
    assert 0.8 <= first <= 1.2 and 1.6 <= second <= 2.4 and 1.6 <= third <= 2.4
