"""The Options sheet: a chain of one underlying painted into the Chain Table, streaming on the pump's cadence.

The sheet (``workbooks/build.py``; names in ``addin.excel.layout``): the parameters OptionsUnderlying,
OptionsExpiry and OptionsStrikes (named cells in column B), OptionsUnderPrice (the underlying's price,
painted here; the template shades in-the-money calls and puts against it) and OptionsStatus (what the
chain shows, or why not), then the Chain Table (``layout.OPTIONS_COLUMNS``: CallBid .. CallTheta,
Strike, PutBid .. PutTheta, Data).

:class:`OptionsSheet` plans the chain through the runtime (``option_chain``: on both runtimes), holds
the streaming rows' lines and the underlying's, writes the whole Table once, and is then one of the
pump's painters (``Pump.painters``): each flush that saw one of its lines change rewrites the Table's
body with ONE write and the price cell with another. Values are numbers and text (through the Book,
never formulas). ``attach`` is what ``start_streaming`` / ``ibxl run`` / ``ibxl demo`` call;
``option_order_row`` is the macro ``option_to_order``: the selected chain cell -> a new Orders row
(quantity 1, LMT at the mid, Transmit FALSE: never sent by this macro).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, TypeGuard

import pandas as pd

from ..excel.book import TableNotFound, cell_address, parse_range
from ..excel.errors import ExcelInputError, error_text
from ..excel.layout import OPTIONS_COLUMNS, OPTIONS_PARAMETERS, OPTIONS_STATUS, OPTIONS_UNDER_PRICE
from ..market.chain import chain_rows, plan_records, plan_texts
from ..orders.risk import round_to_tick

log = logging.getLogger(__name__)

__all__ = ["OptionsSheet", "attach", "has_options_sheet", "option_order_row", "add_order_row", "sheet_of",
           "CHAIN_TABLE"]

CHAIN_TABLE = "Chain"


def has_options_sheet(book) -> bool:
    """Whether the workbook has the Chain Table (an Options sheet)."""
    try:
        book.table(CHAIN_TABLE)
        return True
    except (TableNotFound, KeyError):
        return False


def _named_cell(book, names: dict[str, str], name: str) -> tuple[str, int, int] | None:
    ref = names.get(name)
    if ref is None:
        return None
    sheet, _, addr = ref.lstrip("=").rpartition("!")
    top, left, _, _ = parse_range(addr)
    return sheet.strip("'").replace("''", "'"), top, left


def _read_named(book, names, name):
    where = _named_cell(book, names, name)
    return None if where is None else book.read(where[0], where[1], where[2], where[1], where[2])[0][0]


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(cols):
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _cell_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


class OptionsSheet:
    """One workbook's Options sheet: its plan, its lines, its last painted values. ``rt``: a Runtime or
    RemoteRuntime (``option_chain``, ``_subscribe``, ``_unsubscribe``, ``quote``). Thread-safe: the
    macro's thread refreshes, the pump's thread paints."""

    def __init__(self, rt):
        self.rt = rt
        self.plan: pd.DataFrame | None = None
        self._records: list[dict] = []
        self.params: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._paint_lock = threading.Lock()        # a refresh's full paint and a flush's paint take turns
        self._held: dict[str, str] = {}          # instrument text -> board key (the chain's lines + the underlying)
        self._under_key: str | None = None
        self._painted: list[list] | None = None
        self._painted_price: Any = None
        self._info = None                          # the Chain Table and the price cell, read once per refresh:
        self._price_cell: tuple[str, int, int] | None = None    # a COM round trip per flush costs
        self.streaming = False                     # False: one snapshot, no line held
        self.paints = 0                            # body writes so far (tests, status)

    # --- parameters and plan ------------------------------------------------------------------------
    def read_parameters(self, book) -> dict[str, Any]:
        """``{"Underlying", "Expiry", "Strikes"}`` from the named cells (blank -> the template's value).
        Raises ExcelInputError naming the cell for an error value or an empty underlying."""
        names = book.names()
        out = {}
        for label, name, default, _ in OPTIONS_PARAMETERS:
            value = _read_named(book, names, name)
            if isinstance(value, str) and value.strip().startswith("#"):
                raise ExcelInputError(f"Options!{name}: the cell holds the error {value.strip()}")
            out[label] = default if value is None or (isinstance(value, str) and not value.strip()) else value
        return out

    def refresh(self, book, stream: bool = True) -> pd.DataFrame:
        """Read the parameters, plan the chain (``rt.option_chain``), hold its streaming lines and the
        underlying's (releasing the previous chain's), and paint the whole sheet. ``stream`` False (no
        pump to keep it ticking): every row is one snapshot and no line is held. Returns the plan.
        Raises ExcelInputError naming the parameter cell at fault (the status cell says it too)."""
        try:
            params = self.read_parameters(book)
            try:
                plan = self.rt.option_chain(str(params["Underlying"]).strip(), params["Expiry"], params["Strikes"],
                                            stream=stream)
            except Exception as exc:
                raise self._named_error(exc) from exc
        except ExcelInputError as exc:
            self._write_named(book, OPTIONS_STATUS[1], f"#IBXL: {exc}")
            raise
        texts = plan_texts(plan)
        underlying = str(plan["Underlying"].iloc[0]) if len(plan) else None
        wanted = list(dict.fromkeys(texts + ([underlying] if underlying and stream else [])))
        with self._lock:
            old = dict(self._held)
        held: dict[str, str] = {}
        for text in wanted:
            if text in old:
                held[text] = old.pop(text)
                continue
            try:
                held[text] = self.rt._subscribe(text)
            except Exception as exc:                 # one option that will not stream shows waiting
                log.warning("options sheet: %s does not stream: %s", text, exc)
        for key in old.values():
            self._release(key)
        with self._lock:
            self.plan, self.params, self._held, self.streaming = plan, params, held, stream
            self._records = plan_records(plan)
            self._under_key = held.get(underlying) if underlying else None
            self._painted, self._painted_price = None, None
            self._info = None
            self._price_cell = _named_cell(book, book.names(), OPTIONS_UNDER_PRICE[1])
        self.paint(book, full=True)
        streaming = int(plan["Stream"].sum())
        expiry = str(plan["Expiry"].iloc[0]) if len(plan) else ""
        shown = f"{underlying} {expiry[:4]}-{expiry[4:6]}-{expiry[6:8]}: {len(plan)} strikes, "
        if not stream:
            shown += "one snapshot each (Start streaming keeps them ticking)"
        else:
            shown += f"{streaming} streaming" + (f", {len(plan) - streaming} snapshot (line budget)"
                                                 if streaming < len(plan) else "")
        self._write_named(book, OPTIONS_STATUS[1], shown)
        return plan

    def _named_error(self, exc: BaseException) -> ExcelInputError:
        """An argument error of the chain, named as the Options cell that holds the argument."""
        text = str(exc.message if hasattr(exc, "message") and isinstance(exc.message, str) else exc)
        for label, name, _, _ in OPTIONS_PARAMETERS:
            arg = label.lower()
            if text.startswith(f"{arg}: "):
                return ExcelInputError(f"Options!{name}: {text[len(arg) + 2:]}")
        return ExcelInputError(f"Options sheet: {error_text(exc).removeprefix('#IBXL: ')}")

    # --- painting -----------------------------------------------------------------------------------
    def __call__(self, book, changed: list[str]) -> int:
        """The pump's hook: repaint when one of this sheet's lines changed. Returns the write calls."""
        with self._lock:
            mine = set(self._held.values())
        if self.plan is None or not mine.intersection(changed):
            return 0
        return self.paint(book)

    def paint(self, book, full: bool = False) -> int:
        """Write the chain's body (one write per run of chain columns: one for the template) and the
        underlying's price, where they changed (``full``: the whole Table, resized to the plan)."""
        with self._paint_lock:
            return self._paint(book, full)

    def _paint(self, book, full: bool) -> int:
        with self._lock:
            plan, held = self.plan, dict(self._held)
        if plan is None:
            return 0

        def quote_of(text):
            key = held.get(text)
            return self.rt.quote(key) if key is not None else None

        info = self._info if not full and self._info is not None else book.table(CHAIN_TABLE)
        cols = [c for c in info.columns if c in OPTIONS_COLUMNS]
        rows = [[_cell_value(v) for v in r] for r in chain_rows(self._records, quote_of, cols)]
        writes = 0
        if full:
            book.write_table(CHAIN_TABLE, pd.DataFrame(rows, columns=cols, dtype=object), columns=cols)
            self._info = book.table(CHAIN_TABLE)          # resized to the plan
            writes += 1
        else:
            if rows and rows != self._painted:
                col_of = {c: info.column(c) for c in cols}
                for first, last in _runs(list(col_of.values())):
                    idx = [i for i, c in enumerate(cols) if first <= col_of[c] <= last]
                    book.write(info.sheet, info.first_row + 1, first, [[r[i] for i in idx] for r in rows])
                    writes += 1
        with self._lock:
            self._painted = rows
            self.paints += 1 if writes else 0
        price, where = self._price(), self._price_cell
        if price is not None and where is not None and (full or price != self._painted_price):
            book.write(where[0], where[1], where[2], [[price]])
            self._painted_price = price
            writes += 1
        return writes

    def _price(self) -> float | None:
        key = self._under_key
        q = self.rt.quote(key) if key else None
        for v in ((q.last, q.mid, q.close) if q is not None else ()):
            if v is not None and math.isfinite(v) and v > 0:
                return v
        if self.plan is not None and len(self.plan):
            v = self.plan["UnderPrice"].iloc[0]
            return float(v) if v is not None and not pd.isna(v) else None
        return None

    def _write_named(self, book, name: str, value: Any) -> None:
        where = _named_cell(book, book.names(), name)
        if where is not None:
            book.write(where[0], where[1], where[2], [[value]])

    # --- lines --------------------------------------------------------------------------------------
    def _release(self, key: str) -> None:
        try:
            self.rt._unsubscribe(key)
        except Exception as exc:
            log.debug("releasing %s: %s", key, exc)

    def close(self) -> None:
        """Release every line this sheet holds (the pump calls it when it stops)."""
        with self._lock:
            held, self._held = self._held, {}
        for key in held.values():
            self._release(key)


