"""The paper gateway's instruments: IB-style contract details, the feed each one replays, and IB-style
contract matching.

Built in (conIds are IB's, except the ES futures, whose conIds the paper gateway assigns):

======== ======= ============ ============================================================================
symbol   secType exchange     prices
======== ======= ============ ============================================================================
GOOG     STK     SMART/NASDAQ the real GOOG daily file, unchanged
AAPL     STK     SMART/NASDAQ GOOG daily, scaled so its latest close is 230.00
MSFT     STK     SMART/NASDAQ GOOG daily rotated by N//3 bars, scaled so its latest close is 420.00
SPX      IND     CBOE         GOOG daily rotated by 2N//3 bars, scaled so its latest close is 5900.00
SPY      STK     SMART/ARCA   SPX / 10 (same rotation, scale / 10), on its own 0.01 grid
ES       FUT     CME          SPX x (1 + carry) on the 0.25 grid; carry = 3% a year x days to expiry at
                              the gateway's start. The next ES_MONTHS_LISTED quarterly contracts (H M U
                              Z, last trade on the third Friday at 08:30 Chicago) that have not expired
                              at the start: ``es_expiries``
EUR.USD  CASH    IDEALPRO     the real EUR/USD hourly file, on the 0.00005 grid (no trades)
BTC      CRYPTO  PAXOS        the real BTC/USD monthly file, on the 0.25 grid
SAP      STK     SMART/IBIS   EUR; GOOG daily rotated by N//6 bars, scaled so its latest close is 240.00
                              EUR; Xetra hours 09:00-17:30 MET; conId the paper's own (EU_STOCK_CON_ID)
======== ======= ============ ============================================================================

N is the number of bars in the GOOG file (2148). SPX, SPY and the ES contracts share one random
stream, so their intraday paths move together. The optional synthetic universe ``SIM0001``..
(STK, SMART/NASDAQ, USD, conId 900000000 + number) replays GOOG daily rotated by a seeded number of
bars and scaled so its latest close is a seeded price between 10 and 500 (log-uniform); its volume
is GOOG's times a seeded factor between 0.12 and 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
from ibapi.contract import Contract, ContractDetails
from ibapi.tag_value import TagValue

from ...protocol.futures import month_code
from ...protocol.times import format_date, format_hours_stamp
from ...protocol.unset import UNSET_DOUBLE, UNSET_INTEGER
from . import ticks as tk
from .series import DAY, HOUR, NATIVE_SECONDS, Feed, TickGrid, load_series, unit_of, unit_starts
from .sessions import SessionCalendar

SYNTHETIC_BASE = 900_000_000
# IB gives every futures month its own conId; the paper gateway derives its own from the expiry, in a
# reserved range: 899_000_000 + (year - 2000) * 100 + month (ESZ6 -> 899_002_612).
ES_CON_ID_BASE = 899_000_000
ES_MONTHS_LISTED = 2          # quarterly contracts listed at once (IB lists more; two keep the model small)
ES_VOLUMES = (0.6, 0.2)       # volume factor of the front and the next contract
ES_QUARTER_MONTHS = (3, 6, 9, 12)
ES_LAST_TRADE = time(8, 30)   # Chicago: equity index futures stop trading at the open on expiry day
MAX_SYNTHETIC = 2000
# Non-US stocks get conIds from the paper's own range (IB's real ones are not asserted here).
EU_STOCK_CON_ID = 898_000_001      # SAP on IBIS (Xetra), EUR
ES_CARRY = 0.03          # financing minus dividends, per year
TRADING_DAYS_SHOWN = 7   # tradingHours / liquidHours cover this many calendar days from the start

EASTERN, CENTRAL = "US/Eastern", "US/Central"
XETRA_TZ = "MET"                   # IB's timeZoneId for IBIS (Central European time, with summer time)

_STK_EXCHANGES = ("SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,"
                  "FOXRIVER,PEARL,NYSENAT,LTSE,MEMX,IBEOS,OVERNIGHT,TPLUS0,PSX")
_STK_ORDER_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,BENCHPX,CASHQTY,COND,CONDORDER,"
                    "DARKONLY,DARKPOLL,DAY,DEACT,DEACTDIS,DEACTEOD,DIS,DUR,GAT,GTC,GTD,GTT,HID,IBKRATS,ICE,"
                    "IMB,IOC,LIT,LMT,LOC,MIDPX,MIT,MKT,MOC,MTL,NGCOMB,NODARK,NONALGO,OCA,OPG,OPGREROUT,"
                    "PEGBENCH,PEGMID,POSTATS,POSTONLY,PREOPGRTH,PRICECHK,REL,REL2MID,RELPCTOFS,RPI,RTH,"
                    "SCALE,SCALEODD,SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,SWEEP,TRAIL,"
                    "TRAILLIT,TRAILLMT,TRAILMIT,WHATIF")
_FUT_ORDER_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,BENCHPX,COND,CONDORDER,DAY,DEACT,"
                    "DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,LTH,MIT,MKT,MTL,NGCOMB,NONALGO,"
                    "OCA,PEGBENCH,SCALE,SCALERST,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,"
                    "TRAILLMT,TRAILMIT,WHATIF")
# Exactly as in the recorded CONTRACT_DATA for EUR.USD (shared/protocol/captures).
_FX_ORDER_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,DEACT,"
                   "DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,REL,RELPCTOFS,"
                   "SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF")
_CRYPTO_ORDER_TYPES = ("ADJUST,ALERT,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
                       "DEACTEOD,GTC,IOC,LIT,LMT,MKT,NONALGO,OCA,STP,STPLMT,WHATIF")


# --- instruments ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BookModel:
    """How sizes look. volume_unit: one volume unit in the instrument's size unit (0 = no volume);
    lot, lo, hi: bid/ask sizes are lot * (seeded integer in [lo, hi]); decimals: size rounding."""

    volume_unit: float
    lot: float
    lo: int
    hi: int
    decimals: int = 0

    def size(self, draw):
        """Book size (float or array) from a raw draw of ``ticks.book_draws``."""
        return np.round((self.lo + np.asarray(draw) % (self.hi - self.lo + 1)) * self.lot, self.decimals)


STOCK_BOOK = BookModel(1.0, 100.0, 1, 30)
FUTURE_BOOK = BookModel(1.0, 1.0, 1, 60)
FX_BOOK = BookModel(0.0, 1_000_000.0, 1, 15)
CRYPTO_BOOK = BookModel(1e-8, 1e-8, 1_000, 50_000_000, decimals=8)
INDEX_BOOK = BookModel(0.0, 0.0, 0, 0)


class Instrument:
    """One tradable (or, for IND, quotable) instrument of the paper market.

    details: complete ibapi ContractDetails (``details.contract`` is the qualified Contract);
    feed: where its prices come from (see ``series.Feed``); book: sizes; liquid: regular hours as
    (start, end) seconds after local midnight, or None when every traded second is regular."""

    __slots__ = ("details", "feed", "book", "liquid")

    def __init__(self, details: ContractDetails, feed: Feed, book: BookModel, liquid: tuple[int, int] | None):
        self.details = details
        self.feed = feed
        self.book = book
        self.liquid = liquid

    @property
    def contract(self) -> Contract:
        return self.details.contract

    @property
    def con_id(self) -> int:
        return self.details.contract.conId

    @property
    def symbol(self) -> str:
        return self.details.contract.symbol

    @property
    def sec_type(self) -> str:
        return self.details.contract.secType

    @property
    def min_tick(self) -> float:
        return self.details.minTick

    @property
    def multiplier(self) -> float:
        """Contract multiplier as a number (1.0 when the contract has none)."""
        return float(self.details.contract.multiplier or 1.0)

    @property
    def has_quotes(self) -> bool:
        """Bid/ask exist (False for an index)."""
        return self.sec_type != "IND"

    @property
    def has_trades(self) -> bool:
        """Last/volume exist (False for FX, which IB quotes but never prints trades for)."""
        return self.sec_type != "CASH"

    @property
    def bar_seconds(self) -> int:
        """Native bar length of the real series it replays: 86400, 3600 or 2592000 (a month)."""
        return NATIVE_SECONDS[self.feed.kind]

    @property
    def tz(self) -> ZoneInfo:
        return self.feed.tz

    def __repr__(self) -> str:
        c = self.contract
        return f"Instrument({c.localSymbol or c.symbol} {c.secType} {c.exchange} conId={c.conId})"


# --- the universe -----------------------------------------------------------------------------------
#: Trading hours of the paper market (``Market(hours=...)``, ``ibxl paper --around-the-clock``).
AROUND_THE_CLOCK = "around-the-clock"
EXCHANGE_HOURS = "exchange"
HOURS = (AROUND_THE_CLOCK, EXCHANGE_HOURS)


def build_universe(seed: int, start_epoch: float, synthetic: int = 0,
                   hours: str = AROUND_THE_CLOCK) -> list[Instrument]:
    """All instruments, with feeds anchored so the latest bar holds ``start_epoch``.

    hours: AROUND_THE_CLOCK (daily series shifted by whole days: the start day always trades, real
    weekdays move) or EXCHANGE_HOURS (daily series shifted by whole weeks: real Mondays are replayed
    on Mondays, weekends and real holidays have no bars; see ``Feed.anchor``).
    Raises ValueError for more than 2000 synthetic instruments or an unknown ``hours``."""
    if hours not in HOURS:
        raise ValueError(f"hours must be one of {', '.join(HOURS)}, got {hours!r}")
    out = _build(seed, start_epoch, synthetic)
    if hours == EXCHANGE_HOURS:
        calendar = SessionCalendar()
        for inst in out:
            inst.feed.anchor(start_epoch, weekdays=True, weekend_open=False)
            _finish(inst, start_epoch, calendar)
    return out


def _build(seed: int, start_epoch: float, synthetic: int) -> list[Instrument]:
    if not 0 <= synthetic <= MAX_SYNTHETIC:
        raise ValueError(f"synthetic must be between 0 and {MAX_SYNTHETIC}, got {synthetic}")
    goog = load_series("GOOG_1d")
    n = goog.n
    out = [
        _stock(seed, start_epoch, "GOOG", 208813720, "NASDAQ", "ALPHABET INC-CL C", target=None, rotation=0,
               volume=1.0, isin="US02079K1079", industry=("Communications", "Internet", "Web Portals/ISP")),
        _stock(seed, start_epoch, "AAPL", 265598, "NASDAQ", "APPLE INC", target=230.0, rotation=0, volume=20.0,
               isin="US0378331005", industry=("Technology", "Computers", "Computers")),
        _stock(seed, start_epoch, "MSFT", 272093, "NASDAQ", "MICROSOFT CORP", target=420.0, rotation=n // 3,
               volume=10.0, isin="US5949181045", industry=("Technology", "Software", "Applications Software")),
        _spy(seed, start_epoch, n),
        _spx(seed, start_epoch, n),
        *(_es(seed, start_epoch, n, expiry, volume) for expiry, volume in zip(es_expiries(start_epoch), ES_VOLUMES)),
        _eurusd(seed, start_epoch),
        _btc(seed, start_epoch),
        _sap(seed, start_epoch, n),
    ]
    out += [_synthetic(seed, start_epoch, k, n) for k in range(1, synthetic + 1)]
    return out


def _feed(series: str, tz: str, tick: float, *, seed: int, path: str, start_epoch: float, rotation: int = 0,
          target: float | None = None, scale: float = 1.0, spread: int = 2, volume: float = 0.0) -> Feed:
    """A feed whose latest close is ``target`` (when given) times ``scale``."""
    s = load_series(series)
    feed = Feed(s, ZoneInfo(tz), TickGrid.of(tick), 1.0, rotation, tk.key_of(seed, path), spread, volume)
    if target is not None:
        i, k = feed.split(feed.last)
        scale *= target / (s.growth ** int(k) * s.c[int(i)])
    feed.scale = scale
    return feed.anchor(start_epoch)


def _details(symbol: str, sec_type: str, exchange: str, currency: str, con_id: int, min_tick: float, *,
             local_symbol: str | None = None, primary: str = "", trading_class: str = "", market_name: str = "",
             multiplier: str = "", ltd: str = "", long_name: str = "", tz: str = EASTERN, order_types: str = "",
             valid_exchanges: str = "", rule: str = "", agg_group: int = 1, min_size: str = "1",
             size_increment: str = "1", suggested_increment: str = "1", stock_type: str = "",
             industry: tuple[str, str, str] = ("", "", ""), isin: str = "") -> ContractDetails:
    d = ContractDetails()
    c = d.contract
    c.conId, c.symbol, c.secType, c.exchange, c.currency = con_id, symbol, sec_type, exchange, currency
    c.primaryExchange, c.localSymbol = primary, local_symbol if local_symbol is not None else symbol
    c.tradingClass, c.multiplier, c.lastTradeDateOrContractMonth = trading_class, multiplier, ltd
    c.lastTradeDate = ltd
    c.strike = 0.0
    d.marketName = market_name or trading_class
    d.minTick = min_tick
    d.orderTypes = order_types
    d.validExchanges = valid_exchanges or exchange
    d.priceMagnifier = 1
    d.longName = long_name
    d.timeZoneId = tz
    d.industry, d.category, d.subcategory = industry
    d.stockType = stock_type
    d.aggGroup = agg_group
    d.marketRuleIds = ",".join([rule] * len(d.validExchanges.split(","))) if rule else ""
    d.minSize, d.sizeIncrement = Decimal(min_size), Decimal(size_increment)
    d.suggestedSizeIncrement = Decimal(suggested_increment)
    if isin:
        d.secIdList = [TagValue("ISIN", isin)]
    return d


def _stock_details(symbol: str, con_id: int, primary: str, long_name: str, *, trading_class: str = "NMS",
                   stock_type: str = "COMMON", industry=("", "", ""), isin: str = "") -> ContractDetails:
    return _details(symbol, "STK", "SMART", "USD", con_id, 0.01, primary=primary, trading_class=trading_class,
                    long_name=long_name, order_types=_STK_ORDER_TYPES, valid_exchanges=_STK_EXCHANGES, rule="26",
                    min_size="0.0001", size_increment="0.0001", suggested_increment="100",
                    stock_type=stock_type, industry=industry, isin=isin)


_RTH_EASTERN = (9 * 3600 + 1800, 16 * 3600)    # 09:30-16:00
_RTH_CENTRAL = (8 * 3600 + 1800, 15 * 3600)    # 08:30-15:00 (CME equity futures, CBOE index)
_RTH_XETRA = (9 * 3600, 17 * 3600 + 1800)       # 09:00-17:30 Frankfurt (Xetra's continuous trading)
_XETRA_EXCHANGES = "SMART,IBIS,TGATE,SWB,FWB"


def _stock(seed, start_epoch, symbol, con_id, primary, long_name, *, target, rotation, volume, isin, industry):
    feed = _feed("GOOG_1d", EASTERN, 0.01, seed=seed, path=symbol, start_epoch=start_epoch, rotation=rotation,
                 target=target, volume=volume)
    details = _stock_details(symbol, con_id, primary, long_name, industry=industry, isin=isin)
    return _finish(Instrument(details, feed, STOCK_BOOK, _RTH_EASTERN), start_epoch)


def _sap(seed, start_epoch, n):
    """SAP SE on Xetra (IBIS), quoted in EUR: IB's shape for a German stock (primaryExchange IBIS,
    tradingClass XETRA, timeZoneId MET); minTick 0.01 and market rule 26 as the US stocks (Xetra's
    liquidity-band tick table is not modelled)."""
    feed = _feed("GOOG_1d", XETRA_TZ, 0.01, seed=seed, path="SAP", start_epoch=start_epoch, rotation=n // 6,
                 target=240.0, volume=2.0)
    details = _details("SAP", "STK", "SMART", "EUR", EU_STOCK_CON_ID, 0.01, primary="IBIS", trading_class="XETRA",
                       market_name="XETRA", long_name="SAP SE", tz=XETRA_TZ, order_types=_STK_ORDER_TYPES,
                       valid_exchanges=_XETRA_EXCHANGES, rule="26", min_size="1", size_increment="1",
                       suggested_increment="1", stock_type="COMMON", isin="DE0007164600",
                       industry=("Technology", "Software", "Enterprise Software"))
    return _finish(Instrument(details, feed, STOCK_BOOK, _RTH_XETRA), start_epoch)


def _spx_feed(seed, start_epoch, n, tz, tick, *, scale=1.0, volume=0.0) -> Feed:
    # SPX, SPY and ES share the stream "SPX" and the rotation, so they move together.
    return _feed("GOOG_1d", tz, tick, seed=seed, path="SPX", start_epoch=start_epoch, rotation=2 * n // 3,
                 target=5900.0, scale=scale, volume=volume)


def _spx(seed, start_epoch, n):
    feed = _spx_feed(seed, start_epoch, n, CENTRAL, 0.01)
    feed.spread = 0
    details = _details("SPX", "IND", "CBOE", "USD", 416904, 0.01, trading_class="SPX",
                       long_name="S&P 500 Stock Index", tz=CENTRAL, agg_group=UNSET_INTEGER)
    return _finish(Instrument(details, feed, INDEX_BOOK, _RTH_CENTRAL), start_epoch)


def _spy(seed, start_epoch, n):
    feed = _spx_feed(seed, start_epoch, n, EASTERN, 0.01, scale=0.1, volume=30.0)
    details = _stock_details("SPY", 756733, "ARCA", "SPDR S&P 500 ETF TRUST", trading_class="SPY",
                             stock_type="ETF", isin="US78462F1030")
    return _finish(Instrument(details, feed, STOCK_BOOK, _RTH_EASTERN), start_epoch)


def third_friday(year: int, month: int) -> date:
    """The third Friday of a month: the last trade date of CME's quarterly equity index futures."""
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def es_expiries(start_epoch: float, count: int = ES_MONTHS_LISTED) -> list[date]:
    """Last trade dates of the ``count`` quarterly ES contracts still trading at ``start_epoch``: a
    contract is gone once its last trade date's 08:30 Chicago time has passed, as at IB."""
    tz = ZoneInfo(CENTRAL)
    now = datetime.fromtimestamp(start_epoch, tz)
    out: list[date] = []
    year, month = now.year, now.month
    while len(out) < count:
        if month in ES_QUARTER_MONTHS:
            expiry = third_friday(year, month)
            if datetime.combine(expiry, ES_LAST_TRADE, tz) > now:
                out.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def es_local_symbol(expiry: date) -> str:
    """IB's localSymbol of an ES contract: root, month code, last digit of the year (ESZ6)."""
    return f"ES{month_code(expiry.month)}{expiry.year % 10}"


