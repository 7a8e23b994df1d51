"""The bounds an order's numbers must keep before the broker does any arithmetic with them.

A client can send any text as a quantity or a price: ``1E+999999`` decodes to a valid Decimal whose
formatting alone takes seconds, ``1E+5000`` fills into a position no valuation can handle, ``1e308``
overflows every product to inf and NaN. :func:`order_value_problem` is the broker's first check of a
placement (new order, modify, whatIf): it looks only at signs, exponents and finiteness, never
multiplies or formats a value, so it costs the same for ``1E+999999`` as for ``100``.

Bounds (the gateway's, in IB's spirit; IB documents no single API limit):

* quantity: finite, above 0, below ``MAX_QUANTITY`` (1e9 units: far above any order IB accepts;
  IB's large-order check, "LGSZ", rejects much smaller ones with 201) and with at most
  ``MAX_QUANTITY_DECIMALS`` (8) decimals (IB's finest size increment, crypto's 0.00000001);
* prices (lmtPrice, auxPrice, trailStopPrice, lmtPriceOffset, trailingPercent) and cashQty: unset, or
  finite, not negative (the paper market has no negative prices) and below ``MAX_PRICE`` (1e9);
* order condition values: present, finite and below ``MAX_PRICE`` in magnitude (a price, percent
  change and margin cushion may be negative; a volume may not).

Every answer is a reason for IB's 201 "Order rejected - reason:", worded in IB's style (ours: IB
publishes no text for these cases).
"""

from __future__ import annotations

import math
from decimal import Decimal

from ibapi import order_condition as oc
from ibapi.order import Order

from ...protocol.unset import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_INTEGER

__all__ = ["MAX_QUANTITY", "MAX_QUANTITY_DECIMALS", "MAX_PRICE", "order_value_problem", "quantity_problem"]

MAX_QUANTITY = Decimal(1_000_000_000)
MAX_QUANTITY_DECIMALS = 8
MAX_PRICE = 1e9
#: The price fields the broker reads or echoes; each may be unset.
PRICE_FIELDS = ("lmtPrice", "auxPrice", "trailStopPrice", "lmtPriceOffset", "trailingPercent", "cashQty")
_SHOWN = 40   # characters of a bad value quoted in the reason (a quantity can be megabytes of text)


def _shown(value) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def quantity_problem(value) -> str | None:
    """Why ``value`` (a Decimal, float or int; unset = missing) cannot be an order quantity, or None.
    Reads the sign, the exponent and the digits' count only: constant time for any exponent."""
    if value is None or (isinstance(value, Decimal) and not value.is_nan() and value == UNSET_DECIMAL):
        return "The order quantity is missing."
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"The order quantity {_shown(value)} is not a finite number."
        value = Decimal(repr(value))
    elif not isinstance(value, Decimal):
        try:
            value = Decimal(int(value))
        except (TypeError, ValueError):
            return f"The order quantity {_shown(value)} is not a number."
    if not value.is_finite():
        return f"The order quantity {_shown(value)} is not a finite number."
    if value.is_signed() or value.is_zero():
        return "The order quantity must be greater than zero."
    if value.adjusted() >= MAX_QUANTITY.adjusted():      # the order of magnitude: no arithmetic
        return f"The order quantity {_shown(value)} is above the maximum of {MAX_QUANTITY:,}."
    # Below 1e9 the value has few integer digits; trailing zeros of the coefficient do not count.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len(("".join(map(str, digits))).rstrip("0") or "0")
    if -(exponent + trailing) > MAX_QUANTITY_DECIMALS:
        return f"The order quantity {_shown(value)} has more than {MAX_QUANTITY_DECIMALS} decimals."
    return None


def _is_unset(v) -> bool:
    return v is None or v == UNSET_DOUBLE


def price_problem(name: str, value, negative_allowed: bool = False, required: bool = False) -> str | None:
    """Why a price-like field cannot be accepted, or None (unset is accepted unless ``required``)."""
    if _is_unset(value) or (required and value == UNSET_INTEGER):   # ints: a volume
        return f"The {name} is missing." if required else None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"The {name} {_shown(value)} is not a number."
    if not math.isfinite(v):
        return f"The {name} {_shown(value)} is not a finite number."
    if v < 0 and not negative_allowed:
        return f"The {name} {_shown(value)} may not be negative."
    if abs(v) >= MAX_PRICE:
        return f"The {name} {_shown(value)} is above the maximum of {MAX_PRICE:,.0f}."
    return None


def _condition_problem(i: int, cond) -> str | None:
    where = f"condition {i + 1}"
    if isinstance(cond, oc.PriceCondition):
        return price_problem(f"price of {where}", cond.price, negative_allowed=True, required=True)
    if isinstance(cond, oc.PercentChangeCondition):
        return price_problem(f"percent change of {where}", cond.changePercent, negative_allowed=True,
                             required=True)
    if isinstance(cond, oc.MarginCondition):
        return price_problem(f"margin cushion of {where}", cond.percent, negative_allowed=True, required=True)
    if isinstance(cond, oc.VolumeCondition):
        return price_problem(f"volume of {where}", cond.volume, required=True)
    return None


def order_value_problem(order: Order) -> str | None:
    """The first reason ``order``'s numbers are out of bounds (quantity, prices, condition values), or
    None. Constant time per field: nothing is multiplied, formatted in full or stored."""
    problem = quantity_problem(order.totalQuantity)
    if problem:
        return problem
    for name in PRICE_FIELDS:
        problem = price_problem(name, getattr(order, name, None))
        if problem:
            return problem
    for i, cond in enumerate(order.conditions or []):
        problem = _condition_problem(i, cond)
        if problem:
            return problem
    return None
