"""ib_async, an independent client, runs every flow against the paper gateway: its own handshake
and start-up requests, contract details, streaming and snapshot quotes, delayed data, history with
keepUpToDate, each order type and TIF, bracket, OCA, whatIf, cancel, global cancel, executions,
commissions, positions, account values and summary, P&L and IB's error codes."""

from __future__ import annotations

import itertools
import math
import time

import pytest

ib_async = pytest.importorskip("ib_async")
from ib_async import IB, Crypto, Forex, Future, Index, LimitOrder, MarketOrder, Order, Stock, StopOrder  # noqa: E402

from .contracts import listed_es  # noqa: E402

_ids = itertools.count(201)


def wait_until(ib: IB, cond, timeout: float = 10.0, what: str = "condition"):
    """Run ib_async's loop until ``cond()`` is true (event-driven: waits on ib's update event)."""
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what} not met within {timeout} s")
        ib.waitOnUpdate(timeout=left)
    return cond()


@pytest.fixture
def ib(gateway):
    client = IB()
    client.connect("127.0.0.1", gateway.port, clientId=next(_ids), timeout=10)
    errors = []
    client.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code, text))
    client.test_errors = errors
    yield client
    client.disconnect()


def test_connects_with_its_startup_sequence(ib):
    assert ib.isConnected()
    assert ib.client.serverVersion() == 178
    assert ib.managedAccounts() == ["DU1234567"]
    assert ib.reqCurrentTime().year >= 2026


def test_contract_details_and_qualify(ib, gateway):
    front = listed_es(gateway)[0]
    aapl, fx, fut, idx, coin = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"), Forex("EURUSD"),
                                                   Future("ES", front.last_trade_date[:6], "CME"),
                                                   Index("SPX", "CBOE"), Crypto("BTC", "PAXOS", "USD"))
    assert aapl.conId == 265598 and fx.conId == 12087792 and fut.multiplier == "50"
    assert (fut.conId, fut.localSymbol) == (front.con_id, front.local_symbol)
    assert idx.secType == "IND" and coin.secType == "CRYPTO"
    cd = ib.reqContractDetails(Stock("GOOG", "SMART", "USD"))[0]
    assert cd.minTick == 0.01 and cd.longName


def test_unknown_contract_error_200(ib):
    assert ib.qualifyContracts(Stock("ZZZZ", "SMART", "USD")) in ([], [None])
    assert any(code == 200 for _, code, _ in ib.test_errors)


def test_streaming_ticker_updates(ib):
    ticker = ib.reqMktData(ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))[0])
    wait_until(ib, lambda: not math.isnan(ticker.bid) and not math.isnan(ticker.last), what="first quote")
    assert ticker.bid < ticker.ask and ticker.volume > 0 and not math.isnan(ticker.close)
    first = ticker.time
    wait_until(ib, lambda: ticker.time != first, timeout=15, what="a later tick")
    ib.cancelMktData(ticker.contract)


def test_snapshot_tickers(ib):
    (t,) = ib.reqTickers(*ib.qualifyContracts(Forex("EURUSD")))
    assert 0.5 < t.bid < t.ask < 2.0


def test_delayed_market_data(ib):
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))[0])
    wait_until(ib, lambda: not math.isnan(ticker.last), what="delayed last")
    assert ticker.marketDataType == 3
    assert any(code == 10167 for _, code, _ in ib.test_errors)
    ib.cancelMktData(ticker.contract)
    ib.reqMarketDataType(1)


def test_history_and_keep_up_to_date(ib):
    daily = ib.reqHistoricalData(Stock("GOOG", "SMART", "USD"), "", "1 Y", "1 day", "TRADES", True)
    assert len(daily) > 200 and daily[-1].close > 0
    fx = ib.reqHistoricalData(Forex("EURUSD"), "", "1 D", "1 hour", "MIDPOINT", False)
    assert 20 <= len(fx) <= 25
    live = ib.reqHistoricalData(Stock("AAPL", "SMART", "USD"), "", "300 S", "5 secs", "TRADES", False,
                                keepUpToDate=True)
    updates = []
    live.updateEvent += lambda bars, has_new_bar: updates.append(bars[-1])
    wait_until(ib, lambda: updates, timeout=15, what="a keepUpToDate update")
    ib.cancelHistoricalData(live)


