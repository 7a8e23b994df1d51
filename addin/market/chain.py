"""Option chains: the expiries and strikes IB lists for an underlying, and a chain of calls and puts
around the money, streamed or snapshotted within the market data line budget.

Where the data comes from: IB's ``reqSecDefOptParams`` (the listing: one row per exchange, each with
the class's tradingClass, multiplier, expirations and strikes), ``reqContractDetails`` of a partial
option contract (symbol, expiry, SMART: every strike of the expiry, calls and puts, in one request),
and ``reqMktData`` per option (streaming lines through :class:`~addin.market.quotes.MarketData`, or
snapshots) with IB's tickOptionComputation for the greeks. Every request goes through the one
Session (its pacer spaces them).

Decisions:

- The listing rows: SMART's (every option of a stock or ETF is routed there), else those of the
  classes' own exchange (futures options: CME, ...); one per trading class (SPX: SPX monthlies AM and
  SPXW dailies/weeklies PM; ES: ES quarterlies and EW1..EW5 weeklies). The expiries are those of every
  class; each expiry's options are fetched with its own tradingClass. An expiry two classes list (SPX
  and SPXW on a third Friday) takes the class named like the underlying, else the first; the expiry
  argument may pin a class instead (``next SPXW``, ``20261218 SPXW``).
- An option of an expiry that two classes list is written ``conid:N`` (its grammar text, which carries
  no tradingClass, would name both), and is not remembered by text.
- ``IB_CHAIN("SPX")`` / ``("ES")``: a bare symbol IB knows no stock of is tried as the index
  (``^SPX``), then as the front-month future of a known root (``ES`` -> ``ES.CME``).
- Listing and contract details are cached per underlying (and expiry) per New York day: IB lists new
  expiries and strikes overnight, not during the day.
- ``expiry`` accepts a date (an Excel serial number, a date/datetime, ``YYYYMMDD`` or ``YYYY-MM-DD``:
  it must be listed), ``next`` (the first listed expiry from today), ``+30d`` / ``+2w`` / ``+3m``
  (the nearest listed expiry at or after today plus that) and ``monthly`` (the next listed third
  Friday, or the Thursday before it when the exchange moved it for a holiday). Today is New York's.
  Any of them may be followed by a tradingClass that pins the class (``next SPXW``, ``20261218 SPX``).
- ``strikes`` accepts a count (default 10: the listed strikes nearest the underlying's price) or a
  range ``"200-250"`` (every listed strike in it, ends included).
- Line budget: N strikes need 2N lines. At most half of the lines MarketData has free go to one
  chain (the Watchlist and formulas keep the rest); the strikes nearest the money stream, the others
  are one snapshot each (their row's Data says ``snapshot``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import pandas as pd
from ibapi.contract import Contract, ContractDetails

from ..cells import error_value
from ..excel.layout import OPTIONS_COLUMNS, OPTIONS_SIDE_FIELDS
from ..ib.contracts import ContractBook, InstrumentError, format_contract
from ..ib.session import IBError, Request, Session
from .quotes import BoardQuote, MarketData

log = logging.getLogger(__name__)

__all__ = ["OptionChains", "Listing", "ListedClass", "ExpiryRule", "parse_expiry", "parse_strikes", "pick_expiry",
           "pick_strikes",
           "chain_table", "chain_rows", "plan_records", "plan_texts", "CHAIN_COLUMNS", "PLAN_COLUMNS",
           "DEFAULT_STRIKES", "NY"]

NY = ZoneInfo("America/New_York")
DEFAULT_STRIKES = 10
SNAPSHOTS_AT_ONCE = 8             # snapshots in flight for one chain (each counts a line until IB ends it)
MAX_STRIKES = 200                  # a chain wider than this is not a screen, and 400 lines is no budget
EXCEL_EPOCH = date(1899, 12, 30)   # Excel's day 0 (serial 1 = 1900-01-01, through Excel's leap-year bug)
EXCEL_LAST_SERIAL = 2958465        # 9999-12-31, Excel's last date
#: The chain's columns (addin.excel.layout.OPTIONS_COLUMNS): CallBid .. CallTheta, Strike, PutBid .. PutTheta,
#: Data (streaming / snapshot / waiting).
CHAIN_COLUMNS = list(OPTIONS_COLUMNS)
#: What ``OptionChains.plan`` returns, one row per strike: the options' texts, whether the row streams, and a
#: snapshot row's values (prefixed Call / Put as in CHAIN_COLUMNS; empty for streaming rows).
PLAN_COLUMNS = (["Underlying", "Expiry", "UnderPrice", "Strike", "CallSymbol", "PutSymbol", "Stream"]
                + [c for c in CHAIN_COLUMNS if c not in ("Strike", "Data")])


# --- arguments ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpiryRule:
    """A parsed ``expiry`` argument: ``kind`` is "date" (``day`` set), "next", "monthly" or "ahead"
    (``days`` / ``months`` from today); ``trading_class`` pins IB's tradingClass ("" = any listed)."""

    kind: str
    day: date | None = None
    days: int = 0
    months: int = 0
    trading_class: str = ""

    @property
    def text(self) -> str:
        """A canonical text (a cache key): 20261218, next, monthly, +30d, +3m; then " SPXW" when pinned."""
        if self.kind == "date" and self.day is not None:
            text = self.day.strftime("%Y%m%d")
        elif self.kind == "ahead":
            text = f"+{self.months}m" if self.months else f"+{self.days}d"
        else:
            text = self.kind
        return f"{text} {self.trading_class}" if self.trading_class else text


