"""The paper gateway's broker: order engine and accounts, as plain Python objects.

No sockets, no clock of its own, no randomness: the server calls ``place``, ``cancel``,
``global_cancel``, ``on_market`` (expire GTD orders, re-evaluate working orders against the market's
current quotes), ``on_open`` (the opening auction) and ``on_close`` (the closing auction); each
returns the events to send, in the order a real gateway sends them. The broker is per gateway, not
per connection: orders, executions and positions survive client disconnects, and a client that
reconnects with the same clientId sees its working orders again.

Order types and TIFs are the sheet's (``addin/protocol/orders.py``; a contract's orderTypes list is
checked with the vocabulary's tokens): MKT, LMT, STP, STP LMT, TRAIL (auxPrice = trailing amount, or
trailingPercent; trailStopPrice = initial stop when given), TRAIL LIMIT (as TRAIL; lmtPriceOffset = the
limit's distance beyond the stop), MIT and LIT (auxPrice = trigger), REL (auxPrice = peg offset, lmtPrice =
optional cap), MIDPRICE (lmtPrice = optional cap), MOC and LOC (filled by ``on_close(con_id)``).
Time in force: DAY, GTC, IOC, FOK, OPG (MKT/LMT only, filled by ``on_open(con_id)``), GTD (goodTillDate),
DTC ("" means DAY). Brackets (parentId, transmit), OCA groups
(ocaType 1 cancel the others on a fill; 2 and 3 reduce the others by the filled quantity, the
"block" of type 2 has no meaning when fills are sequential), whatIf (margin and commission in the
OrderState, never executed, never left open), orderRef echoed everywhere, outsideRth accepted.

Order conditions (``conditions.py``: price, time, margin, execution, volume, percent change, joined by
their and/or conjunctions): an order whose conditions are not met when it would go live is held
"PreSubmitted" and goes live (Submitted, then trades) at the first ``on_market`` that finds them met;
with conditionsCancelOrder it works at once and is cancelled (202 "order conditions met") once they
are met. OPEN_ORDER echoes the conditions as received. A condition added by modifying an order that is
already live is kept and echoed but does not take it back out of the market.

OCA late joiners: an order going live in an OCA group (same account and name) in which another order
already filled is cancelled at once for ocaType 1 (202 "OCA group G already filled"); for types 2
and 3 it is reduced by the group's filled quantity (cancelled when nothing is left). IB documents no
text for this cancel: the reason is ours.

How orders fill (documented simplifications):
- At the touch: a buy at the ask, a sell at the bid; instruments without bid/ask (has_quotes False) use
  the last trade. A limit fills when the touch crosses it, at the touch (so never worse than the limit).
- The whole remaining quantity fills at once at the touch: no partial fills against the displayed
  size, no queue position, no slippage. IOC and FOK apply the same rule: what can fill at the moment
  the order goes live fills in full, otherwise the order is cancelled (so IOC behaves like FOK).
- Stops trigger when the last trade touches the stop (buy: last >= stop, sell: last <= stop); FX has
  no last, so a buy stop watches the ask and a sell stop the bid. A triggered STP is a market order,
  a triggered STP LMT a limit order. TRAIL and TRAIL LIMIT track the best trigger price since they went
  live (the stop only ratchets in the order's favour, rounded to the tick grid) and trigger like a stop;
  an elected TRAIL LIMIT is a limit at stop + lmtPriceOffset (buy) / stop - lmtPriceOffset (sell), and
  OPEN_ORDER shows that limit in lmtPrice while it trails.
- MIT and LIT trigger the other way round (buy: price <= trigger, sell: price >= trigger), watching the
  same price as stops; then MIT is a market order, LIT a limit at lmtPrice.
- REL pegs a buy to the bid + auxPrice (a sell to the ask - auxPrice), capped by lmtPrice, re-pegged at
  every evaluation, and fills at the touch when the touch crosses its peg. The paper market's spread
  never narrows, so an offset smaller than the spread rests (IB's REL fills passively from other
  traders' orders, which the paper market does not have).
- MIDPRICE fills at once at the bid/ask midpoint, put on the tick grid towards the far side (a buy
  rounds up, a sell down: never better than the true midpoint), when that is within the optional
  lmtPrice cap; otherwise it rests and is re-evaluated. Without both bid and ask it rests.
- MOC fills at the auction price (the instrument's mark when ``on_close`` runs: last, else mid); LOC
  fills there if the limit allows, otherwise it is cancelled. OPG orders wait for ``on_open`` and do the
  same at the opening auction (MKT fills, LMT fills if its limit allows, else cancelled). The server
  runs both auctions for stocks and futures only (AUCTION_SEC_TYPES); FX and crypto trade around the
  clock, and OPG for them is rejected. DTC behaves as DAY.
- Trading hours (only with a ``calendar``, the exchange-hours market; without one the market trades
  around the clock, DAY orders never expire and outsideRth changes nothing): nothing fills while the
  instrument is outside its session (``sessions.py``: stocks 09:30-16:00 New York, no pre/post-market;
  ES around the clock but 16:00-17:00 Chicago; FX and crypto always). An order without outsideRth
  that would go live outside the session (DAY, DTC, GTC, GTD; auction and IOC/FOK orders excepted) is
  held "PreSubmitted" and goes live (Submitted, then trades) at the first ``on_market`` inside it, as
  TWS holds it; with outsideRth it is Submitted at once and trades once the model does. DAY/DTC orders
  not filled by their trading day's close (the first close after placement: an order placed after
  the close is for the next day) are cancelled by ``on_market`` (202 "DAY order expired at the close of
  the trading day": IB documents no text for the API, the reason is ours); GTC stays.
- GTD: goodTillDate 'yyyyMMdd HH:mm:ss [zone]' (no zone = UTC, the gateway's zone) or 'yyyyMMdd-HH:mm:ss'
  (UTC); a working GTD order is cancelled (202, "good till date ... reached") by the first ``on_market``
  at or after that instant of the gateway's clock.
- Statuses: a live order is "Submitted" (IB shows "PreSubmitted" for some simulated stops; clients treat
  both as working); an order held with transmit=False, a bracket child whose parent has not filled,
  an order waiting for its conditions and one waiting for its session are "PreSubmitted". Nothing of
  a bracket goes live before an order of it arrives with transmit=True; a child goes live when its
  parent fills; when one child fills its siblings are cancelled.
- Every cancellation (cancelOrder, reqGlobalCancel, IOC/FOK leftovers, OCA and bracket siblings, OCA
  late joiners, conditionsCancelOrder, children of a cancelled parent, LOC not filled) sends
  ORDER_STATUS Cancelled, OPEN_ORDER Cancelled and error 202 "Order Canceled - reason:" (with a short
  reason appended for the automatic ones).
- Validation (201 unless said): first the bounds of every number (``order_values.py``: a finite
  quantity above 0 and below 1e9 with at most 8 decimals; prices and condition values finite, not
  negative, below 1e9), checked without arithmetic so that 1E+999999, 1E+5000, 1e308, NaN or Infinity
  cost nothing and are never stored; BUY/SELL; conditions the gateway can evaluate (known conId,
  readable time); one of our order types and listed in the
  contract details' orderTypes (else 387); DAY/GTC/IOC/OPG/GTD listed there too when the list names any
  TIF (IB's lists never name FOK or DTC, so those are always accepted); MOC/LOC only DAY (113); OPG only
  for MKT/LMT (111) and only for stocks/futures; GTD with a readable goodTillDate in the future; the
  prices the type needs, on the tick grid (110); a known parent, a known account, at most 20 active
  orders per contract, side and account; indices are not tradable.
- Modify (placeOrder with a working order's id): prices, quantity, type and TIF of a working, held or
  PreSubmitted order (bracket children included) are replaced; the contract or the side may not change
  (105); the quantity may not go below the filled quantity (201). A filled order gets 104 "Can't modify a
  filled order."; a cancelled one 10148 "OrderId n that needs to be modified cannot be modified, state:
  Cancelled." (IB documents no code for this case: the code and wording are those of IB's refusal to
  cancel a finished order). An id that was rejected is used all the same: 103. Placing a held
  (transmit=False) order again with transmit=True sends that same order (same permId) live.
- filledQuantity is set on every OPEN_ORDER / COMPLETED_ORDER (0 until a fill): ibapi reads an empty
  field as UNSET_DECIMAL (1.7e38).
- Pre-trade check at placement only: an order that raises the initial margin above the equity with
  loan value is rejected with IB's 201 text; a resting order that fills later is not re-checked.
- Execution times are written "yyyymmdd hh:mm:ss UTC" (ibapi keeps the text; ib_async parses it with the
  zone name, as it does TWS's "... US/Eastern"). reqExecutions returns the executions of every client
  (filter on ExecutionFilter.clientId to narrow it), since the gateway started.
- Error texts are IB's for 103, 104, 105, 110, 111, 113, 161, 202, 387 and 10147; the margin rejection
  follows IB's wording; 10148 for a modify of a cancelled order and the reasons of the other 201
  rejections (among them OPG on FX/crypto and a bad goodTillDate) are ours, written in IB's style.

Listed options (``option_instruments.py``, docs/paper-market.md "Option orders, positions and expiry"):
an OptionInstrument quotes itself from its underlying (bid/ask from the model, no trades), trades in its
underlying's sessions until its last trade time and is refused after it; at the first ``on_market`` past
that time its working orders are cancelled and its positions settled (in the money: exercised or
assigned into multiplier x contracts shares at the strike; otherwise worthless), with no execution,
recorded in ``Broker.expirations``.

Commissions: see ``commissions.py``. Cash, positions, average cost, P&L and margin: see ``accounts.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from ibapi.commission_and_fees_report import CommissionAndFeesReport
from ibapi.contract import Contract
from ibapi.execution import Execution, ExecutionFilter
from ibapi.order import Order
from ibapi.order_state import OrderState

from ...protocol import errors
from ...protocol import orders as vocabulary
from ...protocol.times import UTC, IBTimeError, UnknownZoneError, format_zoned, parse_time, read_time, without_zone
from ...protocol.unset import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_DOUBLE_TEXT
from . import accounts as acc
from .commissions import COMMISSION_CURRENCY, commission
from .conditions import conditions_met, conditions_problem
from .market import on_tick_grid as _market_on_tick_grid
from .option_instruments import OptionInstrument, in_the_money
from .order_values import order_value_problem

if TYPE_CHECKING:  # pragma: no cover
    from .market import Instrument, Quote
    from .sessions import SessionCalendar

# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenOrderEvent:
    client_id: int
    order_id: int
    contract: Contract
    order: Order
    state: OrderState


@dataclass(frozen=True)
class OrderStatusEvent:
    client_id: int
    order_id: int
    status: str
    filled: Decimal
    remaining: Decimal
    avg_fill_price: float
    perm_id: int
    parent_id: int
    last_fill_price: float
    why_held: str = ""
    mkt_cap_price: float = 0.0


@dataclass(frozen=True)
class ExecutionEvent:
    """A live fill: the server sends it as EXECUTION_DATA with reqId -1."""

    client_id: int
    order_id: int
    contract: Contract
    execution: Execution


@dataclass(frozen=True)
class CommissionEvent:
    client_id: int
    report: CommissionAndFeesReport


@dataclass(frozen=True)
class ErrorEvent:
    client_id: int
    req_id: int
    code: int
    text: str


@dataclass(frozen=True)
class AccountChanged:
    """Cash or positions of ``account`` changed (a fill of ``con_id``): refresh its subscriptions."""

    account: str
    con_id: int


@dataclass(frozen=True)
class Expiration:
    """One option position settled at its expiry (no execution is sent: IB reports none either).
    ``contracts`` signed (+ long); ``underlying_price`` the underlying's mark at the last trade time;
    ``shares`` the stock delivered (signed, + received; 0 when it expired worthless)."""

    account: str
    con_id: int
    local_symbol: str
    contracts: Decimal
    underlying_price: float
    exercised: bool
    shares: Decimal
    strike: float


Event = OpenOrderEvent | OrderStatusEvent | ExecutionEvent | CommissionEvent | ErrorEvent | AccountChanged

# --- vocabulary ---------------------------------------------------------------------------------------

PRE_SUBMITTED, SUBMITTED, FILLED, CANCELLED = "PreSubmitted", "Submitted", "Filled", "Cancelled"
DONE = (FILLED, CANCELLED)

# The order types and TIFs come from the sheet's one table (addin/protocol/orders.py); the sets below
# only group them by how the engine treats them.
ORDER_TYPE_TOKENS = {t.code: t.token for t in vocabulary.ORDER_TYPES}   # our type -> contract details token
ORDER_TYPE_ALIASES = dict(vocabulary.ORDER_TYPE_ALIASES)
TIFS = vocabulary.TIF_CODES
OPG_TYPES = vocabulary.OPG_TYPES
TRAIL_TYPES = tuple(t.code for t in vocabulary.ORDER_TYPES if t.trail)      # TRAIL, TRAIL LIMIT
STOP_TYPES = ("STP", "STP LMT") + TRAIL_TYPES   # elected when the price rises to (buy) / falls to (sell) the stop
TOUCH_TYPES = ("MIT", "LIT")                    # elected the other way round: buy at or below the trigger
LIMIT_TYPES = tuple(t.code for t in vocabulary.ORDER_TYPES              # need lmtPrice
                    if t.need("LimitPrice") == vocabulary.REQUIRED)
AUX_TYPES = tuple(t.code for t in vocabulary.ORDER_TYPES                # need auxPrice (stop or trigger)
                  if t.need("StopPrice") == vocabulary.REQUIRED and not t.trail)
AUCTION_TYPES = ("MOC", "LOC")                  # the closing auction
AUCTION_SEC_TYPES = ("STK", "FUT")              # instruments the replay runs opening/closing auctions for
IMMEDIATE_TIFS = ("IOC", "FOK")
DAY_TIFS = ("DAY", "DTC")                       # end at the close (with exchange hours)
# TIFs checked against the contract details' list when it names any of them. IB's lists never name FOK
# or DTC (both accepted for stocks), so those two are not checked.
LISTED_TIFS = ("DAY", "GTC", "IOC", "OPG", "GTD")
MAX_ACTIVE_PER_SIDE = 20
NOT_TRADABLE = ("IND",)                       # indices have quotes, not orders
UNSET_REALIZED = UNSET_DOUBLE                 # commission report: "no realized P&L" (opening fill)
EXEC_ID_PREFIX = "0000e0d5"                   # IB's execIds look like 0000e0d5.6577a7c1.01.01
LIQUIDITY_ADDED, LIQUIDITY_REMOVED = 1, 2

TEXT_103 = "Duplicate order id"
TEXT_104 = "Can't modify a filled order."
TEXT_105 = "Order being modified does not match original order."
TEXT_110 = "The price does not conform to the minimum price variation for this contract."
TEXT_201 = "Order rejected - reason:"
TEXT_111 = "The time in force (tif type) and the order type are incompatible."
TEXT_113 = "The Tif option should be set to DAY for MOC and LOC orders."
TEXT_202 = "Order Canceled - reason:"
TEXT_387 = "Unsupported order type for this exchange and security type."


class Rejected(Exception):
    """A placement that fails validation: IB's error code and text."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