def es_con_id(expiry: date) -> int:
    """The paper gateway's conId of the ES contract expiring on ``expiry`` (derived, stable)."""
    return ES_CON_ID_BASE + (expiry.year - 2000) * 100 + expiry.month


def _es(seed, start_epoch, n, expiry: date, volume):
    start_day = datetime.fromtimestamp(start_epoch, ZoneInfo(CENTRAL)).date()
    days = max((expiry - start_day).days, 0)
    ltd = format_date(expiry)
    feed = _spx_feed(seed, start_epoch, n, CENTRAL, 0.25, scale=1.0 + ES_CARRY * days / 365.0, volume=volume)
    details = _details("ES", "FUT", "CME", "USD", es_con_id(expiry), 0.25, local_symbol=es_local_symbol(expiry),
                       trading_class="ES", market_name="ES", multiplier="50", ltd=ltd, long_name="E-mini S&P 500",
                       tz=CENTRAL, order_types=_FUT_ORDER_TYPES, valid_exchanges="CME,QBALGO", rule="67",
                       agg_group=2)
    details.contractMonth = ltd[:6]
    details.underConId, details.underSymbol, details.underSecType = 11004968, "ES", "IND"
    details.realExpirationDate = ltd
    details.lastTradeTime = ES_LAST_TRADE.strftime("%H:%M:%S")
    return _finish(Instrument(details, feed, FUTURE_BOOK, _RTH_CENTRAL), start_epoch)


