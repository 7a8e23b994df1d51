"""A minimal writer of the analysis report into a workbook, until the Analysis sheet's own writer
(``addin.app.analysis_sheet.write_analysis``, with its Tables and charts) is merged: ``ibxl run
--analysis`` uses that one when it exists, else this one.

Where the workbook has a Table named after a report table (``addin.excel.layout.ANALYSIS_COLUMNS``),
the frame is written into it (the Correlation Table gains a column per new holding). Without one,
each table is written as plain cells on the sheet ``Analysis`` (created when missing): its name in
row 1, the header in row 2, the rows below, one band of columns per table from left to right, and
the cells below a band's new rows that an earlier, longer report left are cleared. Values are text
and numbers (every cell through the Book, never a formula)."""

from __future__ import annotations

import pandas as pd

from ..excel.book import TableNotFound
from ..excel.layout import ANALYSIS_COLUMNS

SHEET = "Analysis"
CLEAR_ROWS = 2000          # rows below a band checked for an earlier report's leftovers


def _columns(name: str, df: pd.DataFrame) -> list[str]:
    if name == "Correlation":
        return ["Symbol", *[c for c in df.columns if c != "Symbol"]]
    return list(ANALYSIS_COLUMNS[name])


def write_analysis(book, report: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Write every frame of ``report`` (``Runtime.analysis``) into ``book``; returns ``{table: rows}``.
    Raises BookError / TableGrowthError from the Book (a Table that would grow over a user's cell)."""
    counts: dict[str, int] = {}
    left = 1
    for name in ANALYSIS_COLUMNS:
        df = report.get(name)
        if df is None:
            continue
        cols = _columns(name, df)
        try:
            info = book.table(name)
        except (TableNotFound, KeyError):
            info = None
        if info is not None:
            missing = [c for c in cols if c not in info.columns]
            if missing:
                book.add_table_columns(name, missing)
            book.write_table(name, df[cols], columns=cols)
        else:
            if not book.has_sheet(SHEET):
                book.add_sheet(SHEET)
            width = max(len(cols), len(ANALYSIS_COLUMNS[name]))
            header = [name] + [None] * (width - 1)
            rows = [list(r) + [None] * (width - len(cols)) for r in df[cols].itertuples(index=False, name=None)]
            book.write(SHEET, 1, left, [header, cols + [None] * (width - len(cols)), *rows])
            _clear_below(book, 3 + len(rows), left, width)
            left += width + 1
        counts[name] = len(df)
    return counts


def _clear_below(book, top: int, left: int, width: int) -> None:
    old = book.read(SHEET, top, left, top + CLEAR_ROWS - 1, left + width - 1)
    used = [i for i, row in enumerate(old) if any(v not in (None, "") for v in row)]
    if used:
        book.write(SHEET, top, left, [[None] * width for _ in range(used[-1] + 1)])
