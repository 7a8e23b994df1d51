"""The Orders table: rows as Excel delivers them -> validated :class:`OrderIntent` or :class:`RowError`.

Input values arrive as openpyxl, pandas.read_excel or xlwings give them: floats for integers
(``100.0``), None / NaN / "" for blanks, Excel error values as text (``"#N/A"``) or COM error codes,
stray spaces, lower case, numbers stored as text (``" 1,000 "``), booleans as True/False, 1/0 or
text; each kind is read by :mod:`addin.cells`' one rule. Column names are matched case-insensitively (ASCII
only) and trimmed; missing optional columns are blank.

Hostile cells are refused, never folded into something valid: an Excel error value (``#DATA!``,
``#SPILL!``, a COM error code, ...) in ANY input column refuses the row naming that column, before any
other check; keywords (Action, OrderType, TIF, Account) are matched as ASCII only (``ſell`` and ``ıoc``
are not SELL and IOC); a Symbol must be ASCII (IB's symbols are).
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

import re
import uuid
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ..cells import CellError, ascii_upper, boolean, error_value, is_blank, number, show, text, token
from ..ib.contracts import InstrumentError, parse
from ..protocol.orders import BLANK, OPG_TYPES, ORDER_TYPE_ALIASES, ORDER_TYPE_CODES, REQUIRED, TIF_CODES, OrderType
from ..protocol.orders import order_type as vocabulary_type
from ..protocol.times import IBTimeError, UnknownZoneError, format_utc, parse_time

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ORDER_INPUT_COLUMNS", "ORDER_OUTPUT_COLUMNS", "ORDER_TYPES", "TIFS", "OrderIntent", "RowError",
           "parse_rows", "parse_row", "new_ref", "CHILD_SUFFIXES"]

ORDER_INPUT_COLUMNS = ("Ref", "Account", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "StopPrice",
                       "TrailAmount", "TrailPercent", "Offset", "TIF", "GoodTillDate", "OutsideRTH", "TakeProfit",
                       "StopLoss", "OCAGroup", "Transmit")
ORDER_OUTPUT_COLUMNS = ("Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice", "Commission",
                        "Message", "Updated")
ORDER_TYPES = ORDER_TYPE_CODES      # the vocabulary's (addin.protocol.orders)
TIFS = TIF_CODES
CHILD_SUFFIXES = (".TP", ".SL")
MAX_REF_LEN = 40
MIN_TRAIL_PERCENT = 0.01       # TWS shows trailing percents to 2 decimals; less is a unit mistake

_REF = re.compile(r"[A-Za-z0-9_\-.:/]+")
_BRACKET_ENTRIES = tuple(c for c in ORDER_TYPE_CODES if vocabulary_type(c).bracket_entry)


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
    offset: float | None = None
    good_till: str = ""

    # Fields added after the first release: left out of fields() while unset, so a blank-Ref row's
    # identity (a hash of its fields, kept in the journal) is what it was before they existed.
    _LATER_FIELDS = ("offset", "good_till")

    @property
    def is_bracket(self) -> bool:
        return self.take_profit is not None or self.stop_loss is not None

    @property
    def sign(self) -> int:
        """+1 for BUY, -1 for SELL."""
        return 1 if self.action == "BUY" else -1

    def fields(self) -> dict[str, Any]:
        """The order fields as a JSON-ready dict (for the journal); offset and good_till only when set."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__
                if k != "row" and not (k in self._LATER_FIELDS and getattr(self, k) in (None, ""))}


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


def new_ref() -> str:
    """A fresh Ref for a row left blank: ``X`` + 10 hex digits (random, so unique across sessions)."""
    return "X" + uuid.uuid4().hex[:10].upper()


# --- cell values (the rules are addin.cells'; these add the Orders wording) -------------------------------
def _positive(col: str, v: Any, what: str) -> float | None:
    x = number(v, col, what)
    if x is not None and x <= 0:
        raise CellError(col, f"expected {what}, got {show(x)}")
    return x


