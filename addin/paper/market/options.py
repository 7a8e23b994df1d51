"""The paper gateway's listed options: the option classes (equity options on AAPL, MSFT and SPY, index
options SPX/SPXW, options on the ES futures), their expiries, strikes, conIds and contract details,
and IB-style matching of (partial) option contracts.

The model (docs/paper-market.md, "Options"; every constant here is the documented one):

* A class (``ClassSpec``) is one tradingClass: secType OPT or FOP, its exchanges, multiplier, exercise
  style, settlement, market rule (the quote grid), the model's expiry moment and dividend yield.
  Equity classes AAPL, MSFT, SPY: OPT, SMART + the US option exchanges, 100, American, shares,
  rule 32 (0.01 under 3.00, 0.05 from), expiry moment 16:00 New York. SPX (AM-settled monthlies) and
  SPXW (PM-settled weeklies and dailies): OPT, SMART/CBOE, 100, European, cash, strike step 5, rule
  110 (0.05 under 3.00, 0.10 from), dividend yield ``SPX_DIVIDEND_YIELD``. ES options: FOP, CME, 50,
  underlying one ES future, rule 111 (0.05 under 5.00, 0.25 from), Black-76; tradingClass ES for the
  quarterly (the future's own third Friday, AM with the future, 08:30 Chicago) and EW1..EW5 for the
  other Fridays (EWn: the month's n-th Friday, PM 15:00 Chicago) on the nearest future expiring on or
  after them.
* Listed expiries are fixed at the gateway's start and never expired (a class lists an expiry while
  its trading end is after the start): equities the next ``WEEKLIES`` Fridays, the next ``MONTHLIES``
  monthly third Fridays and quarterlies (SPY: the last business day of the next ``QUARTERLIES``
  quarter-end months; AAPL/MSFT: the third Fridays of the March/June/September/December months within
  ``QUARTERLY_MONTHS_AHEAD`` months); SPX the monthlies; SPXW the next ``DAILIES`` business days,
  the weeklies, the monthlies' third Fridays and the quarter-ends. Holidays: ``option_calendar.py``.
* Strikes: every multiple of the class's step within +-``STRIKE_SPAN`` (25 %; index and futures
  classes +-``INDEX_STRIKE_SPAN``, 10 %) of the underlying's price at the start; every expiry the same.
  Equity step: 1 for an ETF (SPY), else 0.5 under 25, 1 under 50, 2.5 under 250, 5 from 250.
* conId = ``OPTION_CON_ID_BASE`` + ((class number x 8192 + days since 2020-01-01) x 8192
  + strike / unit) x 2 + (0 call, 1 put), unit 0.5 for the equity classes and 5 for SPX, SPXW and ES;
  class numbers AAPL 1, MSFT 2, SPY 3, SPX 4, SPXW 5, ES options 6 (the expiry decides ES or EWn and
  the future). Stable, unique, decodable, below 2^31.
* localSymbol: OCC style for OPT (root = tradingClass padded to 6, yymmdd, C/P, strike x 1000 in 8
  digits: ``SPXW  260320C05900000``); FOP: tradingClass, month code, year digit, space, right and
  strike (``ESH6 C5900``, ``EW2H6 P5850``).

Contracts are built on demand (a class lists thousands), never stored.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ibapi.contract import Contract, ContractDetails

from ...protocol.futures import month_code
from ...protocol.times import format_date
from ...protocol.unset import UNSET_DOUBLE
from . import option_calendar as cal
from .universe import CENTRAL, EASTERN, Instrument, _details

WEEKLIES = 5              # Fridays listed ahead
MONTHLIES = 6             # monthly third Fridays listed ahead
QUARTERLIES = 4           # SPY / SPXW: quarter-end expiries listed ahead
QUARTERLY_MONTHS_AHEAD = 12   # AAPL / MSFT: quarterly third Fridays within this many months
DAILIES = 10              # SPXW: business days listed ahead
STRIKE_SPAN = 0.25        # equity strikes within +-25 % of the underlying's start price
INDEX_STRIKE_SPAN = 0.10  # SPX, SPXW and ES options: +-10 %
LAST_TRADE = time(16, 0)  # New York: equity options stop trading at the close of their expiry day
MULTIPLIER = "100"
OPTION_RULE_ID = 32      # market rule of the equity option quotes: 0.01 under 3.00, 0.05 from 3.00
OPTION_RULE = ((0.0, 0.01), (3.0, 0.05))
SPX_RULE_ID, SPX_RULE = 110, ((0.0, 0.05), (3.0, 0.10))     # the paper's rule ids; IB's SPX increments
ES_FOP_RULE_ID, ES_FOP_RULE = 111, ((0.0, 0.05), (5.0, 0.25))  # CME: 0.05 under 5.00, 0.25 from 5.00
SPX_DIVIDEND_YIELD = 0.013   # continuous, per year: the S&P 500's yield, stated
OPTION_CON_ID_BASE = 1_100_000_000
_EPOCH_DAY = date(2020, 1, 1)
_DAYS, _UNITS = 8192, 8192

#: The exchanges IB lists for a US equity option class (reqSecDefOptParams answers one row each).
OPTION_EXCHANGES = ("SMART", "AMEX", "BATS", "BOX", "CBOE", "CBOE2", "EDGX", "EMERALD", "GEMINI", "IBUSOPT",
                    "ISE", "MERCURY", "MIAX", "NASDAQBX", "NASDAQOM", "PEARL", "PHLX", "PSE")
_OPT_ORDER_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
                    "DEACTEOD,DIS,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,OPENCLOSE,"
                    "PEGMIDVOL,PEGMKTVOL,PEGPRMVOL,PEGSRFVOL,POSTONLY,PRICECHK,REL,REL2MID,RELPCTOFS,SCALE,"
                    "SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,"
                    "VOLAT,WHATIF")


@dataclass(frozen=True)
class ClassSpec:
    """One option class (a tradingClass): what IB's contract details say and what the quote model
    needs. ``settle``: the model's expiry moment on the expiry date (local ``tz``; T ends there);
    ``trading_end``: when the class stops trading, on the expiry date or ``end_days_before``
    business days earlier (an expiry is listed while that is after the gateway's start)."""

    trading_class: str
    symbol: str
    sec_type: str
    class_no: int
    exchanges: tuple[str, ...]
    multiplier: str
    style: str                     # American / European
    settlement: str                # shares / cash / future
    rule_id: int
    rule: tuple[tuple[float, float], ...]
    strike_unit: float             # conIds count strikes in this unit
    tz: str
    settle: time
    trading_end: time
    end_days_before: int = 0
    dividend_yield: float = 0.0
    black76: bool = False          # on a future: Black-76 (the future's price, no dividends)

    @property
    def min_tick(self) -> float:
        return self.rule[0][1]

    def settle_at(self, expiry: date) -> datetime:
        return datetime.combine(expiry, self.settle, ZoneInfo(self.tz))

    def trading_ends(self, expiry: date) -> datetime:
        day = expiry
        for _ in range(self.end_days_before):
            day = cal.on_business_day(day - timedelta(days=1))
        return datetime.combine(day, self.trading_end, ZoneInfo(self.tz))


def _equity(symbol: str, class_no: int) -> ClassSpec:
    return ClassSpec(symbol, symbol, "OPT", class_no, OPTION_EXCHANGES, MULTIPLIER, "American", "shares",
                     OPTION_RULE_ID, OPTION_RULE, 0.5, EASTERN, LAST_TRADE, LAST_TRADE)


_SPX_EXCHANGES = ("SMART", "CBOE")
_AM, _PM = time(8, 30), time(15, 0)   # Chicago: AM settlement at the open, PM at the close
#: tradingClass -> its spec. EW1..EW5 share everything but the name.
SPECS: dict[str, ClassSpec] = {
    "AAPL": _equity("AAPL", 1), "MSFT": _equity("MSFT", 2), "SPY": _equity("SPY", 3),
    # SPX: AM-settled at Friday's open (08:30 Chicago); trading ends at the close the business day before.
    "SPX": ClassSpec("SPX", "SPX", "OPT", 4, _SPX_EXCHANGES, MULTIPLIER, "European", "cash", SPX_RULE_ID,
                     SPX_RULE, 5.0, CENTRAL, _AM, _PM, 1, SPX_DIVIDEND_YIELD),
    "SPXW": ClassSpec("SPXW", "SPX", "OPT", 5, _SPX_EXCHANGES, MULTIPLIER, "European", "cash", SPX_RULE_ID,
                      SPX_RULE, 5.0, CENTRAL, _PM, _PM, 0, SPX_DIVIDEND_YIELD),
    "ES": ClassSpec("ES", "ES", "FOP", 6, ("CME",), "50", "American", "future", ES_FOP_RULE_ID, ES_FOP_RULE,
                    5.0, CENTRAL, _AM, _AM, 0, 0.0, True),
    **{f"EW{n}": ClassSpec(f"EW{n}", "ES", "FOP", 6, ("CME",), "50", "European", "future", ES_FOP_RULE_ID,
                           ES_FOP_RULE, 5.0, CENTRAL, _PM, _PM, 0, 0.0, True) for n in range(1, 6)},
}
#: symbol -> (class number, ETF?): the optionable stocks (kept for callers of the first version).
OPTION_CLASSES = {"AAPL": (1, False), "MSFT": (2, False), "SPY": (3, True)}
#: underlying symbol -> secType: every underlying an option class is built on.
UNDERLYINGS = {"AAPL": "STK", "MSFT": "STK", "SPY": "STK", "SPX": "IND", "ES": "FUT"}
_STRIKE_UNIT = {spec.class_no: spec.strike_unit for spec in SPECS.values()}

_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
_ANY_RIGHT = ("", "?", "0")


def spec_of(details: ContractDetails) -> ClassSpec:
    """The class of an option's details (by tradingClass; an unknown one is read as an equity class)."""
    c = details.contract
    return SPECS.get(c.tradingClass) or _equity(c.symbol, 0)


# --- the listing rules --------------------------------------------------------------------------------
def listed_expiries(start_epoch: float, weeklies: int = WEEKLIES, monthlies: int = MONTHLIES) -> list[date]:
    """Weekly and monthly expiry dates of an equity class listed at ``start_epoch``, ascending: the next
    ``weeklies`` Fridays and ``monthlies`` third Fridays whose last trade (16:00 New York) is after it."""
    spec = SPECS["AAPL"]
    return _alive(spec, start_epoch, _weeklies(spec, start_epoch, weeklies) | _monthlies(spec, start_epoch, monthlies))


def class_expiries(spec: ClassSpec, start_epoch: float) -> list[date]:
    """Every expiry an OPT class lists at ``start_epoch`` (see the module docstring), ascending."""
    name = spec.trading_class
    out = set()
    if name != "SPX":
        out |= _weeklies(spec, start_epoch, WEEKLIES)
    out |= _monthlies(spec, start_epoch, MONTHLIES)
    if name in ("SPY", "SPXW"):
        out |= _quarter_ends(spec, start_epoch, QUARTERLIES)
    elif name in ("AAPL", "MSFT"):
        first = _local(spec, start_epoch).date()
        out |= {cal.monthly(y, m) for y, m in cal.months_from(first, QUARTERLY_MONTHS_AHEAD // 3 + 1,
                                                                cal.QUARTER_MONTHS)
                if (y - first.year) * 12 + m - first.month <= QUARTERLY_MONTHS_AHEAD}
    if name == "SPXW":
        out |= set(_alive(spec, start_epoch, set(cal.business_days(_local(spec, start_epoch).date(), DAILIES + 1)),
                          DAILIES))
    return _alive(spec, start_epoch, out)


def _local(spec: ClassSpec, start_epoch: float) -> datetime:
    return datetime.fromtimestamp(start_epoch, ZoneInfo(spec.tz))


def _alive(spec: ClassSpec, start_epoch: float, dates: set[date], limit: int | None = None) -> list[date]:
    now = _local(spec, start_epoch)
    alive = sorted(d for d in dates if spec.trading_ends(d) > now)
    return alive if limit is None else alive[:limit]


def _weeklies(spec: ClassSpec, start_epoch: float, count: int) -> set[date]:
    """The next ``count`` Fridays still trading (a Friday whose trading has ended is skipped)."""
    fridays = cal.fridays(_local(spec, start_epoch).date(), count + 1)
    return set(_alive(spec, start_epoch, set(fridays), count))


def _monthlies(spec: ClassSpec, start_epoch: float, count: int) -> set[date]:
    first = _local(spec, start_epoch).date()
    return set(_alive(spec, start_epoch, {cal.monthly(y, m) for y, m in cal.months_from(first, count + 1)}, count))


def _quarter_ends(spec: ClassSpec, start_epoch: float, count: int) -> set[date]:
    first = _local(spec, start_epoch).date()
    ends = {cal.quarter_end(y, m) for y, m in cal.months_from(first, count + 1, cal.QUARTER_MONTHS)}
    return set(_alive(spec, start_epoch, ends, count))


def fop_expiries(start_epoch: float, futures: list[tuple[date, int]]) -> dict[tuple[str, int], list[date]]:
    """ES options listed at ``start_epoch`` on the listed ES futures ((last trade date, conId), any
    order): (tradingClass, future conId) -> expiries. ES: each future's own third Friday; EWn: the
    next ``WEEKLIES`` Fridays that are not a quarterly expiry, on the nearest future expiring on or
    after them."""
    out: dict[tuple[str, int], list[date]] = {}
    futures = sorted(futures)
    quarterly = SPECS["ES"]
    for expiry, con_id in futures:
        if quarterly.trading_ends(expiry) > _local(quarterly, start_epoch):
            out.setdefault(("ES", con_id), []).append(expiry)
    quarter_days = {expiry for expiry, _ in futures}
    weekly = SPECS["EW1"]
    fridays = cal.fridays(_local(weekly, start_epoch).date(), WEEKLIES + 2)
    for friday in _alive(weekly, start_epoch, {f for f in fridays if f not in quarter_days}, WEEKLIES):
        on = next((con_id for expiry, con_id in futures if expiry >= friday), None)
        if on is not None:
            week_friday = friday + timedelta(days=(4 - friday.weekday()) % 7)   # a holiday-moved one: its Friday
            out.setdefault((f"EW{(week_friday.day - 1) // 7 + 1}", on), []).append(friday)
    return out


def strike_step(reference: float, etf: bool = False) -> float:
    """Strike spacing of an equity class whose underlying trades at ``reference``: 1 for an ETF; else
    0.5 under 25, 1 under 50, 2.5 under 250, 5 from 250."""
    if etf:
        return 1.0
    for limit, step in ((25.0, 0.5), (50.0, 1.0), (250.0, 2.5)):
        if reference < limit:
            return step
    return 5.0


def listed_strikes(reference: float, step: float, span: float = STRIKE_SPAN) -> tuple[float, ...]:
    """Every multiple of ``step`` within ``reference`` x (1 -+ span), ascending."""
    lo = math.ceil(reference * (1 - span) / step)
    hi = math.floor(reference * (1 + span) / step)
    return tuple(round(k * step, 4) for k in range(max(lo, 1), hi + 1))


def occ_local_symbol(root: str, expiry: date, right: str, strike: float) -> str:
    """OCC option symbol: root padded to 6, yymmdd, C/P, strike x 1000 in 8 digits."""
    return f"{root:<6}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


def fop_local_symbol(trading_class: str, expiry: date, right: str, strike: float) -> str:
    """IB-style futures option symbol: tradingClass, month code, year digit, right and strike (ESH6 C5900)."""
    return f"{trading_class}{month_code(expiry.month)}{expiry.year % 10} {right}{strike:g}"


def option_con_id(class_no: int, expiry: date, strike: float, right: str) -> int:
    """The paper conId of one option (see the module docstring for the formula)."""
    days = (expiry - _EPOCH_DAY).days % _DAYS
    units = round(strike / _STRIKE_UNIT.get(class_no, 0.5)) % _UNITS
    return OPTION_CON_ID_BASE + ((class_no * _DAYS + days) * _UNITS + units) * 2 + (right == "P")


def _decode_con_id(con_id: int) -> tuple[int, date, float, str] | None:
    n = con_id - OPTION_CON_ID_BASE
    if n < 0:
        return None
    n, put = divmod(n, 2)
    n, units = divmod(n, _UNITS)
    class_no, days = divmod(n, _DAYS)
    return (class_no, _EPOCH_DAY + timedelta(days=days), units * _STRIKE_UNIT.get(class_no, 0.5),
            "P" if put else "C")


# --- option classes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionClass:
    """The listed options of one tradingClass on one underlying: expiries (ascending dates), strikes
    (ascending), the underlying Instrument, and the contract details every option of the class shares
    (``template``)."""

    spec: ClassSpec
    underlying: Instrument
    reference: float
    expiries: tuple[date, ...]
    strikes: tuple[float, ...]
    template: ContractDetails = field(repr=False)

    @property
    def class_no(self) -> int:
        return self.spec.class_no

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def trading_class(self) -> str:
        return self.spec.trading_class

    @property
    def name(self) -> str:
        """The key in ``OptionBook.classes``: the tradingClass, and the future's localSymbol for FOP."""
        if self.spec.sec_type == "FOP":
            return f"{self.trading_class} {self.underlying.contract.localSymbol}"
        return self.trading_class

    def lists(self, expiry: date, strike: float, right: str) -> bool:
        return expiry in self.expiries and _on_list(strike, self.strikes) and right in ("C", "P")

    def details(self, expiry: date, strike: float, right: str) -> ContractDetails:
        """Complete ContractDetails of one listed option (a fresh object)."""
        d = copy.copy(self.template)
        d.contract = c = copy.copy(self.template.contract)
        ltd = format_date(expiry)
        c.conId = option_con_id(self.class_no, expiry, strike, right)
        c.lastTradeDateOrContractMonth = c.lastTradeDate = ltd
        c.strike, c.right = strike, right
        if self.spec.sec_type == "FOP":
            c.localSymbol = fop_local_symbol(self.trading_class, expiry, right, strike)
        else:
            c.localSymbol = occ_local_symbol(self.trading_class, expiry, right, strike)
            d.contractMonth = ltd[:6]
        d.realExpirationDate = ltd
        return d


def _on_list(strike: float, strikes: tuple[float, ...]) -> bool:
    return any(abs(strike - s) < 1e-6 for s in strikes)


def _template(spec: ClassSpec, inst: Instrument) -> ContractDetails:
    u = inst.details
    exchange = "CME" if spec.sec_type == "FOP" else "SMART"
    d = _details(spec.symbol, spec.sec_type, exchange, "USD", 0, spec.min_tick, trading_class=spec.trading_class,
                 market_name=spec.trading_class, multiplier=spec.multiplier, long_name=u.longName, tz=spec.tz,
                 order_types=_OPT_ORDER_TYPES, valid_exchanges=",".join(spec.exchanges), rule=str(spec.rule_id),
                 agg_group=2, industry=(u.industry, u.category, u.subcategory))
    d.underConId, d.underSymbol, d.underSecType = inst.con_id, inst.symbol, inst.sec_type
    d.lastTradeTime = spec.settle.strftime("%H:%M:%S")
    if spec.sec_type == "FOP":
        d.contractMonth = u.contractMonth          # IB: a futures option's month is its future's
    # Options trade when their underlying does (around the clock in the default paper mode).
    d.tradingHours, d.liquidHours = u.tradingHours, u.liquidHours
    return d


def option_underlyings(instruments: list[Instrument]) -> list[Instrument]:
    """The instruments option classes are built on (their start prices set the strikes)."""
    return [inst for inst in instruments if UNDERLYINGS.get(inst.symbol) == inst.sec_type]


class OptionBook:
    """Every option class of the paper market. ``classes``: name -> OptionClass (``OptionClass.name``:
    the tradingClass; for ES options the tradingClass and the future, ``"EW2 ESH6"``).

    Build with :meth:`build` from the instruments and their prices at the start."""

    def __init__(self, classes: dict[str, OptionClass]):
        self.classes = classes
        self._by_no: dict[int, list[OptionClass]] = {}
        for oc in classes.values():
            self._by_no.setdefault(oc.class_no, []).append(oc)

    @classmethod
    def build(cls, instruments: list[Instrument], prices: dict[int, float], start_epoch: float) -> OptionBook:
        """prices: underlying conId -> its price at the start (the strikes' reference); an underlying
        without a price gets no options."""
        made: list[OptionClass] = []
        futures: list[tuple[date, Instrument]] = []
        for inst in option_underlyings(instruments):
            ref = prices.get(inst.con_id)
            if ref is None:
                continue
            if inst.sec_type == "STK":
                spec = SPECS[inst.symbol]
                strikes = listed_strikes(ref, strike_step(ref, inst.symbol == "SPY"))
                made.append(OptionClass(spec, inst, ref, tuple(class_expiries(spec, start_epoch)), strikes,
                                        _template(spec, inst)))
            elif inst.sec_type == "IND":
                strikes = listed_strikes(ref, 5.0, INDEX_STRIKE_SPAN)
                for name in ("SPX", "SPXW"):
                    spec = SPECS[name]
                    made.append(OptionClass(spec, inst, ref, tuple(class_expiries(spec, start_epoch)), strikes,
                                            _template(spec, inst)))
            else:
                expiry = datetime.strptime(inst.contract.lastTradeDateOrContractMonth, "%Y%m%d").date()
                futures.append((expiry, inst))
        by_id = {inst.con_id: inst for _, inst in futures}
        for (name, con_id), expiries in fop_expiries(start_epoch, [(e, i.con_id) for e, i in futures]).items():
            inst, spec = by_id[con_id], SPECS[name]
            ref = prices[con_id]
            made.append(OptionClass(spec, inst, ref, tuple(sorted(expiries)),
                                    listed_strikes(ref, 5.0, INDEX_STRIKE_SPAN), _template(spec, inst)))
        return cls({oc.name: oc for oc in made})

    def classes_on(self, con_id: int) -> list[OptionClass]:
        """The classes on one underlying, by tradingClass."""
        return sorted((c for c in self.classes.values() if c.underlying.con_id == con_id),
                      key=lambda c: c.trading_class)

    def for_underlying(self, con_id: int) -> OptionClass | None:
        """The first class on an underlying (see ``classes_on`` for all)."""
        found = self.classes_on(con_id)
        return found[0] if found else None

    def by_con_id(self, con_id: int) -> ContractDetails | None:
        """The listed option with this conId, or None."""
        oc = self.class_of(con_id)
        if oc is None:
            return None
        _, expiry, strike, right = _decode_con_id(int(con_id))  # type: ignore[misc]
        return oc.details(expiry, strike, right)

    def class_of(self, con_id: int) -> OptionClass | None:
        """The class listing the option with this conId, or None."""
        decoded = _decode_con_id(int(con_id or 0))
        if decoded is None or option_con_id(*decoded) != con_id:
            return None
        class_no, expiry, strike, right = decoded
        return next((c for c in self._by_no.get(class_no, ()) if c.lists(expiry, strike, right)), None)

    def lookup(self, q: Contract) -> list[ContractDetails]:
        """Every listed option a (partial) OPT or FOP contract names, by expiry, strike, C before P,
        then tradingClass.

        A non-zero conId decides alone. Otherwise needs symbol or a localSymbol (OCC for OPT, ``ESH6
        C5900`` for FOP); may narrow by lastTradeDateOrContractMonth (YYYYMMDD: that expiry; YYYYMM: the
        month's expiries), strike, right (C, P, CALL, PUT; "" or "?" = both), exchange (one of the
        class's), currency (USD), multiplier, tradingClass. Anything not listed (an expiry or strike off
        the list, an unknown right) matches nothing: the caller answers IB's error 200."""
        if q.conId:
            found = self.by_con_id(q.conId)
            return [found] if found is not None else []
        hits = sorted(self._matching(q), key=lambda h: (h[1], h[2], h[3], h[0].trading_class))
        return [oc.details(e, s, r) for oc, e, s, r in hits]

    def _matching(self, q: Contract) -> Iterator[tuple[OptionClass, date, float, str]]:
        sym = (q.symbol or "").strip().upper()
        sec_type = (q.secType or "").strip().upper() or "OPT"
        local = (q.localSymbol or "").strip().upper()
        parsed = (_parse_fop(local) if sec_type == "FOP" else _parse_occ(local)) if local else None
        if local and parsed is None:
            return
        wanted_class = (q.tradingClass or "").strip().upper()
        if parsed is not None:
            if wanted_class and wanted_class != parsed.trading_class:
                return
            wanted_class = parsed.trading_class
        right_text = (q.right or "").strip().upper()
        if right_text in _ANY_RIGHT:
            rights: tuple[str, ...] = ("C", "P")
        elif right_text in _RIGHTS:
            rights = (_RIGHTS[right_text],)
        else:
            return
        exchange = (q.exchange or "").strip().upper()
        for oc in self.classes.values():
            spec = oc.spec
            if spec.sec_type != sec_type or (sym and sym != spec.symbol):
                continue
            if (not sym and parsed is None) or (wanted_class and wanted_class != spec.trading_class):
                continue
            if (exchange and exchange not in spec.exchanges) or (q.currency or "").strip().upper() not in ("", "USD"):
                continue
            if not _multiplier_ok(q.multiplier, spec.multiplier):
                continue
            expiries = _expiries_named(oc.expiries, (q.lastTradeDateOrContractMonth or "").strip())
            strikes = _strikes_named(oc.strikes, q.strike)
            mine = rights
            if parsed is not None:
                expiries = [e for e in expiries if parsed.expiry_matches(e)]
                strikes = [s for s in strikes if abs(s - parsed.strike) < 1e-6]
                mine = tuple(r for r in rights if r == parsed.right)
            for e in expiries:
                for s in strikes:
                    for r in mine:
                        yield oc, e, s, r


def _multiplier_ok(text, mine: str) -> bool:
    if not (text or "").strip():
        return True
    try:
        return float(text) == float(mine)
    except ValueError:
        return False


def _expiries_named(listed: tuple[date, ...], text: str) -> list[date]:
    if not text:
        return list(listed)
    if len(text) == 8 and text.isdigit():
        return [e for e in listed if format_date(e) == text]
    if len(text) == 6 and text.isdigit():
        return [e for e in listed if format_date(e).startswith(text)]
    return []


def _strikes_named(listed: tuple[float, ...], strike) -> list[float]:
    try:
        value = float(strike or 0)
    except (TypeError, ValueError):
        return []
    if value == 0 or value >= UNSET_DOUBLE / 2:
        return list(listed)
    return [s for s in listed if abs(s - value) < 1e-6]


@dataclass(frozen=True)
class _Parsed:
    trading_class: str
    right: str
    strike: float
    expiry: date | None = None          # OCC: the date
    month: tuple[int, int] | None = None  # FOP: (month, year digit)

    def expiry_matches(self, d: date) -> bool:
        if self.expiry is not None:
            return d == self.expiry
        assert self.month is not None
        return (d.month, d.year % 10) == self.month


def _parse_occ(local: str) -> _Parsed | None:
    """An OCC symbol read, or None when it is not one."""
    if len(local) != 21:
        return None
    root, ymd, right, digits = local[:6].strip(), local[6:12], local[12], local[13:]
    if not (root and ymd.isdigit() and right in ("C", "P") and digits.isdigit()):
        return None
    try:
        expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:]))
    except ValueError:
        return None
    return _Parsed(root, right, int(digits) / 1000, expiry=expiry)