def _eurusd(seed, start_epoch):
    feed = _feed("EURUSD_1h", EASTERN, 0.00005, seed=seed, path="EUR.USD", start_epoch=start_epoch)
    details = _details("EUR", "CASH", "IDEALPRO", "USD", 12087792, 0.00005, local_symbol="EUR.USD",
                       trading_class="EUR.USD", long_name="European Monetary Union Euro",
                       order_types=_FX_ORDER_TYPES, rule="3188", agg_group=4, min_size="0.01",
                       size_increment="0.01", suggested_increment="0.01")
    return _finish(Instrument(details, feed, FX_BOOK, None), start_epoch)


def _btc(seed, start_epoch):
    feed = _feed("BTCUSD_1M", CENTRAL, 0.25, seed=seed, path="BTC", start_epoch=start_epoch, spread=40,
                 volume=1e8)
    details = _details("BTC", "CRYPTO", "PAXOS", "USD", 479624278, 0.25, local_symbol="BTC.USD",
                       trading_class="BTC", long_name="Bitcoin", tz=CENTRAL, order_types=_CRYPTO_ORDER_TYPES,
                       agg_group=0, min_size="0.0001", size_increment="0.0001", suggested_increment="0.0001")
    return _finish(Instrument(details, feed, CRYPTO_BOOK, None), start_epoch)


