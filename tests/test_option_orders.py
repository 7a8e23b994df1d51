"""Option orders at the paper gateway through the official ibapi client: fills against the option quote
the gateway streams (buy at the ask, sell at the bid), IB's option commission, executions with the
option contract, positions, updatePortfolio and P&L with the multiplier, and expiry (in the money:
exercised into 100 shares a contract at the strike; otherwise removed worthless, no execution).

The gateway is frozen (speed 0) at a fixed Thursday, so the quotes the orders meet are the ones the
test reads over the wire first; expected figures are computed here from those raw quotes."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, time, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from addin.paper import PaperGateway

from .ibclient import IBTestClient

START = datetime(2026, 11, 19, 15, 0, tzinfo=timezone.utc)     # Thursday 10:00 New York
ACCOUNT = "DU1234567"
NY = ZoneInfo("America/New_York")
_ids = itertools.count(41)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as g:
        yield g


@pytest.fixture
def ib(gw):
    c = IBTestClient().start(gw.port, next(_ids))
    yield c
    c.stop()


def stock_mid(gw, symbol="AAPL", at=None) -> float:
    def read(s):
        inst = next(i for i in s.market.instruments if i.symbol == symbol and i.sec_type == "STK")
        return s.market.quote(inst, at).mid
    return gw.call(read)


def stock_last(gw, symbol, at) -> float:
    def read(s):
        inst = next(i for i in s.market.instruments if i.symbol == symbol and i.sec_type == "STK")
        return s.market.quote(inst, at).last
    return gw.call(read)


def option_details(ib, symbol="AAPL", expiry="", strike=0.0, right="C"):
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "OPT", "SMART", "USD"
    c.lastTradeDateOrContractMonth, c.strike, c.right = expiry, strike, right
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, c)
    return [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def nearest_option(ib, gw, right: str, moneyness: float):
    """The listed option of the first expiry whose strike is nearest to moneyness x the stock's mid."""
    rows = option_details(ib, right=right)
    first = min(d.contract.lastTradeDateOrContractMonth for d in rows)
    target = moneyness * stock_mid(gw)
    return min((d for d in rows if d.contract.lastTradeDateOrContractMonth == first),
               key=lambda d: abs(d.contract.strike - target))


def by_con_id(con_id: int) -> Contract:
    c = Contract()
    c.conId, c.secType, c.exchange = con_id, "OPT", "SMART"
    return c


def option_touch(ib, con_id: int) -> tuple[float, float]:
    """(bid, ask) of one snapshot of the option, as the gateway sends it."""
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, by_con_id(con_id), "", False, False, [])
    got: dict[int, float] = {}

    def both(e):
        if e.name == "tickPrice" and e[0] == rid:
            got[e[1]] = e[2]
        return 1 in got and 2 in got
    ib.wait_for("tickPrice", lambda e: e[0] == rid and both(e), start=start)
    for e in ib.events[start:]:
        if e.name == "tickPrice" and e[0] == rid:
            got[e[1]] = e[2]
    ib.cancelMktData(rid)
    return got[1], got[2]


def order(action, qty, order_type="MKT", lmt=None) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, Decimal(qty), order_type, "DAY"
    if lmt is not None:
        o.lmtPrice = lmt
    return o


def place(ib, con_id, o) -> int:
    oid = ib.next_order_id()
    ib.placeOrder(oid, by_con_id(con_id), o)
    return oid


def commission_of(contracts: float) -> float:
    return max(1.00, 0.65 * contracts)        # IB's fixed plan for US options, stated by the gateway


