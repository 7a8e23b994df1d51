"""The one Book interface the workbook side codes against, and the value helpers it shares.

Two adapters implement it: :class:`addin.excel.xlwings_book.XlwingsBook` (a live Excel workbook
through xlwings; on Linux tested through xlwings' remote engine) and
:class:`addin.excel.openpyxl_book.OpenpyxlBook` (a workbook file, for headless use).

Coordinates are Excel's: rows and columns are 1-based worksheet numbers. A Table is described by
:class:`TableInfo`, whose ``first_row`` is the header row and ``last_row`` the last body row (Excel
Tables always keep at least one body row, empty or not).

Values are as Excel holds them: numbers (int or float), text, bool, None for an empty cell,
``datetime`` for dates and times (naive: Excel has no time zones; ibxl writes UTC), error values as
their text (``"#N/A"``, ``"#VALUE!"``, ...; :mod:`addin.cells` knows them). A formula cell reads as its
last calculated value.

Text stays text: :meth:`Book.write` (and every Table write built on it) stores a ``str`` as a text
cell, whatever it starts with, because the values ibxl writes come from IB and from other API clients
(orderRefs, messages, symbols, account names): an orderRef ``=HYPERLINK(...)`` must not become a live
formula. Formulas are written only through :meth:`Book.write_formulas`.

A Table never grows over the user's cells: :meth:`Book.write_table` refuses
(:class:`TableGrowthError`, naming the sheet and the first non-empty cell) before writing anything
when a cell the grown Table would write is not empty; code that appends rows itself asks
:meth:`Book.check_growth` first.

``calls`` counts the underlying write and recalculation calls (one per :meth:`Book.write`, table
resize and :meth:`Book.calculate`); the pump's tests count them because on Windows each one is a COM
round trip of about a millisecond.
"""

from __future__ import annotations

import abc
import datetime as dt
import decimal
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Book",
    "TableInfo",
    "BookError",
    "SheetNotFound",
    "TableNotFound",
    "WorkbookLockedError",
    "WouldLosePartsError",
    "TableGrowthError",
    "ConcurrentSaveError",
    "SaveVerificationError",
    "to_cell",
    "check_table_header",
    "frame_to_rows",
    "frame_columns",
    "column_cells",
    "cells_of",
    "column_letter",
    "column_number",
    "cell_address",
    "range_address",
    "parse_range",
]

class BookError(Exception):
    """A workbook operation was refused or failed; the message says which sheet, Table or file."""


class SheetNotFound(BookError, KeyError):
    """No worksheet of that name; the message lists the sheets present."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TableNotFound(BookError, KeyError):
    """No Table of that name; the message lists the Tables present."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkbookLockedError(BookError):
    """The workbook file is open in Excel (or another program) or cannot be opened for writing."""


class WouldLosePartsError(BookError):
    """Saving over the workbook would drop parts openpyxl cannot keep (charts it cannot re-read,
    shapes, form controls, slicers, ...). ``lost`` lists them as ``"<what>: <detail>"`` texts."""

    def __init__(self, message: str, lost: Sequence[str]):
        super().__init__(message)
        self.lost = list(lost)


class TableGrowthError(BookError):
    """A Table would grow over a non-empty cell outside it; ``sheet`` and ``cell`` (A1 style) name the
    first such cell. Nothing of that Table was written."""

    def __init__(self, message: str, sheet: str, cell: str):
        super().__init__(message)
        self.sheet, self.cell = sheet, cell


class ConcurrentSaveError(BookError):
    """The workbook file changed on disk since it was read (another ibxl process or the user saved it)
    and the changes could not be merged: the message names the file and the cells in conflict. The
    file on disk was left as the other writer saved it."""


class SaveVerificationError(BookError):
    """The freshly written file did not read back as a complete workbook; the original is untouched."""