def _reject(reason: str) -> Rejected:
    return Rejected(errors.ORDER_REJECTED, TEXT_201 + reason)


# --- numbers -----------------------------------------------------------------------------------------


def _price(v) -> float | None:
    """A price field of an Order: None when unset (None, UNSET_DOUBLE, NaN, infinite)."""
    if v is None or v == UNSET_DOUBLE:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _limit_price(order: Order) -> float:
    """lmtPrice of a limit-type order (LIMIT_TYPES): validation rejects one without it."""
    lmt = _price(order.lmtPrice)
    assert lmt is not None, "a limit-type order without lmtPrice passed validation"
    return lmt


def _limit_allows(price: float, limit: float, buy: bool) -> bool:
    """A buy fills at or below its limit, a sell at or above."""
    return price <= limit if buy else price >= limit


def _trail_limit(w: "_Order", stop: float) -> float:
    """A TRAIL LIMIT's limit: lmtPriceOffset beyond its stop (buy: above, sell: below), on the grid."""
    offset = _price(w.order.lmtPriceOffset) or 0.0
    return round_to_tick(stop + offset if w.buy else stop - offset, w.inst.min_tick)


def _quoted(v) -> float | None:
    """A quote value: None when missing (None, NaN, non-positive)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) and v > 0 else None


def _quantity(v) -> Decimal:
    """totalQuantity as Decimal; unset or unreadable -> 0. Only for orders whose values passed
    ``order_value_problem`` (finite, bounded), so the arithmetic on it is cheap."""
    if v is None or v == UNSET_DECIMAL:
        return Decimal(0)
    try:
        return v if isinstance(v, Decimal) else Decimal(str(v))
    except InvalidOperation:
        return Decimal(0)


def _tick(min_tick) -> Decimal | None:
    try:
        t = Decimal(str(min_tick))
    except (InvalidOperation, TypeError):
        return None
    return t if t > 0 else None


def on_tick_grid(price: float, min_tick: float) -> bool:
    """True when ``price`` is a whole number of ticks, by the market model's definition (tolerant to
    float representation only); no tick known (0 or unset) = any price."""
    return _tick(min_tick) is None or _market_on_tick_grid(price, min_tick)


def round_to_tick(price: float, min_tick: float, rounding: str = "ROUND_HALF_EVEN") -> float:
    """``price`` rounded to a whole multiple of ``min_tick`` with Decimal rounding mode ``rounding``
    (the market model's round_to_tick only rounds to nearest; trailing stops need floor/ceiling)."""
    tick = _tick(min_tick)
    if tick is None:
        return price
    steps = (Decimal(str(price)) / tick).to_integral_value(rounding=rounding)
    return float(steps * tick)


# --- quotes ------------------------------------------------------------------------------------------


def touch_price(inst: "Instrument", q: "Quote", buy: bool) -> float | None:
    """Where a marketable order of this side trades now: ask for a buy, bid for a sell; the last trade
    for instruments without bid/ask (or while a side is missing)."""
    if getattr(inst, "has_quotes", True):
        side = _quoted(q.ask if buy else q.bid)
        if side is not None:
            return side
    return _quoted(q.last)


def trigger_price(inst: "Instrument", q: "Quote", buy: bool) -> float | None:
    """What a stop watches: the last trade; for FX (no trades) the ask for a buy, the bid for a sell."""
    if getattr(inst, "has_trades", True):
        last = _quoted(q.last)
        if last is not None:
            return last
    return _quoted(q.ask if buy else q.bid)


def mark_price(inst: "Instrument", q: "Quote") -> float | None:
    """Mark-to-market price: last trade, else the bid/ask midpoint, else whatever side exists."""
    last = _quoted(q.last) if getattr(inst, "has_trades", True) else None
    if last is not None:
        return last
    bid, ask = _quoted(q.bid), _quoted(q.ask)
    if bid is not None and ask is not None:
        return (bid + ask) / 2.0
    return _quoted(q.last) or bid or ask


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def ib_time(t: datetime) -> str:
    """IB's execution/completed time text: 'yyyymmdd hh:mm:ss UTC' (a naive ``t`` is UTC)."""
    return format_zoned(t, "UTC")


def parse_filter_time(text: str) -> datetime | None:
    """ExecutionFilter.time: 'yyyymmdd-hh:mm[:ss]' (UTC), 'yyyymmdd hh:mm[:ss]' (UTC, the gateway's
    zone) or 'yyyymmdd hh:mm:ss Zone/Name'. Empty or unreadable -> None (no time filter). A zone name
    IB would not resolve is read as UTC rather than refusing the request."""
    try:
        t = read_time(text)
    except IBTimeError:
        return None
    try:
        return t.instant(UTC)
    except UnknownZoneError:
        return without_zone(t).instant(UTC)
    except IBTimeError:
        return None


# --- orders ------------------------------------------------------------------------------------------


@dataclass
class _Order:
    """One order at the broker. ``order`` is the broker's own copy (ids, permId and account filled in)."""

    client_id: int
    order_id: int
    perm_id: int
    inst: "Instrument"
    contract: Contract            # what OPEN_ORDER shows: the resolved contract, exchange as routed
    order: Order
    account: str
    status: str = "PendingSubmit"
    announced: bool = False       # OPEN_ORDER + ORDER_STATUS sent at least once
    transmitted: bool = False
    live: bool = False            # working at the market (evaluated against quotes)
    filled: Decimal = Decimal(0)
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False       # stop or trigger elected
    trail_stop: float | None = None
    expires: datetime | None = None   # GTD: cancelled once the clock reaches it (UTC)
    fills_before: int = 0              # executions the gateway had made before this order arrived
    oca_prior_fill: Decimal = Decimal(0)   # its OCA group's filled quantity when it arrived (late joiner)
    conditions_hold: bool = False      # transmitted, PreSubmitted until its conditions are met
    session_hold: bool = False         # transmitted outside regular hours: PreSubmitted until the open
    day_end: datetime | None = None    # DAY/DTC with exchange hours: cancelled at this close (UTC)
    commission: float | None = None
    completed_time: str = ""
    completed_status: str = ""

    @property
    def key(self) -> tuple[int, int]:
        return self.client_id, self.order_id

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def order_type(self) -> str:
        return _order_type(self.order.orderType)

    @property
    def buy(self) -> bool:
        return self.order.action.upper() == "BUY"

    @property
    def tif(self) -> str:
        return (self.order.tif or "DAY").upper()

    @property
    def auction(self) -> str | None:
        """'open' (OPG), 'close' (MOC, LOC) or None: auction orders trade only in their auction."""
        if self.order_type in AUCTION_TYPES:
            return "close"
        return "open" if self.tif == "OPG" else None

    @property
    def quantity(self) -> Decimal:
        return _quantity(self.order.totalQuantity)

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.quantity - self.filled)

    @property
    def parent_id(self) -> int:
        return int(self.order.parentId or 0)

    @property
    def oca_group(self) -> str:
        return (self.order.ocaGroup or "").strip()

    @property
    def cancelled_by_conditions(self) -> bool:
        """Conditions that cancel this working order once met (conditionsCancelOrder)."""
        return bool(self.order.conditions) and bool(self.order.conditionsCancelOrder)


