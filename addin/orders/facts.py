"""The facts a risk check needs, from standing subscriptions kept live while the OrderDesk exists.

Kept apart from :mod:`addin.orders.risk` (pure rules) and :mod:`addin.orders.desk` (the desk): this module only
reads. :class:`DeskFacts` belongs to one desk: the first order opens Portfolio watches (positions with
account updates, open orders, P&L per account, account values per account when a currency rate or
AvailableFunds is needed) and a streaming quote line per instrument ordered; later orders read the
cached tables and the quote board at once, so an order sends nothing but its placeOrder.
:class:`FactGatherer` serves one ``OrderDesk.place`` call (one read of the tables per call).

Correctness rules kept here:
- a watch whose first answer is pending is waited for (Portfolio's read waits for the snapshot);
- after a reconnect (or IB's 1101) the cached tables are not used until Portfolio's re-sent snapshots
  have ended (and P&L has been heard again); reads wait up to the session's request timeout, then
  raise IBError 504 ("... being restored after a reconnect"): the row is refused, nothing is sent;
- this desk's own orders that IB has not reported yet (journal: transmitting or working, not in IB's
  open-orders table) count as open orders, on their side, with their remaining quantity.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from ..ib.contracts import format_contract
from ..ib.session import IBError
from ..protocol.errors import NOT_CONNECTED
from ..protocol.unset import is_unset
from .risk import OrderFacts
from .rows import OrderIntent

log = logging.getLogger(__name__)

__all__ = ["DeskFacts", "FactGatherer", "finite", "size_rule", "WORKING_STATUSES"]

WORKING_STATUSES = ("PreSubmitted", "Submitted", "PendingSubmit", "ApiPending", "PendingCancel")
_FIRST_QUOTE_WAIT = 2.0               # seconds a new streaming line may take for its first quote


# Above this a number from IB is one of ibapi's unset sentinels (UNSET_DECIMAL is 2**127 - 1, about
# 1.7e38; UNSET_DOUBLE about 1.8e308), never a real price, size or amount.
UNSET_FLOOR = 1e30


def finite(x: Any) -> float | None:
    """A finite float from IB's value (Decimal, str, float), None for unset (any ibapi sentinel: UNSET_DOUBLE,
    UNSET_DECIMAL, UNSET_INTEGER, UNSET_LONG), NaN, infinite or junk."""
    if is_unset(x):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) < UNSET_FLOOR else None


def size_rule(x: Any) -> Decimal | None:
    """IB's minSize / sizeIncrement (ContractDetails, a Decimal) as a usable size: a finite, positive
    Decimal below 1e9; None for unset (UNSET_DECIMAL), zero, negative, NaN or junk (the size rules then
    assume whole units)."""
    try:
        d = x if isinstance(x, Decimal) else Decimal(str(x))
    except (InvalidOperation, TypeError, ValueError):
        return None
    return d if d.is_finite() and 0 < d < Decimal(10**9) else None


class DeskFacts:
    """The standing feeds of one OrderDesk: Portfolio watches and quote lines, opened on first use and
    kept until :meth:`close`.

    quote_lines: at most this many streaming lines the desk opens for itself (never the last free line
    of ``MarketData.max_lines``); an instrument beyond that gets a snapshot per batch instead.
    Thread-safe: the desk calls it under its own lock; :meth:`on_restore` comes from the session's
    reconnect thread (or ibapi's message thread for 1101).
    """

    def __init__(self, desk, quote_lines: int | None = None):
        self.desk = desk
        self.session, self.portfolio, self.market = desk.session, desk.portfolio, desk.market
        max_lines = int(getattr(self.market, "max_lines", 100) or 100)
        self.quote_lines = quote_lines if quote_lines is not None else max(1, max_lines // 10)
        self._lock = threading.Condition()
        self._watches: dict[tuple, Any] = {}            # ("positions",) / ("pnl", acct) ... -> Watch
        self._quote_keys: dict[int, str] = {}           # conId -> board key of a line this desk holds
        self._waited: set[str] = set()                  # lines whose first quote was waited for
        self._in_flight: dict[tuple[int, int], str] | None = None   # (client_id, order_id) -> Ref
        self._flight_facts: dict[str, tuple] = {}       # Ref -> (account, conId, action, quantity)
        self._restored_gen = self.session.status.reconnects
        self._restored_at: datetime | None = None       # when the last reconnect's restore began
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------
    def on_restore(self) -> None:
        """The session restored its subscriptions: the cached tables are stale until re-sent."""
        with self._lock:
            self._restored_gen = self.session.status.reconnects
            self._restored_at = datetime.now(timezone.utc)
            self._lock.notify_all()

    def close(self) -> None:
        """End the desk's watches and quote lines. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches, keys = list(self._watches.values()), list(self._quote_keys.values())
            self._watches.clear()
            self._quote_keys.clear()
        for w in watches:
            try:
                w.close()
            except Exception:
                log.exception("closing %r failed", w)
        for key in keys:
            try:
                self.market.unsubscribe(key)
            except Exception as exc:              # disconnected for good: nothing to cancel
                log.info("quote line %s not cancelled: %s", key, exc)

    def batch(self) -> "FactGatherer":
        return FactGatherer(self.desk, self)

    # --- watches ----------------------------------------------------------------------------------
    def _ensure(self, key: tuple, opener) -> None:
        with self._lock:
            if self._closed:
                raise IBError(NOT_CONNECTED, "the order desk is closed", "risk data")
            if key in self._watches:
                return
            self._watches[key] = opener()

    def _settled(self, keys: list[tuple]) -> bool:
        """Every watched table has its first complete answer, no re-sent snapshot is being collected,
        and (after a reconnect) it was heard from since the restore began (Watch.current)."""
        since = self._restored_at
        for key in keys:
            watch = self._watches.get(key)
            if watch is not None and not watch.current(since):
                return False
        return True

    def ready(self, *keys: tuple) -> None:
        """Wait until the watched feeds are current (see :meth:`_settled`); IBError 504 when the session
        is not connected or they did not settle within the session's request timeout."""
        timeout = self.session.request_timeout
        deadline = time.monotonic() + timeout
        with self._lock:                          # reconnected, but the restore hook has not run yet
            if not self._lock.wait_for(lambda: self._restored_gen == self.session.status.reconnects, timeout):
                raise IBError(NOT_CONNECTED, "positions and orders are being restored after a reconnect; "
                                   "try again in a moment", "risk data")
        if not self.session.connected:
            raise IBError(NOT_CONNECTED, f"not connected ({self.session.status.state}): cached positions and orders "
                               f"may be stale", "risk data")
        if self._settled(list(keys)):
            return
        if not self.portfolio.wait_until(lambda: self._settled(list(keys)), max(0.0, deadline - time.monotonic())):
            raise IBError(NOT_CONNECTED, "positions and orders are being restored after a reconnect (no complete "
                               f"answer within {timeout:g} s); try again in a moment", "risk data")

    # Portfolio's cached reads, not its DataFrame reads: those cost ~5 ms each (pandas), too slow for
    # an order path whose budget is 5 ms all told.
    @staticmethod
    def _cached(table: str, value: Any) -> Any:
        if value is None:
            raise IBError(NOT_CONNECTED, f"{table} is not watched (the desk is closing)", "risk data")
        return value

    def position(self, account: str, con_id: int) -> float:
        """The account's position in the contract (shares, contracts or units; negative when short)
        from the watched reqPositions feed."""
        self._ensure(("positions",), self.portfolio.watch_positions)
        self.ready(("positions",))
        return finite(self._cached("positions", self.portfolio.cached_position(account, con_id))) or 0.0

    def open_orders(self) -> list[dict]:
        """Every working order IB listed (reqAllOpenOrders, then this client's order events): rows as
        Portfolio.open_orders() has them (order_id, perm_id, client_id, account, con_id, action,
        status, remaining, ...)."""
        self._ensure(("open_orders",), self.portfolio.watch_open_orders)
        self.ready(("open_orders",))
        return self._cached("open_orders", self.portfolio.cached_open_orders())

    def daily_pnl(self, account: str) -> float | None:
        """reqPnL's daily P&L of the account (base currency), None when IB sent 'unset'."""
        self._ensure(("pnl", account), lambda: self.portfolio.watch_pnl(account))
        self.ready(("pnl", account))
        return finite(self._cached("pnl", self.portfolio.cached_daily_pnl(account)))

    def account_values(self, account: str) -> dict[tuple[str, str], Any]:
        """reqAccountUpdatesMulti's values of the account: {(key, currency): value}."""
        self._ensure(("values", account), lambda: self.portfolio.watch_account_values(account))
        self.ready(("values", account))
        return self._cached("values", self.portfolio.cached_account_values(account))

    # --- this desk's orders in flight ----------------------------------------------------------------
    def sent(self, ref: str, order_id: int, account: str, con_id: int, action: str, quantity: float) -> None:
        """An order this desk hands to IB now (called before placeOrder): counted as open until IB's
        open-orders table lists it or the journal says it is no longer in flight."""
        with self._lock:
            self._seeded()[(self.session.client_id, order_id)] = ref
            self._flight_facts[ref] = (account, con_id, action, quantity)

    def _seeded(self) -> dict[tuple[int, int], str]:
        """The orders in flight, (client_id, order_id) -> Ref; under the lock. The first call seeds them
        (and their facts) from the journal: a restarted desk inherits the journal's orders in flight."""
        if self._in_flight is not None:
            return self._in_flight
        in_flight: dict[tuple[int, int], str] = {}
        self._in_flight, self._flight_facts = in_flight, {}
        for rec in self.desk.journal.intents(("transmitting", "working")):
            if rec["order_id"] is None or rec["client_id"] is None:
                continue
            f = rec["fields"]
            in_flight[(rec["client_id"], rec["order_id"])] = rec["ref"]
            self._flight_facts[rec["ref"]] = (rec["account"], rec["con_id"], f.get("action"),
                                              finite(f.get("quantity")) or 0.0)
        return in_flight

    def unreported(self, listed: set[tuple[int, int]]) -> list[dict]:
        """This desk's orders in flight that are not among ``listed`` (IB's open orders, as
        (client_id, order_id)) and that the journal still has as transmitting or working: dicts of
        account, con_id, action, remaining (journal's, else the order quantity), perm_id. Orders IB
        listed, or that ended (filled, cancelled, rejected, not received), are forgotten: from then on
        the open-orders table (or the position) carries them."""
        with self._lock:
            in_flight = self._seeded()          # seeded once, never replaced: safe to hold on to
            pending = [(k, ref) for k, ref in in_flight.items() if k not in listed]
            for k in [k for k in in_flight if k in listed]:
                self._flight_facts.pop(in_flight.pop(k), None)
        out = []
        for k, ref in pending:
            rec = self.desk.journal.get(ref)
            if rec is None or rec["state"] not in ("transmitting", "working") or rec["order_id"] != k[1]:
                with self._lock:
                    if in_flight.pop(k, None) is not None:
                        self._flight_facts.pop(ref, None)
                continue
            account, con_id, action, qty = self._flight_facts.get(ref) or (rec["account"], rec["con_id"], None, 0.0)
            remaining = finite(rec.get("remaining"))
            out.append({"account": account, "con_id": con_id, "action": action,
                        "remaining": qty if remaining is None else remaining, "perm_id": rec.get("perm_id")})
        return out

    # --- quotes -----------------------------------------------------------------------------------
    def quote(self, details):
        """The freshest quote of the instrument: the board (a line this desk keeps, opened the first
        time the instrument is ordered, within ``quote_lines``), else one snapshot. None when IB has
        none (the risk rules then refuse what needs one)."""
        c = details.contract
        key = self._line(details)
        q = self._board_quote(key) if key else None
        if q is None and key and key not in self._waited:
            # A line just opened: its first quote is on the way; wait for it (once) rather than snapshot.
            self._waited.add(key)
            q = self._wait_board(key, _FIRST_QUOTE_WAIT)
        if q is None:
            try:
                q = self.market.snapshot(c, timeout=min(5.0, self.session.request_timeout))
            except (IBError, ValueError) as exc:
                log.info("no quote for %s: %s", c.symbol, exc)
                q = None
        return q

    def _line(self, details) -> str | None:
        c = details.contract
        with self._lock:
            if c.conId in self._quote_keys:
                return self._quote_keys[c.conId]
            if self._closed:
                return None
            key = format_contract(details)
            board = getattr(self.market, "board", None)
            if board is None:
                return None
            shared = self.market.users(key) > 0 if hasattr(self.market, "users") else False
            free = self.market.max_lines - self.market.lines_in_use()
            if not shared and (len(self._quote_keys) >= self.quote_lines or free <= 1):
                return None                       # keep the budget for the sheet: snapshot instead
            try:
                key = self.market.subscribe(c)
            except IBError as exc:                # MarketDataError 101 (budget) or not connected
                log.info("no quote line for %s: %s", key, exc)
                return None
            self._quote_keys[c.conId] = key
            return key

    def _board_quote(self, key: str):
        try:
            q = self.market.board.get(key)
        except Exception:
            return None
        max_age = self.desk.limits.quote_max_age
        fresh = q is not None and not q.stale and q.updated is not None and \
            (datetime.now(timezone.utc) - q.updated).total_seconds() <= max_age and \
            q.priced                # not a first tick with one side only: a MKT order needs both
        return q if fresh else None

    def _wait_board(self, key: str, timeout: float):
        board = self.market.board
        deadline = time.monotonic() + timeout
        while True:
            v = board.version
            q = self._board_quote(key)
            left = deadline - time.monotonic()
            if q is not None or left <= 0:
                return q
            board.wait(v, left)


class FactGatherer:
    """The facts one place() call reads (positions, open orders, P&L, account values, quotes), from
    the desk's standing feeds (:class:`DeskFacts`), each table read once per call.

    Where each comes from: ``Portfolio.positions()`` (reqPositions + reqAccountUpdates, watched),
    ``Portfolio.open_orders()`` (reqAllOpenOrders + the order events, watched: every client's working
    orders) plus this desk's own orders IB has not reported yet (the journal), ``Portfolio.pnl(account)``
    (reqPnL, daily, watched), ``Portfolio.account_values(account)`` (ExchangeRate, AvailableFunds,
    watched), quotes from the MarketData board when fresh (``quote_max_age``), else one snapshot;
    orders per minute from the journal's transmissions. IBError from a read propagates (the row is
    refused: no data, no order).
    """

    def __init__(self, desk, feeds: DeskFacts | None = None):
        self.desk = desk
        self.feeds = feeds if feeds is not None else desk.facts
        self._open: list[dict] | None = None
        self._pnl: dict[str, float | None] = {}
        self._values: dict[str, dict | None] = {}
        self._quotes: dict[int, Any] = {}

    def facts(self, intent: OrderIntent, details, *, ref_state: str | None = None, exclude_perm: int | None = None,
              modify: bool = False) -> OrderFacts:
        """OrderFacts for ``intent`` (account set) on the qualified ``details``. For a modify
        (``modify``, ``exclude_perm`` = the working order's permId) the order itself is not counted as
        open and does not count as a new order this minute."""
        desk, c = self.desk, details.contract
        position = self.feeds.position(intent.account, c.conId)
        if self._open is None:
            self._open = self.feeds.open_orders()
        open_rows = self._open
        oo = [r for r in open_rows
              if r["status"] in WORKING_STATUSES and not (exclude_perm and r["perm_id"] == exclude_perm)]
        n_extra, extra = self._unreported(open_rows, exclude_perm)
        open_buy = extra.get((intent.account, c.conId, "BUY"), 0.0)
        open_sell = extra.get((intent.account, c.conId, "SELL"), 0.0)
        for r in oo:
            if r["account"] == intent.account and r["con_id"] == c.conId:
                left = finite(r["remaining"]) or 0.0
                if r["action"] == "BUY":
                    open_buy += left
                elif r["action"] == "SELL":
                    open_sell += left
        n_legs = 1 + (intent.take_profit is not None) + (intent.stop_loss is not None)
        open_orders = len(oo) + n_extra - (n_legs if modify else 0)
        recent = 0 if modify else desk.journal.placed_since(time.time() - 60.0)
        quote = self._quote(details)
        ccy = c.currency or desk.limits.base_currency
        return OrderFacts(
            account=intent.account, sec_type=c.secType, ib_symbol=c.symbol, currency=ccy,
            multiplier=finite(c.multiplier) or 1.0, min_tick=finite(details.minTick) or 0.0,
            min_size=size_rule(getattr(details, "minSize", None)),
            size_increment=size_rule(getattr(details, "sizeIncrement", None)),
            bid=quote.bid if quote else None, ask=quote.ask if quote else None, last=quote.last if quote else None,
            quote_time=quote.updated if quote else None, fx_rate=self._fx(intent.account, ccy),
            position=position, open_buy=open_buy, open_sell=open_sell, open_orders=open_orders,
            recent_orders=recent, daily_pnl=self._daily_pnl(intent.account), ref_state=ref_state,
            kill_switch=desk.journal.kill_switch, now=datetime.now(timezone.utc))

    def _unreported(self, open_rows: list[dict],
                    exclude_perm: int | None) -> tuple[int, dict[tuple[str, int, str], float]]:
        """This desk's orders IB has not listed yet (see :meth:`DeskFacts.unreported`), against the
        open-orders rows read for this batch: (how many, {(account, conId, action): remaining})."""
        n = 0
        side: dict[tuple[str, int, str], float] = {}
        for rec in self.feeds.unreported({(r["client_id"], r["order_id"]) for r in open_rows}):
            if exclude_perm and rec["perm_id"] == exclude_perm:
                continue
            n += 1
            key = (rec["account"], rec["con_id"], rec["action"])
            side[key] = side.get(key, 0.0) + rec["remaining"]
        return n, side

    def _quote(self, details):
        c = details.contract
        if c.conId not in self._quotes:
            self._quotes[c.conId] = self.feeds.quote(details)
        return self._quotes[c.conId]

    def _daily_pnl(self, account: str) -> float | None:
        if account not in self._pnl:
            try:
                self._pnl[account] = self.feeds.daily_pnl(account)
            except IBError as exc:
                if exc.code == NOT_CONNECTED:
                    raise                          # stale or no connection: refuse, do not guess
                log.info("no P&L for %s: %s", account, exc)
                self._pnl[account] = None
        return self._pnl[account]

    def _account_values(self, account: str) -> dict | None:
        if account not in self._values:
            try:
                self._values[account] = self.feeds.account_values(account)
            except IBError as exc:
                if exc.code == NOT_CONNECTED:
                    raise
                self._values[account] = None
        return self._values[account]

    def _fx(self, account: str, currency: str) -> float | None:
        if currency == self.desk.limits.base_currency:
            return 1.0
        v = self._account_values(account)
        return finite(v.get(("ExchangeRate", currency))) if v is not None else None

    def available_funds(self, account: str) -> float | None:
        v = self._account_values(account)
        if v is None:
            return None
        hit = [val for (k, _), val in v.items() if k == "AvailableFunds"]
        return finite(hit[0]) if hit else None
