"""What an edited row asks of the orders it already placed: a modification, a release, or nothing.

IB modifies an order when placeOrder is sent again with the same orderId, from the client that placed
it, and it cannot change what the order *is*: its contract, side, type, account or OCA group. So a
row whose Ref is a working order is compared leg by leg (the entry, and its bracket children
``Ref.TP`` / ``Ref.SL``) with what the journal holds, which is what IB last showed
(:func:`held_fields`, written by :mod:`addin.orders.sync` from every openOrder):
- no difference: unchanged, nothing is sent;
- quantity, prices, trail, offset, TIF, GoodTillDate or OutsideRTH changed: those legs are modified
  (a bracket's children follow the entry's quantity, and TakeProfit / StopLoss are the children's
  prices);
- Transmit FALSE -> TRUE on an order held at TWS: the whole bracket is released (placed again with the
  same order ids, the last leg transmitting);
- anything IB cannot change, a leg added or removed, a finished leg changed, or Transmit TRUE -> FALSE:
  refused with the reason (:class:`AmendRefused`), nothing is sent and the order stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ib.contracts import InstrumentError, parse
from ..protocol.orders import BLANK, order_type
from ..protocol.unset import is_unset

__all__ = ["AmendPlan", "LegChange", "AmendRefused", "plan", "held_fields", "describe", "same", "COLUMN_OF"]

COLUMN_OF = {"symbol": "Symbol", "action": "Action", "order_type": "OrderType", "account": "Account",
             "oca_group": "OCAGroup", "quantity": "Quantity", "limit_price": "LimitPrice", "stop_price": "StopPrice",
             "trail_amount": "TrailAmount", "trail_percent": "TrailPercent", "offset": "Offset", "tif": "TIF",
             "good_till": "GoodTillDate", "outside_rth": "OutsideRTH", "transmit": "Transmit",
             "take_profit": "TakeProfit", "stop_loss": "StopLoss"}
# What IB cannot modify, with the words for it.
_FIXED = {"symbol": "contract", "action": "side", "order_type": "order type", "account": "account",
          "oca_group": "OCA group"}
# Not compared on a leg: the Ref itself, and the entry's TakeProfit/StopLoss (its children carry them).
_IGNORED = {"ref", "row", "take_profit", "stop_loss"}
_CHILD_COLUMN = {".TP": "TakeProfit", ".SL": "StopLoss"}


class AmendRefused(Exception):
    """The row asks for a change IB cannot make (or that would not be safe); ``column`` names the cell."""

    def __init__(self, column: str, message: str):
        super().__init__(f"{column}: {message}" if column else message)
        self.column = column


@dataclass(frozen=True)
class LegChange:
    """One leg to send again: its Ref, journal record, the full new fields and {key: (old, new)}."""

    ref: str
    record: dict
    fields: dict
    changes: dict[str, tuple[Any, Any]]


@dataclass(frozen=True)
class AmendPlan:
    """The legs to send again (bracket order), and whether this releases orders held at TWS. No legs:
    the row matches what IB holds."""

    legs: tuple[LegChange, ...]
    release: bool

    @property
    def unchanged(self) -> bool:
        return not self.legs


def same(key: str, new: Any, old: Any) -> bool:
    """Whether a field's new value leaves the order as it is (a Symbol compares as an instrument, a
    blank Account as the order's own, numbers within 1e-9 relative)."""
    if key == "symbol":
        try:
            return parse(str(new)) == parse(str(old))
        except InstrumentError:
            return False
    if key == "account" and not new:          # a blank Account means the order's own
        return True
    if isinstance(new, (int, float)) and isinstance(old, (int, float)) and not isinstance(new, bool):
        return abs(float(new) - float(old)) <= 1e-9 * max(1.0, abs(float(old)))
    if new in (None, "") and old in (None, ""):
        return True
    return bool(new == old)


def _diff(new: dict, old: dict) -> dict[str, tuple[Any, Any]]:
    keys = (set(new) | set(old)) - _IGNORED
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if not same(k, new.get(k), old.get(k))}


def _column(ref: str, entry_ref: str, key: str) -> str:
    """The row's column a leg's field comes from (a child's limit/stop is TakeProfit/StopLoss)."""
    suffix = ref[len(entry_ref):]
    if suffix and key in ("limit_price", "stop_price"):
        return _CHILD_COLUMN.get(suffix.upper(), COLUMN_OF[key])
    return COLUMN_OF.get(key, key)


