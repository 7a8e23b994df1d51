"""Every request ibapi can send at the gateway's server version gets an answer (a callback, IB's error,
or, where TWS sends nothing, silence that leaves the connection working), and the reference data
requests are served in IB's shapes to ibapi and to ib_async.

The walk sends each request through the real ``EClient`` method and waits for an event that refers to
it, while a second client on the same gateway must keep getting reqCurrentTime answers throughout."""

from __future__ import annotations

import itertools
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ibapi import comm
from ibapi.common import WshEventData
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter
from ibapi.message import OUT
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel
from ibapi.scanner import ScannerSubscription

from addin.paper import PaperGateway
from addin.paper.services.reference import SCAN_CODES

from .ibclient import IBTestClient

START = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)      # a Tuesday, 11:00 New York: the session is open
FRONT_ES = "20260320"                                   # ES front month at START (third Friday of March)
ANSWER_TIMEOUT = 3.0

_client_ids = itertools.count(301)


@pytest.fixture(scope="module")
def gateway():
    # speed 0: the replay clock stands still, so quotes (and scanner rows) are the same on every run;
    # max_rate lifted so the walk's requests are never refused with error 100 instead of answered.
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0,
                      max_rate=10_000) as gw:
        yield gw


@pytest.fixture
def client(gateway):
    c = IBTestClient().start(gateway.port, next(_client_ids))
    yield c
    c.stop()


def stock(symbol="AAPL") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "STK", "SMART", "USD"
    return c


def cont_future() -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange = "ES", "CONTFUT", "CME"
    return c


def far_limit_order() -> Order:
    o = Order()
    o.action, o.orderType, o.totalQuantity, o.lmtPrice, o.tif = "BUY", "LMT", Decimal(1), 1.00, "DAY"
    return o


def scan(code="TOP_PERC_GAIN", rows=10, location="STK.US.MAJOR") -> ScannerSubscription:
    s = ScannerSubscription()
    s.instrument, s.locationCode, s.scanCode, s.numberOfRows = "STK", location, code, rows
    return s


# --- the walk -------------------------------------------------------------------------------------
# OUT id -> (call(client, rid), answer): answer is "rid" (any event whose first argument is the
# request id: its callbacks or its error), a tuple of callback names (requests without an id; an error
# with reqId -1 counts too), or "silent" (TWS sends nothing: the next reqCurrentTime on the same
# connection must be answered and no error may name the request).
RID, SILENT = "rid", "silent"