_AHEAD = re.compile(r"^\+\s*(\d{1,4})\s*([dwm])$")
_CLASS = re.compile(r"[A-Z][A-Z0-9]{0,11}")


def parse_expiry(value: Any) -> ExpiryRule:
    """The expiry argument (see the module doc) as an ExpiryRule; blank -> next. Raises ValueError naming
    ``expiry`` for anything else (an Excel error value, text that is no date or rule)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ExpiryRule("next")
    if (err := error_value(value)) is not None:          # "#N/A" text or a COM error code
        raise ValueError(f"expiry: the cell holds the error {err}")
    if isinstance(value, bool):
        raise ValueError(f"expiry: expected a date, 'next', 'monthly' or '+30d', got {value!r}")
    if isinstance(value, datetime):
        return ExpiryRule("date", value.date())
    if isinstance(value, date):
        return ExpiryRule("date", value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 1 <= value <= EXCEL_LAST_SERIAL or value != int(value):
            raise ValueError(f"expiry: {value!r} is not a date (an Excel date is a whole serial number "
                             f"from 1 to {EXCEL_LAST_SERIAL})")
        return ExpiryRule("date", EXCEL_EPOCH + timedelta(days=int(value)))
    text = str(value).strip()
    low = text.lower()
    if low.startswith("#"):
        raise ValueError(f"expiry: the cell holds the error {text}")
    if low in ("next", "monthly"):
        return ExpiryRule(low)
    m = _AHEAD.match(low)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return ExpiryRule("ahead", days=n * (7 if unit == "w" else 1)) if unit != "m" else ExpiryRule("ahead", months=n)
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return ExpiryRule("date", datetime.strptime(text, fmt).date())
        except ValueError:
            pass
    head, _, klass = text.rpartition(" ")      # a rule then a tradingClass: "next SPXW", "20261218 SPX"
    if head.strip() and _CLASS.fullmatch(klass.upper()):
        rule = parse_expiry(head.strip())
        if rule.trading_class:
            raise ValueError(f"expiry: {text!r} names more than one tradingClass")
        return replace(rule, trading_class=klass.upper())
    raise ValueError(f"expiry: {text!r} is not a date (YYYYMMDD, YYYY-MM-DD, an Excel date) nor one of next, "
                     f"monthly, +30d, +2w, +3m, optionally followed by a tradingClass (next SPXW)")


def parse_strikes(value: Any) -> int | tuple[float, float]:
    """The strikes argument: a count (blank -> 10) or a range ``"200-250"`` as (low, high). Raises
    ValueError naming ``strikes``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_STRIKES
    if (err := error_value(value)) is not None:          # "#N/A" text or a COM error code
        raise ValueError(f"strikes: the cell holds the error {err}")
    if isinstance(value, bool):
        raise ValueError(f"strikes: expected a count such as 10 or a range such as 200-250, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("#"):
            raise ValueError(f"strikes: the cell holds the error {text}")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)", text)
        if m:
            low, high = float(m.group(1)), float(m.group(2))
            if low > high:
                raise ValueError(f"strikes: the range {text!r} runs backwards; write the lower strike first")
            return low, high
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"strikes: {text!r} is neither a count (10) nor a range of strikes (200-250)") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"strikes: a count is a whole number from 1, got {value!r}")
    if value > MAX_STRIKES:
        raise ValueError(f"strikes: at most {MAX_STRIKES} strikes, got {value:g}; give a range (200-250) instead")
    return int(value)