def _order_type(text: str) -> str:
    t = " ".join((text or "").upper().split())
    return ORDER_TYPE_ALIASES.get(t, t)


@dataclass(frozen=True)
class _Margins:
    """USD: initial margin, maintenance margin, equity with loan value."""

    init: float
    maint: float
    elv: float


@dataclass(frozen=True)
class _WhatIf:
    before: _Margins
    change: _Margins
    after: _Margins
    commission: float             # USD


@dataclass
class _Fill:
    client_id: int
    time: datetime
    contract: Contract
    execution: Execution
    report: CommissionAndFeesReport


class _Marks:
    """accounts.Marks over the market's quotes: marks per instrument and USD rates per currency from the
    FX pairs the broker has seen. Remembers the last good mark so a gap in the quotes does not zero a
    valuation."""

    def __init__(self, quote: Callable[["Instrument"], "Quote"], instruments: dict[int, "Instrument"]):
        self._quote = quote
        self._instruments = instruments
        self._last: dict[int, float] = {}

    def mark(self, inst: "Instrument") -> float | None:
        price = mark_price(inst, self._quote(inst))
        if price is None:
            return self._last.get(inst.con_id)
        self._last[inst.con_id] = price
        return price

    def rate(self, currency: str) -> float:
        return _rate(currency, self)

    def fx_pair(self, currency: str) -> tuple["Instrument", bool] | None:
        """A known FX pair that prices ``currency`` in USD: (instrument, inverted). EUR -> (EUR.USD,
        False); JPY -> (USD.JPY, True). None when the broker has seen no such pair."""
        for inst in self._instruments.values():
            c = inst.contract
            if c.secType == "CASH" and c.symbol == currency and c.currency == acc.BASE:
                return inst, False
            if c.secType == "CASH" and c.symbol == acc.BASE and c.currency == currency:
                return inst, True
        return None

    def frozen(self) -> "_FrozenMarks":
        """Marks that read each quote once: one consistent valuation even while the replay clock runs."""
        return _FrozenMarks(self)


class _FrozenMarks:
    def __init__(self, marks: _Marks):
        self._marks = marks
        self._prices: dict[int, float | None] = {}

    def mark(self, inst: "Instrument") -> float | None:
        if inst.con_id not in self._prices:
            self._prices[inst.con_id] = self._marks.mark(inst)
        return self._prices[inst.con_id]

    def rate(self, currency: str) -> float:
        return _rate(currency, self)

    def fx_pair(self, currency: str):
        return self._marks.fx_pair(currency)


def _rate(currency: str, marks) -> float:
    """USD per unit of ``currency`` from the mark of a known FX pair; 1.0 when there is none (documented)."""
    if not currency or currency == acc.BASE:
        return 1.0
    found = marks.fx_pair(currency)
    if found is None:
        return 1.0
    inst, inverted = found
    m = marks.mark(inst)
    if not m:
        return 1.0
    return 1.0 / m if inverted else m


class _ConditionFacts:
    """conditions.Facts for one order: the broker's clock, instruments, quotes (cached by conId for
    one evaluation pass), the order's account and its executions since the order was placed."""

    def __init__(self, broker: "Broker", w: _Order, quotes: dict[int, "Quote"]):
        self._broker, self._w, self._quotes = broker, w, quotes

    def now(self) -> datetime:
        return _utc(self._broker._now())

    def instrument(self, con_id: int) -> "Instrument | None":
        return self._broker._instrument_of(con_id)

    def quote(self, inst: "Instrument") -> "Quote":
        if inst.con_id not in self._quotes:
            self._quotes[inst.con_id] = self._broker._quote(inst)
        return self._quotes[inst.con_id]

    def margin_cushion(self) -> float | None:
        snap = self._broker._accounts[self._w.account].snapshot(self._broker._marks.frozen())
        nlv = snap.net_liquidation
        return snap.excess_liquidity / nlv * 100.0 if nlv > 0 else None

    def executed(self, sec_type: str, symbol: str) -> bool:
        for f in self._broker._fills[self._w.fills_before:]:
            c = f.contract
            if (f.execution.acctNumber == self._w.account and c.symbol.upper() == symbol
                    and (not sec_type or c.secType.upper() == sec_type)):
                return True
        return False