# --- rows -------------------------------------------------------------------------------------------
def _columns(df: pd.DataFrame) -> dict[str, Any]:
    """Orders column name -> the DataFrame's column label (case-insensitive, trimmed)."""
    by_norm: dict[str, Any] = {}
    for label in df.columns:               # ASCII lower: "Ta\u212aeProfit" (Kelvin sign) is no TakeProfit
        name = " ".join(str(label).split())
        by_norm.setdefault(name.lower() if name.isascii() else name, label)
    return {name: by_norm[name.lower()] for name in ORDER_INPUT_COLUMNS if name.lower() in by_norm}


def parse_rows(df: pd.DataFrame) -> dict[Hashable, OrderIntent | RowError]:
    """Parse every row of an Orders table. Returns {index label: OrderIntent or RowError} in the
    frame's order. A table without Symbol, Action or Quantity columns gives a RowError per row
    naming the missing column. Rows sharing a (non-blank) Ref, compared trimmed and case-insensitively
    (``CASEREF`` and `` caseref ``), are ALL RowErrors naming each other's rows (``Ref: 'R1' is also the
    Ref of row 7; ...``): which one was meant is the user's call, not ours. Rows that are blank in every
    input column are skipped."""
    cols = _columns(df)
    out: dict[Hashable, OrderIntent | RowError] = {}
    missing = [c for c in ("Symbol", "Action", "Quantity") if c not in cols]
    by_ref: dict[str, list[Hashable]] = {}
    names = list(cols)
    first_position: dict[Any, int] = {}
    for i, label in enumerate(df.columns):        # a duplicated header: its first column, as _columns
        first_position.setdefault(label, i)
    positions = [first_position[cols[name]] for name in names]
    # One object array for the whole table (numbers come out as Python floats and ints): no
    # Series per row, no column selection; the single-order path cares about the microseconds.
    for label, cells in zip(df.index, df.to_numpy(dtype=object)):
        values = {name: cells[i] for name, i in zip(names, positions)}
        if all(is_blank(v) for v in values.values()):
            continue
        if missing:
            out[label] = RowError(label, missing[0], f"the Orders table has no {missing[0]} column")
            continue
        result = parse_row(values, label)
        if result.ref:                    # every row holding a Ref counts, valid or not
            by_ref.setdefault(result.ref.upper(), []).append(label)
        out[label] = result
    for labels in by_ref.values():
        if len(labels) < 2:
            continue
        for label in labels:
            ref = out[label].ref
            others = ", ".join(str(o) for o in labels if o != label)
            out[label] = RowError(label, "Ref", f"{ref!r} is also the Ref of row {others}; every row needs its "
                                                f"own Ref (none of these rows is sent)", ref)
    return out


def parse_row(values: Mapping[str, Any], row: Hashable = None) -> OrderIntent | RowError:
    """One row (Orders column name -> cell value) -> OrderIntent, or RowError for the first problem.
    An Excel error value in any input column comes first (naming that column), whatever else the row holds."""
    ref = ""
    try:
        get = {k: values.get(k) for k in ORDER_INPUT_COLUMNS}
        ref = _parse_ref(get["Ref"])          # first: a refused row still carries its Ref
        for col, v in get.items():
            err = error_value(v)
            if err is not None:
                raise CellError(col, f"the cell holds the Excel error {err}; expected a value")
        intent = _parse(get, row, ref)
    except CellError as bad:
        return RowError(row, bad.name, bad.reason, ref)
    return intent


def _parse_ref(v: Any) -> str:
    ref = text(v, "Ref")
    if not ref:
        return ""
    if len(ref) > MAX_REF_LEN or not _REF.fullmatch(ref):
        raise CellError("Ref", f"expected up to {MAX_REF_LEN} letters, digits or - _ . : /, got {show(ref)}")
    if ascii_upper(ref).endswith(CHILD_SUFFIXES):
        raise CellError("Ref", f"{ref!r}: a Ref may not end in .TP or .SL (reserved for bracket children)")
    return ref