def _third_friday(year: int, month: int) -> date:
    d = date(year, month, 15)
    return d + timedelta(days=(4 - d.weekday()) % 7)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(d.day, last))


def pick_expiry(rule: ExpiryRule, expiries: list[str], today: date, what: str = "") -> str:
    """The listed expiry (YYYYMMDD, from ``expiries`` as IB lists them) that ``rule`` names on ``today``.
    Raises ValueError naming ``expiry`` (and ``what``, the underlying) when none fits."""
    listed = sorted(datetime.strptime(e[:8], "%Y%m%d").date() for e in expiries)
    if not listed:
        raise ValueError(f"expiry: IB lists no expiry for {what}")
    ahead = [d for d in listed if d >= today]
    if rule.kind == "date" and rule.day is not None:
        day = rule.day
        if day in listed:
            return day.strftime("%Y%m%d")
        near = sorted(listed, key=lambda d: abs((d - day).days))[:3]
        raise ValueError(f"expiry: {rule.day:%Y-%m-%d} is not listed for {what}; nearest listed: "
                         f"{', '.join(f'{d:%Y-%m-%d}' for d in sorted(near))}")
    if rule.kind == "next":
        found = ahead[:1]
    elif rule.kind == "monthly":
        found = [d for d in ahead if d == _third_friday(d.year, d.month)
                 or d + timedelta(days=1) == _third_friday(d.year, d.month)][:1]
    else:
        target = _add_months(today, rule.months) + timedelta(days=rule.days)
        found = [d for d in ahead if d >= target][:1]
    if not found:
        raise ValueError(f"expiry: no listed expiry of {what} is {rule.text} (listed: {listed[0]:%Y-%m-%d} .. "
                         f"{listed[-1]:%Y-%m-%d})")
    return found[0].strftime("%Y%m%d")


def pick_strikes(spec: int | tuple[float, float], strikes: list[float], price: float | None,
                 what: str = "") -> list[float]:
    """The listed strikes ``spec`` names, ascending: a count -> that many nearest ``price`` (ties to the
    lower strike); a range -> every listed strike in it. Raises ValueError naming ``strikes``."""
    listed = sorted(set(strikes))
    if isinstance(spec, tuple):
        low, high = spec
        out = [k for k in listed if low - 1e-9 <= k <= high + 1e-9]
        if not out:
            span = f" (listed: {listed[0]:g} .. {listed[-1]:g})" if listed else ""
            raise ValueError(f"strikes: IB lists no strike of {what} from {low:g} to {high:g}{span}")
        return out
    if not listed:
        raise ValueError(f"strikes: IB lists no strike of {what}")
    if price is None or not math.isfinite(price) or price <= 0:
        raise ValueError(f"strikes: no price of {what} to centre {spec} strikes on; give a range (200-250)")
    return sorted(sorted(listed, key=lambda k: (abs(k - price), k))[:spec])


# --- the listing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ListedClass:
    """One reqSecDefOptParams row: a trading class on one exchange (``expiries`` YYYYMMDD ascending,
    ``strikes`` ascending, ``multiplier`` as IB sends it)."""

    trading_class: str
    exchange: str
    multiplier: str
    expiries: tuple[str, ...]
    strikes: tuple[float, ...]