def plan(entry_ref: str, desired: list[tuple[str, dict, str | None]], held: dict[str, dict | None],
         held_children: list[str]) -> AmendPlan:
    """Compare the row's legs (``desired``: (ref, fields, parent ref), as the desk builds them) with the
    journal's records (``held``: ref -> record or None; ``held_children``: the children's Refs the
    journal has). Returns the AmendPlan; raises AmendRefused naming the column."""
    wanted = {ref.upper() for ref, _, _ in desired}
    for child in held_children:
        if child.upper() not in wanted:
            col = _CHILD_COLUMN.get(child[len(entry_ref):].upper(), "TakeProfit")
            raise AmendRefused(col, f"the working bracket has {child}; a child cannot be removed by blanking "
                                    f"{col} (cancel {child} instead); nothing was sent")
    legs: list[LegChange] = []
    release = False
    for ref, fields, _ in desired:
        rec = held.get(ref)
        if rec is None:
            col = _CHILD_COLUMN.get(ref[len(entry_ref):].upper(), "Ref")
            raise AmendRefused(col, f"the working order has no {ref}; a bracket child cannot be added to a working "
                                    f"order (cancel it and place a new row); nothing was sent")
        changes = _diff(fields, rec["fields"])
        for key, (old, new) in changes.items():
            if key in _FIXED:
                raise AmendRefused(COLUMN_OF[key], f"IB cannot change an order's {_FIXED[key]} ({_show(old)} -> "
                                                   f"{_show(new)}); {entry_ref} is left as it is: cancel it and "
                                                   f"place a new row")
        if "transmit" in changes:
            old, new = changes["transmit"]
            if old is not False:
                raise AmendRefused("Transmit", f"{entry_ref} was transmitted; it cannot be held back at TWS "
                                               f"(cancel it instead); nothing was sent")
            if new:
                release = True
            else:                                  # a child's own transmit flag is the desk's business
                del changes["transmit"]
        if not changes:
            continue
        if rec["state"] != "working":
            key = next(iter(changes))
            raise AmendRefused(_column(ref, entry_ref, key),
                               f"{ref} is {rec['status'] or rec['state']}: it can no longer change; nothing was sent")
        legs.append(LegChange(ref, rec, fields, changes))
    if release:            # released as placed: every working leg again, the last one transmitting
        changed = {leg.ref for leg in legs}
        records = {ref: rec for ref, rec in held.items() if rec is not None}     # every desired leg, checked above
        legs = [next((leg for leg in legs if leg.ref == ref), None) or LegChange(ref, records[ref], fields, {})
                for ref, fields, _ in desired if ref in changed or records[ref]["state"] == "working"]
    return AmendPlan(tuple(legs), release)


def describe(plan_: AmendPlan, entry_ref: str) -> str:
    """``"LimitPrice 235 -> 236, Quantity 1 -> 5"`` (each row column once)."""
    parts: dict[str, str] = {}
    for leg in plan_.legs:
        for key, (old, new) in leg.changes.items():
            if key == "transmit":                  # said by the outcome (released)
                continue
            parts.setdefault(_column(leg.ref, entry_ref, key), f"{_show(old)} -> {_show(new)}")
    return ", ".join(f"{col} {change}" for col, change in parts.items())


def _show(v: Any) -> str:
    if v is None or v == "":
        return "blank"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _price(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if is_unset(v) or x != x or abs(x) >= 1e30 else x


def held_fields(fields: dict, order: Any) -> dict:
    """The journal's ``fields`` of a leg updated with what IB's openOrder ``order`` holds: quantity,
    the prices its order type uses, trail, offset and TIF. Fields IB does not echo reliably (Transmit,
    GoodTillDate) are kept; a value IB leaves unset keeps the journal's."""
    out = dict(fields)
    kind_code = fields.get("order_type")
    try:
        kind = order_type(str(kind_code))
    except KeyError:
        return out
    qty = _price(getattr(order, "totalQuantity", None))
    if qty is not None and qty > 0:
        out["quantity"] = qty
    lmt, aux = _price(getattr(order, "lmtPrice", None)), _price(getattr(order, "auxPrice", None))
    if kind.need("LimitPrice") != BLANK and lmt is not None and (lmt > 0 or fields.get("limit_price") is not None):
        out["limit_price"] = lmt
    if kind.code in ("STP", "STP LMT", "MIT", "LIT") and aux is not None and aux > 0:
        out["stop_price"] = aux
    if kind.trail:
        pct = _price(getattr(order, "trailingPercent", None))
        if fields.get("trail_percent") is not None and pct is not None and pct > 0:
            out["trail_percent"] = pct
        elif fields.get("trail_amount") is not None and aux is not None and aux > 0:
            out["trail_amount"] = aux
        offset = _price(getattr(order, "lmtPriceOffset", None))
        if kind.code == "TRAIL LIMIT" and offset is not None and offset > 0:
            out["offset"] = offset
    if kind.code == "REL" and fields.get("offset") is not None and aux is not None and aux > 0:
        out["offset"] = aux
    tif = str(getattr(order, "tif", "") or "").strip().upper()
    if tif:
        out["tif"] = tif
    return out
