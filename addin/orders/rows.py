"""The Orders table: rows as Excel delivers them -> validated :class:`OrderIntent` or :class:`RowError`.

Input values arrive as openpyxl, pandas.read_excel or xlwings give them: floats for integers
(``100.0``), None / NaN / "" for blanks, Excel error values as text (``"#N/A"``) or COM error codes,
stray spaces, lower case, numbers stored as text (``" 1,000 "``), booleans as True/False, 1/0 or
text. Column names are matched case-insensitively and trimmed; missing optional columns are blank.
Nothing here talks to IB: the Symbol is checked against the cell grammar only (qualification and
every risk rule come later, in :mod:`addin.orders.desk` and :mod:`addin.orders.risk`).

Error cells must arrive as their text: openpyxl gives "#N/A", xlwings does with
``.options(err_to_str=True)``. pandas.read_excel and xlwings' default turn them into NaN / None, which
reads as a blank cell: harmless for a required column (refused as blank) but an optional one (a
StopLoss whose formula failed) would be read as absent, so the Excel side must not read that way.

Every problem is a RowError naming the column and what was expected, e.g.
``Quantity: expected a positive number of shares/contracts, got 'ten'``.

Refs: letters, digits and ``- _ . : /``, at most 40 characters, not ending in ``.TP`` or ``.SL``
(those name bracket children: ``R1.TP`` is the take-profit and ``R1.SL`` the stop-loss child of
``R1``). A blank Ref is left ``""`` here; :func:`new_ref` makes one (the desk assigns and writes it
back before sending anything).
"""

from __future__ import annotations

import math
import numbers
import re
import uuid
from dataclasses import dataclass
from typing import Any, Hashable, Mapping

import pandas as pd

from ..ib.contracts import EXCEL_ERRORS, InstrumentError, parse

__all__ = ["ORDER_INPUT_COLUMNS", "ORDER_OUTPUT_COLUMNS", "ORDER_TYPES", "TIFS", "OrderIntent", "RowError",
           "parse_rows", "parse_row", "new_ref", "CHILD_SUFFIXES"]

ORDER_INPUT_COLUMNS = ("Ref", "Account", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "StopPrice",
                       "TrailAmount", "TrailPercent", "TIF", "OutsideRTH", "TakeProfit", "StopLoss", "OCAGroup",
                       "Transmit")
ORDER_OUTPUT_COLUMNS = ("Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice", "Commission",
                        "Message", "Updated")
ORDER_TYPES = ("MKT", "LMT", "STP", "STP LMT", "TRAIL", "MOC", "LOC")
TIFS = ("DAY", "GTC", "IOC", "FOK")
CHILD_SUFFIXES = (".TP", ".SL")
MAX_REF_LEN = 40

_REF = re.compile(r"[A-Za-z0-9_\-.:/]+")
_NUMBER_TEXT = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?")
_COM_ERRORS = {-2146826281, -2146826246, -2146826259, -2146826288, -2146826252, -2146826265, -2146826273}
# Which price columns each order type needs (True), may have (None) or must leave blank (False).
_PRICES = {
    "MKT": {"LimitPrice": False, "StopPrice": False},
    "LMT": {"LimitPrice": True, "StopPrice": False},
    "STP": {"LimitPrice": False, "StopPrice": True},
    "STP LMT": {"LimitPrice": True, "StopPrice": True},
    "TRAIL": {"LimitPrice": False, "StopPrice": None},
    "MOC": {"LimitPrice": False, "StopPrice": False},
    "LOC": {"LimitPrice": True, "StopPrice": False},
}
_ORDER_TYPE_ALIASES = {"MARKET": "MKT", "LIMIT": "LMT", "STOP": "STP", "STPLMT": "STP LMT", "STOP LIMIT": "STP LMT",
                       "STP-LMT": "STP LMT", "TRAILING": "TRAIL"}
_BRACKET_ENTRIES = ("MKT", "LMT", "STP", "STP LMT")


