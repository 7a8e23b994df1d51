"""The Book interface on a workbook file, through openpyxl (headless use: ``ibxl run``, tests, CI).

Guarantees:

- VBA is kept: an .xlsm/.xltm is loaded with ``keep_vba=True`` and can only be saved under a
  macro-enabled name; an .xlsx cannot be saved as .xlsm (Excel would refuse the file).
- Saves are atomic: the workbook is written to a temporary file in the target's folder, that file is
  re-opened and checked (every sheet and Table present, the VBA project there when expected), then
  moved over the target with ``os.replace``. A failure at any step leaves the target as it was and
  removes the temporary file.
- A workbook open elsewhere is refused (:class:`WorkbookLockedError`): Excel's owner file
  ``~$<name>`` or LibreOffice's ``.~lock.<name>#`` beside it, or a file that cannot be opened for
  writing.
- Nothing is lost silently: openpyxl writes back only what it models. Before overwriting the
  original, ibxl compares the original package with what openpyxl writes
  (:mod:`addin.excel.workbook_parts`) and refuses with :class:`WouldLosePartsError` listing what would
  go (shapes, buttons, slicers, images, chart parts openpyxl does not model, ...). Writing to a new
  file (``out=``, the CLI's ``--out NEW.xlsx``) is allowed and leaves the original untouched.
  Charts openpyxl made itself (the ibxl templates' charts) are re-read and written back unchanged,
  so the templates pass this check; this is verified, not assumed, on every save. Two losses are
  harmless and only logged: a chart series' ``uniqueId`` and Excel's chart style/colour parts
  (:data:`addin.excel.workbook_parts.HARMLESS_KINDS`).

- Text stays text: every ``str`` written through :meth:`Book.write` is stored as a text cell
  (``data_type "s"``), even ``"=HYPERLINK(...)"`` or ``"#N/A"``; characters XML cannot hold (control
  characters other than tab and newlines) become U+FFFD instead of failing the write. Formulas come
  only through :meth:`Book.write_formulas`.
- A save never loses what another process saved since this one read the file: saves of one file are
  serialised by a lock (:mod:`addin.excel.file_lock`), and when the file on disk is no longer the bytes
  this Book read (or last saved), the cells this Book wrote and the Table ranges it changed are
  applied onto the file as it is now. A cell the other writer changed to a different value, a Table
  it resized differently, or user content where a Table of ours grew refuses the save with
  :class:`ConcurrentSaveError` naming the file and the cells; the file is left as the other writer
  saved it.

Formula cells read as the value Excel last calculated (from the file's cached values); a formula
written through this Book reads as None until Excel recalculates it. ``calculate`` cannot compute
(there is no calculation engine in a file): it flags the workbook for a full recalculation when
Excel next opens it, in one call.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, MergedCell
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.table import TableColumn

from .book import (
    Book,
    BookError,
    ConcurrentSaveError,
    SaveVerificationError,
    SheetNotFound,
    TableInfo,
    WorkbookLockedError,
    WouldLosePartsError,
    cell_address,
    parse_range,
    range_address,
)
from .file_lock import save_lock
from .workbook_parts import diff_parts

log = logging.getLogger(__name__)

__all__ = ["OpenpyxlBook", "lock_owner", "check_not_locked"]

_MACRO_SUFFIXES = {".xlsm", ".xltm"}
_PLAIN_SUFFIXES = {".xlsx", ".xltx"}
_BAD_SHEET_CHARS = set('[]:*?/\\')


def lock_owner(path: Path) -> Path | None:
    """The owner/lock file that says ``path`` is open in Excel (``~$name.xlsx``) or LibreOffice
    (``.~lock.name.xlsx#``), or None."""
    for candidate in (path.with_name("~$" + path.name), path.with_name(f".~lock.{path.name}#")):
        if candidate.exists():
            return candidate
    return None


def check_not_locked(path: Path) -> None:
    """Raise WorkbookLockedError when ``path`` is open elsewhere or cannot be opened for writing."""
    owner = lock_owner(path)
    if owner is not None:
        raise WorkbookLockedError(
            f"{path} is open in Excel or another program (lock file {owner.name} beside it). Close it "
            f"there first, or write to a new file with --out NEW.xlsx. If no program has it open, the "
            f"lock file is stale: delete {owner}."
        )
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            raise WorkbookLockedError(
                f"{path} cannot be opened for writing ({exc.strerror or exc}); it may be open in Excel "
                f"or read-only. Close it there first, or write to a new file with --out NEW.xlsx."
            ) from exc


def _repoint_charts(ws, top: int, left: int, bottom: int, right: int) -> None:
    """Charts on ``ws`` that plot a column of the Table whose body starts at row ``top + 1`` follow
    the Table's new length: in a file there is no Excel to extend them as it does for Tables."""
    for chart in getattr(ws, "_charts", []):
        for series in chart.series:
            refs = [series.val.numRef if series.val else None]
            if series.cat is not None:
                refs.append(series.cat.numRef or series.cat.strRef)
            for ref in refs:
                if ref is None or not ref.f or "!" not in ref.f:
                    continue
                sheet, _, address = ref.f.rpartition("!")
                if sheet.strip("'").replace("''", "'") != ws.title:
                    continue
                try:
                    r0, c0, _, c1 = parse_range(address)
                except ValueError:
                    continue
                if r0 == top + 1 and c0 == c1 and left <= c0 <= right:
                    ref.f = f"{sheet}!{_absolute(r0, c0, bottom, c1)}"


def scale_value_axes(ws) -> None:
    """Line and bar charts on ``ws`` get a value axis from just below their data's lowest value to just
    above its highest (round numbers), instead of from 0, so a price series fills the plot. Charts
    whose data is not on ``ws`` or holds no number are left alone. (Excel scales an axis itself when
    it recalculates; a file written here is drawn as it is by other viewers too.)"""
    for chart in getattr(ws, "_charts", []):
        if getattr(chart, "tagname", "") not in ("lineChart", "barChart", "areaChart") or chart.y_axis is None:
            continue
        values: list[float] = []
        for series in chart.series:
            ref = series.val.numRef if series.val else None
            if ref is None or not ref.f or "!" not in ref.f:
                continue
            sheet, _, address = ref.f.rpartition("!")
            if sheet.strip("'").replace("''", "'") != ws.title:
                continue
            try:
                r0, c0, r1, c1 = parse_range(address.replace("$", ""))
            except ValueError:
                continue
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    v = ws._cells[(r, c)].value if (r, c) in ws._cells else None
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                        values.append(float(v))
        if values:
            chart.y_axis.scaling.min, chart.y_axis.scaling.max = axis_bounds(min(values), max(values))


def axis_bounds(low: float, high: float) -> tuple[float, float]:
    """Round axis limits around [low, high] with a little room: (571.3, 662.9) -> (560.0, 680.0)."""
    span = high - low or abs(high) * 0.02 or 1.0
    low, high = low - span * 0.05, high + span * 0.05
    step = 10.0 ** math.floor(math.log10(high - low)) / 5
    return math.floor(low / step) * step, math.ceil(high / step) * step


def _absolute(top: int, left: int, bottom: int, right: int) -> str:
    """(2, 8, 251, 8) -> "$H$2:$H$251", as Excel writes chart references."""
    return f"${get_column_letter(left)}${top}:${get_column_letter(right)}${bottom}"


def _text(value: str) -> str:
    """``value`` with the characters a worksheet XML cannot hold replaced by U+FFFD."""
    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)


