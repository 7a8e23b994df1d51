"""The workbook side: one Book interface, adapters for xlwings and openpyxl, the streaming pump
and the formula recalc registry (the macros that buttons call are :mod:`addin.app.macros`).

- :mod:`addin.excel.book`: the :class:`Book` interface, :class:`TableInfo`, errors and value helpers.
- :mod:`addin.excel.openpyxl_book`: :class:`OpenpyxlBook`, workbook files (atomic saves, VBA kept,
  locked files and parts openpyxl would drop refused).
- :mod:`addin.excel.xlwings_book`: :class:`XlwingsBook`, a live workbook through xlwings.
- :mod:`addin.excel.remote_json`: xlwings' remote-engine payload from a file, and its actions replayed.
- :mod:`addin.excel.layout`: sheet, Table and column names, number formats, status colours.
"""

from .book import (  # noqa: F401
    Book,
    BookError,
    SaveVerificationError,
    SheetNotFound,
    TableInfo,
    TableNotFound,
    WorkbookLockedError,
    WouldLosePartsError,
)
