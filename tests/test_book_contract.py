"""The Book contract, run on both adapters: OpenpyxlBook on a real file, and XlwingsBook through
xlwings' real remote engine (``xw.Book(json=...)``).

Each test changes the workbook through the Book API, then ``reopen``s it: the openpyxl adapter saves
and loads the file again; for the remote engine the queued actions of ``book.json()`` are played onto
the file as the Excel client would (addin.excel.remote_json.apply_actions) and a fresh payload is
opened. Reading back after reopen is what proves a write landed.
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import openpyxl
import pandas as pd
import pytest
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.table import Table, TableColumn

from addin.excel.book import BookError, SheetNotFound, TableInfo, TableNotFound
from addin.excel.layout import WATCHLIST_COLUMNS
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.remote_json import UnsupportedAction, apply_actions, book_json
from addin.excel.xlwings_book import XlwingsBook

os.environ["XLWINGS_LICENSE_KEY"] = "noncommercial"
import xlwings as xw  # noqa: E402  (the remote engine reads the licence key at use)

T0 = dt.datetime(2026, 1, 2, 14, 30)
QUOTES = ["Symbol", "Bid", "Updated", "Note"]


def _table(ws, name, ref, columns):
    ws.add_table(Table(displayName=name, ref=ref,
                       tableColumns=[TableColumn(id=i + 1, name=c) for i, c in enumerate(columns)]))


def make_workbook(path):
    """Data: Table Quotes at B3:E6 (header row 3); Orders: Table Orders at A1:D3; Watch: Table Solo
    with only Symbol; the workbook-level name Account -> Data!$H$1."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Data"
    ws["B1"] = "quotes below"
    for j, h in enumerate(QUOTES):
        ws.cell(row=3, column=2 + j, value=h)
    rows = [["AAPL", 229.5, T0, None], ["EUR/USD", 1.08125, T0 + dt.timedelta(hours=1), "#N/A"],
            ["ZZZZ", None, None, "text"]]
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            ws.cell(row=4 + i, column=2 + j, value=v)
    _table(ws, "Quotes", "B3:E6", QUOTES)
    ws["H1"] = "DU123456"
    wb.defined_names["Account"] = DefinedName("Account", attr_text="Data!$H$1")

    orders = wb.create_sheet("Orders")
    for row in (["Ref", "Symbol", "Quantity", "Status"], ["R1", "AAPL", 10, None], ["R2", "MSFT", 5, None]):
        orders.append(row)
    _table(orders, "Orders", "A1:D3", ["Ref", "Symbol", "Quantity", "Status"])

    watch = wb.create_sheet("Watch")
    for row in (["Symbol"], ["AAPL"], ["MSFT"]):
        watch.append(row)
    _table(watch, "Solo", "A1:A3", ["Symbol"])
    wb.save(path)


class OpenpyxlHarness:
    name = "openpyxl"

    def __init__(self, path):
        self.path = path

    def open(self):
        return OpenpyxlBook.open(self.path)

    def reopen(self, book):
        book.save()
        book.close()
        return self.open()


class RemoteHarness:
    """XlwingsBook on xlwings' remote engine; reopen = play the queued actions onto the file."""

    name = "xlwings-remote"

    def __init__(self, path):
        self.path = path

    def open(self):
        return XlwingsBook(xw.Book(json=book_json(self.path)))

    def reopen(self, book):
        actions = book.book.json()["actions"]
        wb = openpyxl.load_workbook(self.path)
        apply_actions(wb, actions)
        wb.save(self.path)
        book.close()
        return self.open()


@pytest.fixture(params=[OpenpyxlHarness, RemoteHarness], ids=["openpyxl", "xlwings-remote"])
def harness(request, tmp_path):
    path = tmp_path / "contract.xlsx"
    make_workbook(path)
    return request.param(path)


@pytest.fixture
def book(harness):
    return harness.open()


# -- structure -------------------------------------------------------------------------------------

def test_sheets_and_tables(book):
    assert book.sheet_names() == ["Data", "Orders", "Watch"]
    assert book.has_sheet("data") and not book.has_sheet("Nope")
    tables = book.tables()
    assert set(tables) == {"Quotes", "Orders", "Solo"}
    assert tables["Quotes"] == TableInfo("Quotes", "Data", 3, 2, 6, 5, QUOTES)
    assert book.table("quotes").ref == "B3:E6"


def test_missing_table_error_names_it_and_the_tables_present(book):
    with pytest.raises(TableNotFound) as err:
        book.table("Positions")
    assert isinstance(err.value, KeyError)
    assert "'Positions'" in str(err.value) and "Quotes" in str(err.value) and "Solo" in str(err.value)


def test_names(book):
    assert book.names() == {"Account": "=Data!$H$1"}


# -- reading -----------------------------------------------------------------------------------------

def test_read_table_values_as_excel_holds_them(book):
    df = book.read_table("Quotes")
    assert list(df.columns) == QUOTES
    assert list(df.index) == [4, 5, 6]
    assert df.loc[4, "Symbol"] == "AAPL" and df.loc[4, "Bid"] == 229.5
    assert df.loc[4, "Updated"] == T0
    assert df.loc[5, "Note"] == "#N/A"
    assert df.loc[6, "Bid"] is None and df.loc[4, "Note"] is None


