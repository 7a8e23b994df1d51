"""The caller-cell registry: which formula cells show which quotes, so that after a flush the pump
asks Excel to recalculate just the cells whose quotes changed (classic xlwings has no RTD, and a
whole-workbook recalculation four times a second is not acceptable).

Each ``IB_QUOTE`` / ``IB_QUOTES`` evaluation registers its caller cell with the board keys it
shows (:meth:`RecalcRegistry.register`; a re-evaluation replaces the cell's keys). The pump asks
:meth:`RecalcRegistry.changed` for the cells of the keys that changed in a flush, grouped by sheet,
and makes one ``book.calculate(sheet, addresses)`` call per sheet. :meth:`RecalcRegistry.prune`
reads the registered cells' formulas (``book.formulas``, one call per sheet) and drops the cells
whose formula no longer calls one of our functions (the user typed over it or deleted it).

Cells also wait for answers that are not quotes: a function whose request runs in the background
(IB_HISTORY, IB_CONTRACT, ..., see ``addin.app.background``) registers its cell under the
request's key (``"@ibxl <n>"``), and the request :meth:`RecalcRegistry.touch` es that key when it
ends. Each pump reads the touched keys with :meth:`RecalcRegistry.touched_since` (its own cursor,
like ``QuoteBoard.changes_since``) and recalculates their cells with the quotes' cells.

A cell is ``(book, sheet, address)``: ``book`` is the workbook's full name (None when there is only
one book, e.g. tests and ``ibxl run``); ``address`` is A1 text, normalised (``$B$3`` -> ``B3``).
Thread-safe: UDF threads register while the pump thread reads.
"""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Callable, Iterable

from .book import cell_address, parse_range

__all__ = ["RecalcRegistry", "Cell", "QUOTE_FORMULA", "normalize_address"]

Cell = tuple  # (book: str | None, sheet: str, address: str)

# A formula still waits for us while it calls one of our functions (any case, optional prefixes
# such as _xldudf_ or a workbook qualifier in front).
QUOTE_FORMULA = re.compile(r"IB_(?:QUOTES?|HISTORY|CONTRACT|POSITIONS|ACCOUNT|PNL|ORDER|STATUS)\s*\(",
                           re.IGNORECASE)
TOUCH_LOG = 4096            # touched keys remembered for pumps that lag (older ones: every cell is recalculated)


def normalize_address(address: str) -> str:
    """ "$B$3" -> "B3". The top-left cell of a range ("$B$3:$D$5" -> "B3", a dynamic array's anchor).
    Raises ValueError for text that is not a cell address."""
    top, left, _, _ = parse_range(address.split(":")[0])
    return cell_address(top, left)