def _synthetic(seed, start_epoch, k, n):
    """SIMkkkk: GOOG daily, seeded rotation, seeded latest close (log-uniform 10..500), seeded volume."""
    h = tk.mix(tk.key_of(seed, "SIM", k), np.arange(3))
    rotation = int(h[0] % np.uint64(n))
    target = round(math.exp(math.log(10) + float(tk.unit01(h[1:2])[0]) * math.log(50)), 2)
    volume = math.exp(math.log(0.12) + float(tk.unit01(h[2:3])[0]) * math.log(4 / 0.12))
    symbol = f"SIM{k:04d}"
    feed = _feed("GOOG_1d", EASTERN, 0.01, seed=seed, path=symbol, start_epoch=start_epoch, rotation=rotation,
                 target=target, volume=volume)
    details = _stock_details(symbol, SYNTHETIC_BASE + k, "NASDAQ", f"PAPER SIMULATED STOCK {k:04d}")
    return _finish(Instrument(details, feed, STOCK_BOOK, _RTH_EASTERN), start_epoch)


def _finish(inst: Instrument, start_epoch: float, calendar: SessionCalendar | None = None) -> Instrument:
    inst.details.tradingHours, inst.details.liquidHours = hours_strings(inst, start_epoch, calendar=calendar)
    return inst


