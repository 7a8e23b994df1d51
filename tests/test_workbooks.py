"""The template workbooks: the committed files are exactly what workbooks/build.py makes, and they hold
every sheet, Table, named range, format, chart and macro binding the add-in relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.app.demo import PRICING
from addin.excel import layout
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.remote_json import book_json
from addin.excel.xlwings_book import XlwingsBook
from workbooks import build
from workbooks.buttons import read_buttons

ROOT = Path(__file__).resolve().parents[1]
WORKBOOKS = ROOT / "workbooks"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    subprocess.run([sys.executable, "-m", "workbooks.build", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return out


@pytest.mark.parametrize("name", ["ibxl.xlsx", "ibxl.xlsm", "ibxl_macros.bas"])
def test_committed_files_are_what_the_script_makes(built, name):
    committed, fresh = WORKBOOKS / name, built / name
    if name.endswith(".bas"):
        assert committed.read_bytes() == fresh.read_bytes()
        return
    a, b = zipfile.ZipFile(committed), zipfile.ZipFile(fresh)
    assert a.namelist() == b.namelist()
    differing = [n for n in a.namelist() if a.read(n) != b.read(n)]
    assert differing == [], f"{name} is stale: run `python -m workbooks.build` ({differing[:5]})"


@pytest.fixture(scope="module", params=["ibxl.xlsx", "ibxl.xlsm"])
def template(request):
    return WORKBOOKS / request.param


def test_every_sheet_table_and_column(template):
    book = OpenpyxlBook.open(template, read_only=True)
    expected = layout.SHEETS + (["Buttons", "xlwings.conf"] if template.suffix == ".xlsm" else [])
    assert book.sheet_names() == expected
    tables = book.tables()
    assert set(tables) == set(layout.TABLES)
    for name, (sheet, top, left, columns) in layout.TABLES.items():
        info = tables[name]
        assert (info.sheet, info.first_row, info.first_col, info.columns) == (sheet, top, left, columns)
    n = len(layout.ORDER_INPUT_COLUMNS)
    assert tables["Orders"].columns[:n] == layout.ORDER_INPUT_COLUMNS
    assert tables["Orders"].columns[n:] == layout.ORDER_OUTPUT_COLUMNS


def test_sample_rows_and_parameters(template):
    book = OpenpyxlBook.open(template, read_only=True)
    assert book.read_table("Watchlist")["Symbol"].tolist() == [
        "AAPL", "MSFT", "GOOG", "SPY", "EUR/USD", "BTC/USD.PAXOS", "ES.CME", "^SPX.CBOE"]
    orders = book.read_table("Orders").set_index("Ref")
    assert len([r for r in orders.index if r.startswith("DEMO-")]) == 7
    assert orders.loc["BAD-QUANTITY-TOO-BIG", "Quantity"] == 100000
    assert orders.loc["BAD-UNKNOWN-SYMBOL", "Symbol"] == "ZZZZ"
    assert orders.loc["BAD-TEXT-QUANTITY", "Quantity"] == "ten"
    # No fixed prices: ibxl demo writes every priced cell from the live quote (addin.app.demo.PRICING).
    for ref, recipe in PRICING.items():
        for column, *_ in recipe:
            assert pd.isna(orders.loc[ref, column]), (ref, column)
    priced = ("LimitPrice", "StopPrice", "TrailAmount", "TrailPercent", "TakeProfit", "StopLoss")
    assert not orders[list(priced)].notna().any().any()
    assert orders["Transmit"].tolist() == [True] * len(orders)
    names = book.names()
    values = {}
    for label, name, value, _ in layout.HISTORY_PARAMETERS:
        assert names[name].startswith("=History!$B$")
        row = int(names[name].rsplit("$", 1)[1])
        assert book.read("History", row, 1, row, 2) == [[label, value]]
        values[label] = value
    assert values["Symbol"] == "GOOG"
    assert {n for _, n in layout.PNL_NAMES} <= set(names)
    config = book.read_table("Config").set_index("Key")["Value"]
    assert config["max_quantity"] == 100 and config["allow_short"] is False


def test_formats_frozen_headers_status_colours_and_charts(template):
    wb = openpyxl.load_workbook(template)
    orders = wb["Orders"]
    assert orders.freeze_panes == "B2"
    for sheet in layout.SHEETS:            # the Options sheet's Chain header sits under its parameters
        chain_top = layout.TABLES["Chain"][1] + 1
        assert wb[sheet].freeze_panes in ((f"A{chain_top}",) if sheet == "Options" else ("A2", "B2"))
    col = {h: i + 1 for i, h in enumerate(layout.ORDERS_COLUMNS)}
    assert orders.cell(row=2, column=col["LimitPrice"]).number_format == layout.NUMBER_FORMATS["price"]
    letter = openpyxl.utils.get_column_letter(col["Updated"])      # every row: the column's style
    assert orders.column_dimensions[letter].number_format == layout.NUMBER_FORMATS["time"]
    watch = wb["Watchlist"]
    wcol = {h: i + 1 for i, h in enumerate(layout.WATCHLIST_COLUMNS)}
    assert watch.cell(row=3, column=wcol["ChangePct"]).number_format == "0.00%"
    assert watch.cell(row=3, column=wcol["Volume"]).number_format == "#,##0.########"
    rules = [r for cf in orders.conditional_formatting for r in cf.rules if r.dxf.fill is not None]
    coloured = {r.formula[0].split('"')[1]: r.dxf.fill.bgColor.rgb[-6:] for r in rules}
    assert coloured == layout.STATUS_COLOURS
    assert [type(c).__name__ for c in wb["History"]._charts] == ["LineChart"]
    assert [type(c).__name__ for c in wb["Portfolio"]._charts] == ["PieChart"]


def test_the_xlsm_is_wired_for_xlwings(built):
    path = WORKBOOKS / "ibxl.xlsm"
    z = zipfile.ZipFile(path)
    quickstart = zipfile.ZipFile(build._quickstart_xlsm())
    assert z.read("xl/vbaProject.bin") == quickstart.read("xl/vbaProject.bin")  # xlwings' RunPython
    assert b"sheet.macroEnabled.main+xml" in z.read("[Content_Types].xml")
    wb = openpyxl.load_workbook(path)
    conf = {r[0]: r[1] for r in wb["xlwings.conf"].iter_rows(max_row=12, values_only=True) if r[0]}
    assert conf["UDF Modules"] == "udfs" and conf["Use UDF Server"] is True
    buttons = list(wb["Buttons"].iter_rows(min_row=4, values_only=True))
    bas = (WORKBOOKS / "ibxl_macros.bas").read_bytes().decode("ascii")
    assert len(buttons) == len(layout.MACROS) == 16
    on_sheet = read_buttons(path.read_bytes())["Buttons"]
    for (macro, caption), (_button, sub, button_macro), drawn in zip(layout.MACROS, buttons, on_sheet):
        assert drawn == (caption, button_macro)       # the form button in that row, and its macro
        call = f'RunPython "import addin.app.macros as m; m.{macro}()"'
        assert button_macro == f"'{call}'"           # the form button's macro: RunPython with its argument
        assert f"Sub {sub}()\r\n    ' {caption}\r\n    {call}\r\nEnd Sub" in bas


def test_the_templates_open_through_the_xlwings_remote_engine(template):
    os.environ["XLWINGS_LICENSE_KEY"] = "noncommercial"
    import xlwings as xw

    book = XlwingsBook(xw.Book(json=book_json(template)))
    assert set(book.tables()) == set(layout.TABLES)
    assert book.read_table("Orders")["Ref"].iloc[0] == "DEMO-001"
    assert book.names()["HistorySymbol"] == "=History!$B$2"
