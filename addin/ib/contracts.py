"""Cell text <-> ibapi Contract, and the qualification cache.

The cell grammar (case-insensitive; stray spaces are trimmed, runs of spaces collapse, and spaces
next to ``.`` ``/`` ``@`` ``:`` ``^`` are dropped)::

    AAPL                     stock, SMART routing, USD
    AAPL.NASDAQ              stock with primary exchange NASDAQ (still SMART routing); .SMART = none
    BRK.B  or  BRK B         class share: IB's symbol "BRK B" (a one-letter part after the symbol)
    VOD.LSE@GBP              any form but a pair may end in @CCY (3 letters); the default is USD
    EUR/USD                  currency pair: CASH, IDEALPRO, symbol EUR, currency USD
    EUR.USD  EURUSD          the same pair (both halves must be known fiat currencies, see FIAT)
    EUR/USD.IDEALPRO         a pair with an explicit exchange (IDEALPRO is the default, not shown)
    BTC/USD.PAXOS            crypto (first half not a fiat currency); BTC/USD alone = any exchange
    ESZ6.CME                 future: root ES, month code Z (December), year 6 -> 2026
    ESZ26.CME  ESZ6          two-digit year; no exchange = let IB find it (unique or ambiguous)
    ES 202612 CME            future by contract month (YYYYMM) or last trade date (YYYYMMDD)
    ES.CME                   future without a month, on a futures exchange (FUTURES_EXCHANGES):
                             qualification lists the months as candidates
    ^SPX.CBOE                index (^SPX alone: let IB find the exchange)
    AAPL 20261218 200 C      option: OPT, SMART, USD, multiplier 100; strike may be decimal;
                             right C, P, CALL or PUT; expiry YYYYMMDD or YYYYMM; then optionally
                             an exchange token (AAPL 20261218 200 C CBOE) and/or xN for a
                             non-standard multiplier (AAPL 20261218 200 C x10)
    ESZ6 C5900  EW2H6 P5850  future option (FOP) by IB's localSymbol: tradingClass, month code and
                             year digit of the expiry, then right and strike; optionally an exchange
                             token (ESZ6 C5900 CME, the canonical form of a qualified one); the
                             multiplier (ES: 50) and the underlying future come from IB
    conid:265598             exactly that contract; conid:265598.ISLAND routes it to ISLAND

Decisions:

- Month codes F G H J K M N Q U V X Z. A one-digit year is the one year from last year to eight
  years ahead that ends in that digit (``FUTURE_YEARS``: in 2026, 6 -> 2026, 5 -> 2025, 4 -> 2034; in
  2030, 9 -> 2029 and 6 -> 2036), so a contract that just expired is still read as itself (and IB's
  200 says it expired) and the next ones across a decade boundary are read forward; two digits are
  20YY. Texts are written with one digit exactly when that reads back to the same year.
- ``ES.CME`` (a future without a month) is the front month: of the contracts IB lists for it (IB lists
  none that expired), the one with the nearest last trade date, provided they differ only in expiry.
  Order rows refuse it (an order names its month; the front month rolls).
- A bare token shaped ROOT + month code + year digits (``ESZ6``) is a future: US stock symbols
  carry no digits. A bare token without digits is always a stock: ``CLF`` is Cleveland-Cliffs, not
  crude oil January, so ``ESZ`` is the stock ESZ (IB then answers 200). ``ESZ.CME`` is the future
  with symbol ESZ; when IB knows none, the error suggests the year digit (``ESZ6.CME``).
- ``EUR.USD`` and ``EURUSD`` are read as the pair only when both halves are fiat currencies in
  ``FIAT`` and differ; no US stock symbol has six letters, and IB itself calls the pair EUR.USD.
- Currency: ``@CCY`` on stocks, futures, indices and options, default USD (never inferred from the
  exchange: ``VOD.LSE`` asks for a USD listing, and IB's 200 shows that). Pairs carry their
  currency in the second half and take no ``@``.
- No exchange is guessed: ``BTC/USD``, ``^SPX`` and ``ESZ6`` leave it empty and IB's answer decides;
  several answers are an ambiguity error listing the candidates.
- A future option is written by IB's own localSymbol (``ESZ6 C5900``): it carries the tradingClass
  (ES quarterlies, EW1..EW5 weeklies), which an ``ES 20261218 5900 C`` form would not, and it is what
  TWS shows. A FOP whose localSymbol has another shape is written ``conid:N``.
- Symbols the grammar cannot write (IB symbols with ``.`` such as ``BP.`` on LSE, other secTypes
  such as BOND, directly routed stocks) are written ``conid:N[.EXCHANGE]`` when the conId is
  known; without it ``format_contract`` raises InstrumentError.

Lossless: ``parse(format_contract(c))`` gives back exactly the fields the grammar carries, and
``format_contract`` checks this for every text it returns (falling back to the conid form). Fields
outside the grammar (localSymbol, tradingClass, a future's multiplier, a future's exact last trade
date when its localSymbol shows it is the month's only contract) are dropped: the text still names
the same conId.
"""

from __future__ import annotations

import copy
import math
import numbers
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import SupportsFloat

from ibapi.contract import Contract, ContractDetails

from ..cells import error_value
from ..protocol.errors import NO_SECURITY_DEFINITION
from ..protocol.futures import MONTH_CODES
from ..protocol.times import format_date
from ..protocol.unset import UNSET_DOUBLE
from .session import IBError, Request

__all__ = [
    "InstrumentError", "Spec", "parse", "format_contract", "ContractBook", "FIAT", "FUTURES_EXCHANGES",
    "MONTH_CODES",
]

_MONTH_OF_CODE = {c: i + 1 for i, c in enumerate(MONTH_CODES)}
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")

# Fiat currencies IB trades on IDEALPRO (or quotes against): what makes "EUR.USD" a pair.
FIAT = frozenset("USD EUR GBP JPY CHF AUD CAD NZD SEK NOK DKK HKD SGD CNH CNY MXN ZAR PLN CZK HUF ILS "
                 "TRY RUB KRW INR SAR AED".split())