# --- trading hours ----------------------------------------------------------------------------------
def hours_strings(inst: Instrument, start_epoch: float, days: int = TRADING_DAYS_SHOWN,
                  calendar: SessionCalendar | None = None) -> tuple[str, str]:
    """(tradingHours, liquidHours) in IB's format for ``days`` calendar days from the start's date:
    ``20261123:0000-20261124:0000;20261124:CLOSED;...``, in the instrument's time zone.

    The paper market trades around the clock on every day that has a replayed bar (a daily bar spans
    its whole calendar day), so tradingHours are whole days and real gaps (weekends and holidays
    of the real data, on shifted dates) are CLOSED. liquidHours are the regular session of those
    days (09:30-16:00 New York for stocks, 08:30-15:00 Chicago for ES and SPX); for FX and crypto
    they equal tradingHours. With exchange hours (``calendar``), tradingHours are the sessions the
    market trades in (``sessions.py``: stocks = their liquid hours; ES 17:00-16:00 Chicago across
    midnight, with the daily break)."""
    feed, tz = inst.feed, inst.tz
    first = unit_of(DAY, tz, start_epoch)
    day_units = np.arange(first, first + days, dtype=np.int64)
    day_starts = unit_starts(DAY, tz, np.arange(first, first + days + 1, dtype=np.int64))
    if feed.kind == HOUR:
        sessions = _hour_runs(feed, int(day_starts[0]), int(day_starts[-1]))
    elif feed.kind == DAY:
        is_open = feed.open_on(day_units)
        sessions = [(int(day_starts[i]), int(day_starts[i + 1])) for i in range(days) if is_open[i]]
    else:
        sessions = [(int(day_starts[i]), int(day_starts[i + 1])) for i in range(days)]
    if calendar is not None and calendar.gated(inst):
        days_open = [(s, e) for s, e in sessions]
        sessions = _merged([x for d in day_units.tolist() for x in calendar.day_sessions(inst, d)])
        trading = _format_sessions(sessions, day_units, day_starts, tz)
        sessions = days_open
    else:
        trading = _format_sessions(sessions, day_units, day_starts, tz)
    if inst.liquid is None:
        return trading, trading
    lo, hi = inst.liquid
    liquid = [(s + lo, s + hi) for s, _ in sessions]
    return trading, _format_sessions(liquid, day_units, day_starts, tz)