def test_option_market_buy_fills_at_the_ask_with_option_commission_and_shows_everywhere(ib, gw):
    d = nearest_option(ib, gw, "C", 1.0)
    con_id = d.contract.conId
    bid, ask = option_touch(ib, con_id)
    assert 0 < bid < ask
    start = ib.mark()
    rid_pnl = ib.next_req()
    oid = place(ib, con_id, order("BUY", 3))
    ib.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == "Filled", start=start)
    ex = ib.wait_for("execDetails", lambda e: e[2].orderId == oid, start=start)[2]
    ec = ib.wait_for("execDetails", lambda e: e[2].orderId == oid, start=start)[1]
    assert ex.price == ask and ex.side == "BOT" and ex.shares == Decimal(3)
    assert (ec.secType, ec.conId, ec.right, ec.strike, ec.multiplier) == ("OPT", con_id, "C", d.contract.strike, "100")
    report = ib.wait_for("commissionAndFeesReport", lambda e: e[0].execId == ex.execId, start=start)[0]
    assert report.commissionAndFees == pytest.approx(commission_of(3))

    cost = 3 * ask * 100 + commission_of(3)
    ib.reqPositions()
    pos = ib.wait_for("position", lambda e: e[1].conId == con_id and e[2] == Decimal(3), start=start)
    assert pos[3] == pytest.approx(cost / 3)          # avgCost per contract, multiplier and commission in

    ib.reqAccountUpdates(True, ACCOUNT)
    row = ib.wait_for("updatePortfolio", lambda e: e[0].conId == con_id, start=start)
    mid = (bid + ask) / 2
    _, position, price, value, avg_cost, unrealized = row.args[:6]
    assert position == Decimal(3) and price == pytest.approx(mid)
    assert value == pytest.approx(3 * mid * 100)
    assert avg_cost == pytest.approx(cost / 3)
    assert unrealized == pytest.approx(3 * mid * 100 - cost)
    ib.reqAccountUpdates(False, ACCOUNT)

    ib.reqPnLSingle(rid_pnl, ACCOUNT, "", con_id)
    p = ib.wait_for("pnlSingle", lambda e: e[0] == rid_pnl, start=start)
    assert p[1] == Decimal(3) and p[5] == pytest.approx(3 * mid * 100)
    assert p[3] == pytest.approx(3 * mid * 100 - cost)
    ib.cancelPnLSingle(rid_pnl)
    ib.cancelPositions()

    # Close: a limit above the bid rests, one at the bid sells at the bid; ten contracts cost 6.50.
    start = ib.mark()
    high = round(bid + 0.05 * math.ceil((ask - bid) / 0.05 + 1), 2)
    resting = place(ib, con_id, order("SELL", 3, "LMT", high))
    ib.wait_for("orderStatus", lambda e: e[0] == resting and e[1] == "Submitted", start=start)
    ib.cancelOrder(resting, OrderCancel())
    ib.wait_for("orderStatus", lambda e: e[0] == resting and e[1] == "Cancelled", start=start)
    sold = place(ib, con_id, order("SELL", 3, "LMT", bid))
    ib.wait_for("orderStatus", lambda e: e[0] == sold and e[1] == "Filled", start=start)
    ex = ib.wait_for("execDetails", lambda e: e[2].orderId == sold, start=start)[2]
    assert ex.price == bid and ex.side == "SLD"
    report = ib.wait_for("commissionAndFeesReport", lambda e: e[0].execId == ex.execId, start=start)[0]
    expected_realized = 3 * bid * 100 - commission_of(3) - cost
    assert report.realizedPNL == pytest.approx(expected_realized)
    assert (Decimal(0), True) == (gw.call(lambda s: s.broker.account(ACCOUNT).positions[con_id].qty), True)
    assert commission_of(10) == pytest.approx(6.50) and commission_of(1) == 1.00


def test_an_unlisted_or_ambiguous_option_order_gets_200_and_nothing_trades(ib, gw):
    start = ib.mark()
    oid = ib.next_order_id()
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency, c.right = "AAPL", "OPT", "SMART", "USD", "C"
    ib.placeOrder(oid, c, order("BUY", 1))                # every call of every expiry: ambiguous
    assert ib.wait_error(oid, 200)
    before = len(gw.call(lambda s: s.broker.executions(0)))
    c.lastTradeDateOrContractMonth, c.strike = "20261120", 1.5  # not on the strike grid
    oid = ib.next_order_id()
    ib.placeOrder(oid, c, order("BUY", 1))
    assert ib.wait_error(oid, 200)
    assert len(gw.call(lambda s: s.broker.executions(0))) == before
    assert not [e for e in ib.events[start:] if e.name == "execDetails"]