@dataclass(frozen=True)
class Listing:
    """One underlying's options as IB lists them (the chosen reqSecDefOptParams rows): ``underlying``
    its canonical text, ``symbol`` IB's symbol, ``con_id``, ``exchange`` of the rows, ``trading_class``
    (the class named like the underlying, else the first: the default), ``multiplier`` (text, as IB
    sends it), ``currency`` (the underlying's), ``expiries`` (YYYYMMDD, ascending) and ``strikes``
    (ascending) of every class together, ``classes`` each class's own (the default first)."""

    underlying: str
    symbol: str
    con_id: int
    sec_type: str
    exchange: str
    trading_class: str
    multiplier: str
    currency: str
    expiries: tuple[str, ...]
    strikes: tuple[float, ...]
    classes: tuple[ListedClass, ...] = ()

    def classes_of(self, expiry: str) -> list[ListedClass]:
        """The classes listing ``expiry`` (YYYYMMDD), the default first."""
        return [k for k in self.classes if any(e[:8] == expiry[:8] for e in k.expiries)]

    def class_of(self, expiry: str, trading_class: str = "") -> ListedClass:
        """The class whose options of ``expiry`` to fetch: ``trading_class`` when given, else the only
        class listing it, else the default of those that do. Raises ValueError naming ``expiry``."""
        found = self.classes_of(expiry)
        if trading_class:
            found = [k for k in found if k.trading_class == trading_class]
        if not found:
            pinned = f" in tradingClass {trading_class}" if trading_class else ""
            raise ValueError(f"expiry: {expiry} is not listed for {self.underlying}{pinned}")
        return found[0]

    def pinned(self, trading_class: str) -> "Listing":
        """This listing narrowed to one class. Raises ValueError naming ``expiry`` and the classes listed."""
        if not trading_class:
            return self
        hit = [k for k in self.classes if k.trading_class == trading_class]
        if not hit:
            raise ValueError(f"expiry: tradingClass {trading_class} is not listed for {self.underlying}; listed: "
                             f"{', '.join(k.trading_class for k in self.classes)}")
        k = hit[0]
        return replace(self, exchange=k.exchange, trading_class=k.trading_class, multiplier=k.multiplier,
                       expiries=k.expiries, strikes=k.strikes, classes=(k,))


def _choose_rows(rows: list[tuple], symbol: str) -> list[tuple]:
    """The reqSecDefOptParams rows to use (IB answers one per exchange and trading class): SMART's, else
    those of the first exchange; one per class, the class named like the underlying first."""
    smart = [r for r in rows if r[1] == "SMART"]
    pool = smart or [r for r in rows if rows and r[1] == rows[0][1]]
    out: dict[str, tuple] = {}
    for r in pool:
        out.setdefault(r[3], r)
    return sorted(out.values(), key=lambda r: r[3] != symbol)


