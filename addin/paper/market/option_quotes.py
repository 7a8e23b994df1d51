"""Option quotes of the paper market: Black-Scholes on the underlying's replayed mid price, with a
stated smile, quoted on the option tick grid (docs/paper-market.md, "Option quotes").

The model (every constant here is the documented one):

* vol(K) = BASE_VOL[symbol] + SKEW x m + SMILE x m^2 with m = ln(K / S) (S: the underlying's mid),
  floored at MIN_VOL; no term structure.
* Black-Scholes with RATE (continuous), no dividends (pvDividend 0), T = time to the expiry's last
  trade (16:00 New York) in years of 365 days, at least MIN_T. The options are American, priced as
  European: exact for calls without dividends, a small underestimate for deep in-the-money puts.
* Quote: the model price rounded to the grid (0.01 under 3.00, 0.05 from 3.00), then bid = model -
  half spread and ask = model + half spread, both on the grid, half spread = max(one tick, 2 % of
  the model price); bid never below 0 (a worthless option is bid 0). Sizes BOOK_SIZE contracts.
  No trades (no last, no volume) yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ibapi.contract import ContractDetails

from .options import LAST_TRADE, OPTION_RULE

BASE_VOL = {"AAPL": 0.28, "MSFT": 0.25, "SPY": 0.17}
SKEW = -0.15
SMILE = 0.40
MIN_VOL = 0.05
RATE = 0.04
MIN_T = 1.0 / (365 * 24 * 60)     # one minute
SPREAD = 0.02
BOOK_SIZE = 10.0
_NY = ZoneInfo("US/Eastern")


@dataclass(frozen=True)
class OptionQuote:
    """One option's market: bid/ask on the grid, the model's numbers (per share, per unit of vol for
    vega, per calendar day for theta) and the underlying price they used."""

    bid: float
    ask: float
    bid_size: float
    ask_size: float
    model: float
    vol: float
    delta: float
    gamma: float
    vega: float
    theta: float
    und_price: float
    bid_vol: float
    ask_vol: float


def tick_for(price: float) -> float:
    """The option price increment at ``price`` (market rule 32)."""
    step = OPTION_RULE[0][1]
    for low, inc in OPTION_RULE:
        if price >= low:
            step = inc
    return step


def to_grid(price: float, direction: int = 0) -> float:
    """``price`` on the option grid: nearest (0), down (-1) or up (+1)."""
    tick = tick_for(price)
    n = price / tick
    k = math.floor(n + 1e-9) if direction < 0 else math.ceil(n - 1e-9) if direction > 0 else round(n)
    return round(k * tick, 2)


def smile_vol(symbol: str, strike: float, und: float) -> float:
    m = math.log(strike / und)
    return max(MIN_VOL, BASE_VOL.get(symbol, 0.25) + SKEW * m + SMILE * m * m)


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _npdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def black_scholes(right: str, s: float, k: float, t: float, vol: float, r: float = RATE):
    """(price, delta, gamma, vega per 1.00 of vol, theta per calendar day) of a European option."""
    sq = vol * math.sqrt(t)
    d1 = (math.log(s / k) + (r + 0.5 * vol * vol) * t) / sq
    d2 = d1 - sq
    disc = math.exp(-r * t)
    if right == "C":
        price, delta = s * _ncdf(d1) - k * disc * _ncdf(d2), _ncdf(d1)
        theta = -s * _npdf(d1) * vol / (2 * math.sqrt(t)) - r * k * disc * _ncdf(d2)
    else:
        price, delta = k * disc * _ncdf(-d2) - s * _ncdf(-d1), _ncdf(d1) - 1.0
        theta = -s * _npdf(d1) * vol / (2 * math.sqrt(t)) + r * k * disc * _ncdf(-d2)
    return price, delta, _npdf(d1) / (s * sq), s * _npdf(d1) * math.sqrt(t), theta / 365.0


def implied_vol(right: str, price: float, s: float, k: float, t: float) -> float:
    """The vol whose Black-Scholes price is ``price`` (bisection, 1e-6), or -1 when none is (a price
    below intrinsic value)."""
    lo, hi = 1e-4, 5.0
    if price <= black_scholes(right, s, k, t, lo)[0] or price >= black_scholes(right, s, k, t, hi)[0]:
        return -1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if black_scholes(right, s, k, t, mid)[0] < price:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def years_to_expiry(details: ContractDetails, now: datetime) -> float:
    d = datetime.strptime(details.contract.lastTradeDateOrContractMonth, "%Y%m%d").date()
    end = datetime.combine(d, LAST_TRADE, _NY)
    return max((end - now).total_seconds() / (365 * 86400), MIN_T)


def option_quote(details: ContractDetails, und: float, now: datetime) -> OptionQuote:
    """The quote of one listed option when its underlying's mid is ``und`` at ``now``."""
    c = details.contract
    t = years_to_expiry(details, now)
    vol = smile_vol(c.symbol, c.strike, und)
    price, delta, gamma, vega, theta = black_scholes(c.right, und, c.strike, t, vol)
    half = max(tick_for(price), SPREAD * price)
    bid = max(0.0, to_grid(price - half, -1))
    ask = max(to_grid(price + half, +1), tick_for(0.0))
    return OptionQuote(bid, ask, BOOK_SIZE, BOOK_SIZE, price, vol, delta, gamma, vega, theta, und,
                       implied_vol(c.right, bid, und, c.strike, t) if bid > 0 else -1.0,
                       implied_vol(c.right, ask, und, c.strike, t))


__all__ = ["OptionQuote", "option_quote", "black_scholes", "implied_vol", "smile_vol", "tick_for", "to_grid",
           "BASE_VOL", "SKEW", "SMILE", "RATE", "SPREAD"]