# One OptionsSheet per workbook (book id): refresh_options and option_to_order find the streaming one.
_SHEETS: dict[str, OptionsSheet] = {}
_SHEETS_LOCK = threading.Lock()


def attach(book, rt, pump=None, book_id: str | None = None) -> OptionsSheet | None:
    """Plan and paint the workbook's Options sheet and, with a ``pump``, stream it on the pump's
    cadence (replacing the sheet's earlier painter); without one, paint one snapshot of every row and
    hold no line. None when the workbook has no Chain Table.
    Raises ExcelInputError naming the parameter cell at fault."""
    if not has_options_sheet(book):
        return None
    key = book_id or f"book-{id(book)}"
    with _SHEETS_LOCK:
        sheet = _SHEETS.get(key)
        if sheet is None or sheet.rt is not rt:
            sheet = _SHEETS[key] = OptionsSheet(rt)
    sheet.refresh(book, stream=pump is not None)
    if pump is not None and sheet not in pump.painters:
        pump.painters = [p for p in pump.painters if not isinstance(p, OptionsSheet)] + [sheet]
    return sheet


def sheet_of(book_id: str) -> OptionsSheet | None:
    with _SHEETS_LOCK:
        return _SHEETS.get(book_id)


def _selected_cell(book) -> tuple[str, int, int]:
    """(sheet, row, column) of the active cell: Excel's (xlwings) or the one saved in the file (openpyxl)."""
    inner = getattr(book, "book", None)
    if inner is not None and hasattr(inner, "selection"):
        sel = inner.selection
        if sel is not None:
            return sel.sheet.name, sel.row, sel.column
    if hasattr(book, "workbook"):
        ws = book.workbook.active
        if ws is not None and ws.sheet_view.selection:
            first = ws.sheet_view.selection[0]
            top, left, _, _ = parse_range(str(first.activeCell or first.sqref).split()[0])
            return ws.title, top, left
    raise ExcelInputError("select a cell of the Chain Table on the Options sheet first")