WALK = {
    OUT.REQ_MKT_DATA: (lambda c, r: c.reqMktData(r, stock(), "", True, False, []), RID),
    OUT.CANCEL_MKT_DATA: (lambda c, r: c.cancelMktData(r), RID),                       # unknown id: 300
    OUT.PLACE_ORDER: (lambda c, r: c.placeOrder(r, stock(), far_limit_order()), RID),
    OUT.CANCEL_ORDER: (lambda c, r: c.cancelOrder(r, OrderCancel()), RID),             # unknown: 10147
    OUT.REQ_OPEN_ORDERS: (lambda c, r: c.reqOpenOrders(), ("openOrderEnd",)),
    OUT.REQ_ACCT_DATA: (lambda c, r: c.reqAccountUpdates(True, ""), ("accountDownloadEnd",)),
    OUT.REQ_EXECUTIONS: (lambda c, r: c.reqExecutions(r, ExecutionFilter()), RID),
    OUT.REQ_IDS: (lambda c, r: c.reqIds(1), ("nextValidId",)),
    OUT.REQ_CONTRACT_DATA: (lambda c, r: c.reqContractDetails(r, stock()), RID),
    OUT.REQ_MKT_DEPTH: (lambda c, r: c.reqMktDepth(r, stock(), 5, False, []), RID),
    OUT.CANCEL_MKT_DEPTH: (lambda c, r: c.cancelMktDepth(r, False), SILENT),
    OUT.REQ_NEWS_BULLETINS: (lambda c, r: c.reqNewsBulletins(True), SILENT),
    OUT.CANCEL_NEWS_BULLETINS: (lambda c, r: c.cancelNewsBulletins(), SILENT),
    OUT.SET_SERVER_LOGLEVEL: (lambda c, r: c.setServerLogLevel(3), SILENT),
    OUT.REQ_AUTO_OPEN_ORDERS: (lambda c, r: c.reqAutoOpenOrders(True), ("error",)),    # clientId != 0: 327
    OUT.REQ_ALL_OPEN_ORDERS: (lambda c, r: c.reqAllOpenOrders(), ("openOrderEnd",)),
    OUT.REQ_MANAGED_ACCTS: (lambda c, r: c.reqManagedAccts(), ("managedAccounts",)),
    OUT.REQ_FA: (lambda c, r: c.requestFA(1), ("error",)),
    OUT.REPLACE_FA: (lambda c, r: c.replaceFA(r, 1, "<ListOfGroups/>"), RID),
    OUT.REQ_HISTORICAL_DATA: (lambda c, r: c.reqHistoricalData(r, stock(), "", "1 D", "1 hour", "TRADES", 1, 1,
                                                               False, []), RID),
    OUT.EXERCISE_OPTIONS: (lambda c, r: c.exerciseOptions(r, stock(), 1, 1, "", 0, "", "", False), RID),
    OUT.REQ_SCANNER_SUBSCRIPTION: (lambda c, r: c.reqScannerSubscription(r, scan(), [], []), RID),
    OUT.CANCEL_SCANNER_SUBSCRIPTION: (lambda c, r: c.cancelScannerSubscription(r), RID),   # unknown: 365
    OUT.REQ_SCANNER_PARAMETERS: (lambda c, r: c.reqScannerParameters(), ("scannerParameters",)),
    OUT.CANCEL_HISTORICAL_DATA: (lambda c, r: c.cancelHistoricalData(r), RID),         # unknown: 366
    OUT.REQ_CURRENT_TIME: (lambda c, r: c.reqCurrentTime(), ("currentTime",)),
    # the first bar comes when the replay clock passes its 5-second end: none yet, and no error
    OUT.REQ_REAL_TIME_BARS: (lambda c, r: c.reqRealTimeBars(r, stock(), 5, "TRADES", False, []), SILENT),
    OUT.CANCEL_REAL_TIME_BARS: (lambda c, r: c.cancelRealTimeBars(r), SILENT),
    OUT.REQ_FUNDAMENTAL_DATA: (lambda c, r: c.reqFundamentalData(r, stock(), "ReportSnapshot", []), RID),
    OUT.CANCEL_FUNDAMENTAL_DATA: (lambda c, r: c.cancelFundamentalData(r), SILENT),
    OUT.REQ_CALC_IMPLIED_VOLAT: (lambda c, r: c.calculateImpliedVolatility(r, stock(), 5.0, 230.0, []), RID),
    OUT.REQ_CALC_OPTION_PRICE: (lambda c, r: c.calculateOptionPrice(r, stock(), 0.3, 230.0, []), RID),
    OUT.CANCEL_CALC_IMPLIED_VOLAT: (lambda c, r: c.cancelCalculateImpliedVolatility(r), SILENT),
    OUT.CANCEL_CALC_OPTION_PRICE: (lambda c, r: c.cancelCalculateOptionPrice(r), SILENT),
    OUT.REQ_GLOBAL_CANCEL: (lambda c, r: c.reqGlobalCancel(OrderCancel()), SILENT),
    OUT.REQ_MARKET_DATA_TYPE: (lambda c, r: c.reqMarketDataType(1), SILENT),
    OUT.REQ_POSITIONS: (lambda c, r: c.reqPositions(), ("positionEnd",)),
    OUT.REQ_ACCOUNT_SUMMARY: (lambda c, r: c.reqAccountSummary(r, "All", "NetLiquidation"), RID),
    OUT.CANCEL_ACCOUNT_SUMMARY: (lambda c, r: c.cancelAccountSummary(r), SILENT),
    OUT.CANCEL_POSITIONS: (lambda c, r: c.cancelPositions(), SILENT),
    OUT.QUERY_DISPLAY_GROUPS: (lambda c, r: c.queryDisplayGroups(r), RID),
    OUT.SUBSCRIBE_TO_GROUP_EVENTS: (lambda c, r: c.subscribeToGroupEvents(r, 1), RID),
    OUT.UPDATE_DISPLAY_GROUP: (lambda c, r: c.updateDisplayGroup(r, "265598@SMART"), RID),
    OUT.UNSUBSCRIBE_FROM_GROUP_EVENTS: (lambda c, r: c.unsubscribeFromGroupEvents(r), SILENT),
    OUT.REQ_POSITIONS_MULTI: (lambda c, r: c.reqPositionsMulti(r, "DU1234567", ""), RID),
    OUT.CANCEL_POSITIONS_MULTI: (lambda c, r: c.cancelPositionsMulti(r), SILENT),
    OUT.REQ_ACCOUNT_UPDATES_MULTI: (lambda c, r: c.reqAccountUpdatesMulti(r, "DU1234567", "", False), RID),
    OUT.CANCEL_ACCOUNT_UPDATES_MULTI: (lambda c, r: c.cancelAccountUpdatesMulti(r), SILENT),
    OUT.REQ_SEC_DEF_OPT_PARAMS: (lambda c, r: c.reqSecDefOptParams(r, "AAPL", "", "STK", 265598), RID),
    OUT.REQ_SOFT_DOLLAR_TIERS: (lambda c, r: c.reqSoftDollarTiers(r), RID),
    OUT.REQ_FAMILY_CODES: (lambda c, r: c.reqFamilyCodes(), ("familyCodes",)),
    OUT.REQ_MATCHING_SYMBOLS: (lambda c, r: c.reqMatchingSymbols(r, "AA"), RID),
    OUT.REQ_MKT_DEPTH_EXCHANGES: (lambda c, r: c.reqMktDepthExchanges(), ("mktDepthExchanges",)),
    OUT.REQ_SMART_COMPONENTS: (lambda c, r: c.reqSmartComponents(r, "9c0001"), RID),
    OUT.REQ_NEWS_ARTICLE: (lambda c, r: c.reqNewsArticle(r, "BRFG", "BRFG$1", []), RID),
    OUT.REQ_NEWS_PROVIDERS: (lambda c, r: c.reqNewsProviders(), ("newsProviders",)),
    OUT.REQ_HISTORICAL_NEWS: (lambda c, r: c.reqHistoricalNews(r, 265598, "BRFG", "", "", 10, []), RID),
    OUT.REQ_HEAD_TIMESTAMP: (lambda c, r: c.reqHeadTimeStamp(r, stock(), "TRADES", 1, 1), RID),
    OUT.REQ_HISTOGRAM_DATA: (lambda c, r: c.reqHistogramData(r, stock(), True, "1 day"), RID),
    OUT.CANCEL_HISTOGRAM_DATA: (lambda c, r: c.cancelHistogramData(r), SILENT),
    OUT.CANCEL_HEAD_TIMESTAMP: (lambda c, r: c.cancelHeadTimeStamp(r), SILENT),
    OUT.REQ_MARKET_RULE: (lambda c, r: c.reqMarketRule(26), ("marketRule",)),
    OUT.REQ_PNL: (lambda c, r: c.reqPnL(r, "DU1234567", ""), RID),
    OUT.CANCEL_PNL: (lambda c, r: c.cancelPnL(r), SILENT),
    OUT.REQ_PNL_SINGLE: (lambda c, r: c.reqPnLSingle(r, "DU1234567", "", 265598), RID),
    OUT.CANCEL_PNL_SINGLE: (lambda c, r: c.cancelPnLSingle(r), SILENT),
    OUT.REQ_HISTORICAL_TICKS: (lambda c, r: c.reqHistoricalTicks(r, stock(), "20260310 10:00:00 US/Eastern", "",
                                                                 10, "TRADES", 1, True, []), RID),
    OUT.REQ_TICK_BY_TICK_DATA: (lambda c, r: c.reqTickByTickData(r, stock(), "BidAsk", 0, False), RID),
    OUT.CANCEL_TICK_BY_TICK_DATA: (lambda c, r: c.cancelTickByTickData(r), SILENT),
    OUT.REQ_COMPLETED_ORDERS: (lambda c, r: c.reqCompletedOrders(False), ("completedOrdersEnd",)),
    OUT.REQ_WSH_META_DATA: (lambda c, r: c.reqWshMetaData(r), RID),
    OUT.CANCEL_WSH_META_DATA: (lambda c, r: c.cancelWshMetaData(r), SILENT),
    OUT.REQ_WSH_EVENT_DATA: (lambda c, r: c.reqWshEventData(r, WshEventData()), RID),
    OUT.CANCEL_WSH_EVENT_DATA: (lambda c, r: c.cancelWshEventData(r), SILENT),
    OUT.REQ_USER_INFO: (lambda c, r: c.reqUserInfo(r), RID),
}