def _parse(get: dict[str, Any], row: Hashable, ref: str) -> OrderIntent:
    account = token(get["Account"], "Account")
    if account and not re.fullmatch(r"[A-Z0-9]+", account):
        raise CellError("Account", f"expected an IB account id such as DU1234567, got {show(account)}")
    symbol = text(get["Symbol"], "Symbol")
    if not symbol:
        raise CellError("Symbol", "expected an instrument such as AAPL, EUR/USD or ESZ6.CME, got a blank cell")
    if not symbol.isascii():                # the grammar upper-cases: "ſpy" would read as SPY
        odd = next(c for c in symbol if not c.isascii())
        raise CellError("Symbol", f"expected ASCII letters, digits and . / @ ^ :, got {show(symbol)} (it holds "
                                  f"{odd!r}, U+{ord(odd):04X})")
    try:
        spec = parse(symbol)
    except InstrumentError as exc:
        raise CellError("Symbol", str(exc)) from None
    if spec.sec_type == "FUT" and not spec.last_trade_date:
        raise CellError("Symbol", f"{show(symbol)} is a future without a contract month, which means the front "
                                  f"month and rolls; an order names its month: {spec.symbol} YYYYMM "
                                  f"{spec.exchange or 'EXCHANGE'}, or {spec.symbol} + month code + year digit (the "
                                  f"Watchlist shows the front month's)")
    action = token(get["Action"], "Action")
    if action not in ("BUY", "SELL"):
        raise CellError("Action", f"expected BUY or SELL, got {show(action) if action else 'a blank cell'}")
    quantity = _positive("Quantity", get["Quantity"], "a positive number of shares/contracts")
    if quantity is None:
        raise CellError("Quantity", "expected a positive number of shares/contracts, got a blank cell")
    order_type = token(get["OrderType"], "OrderType")
    order_type = ORDER_TYPE_ALIASES.get(order_type, order_type)
    if order_type not in ORDER_TYPES:
        raise CellError("OrderType", f"expected one of {', '.join(ORDER_TYPES)}, got "
                                     f"{show(order_type) if order_type else 'a blank cell'}")
    kind = vocabulary_type(order_type)
    prices = {c: _positive(c, get[c], "a positive price") for c in ("LimitPrice", "StopPrice")}
    prices["Offset"] = _positive("Offset", get["Offset"], "a positive price distance")
    for col, value in prices.items():
        need = kind.need(col)
        if need == REQUIRED and value is None:
            raise CellError(col, f"{order_type} needs a {col}, got a blank cell")
        if need == BLANK and value is not None:
            raise CellError(col, f"must be blank for {order_type}, got {show(value)}")
    trail_amount = _positive("TrailAmount", get["TrailAmount"], "a positive trailing amount (price units)")
    trail_percent = _positive("TrailPercent", get["TrailPercent"], "a trailing percent between 0 and 100")
    _check_trail(kind, trail_amount, trail_percent)
    if trail_percent is not None and trail_percent < MIN_TRAIL_PERCENT:
        raise CellError("TrailPercent", f"expected a trailing percent of at least {MIN_TRAIL_PERCENT:g} (a number of "
                                        f"percent: 1.5 = 1.5%), got {show(trail_percent)}")
    tif = token(get["TIF"], "TIF") or "DAY"
    if tif not in TIFS:
        raise CellError("TIF", f"expected one of {', '.join(TIFS)} (blank = DAY), got {show(tif)}")
    if kind.tifs is not None and tif not in kind.tifs:
        raise CellError("TIF", f"{order_type} orders are {' or '.join(kind.tifs)} orders, got {tif}")
    if tif == "OPG" and order_type not in OPG_TYPES:
        raise CellError("TIF", f"OPG (the opening auction) takes MKT or LMT orders, got {order_type}")
    good_till = _good_till(get["GoodTillDate"], tif)
    outside_rth = boolean(get["OutsideRTH"], "OutsideRTH", default=False)
    transmit = boolean(get["Transmit"], "Transmit", default=True)
    take_profit = _positive("TakeProfit", get["TakeProfit"], "a positive price")
    stop_loss = _positive("StopLoss", get["StopLoss"], "a positive price")
    oca_group = text(get["OCAGroup"], "OCAGroup")
    if take_profit is not None or stop_loss is not None:
        _check_bracket(order_type, action, prices, take_profit, stop_loss, oca_group)
    return OrderIntent(row=row, ref=ref, account=account, symbol=symbol, action=action, quantity=quantity,
                       order_type=order_type, limit_price=prices["LimitPrice"], stop_price=prices["StopPrice"],
                       trail_amount=trail_amount, trail_percent=trail_percent, tif=tif, outside_rth=outside_rth,
                       take_profit=take_profit, stop_loss=stop_loss, oca_group=oca_group, transmit=transmit,
                       offset=prices["Offset"], good_till=good_till)


