"""The worksheet functions (UDFs) Excel imports through xlwings ("UDF Modules" = ``udfs``).

Every function reads; none can place, modify or cancel an order: they only ever receive the
Runtime's read-only facade (``addin.app.runtime.ReadOnlyRuntime``). Every failure comes back as cell
text, ``#IB <code>: <IB's text>`` for IB's errors and ``#IBXL: <what was wrong>`` for ours, never a
Python traceback.

No function holds Excel's calculation thread: each answers at once (within a few milliseconds). A
quote function shows the board's last value, or ``#IBXL: waiting for the first quote of ...`` while
the line is being qualified and subscribed in the background; the other functions start their
request in the background (``addin.app.background``: one request per argument set, shared by
every cell, its answer kept) and show ``#IBXL: loading ...`` (with IB's progress for long history:
``(12/50 requests)``) until it is in. Each call registers its caller cell (xlwings passes the
reserved ``caller`` argument) and the pump recalculates just the registered cells whose quotes
changed or whose request ended: they fill in on their own. No function runs while Excel's Insert
Function dialog is open (``call_in_wizard=False``). Tables (IB_QUOTES, IB_HISTORY, IB_POSITIONS,
...) return 2-D lists, which Excel 365 spills as native dynamic arrays (no legacy ``expand``:
xlwings' docs reserve it for Excel versions without dynamic arrays).

Units: prices in the contract's currency, sizes in shares / contracts / units, times as naive UTC
datetimes (Excel has no time zones).

The Python functions take no type hints on purpose: xlwings would turn a hint into a converter.
"""

import logging
import math
from datetime import UTC, datetime

import xlwings as xw

from addin.cells import boolean, error_value, is_blank
from addin.excel.errors import error_text
from addin.excel.layout import BAR_HEADERS
from addin.market.history import check_what_to_show, parse_bar_size, parse_duration
from addin.market.quote_fields import QUOTE_FIELDS
from addin.market.quote_fields import QuoteFailed as _IBText
from addin.market.quote_fields import QuoteWaiting as _WaitingError
from addin.market.quote_fields import quote_value as _quote_value

log = logging.getLogger(__name__)

__all__ = ["IB_QUOTE", "IB_QUOTES", "IB_HISTORY", "IB_CONTRACT", "IB_POSITIONS", "IB_ACCOUNT", "IB_PNL",
           "IB_ORDER", "IB_STATUS", "QUOTE_FIELDS"]

CATEGORY = "ibxl"
SYMBOL_DOC = "Instrument text: AAPL, AAPL.NASDAQ, EUR/USD, ESZ6.CME, ^SPX.CBOE, BTC/USD.PAXOS, conid:265598"
CONTRACT_FIELDS = {
    "conid": "conId", "symbol": "symbol", "sectype": "secType", "exchange": "exchange",
    "primaryexchange": "primaryExchange", "currency": "currency", "localsymbol": "localSymbol",
    "tradingclass": "tradingClass", "multiplier": "multiplier", "lasttradedate": "lastTradeDateOrContractMonth",
    "strike": "strike", "right": "right",
}
DETAIL_FIELDS = {"longname": "longName", "mintick": "minTick", "industry": "industry", "category": "category",
                 "timezone": "timeZoneId", "validexchanges": "validExchanges", "marketname": "marketName"}


def _reader():
    from addin.app.runtime import get_runtime
    return get_runtime().readonly()


def _safely(fn):
    """Run ``fn()``; any exception becomes the cell text of :func:`error_text`."""
    try:
        return fn()
    except _CellText as exc:
        return str(exc)
    except _WaitingError as exc:
        return f"#IBXL: {exc}"
    except Exception as exc:          # a UDF must answer with text, never a traceback
        return error_text(exc)


def _cell(caller):
    """``(book full name, sheet, address)`` of the calling cell, read on this thread (xlwings Range
    objects never cross threads); None without a caller. Tests may pass ``(sheet, address)`` or
    ``(book, sheet, address)``."""
    if caller is None:
        return None
    if isinstance(caller, tuple):
        return (None,) + caller if len(caller) == 2 else caller
    sheet = caller.sheet
    return (sheet.book.fullname, sheet.name, caller.address)


def _text(value, name: str) -> str:
    """An argument's text, trimmed. Refuses blanks, Excel errors (text or COM code) and any text
    starting with "#" (no instrument, Ref or tag does)."""
    if is_blank(value):
        raise ValueError(f"{name}: empty; expected {SYMBOL_DOC.split(': ', 1)[-1] if name == 'symbol' else 'text'}")
    error = error_value(value)
    if error is not None:
        raise ValueError(f"{name}: the cell holds the error {error}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if text.startswith("#"):
        raise ValueError(f"{name}: the cell holds the error {text}")
    return text


def _flat(value, name: str) -> list:
    """A cell, a row, a column or a 2-D range of texts -> a flat list (empty cells skipped)."""
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(_flat(v, name) if isinstance(v, (list, tuple)) else
                       ([] if is_blank(v) else [v]))
        return out
    return [] if value is None else [value]


def _field(value, table: dict, default: str, name: str = "field") -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    key = str(value).strip().lower().replace(" ", "").replace("_", "")
    if key not in table:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(sorted(set(table)))}")
    return table[key]