class Broker:
    """Orders, executions and accounts of one paper gateway. Every public method returns at once;
    the ones that change orders return the events to send, in order. Times come from ``now()``
    (aware UTC), prices from ``quote(inst)``."""

    def __init__(self, accounts: list[str], quote: Callable[["Instrument"], "Quote"],
                 now: Callable[[], datetime], starting_cash: float = 1_000_000.0,
                 instrument: Callable[[int], "Instrument | None"] | None = None,
                 calendar: "SessionCalendar | None" = None, fx_pairs: "Iterable[Instrument]" = ()):
        """``instrument(conId)`` finds the instrument an order condition names (default: only the
        instruments orders were placed for). ``calendar``: the exchange-hours sessions (None: the
        market trades around the clock and no order waits for a session). ``fx_pairs``: the market's
        CASH instruments, known from the start so that a position in another currency (a EUR stock)
        is valued with its pair's mark before anyone has traded the pair."""
        if not accounts:
            raise ValueError("the broker needs at least one account id (e.g. 'DU1234567')")
        self._market_quote = quote
        self._now = now
        self._calendar = calendar
        self._accounts = {a: acc.Account(a, starting_cash) for a in accounts}
        self._instruments: dict[int, "Instrument"] = {i.con_id: i for i in fx_pairs if i.sec_type == "CASH"}
        self._marks = _Marks(self._quote, self._instruments)
        self.expirations: list[Expiration] = []    # options settled at expiry, oldest first
        self._orders: dict[tuple[int, int], _Order] = {}
        self._working: dict[int, _Order] = {}      # by permId, in placement order
        self._completed: list[_Order] = []
        self._used_ids: dict[int, set[int]] = {}
        self._fills: list[_Fill] = []
        self._reject_reason: str | None = None
        self._instrument_of = instrument or self._instruments.get
        self._oca_filled: dict[tuple[str, str], Decimal] = {}   # (account, ocaGroup) -> quantity filled
        # permIds: unique and increasing, from a time-derived base in [1e9, 2e9) so that two gateway
        # runs rarely hand out the same ones; execIds count up from the same instant, in hex like IB's.
        start = int(_utc(now()).timestamp())
        self._next_perm = 1_000_000_000 + start % 1_000_000_000
        self._next_exec = start & 0xFFFFFFFF

    # ================================================================================================
    # requests
    # ================================================================================================
    def place(self, client_id: int, order_id: int, inst: "Instrument", contract: Contract,
              order: Order) -> list[Event]:
        """placeOrder: a new order, or a modification when ``order_id`` is a working order of this client."""
        self._instruments.setdefault(inst.con_id, inst)
        existing = self._orders.get((client_id, order_id))
        if existing is not None and not existing.done:
            if order.whatIf:  # what-if of a modification: answer it, leave the working order alone
                return self._what_if_events(client_id, order_id, inst, contract, order, existing.account)
            return self._modify(existing, inst, contract, order)
        if existing is not None:
            return [self._not_modifiable(existing)]
        if order_id in self._used_ids.get(client_id, ()):
            return [ErrorEvent(client_id, order_id, errors.DUPLICATE_ORDER_ID, TEXT_103)]
        self._used_ids.setdefault(client_id, set()).add(order_id)
        try:
            self._take_fault()
            account = self._account_of(order)
            self._validate(client_id, inst, order, account)
            if order.whatIf:
                return [self._what_if(client_id, order_id, inst, contract, order, account)]
            self._check_margin(inst, order, account)
        except Rejected as r:
            return [ErrorEvent(client_id, order_id, r.code, r.text)]
        w = self._new_order(client_id, order_id, inst, contract, order, account)
        if not order.transmit:
            return self._set_status(w, PRE_SUBMITTED)
        return self._transmit(w)

    @staticmethod
    def _not_modifiable(w: _Order) -> ErrorEvent:
        """placeOrder on a finished order: IB's 104 for a filled one; for a cancelled one 10148 in the
        wording of IB's cancel refusal (IB's exact answer to this case is not documented)."""
        if w.status == FILLED:
            return ErrorEvent(w.client_id, w.order_id, errors.MODIFY_FILLED, TEXT_104)
        return ErrorEvent(w.client_id, w.order_id, errors.ORDER_NOT_MODIFIABLE,
                          f"OrderId {w.order_id} that needs to be modified cannot be modified, state: {w.status}.")

    def cancel(self, client_id: int, order_id: int, manual_time: str = "") -> list[Event]:
        """cancelOrder. ``manual_time`` (manualOrderCancelTime) is accepted and ignored."""
        w = self._orders.get((client_id, order_id))
        if w is None:
            return [ErrorEvent(client_id, order_id, errors.CANCEL_UNKNOWN_ORDER,
                               f"OrderId {order_id} that needs to be cancelled is not found.")]
        if w.done:
            return [ErrorEvent(client_id, order_id, errors.NOT_CANCELLABLE, "Cancel attempted when order is not "
                                                                            f"in a cancellable state. Order permId "
                                                                            f"={w.perm_id}")]
        return self._cancel(w, "", by_trader=True)

    def global_cancel(self) -> list[Event]:
        """reqGlobalCancel: every working order of every client."""
        events: list[Event] = []
        for w in list(self._working.values()):
            if not w.done:
                events += self._cancel(w, "", by_trader=True)
        return events

    def on_market(self, con_ids: Iterable[int] | None = None) -> list[Event]:
        """Cancel GTD orders whose time has come, then let working orders of ``con_ids`` (None = all)
        trade against the current quotes."""
        wanted = None if con_ids is None else set(con_ids)
        quotes: dict[int, "Quote"] = {}
        events = self._expire_options()
        events += self._expire_gtd()
        events += self._expire_day()
        events += self._check_conditions(quotes)
        events += self._release_at_open()
        for w in list(self._working.values()):
            if w.done or not w.live or w.auction is not None:
                continue
            con_id = w.inst.con_id
            if wanted is not None and con_id not in wanted:
                continue
            if con_id not in quotes:
                quotes[con_id] = self._quote(w.inst)
            events += self._evaluate(w, quotes[con_id], resting=True)
        return events

    def on_open(self, con_id: int) -> list[Event]:
        """The opening auction of ``con_id``: OPG orders trade at the auction price (the mark now); a
        market on open fills, a limit on open fills when its limit allows, else it is cancelled."""
        return self._auction(con_id, "open")

    def on_close(self, con_id: int) -> list[Event]:
        """The closing auction of ``con_id``: MOC orders fill at the auction price (the mark now), LOC
        orders too when their limit allows, else they are cancelled. Nothing happens without a price."""
        return self._auction(con_id, "close")

    def _auction(self, con_id: int, which: str) -> list[Event]:
        events: list[Event] = []
        for w in list(self._working.values()):
            if w.done or not w.live or w.inst.con_id != con_id or w.auction != which:
                continue
            price = mark_price(w.inst, self._quote(w.inst))
            if price is None:
                continue
            if w.order_type in LIMIT_TYPES and not _limit_allows(price, _limit_price(w.order), w.buy):
                opg = " OPG" if which == "open" else ""
                events += self._cancel(w, f"{w.order_type}{opg} order not filled in the {which}ing auction")
            else:
                events += self._fill(w, price, LIQUIDITY_ADDED)
        return events

    def _check_conditions(self, quotes: dict[int, "Quote"]) -> list[Event]:
        """Orders held by their conditions go live once the conditions are met; working orders with
        conditionsCancelOrder are cancelled once theirs are. ``quotes`` caches quotes by conId."""
        events: list[Event] = []
        for w in list(self._working.values()):
            if w.done or not (w.conditions_hold or (w.live and w.cancelled_by_conditions)):
                continue
            if not conditions_met(w.order.conditions, _ConditionFacts(self, w, quotes)):
                continue
            if w.conditions_hold:
                w.conditions_hold = False
                events += self._enter(w)
            else:
                events += self._cancel(w, "order conditions met")
        return events

    def _expire_gtd(self) -> list[Event]:
        now = _utc(self._now())
        events: list[Event] = []
        for w in list(self._working.values()):
            if not w.done and w.expires is not None and now >= w.expires:
                events += self._cancel(w, f"good till date {w.order.goodTillDate} reached")
        return events

    def _expire_day(self) -> list[Event]:
        """Exchange hours: DAY/DTC orders still working at their trading day's close are cancelled, as
        IB does (the reason text is ours: IB documents none for the API)."""
        now = _utc(self._now())
        events: list[Event] = []
        for w in list(self._working.values()):
            if not w.done and w.day_end is not None and now >= w.day_end:
                events += self._cancel(w, f"{w.tif} order expired at the close of the trading day")
        return events

    def _expire_options(self) -> list[Event]:
        """Options past their last trade time: working orders on them are cancelled; from their class's
        settlement moment every position in them is settled (option_instruments.py states the rule): in
        the money, an equity option is exercised or assigned into multiplier x contracts shares of the
        underlying at the strike, an option on a future into one future a contract at the strike, a
        cash-settled one (SPX) closes at its intrinsic value; otherwise it is removed worthless. The
        delivered shares or futures carry no commission."""
        now = _utc(self._now())
        events: list[Event] = []
        for w in list(self._working.values()):
            if not w.done and isinstance(w.inst, OptionInstrument) and now >= w.inst.expires:
                events += self._cancel(w, "the option expired")
        for account in self._accounts.values():
            for pos in list(account.positions.values()):
                inst = pos.inst
                if isinstance(inst, OptionInstrument) and pos.qty and now >= inst.settles:
                    events += self._settle_expiry(account, pos, inst)
        return events

    def _settle_expiry(self, account: acc.Account, pos: acc.Position, inst: OptionInstrument) -> list[Event]:
        und = inst.underlying
        price = mark_price(und, inst.underlying_quote(inst.settles))
        exercised = price is not None and in_the_money(inst.right, inst.strike, price)
        contracts = pos.qty
        marks = self._marks.frozen()
        sign = 1 if inst.right == "C" else -1
        cash_settled = inst.settlement == "cash"
        intrinsic = max(0.0, sign * ((price or 0.0) - inst.strike)) if exercised and cash_settled else 0.0
        account.apply_fill(inst, pos.contract, -contracts, intrinsic, 0.0, marks)
        shares = Decimal(0)
        events: list[Event] = [AccountChanged(account.account_id, inst.con_id)]
        if exercised and not cash_settled:
            per = Decimal(str(int(inst.multiplier)))
            if inst.settlement == "future":
                per = per / Decimal(str(und.multiplier))     # ES options: one future a contract
            shares = contracts * per * sign
            self._instruments.setdefault(und.con_id, und)
            account.apply_fill(und, copy.copy(und.contract), shares, inst.strike, 0.0, marks)
            events.append(AccountChanged(account.account_id, und.con_id))
        self.expirations.append(Expiration(account.account_id, inst.con_id, inst.contract.localSymbol, contracts,
                                           price if price is not None else 0.0, exercised, shares, inst.strike))
        return events

    def _release_at_open(self) -> list[Event]:
        """Orders held for their instrument's session go live (Submitted, then trade) once it trades."""
        events: list[Event] = []
        for w in list(self._working.values()):
            if not w.done and w.session_hold and self._trading(w.inst):
                w.session_hold = False
                events += self._activate(w)
        return events

    def _quote(self, inst: "Instrument") -> "Quote":
        """The market of ``inst`` now: an option quotes itself from its underlying (option_instruments.py)."""
        if isinstance(inst, OptionInstrument):
            return inst.quote(_utc(self._now()))
        return self._market_quote(inst)

    def _trading(self, inst: "Instrument") -> bool:
        """Whether the market model trades ``inst`` now (always, without exchange hours). An option
        trades in its underlying's sessions until its last trade time."""
        now = _utc(self._now())
        if isinstance(inst, OptionInstrument):
            if now >= inst.expires:
                return False
            inst = inst.underlying
        cal = self._calendar
        return cal is None or cal.is_open(inst, now.timestamp())

    def _day_end(self, w: _Order) -> datetime | None:
        """Exchange hours: the close at which a DAY/DTC order placed now ends (the next close of a
        trading day: an order placed after the close is for the next day); None otherwise."""
        if self._calendar is None or w.tif not in DAY_TIFS or w.auction is not None:
            return None
        inst = w.inst.underlying if isinstance(w.inst, OptionInstrument) else w.inst
        close = self._calendar.close_after(inst, _utc(self._now()).timestamp())
        return datetime.fromtimestamp(close, timezone.utc) if close is not None else None

    def reject_next(self, reason: str) -> None:
        """Fault injection: the next placeOrder (new or modify) is rejected with 201 and ``reason``."""
        self._reject_reason = reason

    # ================================================================================================
    # queries
    # ================================================================================================
    def open_orders(self, client_id: int | None = None) -> list[tuple[Contract, Order, OrderState]]:
        """Working orders (held, pre-submitted or submitted) of ``client_id``, or of all clients."""
        return [(copy.copy(w.contract), _shown_order(w), self._state(w)) for w in self._working.values()
                if not w.done and (client_id is None or w.client_id == client_id)]

    def completed_orders(self) -> list[tuple[Contract, Order, OrderState]]:
        """Filled and cancelled orders of all clients, oldest first; the state carries completedTime
        ('yyyymmdd hh:mm:ss UTC') and completedStatus."""
        return [(copy.copy(w.contract), _shown_order(w), self._state(w)) for w in self._completed]

    def status_of(self, client_id: int, order_id: int) -> OrderStatusEvent | None:
        """The current ORDER_STATUS of an order (the server sends it after OPEN_ORDER on reqOpenOrders)."""
        w = self._orders.get((client_id, order_id))
        return None if w is None else self._status_event(w)

    def executions(self, client_id: int, flt: ExecutionFilter | None = None
                   ) -> list[tuple[Contract, Execution, CommissionAndFeesReport]]:
        """reqExecutions: executions since the gateway started matching ``flt`` (clientId 0 = every
        client; acctCode; time = at or after; symbol; secType; exchange; side BUY/SELL or BOT/SLD).
        ``client_id`` is the requesting client (kept for the interface; IB returns other clients'
        executions too)."""
        flt = flt or ExecutionFilter()
        since = parse_filter_time(flt.time)
        side = {"BUY": "BOT", "SELL": "SLD"}.get((flt.side or "").upper(), (flt.side or "").upper())
        out = []
        for f in self._fills:
            e, c = f.execution, f.contract
            if (flt.clientId and e.clientId != flt.clientId) or (flt.acctCode and e.acctNumber != flt.acctCode):
                continue
            if since is not None and f.time < since:
                continue
            if flt.symbol and c.symbol.upper() != flt.symbol.upper():
                continue
            if flt.secType and c.secType.upper() != flt.secType.upper():
                continue
            if flt.exchange and flt.exchange.upper() not in (e.exchange.upper(), c.exchange.upper()):
                continue
            if side and e.side != side:
                continue
            out.append((copy.copy(c), copy.copy(e), copy.copy(f.report)))
        return out

    def positions(self) -> list[tuple[str, Contract, Decimal, float]]:
        """(account, contract, position, avgCost) for every instrument ever held; flat ones with 0."""
        return [(a.account_id, copy.copy(p.contract), p.qty, p.avg_cost)
                for a in self._accounts.values() for p in a.positions.values()]

    def account_values(self, account: str) -> list[tuple[str, str, str]]:
        """reqAccountUpdates values (key, value, currency); [] for an unknown account."""
        a = self._accounts.get(account)
        return [] if a is None else acc.account_values(a, self._marks.frozen())

    def account_summary(self, account: str, tags: set[str]) -> list[tuple[str, str, str]]:
        """reqAccountSummary rows (tag, value, currency) for ``tags`` (AccountSummaryTags, $LEDGER...)."""
        a = self._accounts.get(account)
        return [] if a is None else acc.account_summary(a, set(tags), self._marks.frozen())

    def portfolio(self, account: str) -> list[tuple[Contract, Decimal, float, float, float, float, float]]:
        """updatePortfolio rows: (contract, position, marketPrice, marketValue, averageCost,
        unrealizedPNL, realizedPNL), money in the contract's currency."""
        a = self._accounts.get(account)
        return [] if a is None else [(copy.copy(r[0]),) + r[1:] for r in a.portfolio(self._marks.frozen())]

    def pnl(self, account: str) -> tuple[float, float, float]:
        """(daily, unrealized, realized) in USD; daily = since the gateway started."""
        a = self._accounts.get(account)
        return (0.0, 0.0, 0.0) if a is None else a.pnl(self._marks.frozen())

    def pnl_single(self, account: str, con_id: int) -> tuple[Decimal, float, float, float, float]:
        """(position, daily, unrealized, realized, value) of one instrument in USD; zeros when not held."""
        a = self._accounts.get(account)
        return (Decimal(0), 0.0, 0.0, 0.0, 0.0) if a is None else a.pnl_single(con_id, self._marks.frozen())

    def is_id_used(self, client_id: int, order_id: int) -> bool:
        return order_id in self._used_ids.get(client_id, ())

    def max_order_id(self, client_id: int) -> int:
        """The largest order id this client ever sent (0 if none): nextValidId must be above it."""
        return max(self._used_ids.get(client_id, ()), default=0)

    def account(self, account: str) -> acc.Account:
        """The account object itself (tests and diagnostics); KeyError for an unknown id."""
        return self._accounts[account]

    @property
    def marks(self) -> acc.Marks:
        """A consistent set of marks for now (each quote read once), for valuations outside the broker."""
        return self._marks.frozen()

    # ================================================================================================
    # validation
    # ================================================================================================
    def _take_fault(self) -> None:
        if self._reject_reason is not None:
            reason, self._reject_reason = self._reject_reason, None
            raise _reject(reason)

    def _account_of(self, order: Order) -> str:
        account = (order.account or "").strip() or next(iter(self._accounts))
        if account not in self._accounts:
            raise _reject(f"The account code {account} is not valid for this user.")
        return account

    def _validate(self, client_id: int, inst: "Instrument", order: Order, account: str,
                  replacing: _Order | None = None) -> None:
        """Raise Rejected (201 or 110) when ``order`` cannot be accepted for ``inst``."""
        if inst.contract.secType in NOT_TRADABLE:
            raise _reject(f"{inst.contract.symbol} is an index ({inst.contract.secType}): it is not tradable.")
        if isinstance(inst, OptionInstrument) and _utc(self._now()) >= inst.expires:
            raise _reject(f"The option {inst.contract.localSymbol.strip()} has expired "
                          f"({ib_time(_utc(inst.expires))}).")
        # Bounds first: nothing below may compute with a quantity of 1E+999999 or a NaN price.
        problem = order_value_problem(order)
        if problem:
            raise _reject(problem)
        action = (order.action or "").upper()
        if action not in ("BUY", "SELL"):
            raise _reject(f"Invalid action '{order.action}': use BUY or SELL.")
        problem = conditions_problem(order.conditions, self._instrument_of)
        if problem:
            raise _reject(problem)
        ot = _order_type(order.orderType)
        allowed = _tokens(getattr(inst.details, "orderTypes", ""))
        if ot not in ORDER_TYPE_TOKENS or (allowed and ORDER_TYPE_TOKENS[ot] not in allowed):
            raise Rejected(errors.UNSUPPORTED_ORDER_TYPE, TEXT_387)
        self._validate_tif(inst, order, ot, allowed)
        self._validate_prices(inst, order, ot)
        self._validate_parent(client_id, order)
        self._validate_active_limit(inst, order, account, replacing)
        if replacing is not None and _quantity(order.totalQuantity) < replacing.filled:
            raise _reject(f"The quantity may not go below the filled quantity ({replacing.filled}).")

    def _validate_tif(self, inst: "Instrument", order: Order, ot: str, allowed: set[str]) -> None:
        tif = (order.tif or "DAY").upper()
        if tif not in TIFS:
            raise _reject(f"Time in force {tif} is not supported (use {', '.join(TIFS)}).")
        allowed_tifs = vocabulary.order_type(ot).tifs
        if allowed_tifs is not None and tif not in allowed_tifs:
            code, text = ((errors.AUCTION_TIF_NOT_DAY, TEXT_113) if ot in AUCTION_TYPES
                          else (errors.TIF_TYPE_MISMATCH, TEXT_111))
            raise Rejected(code, text)
        if tif == "OPG" and ot not in OPG_TYPES:
            raise Rejected(errors.TIF_TYPE_MISMATCH, TEXT_111)
        # When the contract lists its time-in-force values, respect them (FX, crypto and futures list
        # no OPG: the replay runs no opening auction for them).
        if tif in LISTED_TIFS and any(t in allowed for t in LISTED_TIFS) and tif not in allowed:
            raise _reject(f"Time in force {tif} is not allowed for {inst.contract.symbol} "
                          f"{inst.contract.secType}.")
        if tif == "OPG" and inst.contract.secType not in AUCTION_SEC_TYPES:
            raise _reject(f"Time in force OPG is not allowed for {inst.contract.symbol} "
                          f"{inst.contract.secType}: it trades around the clock, with no opening auction.")
        if tif == "GTD":
            self._good_till(order)

    def _good_till(self, order: Order) -> datetime:
        """goodTillDate as an instant (UTC): 'yyyyMMdd HH:mm:ss [zone]' (no zone = UTC, the gateway's
        zone) or 'yyyyMMdd-HH:mm:ss' (UTC). Rejected when missing, unreadable or not in the future."""
        text = (order.goodTillDate or "").strip()
        if not text:
            raise _reject("A GTD order needs a goodTillDate (yyyyMMdd HH:mm:ss [zone]).")
        try:
            until = parse_time(text, UTC)
        except IBTimeError:
            raise _reject(f"The goodTillDate '{text}' is not a valid date and time.") from None
        if until <= _utc(self._now()):
            raise _reject(f"The goodTillDate '{text}' is in the past.")
        return until

    @staticmethod
    def _validate_prices(inst: "Instrument", order: Order, ot: str) -> None:
        """The prices ``ot`` needs (vocabulary.py says which), each on the tick grid (110)."""
        lmt, aux = _price(order.lmtPrice), _price(order.auxPrice)
        pct, trail_stop = _price(order.trailingPercent), _price(order.trailStopPrice)
        offset = _price(order.lmtPriceOffset)
        if ot in LIMIT_TYPES and lmt is None:
            raise _reject(f"The limit price is missing for a {ot} order.")
        if ot in AUX_TYPES and aux is None:
            what = "trigger price" if ot in TOUCH_TYPES else "stop price"
            raise _reject(f"The {what} (auxPrice) is missing for a {ot} order.")
        if ot in TRAIL_TYPES and not ((pct is not None and pct > 0) or (aux is not None and aux > 0)):
            raise _reject(f"A {ot} order needs a trailing amount (auxPrice) or trailingPercent.")
        if ot in TRAIL_TYPES and pct is not None and pct >= 100:
            raise _reject("The trailing percent must be below 100.")
        if ot == "TRAIL LIMIT" and (offset is None or offset < 0):
            raise _reject("A TRAIL LIMIT order needs the limit's offset from the stop (lmtPriceOffset).")
        if ot == "REL" and aux is not None and aux < 0:
            raise _reject("The offset (auxPrice) of a REL order may not be negative.")
        # Only the prices the type uses are checked: IB ignores the others.
        checked: list[float | None] = []
        if vocabulary.order_type(ot).need("LimitPrice") != vocabulary.BLANK:
            checked.append(lmt)
        if ot in AUX_TYPES or ot == "REL":
            checked.append(aux)
        if ot in TRAIL_TYPES:
            checked += [trail_stop, offset, aux if pct is None else None]
        tick = getattr(inst, "min_tick", 0.0)
        if any(p is not None and not on_tick_grid(p, tick) for p in checked):
            raise Rejected(errors.PRICE_OFF_TICK, TEXT_110)

    def _validate_parent(self, client_id: int, order: Order) -> None:
        if not order.parentId:
            return
        parent = self._orders.get((client_id, int(order.parentId)))
        if parent is None:
            raise _reject(f"The parent order {order.parentId} was not found.")
        if parent.status == CANCELLED:
            raise _reject(f"The parent order {order.parentId} has been cancelled.")

    def _validate_active_limit(self, inst: "Instrument", order: Order, account: str,
                               replacing: _Order | None) -> None:
        action = order.action.upper()
        active = sum(1 for w in self._working.values()
                     if not w.done and w is not replacing and w.account == account
                     and w.inst.con_id == inst.con_id and w.order.action.upper() == action)
        if active >= MAX_ACTIVE_PER_SIDE:
            raise _reject(f"More than {MAX_ACTIVE_PER_SIDE} active orders on the same side of the same "
                          f"contract in account {account}.")

    def _check_margin(self, inst: "Instrument", order: Order, account: str) -> None:
        """IB's pre-trade check: the order may not take the initial margin above the equity with loan.
        Bracket children are exempt: they close what their parent opens."""
        if order.parentId:
            return
        f = self._margin_figures(inst, order, account)
        if f is not None and f.change.init > 0 and f.after.init > f.after.elv:
            raise _reject(f"YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION YOUR EQUITY "
                          f"WITH LOAN VALUE [{f.after.elv:.2f} USD] MUST EXCEED THE INITIAL MARGIN "
                          f"[{f.after.init:.2f} USD]")

    # ================================================================================================
    # what-if and margin
    # ================================================================================================
    def _estimate_price(self, inst: "Instrument", order: Order) -> float | None:
        """The price an order would most likely fill at, for margin and commission estimates."""
        ot = _order_type(order.orderType)
        q = self._quote(inst)
        buy = order.action.upper() == "BUY"
        touch = touch_price(inst, q, buy) or mark_price(inst, q)
        if ot in LIMIT_TYPES:
            lmt = _limit_price(order)
            return lmt if touch is None else (min(touch, lmt) if buy else max(touch, lmt))
        if ot in ("STP",) and touch is None:
            return _price(order.auxPrice)
        return touch

    def _margin_figures(self, inst: "Instrument", order: Order, account: str) -> "_WhatIf | None":
        """Margin and equity before, change and after a hypothetical full fill of ``order``, and its
        commission; None when there is no price to estimate with."""
        price = self._estimate_price(inst, order)
        if price is None:
            return None
        a = self._accounts[account]
        marks = self._marks.frozen()
        qty = _quantity(order.totalQuantity)
        delta = qty if order.action.upper() == "BUY" else -qty
        fee = commission(inst.contract.secType, qty, price, _multiplier(inst), marks.rate(inst.contract.currency))
        snap = a.snapshot(marks)
        current = a.positions.get(inst.con_id) or acc.Position(inst, copy.copy(inst.contract))
        hypothetical = replace(current)          # a copy: the account itself is not touched
        hypothetical.apply(delta, price, fee / marks.rate(current.currency))
        (i0, m0), (i1, m1) = acc.position_margin(current, marks), acc.position_margin(hypothetical, marks)
        before = _Margins(snap.init_margin, snap.maint_margin, snap.equity_with_loan)
        change = _Margins(i1 - i0, m1 - m0, -fee)   # equity drops by the commission only
        after = _Margins(before.init + change.init, before.maint + change.maint, before.elv + change.elv)
        return _WhatIf(before, change, after, fee)

    def _what_if(self, client_id: int, order_id: int, inst: "Instrument", contract: Contract,
                 order: Order, account: str) -> OpenOrderEvent:
        """A whatIf answer: one OPEN_ORDER whose state carries the margin and commission figures."""
        o = copy.copy(order)
        o.orderId, o.clientId, o.account = order_id, client_id, account
        state = OrderState()
        state.status = PRE_SUBMITTED
        figures = self._margin_figures(inst, order, account)
        for label in ("Before", "Change", "After"):
            m = getattr(figures, label.lower()) if figures else None
            # No price to estimate with: IB's "unset" text, so clients that parse the margins still can.
            setattr(state, f"initMargin{label}", f"{m.init:.2f}" if m else UNSET_DOUBLE_TEXT)
            setattr(state, f"maintMargin{label}", f"{m.maint:.2f}" if m else UNSET_DOUBLE_TEXT)
            setattr(state, f"equityWithLoan{label}", f"{m.elv:.2f}" if m else UNSET_DOUBLE_TEXT)
        if figures is not None:
            state.commissionAndFees = state.minCommissionAndFees = state.maxCommissionAndFees = figures.commission
            state.commissionAndFeesCurrency = COMMISSION_CURRENCY
            state.marginCurrency = acc.BASE
        else:
            state.warningText = "No market price: margin and commission cannot be estimated."
        return OpenOrderEvent(client_id, order_id, self._event_contract(inst, contract), o, state)

    def _what_if_events(self, client_id: int, order_id: int, inst: "Instrument", contract: Contract,
                        order: Order, account: str) -> list[Event]:
        try:
            self._take_fault()
            self._validate(client_id, inst, order, account)
        except Rejected as r:
            return [ErrorEvent(client_id, order_id, r.code, r.text)]
        return [self._what_if(client_id, order_id, inst, contract, order, account)]

    # ================================================================================================
    # lifecycle
    # ================================================================================================
    def _new_order(self, client_id: int, order_id: int, inst: "Instrument", contract: Contract,
                   order: Order, account: str) -> _Order:
        perm_id = self._next_perm
        self._next_perm += 1
        parent_perm = self._orders[(client_id, int(order.parentId))].perm_id if order.parentId else 0
        o = _own_copy(order, client_id, order_id, perm_id, account, int(order.parentId or 0), parent_perm)
        w = _Order(client_id, order_id, perm_id, inst, self._event_contract(inst, contract), o, account)
        w.expires = self._good_till(o) if w.tif == "GTD" else None
        w.day_end = self._day_end(w)
        w.fills_before = len(self._fills)
        w.oca_prior_fill = self._oca_filled.get((account, w.oca_group), Decimal(0)) if w.oca_group else Decimal(0)
        self._orders[w.key] = w
        self._working[perm_id] = w
        return w

    def _modify(self, w: _Order, inst: "Instrument", contract: Contract, order: Order) -> list[Event]:
        """placeOrder on a working id: new prices, quantity, type or TIF; same contract and side."""
        try:
            self._take_fault()
            if inst.con_id != w.inst.con_id or (order.action or "").upper() != w.order.action:
                raise Rejected(errors.MODIFY_MISMATCH, TEXT_105)
            self._validate(w.client_id, inst, order, w.account, replacing=w)
        except Rejected as r:
            return [ErrorEvent(w.client_id, w.order_id, r.code, r.text)]
        old = w.order
        o = _own_copy(order, w.client_id, w.order_id, w.perm_id, w.account, old.parentId, old.parentPermId)
        if (o.orderType, _price(o.auxPrice), _price(o.trailingPercent)) != \
                (old.orderType, _price(old.auxPrice), _price(old.trailingPercent)):
            w.triggered, w.trail_stop = False, None   # a new stop definition starts untriggered
        elif w.trail_stop is not None:
            o.trailStopPrice = w.trail_stop           # the stop has trailed: keep where it got to
        w.order = o
        w.expires = self._good_till(o) if w.tif == "GTD" else None
        end = self._day_end(w)      # a DAY order modified keeps its day; another TIF has none
        w.day_end = None if end is None else (w.day_end or end)
        if w.live:
            if w.order_type in TRAIL_TYPES and w.trail_stop is None:
                self._start_trail(w)
            return self._announce(w) + self._evaluate(w, self._quote(w.inst), resting=False)
        if not w.transmitted and o.transmit:
            return self._transmit(w)
        if w.conditions_hold:   # new conditions (or none): decided again now
            w.conditions_hold = False
            return self._announce(w) + self._go(w)
        return self._announce(w)

    def _transmit(self, w: _Order) -> list[Event]:
        """Send ``w``'s whole bracket (its root order and every held descendant) to the market."""
        root = w
        while root.parent_id and (root.client_id, root.parent_id) in self._orders:
            root = self._orders[(root.client_id, root.parent_id)]
        group = [root] + self._descendants(root)
        for member in group:
            if not member.done:
                member.transmitted = True
        events: list[Event] = []
        for member in sorted(group, key=lambda m: m.perm_id):
            events += self._go(member)
        return events

    def _descendants(self, w: _Order) -> list[_Order]:
        out = []
        for child in self._children(w):
            out += [child] + self._descendants(child)
        return out

    def _children(self, w: _Order) -> list[_Order]:
        return [c for c in self._working.values()
                if c.client_id == w.client_id and c.parent_id == w.order_id and not c.done]

    def _go(self, w: _Order) -> list[Event]:
        """A transmitted order goes live, unless it waits for its parent to fill (PreSubmitted)."""
        if w.done or w.live or not w.transmitted:
            return []
        parent = self._orders.get((w.client_id, w.parent_id)) if w.parent_id else None
        if parent is not None and parent.status != FILLED:
            return self._set_status(w, PRE_SUBMITTED)
        events = self._join_oca(w)
        if w.done:
            return events
        if w.order.conditions:
            met = conditions_met(w.order.conditions, _ConditionFacts(self, w, {}))
            if w.cancelled_by_conditions and met:
                return events + self._cancel(w, "order conditions met")
            if not w.cancelled_by_conditions and not met:
                w.conditions_hold = True   # as TWS: PreSubmitted until the conditions are met
                return events + self._set_status(w, PRE_SUBMITTED)
        return events + self._enter(w)

    def _join_oca(self, w: _Order) -> list[Event]:
        """An order going live in an OCA group another member had already filled (partly) when it
        arrived: type 1 is cancelled at once; types 2 and 3 are reduced by that filled quantity
        (cancelled when nothing is left), as they would have been had they been working at the fill."""
        group, filled = w.oca_group, w.oca_prior_fill
        if not group or not filled:
            return []
        w.oca_prior_fill = Decimal(0)   # once: later fills reach it through _after_fill, like any member
        if int(w.order.ocaType or 1) in (2, 3):
            left = w.quantity - filled
            if left > w.filled:
                w.order.totalQuantity = left
                return []
        return self._cancel(w, f"OCA group {group} already filled")

    def _enter(self, w: _Order) -> list[Event]:
        """Go live, or, with exchange hours, wait PreSubmitted for the session: an order without
        outsideRth arriving while its instrument does not trade (auction and IOC/FOK orders excepted:
        they have their own moment), as TWS holds such an order until the open."""
        if (self._calendar is not None and not w.order.outsideRth and w.auction is None
                and w.tif not in IMMEDIATE_TIFS and not self._trading(w.inst)):
            w.session_hold = True
            return self._set_status(w, PRE_SUBMITTED)
        return self._activate(w)

    def _activate(self, w: _Order) -> list[Event]:
        """Submitted: announce, then try to trade at once (IOC/FOK leftovers are cancelled)."""
        w.live = True
        if w.order_type in TRAIL_TYPES:
            self._start_trail(w)   # before the announcement, so OPEN_ORDER shows the initial stop
        events = self._set_status(w, SUBMITTED, force=True)
        if w.auction is not None:
            return events
        return events + self._evaluate(w, self._quote(w.inst), resting=False)

    def _evaluate(self, w: _Order, q: "Quote", resting: bool) -> list[Event]:
        """Fill ``w`` if the quote allows; an IOC/FOK order that cannot fill on arrival is cancelled."""
        was_limit = self._rests_as_limit(w)
        price = self._fill_price(w, q) if self._trading(w.inst) else None   # no trades outside the session
        if price is not None:
            # A limit that was already resting when the market came to it added liquidity; anything
            # marketable on arrival (or a stop elected just now) removed it.
            added = resting and was_limit
            return self._fill(w, price, LIQUIDITY_ADDED if added else LIQUIDITY_REMOVED)
        if not resting and w.tif in IMMEDIATE_TIFS:
            return self._cancel(w, f"{w.tif} order could not be filled immediately")
        return []

    @staticmethod
    def _rests_as_limit(w: _Order) -> bool:
        """A priced order sitting in the book (limits, pegs, elected stop/touch limits)."""
        if w.order_type in ("LMT", "REL", "MIDPRICE"):
            return True
        return w.triggered and w.order_type in ("STP LMT", "LIT", "TRAIL LIMIT")

    def _fill_price(self, w: _Order, q: "Quote") -> float | None:
        """The price ``w`` trades at against ``q`` now, or None. Elects stops and triggers, moves
        trailing stops."""
        ot = w.order_type
        if w.auction is not None:
            return None
        if ot in STOP_TYPES + TOUCH_TYPES and not w.triggered:
            if ot in TRAIL_TYPES:
                self._move_trail(w, q)
            if not self._elected(w, q):
                return None
            w.triggered = True
        if ot == "MIDPRICE":
            return self._midpoint_fill(w, q)
        touch = touch_price(w.inst, q, w.buy)
        if touch is None:
            return None
        if ot in ("MKT", "STP", "TRAIL", "MIT"):
            return touch
        limit = self._limit_now(w, q)
        return touch if limit is not None and _limit_allows(touch, limit, w.buy) else None

    def _limit_now(self, w: _Order, q: "Quote") -> float | None:
        """The limit a priced order works at now: lmtPrice; the trailing stop -/+ the offset for an
        elected TRAIL LIMIT; the peg for REL (None while the peg's side is missing)."""
        ot = w.order_type
        if ot == "TRAIL LIMIT":
            return None if w.trail_stop is None else _trail_limit(w, w.trail_stop)
        if ot == "REL":
            return self._relative_peg(w, q)
        return _limit_price(w.order)

    @staticmethod
    def _relative_peg(w: _Order, q: "Quote") -> float | None:
        """REL: a buy pegs to the bid plus the offset (auxPrice), a sell to the ask minus it; capped by
        lmtPrice when one is given."""
        side = _quoted(q.bid if w.buy else q.ask)
        if side is None:
            return None
        offset = _price(w.order.auxPrice) or 0.0
        peg = round_to_tick(side + offset if w.buy else side - offset, w.inst.min_tick)
        cap = _price(w.order.lmtPrice)
        if cap is not None:
            peg = min(peg, cap) if w.buy else max(peg, cap)
        return peg

    @staticmethod
    def _midpoint_fill(w: _Order, q: "Quote") -> float | None:
        """MIDPRICE: the bid/ask midpoint on the tick grid (rounded towards the far side: up for a buy,
        down for a sell, so never better than the true midpoint), within the optional lmtPrice cap."""
        bid, ask = _quoted(q.bid), _quoted(q.ask)
        if bid is None or ask is None:
            return None
        mid = round_to_tick((bid + ask) / 2.0, w.inst.min_tick, "ROUND_CEILING" if w.buy else "ROUND_FLOOR")
        cap = _price(w.order.lmtPrice)
        return mid if cap is None or _limit_allows(mid, cap, w.buy) else None

    def _elected(self, w: _Order, q: "Quote") -> bool:
        """Stops elect when the price reaches them from below (buy) / above (sell); MIT and LIT the
        other way round: a buy when the price falls to the trigger, a sell when it rises to it."""
        ref = trigger_price(w.inst, q, w.buy)
        level = w.trail_stop if w.order_type in TRAIL_TYPES else _price(w.order.auxPrice)
        if level is None or ref is None:
            return False
        rising = w.buy == (w.order_type not in TOUCH_TYPES)
        return ref >= level if rising else ref <= level

    # --- trailing stops -----------------------------------------------------------------------------
    def _trail_stop_from(self, w: _Order, ref: float) -> float:
        """The stop a trailing order would have with the market at ``ref``, on the tick grid."""
        pct, amount = _price(w.order.trailingPercent), _price(w.order.auxPrice)
        if pct is not None and pct > 0:
            offset = ref * pct / 100.0
        else:
            offset = amount or 0.0
        raw = ref + offset if w.buy else ref - offset
        # Round away from the market so a percent trail never ends up tighter than asked.
        return round_to_tick(raw, w.inst.min_tick, "ROUND_CEILING" if w.buy else "ROUND_FLOOR")

    def _start_trail(self, w: _Order) -> None:
        initial = _price(w.order.trailStopPrice)
        if initial is not None:
            self._set_trail(w, initial)
            return
        ref = trigger_price(w.inst, self._quote(w.inst), w.buy)
        if ref is not None:
            self._set_trail(w, self._trail_stop_from(w, ref))

    def _move_trail(self, w: _Order, q: "Quote") -> None:
        """Ratchet the stop in the order's favour only: up for a sell, down for a buy."""
        ref = trigger_price(w.inst, q, w.buy)
        if ref is None:
            return
        candidate = self._trail_stop_from(w, ref)
        if w.trail_stop is None or (candidate < w.trail_stop if w.buy else candidate > w.trail_stop):
            self._set_trail(w, candidate)

    @staticmethod
    def _set_trail(w: _Order, stop: float) -> None:
        """The stop (and, for TRAIL LIMIT, the limit that follows it) as OPEN_ORDER shows them."""
        w.trail_stop = stop
        w.order.trailStopPrice = stop
        if w.order_type == "TRAIL LIMIT":
            w.order.lmtPrice = _trail_limit(w, stop)

    # --- fills ------------------------------------------------------------------------------------
    def _fill(self, w: _Order, price: float, liquidity: int) -> list[Event]:
        """Execute the whole remaining quantity at ``price``. Events, as a real gateway sends them:
        EXECUTION, OPEN_ORDER Filled, ORDER_STATUS Filled, COMMISSION_REPORT; then AccountChanged and
        the consequences (OCA/bracket siblings cancelled or reduced, children activated)."""
        qty = w.remaining
        inst, contract = w.inst, w.contract
        delta = qty if w.buy else -qty
        marks = self._marks.frozen()
        fee = commission(contract.secType, qty, price, _multiplier(inst), marks.rate(contract.currency))
        account = self._accounts[w.account]
        realized = account.apply_fill(inst, copy.copy(inst.contract), delta, price, fee, marks)

        w.avg_fill_price = _weighted(w.avg_fill_price, w.filled, price, qty)
        w.filled += qty
        w.last_fill_price = price
        w.commission = (w.commission or 0.0) + fee
        now = _utc(self._now())
        execution = self._execution(w, qty, price, liquidity, now)
        report = CommissionAndFeesReport()
        report.execId, report.commissionAndFees, report.currency = execution.execId, fee, COMMISSION_CURRENCY
        report.realizedPNL = UNSET_REALIZED if realized is None else realized
        report.yield_, report.yieldRedemptionDate = UNSET_DOUBLE, 0
        exec_contract = copy.copy(contract)
        exec_contract.exchange = execution.exchange
        self._fills.append(_Fill(w.client_id, now, exec_contract, execution, report))

        w.status = FILLED
        self._complete(w, "Filled", now)
        events: list[Event] = [ExecutionEvent(w.client_id, w.order_id, copy.copy(exec_contract), copy.copy(execution))]
        events += self._announce(w)
        events.append(CommissionEvent(w.client_id, copy.copy(report)))
        events.append(AccountChanged(w.account, inst.con_id))
        return events + self._after_fill(w, qty)

    def _execution(self, w: _Order, qty: Decimal, price: float, liquidity: int, now: datetime) -> Execution:
        e = Execution()
        e.execId = f"{EXEC_ID_PREFIX}.{self._next_exec:08x}.01.01"
        self._next_exec = (self._next_exec + 1) & 0xFFFFFFFF
        e.time = ib_time(now)
        e.acctNumber = w.account
        e.exchange = _execution_exchange(w.inst, w.contract)
        e.side = "BOT" if w.buy else "SLD"
        e.shares = qty
        e.price = price
        e.permId = w.perm_id
        e.clientId = w.client_id
        e.orderId = w.order_id
        e.cumQty = w.filled
        e.avgPrice = w.avg_fill_price
        e.orderRef = w.order.orderRef
        e.lastLiquidity = liquidity
        return e

    def _after_fill(self, w: _Order, qty: Decimal) -> list[Event]:
        events: list[Event] = []
        group = w.oca_group
        if group:
            key = (w.account, group)
            self._oca_filled[key] = self._oca_filled.get(key, Decimal(0)) + qty
            reduce = int(w.order.ocaType or 1) in (2, 3)
            for other in list(self._working.values()):
                if other is w or other.done or other.account != w.account or other.oca_group != group:
                    continue
                events += self._reduce(other, qty) if reduce else self._cancel(other, f"OCA group {group} filled")
        if w.parent_id:  # bracket: the children of one parent are one-cancels-all
            parent = self._orders.get((w.client_id, w.parent_id))
            if parent is not None:
                for sibling in self._children(parent):
                    events += self._cancel(sibling, "bracket sibling filled")
        for child in self._children(w):
            events += self._go(child)
        return events

    def _reduce(self, w: _Order, qty: Decimal) -> list[Event]:
        """OCA types 2 and 3: another member filled ``qty``; take it off this order's size."""
        left = w.quantity - qty
        if left <= w.filled:
            return self._cancel(w, "OCA group filled")
        w.order.totalQuantity = left
        return self._announce(w)

    # --- cancels and statuses ---------------------------------------------------------------------
    def _cancel(self, w: _Order, reason: str, by_trader: bool = False) -> list[Event]:
        """Cancel ``w``, then its children (they can never go live now). Events: ORDER_STATUS
        Cancelled, OPEN_ORDER Cancelled, error 202."""
        children = self._children(w)
        w.status = CANCELLED
        self._complete(w, "Cancelled by Trader" if by_trader else "Cancelled", _utc(self._now()))
        events: list[Event] = [self._status_event(w), self._open_event(w),
                               ErrorEvent(w.client_id, w.order_id, errors.ORDER_CANCELLED, TEXT_202 + reason)]
        for child in children:
            if not child.done:
                events += self._cancel(child, "parent order cancelled", by_trader)
        return events

    def _complete(self, w: _Order, completed_status: str, when: datetime) -> None:
        w.live = False
        w.completed_time = ib_time(when)
        w.completed_status = completed_status
        self._working.pop(w.perm_id, None)
        self._completed.append(w)

    def _set_status(self, w: _Order, status: str, force: bool = False) -> list[Event]:
        """Change status; announce (OPEN_ORDER + ORDER_STATUS) when it changed or was never sent."""
        if w.status == status and w.announced and not force:
            return []
        w.status = status
        return self._announce(w)

    def _announce(self, w: _Order) -> list[Event]:
        w.announced = True
        return [self._open_event(w), self._status_event(w)]

    def _state(self, w: _Order) -> OrderState:
        s = OrderState()
        s.status = w.status
        if w.commission is not None:
            s.commissionAndFees = w.commission
            s.commissionAndFeesCurrency = COMMISSION_CURRENCY
        s.completedTime, s.completedStatus = w.completed_time, w.completed_status
        return s

    def _open_event(self, w: _Order) -> OpenOrderEvent:
        return OpenOrderEvent(w.client_id, w.order_id, copy.copy(w.contract), _shown_order(w), self._state(w))

    def _status_event(self, w: _Order) -> OrderStatusEvent:
        return OrderStatusEvent(w.client_id, w.order_id, w.status, w.filled, w.remaining, w.avg_fill_price,
                                w.perm_id, w.parent_id, w.last_fill_price, "", 0.0)

    @staticmethod
    def _event_contract(inst: "Instrument", contract: Contract) -> Contract:
        """The resolved contract (conId, localSymbol...) with the exchange the client routed to."""
        c = copy.copy(inst.contract)
        if contract is not None and contract.exchange:
            c.exchange = contract.exchange
        return c


