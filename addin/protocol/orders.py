"""The order vocabulary: every order type and time in force the Orders sheet offers, in one table.

One source for the row parser (:mod:`addin.orders.rows`), the template's drop-downs
(``workbooks/build.py``), the README's table and the paper gateway's broker
(:mod:`addin.paper.market.broker`). A test asserts that every drop-down value parses and that every
parsed value is offered.

Which price columns an order type uses (IB's Order fields in brackets):
- ``LimitPrice`` [lmtPrice]: the limit (LMT, STP LMT, LOC, LIT) or a price cap (REL, MIDPRICE);
- ``StopPrice`` [auxPrice]: the stop (STP, STP LMT), the trigger (MIT, LIT), or the initial stop of a
  trailing order [trailStopPrice];
- ``TrailAmount`` [auxPrice] or ``TrailPercent`` [trailingPercent, in percent: 1.5 = 1.5%]: the trail;
- ``Offset``: the limit's distance from the stop of a TRAIL LIMIT [lmtPriceOffset], the peg offset of a
  REL order [auxPrice].

A requirement is ``REQUIRED``, ``OPTIONAL`` or ``BLANK`` (the cell must be empty).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OrderType", "Tif", "ORDER_TYPES", "ORDER_TYPE_CODES", "ORDER_TYPE_ALIASES", "TIFS", "TIF_CODES",
           "REQUIRED", "OPTIONAL", "BLANK", "PRICE_COLUMNS", "order_type", "tif", "PERCENT_COLUMNS", "OPG_TYPES",
           "markdown"]

REQUIRED, OPTIONAL, BLANK = "required", "optional", "blank"
PRICE_COLUMNS = ("LimitPrice", "StopPrice", "Offset")
# Columns holding a number of percent (1.5 = 1.5%); a percent-formatted cell holds a fraction instead.
PERCENT_COLUMNS = ("TrailPercent",)


@dataclass(frozen=True)
class OrderType:
    """One IB order type as the sheet offers it.

    code: IB's ``orderType``; token: how ContractDetails.orderTypes lists it (IB's own spelling, e.g.
    TRAILLMT and MIDPX, as in the recorded contract details); what: one line for the
    drop-down's help and the README; prices: {price column: REQUIRED / OPTIONAL / BLANK} (absent =
    BLANK); trail: needs exactly one of TrailAmount / TrailPercent; tifs: the TIFs allowed (None = all);
    bracket_entry: may carry TakeProfit / StopLoss."""

    code: str
    token: str
    what: str
    prices: tuple[tuple[str, str], ...] = ()
    trail: bool = False
    tifs: tuple[str, ...] | None = None
    bracket_entry: bool = False

    def need(self, column: str) -> str:
        return dict(self.prices).get(column, BLANK)


@dataclass(frozen=True)
class Tif:
    """One time in force: IB's ``tif`` code and one line on what it means."""

    code: str
    what: str


ORDER_TYPES: tuple[OrderType, ...] = (
    OrderType("MKT", "MKT", "market", bracket_entry=True),
    OrderType("LMT", "LMT", "limit at LimitPrice", (("LimitPrice", REQUIRED),), bracket_entry=True),
    OrderType("STP", "STP", "stop: a market order once the price touches StopPrice", (("StopPrice", REQUIRED),),
              bracket_entry=True),
    OrderType("STP LMT", "STPLMT", "stop limit: a limit at LimitPrice once the price touches StopPrice",
              (("LimitPrice", REQUIRED), ("StopPrice", REQUIRED)), bracket_entry=True),
    OrderType("TRAIL", "TRAIL", "trailing stop: TrailAmount or TrailPercent behind the best price; StopPrice = "
              "initial stop (optional)", (("StopPrice", OPTIONAL),), trail=True),
    OrderType("TRAIL LIMIT", "TRAILLMT", "trailing stop limit: as TRAIL, then a limit Offset beyond the stop",
              (("StopPrice", OPTIONAL), ("Offset", REQUIRED)), trail=True),
    OrderType("MOC", "MOC", "market on close (closing auction)", tifs=("DAY",)),
    OrderType("LOC", "LOC", "limit on close at LimitPrice", (("LimitPrice", REQUIRED),), tifs=("DAY",)),
    OrderType("MIT", "MIT", "market if touched: a market order once the price touches StopPrice (the trigger)",
              (("StopPrice", REQUIRED),)),
    OrderType("LIT", "LIT", "limit if touched: a limit at LimitPrice once the price touches StopPrice",
              (("LimitPrice", REQUIRED), ("StopPrice", REQUIRED))),
    OrderType("REL", "REL", "relative (pegged to primary): the bid (buy) or ask (sell) improved by Offset, "
              "capped at LimitPrice", (("LimitPrice", OPTIONAL), ("Offset", OPTIONAL))),
    OrderType("MIDPRICE", "MIDPX", "at the midpoint, capped at LimitPrice", (("LimitPrice", OPTIONAL),)),
)
ORDER_TYPE_CODES = tuple(t.code for t in ORDER_TYPES)
# Spellings a user may type (matched after upper-casing and collapsing spaces).
ORDER_TYPE_ALIASES = {"MARKET": "MKT", "LIMIT": "LMT", "STOP": "STP", "STPLMT": "STP LMT", "STOP LIMIT": "STP LMT",
                      "STP-LMT": "STP LMT", "TRAILING": "TRAIL", "TRAILLIMIT": "TRAIL LIMIT", "TRAILLMT": "TRAIL LIMIT",
                      "TRAIL LMT": "TRAIL LIMIT", "MID": "MIDPRICE"}

TIFS: tuple[Tif, ...] = (
    Tif("DAY", "until the end of the trading day (blank = DAY)"),
    Tif("GTC", "good till cancelled"),
    Tif("IOC", "immediate or cancel: what does not fill at once is cancelled"),
    Tif("FOK", "fill or kill: the whole quantity at once, or nothing"),
    Tif("OPG", "at the opening auction (MKT: market on open, LMT: limit on open)"),
    Tif("GTD", "good till the GoodTillDate column's date and time"),
    Tif("DTC", "day till cancelled: deactivated at the end of the day, not cancelled"),
)
TIF_CODES = tuple(t.code for t in TIFS)
OPG_TYPES = ("MKT", "LMT")               # IB's opening auction takes market and limit orders only


def order_type(code: str) -> OrderType:
    """The OrderType of IB's code (an alias is resolved). Raises KeyError for an unknown one."""
    code = ORDER_TYPE_ALIASES.get(code, code)
    for t in ORDER_TYPES:
        if t.code == code:
            return t
    raise KeyError(code)


def tif(code: str) -> Tif:
    """The Tif of IB's code. Raises KeyError for an unknown one."""
    for t in TIFS:
        if t.code == code:
            return t
    raise KeyError(code)


def markdown() -> str:
    """The README's table of the vocabulary (a test keeps the README equal to it)."""
    lines = ["| OrderType | what it does | LimitPrice | StopPrice | TrailAmount / TrailPercent | Offset |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in ORDER_TYPES:
        cells = [t.need(c) if t.need(c) != BLANK else "" for c in ("LimitPrice", "StopPrice")]
        trail = "one of them" if t.trail else ""
        offset = t.need("Offset") if t.need("Offset") != BLANK else ""
        lines.append(f"| `{t.code}` | {t.what} | {cells[0]} | {cells[1]} | {trail} | {offset} |")
    lines += ["", "| TIF | meaning |", "| --- | --- |"]
    lines += [f"| `{t.code}` | {t.what} |" for t in TIFS]
    return "\n".join(lines)
