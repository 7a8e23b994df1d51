"""Pre-trade risk checks: pure rules over an order and the facts gathered about it.

Nothing here talks to IB: :class:`addin.orders.desk.OrderDesk` gathers :class:`OrderFacts` (contract
details, quote, position, open orders, P&L, journal state) and :func:`evaluate` applies every rule of
:class:`RiskLimits`. Each rule has a name; a refusal message starts with it and gives the numbers::

    max_notional: 120,000 USD > limit 100,000 USD

Rules (in the order they are checked; every failing rule is reported, not just the first):
read_only, kill_switch, live_account, duplicate_ref, sec_type, symbol_list, max_quantity, min_size and
size_increment (IB's minSize and sizeIncrement from the contract details: the quantity is at least
minSize and a whole multiple of sizeIncrement, in exact decimal arithmetic; when IB sent neither, whole
units are assumed, so 1e-9 shares never leave), tick_grid
(or rounding to the grid when ``round_to_tick``), stale_quote (MKT, MOC and TRAIL without a StopPrice
need a quote no older than ``quote_max_age``), price_band (LimitPrice, StopPrice, TakeProfit, StopLoss
within ``price_band_pct`` of the mid, else the last, of a fresh quote), max_notional (quantity x price
x multiplier x FX rate to the base currency; price: the limit, else the stop, else the touch: a 10-lot
of a 2.50 option with multiplier 100 is 2,500), max_position (in IB's units: shares, or contracts for
options and futures),
allow_short, max_open_orders, max_orders_per_minute, daily_loss. The optional what-if margin rule is
:func:`check_whatif` (it needs IB's answer to a whatIf order of the order that passed the others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeGuard

from ..config import RiskSettings, Settings
from ..protocol.times import UTC, parse_time
from .rows import OrderIntent

__all__ = ["RULES", "RiskLimits", "RiskCheck", "RiskResult", "OrderFacts", "evaluate", "check_whatif",
           "on_tick_grid", "round_to_tick", "ACTIVE_STATES"]

RULES = ("read_only", "kill_switch", "live_account", "duplicate_ref", "sec_type", "symbol_list", "max_quantity",
         "min_size", "size_increment", "tick_grid", "stale_quote", "price_band", "max_notional", "max_position",
         "allow_short", "max_open_orders", "max_orders_per_minute", "daily_loss", "whatif_margin", "good_till")
# Journal states of a Ref that block placing it again (working at IB, or done).
ACTIVE_STATES = frozenset({"transmitting", "acknowledged", "working", "filled", "cancelled"})
# Orders whose fill price the market sets, beyond any limit or stop they carry: valued at the touch.
_MARKET_PRICED = ("MKT", "MOC", "TRAIL", "TRAIL LIMIT", "MIT", "REL", "MIDPRICE")


@dataclass(frozen=True)
class RiskLimits(RiskSettings):
    """The limits in force (the user's [risk] settings, possibly tightened by a workbook)."""

    @classmethod
    def from_settings(cls, settings: Settings | RiskSettings) -> "RiskLimits":
        risk = settings.risk if isinstance(settings, Settings) else settings
        return cls(**{f.name: getattr(risk, f.name) for f in fields(RiskSettings)})


@dataclass(frozen=True)
class RiskCheck:
    """One rule's verdict. ``message`` starts with the rule name when it failed (or adjusted)."""

    rule: str
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class OrderFacts:
    """What the desk knows about one order when it checks it.

    account: the account the order goes to; sec_type, ib_symbol, currency, multiplier (1 when none),
    min_tick: from IB's contract details; min_size, size_increment: IB's minSize and sizeIncrement
    (ContractDetails, Decimal; None when IB sent none or an unusable value: whole units are then
    assumed); bid/ask/last: the quote (contract currency, None when
    unknown) and quote_time (UTC arrival of its latest tick, None when there is none); fx_rate:
    contract currency -> base currency (None when unknown); position: the account's position in the
    contract (signed); open_buy / open_sell: remaining quantity of working orders in it (positive);
    open_orders: working orders at IB; recent_orders: orders transmitted in the last 60 s;
    daily_pnl: today's P&L of the account in base currency (None when unknown); ref_state: the
    journal state of the Ref (None when new); kill_switch: engaged; now: UTC.
    """

    account: str
    sec_type: str
    ib_symbol: str
    currency: str = "USD"
    multiplier: float = 1.0
    min_tick: float = 0.0
    min_size: Decimal | None = None
    size_increment: Decimal | None = None
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    quote_time: datetime | None = None
    fx_rate: float | None = 1.0
    position: float = 0.0
    open_buy: float = 0.0
    open_sell: float = 0.0
    open_orders: int = 0
    recent_orders: int = 0
    daily_pnl: float | None = 0.0
    ref_state: str | None = None
    kill_switch: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass(frozen=True)
class RiskResult:
    """``intent``: the order as it may be sent (prices rounded when ``round_to_tick``); ``checks``:
    every rule's verdict; ``refusals``: the failed ones; ``ok``: none failed; ``message``: the
    refusals (or the adjustments) joined with "; "."""

    intent: OrderIntent
    checks: tuple[RiskCheck, ...]

    @property
    def refusals(self) -> list[RiskCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def message(self) -> str:
        shown = self.refusals or [c for c in self.checks if c.message]
        return "; ".join(c.message for c in shown)


# --- numbers ------------------------------------------------------------------------------------------
def _money(x: float) -> str:
    return f"{x:,.2f}".removesuffix(".00")


def _num(x: float) -> str:
    return f"{x:,.10g}" if abs(x) < 1e15 else f"{x:.6g}"


def _tick(min_tick: float) -> Fraction | None:
    if not min_tick or not math.isfinite(min_tick) or min_tick <= 0 or min_tick >= 1e300:
        return None
    return Fraction(repr(float(min_tick)))          # the tick as written (0.01, not its binary neighbour)


def on_tick_grid(price: float, min_tick: float) -> bool:
    """True when ``price`` is a whole number of ``min_tick`` (exact arithmetic on the decimal texts of
    both, so 229.37 is on a 0.01 grid; any size of number); no tick known = any price."""
    tick = _tick(min_tick)
    if tick is None:
        return True
    return (Fraction(repr(float(price))) / tick).denominator == 1


def round_to_tick(price: float, min_tick: float) -> float:
    """``price`` rounded to the nearest multiple of ``min_tick`` (half to even)."""
    tick = _tick(min_tick)
    if tick is None:
        return price
    return float(round(Fraction(repr(float(price))) / tick) * tick)


_PRICE_FIELDS = (("LimitPrice", "limit_price"), ("StopPrice", "stop_price"), ("TakeProfit", "take_profit"),
                 ("StopLoss", "stop_loss"))
# Price distances (a trail, a limit or peg offset): on the tick grid like prices, never the price band.
_DISTANCE_FIELDS = (("TrailAmount", "trail_amount"), ("Offset", "offset"))


# --- the rules ----------------------------------------------------------------------------------------
def evaluate(intent: OrderIntent, facts: OrderFacts, limits: RiskLimits) -> RiskResult:
    """Apply every rule to ``intent`` (an OrderIntent whose prices are in the contract's currency).
    Never raises for odd facts: an unknown number is a refusal of the rule that needs it."""
    checks: list[RiskCheck] = []

    def fail(rule: str, message: str) -> None:
        checks.append(RiskCheck(rule, False, f"{rule}: {message}"))

    if limits.read_only:
        fail("read_only", "ibxl is in read-only mode (risk.read_only = true); no order is sent")
    if facts.kill_switch:
        fail("kill_switch", "the kill switch is engaged; reset it before placing orders")
    if not facts.account:
        fail("live_account", "no account: write one in the Account column")
    elif not facts.account.startswith("D") and not limits.allow_live:
        fail("live_account", f"{facts.account} is a live account (paper ids start with D); set "
                             f"allow_live = true in your own config file to trade it")
    if facts.ref_state in ACTIVE_STATES:
        fail("duplicate_ref", f"{intent.ref} was already sent ({facts.ref_state}); it is never sent twice")
    if facts.sec_type not in limits.allowed_sec_types:
        fail("sec_type", f"{facts.sec_type} is not allowed (allowed_sec_types: "
                         f"{', '.join(limits.allowed_sec_types) or 'none'})")
    sym = facts.ib_symbol.upper()
    if sym in limits.symbol_deny:
        fail("symbol_list", f"{sym} is on the deny list")
    elif limits.symbol_allow and sym not in limits.symbol_allow:
        fail("symbol_list", f"{sym} is not on the allow list ({', '.join(limits.symbol_allow)})")
    if intent.quantity > limits.max_quantity:
        fail("max_quantity", f"{_num(intent.quantity)} > limit {_num(limits.max_quantity)}")

    _size(intent, facts, checks)
    intent = _tick_grid(intent, facts, limits, checks)
    ref_price = _reference(facts, limits)
    needs_quote = intent.limit_price is None and intent.stop_price is None      # priced by the market alone
    if needs_quote and ref_price is None:
        fail("stale_quote", f"{intent.order_type} needs a quote of {sym} no older than {_num(limits.quote_max_age)} s; "
                            f"{_quote_age(facts)}")
    _price_band(intent, facts, limits, ref_price, checks)
    _distances(intent, ref_price, checks)
    if intent.good_till and parse_time(intent.good_till) <= facts.now:
        fail("good_till", f"GoodTillDate {intent.good_till} UTC is not in the future (now "
                          f"{facts.now.astimezone(UTC):%Y%m%d-%H:%M:%S} UTC)")
    _notional(intent, facts, limits, ref_price, checks)
    _position(intent, facts, limits, checks)
    new_orders = 1 + (intent.take_profit is not None) + (intent.stop_loss is not None)
    if facts.open_orders + new_orders > limits.max_open_orders:
        fail("max_open_orders", f"{facts.open_orders} open + {new_orders} new > limit {limits.max_open_orders}")
    if facts.recent_orders + new_orders > limits.max_orders_per_minute:
        fail("max_orders_per_minute", f"{facts.recent_orders} sent in the last minute + {new_orders} new > limit "
                                      f"{limits.max_orders_per_minute}")
    if facts.daily_pnl is None or not math.isfinite(facts.daily_pnl):
        fail("daily_loss", f"no live P&L for {facts.account or 'the account'}: cannot check the daily loss limit")
    elif facts.daily_pnl <= -limits.daily_loss_limit:
        fail("daily_loss", f"today's P&L {_money(facts.daily_pnl)} {limits.base_currency} reached the limit "
                           f"-{_money(limits.daily_loss_limit)} {limits.base_currency}")
    return RiskResult(intent, tuple(checks))


def _quote_age(facts: OrderFacts) -> str:
    if facts.quote_time is None:
        return "there is none"
    return f"the latest is {(facts.now - facts.quote_time).total_seconds():,.1f} s old"


def _fresh(facts: OrderFacts, limits: RiskLimits) -> bool:
    return facts.quote_time is not None and (facts.now - facts.quote_time).total_seconds() <= limits.quote_max_age


def _reference(facts: OrderFacts, limits: RiskLimits) -> float | None:
    """The mid (else last) of a fresh quote, or None."""
    if not _fresh(facts, limits):
        return None
    if _good(facts.bid) and _good(facts.ask) and facts.ask >= facts.bid:
        return (facts.bid + facts.ask) / 2
    return facts.last if _good(facts.last) else None


def _good(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x) and x > 0


def _size(intent: OrderIntent, facts: OrderFacts, checks: list[RiskCheck]) -> None:
    """min_size and size_increment: exact arithmetic on the quantity's decimal text (1e-300 is not 0)."""
    min_size, step = facts.min_size, facts.size_increment
    whole = min_size is None and step is None
    if whole:
        min_size = step = Decimal(1)
    how = " (IB sent no size rules for it: whole units assumed)" if whole else ""
    q = Fraction(repr(float(intent.quantity)))
    if min_size is not None and q < Fraction(min_size):
        checks.append(RiskCheck("min_size", False, f"min_size: quantity {_num(intent.quantity)} is below the minimum "
                                                   f"size {_num(float(min_size))} of {facts.ib_symbol}{how}"))
    elif step is not None and (q / Fraction(step)).denominator != 1:
        checks.append(RiskCheck("size_increment", False,
                                f"size_increment: quantity {_num(intent.quantity)} is not a multiple of the size "
                                f"increment {_num(float(step))} of {facts.ib_symbol}{how}"))


def _tick_grid(intent: OrderIntent, facts: OrderFacts, limits: RiskLimits, checks: list[RiskCheck]) -> OrderIntent:
    changes: dict[str, Any] = {}           # OrderIntent price attribute -> float: replace(**) can't check the names
    notes: list[str] = []
    for col, attr in _PRICE_FIELDS + _DISTANCE_FIELDS:
        p = getattr(intent, attr)
        if p is None or on_tick_grid(p, facts.min_tick):
            continue
        if limits.round_to_tick:
            changes[attr] = round_to_tick(p, facts.min_tick)
            notes.append(f"{col} {_num(p)} rounded to {_num(changes[attr])}")
        else:
            checks.append(RiskCheck("tick_grid", False, f"tick_grid: {col} {_num(p)} is not a multiple of the "
                                                        f"tick {_num(facts.min_tick)}"))
    if changes and any(v <= 0 for v in changes.values()):
        checks.append(RiskCheck("tick_grid", False, "tick_grid: a price rounds to zero"))
        return intent
    if notes:
        checks.append(RiskCheck("tick_grid", True, "tick_grid: " + ", ".join(notes)))
    return replace(intent, **changes) if changes else intent


def _price_band(intent, facts, limits, ref_price, checks) -> None:
    priced = [(col, getattr(intent, attr)) for col, attr in _PRICE_FIELDS if getattr(intent, attr) is not None]
    if not priced:
        return
    if ref_price is None:
        checks.append(RiskCheck("price_band", False, f"price_band: no fresh quote of {facts.ib_symbol} to check "
                                                     f"{priced[0][0]} against ({_quote_age(facts)})"))
        return
    lo, hi = ref_price * (1 - limits.price_band_pct / 100), ref_price * (1 + limits.price_band_pct / 100)
    for col, p in priced:
        if not lo <= p <= hi:
            checks.append(RiskCheck("price_band", False,
                                    f"price_band: {col} {_num(p)} is {abs(p / ref_price - 1) * 100:,.2f}% from the "
                                    f"quote {_num(ref_price)} (band {_num(limits.price_band_pct)}%)"))


def _distances(intent, ref_price, checks) -> None:
    """A trail or offset as large as the price itself is a typing mistake (a stop at zero or a limit
    far through the market), whatever the band."""
    if ref_price is None:
        return
    for col, attr in _DISTANCE_FIELDS:
        d = getattr(intent, attr)
        if d is not None and d >= ref_price:
            checks.append(RiskCheck("price_band", False, f"price_band: {col} {_num(d)} is not below the quote "
                                                         f"{_num(ref_price)}: a distance must be less than the price"))


def _notional(intent, facts, limits, ref_price, checks) -> None:
    touch = facts.ask if intent.action == "BUY" else facts.bid
    if not _fresh(facts, limits) or not _good(touch):
        touch = ref_price
    price = intent.limit_price or intent.stop_price or touch
    if intent.order_type in _MARKET_PRICED and touch is not None:
        price = max(price or 0.0, touch)
    if price is None:
        checks.append(RiskCheck("max_notional", False, f"max_notional: no price to value the order (no fresh "
                                                       f"quote of {facts.ib_symbol})"))
        return
    if facts.fx_rate is None or not math.isfinite(facts.fx_rate) or facts.fx_rate <= 0:
        checks.append(RiskCheck("max_notional", False, f"max_notional: no exchange rate {facts.currency} -> "
                                                       f"{limits.base_currency}"))
        return
    value = intent.quantity * price * (facts.multiplier or 1.0) * facts.fx_rate
    if value > limits.max_notional:
        checks.append(RiskCheck("max_notional", False, f"max_notional: {_money(value)} {limits.base_currency} > limit "
                                                       f"{_money(limits.max_notional)} {limits.base_currency}"))


def _position(intent, facts, limits, checks) -> None:
    if intent.action == "BUY":
        after = facts.position + facts.open_buy + intent.quantity
    else:
        after = facts.position - facts.open_sell - intent.quantity
    if abs(after) > limits.max_position:
        checks.append(RiskCheck("max_position", False,
                                f"max_position: position {_num(facts.position)} with open orders "
                                f"(+{_num(facts.open_buy)}/-{_num(facts.open_sell)}) and this order would be "
                                f"{_num(after)}, limit {_num(limits.max_position)}"))
    if intent.action == "SELL" and after < 0 and not limits.allow_short:
        checks.append(RiskCheck("allow_short", False,
                                f"allow_short: selling {_num(intent.quantity)} with position {_num(facts.position)} "
                                f"(open sells {_num(facts.open_sell)}) would leave {_num(after)}; allow_short is off"))


def check_whatif(init_margin_change: float | None, available_funds: float | None, currency: str) -> RiskCheck:
    """The what-if margin rule: IB's initial margin change of the order (OrderState.initMarginChange)
    must not exceed the account's AvailableFunds (both in ``currency``, the account's)."""
    if init_margin_change is None or available_funds is None or not math.isfinite(init_margin_change) \
            or not math.isfinite(available_funds):
        return RiskCheck("whatif_margin", False, "whatif_margin: IB gave no margin or available funds for the order")
    if init_margin_change > available_funds:
        return RiskCheck("whatif_margin", False, f"whatif_margin: initial margin +{_money(init_margin_change)} "
                                                 f"{currency} > available funds {_money(available_funds)} {currency}")
    return RiskCheck("whatif_margin", True)
