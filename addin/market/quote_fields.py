"""Quote fields as worksheet formulas name them, and a BoardQuote field as a cell value.

Shared by the quote UDFs (``udfs.functions.IB_QUOTE`` / ``IB_QUOTES``) and the RTD server
(``addin.service.rtd``), so ``=IB_QUOTE("AAPL","bid")`` and ``=RTD("ibxl.rtd",,"AAPL","bid")`` accept the
same field names and show the same value. Units are BoardQuote's (``addin.market.quotes``): prices in the
contract's currency, sizes as IB sends them, ``change %`` a fraction (0.0123 = 1.23 %), times in UTC; an
option's iv a fraction per year, its greeks per share (vega per volatility point, theta per day), as IB
computes them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from .quotes import BoardQuote

__all__ = ["QUOTE_FIELDS", "QuoteFailed", "QuoteWaiting", "field_attr", "quote_value"]

# Field names a quote function accepts (lower case, spaces and underscores ignored) -> BoardQuote attribute.
QUOTE_FIELDS = {
    "price": "price", "bid": "bid", "ask": "ask", "last": "last", "mid": "mid", "spread": "spread",
    "bidsize": "bid_size", "asksize": "ask_size", "lastsize": "last_size", "volume": "volume",
    "open": "open", "high": "high", "low": "low", "close": "close", "change": "change",
    "changepct": "change_pct", "change%": "change_pct", "updated": "updated", "lasttime": "last_time",
    "datatype": "data_type", "stale": "stale", "symbol": "symbol",
    # options (IB's tickOptionComputation; empty while IB has not computed them): the model's values ...
    "iv": "iv", "impliedvol": "iv", "delta": "delta", "gamma": "gamma", "vega": "vega", "theta": "theta",
    "undprice": "und_price", "underprice": "und_price", "modelprice": "model_price", "model": "model_price",
    "openinterest": "open_interest",
    # ... and the bid's and the ask's ("bid iv", "ask delta")
    **{f"{side}{g}": f"{side}_{g}" for side in ("bid", "ask") for g in ("iv", "delta", "gamma", "vega", "theta")},
}
# Attributes shown before the first tick (they do not come from a tick).
_WITHOUT_TICK = ("symbol", "stale", "data_type")


class QuoteWaiting(Exception):
    """No quote yet (the line has sent no tick): a cell shows ``#IBXL: <message>`` until one arrives."""


class QuoteFailed(Exception):
    """The line failed at IB; the message is the quote's own error text ("IB 200: ..."), shown as ``#IB 200: ...``."""


def field_attr(name: Any, default: str = "price", what: str = "field") -> str:
    """The BoardQuote attribute for a field name as typed in a formula ("bid", "Bid Size", "change %";
    blank or None -> ``default``). Raises ValueError naming ``what`` and the accepted names."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return default
    key = str(name).strip().lower().replace(" ", "").replace("_", "")
    if key not in QUOTE_FIELDS:
        raise ValueError(f"{what}: {name!r} is not one of {', '.join(sorted(set(QUOTE_FIELDS)))}")
    return QUOTE_FIELDS[key]


def quote_value(q: BoardQuote, attr: str) -> Any:
    """The value of ``q``'s attribute ``attr`` (a QUOTE_FIELDS value) as a cell holds it: a float, a bool,
    text, a naive UTC datetime (Excel has no time zones) or None (nothing sent yet, or NaN). ``price`` is
    the last trade, else the mid. Raises QuoteFailed when the line failed, QuoteWaiting before its first
    tick, or while the field is still empty and the line not yet priced (one side in, the other not:
    except for symbol, stale and data type)."""
    if q.error:
        raise QuoteFailed(q.error)
    value = (q.last if q.last is not None else q.mid) if attr == "price" else getattr(q, attr)
    if attr not in _WITHOUT_TICK and (q.updated is None or (value is None and not q.priced)):
        # before the first tick, or one side in and the other not yet: a blank would read as "no price"
        raise QuoteWaiting(f"waiting for the first quote of {q.symbol}")
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
