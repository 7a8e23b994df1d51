"""OpenpyxlBook's file guarantees: atomic, verified saves; locked files refused; nothing lost silently
(parts openpyxl would drop are listed and the overwrite refused); VBA kept; cached formula values."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import openpyxl
import pytest
from openpyxl.chart import LineChart, Reference

from addin.excel.book import BookError, SaveVerificationError, WorkbookLockedError, WouldLosePartsError
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.workbook_parts import lost_parts

WORKBOOKS = Path(__file__).resolve().parents[1] / "workbooks"


def _plain(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Data"
    ws.append(["Symbol", "Last"])
    ws.append(["AAPL", 229.5])
    wb.save(path)
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".~ibxl-")]


def _patch_zip(path: Path, edits: dict[str, "callable"], extra: dict[str, bytes] | None = None) -> None:
    """Rewrite members of a workbook zip (edits: name -> function(bytes) -> bytes) and add members."""
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            body = src.read(name)
            dst.writestr(name, edits[name](body) if name in edits else body)
        for name, body in (extra or {}).items():
            dst.writestr(name, body)
    path.write_bytes(out.getvalue())


# -- atomic save -------------------------------------------------------------------------------------

def test_save_in_place_replaces_the_file_atomically(tmp_path):
    path = _plain(tmp_path / "book.xlsx")
    inode = path.stat().st_ino
    book = OpenpyxlBook.open(path)
    book.write("Data", 2, 2, [[230.25]])
    assert book.save() == path.resolve()
    assert path.stat().st_ino != inode          # a new file moved into place, not rewritten in place
    assert _leftovers(tmp_path) == []
    assert openpyxl.load_workbook(path)["Data"]["B2"].value == 230.25


def test_a_save_that_writes_garbage_leaves_the_original_untouched(tmp_path, monkeypatch):
    path = _plain(tmp_path / "book.xlsx")
    before = path.read_bytes()
    book = OpenpyxlBook.open(path)
    book.write("Data", 2, 2, [[1.0]])

    def truncated_save(self, filename):  # a crash half-way through writing the zip
        buf = io.BytesIO()
        openpyxl.writer.excel.save_workbook(self, buf)
        Path(filename).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    monkeypatch.setattr(openpyxl.Workbook, "save", truncated_save)
    with pytest.raises(SaveVerificationError, match="does not re-open.*left as it was"):
        book.save()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_save_that_fails_midway_removes_its_temporary_file(tmp_path, monkeypatch):
    path = _plain(tmp_path / "book.xlsx")
    before = path.read_bytes()
    book = OpenpyxlBook.open(path)

    def failing_save(self, filename):
        Path(filename).write_bytes(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openpyxl.Workbook, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        book.save()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


# -- locked files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock_name", ["~$book.xlsx", ".~lock.book.xlsx#"], ids=["excel", "libreoffice"])
def test_a_workbook_open_elsewhere_is_refused(tmp_path, lock_name):
    path = _plain(tmp_path / "book.xlsx")
    lock = tmp_path / lock_name
    lock.write_bytes(b"owner")
    with pytest.raises(WorkbookLockedError) as err:
        OpenpyxlBook.open(path)
    assert lock_name in str(err.value) and "--out" in str(err.value)
    # Reading is fine, and so is writing to another file.
    assert OpenpyxlBook.open(path, read_only=True).read("Data", 2, 1, 2, 2) == [["AAPL", 229.5]]
    copy = OpenpyxlBook.open(path, out=tmp_path / "copy.xlsx")
    assert copy.save() == (tmp_path / "copy.xlsx").resolve()
    # The lock appears after opening: the save is refused and the file is untouched.
    lock.unlink()
    book = OpenpyxlBook.open(path)
    book.write("Data", 2, 2, [[1.0]])
    lock.write_bytes(b"owner")
    before = path.read_bytes()
    with pytest.raises(WorkbookLockedError, match="stale"):
        book.save()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    lock.unlink()
    book.save()
    assert openpyxl.load_workbook(path)["Data"]["B2"].value == 1.0


def test_read_only_book_refuses_to_save_over_the_original(tmp_path):
    path = _plain(tmp_path / "book.xlsx")
    with pytest.raises(BookError, match="read-only"):
        OpenpyxlBook.open(path, read_only=True).save()


# -- parts openpyxl would drop -----------------------------------------------------------------------

TEXT_BOX = (
    b'<twoCellAnchor><from><col>1</col><colOff>0</colOff><row>1</row><rowOff>0</rowOff></from>'
    b'<to><col>3</col><colOff>0</colOff><row>4</row><rowOff>0</rowOff></to>'
    b'<sp macro="" textlink=""><nvSpPr><cNvPr id="9" name="TextBox 1"/><cNvSpPr txBox="1"/></nvSpPr>'
    b'<spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="100" cy="100"/></a:xfrm>'
    b'<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></spPr>'
    b'<txBody><a:bodyPr/><a:p><a:r><a:t>a note</a:t></a:r></a:p></txBody></sp><clientData/></twoCellAnchor>'
)
CHART_EXT = (
    b'<extLst><ext uri="{781A3756-C4B2-4CAC-9D66-4F8BD8637D16}" '
    b'xmlns:c16r3="http://schemas.microsoft.com/office/drawing/2017/03/chart">'
    b'<c16r3:dataDisplayOptions16><c16r3:dispNaAsBlank val="1"/></c16r3:dataDisplayOptions16></ext></extLst>'
)


def _with_chart(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Data"
    for i in range(1, 6):
        ws.append([i, i * 1.5])
    chart = LineChart()
    chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=5))
    ws.add_chart(chart, "D2")
    wb.save(path)
    return path


def test_parts_openpyxl_would_drop_are_listed_and_the_overwrite_refused(tmp_path):
    path = _with_chart(tmp_path / "report.xlsx")
    _patch_zip(
        path,
        {
            "xl/drawings/drawing1.xml": lambda b: b.replace(b"</wsDr>", TEXT_BOX + b"</wsDr>"),
            "xl/charts/chart1.xml": lambda b: b.replace(b"</chartSpace>", CHART_EXT + b"</chartSpace>"),
        },
        extra={"xl/slicers/slicer1.xml": b'<slicers xmlns="http://schemas.microsoft.com/office/spreadsheetml/2009/9/main"/>'},
    )
    before = path.read_bytes()
    with pytest.raises(WouldLosePartsError) as err:
        OpenpyxlBook.open(path)
    lost = err.value.lost
    assert "1 x shape or text box" in lost and "1 x slicer" in lost
    assert any(item.startswith("chart content openpyxl does not model") and "dataDisplayOptions16" in item
               for item in lost)
    assert "--out NEW.xlsx" in str(err.value) and "Nothing was written" in str(err.value)
    assert path.read_bytes() == before

    # --out: a new file is written, the original stays as it was, and what the copy lacks is recorded.
    out = tmp_path / "report-ibxl.xlsx"
    book = OpenpyxlBook.open(path, out=out)
    book.write("Data", 1, 3, [["written"]])
    assert book.save() == out.resolve()
    assert "1 x shape or text box" in book.lost_in_copy
    assert openpyxl.load_workbook(out)["Data"]["C1"].value == "written"
    # Saving over the original explicitly is still refused.
    with pytest.raises(WouldLosePartsError):
        book.save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


SERIES_ID = (
    b'<extLst><ext uri="{C3380CC4-5D6E-409C-BE32-E72D297353CC}" '
    b'xmlns:c16="http://schemas.microsoft.com/office/drawing/2014/chart">'
    b'<c16:uniqueId val="{00000000-0001-0000-0000-000000000000}"/></ext></extLst>'
)
CHART_STYLE_NS = b"http://schemas.microsoft.com/office/drawing/2012/chartStyle"


def test_harmless_excel_chart_extras_do_not_block_a_save_in_place(tmp_path):
    """A series' uniqueId and the chart style/colour parts Excel adds are dropped without refusal."""
    path = _with_chart(tmp_path / "excel-saved.xlsx")
    _patch_zip(
        path,
        {"xl/charts/chart1.xml": lambda b: b.replace(b"</ser>", SERIES_ID + b"</ser>")},
        extra={"xl/charts/style1.xml": b'<cs:chartStyle xmlns:cs="' + CHART_STYLE_NS + b'" id="227"/>',
               "xl/charts/colors1.xml": b'<cs:colorStyle xmlns:cs="' + CHART_STYLE_NS + b'" meth="cycle" id="10"/>'},
    )
    book = OpenpyxlBook.open(path)
    book.write("Data", 1, 3, [["x"]])
    book.save()
    z = zipfile.ZipFile(path)
    assert "xl/charts/chart1.xml" in z.namelist() and "xl/charts/style1.xml" not in z.namelist()