def test_expiry_exercises_in_the_money_options_into_shares_and_removes_the_others(ib, gw):
    itm_call = nearest_option(ib, gw, "C", 0.9)
    otm_put = nearest_option(ib, gw, "P", 0.9)
    itm_put = nearest_option(ib, gw, "P", 1.1)
    short_call = nearest_option(ib, gw, "C", 0.95)        # sold: assigned at expiry
    legs = [(itm_call, 2), (otm_put, 1), (itm_put, 1), (short_call, -1)]
    aapl = gw.call(lambda s: next(i.con_id for i in s.market.instruments if i.symbol == "AAPL"
                                   and i.sec_type == "STK"))
    assert gw.call(lambda s: s.broker.account(ACCOUNT).positions.get(aapl)) is None    # no AAPL shares yet
    start = ib.mark()
    for d, n in legs:
        oid = place(ib, d.contract.conId, order("BUY" if n > 0 else "SELL", abs(n)))
        ib.wait_for("orderStatus", lambda e, oid=oid: e[0] == oid and e[1] == "Filled", start=start)
    fills = len([e for e in ib.events[start:] if e.name == "execDetails"])
    assert fills == 4
    bid, _ = option_touch(ib, otm_put.contract.conId)
    resting = place(ib, otm_put.contract.conId, order("BUY", 1, "LMT", round(max(bid / 2, 0.01), 2)))
    ib.wait_for("orderStatus", lambda e: e[0] == resting and e[1] == "Submitted", start=start)
    ib.reqPositions()
    ib.wait_for("positionEnd", start=start)

    # Past the last trade time (16:00 New York on the expiry, a Friday): the broker settles.
    expiry = datetime.strptime(itm_call.contract.lastTradeDateOrContractMonth, "%Y%m%d").date()
    last_trade = datetime.combine(expiry, time(16, 0), NY)
    mark = ib.mark()
    gw.advance_clock((last_trade - START).total_seconds() + 60)
    und = stock_last(gw, "AAPL", last_trade)                 # the underlying's mark at the last trade
    want = {}                                                # conId -> (exercised, shares)
    for d, n in legs:
        k, call = d.contract.strike, d.contract.right == "C"
        itm = (und - k >= 0.01) if call else (k - und >= 0.01)
        want[d.contract.conId] = (itm, Decimal(100 * n * (1 if call else -1)) if itm else Decimal(0))
        ib.wait_for("position", lambda e, c=d.contract.conId: e[1].conId == c and e[2] == 0, start=mark)
    assert und > max(short_call.contract.strike, itm_call.contract.strike, otm_put.contract.strike)
    assert und < itm_put.contract.strike and short_call.contract.strike != itm_call.contract.strike
    settled = {x.con_id: (x.exercised, x.shares) for x in gw.call(lambda s: list(s.broker.expirations))}
    assert settled == want
    assert [v[1] for v in want.values()] == [200, 0, -100, -100]      # long calls, OTM put, put, short call
    ib.wait_for("position", lambda e: e[1].conId == aapl and e[2] == 0, start=mark)   # +200 - 100 - 100
    assert not [e for e in ib.events[mark:] if e.name == "execDetails"]   # no execution for an expiry
    ib.wait_for("orderStatus", lambda e: e[0] == resting and e[1] == "Cancelled", start=mark)
    assert "the option expired" in ib.wait_error(resting, 202)[3]
    # The shares went in and out at the strikes, without commission: bought 200 at the long call's
    # strike, sold 100 at the put's and 100 at the short call's.
    k1, k2, k3 = itm_call.contract.strike, short_call.contract.strike, itm_put.contract.strike
    stock = gw.call(lambda s: s.broker.account(ACCOUNT).positions[aapl])
    assert stock.qty == 0 and stock.realized == pytest.approx(100 * (k3 - k1) + 100 * (k2 - k1))
    # Each option left at 0: its realized P&L is minus its cost (premium and commission).
    for d, n in legs:
        pos = gw.call(lambda s, c=d.contract.conId: s.broker.account(ACCOUNT).positions[c])
        assert pos.qty == 0 and (pos.realized < 0) == (n > 0)
    # An order on the expired option is refused (201), nothing more trades.
    oid = place(ib, otm_put.contract.conId, order("BUY", 1))
    err = ib.wait_error(oid, 201)
    assert "expired" in err[3]


