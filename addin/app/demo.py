"""The demo's sample orders: priced from the live quote when they are placed, and judged afterwards.

The template's sample rows (``workbooks/build.py``: DEMO-001.. and BAD-*) carry no fixed prices: a
price typed at build time is right only at the hour it was typed, and the paper market moves with the
clock. Just before the orders step, ``price_samples`` writes each priced cell from the instrument's
quote at that moment, as a trader prices a bracket: the entry near the touch, the take-profit and
the stop-loss a stated percentage away, everything rounded onto the contract's tick grid.
``verdicts`` then checks the outcome: every DEMO-* row working or filled at IB, every BAD-* row
refused for the rule it exists to show. ``ibxl demo`` fails when either is not so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd

from ..config import RiskSettings, Settings
from ..orders.risk import round_to_tick
from . import macros

# Prices of the sample rows: (column, quote side, offset as a fraction of that price, extra ticks).
# "extra ticks" moves a price off the grid on purpose (0.3 tick), for the tick_grid sample.
PRICING: dict[str, list[tuple[str, str, float, float]]] = {
    "DEMO-002": [("LimitPrice", "bid", -0.01, 0)],                 # a resting buy 1% under the bid
    "DEMO-003": [("StopPrice", "ask", +0.02, 0)],                  # a buy stop 2% over the ask
    "DEMO-004": [("LimitPrice", "ask", 0.0, 0),                    # bracket: entry at the ask,
                 ("TakeProfit", "ask", +0.03, 0),                  # take-profit 3% above it,
                 ("StopLoss", "ask", -0.03, 0)],                   # stop-loss 3% below it
    "DEMO-006": [("LimitPrice", "ask", 0.0, 0)],                   # crypto: a marketable limit at the ask
    "DEMO-007": [("LimitPrice", "ask", 0.0, 0)],                   # the option: a marketable limit at its ask
    "BAD-PRICE-FAR-OFF": [("LimitPrice", "bid", -0.5, 0)],         # half the bid: outside the 5% band
    "BAD-OFF-TICK-GRID": [("LimitPrice", "bid", -0.01, 0.3)],      # 1% under the bid, 0.3 tick off the grid
}

# Option sample rows: Ref -> (underlying, right, minimum days to expiry). The contract is chosen when the
# demo places the row: the first listed expiry at least that many days ahead, the strike nearest the
# underlying's mid (rt.option_expiries / option_strikes: reqSecDefOptParams).
OPTION_SAMPLES: dict[str, tuple[str, str, int]] = {"DEMO-007": ("AAPL", "C", 7)}

# What each sample row must end as: working or done at IB, or refused by the named rule (the start of
# the row's Message: a risk rule's name, or the input column that failed to parse).
WORKING_OR_DONE = frozenset({"Filled", "Submitted", "PreSubmitted"})
REFUSED_FOR = {
    "BAD-QUANTITY-TOO-BIG": "max_quantity",
    "BAD-PRICE-FAR-OFF": "price_band",
    "BAD-OFF-TICK-GRID": "tick_grid",
    "BAD-TEXT-QUANTITY": "Quantity",
    "BAD-UNKNOWN-SYMBOL": "Symbol",
}


@dataclass(frozen=True)
class Verdict:
    """One sample row's outcome: ``ok`` when it ended as intended; ``line`` says so in words."""

    ref: str
    ok: bool
    line: str


def demo_settings() -> Settings:
    """The demo's settings: the built-in defaults (never the user's config file), with options ("OPT")
    allowed so the option sample row trades. Options are off by default: a user allows them in [risk]
    allowed_sec_types."""
    risk = RiskSettings()
    return Settings(risk=dataclasses.replace(risk, allowed_sec_types=(*risk.allowed_sec_types, "OPT")))


