"""Write a portfolio analysis report into the Analysis sheet (issue 18): ``ibxl run --analysis``, the demo
and the ``refresh_analysis`` macro call :func:`write_analysis`.

The report is ``{table name: DataFrame}`` with the columns of ``layout.ANALYSIS_COLUMNS`` (built by
``addin.analysis``): each frame replaces the body of the Table of its name on the Analysis sheet
(``workbooks/build.py`` lays them out), through the :class:`~addin.excel.book.Book` interface, so the
same call works on a workbook file (openpyxl) and on live Excel (xlwings, the remote engine included).

How the charts follow their Tables: every chart plots whole body columns of a Table.

- The exposure, equity-curve and VaR-history charts show Account ``All`` only, so they read small chart
  data Tables (``CHART_SOURCES``: ChartSecType, ChartCurrency, ChartEquity, ChartVaR) that this writer
  fills from the report, contiguously, each time.
- In a file, the openpyxl adapter re-points every chart series that starts at a Table's first body row
  to the Table's new last row when it resizes the Table (``addin.excel.openpyxl_book._set_ref``).
- In live Excel, Excel itself extends and shrinks a chart series that covers a whole Table column when
  the Table is resized (what Excel does for charts built on Tables); nothing is re-pointed by ibxl there.

The correlation matrix's Table changes width with the holdings: its header row (Symbol, then one
column per holding) is rewritten and the Table resized to it; its colour scale is a conditional format
of the template over every cell the matrix can reach.

Every value is written as a value: text from IB (a symbol ``=HYPERLINK(...)``) lands as text, never as
a formula (``Book.write``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import pandas as pd
from openpyxl.styles import Alignment, Font, PatternFill

from ..excel.book import Book, BookError, TableGrowthError, TableInfo, cell_address, frame_columns, parse_range
from ..excel.layout import ANALYSIS_COLUMNS, ANALYSIS_CORRELATION_NAME
from ..excel.openpyxl_book import OpenpyxlBook

__all__ = ["write_analysis", "chart_frames", "CHART_SOURCES", "ALL_ACCOUNTS", "NOTE_NAME", "METHOD_NOTE", "REPORT_NOTE",
           "CLIP"]

ALL_ACCOUNTS = "All"
#: The workbook-level name of the note cell stating the VaR / ES method.
NOTE_NAME = "AnalysisNote"
#: The note once a report's Summary carries its VaR95 Note for All (method, window, as of).
REPORT_NOTE = "VaR and ES at 95% and 99% ([analysis] window_days in the config file): {note}"
METHOD_NOTE = ("VaR and ES: one-day historical simulation at 95% and 99% (today's positions revalued on each past "
               "day's returns over the window: [analysis] window_days in the config file, default 252 daily "
               "bars; losses shown positive, in the base currency).")

#: Chart data Table -> (report table, the ``By`` rows it takes or None, {chart column: report column}).
#: Account ``All`` rows only; exposure groups largest Gross first, dated rows oldest first.
CHART_SOURCES: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "ChartSecType": ("Exposure", "SecType", {"SecType": "Group", "Gross": "Gross", "Net": "Net"}),
    "ChartCurrency": ("Exposure", "Currency", {"Currency": "Group", "Gross": "Gross", "Net": "Net"}),
    "ChartEquity": ("PnLByDay", None, {"Date": "Date", "NetLiquidation": "NetLiquidation"}),
    "ChartVaR": ("VaRHistory", None, {"Date": "Date", "VaR95": "VaR95", "VaR99": "VaR99"}),
}


def _checked(report: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The report's frames, their column names as text; BookError naming the Table for an unknown
    table name, a frame that is not a DataFrame, a missing column or a bad correlation header."""
    out = {}
    for name, df in report.items():
        if name not in ANALYSIS_COLUMNS:
            raise BookError(f"analysis report: {name!r} is not an Analysis Table; the Tables are "
                            f"{list(ANALYSIS_COLUMNS)}")
        if not isinstance(df, pd.DataFrame):
            raise BookError(f"analysis report: Table {name!r} must be a pandas DataFrame, got {type(df).__name__}")
        df = df.set_axis([str(c) for c in df.columns], axis=1)
        missing = [c for c in ANALYSIS_COLUMNS[name] if c not in df.columns]
        if missing:
            raise BookError(f"analysis report: the frame for Table {name!r} lacks column(s) {missing}; "
                            f"its columns are {list(df.columns)}, the Table's {ANALYSIS_COLUMNS[name]}")
        if name == ANALYSIS_CORRELATION_NAME:
            holdings = _holdings(df)
            seen: dict[str, str] = {}
            for h in holdings:
                key = " ".join(h.split()).casefold()
                if not key or key == "symbol" or key in seen:
                    raise BookError(f"analysis report: Table {name!r} needs one column per holding, each named "
                                    f"once and not 'Symbol' or blank; got {['Symbol', *holdings]}")
                seen[key] = h
        out[name] = df
    return out


