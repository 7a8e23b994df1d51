"""Market data at the paper gateway: reqMktData (streaming and snapshot, generic ticks), market data
types, delayed data, tick-by-tick, and the streaming loop that sends quote changes, real-time bars and
market depth (``realtime_bars.py``, ``depth.py``) and drives order fills.

A subscription remembers the last value it sent per tick type and sends only changes, the way TWS
does. Generic ticks (``generic_ticks.py``) ride on the same line. Delayed data (types 3 and 4) is the
same replay seen 15 minutes late, with IB's delayed tick types 66-76 and the 10167 notice before it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ...protocol import errors
from ...protocol.ticks import DELAYED_TICKS, DELAYED_TYPES, LIVE, LIVE_TICKS, MARKET_DATA_TYPES, TICK_BY_TICK_TYPES
from ..codec import messages, requests
from ..market.option_quotes import OptionQuote, black_scholes, carry_of, implied_vol, option_quote, years_to_expiry
from ..market.option_trades import OptionTape, open_interest
from ..market.options import is_option_query
from .depth import DepthService
from .generic_ticks import SNAPSHOT_REFUSAL, GenericTicks, OptionGenericTicks, parse, refusal
from .realtime_bars import RealTimeBarsService

if TYPE_CHECKING:  # pragma: no cover
    from ibapi.contract import Contract, ContractDetails

    from ..market.market import Instrument, Market, Quote
    from .connection import ClientConnection
    from .firehose import Firehose

    Resolve = Callable[[ClientConnection, int, Contract], "Instrument | None"]

log = logging.getLogger(__name__)

DELAY = timedelta(minutes=15)

_SIZE_OF = {"bid": "bid_size", "ask": "ask_size", "last": "last_size"}
_CAN_AUTO_EXECUTE = 1
MAX_TBT_CATCH_UP = 300   # tick-by-tick: after a clock jump, the ticks of at most this many seconds
MAX_TBT_HISTORY = 1000   # IB's cap on numberOfTicks


@dataclass
class Subscription:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    delayed: bool
    sent: dict = field(default_factory=dict)   # field name -> last value sent
    generic: GenericTicks | None = None        # the generic ticks the line asked for


@dataclass
class OptionLine:
    """A reqMktData line on a listed option: its details and underlying; quotes from option_quotes.py,
    trades from option_trades.py (``tape``), generic ticks from generic_ticks.py."""

    conn: "ClientConnection"
    req_id: int
    details: "ContractDetails"
    underlying: "Instrument"
    tape: OptionTape
    delayed: bool = False
    generic: OptionGenericTicks | None = None
    sent: dict = field(default_factory=dict)


@dataclass
class TickByTick:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    kind: str                                  # Last, AllLast, BidAsk, MidPoint
    ignore_size: bool = False                  # BidAsk: a change of size alone is not a tick
    sent: tuple = ()
    second: int | None = None                  # the replay second last looked at


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
        self.option_lines: dict[tuple[int, int], OptionLine] = {}
        self.pumps = 0
        self.firehose: Firehose | None = None   # a running one replaces the quote stream (benchmarks)
        self.firehose_lines: dict = {}  # its encoded frames per line, kept between runs
        self.depth = DepthService(resolve, market.quote, lambda: int(market.epoch()))
        self.realtime_bars = RealTimeBarsService(market, resolve)

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
        return (sum(1 for s in self.subs.values() if s.conn is conn)
                + sum(1 for s in self.option_lines.values() if s.conn is conn))

    def req_mkt_data(self, conn, fields) -> None:
        req = requests.req_mkt_data(fields)
        key = (id(conn), req.req_id)
        if key in self.subs or key in self.option_lines:
            conn.send_duplicate_id(req.req_id)
            return
        if is_option_query(req.contract):
            self._req_option_data(conn, req, key)
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        generic = parse(req.generic_tick_list, inst.sec_type)
        if generic is None:
            conn.send_error(req.req_id, errors.VALIDATION_ERROR, refusal(req.generic_tick_list, inst.sec_type))
            return
        if generic and (req.snapshot or req.regulatory_snapshot):
            conn.send_error(req.req_id, errors.VALIDATION_ERROR, SNAPSHOT_REFUSAL)
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
        sub = Subscription(conn, req.req_id, inst, delayed,
                           generic=GenericTicks(self.market, inst, generic) if generic else None)
        now = self.market.now()
        self._send_changes(sub, self.market.quote(inst, now - DELAY if delayed else now))
        if req.snapshot or req.regulatory_snapshot:
            conn.send(messages.tick_snapshot_end(req.req_id))
        else:
            self.subs[key] = sub

    def _req_option_data(self, conn, req, key) -> None:
        """reqMktData on a listed option: bid/ask (sizes); the last trade, its size and time, and the
        day's volume from the option's trade process; tickOptionComputation for the bid (10), the ask
        (11), the last trade (12, once the option has traded) and the model (13), priced from the
        underlying's mid. Delayed types (3, 4): the 10167 notice, the same market 15 minutes late with
        IB's delayed ids (66-76 prices and sizes, 80-83 computations). Generic ticks 100, 101, 104,
        106: ``OptionGenericTicks``."""
        found = self.market.options.lookup(req.contract)
        if len(found) != 1:
            text = ("No security definition has been found for the request" if not found else
                    f"The contract description specified for {req.contract.symbol} is ambiguous.")
            conn.send_error(req.req_id, errors.NO_SECURITY_DEFINITION, text)
            return
        details = found[0]
        sec_type = details.contract.secType
        generic = parse(req.generic_tick_list, sec_type)
        if generic is None:
            conn.send_error(req.req_id, errors.VALIDATION_ERROR, refusal(req.generic_tick_list, sec_type))
            return
        if generic and (req.snapshot or req.regulatory_snapshot):
            conn.send_error(req.req_id, errors.VALIDATION_ERROR, SNAPSHOT_REFUSAL)
            return
        if not req.snapshot and self.lines_in_use(conn) >= self.max_lines:
            conn.send_error(req.req_id, errors.MAX_TICKERS, "Max number of tickers has been reached")
            return
        underlying = self.market.by_con_id(details.underConId)
        oc = self.market.options.class_of(details.contract.conId)
        assert underlying is not None and oc is not None    # every option class is built on a universe instrument
        delayed = conn.market_data_type in DELAYED_TYPES
        line = OptionLine(conn, req.req_id, details, underlying, self._tape(details, underlying, oc.reference), delayed)
        if generic:
            oi = open_interest(self.market.seed, details.contract.conId, details.contract.symbol,
                               details.contract.strike, oc.reference)
            line.generic = OptionGenericTicks(generic, details.contract.right, oi,
                                              GenericTicks(self.market, underlying, set()))
        conn.send(messages.tick_req_params(req.req_id, details.minTick, "9c0001", 3))
        if delayed:
            conn.send_error(req.req_id, errors.DELAYED_DATA_NOTICE, "Requested market data is not subscribed. "
                                                                    "Displaying delayed market data.")
        conn.send(messages.market_data_type(req.req_id, conn.market_data_type if delayed else LIVE))
        now = self.market.now()
        when = now - DELAY if delayed else now
        self._send_option(line, self.market.quote(underlying, when), when)
        if req.snapshot or req.regulatory_snapshot:
            conn.send(messages.tick_snapshot_end(req.req_id))
        else:
            self.option_lines[key] = line

    def _tape(self, details, underlying, reference: float) -> OptionTape:
        tz, cal = underlying.tz, self.market.calendar

        def day_start(epoch: float) -> int:
            local = datetime.fromtimestamp(epoch, tz)
            return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())

        mask = (lambda seconds: cal.open_mask(underlying, seconds)) if cal is not None else None
        return OptionTape(self.market.seed, details, reference, day_start, mask)

    def _send_option(self, line: OptionLine, und: "Quote", when: datetime) -> None:
        """Send what changed on an option line, its market at ``when`` (now, or 15 minutes ago). The
        model is re-run when the underlying's price, the replay second or the tape changed: within one
        second T moves too little to matter, and a fast stream interval would repeat the work."""
        details = line.details
        tape = line.tape
        traded = tape.advance(when.timestamp())
        key = (und.mid, int(when.timestamp()))
        if not traded and line.sent.get("model_key") == key:
            return
        line.sent["model_key"] = key
        q = option_quote(details, und.mid, when)
        sent, send, req_id = line.sent, line.conn.send, line.req_id
        ids = DELAYED_TICKS if line.delayed else LIVE_TICKS
        for name, price, size in (("bid", q.bid, q.bid_size), ("ask", q.ask, q.ask_size)):
            if sent.get(name) != (price, size):
                send(messages.tick_price(req_id, ids[name][0], price, size, _CAN_AUTO_EXECUTE))
                sent[name] = (price, size)
        if tape.last is not None:
            last = tape.last
            if sent.get("last") != last:
                send(messages.tick_price(req_id, ids["last"][0], self._trade_price(line, last.time, last.at_ask),
                                         last.size, 0))
                send(messages.tick_string(req_id, ids["last_time"], str(last.time)))
                sent["last"] = last
        if sent.get("volume") != tape.volume:
            send(messages.tick_size(req_id, ids["volume"], tape.volume))
            sent["volume"] = tape.volume
        greeks = (q.delta, q.gamma, q.vega, q.theta)
        rows = [(10, q.bid_vol, q.bid, greeks), (11, q.ask_vol, q.ask, greeks), (13, q.vol, q.model, greeks)]
        if tape.last is not None:
            rows.insert(2, (12, *self._last_computation(line, q, when)))
        for tick_type, vol, price, (delta, gamma, vega, theta) in rows:
            tick_type = tick_type + 70 if line.delayed else tick_type       # 10-13 -> 80-83
            values = (vol, delta, price, q.pv_dividend, gamma, vega, theta, q.und_price)
            if sent.get(tick_type) != values:
                send(messages.tick_option_computation(req_id, tick_type, None if vol < 0 else vol, delta, price,
                                                      q.pv_dividend, gamma, vega, theta, q.und_price))
                sent[tick_type] = values
        if line.generic is not None:
            line.generic.send(send, req_id, sent, volume=tape.volume, model_vol=q.vol, und_quote=und)

    def _trade_price(self, line: OptionLine, epoch: int, at_ask: bool) -> float:
        """The price of a trade at ``epoch``: the option's ask or bid then (the ask when the bid is 0);
        the last one is remembered on the line, since a trade's price never changes."""
        known = line.sent.get("trade_price")
        if known is None or known[0] != epoch:
            when = datetime.fromtimestamp(epoch, UTC)
            q = option_quote(line.details, self.market.quote(line.underlying, when).mid, when)
            known = line.sent["trade_price"] = (epoch, q.ask if at_ask or q.bid <= 0 else q.bid)
        return known[1]

    def _last_computation(self, line: OptionLine, q: OptionQuote, when: datetime):
        """Tick 12: the implied vol of the last trade's price at the current underlying price, with
        the greeks at that vol (the model's when no vol reaches the price)."""
        c, last = line.details.contract, line.tape.last
        assert last is not None
        price = self._trade_price(line, last.time, last.at_ask)
        t = years_to_expiry(line.details, when)
        r, div = carry_of(line.details)
        vol = implied_vol(c.right, price, q.und_price, c.strike, t, r, div)
        if vol < 0:
            return -1.0, price, (q.delta, q.gamma, q.vega, q.theta)
        _, delta, gamma, vega, theta = black_scholes(c.right, q.und_price, c.strike, t, vol, r, div)
        return vol, price, (delta, gamma, vega, theta)

    def cancel_mkt_data(self, conn, fields) -> None:
        fields.next_int("version")
        req_id = fields.next_int("reqId")
        if self.option_lines.pop((id(conn), req_id), None) is not None:
            return
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
        # IB: tick-by-tick for indexes only from CME (the paper SPX is CBOE); FX has no trades.
        name = inst.contract.localSymbol or inst.symbol
        if not inst.has_quotes:
            conn.send_error(req.req_id, errors.TICK_BY_TICK_FAILED, f"Failed to request tick-by-tick data:"
                                                                    f"No tick-by-tick data for {name}")
            return
        if kind in ("Last", "AllLast") and not inst.has_trades:
            conn.send_error(req.req_id, errors.TICK_BY_TICK_FAILED, f"Failed to request tick-by-tick data:"
                                                                    f"No {kind} data for {name}")
            return
        sub = TickByTick(conn, req.req_id, inst, kind, ignore_size=req.ignore_size)
        q = self.market.quote(inst)
        if req.number_of_ticks > 0:
            self._send_tbt_history(sub, q, min(req.number_of_ticks, MAX_TBT_HISTORY))
        self._send_tbt(sub, q)
        self.tbt[(id(conn), req.req_id)] = sub

    def cancel_tick_by_tick(self, conn, fields) -> None:
        req_id = fields.next_int("reqId")
        self.tbt.pop((id(conn), req_id), None)

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]
        for key in [k for k, s in self.tbt.items() if s.conn is conn]:
            del self.tbt[key]
        for key in [k for k, s in self.option_lines.items() if s.conn is conn]:
            del self.option_lines[key]
        self.depth.drop_connection(conn)
        self.realtime_bars.drop_connection(conn)

    def drop_all_subscriptions(self) -> None:
        self.subs.clear()
        self.option_lines.clear()
        self.tbt.clear()
        self.depth.drop_all()
        self.realtime_bars.drop_all()

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
        for inst in self.depth.instruments():
            live[inst.con_id] = inst
        for line in self.option_lines.values():
            (delayed if line.delayed else live)[line.underlying.con_id] = line.underlying
        quotes: dict[int, Quote] = {}
        if live:
            quotes = dict(zip(live, market.quotes(list(live.values()), now)))
        late = dict(zip(delayed, market.quotes(list(delayed.values()), now - DELAY))) if delayed else {}
        if self.firehose is None:
            for sub in list(self.subs.values()):
                self._send_changes(sub, late[sub.inst.con_id] if sub.delayed else quotes[sub.inst.con_id])
            for line in list(self.option_lines.values()):
                if line.delayed:
                    self._send_option(line, late[line.underlying.con_id], now - DELAY)
                else:
                    self._send_option(line, quotes[line.underlying.con_id], now)
        for tbt in list(self.tbt.values()):
            self._send_tbt(tbt, quotes[tbt.inst.con_id])
        self.depth.pump(quotes, int(now.timestamp()))
        self.realtime_bars.pump(now.timestamp())
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
        if sub.generic is not None:
            sub.generic.send(send, req_id, q, sent)

    def _send_tbt(self, sub: TickByTick, q: "Quote") -> None:
        """The ticks since the last step: every generated second the clock passed (at most
        MAX_TBT_CATCH_UP after a jump), so a trade each second for Last/AllLast and every quote change
        for BidAsk/MidPoint, with the second's own time."""
        second = int(q.time.timestamp())
        if sub.second is None or second <= sub.second:
            if sub.second is None:
                self._tbt_tick(sub, second, q.bid, q.ask, q.bid_size, q.ask_size, q.last, q.last_size)
            sub.second = second
            return
        first = max(sub.second + 1, second - MAX_TBT_CATCH_UP + 1)
        for row in self._tick_rows(sub.inst, first, second + 1):
            self._tbt_tick(sub, *row)
        sub.second = second

    def _tick_rows(self, inst: "Instrument", first: int, end: int) -> list[tuple]:
        """(second, bid, ask, bid size, ask size, last, last size) of each generated second in
        [first, end), None where the instrument has no such value."""
        path = self.market.tick_path(inst, datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(end, UTC))
        cols = [path[c].tolist() for c in ("bid", "ask", "bid_size", "ask_size", "last", "last_size")]
        return [(first + i, *(None if isinstance(v, float) and math.isnan(v) else v for v in values))
                for i, values in enumerate(zip(*cols))]

    def _tbt_tick(self, sub: TickByTick, t: int, bid, ask, bid_size, ask_size, last, last_size) -> None:
        send, req_id = sub.conn.send, sub.req_id
        if sub.kind in ("Last", "AllLast"):
            if last is None or (sub.sent and not last_size):      # a second without a trade
                return
            send(messages.tick_by_tick_last(req_id, TICK_BY_TICK_TYPES[sub.kind], t, last, last_size or 0, 0,
                                            _venue(sub.inst), ""))
            sub.sent = (t,)
        elif sub.kind == "BidAsk":
            state = (bid, ask) if sub.ignore_size else (bid, ask, bid_size, ask_size)
            if state != sub.sent:
                send(messages.tick_by_tick_bid_ask(req_id, t, bid, ask, bid_size, ask_size, 0))
                sub.sent = state
        else:
            mid = round((bid + ask) / 2, 10) if bid is not None and ask is not None else last
            if (mid,) != sub.sent:
                send(messages.tick_by_tick_mid_point(req_id, t, mid))
                sub.sent = (mid,)

    def _send_tbt_history(self, sub: TickByTick, q: "Quote", count: int) -> None:
        """numberOfTicks: the last ``count`` ticks before now, as IB sends them first: one
        HISTORICAL_TICKS_LAST / _BID_ASK / HISTORICAL_TICKS message with done=True."""
        second = int(q.time.timestamp())
        rows = self._tick_rows(sub.inst, second - count, second)
        ticks: list[tuple] = []
        for t, bid, ask, bid_size, ask_size, last, last_size in rows:
            if sub.kind in ("Last", "AllLast"):
                if last is not None and last_size:
                    ticks.append((t, 0, last, last_size, _venue(sub.inst), ""))
            elif sub.kind == "BidAsk":
                ticks.append((t, 0, bid, ask, bid_size, ask_size))
            else:
                ticks.append((t, round((bid + ask) / 2, 10), 0))   # time, price, size
        ticks = ticks[-count:]
        if sub.kind in ("Last", "AllLast"):
            sub.conn.send(messages.historical_ticks_last(sub.req_id, ticks, True))
        elif sub.kind == "BidAsk":
            sub.conn.send(messages.historical_ticks_bid_ask(sub.req_id, ticks, True))
        else:
            sub.conn.send(messages.historical_ticks(sub.req_id, ticks, True))


def _venue(inst: "Instrument") -> str:
    """The exchange a trade prints on: the primary exchange (NASDAQ, ARCA), else the contract's."""
    return inst.contract.primaryExchange or inst.contract.exchange
