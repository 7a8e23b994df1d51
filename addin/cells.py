"""Cell values -> Python values, with one rule per kind, shared by the UDFs, the macros, the Orders rows
and the workbook's Config sheet.

Values arrive as openpyxl, pandas, xlwings or COM give them: floats for integers (``100.0``), None / NaN
/ NaT / whitespace for empty cells, Excel errors as their text (``"#N/A"``; openpyxl, xlwings with
``err_to_str=True``, the remote JSON) or as raw COM codes (pywin32 without xlwings' conversion),
numbers stored as text (``" 1,000 "``), numpy scalars, booleans as True/False, 1/0 or text.

The rules:

- **blank**: None, NaN, NaT, ``""`` and whitespace (:func:`is_blank`);
- **Excel error**: one of :data:`ERROR_VALUES` as text (any case, trimmed) or a COM error code
  (:data:`COM_ERROR_CODES`) (:func:`error_value`); every reader below refuses it, naming the error;
- **boolean**: True/False (Python or numpy), the numbers 1/0, the text TRUE/FALSE, YES/NO, Y/N,
  ON/OFF, 1/0 (any case, ASCII only); anything else is refused (:func:`boolean`);
- **number**: finite only (NaN and infinities are refused), a bool is not a number, text with ASCII
  digits and optional thousands commas (``"1,000"``, ``" 1.5e2 "``; full-width or Arabic-Indic digits,
  which Python's float() would take, are refused) (:func:`number`);
- **text**: trimmed, inner whitespace collapsed, ``17.0`` read as ``"17"``; a bool is not text (:func:`text`);
- **token**: text upper-cased as ASCII only (:func:`token`): a word with a non-ASCII letter stays as
  written, so ``"ſell"`` (long s) or ``"ıoc"`` (dotless i) never fold into SELL or IOC and the caller's
  list of words refuses them;
- **text list**: ``"A, B; C"`` (commas or semicolons) or a list -> upper-case items (ASCII only, as
  tokens), blanks dropped, duplicates dropped, first order kept (:func:`text_list`).

Every refusal is a :class:`CellError` carrying the cell / column / argument / key name it concerns.
Stdlib only: the command line imports this module without pandas or numpy.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

__all__ = ["CellError", "ERROR_VALUES", "COM_ERROR_CODES", "is_blank", "error_value", "check_not_error", "boolean",
           "number", "text", "token", "ascii_upper", "text_list", "show"]

# Excel's error values as text (what openpyxl and xlwings with err_to_str=True give for an error cell).
ERROR_VALUES = frozenset({
    "#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#DATA!", "#GETTING_DATA", "#SPILL!",
    "#CALC!", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!",
})
# Excel errors as COM hands them to pywin32 (CVErr: 0x800A0000 | XlCVError, as a signed 32-bit int); the
# first seven are the ones xlwings' _xlwindows converts, the rest Excel's newer XlCVError members.
_XL_CV_ERRORS = {2000: "#NULL!", 2007: "#DIV/0!", 2015: "#VALUE!", 2023: "#REF!", 2029: "#NAME?", 2036: "#NUM!",
                 2042: "#N/A", 2043: "#GETTING_DATA", 2045: "#SPILL!", 2046: "#CONNECT!", 2047: "#BLOCKED!",
                 2048: "#UNKNOWN!", 2049: "#FIELD!", 2050: "#CALC!"}
COM_ERROR_CODES = {code - 2000 - 2146826288: name for code, name in _XL_CV_ERRORS.items()}

# Unambiguous words only; matched as ASCII (no Unicode case folding: "yeſ".upper() is "YES").
_TRUE = frozenset({"TRUE", "YES", "Y", "ON", "1"})
_FALSE = frozenset({"FALSE", "NO", "N", "OFF", "0"})
# re.ASCII: \d is 0-9 only (float() would read "１０" or "١٠" as 10).
_NUMBER_TEXT = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?", re.ASCII)


class CellError(ValueError):
    """A cell or setting value that is not what was expected. ``name``: the cell, column, argument or
    key; ``reason``: what was expected and what it held. ``str()`` is ``"<name>: <reason>"``."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}" if name else reason)