def test_charts_openpyxl_made_itself_survive_a_save_in_place(tmp_path):
    path = _with_chart(tmp_path / "chart.xlsx")
    original = path.read_bytes()
    chart_before = zipfile.ZipFile(path).read("xl/charts/chart1.xml")
    book = OpenpyxlBook.open(path)  # no refusal: openpyxl re-reads its own chart completely
    book.write("Data", 1, 3, [["x"]])
    book.save()
    assert zipfile.ZipFile(path).read("xl/charts/chart1.xml") == chart_before
    assert lost_parts(original, path.read_bytes()) == []


def test_the_templates_round_trip_in_place_with_their_charts(tmp_path):
    for name in ("ibxl.xlsx", "ibxl.xlsm"):
        path = tmp_path / name
        shutil.copy(WORKBOOKS / name, path)
        original = zipfile.ZipFile(path)
        charts = {n: original.read(n) for n in original.namelist() if n.startswith("xl/charts/")}
        assert len(charts) == 6      # History's bars, Portfolio's weights, the Analysis sheet's four
        book = OpenpyxlBook.open(path)
        book.write("Watchlist", 2, 2, [[229.5, 229.6]])
        book.save()
        saved = zipfile.ZipFile(path)
        assert {n: saved.read(n) for n in saved.namelist() if n.startswith("xl/charts/")} == charts