_FOP_LOCAL = re.compile(r"^([A-Z0-9]+?)([FGHJKMNQUVXZ])(\d) ([CP])(\d+(?:\.\d+)?)$")
_MONTH_OF_CODE = {code: n for n, code in enumerate("FGHJKMNQUVXZ", start=1)}


def _parse_fop(local: str) -> _Parsed | None:
    m = _FOP_LOCAL.match(local)
    if m is None:
        return None
    return _Parsed(m.group(1), m.group(4), float(m.group(5)), month=(_MONTH_OF_CODE[m.group(2)], int(m.group(3))))


def is_option_query(q: Contract) -> bool:
    """Whether a request's contract names an option: secType OPT or FOP, or no secType and a paper
    option conId."""
    sec_type = (q.secType or "").strip().upper()
    return sec_type in ("OPT", "FOP") or (not sec_type and int(q.conId or 0) >= OPTION_CON_ID_BASE)


def market_rules() -> dict[int, tuple[tuple[float, float], ...]]:
    """Every option class's market rule: id -> ((lowest price, increment), ...)."""
    return {spec.rule_id: spec.rule for spec in SPECS.values()}


__all__ = ["OptionBook", "OptionClass", "ClassSpec", "SPECS", "OPTION_CLASSES", "OPTION_EXCHANGES",
           "OPTION_CON_ID_BASE", "OPTION_RULE", "OPTION_RULE_ID", "SPX_RULE", "SPX_RULE_ID", "ES_FOP_RULE",
           "ES_FOP_RULE_ID", "SPX_DIVIDEND_YIELD", "MULTIPLIER", "STRIKE_SPAN", "INDEX_STRIKE_SPAN", "WEEKLIES",
           "MONTHLIES", "QUARTERLIES", "DAILIES", "listed_expiries", "class_expiries", "fop_expiries",
           "listed_strikes", "strike_step", "occ_local_symbol", "fop_local_symbol", "option_con_id",
           "is_option_query", "spec_of", "option_underlyings", "market_rules"]