def _cellify(v):
    """A value as a cell shows it: aware datetimes -> naive UTC, NaN -> empty, numpy -> Python."""
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, datetime):
        return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _frame_rows(df, index_name: str | None = None) -> list[list]:
    """Header row + data rows of a DataFrame (the index first when ``index_name``)."""
    header = ([index_name] if index_name else []) + [str(c) for c in df.columns]
    rows = [header]
    for idx, rec in zip(df.index, df.itertuples(index=False, name=None)):
        rows.append(([_cellify(idx)] if index_name else []) + [_cellify(v) for v in rec])
    return rows


def _quote_safely(fn):
    try:
        return fn()
    except _IBText as exc:
        return f"#{exc}"
    except _WaitingError as exc:
        return f"#IBXL: {exc}"
    except Exception as exc:
        return error_text(exc)


# --- quotes --------------------------------------------------------------------------------------------
def _pending_text(text: str) -> str:
    return f"#IBXL: waiting for the first quote of {text}"


@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("symbol", doc=SYMBOL_DOC)
@xw.arg("field", doc="price (default: last, else mid), bid, ask, last, mid, spread, bid size, ask size, last size, "
                     "volume, open, high, low, close, change, change %, updated, data type; options: iv, delta, "
                     "gamma, vega, theta, und price, model price, bid iv, ask delta, ...")
def IB_QUOTE(symbol, field=None, caller=None):
    """Live quote of one instrument from IB's market data (reqMktData); ticks while the workbook streams.
    Prices in the contract's currency, sizes in shares/contracts, updated in UTC. An option's iv, delta,
    gamma, vega (per volatility point), theta (per day), und price and model price come from IB's model
    computation (tickOptionComputation 13, delayed 83), "bid ..." / "ask ..." from the bid's (10) and
    ask's (11); empty while IB has not computed them (and for instruments that are not options)."""
    def run():
        attr = _field(field, QUOTE_FIELDS, "price")
        text = _text(symbol, "symbol")
        rt = _reader()
        [key] = rt.hold_quotes_soon([text], _cell(caller))
        if isinstance(key, BaseException):    # kept a while: shown, never raised again (its traceback would grow)
            return error_text(key)
        if key is None:
            raise _WaitingError(f"waiting for the first quote of {text}")
        q = rt.quote(key)
        if q is None:
            raise _WaitingError(f"waiting for the first quote of {key}")
        return _quote_value(q, attr)
    return _quote_safely(run)


@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("symbols", doc="A range (row, column or block) of instrument texts, or one text. " + SYMBOL_DOC)
@xw.arg("fields", doc="Field names as a range or comma-separated text (default: bid, ask, last); see IB_QUOTE")
def IB_QUOTES(symbols, fields=None, caller=None):
    """Live quotes of several instruments: one row per symbol, one column per field (a dynamic array);
    errors of a single instrument show in its row. Ticks while the workbook streams."""
    def run():
        names = _flat(fields, "fields") if isinstance(fields, (list, tuple)) else \
            [f for f in str(fields or "bid,ask,last").split(",") if f.strip()]
        attrs = [_field(f, QUOTE_FIELDS, "price", "fields") for f in names]
        texts = [_text(s, "symbols") for s in _flat(symbols, "symbols")]
        if not texts:
            raise ValueError("symbols: no instrument given")
        rt = _reader()
        # one bad symbol shows in its row, the others still stream; none waits for IB
        held = dict(zip(dict.fromkeys(texts), rt.hold_quotes_soon(texts, _cell(caller))))
        out = []
        for text in texts:
            key = held[text]
            if isinstance(key, BaseException):
                out.append([error_text(key)] * len(attrs))
                continue
            q = rt.quote(key) if key is not None else None
            out.append([_quote_safely(lambda a=a, q=q: _quote_value(q, a)) if q is not None else
                        _pending_text(key or text) for a in attrs])
        return out
    return _quote_safely(run)


# --- background requests ---------------------------------------------------------------------------------
def _answer(rt, handle):
    """A finished handle's answer, or the progress text while it runs (for a ``fresh`` request: the
    previous answer, when there is one). Its error comes back as the cell's text (a fresh exception
    each time: the kept one is never raised again, its traceback would grow with every evaluation)."""
    if not handle.done.is_set():
        last = handle.previous
        if last is None:
            raise _CellText(handle.text())
        handle = last
    if handle.error is not None:
        raise _CellText(error_text(handle.error))
    return handle.result