#: Not walked through EClient, and why.
NOT_WALKED = {
    OUT.START_API: "the handshake itself: sent once by connect()",
    OUT.VERIFY_REQUEST: "ibapi refuses it unless extraAuth was asked for at connect (handshake state); "
                        "the raw message is tested below",
    OUT.VERIFY_MESSAGE: "as VERIFY_REQUEST",
    OUT.VERIFY_AND_AUTH_REQUEST: "as VERIFY_REQUEST",
    OUT.VERIFY_AND_AUTH_MESSAGE: "as VERIFY_REQUEST",
    OUT.REQ_CURRENT_TIME_IN_MILLIS: "ibapi sends it only from server version 197; the raw message is tested below",
    OUT.CANCEL_CONTRACT_DATA: "ibapi sends it only from server version 215 (protobuf); raw message tested below",
    OUT.CANCEL_HISTORICAL_TICKS: "ibapi sends it only as protobuf (from 201); raw message tested below",
    OUT.REQ_CONFIG: "protobuf only (server version 219)",
    OUT.UPDATE_CONFIG: "protobuf only (server version 221)",
}

_FARM = {2104, 2106, 2158}


def _out_ids() -> set[int]:
    return {v for k, v in vars(OUT).items() if not k.startswith("_")}


def test_the_walk_covers_every_request_id():
    assert set(WALK) | set(NOT_WALKED) == _out_ids()
    assert not set(WALK) & set(NOT_WALKED)


