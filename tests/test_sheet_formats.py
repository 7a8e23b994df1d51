"""The template's formats reach every row a Table will ever have: each Table of ibxl.xlsx is filled with 300
rows through the openpyxl adapter (as ``ibxl run`` fills them), saved, and read back: rows 2, 250 and the
last row of every formatted column carry the column's number format; whole quantities show without a
trailing dot; id and tag columns are wide enough; Account values are formatted by kind; the History
chart's value axis is fitted to the bars."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from openpyxl.utils import get_column_letter

from addin.excel import layout
from addin.excel.openpyxl_book import OpenpyxlBook, axis_bounds
from workbooks.build import ANALYSIS_FORMATS

ROOT = Path(__file__).resolve().parents[1]
ROWS = 300


def sample(column: str, i: int):
    fmt = layout.number_format(column)
    if fmt in (layout.NUMBER_FORMATS["time"],):
        return datetime(2026, 3, 2, 14, 30) + timedelta(minutes=i)
    if fmt == layout.NUMBER_FORMATS["bool"]:
        return i % 2 == 0
    if fmt is None:
        return f"x{i}"
    return 100.0 + i * 0.25


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("formats") / "ibxl.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    book = OpenpyxlBook.open(path)
    for name, (_sheet, _top, _left, columns) in layout.TABLES.items():
        if name == "Config":
            continue
        book.write_table(name, pd.DataFrame({c: [sample(c, i) for i in range(ROWS)] for c in columns}))
    book.save()
    return openpyxl.load_workbook(path)


# Config: mixed values; Correlation: its one template column is Symbol (text), the holdings' columns are
# checked in tests/test_analysis_sheet.py
@pytest.mark.parametrize("table", [t for t in layout.TABLES if t not in ("Config", "Correlation")])
def test_rows_2_250_and_the_last_carry_the_column_format(filled, table):
    sheet, top, left, columns = layout.TABLES[table]
    ws = filled[sheet]
    checked = 0
    for j, column in enumerate(columns):
        fmt = layout.number_format(column) or (ANALYSIS_FORMATS.get(column) if sheet == "Analysis" else None)
        if table == "Account" and column == "Value":
            fmt = layout.ACCOUNT_VALUE_FORMAT         # the base; conditional formats by tag on top
        if fmt is None:
            continue
        for row in (top + 1, 250, top + ROWS):
            assert ws.cell(row=row, column=left + j).number_format == fmt, (table, column, row)
            checked += 1
        assert ws.column_dimensions[get_column_letter(left + j)].number_format == fmt   # rows beyond
    assert checked


def test_whole_quantities_show_without_a_trailing_dot_on_every_row(filled):
    for table, (sheet, top, left, columns) in layout.TABLES.items():
        ws = filled[sheet]
        for j, column in enumerate(columns):
            if column not in layout.QUANTITY_COLUMNS:
                continue
            letter = get_column_letter(left + j)
            rules = [(str(cf.sqref), r) for cf in ws.conditional_formatting for r in cf.rules
                     if r.dxf is not None and r.dxf.numFmt is not None]
            whole = [(ref, r) for ref, r in rules if ref == f"{letter}{top + 1}:{letter}1048576"]
            assert len(whole) == 1, (table, column, rules)
            assert whole[0][1].dxf.numFmt.formatCode == layout.WHOLE_FORMAT
            assert whole[0][1].formula == [f"AND(ISNUMBER({letter}{top + 1}),{letter}{top + 1}=INT({letter}{top + 1}))"]


def test_ids_never_show_hashes_and_tags_are_not_cut(filled):
    for table, (sheet, _top, left, columns) in layout.TABLES.items():
        ws = filled[sheet]
        for j, column in enumerate(columns):
            width = ws.column_dimensions[get_column_letter(left + j)].width
            if column in layout.ID_COLUMNS:
                assert width >= 14 and layout.number_format(column) == "0", (table, column)
    tag = filled["Portfolio"].column_dimensions[get_column_letter(layout.TABLES["Account"][2]
                                                                  + layout.ACCOUNT_COLUMNS.index("Tag"))]
    assert tag.width >= max(len(t) for tags in layout.ACCOUNT_TAG_KINDS.values() for t in tags) + 8


def test_account_values_are_formatted_by_the_kind_of_their_tag(filled):
    ws = filled["Portfolio"]
    left = layout.TABLES["Account"][2]
    tag = get_column_letter(left + layout.ACCOUNT_COLUMNS.index("Tag"))
    value = get_column_letter(left + layout.ACCOUNT_COLUMNS.index("Value"))
    assert ws.column_dimensions[value].number_format == layout.NUMBER_FORMATS["money"]
    rules = {r.dxf.numFmt.formatCode: r.formula[0] for cf in ws.conditional_formatting for r in cf.rules
             if str(cf.sqref) == f"{value}2:{value}1048576"}
    assert rules["0.00%"].startswith("OR(") and f'${tag}2="Cushion"' in rules["0.00%"]
    assert f'${tag}2="DayTradesRemaining"' in rules["#,##0"] and f'${tag}2="Leverage"' in rules["0.00"]
    assert layout.account_value_format("NetLiquidation") == "#,##0.00"
    assert layout.account_value_format("Cushion") == "0.00%"


def test_the_history_chart_is_scaled_to_the_bars(filled):
    chart = filled["History"]._charts[0]
    closes = [100.0 + i * 0.25 for i in range(ROWS)]
    assert chart.y_axis.scaling.min == axis_bounds(min(closes), max(closes))[0] > 0
    assert chart.y_axis.scaling.max >= max(closes)
    assert chart.series[0].val.numRef.f.endswith(f"$H$2:$H${1 + ROWS}")


def test_axis_bounds_are_round_and_hold_the_data():
    assert axis_bounds(571.3, 662.9) == (560.0, 680.0)
    low, high = axis_bounds(0.0123, 0.0125)
    assert low <= 0.0123 and high >= 0.0125 and low > 0
    assert axis_bounds(50.0, 50.0)[0] < 50.0 < axis_bounds(50.0, 50.0)[1]
