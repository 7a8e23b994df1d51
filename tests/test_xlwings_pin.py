"""The xlwings version: pyproject's pin, the installed package and the DLL the .xlsm's VBA loads (read with
oletools) are one version; ``ibxl check`` reports a workbook whose VBA declares another one, with the fix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import xlwings
from oletools.olevba import VBA_Parser

from addin.app.doctor import FAILED, OK, SKIPPED, check_xlwings
from addin.excel.vba import XlwingsDllNotDeclared, declared_xlwings_version
from tests.vba_edit import replace_in_module

ROOT = Path(__file__).resolve().parents[1]
XLSM = ROOT / "workbooks" / "ibxl.xlsm"
DLL = r"xlwings(?:32|64)-([0-9.]+)\.dll"


def pinned_xlwings() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"xlwings\b", d)]
    assert len(pins) == 1 and "==" in pins[0], f"xlwings must be pinned exactly: {pins}"
    return pins[0].split("==", 1)[1].strip()


def test_pin_installed_and_vba_dll_are_one_version():
    parser = VBA_Parser(str(XLSM))
    code = "\n".join(c for _f, _s, _n, c in parser.extract_macros())
    parser.close()
    dlls = set(re.findall(r'"(xlwings(?:32|64)-[0-9.]+\.dll)"', code))
    versions = {re.fullmatch(DLL, d).group(1) for d in dlls}
    assert dlls == {"xlwings64-0.37.8.dll", "xlwings32-0.37.8.dll"}, dlls
    assert versions == {pinned_xlwings()} == {xlwings.__version__} == {declared_xlwings_version(XLSM)}


def test_check_passes_for_the_shipped_workbook():
    step = check_xlwings(XLSM)
    assert step.status == OK, step
    assert xlwings.__version__ in step.finding


def test_check_reports_a_workbook_declaring_another_dll(tmp_path):
    other = tmp_path / "other.xlsm"
    other.write_bytes(replace_in_module(XLSM.read_bytes(), "xlwings", DLL, "0.36.1"))
    assert declared_xlwings_version(other) == "0.36.1"
    assert declared_xlwings_version(XLSM) == xlwings.__version__   # the original is untouched
    step = check_xlwings(other)
    assert step.status == FAILED
    assert "xlwings64-0.36.1.dll" in step.finding and xlwings.__version__ in step.finding
    assert step.fix.startswith("pip install xlwings==0.36.1")
    # and the other way round: the shipped workbook on a machine with another xlwings
    step = check_xlwings(XLSM, installed="0.33.0")
    assert step.status == FAILED and step.fix.startswith(f"pip install xlwings=={xlwings.__version__}")


def test_check_skips_a_workbook_without_xlwings_vba(tmp_path):
    with pytest.raises(XlwingsDllNotDeclared):
        declared_xlwings_version(ROOT / "workbooks" / "ibxl.xlsx")
    assert check_xlwings(ROOT / "workbooks" / "ibxl.xlsx").status == SKIPPED
    assert check_xlwings(tmp_path / "missing.xlsm").status == SKIPPED