def _wait_answer(client: IBTestClient, mark: int, answer, rid: int, what: str) -> None:
    deadline = time.monotonic() + ANSWER_TIMEOUT
    with client.cond:
        while not _answered_locked(client, mark, answer, rid):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: no answer within {ANSWER_TIMEOUT} s; "
                                     f"events: {[(e.name, e.args[:3]) for e in client.events[mark:]]}")
            client.cond.wait(left)


def _answered_locked(client, mark, answer, rid) -> bool:
    for e in client.events[mark:]:
        if e.name == "error" and e.args[2] in _FARM:
            continue
        if answer == RID and e.args and e.args[0] == rid:
            return True
        if isinstance(answer, tuple) and (e.name in answer or (e.name == "error" and e.args[0] == -1)):
            return True
    return False


def _current_time(client: IBTestClient, what: str) -> None:
    mark = client.mark()
    client.reqCurrentTime()
    client.wait_for("currentTime", start=mark, timeout=ANSWER_TIMEOUT)


def test_every_request_is_answered_while_another_client_is_served(gateway, client):
    observer = IBTestClient().start(gateway.port, next(_client_ids))
    try:
        for msg_id in sorted(WALK):
            call, answer = WALK[msg_id]
            rid = 7000 + msg_id
            what = f"OUT {msg_id}"
            mark = client.mark()
            call(client, rid)
            if answer == SILENT:
                _current_time(client, what)              # in order: the request was read and passed
                named = [e for e in client.events[mark:] if e.name == "error" and e.args[0] == rid]
                assert not named, f"{what}: silent in TWS, but answered {named}"
            else:
                _wait_answer(client, mark, answer, rid, what)
            _current_time(observer, f"observer after {what}")
    finally:
        observer.stop()
    assert not [e for e in client.events if e.name == "connectionClosed"]