def test_read_pads_beyond_the_used_range_with_none(book):
    block = book.read("Data", 1, 1, 2, 30)
    assert len(block) == 2 and all(len(r) == 30 for r in block)
    assert block[0][1] == "quotes below" and block[1] == [None] * 30


def test_read_unknown_sheet(book):
    with pytest.raises(SheetNotFound, match="Nope.*Data"):
        book.read("Nope", 1, 1, 1, 1)


# -- writing -----------------------------------------------------------------------------------------

def test_write_is_one_call_and_lands(harness, book):
    book.write("Orders", 2, 4, [["Submitted"], ["Refused: quantity above max_quantity"]])
    assert book.calls == 1
    book = harness.reopen(book)
    assert book.read("Orders", 2, 4, 3, 4) == [["Submitted"], ["Refused: quantity above max_quantity"]]


def test_write_converts_numpy_and_pandas_values(harness, book):
    aware = pd.Timestamp("2026-01-02 15:30", tz="Europe/Berlin")
    book.write("Data", 10, 1, [[np.int64(7), np.float64(1.25), float("nan"), aware, pd.NaT, np.bool_(True)]])
    book = harness.reopen(book)
    assert book.read("Data", 10, 1, 10, 6) == [[7, 1.25, None, dt.datetime(2026, 1, 2, 14, 30), None, True]]


def test_ragged_write_is_refused_and_nothing_is_written(harness, book):
    with pytest.raises(BookError, match="same non-zero length"):
        book.write("Orders", 2, 4, [["a"], ["b", "c"]])
    with pytest.raises(TypeError, match="cannot write"):
        book.write("Orders", 2, 4, [[{"not": "a cell"}]])
    with pytest.raises(SheetNotFound):
        book.write("Nope", 1, 1, [[1]])
    assert book.calls == 0
    book = harness.reopen(book)
    assert book.read("Orders", 2, 4, 3, 4) == [[None], [None]]


def test_add_sheet(harness, book):
    book.add_sheet("Log")
    book.add_sheet("log")  # present: no-op
    assert book.sheet_names() == ["Data", "Orders", "Watch", "Log"]
    book.write("Log", 1, 1, [["Time", "Message"]])
    book = harness.reopen(book)
    assert book.sheet_names() == ["Data", "Orders", "Watch", "Log"]
    assert book.read("Log", 1, 1, 1, 2) == [["Time", "Message"]]


# -- Tables ------------------------------------------------------------------------------------------

def test_resize_table_grows_and_shrinks_keeping_the_header(harness, book):
    book.resize_table("Quotes", 8)
    assert book.calls == 1
    book = harness.reopen(book)
    assert book.table("Quotes") == TableInfo("Quotes", "Data", 3, 2, 8, 5, QUOTES)
    book.resize_table("Quotes", 2)  # below the header: one body row stays
    book = harness.reopen(book)
    assert book.table("Quotes") == TableInfo("Quotes", "Data", 3, 2, 4, 5, QUOTES)