class OptionChains:
    """Listings, expiries, strikes and chain plans through one Session.

    session: the connected Session; contracts: its ContractBook (the underlying is qualified there, and
    every option of a planned chain is remembered there, so a line for its text needs no other
    request); market: the MarketData whose budget a plan respects and whose snapshots fill the rows
    that do not stream. today: New York's date (a function; tests may pass their own).
    Thread-safe; requests for the same listing share one answer per day.
    """

    def __init__(self, session: Session, contracts: ContractBook, market: MarketData,
                 today: Callable[[], date] | None = None, timeout: float | None = None):
        self.session, self.contracts, self.market = session, contracts, market
        self.today = today or (lambda: datetime.now(NY).date())
        self.timeout = timeout
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, date], Listing] = {}
        self._options: dict[tuple[str, str, str, date], list[ContractDetails]] = {}
        self._busy: dict[tuple, threading.Lock] = {}
        self.requests_sent = 0            # reqSecDefOptParams and reqContractDetails sent (tests, status)

    # --- public -------------------------------------------------------------------------------------
    def listing(self, underlying: str) -> Listing:
        """The options IB lists on ``underlying`` (cell text: AAPL, SPY, ^SPX.CBOE, ESZ6.CME), cached for
        the day. Raises ValueError naming ``underlying`` for an unknown underlying (with IB's code) or one
        IB lists no options on, IBError for IB's other refusals."""
        details = self._underlying(underlying)
        c = details.contract
        key = (format_contract(details), self.today())
        with self._key_lock(("listing",) + key):
            hit = self._listings.get(key)
            if hit is not None:
                return hit
            rows = self._ask(f"option parameters of {key[0]}", lambda client, rid: client.reqSecDefOptParams(
                rid, c.symbol, "" if c.secType != "FUT" else c.exchange, c.secType, c.conId),
                "securityDefinitionOptionParameterEnd", "securityDefinitionOptionParameter")
            chosen = _choose_rows(rows, c.symbol)
            if not chosen:
                raise ValueError(f"underlying: IB lists no options on {key[0]}")
            classes = tuple(ListedClass(r[3], r[1], str(r[4]), tuple(sorted(r[5])),
                                        tuple(sorted(float(k) for k in r[6]))) for r in chosen)
            first = classes[0]
            listing = Listing(key[0], c.symbol, int(c.conId), c.secType, first.exchange, first.trading_class,
                              first.multiplier, c.currency or "USD",
                              tuple(sorted({e for k in classes for e in k.expiries})),
                              tuple(sorted({s for k in classes for s in k.strikes})), classes)
            with self._lock:
                self._listings[key] = listing
            return listing

    def expiries(self, underlying: str) -> list[str]:
        """Every listed expiry of ``underlying`` from today on, YYYYMMDD ascending. When IB lists more
        than one trading class on it (SPX and SPXW, ES and EW1..EW5), each text is followed by the class:
        ``"20261218 SPX"``, one text per class listing the date."""
        today = self.today().strftime("%Y%m%d")
        listing = self.listing(underlying)
        if len(listing.classes) <= 1:
            return [e for e in listing.expiries if e[:8] >= today]
        return sorted(f"{e[:8]} {k.trading_class}" for k in listing.classes for e in k.expiries if e[:8] >= today)

    def expiry(self, underlying: str, expiry: Any = None) -> str:
        """The listed expiry (YYYYMMDD) the ``expiry`` argument names (see the module doc)."""
        rule = parse_expiry(expiry)
        listing = self.listing(underlying).pinned(rule.trading_class)
        return pick_expiry(rule, list(listing.expiries), self.today(), listing.underlying)

    def strikes(self, underlying: str, expiry: Any = None) -> list[float]:
        """The strikes listed for ``underlying`` on the expiry ``expiry`` names (ascending): those of
        its listed options (reqContractDetails), which may be fewer than the listing's union."""
        rule = parse_expiry(expiry)
        listing = self.listing(underlying).pinned(rule.trading_class)
        day = pick_expiry(rule, list(listing.expiries), self.today(), listing.underlying)
        return sorted({d.contract.strike for d in self.options(listing, day)})

    def options(self, listing: Listing, expiry: str) -> list[ContractDetails]:
        """Every listed option of ``expiry``'s class of ``listing`` (``Listing.class_of``; calls and puts,
        any strike): one reqContractDetails of a partial contract with that tradingClass, cached for the
        day; each is remembered in the ContractBook too (by conId only when two classes list the date)."""
        klass = listing.class_of(expiry) if listing.classes else ListedClass(
            listing.trading_class, listing.exchange, listing.multiplier, listing.expiries, listing.strikes)
        shared = len(self.listing(listing.underlying).classes_of(expiry)) > 1   # of every class, pinned or not
        key = (listing.underlying, expiry, klass.trading_class, self.today())
        with self._key_lock(("options",) + key):
            hit = self._options.get(key)
            if hit is not None:
                return hit
            c = Contract()
            c.symbol, c.secType, c.exchange, c.currency = listing.symbol, "OPT" if listing.sec_type != "FUT" \
                else "FOP", klass.exchange, listing.currency
            c.lastTradeDateOrContractMonth, c.tradingClass, c.multiplier = expiry, klass.trading_class, \
                klass.multiplier
            rows = self._ask(f"options of {listing.underlying} expiring {expiry}",
                             lambda client, rid: client.reqContractDetails(rid, c), "contractDetailsEnd",
                             "contractDetails")
            found = [r[1] for r in rows]
            if not found:
                raise ValueError(f"expiry: IB lists no option of {listing.underlying} expiring {expiry}")
            remember = getattr(self.contracts, "remember", None)
            if remember is not None:
                remember(found, by_text=not shared)
            with self._lock:
                self._options[key] = found
            return found

    def plan(self, underlying: str, expiry: Any = None, strikes: Any = None,
             budget: int | None = None, stream: bool = True) -> pd.DataFrame:
        """A chain of ``underlying``: one row per strike (PLAN_COLUMNS), ascending. ``expiry`` /
        ``strikes``: see the module doc. ``budget``: lines this chain may stream (default: half of the
        lines MarketData has free; ``stream`` False: none); rows that do not fit are snapshotted now,
        their values in the plan.
        The underlying's price (UnderPrice) is the last trade, else the mid, else the close: from the
        board when it streams, else one snapshot. Raises ValueError naming the argument at fault,
        InstrumentError for an unknown underlying, IBError for IB's refusals."""
        rule, spec = parse_expiry(expiry), parse_strikes(strikes)
        listing = self.listing(underlying).pinned(rule.trading_class)
        day = pick_expiry(rule, list(listing.expiries), self.today(), listing.underlying)
        options = self.options(listing, day)
        text_of = _option_text if len(self.listing(underlying).classes_of(day)) <= 1 else _conid_text
        price = self._price(listing.underlying)
        by_strike: dict[float, dict[str, ContractDetails]] = {}
        for d in options:
            by_strike.setdefault(d.contract.strike, {})[d.contract.right[:1]] = d
        chosen = pick_strikes(spec, list(by_strike), price, listing.underlying)
        if not stream:
            budget = 0
        elif budget is None:
            budget = max(0, self.market.max_lines - self.market.lines_in_use()) // 2
        lines_of = {k: len(by_strike[k]) for k in chosen}
        # the strikes nearest the money stream first
        order = sorted(chosen, key=lambda k: (abs(k - price) if price else 0.0, k))
        streaming: set[float] = set()
        left = budget
        for k in order:
            if lines_of[k] <= left:
                streaming.add(k)
                left -= lines_of[k]
        # the rows that do not stream: one snapshot per option, a few at once (each holds a line while in
        # flight; IB can take seconds to end one), never more than the free lines
        wanted = [(k, right, d) for k in chosen if k not in streaming for right, d in by_strike[k].items()]
        free = max(0, self.market.max_lines - self.market.lines_in_use())
        snaps: dict[tuple[float, str], BoardQuote | None] = {}
        if wanted:
            with ThreadPoolExecutor(max(1, min(SNAPSHOTS_AT_ONCE, free)), "ibxl-chain-snapshot") as pool:
                for (k, right, _), q in zip(wanted, pool.map(lambda job: self._snapshot(job[2]), wanted)):
                    snaps[(k, right)] = q
        rows = []
        for k in chosen:
            sides = by_strike[k]
            row: dict[str, Any] = {"Underlying": listing.underlying, "Expiry": day, "UnderPrice": price,
                                   "Strike": k, "Stream": k in streaming}
            for right, prefix in (("C", "Call"), ("P", "Put")):
                d = sides.get(right)
                row[f"{prefix}Symbol"] = text_of(d) if d is not None else None
                if d is not None and k not in streaming:
                    q = snaps.get((k, right))
                    for header, attr in OPTIONS_SIDE_FIELDS:
                        row[prefix + header] = getattr(q, attr) if q is not None else None
            rows.append(row)
        return pd.DataFrame(rows, columns=PLAN_COLUMNS)

    # --- internals ----------------------------------------------------------------------------------
    def _underlying(self, underlying: str) -> ContractDetails:
        """The underlying's details; a bare symbol IB knows no stock of is tried as the index, then as the
        front-month future (``SPX`` -> ^SPX, ``ES`` -> the front ES). Raises ValueError naming
        ``underlying`` (the stock's error when no form is known)."""
        try:
            return self.contracts.qualify(underlying)
        except InstrumentError as exc:            # named as the argument it came from
            first = exc
        text = str(underlying).strip().upper()
        if first.code and re.fullmatch(r"[A-Z][A-Z0-9]{0,9}", text):
            for alias in (f"^{text}", f"{text}.{_future_exchange(text)}" if _future_exchange(text) else None):
                if alias is None:
                    continue
                try:
                    return self.contracts.qualify(alias)
                except InstrumentError:
                    pass
        code = f"IB {first.code}: " if first.code else ""
        raise ValueError(f"underlying: {code}{first}") from first

    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            lock = self._busy.get(key)
            if lock is None:
                lock = self._busy[key] = threading.Lock()
            return lock

    def _ask(self, what: str, start, end: str, row_name: str) -> list[tuple]:
        request = Request(what, start, end=end, timeout=self.timeout)
        self.session.submit(request)
        with self._lock:
            self.requests_sent += 1
        t = request.timeout
        rows = request.result(t + 5.0 if isinstance(t, (int, float)) and math.isfinite(t) else None)
        return [args for name, args in rows if name == row_name]

    def _price(self, key: str) -> float | None:
        q = self.market.board.get(key)
        if q is None or not (q.priced or q.close is not None) or q.stale:
            try:
                q = self.market.snapshot(key)
            except IBError as exc:
                log.info("no snapshot of %s for its chain: %s", key, exc)
                return None
        for v in (q.last, q.mid, q.close):
            if v is not None and math.isfinite(v) and v > 0:
                return v
        return None

    def _snapshot(self, details: ContractDetails) -> BoardQuote | None:
        try:
            return self.market.snapshot(details.contract)
        except (IBError, InstrumentError) as exc:
            log.info("snapshot of %s failed: %s", format_contract(details), exc)
            return None