def test_raw_messages_ibapi_does_not_send_at_178_are_answered(client):
    """The ids ibapi keeps for later server versions, the verify family, and an id that is no TWS
    message: each gets its answer (or, for cancels, silence) and the connection stays usable."""
    mark = client.mark()
    client.sendMsg(OUT.REQ_CURRENT_TIME_IN_MILLIS, "")
    millis = client.wait_for("currentTimeInMillis", start=mark).args[0]
    assert millis == int(START.timestamp() * 1000)
    for msg_id, body in ((OUT.VERIFY_REQUEST, comm.make_field(1) + comm.make_field("x") + comm.make_field("1")),
                         (OUT.VERIFY_MESSAGE, comm.make_field(1) + comm.make_field("data")),
                         (OUT.REQ_CONFIG, comm.make_field(5)), (250, comm.make_field(1))):
        mark = client.mark()
        client.sendMsg(msg_id, body)
        err = client.wait_for("error", lambda e: e.args[2] in (320, 321), start=mark, timeout=ANSWER_TIMEOUT)
        assert err.args[0] == -1
    for msg_id in (OUT.CANCEL_CONTRACT_DATA, OUT.CANCEL_HISTORICAL_TICKS):
        mark = client.mark()
        client.sendMsg(msg_id, comm.make_field(5))
        _current_time(client, f"raw {msg_id}")
        assert "error" not in client.names(mark)


# --- the served requests, one by one (ibapi) ------------------------------------------------------
def test_matching_symbols_prefix_then_description(client):
    client.reqMatchingSymbols(1, "a")
    ev = client.wait_for("symbolSamples", lambda e: e.args[0] == 1, timeout=ANSWER_TIMEOUT)
    got = [(d.contract.symbol, d.contract.secType) for d in ev.args[1]]
    assert got[0] == ("AAPL", "STK")                     # symbol prefix before description matches
    assert ("GOOG", "STK") in got                        # "ALPHABET INC-CL C" contains "A"
    assert len(got) <= 16
    aapl = ev.args[1][0]
    assert (aapl.contract.conId, aapl.contract.primaryExchange, aapl.contract.currency) == (265598, "NASDAQ", "USD")
    assert aapl.contract.description == "APPLE INC" and aapl.derivativeSecTypes == []

    mark = client.mark()
    client.reqMatchingSymbols(2, "es")
    ev = client.wait_for("symbolSamples", lambda e: e.args[0] == 2, start=mark)
    es = [d for d in ev.args[1] if d.contract.symbol == "ES"]
    assert len(es) == 1 and es[0].contract.secType == "IND" and es[0].derivativeSecTypes == ["FUT"]

    mark = client.mark()
    client.reqMatchingSymbols(3, "zzzz")
    assert client.wait_for("symbolSamples", lambda e: e.args[0] == 3, start=mark).args[1] == []


def test_matching_symbols_at_most_16():
    with PaperGateway(port=0, speed=0, start=START, synthetic=40) as big:
        c = IBTestClient().start(big.port, 1)
        try:
            c.reqMatchingSymbols(4, "SIM")
            ev = c.wait_for("symbolSamples")
            assert [d.contract.symbol for d in ev.args[1]] == [f"SIM{k:04d}" for k in range(1, 17)]
        finally:
            c.stop()


def test_market_rules_of_the_universe(gateway, client):
    ids = gateway.call(lambda s: sorted({int(r) for i in s.market.instruments
                                         for r in (i.details.marketRuleIds or "").split(",") if r}))
    assert ids == [26, 67, 3188]
    expected = {26: 0.01, 67: 0.25, 3188: 0.00005}
    for rule in ids:
        mark = client.mark()
        client.reqMarketRule(rule)
        ev = client.wait_for("marketRule", lambda e, r=rule: e.args[0] == r, start=mark, timeout=ANSWER_TIMEOUT)
        (inc,) = ev.args[1]
        assert (inc.lowEdge, inc.increment) == (0.0, expected[rule])
    mark = client.mark()
    client.reqMarketRule(999)
    assert client.wait_for("marketRule", lambda e: e.args[0] == 999, start=mark).args[1] == []