def test_with_exchange_hours_an_option_order_waits_for_its_underlyings_session():
    early = datetime(2026, 11, 19, 8, 0, tzinfo=timezone.utc)       # Thursday 03:00 New York: closed
    with PaperGateway(port=0, speed=0, start=early, hours="exchange", stream_interval=0.05) as g:
        client = IBTestClient().start(g.port, 7)
        try:
            d = nearest_option(client, g, "C", 1.0)
            start = client.mark()
            oid = place(client, d.contract.conId, order("BUY", 1))
            client.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == "PreSubmitted", start=start)
            assert not [e for e in client.events[start:] if e.name == "execDetails"]
            g.advance_clock(6.5 * 3600 + 1)                             # 09:30:01 New York: the open
            client.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == "Filled", start=start)
            ex = client.wait_for("execDetails", lambda e: e[2].orderId == oid, start=start)[2]
            _, ask = option_touch(client, d.contract.conId)
            assert ex.price == ask                                      # the frozen market's ask at the open
        finally:
            client.stop()


def _class_options(ib, symbol, sec_type, exchange, trading_class, right):
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency, c.right = symbol, sec_type, exchange, "USD", right
    c.tradingClass = trading_class
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, c)
    return [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def _mid_of(gw, con_id, at=None) -> float:
    return gw.call(lambda s: s.market.quote(next(i for i in s.market.instruments if i.con_id == con_id), at).mid)


@pytest.mark.parametrize(("symbol", "sec_type", "exchange", "trading_class"), [
    ("SPX", "OPT", "SMART", "SPXW"),      # European, cash-settled: closes at its intrinsic value
    ("ES", "FOP", "CME", "ES"),           # on the ES future: exercised into one future a contract
])
def test_index_options_settle_in_cash_and_futures_options_into_the_future(symbol, sec_type, exchange,
                                                                          trading_class):
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as g:
        ib = IBTestClient().start(g.port, next(_ids))
        try:
            rows = _class_options(ib, symbol, sec_type, exchange, trading_class, "C")
            first = min(d.contract.lastTradeDateOrContractMonth for d in rows)
            und_id = rows[0].underConId
            target = 0.9 * _mid_of(g, und_id)          # deep in the money: still in at expiry
            call = min((d for d in rows if d.contract.lastTradeDateOrContractMonth == first),
                       key=lambda d: abs(d.contract.strike - target))
            c = call.contract
            start = ib.mark()
            oid = ib.next_order_id()
            ib.placeOrder(oid, c, order("BUY", 2))
            ib.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == "Filled", start=start)
            cash0 = g.call(lambda s: s.broker.account(ACCOUNT).cash["USD"])
            ib.reqPositions()
            ib.wait_for("positionEnd", start=start)
            # Past the class's settlement moment (its lastTradeTime, Chicago, on the expiry date).
            tz = ZoneInfo(call.timeZoneId)
            settle = datetime.combine(datetime.strptime(first, "%Y%m%d").date(),
                                      time.fromisoformat(call.lastTradeTime), tz)
            mark = ib.mark()
            g.advance_clock((settle - START).total_seconds() + 120)
            ib.wait_for("position", lambda e: e[1].conId == c.conId and e[2] == 0, start=mark, timeout=20)
            expiration = g.call(lambda s: next(x for x in s.broker.expirations if x.con_id == c.conId))
            acct = g.call(lambda s: s.broker.account(ACCOUNT))
            assert expiration.exercised and c.strike < expiration.underlying_price
            if sec_type == "OPT":                               # cash: 2 x 100 x (S - K), no SPX position
                intrinsic = expiration.underlying_price - c.strike
                cash1 = g.call(lambda s: s.broker.account(ACCOUNT).cash["USD"])
                assert cash1 - cash0 == pytest.approx(2 * 100 * intrinsic, abs=1e-6)
                assert und_id not in acct.positions or not acct.positions[und_id].qty
            else:                                               # one ES future a contract, at the strike
                fut = acct.positions[und_id]
                assert fut.qty == 2 and fut.avg_cost == pytest.approx(c.strike * 50)    # at the strike, no commission
        finally:
            ib.stop()
