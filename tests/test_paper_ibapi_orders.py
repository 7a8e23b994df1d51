"""The official ibapi client places, modifies and cancels orders at the paper gateway and reads
executions, commissions, positions, account values and P&L. Real sockets, real ibapi."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from ibapi.execution import ExecutionFilter
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from addin.paper import PaperGateway

from .contracts import eurusd, listed_es, stock
from .ibclient import IBTestClient
from .test_paper_ibapi_market import snapshot


def make_order(action, qty, order_type="MKT", lmt=None, aux=None, tif="DAY", **extra) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, Decimal(qty), order_type, tif
    if lmt is not None:
        o.lmtPrice = lmt
    if aux is not None:
        o.auxPrice = aux
    for k, v in extra.items():
        setattr(o, k, v)
    return o


def place(ib, c, o) -> int:
    oid = ib.next_order_id()
    o.orderId = oid
    ib.placeOrder(oid, c, o)
    return oid


def status(ib, oid, wanted, timeout=10, start=0):
    return ib.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == wanted, timeout, start)


def touch(ib, c):
    p = snapshot(ib, c)
    return p[1], p[2]  # bid, ask


# --- order types and TIFs ------------------------------------------------------------------------
def test_market_order_fills_at_the_touch_in_real_gateway_event_order(ib):
    start = ib.mark()
    oid = place(ib, stock("AAPL"), make_order("BUY", 10, orderRef="row-7"))
    status(ib, oid, "Filled", start=start)
    ib.wait_for("commissionAndFeesReport", start=start)
    names = [n for n in ib.names(start) if n in ("openOrder", "orderStatus", "execDetails",
                                                   "commissionAndFeesReport")]
    assert names[:6] == ["openOrder", "orderStatus", "execDetails", "openOrder", "orderStatus",
                         "commissionAndFeesReport"]
    ex = ib.wait_for("execDetails", lambda e: e[2].orderId == oid, start=start)
    assert ex[0] == -1 and ex[2].side == "BOT" and ex[2].shares == Decimal(10) and ex[2].orderRef == "row-7"
    oo = ib.wait_for("openOrder", lambda e: e[0] == oid, start=start)
    assert oo[2].orderRef == "row-7"
    comm = ib.wait_for("commissionAndFeesReport", start=start)[0]
    assert comm.execId == ex[2].execId and comm.commissionAndFees == pytest.approx(1.0)  # 10 sh x 0.005, min 1 USD


def test_resting_limit_then_cancel_gives_202(ib):
    bid, _ = touch(ib, stock("MSFT"))
    start = ib.mark()
    oid = place(ib, stock("MSFT"), make_order("BUY", 5, "LMT", lmt=round(bid * 0.8, 2), tif="GTC"))
    status(ib, oid, "Submitted", start=start)
    ib.cancelOrder(oid, OrderCancel())
    status(ib, oid, "Cancelled", start=start)
    assert ib.wait_error(oid, 202)


def test_marketable_limit_fills_no_worse_than_the_limit(ib):
    _, ask = touch(ib, stock("SPY"))
    start = ib.mark()
    lmt = round(ask * 1.01, 2)
    oid = place(ib, stock("SPY"), make_order("BUY", 3, "LMT", lmt=lmt))
    st = status(ib, oid, "Filled", start=start)
    assert st[4] <= lmt


def test_stop_triggers_and_stop_limit_rests(ib):
    bid, ask = touch(ib, stock("AAPL"))
    start = ib.mark()
    stp = place(ib, stock("AAPL"), make_order("BUY", 1, "STP", aux=round(bid * 0.9, 2)))
    status(ib, stp, "Filled", start=start)
    stplmt = place(ib, stock("AAPL"), make_order("BUY", 1, "STP LMT", lmt=round(ask * 1.3, 2),
                                                 aux=round(ask * 1.2, 2)))
    status(ib, stplmt, "Submitted", start=start)
    ib.cancelOrder(stplmt, OrderCancel())
    status(ib, stplmt, "Cancelled", start=start)


def test_trailing_stops_by_amount_and_percent_rest(ib):
    start = ib.mark()
    amount = place(ib, stock("AAPL"), make_order("SELL", 1, "TRAIL", aux=50.0))
    pct = place(ib, stock("AAPL"), make_order("SELL", 1, "TRAIL", trailingPercent=30.0))
    for oid in (amount, pct):
        status(ib, oid, "Submitted", start=start)
    oo = ib.wait_for("openOrder", lambda e: e[0] == pct, start=start)
    assert oo[2].trailingPercent == 30.0
    ib.reqGlobalCancel(OrderCancel())
    for oid in (amount, pct):
        status(ib, oid, "Cancelled", start=start)


@pytest.mark.parametrize("tif,marketable,final", [("IOC", False, "Cancelled"), ("FOK", False, "Cancelled"),
                                                  ("IOC", True, "Filled"), ("GTC", False, "Submitted"),
                                                  ("DAY", True, "Filled")])
def test_time_in_force(ib, tif, marketable, final):
    bid, ask = touch(ib, stock("MSFT"))
    lmt = round(ask * 1.02, 2) if marketable else round(bid * 0.9, 2)
    start = ib.mark()
    oid = place(ib, stock("MSFT"), make_order("BUY", 2, "LMT", lmt=lmt, tif=tif))
    status(ib, oid, final, start=start)
    if final == "Submitted":
        ib.cancelOrder(oid, OrderCancel())
        status(ib, oid, "Cancelled", start=start)


def test_bracket_is_held_until_transmit_then_children_follow_the_parent(ib):
    bid, ask = touch(ib, stock("GOOG"))
    start = ib.mark()
    parent = make_order("BUY", 4, "LMT", lmt=round(ask * 1.01, 2), transmit=False)
    pid = place(ib, stock("GOOG"), parent)
    take = make_order("SELL", 4, "LMT", lmt=round(bid * 0.95, 2), parentId=pid, transmit=False)
    tid = place(ib, stock("GOOG"), take)
    assert not [e for e in ib.events[start:] if e.name == "orderStatus" and e[1] == "Filled"]
    stop = make_order("SELL", 4, "STP", aux=round(bid * 0.5, 2), parentId=pid, transmit=True)
    sid = place(ib, stock("GOOG"), stop)
    status(ib, pid, "Filled", start=start)
    status(ib, tid, "Filled", start=start)      # take-profit is marketable once it is live
    status(ib, sid, "Cancelled", start=start)   # its sibling goes


def test_oca_group_cancels_the_others_on_fill(ib):
    bid, ask = touch(ib, stock("AAPL"))
    start = ib.mark()
    resting = place(ib, stock("AAPL"), make_order("BUY", 1, "LMT", lmt=round(bid * 0.9, 2), ocaGroup="oca-1",
                                                  ocaType=1))
    status(ib, resting, "Submitted", start=start)
    filling = place(ib, stock("AAPL"), make_order("BUY", 1, "LMT", lmt=round(ask * 1.01, 2), ocaGroup="oca-1",
                                                  ocaType=1))
    status(ib, filling, "Filled", start=start)
    status(ib, resting, "Cancelled", start=start)


def test_what_if_returns_margin_and_never_executes(ib):
    start = ib.mark()
    oid = place(ib, stock("AAPL"), make_order("BUY", 100, whatIf=True))
    oo = ib.wait_for("openOrder", lambda e: e[0] == oid, start=start)
    state = oo[3]
    assert float(state.initMarginChange) > 0 and float(state.equityWithLoanAfter) > 0
    ib.reqOpenOrders()
    ib.wait_for("openOrderEnd", start=start)
    assert not [e for e in ib.events[start:] if e.name == "execDetails" and e[2].orderId == oid]
    assert not [e for e in ib.events[start:] if e.name == "orderStatus" and e[0] == oid and e[1] == "Filled"]


def test_modify_a_working_order(ib):
    bid, _ = touch(ib, stock("MSFT"))
    start = ib.mark()
    o = make_order("BUY", 5, "LMT", lmt=round(bid * 0.8, 2), tif="GTC")
    oid = place(ib, stock("MSFT"), o)
    status(ib, oid, "Submitted", start=start)
    o.lmtPrice, o.totalQuantity = round(bid * 0.7, 2), Decimal(7)
    mark = ib.mark()
    ib.placeOrder(oid, stock("MSFT"), o)
    oo = ib.wait_for("openOrder", lambda e: e[0] == oid, start=mark)
    assert oo[2].lmtPrice == round(bid * 0.7, 2) and oo[2].totalQuantity == Decimal(7)
    ib.cancelOrder(oid, OrderCancel())


def test_close_auction_fills_moc_and_loc():
    ny = ZoneInfo("America/New_York")
    before_close = datetime(2026, 11, 20, 15, 59, 50, tzinfo=ny)       # a Friday, ten seconds before the close
    with PaperGateway(port=0, start=before_close.astimezone(timezone.utc), speed=10, stream_interval=0.05) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            moc = place(ib, stock("AAPL"), make_order("BUY", 1, "MOC"))
            loc = place(ib, stock("AAPL"), make_order("BUY", 1, "LOC", lmt=100000.0))
            status(ib, moc, "Filled", timeout=20)
            status(ib, loc, "Filled", timeout=20)
        finally:
            ib.stop()


# --- errors --------------------------------------------------------------------------------------
def test_order_errors_103_104_110_200_201_161(ib, gateway):
    oid = place(ib, stock("AAPL"), make_order("BUY", 1))
    status(ib, oid, "Filled")
    ib.placeOrder(oid, stock("AAPL"), make_order("BUY", 1))            # id of a filled order
    assert ib.wait_error(oid, 104)
    rejected_first = place(ib, stock("AAPL"), make_order("BUY", 0))     # rejected: its id is used all the same
    ib.wait_error(rejected_first, 201)
    ib.placeOrder(rejected_first, stock("AAPL"), make_order("BUY", 1))
    assert ib.wait_error(rejected_first, 103)
    ib.cancelOrder(oid, OrderCancel())                                            # done: not cancellable
    assert ib.wait_error(oid, 161)
    bad_tick = place(ib, stock("AAPL"), make_order("BUY", 1, "LMT", lmt=100.001))
    assert ib.wait_error(bad_tick, 110)
    unknown = place(ib, stock("ZZZZ"), make_order("BUY", 1))
    assert ib.wait_error(unknown, 200)
    zero = place(ib, stock("AAPL"), make_order("BUY", 0))
    assert ib.wait_error(zero, 201)
    gateway.reject_next_order("fault injected by test")
    rejected = place(ib, stock("AAPL"), make_order("BUY", 1))
    assert "fault injected by test" in ib.wait_error(rejected, 201)[3]


def test_open_completed_orders_and_executions_with_commissions(ib, new_client):
    other = new_client()
    bid, _ = touch(ib, stock("SPY"))
    resting = place(ib, stock("SPY"), make_order("BUY", 1, "LMT", lmt=round(bid * 0.8, 2), tif="GTC"))
    filled = place(ib, stock("SPY"), make_order("BUY", 2, orderRef="exec-check"))
    status(ib, filled, "Filled")
    start = ib.mark()
    ib.reqOpenOrders()
    opened = ib.collect("openOrder", "openOrderEnd", start=start)
    assert resting in [e[0] for e in opened]
    start = other.mark()
    other.reqAllOpenOrders()
    assert resting in [e[0] for e in other.collect("openOrder", "openOrderEnd", start=start)]
    start = ib.mark()
    ib.reqCompletedOrders(True)
    done = ib.collect("completedOrder", "completedOrdersEnd", start=start)
    assert any(e[1].orderRef == "exec-check" for e in done)
    rid, start = ib.next_req(), ib.mark()
    ib.reqExecutions(rid, ExecutionFilter())
    execs = ib.collect("execDetails", "execDetailsEnd", rid, start=start)
    mine = [e for e in execs if e[2].orderRef == "exec-check"]
    assert mine and mine[0][2].shares == Decimal(2)
    reports = [e[0] for e in ib.events[start:] if e.name == "commissionAndFeesReport"]
    assert mine[0][2].execId in {r.execId for r in reports}
    ib.cancelOrder(resting, OrderCancel())


# --- accounts ------------------------------------------------------------------------------------
def test_positions_account_values_and_pnl_follow_fills():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            oid = place(ib, stock("AAPL"), make_order("BUY", 100))
            fill = status(ib, oid, "Filled")
            start = ib.mark()
            ib.reqPositions()
            pos = ib.collect("position", "positionEnd", start=start)
            aapl = [e for e in pos if e[1].symbol == "AAPL"]
            assert aapl[0][0] == "DU1234567" and aapl[0][2] == Decimal(100)
            assert aapl[0][3] == pytest.approx(fill[4] + 1.0 / 100, rel=1e-6)  # avgCost includes commission
            rid, start = ib.next_req(), ib.mark()
            ib.reqAccountSummary(rid, "All", "NetLiquidation,TotalCashValue,BuyingPower,AvailableFunds")
            summary = {e[2]: float(e[3]) for e in ib.collect("accountSummary", "accountSummaryEnd", rid,
                                                              start=start)}
            assert summary["TotalCashValue"] == pytest.approx(1_000_000 - 100 * fill[4] - 1.0, abs=0.01)
            assert summary["NetLiquidation"] == pytest.approx(1_000_000, rel=0.01)
            start = ib.mark()
            ib.reqAccountUpdates(True, "DU1234567")
            ib.wait_for("accountDownloadEnd", start=start)
            values = {e[0] for e in ib.events[start:] if e.name == "updateAccountValue"}
            assert {"NetLiquidation", "TotalCashValue", "BuyingPower"} <= values
            port = [e for e in ib.events[start:] if e.name == "updatePortfolio"]
            assert port and port[0][0].symbol == "AAPL" and port[0][1] == Decimal(100)
            ib.wait_for("updateAccountTime", start=start)
            rid, start = ib.next_req(), ib.mark()
            ib.reqPnL(rid, "DU1234567", "")
            ib.wait_for("pnl", lambda e: e[0] == rid, start=start)
            sid = ib.next_req()
            ib.reqPnLSingle(sid, "DU1234567", "", 265598)
            single = ib.wait_for("pnlSingle", lambda e: e[0] == sid, start=start)
            assert single[1] == Decimal(100)
            # a later fill re-sends the positions subscription
            start = ib.mark()
            sell = place(ib, stock("AAPL"), make_order("SELL", 40))
            status(ib, sell, "Filled", start=start)
            ib.wait_for("position", lambda e: e[1].symbol == "AAPL" and e[2] == Decimal(60), start=start)
            comm = ib.wait_for("commissionAndFeesReport", start=start)[0]
            assert comm.realizedPNL != 1.7976931348623157e308
        finally:
            ib.stop()


def test_orders_and_positions_survive_a_dropped_connection():
    with PaperGateway(port=0) as gw:
        ib = IBTestClient().start(gw.port, 5)
        bid, _ = touch(ib, stock("AAPL"))
        oid = place(ib, stock("AAPL"), make_order("BUY", 1, "LMT", lmt=round(bid * 0.8, 2), tif="GTC"))
        status(ib, oid, "Submitted")
        gw.drop_connections()
        ib.wait_for("connectionClosed")
        ib.stop()
        again = IBTestClient().start(gw.port, 5)
        try:
            assert again.wait_for("nextValidId")[0] > oid
            start = again.mark()
            again.reqOpenOrders()
            assert oid in [e[0] for e in again.collect("openOrder", "openOrderEnd", start=start)]
        finally:
            again.stop()


def test_fx_and_futures_orders_fill(ib, gateway):
    start = ib.mark()
    fx = place(ib, eurusd(), make_order("BUY", 20000))
    fut = place(ib, listed_es(gateway)[0].contract(), make_order("SELL", 1))
    status(ib, fx, "Filled", start=start)
    status(ib, fut, "Filled", start=start)