# Exchanges that list futures and no stocks: "ES.CME" is the future ES without a month.
FUTURES_EXCHANGES = frozenset("CME CBOT NYMEX COMEX GLOBEX ECBOT NYBOT ICEUS ICEEU ICEEUSOFT IPE CFE "
                              "EUREX DTB MONEP MATIF IDEM MEFFRV OSE.JPN SGX HKFE SNFE CDE ENDEX "
                              "NYSELIFFE SMFE".split())

_EXAMPLES = "an instrument such as AAPL, AAPL.NASDAQ, EUR/USD, ESZ6.CME, ^SPX.CBOE or AAPL 20261218 200 C"
_ALLOWED = "letters, digits, spaces and . / @ ^ :"

_SYMBOL = re.compile(r"[A-Z0-9]{1,15}")
_EXCHANGE = re.compile(r"[A-Z][A-Z0-9]*(?:\.[A-Z][A-Z0-9]*)*")
_FUT_ROOT = r"[A-Z][A-Z0-9]{0,5}"
_FUT = re.compile(rf"({_FUT_ROOT})([FGHJKMNQUVXZ])(\d{{1,2}})")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?")
_STRIKE = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DATE = re.compile(r"\d{6}|\d{8}")
_MULT = re.compile(r"X(\d+(?:\.\d+)?)")
_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
# A FOP localSymbol as IB writes it: tradingClass + month code + year digit, a space, right + strike.
_FOP_CLASS = re.compile(r"[A-Z][A-Z0-9]{0,4}[FGHJKMNQUVXZ]\d")
_FOP_STRIKE = re.compile(r"[CP](\d+(?:\.\d+)?)")


# A one-digit year in a future's text means the year in [this year - 1, this year + 8] ending in it.
FUTURE_YEARS = (-1, 8)


def _this_year() -> int:
    return datetime.now(UTC).year


def future_year(digit: int, this_year: int | None = None) -> int:
    """The year a one-digit future year stands for (see FUTURE_YEARS): the only year from
    ``this_year - 1`` to ``this_year + 8`` ending in ``digit``. ``this_year``: default the UTC year now."""
    low = (this_year if this_year is not None else _this_year()) + FUTURE_YEARS[0]
    return low + (digit - low) % 10


# --- errors ---------------------------------------------------------------------------------------
class InstrumentError(ValueError):
    """Cell text (or a Contract) that does not name exactly one instrument.

    text: what the cell held (as text); understood: what was made of it, in words; missing: what is
    missing or wrong, in words; candidates: canonical texts the user can write instead (the matches
    of an ambiguous text, or the fixes of a malformed one); listing: the same candidates with
    longName, exchange and currency (in the message); code, ib_text: IB's error when IB refused the
    contract (200), else None and "". The message says all of it::

        "VOD@GBP": understood stock VOD on SMART, in GBP; ambiguous: IB lists 2 instruments; missing
        the primary exchange or @currency: write one of the candidates; candidates: VOD.LSE@GBP
        (VODAFONE GROUP PLC, SMART, GBP), VOD.CHIXUK@GBP (VODAFONE GROUP PLC, SMART, GBP)
    """

    def __init__(self, text: str, understood: str, missing: str, candidates: Sequence[str] = (), *,
                 listing: Sequence[str] | None = None, code: int | None = None, ib_text: str = ""):
        self.text, self.understood, self.missing = text, understood, missing
        self.candidates = list(candidates)
        self.listing = list(listing) if listing is not None else list(self.candidates)
        self.code, self.ib_text = code, ib_text
        shown = text if len(text) <= 80 else text[:77] + "..."
        message = f'"{shown}": understood {understood}; {missing}'
        if self.listing:
            message += "; candidates: " + ", ".join(self.listing)
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_error, (self.text, self.understood, self.missing, self.candidates, self.listing,
                                 self.code, self.ib_text))


def _rebuild_error(text, understood, missing, candidates, listing, code, ib_text):
    return InstrumentError(text, understood, missing, candidates, listing=listing, code=code, ib_text=ib_text)


