"""reqMktData's generic tick list at the paper gateway: which lists TWS accepts, and the extra ticks
the gateway sends for them.

Accepted lists are read as TWS reads them: ids between commas (blanks and empty items skipped,
``mdoff`` ignored, ``id:param`` allowed); one id that TWS does not know, or does not allow for the
security type, refuses the whole request with 321 and TWS's text listing the legal ones (recorded
from a real gateway, 2026: ``LEGAL`` keeps its order and names). Ids TWS accepts but the paper market
has nothing for (fundamentals, news, auction, ...) are accepted and send nothing, as TWS does for an
instrument without such data.

What is sent (see docs/paper-market.md for the stated values):

* 233 RTVolume: tickString 48 ``price;size;time ms;day volume;VWAP;single trade`` at each trade;
  VWAP is the day's typical price (high + low + last) / 3, the daily TRADES bar's wap;
* 236 shortable: tickGeneric 46 (3.0: shares can be borrowed) and tickSize 89 (shortable shares),
  stocks only;
* 456 dividends: tickString 59 ``past12,next12,yyyymmdd,nextAmount``, stocks only;
* 100 option volume (tickSize 29 calls, 30 puts), 101 open interest (27, 28), 104 historical
  volatility (tickGeneric 23), 106 implied volatility (24): on stocks and indexes the underlying's
  figures (stated); on an option line (``OptionGenericTicks``) the option's own: a call sends 29 (its
  day's volume, from the trade process of ``option_trades.py``) and 27 (its open interest), a put 30
  and 28; 23 is the underlying's 30-day historical volatility and 24 the option's model volatility at
  the current underlying price. Other accepted ids send nothing on an option line.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from ibapi.ticktype import TickTypeEnum as T

from ..codec import messages
from ..market import stated
from ..market.market import BarSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Instrument, Market, Quote

RT_VOLUME, SHORTABLE, OPTION_VOLUME, OPTION_OPEN_INTEREST = 233, 236, 100, 101
HISTORICAL_VOLATILITY, IMPLIED_VOLATILITY, DIVIDENDS = 104, 106, 456

_ALL = None
_DIVIDEND_TYPES = frozenset({"STK", "CFD", "OPT", "FOP", "FUT", "IND", "SLB"})
_INDEX_TYPES = frozenset({"IND"})
_SHORT_TERM_TYPES = frozenset({"STK", "CFD", "OPT", "FOP", "WAR", "FUT", "FWD", "BOND", "BILL", "SLB", "IOPT",
                               "CRYPTO"})

#: TWS's legal generic ticks in its order: (id, older alias, name, the security types it is legal for).
LEGAL: tuple[tuple[int, int | None, str, frozenset | None], ...] = (
    (100, None, "Option Volume", _ALL), (101, None, "Option Open Interest", _ALL),
    (105, None, "Average Opt Volume", _ALL), (106, None, "impvolat", _ALL),
    (162, None, "Index Future Premium", _INDEX_TYPES), (165, None, "Misc. Stats", _ALL),
    (221, 220, "Creditman Mark Price", _ALL), (225, None, "Auction", _ALL), (232, 221, "Pl Price", _ALL),
    (233, None, "RTVolume", _ALL), (236, None, "inventory", _ALL), (258, 47, "Fundamentals", _ALL),
    (292, None, "Wide_news", _ALL), (293, None, "TradeCount", _ALL), (294, None, "TradeRate", _ALL),
    (295, None, "VolumeRate", _ALL), (318, None, "LastRTHTrade", _ALL), (375, None, "RTTrdVolume", _ALL),
    (411, None, "rthistvol", _ALL), (456, 59, "IBDividends", _DIVIDEND_TYPES),
    (460, None, "Bond Factor Multiplier", _ALL), (577, None, "EtfNavLast(navlast)", _ALL),
    (586, None, "IPOHLMPRC", _ALL), (587, None, "Pl Price Delayed", _ALL), (588, None, "Futures Open Interest", _ALL),
    (595, None, "Short-Term Volume X Mins", _SHORT_TERM_TYPES), (614, None, "EtfNavMisc(high/low)", _ALL),
    (619, None, "Creditman Slow Mark Price", _ALL), (623, None, "EtfFrozenNavLast(fznavlast)", _ALL),
)
#: Older ids TWS still takes, and the id each stands for (104 is accepted though not listed).
ALIASES = {220: 221, 221: 232, 47: 258, 59: 456, 104: 104}
_LEGAL_FOR = {tick: types for tick, _, _, types in LEGAL} | {104: _ALL}

_OPTION_TYPES = frozenset({"STK", "IND"})


def parse(tick_list: str, sec_type: str) -> set[int] | None:
    """The generic ticks a list asks for (aliases resolved), or None when TWS refuses the list."""
    wanted: set[int] = set()
    for token in tick_list.split(","):
        token = token.strip()
        if not token or token.lower() == "mdoff":
            continue
        head, colon, param = token.partition(":")
        if colon and not param:
            return None
        try:
            tick = int(head)
        except ValueError:
            return None
        tick = ALIASES.get(tick, tick)
        if tick not in _LEGAL_FOR:
            return None
        types = _LEGAL_FOR[tick]
        if types is not None and sec_type.upper() not in types:
            return None
        wanted.add(tick)
    return wanted


def refusal(tick_list: str, sec_type: str) -> str:
    """TWS's 321 text refusing a generic tick list for a security type."""
    kind = sec_type.upper()
    legal = ",".join(f"{tick}{'' if alias is None else f'/{alias}'}({name})"
                     for tick, alias, name, types in LEGAL if types is None or kind in types)
    return (f"Error validating request.-'bQ' : cause - Incorrect generic tick list of {tick_list}.  "
            f"Legal ones for ({kind}) are: {legal}")