def test_write_table_grows_and_keeps_columns_not_listed(harness, book):
    df = pd.DataFrame({"Symbol": ["A", "B", "C", "D", "E"], "Bid": [1.0, 2.0, 3.0, 4.0, 5.0]})
    book.write_table("Quotes", df)
    assert book.calls == 2  # one write (Symbol and Bid are adjacent) + one resize
    book = harness.reopen(book)
    out = book.read_table("Quotes")
    assert list(out.index) == [4, 5, 6, 7, 8]
    assert out["Symbol"].tolist() == ["A", "B", "C", "D", "E"]
    assert out["Bid"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert out.loc[5, "Note"] == "#N/A" and out.loc[8, "Note"] is None  # not listed: kept / empty


def test_write_table_shrinks_and_clears_the_rows_it_leaves(harness, book):
    book.write_table("Quotes", pd.DataFrame({c: [v] for c, v in zip(QUOTES, ["X", 9.5, T0, "ok"])}))
    assert book.calls == 3  # body write, clearing write, resize
    book = harness.reopen(book)
    assert book.table("Quotes").last_row == 4
    assert book.read_table("Quotes").values.tolist() == [["X", 9.5, T0, "ok"]]
    assert book.read("Data", 5, 2, 6, 5) == [[None] * 4, [None] * 4]


def test_write_table_same_size_is_one_call(harness, book):
    df = pd.DataFrame({"Status": ["Filled", "Refused"]})
    book.write_table("Orders", df)
    assert book.calls == 1
    book = harness.reopen(book)
    assert book.read_table("Orders")["Status"].tolist() == ["Filled", "Refused"]
    assert book.read_table("Orders")["Ref"].tolist() == ["R1", "R2"]


def test_write_table_empty_frame_leaves_one_empty_row(harness, book):
    book.write_table("Orders", pd.DataFrame(columns=["Ref", "Symbol", "Quantity", "Status"]))
    book = harness.reopen(book)
    assert book.table("Orders").last_row == 2
    assert book.read("Orders", 2, 1, 3, 4) == [[None] * 4, [None] * 4]


def test_write_table_unknown_column_is_refused_before_writing(harness, book):
    with pytest.raises(BookError, match=r"no column\(s\) \['Ask'\].*Symbol"):
        book.write_table("Quotes", pd.DataFrame({"Symbol": ["A"], "Ask": [1.0]}))
    with pytest.raises(TableNotFound):
        book.write_table("Nope", pd.DataFrame({"Symbol": ["A"]}))
    assert book.calls == 0
    book = harness.reopen(book)
    assert book.read_table("Quotes")["Symbol"].tolist() == ["AAPL", "EUR/USD", "ZZZZ"]


def test_a_table_with_only_symbol_gets_the_standard_columns(harness, book):
    info = book.add_table_columns("Solo", WATCHLIST_COLUMNS)
    assert info.columns == WATCHLIST_COLUMNS and book.calls == 2
    book = harness.reopen(book)
    assert book.table("Solo") == TableInfo("Solo", "Watch", 1, 1, 3, len(WATCHLIST_COLUMNS), WATCHLIST_COLUMNS)
    assert book.read_table("Solo")["Symbol"].tolist() == ["AAPL", "MSFT"]
    assert book.add_table_columns("Solo", ["Symbol", "Bid"]).columns == WATCHLIST_COLUMNS  # nothing to add
    assert book.calls == 0


def test_add_table_columns_refuses_to_overwrite_cells(harness, book):
    book.write("Watch", 2, 2, [["user's note"]])
    book = harness.reopen(book)
    with pytest.raises(BookError, match="B2"):
        book.add_table_columns("Solo", ["Bid"])


def test_add_table(harness, book):
    info = book.add_table("Orders", "Fills", 6, 2, ["ExecId", "Price"])
    assert info == TableInfo("Fills", "Orders", 6, 2, 7, 3, ["ExecId", "Price"])
    with pytest.raises(BookError, match="already exists"):
        book.add_table("Orders", "fills", 10, 2, ["X"])
    book = harness.reopen(book)
    assert book.table("Fills") == info


# -- recalculation -----------------------------------------------------------------------------------

def test_calculate_is_one_call(book):
    book.calculate("Data", ["B4", "$C$5", "D6"])
    assert book.calls == 1
    book.calculate("Data", [])
    assert book.calls == 1
    with pytest.raises(ValueError, match="not a range address"):
        book.calculate("Data", ["B4", "nonsense"])
    assert book.calls == 1


# -- the remote engine's queued actions --------------------------------------------------------------

@pytest.fixture
def remote(tmp_path):
    path = tmp_path / "remote.xlsx"
    make_workbook(path)
    return XlwingsBook(xw.Book(json=book_json(path)))


def _actions(book):
    return book.book.json()["actions"]


def test_remote_write_is_one_range_value_action(remote):
    remote.write("Orders", 2, 3, [[1, "Filled"], [2, "Refused"]])
    (action,) = _actions(remote)
    assert action["func"] == "setValues"
    assert (action["sheet_position"], action["start_row"], action["start_column"]) == (1, 1, 2)
    assert (action["row_count"], action["column_count"]) == (2, 2)
    assert action["values"] == [[1, "Filled"], [2, "Refused"]]


def test_remote_write_table_is_one_write_and_one_resize(remote):
    remote.write_table("Orders", pd.DataFrame({"Ref": ["R1", "R2", "R3"], "Symbol": ["A", "B", "C"]}))
    funcs = [(a["func"], a["args"]) for a in _actions(remote)]
    assert funcs == [("setValues", [None]), ("resizeTable", [0, "$A$1:$D$4"])]


def test_remote_calculate_is_one_action(remote):
    remote.calculate("Data", ["B4", "C5", "D6", "E4"])
    assert [a["func"] for a in _actions(remote)] == ["calculate"]


def test_remote_formulas_are_refused_clearly(remote):
    with pytest.raises(BookError, match="remote engine does not send formulas"):
        remote.formulas("Data", ["B4"])


def test_remote_actions_go_to_their_own_book(remote, tmp_path):
    other_path = tmp_path / "other.xlsx"
    make_workbook(other_path)
    other = XlwingsBook(xw.Book(json=book_json(other_path)))  # now the engine's active book
    remote.calculate("Data", ["B4"])
    remote.write("Data", 1, 1, [["x"]])
    assert [a["func"] for a in _actions(remote)] == ["calculate", "setValues"]
    assert _actions(other) == []


def test_a_sheet_action_without_its_sheet_position_is_refused_clearly():
    wb = openpyxl.Workbook()
    action = {"func": "setValues", "values": [[1]], "start_row": 0, "start_column": 0}
    with pytest.raises(UnsupportedAction, match="'setValues' names no sheet_position"):
        apply_actions(wb, [action])
    assert wb.active["A1"].value is None