def _future_exchange(symbol: str) -> str:
    """The exchange tried for a bare futures root (``ES`` -> CME); "" for a root not known here."""
    return _FUTURE_ROOTS.get(symbol, "")


# Equity index futures with options whose bare root a user may type as an underlying.
_FUTURE_ROOTS = {"ES": "CME", "NQ": "CME", "RTY": "CME", "YM": "CBOT"}


def _option_text(details: ContractDetails) -> str:
    return format_contract(details)


def _conid_text(details: ContractDetails) -> str:
    """``conid:N``: an option of a date two classes list (its grammar text would name both)."""
    return f"conid:{int(details.contract.conId)}"


# --- the chain table ------------------------------------------------------------------------------
Plan: TypeAlias = pd.DataFrame | list[dict]


def plan_records(plan: Plan) -> list[dict]:
    """A plan as plain records (one dict per strike): what a worksheet function keeps, so that each
    recalculation builds its rows without pandas (a DataFrame's per-cell access costs milliseconds)."""
    return plan.to_dict("records") if isinstance(plan, pd.DataFrame) else plan


def plan_texts(plan: Plan) -> list[str]:
    """The option texts of ``plan``'s streaming rows (calls and puts): what to hold lines for."""
    out = []
    for rec in plan_records(plan):
        if bool(rec["Stream"]):
            out += [t for t in (rec["CallSymbol"], rec["PutSymbol"]) if isinstance(t, str) and t]
    return out


