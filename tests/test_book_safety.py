"""What ibxl writes into a workbook cannot hurt it, on both Book adapters (OpenpyxlBook on a real file,
XlwingsBook through xlwings' remote engine with its actions played back as the Excel client would):

- text stays text: a str that looks like a formula (``=HYPERLINK(...)``, ``=cmd|...``, ``+1+1``, ``@SUM(1)``,
  ``-2+3``), a number, a date, a bool or an error is stored as that text (``data_type "s"``); formulas are
  written only by ``write_formulas``;
- a Table that grows never covers a non-empty cell: the write is refused naming the cell, nothing of the
  Table is written;
- two Books saving one file: the second save merges the first one's cells, refuses a conflict naming the
  file and the cell, and keeps the VBA project of an .xlsm.

Everything is read back from the saved file with openpyxl.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.excel.book import ConcurrentSaveError, TableGrowthError
from addin.excel.openpyxl_book import OpenpyxlBook

from .test_book_contract import OpenpyxlHarness, RemoteHarness, make_workbook

WORKBOOKS = Path(__file__).resolve().parents[1] / "workbooks"
HOSTILE = ['=HYPERLINK("http://evil","x")', "=cmd|' /C calc'!A0", "+1+1", "@SUM(1)", "-2+3"]
# Text Excel would otherwise turn into a number, date, bool, error, or lose the apostrophe of.
LOOKALIKES = ["0012", "1-2", "TRUE", "#N/A", "'quoted", " =1+1", "\uff1d1+1", "12:30", "5%"]


@pytest.fixture(params=[OpenpyxlHarness, RemoteHarness], ids=["openpyxl", "xlwings-remote"])
def harness(request, tmp_path):
    path = tmp_path / "safety.xlsx"
    make_workbook(path)
    return request.param(path)


def _cells(path: Path, sheet: str, top: int, left: int, bottom: int, right: int):
    ws = openpyxl.load_workbook(path)[sheet]
    return [[ws.cell(row=r, column=c) for c in range(left, right + 1)] for r in range(top, bottom + 1)]


# -- text stays text ---------------------------------------------------------------------------------------

def test_text_that_looks_like_a_formula_or_a_value_is_written_as_text(harness):
    book = harness.open()
    texts = HOSTILE + LOOKALIKES
    book.write("Data", 10, 1, [[t] for t in texts])
    harness.reopen(book).close()
    cells = [row[0] for row in _cells(harness.path, "Data", 10, 1, 9 + len(texts), 1)]
    assert [(c.value, c.data_type) for c in cells] == [(t, "s") for t in texts]


def test_table_writes_keep_text_as_text(harness):
    book = harness.open()
    book.write_table("Orders", pd.DataFrame({"Ref": HOSTILE, "Symbol": ["AAPL"] * len(HOSTILE)}))
    harness.reopen(book).close()
    cells = [row[0] for row in _cells(harness.path, "Orders", 2, 1, 1 + len(HOSTILE), 1)]
    assert [(c.value, c.data_type) for c in cells] == [(t, "s") for t in HOSTILE]


def test_formulas_only_through_write_formulas(harness):
    book = harness.open()
    book.write_formulas("Data", 10, 1, [["=1+1", "=SUM(1,2)", 5, "+1+1"]])
    harness.reopen(book).close()
    (row,) = _cells(harness.path, "Data", 10, 1, 10, 4)
    assert [(c.value, c.data_type) for c in row] == [("=1+1", "f"), ("=SUM(1,2)", "f"), (5, "n"), ("+1+1", "s")]


def test_control_characters_from_ib_do_not_break_the_write(tmp_path):
    path = tmp_path / "ctl.xlsx"
    make_workbook(path)
    book = OpenpyxlBook.open(path)
    book.write("Data", 10, 1, [["bell\x07 and nul\x00", "tab\tand\nnewline"]])
    book.save()
    (row,) = _cells(path, "Data", 10, 1, 10, 2)
    assert [c.value for c in row] == ["bell\ufffd and nul\ufffd", "tab\tand\nnewline"]


# -- a Table never grows over the user's cells -------------------------------------------------------------

def test_a_table_refuses_to_grow_over_a_users_cell_and_writes_nothing(harness):
    book = harness.open()
    book.write("Orders", 5, 2, [["my note"]])        # Orders is A1:D3: B5 is two rows below it
    book = harness.reopen(book)
    grown = pd.DataFrame({"Ref": [f"N{i}" for i in range(5)], "Symbol": ["AAPL"] * 5})
    with pytest.raises(TableGrowthError, match=r"Table 'Orders' on sheet 'Orders' would grow to row 6 over cell "
                                               r"Orders!B5") as err:
        book.write_table("Orders", grown)
    assert (err.value.sheet, err.value.cell) == ("Orders", "B5")
    with pytest.raises(TableGrowthError, match="Orders!B5"):
        book.check_growth(book.table("Orders"), 9)
    # growing up to the row above the note is fine
    book.write_table("Orders", grown.head(3))
    book = harness.reopen(book)
    assert book.table("Orders").ref == "A1:D4"
    assert book.read("Orders", 2, 1, 5, 2) == [["N0", "AAPL"], ["N1", "AAPL"], ["N2", "AAPL"], [None, "my note"]]
    book.close()


def test_a_merged_cell_below_a_table_stops_it_growing(tmp_path):
    path = tmp_path / "merged.xlsx"
    make_workbook(path)
    wb = openpyxl.load_workbook(path)
    wb["Orders"].merge_cells("C6:E7")                 # empty, but a merged range under the Table's columns
    wb.save(path)
    book = OpenpyxlBook.open(path)
    with pytest.raises(TableGrowthError, match="Orders!C6"):
        book.write_table("Orders", pd.DataFrame({"Ref": [f"N{i}" for i in range(7)]}))
    assert book.table("Orders").ref == "A1:D3"


# -- two Books, one file -------------------------------------------------------------------------------------

def test_a_second_book_saving_later_keeps_what_the_first_one_saved(tmp_path):
    path = tmp_path / "two.xlsx"
    make_workbook(path)
    first, second = OpenpyxlBook.open(path), OpenpyxlBook.open(path)     # both read the same bytes
    first.write("Orders", 2, 4, [["Submitted"]])                          # R1's status
    first.write_table("Quotes", pd.DataFrame({"Symbol": ["A", "B", "C", "D", "E"]}), columns=["Symbol"])
    first.save()
    second.write("Orders", 3, 4, [["Filled"]])                            # R2's status
    second.write("Data", 1, 8, [["DU999"]])
    second.save()
    wb = openpyxl.load_workbook(path)
    assert [c.value for c in wb["Orders"]["D"][1:3]] == ["Submitted", "Filled"]
    assert wb["Data"]["H1"].value == "DU999"
    assert wb["Data"].tables["Quotes"].ref == "B3:E8"                      # the first one's growth stays
    assert [wb["Data"].cell(row=r, column=2).value for r in range(4, 9)] == ["A", "B", "C", "D", "E"]
    # the second Book now holds the merged workbook: a third save changes nothing of the first's
    second.write("Orders", 2, 3, [[11]])
    second.save()
    wb = openpyxl.load_workbook(path)
    assert (wb["Orders"]["D2"].value, wb["Orders"]["C2"].value) == ("Submitted", 11)


def test_a_conflicting_cell_refuses_the_save_naming_the_file_and_the_cell(tmp_path):
    path = tmp_path / "clash.xlsx"
    make_workbook(path)
    first, second = OpenpyxlBook.open(path), OpenpyxlBook.open(path)
    first.write("Orders", 2, 1, [["REF-FIRST"]])
    first.save()
    second.write("Orders", 2, 1, [["REF-SECOND"]])
    second.write("Orders", 3, 4, [["Filled"]])
    with pytest.raises(ConcurrentSaveError, match=rf"not saving {path}.*Orders!A2 \(theirs 'REF-FIRST', "
                                                  rf"ours 'REF-SECOND'\)"):
        second.save()
    wb = openpyxl.load_workbook(path)
    assert wb["Orders"]["A2"].value == "REF-FIRST" and wb["Orders"]["D3"].value is None   # untouched
    # the same value written by both is no conflict
    third = OpenpyxlBook.open(path)
    fourth = OpenpyxlBook.open(path)
    third.write("Orders", 3, 4, [["Filled"]])
    third.save()
    fourth.write("Orders", 3, 4, [["Filled"]])
    fourth.save()
    assert openpyxl.load_workbook(path)["Orders"]["D3"].value == "Filled"


def test_tables_resized_differently_by_two_books_refuse_the_second_save(tmp_path):
    path = tmp_path / "tables.xlsx"
    make_workbook(path)
    first, second = OpenpyxlBook.open(path), OpenpyxlBook.open(path)
    first.resize_table("Orders", 6)
    first.save()
    second.resize_table("Orders", 5)
    with pytest.raises(ConcurrentSaveError, match=r"Table 'Orders' \(theirs A1:D6, ours A1:D5\)"):
        second.save()
    assert openpyxl.load_workbook(path)["Orders"].tables["Orders"].ref == "A1:D6"


def test_content_saved_where_our_table_grows_refuses_the_merge(tmp_path):
    path = tmp_path / "below.xlsx"
    make_workbook(path)
    mine = OpenpyxlBook.open(path)
    user = openpyxl.load_workbook(path)                # the user saves a note below the Table meanwhile
    user["Orders"]["C5"] = "note"
    user.save(path)
    mine.resize_table("Orders", 6)                     # checked against what this Book read: C5 was empty
    with pytest.raises(ConcurrentSaveError, match=r"Orders!C5 \(below Table 'Orders', now not empty\)"):
        mine.save()
    assert openpyxl.load_workbook(path)["Orders"]["C5"].value == "note"


def test_a_merged_save_keeps_the_xlsm_macro_enabled_with_its_vba(tmp_path):
    path = tmp_path / "ibxl.xlsm"
    shutil.copy(WORKBOOKS / "ibxl.xlsm", path)
    vba = zipfile.ZipFile(path).read("xl/vbaProject.bin")
    first, second = OpenpyxlBook.open(path), OpenpyxlBook.open(path)
    first.write("Log", 2, 4, [["first"]])
    first.save()
    second.write("Log", 3, 4, [["second"]])
    second.save()                                      # merged onto the first one's file
    with zipfile.ZipFile(path) as z:
        assert z.read("xl/vbaProject.bin") == vba
        assert b"application/vnd.ms-excel.sheet.macroEnabled.main+xml" in z.read("[Content_Types].xml")
    wb = openpyxl.load_workbook(path, keep_vba=True)
    assert (wb["Log"]["D2"].value, wb["Log"]["D3"].value) == ("first", "second")