def test_scanner_parameters_list_the_scan_codes(client):
    client.reqScannerParameters()
    xml = client.wait_for("scannerParameters", timeout=ANSWER_TIMEOUT).args[0]
    root = ET.fromstring(xml)
    assert root.tag == "ScanParameterResponse"
    assert sorted(e.text for e in root.iter("scanCode")) == sorted(SCAN_CODES)
    assert "STK.US.MAJOR" in [e.text for e in root.iter("locationCode")]


def _scan_rows(client, rid, sub):
    mark = client.mark()
    client.reqScannerSubscription(rid, sub, [], [])
    rows = client.collect("scannerData", "scannerDataEnd", req_id=rid, start=mark, timeout=ANSWER_TIMEOUT)
    client.cancelScannerSubscription(rid)
    return rows


def test_scanner_rows_from_the_paper_quotes(gateway, client):
    quotes = gateway.call(lambda s: {i.symbol: s.market.quote(i) for i in s.market.instruments
                                     if i.sec_type == "STK" and i.contract.currency == "USD"})   # US locations
    change = {sym: (q.last - q.close) / q.close for sym, q in quotes.items()}

    gainers = _scan_rows(client, 11, scan("TOP_PERC_GAIN"))
    want = sorted((s for s in change if change[s] > 0), key=lambda s: (-change[s], s))
    assert [r.args[2].contract.symbol for r in gainers] == want
    assert [r.args[1] for r in gainers] == list(range(len(want)))          # ranks from 0
    if gainers:
        cd = gainers[0].args[2]
        assert cd.contract.secType == "STK" and cd.contract.exchange == "SMART" and cd.contract.conId > 0

    losers = _scan_rows(client, 12, scan("TOP_PERC_LOSE"))
    assert [r.args[2].contract.symbol for r in losers] == sorted(
        (s for s in change if change[s] < 0), key=lambda s: (change[s], s))

    active = _scan_rows(client, 13, scan("MOST_ACTIVE", rows=2))
    assert [r.args[2].contract.symbol for r in active] == sorted(quotes, key=lambda s: (-quotes[s].volume, s))[:2]

    hot = _scan_rows(client, 14, scan("HOT_BY_VOLUME"))
    assert sorted(r.args[2].contract.symbol for r in hot) == sorted(quotes)


def test_scanner_errors(client):
    client.reqScannerSubscription(21, scan("NO_SUCH_SCAN"), [], [])
    err = client.wait_error(21, 162, timeout=ANSWER_TIMEOUT)
    assert err.args[3].startswith("Historical Market Data Service error message:")
    client.reqScannerSubscription(22, scan(location="STK.EU.IBIS"), [], [])
    client.wait_error(22, 162, timeout=ANSWER_TIMEOUT)
    client.cancelScannerSubscription(23)
    err = client.wait_error(23, 365, timeout=ANSWER_TIMEOUT)
    assert err.args[3] == "No scanner subscription found for ticker id:23"
    mark = client.mark()
    client.reqScannerSubscription(24, scan(), [], [])
    client.wait_for("scannerDataEnd", lambda e: e.args[0] == 24, start=mark)
    client.reqScannerSubscription(24, scan(), [], [])
    client.wait_error(24, 385, timeout=ANSWER_TIMEOUT)
    mark = client.mark()
    client.cancelScannerSubscription(24)
    _current_time(client, "cancel of an open scan")
    assert "error" not in client.names(mark)


