"""The paper gateway's listed equity options: option classes on AAPL, MSFT and SPY, their expiries,
strikes, conIds and contract details, and IB-style matching of (partial) option contracts.

The model (docs/paper-market.md, "Options"):

* One option class per underlying (AAPL, MSFT, SPY): secType OPT, exchange SMART (and the US option
  exchanges in ``OPTION_EXCHANGES``), currency USD, multiplier 100, American style, tradingClass = the
  symbol, minTick 0.01 (IB's contract details say 0.01; the quote grid is market rule
  ``OPTION_RULE_ID``: 0.01 under 3.00, 0.05 from 3.00, as for penny-pilot classes at IB).
* Listed expiries are fixed at the gateway's start (its date in New York): the next
  ``WEEKLIES`` Fridays and the third Fridays of the next ``MONTHLIES`` months, merged; an expiry is
  listed while its last trade time (16:00 New York on the expiry date) is after the start. A Friday
  that is an exchange holiday (New Year's Day, Juneteenth, Independence Day, Christmas, Good Friday)
  moves the expiry to the Thursday before, as the OCC does.
* Strikes: the class's grid around the underlying's price at the start (``reference``): every multiple
  of ``strike_step(reference, etf)`` within +-``STRIKE_SPAN`` (25 %) of it, every expiry the same strikes.
  The step: 1 for an ETF (SPY), else 0.5 under 25, 1 under 50, 2.5 under 250, 5 from 250.
* conId = ``OPTION_CON_ID_BASE`` + ((class number x 8192 + days since 2020-01-01) x 8192
  + strike / 0.5) x 2 + (0 call, 1 put): stable, unique, decodable (the paper's own numbering; IB's
  conIds are opaque). Class numbers: AAPL 1, MSFT 2, SPY 3.
* localSymbol in OCC style: root padded to 6, yymmdd, C/P, strike x 1000 in 8 digits
  (``AAPL  261218C00200000``).

Contracts are built on demand (a class lists a few thousand), never stored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ibapi.contract import Contract, ContractDetails

from ...protocol.times import format_date
from ...protocol.unset import UNSET_DOUBLE
from .universe import EASTERN, Instrument, _details, third_friday

WEEKLIES = 5             # Fridays listed ahead
MONTHLIES = 6            # third-Friday months listed ahead
STRIKE_SPAN = 0.25       # strikes within +-25 % of the underlying's start price
LAST_TRADE = time(16, 0)  # New York: equity options stop trading at the close of their expiry day
MULTIPLIER = "100"
OPTION_RULE_ID = 32      # market rule of the option quotes: 0.01 under 3.00, 0.05 from 3.00
OPTION_RULE = ((0.0, 0.01), (3.0, 0.05))
OPTION_CON_ID_BASE = 1_100_000_000
_EPOCH_DAY = date(2020, 1, 1)
_STRIKE_UNIT = 0.5       # conIds count strikes in half dollars
_DAYS, _UNITS = 8192, 8192

#: The exchanges IB lists for a US equity option class (reqSecDefOptParams answers one row each).
OPTION_EXCHANGES = ("SMART", "AMEX", "BATS", "BOX", "CBOE", "CBOE2", "EDGX", "EMERALD", "GEMINI", "IBUSOPT",
                    "ISE", "MERCURY", "MIAX", "NASDAQBX", "NASDAQOM", "PEARL", "PHLX", "PSE")
_OPT_ORDER_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
                    "DEACTEOD,DIS,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,OPENCLOSE,"
                    "PEGMIDVOL,PEGMKTVOL,PEGPRMVOL,PEGSRFVOL,POSTONLY,PRICECHK,REL,REL2MID,RELPCTOFS,SCALE,"
                    "SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,"
                    "VOLAT,WHATIF")
#: symbol -> (class number, ETF?): the optionable underlyings.
OPTION_CLASSES = {"AAPL": (1, False), "MSFT": (2, False), "SPY": (3, True)}

_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
_ANY_RIGHT = ("", "?", "0")


# --- the listing rules --------------------------------------------------------------------------------
def listed_expiries(start_epoch: float, weeklies: int = WEEKLIES, monthlies: int = MONTHLIES) -> list[date]:
    """Expiry dates listed at ``start_epoch``, ascending: the next ``weeklies`` Fridays and the third
    Fridays of the next ``monthlies`` months whose last trade (16:00 New York) is after the start."""
    tz = ZoneInfo(EASTERN)
    now = datetime.fromtimestamp(start_epoch, tz)

    def alive(d: date) -> bool:
        return datetime.combine(d, LAST_TRADE, tz) > now

    friday = now.date() + timedelta(days=(4 - now.weekday()) % 7)
    if not alive(_trading_day(friday)):
        friday += timedelta(days=7)
    out = {_trading_day(friday + timedelta(days=7 * k)) for k in range(weeklies)}
    year, month, found = now.year, now.month, 0
    while found < monthlies:
        expiry = _trading_day(third_friday(year, month))
        if alive(expiry):
            out.add(expiry)
            found += 1
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return sorted(out)


def _trading_day(friday: date) -> date:
    """The expiry of a Friday: the Thursday before when the Friday is an exchange holiday."""
    fixed = {(1, 1), (6, 19), (7, 4), (12, 25)}
    if (friday.month, friday.day) in fixed or friday == _easter(friday.year) - timedelta(days=2):
        return friday - timedelta(days=1)
    return friday


def _easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def strike_step(reference: float, etf: bool = False) -> float:
    """Strike spacing of a class whose underlying trades at ``reference``: 1 for an ETF; else 0.5
    under 25, 1 under 50, 2.5 under 250, 5 from 250."""
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


def option_con_id(class_no: int, expiry: date, strike: float, right: str) -> int:
    """The paper conId of one option (see the module docstring for the formula)."""
    days = (expiry - _EPOCH_DAY).days % _DAYS
    units = round(strike / _STRIKE_UNIT) % _UNITS
    return OPTION_CON_ID_BASE + ((class_no * _DAYS + days) * _UNITS + units) * 2 + (right == "P")


def _decode_con_id(con_id: int) -> tuple[int, date, float, str] | None:
    n = con_id - OPTION_CON_ID_BASE
    if n < 0:
        return None
    n, put = divmod(n, 2)
    n, units = divmod(n, _UNITS)
    class_no, days = divmod(n, _DAYS)
    return class_no, _EPOCH_DAY + timedelta(days=days), units * _STRIKE_UNIT, "P" if put else "C"


# --- option classes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptionClass:
    """The listed options on one underlying: expiries (ascending dates), strikes (ascending), the
    underlying Instrument, and the contract details every option of the class shares (``template``)."""

    class_no: int
    underlying: Instrument
    reference: float
    expiries: tuple[date, ...]
    strikes: tuple[float, ...]
    template: ContractDetails = field(repr=False)

    @property
    def symbol(self) -> str:
        return self.underlying.symbol

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
        c.localSymbol = occ_local_symbol(self.symbol, expiry, right, strike)
        d.contractMonth, d.realExpirationDate = ltd[:6], ltd
        return d


def _on_list(strike: float, strikes: tuple[float, ...]) -> bool:
    return any(abs(strike - s) < 1e-6 for s in strikes)


def _template(inst: Instrument) -> ContractDetails:
    u = inst.details
    d = _details(inst.symbol, "OPT", "SMART", "USD", 0, 0.01, trading_class=inst.symbol, market_name=inst.symbol,
                 multiplier=MULTIPLIER, long_name=u.longName, tz=EASTERN, order_types=_OPT_ORDER_TYPES,
                 valid_exchanges=",".join(OPTION_EXCHANGES), rule=str(OPTION_RULE_ID), agg_group=2,
                 industry=(u.industry, u.category, u.subcategory))
    d.underConId, d.underSymbol, d.underSecType = inst.con_id, inst.symbol, inst.sec_type
    d.lastTradeTime = LAST_TRADE.strftime("%H:%M:%S")
    # Options trade when their underlying does (around the clock in the default paper mode).
    d.tradingHours, d.liquidHours = u.tradingHours, u.liquidHours
    return d


class OptionBook:
    """Every option class of the paper market. ``classes``: symbol -> OptionClass.

    Build with :meth:`build` from the instruments and their prices at the start."""

    def __init__(self, classes: dict[str, OptionClass]):
        self.classes = classes
        self._by_no = {c.class_no: c for c in classes.values()}

    @classmethod
    def build(cls, instruments: list[Instrument], prices: dict[int, float], start_epoch: float) -> OptionBook:
        """prices: underlying conId -> its price at the start (the strikes' reference)."""
        expiries = tuple(listed_expiries(start_epoch))
        classes = {}
        for inst in instruments:
            spec = OPTION_CLASSES.get(inst.symbol)
            if spec is None or inst.sec_type != "STK" or inst.con_id not in prices:
                continue
            class_no, etf = spec
            ref = prices[inst.con_id]
            classes[inst.symbol] = OptionClass(class_no, inst, ref, expiries,
                                               listed_strikes(ref, strike_step(ref, etf)), _template(inst))
        return cls(classes)

    def for_underlying(self, con_id: int) -> OptionClass | None:
        return next((c for c in self.classes.values() if c.underlying.con_id == con_id), None)

    def by_con_id(self, con_id: int) -> ContractDetails | None:
        """The listed option with this conId, or None."""
        decoded = _decode_con_id(int(con_id or 0))
        if decoded is None:
            return None
        class_no, expiry, strike, right = decoded
        oc = self._by_no.get(class_no)
        if oc is None or not oc.lists(expiry, strike, right):
            return None
        if option_con_id(class_no, expiry, strike, right) != con_id:
            return None
        return oc.details(expiry, strike, right)

    def lookup(self, q: Contract) -> list[ContractDetails]:
        """Every listed option a (partial) OPT contract names, by expiry, strike, then C before P.

        A non-zero conId decides alone. Otherwise needs symbol or an OCC localSymbol; may narrow by
        lastTradeDateOrContractMonth (YYYYMMDD: that expiry; YYYYMM: the month's expiries), strike,
        right (C, P, CALL, PUT; "" or "?" = both), exchange (SMART or a listed option exchange),
        currency (USD), multiplier (100), tradingClass (the symbol). Anything not listed (an expiry or
        strike off the list, an unknown right) matches nothing: the caller answers IB's error 200."""
        if q.conId:
            found = self.by_con_id(q.conId)
            return [found] if found is not None else []
        return [oc.details(e, s, r) for oc, e, s, r in self._matching(q)]

    def _matching(self, q: Contract) -> Iterator[tuple[OptionClass, date, float, str]]:
        sym = (q.symbol or "").strip().upper()
        local = (q.localSymbol or "").strip().upper()
        parsed = _parse_occ(local) if local else None
        if local and parsed is None:
            return
        if parsed is not None:
            if sym and sym != parsed[0]:
                return
            sym = parsed[0]
        oc = self.classes.get(sym)
        if oc is None:
            return
        exchange = (q.exchange or "").strip().upper()
        if exchange and exchange not in OPTION_EXCHANGES:
            return
        for mine, theirs in (("USD", q.currency), (oc.symbol, q.tradingClass)):
            if (theirs or "").strip() and theirs.strip().upper() != mine:
                return
        if (q.multiplier or "").strip():
            try:
                if float(q.multiplier) != float(MULTIPLIER):
                    return
            except ValueError:
                return
        expiries = _expiries_named(oc.expiries, (q.lastTradeDateOrContractMonth or "").strip())
        strikes = _strikes_named(oc.strikes, q.strike)
        right_text = (q.right or "").strip().upper()
        if right_text in _ANY_RIGHT:
            rights: tuple[str, ...] = ("C", "P")
        elif right_text in _RIGHTS:
            rights = (_RIGHTS[right_text],)
        else:
            return
        if parsed is not None:
            _, p_exp, p_right, p_strike = parsed
            expiries = [e for e in expiries if e == p_exp]
            strikes = [s for s in strikes if abs(s - p_strike) < 1e-6]
            rights = tuple(r for r in rights if r == p_right)
        for e in expiries:
            for s in strikes:
                for r in rights:
                    yield oc, e, s, r


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


def _parse_occ(local: str) -> tuple[str, date, str, float] | None:
    """(root, expiry, right, strike) of an OCC symbol, or None when it is not one."""
    if len(local) != 21:
        return None
    root, ymd, right, digits = local[:6].strip(), local[6:12], local[12], local[13:]
    if not (root and ymd.isdigit() and right in ("C", "P") and digits.isdigit()):
        return None
    try:
        expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:]))
    except ValueError:
        return None
    return root, expiry, right, int(digits) / 1000


def is_option_query(q: Contract) -> bool:
    """Whether a request's contract names an option: secType OPT, or no secType and a paper option conId."""
    sec_type = (q.secType or "").strip().upper()
    return sec_type == "OPT" or (not sec_type and int(q.conId or 0) >= OPTION_CON_ID_BASE)


__all__ = ["OptionBook", "OptionClass", "OPTION_CLASSES", "OPTION_EXCHANGES", "OPTION_CON_ID_BASE",
           "OPTION_RULE", "OPTION_RULE_ID", "MULTIPLIER", "STRIKE_SPAN", "WEEKLIES", "MONTHLIES",
           "listed_expiries", "listed_strikes", "strike_step", "occ_local_symbol", "option_con_id",
           "is_option_query"]