# -- VBA ---------------------------------------------------------------------------------------------

def test_vba_is_kept_in_an_xlsm(tmp_path):
    path = tmp_path / "ibxl.xlsm"
    shutil.copy(WORKBOOKS / "ibxl.xlsm", path)
    vba = zipfile.ZipFile(path).read("xl/vbaProject.bin")
    book = OpenpyxlBook.open(path)
    book.write_table("Orders", book.read_table("Orders").assign(Status="Refused"), columns=["Status"])
    book.save()
    z = zipfile.ZipFile(path)
    assert z.read("xl/vbaProject.bin") == vba
    assert b"sheet.macroEnabled.main+xml" in z.read("[Content_Types].xml")
    again = OpenpyxlBook.open(path)
    assert set(again.read_table("Orders")["Status"]) == {"Refused"}
    assert "Buttons" in again.sheet_names()


def test_extension_must_match_the_vba_project(tmp_path):
    xlsm = tmp_path / "ibxl.xlsm"
    shutil.copy(WORKBOOKS / "ibxl.xlsm", xlsm)
    with pytest.raises(BookError, match="VBA project would be lost.*xlsm"):
        OpenpyxlBook.open(xlsm).save(tmp_path / "ibxl.xlsx")
    plain = _plain(tmp_path / "plain.xlsx")
    with pytest.raises(BookError, match="use a .xlsx name"):
        OpenpyxlBook.open(plain).save(tmp_path / "plain.xlsm")
    assert not (tmp_path / "ibxl.xlsx").exists() and not (tmp_path / "plain.xlsm").exists()


# -- formulas ----------------------------------------------------------------------------------------

def test_formula_cells_read_their_cached_value(tmp_path):
    path = tmp_path / "f.xlsx"
    wb = openpyxl.Workbook()
    wb.active.title = "Data"
    wb["Data"]["A1"] = 21
    wb["Data"]["B1"] = "=A1*2"
    wb.save(path)
    # Give B1 the cached value Excel would have stored (openpyxl itself writes none).
    _patch_zip(path, {"xl/worksheets/sheet1.xml":
                      lambda b: re.sub(rb"(<f>A1\*2</f>)<v\s*/?>(</v>)?", rb"\1<v>42</v>", b)})
    book = OpenpyxlBook.open(path)
    assert book.read("Data", 1, 1, 1, 2) == [[21, 42]]
    assert book.formulas("Data", ["B1", "A1", "C9"]) == ["=A1*2", None, None]
    book.write_formulas("Data", 1, 3, [["=B1+1"]])   # formulas only through the explicit method
    assert book.read("Data", 1, 3, 1, 3) == [[None]]  # unknown until Excel calculates it
    book.calculate("Data", ["C1"])
    book.save()
    assert b'fullCalcOnLoad="1"' in zipfile.ZipFile(path).read("xl/workbook.xml")


def test_reading_does_not_grow_the_sheet(tmp_path):
    book = OpenpyxlBook.open(_plain(tmp_path / "book.xlsx"))
    book.read("Data", 1, 1, 500, 40)
    ws = book.workbook["Data"]
    assert (ws.max_row, ws.max_column) == (2, 2)


def test_a_target_that_cannot_be_opened_for_writing_is_refused(tmp_path):
    book = OpenpyxlBook.open(_plain(tmp_path / "book.xlsx"))
    blocked = tmp_path / "blocked.xlsx"
    blocked.mkdir()  # something that exists there and cannot be opened for writing
    with pytest.raises(WorkbookLockedError, match="cannot be opened for writing"):
        book.save(blocked)
    assert _leftovers(tmp_path) == [] and blocked.is_dir()