def _merged(sessions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sessions with those that touch joined (an evening session running into the next day's)."""
    out: list[tuple[int, int]] = []
    for s, e in sessions:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _hour_runs(feed: Feed, e0: int, e1: int) -> list[tuple[int, int]]:
    """Maximal runs of consecutive replayed hourly bars inside [e0, e1) as (start, end) epochs."""
    hours = np.arange(e0 // 3600, e1 // 3600, dtype=np.int64)
    is_open = feed.open_on(hours)
    runs, begin = [], None
    for h, ok in zip(hours, is_open):
        if ok and begin is None:
            begin = int(h)
        if not ok and begin is not None:
            runs.append((begin * 3600, int(h) * 3600))
            begin = None
    if begin is not None:
        runs.append((begin * 3600, int(hours[-1] + 1) * 3600))
    return runs


def _stamp(epoch: int, tz: ZoneInfo) -> str:
    return format_hours_stamp(datetime.fromtimestamp(epoch, tz))


def _format_sessions(sessions, day_units, day_starts, tz) -> str:
    parts = []
    for i, _ in enumerate(day_units):
        d0, d1 = int(day_starts[i]), int(day_starts[i + 1])
        mine = [(s, e) for s, e in sessions if d0 <= s < d1]
        covered = any(s < d0 < e for s, e in sessions)
        if mine:
            parts += [f"{_stamp(s, tz)}-{_stamp(e, tz)}" for s, e in mine]
        elif not covered:
            parts.append(f"{format_date(datetime.fromtimestamp(d0, tz))}:CLOSED")
    return ";".join(parts)


# --- matching ---------------------------------------------------------------------------------------


def matches(inst: Instrument, q: Contract) -> bool:
    """IB-style match of a (partial) Contract against an instrument, conId aside.

    symbol is compared case-insensitively (for CASH also the pair, "EUR.USD" or "EURUSD"); secType must
    match when given; every other non-empty field must agree: exchange (SMART for any stock, or the
    instrument's exchange, primary exchange or one of its validExchanges), primaryExchange, currency,
    localSymbol, tradingClass, lastTradeDateOrContractMonth (YYYYMM or YYYYMMDD), multiplier (as a
    number), secIdType/secId (the ISINs we know). A strike or right never matches: options are not
    Instruments (``options.OptionBook.lookup`` matches them). Needs a symbol or a localSymbol."""
    c, d = inst.contract, inst.details
    sym, local = (q.symbol or "").strip().upper(), (q.localSymbol or "").strip().upper()
    if not sym and not local:
        return False
    if (q.secType or "").strip() and q.secType.strip().upper() != c.secType:
        return False
    if sym and sym != c.symbol.upper():
        pair = c.localSymbol.upper()
        if not (c.secType == "CASH" and sym in (pair, pair.replace(".", ""))):
            return False
    if local and local != c.localSymbol.upper():
        return False
    if not _exchange_ok(inst, (q.exchange or "").strip().upper()):
        return False
    for mine, theirs in ((c.primaryExchange, q.primaryExchange), (c.currency, q.currency),
                         (c.tradingClass, q.tradingClass)):
        if (theirs or "").strip() and theirs.strip().upper() != mine.upper():
            return False
    ltd = (q.lastTradeDateOrContractMonth or "").strip()
    if ltd and not (c.lastTradeDateOrContractMonth and len(ltd) in (6, 8)
                    and c.lastTradeDateOrContractMonth.startswith(ltd)):
        return False
    if (q.multiplier or "").strip():
        try:
            if float(q.multiplier) != inst.multiplier:
                return False
        except ValueError:
            return False
    try:
        strike = float(q.strike or 0)
    except (TypeError, ValueError):
        return False
    if strike != 0 and strike < UNSET_DOUBLE / 2:
        return False
    if (q.right or "").strip() not in ("", "?", "0"):
        return False
    if (q.secId or "").strip():
        known = {(t.tag.upper(), t.value.upper()) for t in (d.secIdList or [])}
        if ((q.secIdType or "ISIN").upper(), q.secId.strip().upper()) not in known:
            return False
    return True


def _exchange_ok(inst: Instrument, exchange: str) -> bool:
    if not exchange:
        return True
    c = inst.contract
    if exchange == "SMART":
        return c.secType == "STK" or c.exchange == "SMART"
    valid = {x.upper() for x in inst.details.validExchanges.split(",") if x}
    return exchange in valid | {c.exchange.upper(), c.primaryExchange.upper()} - {""}