def _holdings(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "Symbol"]


def chart_frames(report: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The chart data Tables' rows (``CHART_SOURCES``) from the report: Account ``All`` only, exposure
    groups by descending Gross, dated rows by ascending Date. A chart whose report table is absent is
    left out (its Table keeps what it holds)."""
    out = {}
    for chart, (source, by, columns) in CHART_SOURCES.items():
        df = report.get(source)
        if df is None:
            continue
        rows = df[df["Account"].astype(str) == ALL_ACCOUNTS]
        if by is not None:
            rows = rows[rows["By"].astype(str) == by]
            rows = rows.assign(_key=pd.to_numeric(rows["Gross"], errors="coerce").abs())
            rows = rows.sort_values("_key", ascending=False, kind="stable")
        else:
            rows = rows.sort_values("Date", kind="stable")
        out[chart] = pd.DataFrame({c: rows[src].to_list() for c, src in columns.items()}, columns=list(columns))
    return out


def write_analysis(book: Book, report: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Write ``report`` (``{table: DataFrame}``, the columns of ``layout.ANALYSIS_COLUMNS``; Account
    ``"All"`` is every account together) into the Analysis sheet's Tables of ``book`` (any Book
    adapter), then the chart data Tables (``CHART_SOURCES``) and the note cell (``NOTE_NAME``: the
    method, with the Summary's VaR95 Note of All when it has one). Nothing is saved. Returns
    ``{Table: rows written}`` for the report's Tables and the chart data Tables.

    Each Table is resized to its frame's rows (an empty frame leaves one empty row); extra frame
    columns are ignored; a table absent from the report is left as it is. The Correlation Table takes
    the frame's columns (Symbol, then one per holding) as its header.
    Raises BookError naming the Table for an unknown table name or a frame lacking a column (nothing
    written), TableNotFound when the workbook has no such Table, TableGrowthError naming the first
    non-empty cell a Table would grow over (checked for every Table before anything is written)."""
    frames = _checked(report)
    charts = chart_frames(frames)
    infos = {name: book.table(name) for name in [*frames, *charts]}
    for name, df in frames.items():          # every refusal before the first write
        if name == ANALYSIS_CORRELATION_NAME:
            _check_matrix_room(book, infos[name], df)
        else:
            book.check_growth(infos[name], infos[name].first_row + max(len(df), 1))
    for name, df in charts.items():
        book.check_growth(infos[name], infos[name].first_row + max(len(df), 1))
    for name, df in frames.items():
        if name == ANALYSIS_CORRELATION_NAME:
            _write_matrix(book, infos[name], df)
        else:
            book.write_table(name, df, columns=ANALYSIS_COLUMNS[name])
    if "Summary" in frames:
        _clip_notes(book, infos["Summary"], len(frames["Summary"]))
    for name, df in charts.items():
        book.write_table(name, df, columns=list(df.columns))
    _write_note(book, frames.get("Summary"))
    if isinstance(book, OpenpyxlBook):
        _file_finish(book, {info.sheet for info in infos.values()}, infos.get(ANALYSIS_CORRELATION_NAME),
                     frames.get(ANALYSIS_CORRELATION_NAME))
    return {name: len(df) for name, df in [*frames.items(), *charts.items()]}


def _matrix_shape(info: TableInfo, df: pd.DataFrame) -> tuple[int, int]:
    """(last row, last column) of the Correlation Table holding ``df``."""
    return info.first_row + max(len(df), 1), info.first_col + len(_holdings(df))


def _check_matrix_room(book: Book, info: TableInfo, df: pd.DataFrame) -> None:
    """TableGrowthError naming the first non-empty cell the matrix would take outside its Table now."""
    bottom, right = _matrix_shape(info, df)
    top, left = info.first_row, info.first_col
    if bottom <= info.last_row and right <= info.last_col:
        return
    block = book.read(info.sheet, top, left, max(bottom, top), max(right, left))
    for r, row in enumerate(block, start=top):
        for c, v in enumerate(row, start=left):
            inside = r <= info.last_row and c <= info.last_col
            if not inside and r <= bottom and c <= right and v not in (None, ""):
                cell = cell_address(r, c)
                raise TableGrowthError(
                    f"Table {info.name!r} on sheet {info.sheet!r} would grow to {cell_address(bottom, right)} over "
                    f"cell {info.sheet}!{cell}, which is not empty: nothing was written. Move what is below or to "
                    f"the right of the correlation matrix", info.sheet, cell)


def _write_matrix(book: Book, info: TableInfo, df: pd.DataFrame) -> None:
    """The Correlation Table as ``df``: header Symbol + holdings, one row per row of ``df``.

    Order, so no header of the Table is ever a duplicate while it changes: shrink the Table to its
    Symbol column, write the header and body in one rectangle, clear what the old matrix held outside
    the new one, resize the Table to the new matrix (its column names are the header cells)."""
    columns = ["Symbol", *_holdings(df)]
    bottom, right = _matrix_shape(info, df)
    top, left = info.first_row, info.first_col
    book._set_table_ref(info, top, left, info.last_row, left)     # Book has no public width resize
    if len(df):
        body = [list(row) for row in zip(*frame_columns(df, columns))]
    else:
        body = [[None] * len(columns)]
    book.write(info.sheet, top, left, [list(columns), *body])
    if info.last_row > bottom:                                     # old rows below the new matrix
        book.write(info.sheet, bottom + 1, left, [[None] * (info.last_col - left + 1)
                                                  for _ in range(info.last_row - bottom)])
    if info.last_col > right:                                      # old columns to its right
        book.write(info.sheet, top, right + 1, [[None] * (info.last_col - right)
                                                for _ in range(min(info.last_row, bottom) - top + 1)])
    narrow = TableInfo(info.name, info.sheet, top, left, info.last_row, left, ["Symbol"])
    book._set_table_ref(narrow, top, left, bottom, right)


#: What the column right of the Summary holds beside each of its rows: a Note (a sentence) would otherwise
#: spill over the empty cells to its right, across and between the charts; any content there stops it.
CLIP = " "


def _clip_notes(book: Book, info: TableInfo, rows: int) -> None:
    """:data:`CLIP` in the column right of the Summary Table beside its ``rows`` body rows, cleared below
    them down to where the Table ended before; left alone when that column holds anything else (the
    user's)."""
    col, top = info.last_col + 1, info.first_row + 1
    bottom = max(info.last_row, top + rows - 1)
    held = [row[0] for row in book.read(info.sheet, top, col, bottom, col)]
    if any(v not in (None, "", CLIP) for v in held):
        return
    want = [CLIP] * rows + [None] * (bottom - top + 1 - rows)
    if want != held:
        book.write(info.sheet, top, col, [[v] for v in want])


def _write_note(book: Book, summary: pd.DataFrame | None) -> None:
    """The note cell: the report's VaR95 Note for All (method, window, as of) after the confidence levels,
    else the method as the template states it."""
    ref = book.names().get(NOTE_NAME)
    if ref is None:
        return
    sheet, _, address = ref.lstrip("=").rpartition("!")
    top, left, _, _ = parse_range(address)
    text = METHOD_NOTE
    if summary is not None:
        rows = summary[(summary["Account"].astype(str) == ALL_ACCOUNTS) & (summary["Measure"].astype(str) == "VaR95")]
        note = next((str(v) for v in rows["Note"] if isinstance(v, str) and v.strip()), None)
        if note:
            text = REPORT_NOTE.format(note=note)
    book.write(sheet.strip("'").replace("''", "'"), top, left, [[text]])


def _file_finish(book: OpenpyxlBook, sheets: set[str], matrix: TableInfo | None, df: pd.DataFrame | None) -> None:
    """What a file needs that live Excel does itself.

    - Bar charts' value axes hold 0: the openpyxl adapter fits every line and bar chart's value axis to
      its data (right for prices), but an exposure bar must start at 0.
    - The correlation matrix's header cells look like the Table's header (Excel draws a Table's header
      from its style; LibreOffice and other viewers show cell formats only); cells it no longer spans
      lose that look."""
    wb = book.workbook
    for sheet in sheets:
        for chart in getattr(wb[sheet], "_charts", []):
            if getattr(chart, "tagname", "") != "barChart" or chart.y_axis is None:
                continue
            scaling = chart.y_axis.scaling
            if scaling.min is not None and scaling.min > 0:
                scaling.min = 0.0
            if scaling.max is not None and scaling.max < 0:
                scaling.max = 0.0
    if matrix is None or df is None:
        return
    ws = wb[matrix.sheet]
    _, right = _matrix_shape(matrix, df)
    first = ws.cell(row=matrix.first_row, column=matrix.first_col)
    for col in range(matrix.first_col + 1, max(right, matrix.last_col) + 1):
        cell = ws.cell(row=matrix.first_row, column=col)
        if col <= right:
            cell._style = copy.copy(first._style)
        else:
            cell.font, cell.fill, cell.alignment = Font(), PatternFill(), Alignment()
