"""The .xlsm's form buttons: every button runs xlwings' RunPython (which olevba finds in the workbook's VBA
project) with a call of a function in addin.app.macros.MACROS, every macro has a button, and the buttons
survive an ``ibxl run`` that saves the .xlsm in place (against the paper gateway)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from addin.app.jobs import run_workbook
from addin.app.macros import MACROS
from addin.config import Settings
from addin.excel import layout
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.vba import vba_modules
from addin.paper import PaperGateway
from workbooks import buttons

ROOT = Path(__file__).resolve().parents[1]
XLSM = ROOT / "workbooks" / "ibxl.xlsm"
CALL = re.compile(r"import addin\.app\.macros as m; m\.(\w+)\(\)")


def macro_functions(found: dict[str, list[tuple[str, str]]]) -> list[str]:
    """The addin.app.macros function each button calls (asserting each is a RunPython of one call)."""
    names = []
    for caption, macro in found["Buttons"]:
        python = buttons.python_call(macro)
        assert python is not None, f"button {caption!r}: {macro!r} is not a RunPython call"
        m = CALL.fullmatch(python)
        assert m, f"button {caption!r} runs {python!r}"
        names.append(m.group(1))
    return names


def test_every_button_runs_a_macro_through_runpython_and_every_macro_has_one():
    found = buttons.read_buttons(XLSM.read_bytes())
    assert list(found) == ["Buttons"]
    names = macro_functions(found)
    assert sorted(names) == sorted(MACROS) and len(names) == len(set(names)) == 16
    assert all(callable(MACROS[n]) for n in names)
    # RunPython is a public procedure of the workbook's own VBA project (xlwings' module)
    code = {m.name: m.code for m in vba_modules(XLSM)}
    assert re.search(r"^Public Function RunPython\(PythonCommand As String\)", code["xlwings"], re.M)
    # in the part itself the macro text is XML-escaped, as Excel writes a macro with an argument
    vml = zipfile.ZipFile(XLSM).read(buttons.VML_PART).decode()
    assert "<x:FmlaMacro>'RunPython &quot;import addin.app.macros as m; m.place_orders()&quot;'</x:FmlaMacro>" in vml
    assert vml.count('ObjectType="Button"') == 16


def test_the_buttons_sheet_lists_what_each_button_runs():
    wb = openpyxl.load_workbook(XLSM)
    rows = list(wb["Buttons"].iter_rows(min_row=4, values_only=True))
    found = buttons.read_buttons(XLSM.read_bytes())["Buttons"]
    assert [r[2] for r in rows] == [macro for _caption, macro in found]
    assert [caption for caption, _ in found] == [caption for _, caption in layout.MACROS]


def test_macro_text_refuses_quotes():
    with pytest.raises(ValueError):
        buttons.macro_text('print("x")')
    assert buttons.python_call("[0]!IbxlConnect") is None


def test_buttons_survive_an_ibxl_run_that_saves_the_xlsm(tmp_path):
    path = tmp_path / "mine.xlsm"
    shutil.copy(XLSM, path)
    before = buttons.read_buttons(path.read_bytes())
    OpenpyxlBook.open(path)          # in place: refused if openpyxl would drop anything (buttons included)
    with PaperGateway(port=0, stream_interval=0.05, account_interval=5.0) as gw:
        summary = run_workbook(path, port=gw.port, client_id=61, portfolio=True, settings=Settings(),
                               journal_path=tmp_path / "journal.jsonl", echo=lambda _: None)
    assert summary.ok, summary.steps
    data = path.read_bytes()
    assert data != XLSM.read_bytes()                                  # it was saved
    assert buttons.read_buttons(data) == before
    tag = get_column_letter(layout.TABLES["Account"][2] + layout.ACCOUNT_COLUMNS.index("Tag"))
    assert openpyxl.load_workbook(path)["Portfolio"][f"{tag}2"].value     # with the account values in it
    with zipfile.ZipFile(path) as z:
        assert b'Extension="vml"' in z.read("[Content_Types].xml")