def price_samples(book, rt, quote_timeout: float = 10.0) -> dict[str, dict[str, float]]:
    """Write the priced cells of the sample rows still pending (Status empty) from a fresh snapshot of
    each row's instrument (``rt.market.snapshot``). Returns ``{Ref: {column: price}}`` as written.
    Rows not in PRICING, and rows already sent, are left alone. Raises RuntimeError naming the Ref
    when its instrument has no bid or ask to price from."""
    info = macros.orders_table(book)
    rows = macros.order_rows(book, info, None, pending_only=True)
    written: dict[str, dict[str, float]] = {}
    for row, values in rows.iterrows():
        ref = str(values.get("Ref") or "").strip()
        recipe = PRICING.get(ref)
        if not recipe:
            continue
        symbol = str(values["Symbol"]).strip()
        if ref in OPTION_SAMPLES:
            symbol = choose_option(rt, *OPTION_SAMPLES[ref], quote_timeout=quote_timeout)
            book.write(info.sheet, int(row), info.column("Symbol"), [[symbol]])
        tick = rt.contracts.qualify(symbol).minTick
        quote = rt.market.snapshot(symbol, timeout=quote_timeout)
        prices = {}
        for column, side, offset, extra_ticks in recipe:
            base = getattr(quote, side)
            if base is None or not math.isfinite(base) or base <= 0:
                raise RuntimeError(f"{ref}: no {side} for {symbol} to price {column} from")
            price = round_to_tick(base * (1 + offset), tick)
            if extra_ticks:                       # off the grid on purpose, by a fraction of a tick
                price = round(price + extra_ticks * tick, 10)
            prices[column] = price
            book.write(info.sheet, int(row), info.column(column), [[prices[column]]])
        written[ref] = prices
    return written


def choose_option(rt, underlying: str, right: str, min_days: int, quote_timeout: float = 10.0) -> str:
    """The option text (``AAPL 20261218 230 C``) of the first expiry listed on ``underlying`` at least
    ``min_days`` after today (New York; the last listed one if none is that far) and the strike nearest
    the underlying's mid now. Raises ValueError when IB lists no options on it."""
    expiries = [e.split()[0] for e in rt.option_expiries(underlying)]      # "YYYYMMDD CLASS" -> the date
    if not expiries:
        raise ValueError(f"{underlying}: IB lists no options")
    today = pd.Timestamp.now(tz="America/New_York").date()
    far = [e for e in expiries if (pd.Timestamp(e).date() - today).days >= min_days]
    expiry = (far or expiries)[0 if far else -1]
    quote = rt.market.snapshot(underlying, timeout=quote_timeout)
    mid = quote.mid if quote.mid is not None else quote.last
    strike = min(rt.option_strikes(underlying, expiry), key=lambda k: abs(k - mid))
    return f"{underlying} {expiry} {strike:g} {right}"


def verdicts(orders: pd.DataFrame | None) -> list[Verdict]:
    """Each sample row's outcome from the saved Orders rows (Ref, Status, Message): DEMO-* must be
    Filled, Submitted or PreSubmitted; BAD-* must be Refused or Error with the Message starting with
    its rule (REFUSED_FOR). A sample row missing from the table is a failed verdict."""
    by_ref = {} if orders is None else {str(r.get("Ref")): r for _, r in orders.iterrows()}
    out = []
    for ref in sorted(r for r in by_ref if r.startswith("DEMO-")):
        status, message = by_ref[ref].get("Status"), by_ref[ref].get("Message") or ""
        ok = status in WORKING_OR_DONE
        out.append(Verdict(ref, ok, f"{ref}: {status}" + ("" if ok else f" (a good row must reach IB: {message})")))
    for ref, rule in REFUSED_FOR.items():
        row = by_ref.get(ref)
        if row is None:
            out.append(Verdict(ref, False, f"{ref}: missing from the Orders Table"))
            continue
        status, message = row.get("Status"), str(row.get("Message") or "")
        ok = status in ("Refused", "Error") and message.startswith(rule)
        out.append(Verdict(ref, ok, f"{ref}: refused on purpose by {rule}" if ok else
                           f"{ref}: expected a refusal by {rule}, got {status}: {message}"))
    return out