def _store(cell, value: Any, formula: bool) -> None:
    """Put ``value`` in ``cell``: a str as text (openpyxl would make ``"=..."`` a formula and
    ``"#N/A"`` an error) unless ``formula``."""
    cell.value = value
    if isinstance(value, str) and not formula:
        cell.data_type = "s"


def _set_ref(ws, t, top: int, left: int, bottom: int, right: int) -> None:
    """Make Table ``t`` on ``ws`` span (top, left)-(bottom, right) (body; its totals row below), keep its
    column list in step with its width, and extend the charts that plot its columns."""
    ref = range_address(top, left, bottom + int(t.totalsRowCount or 0), right)
    old_width = len(t.tableColumns)
    t.ref = ref
    if t.autoFilter is not None:
        t.autoFilter.ref = range_address(top, left, bottom, right)
    width = right - left + 1
    if width != old_width:
        # The Table's column list must match its width or Excel repairs the file; names come from
        # the header cells, existing column definitions are kept.
        existing = {str(tc.name): tc for tc in t.tableColumns}
        columns = []
        for i in range(width):
            header = ws._cells.get((top, left + i))
            name = str(header.value) if header is not None and header.value not in (None, "") else f"Column{i + 1}"
            tc = existing.get(name) or TableColumn(id=i + 1, name=name)
            tc.id = i + 1
            columns.append(tc)
        t.tableColumns = columns
    _repoint_charts(ws, top, left, max(bottom, top + 1), right)