SNAPSHOT_REFUSAL = ("Error validating request.-'bJ' : cause - Snapshot market data subscription is not "
                    "applicable to generic ticks")


class GenericTicks:
    """Sends the generic ticks of one market data line. ``sent`` is the line's memory of what went out
    (shared with the line's basic ticks, under keys of its own), so only changes are sent."""

    def __init__(self, market: "Market", inst: "Instrument", ticks: set[int]):
        self.market = market
        self.inst = inst
        self.ticks = ticks
        self._vols: tuple[float, float] | None = None

    def send(self, send, req_id: int, q: "Quote", sent: dict) -> None:
        inst, ticks = self.inst, self.ticks
        stock = inst.sec_type == "STK"
        if RT_VOLUME in ticks and q.last is not None and q.volume is not None:
            trade = (q.last, q.last_size, q.volume)
            if sent.get("rt_volume") != trade:
                send(messages.tick_string(req_id, T.RT_VOLUME, self.rt_volume(q)))
                sent["rt_volume"] = trade
        if SHORTABLE in ticks and stock and "shortable" not in sent:
            send(messages.tick_generic(req_id, T.SHORTABLE, stated.SHORTABLE))
            send(messages.tick_size(req_id, T.SHORTABLE_SHARES,
                                    stated.SHORTABLE_SHARES.get(inst.symbol, stated.DEFAULT_SHORTABLE_SHARES)))
            sent["shortable"] = True
        if DIVIDENDS in ticks and stock:
            div = stated.DIVIDENDS.get(inst.symbol)
            value = div.tick_value(q.time.astimezone(inst.tz).date()) if div else stated.NO_DIVIDENDS
            if sent.get("dividends") != value:
                send(messages.tick_string(req_id, T.IB_DIVIDENDS, value))
                sent["dividends"] = value
        if inst.sec_type not in _OPTION_TYPES:
            return
        opts = stated.OPTIONS.get(inst.symbol, stated.DEFAULT_OPTIONS)
        if OPTION_VOLUME in ticks:
            part = self.day_part(q)
            for tick, total in ((T.OPTION_CALL_VOLUME, opts.call_volume), (T.OPTION_PUT_VOLUME, opts.put_volume)):
                volume = int(total * part)
                if sent.get(("generic", tick)) != volume:
                    send(messages.tick_size(req_id, tick, volume))
                    sent[("generic", tick)] = volume
        if OPTION_OPEN_INTEREST in ticks and "open_interest" not in sent:
            send(messages.tick_size(req_id, T.OPTION_CALL_OPEN_INTEREST, opts.call_open_interest))
            send(messages.tick_size(req_id, T.OPTION_PUT_OPEN_INTEREST, opts.put_open_interest))
            sent["open_interest"] = True
        if HISTORICAL_VOLATILITY in ticks and "hist_vol" not in sent:
            send(messages.tick_generic(req_id, T.OPTION_HISTORICAL_VOL, self.volatilities(q)[0]))
            sent["hist_vol"] = True
        if IMPLIED_VOLATILITY in ticks and "implied_vol" not in sent:
            send(messages.tick_generic(req_id, T.OPTION_IMPLIED_VOL, self.volatilities(q)[1]))
            sent["implied_vol"] = True

    def rt_volume(self, q: "Quote") -> str:
        """``price;size;time ms;day volume;VWAP;single trade`` for the quote's trade."""
        assert q.last is not None and q.volume is not None
        vwap = round((q.high + q.low + q.last) / 3, 8)
        return (f"{q.last!r};{_num(q.last_size or 0)};{int(q.time.timestamp()) * 1000};{_num(q.volume)};"
                f"{vwap!r};true")

    def day_part(self, q: "Quote") -> float:
        """How much of the instrument's local day has passed, by the minute (0 .. 1439/1440)."""
        local = q.time.astimezone(self.inst.tz)
        return (local.hour * 60 + local.minute) / 1440

    def volatilities(self, q: "Quote") -> tuple[float, float]:
        """(30-day historical volatility, implied volatility), annualised fractions: the standard
        deviation of the last 30 daily log returns of the replayed closes x sqrt(252), and that x
        IMPLIED_OVER_HISTORICAL. Computed once per line."""
        if self._vols is None:
            bars = self.market.bars(self.inst, q.time - timedelta(days=60), q.time, BarSpec(seconds=86400),
                                    "TRADES", False)
            closes = [b.close for b in bars][-31:]
            returns = [math.log(b / a) for a, b in zip(closes, closes[1:]) if a > 0 and b > 0]
            if len(returns) >= 2:
                mean = sum(returns) / len(returns)
                hv = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1) * 252)
            else:
                hv = 0.0
            self._vols = (round(hv, 6), round(hv * stated.IMPLIED_OVER_HISTORICAL, 6))
        return self._vols


