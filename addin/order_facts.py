"""The facts a risk check needs, read from IB through the session's Portfolio and MarketData.

Kept apart from :mod:`addin.risk` (pure rules) and :mod:`addin.orders` (the desk): this module only
reads. One :class:`FactGatherer` serves one ``OrderDesk.place`` call, so a sheet of 50 rows costs one
positions read, one open-orders read, one P&L read per account and one quote per instrument.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from .contracts import format_contract
from .order_rows import OrderIntent
from .risk import OrderFacts
from .session import IBError

log = logging.getLogger(__name__)

__all__ = ["FactGatherer", "finite"]

_UNSET = 1.7976931348623157e308      # ibapi's UNSET_DOUBLE


def finite(x: Any) -> float | None:
    """A finite float from IB's value (Decimal, str, float), None for unset, NaN, infinite or junk."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) < _UNSET else None


class FactGatherer:
    """The facts one place() call reads from IB once (positions, open orders, P&L, account values,
    quotes) and keeps current as its own orders go out (``sent``).

    Where each comes from: ``Portfolio.positions()`` (reqPositions), ``Portfolio.open_orders()``
    (reqAllOpenOrders: every client's working orders), ``Portfolio.pnl(account)`` (reqPnL, daily),
    ``Portfolio.account_values(account)`` (ExchangeRate, AvailableFunds), quotes from the
    MarketData board when fresh (``quote_max_age``), else one snapshot; orders per minute from the
    journal's transmissions. IBError from a read propagates (the row is refused: no data, no order).
    """

    def __init__(self, desk):
        self.desk = desk
        self._positions: pd.DataFrame | None = None
        self._open: pd.DataFrame | None = None
        self._pnl: dict[str, float | None] = {}
        self._values: dict[str, pd.DataFrame] = {}
        self._quotes: dict[int, Any] = {}
        self._extra_open = 0
        self._extra_side: dict[tuple[str, int, str], float] = {}

    def facts(self, intent: OrderIntent, details, *, ref_state: str | None = None, exclude_perm: int | None = None,
              modify: bool = False) -> OrderFacts:
        """OrderFacts for ``intent`` (account set) on the qualified ``details``. For a modify
        (``modify``, ``exclude_perm`` = the working order's permId) the order itself is not counted as
        open and does not count as a new order this minute."""
        desk, c = self.desk, details.contract
        pf = desk.portfolio
        if self._positions is None:
            self._positions = pf.positions()
            self._open = pf.open_orders()
        pos = self._positions
        mine = pos[(pos.account == intent.account) & (pos.con_id == c.conId)]
        position = float(mine.position.sum()) if len(mine) else 0.0
        oo = self._open[self._open.status.isin(["PreSubmitted", "Submitted", "PendingSubmit", "ApiPending", "PendingCancel"])]
        if exclude_perm:
            oo = oo[oo.perm_id != exclude_perm]
        same = oo[(oo.account == intent.account) & (oo.con_id == c.conId)]
        open_buy = float(same[same.action == "BUY"].remaining.sum()) + self._extra_side.get((intent.account, c.conId, "BUY"), 0)
        open_sell = float(same[same.action == "SELL"].remaining.sum()) + self._extra_side.get((intent.account, c.conId, "SELL"), 0)
        n_legs = 1 + (intent.take_profit is not None) + (intent.stop_loss is not None)
        open_orders = len(oo) + self._extra_open - (n_legs if modify else 0)
        recent = 0 if modify else desk.journal.placed_since(time.time() - 60.0)
        quote = self._quote(details)
        ccy = c.currency or desk.limits.base_currency
        return OrderFacts(
            account=intent.account, sec_type=c.secType, ib_symbol=c.symbol, currency=ccy,
            multiplier=finite(c.multiplier) or 1.0, min_tick=finite(details.minTick) or 0.0,
            bid=quote.bid if quote else None, ask=quote.ask if quote else None, last=quote.last if quote else None,
            quote_time=quote.updated if quote else None, fx_rate=self._fx(intent.account, ccy),
            position=position, open_buy=open_buy, open_sell=open_sell, open_orders=open_orders,
            recent_orders=recent, daily_pnl=self._daily_pnl(intent.account), ref_state=ref_state,
            kill_switch=desk.journal.kill_switch, now=datetime.now(timezone.utc))

    def sent(self, intent: OrderIntent, facts: OrderFacts, n_legs: int) -> None:
        """Count an order this batch just sent (open orders, and open buys/sells of its contract)."""
        self._extra_open += n_legs
        key = (intent.account, self._con_id_of(intent), intent.action)
        self._extra_side[key] = self._extra_side.get(key, 0.0) + intent.quantity

    def _con_id_of(self, intent: OrderIntent) -> int:
        rec = self.desk.journal.get(intent.ref)
        return rec["con_id"] if rec else 0

    def _quote(self, details):
        c = details.contract
        if c.conId in self._quotes:
            q = self._quotes[c.conId]
        else:
            q = None
            board = getattr(self.desk.market, "board", None)
            if board is not None:
                try:
                    q = board.get(format_contract(details))
                except Exception:
                    q = None
            max_age = self.desk.limits.quote_max_age
            fresh = q is not None and not q.stale and q.updated is not None and \
                (datetime.now(timezone.utc) - q.updated).total_seconds() <= max_age
            if not fresh:
                try:
                    q = self.desk.market.snapshot(c, timeout=min(5.0, self.desk.session.request_timeout))
                except (IBError, ValueError) as exc:
                    log.info("no quote for %s: %s", c.symbol, exc)
                    q = None
            self._quotes[c.conId] = q
        return q

    def _daily_pnl(self, account: str) -> float | None:
        if account not in self._pnl:
            try:
                df = self.desk.portfolio.pnl(account)
                self._pnl[account] = finite(df["daily"].iloc[0]) if len(df) else None
            except IBError as exc:
                log.info("no P&L for %s: %s", account, exc)
                self._pnl[account] = None
        return self._pnl[account]

    def _account_values(self, account: str) -> pd.DataFrame | None:
        if account not in self._values:
            try:
                self._values[account] = self.desk.portfolio.account_values(account)
            except IBError:
                self._values[account] = None
        return self._values[account]

    def _fx(self, account: str, currency: str) -> float | None:
        if currency == self.desk.limits.base_currency:
            return 1.0
        v = self._account_values(account)
        if v is None:
            return None
        hit = v[(v.key == "ExchangeRate") & (v.currency == currency)]
        return finite(hit.value.iloc[0]) if len(hit) else None

    def available_funds(self, account: str) -> float | None:
        v = self._account_values(account)
        if v is None:
            return None
        hit = v[(v.key == "AvailableFunds")]
        return finite(hit.value.iloc[0]) if len(hit) else None
