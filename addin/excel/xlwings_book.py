"""The Book interface on a live workbook, through xlwings' Book/Sheet/Range/Table API only.

Engines:

- Excel on Windows (COM) and macOS (AppleScript): reads and writes go straight to Excel. One
  :meth:`Book.write` is one ``Range.value`` assignment; :meth:`calculate` is one
  ``Range("A1,B7,...").api.Calculate()`` (Windows) / ``calculate`` (macOS) on the union of the cells.
  Excel's Range() takes at most 255 characters of address text, so a longer list recalculates the
  cells' bounding rectangle instead (still one call, still far less than the workbook).
- xlwings' remote engine (``xw.Book(json=...)``: xlwings Server / Lite, and how ibxl tests this
  adapter on Linux): reads come from the workbook payload the client sent; writes, resizes and
  recalculations are queued as actions in ``book.json()`` for the client to apply when the call
  returns, so a read does not see this call's writes. Office.js has no per-range recalculation, so
  :meth:`calculate` queues ONE ``calculate`` action (``App.calculate()``: Excel recalculates what is
  dirty, which includes the quote formulas since their inputs changed).

Text stays text: Excel parses a value assigned to a range as if it were typed, so text starting with
``=`` (``+``, ``-``, ``@`` too) would become a formula and text such as ``"0012"``, ``"1-2"`` or
``"TRUE"`` a number, date or bool. :meth:`_write_block` prefixes such text with an apostrophe, Excel's
own "this is text" mark (COM and Office.js both honour it; the cell's value is the text without it).
:meth:`Book.write_formulas` assigns text starting with ``=`` unprefixed.

The adapter never closes the user's workbook: :meth:`close` only drops the reference.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .book import (
    Book,
    BookError,
    SheetNotFound,
    TableInfo,
    parse_range,
    range_address,
)

__all__ = ["XlwingsBook"]

_MAX_ADDRESS_TEXT = 255  # Excel's limit for the address text given to Range()

# Text Excel would not keep as typed: a formula, error or prefix sign first (ASCII or full-width), anything
# holding a digit (numbers, dates, times, percentages, fractions), or a boolean.
_REINTERPRETED = re.compile(r"^\s*[=+\-@#'\uff1d\uff0b\uff0d\uff20]|\d|^\s*(true|false)\s*$", re.IGNORECASE)


def as_text(value: Any) -> Any:
    """``value`` as Excel must be handed it to store it as this exact text: a str Excel would turn
    into a formula, number, date or bool gets a leading apostrophe; anything else is returned as is."""
    if isinstance(value, str) and value and _REINTERPRETED.search(value):
        return "'" + value
    return value


class XlwingsBook(Book):
    """``XlwingsBook(book)`` with ``book`` an ``xlwings.Book`` (desktop or remote engine)."""

    def __init__(self, book):
        super().__init__()
        self.book = book
        self.engine = book.app.engine.name if book.app is not None else "remote"

    @property
    def workbook_name(self) -> str:
        return str(self.book.name or "") if self.book is not None else ""

    # -- helpers ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.book is None:
            raise BookError("this workbook has been closed")

    def _sheet(self, name: str):
        self._check_open()
        for sheet in self.book.sheets:
            if sheet.name.casefold() == name.casefold():
                return sheet
        raise SheetNotFound(f"no sheet {name!r} in the workbook; sheets: {self.sheet_names()}")

    def _xl_table(self, info: TableInfo):
        sheet = self._sheet(info.sheet)
        for t in sheet.tables:
            if t.name == info.name:
                return sheet, t
        raise BookError(f"Table {info.name!r} is no longer on sheet {info.sheet!r}")

    @property
    def is_remote(self) -> bool:
        return self.engine == "remote"

    # -- structure ----------------------------------------------------------------------------
    def sheet_names(self) -> list[str]:
        self._check_open()
        return [s.name for s in self.book.sheets]

    def add_sheet(self, name: str) -> None:
        if self.has_sheet(name):
            return
        sheets = self.book.sheets
        sheets.add(name=name, after=sheets[len(sheets) - 1])

    def tables(self) -> dict[str, TableInfo]:
        self._check_open()
        out: dict[str, TableInfo] = {}
        for sheet in self.book.sheets:
            for t in sheet.tables:
                rng = t.range
                if rng is None:
                    continue
                top, left, bottom, right = parse_range(rng.address)
                if t.show_totals:
                    bottom -= 1
                header = sheet.range((top, left), (top, right)).options(ndim=2).value[0]
                columns = ["" if h is None else str(h) for h in header]
                out[t.name] = TableInfo(t.name, sheet.name, top, left, bottom, right, columns)
        return out

    def names(self) -> dict[str, str]:
        self._check_open()
        out = {}
        for n in self.book.names:
            name = n.name
            if "!" in name or name.startswith("_xlnm."):
                continue  # sheet-level or built-in
            out[name] = n.refers_to
        return out

    def _check_table(self, info: TableInfo) -> None:
        """The Table's header row must be shown and be the first row of its range (else the first
        row read as headers is data). Excel itself keeps column names equal to the header cells and
        allows no merged cells in a Table, so those need no check here."""
        _, t = self._xl_table(info)
        where = f"Table {info.name!r} on sheet {info.sheet!r} ({info.ref})"
        header = t.header_row_range if t.show_headers else None
        first = range_address(info.first_row, info.first_col, info.first_row, info.last_col)
        if header is None:
            raise BookError(f"{where} has no header row (its first row {info.sheet}!{first} is data); turn "
                            f"Table Design > Header Row on. Nothing was read from the Table")
        if parse_range(header.address) != parse_range(first):
            raise BookError(f"{where}: its header row is {info.sheet}!{header.address.replace('$', '')}, not the "
                            f"first row of its range {info.sheet}!{first}; repair the Table in Excel. Nothing was "
                            f"read from the Table")

    def number_formats(self, sheet: str, col: int, rows: Iterable[int]) -> dict[int, str | None]:
        """Per cell through Excel (``Range.NumberFormat``; only a few columns ask). The remote engine's
        payload carries no formats: None there."""
        rows = list(rows)
        if self.is_remote:
            return dict.fromkeys(rows)
        sh = self._sheet(sheet)
        return {r: sh.range((r, col)).number_format for r in rows}

    def hidden_rows(self, sheet: str, top: int, bottom: int) -> set[int]:
        """Hidden rows (filtered out or hidden by hand) through Excel on Windows: one
        ``SpecialCells(xlCellTypeVisible)`` call. The remote engine's payload and macOS carry no row
        visibility: an empty set there."""
        if self.is_remote or sys.platform != "win32":
            return set()
        rng = self._sheet(sheet).range((top, 1), (bottom, 1))
        try:
            visible_areas = rng.api.SpecialCells(12).Areas       # 12 = xlCellTypeVisible
        except Exception:                                        # COM raises when no cell is visible
            return set(range(top, bottom + 1))
        visible: set[int] = set()
        for k in range(1, visible_areas.Count + 1):
            area = visible_areas.Item(k)
            visible.update(range(area.Row, area.Row + area.Rows.Count))
        return set(range(top, bottom + 1)) - visible

    # -- values -------------------------------------------------------------------------------
    def read(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[list]:
        sh = self._sheet(sheet)
        values = sh.range((top, left), (bottom, right)).options(ndim=2, err_to_str=True).value
        return [list(row) for row in values]

    def formulas(self, sheet: str, addresses: list[str]) -> list[str | None]:
        """One read of the bounding rectangle's formulas (desktop engines). The remote engine's
        payload carries no formulas: raises BookError there."""
        sh = self._sheet(sheet)
        if not addresses:
            return []
        if self.is_remote:
            raise BookError("the xlwings remote engine does not send formulas; formulas() needs desktop Excel")
        cells = [parse_range(a)[:2] for a in addresses]
        top = min(r for r, _ in cells)
        left = min(c for _, c in cells)
        bottom = max(r for r, _ in cells)
        right = max(c for _, c in cells)
        block = sh.range((top, left), (bottom, right)).formula
        if not isinstance(block, tuple):
            block = ((block,),)
        out = []
        for r, c in cells:
            f = block[r - top][c - left]
            out.append(f if isinstance(f, str) and f.startswith("=") else None)
        return out

    def _write_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        self._assign(sheet, top, left, [[as_text(v) for v in row] for row in values])

    def _write_formula_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        self._assign(sheet, top, left, [[v if isinstance(v, str) and v.startswith("=") else as_text(v)
                                         for v in row] for row in values])

    def _assign(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        sh = self._sheet(sheet)
        bottom = top + len(values) - 1
        right = left + len(values[0]) - 1
        # The full rectangle, not its top-left cell: one Range.value call of exactly that shape.
        sh.range((top, left), (bottom, right)).value = values

    def _totals_rows(self, info: TableInfo) -> int:
        return 1 if self._xl_table(info)[1].show_totals else 0

    def _set_table_ref(self, info: TableInfo, top: int, left: int, bottom: int, right: int) -> None:
        sheet, table = self._xl_table(info)
        if table.show_totals:
            bottom += 1
        table.resize(sheet.range(range_address(top, left, bottom, right)))

    def _calculate(self, sheet: str, addresses: list[str]) -> None:
        if self.is_remote:
            # App.calculate() queues on the *active* book; queue on this one (the same action).
            self.book.impl.append_json_action(func="calculate", args=[])
            return
        sh = self._sheet(sheet)
        text = ",".join(a.replace("$", "") for a in addresses)
        if len(text) > _MAX_ADDRESS_TEXT:
            # Range() refuses longer address text: recalculate the rows that hold the cells, which is
            # still one call and still far less than the whole workbook.
            cells = [parse_range(a) for a in addresses]
            top = min(c[0] for c in cells)
            bottom = max(c[2] for c in cells)
            left = min(c[1] for c in cells)
            right = max(c[3] for c in cells)
            text = range_address(top, left, bottom, right)
        rng = sh.range(text)
        if sys.platform == "darwin":
            rng.api.calculate()
        else:
            rng.api.Calculate()

    def add_table(self, sheet: str, name: str, top: int, left: int, columns: list[str],
                  style: str = "TableStyleMedium2") -> TableInfo:
        """Create Table ``name`` with header ``columns`` at (``top``, ``left``) and one empty body row.
        Raises BookError when the name is taken."""
        if name.casefold() in {t.casefold() for t in self.tables()}:
            raise BookError(f"a Table called {name!r} already exists")
        sh = self._sheet(sheet)
        self.write(sheet, top, left, [list(columns)])
        rng = sh.range(range_address(top, left, top + 1, left + len(columns) - 1))
        sh.tables.add(source=rng, name=name, has_headers=True, table_style_name=style)
        return TableInfo(name, sh.name, top, left, top + 1, left + len(columns) - 1, list(columns))

    # -- lifetime -----------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Save through Excel (remote engine: queues a ``save`` action; no path allowed there).
        Returns the workbook's full name."""
        self._check_open()
        if self.is_remote:
            if path is not None:
                raise BookError("the xlwings remote engine can only save the workbook in place")
            self.book.save()
            return Path(self.book.name)
        self.book.save(str(path) if path is not None else None)
        return Path(self.book.fullname)

    def close(self) -> None:
        """Drop the reference; the workbook stays open in Excel (it is the user's)."""
        self.book = None