class _CellText(Exception):
    """Text the cell shows as it is: a request's progress, or the error text of its answer."""


# --- history -------------------------------------------------------------------------------------------
@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("symbol", doc=SYMBOL_DOC)
@xw.arg("duration", doc='How far back: "<n> S|D|W|M|Y", e.g. "1 D" (default), "6 M"')
@xw.arg("bar_size", doc='IB barSize: "1 secs" .. "1 month", e.g. "1 min" (default), "1 hour", "1 day"')
@xw.arg("what_to_show", doc="IB whatToShow: TRADES (default), MIDPOINT, BID, ASK, BID_ASK, ...")
@xw.arg("use_rth", doc="TRUE (default): regular trading hours only; FALSE: all hours")
def IB_HISTORY(symbol, duration=None, bar_size=None, what_to_show=None, use_rth=None, caller=None):
    """Historical bars from IB (reqHistoricalData) as a dynamic array with a header row: Date (UTC), Open,
    High, Low, Close, Volume, WAP, BarCount. Loads in the background, then fills in."""
    def run():
        text = _text(symbol, "symbol")
        rth = True if use_rth is None else boolean(use_rth, "use_rth")
        args = ("history", text, str(duration or "1 D"), str(bar_size or "1 min"), str(what_to_show or "TRADES"),
                rth)
        parse_duration(args[2])             # a bad argument is named at once, not after a background start
        parse_bar_size(args[3])
        check_what_to_show(args[4])
        rt = _reader()

        def fetch(handle):         # the rows are built here too: 35,000 bars take ~0.3 s to convert
            df = rt.bars(text, duration=args[2], bar_size=args[3], what_to_show=args[4], use_rth=rth,
                         progress=handle.report)
            if df.empty:
                return [[BAR_HEADERS["time"]] + [BAR_HEADERS.get(str(c), str(c)) for c in df.columns]]
            return _frame_rows(df.rename(columns=BAR_HEADERS), BAR_HEADERS["time"])
        return _answer(rt, rt.request(args, fetch, f"{text} history", _cell(caller)))
    return _safely(run)


# --- contracts -----------------------------------------------------------------------------------------
@xw.func(category=CATEGORY, call_in_wizard=False)
@xw.arg("symbol", doc=SYMBOL_DOC)
@xw.arg("field", doc='Omitted: the canonical text (e.g. AAPL.NASDAQ). Else conId, symbol, secType, exchange, '
                     'primaryExchange, currency, localSymbol, tradingClass, multiplier, lastTradeDate, longName, '
                     'minTick, industry, timeZone, validExchanges; "all": a two-column table')
def IB_CONTRACT(symbol, field=None, caller=None):
    """The instrument IB knows for this text (reqContractDetails): its canonical text, one field, or all fields."""
    def run():
        text = _text(symbol, "symbol")
        rt = _reader()
        cell = _cell(caller)
        if field is None or (isinstance(field, str) and not field.strip()):
            return _answer(rt, rt.request(("describe", text), lambda h: rt.describe(text), f"{text} contract", cell))
        key = str(field).strip().lower().replace(" ", "").replace("_", "")
        if key != "all" and key not in CONTRACT_FIELDS and key not in DETAIL_FIELDS:   # named at once, before IB
            raise ValueError(f"field: {field!r} is not one of all, {', '.join([*CONTRACT_FIELDS, *DETAIL_FIELDS])}")
        details = _answer(rt, rt.request(("qualify", text), lambda h: rt.qualify(text), f"{text} contract", cell))
        if key == "all":
            rows = [["field", "value"]]
            rows += [[name, _cellify(getattr(details.contract, attr))] for name, attr in CONTRACT_FIELDS.items()]
            rows += [[name, _cellify(getattr(details, attr))] for name, attr in DETAIL_FIELDS.items()]
            return rows
        if key in CONTRACT_FIELDS:
            return _cellify(getattr(details.contract, CONTRACT_FIELDS[key]))
        return _cellify(getattr(details, DETAIL_FIELDS[key]))
    return _safely(run)


# --- portfolio -----------------------------------------------------------------------------------------
POSITION_VIEWS = ("positions", "totals")


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
@xw.arg("view", doc='"positions" (default): one row per position; "totals": the greeks summed per account '
                    'x underlying, then per account (underlying "All")')
