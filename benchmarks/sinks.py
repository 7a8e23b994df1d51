"""Stand-in workbooks for the pump: an in-memory Book that counts calls and charges a fixed, stated
cost per call, standing in for COM (an Excel call over COM costs about a millisecond).

``CountingBook`` is a full :class:`addin.excel.book.Book` (the shared interface: Table operations,
value conversion and validation come from there) whose primitives work on plain dicts, so the pump,
the recalc registry and the benchmarks can be measured without Excel. It is a workbook, not a mock
of the IB side.

Every primitive (read, formulas, the block write, the Table resize, calculate, ...) is one
"underlying call": it spends ``cost`` seconds (the stated price of one COM round trip), counts in
``counts[name]`` and is appended to ``log`` as ``(name, args, ended)`` (``ended``: ``clock()`` when
the call returned, ``time.time()`` by default, comparable with ``BoardQuote.updated``). ``calls`` keeps
the Book meaning: write, resize and recalculation calls.

``FormulaBook`` adds what Excel does with a recalculation: it evaluates the worksheet functions of the
cells asked for (Python callables given with :meth:`FormulaBook.put`, called as xlwings calls them),
on the calling thread, and keeps each answer as the cell's value, timing every evaluation.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from addin.excel.book import Book, SheetNotFound, TableInfo, TableNotFound, parse_range

__all__ = ["CountingBook", "FormulaBook", "COM_CALL_COST"]

COM_CALL_COST = 0.001      # seconds: about what one Excel call over COM costs


class CountingBook(Book):
    """An in-memory workbook that counts every underlying call and charges ``cost`` seconds for each.

    sheets: optional ``{sheet name: rows (list of lists, written from A1)}``. ``add_table`` makes a
    Table; ``set_formula`` gives a cell a formula text (what ``formulas`` returns). ``fail(n,
    exc_factory, call)`` makes the next ``n`` ``call`` calls raise ``exc_factory()`` (to exercise the
    pump's COM retry path). ``fullname`` plays the workbook's full name. Thread-safe.
    """

    def __init__(self, sheets: dict[str, list[list]] | None = None, *, cost: float = 0.0,
                 clock: Callable[[], float] = time.time, fullname: str = "counting.xlsx"):
        super().__init__()
        self.cost = cost
        self.clock = clock
        self.fullname = fullname
        self._lock = threading.RLock()
        self._cells: dict[str, dict[tuple[int, int], Any]] = {}
        self._formulas: dict[str, dict[tuple[int, int], str]] = {}
        self._tables: dict[str, TableInfo] = {}
        self._names: dict[str, str] = {}
        self._fail: list[tuple[str | None, Callable[[], BaseException]]] = []
        self.counts: collections.Counter = collections.Counter()
        self.log: list[tuple[str, tuple, float]] = []
        for sheet, rows in (sheets or {}).items():
            self._cells[sheet] = {}
            self._put(sheet, 1, 1, rows)

    # --- call accounting --------------------------------------------------------------------------
    def _call(self, name: str, *args) -> None:
        with self._lock:
            failing = None
            for i, (target, _factory) in enumerate(self._fail):
                if target in (None, name):
                    failing = self._fail.pop(i)[1]
                    break
        if self.cost:
            time.sleep(self.cost)              # the stated price of one COM round trip
        with self._lock:
            self.counts[name] += 1
            self.log.append((name, args, self.clock()))
        if failing is not None:
            raise failing()

    def fail(self, n: int, exc_factory: Callable[[], BaseException], call: str | None = "write") -> None:
        """The next ``n`` underlying ``call`` calls ("write", "calculate", ...; None: any) raise
        ``exc_factory()`` (after being counted)."""
        with self._lock:
            self._fail.extend([(call, exc_factory)] * n)

    def calls_of(self, name: str) -> list[tuple]:
        """The argument tuples of every ``name`` call so far ("write", "calculate", "read", ...)."""
        with self._lock:
            return [args for m, args, _ in self.log if m == name]

    def reset_counts(self) -> None:
        with self._lock:
            self.calls = 0
            self.counts.clear()
            self.log.clear()

    # --- set-up helpers (not calls) ---------------------------------------------------------------
    def _put(self, sheet: str, top: int, left: int, values: Sequence[Sequence[Any]]) -> None:
        cells = self._cells.setdefault(sheet, {})
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if v is None:
                    cells.pop((top + i, left + j), None)
                else:
                    cells[(top + i, left + j)] = v

    def add_table(self, sheet: str, name: str, top: int, left: int, columns: Sequence[str],
                  rows: Sequence[Sequence[Any]] = ()) -> TableInfo:
        """Create Table ``name`` (header at ``top``) holding ``rows``; not counted."""
        with self._lock:
            self._put(sheet, top, left, [list(columns)] + [list(r) for r in rows])
            info = TableInfo(name, sheet, top, left, top + max(len(rows), 1), left + len(columns) - 1,
                             list(columns))
            self._tables[name] = info
            return info

    def set_formula(self, sheet: str, address: str, formula: str | None, value: Any = None) -> None:
        """Give a cell a formula (None removes it) and optionally a value; not counted."""
        row, col, _, _ = parse_range(address)
        with self._lock:
            f = self._formulas.setdefault(sheet, {})
            if formula is None:
                f.pop((row, col), None)
            else:
                f[(row, col)] = formula
            if value is not None:
                self._cells.setdefault(sheet, {})[(row, col)] = value

    def value(self, sheet: str, address: str) -> Any:
        """One cell's value; not counted (for assertions)."""
        row, col, _, _ = parse_range(address)
        with self._lock:
            return self._cells.get(sheet, {}).get((row, col))

    def _sheet_cells(self, sheet: str) -> dict:
        for name, cells in self._cells.items():
            if name.casefold() == sheet.casefold():
                return cells
        raise SheetNotFound(f"no sheet {sheet!r} in the workbook; sheets: {list(self._cells)}")

    # --- Book primitives --------------------------------------------------------------------------
    def sheet_names(self) -> list[str]:
        self._call("sheet_names")
        with self._lock:
            return list(self._cells)

    def add_sheet(self, name: str) -> None:
        self._call("add_sheet", name)
        with self._lock:
            if name.casefold() not in {s.casefold() for s in self._cells}:
                self._cells[name] = {}

    def tables(self) -> dict[str, TableInfo]:
        self._call("tables")
        with self._lock:
            return dict(self._tables)

    def names(self) -> dict[str, str]:
        self._call("names")
        with self._lock:
            return dict(self._names)

    def read(self, sheet: str, top: int, left: int, bottom: int, right: int) -> list[list]:
        self._call("read", sheet, top, left, bottom, right)
        with self._lock:
            cells = self._sheet_cells(sheet)
            return [[cells.get((r, c)) for c in range(left, right + 1)] for r in range(top, bottom + 1)]

    def formulas(self, sheet: str, addresses: list[str]) -> list[str | None]:
        self._call("formulas", sheet, list(addresses))
        with self._lock:
            self._sheet_cells(sheet)
            f = self._formulas.get(sheet, {})
            return [f.get(parse_range(a)[:2]) for a in addresses]

    def _write_block(self, sheet: str, top: int, left: int, values: list[list]) -> None:
        self._call("write", sheet, top, left, [list(r) for r in values])
        with self._lock:
            self._sheet_cells(sheet)
            self._put(sheet, top, left, values)

    def _set_table_ref(self, info: TableInfo, top: int, left: int, bottom: int, right: int) -> None:
        self._call("resize", info.name, top, left, bottom, right)
        with self._lock:
            if info.name not in self._tables:
                raise TableNotFound(f"no Table {info.name!r}")
            cells = self._sheet_cells(info.sheet)
            columns = [str(cells.get((top, c), f"Column{c - left + 1}")) for c in range(left, right + 1)]
            self._tables[info.name] = TableInfo(info.name, info.sheet, top, left, bottom, right, columns)

    def _calculate(self, sheet: str, addresses: list[str]) -> None:
        self._call("calculate", sheet, list(addresses))

    def save(self, path: str | Path | None = None) -> Path:
        self._call("save", path)
        return Path(path or self.fullname)

    def close(self) -> None:
        self._call("close")


class FormulaBook(CountingBook):
    """A CountingBook whose ``calculate(sheet, addresses)`` evaluates the cells' functions, as Excel does.

    ``put(sheet, address, formula, fn)``: the cell's formula text (what ``formulas`` returns, so the
    recalc registry's prune keeps it) and ``fn()``, the call Excel would make (e.g.
    ``lambda: udfs.IB_QUOTE("AAPL", "bid", caller=("Quotes", "B2"))``). :meth:`evaluate` runs one
    cell (the first evaluation, Excel's own); ``evaluations[(sheet, address)]`` counts them and
    ``longest`` is the longest single evaluation, in seconds (``time.perf_counter``). Thread-safe.
    """

    def __init__(self, sheets: dict[str, list[list]] | None = None, **options):
        super().__init__(sheets, **options)
        self._fns: dict[tuple[str, str], Callable[[], Any]] = {}
        self.evaluations: collections.Counter = collections.Counter()
        self.shown: dict[tuple[str, str], Any] = {}      # (sheet, address) -> last answer (whole arrays)
        self.longest = 0.0

    def put(self, sheet: str, address: str, formula: str, fn: Callable[[], Any]) -> None:
        if sheet not in self._cells:
            self.add_sheet(sheet)
        self.set_formula(sheet, address, formula)
        self._fns[(sheet, address)] = fn

    def evaluate(self, sheet: str, address: str) -> Any:
        """Call the cell's function, keep its answer as the cell's value and return it."""
        t0 = time.perf_counter()
        value = self._fns[(sheet, address)]()
        took = time.perf_counter() - t0
        row, col, _, _ = parse_range(address)
        with self._lock:
            self.longest = max(self.longest, took)
            self.evaluations[(sheet, address)] += 1
            self._cells.setdefault(sheet, {})[(row, col)] = value[0][0] if isinstance(value, list) else value
            self.shown[(sheet, address)] = value
        return value

    def _calculate(self, sheet: str, addresses: list[str]) -> None:
        super()._calculate(sheet, addresses)
        for address in addresses:
            if (sheet, address) in self._fns:
                self.evaluate(sheet, address)