class RecalcRegistry:
    """Formula cells and the board keys they show.

    ``on_release(keys)``: called (outside the lock) with the keys a cell stopped showing when it is
    re-registered with other keys, unregistered or pruned; the runtime unsubscribes the market data
    lines it held for the cell.
    """

    def __init__(self, on_release: Callable[[Cell, set[str]], None] | None = None):
        self._lock = threading.Lock()
        self._keys_of: dict[Cell, frozenset[str]] = {}
        self._cells_of: dict[str, set[Cell]] = {}
        self._on_release = on_release
        self.pruned = 0                 # cells dropped by prune() so far
        self._touches: collections.deque[tuple[int, str]] = collections.deque(maxlen=TOUCH_LOG)
        self._touch_version = 0

    @staticmethod
    def cell(sheet: str, address: str, book: str | None = None) -> Cell:
        return (book, sheet, normalize_address(address))

    def register(self, sheet: str, address: str, keys: Iterable[str], book: str | None = None) -> tuple[set, set]:
        """Record that the formula in ``sheet!address`` shows ``keys`` (replacing what it showed).
        Returns ``(added, removed)`` key sets relative to the previous registration."""
        cell = self.cell(sheet, address, book)
        new = frozenset(keys)
        with self._lock:
            old = self._keys_of.get(cell, frozenset())
            self._keys_of[cell] = new
            for k in old - new:
                self._drop(k, cell)
            for k in new - old:
                self._cells_of.setdefault(k, set()).add(cell)
        removed = set(old - new)
        if removed and self._on_release:
            self._on_release(cell, removed)
        return set(new - old), removed

    def unregister(self, sheet: str, address: str, book: str | None = None) -> set[str]:
        """Forget a cell; returns the keys it showed."""
        return self._forget([self.cell(sheet, address, book)]).get(self.cell(sheet, address, book), set())

    def keys_of(self, sheet: str, address: str, book: str | None = None) -> frozenset[str]:
        with self._lock:
            return self._keys_of.get(self.cell(sheet, address, book), frozenset())

    def cells(self, book: str | None = None) -> list[Cell]:
        """Every registered cell (of ``book``; None: all books)."""
        with self._lock:
            return [c for c in self._keys_of if book is None or c[0] in (book, None)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys_of)

    def changed(self, keys: Iterable[str], book: str | None = None) -> dict[str, list[str]]:
        """``{sheet: [addresses]}`` of the registered cells (of ``book``; None: any) that show any of
        ``keys``, each address once, sorted by row then column: what to recalculate."""
        out: dict[str, set[str]] = {}
        with self._lock:
            for k in keys:
                for cell in self._cells_of.get(k, ()):
                    if book is None or cell[0] in (book, None):
                        out.setdefault(cell[1], set()).add(cell[2])
        return {sheet: sorted(addrs, key=lambda a: parse_range(a)[:2]) for sheet, addrs in out.items()}

    def touch(self, keys: Iterable[str]) -> int:
        """Mark ``keys`` changed for the pumps (a background request ended): the cells registered under
        them are recalculated by each pump's next flush. Returns the new touch version."""
        with self._lock:
            for k in keys:
                self._touch_version += 1
                self._touches.append((self._touch_version, k))
            return self._touch_version

    def touched_since(self, version: int) -> tuple[int, set[str]]:
        """``(version now, keys touched after version)``. A cursor older than the log's memory gets
        every key still registered (recalculating too much, never too little)."""
        with self._lock:
            now = self._touch_version
            if version >= now:
                return now, set()
            if self._touches and self._touches[0][0] > version + 1:
                return now, set(self._cells_of)
            return now, {k for v, k in self._touches if v > version}

    def prune(self, book, book_name: str | None = None) -> list[Cell]:
        """Drop the cells whose formula no longer calls one of our functions (QUOTE_FORMULA), reading them with
        ``book.formulas(sheet, addresses)`` (one call per sheet). Cells of sheets that no longer
        exist are dropped too. Returns the dropped cells. A Book without ``formulas`` prunes
        nothing (registrations then end only when a cell is re-registered or unregistered)."""
        read = getattr(book, "formulas", None)
        if read is None:
            return []
        by_sheet: dict[str, list[Cell]] = {}
        for cell in self.cells(book_name):
            by_sheet.setdefault(cell[1], []).append(cell)
        dead: list[Cell] = []
        for sheet, cells in by_sheet.items():
            try:
                texts = read(sheet, [c[2] for c in cells])
            except KeyError:
                dead.extend(cells)            # the sheet is gone
                continue
            dead.extend(c for c, f in zip(cells, texts) if not (isinstance(f, str) and QUOTE_FORMULA.search(f)))
        self._forget(dead)
        self.pruned += len(dead)
        return dead

    def _forget(self, cells: list[Cell]) -> dict[Cell, set[str]]:
        released: dict[Cell, set[str]] = {}
        with self._lock:
            for cell in cells:
                keys = self._keys_of.pop(cell, None)
                if keys is None:
                    continue
                for k in keys:
                    self._drop(k, cell)
                released[cell] = set(keys)
        if self._on_release:
            for cell, cell_keys in released.items():
                if cell_keys:
                    self._on_release(cell, cell_keys)
        return released

    def _drop(self, key: str, cell: Cell) -> None:       # caller holds the lock
        cells = self._cells_of.get(key)
        if cells is not None:
            cells.discard(cell)
            if not cells:
                del self._cells_of[key]