def _column_styles(ws) -> dict[int, Any]:
    """Column number -> the style of its ``<col>`` entry, for the columns that have one."""
    out: dict[int, Any] = {}
    for dim in ws.column_dimensions.values():
        if dim.has_style and dim.min:
            for c in range(dim.min, (dim.max or dim.min) + 1):
                out[c] = dim._style
    return out


def _table_shapes(wb: openpyxl.Workbook) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Table name -> (sheet, ref, column names): what a save's merge compares."""
    return {t.name: (ws.title, str(t.ref), tuple(str(tc.name) for tc in t.tableColumns))
            for ws in wb.worksheets for t in ws.tables.values()}


def _value_at(wb: openpyxl.Workbook, sheet: str, row: int, col: int) -> Any:
    if sheet not in wb.sheetnames:
        return None
    cell = wb[sheet]._cells.get((row, col))
    return None if cell is None else cell.value


class OpenpyxlBook(Book):
    """A workbook file as a :class:`~addin.excel.book.Book`. Create it with :meth:`open`."""

    saves_to_file = True

    def __init__(self, wb: openpyxl.Workbook, *, path: Path | None, source: bytes | None,
                 out: Path | None = None, read_only: bool = False):
        super().__init__()
        self._wb = wb
        self.path = path                  # the file it was loaded from (None for a new workbook)
        self.out = out                    # where save() writes by default, when not the original
        self.read_only = read_only
        self._source = source             # the original bytes: the baseline for what must not be lost
        self._values_wb: openpyxl.Workbook | None = None  # cached values of formula cells, loaded on demand
        self._written_formulas: set[tuple[str, int, int]] = set()
        self.lost_in_copy: list[str] = [] # what the last save to another file left out of that file
        # what this Book changed since the bytes in _source: cells (value, is formula) and Table ranges
        self._writes: dict[tuple[str, int, int], tuple[Any, bool]] = {}
        self._base_tables = _table_shapes(wb)
        self._base_sheets = list(wb.sheetnames)

    @property
    def workbook_name(self) -> str:
        return self.path.name if self.path is not None else ""

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, out: str | Path | None = None, read_only: bool = False) -> "OpenpyxlBook":
        """Load the workbook at ``path`` (.xlsx, .xlsm, .xltx, .xltm).

        ``out``: save() writes there instead of over ``path`` (the original is never touched).
        ``read_only``: only read; save() to ``path`` is refused.
        When neither is given (the workbook will be saved in place), refuses at once with
        WorkbookLockedError when the file is open elsewhere, and with WouldLosePartsError when
        openpyxl would drop any of its parts (the message lists them and suggests ``--out``).
        Raises FileNotFoundError, or BookError for a file that is not a workbook.
        """
        path = Path(path).resolve()
        suffix = path.suffix.lower()
        if suffix not in _MACRO_SUFFIXES | _PLAIN_SUFFIXES:
            raise BookError(f"{path.name}: not an Excel workbook openpyxl can write (.xlsx, .xlsm, .xltx, .xltm)")
        data = path.read_bytes()  # from memory, so no handle stays open on the file (Windows locks)
        try:
            wb = openpyxl.load_workbook(io.BytesIO(data), keep_vba=suffix in _MACRO_SUFFIXES)
        except Exception as exc:
            raise BookError(f"{path} is not a readable workbook: {exc}") from exc
        book = cls(wb, path=path, source=data, out=Path(out).resolve() if out else None, read_only=read_only)
        if out is None and not read_only:
            check_not_locked(path)
            lost, harmless = diff_parts(data, book._serialize())
            if harmless:
                log.info("%s: openpyxl will not keep %s (harmless: see addin.excel.workbook_parts)", path,
                         "; ".join(harmless))
            if lost:
                raise book._lose_error(path, lost)
        return book

    @classmethod
    def new(cls) -> "OpenpyxlBook":
        """An empty workbook with no sheets yet (add them with add_sheet); save(path) needs a path."""
        wb = openpyxl.Workbook()
        wb.remove(wb.active)
        return cls(wb, path=None, source=None)

    @property
    def workbook(self) -> openpyxl.Workbook:
        """The underlying openpyxl Workbook (for formatting that the Book interface does not cover)."""
        self._check_open()
        return self._wb

    def _check_open(self) -> None:
        if self._wb is None:
            raise BookError("this workbook has been closed")

    def _sheet(self, name: str):
        self._check_open()
        for ws in self._wb.worksheets:
            if ws.title.casefold() == name.casefold():
                return ws
        raise SheetNotFound(f"no sheet {name!r} in the workbook; sheets: {self.sheet_names()}")

    # -- structure ----------------------------------------------------------------------------
    def sheet_names(self) -> list[str]:
        self._check_open()
        return [ws.title for ws in self._wb.worksheets]

    def add_sheet(self, name: str) -> None:
        """Add a worksheet at the end; no-op if present. Raises BookError for a name Excel refuses."""
        if self.has_sheet(name):
            return
        if not name or len(name) > 31 or set(name) & _BAD_SHEET_CHARS or name.startswith("'"):
            raise BookError(f"{name!r} is not a valid sheet name (1-31 characters, none of []:*?/\\)")
        self._wb.create_sheet(title=name)

    def tables(self) -> dict[str, TableInfo]:
        self._check_open()
        out: dict[str, TableInfo] = {}
        for ws in self._wb.worksheets:
            for t in ws.tables.values():
                top, left, bottom, right = parse_range(t.ref)
                bottom -= int(t.totalsRowCount or 0)
                columns = [str(tc.name) for tc in t.tableColumns]
                if not columns:           # a Table made in this session without columns: openpyxl
                    # names them from the header cells when it saves, so do the same
                    columns = ["" if v is None else str(v)
                               for v in self.read(ws.title, top, left, top, right)[0]]
                out[t.name] = TableInfo(t.name, ws.title, top, left, bottom, right, columns)
        return out

    def names(self) -> dict[str, str]:
        self._check_open()
        return {
            name: "=" + str(dn.attr_text)
            for name, dn in self._wb.defined_names.items()
            if not name.startswith("_xlnm.")
        }

    def _check_table(self, info: TableInfo) -> None:
        """A Table without a header row, or with merged cells anywhere in its range (Excel allows
        neither; a merged cell reads as blank beside its first cell), is refused naming the cells."""
        ws = self._sheet(info.sheet)
        t = ws.tables[info.name]
        where = f"Table {info.name!r} on sheet {ws.title!r} ({t.ref})"
        if t.headerRowCount is not None and int(t.headerRowCount) == 0:
            first = range_address(info.first_row, info.first_col, info.first_row, info.last_col)
            raise BookError(f"{where} has no header row (its first row {ws.title}!{first} is data); turn the header "
                            f"row on in Excel. Nothing was read from the Table")
        top, left, bottom, right = parse_range(t.ref)
        for merged in ws.merged_cells.ranges:
            if merged.min_row <= bottom and merged.max_row >= top and merged.min_col <= right \
                    and merged.max_col >= left:
                raise BookError(f"{where}: cells {ws.title}!{merged.coord} are merged inside the Table; unmerge "
                                f"them (Excel Tables hold no merged cells). Nothing was read from the Table")

    def number_formats(self, sheet: str, col: int, rows: Iterable[int]) -> dict[int, str | None]:
        cells = self._sheet(sheet)._cells         # no ws.cell(): reading must not create cells
        return {r: (cells[(r, col)].number_format if (r, col) in cells else "General") for r in rows}

    def hidden_rows(self, sheet: str, top: int, bottom: int) -> set[int]:
        """Rows the file marks hidden (``<row hidden="1">``: what Excel saves for rows a filter hides,
        and for rows hidden by hand)."""
        dims = self._sheet(sheet).row_dimensions
        # row_dimensions creates an entry on lookup: test membership first, so reading changes nothing
        return {r for r in range(top, bottom + 1) if r in dims and dims[r].hidden}

    # -- values -------------------------------------------------------------------------------
    def _cached_value(self, sheet: str, row: int, col: int) -> Any:
        """The value Excel last calculated for a formula cell, from the file's cached values."""
        if (sheet, row, col) in self._written_formulas or self._source is None:
            return None
        if self._values_wb is None:
            self._values_wb = openpyxl.load_workbook(io.BytesIO(self._source), data_only=True)
        if sheet not in self._values_wb.sheetnames:
            return None
        cell = self._values_wb[sheet]._cells.get((row, col))
        return None if cell is None else cell.value

    def read(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[list]:
        ws = self._sheet(sheet)
        # ws._cells, not ws.cell(): reading must not create empty cells in the workbook.
        cells = ws._cells
        out = []
        for r in range(top, bottom + 1):
            row: list = []
            for c in range(left, right + 1):
                cell = cells.get((r, c))
                if cell is None:
                    row.append(None)
                elif cell.data_type == "f":
                    row.append(self._cached_value(ws.title, r, c))
                else:
                    row.append(cell.value)
            out.append(row)
        return out

    def formulas(self, sheet: str, addresses: list[str]) -> list[str | None]:
        ws = self._sheet(sheet)
        out: list[str | None] = []
        for a in addresses:
            top, left, _, _ = parse_range(a)
            cell = ws._cells.get((top, left))
            if cell is None or cell.data_type != "f":
                out.append(None)
            else:
                v = cell.value
                out.append(v if isinstance(v, str) else getattr(v, "text", None) or str(v))
        return out

    def _write_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        self._put(sheet, top, left, values, formulas=False)

    def _write_formula_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        self._put(sheet, top, left, values, formulas=True)

    def _put(self, sheet: str, top: int, left: int, values: list[list], *, formulas: bool) -> None:
        """Store the rectangle; text as text unless ``formulas`` and it starts with ``=``. Every cell
        is remembered (with whether it is a formula) for the merge at save. A cell that did not exist
        takes its column's style (number format), as Excel gives a new cell: the templates format
        Table columns that way, so rows a Table grows into show like the others."""
        ws = self._sheet(sheet)
        title, written_formulas, cell, writes = ws.title, self._written_formulas, ws.cell, self._writes
        existing, column_styles = ws._cells, _column_styles(ws)
        # the cached-values copy of the sheet, when loaded: constants written go there too
        values_ws = (self._values_wb[title] if self._values_wb is not None and title in self._values_wb.sheetnames
                     else None)
        for r, row in enumerate(values, start=top):
            for c, v in enumerate(row, start=left):
                new = column_styles and (r, c) not in existing
                target = cell(row=r, column=c)
                if new and c in column_styles:
                    target._style = copy.copy(column_styles[c])
                is_formula = formulas and isinstance(v, str) and v.startswith("=")
                if isinstance(v, str) and not is_formula:
                    v = _text(v)
                _store(target, v, is_formula)
                writes[(title, r, c)] = (v, is_formula)
                if is_formula:
                    written_formulas.add((title, r, c))
                else:
                    if written_formulas:
                        written_formulas.discard((title, r, c))
                    if values_ws is not None:
                        _store(values_ws.cell(row=r, column=c), v, False)

    def write_table(self, name: str, df: Any, columns: Any = None) -> None:
        """:meth:`Book.write_table`, then the value axes of the sheet's line charts are fitted to their
        data (:func:`scale_value_axes`): a file has no Excel to rescale them."""
        super().write_table(name, df, columns)
        scale_value_axes(self._sheet(self.table(name).sheet))

    def _set_table_ref(self, info: TableInfo, top: int, left: int, bottom: int, right: int) -> None:
        ws = self._sheet(info.sheet)
        _set_ref(ws, ws.tables[info.name], top, left, bottom, right)

    def _totals_rows(self, info: TableInfo) -> int:
        return int(self._sheet(info.sheet).tables[info.name].totalsRowCount or 0)

    def _occupied(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[str]:
        """Cells holding a value, and cells inside a merged range (writing there fails or is lost)."""
        ws = self._sheet(sheet)
        out = []
        for r in range(top, bottom + 1):
            for c in range(left, right + 1):
                cell = ws._cells.get((r, c))
                if cell is not None and (isinstance(cell, MergedCell) or cell.value not in (None, "")):
                    out.append(cell_address(r, c))
        for merged in ws.merged_cells.ranges:
            r0, c0, r1, c1 = merged.min_row, merged.min_col, merged.max_row, merged.max_col
            if r0 <= bottom and r1 >= top and c0 <= right and c1 >= left:
                out.append(cell_address(max(r0, top), max(c0, left)))
        return sorted(set(out), key=lambda a: parse_range(a)[:2])

    def _calculate(self, sheet: str, addresses: list[str]) -> None:
        # A file has no calculation engine: ask Excel to recalculate everything when it opens it.
        self._wb.calculation.fullCalcOnLoad = True

    def add_table(self, sheet: str, name: str, top: int, left: int, columns: list[str],
                  style: str = "TableStyleMedium2") -> TableInfo:
        """Create Table ``name`` with header ``columns`` at (``top``, ``left``) and one empty body row.
        Raises BookError when the name is taken."""
        from openpyxl.worksheet.filters import AutoFilter
        from openpyxl.worksheet.table import Table, TableStyleInfo

        if name.casefold() in {t.casefold() for t in self.tables()}:
            raise BookError(f"a Table called {name!r} already exists")
        ws = self._sheet(sheet)
        self.write(sheet, top, left, [list(columns)])
        ref = range_address(top, left, top + 1, left + len(columns) - 1)
        table = Table(displayName=name, ref=ref, autoFilter=AutoFilter(ref=ref),
                      tableColumns=[TableColumn(id=i + 1, name=str(c)) for i, c in enumerate(columns)])
        table.tableStyleInfo = TableStyleInfo(name=style, showRowStripes=True)
        ws.add_table(table)
        return self.table(name)

    # -- saving -------------------------------------------------------------------------------
    def _serialize(self) -> bytes:
        buf = io.BytesIO()
        self._wb.save(buf)
        return buf.getvalue()

    def _lose_error(self, target: Path, lost: list[str]) -> WouldLosePartsError:
        return WouldLosePartsError(
            f"refusing to overwrite {target}: openpyxl would drop what it cannot keep: "
            + "; ".join(lost)
            + ". Nothing was written. To proceed, write to a new file (--out NEW.xlsx, or "
            "OpenpyxlBook.open(path, out='NEW.xlsx')), or work on the workbook in Excel through xlwings, "
            "which keeps everything.",
            lost,
        )

    def save(self, path: str | Path | None = None) -> Path:
        """Save atomically to ``path``, else to ``out`` given at open, else over the original.

        Over the original, when the file on disk is no longer what this Book read (or last saved),
        this Book's cell writes and Table resizes are merged onto it (see the module docstring), and
        the Book continues from the merged workbook.
        Raises BookError for a target whose extension does not match (VBA only in .xlsm/.xltm),
        WorkbookLockedError when the target is open elsewhere, WouldLosePartsError when overwriting the
        original would drop parts (nothing written), SaveVerificationError when the written file does
        not read back complete (target untouched), ConcurrentSaveError when another writer's changes
        conflict with this Book's (target untouched), SaveLockTimeout (an OSError) when another
        process holds the save lock for 30 s. Returns the target path.
        """
        self._check_open()
        target_arg = path if path is not None else (self.out or self.path)
        if target_arg is None:
            raise BookError("save() needs a path for a new workbook")
        target = Path(target_arg).resolve()
        overwriting_source = self.path is not None and target == self.path
        if overwriting_source and self.read_only:
            raise BookError(f"{target} was opened read-only; save to another file")
        suffix = target.suffix.lower()
        has_vba = self._wb.vba_archive is not None
        if has_vba and suffix not in _MACRO_SUFFIXES:
            raise BookError(
                f"cannot save a macro-enabled workbook as {target.name}: its VBA project would be lost "
                f"and Excel refuses a macro workbook named {suffix}; use a .xlsm name"
            )
        if not has_vba and suffix not in _PLAIN_SUFFIXES:
            raise BookError(f"cannot save a workbook without VBA as {target.name}: use a .xlsx name")
        if not target.parent.is_dir():
            raise BookError(f"cannot save to {target}: folder {target.parent} does not exist")
        check_not_locked(target)
        with save_lock(target):
            return self._save_locked(target, suffix, has_vba, overwriting_source)

    def _save_locked(self, target: Path, suffix: str, has_vba: bool, overwriting_source: bool) -> Path:
        """The save proper, with the target's save lock held: merge with the file on disk when another
        writer replaced it since it was read, write a temporary file, verify it, replace the target."""
        wb, baseline = self._wb, self._source
        if overwriting_source:
            try:
                on_disk: bytes | None = target.read_bytes()
            except FileNotFoundError:
                on_disk = None
            if on_disk is not None and on_disk != self._source:
                wb = self._merged_onto(on_disk, target, has_vba)
                baseline = on_disk
        fd, tmp_name = tempfile.mkstemp(prefix=".~ibxl-", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            wb.save(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            data = tmp.read_bytes()
            self._verify(data, target, has_vba, wb)
            lost = diff_parts(baseline, data)[0] if baseline is not None else []
            if lost and overwriting_source:
                raise self._lose_error(target, lost)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if lost:
            log.warning("%s was written without parts of %s openpyxl cannot keep: %s", target, self.path,
                        "; ".join(lost))
        self.lost_in_copy = [] if overwriting_source else lost
        if overwriting_source:
            if wb is not self._wb:
                log.info("%s had been saved by another process since it was read: merged %d cells of ours "
                         "onto it", target, len(self._writes))
                self._wb = wb                  # the merged workbook is what the file now holds
            self._source = data
            self._writes = {}
            self._base_tables = _table_shapes(wb)
            self._base_sheets = list(wb.sheetnames)
        return target

    def _merged_onto(self, on_disk: bytes, target: Path, has_vba: bool) -> openpyxl.Workbook:
        """The workbook on disk (another writer's save) with this Book's changes since its baseline
        applied: the cells it wrote and the Table ranges it changed. Raises ConcurrentSaveError naming
        the file and what conflicts: a cell the other writer set to another value, a Table both
        resized differently, content where our Table grows, or sheets/Tables this Book added."""
        try:
            disk = openpyxl.load_workbook(io.BytesIO(on_disk), keep_vba=has_vba)
        except Exception as exc:
            raise ConcurrentSaveError(f"{target} was replaced since ibxl read it and does not read back as a "
                                      f"workbook ({exc}); nothing was saved") from exc
        base = (openpyxl.load_workbook(io.BytesIO(self._source), keep_vba=has_vba)
                if self._source is not None else openpyxl.Workbook())
        why = "it was saved by another program (another ibxl run, or Excel) since this run read it"
        added = [n for n in self._wb.sheetnames if n not in self._base_sheets]
        if added:
            raise ConcurrentSaveError(f"not saving {target}: {why}, and this run added sheets {added}; "
                                      f"run again on the saved file")
        conflicts: list[str] = []
        for (sheet, r, c), (value, _) in self._writes.items():
            theirs = _value_at(disk, sheet, r, c)
            if theirs != _value_at(base, sheet, r, c) and theirs != value:
                conflicts.append(f"{sheet}!{cell_address(r, c)} (theirs {theirs!r}, ours {value!r})")
        grown: list[tuple[Any, str, tuple[int, int, int, int], tuple[int, int, int, int]]] = []
        disk_tables = {t.name: (ws, t) for ws in disk.worksheets for t in ws.tables.values()}
        for name, shape in _table_shapes(self._wb).items():
            before = self._base_tables.get(name)
            if shape == before:
                continue
            if before is None or name not in disk_tables:
                conflicts.append(f"Table {name!r} (added here, or removed there)")
                continue
            ws, t = disk_tables[name]
            theirs_shape = (ws.title, str(t.ref), tuple(str(tc.name) for tc in t.tableColumns))
            if theirs_shape == shape:
                continue
            if theirs_shape != before:
                conflicts.append(f"Table {name!r} (theirs {theirs_shape[1]}, ours {shape[1]})")
                continue
            grown.append((t, ws.title, parse_range(before[1]), parse_range(shape[1])))
        for t, sheet, (_, left0, bottom0, _), (_, _, bottom1, right1) in grown:
            for r in range(bottom0 + 1, bottom1 + 1):       # rows our grown Table covers now
                for c in range(left0, right1 + 1):
                    if (sheet, r, c) not in self._writes and _value_at(disk, sheet, r, c) not in (None, ""):
                        conflicts.append(f"{sheet}!{cell_address(r, c)} (below Table {t.name!r}, now not empty)")
        if conflicts:
            more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
            raise ConcurrentSaveError(f"not saving {target}: {why}, and it changed what this run changed too: "
                                      f"{'; '.join(conflicts[:5])}{more}. The file keeps the other save; "
                                      f"run again on it")
        for (sheet, r, c), (value, formula) in self._writes.items():
            _store(disk[sheet].cell(row=r, column=c), value, formula)
        for t, sheet, _, _ in grown:
            top, left, bottom, right = parse_range(_table_shapes(self._wb)[t.name][1])
            totals = int(t.totalsRowCount or 0)
            _set_ref(disk[sheet], t, top, left, bottom - totals, right)
        if self._wb.calculation.fullCalcOnLoad:
            disk.calculation.fullCalcOnLoad = True
        return disk

    def _verify(self, data: bytes, target: Path, has_vba: bool, wb: openpyxl.Workbook) -> None:
        """Re-open freshly written bytes: every sheet and Table of ``wb`` must be there (and the VBA
        project)."""
        try:
            check = openpyxl.load_workbook(io.BytesIO(data), keep_vba=has_vba)
        except Exception as exc:
            raise SaveVerificationError(
                f"the workbook written for {target} does not re-open ({exc}); {target} was left as it was"
            ) from exc
        problems = []
        if check.sheetnames != wb.sheetnames:
            problems.append(f"sheets {check.sheetnames} instead of {wb.sheetnames}")
        want = {t for ws in wb.worksheets for t in ws.tables}
        got = {t for ws in check.worksheets for t in ws.tables}
        if want != got:
            problems.append(f"Tables {sorted(got)} instead of {sorted(want)}")
        if has_vba and (check.vba_archive is None or "xl/vbaProject.bin" not in check.vba_archive.namelist()):
            problems.append("no VBA project")
        if problems:
            raise SaveVerificationError(
                f"the workbook written for {target} is incomplete ({'; '.join(problems)}); {target} was left as it was"
            )

    def close(self) -> None:
        """Forget the workbook (nothing is saved); further calls raise BookError."""
        self._wb = None
        self._values_wb = None
