"""The macros buttons call (``RunPython("import addin.app.macros as m; m.place_orders()")``) and
``ibxl run`` calls on a workbook file.

Each is ``fn(book=None, runtime=None, ...)``: ``book`` is a Book (``addin.excel.book``); None means
the workbook that called (``xw.Book.caller()`` in the xlwings adapter). ``runtime`` is an
``addin.app.runtime.Runtime``; None means the process-wide one (``get_runtime()``, connected on first
use). Layout (sheets, Tables, named ranges) is ``addin.excel.layout``'s.

Every macro writes a line into the Log Table (``LogEntries``) when the workbook has one, and
raises on failure with a message naming the sheet, Table, cell or field (xlwings shows it in a
message box; ``ibxl run`` prints it). Order macros go through the OrderDesk only (parse, qualify,
risk, journal, then placeOrder): a row that fails any step gets its reason in Status/Message and
nothing of it is sent.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import xlwings as xw

from ..account.greeks import greek_totals
from ..cells import CellError, boolean
from ..excel.book import BookError, TableGrowthError, TableNotFound, is_percent_format, parse_range
from ..excel.errors import ExcelInputError
from ..excel.layout import BAR_HEADERS, HISTORY_PARAMETERS, ORDER_OUTPUT_COLUMNS, PNL_NAMES
from ..protocol.orders import PERCENT_COLUMNS
from . import options_sheet

log = logging.getLogger(__name__)

__all__ = ["connect", "disconnect", "start_streaming", "stop_streaming", "pull_history", "place_orders",
           "place_selected_orders", "cancel_selected", "cancel_all", "kill_switch", "reset_kill_switch",
           "refresh_portfolio", "refresh_audit", "refresh_analysis", "refresh_options", "option_to_order",
           "MACROS"]

BARS_COLUMNS = {k: v for k, v in BAR_HEADERS.items() if k != "time"}


# --- plumbing -----------------------------------------------------------------------------------------
def _book(book):
    """The Book to work on: ``book``, else the calling workbook through the xlwings adapter."""
    if book is not None:
        return book
    from ..excel.xlwings_book import XlwingsBook
    return XlwingsBook(xw.Book.caller())


def _runtime(runtime):
    """``runtime``, or the process-wide one (in-process, or the user's ibxl service), not connected here."""
    if runtime is not None:
        return runtime
    from .runtime import get_runtime
    return get_runtime(connect=False)


def _connected(rt) -> None:
    """Connect unless the user pressed Disconnect: then raise UserDisconnected (only Connect ends it)."""
    if rt.user_disconnected:
        from .runtime import UserDisconnected
        raise UserDisconnected()
    rt.connect()


def book_id(book) -> str:
    """The workbook's identity for the runtime's pumps and formula registry: its full name."""
    inner = getattr(book, "book", None)
    for obj in (inner, book):
        name = getattr(obj, "fullname", None)
        if isinstance(name, str) and name:
            return name
    path = getattr(book, "path", None)
    return str(path) if path else f"book-{id(book)}"


# Log lines a workbook refused (a Log Table that cannot grow): ``ibxl run`` reports them as a failure.
_LOG_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_refusals(book) -> list[str]:
    """Why Log lines could not be written into ``book`` since the last call (and forget them)."""
    try:
        return _LOG_REFUSALS.pop(book, [])
    except TypeError:              # a book that cannot be weakly referenced keeps no record
        return []


def _log(book, level: str, message: str) -> None:
    """Append ``(Time UTC, level, "ibxl", message)`` to the LogEntries Table, if the book has one. A
    Log Table that cannot grow (a user's cell below it) is not written; why is kept for
    :func:`log_refusals`."""
    log.log(logging.INFO if level == "INFO" else logging.WARNING, message)
    try:
        info = book.table("LogEntries")
    except (TableNotFound, KeyError):
        return
    try:
        df = book.read_table("LogEntries", drop_empty=True)
        row = info.first_row + 1 + len(df)
        book.check_growth(info, row)                   # never over a user's cell below the Log
        book.write(info.sheet, row, info.first_col,
                   [[datetime.now(UTC), level, "ibxl", message][: info.last_col - info.first_col + 1]])
        if row > info.last_row:
            book.resize_table("LogEntries", row)
    except Exception as exc:       # the log must never hide the macro's own result or error
        log.warning("could not write to the Log sheet: %s", exc)
        try:
            _LOG_REFUSALS.setdefault(book, []).append(f"Log: {exc}")
        except TypeError:
            pass


def _named_value(book, names: dict[str, str], name: str) -> Any:
    ref = names.get(name)
    if ref is None:
        return None
    text = ref.lstrip("=")
    sheet, _, addr = text.rpartition("!")
    sheet = sheet.strip("'").replace("''", "'")
    top, left, _, _ = parse_range(addr)
    return book.read(sheet, top, left, top, left)[0][0]


def _snake_to_header(name: str) -> str:
    """positions / executions columns -> the template's headers: unrealized_pnl -> UnrealizedPnL."""
    return "".join("PnL" if p == "pnl" else p.capitalize() for p in str(name).split("_"))


def _write_table(book, table: str, df: pd.DataFrame) -> int:
    """Write ``df`` (columns already named as the Table's headers) into the Table's matching columns.
    Returns the rows written; 0 when the book has no such Table."""
    try:
        info = book.table(table)
    except (TableNotFound, KeyError):
        return 0
    cols = [c for c in df.columns if c in info.columns]
    book.write_table(table, df[cols], columns=cols)
    return len(df)


def _rows_runs(rows: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for r in sorted(set(rows)):
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def write_outputs(book, info, outputs: dict[int, dict]) -> None:
    """Write order outputs (``{worksheet row: {column: value}}``) into the Orders Table's output
    columns: one write per run of adjacent rows and adjacent output columns (in the template the
    outputs are one block, so one write per run of rows)."""
    cols = sorted((info.first_col + info.columns.index(c), c) for c in ORDER_OUTPUT_COLUMNS if c in info.columns)
    col_runs: list[list[tuple[int, str]]] = []
    for col, name in cols:
        if col_runs and col == col_runs[-1][-1][0] + 1:
            col_runs[-1].append((col, name))
        else:
            col_runs.append([(col, name)])
    for run in _rows_runs(outputs):
        for crun in col_runs:
            book.write(info.sheet, run[0], crun[0][0],
                       [[_cell_value(outputs[r].get(name)) for _, name in crun] for r in run])


def _cell_value(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


def orders_table(book):
    """The Orders Table's TableInfo. Raises ExcelInputError naming the Tables present when missing."""
    try:
        return book.table("Orders")
    except (TableNotFound, KeyError):
        raise ExcelInputError("no Orders Table in the workbook (it holds the order rows: Ref, Symbol, Action, "
                              "Quantity, OrderType, ...)") from None


# Config keys that hold a number of percent (5 = 5%); a percent-formatted Value cell holds a fraction.
PERCENT_KEYS = ("price_band_pct",)


def _read_config(book) -> dict:
    """The Config Table's Key -> Value. A ``PERCENT_KEYS`` value in a cell formatted as a percentage
    (typing 5% stores 0.05) is read as it shows: 5."""
    try:
        df = book.read_table("Config", drop_empty=True)
        info = book.table("Config")
    except (TableNotFound, KeyError):
        return {}
    if "Key" not in df.columns or "Value" not in df.columns:
        return {}
    out = {str(k).strip(): v for k, v in zip(df["Key"], df["Value"]) if k not in (None, "")}
    percent_rows = [int(r) for r, k in df["Key"].items() if str(k).strip() in PERCENT_KEYS
                    and isinstance(df.at[r, "Value"], (int, float)) and not isinstance(df.at[r, "Value"], bool)]
    if percent_rows:
        formats = book.number_formats(info.sheet, info.column("Value"), percent_rows)
        for r in percent_rows:
            if is_percent_format(formats.get(r)):
                key = str(df.at[r, "Key"]).strip()
                out[key] = float(f"{out[key] * 100:.12g}")
    return out


def _desk(book, rt):
    """The OrderDesk with the workbook's Config applied (tightening only); warnings go to the Log."""
    for w in rt.configure_orders(_read_config(book)):
        _log(book, "WARNING", f"Config: {w}")
    return rt.orders


def _selected_rows(book, sheet: str) -> list[int]:
    """Worksheet rows of the current selection on ``sheet``: Excel's selection (xlwings), or the
    selection saved in the file (openpyxl). Raises ExcelInputError when nothing on ``sheet`` is
    selected."""
    inner = getattr(book, "book", None)
    rows: list[int] = []
    if inner is not None and hasattr(inner, "selection"):
        sel = inner.selection
        if sel is not None and sel.sheet.name.casefold() == sheet.casefold():
            rows = list(range(sel.row, sel.row + sel.rows.count))
    elif hasattr(book, "workbook"):
        ws = next((w for w in book.workbook.worksheets if w.title.casefold() == sheet.casefold()), None)
        if ws is not None and ws.sheet_view.selection:
            for rng in str(ws.sheet_view.selection[0].sqref or "").split():
                top, _, bottom, _ = parse_range(rng)
                rows.extend(range(top, bottom + 1))
    if not rows:
        raise ExcelInputError(f"select the rows on the {sheet} sheet first (nothing on {sheet} is selected)")
    return rows


def _blank_status(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and v != v)


def percent_as_shown(book, info, df: pd.DataFrame) -> pd.DataFrame:
    """Percent columns (``PERCENT_COLUMNS``: TrailPercent) hold a number of percent, as IB's
    trailingPercent (1.5 = 1.5%); a cell formatted as a percentage holds a fraction (typing 1.5% stores
    0.015), so its value is taken times 100: what IB gets is what the cell shows. Where the adapter
    cannot tell a cell's format (the remote engine) the value is read as a number of percent."""
    by_name = {" ".join(str(c).split()).lower(): c for c in df.columns}
    for name in PERCENT_COLUMNS:
        col = by_name.get(name.lower())
        if col is None:
            continue
        rows = [r for r, v in df[col].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        if not rows:
            continue
        formats = book.number_formats(info.sheet, info.column(str(col)), [int(r) for r in rows])
        scaled = {r: float(f"{df.at[r, col] * 100:.12g}") for r in rows if is_percent_format(formats.get(int(r)))}
        if scaled:
            df = df.astype({col: object})
            for r, v in scaled.items():
                df.at[r, col] = v
    return df


def order_rows(book, info, rows: Iterable[int] | None, pending_only: bool) -> pd.DataFrame:
    """The Orders Table's rows as read (index: worksheet row numbers): all, or only ``rows``; with
    ``pending_only`` just those whose Status is empty. Percent columns as the cells show them
    (:func:`percent_as_shown`). Raises ExcelInputError for a row outside it."""
    df = percent_as_shown(book, info, book.read_table("Orders", drop_empty=True))
    if rows is not None:
        wanted = set(int(r) for r in rows)
        outside = sorted(wanted - set(range(info.first_row + 1, info.last_row + 1)))
        if outside:
            raise ExcelInputError(f"rows {outside} are outside the Orders Table "
                                  f"(rows {info.first_row + 1}-{info.last_row})")
        df = df[df.index.isin(wanted)]
    if pending_only and "Status" in df.columns:
        df = df[df["Status"].map(_blank_status)]
    return df


# --- connection ---------------------------------------------------------------------------------------
@xw.sub
def connect(book=None, runtime=None) -> dict:
    """Connect to TWS / IB Gateway / the paper gateway (settings: the user's config file), or connect the
    user's ibxl service; ends a Disconnect. Returns the status dict (``Runtime.status``). Raises IBError
    (502 could not connect, 326 client id in use), ServiceError."""
    book, rt = _book(book), _runtime(runtime)
    rt.connect()
    status = rt.status()
    _log(book, "INFO", f"connected to {status['host']}:{status['port']} as client {status['client_id']} "
                       f"(accounts {status['accounts']})")
    return status


@xw.sub
def disconnect(book=None, runtime=None) -> None:
    """Stop streaming into this workbook and disconnect the session (with the ibxl service: the service,
    for every workbook). Nothing reconnects until Connect; formulas show ``#IBXL: disconnected (press
    Connect)``."""
    book, rt = _book(book), _runtime(runtime)
    rt.stop_pump(book_id(book))
    rt.disconnect()
    _log(book, "INFO", "disconnected")


# --- streaming ----------------------------------------------------------------------------------------
@xw.sub
def start_streaming(book=None, runtime=None, interval: float | None = None, run: bool = True):
    """Stream quotes into the Watchlist and order states into the Orders rows (the pump; see
    ``addin.excel.pump``), and keep the workbook's quote formulas ticking. ``interval``: seconds
    between flushes (default 0.25, at least 0.05). ``run``: start the pump thread (False: bind and
    paint once; the caller flushes, as ``ibxl run`` does). Returns the Pump.

    On Windows, called from Excel, the pump thread opens its own COM Book by the workbook's full
    name (xlwings objects never cross threads)."""
    caller = book is None
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    bid = book_id(book)
    if caller and sys.platform == "win32":
        from ..excel.pump import com_book_factory
        pump = rt.start_pump(None, book_id=bid, interval=interval, book_factory=com_book_factory(bid))
    else:
        pump = rt.start_pump(book, book_id=bid, interval=interval, start=run)
    if has_table(book, "Orders"):
        try:
            desk = _desk(book, rt)   # order states flow to the rows only once the desk exists
            for ref, outputs in desk.table().to_dict(orient="index").items():
                pump.on_order(str(ref), outputs)      # every row starts from the journal's truth
        except Exception as exc:     # streaming quotes must not depend on order entry
            _log(book, "WARNING", f"order states will not stream: {exc}")
    if options_sheet.has_options_sheet(book):
        try:                         # the Options chain streams on the same pump; its failure stops nothing else
            options_sheet.attach(book, rt, pump, bid)
        except Exception as exc:
            _log(book, "WARNING", f"options: {exc}")
    _log(book, "INFO", f"streaming started ({pump.interval:g} s flushes)")
    return pump


def has_table(book, name: str) -> bool:
    """Whether the workbook has a Table called ``name``."""
    try:
        book.table(name)
        return True
    except (TableNotFound, KeyError):
        return False


@xw.sub
def stop_streaming(book=None, runtime=None) -> bool:
    """Stop the pump of this workbook and release its Watchlist lines. True if one was running."""
    book, rt = _book(book), _runtime(runtime)
    stopped = rt.stop_pump(book_id(book))
    _log(book, "INFO", "streaming stopped" if stopped else "streaming was not running")
    return stopped


# --- history ------------------------------------------------------------------------------------------
@xw.sub
def pull_history(book=None, runtime=None, progress=None) -> pd.DataFrame:
    """Read the History sheet's parameters (named ranges HistorySymbol, HistoryDuration,
    HistoryBarSize, HistoryWhatToShow, HistoryUseRTH, HistoryEnd), ask IB for the bars
    (``History.bars``) and write them into the Bars Table (Date in UTC, Open, High, Low, Close,
    Volume, WAP, BarCount). ``progress(done, total)``: called as IB's answers arrive (a long range is
    several requests). Returns the DataFrame (``History.bars``'s shape). Raises
    ExcelInputError naming the parameter cell for bad input, IBError for IB's refusals."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    names = book.names()
    params: dict[str, Any] = {}              # label -> cell value (or the template's)
    defaults: dict[str, Any] = {}
    for label, name, default, _ in HISTORY_PARAMETERS:
        value = _named_value(book, names, name)
        params[label] = value if value not in (None, "") or label == "EndDateTime" else default
        defaults[label] = default
    symbol = params["Symbol"]
    if symbol in (None, "") or (isinstance(symbol, str) and symbol.startswith("#")):
        raise ExcelInputError(f"History!HistorySymbol: expected an instrument such as AAPL, got {symbol!r}")
    end = params.get("EndDateTime")
    if end not in (None, ""):
        if not isinstance(end, datetime):
            raise ExcelInputError(f"History!HistoryEnd: expected a date and time (UTC) or empty, got {end!r}")
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
    else:
        end = None
    try:
        use_rth = boolean(params["UseRTH"], "History!HistoryUseRTH", default=defaults["UseRTH"])
    except CellError as exc:
        raise ExcelInputError(str(exc)) from exc
    try:
        df = rt.history.bars(str(symbol).strip(), duration=str(params["Duration"]), bar_size=str(params["BarSize"]),
                             what_to_show=str(params["WhatToShow"]), use_rth=use_rth, end=end,
                             progress=progress)
    except ValueError as exc:      # names the field (duration, bar_size, ...): say which cell holds it
        raise ExcelInputError(f"History sheet: {exc}") from exc
    out = df.rename(columns=BARS_COLUMNS)
    out.insert(0, "Date", df.index)
    written = _write_table(book, "Bars", out.reset_index(drop=True))
    _log(book, "INFO", f"history: {written} bars of {symbol} ({params['Duration']}, {params['BarSize']}, "
                       f"{params['WhatToShow']})")
    return df


# --- orders -------------------------------------------------------------------------------------------
HIDDEN_ROW_MESSAGE = "not placed: the row is hidden (filtered out); show it and place again"


def _place(book, rt, rows: Iterable[int] | None, pending_only: bool) -> pd.DataFrame:
    """Place the rows (``rows``: those worksheet rows, else all). ``pending_only``: rows whose Status is
    filled in were placed before: each is modified or released when edited, else shown as the journal
    has it (``OrderDesk.place``'s ``followed``), never sent as a new order."""
    info = orders_table(book)
    df = order_rows(book, info, rows, pending_only=False)
    read = len(df)
    placed_before = set(df.index[~df["Status"].map(_blank_status)]) if pending_only and "Status" in df.columns \
        else set()
    hidden = sorted(book.hidden_rows(info.sheet, info.first_row + 1, info.last_row) & set(df.index))
    if hidden:              # a row a filter hides is not placed (unseen = unmeant); Status stays blank
        for r in hidden if "Message" in info.columns else ():
            if r not in placed_before:
                book.write(info.sheet, int(r), info.column("Message"), [[HIDDEN_ROW_MESSAGE]])
        df = df[~df.index.isin(hidden)]
    if df.empty:
        _log(book, "INFO", "no order rows to place")
        return pd.DataFrame(columns=["Ref", *ORDER_OUTPUT_COLUMNS, "Outcome"])
    desk = _desk(book, rt)
    ref_col = info.first_col + info.columns.index("Ref") if "Ref" in info.columns else None

    def write_refs(assigned: dict[int, str]) -> None:
        """Before anything is sent: the rows keep their new Refs, durably in a workbook file (saved
        now; a failed save raises, and the desk then sends none of these rows)."""
        if ref_col is None:
            raise BookError("the Orders Table has no Ref column to write the assigned Refs into")
        for row, ref in assigned.items():
            # the keys are the frame's index labels: worksheet row numbers (order_rows)
            book.write(info.sheet, int(row), ref_col, [[ref]])
        if book.saves_to_file:
            book.save()

    # a blank-Ref row is known by workbook, Table and content: a copy under another name is its own row
    out = desk.place(df, write_refs=write_refs, source=f"{book.workbook_name}!{info.name}", followed=placed_before)
    write_outputs(book, info, {int(r): rec for r, rec in out.to_dict(orient="index").items()})
    _log(book, "INFO" if not order_problems(out) else "WARNING", f"orders: {order_counts(out, read)}")
    return out


def refresh_order_rows(book, rt) -> int:
    """Every Orders row whose Ref the journal holds gets the journal's outputs (IB's last word:
    status, fills, average price, commission), so no row keeps a stale Status. Returns the rows
    written; 0 when the workbook has no Orders Table."""
    if not has_table(book, "Orders"):
        return 0
    by_ref = {str(ref).upper(): rec for ref, rec in _desk(book, rt).table().to_dict(orient="index").items()}
    info = orders_table(book)
    rows = order_rows(book, info, None, pending_only=False)
    hidden = book.hidden_rows(info.sheet, info.first_row + 1, info.last_row)    # unseen rows are left alone
    updates = {int(r): by_ref[str(ref).strip().upper()] for r, ref in rows.get("Ref", pd.Series(dtype=object)).items()
               if isinstance(ref, str) and ref.strip().upper() in by_ref and r not in hidden}
    write_outputs(book, info, updates)
    return len(updates)


# Statuses of rows that did not become a working or finished order at IB.
NOT_PLACED = frozenset({"Error", "Refused", "Not sent"})


def order_counts(out: pd.DataFrame, read: int | None = None) -> str:
    """What ``OrderDesk.place`` did with the rows, counted from its Outcome column:
    ``"5 rows read, 1 sent, 1 modified, 2 unchanged, 1 refused"`` (``read``: rows read from the Table,
    default the rows in ``out``; only the outcomes that happened are named)."""
    outcomes = list(out["Outcome"]) if "Outcome" in out.columns else [
        "error" if s == "Error" else "refused" if s == "Refused" else "not sent" if s == "Not sent" else "sent"
        for s in out.get("Status", pd.Series(dtype=object))]
    counts = {o: outcomes.count(o) for o in dict.fromkeys(outcomes) if o}
    n = len(out) if read is None else read
    parts = [f"{n} row{'' if n == 1 else 's'} read", f"{counts.pop('sent', 0)} sent"]
    names = {"error": ("error", "errors")}
    ordered = sorted(counts.items(), key=lambda kv: OUTCOME_ORDER.get(kv[0], len(OUTCOME_ORDER)))
    parts += [f"{n} {names.get(o, (o, o))[n != 1]}" for o, n in ordered]
    return ", ".join(parts)


OUTCOME_ORDER = {o: i for i, o in enumerate(("modified", "released", "unchanged", "already sent", "not modified",
                                             "unconfirmed", "refused", "not sent", "error"))}


def order_problems(out: pd.DataFrame) -> list[str]:
    """``"row N (REF): Status: Message"`` for every row that errored, was refused or was not sent, and
    every modification IB refused or did not confirm."""
    problems = []
    for label, rec in out.iterrows():
        if rec.get("Status") in NOT_PLACED or rec.get("Outcome") in ("not modified", "unconfirmed"):
            ref = rec.get("Ref")
            problems.append(f"row {label}{f' ({ref})' if ref else ''}: {rec.get('Status')}: {rec.get('Message')}")
    return problems


@xw.sub
def place_orders(book=None, runtime=None) -> pd.DataFrame:
    """Place every pending row of the Orders Table (Status empty) through the OrderDesk (parse,
    qualify, risk, journal, placeOrder). Outputs (Ref + Status, OrderId, PermId, Filled, Remaining,
    AvgFillPrice, Commission, Message, Updated) are written into the rows and returned, indexed by
    worksheet row."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    return _place(book, rt, None, pending_only=True)


@xw.sub
def place_selected_orders(book=None, runtime=None, rows: Iterable[int] | None = None) -> pd.DataFrame:
    """Place the selected rows of the Orders Table (``rows``: worksheet row numbers; default Excel's
    selection). A row already sent is not sent again (the OrderDesk's Ref rule)."""
    book, rt = _book(book), _runtime(runtime)
    info = orders_table(book)
    rows = list(rows) if rows is not None else _selected_rows(book, info.sheet)
    _connected(rt)
    return _place(book, rt, rows, pending_only=False)


@xw.sub
def cancel_selected(book=None, runtime=None, rows: Iterable[int] | None = None) -> pd.DataFrame:
    """Cancel the working orders of the selected Orders rows (by Ref). Returns the outputs by Ref and
    writes them into the rows."""
    book, rt = _book(book), _runtime(runtime)
    info = orders_table(book)
    rows = list(rows) if rows is not None else _selected_rows(book, info.sheet)
    df = order_rows(book, info, rows, pending_only=False)
    refs = {int(r): str(v).strip() for r, v in df.get("Ref", pd.Series(dtype=object)).items()
            if v not in (None, "") and not (isinstance(v, float) and v != v)}
    if not refs:
        raise ExcelInputError(f"the selected Orders rows {sorted(rows)} have no Ref: nothing to cancel")
    _connected(rt)
    return cancel_refs(book, rt, list(refs.values()), rows=refs)


def cancel_refs(book, rt, refs: list[str], rows: dict[int, str] | None = None) -> pd.DataFrame:
    """Cancel these Refs through the desk (``OrderDesk.cancel``), write the outputs into their rows
    (``rows``: worksheet row -> Ref; default every Orders row holding one of them) and log one line
    per Ref with its outcome (cancelled, already filled, unknown, not cancellable, ...). Returns the
    desk's frame, indexed by Ref, with Outcome."""
    out = _desk(book, rt).cancel(refs)
    if rows is None and has_table(book, "Orders"):
        info = orders_table(book)
        table = order_rows(book, info, None, pending_only=False)
        wanted = {r.upper() for r in refs}
        rows = {int(r): str(v).strip() for r, v in table.get("Ref", pd.Series(dtype=object)).items()
                if isinstance(v, str) and v.strip().upper() in wanted}
    if rows:
        info = orders_table(book)
        by_ref = {str(ref).upper(): rec for ref, rec in out.to_dict(orient="index").items()}   # indexed by Ref
        write_outputs(book, info, {r: by_ref[ref.upper()] for r, ref in rows.items() if ref.upper() in by_ref})
    said = "; ".join(f"{ref}: {rec['Outcome']}" + (f" ({rec['Message']})" if rec["Outcome"] != "cancelled" else "")
                     for ref, rec in out.iterrows())
    _log(book, "INFO" if (out["Outcome"] == "cancelled").all() else "WARNING", f"cancel: {said}")
    return out


@xw.sub
def cancel_all(book=None, runtime=None) -> None:
    """reqGlobalCancel: cancel every open order of the account(s), from every client and TWS. The
    rows update as IB's answers arrive (while streaming) or with the next refresh."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    _desk(book, rt).cancel_all()
    _log(book, "WARNING", "cancel all: global cancel sent")


@xw.sub
def kill_switch(book=None, runtime=None) -> list[str]:
    """Engage the kill switch: cancel every working order this client placed and refuse new orders
    until reset (it survives restarts). Returns the Refs a cancel was sent for."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    refs = _desk(book, rt).kill()
    _log(book, "WARNING", f"KILL SWITCH engaged; cancels sent for {', '.join(refs) or 'no working orders'}")
    return refs


@xw.sub
def reset_kill_switch(book=None, runtime=None) -> None:
    """Release the kill switch: orders may be placed again."""
    book, rt = _book(book), _runtime(runtime)
    _desk(book, rt).reset_kill()
    _log(book, "WARNING", "kill switch reset")


# --- portfolio ----------------------------------------------------------------------------------------
@xw.sub
def refresh_portfolio(book=None, runtime=None) -> dict[str, int]:
    """Fill the Positions and Account Tables, the P&L named ranges (PnLDaily, PnLUnrealized,
    PnLRealized: the first account's, in its base currency) and the Executions Table from IB
    (``Portfolio``), and the GreekTotals Table with ``greek_totals`` of the very Positions rows written
    (per account x underlying, then the account's total "All"; empty where a greek is unknown). Returns
    ``{table: rows written}``. A Table that would grow over a user's cell is left as it was, the others
    are written (but not GreekTotals when Positions was refused), then TableGrowthError names every
    refusal."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    counts = {}
    refused: list[TableGrowthError] = []   # a Table that cannot grow is skipped; the others are still written
    skipped: set[str] = set()
    positions = rt.positions()
    for table, fetch in (("Positions", lambda: positions), ("GreekTotals", lambda: greek_totals(positions)),
                         ("Account", rt.account_summary), ("Executions", rt.executions)):
        if table == "GreekTotals" and "Positions" in skipped:
            counts[table] = 0              # the totals of Positions rows that were not written: left as they were
            continue
        try:
            counts[table] = _write_table(book, table, fetch().rename(columns=_snake_to_header))
        except TableGrowthError as exc:
            counts[table] = 0
            skipped.add(table)
            refused.append(exc)
    names = book.names()
    pnl = rt.pnl()
    values = dict(zip(("PnLDaily", "PnLUnrealized", "PnLRealized"),
                      (pnl.iloc[0][c] for c in ("daily", "unrealized", "realized"))))
    for _, name in PNL_NAMES:
        ref = names.get(name)
        if ref is None:
            continue
        sheet, _, addr = ref.lstrip("=").rpartition("!")
        top, left, _, _ = parse_range(addr)
        book.write(sheet.strip("'"), top, left, [[_cell_value(float(values[name]))]])
    counts["PnL"] = 1
    counts["Orders"] = refresh_order_rows(book, rt)
    _log(book, "INFO", f"portfolio refreshed: {counts['Positions']} positions, {counts['Executions']} executions, "
                       f"{counts['Orders']} order rows")
    if refused:
        raise TableGrowthError("; ".join(map(str, refused)), refused[0].sheet, refused[0].cell)
    return counts


# --- audit --------------------------------------------------------------------------------------------
@xw.sub
def refresh_audit(book=None, runtime=None, tz=None) -> pd.DataFrame:
    """Write the audit trail of every order into the Audit Table: ``addin.orders.audit.audit_frame`` of
    the OrderDesk's journal (one row per intent, placeOrder, modify, cancel, IB status, fill and
    commission, newest first; columns ``layout.AUDIT_COLUMNS``, those the Table has).

    Time is written as naive wall time in ``tz`` (an IANA or IB zone name; default this machine's
    local zone): Excel cells hold no time zone. Text from IB (Status, Detail, Ref) lands as text,
    never as a formula. Needs no connection. Returns the frame (Time tz-aware). A workbook without an
    Audit Table is left alone. Raises TableGrowthError when the Table would grow over a user's cell
    (nothing is written), JournalError when the journal cannot be read."""
    book, rt = _book(book), _runtime(runtime)
    df = _desk(book, rt).audit(tz)
    written = _write_table(book, "Audit", df.assign(Time=df["Time"].dt.tz_localize(None)))
    _log(book, "INFO", f"audit: {written} events")
    return df


# --- analysis -----------------------------------------------------------------------------------------
@xw.sub
def analysis_basket(book) -> list[dict]:
    """The Orders Table's rows as ``{column: cell value}`` dicts ([] without an Orders Table): the what-if
    basket of the analysis (``Runtime.analysis`` keeps the rows with no Status)."""
    orders = book.read_table("Orders", drop_empty=True) if has_table(book, "Orders") else None
    return [] if orders is None else [{k: _cell_value(v) for k, v in row.items()}
                                      for row in orders.to_dict("records")]


def refresh_analysis(book=None, runtime=None) -> dict[str, int]:
    """Fill the Analysis sheet's Tables, charts' data and method note (``analysis_sheet.write_analysis``)
    with the portfolio analysis report from IB (``Runtime.analysis``: positions, account values,
    reqPnLSingle, daily bars through the per-day cache), its what-if from the Orders rows not sent yet
    (no Status). Returns ``{Table: rows written}``. Raises TableNotFound when the workbook has no
    Analysis Tables, TableGrowthError naming the first user cell a Table would cover (nothing written),
    BookError naming a report table that lacks a column, IBError / RequestTimeout from IB."""
    from .analysis_sheet import write_analysis

    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    counts = write_analysis(book, rt.analysis(analysis_basket(book)))
    _log(book, "INFO", f"analysis refreshed: {counts.get('PositionPnL', 0)} position rows, "
                       f"{counts.get('Correlation', 0)} holdings in the correlation matrix")
    return counts


# --- options ------------------------------------------------------------------------------------------
@xw.sub
def refresh_options(book=None, runtime=None):
    """Paint the Options sheet's chain again from its parameters (OptionsUnderlying, OptionsExpiry,
    OptionsStrikes): a new plan, its lines held (the previous chain's released), every cell written;
    while the workbook streams it keeps ticking on the pump. Returns the OptionsSheet. Raises
    ExcelInputError naming the parameter cell at fault, or when the workbook has no Chain Table."""
    book, rt = _book(book), _runtime(runtime)
    if not options_sheet.has_options_sheet(book):
        raise ExcelInputError("no Chain Table in the workbook (the Options sheet holds it)")
    _connected(rt)
    bid = book_id(book)
    sheet = options_sheet.attach(book, rt, rt.pump(bid), bid)
    _log(book, "INFO", f"options: {len(sheet.plan)} strikes of {sheet.plan['Underlying'].iloc[0]} "
                       f"{sheet.plan['Expiry'].iloc[0]}" if sheet is not None and len(sheet.plan) else "options: empty")
    return sheet


@xw.sub
def option_to_order(book=None, runtime=None, cell: tuple[int, int] | None = None) -> int:
    """A new Orders row for the selected cell of the Options chain (``cell``: (row, column); default
    the selection): the call or the put by the cell's side of Strike, the strike of its row, BUY 1 LMT
    at the mid, TIF DAY, Transmit FALSE, and a new Ref OPT-<n>. Nothing is sent: place the row (or set
    Transmit TRUE) yourself. Returns the Orders row written. Raises ExcelInputError naming the cell."""
    book, rt = _book(book), _runtime(runtime)
    _connected(rt)
    values = options_sheet.option_order_row(book, rt, cell, book_id(book))
    row = options_sheet.add_order_row(book, orders_table(book), values)
    _log(book, "INFO", f"options: Orders row {row} {values['Ref']}: BUY 1 {values['Symbol']} LMT "
                       f"{values['LimitPrice']:g} (Transmit FALSE: not sent)")
    return row


# The macros buttons call, by name (the workbook builder and ``ibxl run`` use this table).
MACROS = {f.__name__: f for f in (connect, disconnect, start_streaming, stop_streaming, pull_history, place_orders,
                                  place_selected_orders, cancel_selected, cancel_all, kill_switch,
                                  reset_kill_switch, refresh_portfolio, refresh_audit, refresh_analysis,
                                  refresh_options, option_to_order)}