# --- small helpers -----------------------------------------------------------------------------------


def _own_copy(order: Order, client_id: int, order_id: int, perm_id: int, account: str, parent_id: int,
              parent_perm_id: int) -> Order:
    """The broker's copy of a client's order: ids, permId and account filled in, fields normalised
    (Decimal quantity, upper-case action/TIF, canonical order type) so OPEN_ORDER echoes them cleanly."""
    o = copy.copy(order)
    o.orderId, o.clientId, o.permId, o.account = order_id, client_id, perm_id, account
    o.parentId, o.parentPermId = parent_id, parent_perm_id
    o.totalQuantity = _quantity(order.totalQuantity)
    o.tif = (order.tif or "DAY").upper()
    o.orderType = _order_type(order.orderType)
    o.action = order.action.upper()
    return o


def _shown_order(w: _Order) -> Order:
    """A copy of ``w``'s order as the client sees it: filledQuantity is always the true filled quantity
    (0 until a fill), never unset: COMPLETED_ORDER carries it, and ibapi reads an empty field as
    UNSET_DECIMAL (1.7e38)."""
    o = copy.copy(w.order)
    o.filledQuantity = w.filled
    return o


def _tokens(text: str) -> set[str]:
    return {t.strip().upper() for t in (text or "").split(",") if t.strip()}


def _multiplier(inst: "Instrument") -> float:
    return float(getattr(inst, "multiplier", 1.0) or 1.0)


def _weighted(avg: float, qty: Decimal, price: float, add: Decimal) -> float:
    total = qty + add
    return price if not qty else (avg * float(qty) + price * float(add)) / float(total)


def _execution_exchange(inst: "Instrument", contract: Contract) -> str:
    """Where a fill is reported: the routed exchange, or for SMART the primary exchange (IB reports the
    venue, never SMART)."""
    exchange = contract.exchange or inst.contract.exchange
    if exchange.upper() != "SMART":
        return exchange
    primary = inst.contract.primaryExchange
    if primary:
        return primary
    venues = [v for v in _tokens(getattr(inst.details, "validExchanges", "")) if v != "SMART"]
    return sorted(venues)[0] if venues else exchange
