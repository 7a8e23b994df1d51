"""Market data at the paper gateway: reqMktData (streaming and snapshot), market data types, delayed
data, tick-by-tick, and the streaming loop that sends quote changes and drives order fills.

A subscription remembers the last value it sent per tick type and sends only changes, the way TWS
does. Delayed data (types 3 and 4) is the same replay seen 15 minutes late, with IB's delayed tick
types 66-76 and the 10167 notice before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...protocol import errors
from ...protocol.ticks import DELAYED_TICKS, DELAYED_TYPES, LIVE, LIVE_TICKS, MARKET_DATA_TYPES, TICK_BY_TICK_TYPES
from ..codec import messages, requests

if TYPE_CHECKING:  # pragma: no cover
    from ibapi.contract import Contract

    from ..market.market import Instrument, Market, Quote
    from .connection import ClientConnection
    from .firehose import Firehose

    Resolve = Callable[[ClientConnection, int, Contract], "Instrument | None"]

log = logging.getLogger(__name__)

DELAY = timedelta(minutes=15)

_SIZE_OF = {"bid": "bid_size", "ask": "ask_size", "last": "last_size"}
_CAN_AUTO_EXECUTE = 1


@dataclass
class Subscription:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    delayed: bool
    sent: dict = field(default_factory=dict)   # field name -> last value sent


@dataclass
class TickByTick:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    kind: str                                  # Last, AllLast, BidAsk, MidPoint
    sent: tuple = ()


class MarketDataService:
    """reqMktData, reqMarketDataType and tick-by-tick for every connection, and the streaming loop.

    market: the replayed quotes; resolve(conn, req_id, contract): the one instrument a request names,
    or None once IB's error went out; max_lines: lines per connection (error 101 beyond);
    stream_interval: seconds between streaming steps; after_pump(now): called after each step (the
    server lets orders trade and keepUpToDate bars advance there)."""

    def __init__(self, market: "Market", resolve: "Resolve", *, max_lines: int, stream_interval: float,
                 after_pump: Callable[[datetime], None]):
        self.market = market
        self.resolve = resolve
        self.max_lines = max_lines
        self.stream_interval = stream_interval
        self.after_pump = after_pump
        self.subs: dict[tuple[int, int], Subscription] = {}       # (id(conn), req_id) -> subscription
        self.tbt: dict[tuple[int, int], TickByTick] = {}
        self.pumps = 0
        self.firehose: Firehose | None = None   # a running one replaces the quote stream (benchmarks)
        self.firehose_lines: dict = {}  # its encoded frames per line, kept between runs

    # --- requests ---------------------------------------------------------------------------------
    def req_market_data_type(self, conn, fields) -> None:
        fields.next_int("version")
        data_type = fields.next_int("marketDataType")
        if data_type not in MARKET_DATA_TYPES:
            conn.send_error(-1, errors.VALIDATION_ERROR, f"Error validating request.-'a0' : cause - Invalid "
                                                         f"market data type {data_type}")
            return
        conn.market_data_type = data_type

    def lines_in_use(self, conn) -> int:
        return sum(1 for s in self.subs.values() if s.conn is conn)

    def req_mkt_data(self, conn, fields) -> None:
        req = requests.req_mkt_data(fields)
        key = (id(conn), req.req_id)
        if key in self.subs:
            conn.send_error(req.req_id, errors.PROCESSING_ERROR, f"Error processing request.-'bB' : cause - "
                                                                 f"Duplicate ticker id:{req.req_id}")
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        if not req.snapshot and self.lines_in_use(conn) >= self.max_lines:
            conn.send_error(req.req_id, errors.MAX_TICKERS, "Max number of tickers has been reached")
            return
        delayed = conn.market_data_type in DELAYED_TYPES
        conn.send(messages.tick_req_params(req.req_id, inst.min_tick, "9c0001" if inst.has_quotes else "", 3))
        if delayed:
            conn.send_error(req.req_id, errors.DELAYED_DATA_NOTICE, "Requested market data is not subscribed. "
                                                                    "Displaying delayed market data.")
        conn.send(messages.market_data_type(req.req_id, conn.market_data_type if delayed else LIVE))
        sub = Subscription(conn, req.req_id, inst, delayed)
        now = self.market.now()
        self._send_changes(sub, self.market.quote(inst, now - DELAY if delayed else now))
        if req.snapshot or req.regulatory_snapshot:
            conn.send(messages.tick_snapshot_end(req.req_id))
        else:
            self.subs[key] = sub

    def cancel_mkt_data(self, conn, fields) -> None:
        fields.next_int("version")
        req_id = fields.next_int("reqId")
        if self.subs.pop((id(conn), req_id), None) is None:
            conn.send_error(req_id, errors.NO_SUCH_TICKER, f"Can't find EId with tickerId:{req_id}")

    def req_tick_by_tick(self, conn, fields) -> None:
        req = requests.req_tick_by_tick(fields)
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        kind = req.tick_type
        if kind not in TICK_BY_TICK_TYPES:
            conn.send_error(req.req_id, errors.TICK_BY_TICK_FAILED, f"Failed to request tick-by-tick data:"
                                                                    f"Invalid tick type {kind}")
            return
        if kind in ("Last", "AllLast") and not inst.has_trades or kind in ("BidAsk",) and not inst.has_quotes:
            conn.send_error(req.req_id, errors.TICK_BY_TICK_FAILED, f"Failed to request tick-by-tick data:"
                                                                    f"No {kind} data for {inst.contract.localSymbol}")
            return
        sub = TickByTick(conn, req.req_id, inst, kind)
        self._send_tbt(sub, self.market.quote(inst))
        self.tbt[(id(conn), req.req_id)] = sub

    def cancel_tick_by_tick(self, conn, fields) -> None:
        req_id = fields.next_int("reqId")
        self.tbt.pop((id(conn), req_id), None)

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]
        for key in [k for k, s in self.tbt.items() if s.conn is conn]:
            del self.tbt[key]

    def drop_all_subscriptions(self) -> None:
        self.subs.clear()
        self.tbt.clear()

    # --- streaming --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Every stream interval: read the quotes of every subscribed instrument once, send what
        changed, let working orders trade against the new quotes, and update keepUpToDate bars."""
        interval = self.stream_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.pump()
            except Exception:
                log.exception("paper gateway streaming step failed")

    def pump(self) -> None:
        market = self.market
        now = market.now()
        self.pumps += 1
        live: dict[int, Instrument] = {}
        delayed: dict[int, Instrument] = {}
        for sub in self.subs.values():
            (delayed if sub.delayed else live)[sub.inst.con_id] = sub.inst
        for tbt in self.tbt.values():
            live[tbt.inst.con_id] = tbt.inst
        quotes: dict[int, Quote] = {}
        if live:
            quotes = dict(zip(live, market.quotes(list(live.values()), now)))
        late = dict(zip(delayed, market.quotes(list(delayed.values()), now - DELAY))) if delayed else {}
        if self.firehose is None:
            for sub in list(self.subs.values()):
                self._send_changes(sub, late[sub.inst.con_id] if sub.delayed else quotes[sub.inst.con_id])
        for tbt in list(self.tbt.values()):
            self._send_tbt(tbt, quotes[tbt.inst.con_id])
        self.after_pump(now)

    def _send_changes(self, sub: Subscription, q: "Quote") -> None:
        ids = DELAYED_TICKS if sub.delayed else LIVE_TICKS
        sent, send, req_id = sub.sent, sub.conn.send, sub.req_id
        for name in ("bid", "ask", "last"):
            price = getattr(q, name)
            if price is None:
                continue
            size = getattr(q, _SIZE_OF[name])
            price_tick, size_tick = ids[name]
            if sent.get(name) != price:
                attr = _CAN_AUTO_EXECUTE if name != "last" else 0
                send(messages.tick_price(req_id, price_tick, price, size, attr))
                sent[name] = price
                sent[_SIZE_OF[name]] = size
                if name == "last":
                    send(messages.tick_string(req_id, ids["last_time"], str(int(q.time.timestamp()))))
            elif sent.get(_SIZE_OF[name]) != size:
                send(messages.tick_size(req_id, size_tick, size))
                sent[_SIZE_OF[name]] = size
        for name in ("high", "low", "close", "open"):
            value = getattr(q, name)
            if value is not None and sent.get(name) != value:
                send(messages.tick_price(req_id, ids[name], value, 0, 0))
                sent[name] = value
        if q.volume is not None and sent.get("volume") != q.volume:
            send(messages.tick_size(req_id, ids["volume"], q.volume))
            sent["volume"] = q.volume

    def _send_tbt(self, sub: TickByTick, q: "Quote") -> None:
        t = int(q.time.timestamp())
        state: tuple
        if sub.kind in ("Last", "AllLast"):
            state = (q.last, q.last_size, q.volume)
            if state != sub.sent and q.last is not None:
                sub.conn.send(messages.tick_by_tick_last(sub.req_id, TICK_BY_TICK_TYPES[sub.kind], t,
                                                         q.last, q.last_size or 0, 0,
                                                         sub.inst.contract.exchange, ""))
        elif sub.kind == "BidAsk":
            state = (q.bid, q.ask, q.bid_size, q.ask_size)
            if state != sub.sent:
                sub.conn.send(messages.tick_by_tick_bid_ask(sub.req_id, t, q.bid, q.ask, q.bid_size,
                                                            q.ask_size, 0))
        else:
            state = (q.mid,)
            if state != sub.sent:
                sub.conn.send(messages.tick_by_tick_mid_point(sub.req_id, t, q.mid))
        sub.sent = state