@dataclass(frozen=True)
class OrderIntent:
    """One parsed, self-consistent order row. Prices in the contract's currency per unit (IB's quoted
    price), quantity in shares / contracts / base-currency units / coins, trail_percent in percent.
    ``row``: the input's index label; ``account`` "" = the session's only account; ``symbol``: the
    cell text as written (trimmed). None = blank."""

    row: Hashable
    ref: str
    account: str
    symbol: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None = None
    stop_price: float | None = None
    trail_amount: float | None = None
    trail_percent: float | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    take_profit: float | None = None
    stop_loss: float | None = None
    oca_group: str = ""
    transmit: bool = True

    @property
    def is_bracket(self) -> bool:
        return self.take_profit is not None or self.stop_loss is not None

    @property
    def sign(self) -> int:
        """+1 for BUY, -1 for SELL."""
        return 1 if self.action == "BUY" else -1

    def fields(self) -> dict[str, Any]:
        """The order fields as a JSON-ready dict (for the journal)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "row"}


@dataclass(frozen=True)
class RowError:
    """Why one row cannot become an order. ``column``: the Orders column at fault (or "" for the
    row as a whole); ``message``: what was expected and what the cell held."""

    row: Hashable
    column: str
    message: str
    ref: str = ""

    def __str__(self) -> str:
        return f"{self.column}: {self.message}" if self.column else self.message


class _Bad(ValueError):
    def __init__(self, column: str, message: str):
        self.column = column
        super().__init__(message)


def new_ref() -> str:
    """A fresh Ref for a row left blank: ``X`` + 10 hex digits (random, so unique across sessions)."""
    return "X" + uuid.uuid4().hex[:10].upper()


# --- cell values ------------------------------------------------------------------------------------
def _blank(v: Any) -> bool:
    if v is None or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _check_error_value(col: str, v: Any) -> None:
    if isinstance(v, str) and v.strip().upper() in EXCEL_ERRORS:
        raise _Bad(col, f"the cell holds the Excel error {v.strip().upper()}; expected a value")
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) in _COM_ERRORS:
        raise _Bad(col, "the cell holds an Excel error value; expected a value")


def _text(col: str, v: Any) -> str:
    _check_error_value(col, v)
    if _blank(v):
        return ""
    if isinstance(v, bool):
        raise _Bad(col, f"expected text, got {v}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)          # a Ref typed as 17 arrives as 17.0
    return " ".join(str(v).split())


def _number(col: str, v: Any, what: str) -> float | None:
    _check_error_value(col, v)
    if _blank(v):
        return None
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        raise _Bad(col, f"expected {what}, got {v}")
    if isinstance(v, numbers.Real):
        x = float(v)
    elif isinstance(v, str):
        s = v.strip().replace("\u00a0", "")
        if not _NUMBER_TEXT.fullmatch(s) or not any(c.isdigit() for c in s):
            raise _Bad(col, f"expected {what}, got {v.strip()!r}")
        x = float(s.replace(",", ""))
    else:
        raise _Bad(col, f"expected {what}, got {v!r}")
    if not math.isfinite(x):
        raise _Bad(col, f"expected {what}, got {v!r}")
    return x


def _positive(col: str, v: Any, what: str) -> float | None:
    x = _number(col, v, what)
    if x is not None and x <= 0:
        raise _Bad(col, f"expected {what}, got {_show(x)}")
    return x


def _boolean(col: str, v: Any, default: bool) -> bool:
    _check_error_value(col, v)
    if _blank(v):
        return default
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return bool(v)
    if isinstance(v, numbers.Real) and float(v) in (0.0, 1.0):
        return bool(v)
    s = str(v).strip().upper()
    if s in ("TRUE", "YES", "Y", "1"):
        return True
    if s in ("FALSE", "NO", "N", "0"):
        return False
    raise _Bad(col, f"expected TRUE or FALSE (or blank for {str(default).upper()}), got {_show(v)}")


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.10g}"
    return repr(v.strip()) if isinstance(v, str) else str(v)


# --- rows -------------------------------------------------------------------------------------------
def _columns(df: pd.DataFrame) -> dict[str, Any]:
    """Orders column name -> the DataFrame's column label (case-insensitive, trimmed)."""
    by_norm = {}
    for label in df.columns:
        by_norm.setdefault(" ".join(str(label).split()).lower(), label)
    return {name: by_norm[name.lower()] for name in ORDER_INPUT_COLUMNS if name.lower() in by_norm}