def is_blank(value: Any) -> bool:
    """True for an empty cell: None, NaN (float or numpy), pandas' NaT, "" or whitespace."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return type(value).__name__ == "NaTType"          # pandas.NaT, without importing pandas


def _is_bool(value: Any) -> bool:
    kind = type(value)      # numpy's bool is numpy.bool (numpy 2) or numpy.bool_ (numpy 1), not a Python bool
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def error_value(value: Any) -> str | None:
    """The Excel error a cell value stands for (``"#N/A"``, ...), else None. Text in any case and with
    stray spaces counts; so does a COM error code (an int, never a bool)."""
    if isinstance(value, str):
        name = value.strip().upper()
        return name if name in ERROR_VALUES else None
    if isinstance(value, numbers.Integral) and not _is_bool(value):
        return COM_ERROR_CODES.get(int(value))
    return None


def check_not_error(value: Any, name: str) -> None:
    """Raise CellError when ``value`` is an Excel error value."""
    err = error_value(value)
    if err is not None:
        raise CellError(name, f"the cell holds the Excel error {err}; expected a value")


def show(value: Any) -> str:
    """A value as an error message quotes it: floats as ``1,000.5``, text quoted and trimmed."""
    if isinstance(value, float):
        return f"{value:,.10g}"
    return repr(value.strip()) if isinstance(value, str) else str(value)


def boolean(value: Any, name: str, default: bool | None = None) -> bool:
    """TRUE/FALSE from a cell: True/False, 1/0, or the text TRUE/FALSE, YES/NO, Y/N, ON/OFF, 1/0 (any
    case, ASCII only).
    A blank gives ``default``; with no default a blank is refused too. Raises CellError naming ``name``."""
    check_not_error(value, name)
    if is_blank(value):
        if default is not None:
            return default
    elif _is_bool(value):
        return bool(value)
    elif isinstance(value, numbers.Real):
        if float(value) in (0.0, 1.0):
            return bool(value)
    elif isinstance(value, str):
        word = value.strip().upper() if value.isascii() else ""
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    blank = f" (or blank for {str(default).upper()})" if default is not None else ""
    raise CellError(name, f"expected TRUE or FALSE{blank}, got {show(value)}")


def number(value: Any, name: str, what: str = "a number") -> float | None:
    """A finite float from a cell, or None when it is blank. Numbers (numpy too) and numeric text
    (``" 1,000 "``, ``"1.5e2"``) are read; bools, NaN, infinities and other text are refused with
    ``expected <what>, got ...``. Raises CellError naming ``name``."""
    check_not_error(value, name)
    if is_blank(value):
        return None
    if _is_bool(value):
        raise CellError(name, f"expected {what}, got {value}")
    if isinstance(value, numbers.Real):
        x = float(value)
    elif isinstance(value, str):
        s = value.strip().replace("\u00a0", "")
        if not _NUMBER_TEXT.fullmatch(s) or not any("0" <= c <= "9" for c in s):
            raise CellError(name, f"expected {what}, got {value.strip()!r}")
        x = float(s.replace(",", ""))
    else:
        raise CellError(name, f"expected {what}, got {value!r}")
    if not math.isfinite(x):
        raise CellError(name, f"expected {what}, got {value!r}")
    return x


def text(value: Any, name: str) -> str:
    """A cell's text, trimmed with inner whitespace collapsed; ``""`` when blank. A whole float reads as
    an int (a Ref typed as 17 arrives as 17.0). Raises CellError for error values and bools."""
    check_not_error(value, name)
    if is_blank(value):
        return ""
    if _is_bool(value):
        raise CellError(name, f"expected text, got {value}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


def ascii_upper(s: str) -> str:
    """``s`` with its ASCII letters upper-cased and every other character left as it is: no Unicode
    case mapping (``"ſ".upper()`` is ``"S"``, ``"ı".upper()`` is ``"I"``, ``"ß".upper()`` is ``"SS"``)."""
    return s.upper() if s.isascii() else "".join(c.upper() if c.isascii() else c for c in s)


def token(value: Any, name: str) -> str:
    """A keyword cell (BUY, LMT, IOC, an account id...): :func:`text`, then upper-cased as ASCII only
    (:func:`ascii_upper`), so a look-alike letter survives and fails the caller's match. ``""`` when
    blank. Raises CellError for error values and bools."""
    return ascii_upper(text(value, name))


def text_list(value: Any, name: str) -> tuple[str, ...]:
    """``"A, B; C"`` (or a list / tuple of items) -> ``("A", "B", "C")``: trimmed, upper case, blanks
    and duplicates dropped, first order kept; ``()`` when blank. Raises CellError for error values."""
    if isinstance(value, (list, tuple)):
        for item in value:
            check_not_error(item, name)
        parts = [str(v) for v in value if not is_blank(v)]
    else:
        check_not_error(value, name)
        parts = [] if is_blank(value) else str(value).replace(";", ",").split(",")
    return tuple(dict.fromkeys(ascii_upper(p.strip()) for p in parts if p.strip()))