class OptionGenericTicks:
    """The generic ticks of one option line (see the module docstring). ``underlying_ticks`` computes
    the underlying's historical volatility; ``open_interest`` is the option's (fixed)."""

    def __init__(self, ticks: set[int], right: str, open_interest: int, underlying_ticks: GenericTicks):
        self.ticks = ticks
        self.call = right == "C"
        self.open_interest = open_interest
        self.underlying_ticks = underlying_ticks

    def send(self, send, req_id: int, sent: dict, *, volume: int, model_vol: float, und_quote: "Quote") -> None:
        ticks = self.ticks
        if OPTION_VOLUME in ticks:
            tick = T.OPTION_CALL_VOLUME if self.call else T.OPTION_PUT_VOLUME
            if sent.get(("generic", tick)) != volume:
                send(messages.tick_size(req_id, tick, volume))
                sent[("generic", tick)] = volume
        if OPTION_OPEN_INTEREST in ticks and "open_interest" not in sent:
            tick = T.OPTION_CALL_OPEN_INTEREST if self.call else T.OPTION_PUT_OPEN_INTEREST
            send(messages.tick_size(req_id, tick, self.open_interest))
            sent["open_interest"] = True
        if HISTORICAL_VOLATILITY in ticks and "hist_vol" not in sent:
            send(messages.tick_generic(req_id, T.OPTION_HISTORICAL_VOL,
                                       self.underlying_ticks.volatilities(und_quote)[0]))
            sent["hist_vol"] = True
        if IMPLIED_VOLATILITY in ticks:
            vol = round(model_vol, 6)
            if sent.get("implied_vol") != vol:
                send(messages.tick_generic(req_id, T.OPTION_IMPLIED_VOL, vol))
                sent["implied_vol"] = vol


def _num(value: float) -> str:
    """A size as IB writes it in RTVolume: an integer without a decimal point when whole."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