def _number(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def chain_rows(plan: Plan, quote_of: Callable[[str], BoardQuote | None],
               columns: list[str] | None = None) -> list[list]:
    """:func:`chain_table`'s rows as lists (``columns`` order), missing values None."""
    cols = CHAIN_COLUMNS if columns is None else columns
    out = []
    for rec in plan_records(plan):
        row: dict[str, Any] = {"Strike": rec["Strike"]}
        if rec["Stream"]:
            state = "streaming"
            for prefix in ("Call", "Put"):
                text = rec[f"{prefix}Symbol"]
                q = quote_of(text) if isinstance(text, str) and text else None
                for header, attr in OPTIONS_SIDE_FIELDS:
                    row[prefix + header] = getattr(q, attr) if q is not None else None
                if q is not None and q.error:
                    state = "#" + q.error if q.error.startswith("IB ") else q.error
                elif isinstance(text, str) and text and (q is None or not q.priced) and state in ("streaming",
                                                                                                 "stale"):
                    state = "waiting"
                elif q is not None and q.stale and state == "streaming":
                    state = "stale"
            row["Data"] = state
        else:
            for prefix in ("Call", "Put"):
                for header, _ in OPTIONS_SIDE_FIELDS:
                    row[prefix + header] = _number(rec.get(prefix + header))
            row["Data"] = "snapshot"
        out.append([row.get(c) for c in cols])
    return out


def chain_table(plan: Plan, quote_of: Callable[[str], BoardQuote | None],
                columns: list[str] | None = None) -> pd.DataFrame:
    """The chain as shown (CHAIN_COLUMNS, or the ``columns`` of them asked for; Strike ascending): a
    streaming row's values from ``quote_of(option text)`` (the board), a snapshot row's from the plan.
    Data: "streaming" (both sides priced on the board), "waiting" (a side not priced yet), "stale" (a
    line is down: the last values), the line's error ("#IB 200: ..."), or "snapshot". Prices in the
    option's currency per share, sizes in contracts, IV a fraction per year, greeks per share (vega per
    volatility point, theta per calendar day)."""
    cols = CHAIN_COLUMNS if columns is None else columns
    return pd.DataFrame(chain_rows(plan, quote_of, cols), columns=cols)
