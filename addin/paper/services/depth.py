"""Market depth at the paper gateway: reqMktDepth / cancelMktDepth and reqMktDepthExchanges.

The paper market has quotes, not orders, so the book is synthetic (deterministic per seed):

* row 0 of each side is the quote itself: the bid (ask) and its size, exactly what reqMktData shows;
* deeper rows lie on the tick grid, one tick apart, within ``numRows`` ticks of the touch; a level
  holds orders or not by a seeded draw (about 3 in 4 do), so the number of rows varies;
* a deeper level's size is lot x a seeded draw from the quote sizes' range, growing with the distance
  from the touch, keyed by its price (it stays while the quote moves) and redrawn every 8 seconds at a
  phase of its own (``ticks.depth_draws``).

Each streaming step the new book is compared row by row with what the client holds: a changed row is an
update (operation 1), extra rows are inserted at the end (0) and missing ones deleted from the end (2).
Rows are only ever inserted or deleted at the end, so a client that shifts rows on insert/delete (IB's
rule) and one that overwrites a position (ib_async's) hold the same book.

isSmartDepth=True answers with updateMktDepthL2, each row naming the exchange (market maker) whose
orders are there; isSmartDepth=False with updateMktDepth. IB allows 3 depth requests at a time (309).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...protocol import errors
from ..codec import messages, requests
from ..market import ticks as tk

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Instrument, Quote
    from .connection import ClientConnection

MAX_DEPTH_REQUESTS = 3          # IB: "Max number (3) of market depth requests has been reached" (309)
MAX_ROWS = 50                   # rows per side a request can get (numRows above is served this many)
LEVEL_FILLED = 0.75             # share of deeper levels that hold orders
ASK, BID = 0, 1                 # IB's side codes
INSERT, UPDATE, DELETE = 0, 1, 2

STOCK_VENUES = ("NASDAQ", "ARCA", "BATS", "EDGX", "IEX")
#: secType -> the exchanges whose orders make up its book (SMART depth names them as market makers)
VENUES = {"STK": STOCK_VENUES, "FUT": ("CME",), "CASH": ("IDEALPRO",), "CRYPTO": ("PAXOS",)}

#: reqMktDepthExchanges: (exchange, secType, listingExch, serviceDataType, aggGroup) per venue of the
#: universe. "Deep2" is IB's name for a full (Level II, market maker) book, "Deep" for price levels.
DEPTH_EXCHANGES = (
    ("NASDAQ", "STK", "NASDAQ", "Deep2", 1),
    ("ARCA", "STK", "ARCA", "Deep", 1),
    ("BATS", "STK", "", "Deep", 1),
    ("EDGX", "STK", "", "Deep", 1),
    ("IEX", "STK", "", "Deep", 1),
    ("CME", "FUT", "CME", "Deep", 2),
    ("IDEALPRO", "CASH", "", "Deep", 3),
    ("PAXOS", "CRYPTO", "", "Deep", 4),
)

Row = tuple[float, float, str]          # price, size, exchange


def book_side(inst: "Instrument", q: "Quote", side: int, rows: int, second: int) -> list[Row]:
    """One side of the synthetic book at a replay second: at most ``rows`` rows, best first.
    Row 0 is the quote (price and size); the others as the module says."""
    touch, touch_size = (q.bid, q.bid_size) if side == BID else (q.ask, q.ask_size)
    if touch is None or touch_size is None:
        return []
    grid, book = inst.feed.grid, inst.book
    num, den = grid.num, grid.den
    touch_ticks = round(touch * den / num)
    step = -1 if side == BID else 1
    levels = touch_ticks + step * np.arange(rows, dtype=np.int64)
    filled, size_draw, venue_draw = tk.depth_draws(inst.feed.key, side, levels, second)
    venues = VENUES.get(inst.sec_type, (inst.contract.exchange,))
    span = book.hi - book.lo + 1
    out: list[Row] = []
    for k, (ticks, u, draw, v) in enumerate(zip(levels.tolist(), filled.tolist(), size_draw.tolist(),
                                                venue_draw.tolist())):
        if k == 0:
            out.append((touch, touch_size, venues[v % len(venues)]))
            continue
        if u >= LEVEL_FILLED:
            continue
        lots = round((book.lo + draw % span) * (1 + k / 4))
        out.append(((ticks * num) / den, round(lots * book.lot, book.decimals), venues[v % len(venues)]))
    return out


@dataclass
class DepthSubscription:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    rows: int
    smart: bool
    held: dict = field(default_factory=lambda: {ASK: [], BID: []})   # side -> rows the client holds


class DepthService:
    """reqMktDepth, cancelMktDepth and reqMktDepthExchanges for every connection.

    resolve(conn, req_id, contract): the one instrument a request names, or None once IB's error went
    out; quote(inst): its current quote; now_second(): the replay time in whole epoch seconds."""

    def __init__(self, resolve, quote, now_second):
        self.resolve = resolve
        self.quote = quote
        self.now_second = now_second
        self.subs: dict[tuple[int, int], DepthSubscription] = {}

    def req_mkt_depth_exchanges(self, conn, fields) -> None:
        conn.send(messages.mkt_depth_exchanges(list(DEPTH_EXCHANGES)))

    def req_mkt_depth(self, conn, fields) -> None:
        req = requests.req_mkt_depth(fields)
        key = (id(conn), req.req_id)
        if key in self.subs:
            conn.send_duplicate_id(req.req_id)
            return
        if sum(1 for s in self.subs.values() if s.conn is conn) >= MAX_DEPTH_REQUESTS:
            conn.send_error(req.req_id, errors.MAX_DEPTH_REQUESTS,
                            f"Max number ({MAX_DEPTH_REQUESTS}) of market depth requests has been reached")
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        if not inst.has_quotes:
            conn.send_error(req.req_id, errors.DEPTH_NOT_SUPPORTED, "Deep market data is not supported for this "
                                                                    "combination of security type/exchange")
            return
        sub = DepthSubscription(conn, req.req_id, inst, max(1, min(req.num_rows, MAX_ROWS)), req.is_smart_depth)
        self.subs[key] = sub
        self.send_changes(sub, self.quote(inst), self.now_second())

    def cancel_mkt_depth(self, conn, fields) -> None:
        req = requests.cancel_mkt_depth(fields)
        self.subs.pop((id(conn), req.req_id), None)

    def instruments(self) -> list["Instrument"]:
        return [s.inst for s in self.subs.values()]

    def pump(self, quotes: dict, second: int) -> None:
        """Send every subscription's book changes; ``quotes``: conId -> the current quote."""
        for sub in list(self.subs.values()):
            self.send_changes(sub, quotes[sub.inst.con_id], second)

    def send_changes(self, sub: DepthSubscription, q: "Quote", second: int) -> None:
        for side in (BID, ASK):
            new = [row if sub.smart else (row[0], row[1], "")      # only L2 rows name an exchange
                   for row in book_side(sub.inst, q, side, sub.rows, second)]
            old = sub.held[side]
            for pos in range(min(len(old), len(new))):
                if old[pos] != new[pos]:
                    self._send(sub, pos, UPDATE, side, new[pos])
            for pos in range(len(old), len(new)):
                self._send(sub, pos, INSERT, side, new[pos])
            for pos in range(len(old) - 1, len(new) - 1, -1):
                self._send(sub, pos, DELETE, side, old[pos])
            sub.held[side] = new

    @staticmethod
    def _send(sub: DepthSubscription, pos: int, op: int, side: int, row: Row) -> None:
        price, size, venue = row
        if sub.smart:
            sub.conn.send(messages.market_depth_l2(sub.req_id, pos, venue, op, side, price, size, True))
        else:
            sub.conn.send(messages.market_depth(sub.req_id, pos, op, side, price, size))

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]

    def drop_all(self) -> None:
        self.subs.clear()