def test_account_metadata_and_news(client):
    client.reqManagedAccts()
    client.reqFamilyCodes()
    client.reqUserInfo(31)
    client.reqNewsProviders()
    client.reqSoftDollarTiers(32)
    client.reqSmartComponents(33, "9c0001")
    client.reqSecDefOptParams(34, "GOOG", "", "STK", 208813720)     # no option class (AAPL's: test_paper_options)
    assert client.wait_for("managedAccounts", start=2).args[0] == "DU1234567"
    assert client.wait_for("familyCodes").args[0] == []
    assert client.wait_for("userInfo").args == (31, "")
    assert client.wait_for("newsProviders").args[0] == []
    assert client.wait_for("softDollarTiers").args == (32, [])
    comps = client.wait_for("smartComponents").args
    assert comps[0] == 33 and any((c.exchange, c.exchangeLetter) == ("NYSE", "N") for c in comps[1])
    assert client.wait_for("securityDefinitionOptionParameterEnd").args == (34,)
    assert not [e for e in client.events if e.name == "securityDefinitionOptionParameter"]


def test_refusals_with_ibs_codes(client):
    client.reqNewsArticle(41, "BRFG", "BRFG$1", [])
    client.reqHistoricalNews(42, 265598, "BRFG", "", "", 10, [])
    client.reqWshMetaData(43)
    client.reqWshEventData(44, WshEventData())
    client.reqFundamentalData(45, stock(), "ReportsFinSummary", [])
    for rid in (41, 42, 43, 44):
        assert client.wait_error(rid, 10276, timeout=ANSWER_TIMEOUT).args[3] == "News feed is not allowed."
    assert client.wait_error(45, 10358, timeout=ANSWER_TIMEOUT).args[3] == "Fundamentals data is not allowed."
    client.calculateImpliedVolatility(46, stock(), 5.0, 230.0, [])
    client.wait_error(46, 321, timeout=ANSWER_TIMEOUT)
    unknown = stock("ZZZZ")
    client.calculateOptionPrice(47, unknown, 0.3, 230.0, [])
    client.wait_error(47, 200, timeout=ANSWER_TIMEOUT)
    client.setServerLogLevel(9)
    client.wait_for("error", lambda e: e.args[2] == 319, timeout=ANSWER_TIMEOUT)


def test_continuous_future_is_the_front_month(client):
    client.reqContractDetails(51, cont_future())
    (ev,) = client.collect("contractDetails", "contractDetailsEnd", req_id=51, timeout=ANSWER_TIMEOUT)
    c = ev.args[1].contract
    assert (c.secType, c.symbol, c.exchange, c.lastTradeDateOrContractMonth) == ("CONTFUT", "ES", "CME", FRONT_ES)
    assert c.localSymbol == "ESH6" and c.multiplier == "50"


# --- ib_async -------------------------------------------------------------------------------------
ib_async = pytest.importorskip("ib_async")


@pytest.fixture
def ib(gateway):
    client = ib_async.IB()
    client.connect("127.0.0.1", gateway.port, clientId=next(_client_ids), timeout=10)
    yield client
    client.disconnect()


def test_ib_async_reference_helpers(ib):
    found = ib.reqMatchingSymbols("MS")
    assert found and found[0].contract.symbol == "MSFT" and found[0].contract.conId == 272093
    (inc,) = ib.reqMarketRule(67)
    assert (inc.lowEdge, inc.increment) == (0.0, 0.25)
    assert "<scanCode>HOT_BY_VOLUME</scanCode>" in ib.reqScannerParameters()
    rows = ib.reqScannerData(ib_async.ScannerSubscription(instrument="STK", locationCode="STK.US.MAJOR",
                                                          scanCode="MOST_ACTIVE", numberOfRows=3))
    assert [r.rank for r in rows] == [0, 1, 2] and all(r.contractDetails.contract.secType == "STK" for r in rows)
    assert ib.reqNewsProviders() == []


def test_ib_async_cont_future(ib):
    (cd,) = ib.reqContractDetails(ib_async.ContFuture("ES", "CME"))
    assert cd.contract.secType == "CONTFUT" and cd.contract.lastTradeDateOrContractMonth == FRONT_ES
    (q,) = ib.qualifyContracts(ib_async.ContFuture("ES", "CME"))
    assert q.conId == cd.contract.conId and q.localSymbol == "ESH6"
