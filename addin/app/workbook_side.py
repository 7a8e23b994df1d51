"""What a workbook's own process keeps, whoever owns the IB connection: the formula cells and the
market data lines they hold, and the pumps that paint quotes and order states into its workbooks.

Two runtimes share it: ``addin.app.runtime.Runtime`` (the IB session in this process) and
``addin.service.remote.RemoteRuntime`` (the IB session in the user's ibxl service, quotes pushed
into a local board). Worksheet functions never wait on IB here: :meth:`WorkbookSide.hold_quotes_soon`
subscribes in the background and :meth:`WorkbookSide.request` runs any other request in the
background (see ``addin.app.background``); the waiting cells are recalculated when the answer is
in. Each runtime provides ``board`` (a QuoteBoard), ``_subscribe(text) -> key`` and
``_unsubscribe(key)`` (one line user each; an unknown key is ignored), and calls
:meth:`_orders_changed` with every order output change so the pumps paint it.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from ..excel.recalc import RecalcRegistry
from ..market.quotes import BoardQuote
from .background import BackgroundRequests, Handle

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
        self._wanted: dict[tuple, set[str]] = {}          # holder (cell) -> texts it shows now
        self._key_of: dict[str, str] = {}                   # instrument text -> board key, once subscribed
        self.requests = BackgroundRequests(self.registry.touch)

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
                self._key_of[text] = key
            held[text] = key
        keys = [held[t] for t in texts]
        if cell:
            self._drop_stale(holder, texts)
            book, sheet, address = cell
            self.registry.register(sheet, address, keys, book=book)
            self._ensure_formula_pump(book)
        return keys

    def hold_quotes_soon(self, texts: Iterable[str], cell: tuple | None = None) -> list[Any]:
        """:meth:`hold_quotes` without waiting on IB (a worksheet function's way). For each distinct
        text, in order: its board key once subscribed; the exception its subscription raised (kept
        ``requests.error_ttl`` seconds, then asked again); or None while it is being subscribed in
        the background (qualification may be a round trip to IB). The cell is registered under the
        keys and the pending subscriptions' keys, so the pump recalculates it when a subscription
        ends or a quote changes. Waits at most ``requests.inline_wait`` in all. Raises after the
        user's Disconnect."""
        self._check_not_disconnected()
        texts = list(dict.fromkeys(texts))
        holder = tuple(cell) if cell else ANONYMOUS
        with self._side_lock:
            if cell:
                self._wanted[holder] = set(texts)
        # Register, then look: a subscription that ends after it was seen pending touches a key
        # the cell is already registered under (no lost wake-up); one that ended in between is
        # seen by the next pass (a pass repeats only when one ended in that short window).
        for attempt in range(10):
            with self._side_lock:
                held = dict(self._held.get(holder, {}))
            answers: dict[str, Any] = {}
            pending: list[Handle] = []
            started = {text: self.requests.get(("subscribe", holder, text),
                                               functools.partial(self._subscribe_for, holder, text),
                                               f"{text} quote", keep_result=False, wait=False)
                       for text in texts if text not in held}
            # one short wait for them all, on the first pass only
            deadline = time.monotonic() + (self.requests.inline_wait if attempt == 0 else 0.0)
            for handle in started.values():
                handle.wait(max(0.0, deadline - time.monotonic()))
            for text in texts:
                if text in held:
                    answers[text] = held[text]
                    continue
                handle = started[text]
                if handle.done.is_set() and handle.error is not None:
                    answers[text] = handle.error
                elif handle.done.is_set():
                    answers[text] = handle.result
                else:
                    # another cell already streams this text: its board key is known, show its quote now
                    answers[text] = self._key_of.get(text)
                    pending.append(handle)
            if cell:
                self._drop_stale(holder, texts)
                keys = [a for a in answers.values() if isinstance(a, str)] + [h.key for h in pending]
                book, sheet, address = cell
                self.registry.register(sheet, address, keys, book=book)
                self._ensure_formula_pump(book)
            if not any(h.done.is_set() for h in pending):
                break
        return [answers[t] for t in texts]

    def _subscribe_for(self, holder: tuple, text: str, handle: Handle | None = None) -> str:
        """Background work of :meth:`hold_quotes_soon`: subscribe ``text`` for ``holder``, unless the
        cell no longer shows it by then (the line user is given back)."""
        key = self._subscribe(text)
        with self._side_lock:
            self._key_of[text] = key
            wanted = holder == ANONYMOUS or text in self._wanted.get(holder, ())
            mine = self._held.setdefault(holder, {})
            keep = wanted and text not in mine
            if keep:
                mine[text] = key
        if not keep:
            self._unsubscribe(key)
        return key

    def _drop_stale(self, holder: tuple, texts: list[str]) -> None:
        with self._side_lock:
            stale = {t: k for t, k in self._held.get(holder, {}).items() if t not in texts}
            for t in stale:
                del self._held[holder][t]
        for key in stale.values():
            self._unsubscribe(key)

    def quote(self, key: str) -> BoardQuote | None:
        """What the board holds for ``key`` now (None before anything arrived). Never waits."""
        return self.board.get(key)

    def request(self, args, work, what: str, cell: tuple | None = None, *, fresh: bool = False) -> Handle:
        """Run ``work(handle)`` in the background for the argument tuple ``args`` (shared by every
        cell asking the same; see ``addin.app.background`` for kept vs ``fresh`` answers) and
        return its Handle at once (after at most ``requests.inline_wait`` seconds). While it runs,
        ``cell`` is registered under the handle's key: the pump recalculates it when the request
        ends. Read the handle's state after this returns (it was registered first: no lost
        wake-up). Raises after the user's Disconnect."""
        self._check_not_disconnected()
        handle = self.requests.get(args, work, what, fresh=fresh)
        if cell and not handle.done.is_set():
            book, sheet, address = cell
            self.registry.register(sheet, address, [handle.key], book=book)
            self._ensure_formula_pump(book)
        return handle

    def _release_cell(self, cell: tuple, keys: set[str]) -> None:
        """Registry callback: a cell was pruned or unregistered: drop its subscriptions."""
        if keys and not self.registry.keys_of(cell[1], cell[2], cell[0]):
            with self._side_lock:
                held = self._held.pop(tuple(cell), {})
                self._wanted.pop(tuple(cell), None)
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
