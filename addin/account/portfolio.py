"""Positions, account values, P&L, executions and open orders as pandas DataFrames.

``Portfolio(session)`` reads the account side of IB through :class:`addin.ib.session.Session` (nothing
here calls ibapi directly, every message goes through the session's pacer). Each table has a
*feed*: the IB subscription that fills it.

=====================  ==========================================================================
table                  where the data comes from
=====================  ==========================================================================
positions()            reqPositions (position, positionEnd) for every account, joined with
                       reqAccountUpdates (updatePortfolio, updateAccountValue, accountDownloadEnd)
                       of the *portfolio account* for prices, values, P&L and the weight; the
                       other accounts' from reqPnLSingle and reqAccountUpdatesMulti
account_summary()      reqAccountSummary (accountSummary, accountSummaryEnd), group "All"
account_values()       reqAccountUpdatesMulti (accountUpdateMulti, accountUpdateMultiEnd), per account
pnl()                  reqPnL (pnl)
pnl_single()           reqPnLSingle (pnlSingle)
executions()           reqExecutions (execDetails, execDetailsEnd) + live fills (execDetails with
                       reqId -1), joined by execId with commissionAndFeesReport
open_orders()          reqAllOpenOrders (openOrder, orderStatus, openOrderEnd) + the order events
                       IB pushes for this client's orders
=====================  ==========================================================================

Watching. ``watch_positions()`` etc. take a reference on the feed: the first watcher subscribes, the
last one (``Watch.close()``, ``with`` block end, or ``unwatch_positions()``) unsubscribes. While a
feed is watched its table is kept live by IB's updates and a read returns the cached table at once,
without sending anything. Without a watcher, a read is a one-shot request: subscribe, wait for the
first complete answer (``timeout`` seconds, default the session's request timeout), build the
table, unsubscribe. Several readers at once share one subscription (reference counted too).

Reconnects. Request-based feeds are session subscriptions (re-sent by the session after a reconnect
or 1101); the listener-based ones (positions, account updates, open orders, executions) are re-sent
by a restore hook. A re-sent snapshot is collected aside and replaces the cached one at its end
message, so a watched table keeps its last data while the connection is down (``df.attrs["live"]``
is then False) and never shows a half-received snapshot.

Every table carries ``df.attrs``: ``as_of`` (UTC time of the last update received for it, None
before any) and ``live`` (True when the table is watched and the session is connected).

Errors: reads raise :class:`addin.ib.session.IBError` with IB's code and text when IB refused the
request (e.g. 321 for an unknown account), IBError 504 for a one-shot read while not connected,
:class:`addin.ib.session.RequestTimeout` when no complete answer arrived within ``timeout``.

Threading: every public method may be called from any thread (Excel's UDF threads) while ibapi's
message thread writes; one lock guards all state, DataFrames are built from immutable row copies.

IB limits worth knowing: one reqAccountUpdates account per client at a time (hence one *portfolio
account*, see :class:`Portfolio`); at most two reqAccountSummary subscriptions at once (error 322
beyond); IB pushes live order events and fills only for this client's orders (client 0 sees more).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from ibapi.account_summary_tags import AccountSummaryTags
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter

from ..ib.contracts import InstrumentError, format_contract
from ..ib.events import Event
from ..ib.session import NO_TIMEOUT, IBError, Request, RequestTimeout, Session
from ..protocol.errors import NOT_CONNECTED, VALIDATION_ERROR
from ..protocol.times import IBTimeError, UnknownZoneError, format_utc, parse_time
from ..protocol.unset import UNSET_DECIMAL, UNSET_DOUBLE

log = logging.getLogger(__name__)

# --- columns ----------------------------------------------------------------------------------------
POSITION_COLUMNS = {
    "account": object, "symbol": object, "con_id": "int64", "sec_type": object, "currency": object,
    "position": "float64", "avg_cost": "float64", "market_price": "float64", "market_value": "float64",
    "unrealized_pnl": "float64", "realized_pnl": "float64", "weight": "float64",
}
SUMMARY_COLUMNS = {"account": object, "tag": object, "value": object, "currency": object}
VALUE_COLUMNS = {"account": object, "key": object, "value": object, "currency": object}
PNL_COLUMNS = {"daily": "float64", "unrealized": "float64", "realized": "float64"}
PNL_SINGLE_COLUMNS = {"position": "float64", "daily": "float64", "unrealized": "float64",
                      "realized": "float64", "value": "float64"}
EXECUTION_COLUMNS = {
    "exec_id": object, "time": "datetime64[ns, UTC]", "account": object, "symbol": object,
    "con_id": "int64", "side": object, "shares": "float64", "price": "float64", "order_id": "int64",
    "perm_id": "int64", "client_id": "int64", "order_ref": object, "commission": "float64",
    "commission_currency": object, "realized_pnl": "float64", "exchange": object,
}
OPEN_ORDER_COLUMNS = {
    "order_id": "int64", "perm_id": "int64", "client_id": "int64", "account": object, "symbol": object,
    "con_id": "int64", "action": object, "quantity": "float64", "order_type": object,
    "lmt_price": "float64", "aux_price": "float64", "tif": object, "status": object,
    "filled": "float64", "remaining": "float64", "avg_fill_price": "float64", "order_ref": object,
}

DEFAULT_SUMMARY_TAGS = AccountSummaryTags.AllTags
MAX_COMMISSIONS = 100_000     # commission reports kept for the execId join (about a busy week of fills)
DONE_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled"})
NAN = float("nan")


# --- values at the edge -----------------------------------------------------------------------------
def _num(v: Any) -> float:
    """IB's float, with its 'unset' (1.7976931348623157e308), None, '' and infinities as NaN."""
    if v is None or v == "":
        return NAN
    try:
        f = float(v)
    except (TypeError, ValueError):
        return NAN
    if f == UNSET_DOUBLE or math.isinf(f):
        return NAN
    return f


def _qty(v: Any) -> float:
    """IB's Decimal size as float; UNSET_DECIMAL -> NaN."""
    if v is None or (isinstance(v, Decimal) and v == UNSET_DECIMAL):
        return NAN
    return _num(v)


def parse_value(text: str) -> float | str:
    """An account value as IB sends it (text): a float when it reads as a number, else the text."""
    if text is None:
        return ""
    try:
        f = float(text)
    except (TypeError, ValueError):
        return text
    return NAN if f == UNSET_DOUBLE else f


def parse_ib_time(text: str) -> datetime | None:
    """An execution time from IB as an aware UTC datetime (:func:`addin.protocol.times.parse_time`).

    Understood: ``yyyymmdd hh:mm:ss Zone/Name`` (TWS 10.x), ``yyyymmdd-hh:mm:ss`` (UTC) and
    ``yyyymmdd  hh:mm:ss`` without a zone (older TWS: TWS's local time, taken as this machine's zone).
    Returns None for empty or unreadable text, and for a zone name IB's gateway would not resolve
    either (logged: a fill time read in a guessed zone could be hours off).
    """
    if not (text or "").strip():
        return None
    try:
        return parse_time(text, default_zone=None)
    except UnknownZoneError as exc:
        log.warning("IB time %r: %s; the time is left empty", text, exc)
        return None
    except IBTimeError:
        return None


