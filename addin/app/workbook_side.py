"""What a workbook's own process keeps, whoever owns the IB connection: the formula cells and the
market data lines they hold, and the pumps that paint quotes and order states into its workbooks.

Two runtimes share it: ``addin.app.runtime.Runtime`` (the IB session in this process) and
``addin.service.remote.RemoteRuntime`` (the IB session in the user's ibxl service, quotes pushed
into a local board). Each provides ``board`` (a QuoteBoard), ``_subscribe(text) -> key`` and
``_unsubscribe(key)`` (one line user each; an unknown key is ignored), and calls
:meth:`_orders_changed` with every order output change so the pumps paint it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ..excel.recalc import RecalcRegistry
from ..market.quotes import BoardQuote

log = logging.getLogger(__name__)

__all__ = ["WorkbookSide", "ANONYMOUS"]

ANONYMOUS = ("<no cell>",)           # holder of subscriptions made without a caller cell


class WorkbookSide:
    """Formula cells (``registry``: which cell shows which quotes), their lines, and the pumps.

    ``first_quote_wait``: seconds :meth:`wait_quote` waits by default for a new line's first price.
    Subclasses set ``board`` and implement ``_subscribe`` / ``_unsubscribe``."""

    board: Any

    def __init__(self, first_quote_wait: float = 2.0):
        self.first_quote_wait = first_quote_wait
        self.registry = RecalcRegistry(on_release=self._release_cell)
        self._side_lock = threading.RLock()
        self._pumps: dict[Any, Any] = {}                  # book id -> Pump
        self._held: dict[tuple, dict[str, str]] = {}     # holder (cell) -> {instrument text: key}

    def _subscribe(self, text: str) -> str:
        raise NotImplementedError

    def _unsubscribe(self, key: str) -> None:
        raise NotImplementedError

    def _subscribe_many(self, texts: list[str]) -> list[str]:
        """:meth:`_subscribe` for each text (a runtime may do it in one request)."""
        return [self._subscribe(t) for t in texts]

    def _check_not_disconnected(self) -> None:
        """Raise when the user pressed Disconnect (a formula must not show its last price as live)."""

    # --- quotes for formulas ------------------------------------------------------------------------
    def hold_quotes(self, texts: Iterable[str], cell: tuple | None = None) -> list[str]:
        """Subscribe the instruments ``texts`` for a holder (a formula cell ``(book, sheet, address)``,
        or None for callers without a cell) and register the cell for recalculation. A cell
        re-evaluated with the same instruments subscribes nothing new; instruments it no longer
        shows are unsubscribed. Returns the board keys, in order. Raises as the subscription does
        (IBError, ServiceError, ValueError for bad text), and after the user's Disconnect."""
        self._check_not_disconnected()
        texts = list(texts)
        holder = tuple(cell) if cell else ANONYMOUS
        with self._side_lock:
            held = dict(self._held.get(holder, {}))
        new = [t for t in dict.fromkeys(texts) if t not in held]
        for text, key in zip(new, self._subscribe_many(new)):
            with self._side_lock:
                self._held.setdefault(holder, {})[text] = key
            held[text] = key
        keys = [held[t] for t in texts]
        if cell:
            with self._side_lock:
                stale = {t: k for t, k in self._held.get(holder, {}).items() if t not in texts}
                for t in stale:
                    del self._held[holder][t]
            for key in stale.values():
                self._unsubscribe(key)
            book, sheet, address = cell
            self.registry.register(sheet, address, keys, book=book)
            self._ensure_formula_pump(book)
        return keys

    def _release_cell(self, cell: tuple, keys: set[str]) -> None:
        """Registry callback: a cell was pruned or unregistered: drop its subscriptions."""
        if keys and not self.registry.keys_of(cell[1], cell[2], cell[0]):
            with self._side_lock:
                held = self._held.pop(tuple(cell), {})
            for key in held.values():
                self._unsubscribe(key)

    def _release_all_cells(self) -> None:
        with self._side_lock:
            held, self._held = self._held, {}
        for keys in held.values():
            for key in keys.values():
                self._unsubscribe(key)

    def wait_quote(self, key: str, timeout: float | None = None) -> BoardQuote | None:
        """The BoardQuote for ``key``, waiting up to ``timeout`` seconds (default
        ``first_quote_wait``) until it is priced (both sides, or a last: ``BoardQuote.priced``) or failed;
        after the timeout, whatever the board holds (None when nothing arrived)."""
        return self.board.wait_priced(key, self.first_quote_wait if timeout is None else timeout)

    def _ensure_formula_pump(self, book: str | None) -> None:
        """On Windows, the first formula of a workbook starts a recalc-only pump for it (its own COM
        Book opened by full name on the pump thread), so formulas tick without streaming."""
        if book is None or sys.platform != "win32":
            return
        with self._side_lock:
            if book in self._pumps:
                return
            from ..excel.pump import Pump, com_book_factory
            pump = Pump(self.board, book_factory=com_book_factory(book), registry=self.registry,
                        book_name=book, watchlist=None, orders=None)
            self._pumps[book] = pump
        pump.start()

    # --- pumps ---------------------------------------------------------------------------------------
    def start_pump(self, book, *, book_id=None, interval: float | None = None, start: bool = True, **options):
        """Stream into ``book``'s Watchlist and Orders rows (see ``addin.excel.pump.Pump``); a pump
        already running for ``book_id`` (default ``id(book)``) is stopped first. ``book`` may be
        None with ``book_factory=`` (the COM path: the pump thread opens its own Book). The
        Watchlist symbols are subscribed by the pump and released by :meth:`stop_pump`. ``start``:
        run the thread (False: bound and painted once; the caller flushes). Returns the Pump."""
        from ..excel.pump import DEFAULT_INTERVAL, Pump
        bid = book_id if book_id is not None else id(book)
        self.stop_pump(bid)
        pump = Pump(self.board, book, interval=interval or DEFAULT_INTERVAL, registry=self.registry,
                    book_name=bid if isinstance(bid, str) else None, resolve=self._subscribe,
                    release=self._unsubscribe, **options)
        with self._side_lock:
            self._pumps[bid] = pump
        if start:
            pump.start()
        else:
            pump.bind()
        return pump

    def stop_pump(self, book_id=None) -> bool:
        """Stop the pump of ``book_id`` (None: every pump). Returns True if one was running."""
        with self._side_lock:
            if book_id is None:
                pumps, self._pumps = list(self._pumps.values()), {}
            else:
                pump = self._pumps.pop(book_id, None)
                pumps = [pump] if pump is not None else []
        for pump in pumps:
            pump.stop()
        return bool(pumps)

    def pump(self, book_id):
        with self._side_lock:
            return self._pumps.get(book_id)

    def _orders_changed(self, ref: str, outputs: dict) -> None:
        """An order's outputs changed: every pump paints them into its Orders rows (by Ref)."""
        with self._side_lock:
            pumps = list(self._pumps.values())
        for pump in pumps:
            pump.on_order(ref, outputs)