def option_order_row(book, rt, cell: tuple[int, int] | None = None, book_id: str | None = None) -> dict[str, Any]:
    """The Orders row for the selected chain cell (``cell``: (row, column) on the Chain Table's sheet;
    default the selection; ``book_id``: the workbook's, whose streaming Options sheet's chain is used):
    the call when the cell is left of Strike, the put right of it, the strike of its row; BUY 1 LMT at
    the mid of the row's bid and ask (on the option's minTick), TIF DAY, Transmit FALSE. Returns the
    row's input values by Orders header. Raises ExcelInputError naming the cell (outside the chain, on
    Strike or Data, no bid and ask to price from)."""
    info = book.table(CHAIN_TABLE)
    if cell is None:
        sheet, row, col = _selected_cell(book)
        if sheet.casefold() != info.sheet.casefold():
            raise ExcelInputError(f"select a cell of the Chain Table on the {info.sheet} sheet (the selection is "
                                  f"on {sheet})")
    else:
        row, col = cell
    where = f"{info.sheet}!{cell_address(row, col)}"
    if not (info.first_row < row <= info.last_row and info.first_col <= col <= info.last_col):
        raise ExcelInputError(f"{where} is not in the Chain Table ({info.ref}): select a call or put cell of a row")
    strike_col = info.column("Strike")
    if col == strike_col:
        raise ExcelInputError(f"{where} is the Strike: select a cell on the call side (left) or the put side (right)")
    header = info.columns[col - info.first_col]
    if header == "Data":
        raise ExcelInputError(f"{where} is the Data column: select a cell on the call side (left) or the put side")
    side = "Call" if col < strike_col else "Put"
    values = dict(zip(info.columns, book.read(info.sheet, row, info.first_col, row, info.last_col)[0]))
    strike = values.get("Strike")
    if not isinstance(strike, (int, float)) or isinstance(strike, bool):
        raise ExcelInputError(f"{where}: the row has no strike (refresh the options first)")
    plan = _plan_for(book, rt, sheet_of(book_id) if book_id else None)
    match = plan[(plan["Strike"] - float(strike)).abs() < 1e-9]
    text = match[f"{side}Symbol"].iloc[0] if len(match) else None
    if not isinstance(text, str) or not text:
        raise ExcelInputError(f"{where}: strike {strike:g} has no listed {side.lower()} in the chain of "
                              f"{plan['Underlying'].iloc[0] if len(plan) else '?'}; refresh the options")
    bid, ask = values.get(f"{side}Bid"), values.get(f"{side}Ask")
    if not (_number(bid) and _number(ask)) or bid < 0 or ask <= 0:
        raise ExcelInputError(f"{where}: no bid and ask of {text} to price the order from (bid {bid!r}, ask {ask!r})")
    tick = getattr(rt.contracts.qualify(text), "minTick", None) or 0.01
    mid = round_to_tick((bid + ask) / 2, tick)
    return {"Symbol": text, "Action": "BUY", "Quantity": 1, "OrderType": "LMT", "LimitPrice": mid, "TIF": "DAY",
            "OutsideRTH": False, "Transmit": False}


