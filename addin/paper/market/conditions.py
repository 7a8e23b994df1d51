"""Order conditions (``Order.conditions``, ibapi's ``order_condition`` classes) at the paper broker:
which ones the gateway accepts, and whether a list of them is met now.

IB's semantics (TWS API "Order Conditioning"): conditions either *submit* an order (it waits,
PreSubmitted, until they are met, then goes live) or, with ``conditionsCancelOrder``, *cancel* a working
order once they are met. Each condition's ``isConjunctionConnection`` joins it to the next one: True
"and", False "or". IB does not document precedence; the gateway gives "and" the usual precedence over
"or" (``a and b or c`` = ``(a and b) or c``). ``conditionsIgnoreRth`` is accepted and changes nothing
(the paper market trades around the clock). Comparisons are inclusive, as TWS shows them (">=", "<=").

What each condition watches in the paper market:

* Price (type 1): the instrument ``conId`` names, by ``triggerMethod``: 0 default = the last trade
  (the bid/ask rule for instruments without trades, e.g. FX); 2 last and 3 double last = the last
  trade; 1 double bid/ask and 4 bid/ask = the ask for "is more", the bid for "is less" (the side that
  reaches the level first); 7 last-or-bid/ask = the last trade, else the bid/ask rule; 8 midpoint = the
  bid/ask midpoint. The "double" methods (two consecutive prices at the level) are evaluated as single
  ones: the replay's quotes are evaluated once per step.
* Time (3): the replay clock against ``time`` ('yyyyMMdd HH:mm:ss [zone]', no zone = UTC, or
  'yyyyMMdd-HH:mm:ss' UTC); "is more" = at or after it, "is less" = at or before it.
* Margin (4): the order's account's margin cushion in percent: excess liquidity / net liquidation x 100.
* Execution (5): an execution of ``symbol`` and ``secType`` (``exchange`` ignored: fills report the
  venue, not SMART) in the order's account since the order was placed.
* Volume (6): the instrument's volume of the current day (quote.volume; instruments without volume,
  FX and indices, are refused at placement).
* Percent change (7): the instrument's change from the previous close, in percent: (mark - close) /
  close x 100, mark = last trade else bid/ask midpoint.

A condition that cannot be evaluated now (no quote) counts as not met.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from ibapi import order_condition as oc

from ...protocol.times import UTC, IBTimeError, parse_time

if TYPE_CHECKING:  # pragma: no cover
    from .market import Instrument, Quote

__all__ = ["Facts", "conditions_problem", "conditions_met", "condition_instant"]

SUPPORTED = (oc.PriceCondition, oc.TimeCondition, oc.MarginCondition, oc.ExecutionCondition,
             oc.VolumeCondition, oc.PercentChangeCondition)
BID_ASK_METHODS = (1, 4)         # double bid/ask, bid/ask
LAST_METHODS = (2, 3)            # last, double last
MIDPOINT_METHOD = 8
NO_VOLUME_SEC_TYPES = ("CASH", "IND")   # the replay has no day volume for FX and indices


class Facts(Protocol):
    """What conditions read, from the broker's point of view of one order."""

    def now(self) -> datetime: ...

    def instrument(self, con_id: int) -> "Instrument | None": ...

    def quote(self, inst: "Instrument") -> "Quote": ...

    def margin_cushion(self) -> float | None: ...

    def executed(self, sec_type: str, symbol: str) -> bool: ...


@lru_cache(maxsize=256)
def condition_instant(text: str) -> datetime:
    """A TimeCondition's ``time`` as an aware UTC instant; raises IBTimeError when unreadable."""
    return parse_time(text.strip(), UTC)


def conditions_problem(conditions, instrument) -> str | None:
    """Why ``conditions`` cannot be accepted (a reason for 201), or None. ``instrument(con_id)`` finds
    a contract condition's instrument (None when unknown)."""
    for i, cond in enumerate(conditions or []):
        where = f"condition {i + 1}"
        if not isinstance(cond, SUPPORTED):
            return f"The order condition type of {where} is not supported."
        if isinstance(cond, oc.TimeCondition):
            try:
                condition_instant(cond.time or "")
            except IBTimeError:
                return f"The time '{cond.time}' of {where} is not a valid date and time."
        elif isinstance(cond, oc.ContractCondition):
            inst = instrument(int(cond.conId or 0))
            if inst is None:
                return f"The contract (conId {cond.conId}) of {where} was not found."
            if isinstance(cond, oc.VolumeCondition) and inst.contract.secType in NO_VOLUME_SEC_TYPES:
                return f"{inst.contract.symbol} has no volume: {where} can never be met."
        elif isinstance(cond, oc.ExecutionCondition) and not (cond.symbol or "").strip():
            return f"The execution condition ({where}) needs a symbol."
    return None


def conditions_met(conditions, facts: Facts) -> bool:
    """The conditions joined by their conjunctions, "and" before "or"; an empty list is met."""
    conditions = list(conditions or [])
    if not conditions:
        return True
    terms: list[bool] = []         # each term: an "and" chain
    chain = True
    for i, cond in enumerate(conditions):
        chain = chain and _met(cond, facts)
        last = i == len(conditions) - 1
        if last or not cond.isConjunctionConnection:
            terms.append(chain)
            chain = True
    return any(terms)


def _compare(value: float | None, level: float, is_more: bool) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value >= level if is_more else value <= level


def _met(cond, facts: Facts) -> bool:
    is_more = bool(getattr(cond, "isMore", True))
    if isinstance(cond, oc.TimeCondition):
        return facts.now() >= condition_instant(cond.time) if is_more else facts.now() <= condition_instant(cond.time)
    if isinstance(cond, oc.MarginCondition):
        return _compare(facts.margin_cushion(), float(cond.percent), is_more)
    if isinstance(cond, oc.ExecutionCondition):
        return facts.executed((cond.secType or "").upper(), (cond.symbol or "").upper())
    inst = facts.instrument(int(cond.conId or 0))
    if inst is None:
        return False
    q = facts.quote(inst)
    if isinstance(cond, oc.PriceCondition):
        return _compare(_watched_price(inst, q, int(cond.triggerMethod or 0), is_more), float(cond.price), is_more)
    if isinstance(cond, oc.VolumeCondition):
        return _compare(_positive(q.volume), float(cond.volume), is_more)
    if isinstance(cond, oc.PercentChangeCondition):
        return _compare(_percent_change(inst, q), float(cond.changePercent), is_more)
    return False


def _positive(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) and v >= 0 else None


def _price(v) -> float | None:
    v = _positive(v)
    return v if v else None


def _midpoint(q: "Quote") -> float | None:
    bid, ask = _price(q.bid), _price(q.ask)
    return None if bid is None or ask is None else (bid + ask) / 2.0


def _watched_price(inst: "Instrument", q: "Quote", method: int, is_more: bool) -> float | None:
    """The price a PriceCondition compares, by IB's trigger method (see the module docstring)."""
    last = _price(q.last) if getattr(inst, "has_trades", True) else None
    side = _price(q.ask if is_more else q.bid)
    if method == MIDPOINT_METHOD:
        return _midpoint(q)
    if method in BID_ASK_METHODS:
        return side
    if method in LAST_METHODS:
        return last
    return last if last is not None else side     # 0 default, 7 last-or-bid/ask


def _percent_change(inst: "Instrument", q: "Quote") -> float | None:
    close = _price(q.close)
    mark = _price(q.last) if getattr(inst, "has_trades", True) else None
    mark = mark if mark is not None else _midpoint(q)
    if close is None or mark is None:
        return None
    return (mark - close) / close * 100.0
