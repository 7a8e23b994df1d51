"""Issue 14, exchange hours (``ibxl paper``'s default): a stock trades only in its session (09:30-16:00
New York). Outside it nothing ticks; a DAY order placed before the open waits PreSubmitted, goes live
(Submitted) at 09:30 and trades; at 16:00 DAY orders that did not fill are cancelled (202), GTC ones
stay. Real sockets and the real ibapi client; the replay clock is frozen at fixed instants and moved
only by ``advance_clock``, so nothing depends on today's date or the time of day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract
from ibapi.order_cancel import OrderCancel

from addin.paper import PaperGateway

from .contracts import btc, stock
from .ibclient import IBTestClient
from .test_paper_ibapi_orders import make_order, place, status

NY = ZoneInfo("US/Eastern")
AAPL = stock("AAPL")
SATURDAY = datetime(2027, 3, 13, 15, 0, tzinfo=UTC)             # 10:00 New York
WEDNESDAY_3AM = datetime(2026, 11, 18, 3, 0, tzinfo=NY)         # the history tests' Wednesday, before dawn
OPEN = datetime(2026, 11, 18, 9, 30, tzinfo=NY)
CLOSE = datetime(2026, 11, 18, 16, 0, tzinfo=NY)
TICKS = ("tickPrice", "tickSize", "tickString", "tickByTickAllLast")


def gateway(start: datetime) -> PaperGateway:
    return PaperGateway(port=0, speed=0, start=start, hours="exchange", stream_interval=0.05,
                        account_interval=1.0)


def subscribe(ib) -> tuple[int, int, int]:
    """reqMktData for AAPL and BTC (crypto trades every day: its ticks show the stream ran), and
    tick-by-tick Last for AAPL; returns the three request ids once each has sent its first ticks."""
    aapl, tbt, coin = ib.next_req(), ib.next_req(), ib.next_req()
    start = ib.mark()
    ib.reqMktData(aapl, AAPL, "", False, False, [])
    ib.reqTickByTickData(tbt, AAPL, "Last", 0, False)
    ib.reqMktData(coin, btc(), "", False, False, [])
    for rid, name in ((aapl, "tickPrice"), (tbt, "tickByTickAllLast"), (coin, "tickPrice")):
        ib.wait_for(name, lambda e, rid=rid: e[0] == rid, start=start)
    return aapl, tbt, coin


def aapl_ticks_during(gw, ib, seconds: float) -> list:
    """Advance the clock, wait for BTC's next tick (a streaming step after the advance has run: AAPL's
    lines come first in it), and return every AAPL tick sent since the advance."""
    aapl, tbt, coin = subscribe(ib)
    start = ib.mark()
    gw.advance_clock(seconds)
    ib.wait_for("tickPrice", lambda e: e[0] == coin, start=start)
    # a second step, so a tick-by-tick catch-up of the jumped seconds (sent in the same step) is in
    gw.advance_clock(1)
    mark = ib.mark()
    ib.wait_for("tickPrice", lambda e: e[0] == coin, start=mark)
    return [e for e in ib.events[start:] if e.name in TICKS and e[0] in (aapl, tbt)]


# --- no ticks outside the session ---------------------------------------------------------------
def test_nothing_ticks_on_a_saturday():
    with gateway(SATURDAY) as gw:
        ib = IBTestClient().start(gw.port, 61)
        try:
            assert aapl_ticks_during(gw, ib, 3600) == []
        finally:
            ib.stop()


@pytest.fixture(scope="module")
def gw():
    with gateway(WEDNESDAY_3AM) as gateway_:
        yield gateway_


@pytest.fixture(scope="module")
def ib(gw):
    client = IBTestClient().start(gw.port, 62)
    yield client
    client.stop()


def advance_to(gw, when: datetime) -> None:
    gw.advance_clock((when - gw.call(lambda s: s.market.now())).total_seconds())


def quote(gw, when: datetime):
    def read(s):
        [inst] = s.market.lookup(AAPL)
        return s.market.quote(inst, when)
    return gw.call(read)


def test_nothing_ticks_at_3am_on_a_weekday(gw, ib):
    assert aapl_ticks_during(gw, ib, 3600) == []           # 03:00 -> 04:00 New York, a Wednesday


# --- orders wait for the session ------------------------------------------------------------------
def first_better(gw) -> tuple[str, int, float]:
    """(side, seconds after the open, price) of the first second after 09:30 whose touch is better for
    a buyer (ask below the opening ask) or a seller (bid above the opening bid): a limit there rests
    at the open and fills then."""
    def scan(s):
        [inst] = s.market.lookup(AAPL)
        path = s.market.tick_path(inst, OPEN, OPEN + timedelta(hours=3))
        ask, bid = path["ask"].to_numpy(), path["bid"].to_numpy()
        buy, sell = (ask < ask[0]).argmax(), (bid > bid[0]).argmax()
        if buy and (not sell or buy < sell):
            return "BUY", int(buy), float(ask[buy])
        assert sell, "the replay did not move within three hours of the open"
        return "SELL", int(sell), float(bid[sell])
    return gw.call(scan)


def test_day_limit_before_the_open_waits_then_trades(gw, ib):
    advance_to(gw, datetime(2026, 11, 18, 8, 0, tzinfo=NY))
    side, later, limit = first_better(gw)
    at_open, frozen = quote(gw, OPEN), quote(gw, datetime(2026, 11, 18, 8, 0, tzinfo=NY))
    eager = max(frozen.ask, at_open.ask) + 1.0        # a buy marketable at yesterday's close and at the open

    start = ib.mark()
    held = place(ib, AAPL, make_order(side, 10, "LMT", lmt=limit))
    early = place(ib, AAPL, make_order("BUY", 5, "LMT", lmt=eager))   # marketable, but not in the session
    rth = place(ib, AAPL, make_order("BUY", 3, "LMT", lmt=eager, outsideRth=True))
    status(ib, held, "PreSubmitted", start=start)
    status(ib, early, "PreSubmitted", start=start)
    status(ib, rth, "Submitted", start=start)          # outsideRth: live now, but nothing trades before 09:30

    advance_to(gw, OPEN - timedelta(seconds=1))
    ib.reqOpenOrders()
    ib.wait_for("openOrderEnd", start=start)
    seen = {e[0]: e[1] for e in ib.events[start:] if e.name == "orderStatus"}
    assert seen == {held: "PreSubmitted", early: "PreSubmitted", rth: "Submitted"}

    advance_to(gw, OPEN)
    status(ib, held, "Submitted", start=start)
    status(ib, early, "Filled", start=start)
    status(ib, rth, "Filled", start=start)
    assert not [e for e in ib.events[start:] if e.name == "orderStatus" and e[0] == held and e[1] == "Filled"]

    advance_to(gw, OPEN + timedelta(seconds=later))
    fill = status(ib, held, "Filled", start=start)
    assert fill[2] == Decimal(10) and fill[4] == limit


def test_day_orders_end_at_the_close_gtc_stays(gw, ib):
    advance_to(gw, datetime(2026, 11, 18, 15, 0, tzinfo=NY))
    start = ib.mark()
    day = place(ib, AAPL, make_order("BUY", 10, "LMT", lmt=100.0))
    gtc = place(ib, AAPL, make_order("BUY", 10, "LMT", lmt=100.0, tif="GTC"))
    status(ib, day, "Submitted", start=start)
    status(ib, gtc, "Submitted", start=start)

    advance_to(gw, CLOSE - timedelta(seconds=1))
    assert not [e for e in ib.events[start:] if e.name == "orderStatus" and e[1] == "Cancelled"]
    advance_to(gw, CLOSE)
    status(ib, day, "Cancelled", start=start)
    err = ib.wait_error(day, 202)
    assert "expired at the close" in err[3]

    after = ib.mark()
    ib.reqOpenOrders()
    ib.wait_for("openOrderEnd", start=after)
    open_ids = {e[0] for e in ib.events[after:] if e.name == "openOrder"}
    assert gtc in open_ids and day not in open_ids
    assert not [e for e in ib.events[start:] if e.name == "orderStatus" and e[0] == gtc and e[1] == "Cancelled"]
    ib.cancelOrder(gtc, OrderCancel())
    status(ib, gtc, "Cancelled", start=after)


def test_a_day_order_after_the_close_is_for_the_next_day(gw, ib):
    advance_to(gw, datetime(2026, 11, 18, 17, 0, tzinfo=NY))
    start = ib.mark()
    oid = place(ib, AAPL, make_order("BUY", 10, "LMT", lmt=100.0))
    status(ib, oid, "PreSubmitted", start=start)
    advance_to(gw, datetime(2026, 11, 19, 9, 30, tzinfo=NY))     # Thursday's open: live; not cancelled overnight
    status(ib, oid, "Submitted", start=start)
    assert not ib.errors(oid)
    advance_to(gw, datetime(2026, 11, 19, 16, 0, tzinfo=NY))
    status(ib, oid, "Cancelled", start=start)
    assert ib.wait_error(oid, 202)


# --- the contract details say so ----------------------------------------------------------------------
def test_contract_details_list_the_sessions(gw, ib):
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, AAPL)
    ib.wait_for("contractDetailsEnd", lambda e: e[0] == rid, start=start)
    [details] = [e[1] for e in ib.events[start:] if e.name == "contractDetails" and e[0] == rid]
    assert details.tradingHours.startswith("20261118:0930-20261118:1600;20261119:0930-20261119:1600")
    assert details.tradingHours == details.liquidHours and "20261121:CLOSED" in details.tradingHours
    es = gw.call(lambda s: next(i for i in s.market.instruments if i.sec_type == "FUT"))
    # CME: the evening session runs into the next day's, with the 16:00-17:00 Chicago break; none on Friday
    assert "20261118:1700-20261119:1600;20261119:1700-20261120:1600;20261121:CLOSED" in es.details.tradingHours


# --- futures: CME's daily break -----------------------------------------------------------------------
def test_es_day_order_in_the_break_waits_for_17_00_and_ends_at_the_next_16_00():
    chicago = ZoneInfo("US/Central")
    with gateway(datetime(2026, 11, 18, 16, 30, tzinfo=chicago)) as gw_:
        ib_ = IBTestClient().start(gw_.port, 63)
        try:
            con_id = gw_.call(lambda s: next(i.con_id for i in s.market.instruments if i.sec_type == "FUT"))
            es = contract_of(con_id)
            start = ib_.mark()
            oid = place(ib_, es, make_order("BUY", 1, "LMT", lmt=1000.0))
            status(ib_, oid, "PreSubmitted", start=start)
            advance_to(gw_, datetime(2026, 11, 18, 17, 0, tzinfo=chicago))
            status(ib_, oid, "Submitted", start=start)
            advance_to(gw_, datetime(2026, 11, 19, 15, 59, 59, tzinfo=chicago))
            assert not ib_.errors(oid)
            advance_to(gw_, datetime(2026, 11, 19, 16, 0, tzinfo=chicago))
            status(ib_, oid, "Cancelled", start=start)
            assert ib_.wait_error(oid, 202)
        finally:
            ib_.stop()


def contract_of(con_id: int) -> Contract:
    c = Contract()
    c.conId, c.exchange = con_id, "CME"
    return c
