"""The paper gateway's broker on its own: order engine, commissions and accounts, driven directly
(no sockets). Quotes come from a tiny in-file market with the same shapes as addin/paper/market/market.py
(Instrument, Quote), whose prices the tests set by hand; the IB side is ibapi's own data classes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ibapi.commission_and_fees_report import CommissionAndFeesReport
from ibapi.const import UNSET_DOUBLE
from ibapi.contract import Contract, ContractDetails
from ibapi.execution import ExecutionFilter
from ibapi.order import Order

from addin.paper.market import accounts as acc
from addin.paper.market.broker import (
    AccountChanged,
    Broker,
    CommissionEvent,
    ErrorEvent,
    ExecutionEvent,
    OpenOrderEvent,
    OrderStatusEvent,
    on_tick_grid,
    parse_filter_time,
    round_to_tick,
)
from addin.paper.market.commissions import commission

ACCOUNT = "DU1234567"
STOCK_TYPES = "ACTIVETIM,ADJUST,ALERT,ALLOC,DAY,FOK,GTC,IOC,LIT,LMT,LOC,MIT,MKT,MOC,OCA,STP,STPLMT,TRAIL,WHATIF"
# From the real EUR.USD contract details capture: no FOK, no MOC/LOC.
FX_TYPES = ("ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
            "DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,REL,RELPCTOFS,SCALE,SCALERST,STP,"
            "STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF")


# --- a tiny market with the shapes of addin/paper/market/market.py --------------------------------
@dataclass(frozen=True)
class Quote:
    time: datetime
    bid: float | None
    ask: float | None
    last: float | None
    bid_size: Decimal = Decimal(100)
    ask_size: Decimal = Decimal(100)
    last_size: Decimal = Decimal(100)
    volume: Decimal = Decimal(0)
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None

    @property
    def mid(self) -> float | None:
        return None if self.bid is None or self.ask is None else (self.bid + self.ask) / 2


@dataclass
class Instrument:
    details: ContractDetails
    contract: Contract
    con_id: int
    min_tick: float
    multiplier: float = 1.0
    has_quotes: bool = True
    has_trades: bool = True


def instrument(con_id, symbol, sec_type, exchange, tick, order_types=STOCK_TYPES, multiplier=1.0,
               has_quotes=True, has_trades=True, **extra) -> Instrument:
    c = Contract()
    c.conId, c.symbol, c.secType, c.exchange, c.currency = con_id, symbol, sec_type, exchange, "USD"
    c.localSymbol = extra.pop("localSymbol", symbol)
    for k, v in extra.items():
        setattr(c, k, v)
    if multiplier != 1.0:
        c.multiplier = str(int(multiplier))
    d = ContractDetails()
    d.contract, d.minTick, d.orderTypes, d.validExchanges = c, tick, order_types, exchange
    return Instrument(d, c, con_id, tick, multiplier, has_quotes, has_trades)


AAPL = instrument(265598, "AAPL", "STK", "SMART", 0.01, primaryExchange="NASDAQ")
MSFT = instrument(272093, "MSFT", "STK", "SMART", 0.01, primaryExchange="NASDAQ")
ES = instrument(495512563, "ES", "FUT", "CME", 0.25, multiplier=50.0, lastTradeDateOrContractMonth="20261218",
                localSymbol="ESZ6")
EURUSD = instrument(12087792, "EUR", "CASH", "IDEALPRO", 0.00005, FX_TYPES, has_trades=False,
                    localSymbol="EUR.USD")
BTC = instrument(479624278, "BTC", "CRYPTO", "PAXOS", 0.01, "DAY,IOC,GTC,LMT,MKT,STP,STPLMT,TRAIL")
SPX = instrument(416904, "SPX", "IND", "CBOE", 0.01, "", has_quotes=False)
NOBOOK = instrument(900001, "XYZ", "STK", "SMART", 0.01, has_quotes=False)   # trades only, no bid/ask
ALL = (AAPL, MSFT, ES, EURUSD, BTC, SPX, NOBOOK)


@dataclass
class TinyMarket:
    """Quotes set by hand; the clock moves only when a test says so."""

    t: datetime = datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    quotes: dict = field(default_factory=dict)

    def __post_init__(self):
        self.set(AAPL, 99.99, 100.01, 100.00)
        self.set(MSFT, 399.98, 400.02, 400.00)
        self.set(ES, 5000.00, 5000.25, 5000.25)
        self.set(EURUSD, 1.08730, 1.08735, None)
        self.set(BTC, 60000.00, 60010.00, 60005.00)
        self.set(SPX, None, None, 5100.00)
        self.set(NOBOOK, None, None, 20.00)

    def set(self, inst, bid=None, ask=None, last=None):
        self.quotes[inst.con_id] = Quote(self.t, bid, ask, last)

    def quote(self, inst) -> Quote:
        return self.quotes[inst.con_id]

    def now(self) -> datetime:
        return self.t


@pytest.fixture
def market():
    return TinyMarket()


@pytest.fixture
def broker(market):
    return Broker([ACCOUNT, "DU7654321"], quote=market.quote, now=market.now)


def contract_of(inst) -> Contract:
    """What a client sends: symbol, secType, exchange, currency (the server resolves it to ``inst``)."""
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = (inst.contract.symbol, inst.contract.secType,
                                                   inst.contract.exchange, "USD")
    return c


def make_order(action, qty, order_type="MKT", lmt=None, aux=None, tif="DAY", **extra) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, Decimal(str(qty)), order_type, tif
    if lmt is not None:
        o.lmtPrice = lmt
    if aux is not None:
        o.auxPrice = aux
    for k, v in extra.items():
        setattr(o, k, v)
    return o


class Client:
    """Places orders with increasing ids for one clientId and keeps every event it got."""

    def __init__(self, broker: Broker, client_id: int = 1):
        self.broker, self.client_id, self.next_id, self.events = broker, client_id, 1, []

    def place(self, inst, order, order_id=None):
        oid = order_id if order_id is not None else self.next_id
        self.next_id = max(self.next_id, oid + 1)
        ev = self.broker.place(self.client_id, oid, inst, contract_of(inst), order)
        self.events += ev
        return oid, ev

    def cancel(self, oid):
        ev = self.broker.cancel(self.client_id, oid)
        self.events += ev
        return ev


def kinds(events) -> list[str]:
    """Events as short names: 'open:Submitted', 'status:Filled', 'exec', 'commission', 'account', 'error:202'."""
    out = []
    for e in events:
        if isinstance(e, OpenOrderEvent):
            out.append(f"open:{e.state.status}")
        elif isinstance(e, OrderStatusEvent):
            out.append(f"status:{e.status}")
        elif isinstance(e, ExecutionEvent):
            out.append("exec")
        elif isinstance(e, CommissionEvent):
            out.append("commission")
        elif isinstance(e, AccountChanged):
            out.append("account")
        elif isinstance(e, ErrorEvent):
            out.append(f"error:{e.code}")
    return out


def of(events, oid, kind=None):
    """Events of order ``oid`` (optionally one type)."""
    return [e for e in events if getattr(e, "order_id", getattr(e, "req_id", None)) == oid
            and (kind is None or isinstance(e, kind))]


def last_status(events, oid) -> str:
    return of(events, oid, OrderStatusEvent)[-1].status


def errors(events, code=None):
    return [e for e in events if isinstance(e, ErrorEvent) and (code is None or e.code == code)]


FILLED_NOW = ["open:Submitted", "status:Submitted", "exec", "open:Filled", "status:Filled", "commission", "account"]


# === fills at the touch and the event order ======================================================
def test_market_buy_fills_at_the_ask_in_real_gateway_event_order(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 10, orderRef="row-7"))
    assert kinds(ev) == FILLED_NOW
    ex = of(ev, oid, ExecutionEvent)[0].execution
    assert ex.price == 100.01 and ex.side == "BOT" and ex.shares == Decimal(10) and ex.orderRef == "row-7"
    assert ex.acctNumber == ACCOUNT and ex.clientId == 1 and ex.orderId == oid and ex.cumQty == Decimal(10)
    assert ex.exchange == "NASDAQ"            # SMART is reported as the venue
    assert re.fullmatch(r"[0-9a-f]{8}\.[0-9a-f]{8}\.01\.01", ex.execId)
    assert ex.time == "20240315 14:30:00 UTC"
    assert all(e.order.orderRef == "row-7" for e in of(ev, oid, OpenOrderEvent))
    report = ev[5].report
    assert isinstance(report, CommissionAndFeesReport) and report.execId == ex.execId
    assert report.commissionAndFees == pytest.approx(1.0) and report.currency == "USD"
    assert report.realizedPNL == UNSET_DOUBLE and report.yield_ == UNSET_DOUBLE   # an opening fill
    st_filled = of(ev, oid, OrderStatusEvent)[-1]
    assert (st_filled.filled, st_filled.remaining, st_filled.avg_fill_price, st_filled.last_fill_price) == \
        (Decimal(10), Decimal(0), 100.01, 100.01)
    filled_open = of(ev, oid, OpenOrderEvent)[-1]
    assert filled_open.state.commissionAndFees == pytest.approx(1.0)
    assert filled_open.contract.conId == AAPL.con_id and filled_open.contract.exchange == "SMART"
    assert ev[-1] == AccountChanged(ACCOUNT, AAPL.con_id)


def test_market_sell_fills_at_the_bid_and_instruments_without_a_book_use_last(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("SELL", 5))
    assert of(ev, oid, ExecutionEvent)[0].execution.price == 99.99
    oid, ev = c.place(NOBOOK, make_order("BUY", 5))
    assert of(ev, oid, ExecutionEvent)[0].execution.price == 20.00


def test_perm_ids_unique_and_increasing(broker):
    c = Client(broker)
    perms = [of(c.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.0))[1], i + 1, OrderStatusEvent)[0].perm_id
             for i in range(5)]
    assert perms == sorted(set(perms)) and len(perms) == 5


def test_marketable_limit_fills_at_the_touch_not_the_limit(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 3, "LMT", lmt=101.00))
    assert kinds(ev) == FILLED_NOW and of(ev, oid, ExecutionEvent)[0].execution.price == 100.01
    oid, ev = c.place(AAPL, make_order("SELL", 3, "LMT", lmt=99.00))
    assert of(ev, oid, ExecutionEvent)[0].execution.price == 99.99


def test_resting_limit_submits_then_fills_when_the_market_comes(broker, market):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 4, "LMT", lmt=99.50, tif="GTC"))
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    assert broker.on_market() == []
    market.set(AAPL, 99.40, 99.50, 99.45)
    ev = broker.on_market([MSFT.con_id])            # another instrument: nothing to do
    assert ev == []
    ev = broker.on_market([AAPL.con_id])
    assert kinds(ev) == ["exec", "open:Filled", "status:Filled", "commission", "account"]
    ex = ev[0].execution
    assert ex.price == 99.50 and ex.lastLiquidity == 1   # a resting order added liquidity
    assert broker.on_market() == []


def test_resting_sell_limit_fills_at_the_bid_not_worse_than_the_limit(broker, market):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("SELL", 2, "LMT", lmt=100.50))
    market.set(AAPL, 100.60, 100.62, 100.61)
    ev = broker.on_market()
    assert ev[0].execution.price == 100.60 >= 100.50


# === stops and trailing stops =====================================================================
def test_buy_stop_triggers_on_last_then_trades_as_market(broker, market):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 1, "STP", aux=101.00))
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    market.set(AAPL, 100.90, 101.10, 100.95)        # ask above the stop, last not yet: no trigger
    assert broker.on_market() == []
    market.set(AAPL, 101.00, 101.02, 101.00)
    ev = broker.on_market()
    assert of(ev, oid, ExecutionEvent)[0].execution.price == 101.02


def test_sell_stop_that_is_already_through_fills_at_once(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("SELL", 1, "STP", aux=100.50))  # last 100.00 <= 100.50
    assert kinds(ev) == FILLED_NOW and ev[2].execution.price == 99.99


def test_stop_limit_becomes_a_resting_limit_after_the_trigger(broker, market):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 1, "STP LMT", lmt=101.05, aux=101.00))
    market.set(AAPL, 101.00, 101.10, 101.00)        # triggered, but the ask is above the limit
    assert broker.on_market() == []
    market.set(AAPL, 100.98, 101.04, 101.00)
    ev = broker.on_market()
    assert ev[0].execution.price == 101.04 and ev[0].execution.lastLiquidity == 1


def test_fx_stops_watch_bid_and_ask(broker, market):
    c = Client(broker)
    buy, _ = c.place(EURUSD, make_order("BUY", 20000, "STP", aux=1.09000))
    sell, _ = c.place(EURUSD, make_order("SELL", 20000, "STP", aux=1.08500))
    market.set(EURUSD, 1.08995, 1.09000, None)
    ev = broker.on_market()
    assert [e.order_id for e in ev if isinstance(e, ExecutionEvent)] == [buy]
    market.set(EURUSD, 1.08500, 1.08505, None)
    ev = broker.on_market()
    assert of(ev, sell, ExecutionEvent)[0].execution.price == 1.085


def test_trailing_stop_by_amount_ratchets_and_triggers(broker, market):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("SELL", 1, "TRAIL", aux=2.00))
    assert of(ev, oid, OpenOrderEvent)[0].order.trailStopPrice == 98.00
    market.set(AAPL, 104.99, 105.01, 105.00)
    assert broker.on_market() == []
    open_trail = [o for _, o, _ in broker.open_orders(1) if o.orderId == oid][0]
    assert open_trail.trailStopPrice == 103.00        # moved up with the market
    market.set(AAPL, 103.50, 103.52, 103.50)
    assert broker.on_market() == []
    assert [o for _, o, _ in broker.open_orders(1)][0].trailStopPrice == 103.00   # never moves down
    market.set(AAPL, 102.98, 103.00, 103.00)
    ev = broker.on_market()
    assert of(ev, oid, ExecutionEvent)[0].execution.price == 102.98


def test_trailing_stop_by_percent_and_with_an_initial_stop(broker, market):
    c = Client(broker)
    pct, ev = c.place(AAPL, make_order("BUY", 1, "TRAIL", trailingPercent=10.0))
    assert of(ev, pct, OpenOrderEvent)[0].order.trailStopPrice == 110.00
    init, ev = c.place(AAPL, make_order("SELL", 1, "TRAIL", aux=5.00, trailStopPrice=99.00))
    assert of(ev, init, OpenOrderEvent)[0].order.trailStopPrice == 99.00
    market.set(AAPL, 98.98, 99.00, 99.00)
    ev = broker.on_market()
    assert [e.order_id for e in ev if isinstance(e, ExecutionEvent)] == [init]
    market.set(AAPL, 80.00, 80.02, 80.00)             # buy trail follows the market down: 88.00
    broker.on_market()
    market.set(AAPL, 88.00, 88.02, 88.00)
    ev = broker.on_market()
    assert of(ev, pct, ExecutionEvent)[0].execution.price == 88.02


# === closing auction ==============================================================================
def test_moc_and_loc_fill_only_in_the_closing_auction(broker, market):
    c = Client(broker)
    moc, ev = c.place(AAPL, make_order("BUY", 1, "MOC"))
    loc_ok, _ = c.place(AAPL, make_order("SELL", 1, "LOC", lmt=99.00))
    loc_no, _ = c.place(AAPL, make_order("BUY", 1, "LOC", lmt=90.00))
    other, _ = c.place(MSFT, make_order("BUY", 1, "MOC"))
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    assert broker.on_market() == []
    market.set(AAPL, 100.40, 100.60, 100.50)
    ev = broker.on_close(AAPL.con_id)
    assert {e.order_id: e.execution.price for e in ev if isinstance(e, ExecutionEvent)} == \
        {moc: 100.50, loc_ok: 100.50}
    assert last_status(ev, loc_no) == "Cancelled" and errors(ev, 202)[0].req_id == loc_no
    assert [o.orderId for _, o, _ in broker.open_orders(1)] == [other]


def test_auction_orders_take_day_only_with_ibs_113(broker):
    c = Client(broker)
    for tif in ("IOC", "GTC", "OPG"):
        _, ev = c.place(AAPL, make_order("BUY", 1, "MOC", tif=tif))
        assert ev == [ErrorEvent(1, ev[0].req_id, 113, "The Tif option should be set to DAY for MOC and LOC "
                                                       "orders.")], tif


# === time in force ================================================================================
@pytest.mark.parametrize("tif,lmt,final", [("IOC", 99.00, "Cancelled"), ("FOK", 99.00, "Cancelled"),
                                           ("IOC", 100.05, "Filled"), ("FOK", 100.05, "Filled"),
                                           ("GTC", 99.00, "Submitted"), ("DAY", 99.00, "Submitted"),
                                           ("", 100.05, "Filled")])
def test_time_in_force(broker, tif, lmt, final):
    oid, ev = Client(broker).place(AAPL, make_order("BUY", 2, "LMT", lmt=lmt, tif=tif))
    assert last_status(ev, oid) == final
    if final == "Cancelled":
        assert kinds(ev) == ["open:Submitted", "status:Submitted", "status:Cancelled", "open:Cancelled",
                             "error:202"]
        assert errors(ev, 202)[0].text.startswith("Order Canceled - reason:")
        assert broker.open_orders() == []


def test_tif_not_offered_by_the_contract_is_rejected(broker, market):
    day_only = instrument(900002, "DAYO", "STK", "SMART", 0.01, "LMT,MKT,DAY")
    market.set(day_only, 9.99, 10.01, 10.00)
    c = Client(broker)
    _, ev = c.place(day_only, make_order("BUY", 1, tif="GTC"))
    assert kinds(ev) == ["error:201"] and "GTC" in ev[0].text
    _, ev = c.place(day_only, make_order("BUY", 1, tif="DAY"))
    assert kinds(ev) == FILLED_NOW
    # IB's lists never name FOK or DTC (both accepted all the same); a GTD order needs its goodTillDate
    _, ev = c.place(EURUSD, make_order("BUY", 20000, tif="FOK"))
    assert kinds(ev) == FILLED_NOW
    _, ev = c.place(AAPL, make_order("BUY", 1, tif="DTC"))
    assert kinds(ev) == FILLED_NOW
    _, ev = c.place(EURUSD, make_order("BUY", 20000, tif="GTD"))
    assert kinds(ev) == ["error:201"] and "goodTillDate" in ev[0].text


# === brackets and OCA =============================================================================
def test_bracket_is_held_until_the_last_child_transmits(broker, market):
    c = Client(broker)
    pid, ev = c.place(AAPL, make_order("BUY", 4, "LMT", lmt=99.00, transmit=False))
    assert kinds(ev) == ["open:PreSubmitted", "status:PreSubmitted"]
    tp, ev = c.place(AAPL, make_order("SELL", 4, "LMT", lmt=110.00, parentId=pid, transmit=False))
    assert kinds(ev) == ["open:PreSubmitted", "status:PreSubmitted"]
    market.set(AAPL, 98.00, 98.02, 98.01)
    assert broker.on_market() == []                   # held: nothing trades
    sl, ev = c.place(AAPL, make_order("SELL", 4, "STP", aux=90.00, parentId=pid, transmit=True))
    # the parent is marketable now: it fills, then both children go live
    assert of(ev, pid, ExecutionEvent)[0].execution.price == 98.02
    assert last_status(ev, tp) == "Submitted" and last_status(ev, sl) == "Submitted"
    assert of(ev, sl, OpenOrderEvent)[0].order.parentPermId == of(ev, pid, OrderStatusEvent)[0].perm_id
    assert of(ev, sl, OrderStatusEvent)[0].parent_id == pid
    market.set(AAPL, 110.00, 110.02, 110.01)
    ev = broker.on_market()
    assert of(ev, tp, ExecutionEvent)[0].execution.price == 110.00
    assert last_status(ev, sl) == "Cancelled"         # the sibling goes
    assert broker.account(ACCOUNT).positions[AAPL.con_id].qty == 0


def test_bracket_children_wait_for_the_parent_and_die_with_it(broker, market):
    c = Client(broker)
    pid, _ = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=95.00, transmit=False))
    tp, _ = c.place(AAPL, make_order("SELL", 1, "LMT", lmt=99.00, parentId=pid, transmit=False))
    sl, ev = c.place(AAPL, make_order("SELL", 1, "STP", aux=90.00, parentId=pid))
    assert last_status(ev, pid) == "Submitted"
    assert last_status(ev, sl) == "PreSubmitted"      # waits for the parent (marketable or not)
    assert not of(ev, tp, OrderStatusEvent)            # already announced as PreSubmitted when held
    assert {o.orderId: s.status for _, o, s in broker.open_orders(1)} == \
        {pid: "Submitted", tp: "PreSubmitted", sl: "PreSubmitted"}
    ev = c.cancel(pid)
    assert [e.order_id for e in ev if isinstance(e, OrderStatusEvent)] == [pid, tp, sl]
    assert all(s.status == "Cancelled" for s in of(ev, tp, OrderStatusEvent) + of(ev, sl, OrderStatusEvent))
    assert len(errors(ev, 202)) == 3 and broker.open_orders() == []


def test_a_child_of_a_filled_parent_goes_live_at_once(broker):
    c = Client(broker)
    pid, _ = c.place(AAPL, make_order("BUY", 1))
    child, ev = c.place(AAPL, make_order("SELL", 1, "LMT", lmt=120.00, parentId=pid))
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    _, ev = c.place(AAPL, make_order("SELL", 1, "LMT", lmt=120.00, parentId=999))
    assert kinds(ev) == ["error:201"]


def test_oca_type_1_cancels_the_others_on_a_fill(broker, market):
    c = Client(broker)
    a, _ = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=99.00, ocaGroup="g1", ocaType=1))
    b, _ = c.place(MSFT, make_order("BUY", 1, "LMT", lmt=390.00, ocaGroup="g1", ocaType=1))
    other, _ = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=98.00, ocaGroup="g2", ocaType=1))
    market.set(AAPL, 98.98, 99.00, 99.00)
    ev = broker.on_market()
    assert kinds(ev) == ["exec", "open:Filled", "status:Filled", "commission", "account",
                         "status:Cancelled", "open:Cancelled", "error:202"]
    assert last_status(ev, b) == "Cancelled"
    assert [o.orderId for _, o, _ in broker.open_orders()] == [other]


@pytest.mark.parametrize("oca_type", [2, 3])
def test_oca_types_2_and_3_reduce_the_others(broker, market, oca_type):
    c = Client(broker)
    a, _ = c.place(AAPL, make_order("BUY", 30, "LMT", lmt=99.00, ocaGroup="r", ocaType=oca_type))
    b, _ = c.place(AAPL, make_order("BUY", 100, "LMT", lmt=98.00, ocaGroup="r", ocaType=oca_type))
    d, _ = c.place(AAPL, make_order("BUY", 20, "LMT", lmt=97.00, ocaGroup="r", ocaType=oca_type))
    market.set(AAPL, 98.98, 99.00, 99.00)
    ev = broker.on_market()
    reduced = of(ev, b, OrderStatusEvent)[-1]
    assert reduced.status == "Submitted" and reduced.remaining == Decimal(70)
    assert last_status(ev, d) == "Cancelled"


# === whatIf =======================================================================================
def test_what_if_answers_margin_and_commission_and_never_trades(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 100, whatIf=True))
    assert kinds(ev) == ["open:PreSubmitted"]
    state = ev[0].state
    assert float(state.initMarginBefore) == 0.0
    assert float(state.initMarginChange) == pytest.approx(100 * 100.00 * 0.5)    # Reg-T 50% of the value at the mark
    assert float(state.maintMarginAfter) == pytest.approx(100 * 100.00 * 0.25)
    assert float(state.equityWithLoanBefore) == pytest.approx(1_000_000)
    assert float(state.equityWithLoanChange) == pytest.approx(-1.0)
    assert float(state.equityWithLoanAfter) == pytest.approx(999_999.0)
    assert state.commissionAndFees == pytest.approx(1.0) and state.commissionAndFeesCurrency == "USD"
    assert ev[0].order.whatIf
    assert broker.open_orders() == [] and broker.completed_orders() == []
    assert broker.executions(1, ExecutionFilter()) == [] and broker.positions() == []
    assert broker.is_id_used(1, oid)
    _, ev = c.place(ES, make_order("SELL", 2, whatIf=True))
    assert float(ev[0].state.initMarginChange) == pytest.approx(2 * 24_000)
    assert ev[0].state.commissionAndFees == pytest.approx(1.70)


# === modify =======================================================================================
def test_modify_a_working_order(broker, market):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 5, "LMT", lmt=95.00, tif="GTC", orderRef="m"))
    perm = ev[1].perm_id
    _, ev = c.place(AAPL, make_order("BUY", 7, "LMT", lmt=96.00, tif="GTC", orderRef="m"), order_id=oid)
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    assert ev[0].order.lmtPrice == 96.00 and ev[0].order.totalQuantity == Decimal(7) and ev[1].perm_id == perm
    assert ev[1].remaining == Decimal(7)
    _, ev = c.place(AAPL, make_order("BUY", 7, "LMT", lmt=101.00, tif="GTC"), order_id=oid)  # now marketable
    assert kinds(ev) == FILLED_NOW
    _, ev = c.place(AAPL, make_order("BUY", 7, "LMT", lmt=101.00), order_id=oid)    # filled now: 104
    assert ev == [ErrorEvent(1, oid, 104, "Can't modify a filled order.")]


def test_modify_cannot_change_side_or_contract_and_bad_modify_keeps_the_order(broker):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 5, "LMT", lmt=95.00))
    _, ev = c.place(AAPL, make_order("SELL", 5, "LMT", lmt=95.00), order_id=oid)
    assert kinds(ev) == ["error:105"]
    _, ev = c.place(MSFT, make_order("BUY", 5, "LMT", lmt=95.00), order_id=oid)
    assert kinds(ev) == ["error:105"]
    _, ev = c.place(AAPL, make_order("BUY", 5, "LMT", lmt=95.001), order_id=oid)
    assert kinds(ev) == ["error:110"]
    assert [o.lmtPrice for _, o, _ in broker.open_orders(1)] == [95.00]


def test_held_order_is_transmitted_by_placing_it_again_with_transmit(broker):
    c = Client(broker)
    oid, ev = c.place(AAPL, make_order("BUY", 1, "MKT", transmit=False))
    assert kinds(ev) == ["open:PreSubmitted", "status:PreSubmitted"]
    _, ev = c.place(AAPL, make_order("BUY", 1, "MKT"), order_id=oid)
    assert kinds(ev) == FILLED_NOW


# === cancels and errors ===========================================================================
def test_cancel_sends_status_open_order_and_202(broker):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00))
    ev = c.cancel(oid)
    assert kinds(ev) == ["status:Cancelled", "open:Cancelled", "error:202"]
    assert ev[2] == ErrorEvent(1, oid, 202, "Order Canceled - reason:")
    perm = ev[0].perm_id
    ev = c.cancel(oid)
    assert ev == [ErrorEvent(1, oid, 161, "Cancel attempted when order is not in a cancellable state. "
                                          f"Order permId ={perm}")]
    assert c.cancel(4242) == [ErrorEvent(1, 4242, 10147, "OrderId 4242 that needs to be cancelled is not found.")]
    assert broker.cancel(2, oid) == [ErrorEvent(2, oid, 10147,   # another client's order is not found
                                                f"OrderId {oid} that needs to be cancelled is not found.")]


def test_cancel_of_a_filled_order_is_161(broker):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 1))
    assert kinds(c.cancel(oid)) == ["error:161"]


def test_global_cancel_cancels_every_client(broker):
    a, b = Client(broker, 1), Client(broker, 2)
    a.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00))
    b.place(MSFT, make_order("SELL", 1, "LMT", lmt=450.00))
    ev = broker.global_cancel()
    assert sorted((e.client_id, e.status) for e in ev if isinstance(e, OrderStatusEvent)) == \
        [(1, "Cancelled"), (2, "Cancelled")]
    assert len(errors(ev, 202)) == 2 and broker.open_orders() == []


def test_duplicate_order_ids_are_103(broker):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 0))               # rejected, but the id is used
    _, ev = c.place(AAPL, make_order("BUY", 1), order_id=oid)
    assert kinds(ev) == ["error:103"]
    _, ev = Client(broker, 2).place(AAPL, make_order("BUY", 1), order_id=oid)   # ids are per client
    assert kinds(ev) == FILLED_NOW
    assert broker.is_id_used(1, oid) and broker.max_order_id(1) == oid and broker.max_order_id(9) == 0


def test_prices_off_the_tick_grid_are_110(broker):
    c = Client(broker)
    text = "The price does not conform to the minimum price variation for this contract."
    for inst, order in [(AAPL, make_order("BUY", 1, "LMT", lmt=100.001)),
                        (AAPL, make_order("BUY", 1, "STP", aux=100.005)),
                        (AAPL, make_order("BUY", 1, "STP LMT", lmt=100.00, aux=100.015)),
                        (AAPL, make_order("SELL", 1, "TRAIL", aux=0.333)),
                        (ES, make_order("BUY", 1, "LMT", lmt=5000.10)),
                        (EURUSD, make_order("BUY", 20000, "LMT", lmt=1.08733))]:
        oid, ev = c.place(inst, order)
        assert ev == [ErrorEvent(1, oid, 110, text)], order.orderType
    for inst, order in [(ES, make_order("BUY", 1, "LMT", lmt=4999.75)),
                        (EURUSD, make_order("BUY", 20000, "LMT", lmt=1.08735)),
                        (AAPL, make_order("BUY", 1, "LMT", lmt=round(100.01 * 0.9, 2)))]:
        _, ev = c.place(inst, order)
        assert not errors(ev)


@pytest.mark.parametrize("inst,order,reason", [
    (AAPL, make_order("BUY", 0), "quantity"),
    (AAPL, make_order("BUY", -5), "quantity"),
    (AAPL, make_order("BUY", 1, "LMT"), "limit price is missing"),
    (AAPL, make_order("BUY", 1, "STP"), "stop price"),
    (AAPL, make_order("BUY", 1, "TRAIL"), "trailing amount"),
    (AAPL, make_order("HOLD", 1), "action"),
    (SPX, make_order("BUY", 1), "not tradable"),
    (AAPL, make_order("BUY", 1, account="DU0000000"), "DU0000000"),
])
def test_rejections_are_201_with_a_reason(broker, inst, order, reason):
    oid, ev = Client(broker).place(inst, order)
    assert len(ev) == 1 and ev[0].code == 201 and ev[0].req_id == oid
    assert ev[0].text.startswith("Order rejected - reason:") and reason in ev[0].text


@pytest.mark.parametrize("inst,order", [(AAPL, make_order("BUY", 1, "PEG MID")),   # not ours
                                        (BTC, make_order("BUY", 1, "MOC")),        # not in BTC's list
                                        (ES, make_order("BUY", 1, "REL"))])        # nor REL in ES's
def test_order_types_the_gateway_or_contract_does_not_take_are_387(inst, order):
    es = instrument(ES.con_id, "ES", "FUT", "CME", 0.25, "DAY,GTC,LMT,MKT,STP", multiplier=50.0)
    market = TinyMarket()
    market.quotes[es.con_id] = market.quotes[ES.con_id]
    oid, ev = Client(Broker([ACCOUNT], quote=market.quote, now=market.now)).place(es if inst is ES else inst, order)
    assert ev == [ErrorEvent(1, oid, 387, "Unsupported order type for this exchange and security type.")]


def test_more_than_20_active_orders_per_contract_side_account_is_201(broker):
    c = Client(broker)
    for _ in range(20):
        _, ev = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00))
        assert not errors(ev)
    _, ev = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00))
    assert kinds(ev) == ["error:201"] and "20" in ev[0].text
    other_side = make_order("SELL", 1, "LMT", lmt=110.00)
    other_account = make_order("BUY", 1, "LMT", lmt=90.00, account="DU7654321")
    for order in (other_side, other_account):
        assert not errors(c.place(AAPL, order)[1])
    assert not errors(c.place(MSFT, make_order("BUY", 1, "LMT", lmt=300.00))[1])


def test_reject_next_fault_rejects_one_order(broker):
    c = Client(broker)
    broker.reject_next("fault injected by test")
    oid, ev = c.place(AAPL, make_order("BUY", 1))
    assert ev == [ErrorEvent(1, oid, 201, "Order rejected - reason:fault injected by test")]
    assert kinds(c.place(AAPL, make_order("BUY", 1))[1]) == FILLED_NOW


def test_orders_beyond_the_margin_are_rejected_with_ibs_text(broker):
    _, ev = Client(broker).place(AAPL, make_order("BUY", 30_000))    # 3M USD of stock, 1.5M initial margin
    assert kinds(ev) == ["error:201"] and "YOUR ORDER IS NOT ACCEPTED" in ev[0].text


# === commissions ==================================================================================
@pytest.mark.parametrize("sec_type,qty,price,mult,expected", [
    ("STK", 10, 100.0, 1, 1.00),          # 0.05 -> minimum 1.00
    ("STK", 1000, 100.0, 1, 5.00),        # 0.005 per share
    ("STK", 100, 0.50, 1, 0.50),          # 1% of 50 USD caps below the minimum
    ("STK", 10_000, 0.20, 1, 20.00),      # 50.00 capped at 1% of 2,000
    ("FUT", 3, 5000.0, 50, 2.55),
    ("CASH", 20_000, 1.0873, 1, 2.00),    # 0.43 -> minimum 2.00
    ("CASH", 10_000_000, 1.1, 1, 220.0),  # 0.2 bps of 11M
    ("CRYPTO", 1, 60_000.0, 1, 108.0),    # 0.18%
    ("CRYPTO", 0.001, 60_000.0, 1, 1.75), # minimum
])
def test_commission_model(sec_type, qty, price, mult, expected):
    assert commission(sec_type, qty, price, mult) == pytest.approx(expected)


def test_commission_reports_follow_the_model(broker):
    c = Client(broker)
    fees = {}
    for inst, qty in ((ES, 2), (EURUSD, 20000), (BTC, Decimal("0.5")), (AAPL, 1000)):
        oid, ev = c.place(inst, make_order("BUY", qty))
        fees[inst.contract.symbol] = [e.report.commissionAndFees for e in ev if isinstance(e, CommissionEvent)][0]
    assert fees == pytest.approx({"ES": 1.70, "EUR": 2.00, "BTC": 0.5 * 60010.0 * 0.0018, "AAPL": 5.00})


# === positions, average cost, P&L =================================================================
def test_stock_avg_cost_includes_commission_and_realized_pnl_on_close(broker, market):
    c = Client(broker)
    c.place(AAPL, make_order("BUY", 100))
    [(account, contract, pos, avg)] = broker.positions()
    assert (account, contract.symbol, pos) == (ACCOUNT, "AAPL", Decimal(100))
    assert avg == pytest.approx(100.01 + 1.0 / 100)
    summary = dict((t, float(v)) for t, v, _ in broker.account_summary(ACCOUNT, {"TotalCashValue", "NetLiquidation"}))
    assert summary["TotalCashValue"] == pytest.approx(1_000_000 - 100 * 100.01 - 1.0)
    assert summary["NetLiquidation"] == pytest.approx(1_000_000 - 100 * 100.01 - 1.0 + 100 * 100.00)
    market.set(AAPL, 110.00, 110.02, 110.01)
    oid, ev = c.place(AAPL, make_order("SELL", 40))
    report = [e.report for e in ev if isinstance(e, CommissionEvent)][0]
    assert report.realizedPNL == pytest.approx(40 * 110.00 - 40 * (100.01 + 0.01) - 1.0)
    [(_, _, pos, avg2)] = broker.positions()
    assert pos == Decimal(60) and avg2 == pytest.approx(avg)       # average cost: unchanged by a sale
    daily, unrealized, realized = broker.pnl(ACCOUNT)
    assert realized == pytest.approx(report.realizedPNL)
    assert unrealized == pytest.approx(60 * 110.01 - 60 * avg)
    assert daily == pytest.approx(realized + unrealized)
    pos1, d1, u1, r1, value = broker.pnl_single(ACCOUNT, AAPL.con_id)
    assert (pos1, value) == (Decimal(60), pytest.approx(60 * 110.01)) and u1 == pytest.approx(unrealized)
    assert broker.pnl_single(ACCOUNT, MSFT.con_id) == (Decimal(0), 0.0, 0.0, 0.0, 0.0)
    c.place(AAPL, make_order("SELL", 60))
    assert broker.positions()[0][2] == 0                           # flat rows stay, so subscribers see 0


def test_average_cost_of_several_buys_and_a_short_round_trip(broker, market):
    c = Client(broker)
    c.place(MSFT, make_order("BUY", 100))                           # 400.02, commission 1.00
    market.set(MSFT, 409.98, 410.02, 410.00)
    c.place(MSFT, make_order("BUY", 300))                           # 410.02, commission 1.50
    [(_, _, pos, avg)] = broker.positions()
    assert pos == 400 and avg == pytest.approx((100 * 400.02 + 1.00 + 300 * 410.02 + 1.50) / 400)
    c.place(MSFT, make_order("SELL", 500))                          # close 400 at 409.98, open 100 short
    [(_, _, pos, avg)] = broker.positions()
    # a short's basis: the proceeds net of its share of the commission
    assert pos == -100 and avg == pytest.approx(409.98 - 2.50 / 500)
    market.set(MSFT, 399.98, 400.02, 400.00)
    _, ev = c.place(MSFT, make_order("BUY", 100))
    report = [e.report for e in ev if isinstance(e, CommissionEvent)][0]
    assert report.realizedPNL == pytest.approx(100 * (409.98 - 2.50 / 500) - 100 * 400.02 - 1.00)


def test_what_if_on_a_working_id_leaves_the_order_alone(broker):
    c = Client(broker)
    oid, _ = c.place(AAPL, make_order("BUY", 5, "LMT", lmt=95.00))
    _, ev = c.place(AAPL, make_order("BUY", 50, "LMT", lmt=95.00, whatIf=True), order_id=oid)
    assert kinds(ev) == ["open:PreSubmitted"] and float(ev[0].state.initMarginChange) > 0
    [(_, o, s)] = broker.open_orders(1)
    assert (o.totalQuantity, s.status) == (Decimal(5), "Submitted")


def test_futures_avg_cost_has_the_multiplier_and_cash_only_moves_by_pnl(broker, market):
    c = Client(broker)
    c.place(ES, make_order("BUY", 2))                              # at 5000.25
    [(_, _, pos, avg)] = broker.positions()
    assert avg == pytest.approx(5000.25 * 50 + 0.85)
    cash = float(dict((t, v) for t, v, _ in broker.account_summary(ACCOUNT, {"TotalCashValue"}))["TotalCashValue"])
    assert cash == pytest.approx(1_000_000 - 1.70)                  # no notional paid for a future
    market.set(ES, 5010.00, 5010.25, 5010.00)
    [row] = broker.portfolio(ACCOUNT)
    contract, qty, price, value, avg_cost, unrealized, realized = row
    assert (qty, price, value) == (Decimal(2), 5010.00, pytest.approx(2 * 5010.00 * 50))
    assert unrealized == pytest.approx(2 * 5010.00 * 50 - 2 * avg) and realized == 0.0
    _, ev = c.place(ES, make_order("SELL", 3))                      # close 2, open 1 short
    report = [e.report for e in ev if isinstance(e, CommissionEvent)][0]
    assert report.realizedPNL == pytest.approx(2 * 5010.00 * 50 - 2 * avg - 2 * 0.85)
    [(_, _, pos, avg)] = broker.positions()
    assert pos == Decimal(-1) and avg == pytest.approx(5010.00 * 50 - 0.85)


def test_fx_buy_moves_two_currencies(broker, market):
    c = Client(broker)
    c.place(EURUSD, make_order("BUY", 20000))                       # at the ask 1.08735
    values = {(k, cur): v for k, v, cur in broker.account_values(ACCOUNT)}
    assert float(values[("CashBalance", "EUR")]) == pytest.approx(20000)
    assert float(values[("CashBalance", "USD")]) == pytest.approx(1_000_000 - 20000 * 1.08735 - 2.0)
    mid = (1.08730 + 1.08735) / 2
    assert float(values[("ExchangeRate", "EUR")]) == pytest.approx(mid, abs=1e-6)
    assert float(values[("NetLiquidation", "USD")]) == pytest.approx(
        1_000_000 - 20000 * 1.08735 - 2.0 + 20000 * mid, abs=0.01)
    assert values[("Currency", "BASE")] == "BASE"


def test_account_values_and_summary_have_ibs_keys(broker):
    Client(broker).place(AAPL, make_order("BUY", 100))
    keys = {k for k, _, _ in broker.account_values(ACCOUNT)}
    assert {"NetLiquidation", "TotalCashValue", "CashBalance", "BuyingPower", "AvailableFunds", "ExcessLiquidity",
            "InitMarginReq", "MaintMarginReq", "EquityWithLoanValue", "GrossPositionValue", "UnrealizedPnL",
            "RealizedPnL", "AccountType", "Currency", "ExchangeRate"} <= keys
    all_tags = set(acc.SUMMARY_TAG_ORDER)
    rows = broker.account_summary(ACCOUNT, all_tags)
    assert [t for t, _, _ in rows] == acc.SUMMARY_TAG_ORDER
    v = {t: (val, cur) for t, val, cur in rows}
    assert v["AccountType"] == ("INDIVIDUAL", "") and v["NetLiquidation"][1] == "USD"
    assert float(v["InitMarginReq"][0]) == pytest.approx(100 * 100.00 * 0.5)
    assert float(v["GrossPositionValue"][0]) == pytest.approx(100 * 100.00)
    assert float(v["BuyingPower"][0]) == pytest.approx(4 * float(v["AvailableFunds"][0]), abs=0.05)
    ib_async_tags = {"RegTEquity", "RegTMargin", "DayTradesRemainingT+1", "NetLiquidation"}   # its spellings
    assert {t for t, _, _ in broker.account_summary(ACCOUNT, ib_async_tags)} == ib_async_tags
    ledger = broker.account_summary(ACCOUNT, {"$LEDGER:ALL"})
    assert ("Currency", "BASE", "BASE") in ledger and ("Currency", "USD", "USD") in ledger
    assert broker.account_values("DU0000000") == [] and broker.account_summary("DU0000000", all_tags) == []


def test_second_account_is_separate(broker):
    Client(broker).place(AAPL, make_order("BUY", 10, account="DU7654321"))
    assert [p[0] for p in broker.positions()] == ["DU7654321"]
    assert broker.portfolio(ACCOUNT) == [] and len(broker.portfolio("DU7654321")) == 1


ALL_TRADED = (AAPL, ES, EURUSD, BTC)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(ALL_TRADED))), st.sampled_from(["BUY", "SELL"]),
                          st.integers(1, 5), st.integers(-40, 40)), min_size=1, max_size=25))
def test_cash_plus_value_equals_start_plus_pnl(steps):
    """For any sequence of fills and price moves: NetLiquidation == start + realized + unrealized (IB's
    net figures), == start + gross realized + gross unrealized - commissions, and daily P&L agrees."""
    market = TinyMarket()
    broker = Broker([ACCOUNT], quote=market.quote, now=market.now)
    c = Client(broker)
    base = {AAPL.con_id: 100.0, ES.con_id: 5000.0, EURUSD.con_id: 1.08, BTC.con_id: 60000.0}
    lots = {AAPL.con_id: Decimal(10), ES.con_id: Decimal(1), EURUSD.con_id: Decimal(10000), BTC.con_id: Decimal("0.01")}
    for idx, side, n, move in steps:
        inst = ALL_TRADED[idx]
        mid = round_to_tick(base[inst.con_id] * (1 + move / 1000), inst.min_tick)
        spread = inst.min_tick * 2
        market.set(inst, round_to_tick(mid - spread, inst.min_tick), round_to_tick(mid + spread, inst.min_tick),
                   None if inst is EURUSD else mid)
        _, ev = c.place(inst, make_order(side, lots[inst.con_id] * n))
        assert "exec" in kinds(ev)
    a = broker.account(ACCOUNT)
    snap = a.snapshot(broker.marks)
    daily, unrealized, realized = broker.pnl(ACCOUNT)
    scale = 1e-9 * 1_000_000
    assert snap.net_liquidation == pytest.approx(1_000_000 + realized + unrealized, abs=scale)
    gross_r = sum(p.realized_gross for p in a.positions.values())
    gross_u = sum(p.unrealized_gross(broker.marks) for p in a.positions.values())
    assert snap.net_liquidation == pytest.approx(1_000_000 + gross_r + gross_u - a.commissions, abs=scale)
    fees = sum(f.commissionAndFees for _, _, f in broker.executions(1, ExecutionFilter()))
    assert a.commissions == pytest.approx(fees)
    assert daily == pytest.approx(realized + unrealized)
    nlv_row = float(dict((t, v) for t, v, _ in broker.account_summary(ACCOUNT, {"NetLiquidation"}))["NetLiquidation"])
    assert nlv_row == pytest.approx(snap.net_liquidation, abs=0.006)
    for _, contract, qty, _avg in broker.positions():        # the position equals the sum of its fills
        signed = sum((e.shares if e.side == "BOT" else -e.shares)
                     for c_, e, _ in broker.executions(1, ExecutionFilter()) if c_.conId == contract.conId)
        assert qty == signed


ACTIONS = st.one_of(
    st.tuples(st.just("place"), st.sampled_from(["MKT", "LMT", "STP", "TRAIL", "MOC"]),
              st.sampled_from(["BUY", "SELL"]),
              st.integers(-30, 30), st.sampled_from(["DAY", "GTC", "IOC"]), st.sampled_from(["", "g"])),
    st.tuples(st.just("move"), st.integers(-30, 30)),
    st.tuples(st.just("cancel"), st.integers(1, 12)),
    st.tuples(st.just("close")),
)


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.lists(ACTIONS, min_size=1, max_size=30))
def test_order_engine_invariants(actions):
    """Random orders, cancels, price moves and auctions: every order is either working or completed,
    each fill is one execution of the whole quantity followed by Filled and its commission, nothing is
    said about an order after it is done, and positions equal the sum of the executions."""
    market = TinyMarket()
    broker = Broker([ACCOUNT], quote=market.quote, now=market.now)
    c = Client(broker)
    for action in actions:
        if action[0] == "place":
            _, ot, side, offset, tif, oca = action
            price = round_to_tick(100.0 + offset / 10, 0.01)
            tif = "DAY" if ot == "MOC" and tif == "IOC" else tif
            extra = {"lmt": price} if ot == "LMT" else {"aux": price} if ot == "STP" else \
                {"aux": 1.00} if ot == "TRAIL" else {}
            c.place(AAPL, make_order(side, 10, ot, tif=tif, ocaGroup=oca, ocaType=1, **extra))
        elif action[0] == "move":
            mid = round_to_tick(100.0 + action[1] / 10, 0.01)
            market.set(AAPL, round_to_tick(mid - 0.01, 0.01), round_to_tick(mid + 0.01, 0.01), mid)
            c.events += broker.on_market()
        elif action[0] == "cancel":
            c.cancel(action[1])
        else:
            c.events += broker.on_close(AAPL.con_id)
    working = {o.orderId for _, o, _ in broker.open_orders()}
    done = {o.orderId: s.status for _, o, s in broker.completed_orders()}
    assert not working & set(done)
    execs = broker.executions(1, ExecutionFilter())
    assert sorted(e.orderId for _, e, _ in execs) == sorted(oid for oid, s in done.items() if s == "Filled")
    for oid, status in done.items():
        mine = [e for e in c.events if getattr(e, "order_id", None) == oid]
        terminal = [i for i, e in enumerate(mine)
                    if isinstance(e, OrderStatusEvent) and e.status in ("Filled", "Cancelled")]
        assert len(terminal) == 1                                   # done exactly once ...
        after = [e for e in mine[terminal[0] + 1:] if not isinstance(e, (CommissionEvent, ErrorEvent))]
        assert all(isinstance(e, OpenOrderEvent) for e in after) and len(after) <= 1   # ... and quiet after it
        if status == "Filled":
            k = kinds(mine)
            i = k.index("exec")
            assert k[i:i + 3] == ["exec", "open:Filled", "status:Filled"]
    cid = [e for e in c.events if isinstance(e, CommissionEvent)]
    assert len(cid) == len(execs)
    qty = sum((e.shares if e.side == "BOT" else -e.shares) for _, e, _ in execs)
    assert sum(p[2] for p in broker.positions()) == qty
    assert all(s.status in ("PreSubmitted", "Submitted") for _, _, s in broker.open_orders())


# === open orders, completed orders, executions ====================================================
def test_orders_survive_a_reconnect_and_are_listed_per_client(broker):
    a, b = Client(broker, 5), Client(broker, 6)
    oid, _ = a.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00, tif="GTC", orderRef="keep"))
    b.place(MSFT, make_order("BUY", 1, "LMT", lmt=300.00))
    # client 5 "reconnects": the broker has no connections; it finds its order and a higher next id
    [(contract, order, state)] = broker.open_orders(5)
    assert (order.orderId, order.clientId, order.orderRef, state.status) == (oid, 5, "keep", "Submitted")
    assert contract.symbol == "AAPL" and contract.conId == AAPL.con_id
    assert broker.status_of(5, oid).status == "Submitted" and broker.status_of(5, 999) is None
    assert broker.max_order_id(5) == oid
    assert len(broker.open_orders()) == 2


def test_completed_orders_carry_time_and_status(broker, market):
    c = Client(broker)
    filled, _ = c.place(AAPL, make_order("BUY", 1, orderRef="done-1"))
    market.t += timedelta(minutes=5)
    cancelled, _ = c.place(AAPL, make_order("BUY", 1, "LMT", lmt=90.00))
    c.cancel(cancelled)
    done = broker.completed_orders()
    assert [(o.orderId, s.status, s.completedStatus, s.completedTime) for _, o, s in done] == [
        (filled, "Filled", "Filled", "20240315 14:30:00 UTC"),
        (cancelled, "Cancelled", "Cancelled by Trader", "20240315 14:35:00 UTC")]
    assert done[0][1].orderRef == "done-1" and done[0][1].filledQuantity == Decimal(1)
    assert done[0][2].commissionAndFees == pytest.approx(1.0)


def test_executions_filter(broker, market):
    a, b = Client(broker, 1), Client(broker, 2)
    a.place(AAPL, make_order("BUY", 1))
    market.t += timedelta(hours=1)
    b.place(EURUSD, make_order("SELL", 20000))
    a.place(ES, make_order("SELL", 1, account="DU7654321"))

    def pick(**kw):
        f = ExecutionFilter()
        for k, v in kw.items():
            setattr(f, k, v)
        return [(c.symbol, e.side) for c, e, _ in broker.executions(1, f)]

    assert pick() == [("AAPL", "BOT"), ("EUR", "SLD"), ("ES", "SLD")]
    assert pick(clientId=2) == [("EUR", "SLD")]
    assert pick(acctCode="DU7654321") == [("ES", "SLD")]
    assert pick(time="20240315 15:00:00") == [("EUR", "SLD"), ("ES", "SLD")]
    assert pick(time="20240315-15:30:01") == []
    assert pick(time="20240315 11:00:00 US/Eastern") == [("EUR", "SLD"), ("ES", "SLD")]
    assert pick(symbol="aapl") == [("AAPL", "BOT")]
    assert pick(secType="CASH") == [("EUR", "SLD")]
    assert pick(exchange="CME") == [("ES", "SLD")]
    assert pick(exchange="NASDAQ") == [("AAPL", "BOT")]
    assert pick(side="SELL") == [("EUR", "SLD"), ("ES", "SLD")]
    rows = broker.executions(1, ExecutionFilter())
    assert all(r.execId == e.execId for _, e, r in rows)
    assert len({e.execId for _, e, _ in rows}) == 3


# === helpers ======================================================================================
def test_tick_grid_helpers():
    assert on_tick_grid(100.01, 0.01) and not on_tick_grid(100.001, 0.01)
    assert on_tick_grid(1.08735, 0.00005) and not on_tick_grid(1.08733, 0.00005)
    assert on_tick_grid(5000.25, 0.25) and not on_tick_grid(5000.1, 0.25)
    assert on_tick_grid(123.456, 0)                          # no tick known: anything goes
    assert on_tick_grid(0.1 + 0.2, 0.01)                     # float noise is not a price violation
    assert round_to_tick(100.006, 0.01) == 100.01 and round_to_tick(5000.3, 0.25) == 5000.25
    assert round_to_tick(97.999, 0.01, "ROUND_FLOOR") == 97.99


def test_filter_time_formats():
    utc = timezone.utc
    assert parse_filter_time("20240315 14:30:00") == datetime(2024, 3, 15, 14, 30, tzinfo=utc)
    assert parse_filter_time("20240315-14:30") == datetime(2024, 3, 15, 14, 30, tzinfo=utc)
    assert parse_filter_time("20240315 10:30:00 US/Eastern") == datetime(2024, 3, 15, 14, 30, tzinfo=utc)
    assert parse_filter_time("") is None and parse_filter_time("garbage") is None


# === against the real market model, once addin/paper/market/market.py exists =====================
def test_broker_trades_against_the_real_market_model():
    market_mod = pytest.importorskip("addin.paper.market.market")
    market = market_mod.Market(seed=1, speed=0.0, start=datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc))
    broker = Broker([ACCOUNT], quote=market.quote, now=market.now)
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "AAPL", "STK", "SMART", "USD"
    [inst] = market.lookup(c)
    q = market.quote(inst)
    ev = broker.place(1, 1, inst, c, make_order("BUY", 10))
    assert kinds(ev) == FILLED_NOW
    assert ev[2].execution.price == pytest.approx(q.ask)
    assert broker.positions()[0][2] == Decimal(10)


# === the rest of the sheet's vocabulary (addin/protocol/orders.py) ===================================
# AAPL's list above is a short one; FULL lists what the paper universe lists for US stocks.
FULL = instrument(265599, "FULL", "STK", "SMART", 0.01,
                  STOCK_TYPES + ",TRAILLMT,REL,MIDPX,OPG,GTD", primaryExchange="NASDAQ")


@pytest.fixture
def full(market):
    market.set(FULL, 99.99, 100.01, 100.00)
    return FULL


def fills(events) -> dict[int, float]:
    return {e.order_id: e.execution.price for e in events if isinstance(e, ExecutionEvent)}


def test_every_order_type_and_tif_of_the_vocabulary_is_answered(broker, full):
    from addin.protocol.orders import OPG_TYPES, ORDER_TYPES, TIF_CODES
    prices = {"LimitPrice": dict(lmtPrice=100.50), "StopPrice": dict(auxPrice=100.50), "Offset": {}}
    c = Client(broker)
    for t in ORDER_TYPES:
        extra: dict = {}
        for column, need in t.prices:
            if need == "required":
                extra.update(prices[column])
        if t.trail:
            extra.update(auxPrice=1.00, lmtPriceOffset=0.10)
        for tif in t.tifs or TIF_CODES:
            if tif == "OPG" and t.code not in OPG_TYPES:
                continue
            gtd = dict(goodTillDate="20240316 00:00:00 UTC") if tif == "GTD" else {}
            oid, ev = c.place(full, make_order("BUY", 1, t.code, tif=tif, **extra, **gtd))
            assert ev and not [e for e in errors(ev) if e.code != 202], (t.code, tif, ev)   # IOC/FOK may go
            final = last_status(ev, oid)
            assert final in ("Submitted", "Filled", "Cancelled"), (t.code, tif)
            if final == "Submitted":
                c.cancel(oid)                           # stay below 20 working orders per side


def test_mit_triggers_when_the_price_falls_to_it_for_a_buy_and_rises_to_it_for_a_sell(broker, market, full):
    c = Client(broker)
    buy, ev = c.place(full, make_order("BUY", 1, "MIT", aux=99.50))
    sell, _ = c.place(full, make_order("SELL", 1, "MIT", aux=100.50))
    assert last_status(ev, buy) == "Submitted"
    market.set(full, 100.49, 100.51, 100.50)          # up: the sell's trigger, not the buy's
    assert fills(broker.on_market()) == {sell: 100.49}
    market.set(full, 99.49, 99.51, 99.50)
    assert fills(broker.on_market()) == {buy: 99.51}
    touched, ev = c.place(full, make_order("BUY", 1, "MIT", aux=101.00))   # already at or below: at once
    assert fills(ev) == {touched: 99.51}


def test_lit_becomes_a_limit_once_touched(broker, market, full):
    c = Client(broker)
    oid, ev = c.place(full, make_order("SELL", 1, "LIT", lmt=100.60, aux=100.50))
    assert last_status(ev, oid) == "Submitted"
    market.set(full, 100.49, 100.51, 100.50)          # touched, but the bid is below the limit: rests
    assert broker.on_market() == []
    market.set(full, 100.40, 100.42, 100.41)          # below the trigger again: a limit now, still rests
    assert broker.on_market() == []
    market.set(full, 100.61, 100.63, 100.62)
    ev = broker.on_market()
    assert fills(ev) == {oid: 100.61}
    assert of(ev, oid, ExecutionEvent)[0].execution.lastLiquidity == 1      # it rested: added liquidity


def test_trail_limit_trails_then_works_as_a_limit_offset_beyond_the_stop(broker, market, full):
    c = Client(broker)
    oid, ev = c.place(full, make_order("SELL", 1, "TRAIL LIMIT", aux=1.00, lmtPriceOffset=0.20))
    shown = of(ev, oid, OpenOrderEvent)[0].order
    assert (shown.trailStopPrice, shown.lmtPrice) == (99.00, 98.80)
    market.set(full, 100.99, 101.01, 101.00)          # up 1.00: stop 100.00, limit 99.80
    broker.on_market()
    market.set(full, 99.69, 99.71, 99.70)             # through the stop, bid below the limit: rests
    assert broker.on_market() == []
    assert [(o.trailStopPrice, o.lmtPrice) for _, o, _ in broker.open_orders(1)] == [(100.00, 99.80)]
    market.set(full, 99.85, 99.87, 99.86)
    assert fills(broker.on_market()) == {oid: 99.85}
    buy, ev = c.place(full, make_order("BUY", 1, "TRAIL LIMIT", trailingPercent=1.0, trailStopPrice=100.50,
                                       lmtPriceOffset=0.10))
    assert of(ev, buy, OpenOrderEvent)[0].order.lmtPrice == 100.60
    market.set(full, 100.49, 100.51, 100.50)          # elected at 100.50; ask 100.51 within 100.60
    assert fills(broker.on_market()) == {buy: 100.51}


def test_trail_limit_needs_its_offset(broker, full):
    _, ev = Client(broker).place(full, make_order("SELL", 1, "TRAIL LIMIT", aux=1.00))
    assert kinds(ev) == ["error:201"] and "lmtPriceOffset" in ev[0].text
    _, ev = Client(broker, 2).place(full, make_order("SELL", 1, "TRAIL LIMIT", aux=1.00, lmtPriceOffset=0.001))
    assert kinds(ev) == ["error:110"]


def test_rel_pegs_to_its_side_plus_the_offset_capped_by_the_limit(broker, market, full):
    c = Client(broker)
    crossing, ev = c.place(full, make_order("BUY", 1, "REL", aux=0.02))              # 99.99 + 0.02 = the ask
    assert fills(ev) == {crossing: 100.01}
    capped, ev = c.place(full, make_order("BUY", 1, "REL", lmt=100.00, aux=0.02))     # capped below the ask
    passive, _ = c.place(full, make_order("SELL", 1, "REL", aux=0.01))                # 100.00, above the bid
    assert last_status(ev, capped) == "Submitted" and broker.on_market() == []
    market.set(full, 99.98, 100.00, 99.99)            # the ask comes down to the cap; the sell re-pegs
    assert fills(broker.on_market()) == {capped: 100.00}
    assert [o.orderId for _, o, _ in broker.open_orders(1)] == [passive]


def test_midprice_fills_at_the_midpoint_on_the_grid_within_its_cap(broker, market, full):
    c = Client(broker)
    mid, ev = c.place(full, make_order("BUY", 1, "MIDPRICE"))
    assert fills(ev) == {mid: 100.00}
    capped, ev = c.place(full, make_order("BUY", 1, "MIDPRICE", lmt=99.99))
    assert last_status(ev, capped) == "Submitted"
    market.set(full, 99.99, 100.02, 100.00)           # mid 100.005: a buy pays 100.01, a sell gets 100.00
    buy, ev = c.place(full, make_order("BUY", 1, "MIDPRICE"))
    sell, ev2 = c.place(full, make_order("SELL", 1, "MIDPRICE"))
    assert fills(ev) == {buy: 100.01} and fills(ev2) == {sell: 100.00}
    market.set(full, 99.97, 99.99, 99.98)
    assert fills(broker.on_market()) == {capped: 99.98}


def test_opg_orders_trade_only_in_the_opening_auction(broker, market, full):
    c = Client(broker)
    moo, ev = c.place(full, make_order("BUY", 1, "MKT", tif="OPG"))
    loo_ok, _ = c.place(full, make_order("SELL", 1, "LMT", lmt=99.00, tif="OPG"))
    loo_no, _ = c.place(full, make_order("BUY", 1, "LMT", lmt=90.00, tif="OPG"))
    moc, _ = c.place(full, make_order("BUY", 1, "MOC"))
    assert kinds(ev) == ["open:Submitted", "status:Submitted"]
    assert broker.on_market() == [] and broker.on_close(MSFT.con_id) == []
    market.set(full, 100.40, 100.60, 100.50)
    ev = broker.on_open(full.con_id)
    assert fills(ev) == {moo: 100.50, loo_ok: 100.50}
    assert last_status(ev, loo_no) == "Cancelled"
    assert errors(ev, 202)[0].text == "Order Canceled - reason:LMT OPG order not filled in the opening auction"
    assert [o.orderId for _, o, _ in broker.open_orders(1)] == [moc]


def test_opg_takes_market_and_limit_only_and_needs_an_opening_auction(broker, full):
    c = Client(broker)
    _, ev = c.place(full, make_order("BUY", 1, "STP", aux=101.00, tif="OPG"))
    assert ev[0].code == 111 and ev[0].text == "The time in force (tif type) and the order type are incompatible."
    _, ev = c.place(EURUSD, make_order("BUY", 20000, tif="OPG"))   # FX lists no OPG: no session open
    assert kinds(ev) == ["error:201"] and "OPG" in ev[0].text
    around_the_clock = instrument(900003, "ETH", "CRYPTO", "PAXOS", 0.01, "DAY,GTC,LMT,MKT,OPG")
    _, ev = c.place(around_the_clock, make_order("BUY", 1, tif="OPG"))
    assert kinds(ev) == ["error:201"] and "no opening auction" in ev[0].text


@pytest.mark.parametrize("text", ["20240315 14:31:00", "20240315 14:31:00 UTC", "20240315-14:31:00",
                                  "20240315 10:31:00 US/Eastern"])
def test_gtd_is_cancelled_when_the_clock_reaches_its_date(broker, market, full, text):
    c = Client(broker)
    oid, ev = c.place(full, make_order("BUY", 1, "LMT", lmt=90.00, tif="GTD", goodTillDate=text))
    assert last_status(ev, oid) == "Submitted"
    market.t += timedelta(seconds=59)
    assert broker.on_market() == []
    market.t += timedelta(seconds=1)
    ev = broker.on_market()
    assert kinds(ev) == ["status:Cancelled", "open:Cancelled", "error:202"]
    assert ev[2].text == f"Order Canceled - reason:good till date {text} reached"


@pytest.mark.parametrize("text,why", [("", "needs a goodTillDate"), ("20240315 14:30:00", "in the past"),
                                      ("20240314 23:59:59 UTC", "in the past"), ("tomorrow", "not a valid"),
                                      ("20240316 10:00:00 Mars/Olympus", "not a valid")])
def test_gtd_without_a_future_date_is_rejected(broker, full, text, why):
    _, ev = Client(broker).place(full, make_order("BUY", 1, "LMT", lmt=90.00, tif="GTD", goodTillDate=text))
    assert kinds(ev) == ["error:201"] and why in ev[0].text


def test_dtc_behaves_as_day(broker, full):
    oid, ev = Client(broker).place(full, make_order("BUY", 1, "LMT", lmt=90.00, tif="DTC"))
    assert last_status(ev, oid) == "Submitted" and ev[0].order.tif == "DTC"


def test_modify_of_a_cancelled_order_is_refused_and_changes_nothing(broker, full):
    c = Client(broker)
    oid, _ = c.place(full, make_order("BUY", 1, "LMT", lmt=90.00))
    c.cancel(oid)
    _, ev = c.place(full, make_order("BUY", 2, "LMT", lmt=91.00), order_id=oid)
    assert ev == [ErrorEvent(1, oid, 10148, f"OrderId {oid} that needs to be modified cannot be modified, "
                                            "state: Cancelled.")]
    [(_, shown, state)] = broker.completed_orders()
    assert (shown.lmtPrice, shown.totalQuantity, state.status) == (90.00, Decimal(1), "Cancelled")


def test_a_bracket_child_may_be_modified_before_and_after_its_parent_fills(broker, market, full):
    c = Client(broker)
    pid, _ = c.place(full, make_order("BUY", 4, "LMT", lmt=99.00))
    tp, ev = c.place(full, make_order("SELL", 4, "LMT", lmt=110.00, parentId=pid))
    assert last_status(ev, tp) == "PreSubmitted"
    _, ev = c.place(full, make_order("SELL", 3, "LMT", lmt=109.00, parentId=pid), order_id=tp)
    assert kinds(ev) == ["open:PreSubmitted", "status:PreSubmitted"]
    assert (ev[0].order.lmtPrice, ev[0].order.totalQuantity, ev[0].order.parentId) == (109.00, Decimal(3), pid)
    market.set(full, 98.98, 99.00, 98.99)
    assert last_status(broker.on_market(), tp) == "Submitted"          # parent filled: the child is live
    _, ev = c.place(full, make_order("SELL", 4, "LMT", lmt=108.00, parentId=pid), order_id=tp)
    assert kinds(ev) == ["open:Submitted", "status:Submitted"] and ev[0].order.lmtPrice == 108.00


def test_a_held_order_released_with_transmit_is_the_same_order(broker, full):
    c = Client(broker)
    oid, ev = c.place(full, make_order("BUY", 1, "LMT", lmt=90.00, transmit=False))
    perm = ev[1].perm_id
    _, ev = c.place(full, make_order("BUY", 1, "LMT", lmt=90.00, transmit=True), order_id=oid)
    assert kinds(ev) == ["open:Submitted", "status:Submitted"] and ev[1].perm_id == perm
    assert [(o.orderId, o.permId) for _, o, _ in broker.open_orders()] == [(oid, perm)]


def test_filled_quantity_is_always_set_on_open_and_completed_orders(broker, full):
    c = Client(broker)
    filled, _ = c.place(full, make_order("BUY", 3))
    cancelled, _ = c.place(full, make_order("BUY", 2, "LMT", lmt=90.00))
    working, _ = c.place(full, make_order("BUY", 2, "LMT", lmt=90.00))
    c.cancel(cancelled)
    assert {o.orderId: o.filledQuantity for _, o, _ in broker.completed_orders()} == \
        {filled: Decimal(3), cancelled: Decimal(0)}
    assert [o.filledQuantity for _, o, _ in broker.open_orders()] == [Decimal(0)]


def test_moc_fill_reports_its_average_price(broker, market, full):
    oid, _ = Client(broker).place(full, make_order("BUY", 2, "MOC"))
    market.set(full, 100.40, 100.60, 100.50)
    status = of(broker.on_close(full.con_id), oid, OrderStatusEvent)[-1]
    assert (status.status, status.filled, status.avg_fill_price, status.last_fill_price) == \
        ("Filled", Decimal(2), 100.50, 100.50)