def parse_rows(df: pd.DataFrame) -> dict[Hashable, OrderIntent | RowError]:
    """Parse every row of an Orders table. Returns {index label: OrderIntent or RowError} in the
    frame's order. A table without Symbol, Action or Quantity columns gives a RowError per row
    naming the missing column. Two rows with the same (non-blank) Ref: the second is a RowError
    (``Ref: duplicate of row ...``). Rows that are blank in every input column are skipped."""
    cols = _columns(df)
    out: dict[Hashable, OrderIntent | RowError] = {}
    missing = [c for c in ("Symbol", "Action", "Quantity") if c not in cols]
    seen: dict[str, Hashable] = {}
    names = list(cols)
    first_position: dict[Any, int] = {}
    for i, label in enumerate(df.columns):        # a duplicated header: its first column, as _columns
        first_position.setdefault(label, i)
    positions = [first_position[cols[name]] for name in names]
    # One object array for the whole table (numbers come out as Python floats and ints): no
    # Series per row, no column selection; the single-order path cares about the microseconds.
    for label, cells in zip(df.index, df.to_numpy(dtype=object)):
        values = {name: cells[i] for name, i in zip(names, positions)}
        if all(_blank(v) for v in values.values()):
            continue
        if missing:
            out[label] = RowError(label, missing[0], f"the Orders table has no {missing[0]} column")
            continue
        result = parse_row(values, label)
        if result.ref:                    # a Ref is taken by the first row that has it, valid or not
            first = seen.setdefault(result.ref.upper(), label)
            if first != label:
                result = RowError(label, "Ref", f"{result.ref!r} is a duplicate of row {first}; every row "
                                                f"needs its own Ref", result.ref)
        out[label] = result
    return out


def parse_row(values: Mapping[str, Any], row: Hashable = None) -> OrderIntent | RowError:
    """One row (Orders column name -> cell value) -> OrderIntent, or RowError for the first problem."""
    ref = ""
    try:
        get = {k: values.get(k) for k in ORDER_INPUT_COLUMNS}
        ref = _parse_ref(get["Ref"])
        intent = _parse(get, row, ref)
    except _Bad as bad:
        return RowError(row, bad.column, str(bad), ref)
    return intent


def _parse_ref(v: Any) -> str:
    ref = _text("Ref", v)
    if not ref:
        return ""
    if len(ref) > MAX_REF_LEN or not _REF.fullmatch(ref):
        raise _Bad("Ref", f"expected up to {MAX_REF_LEN} letters, digits or - _ . : /, got {_show(ref)}")
    if ref.upper().endswith(CHILD_SUFFIXES):
        raise _Bad("Ref", f"{ref!r}: a Ref may not end in .TP or .SL (reserved for bracket children)")
    return ref


