"""Option trades and open interest of the paper market: a seeded, deterministic process per listed
option (docs/paper-market.md, "Option trades"), the same for every client and every restart with the
same seed.

* Time is cut into minutes (epoch // 60). In each minute an option trades once with probability
  p = TRADE_RATE x exp(-(ln(K / R) / MONEYNESS_WIDTH)^2), R the class's reference (the underlying's
  price at the gateway's start): at the money about one trade every four minutes, 10 % out of the
  money almost none. The trade's second within the minute, its size (1..MAX_TRADE_SIZE contracts,
  uniform) and its side (at the ask or at the bid, even odds) are drawn from the same minute.
  With exchange hours, only trades inside the underlying's sessions count.
* Every draw is splitmix64 of (seed, conId, minute, draw number): no state, so any stretch of the
  past can be recomputed exactly.
* The price: the option's quote (``option_quotes.option_quote``) at the trade's second, on the side
  drawn (the ask when the bid is 0).
* The day's volume: the contracts traded since the local midnight of the underlying's time zone.
* Open interest (fixed for the gateway's run, as IB updates it once a day):
  OPEN_INTEREST[symbol] x exp(-(ln(K / R) / OI_WIDTH)^2) x (0.5 + u), u a draw of the conId, rounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from ibapi.contract import ContractDetails

TRADE_RATE = 0.25
MONEYNESS_WIDTH = 0.06
MAX_TRADE_SIZE = 20
OI_WIDTH = 0.12
#: at-the-money open interest by underlying symbol, contracts
OPEN_INTEREST = {"AAPL": 20_000, "MSFT": 12_000, "SPY": 40_000, "SPX": 15_000, "ES": 8_000}
DEFAULT_OPEN_INTEREST = 5_000
LOOK_BACK_DAYS = 5       # the last trade is searched this far back (an option quiet for longer has none)

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_DRAW, _SECOND, _SIZE, _SIDE = 0, 1, 2, 3


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def draws(seed: int, con_id: int, minutes: np.ndarray, stream: int) -> np.ndarray:
    """Uniforms in [0, 1), one per minute, for draw number ``stream`` of an option."""
    with np.errstate(over="ignore"):
        key = _splitmix(np.array([(seed * 1_000_003 + con_id) * 8 + stream], dtype=np.uint64) & _M64)
        x = _splitmix(minutes.astype(np.uint64) ^ key)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def trade_probability(strike: float, reference: float) -> float:
    return TRADE_RATE * math.exp(-(math.log(strike / reference) / MONEYNESS_WIDTH) ** 2)


@dataclass(frozen=True)
class Trade:
    time: int          # epoch second
    size: int          # contracts
    at_ask: bool


def trades_between(seed: int, con_id: int, strike: float, reference: float, first: int, end: int,
                   open_mask: "Callable[[np.ndarray], np.ndarray] | None" = None) -> list[Trade]:
    """The option's trades with time in [first, end) (epoch seconds), in time order. ``open_mask``:
    per trade second, whether the underlying trades then (exchange hours)."""
    if end <= first:
        return []
    minutes = np.arange(first // 60, (end - 1) // 60 + 1, dtype=np.int64)
    hit = draws(seed, con_id, minutes, _DRAW) < trade_probability(strike, reference)
    minutes = minutes[hit]
    if len(minutes) == 0:
        return []
    seconds = minutes * 60 + (draws(seed, con_id, minutes, _SECOND) * 60).astype(np.int64)
    keep = (seconds >= first) & (seconds < end)
    if open_mask is not None:
        keep &= open_mask(seconds)
    sizes = 1 + (draws(seed, con_id, minutes, _SIZE) * MAX_TRADE_SIZE).astype(np.int64)
    sides = draws(seed, con_id, minutes, _SIDE) < 0.5
    return [Trade(int(t), int(s), bool(a)) for t, s, a, k in zip(seconds, sizes, sides, keep) if k]


def open_interest(seed: int, con_id: int, symbol: str, strike: float, reference: float) -> int:
    scale = OPEN_INTEREST.get(symbol, DEFAULT_OPEN_INTEREST)
    u = float(draws(seed, con_id, np.array([0], dtype=np.int64), 7)[0])
    return int(round(scale * math.exp(-(math.log(strike / reference) / OI_WIDTH) ** 2) * (0.5 + u)))


class OptionTape:
    """The trades of one option line as the clock moves: the day's volume and the last trade.

    ``price_at(trade)``: the trade's price (the caller quotes the option at the trade's second).
    ``day_start(epoch)``: the epoch of the local midnight the day's volume counts from. Call
    :meth:`advance` with the (possibly delayed) replay epoch; it reads only the new seconds."""

    def __init__(self, seed: int, details: "ContractDetails", reference: float,
                 day_start: "Callable[[float], int]", open_mask=None):
        self.seed, self.con_id, self.strike = seed, details.contract.conId, details.contract.strike
        self.reference = reference
        self.day_start = day_start
        self.open_mask = open_mask
        self.until: int | None = None      # trades before this second are counted
        self.day = 0
        self.volume = 0
        self.last: Trade | None = None
        self._minute: tuple[int, list[Trade]] | None = None   # (minute, its trades)

    def advance(self, epoch: float) -> bool:
        """Take the trades up to ``epoch`` (included); True when the volume or the last trade changed."""
        end = int(epoch) + 1
        start = self.day_start(epoch)
        if self.until is None:
            found = trades_between(self.seed, self.con_id, self.strike, self.reference,
                                   end - LOOK_BACK_DAYS * 86400, end, self.open_mask)
            self.day, self.until = start, end
            self.volume = sum(t.size for t in found if t.time >= start)
            self.last = found[-1] if found else None
            return True
        if end <= self.until:
            return False
        changed = start != self.day
        if changed:
            self.day, self.volume = start, 0
        first = max(self.until, end - LOOK_BACK_DAYS * 86400)
        found = self._in_minute(first, end) if first // 60 == (end - 1) // 60 else \
            trades_between(self.seed, self.con_id, self.strike, self.reference, first, end, self.open_mask)
        self.until = end
        if found:
            self.volume += sum(t.size for t in found if t.time >= start)
            self.last = found[-1]
            changed = True
        return changed

    def _in_minute(self, first: int, end: int) -> list[Trade]:
        """The trades in [first, end) inside one minute: the minute is drawn once and kept, so a
        stream stepping many times a minute costs a comparison a step."""
        minute = first // 60
        if self._minute is None or self._minute[0] != minute:
            self._minute = (minute, trades_between(self.seed, self.con_id, self.strike, self.reference,
                                                   minute * 60, minute * 60 + 60, self.open_mask))
        return [t for t in self._minute[1] if first <= t.time < end]


__all__ = ["OptionTape", "Trade", "trades_between", "open_interest", "trade_probability", "draws",
           "TRADE_RATE", "MONEYNESS_WIDTH", "MAX_TRADE_SIZE", "OPEN_INTEREST", "OI_WIDTH"]