@dataclass(frozen=True)
class TableInfo:
    """An Excel Table (a ListObject): where it is and its header texts.

    ``first_row`` is the header row, ``last_row`` the last body row; all four bounds are 1-based
    worksheet numbers and inclusive. ``columns`` are the header texts, left to right.
    """

    name: str
    sheet: str
    first_row: int
    first_col: int
    last_row: int
    last_col: int
    columns: list[str] = field(default_factory=list)

    @property
    def header_row(self) -> int:
        return self.first_row

    @property
    def ref(self) -> str:
        """The Table's range in A1 style, e.g. ``"A3:P12"``."""
        return range_address(self.first_row, self.first_col, self.last_row, self.last_col)

    def column(self, header: str) -> int:
        """The worksheet column number of ``header``. Raises BookError naming the Table and its
        columns when there is no such header."""
        try:
            return self.first_col + self.columns.index(header)
        except ValueError:
            raise BookError(
                f"Table {self.name!r} on sheet {self.sheet!r} has no column {header!r}; "
                f"its columns are {self.columns}"
            ) from None


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------

_CELL = re.compile(r"^\$?([A-Za-z]{1,3})\$?(\d+)$")


def column_letter(col: int) -> str:
    """1 -> "A", 28 -> "AB". Raises ValueError for col < 1."""
    if col < 1:
        raise ValueError(f"column numbers start at 1, got {col}")
    out = ""
    while col:
        col, rem = divmod(col - 1, 26)
        out = chr(65 + rem) + out
    return out