# --- the spec -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One parsed cell text: the fields of an ibapi Contract that the grammar carries.

    sec_type: STK, CASH, CRYPTO, FUT, IND, OPT, FOP, or "" for the conid form; symbol: IB's symbol
    ("BRK B" for a class share; the base currency of a pair); exchange: routing exchange ("" = any,
    IB decides); primary_exchange: stocks only; currency: 3 letters; last_trade_date: "", YYYYMM
    or YYYYMMDD; strike: options only (0.0 otherwise); right: "C", "P" or ""; multiplier: options
    only ("100" by default); con_id: the conid form only (0 otherwise); text: the source text
    (not compared); local_symbol: FOP only, IB's localSymbol (``ESZ6 C5900``). ``canonical`` is the
    text ``format_contract`` gives for it.
    """

    sec_type: str
    symbol: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    con_id: int = 0
    text: str = field(default="", compare=False)
    local_symbol: str = ""

    def to_contract(self) -> Contract:
        """A new (unqualified unless con_id is set) ibapi Contract with these fields."""
        c = Contract()
        c.conId = self.con_id
        c.symbol, c.secType = self.symbol, self.sec_type
        c.exchange, c.primaryExchange, c.currency = self.exchange, self.primary_exchange, self.currency
        c.lastTradeDateOrContractMonth = self.last_trade_date
        if self.sec_type == "OPT":
            c.strike, c.right, c.multiplier = self.strike, self.right, self.multiplier
        if self.sec_type == "FOP":
            c.localSymbol = self.local_symbol
        return c

    @property
    def canonical(self) -> str:
        """The canonical cell text (``parse(spec.canonical) == spec``). Raises InstrumentError for a
        spec the grammar cannot write (only possible for specs not made by ``parse``)."""
        text = _render(self)
        if text is None or _parse_quiet(text) != self:
            raise InstrumentError(self.text or str(self.symbol), self.in_words(),
                                  "this instrument cannot be written in the cell grammar; use conid:N")
        return text

    @classmethod
    def from_contract(cls, contract: Contract | ContractDetails) -> "Spec":
        """The grammar's fields of a Contract (or of ContractDetails' contract). Empty defaults are
        filled in (stock/option exchange SMART, pair exchange IDEALPRO, currency USD, option
        multiplier 100). A future whose localSymbol is ROOT + month code + year digit (ESZ6) keeps
        only its contract month. A contract with a conId but no symbol gives the conid form."""
        details = contract if isinstance(contract, ContractDetails) else None
        c = details.contract if details is not None else contract
        sec = (c.secType or "").strip().upper()
        sym = (c.symbol or "").strip().upper()
        exch = (c.exchange or "").strip().upper()
        ccy = (c.currency or "").strip().upper()
        if not sym and c.conId:
            return cls("", exchange=exch, con_id=int(c.conId))
        if sec == "FOP":
            local = " ".join((c.localSymbol or "").upper().split())
            return cls("FOP", exchange=exch, currency=ccy or "USD", local_symbol=local)
        if sec in ("STK", "OPT"):
            exch = exch or "SMART"
        if sec == "CASH":
            exch = exch or "IDEALPRO"
        if sec in ("STK", "OPT", "FUT", "IND"):
            ccy = ccy or "USD"
        ltd = (c.lastTradeDateOrContractMonth or "").strip()
        if sec == "FUT" and len(ltd) == 8:
            month = ((details.contractMonth or "") if details is not None else "") or ltd[:6]
            local = (c.localSymbol or "").strip().upper().replace(" ", "")
            if month == ltd[:6] and len(month) == 6 and month[4:].isdigit() and 1 <= int(month[4:]) <= 12:
                code = MONTH_CODES[int(month[4:]) - 1]
                if local in (f"{sym}{code}{month[3]}", f"{sym}{code}{month[2:4]}"):
                    ltd = month
        spec = cls(sec, sym, exch, (c.primaryExchange or "").strip().upper() if sec == "STK" else "", ccy,
                   ltd if sec in ("FUT", "OPT") else "")
        if sec == "OPT":
            strike = c.strike if c.strike is not None else 0.0
            strike = 0.0 if strike >= UNSET_DOUBLE / 2 else float(strike)
            mult = (c.multiplier or "").strip() or "100"
            try:
                mult = _fmt_num(float(mult))
            except ValueError:
                pass
            spec = replace(spec, strike=strike, right=_RIGHTS.get((c.right or "").strip().upper(), c.right or ""),
                           multiplier=mult)
        return spec

    def in_words(self) -> str:
        """What the spec means, for messages: e.g. "future ES, December 2026, on CME, in USD"."""
        on = f"on {self.exchange}" if self.exchange else "on any exchange"
        ccy = f", in {self.currency}" if self.currency else ""
        t = self.sec_type
        if t == "":
            return f"contract id {self.con_id}" + (f" on {self.exchange}" if self.exchange else "")
        if t == "STK":
            prim = f", primary exchange {self.primary_exchange}" if self.primary_exchange else ""
            return f"stock {self.symbol} {on}{prim}{ccy}"
        if t == "CASH":
            return f"currency pair {self.symbol}/{self.currency} {on}"
        if t == "CRYPTO":
            return f"crypto {self.symbol}/{self.currency} {on}"
        if t == "IND":
            return f"index {self.symbol} {on}{ccy}"
        if t == "FUT":
            return f"future {self.symbol}, {_date_words(self.last_trade_date) or 'no contract month'}, {on}{ccy}"
        if t == "FOP":
            return f"future option {self.local_symbol} {on}{ccy}"
        if t == "OPT":
            right = {"C": "call", "P": "put"}.get(self.right, self.right)
            return (f"option {self.symbol} {right}, strike {_fmt_num(self.strike)}, expiry "
                    f"{_date_words(self.last_trade_date)}, {on}, multiplier {self.multiplier}{ccy}")
        return f"{t} {self.symbol} {on}{ccy}"

    def __str__(self) -> str:
        try:
            return self.canonical
        except InstrumentError:
            return self.in_words()


def _date_words(ltd: str) -> str:
    if len(ltd) == 6:
        return f"{_MONTH_NAMES[int(ltd[4:]) - 1]} {ltd[:4]}"
    if len(ltd) == 8:
        return f"{ltd[:4]}-{ltd[4:6]}-{ltd[6:]}"
    return ltd


def _fmt_num(x: float) -> str:
    """Shortest plain decimal: 200.0 -> "200", 192.5 -> "192.5", 1e-05 -> "0.00001"."""
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


# --- parsing --------------------------------------------------------------------------------------
def parse(text) -> Spec:
    """Parse one cell's instrument text (see the module docstring for the grammar) into a Spec.

    Accepts a str; None, "", Excel error values (#N/A, #VALUE!, ...), numbers, booleans, other
    types and texts with characters outside letters, digits, spaces and . / @ ^ : raise
    InstrumentError, as does any text the grammar cannot read. Pure: touches no IB state.
    """
    shown = _shown(text)
    s = _normalize(text, shown)
    ccy = ""
    if "@" in s:
        if s.count("@") > 1:
            raise InstrumentError(shown, "nothing", "only one @currency may be given")
        s, ccy = s.split("@")
        if not s:
            raise InstrumentError(shown, f"currency {ccy}", "missing the instrument before @")
        if not re.fullmatch(r"[A-Z]{3}", ccy):
            raise InstrumentError(shown, f"instrument {s}", f"the currency after @ must be 3 letters such as GBP, "
                                                            f"found {ccy!r}" if ccy else "missing the currency "
                                                            "after @ (3 letters such as GBP)")
    if s.startswith("CONID:"):
        return _parse_conid(shown, s[6:], ccy)
    if ":" in s:
        raise InstrumentError(shown, "nothing", "':' belongs only in conid:N (e.g. conid:265598)")
    if "^" in s[1:]:
        raise InstrumentError(shown, "nothing", "'^' marks an index and must come first (e.g. ^SPX.CBOE)")
    if " " in s:
        return _parse_spaced(shown, s, ccy)
    if "/" in s:
        return _parse_pair(shown, s, ccy)
    if s.startswith("^"):
        return _parse_index(shown, s[1:], ccy)
    return _parse_dotted(shown, s, ccy)


def _parse_quiet(text: str) -> Spec | None:
    try:
        return parse(text)
    except InstrumentError:
        return None


def _shown(text) -> str:
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    if isinstance(text, bool):
        return "TRUE" if text else "FALSE"
    if isinstance(text, numbers.Number):
        if isinstance(text, numbers.Integral):
            return str(int(text))
        if not isinstance(text, SupportsFloat):   # a complex number has no float value
            return str(text)
        try:
            f = float(text)
            return _fmt_num(f) if math.isfinite(f) else str(f)
        except (TypeError, ValueError, InvalidOperation):
            return str(text)
    return str(text)


def _normalize(text, shown: str) -> str:
    if text is None:
        raise InstrumentError("", "nothing (the cell is empty)", f"missing {_EXAMPLES}")
    if isinstance(text, bool):
        raise InstrumentError(shown, f"the logical value {shown}", f"a logical value is not {_EXAMPLES}")
    if isinstance(text, numbers.Number):
        name = error_value(text)          # an Excel error as a COM code
        if name is not None:
            raise InstrumentError(name, f"the Excel error value {name}",
                                  f"the cell holds an error, not {_EXAMPLES}; fix the cell it comes from")
        raise InstrumentError(shown, f"the number {shown}",
                              f"a number is not {_EXAMPLES} (a stock listed by number needs its exchange and "
                              f"currency, e.g. 700.SEHK@HKD)")
    if not isinstance(text, str):
        raise InstrumentError(shown, f"a value of type {type(text).__name__}", f"missing {_EXAMPLES}")
    s = " ".join(text.split()).upper()
    if not s:
        raise InstrumentError(text, "nothing (the text is blank)", f"missing {_EXAMPLES}")
    if error_value(s) or re.fullmatch(r"#[A-Z/0_]+[!?]?", s):    # the second: errors newer than ours
        raise InstrumentError(text, f"the Excel error value {s}",
                              f"the cell holds an error, not {_EXAMPLES}; fix the cell it comes from")
    s = re.sub(r" ?([./@:^]) ?", r"\1", s)
    bad = re.search(r"[^A-Z0-9 ./@^:]", s)
    if bad:
        ch = bad.group()
        raise InstrumentError(text, "nothing", f"unexpected character {ch!r} (U+{ord(ch):04X}); only {_ALLOWED} "
                                               f"belong in an instrument")
    if _NUMBER.fullmatch(s):
        raise InstrumentError(text, f"the number {s}",
                              f"a number is not {_EXAMPLES} (a stock listed by number needs its exchange and "
                              f"currency, e.g. 700.SEHK@HKD)")
    return s


def _check_exchange(shown: str, exch: str, understood: str) -> str:
    if not _EXCHANGE.fullmatch(exch):
        raise InstrumentError(shown, understood, f"{exch!r} is not an exchange name (letters and digits, "
                                                 f"starting with a letter, e.g. CME)")
    return exch


def _check_symbol(shown: str, sym: str, what: str = "symbol") -> str:
    if not _SYMBOL.fullmatch(sym):
        raise InstrumentError(shown, "nothing", f"{sym!r} is not a {what} (1 to 15 letters or digits)"
                              if sym else f"missing the {what}")
    return sym


def _no_currency(shown: str, ccy: str, understood: str, fix: str, why: str) -> None:
    if ccy:
        raise InstrumentError(shown, understood, f"{why}: no @currency", [fix])


def _parse_conid(shown: str, rest: str, ccy: str) -> Spec:
    m = re.fullmatch(r"(\d+)(?:\.(.+))?", rest)
    if not m or int(m.group(1)) <= 0:
        raise InstrumentError(shown, "a contract id", "missing the contract id number after conid: "
                                                      "(e.g. conid:265598)")
    con_id = int(m.group(1))
    exch = _check_exchange(shown, m.group(2), f"contract id {con_id}") if m.group(2) else ""
    spec = Spec("", exchange=exch, con_id=con_id, text=shown)
    _no_currency(shown, ccy, f"contract id {con_id}", _render(spec) or "", "a conId names the currency already")
    return spec


def _pair_spec(shown: str, base: str, quote: str, exch: str, ccy: str) -> Spec:
    if base in FIAT:
        if quote == base:
            raise InstrumentError(shown, f"currency {base}", "a pair needs two different currencies "
                                                             "(e.g. EUR/USD)")
        spec = Spec("CASH", base, exch or "IDEALPRO", currency=quote, text=shown)
    else:
        spec = Spec("CRYPTO", base, exch, currency=quote, text=shown)
    _no_currency(shown, ccy, spec.in_words(), _render(spec) or "", "a pair carries its currency in the second half")
    return spec


def _parse_pair(shown: str, s: str, ccy: str) -> Spec:
    if s.count("/") > 1:
        raise InstrumentError(shown, "a pair", "a pair has one '/' (e.g. EUR/USD)")
    base, _, rest = s.partition("/")
    quote, _, exch = rest.partition(".")
    _check_symbol(shown, base, "base currency or crypto symbol")
    if not quote:
        raise InstrumentError(shown, f"pair {base}/?", "missing the second currency (e.g. EUR/USD)")
    if quote not in FIAT:
        raise InstrumentError(shown, f"pair {base}/{quote}", f"the second half must be a currency such as USD, "
                                                             f"found {quote!r}")
    if exch:
        _check_exchange(shown, exch, f"pair {base}/{quote}")
    elif rest.endswith("."):
        raise InstrumentError(shown, f"pair {base}/{quote}", "missing the exchange after '.'")
    return _pair_spec(shown, base, quote, exch, ccy)


def _parse_index(shown: str, s: str, ccy: str) -> Spec:
    sym, dot, exch = s.partition(".")
    _check_symbol(shown, sym, "index symbol")
    if dot:
        if not exch:
            raise InstrumentError(shown, f"index {sym}", "missing the exchange after '.' (e.g. ^SPX.CBOE)")
        _check_exchange(shown, exch, f"index {sym}")
    return Spec("IND", sym, exch, currency=ccy or "USD", text=shown)


def _parse_dotted(shown: str, s: str, ccy: str) -> Spec:
    parts = s.split(".")
    if "" in parts:
        raise InstrumentError(shown, f"symbol {parts[0]}" if parts[0] else "nothing",
                              "a '.' must stand between a symbol and an exchange (e.g. AAPL.NASDAQ)")
    if len(parts) in (2, 3) and parts[0] in FIAT and parts[1] in FIAT and parts[0] != parts[1]:
        return _pair_spec(shown, parts[0], parts[1], parts[2] if len(parts) == 3 else "", ccy)
    head = parts[0]
    if (len(head) == 6 and head[:3] in FIAT and head[3:] in FIAT and head[:3] != head[3:]
            and parts[1:] in ([], ["IDEALPRO"])):
        return _pair_spec(shown, head[:3], head[3:], "IDEALPRO", ccy)
    _check_symbol(shown, head)
    rest = parts[1:]
    symbol = head
    share_class = bool(rest) and len(rest[0]) == 1 and rest[0].isalpha()
    if share_class:
        symbol, rest = f"{head} {rest[0]}", rest[1:]
    exch = ".".join(rest)
    if exch:
        _check_exchange(shown, exch, f"symbol {symbol}")
    currency = ccy or "USD"
    m = None if share_class else _FUT.fullmatch(head)
    if m:
        return Spec("FUT", m.group(1), exch, currency=currency,
                    last_trade_date=_fut_month(m.group(2), m.group(3)), text=shown)
    if exch in FUTURES_EXCHANGES:
        return Spec("FUT", symbol, exch, currency=currency, text=shown)
    if symbol.isdigit() and not exch:
        raise InstrumentError(shown, f"the number {symbol}", f"a number is not {_EXAMPLES}")
    return Spec("STK", symbol, "SMART", "" if exch == "SMART" else exch, currency, text=shown)


def _fut_month(code: str, year: str) -> str:
    if len(year) == 1:
        y = future_year(int(year))
    else:
        y = 2000 + int(year)
    return f"{y:04d}{_MONTH_OF_CODE[code]:02d}"


def _check_date(shown: str, token: str, understood: str) -> str:
    ok = False
    if _DATE.fullmatch(token):
        try:
            if len(token) == 6:
                ok = 1900 <= int(token[:4]) <= 2199 and 1 <= int(token[4:]) <= 12
            else:
                ok = 1900 <= date(int(token[:4]), int(token[4:6]), int(token[6:])).year <= 2199
        except ValueError:
            ok = False
    if not ok:
        raise InstrumentError(shown, understood, f"{token!r} is not a date: a future or option needs its contract "
                                                 f"month YYYYMM or expiry YYYYMMDD (e.g. ES 202612 CME, "
                                                 f"AAPL 20261218 200 C)")
    return token


def _parse_fop(shown: str, tokens: list[str], ccy: str) -> Spec:
    """``ESZ6 C5900 [EXCHANGE]``: a future option by IB's localSymbol."""
    local = f"{tokens[0]} {tokens[1]}"
    strike = float(_FOP_STRIKE.fullmatch(tokens[1]).group(1))       # type: ignore[union-attr]
    if strike <= 0:
        raise InstrumentError(shown, f"future option {local}", "the strike must be above 0")
    exch = ""
    if len(tokens) == 3:
        exch = _check_exchange(shown, tokens[2], f"future option {local}")
    elif len(tokens) > 3:
        raise InstrumentError(shown, f"future option {local}", f"unexpected {' '.join(tokens[3:])!r} after the "
                                                               f"exchange (e.g. ESZ6 C5900 CME)")
    return Spec("FOP", exchange=exch, currency=ccy or "USD", local_symbol=local, text=shown)


def _parse_spaced(shown: str, s: str, ccy: str) -> Spec:
    tokens = s.split(" ")
    head = tokens[0]
    if _FOP_CLASS.fullmatch(head) and _FOP_STRIKE.fullmatch(tokens[1]):
        return _parse_fop(shown, tokens, ccy)
    if len(tokens) == 2 and re.fullmatch(r"[A-Z](?:\..+)?", tokens[1]):
        return _parse_dotted(shown, f"{head}.{tokens[1]}", ccy)       # "BRK B" / "BRK B.NYSE"
    sym_part, _, klass = head.partition(".")
    _check_symbol(shown, sym_part)
    if klass and not re.fullmatch(r"[A-Z]", klass):
        raise InstrumentError(shown, f"symbol {sym_part}", "a future or option is written SYMBOL DATE ... "
                                                           "without an exchange after the symbol "
                                                           "(e.g. ES 202612 CME)")
    symbol = f"{sym_part} {klass}" if klass else sym_part
    currency = ccy or "USD"
    ltd = _check_date(shown, tokens[1], f"symbol {symbol}")
    if len(tokens) == 2 or not _STRIKE.fullmatch(tokens[2]):
        fut = Spec("FUT", symbol, "", currency=currency, last_trade_date=ltd, text=shown)
        if len(tokens) == 2:
            return fut
        exch = _check_exchange(shown, tokens[2], fut.in_words())
        fut = replace(fut, exchange=exch)
        if len(tokens) > 3:
            raise InstrumentError(shown, fut.in_words(), f"unexpected {' '.join(tokens[3:])!r} after the exchange")
        return fut
    strike = float(tokens[2])
    words = f"option {symbol}, strike {_fmt_num(strike)}, expiry {_date_words(ltd)}"
    if strike <= 0:
        raise InstrumentError(shown, words, "the strike must be above 0")
    cands = [f"{head} {ltd} {_fmt_num(strike)} {r}" for r in "CP"]
    if len(tokens) == 3:
        raise InstrumentError(shown, words, "missing the right: C (call) or P (put)", cands)
    right = _RIGHTS.get(tokens[3])
    if right is None:
        raise InstrumentError(shown, words, f"the right must be C, P, CALL or PUT, found {tokens[3]!r}", cands)
    spec = Spec("OPT", symbol, "SMART", currency=currency, last_trade_date=ltd, strike=strike, right=right,
                multiplier="100", text=shown)
    seen_exch = seen_mult = False
    for tok in tokens[4:]:
        m = _MULT.fullmatch(tok)
        if m and not seen_mult:
            seen_mult = True
            mult = float(m.group(1))
            if mult <= 0:
                raise InstrumentError(shown, spec.in_words(), "the multiplier must be above 0")
            spec = replace(spec, multiplier=_fmt_num(mult))
        elif not m and not seen_exch and _EXCHANGE.fullmatch(tok):
            seen_exch = True
            spec = replace(spec, exchange=tok)
        else:
            raise InstrumentError(shown, spec.in_words(), f"unexpected {tok!r}: after the right come only an "
                                                          f"exchange and xMULTIPLIER (e.g. AAPL 20261218 200 C "
                                                          f"CBOE x100)")
    return spec


# --- formatting -----------------------------------------------------------------------------------
def _render(spec: Spec) -> str | None:
    """The text for a spec, or None when no grammar form fits (not yet checked by parsing)."""
    t = spec.sec_type
    ccy = "" if spec.currency == "USD" else f"@{spec.currency}"
    if t == "":
        return f"conid:{spec.con_id}" + (f".{spec.exchange}" if spec.exchange else "") if spec.con_id else None
    if t in ("CASH", "CRYPTO"):
        exch = "" if (t == "CASH" and spec.exchange == "IDEALPRO") or not spec.exchange else f".{spec.exchange}"
        return f"{spec.symbol}/{spec.currency}{exch}"
    if not spec.currency:
        return None
    if t == "STK":
        if spec.exchange != "SMART":
            return None
        sym = spec.symbol.replace(" ", ".")
        return sym + (f".{spec.primary_exchange}" if spec.primary_exchange else "") + ccy
    if t == "IND":
        return f"^{spec.symbol}" + (f".{spec.exchange}" if spec.exchange else "") + ccy
    if t == "FUT":
        ltd = spec.last_trade_date
        if not ltd:
            return f"{spec.symbol}.{spec.exchange}{ccy}"
        if len(ltd) == 6 and re.fullmatch(_FUT_ROOT, spec.symbol) and 2000 <= int(ltd[:4]) <= 2099:
            y = int(ltd[:4])
            year = str(y % 10) if future_year(y % 10) == y else f"{y % 100:02d}"
            code = MONTH_CODES[int(ltd[4:]) - 1]
            return f"{spec.symbol}{code}{year}" + (f".{spec.exchange}" if spec.exchange else "") + ccy
        return f"{spec.symbol.replace(' ', '.')} {ltd}" + (f" {spec.exchange}" if spec.exchange else "") + ccy
    if t == "FOP":
        parts = spec.local_symbol.split(" ")
        if len(parts) != 2 or not _FOP_CLASS.fullmatch(parts[0]) or not _FOP_STRIKE.fullmatch(parts[1]):
            return None
        return spec.local_symbol + (f" {spec.exchange}" if spec.exchange else "") + ccy
    if t == "OPT":
        if not spec.strike or spec.right not in ("C", "P") or not spec.last_trade_date:
            return None
        text = f"{spec.symbol.replace(' ', '.')} {spec.last_trade_date} {_fmt_num(spec.strike)} {spec.right}"
        if spec.exchange != "SMART":
            text += f" {spec.exchange}"
        if spec.multiplier != "100":
            text += f" x{spec.multiplier}"
        return text + ccy
    return None


def format_contract(obj) -> str:
    """The canonical cell text of an ibapi Contract, ContractDetails, Spec or text.

    E.g. "AAPL", "AAPL.NASDAQ" (a qualified AAPL carries its primary exchange), "EUR/USD",
    "ESZ6.CME", "^SPX.CBOE", "BTC/USD.PAXOS", "AAPL 20261218 200 C", "conid:265598". Every text
    returned parses back to the same grammar fields; a contract no grammar form fits is written
    conid:N[.EXCHANGE] when its conId is known. Raises InstrumentError when it cannot be written
    (no conId either), or for a text that does not parse.
    """
    if isinstance(obj, Spec):
        return obj.canonical
    if not isinstance(obj, (Contract, ContractDetails)):
        return parse(obj).canonical
    c = obj.contract if isinstance(obj, ContractDetails) else obj
    spec = Spec.from_contract(obj)
    text = _render(spec)
    if text is not None and _parse_quiet(text) == spec:
        return text
    if c.conId:
        exch = (c.exchange or "").strip().upper()
        if spec.sec_type in ("STK", "OPT") and exch == "SMART":
            exch = ""
        return f"conid:{int(c.conId)}" + (f".{exch}" if exch and _EXCHANGE.fullmatch(exch) else "")
    raise InstrumentError(text or _contract_words(c), _contract_words(c),
                          f"no cell text fits this contract (secType {c.secType or 'missing'}); qualify it "
                          f"first and use conid:N")


def _contract_words(c: Contract) -> str:
    parts = [f"{k} {v}" for k, v in (("conId", c.conId), ("symbol", c.symbol), ("secType", c.secType),
                                     ("lastTradeDateOrContractMonth", c.lastTradeDateOrContractMonth),
                                     ("right", c.right), ("multiplier", c.multiplier), ("exchange", c.exchange),
                                     ("primaryExchange", c.primaryExchange), ("currency", c.currency),
                                     ("localSymbol", c.localSymbol), ("tradingClass", c.tradingClass)) if v]
    if c.strike and c.strike < UNSET_DOUBLE / 2:
        parts.append(f"strike {_fmt_num(c.strike)}")
    return "contract with " + (", ".join(parts) if parts else "no fields set")


def _listing(details: ContractDetails, text: str) -> str:
    c = details.contract
    where = c.exchange + (f"/{c.primaryExchange}" if c.primaryExchange and c.primaryExchange != c.exchange else "")
    bits = [b for b in (details.longName, where, c.currency) if b]
    return f"{text} ({', '.join(bits)})" if bits else text


def _candidates(found: Sequence[ContractDetails]) -> tuple[list[str], list[str]]:
    """Canonical texts of several matches (conid:N where two would read the same) and their listing."""
    texts = []
    for d in found:
        try:
            texts.append(format_contract(d))
        except InstrumentError:
            texts.append(f"conid:{d.contract.conId}")
    for i, t in enumerate(texts):
        if texts.count(t) > 1 and found[i].contract.conId:
            texts[i] = f"conid:{found[i].contract.conId}"
    return texts, [_listing(d, t) for d, t in zip(found, texts)]


# --- qualification --------------------------------------------------------------------------------
def _copy_details(details: ContractDetails) -> ContractDetails:
    """A copy the caller may modify: the details, their contract and every list in either (what a
    caller can change without reaching into ibapi's nested objects). Far cheaper than deepcopy, which
    was most of a cached qualify on the order path."""
    out = copy.copy(details)
    out.contract = copy.copy(details.contract)
    for obj in (out, out.contract):
        for name, value in vars(obj).items():
            if isinstance(value, list):
                setattr(obj, name, list(value))
    return out


class ContractBook:
    """Qualifies cell texts and Contracts through the session, with a cache. Thread-safe: any
    number of threads (UDF calls) may use one book.

    Data comes from IB's reqContractDetails (sent via ``session.submit``; one request per distinct
    text or Contract until it is cached). Results are cached by canonical text, by the canonical text
    of the answer, and by conId; concurrent callers asking for the same thing share one request in
    flight. Failures (unknown, ambiguous, IB errors) are not cached. Every method returns copies:
    callers may modify them.

    ``timeout``: seconds per request (None: the session's request_timeout).
    ``requests_sent``: how many reqContractDetails this book has submitted (for tests and status).
    """

    def __init__(self, session, *, timeout: float | None = None):
        self._session = session
        self._timeout = timeout
        self._lock = threading.Lock()
        self._by_key: dict[object, ContractDetails] = {}
        self._by_con_id: dict[int, ContractDetails] = {}
        self._inflight: dict[object, Request] = {}
        self._front_keys: set[object] = set()     # keys answered by the front-month rule
        self.requests_sent = 0

    # --- public -----------------------------------------------------------------------------------
    def qualify(self, what) -> ContractDetails:
        """The one ibapi ContractDetails that a cell text (str), Spec, Contract or ContractDetails
        names (``.contract`` qualified: conId, exchange, localSymbol, ... set by IB).

        Raises InstrumentError when the text does not parse, when IB knows no such instrument
        (IB's 200: ``code`` 200 and ``ib_text`` set, ``understood`` says what was asked) and when IB
        answers with several instruments (``candidates``: the canonical text of each; nothing is
        picked). IBError from the session (RequestTimeout, 504 not connected, 1100 connection lost,
        other IB codes) propagate unchanged.
        """
        spec, contract, key, words, shown = self._query(what)
        hit = self._cached(contract, key)
        if hit is not None:
            return _copy_details(hit)
        with self._lock:
            hit = self._cached_locked(contract, key)
            if hit is not None:
                return _copy_details(hit)
            request = self._inflight.get(key)
            leader = request is None
            if request is None:
                request = self._new_request(contract, words)
                self._inflight[key] = request
        if leader:
            try:
                self._session.submit(request)
            except BaseException as exc:
                request.fail(exc)            # callers already waiting on it fail the same way
                self._forget(key, request)
                raise
            with self._lock:
                self.requests_sent += 1
        return _copy_details(self._await(request, key, spec, words, shown))

    def contract(self, what) -> Contract:
        """The qualified ibapi Contract (conId set) for a cell text, Spec or Contract. For
        ``conid:N.EXCHANGE`` the exchange is the one written. Raises as ``qualify``."""
        details = self.qualify(what)
        c = details.contract
        spec = what if isinstance(what, Spec) else _parse_quiet(what) if isinstance(what, str) else None
        if spec is not None and spec.sec_type == "" and spec.exchange:
            c.exchange = spec.exchange
        return c

    def details_by_con_id(self, con_id: int) -> ContractDetails:
        """The ContractDetails of a conId: from the cache, else asked of IB (reqContractDetails by
        conId). Raises InstrumentError for a conId that is not a positive integer or that IB does not
        know (200); IBError as ``qualify``."""
        try:
            cid = int(con_id)
            if cid != con_id:
                raise ValueError
        except (TypeError, ValueError):
            cid = 0
        if cid <= 0:
            raise InstrumentError(_shown(con_id), f"conId {_shown(con_id)}", "a conId is a positive integer "
                                                                              "(e.g. 265598)")
        return self.qualify(f"conid:{cid}")

    def describe(self, what) -> str:
        """The canonical text of the qualified instrument (e.g. "AAPL" -> "AAPL.NASDAQ",
        "es 202612 cme" -> "ESZ6.CME"). Raises as ``qualify``."""
        return format_contract(self.qualify(what))

    def remember(self, found: Sequence[ContractDetails], by_text: bool = True) -> None:
        """Cache ContractDetails IB sent for another request (an option chain's one reqContractDetails of
        a whole expiry), under their canonical text and conId, so qualifying each of them later asks
        IB nothing. Details without a conId are skipped. ``by_text`` False: by conId only (a text that
        names more than one contract, e.g. an SPX option of a date SPX and SPXW both list, must still
        get IB's ambiguity)."""
        with self._lock:
            for d in found:
                if not d.contract.conId:
                    continue
                self._by_con_id.setdefault(int(d.contract.conId), d)
                if not by_text:
                    continue
                try:
                    self._by_key.setdefault(format_contract(d), d)
                except InstrumentError:
                    pass

    def cached(self, what) -> ContractDetails | None:
        """The cached ContractDetails for a text, Spec or Contract, or None; never asks IB.
        Raises InstrumentError for a text that does not parse."""
        _, contract, key, _, _ = self._query(what)
        hit = self._cached(contract, key)
        return _copy_details(hit) if hit is not None else None

    def clear(self) -> None:
        """Forget every cached answer (requests in flight still complete for their callers)."""
        with self._lock:
            self._by_key.clear()
            self._by_con_id.clear()

    # --- internals --------------------------------------------------------------------------------
    @staticmethod
    def _query(what):
        """(spec or None, Contract to send, cache key, words, shown text) for any accepted input."""
        if isinstance(what, ContractDetails):
            what = what.contract
        if isinstance(what, Contract):
            c = copy.deepcopy(what)
            key = ("contract",) + tuple(str(getattr(c, f) or "").strip().upper() for f in (
                "conId", "symbol", "secType", "lastTradeDateOrContractMonth", "right", "multiplier", "exchange",
                "primaryExchange", "currency", "localSymbol", "tradingClass", "secIdType", "secId"))
            key += (c.strike if c.strike and c.strike < UNSET_DOUBLE / 2 else 0.0, bool(c.includeExpired))
            try:
                shown = format_contract(c)
            except InstrumentError:
                shown = _contract_words(c)
            return None, c, key, _contract_words(c), shown
        spec = what if isinstance(what, Spec) else parse(what)
        return spec, spec.to_contract(), spec.canonical, spec.in_words(), spec.text or spec.canonical

    def _cached(self, contract: Contract, key) -> ContractDetails | None:
        with self._lock:
            return self._cached_locked(contract, key)

    def _cached_locked(self, contract: Contract, key) -> ContractDetails | None:
        hit = self._by_key.get(key)
        if hit is not None and key in self._front_keys and _expired(hit):
            del self._by_key[key]            # the front month rolled: ask IB again
            hit = None
        if hit is None and contract.conId:
            d = self._by_con_id.get(int(contract.conId))
            exch = (contract.exchange or "").strip().upper()
            if d is not None and (not exch or exch == d.contract.exchange.upper()):
                hit = d
        return hit

    def _new_request(self, contract: Contract, words: str) -> Request:
        def start(client, req_id, c=contract):
            client.reqContractDetails(req_id, c)
        return Request(f"contract details for {words}", start, end="contractDetailsEnd", timeout=self._timeout)

    def _forget(self, key, request: Request) -> None:
        with self._lock:
            if self._inflight.get(key) is request:
                del self._inflight[key]

    def _await(self, request: Request, key, spec: Spec | None, words: str, shown: str) -> ContractDetails:
        t = request.timeout
        wait = t + 5.0 if isinstance(t, (int, float)) and math.isfinite(t) else None
        if wait is None and t is not None and not isinstance(t, (int, float)):
            wait = self._session.request_timeout + 5.0
        try:
            rows = request.result(wait)
        except IBError as exc:
            self._forget(key, request)
            if exc.code == NO_SECURITY_DEFINITION:
                raise InstrumentError(shown, words, _unknown_hint(spec, exc.text), code=NO_SECURITY_DEFINITION,
                                      ib_text=exc.text) from exc
            raise
        except BaseException:
            self._forget(key, request)
            raise
        found: list[ContractDetails] = []
        seen: set[int] = set()
        for name, args in rows:
            if name in ("contractDetails", "bondContractDetails") and len(args) > 1:
                d = args[1]
                cid = int(d.contract.conId or 0)
                if cid and cid in seen:
                    continue
                seen.add(cid)
                found.append(d)
        front = _front_month(spec, found)
        if front is not None:
            found = [front]
        if len(found) == 1:
            d = found[0]
            with self._lock:
                self._by_key[key] = d
                if front is not None:
                    self._front_keys.add(key)
                # also under its own text, except an option's: its text carries no tradingClass, and on a
                # date two classes list (SPX, SPXW) it names both (IB answers it as ambiguous)
                if isinstance(key, str) and d.contract.secType != "OPT":
                    try:
                        self._by_key.setdefault(format_contract(d), d)
                    except InstrumentError:
                        pass
                if d.contract.conId:
                    self._by_con_id.setdefault(int(d.contract.conId), d)
                if self._inflight.get(key) is request:
                    del self._inflight[key]
            return d
        self._forget(key, request)
        if not found:
            raise InstrumentError(shown, words, "IB knows no such instrument (it answered with no contract)")
        texts, listing = _candidates(found)
        raise InstrumentError(shown, words, f"ambiguous: IB lists {len(found)} instruments; missing "
                                            f"{_ambiguity_hint(spec)}", texts, listing=listing)


def _front_month(spec: Spec | None, found: Sequence[ContractDetails]) -> ContractDetails | None:
    """For a future written without a month (``ES.CME``): the listed contract with the nearest last
    trade date, when IB listed several that differ only in expiry; else None (IB lists no expired
    contract, so the nearest listed one is the front month)."""
    if spec is None or spec.sec_type != "FUT" or spec.last_trade_date or len(found) < 2:
        return None
    same = {(d.contract.symbol, d.contract.exchange, d.contract.currency, d.contract.multiplier,
             d.contract.tradingClass) for d in found}
    expiries = [(d.contract.lastTradeDateOrContractMonth or "")[:8] for d in found]
    if len(same) != 1 or not all(len(e) == 8 and e.isdigit() for e in expiries) or len(set(expiries)) != len(found):
        return None
    return found[min(range(len(found)), key=expiries.__getitem__)]


def _expired(details: ContractDetails) -> bool:
    """A future whose last trade date (YYYYMMDD) is before today (UTC)."""
    ltd = (details.contract.lastTradeDateOrContractMonth or "")[:8]
    return len(ltd) == 8 and ltd < format_date(datetime.now(UTC))


def _unknown_hint(spec: Spec | None, ib_text: str) -> str:
    text = f"IB knows no such instrument (IB 200: {ib_text})"
    if spec is not None and spec.sec_type == "FUT" and not spec.last_trade_date and len(spec.symbol) > 1 \
            and spec.symbol[-1] in MONTH_CODES and spec.symbol[:-1].isalpha():
        root, code = spec.symbol[:-1], spec.symbol[-1]
        month = _MONTH_NAMES[_MONTH_OF_CODE[code] - 1]
        example = f"{root}{code}{_this_year() % 10}" + (f".{spec.exchange}" if spec.exchange else "")
        text += f"; if you meant future {root} {month}, missing the year digit (e.g. {example})"
    if spec is not None and spec.sec_type == "STK" and spec.currency == "USD" and spec.primary_exchange:
        text += "; a listing outside the US needs its currency (e.g. VOD.LSE@GBP)"
    return text


def _ambiguity_hint(spec: Spec | None) -> str:
    if spec is not None and spec.sec_type == "FUT" and not spec.last_trade_date:
        return "the contract month: write one of the candidates"
    if spec is not None and spec.sec_type == "STK" and not spec.primary_exchange:
        return "the primary exchange or @currency: write one of the candidates"
    return "what tells them apart: write one of the candidates"
