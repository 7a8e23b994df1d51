"""Option worksheet functions: IB_CHAIN, IB_EXPIRIES, IB_STRIKES (read only, like every UDF).

Where the data comes from: IB's reqSecDefOptParams (expiries and strikes, cached for the day), one
reqContractDetails per expiry (its options) and reqMktData per option (bid, ask, last, volume, open
interest, and tickOptionComputation's iv and greeks), through the runtime's ``addin.market.chain``.
None of them waits on IB: the chain's plan is a background request (``addin.app.background``: one per
argument set, kept for the day), its lines are subscribed in the background, and the cell is
registered under every line, so the pump recalculates it as the quotes tick. Until then the cell
shows ``#IBXL: loading ...`` / rows whose Data is ``waiting``. Rows beyond the line budget (half the
free lines) are one snapshot each, taken when the chain was planned: their values do not tick (Data
``snapshot``) until the arguments change or the next New York day plans it again.

Trading classes: an underlying may list several (SPX: SPX monthlies AM and SPXW dailies/weeklies PM;
ES: ES quarterlies and EW1..EW5 weeklies). Expiries are looked up across all of them and each expiry's
options fetched with its own class; ``trading_class`` (or a word after the expiry: ``next SPXW``) keeps
to one, and IB_EXPIRIES then shows the class of each expiry.

Errors come back as text naming the argument: ``#IBXL: expiry: 'soon' is not a date ...``,
``#IBXL: underlying: the cell holds the error #N/A``, IB's as ``#IB 200: ...``.
"""

import math
import re
from dataclasses import replace
from datetime import datetime

import xlwings as xw

from addin.cells import error_value, is_blank
from addin.excel.errors import error_text
from addin.market.chain import CHAIN_COLUMNS, NY, chain_rows, parse_expiry, parse_strikes, plan_records, plan_texts
from addin.market.quotes import BoardQuote

from .functions import CATEGORY, _answer, _cell, _flat, _reader, _safely, _text

__all__ = ["IB_CHAIN", "IB_EXPIRIES", "IB_STRIKES"]

UNDERLYING_DOC = "The underlying: AAPL, MSFT, SPY, ^SPX.CBOE, ESZ6.CME, conid:265598"
EXPIRY_DOC = ("A listed expiry (a date, YYYYMMDD, YYYY-MM-DD), next (default), monthly, +30d, +2w, +3m; "
              "optionally then a tradingClass: next SPXW")
CLASS_DOC = "IB's tradingClass to keep to (SPX, SPXW, ES, EW3); default: each expiry's own (the nearest of any)"
_COLUMNS = {c.lower(): c for c in CHAIN_COLUMNS}


def _checked(value, name: str):
    """An optional argument with Excel's error values refused, naming the argument."""
    error = error_value(value)
    if error is not None:
        raise ValueError(f"{name}: the cell holds the error {error}")
    return None if is_blank(value) else value


def _class_arg(value) -> str:
    """The trading_class argument: IB's tradingClass upper-cased, "" when blank."""
    value = _checked(value, "trading_class")
    if value is None:
        return ""
    text = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9]{0,11}", text):
        raise ValueError(f"trading_class: {str(value).strip()!r} is not a tradingClass (e.g. SPX, SPXW, EW3)")
    return text


def _expiry_text(value, trading_class=None) -> str:
    """The expiry argument as a rule text (20261218, next, monthly, +30d, next SPXW): checked here, before
    IB; ``trading_class`` (an argument of its own) pins the class as a trailing word would."""
    rule = parse_expiry(_checked(value, "expiry"))
    klass = _class_arg(trading_class)
    if klass and rule.trading_class and klass != rule.trading_class:
        raise ValueError(f"trading_class: {klass} differs from the expiry's {rule.trading_class}")
    return replace(rule, trading_class=klass or rule.trading_class).text


def _strikes_arg(value):
    spec = parse_strikes(_checked(value, "strikes"))
    return spec if isinstance(spec, int) else f"{spec[0]:g}-{spec[1]:g}"


def _fields(value) -> list[str]:
    """Chain columns to show (a range or comma-separated text; default every column)."""
    value = _checked(value, "fields")
    if value is None:
        return list(CHAIN_COLUMNS)
    names = _flat(value, "fields") if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for name in names:
        key = str(name).strip().lower().replace(" ", "")
        if not key:
            continue
        if key not in _COLUMNS:
            raise ValueError(f"fields: {str(name).strip()!r} is not one of {', '.join(CHAIN_COLUMNS)}")
        out.append(_COLUMNS[key])
    if not out:
        raise ValueError("fields: no column named")
    return out