def _ib_filter_time(since: datetime | str | None) -> str:
    if since is None or since == "":
        return ""
    if isinstance(since, str):
        return since
    return format_utc(since)


def format_symbol(contract: Contract) -> str:
    """Canonical text of ``contract`` in the cell grammar (``addin.ib.contracts.format_contract``); a
    contract the grammar cannot write and that has no conId shows its bare symbol."""
    try:
        return format_contract(contract)
    except InstrumentError:
        return f"conid:{contract.conId}" if contract.conId else (contract.symbol or "")


def _frame(rows: list[dict] | list[tuple], columns: dict[str, Any], index=None) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (names and dtypes), also when there are no rows."""
    df = pd.DataFrame(rows, columns=list(columns), index=index)
    for name, dtype in columns.items():
        if dtype is object:
            df[name] = df[name].astype(object)
        elif dtype == "datetime64[ns, UTC]":
            df[name] = pd.to_datetime(df[name], utc=True).astype("datetime64[ns, UTC]")
        else:
            df[name] = df[name].astype(dtype)
    return df


def _later(rows: list, columns: dict[str, Any], index=None) -> Callable[[], pd.DataFrame]:
    """Rows copied now (under the lock), the DataFrame built later (outside it)."""
    return lambda: _frame(rows, columns, index)


# --- watches ----------------------------------------------------------------------------------------
class Watch:
    """A reference on one or more feeds, kept live until ``close()`` (or the end of a ``with`` block).
    ``close`` is idempotent and thread-safe."""

    def __init__(self, portfolio: "Portfolio", feeds: list["_Feed"], what: str):
        self._portfolio = portfolio
        self._feeds = feeds
        self.what = what
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def current(self, since: datetime | None = None) -> bool:
        """True when every table behind this watch has its first complete answer and is not collecting
        a re-sent snapshot (after a reconnect), and, given ``since`` (UTC), was heard from at or after
        it. A table IB refused counts as current (its cached read raises IB's error), and so does one
        nothing watches any more (its cached read returns None). For waiting: Portfolio.wait_until."""
        return self._portfolio._current([feed.key for feed in self._feeds], since)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._portfolio._forget(self)
        for feed in reversed(self._feeds):
            self._portfolio._release(feed)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Watch {self.what}{' closed' if self._closed else ''}>"


# --- feeds (all state guarded by Portfolio._lock) ---------------------------------------------------
class _Feed:
    kind = ""

    def __init__(self, pf: "Portfolio", key: tuple, description: str):
        self.pf = pf
        self.key = key
        self.description = description
        self.refs = 0
        self.ready = False                 # a complete snapshot has arrived
        self.error: IBError | None = None
        self.as_of: datetime | None = None

    def touch(self) -> None:
        self.as_of = datetime.now(timezone.utc)

    def open(self) -> None:            # under the lock; sends the subscription
        raise NotImplementedError

    def close(self) -> None:           # under the lock; sends the cancel
        pass

    def restore(self) -> None:         # listener-based feeds: re-send after a reconnect
        pass


_F = TypeVar("_F", bound=_Feed)


def _as(kind: type[_F], feed: _Feed) -> _F:
    """``feed`` as the class its spec builds (each key has one feed class: a mismatch is a bug here)."""
    if not isinstance(feed, kind):
        raise TypeError(f"{feed.description}: expected a {kind.__name__}, got a {type(feed).__name__}")
    return feed


class _Snapshotting(_Feed):
    """A feed whose full snapshot is collected aside (``staging``) until its end message."""

    def __init__(self, pf, key, description):
        super().__init__(pf, key, description)
        self.live: dict = {}
        self.staging: dict | None = None

    def target(self) -> dict:
        return self.staging if self.staging is not None else self.live

    def begin(self) -> None:
        self.staging = {}

    def end(self) -> None:
        if self.staging is not None:
            self.live, self.staging = self.staging, None
        self.ready = True
        self.touch()


class _PositionsFeed(_Snapshotting):
    kind = "positions"

    def open(self) -> None:
        self.begin()
        self.pf._send(lambda c: c.reqPositions())

    def restore(self) -> None:
        self.open()

    def close(self) -> None:
        self.pf._send(lambda c: c.cancelPositions())

    def on_position(self, account: str, contract: Contract, symbol: str, pos, avg_cost) -> None:
        self.target()[(account, contract.conId)] = (account, contract, symbol, _qty(pos), _num(avg_cost))
        self.touch()


class _UpdatesFeed(_Snapshotting):
    """reqAccountUpdates of one account: values (key, currency) -> text and portfolio conId -> row."""

    kind = "portfolio"

    def __init__(self, pf, key, account: str):
        super().__init__(pf, key, f"account updates {account}")
        self.account = account
        self.live = {"values": {}, "portfolio": {}}
        self.update_time = ""

    def begin(self) -> None:
        self.staging = {"values": {}, "portfolio": {}}

    def open(self) -> None:
        self.begin()
        acct = self.account
        self.pf._send(lambda c: c.reqAccountUpdates(True, acct))

    def restore(self) -> None:
        self.open()

    def close(self) -> None:
        acct = self.account
        self.pf._send(lambda c: c.reqAccountUpdates(False, acct))

    def on_value(self, key: str, value: str, currency: str, account: str) -> None:
        if account == self.account:
            self.target()["values"][(key, currency)] = value
            self.touch()

    def on_portfolio(self, contract: Contract, pos, price, value, avg_cost, unrealized, realized,
                     account: str) -> None:
        if account == self.account:
            self.target()["portfolio"][contract.conId] = (
                _qty(pos), _num(price), _num(value), _num(avg_cost), _num(unrealized), _num(realized))
            self.touch()

    def base_currency_and_nlv(self) -> tuple[str, float]:
        values = self.live["values"]
        for (key, ccy), text in values.items():
            if key == "NetLiquidation" and ccy and ccy != "BASE":
                return ccy, _num(text)
        return "", _num(values.get(("NetLiquidationByCurrency", "BASE")))

    def rate(self, currency: str, base: str) -> float:
        """Units of the base currency per one ``currency`` (IB's ExchangeRate account value)."""
        if currency == base:
            return 1.0
        return _num(self.live["values"].get(("ExchangeRate", currency)))


class _RequestFeed(_Feed):
    """A feed carried by one session subscription (Request with subscription=True): the session
    re-sends it after a reconnect; ``restore`` resets the snapshot in between."""

    def make_request(self) -> Request:
        raise NotImplementedError

    def open(self) -> None:
        self.request = self.pf.session.submit(self.make_request())

    def close(self) -> None:
        self.pf.session.cancel(self.request)

    def _request(self, start, cancel) -> Request:
        return Request(self.description, start, on_event=self._on_event, cancel=cancel, subscription=True,
                       restore=lambda r: self.pf._apply(self.kind, self.on_restore), timeout=NO_TIMEOUT)

    def _on_event(self, request: Request, name: str, args: tuple) -> bool:
        if name == "error":
            _, code, text = args[:3]
            err = IBError(code, text, self.description, request.req_id)
            self.pf._apply(self.kind, lambda: setattr(self, "error", err))
        elif name != "notice":
            self.pf._apply(self.kind, lambda: self.handle(name, args))
        return False   # never keep rows on the Request: a subscription lives long

    def handle(self, name: str, args: tuple) -> None:
        raise NotImplementedError

    def on_restore(self) -> None:
        pass


class _SummaryFeed(_RequestFeed, _Snapshotting):
    kind = "account_summary"

    def __init__(self, pf, key, group: str, tags: str):
        _Snapshotting.__init__(self, pf, key, f"account summary {group} {tags[:60]}")
        self.group, self.tags = group, tags

    def make_request(self) -> Request:
        self.begin()
        group, tags = self.group, self.tags
        return self._request(lambda c, rid: c.reqAccountSummary(rid, group, tags),
                             lambda c, rid: c.cancelAccountSummary(rid))

    def on_restore(self) -> None:
        self.begin()

    def handle(self, name, args) -> None:
        if name == "accountSummary":
            _, account, tag, value, currency = args[:5]
            self.target()[(account, tag, currency)] = (account, tag, parse_value(value), currency)
            self.touch()
        elif name == "accountSummaryEnd":
            self.end()


class _ValuesFeed(_RequestFeed, _Snapshotting):
    kind = "account_values"

    def __init__(self, pf, key, account: str):
        _Snapshotting.__init__(self, pf, key, f"account updates multi {account}")
        self.account = account

    def make_request(self) -> Request:
        self.begin()
        acct = self.account
        return self._request(lambda c, rid: c.reqAccountUpdatesMulti(rid, acct, "", False),
                             lambda c, rid: c.cancelAccountUpdatesMulti(rid))

    def on_restore(self) -> None:
        self.begin()

    def handle(self, name, args) -> None:
        if name == "accountUpdateMulti":
            _, account, _model, key, value, currency = args[:6]
            self.target()[(account, key, currency)] = (account, key, parse_value(value), currency)
            self.touch()
        elif name == "accountUpdateMultiEnd":
            self.end()


class _PnLFeed(_RequestFeed):
    kind = "pnl"

    def __init__(self, pf, key, account: str):
        super().__init__(pf, key, f"P&L {account}")
        self.account = account
        self.row: tuple = (NAN, NAN, NAN)

    def make_request(self) -> Request:
        acct = self.account
        return self._request(lambda c, rid: c.reqPnL(rid, acct, ""), lambda c, rid: c.cancelPnL(rid))

    def handle(self, name, args) -> None:
        if name == "pnl":
            self.row = tuple(_num(v) for v in args[1:4])
            self.ready = True
            self.touch()


class _PnLSingleFeed(_RequestFeed):
    kind = "pnl_single"

    def __init__(self, pf, key, account: str, con_id: int):
        super().__init__(pf, key, f"P&L {account} conId {con_id}")
        self.account, self.con_id = account, con_id
        self.row: tuple = (NAN,) * 5

    def make_request(self) -> Request:
        acct, con_id = self.account, self.con_id
        return self._request(lambda c, rid: c.reqPnLSingle(rid, acct, "", con_id),
                             lambda c, rid: c.cancelPnLSingle(rid))

    def handle(self, name, args) -> None:
        if name == "pnlSingle":
            _, pos, daily, unrealized, realized, value = args[:6]
            self.row = (_qty(pos), _num(daily), _num(unrealized), _num(realized), _num(value))
            self.ready = True
            self.touch()


@dataclass(frozen=True)
class _ExecutionRow:
    exec_id: str
    time: datetime | None
    account: str
    contract: Contract
    symbol: str
    side: str
    shares: float
    price: float
    order_id: int
    perm_id: int
    client_id: int
    order_ref: str
    exchange: str


# Security types IB routes through SMART: an execution's exchange is the venue that filled it, not part
# of the instrument's identity (AAPL.NASDAQ would mean "primary exchange NASDAQ").
SMART_ROUTED = frozenset({"STK", "ETF", "OPT", "WAR", "IOPT"})


def _instrument(contract: Contract) -> Contract:
    """The instrument of an execution's contract: for SMART-routed types the venue becomes SMART."""
    if (contract.secType or "").upper() in SMART_ROUTED and contract.exchange not in ("", "SMART"):
        contract = copy.copy(contract)
        contract.exchange = "SMART"
    return contract


def _holding(contract: Contract) -> Contract:
    """The instrument of a position's contract. IB writes a stock's listing exchange in a position's
    exchange field (NASDAQ): a holding, not a directed route, so it reads as SMART, as an execution's
    does (``AAPL``, not ``conid:265598.NASDAQ``)."""
    return _instrument(contract)


def _fill_of(contract: Contract, execution) -> _ExecutionRow:
    instrument = _instrument(contract)
    return _ExecutionRow(execution.execId, parse_ib_time(execution.time), execution.acctNumber, instrument,
                 format_symbol(instrument),
                 execution.side, _qty(execution.shares), _num(execution.price), int(execution.orderId or 0),
                 int(execution.permId or 0), int(execution.clientId or 0), execution.orderRef or "",
                 execution.exchange or "")


def _correction_key(exec_id: str) -> tuple[str, str]:
    """IB publishes a correction as a new execId that differs only after the last period."""
    base, _, suffix = exec_id.rpartition(".")
    return (base, suffix) if base else (exec_id, "")


class _ExecutionsFeed(_Feed):
    """reqExecutions (all of today's executions, no filter) plus live fills; corrections replace the
    execution they correct."""

    kind = "executions"

    def __init__(self, pf, key):
        super().__init__(pf, key, "executions")
        self.fills: dict[str, tuple[str, _ExecutionRow]] = {}     # correction base -> (suffix, fill)
        self.request: Request | None = None

    def add(self, fill: _ExecutionRow) -> None:
        base, suffix = _correction_key(fill.exec_id)
        old = self.fills.get(base)
        if old is None or suffix >= old[0]:
            self.fills[base] = (suffix, fill)
        self.touch()

    def open(self) -> None:
        self._load()

    def restore(self) -> None:
        self._load()

    def _load(self) -> None:
        if self.request is not None and self.request.active:
            self.pf.session.cancel(self.request)   # 1101: the old answer may still be coming
        self.request = None

        def on_event(request, name, args):
            if name == "execDetails":
                fill = _fill_of(args[1], args[2])
                self.pf._apply(self.kind, lambda: self.add(fill))
            elif name == "execDetailsEnd":
                self.pf._apply(self.kind, self.end)
            elif name == "error":
                err = IBError(args[1], args[2], self.description, request.req_id)
                self.pf._apply(self.kind, lambda: setattr(self, "error", err))
            return False

        request = Request("executions (all of today's)", lambda c, rid: c.reqExecutions(rid, ExecutionFilter()),
                          end="execDetailsEnd", on_event=on_event, timeout=NO_TIMEOUT)
        try:
            self.request = self.pf.session.submit(request)
        except IBError as exc:
            if exc.code != NOT_CONNECTED:
                raise
            # Reconnecting: the restore hook loads once the connection is back.

    def end(self) -> None:
        self.ready = True
        self.touch()

    def close(self) -> None:
        if self.request is not None and self.request.active:
            self.pf.session.cancel(self.request)


class _OpenOrdersFeed(_Snapshotting):
    """reqAllOpenOrders snapshots plus the openOrder/orderStatus events IB pushes. Rows keyed by
    (client_id, order_id), or ("perm", permId) for orders without an API order id (placed in TWS)."""

    kind = "open_orders"

    def open(self) -> None:
        self.begin()
        self.pf._send(lambda c: c.reqAllOpenOrders())

    def restore(self) -> None:
        self.open()

    @staticmethod
    def _key(order_id: int, client_id: int, perm_id: int):
        return (client_id, order_id) if order_id > 0 else ("perm", perm_id)

    def _put(self, key, row: dict) -> None:
        target = self.target()
        if row["status"] in DONE_STATUSES:
            target.pop(key, None)
            self.live.pop(key, None)
        else:
            target[key] = row
        self.touch()

    def on_open_order(self, order_id: int, contract: Contract, symbol: str, order, state) -> None:
        key = self._key(order_id, order.clientId, order.permId)
        old = self.target().get(key) or self.live.get(key) or {}
        quantity = _qty(order.totalQuantity)
        filled = old.get("filled", _qty(getattr(order, "filledQuantity", UNSET_DECIMAL)))
        row = {
            "order_id": order_id, "perm_id": order.permId, "client_id": order.clientId,
            "account": order.account, "symbol": symbol, "con_id": contract.conId,
            "action": order.action, "quantity": quantity, "order_type": order.orderType,
            "lmt_price": _num(order.lmtPrice), "aux_price": _num(order.auxPrice), "tif": order.tif,
            "status": state.status or old.get("status", ""),
            "filled": 0.0 if math.isnan(filled) else filled,
            "remaining": old.get("remaining", quantity - (0.0 if math.isnan(filled) else filled)),
            "avg_fill_price": old.get("avg_fill_price", NAN), "order_ref": order.orderRef or "",
        }
        self._put(key, row)

    def on_status(self, order_id: int, status: str, filled, remaining, avg_fill_price, perm_id: int,
                  parent_id, last_fill_price, client_id: int, *rest) -> None:
        key = self._key(order_id, client_id, perm_id)
        old = self.target().get(key) or self.live.get(key)
        if old is None:
            if status in DONE_STATUSES:
                return
            # A status before its openOrder: keep what is known; openOrder fills in the rest.
            old = {"order_id": order_id, "perm_id": perm_id, "client_id": client_id, "account": "",
                   "symbol": "", "con_id": 0, "action": "", "quantity": NAN, "order_type": "",
                   "lmt_price": NAN, "aux_price": NAN, "tif": "", "order_ref": ""}
        avg = _num(avg_fill_price)
        row = {**old, "status": status, "filled": _qty(filled), "remaining": _qty(remaining),
               "avg_fill_price": avg if avg else NAN}
        if perm_id:
            row["perm_id"] = perm_id
        self._put(key, row)


# --- the portfolio ----------------------------------------------------------------------------------
class Portfolio:
    """Positions, account values, P&L, executions and open orders of the accounts ``session`` manages.

    ``account``: the *portfolio account*, the one whose reqAccountUpdates feed gives positions their
    market price, market value, P&L and weight (IB serves account updates for one account per client
    at a time). Default: the first managed account when the feed opens. Positions of other accounts
    get those columns from reqPnLSingle and their account values (see ``positions``).

    Thread-safe. Installs session listeners and a restore hook at construction; ``close()`` (or the
    end of a ``with`` block) removes them and ends every subscription this Portfolio holds.
    """

    def __init__(self, session: Session, account: str | None = None):
        self.session = session
        self.account = account
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._version = 0
        self._feeds: dict[tuple, _Feed] = {}
        self._watches: dict[str, list[Watch]] = {}
        self._commissions: dict[str, tuple[float, str, float]] = {}   # execId -> (amount, ccy, realized)
        self._change_listeners: list[Callable[[str], None]] = []
        self._closed = False
        events = session.events
        self._subscriptions: list[tuple[Event, Callable[..., None]]] = [
            (events.position, self._on_position), (events.positionEnd, self._on_position_end),
            (events.updateAccountValue, self._on_account_value), (events.updatePortfolio, self._on_portfolio),
            (events.updateAccountTime, self._on_account_time), (events.accountDownloadEnd, self._on_download_end),
            (events.execDetails, self._on_exec_details), (events.commissionAndFeesReport, self._on_commission),
            (events.openOrder, self._on_open_order), (events.orderStatus, self._on_order_status),
            (events.openOrderEnd, self._on_open_order_end), (events.error, self._on_error),
        ]
        for event, fn in self._subscriptions:
            event.subscribe(fn)
        session.add_restore_hook(self._restore)

    # --- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """End every watch and subscription of this Portfolio and detach from the session. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches = [w for ws in self._watches.values() for w in ws]
            self._watches.clear()
        for w in watches:
            w.close()
        with self._lock:
            feeds = list(self._feeds.values())
            self._feeds.clear()
        for feed in feeds:
            self._close_feed(feed)
        for event, fn in self._subscriptions:
            event.unsubscribe(fn)
        self.session.remove_restore_hook(self._restore)

    def __enter__(self) -> "Portfolio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- change notification ----------------------------------------------------------------------
    def add_change_listener(self, fn: Callable[[str], None]) -> None:
        """``fn(kind)`` after every update of a watched table; kind is one of positions, portfolio
        (the account updates behind positions), account_summary, account_values, pnl, pnl_single,
        executions, open_orders. Runs on ibapi's message thread: keep it quick."""
        with self._lock:
            self._change_listeners.append(fn)

    def remove_change_listener(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            if fn in self._change_listeners:
                self._change_listeners.remove(fn)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` is true (True) or ``timeout`` seconds pass (False). The predicate
        is evaluated now and again after every update received; it may read the tables."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._version
            if predicate():
                return True
            with self._cond:
                while self._version == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)

    def _apply(self, kind: str, fn: Callable[[], Any]) -> None:
        """Run ``fn`` under the lock (a feed update), then wake readers and change listeners."""
        with self._cond:
            fn()
            self._version += 1
            self._cond.notify_all()
            listeners = list(self._change_listeners)
        for listener in listeners:
            try:
                listener(kind)
            except Exception:
                log.exception("portfolio change listener failed")

    # --- feeds: reference counting ----------------------------------------------------------------
    def _send(self, fn) -> None:
        try:
            self.session.send(fn)
        except IBError:
            pass   # no pacer: disconnected for good; nothing to send, nothing to cancel

    def _acquire(self, key: tuple, factory: Callable[[], _Feed], one_shot: bool) -> _Feed:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Portfolio is closed")
            feed = self._feeds.get(key)
            if feed is None:
                state = self.session.status.state
                if state != "connected" and (one_shot or state != "reconnecting"):
                    raise IBError(NOT_CONNECTED, f"Not connected ({state})", key[0].replace("_", " "))
                feed = factory()
                self._feeds[key] = feed
                try:
                    feed.open()
                except BaseException:
                    del self._feeds[key]
                    raise
            feed.refs += 1
            return feed

    def _release(self, feed: _Feed) -> None:
        with self._lock:
            feed.refs -= 1
            if feed.refs > 0:
                return
            if self._feeds.get(feed.key) is feed:
                del self._feeds[feed.key]
        self._close_feed(feed)

    def _close_feed(self, feed: _Feed) -> None:
        try:
            feed.close()
        except IBError:
            pass
        except Exception:
            log.exception("closing %s failed", feed.description)

    def _use(self, specs: list[tuple[tuple, Callable[[], _Feed]]], one_shot: bool) -> list[_Feed]:
        feeds: list[_Feed] = []
        try:
            for key, factory in specs:
                feeds.append(self._acquire(key, factory, one_shot))
        except BaseException:
            for f in reversed(feeds):
                self._release(f)
            raise
        return feeds

    def _read(self, specs, collect: Callable[[list[_Feed]], Callable[[], pd.DataFrame]],
              timeout: float | None) -> pd.DataFrame:
        """Acquire the feeds (subscribing the ones nobody watches), wait for their snapshots, copy the
        rows under the lock (``collect``), release (unsubscribing the ones nobody watches) and build
        the DataFrame outside the lock (the callable ``collect`` returned), so ibapi's message thread
        never waits for pandas."""
        timeout = self.session.request_timeout if timeout is None else timeout
        feeds = self._use(specs, one_shot=True)
        try:
            self._wait_ready(feeds, timeout)
            with self._lock:
                watched = all(f.refs > 1 for f in feeds)
                build = collect(feeds)
                stamps = [f.as_of for f in feeds if f.as_of is not None]
        finally:
            for f in reversed(feeds):
                self._release(f)
        df = build()
        df.attrs["as_of"] = max(stamps) if stamps else None
        df.attrs["live"] = watched and self.session.connected
        return df

    def _wait_ready(self, feeds: list[_Feed], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for f in feeds:
                    if f.error is not None:
                        raise f.error
                waiting = [f for f in feeds if not f.ready]
                if not waiting:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(", ".join(f.description for f in waiting), timeout)
                self._cond.wait(left)

    def _watch(self, what: str, specs) -> Watch:
        feeds = self._use(specs, one_shot=False)
        w = Watch(self, feeds, what)
        with self._lock:
            self._watches.setdefault(what, []).append(w)
        return w

    def _unwatch(self, what: str) -> None:
        with self._lock:
            stack = self._watches.get(what)
            if not stack:
                raise ValueError(f"{what} is not watched")
            w = stack[-1]
        w.close()

    def _forget(self, w: Watch) -> None:
        with self._lock:
            stack = self._watches.get(w.what)
            if stack and w in stack:
                stack.remove(w)
                if not stack:
                    del self._watches[w.what]

    def watched(self) -> dict[str, int]:
        """Open watches by what they watch (e.g. {"positions": 1, "pnl DU123": 2})."""
        with self._lock:
            return {what: len(ws) for what, ws in self._watches.items()}

    # --- feed specs -------------------------------------------------------------------------------
    def _portfolio_account(self) -> str | None:
        if self.account:
            return self.account
        accounts = self.session.status.accounts
        return accounts[0] if accounts else None

    def _positions_specs(self):
        specs = [(("positions",), lambda: _PositionsFeed(self, ("positions",), "positions"))]
        with self._lock:
            existing = self._feeds.get(("updates",))
        account = existing.account if existing is not None else self._portfolio_account()
        if account:
            specs.append((("updates",), lambda: _UpdatesFeed(self, ("updates",), account)))
        return specs

    @staticmethod
    def _tags_text(tags: str | Iterable[str] | None) -> str:
        if tags is None:
            return DEFAULT_SUMMARY_TAGS
        items = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags)]
        items = [t for t in items if t]
        if not items:
            raise ValueError("tags: expected at least one account summary tag, e.g. 'NetLiquidation'")
        return ",".join(items)

    def _summary_specs(self, tags, group: str):
        text = self._tags_text(tags)
        key = ("summary", group, text)
        return [(key, lambda: _SummaryFeed(self, key, group, text))]

    def _accounts(self, account: str | None) -> list[str]:
        if account:
            return [account]
        accounts = list(self.session.status.accounts)
        if not accounts:
            raise IBError(NOT_CONNECTED, "Not connected: no account list yet", "account values")
        return accounts

    def _values_specs(self, account: str | None):
        return [(("values", a), (lambda a=a: _ValuesFeed(self, ("values", a), a))) for a in self._accounts(account)]

    def _pnl_specs(self, account: str):
        if not account:
            raise ValueError("account: expected an account id such as 'DU1234567'")
        key = ("pnl", account)
        return [(key, lambda: _PnLFeed(self, key, account))]

    def _pnl_single_specs(self, account: str, con_id: int):
        if not account:
            raise ValueError("account: expected an account id such as 'DU1234567'")
        if not isinstance(con_id, (int, np.integer)) or con_id <= 0:
            raise ValueError(f"con_id: expected IB's positive contract id (conId), got {con_id!r}")
        key = ("pnl_single", account, int(con_id))
        return [(key, lambda: _PnLSingleFeed(self, key, account, int(con_id)))]

    def _executions_specs(self):
        return [(("executions",), lambda: _ExecutionsFeed(self, ("executions",)))]

    def _open_orders_specs(self):
        return [(("open_orders",), lambda: _OpenOrdersFeed(self, ("open_orders",), "open orders"))]

    # --- positions --------------------------------------------------------------------------------
    def positions(self, account: str | None = None, *, include_flat: bool = False,
                  timeout: float | None = None) -> pd.DataFrame:
        """Positions of every managed account (or of ``account``), one row per account and contract,
        sorted by account and symbol.

        Columns: account (text), symbol (canonical cell text, e.g. AAPL, EUR/USD, ESZ6.CME), con_id
        (int), sec_type (text), currency (the contract's), position (float; shares, contracts or
        units of the base currency; negative when short), avg_cost (float; IB's average cost per unit
        *including the multiplier and commissions*, in the contract's currency: an ES future bought at
        5000.25 shows about 250,013), market_price, market_value, unrealized_pnl, realized_pnl (floats
        in the contract's currency), weight (market value in the base currency / the account's
        NetLiquidation; NaN where either is unknown).

        position and avg_cost come from reqPositions; the rest, for the portfolio account, from its
        reqAccountUpdates (updatePortfolio). IB serves account updates for one account per client, so
        the other accounts' positions are filled from reqPnLSingle (value, unrealized and realized, in
        the base currency, converted to the contract's currency with the account's ExchangeRate from
        reqAccountUpdatesMulti; market_price = market value / (position x multiplier)) and weigh against
        that account's NetLiquidation. Those reads are cached when watched (``watch_pnl_single``,
        ``watch_account_values``), else one-shot requests. Flat positions (IB lists positions closed today
        with 0) are left out unless ``include_flat``. Raises IBError, RequestTimeout (see the module
        docstring).
        """
        multipliers: dict[int, float] = {}

        def collect(feeds):
            return self._positions_rows(feeds, account, include_flat, multipliers)
        df = self._read(self._positions_specs(), collect, timeout)
        return self._fill_other_accounts(df, multipliers, timeout)

    def _fill_other_accounts(self, df: pd.DataFrame, multipliers: dict[int, float],
                             timeout: float | None) -> pd.DataFrame:
        """Positions without updatePortfolio figures (accounts other than the portfolio account): market
        value, price, P&L and weight from reqPnLSingle and the account's values (see positions())."""
        missing = df[df["market_value"].isna() & (df["position"] != 0)]
        if missing.empty:
            return df
        values: dict[str, tuple[str, float, dict[str, float]]] = {}
        for acct in missing["account"].unique():
            vals = self.account_values(acct, timeout=timeout)
            nlv = vals[(vals["key"] == "NetLiquidation") & ~vals["currency"].isin(["", "BASE"])]
            base = str(nlv["currency"].iloc[0]) if len(nlv) else ""
            rates = {str(c): _num(v) for c, k, v in zip(vals["currency"], vals["key"], vals["value"])
                     if k == "ExchangeRate" and c not in ("", "BASE")}
            rates[base] = 1.0
            values[acct] = (base, _num(nlv["value"].iloc[0]) if len(nlv) else NAN, rates)
        for i, row in missing.iterrows():
            try:
                single = self.pnl_single(row["account"], int(row["con_id"]), timeout=timeout).iloc[0]
            except (IBError, RequestTimeout) as exc:
                log.warning("positions: no reqPnLSingle for %s %s: %s", row["account"], row["symbol"], exc)
                continue
            _, nlv, rates = values[row["account"]]
            rate = rates.get(row["currency"], NAN)
            value = single["value"] / rate
            mult = multipliers.get(int(row["con_id"]), 1.0)
            df.loc[i, ["market_price", "market_value", "unrealized_pnl", "realized_pnl", "weight"]] = [
                value / (row["position"] * mult), value, single["unrealized"] / rate, single["realized"] / rate,
                single["value"] / nlv if nlv else NAN]
        return df

    def _positions_rows(self, feeds: list[_Feed], account: str | None, include_flat: bool,
                        multipliers: dict[int, float] | None = None):
        pos_feed = _as(_PositionsFeed, feeds[0])
        upd = _as(_UpdatesFeed, feeds[1]) if len(feeds) > 1 else None
        base, nlv = upd.base_currency_and_nlv() if upd is not None else ("", NAN)
        rows = []
        for (acct, con_id), (_, contract, symbol, qty, avg_cost) in pos_feed.live.items():
            if account and acct != account:
                continue
            if not include_flat and qty == 0:
                continue
            price = value = unrealized = realized = weight = NAN
            if upd is not None and acct == upd.account:
                p = upd.live["portfolio"].get(con_id)
                if p is not None:
                    _, price, value, _, unrealized, realized = p
                    rate = upd.rate(contract.currency, base)
                    if nlv and not math.isnan(nlv):
                        weight = value * rate / nlv
            if multipliers is not None:
                multipliers[con_id] = _num(contract.multiplier) if _num(contract.multiplier) > 0 else 1.0
            rows.append((acct, symbol, con_id, contract.secType, contract.currency, qty,
                         avg_cost, price, value, unrealized, realized, weight))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return lambda: _frame(rows, POSITION_COLUMNS)

    def watch_positions(self) -> Watch:
        """Keep positions() live (reqPositions + reqAccountUpdates of the portfolio account) until the
        returned Watch is closed. Raises IBError 504 when the session is disconnected."""
        return self._watch("positions", self._positions_specs())


    def unwatch_positions(self) -> None:
        """Close the most recent positions watch. Raises ValueError when none is open."""
        self._unwatch("positions")

    # --- account summary --------------------------------------------------------------------------
    def account_summary(self, tags: str | Iterable[str] | None = None, *, group: str = "All",
                        timeout: float | None = None) -> pd.DataFrame:
        """reqAccountSummary for ``group`` (default "All": every managed account) and ``tags`` (comma
        separated text or a list; default every AccountSummaryTags tag; $LEDGER, $LEDGER:ALL and
        $LEDGER:EUR work as at IB).

        Columns: account, tag, value (float where IB's text is a number, else the text, e.g.
        AccountType "INDIVIDUAL"), currency (text; "" for unitless tags such as Cushion, "BASE" for
        $LEDGER base rows). Amounts are in ``currency``. Rows in IB's order. Raises IBError (322: more
        than two summary subscriptions at once), RequestTimeout.
        """
        return self._read(self._summary_specs(tags, group),
                          lambda feeds: _later(list(_as(_SummaryFeed, feeds[0]).live.values()), SUMMARY_COLUMNS),
                          timeout)

    def watch_account_summary(self, tags: str | Iterable[str] | None = None, *, group: str = "All") -> Watch:
        """Keep account_summary(tags) live until the Watch is closed; watches with the same tags share
        one subscription."""
        return self._watch(f"account_summary {self._tags_text(tags)} {group}", self._summary_specs(tags, group))


    # --- account values ---------------------------------------------------------------------------
    def account_values(self, account: str | None = None, *, timeout: float | None = None) -> pd.DataFrame:
        """Every account value of ``account`` (default: every managed account) from
        reqAccountUpdatesMulti, as reqAccountUpdates would give it (NetLiquidation, TotalCashValue,
        CashBalance per currency, ExchangeRate, BuyingPower, margins...).

        Columns: account, key, value (float where numeric, else text), currency (text; "BASE" for the
        base-currency totals, "" for unitless keys). Rows in IB's order, by account. Raises IBError
        (321: unknown account), RequestTimeout.
        """
        return self._read(self._values_specs(account),
                          lambda feeds: _later([r for f in feeds for r in _as(_ValuesFeed, f).live.values()],
                                               VALUE_COLUMNS), timeout)

    def watch_account_values(self, account: str | None = None) -> Watch:
        return self._watch(f"account_values {account or '*'}", self._values_specs(account))


    # --- P&L --------------------------------------------------------------------------------------
    def pnl(self, account: str, *, timeout: float | None = None) -> pd.DataFrame:
        """reqPnL: one row indexed by account; columns daily, unrealized, realized (floats in the
        account's base currency, net of commissions; NaN where IB sends 'unset'). IB sends an update
        about once a second while watched. Raises IBError (321: unknown account), RequestTimeout."""
        def collect(feeds):
            return _later([feeds[0].row], PNL_COLUMNS, pd.Index([account], name="account"))
        return self._read(self._pnl_specs(account), collect, timeout)

    def watch_pnl(self, account: str) -> Watch:
        return self._watch(f"pnl {account}", self._pnl_specs(account))


    def pnl_single(self, account: str, con_id: int, *, timeout: float | None = None) -> pd.DataFrame:
        """reqPnLSingle: one row indexed by con_id; columns position (float), daily, unrealized,
        realized, value (floats in the account's base currency; NaN where IB sends 'unset').
        Raises ValueError for a non-positive con_id, IBError, RequestTimeout."""
        def collect(feeds):
            return _later([feeds[0].row], PNL_SINGLE_COLUMNS, pd.Index([int(con_id)], name="con_id"))
        return self._read(self._pnl_single_specs(account, con_id), collect, timeout)

    def watch_pnl_single(self, account: str, con_id: int) -> Watch:
        return self._watch(f"pnl_single {account} {con_id}", self._pnl_single_specs(account, con_id))


    # --- executions -------------------------------------------------------------------------------
    def executions(self, *, account: str | None = None, symbol: str | None = None,
                   sec_type: str | None = None, side: str | None = None,
                   since: datetime | str | None = None, client_id: int | None = None,
                   exchange: str | None = None, timeout: float | None = None) -> pd.DataFrame:
        """Today's executions (IB keeps them since midnight, the paper gateway since it started),
        filtered as IB's ExecutionFilter does: ``account``, ``symbol`` (IB's symbol, e.g. "AAPL"),
        ``sec_type``, ``side`` (BUY/BOT or SELL/SLD), ``since`` (aware datetime, naive = UTC, or IB's
        'yyyymmdd-hh:mm:ss' UTC text; at or after), ``client_id``, ``exchange``.

        Columns: exec_id, time (datetime64 UTC), account, symbol (canonical cell text), con_id, side
        (IB's BOT/SLD), shares (float), price (float, contract currency per unit), order_id, perm_id,
        client_id (int), order_ref (text), commission (float), commission_currency (text) and
        realized_pnl (float, net of commissions; NaN for opening fills, where IB sends 'unset'), the
        last three joined by execId from commissionAndFeesReport (NaN / "" until it arrives), exchange
        (the venue that filled it, e.g. NASDAQ, IDEALPRO, CME). Sorted by time. Corrections (same execId up
        to the last period) replace the execution they correct.

        Unwatched: one reqExecutions with the filter. Watched: the cached table, with live fills
        (execDetails reqId -1, this client's orders) appended. Raises IBError, RequestTimeout.
        """
        match = _execution_matcher(account, symbol, sec_type, side, since, client_id, exchange)
        with self._lock:
            feed = self._feeds.get(("executions",))
            watched = feed is not None and feed.refs > 0
        if watched:
            return self._read(self._executions_specs(),
                              lambda feeds: self._executions_rows(
                                  [f for _, f in _as(_ExecutionsFeed, feeds[0]).fills.values() if match(f)]),
                              timeout)
        return self._executions_once(match, account, symbol, sec_type, side, since, client_id, exchange, timeout)

    def _executions_once(self, match, account, symbol, sec_type, side, since, client_id, exchange,
                         timeout) -> pd.DataFrame:
        timeout = self.session.request_timeout if timeout is None else timeout
        flt = ExecutionFilter()
        flt.acctCode, flt.symbol, flt.secType = account or "", symbol or "", sec_type or ""
        flt.side = {"BOT": "BUY", "SLD": "SELL"}.get((side or "").upper(), (side or "").upper())
        flt.time, flt.clientId, flt.exchange = _ib_filter_time(since), int(client_id or 0), exchange or ""
        fills: dict[str, tuple[str, _ExecutionRow]] = {}

        def on_event(request, name, args):
            if name == "execDetails":
                fill = _fill_of(args[1], args[2])
                base, suffix = _correction_key(fill.exec_id)
                if base not in fills or suffix >= fills[base][0]:
                    fills[base] = (suffix, fill)
            return False

        if self.session.status.state != "connected":
            raise IBError(NOT_CONNECTED, f"Not connected ({self.session.status.state})", "executions")
        req = self.session.submit(Request("executions", lambda c, rid: c.reqExecutions(rid, flt),
                                          end="execDetailsEnd", on_event=on_event, timeout=timeout))
        req.result(timeout + 1.0)
        with self._lock:   # commission reports arrive before execDetailsEnd, on the same thread
            build = self._executions_rows([f for _, f in fills.values() if match(f)])
        df = build()
        df.attrs["as_of"] = datetime.now(timezone.utc)
        df.attrs["live"] = False
        return df

    def _executions_rows(self, fills: list[_ExecutionRow]) -> Callable[[], pd.DataFrame]:
        rows = []
        for f in fills:
            commission, ccy, realized = self._commissions.get(f.exec_id, (NAN, "", NAN))
            rows.append((f.exec_id, f.time, f.account, f.symbol, f.contract.conId, f.side,
                         f.shares, f.price, f.order_id, f.perm_id, f.client_id, f.order_ref, commission, ccy,
                         realized, f.exchange))
        rows.sort(key=lambda r: (r[1] or datetime.min.replace(tzinfo=timezone.utc), r[0]))
        return lambda: _frame(rows, EXECUTION_COLUMNS)

    def watch_executions(self) -> Watch:
        """Load today's executions once and append live fills until the Watch is closed (re-loaded
        after a reconnect, so fills made while the connection was down appear too)."""
        return self._watch("executions", self._executions_specs())


    # --- open orders ------------------------------------------------------------------------------
    def open_orders(self, *, timeout: float | None = None) -> pd.DataFrame:
        """Working orders of every API client and TWS (reqAllOpenOrders), sorted by client_id and
        order_id. Filled and cancelled orders are left out; Inactive ones stay (they need attention).

        Columns: order_id, perm_id, client_id (int), account, symbol (canonical cell text), con_id,
        action (BUY/SELL), quantity (float, total), order_type (IB's, e.g. LMT), lmt_price and
        aux_price (float, NaN when unset), tif, status (IB's: PreSubmitted, Submitted, ...), filled
        and remaining (float), avg_fill_price (float, NaN before a fill), order_ref (text).

        Watched: kept live by the openOrder/orderStatus events IB pushes for this client's orders;
        other clients' orders as of the watch start or the last reconnect.
        """
        def collect(feeds):
            rows = sorted(feeds[0].live.values(), key=lambda r: (r["client_id"], r["order_id"], r["perm_id"]))
            return _later([[r[c] for c in OPEN_ORDER_COLUMNS] for r in rows], OPEN_ORDER_COLUMNS)
        return self._read(self._open_orders_specs(), collect, timeout)

    def watch_open_orders(self) -> Watch:
        return self._watch("open_orders", self._open_orders_specs())


    # --- cached reads (the order path) -----------------------------------------------------------
    # The watched tables' rows as they are now: no waiting, no DataFrame (a DataFrame read costs ~5 ms
    # in pandas, the order path's whole budget). Each returns None when nothing watches the table and
    # raises the IBError IB answered its subscription with; Watch.current tells whether it is settled.
    def cached_position(self, account: str, con_id: int) -> float | None:
        """The account's position in the contract from the watched reqPositions feed (shares, contracts
        or units; negative when short; 0.0 when IB lists none; NaN when IB sent none)."""
        return self._cached(("positions",), lambda f: (f.live[(account, con_id)][3]
                                                      if (account, con_id) in f.live else 0.0))

    def cached_open_orders(self) -> list[dict] | None:
        """The watched open orders (reqAllOpenOrders, then this client's order events): the rows
        open_orders() is built from, dicts keyed by its column names (order_id, perm_id, client_id,
        account, con_id, action, status, remaining, ...). Shared with the feed: read, do not change."""
        return self._cached(("open_orders",), lambda f: list(f.live.values()))

    def cached_daily_pnl(self, account: str) -> float | None:
        """The watched reqPnL's daily P&L of the account (base currency; NaN when IB sent 'unset')."""
        return self._cached(("pnl", account), lambda f: f.row[0])

    def cached_account_values(self, account: str) -> dict[tuple[str, str], Any] | None:
        """The watched reqAccountUpdatesMulti values of the account: {(key, currency): value}."""
        return self._cached(("values", account), lambda f: {(k, ccy): v for (_, k, v, ccy) in f.live.values()})

    def _cached(self, key: tuple, read: Callable[[Any], Any]) -> Any:
        with self._lock:
            feed = self._feeds.get(key)
            if feed is None:
                return None
            if feed.error is not None:
                raise feed.error
            return read(feed)

    def _current(self, keys: list[tuple], since: datetime | None) -> bool:
        """See Watch.current."""
        with self._lock:
            for key in keys:
                feed = self._feeds.get(key)
                if feed is None or feed.error is not None:
                    continue
                if not feed.ready or getattr(feed, "staging", None) is not None:
                    return False
                if since is not None and (feed.as_of is None or feed.as_of < since):
                    return False
        return True

    # --- listeners (ibapi's message thread) -------------------------------------------------------
    def _feed(self, key: tuple, kind: type[_F]) -> _F | None:
        """The feed under ``key`` (a ``kind``: each key has one feed class), or None."""
        feed = self._feeds.get(key)
        return None if feed is None else _as(kind, feed)

    def _on_position(self, account, contract, pos, avg_cost) -> None:
        with self._lock:
            feed = self._feed(("positions",), _PositionsFeed)
        if feed is not None:
            contract = _holding(contract)
            symbol = format_symbol(contract)      # before taking the lock: the formatter parses
            self._apply("positions", lambda: feed.on_position(account, contract, symbol, pos, avg_cost))

    def _on_position_end(self) -> None:
        with self._lock:
            feed = self._feed(("positions",), _PositionsFeed)
        if feed is not None:
            self._apply("positions", feed.end)

    def _on_account_value(self, key, value, currency, account) -> None:
        with self._lock:
            feed = self._feed(("updates",), _UpdatesFeed)
        if feed is not None:
            self._apply("portfolio", lambda: feed.on_value(key, value, currency, account))

    def _on_portfolio(self, contract, pos, price, value, avg_cost, unrealized, realized, account) -> None:
        with self._lock:
            feed = self._feed(("updates",), _UpdatesFeed)
        if feed is not None:
            self._apply("portfolio", lambda: feed.on_portfolio(contract, pos, price, value, avg_cost,
                                                               unrealized, realized, account))

    def _on_account_time(self, stamp) -> None:
        with self._lock:
            feed = self._feed(("updates",), _UpdatesFeed)
            if feed is not None:
                feed.update_time = stamp

    def _on_download_end(self, account) -> None:
        with self._lock:
            feed = self._feed(("updates",), _UpdatesFeed)
        if feed is not None and account == feed.account:
            self._apply("portfolio", feed.end)

    def _on_exec_details(self, req_id, contract, execution) -> None:
        # Only answers to no registered request reach here: live fills carry reqId -1.
        with self._lock:
            feed = self._feed(("executions",), _ExecutionsFeed)
        if feed is not None:
            fill = _fill_of(contract, execution)
            self._apply("executions", lambda: feed.add(fill))

    def _on_commission(self, report) -> None:
        amount = getattr(report, "commissionAndFees", None)
        if amount is None:
            amount = getattr(report, "commission", NAN)
        row = (_num(amount), report.currency or "", _num(report.realizedPNL))

        def store():
            self._commissions[report.execId] = row
            if len(self._commissions) > MAX_COMMISSIONS:      # oldest first: dicts keep insertion order
                for exec_id in list(itertools.islice(self._commissions, len(self._commissions) // 10)):
                    del self._commissions[exec_id]
        self._apply("executions", store)

    def _on_open_order(self, order_id, contract, order, state) -> None:
        with self._lock:
            feed = self._feed(("open_orders",), _OpenOrdersFeed)
        if feed is not None:
            symbol = format_symbol(contract)
            self._apply("open_orders", lambda: feed.on_open_order(order_id, contract, symbol, order, state))

    def _on_order_status(self, *args) -> None:
        with self._lock:
            feed = self._feed(("open_orders",), _OpenOrdersFeed)
        if feed is not None:
            self._apply("open_orders", lambda: feed.on_status(*args))

    def _on_open_order_end(self) -> None:
        with self._lock:
            feed = self._feed(("open_orders",), _OpenOrdersFeed)
        if feed is not None:
            self._apply("open_orders", feed.end)

    def _on_error(self, req_id, code, text, advanced="") -> None:
        # reqAccountUpdates has no reqId: IB reports an unknown account with 321 and reqId -1.
        if code != VALIDATION_ERROR or "account" not in (text or "").lower():
            return
        with self._lock:
            feed = self._feed(("updates",), _UpdatesFeed)
        if feed is not None and not feed.ready and feed.account in text:
            err = IBError(code, text, feed.description, req_id)
            self._apply("portfolio", lambda: setattr(feed, "error", err))

    def _restore(self) -> None:
        """Restore hook: re-send the listener-based subscriptions (the session re-sends the others)."""
        with self._lock:
            feeds = [f for f in self._feeds.values() if not isinstance(f, _RequestFeed)]
            for f in feeds:
                try:
                    f.restore()
                except Exception:
                    log.exception("restoring %s failed", f.description)


def _execution_matcher(account, symbol, sec_type, side, since, client_id, exchange) -> Callable[[_ExecutionRow], bool]:
    """ExecutionFilter's semantics, applied to cached fills (and, defensively, to IB's answer)."""
    side_code = {"BUY": "BOT", "SELL": "SLD"}.get((side or "").upper(), (side or "").upper())
    if side_code not in ("", "BOT", "SLD"):
        raise ValueError(f"side: expected BUY, SELL, BOT or SLD, got {side!r}")
    since_t: datetime | None
    if isinstance(since, datetime):
        since_t = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    elif isinstance(since, str) and since.strip():
        since_t = parse_ib_time(since)
        if since_t is None:
            raise ValueError(f"since: expected a datetime or IB's 'yyyymmdd-hh:mm:ss' (UTC), got {since!r}")
    elif since is None or since == "":
        since_t = None
    else:
        raise ValueError(f"since: expected a datetime or IB's 'yyyymmdd-hh:mm:ss' (UTC), got {since!r}")

    def match(f: _ExecutionRow) -> bool:
        c = f.contract
        if account and f.account != account:
            return False
        if symbol and (c.symbol or "").upper() != symbol.upper():
            return False
        if sec_type and (c.secType or "").upper() != sec_type.upper():
            return False
        if side_code and f.side != side_code:
            return False
        if client_id and f.client_id != client_id:
            return False
        if exchange and exchange.upper() != (f.exchange or "").upper():
            return False
        if since_t is not None and f.time is not None and f.time < since_t:
            return False
        return True

    return match