def column_number(letters: str) -> int:
    """ "A" -> 1, "AB" -> 28."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n


def cell_address(row: int, col: int) -> str:
    """(3, 2) -> "B3"."""
    return f"{column_letter(col)}{row}"


def range_address(top: int, left: int, bottom: int, right: int) -> str:
    """(1, 1, 3, 2) -> "A1:B3"; one cell -> "A1"."""
    if (top, left) == (bottom, right):
        return cell_address(top, left)
    return f"{cell_address(top, left)}:{cell_address(bottom, right)}"


def parse_range(address: str) -> tuple[int, int, int, int]:
    """ "A1:B3", "$A$1:$B$3", "Sheet1!A1:B3" or "B2" -> (top, left, bottom, right).
    Raises ValueError for anything else."""
    text = address.split("!")[-1].strip()
    parts = text.split(":")
    if len(parts) not in (1, 2):
        raise ValueError(f"not a range address: {address!r}")
    coords = []
    for p in parts:
        m = _CELL.match(p)
        if not m:
            raise ValueError(f"not a range address: {address!r}")
        coords.append((int(m.group(2)), column_number(m.group(1))))
    (r1, c1), (r2, c2) = coords[0], coords[-1]
    return min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2)


# ---------------------------------------------------------------------------------------------
# Table layout
# ---------------------------------------------------------------------------------------------

_DEFAULT_COLUMN = re.compile(r"Column\d+")


def _header_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def is_percent_format(fmt: str | None) -> bool:
    """Whether an Excel number format shows its value times 100 with a % sign (a ``%`` outside quotes
    and escapes, in the format's first section): ``"0.00%"`` yes, ``'0.00"%"'`` and ``"0.00\\%"`` no."""
    if not fmt:
        return False
    section = fmt.split(";")[0]
    quoted = escaped = False
    for ch in section:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "%" and not quoted:
            return True
    return False


def check_table_header(info: TableInfo, header: Sequence[Any]) -> None:
    """The one check every adapter's Table reading shares: the Table's column names (its definition,
    ``info.columns``) against the values of its header row cells (``header``, left to right, as read).

    Raises BookError naming the sheet and the cell when: the Table defines a different number of
    columns than its range is wide; a header cell disagrees with its column's name (a Table renamed in
    the file's XML, or whose range was moved off its header row, would otherwise map a row's Limit
    into Quantity); two columns have the same name (trimmed, ASCII case-insensitive). A blank header
    cell is accepted only under a default name (``Column3``), which carries no meaning."""
    where = f"Table {info.name!r} on sheet {info.sheet!r} ({info.ref})"
    width = info.last_col - info.first_col + 1
    if len(info.columns) != width or len(header) != width:
        raise BookError(f"{where}: the Table defines {len(info.columns)} columns but its range is {width} columns "
                        f"wide; repair the Table in Excel (nothing was read from it)")
    seen: dict[str, str] = {}
    for i, (name, cell) in enumerate(zip(info.columns, header)):
        address = cell_address(info.first_row, info.first_col + i)
        shown = _header_text(cell)
        if shown != name and not (shown.strip() == "" and _DEFAULT_COLUMN.fullmatch(name)):
            raise BookError(f"{where}: header cell {info.sheet}!{address} holds {shown!r} but the Table names that "
                            f"column {name!r}: the Table's definition and its header row disagree (edited outside "
                            f"Excel, or the range does not start at the header row); retype the header in Excel. "
                            f"Nothing was read from the Table")
        key = " ".join(name.split())
        key = key.lower() if key.isascii() else key
        if key in seen:
            raise BookError(f"{where}: header cells {info.sheet}!{seen[key]} and {info.sheet}!{address} both name "
                            f"the column {name!r}; every column needs its own name")
        seen[key] = address


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

def to_cell(value: Any) -> Any:
    """A Python, numpy or pandas value as Excel can hold it.

    None, NaN, NaT and pd.NA -> None (empty cell); numpy scalars -> int/float/bool; Decimal -> float;
    pd.Timestamp and datetime -> naive datetime (aware ones are converted to UTC first, since Excel has
    no time zones and ibxl's times are UTC); str, int, float, bool, date, time pass through.
    Raises TypeError naming the value for anything else (lists, dicts, objects).
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else float(value)
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        value = pd.Timestamp(value)
        if value is pd.NaT:
            return None
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, (dt.date, dt.time)):
        return value
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        # Excel holds durations as fractions of a day.
        return pd.Timedelta(value).total_seconds() / 86400.0
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) into a cell")


_PLAIN = frozenset({str, int, bool, type(None)})   # types to_cell returns unchanged


def cells_of(values: Sequence[Sequence[Any]]) -> list[list]:
    """``values`` (rows) with every value through :func:`to_cell`, as new lists. Plain values (str,
    int, bool, None, non-NaN float, naive datetime: most cells) are taken as they are without the
    call: one type test per cell, so a 100k-row block converts in tens of milliseconds."""
    plain, dtime = _PLAIN, dt.datetime
    return [[v if (t := type(v)) in plain or (t is float and v == v)
             or (t is dtime and v.tzinfo is None) else to_cell(v) for v in row] for row in values]


def column_cells(values: Any) -> list:
    """One column (a Series, an Index or an array) as a list of :func:`to_cell` values, converted a
    column at a time: floats with NaN -> None, ints and bools as they are, datetimes (aware ones to
    UTC) -> naive ``datetime`` with NaT -> None; other dtypes value by value."""
    arr = values
    dtype = getattr(arr, "dtype", None)        # a Series' numpy dtype (its .array's is a wrapper)
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        idx = pd.DatetimeIndex(arr)
        if idx.tz is not None:
            idx = idx.tz_convert("UTC").tz_localize(None)
        out = idx.to_pydatetime().tolist()
        if idx.hasnans:
            out = [None if m else v for v, m in zip(out, idx.isna())]
        return out
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        np_arr = arr.to_numpy() if isinstance(arr, (pd.Series, pd.Index)) else np.asarray(arr)
        if dtype.kind == "f":
            nan = np.isnan(np_arr)
            if nan.any():
                obj = np_arr.astype(object)
                obj[nan] = None
                return obj.tolist()
        return np_arr.tolist()         # Python int / float / bool, one C loop
    return cells_of([arr.tolist() if hasattr(arr, "tolist") else list(arr)])[0]


def frame_columns(df: pd.DataFrame, columns: Sequence[str] | None = None) -> list[list]:
    """The body of ``df`` (only ``columns``, in that order, when given) as one list of :func:`to_cell`
    values per column (see :func:`column_cells`). Raises BookError naming missing columns."""
    cols = list(df.columns) if columns is None else list(columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise BookError(f"the DataFrame has no column(s) {missing}; it has {list(df.columns)}")
    return [column_cells(df.iloc[:, i]) for i in (list(df.columns).index(c) for c in cols)]


def frame_to_rows(df: pd.DataFrame, columns: Sequence[str] | None = None) -> list[list]:
    """The body of ``df`` (only ``columns``, in that order, when given) as a list of rows of
    :func:`to_cell` values, converted column-wise (numpy) rather than cell by cell. Raises
    BookError naming missing columns."""
    return [list(row) for row in zip(*frame_columns(df, columns))] if len(df) else []


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted integers -> contiguous (first, last) runs: [1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------

class Book(abc.ABC):
    """A workbook: sheets, Tables, named ranges, rectangles of values.

    Adapters implement the primitives (``sheet_names``, ``add_sheet``, ``tables``, ``names``,
    ``read``, ``formulas``, ``_write_block``, ``_set_table_ref``, ``_calculate``, ``save``, ``close``);
    this class builds the Table operations on them so both adapters behave the same.
    """

    #: True when :meth:`save` writes a file this process controls (the openpyxl adapter): callers
    #: that must make a write durable before acting on it (the Refs of orders about to be sent) save.
    saves_to_file: bool = False

    def __init__(self) -> None:
        self.calls = 0  # underlying write / resize / recalculation calls

    @property
    def workbook_name(self) -> str:
        """The workbook's file name (``orders.xlsm``; no folder, so a moved file stays itself), "" when
        it has none. Part of a blank-Ref order row's identity in the journal."""
        return ""

    # -- primitives ---------------------------------------------------------------------------
    @abc.abstractmethod
    def sheet_names(self) -> list[str]:
        """Worksheet names, in tab order."""

    @abc.abstractmethod
    def add_sheet(self, name: str) -> None:
        """Add a worksheet called ``name`` after the last one; no-op if it exists."""

    @abc.abstractmethod
    def tables(self) -> dict[str, TableInfo]:
        """Every Table in the workbook, by name."""

    @abc.abstractmethod
    def names(self) -> dict[str, str]:
        """Workbook-level named ranges -> their refers-to text as Excel shows it
        (``"=Config!$B$2"``). Sheet-level names and Excel's built-in ``_xlnm.`` names are left out."""

    @abc.abstractmethod
    def read(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[list]:
        """The values of a rectangle (inclusive, 1-based), a list of rows, one read. Cells beyond the
        used range read as None. Raises SheetNotFound."""

    @abc.abstractmethod
    def formulas(self, sheet: str, addresses: list[str]) -> list[str | None]:
        """The formula text (``"=IB_QUOTE(A2)"``) of each cell in ``addresses`` (A1 style, one cell
        each); None for a constant or an empty cell. One read."""

    @abc.abstractmethod
    def _write_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        """Write one validated rectangle with one underlying call. Every ``str`` is stored as text,
        never as a formula (nor as a number, date or bool Excel would parse it into)."""

    def _write_formula_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        """Write one validated rectangle in which text starting with ``=`` is a formula (other values as
        :meth:`_write_block` stores them), with one underlying call. Adapters that cannot write
        formulas leave this as it is: it raises BookError."""
        raise BookError(f"{type(self).__name__} cannot write formulas")

    def _occupied(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[str]:
        """A1 addresses of the cells in the rectangle that hold something (a value, or a merged cell
        where the adapter can tell), top to bottom, left to right. One read."""
        return [cell_address(top + r, left + c)
                for r, row in enumerate(self.read(sheet, top, left, bottom, right))
                for c, v in enumerate(row) if v is not None and v != ""]

    @abc.abstractmethod
    def _set_table_ref(self, info: TableInfo, top: int, left: int, bottom: int, right: int) -> None:
        """Make the Table span the new range (header row stays ``top``)."""

    @abc.abstractmethod
    def _calculate(self, sheet: str, addresses: list[str]) -> None:
        """Recalculate these cells with one underlying call."""

    def _check_table(self, info: TableInfo) -> None:  # noqa: B027 - optional hook, no-op by default
        """Adapter-specific faults of a Table about to be read (merged cells inside it, no header
        row): raise BookError naming the sheet and cell. The header names are checked by
        :func:`check_table_header` for every adapter."""

    def number_formats(self, sheet: str, col: int, rows: Iterable[int]) -> dict[int, str | None]:
        """The number format of the cell in column ``col`` of each worksheet row in ``rows``
        (``"0.00%"``, ``"General"``); None where the adapter cannot tell (the remote engine: its
        payload carries values only)."""
        return dict.fromkeys(rows)

    def hidden_rows(self, sheet: str, top: int, bottom: int) -> set[int]:
        """The worksheet rows in ``top..bottom`` (inclusive) that are hidden: filtered out by an
        AutoFilter or hidden by hand (a file cannot tell the two apart). Adapters that cannot know
        return an empty set (documented per adapter)."""
        return set()

    @abc.abstractmethod
    def save(self, path: str | Path | None = None) -> Path:
        """Save the workbook (to ``path`` when given); returns where it went."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the workbook; the Book is unusable afterwards."""

    # -- built on the primitives ---------------------------------------------------------------
    def has_sheet(self, name: str) -> bool:
        """True when a worksheet called ``name`` exists (Excel's case-insensitive match)."""
        return name.casefold() in {s.casefold() for s in self.sheet_names()}

    def _check_sheet(self, name: str) -> None:
        # Remember sheets seen: on COM every sheet_names() is a round trip, and the pump writes often.
        known = self.__dict__.setdefault("_sheets_seen", set())
        if name in known:
            return
        if not self.has_sheet(name):
            raise SheetNotFound(f"no sheet {name!r} in the workbook; sheets: {self.sheet_names()}")
        known.add(name)

    def table(self, name: str) -> TableInfo:
        """The Table called ``name`` (Excel's case-insensitive match). Raises TableNotFound naming it
        and the Tables present."""
        tables = self.tables()
        if name in tables:
            return tables[name]
        for key, info in tables.items():
            if key.casefold() == name.casefold():
                return info
        raise TableNotFound(f"no Table {name!r} in the workbook; Tables: {sorted(tables) or 'none'}")

    def read_table(self, name: str, *, drop_empty: bool = False) -> pd.DataFrame:
        """A Table's body as a DataFrame (dtype object, values as Excel holds them).

        Columns are the header texts; the index is the worksheet row numbers (``index.name`` =
        ``"row"``), so a row can be written back in place. ``drop_empty`` leaves out rows whose cells
        are all empty (an empty Table still has one body row). One read (the header row with the body).
        Raises TableNotFound, or BookError naming the sheet and cell when the Table is not what its
        cells show (:func:`check_table_header`, and the adapter's own checks: merged cells, no header
        row); nothing is returned from such a Table.
        """
        info = self.table(name)
        self._check_table(info)
        block = self.read(info.sheet, info.first_row, info.first_col, info.last_row, info.last_col)
        check_table_header(info, block[0] if block else [])
        rows = block[1:]
        index = pd.RangeIndex(info.first_row + 1, info.last_row + 1, name="row")
        df = pd.DataFrame(rows, columns=list(info.columns), index=index, dtype=object)
        if drop_empty and len(df):
            keep = [any(v is not None and v != "" for v in row) for row in rows]
            df = df[keep]
        return df

    def write(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        """Write one rectangle whose top-left cell is (``top``, ``left``) with ONE underlying call
        (xlwings: one ``Range.value`` assignment). ``values`` is a non-empty list of equally long
        rows; each value goes through :func:`to_cell`. Text is stored as text, whatever it starts with
        (``"=HYPERLINK(...)"`` lands as those characters, not as a formula): write formulas with
        :meth:`write_formulas`. Raises BookError for a ragged or empty rectangle, TypeError for a
        value no cell can hold, SheetNotFound; nothing is written then."""
        cells = self._checked(sheet, top, left, values)
        self._write_block(sheet, top, left, cells)
        self.calls += 1

    def write_formulas(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        """Like :meth:`write`, but text starting with ``=`` becomes a formula (``"=IB_QUOTE(A2)"``).
        Only for formulas ibxl itself authors: never pass text that came from IB or another client.
        Raises what :meth:`write` raises, and BookError when the adapter cannot write formulas."""
        cells = self._checked(sheet, top, left, values)
        self._write_formula_block(sheet, top, left, cells)
        self.calls += 1

    def _checked(self, sheet: str, top: int, left: int, values: list[list]) -> list[list]:
        """``values`` validated as a rectangle and converted through :func:`to_cell`."""
        if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(r, (list, tuple)) for r in values
        ):
            raise BookError(f"write to {sheet!r} at {cell_address(top, left)}: values must be a non-empty list of rows")
        width = len(values[0])
        if width == 0 or any(len(r) != width for r in values):
            lengths = sorted({len(r) for r in values})
            raise BookError(
                f"write to {sheet!r} at {cell_address(top, left)}: rows must all have the same "
                f"non-zero length, got lengths {lengths}"
            )
        if top < 1 or left < 1:
            raise BookError(f"write to {sheet!r}: rows and columns start at 1, got ({top}, {left})")
        self._check_sheet(sheet)
        return cells_of(values)

    def check_growth(self, info: TableInfo, last_row: int) -> None:
        """Raise TableGrowthError when Table ``info`` cannot end at worksheet row ``last_row`` without
        covering a non-empty cell below it (across the Table's columns; a totals row moves down with
        it, so its new rows count too). No-op when the Table does not grow. One read."""
        if last_row <= info.last_row:
            return
        totals = self._totals_rows(info)
        top, bottom = info.last_row + 1 + totals, last_row + totals
        occupied = self._occupied(info.sheet, top, info.first_col, bottom, info.last_col)
        if occupied:
            more = f" (and {len(occupied) - 1} more)" if len(occupied) > 1 else ""
            raise TableGrowthError(
                f"Table {info.name!r} on sheet {info.sheet!r} would grow to row {last_row} over cell "
                f"{info.sheet}!{occupied[0]}{more}, which is not empty: nothing of {info.name!r} was written. "
                f"Move what is below the Table, or make room for {last_row - info.last_row} more rows",
                info.sheet, occupied[0])

    def _totals_rows(self, info: TableInfo) -> int:
        """Rows of the Table's totals row below its body (0 or 1); adapters that know say so."""
        return 0

    def resize_table(self, name: str, last_row: int) -> None:
        """Make Table ``name`` end at worksheet row ``last_row`` (header kept; at least one body row,
        so ``last_row`` is raised to header + 1). Cells that leave the Table keep their values: use
        :meth:`write_table` to clear them. Growing takes the cells below into the Table as they are
        (rows a user typed under it): nothing is overwritten, so nothing is checked; a caller about to
        write into the new rows calls :meth:`check_growth` first (:meth:`write_table` does). One
        underlying call."""
        info = self.table(name)
        last_row = max(int(last_row), info.first_row + 1)
        if last_row == info.last_row:
            return
        self._set_table_ref(info, info.first_row, info.first_col, last_row, info.last_col)
        self.calls += 1

    def write_table(self, name: str, df: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
        """Replace the body of Table ``name`` with the rows of ``df`` and resize the Table to fit.

        ``columns`` (default: all of ``df``'s columns) are the Table headers to fill, each taken from
        the ``df`` column of the same name; Table columns not listed keep their cells (in new rows they
        start empty). Rows that fall out of the Table when it shrinks are cleared across its width.
        Calls: one write per contiguous run of listed columns, one clearing write when shrinking, one
        resize when the row count changes. An empty ``df`` leaves one empty body row.
        Raises TableNotFound, BookError naming the columns the Table or the DataFrame lacks, or
        TableGrowthError naming the first non-empty cell the grown Table would cover (nothing is
        written then).
        """
        info = self.table(name)
        cols = [str(c) for c in (df.columns if columns is None else columns)]
        unknown = [c for c in cols if c not in info.columns]
        if unknown:
            raise BookError(
                f"Table {name!r} on sheet {info.sheet!r} has no column(s) {unknown}; its columns are "
                f"{info.columns} (add them with add_table_columns, or pass columns=)"
            )
        if len(set(cols)) != len(cols):
            raise BookError(f"write_table {name!r}: columns listed twice in {cols}")
        df = df.set_axis([str(c) for c in df.columns], axis=1)
        values = dict(zip(cols, frame_columns(df, cols)))     # column-wise conversion (numpy)
        n = len(df)
        body_top = info.first_row + 1
        new_last = info.first_row + max(n, 1)
        col_of = {c: info.column(c) for c in cols}
        self.check_growth(info, new_last)
        # Validation is done; from here on only writes.
        for first, last in _runs(col_of.values()):
            run_cols = [c for c in cols if first <= col_of[c] <= last]
            order = sorted(run_cols, key=col_of.__getitem__)
            if n:
                block = [list(row) for row in zip(*(values[c] for c in order))]
            else:
                block = [[None] * len(order)]
            self._write_block(info.sheet, body_top, first, block)
            self.calls += 1
        if new_last < info.last_row:
            width = info.last_col - info.first_col + 1
            blank = [[None] * width for _ in range(info.last_row - new_last)]
            self._write_block(info.sheet, new_last + 1, info.first_col, blank)
            self.calls += 1
        if new_last != info.last_row:
            self._set_table_ref(info, info.first_row, info.first_col, new_last, info.last_col)
            self.calls += 1

    def add_table_columns(self, name: str, headers: Sequence[str]) -> TableInfo:
        """Append the ``headers`` the Table lacks as new columns on its right (a Watchlist with only
        ``Symbol`` gets the standard columns this way). Returns the new TableInfo. One header write
        and one resize, or nothing when every header is present. Raises BookError when the cells to
        the right of the Table are not empty (nothing is overwritten)."""
        info = self.table(name)
        new = [h for h in dict.fromkeys(headers) if h not in info.columns]
        if not new:
            return info
        left = info.last_col + 1
        right = info.last_col + len(new)
        occupied = [
            cell_address(info.first_row + r, left + c)
            for r, row in enumerate(self.read(info.sheet, info.first_row, left, info.last_row, right))
            for c, v in enumerate(row)
            if v not in (None, "")
        ]
        if occupied:
            raise BookError(
                f"cannot add columns {new} to Table {name!r}: cells {occupied[:5]} on sheet "
                f"{info.sheet!r} to its right are not empty"
            )
        self._write_block(info.sheet, info.first_row, left, [list(new)])
        self.calls += 1
        grown = TableInfo(info.name, info.sheet, info.first_row, info.first_col, info.last_row, right,
                          list(info.columns) + new)
        self._set_table_ref(grown, info.first_row, info.first_col, info.last_row, right)
        self.calls += 1
        return grown

    def calculate(self, sheet: str, addresses: list[str]) -> None:
        """Recalculate just the cells in ``addresses`` (A1 style) on ``sheet``, with one underlying
        call (what each adapter can do is in its docstring). No-op for an empty list."""
        if not addresses:
            return
        self._check_sheet(sheet)
        for a in addresses:
            parse_range(a)  # ValueError names a bad address before anything is sent
        self._calculate(sheet, list(addresses))
        self.calls += 1

    def __enter__(self) -> "Book":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
