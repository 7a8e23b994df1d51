"""xlwings' remote engine without Excel: the book payload for ``xw.Book(json=...)`` built from a workbook
file, and the queued actions of ``book.json()`` applied back to a file.

With these, the same Book contract runs on :class:`~addin.excel.xlwings_book.XlwingsBook` on Linux:
build the payload from an .xlsx (:func:`book_json`), open it with ``xw.Book(json=payload)`` (set
``XLWINGS_LICENSE_KEY=noncommercial`` first), let the adapter queue its writes, then
:func:`apply_actions` plays them onto the openpyxl workbook the way the Excel client would, so the
result can be read back from a real file.

The payload has the shape the Office.js client sends (``client: "Office.js"``): book name, names with
their sheet/address/refers-to, and per sheet its values from A1 to the last used cell (``""`` for an
empty cell, dates as ISO text, formulas as their cached values, errors as ``"#N/A"``-style text) and
its Tables' range addresses.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.cell.cell import ERROR_CODES
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo
from openpyxl.worksheet.worksheet import Worksheet

from .book import parse_range, range_address

__all__ = ["book_json", "apply_actions", "UnsupportedAction"]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")


class UnsupportedAction(ValueError):
    """A queued action this replayer does not know; the message names it."""


def _payload_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00.000Z"
    if isinstance(value, dt.time):
        return value.isoformat()
    return value


def book_json(source: str | Path | bytes | openpyxl.Workbook, *, name: str | None = None) -> dict:
    """The remote-engine payload for a workbook file (path or bytes) or an openpyxl Workbook.

    Formula cells carry their cached values (None when the file has none, e.g. written by openpyxl).
    Raises FileNotFoundError or openpyxl's errors for an unreadable file.
    """
    import xlwings

    if isinstance(source, openpyxl.Workbook):
        buf = io.BytesIO()
        source.save(buf)
        data = buf.getvalue()
        name = name or "Book1.xlsx"
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = name or "Book1.xlsx"
    else:
        path = Path(source)
        data = path.read_bytes()
        name = name or path.name
    wb = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    sheet_index = {ws.title: i for i, ws in enumerate(wb.worksheets)}

    names = []
    for nm, dn in wb.defined_names.items():
        if nm.startswith("_xlnm."):
            continue
        dests = list(dn.destinations)
        sheet_i = address = None
        if len(dests) == 1 and dests[0][0] in sheet_index:
            sheet_i = sheet_index[dests[0][0]]
            address = dests[0][1].replace("$", "")
        names.append({
            "name": nm, "sheet_index": sheet_i, "address": address, "refers_to": "=" + dn.attr_text,
            "scope_sheet_name": None, "scope_sheet_index": None, "book_scope": True,
        })

    sheets = []
    for ws in wb.worksheets:
        cells = ws._cells
        max_row = max((r for r, _ in cells), default=0)
        max_col = max((c for _, c in cells), default=0)
        values = [
            [_payload_value(cells[(r, c)].value) if (r, c) in cells else "" for c in range(1, max_col + 1)]
            for r in range(1, max_row + 1)
        ] or [[]]
        tables = []
        for t in ws.tables.values():
            top, left, bottom, right = parse_range(t.ref)
            totals = int(t.totalsRowCount or 0)
            tables.append({
                "name": t.name,
                "range_address": t.ref,
                "header_row_range_address": range_address(top, left, top, right),
                "data_body_range_address": range_address(top + 1, left, bottom - totals, right),
                "total_row_range_address": range_address(bottom, left, bottom, right) if totals else None,
                "show_headers": True,
                "show_totals": bool(totals),
                "table_style": t.tableStyleInfo.name if t.tableStyleInfo else "",
                "show_autofilter": t.autoFilter is not None,
                "show_table_style_first_column": False,
                "show_table_style_last_column": False,
                "show_table_style_row_stripes": True,
                "show_table_style_column_stripes": False,
            })
        sheets.append({
            "name": ws.title,
            "values": values,
            "pictures": [], "shapes": [], "charts": [], "notes": [], "pivot_tables": [],
            "tables": tables,
            "print_area": None,
            "visibility": "Visible",
            "show_gridlines": True,
            "used_range_address": range_address(1, 1, max_row, max_col) if max_row else None,
        })
    return {
        "client": "Office.js",
        "version": xlwings.__version__,
        "book": {"name": name, "active_sheet_index": 0, "selection": "A1"},
        "names": names,
        "sheets": sheets,
    }


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _cell_value(v: Any) -> tuple[Any, bool]:
    """A value from a setValues action as Excel stores it, and whether it is a formula. Excel parses
    assigned text as if typed: a leading apostrophe marks text (and is not stored); ``=...`` is a
    formula, and so is text starting with ``+``, ``-`` or ``@`` that is not a plain number (Excel
    puts ``=`` before it; ``@`` is implicit intersection); number text becomes a number, typed date
    text a date, error text (``#N/A``) an error value."""
    if v == "":
        return None, False
    if not isinstance(v, str):
        return v, False
    if v.startswith("'"):
        return v[1:], False
    if _NUMBER.match(v):
        number = float(v)
        return (int(number) if number.is_integer() and "." not in v and "e" not in v.lower() else number), False
    if v.startswith("=") and len(v) > 1:
        return v, True
    if v[:1] in "+-" and len(v) > 1:
        return "=" + v, True
    if v.startswith("@") and len(v) > 1:
        return "=" + v[1:], True
    if _ISO_DATE.match(v):
        return dt.datetime.fromisoformat(v), False
    return v, False


def _sheet_of(wb: openpyxl.Workbook, action: dict) -> Worksheet:
    """The worksheet a sheet action names by ``sheet_position``; UnsupportedAction when it names none."""
    position = action.get("sheet_position")
    if position is None:
        raise UnsupportedAction(f"remote action {action['func']!r} names no sheet_position")
    return wb.worksheets[position]


def apply_actions(wb: openpyxl.Workbook, actions: list[dict]) -> list[str]:
    """Play the queued actions of ``xw.Book.json()["actions"]`` onto ``wb`` as the Excel client would.

    Supported: setValues (values parsed as Excel parses assigned text: see :func:`_cell_value`),
    addSheet, addTable, resizeTable, calculate (sets full recalculation on
    load), save (no-op: the caller saves the file). Returns the action names applied, in order.
    Raises UnsupportedAction naming an action it does not know, or a sheet action without its
    sheet_position (nothing after it is applied).
    """
    applied = []
    for a in actions:
        func = a["func"]
        if func == "setValues":
            ws = _sheet_of(wb, a)
            for i, row in enumerate(a["values"]):
                for j, v in enumerate(row):
                    value, formula = _cell_value(v)
                    cell = ws.cell(row=a["start_row"] + 1 + i, column=a["start_column"] + 1 + j)
                    cell.value = value
                    if isinstance(value, str) and not formula and not (value in ERROR_CODES and v == value):
                        cell.data_type = "s"          # text as Excel keeps it (openpyxl would guess)
        elif func == "addSheet":
            index, title = a["args"]
            wb.create_sheet(title=title, index=index)
        elif func == "addTable":
            ws = _sheet_of(wb, a)
            address, _has_headers, style, name = a["args"]
            top, left, bottom, right = parse_range(address)
            cols = [TableColumn(id=i + 1, name=str(ws.cell(row=top, column=left + i).value))
                    for i in range(right - left + 1)]
            t = Table(displayName=name, ref=range_address(top, left, bottom, right), tableColumns=cols)
            if style:
                t.tableStyleInfo = TableStyleInfo(name=style, showRowStripes=True)
            ws.add_table(t)
        elif func == "resizeTable":
            ws = _sheet_of(wb, a)
            index, address = a["args"]
            t = list(ws.tables.values())[index]
            top, left, bottom, right = parse_range(address)
            t.ref = range_address(top, left, bottom, right)
            if t.autoFilter is not None:
                t.autoFilter.ref = t.ref
            width = right - left + 1
            if width != len(t.tableColumns):
                old = {c.name: c for c in t.tableColumns}
                t.tableColumns = []
                for i in range(width):
                    header = str(ws.cell(row=top, column=left + i).value)
                    col = old.get(header) or TableColumn(id=i + 1, name=header)
                    col.id = i + 1
                    t.tableColumns.append(col)
        elif func == "calculate":
            wb.calculation.fullCalcOnLoad = True
        elif func == "save":
            pass
        else:
            raise UnsupportedAction(f"cannot replay remote action {func!r} (args {a.get('args')})")
        applied.append(func)
    return applied
