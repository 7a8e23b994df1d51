"""Listed options as instruments the broker can trade (docs/paper-market.md, "Option orders, positions
and expiry").

An :class:`OptionInstrument` wraps one listed option's ContractDetails (``options.py``) and its
underlying stock: it quacks like a universe ``Instrument`` where the broker and the accounts look
(contract, conId, minTick, multiplier) and quotes itself from the underlying's replayed mid through
``option_quotes.option_quote`` (bid/ask on the option grid; no trades, so no last). Made on demand
when an order names an option and kept by the broker while it has orders or a position in it.

The expiry rule is stated here: the option stops trading at its class's last trade time (16:00 New
York on the expiry date for equity options; options.py's ClassSpec for SPX, SPXW and ES); from its
settlement moment an in-the-money option (call: underlying above the strike, put: below, by at least
0.01, the underlying's mark at that instant) is exercised (long) or assigned (short): an equity option
into multiplier x contracts shares at the strike, an ES option into one future a contract at the
strike, a cash-settled SPX/SPXW option closes at its intrinsic value; any other option is removed
worthless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from ibapi.contract import ContractDetails

from .market import Quote
from .option_quotes import option_quote
from .options import spec_of
from .universe import Instrument

__all__ = ["OptionInstrument", "last_trade_time", "settle_time", "in_the_money", "ITM_MIN"]

_NY = ZoneInfo("America/New_York")
ITM_MIN = 0.01      # IB exercises automatically an option in the money by at least 0.01 at expiry


def last_trade_time(details: ContractDetails) -> datetime:
    """When the option stops trading: its class's rule (16:00 New York on the expiry date for equity
    options; SPX AM monthlies at 15:00 Chicago the business day before; docs/paper-market.md)."""
    return spec_of(details).trading_ends(_expiry(details))


def settle_time(details: ContractDetails) -> datetime:
    """When the option is settled: its class's settlement moment on the expiry date (equity options:
    16:00 New York; SPX AM: 08:30 Chicago; SPXW and EWn: 15:00 Chicago; ES quarterlies: 08:30 Chicago)."""
    return spec_of(details).settle_at(_expiry(details))


def _expiry(details: ContractDetails) -> date:
    text = details.contract.lastTradeDateOrContractMonth
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def in_the_money(right: str, strike: float, underlying: float) -> bool:
    """Exercised at expiry: a call whose underlying is at least ITM_MIN above the strike, a put at least
    ITM_MIN below it."""
    diff = underlying - strike if right == "C" else strike - underlying
    return diff >= ITM_MIN - 1e-9


class OptionInstrument(Instrument):
    """One listed option the broker trades: an Instrument whose details are the option's and whose feed,
    book and liquid hours are its underlying's (the broker asks the underlying's session; the option's
    prices come from :meth:`quote`, never from the feed). ``quote_source(inst, at)`` is the market's
    quote function (the underlying's replayed quote at an instant)."""

    __slots__ = ("underlying", "_quote_source", "expires", "settles")

    def __init__(self, details: ContractDetails, underlying: Instrument,
                 quote_source: Callable[[Instrument, datetime], Quote]):
        super().__init__(details, underlying.feed, underlying.book, underlying.liquid)
        self.underlying = underlying
        self._quote_source = quote_source
        self.expires = last_trade_time(details)
        self.settles = max(settle_time(details), self.expires)

    @property
    def has_trades(self) -> bool:
        """No option trades are printed: stops watch the bid/ask, marks are the midpoint."""
        return False

    @property
    def settlement(self) -> str:
        """What an exercised contract delivers: "shares" (equity options), "cash" (SPX, SPXW) or "future"
        (options on ES)."""
        return spec_of(self.details).settlement

    @property
    def right(self) -> str:
        return self.details.contract.right

    @property
    def strike(self) -> float:
        return float(self.details.contract.strike)

    def underlying_quote(self, at: datetime) -> Quote:
        return self._quote_source(self.underlying, at)

    def quote(self, at: datetime) -> Quote:
        """The option's market at ``at``: bid/ask (a bid of 0 is no bid) and sizes from the model on the
        underlying's mid; no last, volume or day figures (0 for open/high/low/close)."""
        q = option_quote(self.details, self.underlying_quote(at).mid, at)
        return Quote(time=at, bid=q.bid if q.bid > 0 else None, ask=q.ask, last=None, bid_size=q.bid_size,
                     ask_size=q.ask_size, last_size=None, volume=None, open=0.0, high=0.0, low=0.0, close=0.0)