def _plan_for(book, rt, sheet: OptionsSheet | None) -> pd.DataFrame:
    """The chain the sheet shows: the streaming sheet's plan, else planned again from the parameters
    (the runtime keeps the day's listing: no request to IB for the same arguments)."""
    if sheet is not None and sheet.rt is rt and sheet.plan is not None:
        return sheet.plan
    tmp = OptionsSheet(rt)
    params = tmp.read_parameters(book)
    try:
        return rt.option_chain(str(params["Underlying"]).strip(), params["Expiry"], params["Strikes"])
    except Exception as exc:
        raise tmp._named_error(exc) from exc


def _number(v) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def add_order_row(book, info, values: dict[str, Any]) -> int:
    """Write ``values`` (Orders headers -> values, without Ref) into a new row of the Orders Table ``info``:
    the first row below the last filled one (the Table grows by one when it has none free), with the Ref
    OPT-<n> that no row holds yet (``values["Ref"]`` is set to it). Returns the worksheet row. Raises
    TableGrowthError naming the cell when the Table cannot grow (nothing is written)."""
    df = book.read_table(info.name)
    refs = {str(v).strip().upper() for v in df.get("Ref", pd.Series(dtype=object)) if isinstance(v, str)}
    n = 1
    while f"OPT-{n}" in refs:
        n += 1
    values["Ref"] = f"OPT-{n}"
    filled = [int(r) for r, rec in df.iterrows() if not all(_blank(v) for v in rec.values)]
    row = (max(filled) if filled else info.first_row) + 1
    if row > info.last_row:
        book.check_growth(info, row)
        book.resize_table(info.name, row)
    for first, last in _runs([info.column(c) for c in info.columns if c in values]):
        block = [values.get(info.columns[c - info.first_col]) for c in range(first, last + 1)]
        book.write(info.sheet, row, first, [block])
    return row


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v)