def _check_trail(kind: OrderType, amount: float | None, percent: float | None) -> None:
    if kind.trail:
        if (amount is None) == (percent is None):
            raise CellError("TrailAmount", f"{kind.code} needs exactly one of TrailAmount or TrailPercent")
        if percent is not None and percent >= 100:
            raise CellError("TrailPercent", f"expected a trailing percent between 0 and 100, got {show(percent)}")
        return
    for col, v in (("TrailAmount", amount), ("TrailPercent", percent)):
        if v is not None:
            raise CellError(col, f"must be blank for {kind.code} (only TRAIL and TRAIL LIMIT orders trail)")


def _good_till(value: Any, tif: str) -> str:
    """GoodTillDate -> IB's goodTillDate text ("yyyymmdd-hh:mm:ss", UTC). A date and time cell without a
    zone is UTC, as every time in the workbook; text may be IB's form with a zone
    ("20261231 16:00:00 US/Eastern") or ISO ("2026-12-31 21:00")."""
    if is_blank(value):
        if tif == "GTD":
            raise CellError("GoodTillDate", "GTD needs a GoodTillDate (date and time, UTC), got a blank cell")
        return ""
    if tif != "GTD":
        raise CellError("GoodTillDate", f"must be blank unless TIF is GTD (TIF is {tif}), got {show(value)}")
    end_of_day = datetime.max.time().replace(microsecond=0)
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return format_utc(datetime.combine(value, end_of_day))
    expected = "expected a date and time (UTC) such as 2026-12-31 21:00 or IB's 20261231 16:00:00 US/Eastern"
    if isinstance(value, (int, float)):     # a date cell without a date format reads as a serial number
        raise CellError("GoodTillDate", f"{expected}, got the number {show(value)} (format the cell as a date)")
    raw = text(value, "GoodTillDate")
    if raw.isascii() and raw.isdigit():     # IB's reader takes digits as epoch seconds: only yyyymmdd here
        if len(raw) != 8:
            raise CellError("GoodTillDate", f"{expected}, got {show(raw)}")
        raw = f"{raw} 23:59:59"             # a date alone: good through that day
    try:
        return format_utc(datetime.fromisoformat(raw))
    except ValueError:
        pass
    try:
        return format_utc(parse_time(raw))
    except (IBTimeError, UnknownZoneError, ValueError):
        raise CellError("GoodTillDate", f"{expected}, got {show(raw)}") from None


def _check_bracket(order_type, action, prices, take_profit, stop_loss, oca_group) -> None:
    if order_type not in _BRACKET_ENTRIES:
        col = "TakeProfit" if take_profit is not None else "StopLoss"
        raise CellError(col, f"a bracket needs an entry of type {', '.join(_BRACKET_ENTRIES)}, not {order_type}")
    if oca_group:
        raise CellError("OCAGroup", "must be blank on a bracket (its children form their own OCA group)")
    entry = prices["LimitPrice"] or prices["StopPrice"]
    buy = action == "BUY"
    if take_profit is not None and stop_loss is not None and (take_profit <= stop_loss if buy else
                                                              take_profit >= stop_loss):
        raise CellError("TakeProfit", f"for a {action} bracket TakeProfit must be {'above' if buy else 'below'} "
                                      f"StopLoss, got {show(take_profit)} and {show(stop_loss)}")
    if entry is None:
        return
    if take_profit is not None and (take_profit <= entry if buy else take_profit >= entry):
        raise CellError("TakeProfit", f"for a {action} entry at {show(entry)} TakeProfit must be "
                                      f"{'above' if buy else 'below'} it, got {show(take_profit)}")
    if stop_loss is not None and (stop_loss >= entry if buy else stop_loss <= entry):
        raise CellError("StopLoss", f"for a {action} entry at {show(entry)} StopLoss must be "
                                    f"{'below' if buy else 'above'} it, got {show(stop_loss)}")