def test_order_types_and_tifs(ib):
    c = ib.qualifyContracts(Stock("MSFT", "SMART", "USD"))[0]
    (t,) = ib.reqTickers(c)
    mkt = ib.placeOrder(c, MarketOrder("BUY", 3))
    ioc = ib.placeOrder(c, LimitOrder("BUY", 1, round(t.bid * 0.9, 2), tif="IOC"))
    fok = ib.placeOrder(c, LimitOrder("BUY", 1, round(t.ask * 1.02, 2), tif="FOK"))
    gtc = ib.placeOrder(c, LimitOrder("BUY", 1, round(t.bid * 0.8, 2), tif="GTC"))
    stp = ib.placeOrder(c, StopOrder("SELL", 1, round(t.bid * 0.5, 2)))
    trail = ib.placeOrder(c, Order(action="SELL", totalQuantity=1, orderType="TRAIL", trailingPercent=20))
    wait_until(ib, lambda: mkt.orderStatus.status == "Filled" and ioc.orderStatus.status == "Cancelled"
               and fok.orderStatus.status == "Filled" and gtc.orderStatus.status == "Submitted"
               and stp.orderStatus.status == "Submitted" and trail.orderStatus.status == "Submitted",
               what="order states")
    assert mkt.fills and mkt.fills[0].commissionReport.commission > 0
    for trade in (gtc, stp):
        ib.cancelOrder(trade.order)
    wait_until(ib, lambda: gtc.orderStatus.status == "Cancelled" and stp.orderStatus.status == "Cancelled",
               what="cancels")
    ib.reqGlobalCancel()
    wait_until(ib, lambda: trail.orderStatus.status == "Cancelled", what="global cancel")


def test_bracket_oca_and_what_if(ib):
    c = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))[0]
    (t,) = ib.reqTickers(c)
    bracket = ib.bracketOrder("BUY", 5, round(t.ask * 1.01, 2), takeProfitPrice=round(t.ask * 1.5, 2),
                              stopLossPrice=round(t.bid * 0.5, 2))
    trades = [ib.placeOrder(c, o) for o in bracket]
    wait_until(ib, lambda: trades[0].orderStatus.status == "Filled"
               and trades[1].orderStatus.status == "Submitted" and trades[2].orderStatus.status == "Submitted",
               what="bracket live")
    ib.cancelOrder(trades[1].order)
    wait_until(ib, lambda: trades[1].orderStatus.status == "Cancelled", what="child cancel")
    ib.cancelOrder(trades[2].order)
    oca = ib.oneCancelsAll([LimitOrder("BUY", 1, round(t.bid * 0.8, 2)), LimitOrder("BUY", 1, round(t.ask * 1.02, 2))],
                           "ib-async-oca", 1)
    a, b = (ib.placeOrder(c, o) for o in oca)
    wait_until(ib, lambda: b.orderStatus.status == "Filled" and a.orderStatus.status == "Cancelled", what="oca")
    state = ib.whatIfOrder(c, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) > 0


def test_errors_reach_ib_async(ib):
    c = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))[0]
    bad = ib.placeOrder(c, LimitOrder("BUY", 1, 100.001))
    wait_until(ib, lambda: bad.orderStatus.status == "Cancelled", what="110 rejection")
    assert any(code == 110 for _, code, _ in ib.test_errors)
    ib.placeOrder(c, MarketOrder("BUY", 0))
    wait_until(ib, lambda: any(code == 201 for _, code, _ in ib.test_errors), what="201")


def test_executions_positions_account_and_pnl(ib):
    c = ib.qualifyContracts(Stock("SPY", "SMART", "USD"))[0]
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled", what="fill")
    fills = ib.reqExecutions()
    assert any(f.execution.orderId == trade.order.orderId for f in fills)
    wait_until(ib, lambda: any(p.contract.conId == c.conId for p in ib.positions()), what="position")
    assert any(v.tag == "NetLiquidation" for v in ib.accountSummary())
    assert any(v.tag == "TotalCashValue" for v in ib.accountValues())
    wait_until(ib, lambda: any(p.contract.conId == c.conId for p in ib.portfolio()), what="portfolio")
    pnl = ib.reqPnL("DU1234567")
    wait_until(ib, lambda: not math.isnan(pnl.unrealizedPnL), what="pnl")
    single = ib.reqPnLSingle("DU1234567", "", c.conId)
    wait_until(ib, lambda: single.position >= 10, what="pnl single")
    assert ib.reqCompletedOrders(False)