def _today() -> str:
    return datetime.now(NY).strftime("%Y%m%d")    # answers are kept per New York day (IB lists overnight)


def _cellify(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("underlying", doc=UNDERLYING_DOC)
@xw.arg("expiry", doc=EXPIRY_DOC)
@xw.arg("strikes", doc="How many strikes around the underlying's price (default 10), or a range such as 200-250")
@xw.arg("fields", doc="Columns to show (default all): CallBid, CallAsk, CallLast, CallVolume, CallOpenInterest, "
                      "CallIV, CallDelta, CallGamma, CallVega, CallTheta, Strike, PutBid .. PutTheta, Data")
@xw.arg("trading_class", doc=CLASS_DOC)
def IB_CHAIN(underlying, expiry=None, strikes=None, fields=None, trading_class=None, caller=None):
    """An option chain from IB as a dynamic array with a header: one row per strike (ascending), calls
    left, Strike in the middle, puts right (Bid, Ask, Last, Volume, OpenInterest, IV, Delta, Gamma, Vega,
    Theta each), Data: streaming / snapshot / waiting. Ticks while the workbook streams. The expiry is
    looked up across every trading class IB lists on the underlying (SPX: SPXW dailies and weeklies, SPX
    monthlies) and its options fetched with that expiry's own class; ``trading_class`` (or a trailing
    word of ``expiry``: "next SPXW") keeps to one class."""
    def run():
        text = _text(underlying, "underlying")
        rule, count, cols = _expiry_text(expiry, trading_class), _strikes_arg(strikes), _fields(fields)
        rt, cell = _reader(), _cell(caller)
        plan = _answer(rt, rt.request(("option chain", text, rule, count, _today()),
                                      lambda h: plan_records(rt.option_chain(text, rule, count)),
                                      f"{text} option chain", cell))
        texts = plan_texts(plan)
        held = dict(zip(dict.fromkeys(texts), rt.hold_quotes_soon(texts, cell))) if texts else {}

        def quote_of(option):
            key = held.get(option)
            if isinstance(key, BaseException):       # a line that failed: its row's Data says why
                return BoardQuote(symbol=option, error=error_text(key).lstrip("#"))
            return rt.quote(key) if isinstance(key, str) else None

        return [cols] + [[_cellify(v) for v in row] for row in chain_rows(plan, quote_of, cols)]
    return _safely(run)


@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("underlying", doc=UNDERLYING_DOC)
@xw.arg("trading_class", doc=CLASS_DOC)
def IB_EXPIRIES(underlying, trading_class=None, caller=None):
    """The expiries IB lists for options on the underlying (reqSecDefOptParams), from today on: a column
    of dates, nearest first. When IB lists more than one trading class on it (SPX and SPXW; ES and
    EW1..EW5) and ``trading_class`` is blank, a second column names each row's tradingClass (a date two
    classes list is two rows); ``trading_class`` keeps to one class (a column of dates)."""
    def run():
        text = _text(underlying, "underlying")
        klass = _class_arg(trading_class)
        rt = _reader()
        days = _answer(rt, rt.request(("option expiries", text, _today()), lambda h: rt.option_expiries(text),
                                      f"{text} option expiries", _cell(caller)))
        rows = [(d[:8], d[9:].strip()) for d in days]
        if klass:
            listed = sorted({k for _, k in rows if k})
            if listed and klass not in listed:
                raise ValueError(f"trading_class: {klass} is not listed for {text}; listed: {', '.join(listed)}")
            if not listed:
                raise ValueError(f"trading_class: {text} has one class; leave trading_class blank")
            return [[datetime.strptime(d, "%Y%m%d")] for d, k in rows if k == klass]
        if any(k for _, k in rows):
            return [[datetime.strptime(d, "%Y%m%d"), k] for d, k in rows]
        return [[datetime.strptime(d, "%Y%m%d")] for d, _ in rows]
    return _safely(run)


@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("underlying", doc=UNDERLYING_DOC)
@xw.arg("expiry", doc=EXPIRY_DOC)
@xw.arg("trading_class", doc=CLASS_DOC)
def IB_STRIKES(underlying, expiry=None, trading_class=None, caller=None):
    """The strikes IB lists for the underlying's options on one expiry (reqContractDetails of that
    expiry's trading class, or of ``trading_class``): a column of prices in the underlying's currency,
    ascending."""
    def run():
        text = _text(underlying, "underlying")
        rule = _expiry_text(expiry, trading_class)
        rt = _reader()
        strikes = _answer(rt, rt.request(("option strikes", text, rule, _today()),
                                         lambda h: rt.option_strikes(text, rule), f"{text} option strikes",
                                         _cell(caller)))
        return [[float(k)] for k in strikes]
    return _safely(run)
