"""Portfolio tables against the paper gateway: real fills through the session, real sockets, no mocks.
Every wait is on an event (order status, a table update, a round trip) with a timeout; no sleeps."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from addin.account.portfolio import (
    EXECUTION_COLUMNS,
    OPEN_ORDER_COLUMNS,
    PNL_COLUMNS,
    PNL_SINGLE_COLUMNS,
    POSITION_COLUMNS,
    SUMMARY_COLUMNS,
    VALUE_COLUMNS,
    Portfolio,
    parse_ib_time,
    parse_value,
)
from addin.ib.session import IBError, RequestTimeout, Session
from addin.paper import PaperGateway

from .contracts import listed_es, stock

AAPL, MSFT = 265598, 272093
START_CASH = 1_000_000.0


class Trader:
    """Places orders through the session and waits for their statuses (orderStatus listener)."""

    def __init__(self, session: Session):
        self.session = session
        self.status: dict[int, str] = {}
        self.cond = threading.Condition()
        self.times = 0
        session.events.orderStatus.subscribe(self._on_status)
        session.events.currentTime.subscribe(self._on_time)

    def _on_status(self, order_id, status, *rest):
        with self.cond:
            self.status[order_id] = status
            self.cond.notify_all()

    def _on_time(self, *args):
        with self.cond:
            self.times += 1
            self.cond.notify_all()

    def wait(self, pred, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(pred, timeout), "timed out"

    def place(self, contract, qty, action="BUY", order_type="MKT", lmt=None, account="", ref="") -> int:
        o = Order()
        o.action, o.totalQuantity, o.orderType, o.account, o.orderRef = action, Decimal(qty), order_type, account, ref
        if lmt is not None:
            o.lmtPrice = lmt
        oid = self.session.next_order_id()
        self.session.send(lambda c: c.placeOrder(oid, contract, o))
        return oid

    def fill(self, contract, qty, action="BUY", **kw) -> int:
        oid = self.place(contract, qty, action, **kw)
        self.wait(lambda: self.status.get(oid) == "Filled")
        return oid

    def cancel(self, oid: int) -> None:
        self.session.send(lambda c: c.cancelOrder(oid, OrderCancel()))

    def barrier(self) -> None:
        """A round trip: everything sent before it has been handled by the gateway when it returns."""
        with self.cond:
            seen = self.times
        self.session.send(lambda c: c.reqCurrentTime())
        self.wait(lambda: self.times > seen)


@pytest.fixture
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1", "DU2"]) as gateway:
        yield gateway


@pytest.fixture
def session(gw):
    s = Session(port=gw.port, client_id=7, backoff_min=0.1, backoff_max=0.5)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def trader(session):
    return Trader(session)


@pytest.fixture
def pf(session):
    with Portfolio(session) as p:
        yield p


def gateway_subs(gw, trader) -> int:
    trader.barrier()
    return gw.call(lambda s: len(s.accounts.subs))


def check_columns(df, columns):
    assert list(df.columns) == list(columns)
    for name, dtype in columns.items():
        assert df[name].dtype == (object if dtype is object else dtype), name


def test_positions_match_the_fills(gw, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    trader.fill(stock("AAPL"), 5, account="DU1")
    trader.fill(stock("MSFT"), 3, account="DU1")

    pos = pf.positions()
    check_columns(pos, POSITION_COLUMNS)
    assert list(pos.symbol) == ["AAPL", "MSFT"] and set(pos.account) == {"DU1"}
    ex = pf.executions(symbol="AAPL")
    assert len(ex) == 2
    row = pos.set_index("con_id").loc[AAPL]
    assert row.position == 15.0 and row.sec_type == "STK" and row.currency == "USD"
    # IB's average cost includes the commissions of the opening fills.
    expected_avg = ((ex.shares * ex.price).sum() + ex.commission.sum()) / 15
    assert row.avg_cost == pytest.approx(expected_avg, abs=1e-6)
    assert row.market_value == pytest.approx(row.position * row.market_price, abs=0.01)
    assert row.unrealized_pnl == pytest.approx(row.market_value - 15 * row.avg_cost, abs=0.02)
    assert row.realized_pnl == 0.0
    nlv = pf.account_summary("NetLiquidation").set_index("account").value["DU1"]
    assert row.weight == pytest.approx(row.market_value / nlv, rel=1e-3)
    assert pos.attrs["live"] is False and pos.attrs["as_of"] is not None
    # One-shot: subscribed for the answer, unsubscribed after it.
    assert gateway_subs(gw, trader) == 0


def test_account_summary_and_values_are_consistent_with_the_fills(gw, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    trader.fill(stock("MSFT"), 4, account="DU1")
    ex = pf.executions(account="DU1")
    spent = (ex.shares * ex.price).sum() + ex.commission.sum()

    summary = pf.account_summary(["NetLiquidation", "TotalCashValue", "GrossPositionValue", "AccountType"])
    check_columns(summary, SUMMARY_COLUMNS)
    du1 = summary[summary.account == "DU1"].set_index("tag")
    assert du1.value["AccountType"] == "INDIVIDUAL"                          # text stays text
    assert isinstance(du1.value["NetLiquidation"], float) and du1.currency["NetLiquidation"] == "USD"
    assert du1.value["TotalCashValue"] == pytest.approx(START_CASH - spent, abs=0.01)
    # One snapshot: NetLiquidation = cash + stock value (a stock-only account).
    assert du1.value["NetLiquidation"] == pytest.approx(du1.value["TotalCashValue"] + du1.value["GrossPositionValue"],
                                                        abs=0.02)
    du2 = summary[summary.account == "DU2"].set_index("tag")
    assert du2.value["TotalCashValue"] == START_CASH and du2.value["GrossPositionValue"] == 0.0

    values = pf.account_values("DU1")
    check_columns(values, VALUE_COLUMNS)
    v = values.set_index(["key", "currency"]).value
    assert v["CashBalance", "USD"] == pytest.approx(START_CASH - spent, abs=0.01)
    assert v["NetLiquidation", "USD"] > 0 and v["AccountCode", ""] == "DU1"
    assert set(pf.account_values().account) == {"DU1", "DU2"}                # default: every managed account
    assert gateway_subs(gw, trader) == 0


def test_executions_commissions_and_realized_pnl_after_a_closing_fill(gw, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1", ref="row-1")
    trader.fill(stock("AAPL"), 4, "SELL", account="DU1", ref="row-2")

    ex = pf.executions()
    check_columns(ex, EXECUTION_COLUMNS)
    assert list(ex.side) == ["BOT", "SLD"] and list(ex.shares) == [10.0, 4.0]
    assert list(ex.order_ref) == ["row-1", "row-2"] and set(ex.client_id) == {7} and set(ex.symbol) == {"AAPL"}
    assert list(ex.commission) == [1.0, 1.0] and set(ex.commission_currency) == {"USD"}   # IB's USD 1 minimum
    assert ex.exec_id.is_unique and (ex.perm_id > 0).all()
    assert ex.time.dt.tz is not None and (abs(ex.time - datetime.now(timezone.utc)) < timedelta(days=2)).all()
    buy, sell = ex.iloc[0], ex.iloc[1]
    assert math.isnan(buy.realized_pnl)                     # IB sends 'unset' for an opening fill
    avg = (10 * buy.price + buy.commission) / 10
    realized = 4 * sell.price - 4 * avg - sell.commission   # average cost, net of both commissions
    assert sell.realized_pnl == pytest.approx(realized, abs=1e-6)

    assert list(pf.executions(side="SELL").exec_id) == [sell.exec_id]
    assert list(pf.executions(side="BOT").exec_id) == [buy.exec_id]
    assert pf.executions(symbol="MSFT").empty and pf.executions(account="DU2").empty
    assert len(pf.executions(since=datetime.now(timezone.utc) - timedelta(days=1))) == 2

    pnl = pf.pnl("DU1")
    check_columns(pnl, PNL_COLUMNS)
    assert list(pnl.index) == ["DU1"] and pnl.realized["DU1"] == pytest.approx(realized, abs=0.01)
    assert pnl.daily["DU1"] == pytest.approx(pnl.unrealized["DU1"] + pnl.realized["DU1"], abs=0.01)
    single = pf.pnl_single("DU1", AAPL)
    check_columns(single, PNL_SINGLE_COLUMNS)
    assert single.position[AAPL] == 6.0 and single.realized[AAPL] == pytest.approx(realized, abs=0.01)
    pos = pf.positions().set_index("con_id")
    assert pos.position[AAPL] == 6.0 and pos.realized_pnl[AAPL] == pytest.approx(realized, abs=0.01)
    assert gateway_subs(gw, trader) == 0

    # Closing the rest: the flat position leaves the table unless asked for (IB lists it with 0).
    trader.fill(stock("AAPL"), 6, "SELL", account="DU1")
    assert pf.positions().empty
    flat = pf.positions(include_flat=True).iloc[0]
    assert flat.position == 0.0 and flat.realized_pnl == pytest.approx(pf.pnl("DU1").realized["DU1"], abs=0.01)


def test_open_orders_show_a_resting_limit_and_drop_it_when_cancelled(gw, pf, trader):
    oid = trader.place(stock("MSFT"), 5, order_type="LMT", lmt=1.00, account="DU1", ref="row-7")
    trader.wait(lambda: trader.status.get(oid) in ("Submitted", "PreSubmitted"))
    orders = pf.open_orders()
    check_columns(orders, OPEN_ORDER_COLUMNS)
    assert len(orders) == 1
    o = orders.iloc[0]
    assert (o.order_id, o.client_id, o.account, o.symbol, o.con_id) == (oid, 7, "DU1", "MSFT", MSFT)
    assert (o.action, o.quantity, o.order_type, o.lmt_price, o.tif) == ("BUY", 5.0, "LMT", 1.0, "DAY")
    assert math.isnan(o.aux_price) and math.isnan(o.avg_fill_price) and o.perm_id > 0
    assert (o.status, o.filled, o.remaining, o.order_ref) == ("Submitted", 0.0, 5.0, "row-7")

    with pf.watch_open_orders():
        assert len(pf.open_orders()) == 1
        trader.cancel(oid)
        assert pf.wait_until(lambda: pf.open_orders().empty, 10)
    assert pf.open_orders().empty


def test_cached_reads_give_the_watched_rows_and_none_unwatched(gw, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    assert pf.cached_position("DU1", AAPL) is None and pf.cached_open_orders() is None
    with pf.watch_positions() as positions, pf.watch_open_orders() as orders, pf.watch_pnl("DU1") as pnl:
        assert pf.wait_until(lambda: positions.current() and orders.current() and pnl.current(), 10)
        assert pf.cached_position("DU1", AAPL) == 10.0 and pf.cached_position("DU1", MSFT) == 0.0
        assert pf.cached_open_orders() == []
        assert isinstance(pf.cached_daily_pnl("DU1"), float)
        assert not positions.current(since=datetime.now(timezone.utc) + timedelta(hours=1))
    assert pf.cached_position("DU1", AAPL) is None and pf.cached_daily_pnl("DU1") is None


def test_watching_keeps_positions_live_without_new_requests(gw, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    kinds = []
    pf.add_change_listener(kinds.append)
    with pf.watch_positions(), pf.watch_executions(), pf.watch_pnl("DU1"):
        first = pf.positions()
        assert first.attrs["live"] is True and first.position.tolist() == [10.0]
        assert len(pf.executions()) == 1
        kinds.clear()

        trader.fill(stock("AAPL"), 5, account="DU1")
        # The fill arrives by itself: positions, portfolio values and the live execution update.
        assert pf.wait_until(lambda: {"positions", "portfolio", "executions"} <= set(kinds), 10)
        assert pf.wait_until(lambda: pf.positions().position.tolist() == [15.0], 10)

        # Reads of watched tables send nothing: with every answer delayed 3 s they still return at once.
        gw.delay_answers(3)
        try:
            pos = pf.positions(timeout=1)
            ex = pf.executions(timeout=1)
            pnl = pf.pnl("DU1", timeout=1)
            with pytest.raises(RequestTimeout):
                pf.account_summary("NetLiquidation", timeout=0.5)       # not watched: a real request
        finally:
            gw.delay_answers(0)
        assert pos.position.tolist() == [15.0] and pos.market_value.iloc[0] > 0
        assert ex.shares.tolist() == [10.0, 5.0] and ex.commission.tolist() == [1.0, 1.0]
        assert not math.isnan(pnl.unrealized["DU1"])


def test_unwatch_stops_the_subscription_and_watches_are_reference_counted(gw, pf, trader):
    assert gateway_subs(gw, trader) == 0
    w1 = pf.watch_positions()
    w2 = pf.watch_positions()
    assert gateway_subs(gw, trader) == 2                    # reqPositions + reqAccountUpdates, once
    w1.close()
    w1.close()                                              # idempotent
    assert gateway_subs(gw, trader) == 2                    # w2 still watches
    assert pf.positions().attrs["live"] is True
    w2.close()
    assert gateway_subs(gw, trader) == 0

    pf.watch_positions()
    assert gateway_subs(gw, trader) == 2
    pf.unwatch_positions()
    assert gateway_subs(gw, trader) == 0
    with pytest.raises(ValueError):
        pf.unwatch_positions()

    with pf.watch_account_summary("NetLiquidation"), pf.watch_account_values("DU1"), \
            pf.watch_pnl("DU1"), pf.watch_pnl_single("DU1", AAPL):
        assert gateway_subs(gw, trader) == 4
        with pf.watch_pnl("DU1"):
            assert gateway_subs(gw, trader) == 4
        assert pf.watched() == {"account_summary NetLiquidation All": 1, "account_values DU1": 1,
                                "pnl DU1": 1, "pnl_single DU1 265598": 1}
    assert gateway_subs(gw, trader) == 0 and pf.watched() == {}


def test_watched_data_survives_a_dropped_connection_and_comes_back_live(gw, session, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    trader.place(stock("MSFT"), 2, order_type="LMT", lmt=1.00, account="DU1")
    watches = [pf.watch_positions(), pf.watch_executions(), pf.watch_open_orders(), pf.watch_pnl("DU1"),
               pf.watch_account_summary("NetLiquidation,TotalCashValue")]
    assert pf.wait_until(lambda: len(pf.open_orders()) == 1, 10)
    assert pf.positions().position.tolist() == [10.0] and len(pf.executions()) == 1
    assert gateway_subs(gw, trader) == 4          # positions, account updates, P&L, summary

    gw.refuse_connections(1.0)
    gw.drop_connections()
    assert session.wait_for_state("reconnecting", 5)
    # While the connection is down the watched tables keep their last data (marked not live) ...
    pos = pf.positions()
    assert pos.position.tolist() == [10.0] and pos.attrs["live"] is False
    assert len(pf.executions()) == 1 and len(pf.open_orders()) == 1
    assert pf.account_summary("NetLiquidation,TotalCashValue").value.notna().all()
    # ... and a one-shot read of an unwatched table is a clear error.
    with pytest.raises(IBError) as err:
        pf.pnl("DU2")
    assert err.value.code == 504

    assert session.wait_for_state("connected", 15)
    trader.fill(stock("AAPL"), 5, account="DU1")
    # Only re-sent subscriptions can bring these: the gateway forgot them with the old socket.
    assert pf.wait_until(lambda: pf.positions().position.tolist() == [15.0], 10)
    assert pf.wait_until(lambda: pf.executions().shares.tolist() == [10.0, 5.0], 10)
    assert pf.wait_until(lambda: pf.positions().market_value.iloc[0] > 14 * 200, 10)
    assert pf.positions().attrs["live"] is True and len(pf.open_orders()) == 1
    assert pf.pnl("DU1").realized["DU1"] == 0.0
    assert gateway_subs(gw, trader) == 4
    for w in watches:
        w.close()
    assert gateway_subs(gw, trader) == 0


def test_several_accounts_and_the_portfolio_account(gw, session, pf, trader):
    trader.fill(stock("AAPL"), 10, account="DU1")
    front = listed_es(gw)[0]
    trader.fill(front.contract(), 1, account="DU2")
    pos = pf.positions().set_index("account")
    assert list(pos.symbol) == ["AAPL", front.text]
    assert pos.sec_type["DU2"] == "FUT" and pos.con_id["DU2"] == front.con_id
    # The portfolio account is DU1 (the first): IB serves this client DU1's updatePortfolio only, so DU2's
    # price, value, P&L and weight come from reqPnLSingle and DU2's own account values: no blank.
    assert pos.market_value["DU1"] > 0
    du2 = pos.loc["DU2"]
    assert not any(math.isnan(du2[c]) for c in ("market_price", "market_value", "unrealized_pnl", "realized_pnl",
                                                "weight"))
    # Checked against reqPnLSingle read on its own and DU2's NetLiquidation (reqAccountUpdatesMulti), read
    # before and after the positions with no update in between (the market moves: NetLiquidation with it).
    def nlv_and_value():
        values = pf.account_values("DU2")
        nlv = float(values[(values.key == "NetLiquidation") & (values.currency == "USD")].value.iloc[0])
        return nlv, pf.pnl_single("DU2", front.con_id).iloc[0]
    for _ in range(100):
        (nlv, single), du2, after = nlv_and_value(), pf.positions().set_index("account").loc["DU2"], nlv_and_value()
        if nlv == after[0] and single.equals(after[1]):
            break
    else:
        pytest.fail("DU2's NetLiquidation and P&L changed during every one of 100 reads")
    assert du2.market_value == pytest.approx(single.value, rel=1e-6)
    assert du2.market_price == pytest.approx(single.value / 50, rel=1e-6)          # ES multiplier 50
    assert du2.weight == pytest.approx(single.value / nlv, rel=1e-6)
    assert du2.unrealized_pnl == pytest.approx(single.unrealized, abs=1e-6)
    assert pf.positions(account="DU2").symbol.tolist() == [front.text]

    with Portfolio(session, account="DU2") as du2:
        row = du2.positions(account="DU2").iloc[0]
        fill = du2.executions(account="DU2").iloc[0]
        assert row.avg_cost == pytest.approx(fill.price * 50 + fill.commission, abs=1e-6)   # incl. multiplier
        assert row.market_value == pytest.approx(row.market_price * 50, abs=0.01)
        assert not math.isnan(row.unrealized_pnl) and not math.isnan(row.weight)


def test_readers_on_many_threads_while_fills_arrive(gw, pf, trader):
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(read):
        try:
            while not stop.is_set():
                read()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with pf.watch_positions(), pf.watch_executions():
        threads = [threading.Thread(target=reader, args=(fn,)) for fn in
                   (pf.positions, pf.executions, pf.positions, lambda: pf.pnl("DU1"))]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                trader.fill(stock("AAPL"), 2, account="DU1")
            assert pf.wait_until(lambda: pf.positions().position.tolist() == [10.0], 10)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    assert errors == []
    assert pf.executions().shares.sum() == 10.0


def test_errors_are_clear(gw, session, pf):
    with pytest.raises(IBError) as err:
        pf.pnl("DU999")
    assert err.value.code == 321 and "DU999" in err.value.text
    with pytest.raises(ValueError):
        pf.pnl_single("DU1", 0)
    with pytest.raises(ValueError):
        pf.executions(side="HOLD")
    with pytest.raises(ValueError):
        pf.account_summary([])
    with Portfolio(session, account="DU999") as wrong:
        with pytest.raises(IBError) as err:
            wrong.positions(timeout=5)
        assert err.value.code == 321 and "DU999" in err.value.text
    session.disconnect()
    with pytest.raises(IBError) as err:
        pf.positions()
    assert err.value.code == 504


def test_values_at_the_edge():
    assert parse_value("999995.80") == 999995.8 and parse_value("INDIVIDUAL") == "INDIVIDUAL"
    assert parse_value("") == "" and math.isnan(parse_value("1.7976931348623157E308"))
    utc = timezone.utc
    assert parse_ib_time("20261121 14:54:07 UTC") == datetime(2026, 11, 21, 14, 54, 7, tzinfo=utc)
    assert parse_ib_time("20260115 09:30:00 US/Eastern") == datetime(2026, 1, 15, 14, 30, tzinfo=utc)
    assert parse_ib_time("20260715 09:30:00 America/New_York") == datetime(2026, 7, 15, 13, 30, tzinfo=utc)
    assert parse_ib_time("20260715-13:30:00") == datetime(2026, 7, 15, 13, 30, tzinfo=utc)
    assert parse_ib_time("") is None and parse_ib_time("garbage") is None