def IB_POSITIONS(view=None, caller=None):
    """Positions of every managed account (reqPositions + reqAccountUpdates) as a dynamic array with a header.

    ``view`` "positions" (default, blank too): account, symbol, con_id, sec_type, currency, position,
    avg_cost, market_price, market_value, unrealized_pnl, realized_pnl, weight, then the greeks of
    ``addin.account.greeks`` (underlying, delta, gamma, vega, theta, delta_dollars: whole-position
    share-equivalents, currency per vol point / per day, delta-adjusted exposure in the contract's currency).
    ``view`` "totals": ``greek_totals`` of those rows: account, underlying, delta, gamma, vega, theta,
    delta_dollars, one row per account x underlying then the account's total (underlying "All"); a total
    over an unknown greek is empty, never 0. Another view is refused with a text naming the known ones."""
    def run():
        want = "positions" if is_blank(view) else str(view).strip().lower()
        if want not in POSITION_VIEWS:
            raise ValueError(f"view: {view!r} is not one of {', '.join(POSITION_VIEWS)}")
        rt = _reader()
        if want == "totals":
            from addin.account.greeks import greek_totals
            return _frame_rows(_answer(rt, rt.request(("positions", "totals"), lambda h: greek_totals(rt.positions()),
                                                      "greek totals", _cell(caller), fresh=True)))
        return _frame_rows(_answer(rt, rt.request(("positions",), lambda h: rt.positions(), "positions",
                                                  _cell(caller), fresh=True)))
    return _safely(run)


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
@xw.arg("tag", doc="An account summary tag (NetLiquidation, BuyingPower, TotalCashValue, ...); "
                   "omitted: every tag as a table")
def IB_ACCOUNT(tag=None, caller=None):
    """Account values from IB's account summary (reqAccountSummary): one tag's value for the first managed
    account, or the whole table (account, tag, value, currency)."""
    def run():
        rt = _reader()
        df, account = _answer(rt, rt.request(("account summary",), lambda h: (rt.account_summary(), rt.account()),
                                             "the account summary", _cell(caller), fresh=True))
        if tag is None or (isinstance(tag, str) and not tag.strip()):
            return _frame_rows(df)
        want = str(tag).strip()
        hit = df[df["tag"].str.lower() == want.lower()]
        if hit.empty:
            raise ValueError(f"tag: {want!r} is not in the account summary; known tags: "
                             f"{', '.join(sorted(set(df['tag'])))}")
        first = hit[hit["account"] == account]
        return _cellify((first if not first.empty else hit).iloc[0]["value"])
    return _safely(run)


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
def IB_PNL(caller=None):
    """Today's P&L of the first managed account (reqPnL), in its base currency: header daily, unrealized,
    realized, and one row of values."""
    def run():
        rt = _reader()
        df = _answer(rt, rt.request(("pnl",), lambda h: rt.pnl(rt.account()), "P&L", _cell(caller), fresh=True))
        return _frame_rows(df, "account")
    return _safely(run)


# --- orders (read only) --------------------------------------------------------------------------------
ORDER_FIELDS = ("Ref", "Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice", "Commission",
                "Message", "Updated")


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
@xw.arg("ref", doc="The Ref of an order row (sent to IB as orderRef)")
@xw.arg("field", doc="Status, OrderId, PermId, Filled, Remaining, AvgFillPrice, Commission, Message, Updated; "
                     "omitted: a header row and a value row")
def IB_ORDER(ref, field=None, caller=None):
    """State of the order placed from the row with this Ref (read only: no function can place, modify or
    cancel an order)."""
    def run():
        rt, text = _reader(), _text(ref, "ref")
        info = _answer(rt, rt.request(("order", text), lambda h: rt.order(text), f"order {text}", _cell(caller),
                                      fresh=True))
        norm = {k.lower(): k for k in info}
        if field is None or (isinstance(field, str) and not field.strip()):
            names = [f for f in ORDER_FIELDS if f in info] + [k for k in info if k not in ORDER_FIELDS]
            return [names, [_cellify(info[k]) for k in names]]
        key = str(field).strip().lower().replace(" ", "").replace("_", "")
        if key not in norm:
            raise ValueError(f"field: {field!r} is not one of {', '.join(info)}")
        return _cellify(info[norm[key]])
    return _safely(run)


@xw.func(category=CATEGORY, volatile=True, call_in_wizard=False)
def IB_STATUS(caller=None):
    """The connection to TWS / IB Gateway in words: state, host:port, client id, accounts, market data lines."""
    def run():
        rt = _reader()
        s = _answer(rt, rt.request(("status",), lambda h: rt.status(), "the status", _cell(caller), fresh=True))
        kind = {True: "paper", False: "LIVE", None: "accounts unknown"}[s["paper"]]
        text = (f"{s['state']} {s['host']}:{s['port']} client {s['client_id']}; {kind} {s['accounts']}; "
                f"{s['lines']} market data lines; {s['formula_cells']} streaming formulas")
        return text + (f"; last error {s['last_error']}" if s["last_error"] else "")
    return _safely(run)
