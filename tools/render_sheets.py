"""Render every sheet of the demo workbook (and the .xlsm's Buttons sheet) to PNG, to look at them.

    python tools/render_sheets.py --out renders/        # needs LibreOffice (soffice) and poppler (pdftoppm)

Steps: ``ibxl demo --out OUT/ibxl-demo.xlsx`` (the paper gateway fills every sheet), then for each sheet
a copy of the workbook in which only that sheet is visible, fitted one page wide in landscape, is
converted with ``soffice --headless --convert-to pdf`` and split with ``pdftoppm`` into
``OUT/<workbook>-<sheet>-<page>.png``. The .xlsm (workbooks/ibxl.xlsm) adds its Buttons and
xlwings.conf sheets. LibreOffice draws what Excel would, closely but not exactly (fonts, chart styles).
"""

from __future__ import annotations

import argparse
import io
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import openpyxl
from openpyxl.utils import get_column_letter

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed (Debian/Ubuntu: apt-get install libreoffice-calc-nogui "
                         "poppler-utils)")
    return path


def demo_workbook(out: Path, seconds: float) -> Path:
    """Run ``ibxl demo`` into ``out``/ibxl-demo.xlsx; returns its path."""
    path = out / "ibxl-demo.xlsx"
    subprocess.run([sys.executable, "-m", "addin.app.cli", "demo", "--out", str(path), "--seconds", str(seconds)],
                   cwd=ROOT, check=True, timeout=600)
    return path


def _one_sheet_copy(src: Path, sheet: str, dst: Path) -> None:
    wb = openpyxl.load_workbook(io.BytesIO(src.read_bytes()), keep_vba=src.suffix == ".xlsm")
    for ws in wb.worksheets:
        ws.sheet_state = "visible" if ws.title == sheet else "hidden"
        ws.sheet_view.tabSelected = ws.title == sheet
    ws = wb[sheet]
    wb.active = wb.sheetnames.index(sheet)
    ws.page_setup.orientation = "landscape"
    width = sum((ws.column_dimensions[get_column_letter(c)].width or 9) for c in range(1, ws.max_column + 1))
    ws.page_setup.fitToWidth = max(1, math.ceil(width / 170))   # legible: about 170 characters a page
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.gridLines = True
    wb.save(dst)


def render(workbook: Path, out: Path, sheets: list[str] | None = None) -> list[Path]:
    """PNGs of ``sheets`` (default: all) of ``workbook`` in ``out``, one per printed page."""
    soffice, pdftoppm = _tool("soffice"), _tool("pdftoppm")
    names = sheets or openpyxl.load_workbook(workbook, read_only=True).sheetnames
    pngs: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for sheet in names:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", sheet).strip("_")
            copy = tmp / f"{workbook.stem}-{slug}{workbook.suffix}"
            _one_sheet_copy(workbook, sheet, copy)
            subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp}/profile",
                            "--convert-to", "pdf", "--outdir", str(tmp), str(copy)],
                           check=True, timeout=300, capture_output=True)
            prefix = out / f"{workbook.stem}-{slug}"
            subprocess.run([pdftoppm, "-png", "-r", "110", str(copy.with_suffix(".pdf")), str(prefix)],
                           check=True, timeout=300)
            pngs += sorted(out.glob(f"{prefix.name}-*.png"))
    return pngs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="renders", help="folder for the PNGs (default: renders/)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds the demo streams (default 3)")
    parser.add_argument("--workbook", default=None, help="render this workbook instead of running the demo")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.workbook:
        books = [(Path(args.workbook).resolve(), None)]
    else:
        books = [(demo_workbook(out, args.seconds), None),
                 (ROOT / "workbooks" / "ibxl.xlsm", ["Buttons", "xlwings.conf"])]
    for book, sheets in books:
        for png in render(book, out, sheets):
            print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