def _parse(get: dict[str, Any], row: Hashable, ref: str) -> OrderIntent:
    account = _text("Account", get["Account"]).upper()
    if account and not re.fullmatch(r"[A-Z0-9]+", account):
        raise _Bad("Account", f"expected an IB account id such as DU1234567, got {_show(account)}")
    symbol = _text("Symbol", get["Symbol"])
    if not symbol:
        raise _Bad("Symbol", "expected an instrument such as AAPL, EUR/USD or ESZ6.CME, got a blank cell")
    try:
        spec = parse(symbol)
    except InstrumentError as exc:
        raise _Bad("Symbol", str(exc)) from None
    if spec.sec_type == "FUT" and not spec.last_trade_date:
        raise _Bad("Symbol", f"{_show(symbol)} is a future without a contract month, which means the front month "
                             f"and rolls; an order names its month: {spec.symbol} YYYYMM {spec.exchange or 'EXCHANGE'}, or "
                             f"{spec.symbol} + month code + year digit (the Watchlist shows the front month's)")
    action = _text("Action", get["Action"]).upper()
    if action not in ("BUY", "SELL"):
        raise _Bad("Action", f"expected BUY or SELL, got {_show(action) if action else 'a blank cell'}")
    quantity = _positive("Quantity", get["Quantity"], "a positive number of shares/contracts")
    if quantity is None:
        raise _Bad("Quantity", "expected a positive number of shares/contracts, got a blank cell")
    order_type = _text("OrderType", get["OrderType"]).upper()
    order_type = _ORDER_TYPE_ALIASES.get(order_type, order_type)
    if order_type not in ORDER_TYPES:
        raise _Bad("OrderType", f"expected one of {', '.join(ORDER_TYPES)}, got "
                                f"{_show(order_type) if order_type else 'a blank cell'}")
    prices = {c: _positive(c, get[c], "a positive price") for c in ("LimitPrice", "StopPrice")}
    for col, need in _PRICES[order_type].items():
        if need and prices[col] is None:
            raise _Bad(col, f"{order_type} needs a {col}, got a blank cell")
        if need is False and prices[col] is not None:
            raise _Bad(col, f"must be blank for {order_type}, got {_show(prices[col])}")
    trail_amount = _positive("TrailAmount", get["TrailAmount"], "a positive trailing amount (price units)")
    trail_percent = _positive("TrailPercent", get["TrailPercent"], "a trailing percent between 0 and 100")
    if order_type == "TRAIL":
        if (trail_amount is None) == (trail_percent is None):
            raise _Bad("TrailAmount", "TRAIL needs exactly one of TrailAmount or TrailPercent")
        if trail_percent is not None and trail_percent >= 100:
            raise _Bad("TrailPercent", f"expected a trailing percent between 0 and 100, got {_show(trail_percent)}")
    else:
        for col, v in (("TrailAmount", trail_amount), ("TrailPercent", trail_percent)):
            if v is not None:
                raise _Bad(col, f"must be blank for {order_type} (only TRAIL orders trail)")
    tif = _text("TIF", get["TIF"]).upper() or "DAY"
    if tif not in TIFS:
        raise _Bad("TIF", f"expected one of {', '.join(TIFS)} (blank = DAY), got {_show(tif)}")
    if order_type in ("MOC", "LOC") and tif != "DAY":
        raise _Bad("TIF", f"{order_type} orders are DAY orders, got {tif}")
    outside_rth = _boolean("OutsideRTH", get["OutsideRTH"], False)
    transmit = _boolean("Transmit", get["Transmit"], True)
    take_profit = _positive("TakeProfit", get["TakeProfit"], "a positive price")
    stop_loss = _positive("StopLoss", get["StopLoss"], "a positive price")
    oca_group = _text("OCAGroup", get["OCAGroup"])
    if take_profit is not None or stop_loss is not None:
        _check_bracket(order_type, action, prices, take_profit, stop_loss, oca_group)
    return OrderIntent(row=row, ref=ref, account=account, symbol=symbol, action=action, quantity=quantity,
                       order_type=order_type, limit_price=prices["LimitPrice"], stop_price=prices["StopPrice"],
                       trail_amount=trail_amount, trail_percent=trail_percent, tif=tif, outside_rth=outside_rth,
                       take_profit=take_profit, stop_loss=stop_loss, oca_group=oca_group, transmit=transmit)


def _check_bracket(order_type, action, prices, take_profit, stop_loss, oca_group) -> None:
    if order_type not in _BRACKET_ENTRIES:
        col = "TakeProfit" if take_profit is not None else "StopLoss"
        raise _Bad(col, f"a bracket needs an entry of type {', '.join(_BRACKET_ENTRIES)}, not {order_type}")
    if oca_group:
        raise _Bad("OCAGroup", "must be blank on a bracket (its children form their own OCA group)")
    entry = prices["LimitPrice"] or prices["StopPrice"]
    buy = action == "BUY"
    if take_profit is not None and stop_loss is not None and (take_profit <= stop_loss if buy else
                                                              take_profit >= stop_loss):
        raise _Bad("TakeProfit", f"for a {action} bracket TakeProfit must be {'above' if buy else 'below'} "
                                 f"StopLoss, got {_show(take_profit)} and {_show(stop_loss)}")
    if entry is None:
        return
    if take_profit is not None and (take_profit <= entry if buy else take_profit >= entry):
        raise _Bad("TakeProfit", f"for a {action} entry at {_show(entry)} TakeProfit must be "
                                 f"{'above' if buy else 'below'} it, got {_show(take_profit)}")
    if stop_loss is not None and (stop_loss >= entry if buy else stop_loss <= entry):
        raise _Bad("StopLoss", f"for a {action} entry at {_show(entry)} StopLoss must be "
                               f"{'below' if buy else 'above'} it, got {_show(stop_loss)}")
