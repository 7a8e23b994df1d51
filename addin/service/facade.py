"""The UDFs' reader over the service: what ``addin.app.runtime.ReadOnlyRuntime`` offers
(READ_ONLY_METHODS), answered by a :class:`~addin.service.client.ServiceClient` instead of an
in-process Runtime, so ``udfs/functions.py`` can switch by changing ``_reader()`` alone.

Quotes are held per formula cell on the client side (a cell re-evaluated with other instruments
releases the ones it no longer shows) and read from the client's pushed QuoteBoard. Not yet: the
recalculation registry (the workbook's pump in this process must be fed from ``client.board``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from types import SimpleNamespace

from ..market.quotes import BoardQuote

__all__ = ["ServiceReader"]

ANONYMOUS = ("<no cell>",)


class ServiceReader:
    """READ_ONLY_METHODS over ``client`` (a ServiceClient: no order methods exist to reach).
    ``first_quote_wait``: seconds :meth:`wait_quote` waits by default for a new line's first price."""

    def __init__(self, client, first_quote_wait: float = 2.0):
        self._client = client
        self._first_quote_wait = first_quote_wait
        self._held: dict[tuple, dict[str, str]] = {}       # cell -> {instrument text: key}
        self._lock = threading.Lock()

    def hold_quotes(self, texts: Iterable[str], cell: tuple | None = None) -> list[str]:
        """Hold the instruments ``texts`` for ``cell`` (``(book, sheet, address)`` or None); returns the
        board keys in order. Instruments the cell no longer shows are released. Raises ServiceError."""
        texts = list(texts)
        holder = tuple(cell) if cell else ANONYMOUS
        with self._lock:
            held = dict(self._held.get(holder, {}))
        new = [t for t in dict.fromkeys(texts) if t not in held]
        if new:
            held.update(zip(new, self._client.subscribe(new)))
        stale = {t: k for t, k in held.items() if t not in texts} if cell else {}
        for t in stale:
            del held[t]
        with self._lock:
            self._held[holder] = held
        if stale:
            self._client.unsubscribe(list(stale.values()))
        return [held[t] for t in texts]

    def wait_quote(self, key: str, timeout: float | None = None) -> BoardQuote | None:
        """The pushed BoardQuote of ``key``, waiting up to ``timeout`` s until priced or failed."""
        board = self._client.board
        deadline = time.monotonic() + (self._first_quote_wait if timeout is None else timeout)
        while True:
            version = board.version
            q = board.get(key)
            if q is not None and (q.priced or q.error):
                return q
            left = deadline - time.monotonic()
            if left <= 0:
                return q
            board.wait(version, left)

    def qualify(self, text: str):
        """An object shaped like ibapi's ContractDetails (``.contract.conId``, ``.minTick``, ...)."""
        answer = self._client.contract(text)
        return SimpleNamespace(contract=SimpleNamespace(**answer["contract"]), **answer["details"])

    def describe(self, text: str) -> str:
        return self._client.contract(text)["text"]

    def bars(self, instrument, duration: str = "1 D", bar_size: str = "1 min", what_to_show: str = "TRADES",
             use_rth: bool = True, end=None, **_):
        return self._client.history(instrument, duration, bar_size, what_to_show, use_rth, end)

    def positions(self):
        return self._client.positions()

    def account_summary(self):
        return self._client.account()

    def pnl(self, account: str | None = None):
        return self._client.pnl(account)

    def order(self, ref: str) -> dict:
        return self._client.order(ref)

    def status(self) -> dict:
        return self._client.status()

    def account(self) -> str:
        """The first managed account id. Raises ServiceError ``ib_error`` 504 when none is known."""
        from .protocol import IB_ERROR, ServiceError
        accounts = self._client.status()["accounts"]
        if not accounts:
            raise ServiceError(IB_ERROR, "Not connected: no managed accounts yet", 504)
        return accounts.split(",")[0]
