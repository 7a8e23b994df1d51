"""Option quotes of the paper market: Black-Scholes-Merton on the underlying's replayed mid price
(Black-76 on a future's), with a stated smile, quoted on the class's tick grid (docs/paper-market.md,
"Option quotes").

The model (every constant here is the documented one):

* vol(K) = BASE_VOL[symbol] + SKEW x m + SMILE x m^2 with m = ln(K / S) (S: the underlying's mid),
  floored at MIN_VOL; no term structure.
* Black-Scholes-Merton with RATE (continuous) and the class's continuous dividend yield q (0 for the
  equity classes, ``SPX_DIVIDEND_YIELD`` for SPX/SPXW); ES options: Black-76 on the future (q = RATE).
  T = time to the class's expiry moment (equities 16:00 New York; SPX and the ES quarterlies 08:30
  Chicago, AM; SPXW and EWn 15:00 Chicago, PM) in years of 365 days, at least MIN_T. American classes
  are priced as European: exact for calls without dividends, a small underestimate for deep
  in-the-money puts. pvDividend = S x (1 - e^(-qT)), the present value of the dividends to expiry.
* Quote: half spread = max(one tick, 2 % of the model price); bid = model - half spread rounded
  down to the class's grid, ask = model + half spread rounded up; bid never below 0 (a worthless
  option is bid 0), ask at least the grid's first tick. Sizes BOOK_SIZE contracts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ibapi.contract import ContractDetails

from .options import OPTION_RULE, spec_of

BASE_VOL = {"AAPL": 0.28, "MSFT": 0.25, "SPY": 0.17, "SPX": 0.16, "ES": 0.16}
SKEW = -0.15
SMILE = 0.40
MIN_VOL = 0.05
RATE = 0.04
MIN_T = 1.0 / (365 * 24 * 60)     # one minute
SPREAD = 0.02
BOOK_SIZE = 10.0


@dataclass(frozen=True)
class OptionQuote:
    """One option's market: bid/ask on the grid, the model's numbers (per share; vega per 1 % of vol,
    theta per calendar day) and the underlying price they used."""

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
    pv_dividend: float = 0.0


def tick_for(price: float, rule=OPTION_RULE) -> float:
    """The option price increment at ``price`` under a market rule ((lowest price, increment), ...;
    default rule 32, the equity classes')."""
    step = rule[0][1]
    for low, inc in rule:
        if price >= low:
            step = inc
    return step


def to_grid(price: float, direction: int = 0, rule=OPTION_RULE) -> float:
    """``price`` on the rule's grid: nearest (0), down (-1) or up (+1)."""
    tick = tick_for(price, rule)
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


def black_scholes(right: str, s: float, k: float, t: float, vol: float, r: float = RATE, q: float = 0.0):
    """(price, delta, gamma, vega per 1 % of vol (one vol point, as IB's option computations and TWS show
    it), theta per calendar day) of a European option by Black-Scholes-Merton with continuous dividend
    yield ``q`` (q = r: Black-76 on a future at ``s``)."""
    sq = vol * math.sqrt(t)
    d1 = (math.log(s / k) + (r - q + 0.5 * vol * vol) * t) / sq
    d2 = d1 - sq
    disc, carry = math.exp(-r * t), math.exp(-q * t)
    decay = -s * carry * _npdf(d1) * vol / (2 * math.sqrt(t))
    if right == "C":
        price, delta = s * carry * _ncdf(d1) - k * disc * _ncdf(d2), carry * _ncdf(d1)
        theta = decay - r * k * disc * _ncdf(d2) + q * s * carry * _ncdf(d1)
    else:
        price, delta = k * disc * _ncdf(-d2) - s * carry * _ncdf(-d1), carry * (_ncdf(d1) - 1.0)
        theta = decay + r * k * disc * _ncdf(-d2) - q * s * carry * _ncdf(-d1)
    return price, delta, carry * _npdf(d1) / (s * sq), s * carry * _npdf(d1) * math.sqrt(t) / 100.0, theta / 365.0


def implied_vol(right: str, price: float, s: float, k: float, t: float, r: float = RATE, q: float = 0.0) -> float:
    """The vol whose Black-Scholes-Merton price is ``price`` (bisection, 1e-6), or -1 when none is (a
    price below the discounted intrinsic value)."""
    lo, hi = 1e-4, 5.0
    if price <= black_scholes(right, s, k, t, lo, r, q)[0] or price >= black_scholes(right, s, k, t, hi, r, q)[0]:
        return -1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if black_scholes(right, s, k, t, mid, r, q)[0] < price:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def carry_of(details: ContractDetails) -> tuple[float, float]:
    """(rate, dividend yield) the model prices an option with: q = RATE (Black-76) on a future."""
    spec = spec_of(details)
    return RATE, (RATE if spec.black76 else spec.dividend_yield)


def years_to_expiry(details: ContractDetails, now: datetime) -> float:
    """Years of 365 days from ``now`` to the option's expiry moment (its class's), at least MIN_T."""
    d = datetime.strptime(details.contract.lastTradeDateOrContractMonth, "%Y%m%d").date()
    end = spec_of(details).settle_at(d)
    return max((end - now).total_seconds() / (365 * 86400), MIN_T)


def option_quote(details: ContractDetails, und: float, now: datetime) -> OptionQuote:
    """The quote of one listed option when its underlying's mid is ``und`` at ``now``."""
    c = details.contract
    spec = spec_of(details)
    t = years_to_expiry(details, now)
    r, q = carry_of(details)
    vol = smile_vol(c.symbol, c.strike, und)
    price, delta, gamma, vega, theta = black_scholes(c.right, und, c.strike, t, vol, r, q)
    rule = spec.rule
    half = max(tick_for(price, rule), SPREAD * price)
    bid = max(0.0, to_grid(price - half, -1, rule))
    ask = max(to_grid(price + half, +1, rule), tick_for(0.0, rule))
    pv_dividend = 0.0 if spec.black76 else und * (1 - math.exp(-q * t))
    return OptionQuote(bid, ask, BOOK_SIZE, BOOK_SIZE, price, vol, delta, gamma, vega, theta, und,
                       implied_vol(c.right, bid, und, c.strike, t, r, q) if bid > 0 else -1.0,
                       implied_vol(c.right, ask, und, c.strike, t, r, q), pv_dividend)


__all__ = ["OptionQuote", "option_quote", "black_scholes", "implied_vol", "smile_vol", "tick_for", "to_grid",
           "carry_of", "years_to_expiry", "BASE_VOL", "SKEW", "SMILE", "RATE", "SPREAD"]
