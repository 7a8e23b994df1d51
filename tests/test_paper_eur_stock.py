"""The paper gateway's EUR stock (SAP on IBIS/Xetra) seen from outside with ibapi: IB-shaped contract
details with Xetra's hours in exchange-hours mode, a quote, a fill, and the account values in EUR and
in the USD base (converted with the gateway's EUR.USD, which the test reads itself)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ibapi.order import Order

from addin.paper import PaperGateway

from .contracts import contract, eurusd
from .ibclient import IBTestClient

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)      # a Tuesday, 13:00 in Frankfurt (Xetra open)
ACCOUNT = "DU1"


def sap(currency="EUR"):
    return contract("SAP", currency=currency)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, start=START, speed=0, hours="exchange", accounts=[ACCOUNT], stream_interval=0.05,
                      account_interval=0.2) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def ib(gw):
    client = IBTestClient().start(gw.port, 41)
    yield client
    client.stop()


def details_of(ib, c):
    rid = ib.next_req()
    start = ib.mark()
    ib.reqContractDetails(rid, c)
    return rid, [e.args[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def snapshot(ib, c) -> dict[int, float]:
    rid = ib.next_req()
    start = ib.mark()
    ib.reqMktData(rid, c, "", True, False, [])
    ib.wait_for("tickSnapshotEnd", lambda e: e.args[0] == rid, start=start)
    with ib.cond:
        return {e.args[1]: e.args[2] for e in ib.events[start:] if e.name == "tickPrice" and e.args[0] == rid}


def account_values(ib, account) -> tuple[dict, dict]:
    start = ib.mark()
    ib.reqAccountUpdates(True, account)
    end = ib.wait_for("accountDownloadEnd", lambda e: e.args[0] == account, start=start)
    ib.reqAccountUpdates(False, account)
    with ib.cond:
        events = ib.events[start:]
        events = events[:next(i for i, e in enumerate(events) if e is end)]
    values = {(e.args[0], e.args[2]): e.args[1] for e in events if e.name == "updateAccountValue"}
    portfolio = {e.args[0].conId: e.args for e in events if e.name == "updatePortfolio"}
    return values, portfolio


def test_contract_details_are_ib_shaped_with_xetra_hours(ib):
    _, [d] = details_of(ib, sap())
    c = d.contract
    assert (c.symbol, c.secType, c.exchange, c.primaryExchange, c.currency) == ("SAP", "STK", "SMART", "IBIS", "EUR")
    assert (c.localSymbol, c.tradingClass, c.conId) == ("SAP", "XETRA", 898000001)
    assert d.timeZoneId == "MET" and d.minTick == 0.01 and d.longName == "SAP SE"
    assert "IBIS" in d.validExchanges.split(",")
    assert [(t.tag, t.value) for t in d.secIdList] == [("ISIN", "DE0007164600")]
    assert d.tradingHours.startswith("20260310:0900-20260310:1730;20260311:0900-20260311:1730")
    assert d.liquidHours.startswith("20260310:0900-20260310:1730")
    # the same instrument by its primary exchange, and not in USD (IB: no security definition)
    _, [by_ibis] = details_of(ib, contract("SAP", exchange="IBIS", currency="EUR"))
    assert by_ibis.contract.conId == c.conId
    rid, none = details_of_or_error(ib, sap("USD"))
    assert none == [] and ib.wait_error(rid, 200)


def details_of_or_error(ib, c):
    rid = ib.next_req()
    start = ib.mark()
    ib.reqContractDetails(rid, c)
    ib.wait_for("error", lambda e: e.args[0] == rid, start=start)
    with ib.cond:
        return rid, [e for e in ib.events[start:] if e.name == "contractDetails" and e.args[0] == rid]


def test_a_fill_is_booked_in_eur_and_valued_in_the_usd_base(ib):
    before, _ = account_values(ib, ACCOUNT)
    quote = snapshot(ib, sap())
    bid, ask, last = quote[1], quote[2], quote[4]
    assert 0 < bid < ask and round(bid * 100) == pytest.approx(bid * 100, abs=1e-9)
    fx = snapshot(ib, eurusd())
    eur_rate = round((fx[1] + fx[2]) / 2, 6)          # USD per EUR: the EUR.USD mid (no FX trades)

    oid = ib.next_order_id()
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.account = "BUY", 10, "MKT", ACCOUNT
    start = ib.mark()
    ib.placeOrder(oid, sap(), o)
    ib.wait_for("orderStatus", lambda e: e.args[0] == oid and e.args[1] == "Filled", start=start)
    execution = ib.wait_for("execDetails", lambda e: e.args[2].orderId == oid, start=start).args[2]
    report = ib.wait_for("commissionAndFeesReport", lambda e: e.args[0].execId == execution.execId,
                         start=start).args[0]
    assert execution.price == ask and float(execution.shares) == 10     # a market buy takes the ask
    assert report.currency == "USD" and report.commissionAndFees == pytest.approx(1.00)   # USD 1.00 minimum

    values, portfolio = account_values(ib, ACCOUNT)
    ib_row = portfolio[898000001]
    _, position, price, mv = ib_row[:4]
    assert float(position) == 10 and price == last and mv == pytest.approx(10 * last, abs=0.005)
    assert float(values[("ExchangeRate", "EUR")]) == pytest.approx(eur_rate, abs=1e-6)
    eur_cash = -10 * ask                   # the EUR ledger pays the shares; the USD commission comes from USD
    assert float(values[("CashBalance", "EUR")]) == pytest.approx(eur_cash, abs=0.01)
    assert float(values[("NetLiquidationByCurrency", "EUR")]) == pytest.approx(eur_cash + 10 * last, abs=0.01)
    assert float(values[("StockMarketValue", "BASE")]) == pytest.approx(10 * last * eur_rate, abs=0.01)
    nlv_before = float(before[("NetLiquidation", "USD")])
    assert float(values[("NetLiquidation", "USD")]) == pytest.approx(
        nlv_before + (eur_cash + 10 * last) * eur_rate - 1.00, abs=0.02)
    assert float(values[("CashBalance", "USD")]) == pytest.approx(float(before[("CashBalance", "USD")]) - 1.00,
                                                                 abs=0.005)


def test_after_xetras_close_a_sap_order_waits_while_a_us_stock_fills():
    evening = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)       # 19:00 Frankfurt (closed), 14:00 New York (open)
    with PaperGateway(port=0, start=evening, speed=0, hours="exchange", accounts=[ACCOUNT],
                      stream_interval=0.05) as late:
        client = IBTestClient().start(late.port, 43)
        try:
            statuses, oids = {}, {}
            for symbol, c in (("SAP", sap()), ("AAPL", contract("AAPL"))):
                oid = oids[symbol] = client.next_order_id()
                o = Order()
                o.action, o.totalQuantity, o.orderType, o.account, o.tif = "BUY", 1, "MKT", ACCOUNT, "DAY"
                start = client.mark()
                client.placeOrder(oid, c, o)
                want = "Filled" if symbol == "AAPL" else "PreSubmitted"
                statuses[symbol] = client.wait_for("orderStatus", lambda e, oid=oid, want=want: e.args[0] == oid
                                                   and e.args[1] == want, start=start).args[1]
            with client.cond:
                sap_fills = [e for e in client.events if e.name == "execDetails" and e.args[2].orderId == oids["SAP"]]
            assert statuses == {"SAP": "PreSubmitted", "AAPL": "Filled"} and sap_fills == []
        finally:
            client.stop()


def test_us_scanners_leave_the_xetra_stock_out(ib):
    from ibapi.scanner import ScannerSubscription
    sub = ScannerSubscription()
    sub.instrument, sub.locationCode, sub.scanCode, sub.numberOfRows = "STK", "STK.US", "MOST_ACTIVE", 50
    rid = ib.next_req()
    start = ib.mark()
    ib.reqScannerSubscription(rid, sub, [], [])
    rows = ib.collect("scannerData", "scannerDataEnd", req_id=rid, start=start)
    ib.cancelScannerSubscription(rid)
    symbols = {r.args[2].contract.symbol for r in rows}
    assert "AAPL" in symbols and "SAP" not in symbols
