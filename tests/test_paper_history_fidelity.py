"""Issue 14, history and accounts as IB behaves: published historical requests answered, the weekday
calendar of the exchange-hours market, whatToShow=SCHEDULE, reqHistoricalTicks, and reqAccountUpdates
as one download followed by changes only. Every case is seen from a client (ibapi or ib_async) on a
real socket, except the calendar, which reads the market model directly. The replay clock is frozen
at fixed instants, so nothing depends on today's date."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from addin.paper import PaperGateway
from addin.paper.market.market import BarSpec, Market

from .contracts import eurusd, stock
from .ibclient import IBTestClient
from .test_paper_ibapi_orders import make_order, place, status

NY = ZoneInfo("US/Eastern")
WEDNESDAY = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)     # 10:00 New York
SATURDAY = datetime(2027, 3, 13, 15, 0, tzinfo=UTC)
REAL = pd.read_csv("addin/paper/market/data/GOOG_1d_2004-2013.csv", index_col=0, parse_dates=True)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=WEDNESDAY, hours="exchange", stream_interval=0.05,
                      account_interval=0.2) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def ib(gw):
    client = IBTestClient().start(gw.port, 41)
    yield client
    client.stop()


def bars_of(ib, contract, end, duration, size, what="TRADES", rth=0):
    rid, start = ib.next_req(), ib.mark()
    ib.reqHistoricalData(rid, contract, end, duration, size, what, rth, 2, False, [])
    ib.wait_for("historicalDataEnd", lambda e: e[0] == rid, timeout=30, start=start)
    assert not ib.errors(rid)
    return [e[1] for e in ib.events[start:] if e.name == "historicalData" and e[0] == rid]


def local(bar) -> datetime:
    return datetime.fromtimestamp(int(bar.date), NY)


# --- 1. published requests ------------------------------------------------------------------------
@pytest.mark.parametrize(("duration", "size", "seconds", "since"), [
    ("60 D", "1 hour", 3600, datetime(2026, 9, 19, 10, tzinfo=NY)),
    ("6 M", "1 hour", 3600, datetime(2026, 5, 18, 10, tzinfo=NY)),
    ("30 D", "15 mins", 900, datetime(2026, 10, 19, 10, tzinfo=NY)),
])
def test_published_requests_are_answered_with_bars(ib, duration, size, seconds, since):
    bars = bars_of(ib, stock("AAPL"), "", duration, size)
    first, last = local(bars[0]), local(bars[-1])
    assert last.date() == WEDNESDAY.astimezone(NY).date() and last <= WEDNESDAY.astimezone(NY)
    assert since <= first <= since + timedelta(days=4)        # the request's start, or the next trading day
    trading_days = {local(b).date() for b in bars}
    assert all(d.weekday() < 5 for d in trading_days)
    # whole trading days of bars (the paper day trades around the clock) between the partial first and last
    assert (len(trading_days) - 2) * 86400 // seconds < len(bars) <= len(trading_days) * 86400 // seconds


def test_a_fixed_2024_end_gets_that_days_bars(ib, gw):
    bars = bars_of(ib, stock("AAPL"), "20240105 16:00:00 US/Eastern", "1 D", "5 mins", rth=1)
    assert len(bars) == 78                                      # 09:30 .. 15:55 on Friday 5 January 2024
    assert local(bars[0]) == datetime(2024, 1, 5, 9, 30, tzinfo=NY)
    assert local(bars[-1]) == datetime(2024, 1, 5, 15, 55, tzinfo=NY)


def test_too_many_small_bars_is_still_an_invalid_step(ib):
    rid = ib.next_req()
    ib.reqHistoricalData(rid, stock("AAPL"), "", "1 D", "1 secs", "TRADES", 0, 2, False, [])
    assert "invalid step" in ib.wait_error(rid, 162)[3]


# --- 2. the weekday calendar ----------------------------------------------------------------------
def daily(mk, symbol, start):
    inst = next(i for i in mk.instruments if (i.contract.localSymbol or i.symbol) == symbol)
    return mk.bars(inst, start - timedelta(days=366), start + timedelta(days=1), BarSpec(86400), "TRADES", False)


def test_exchange_hours_keep_real_weekdays_and_the_real_bars():
    mk = Market(seed=1, speed=0, start=WEDNESDAY, hours="exchange")
    for symbol in ("GOOG", "MSFT", "SPY", "SPX"):
        bars = daily(mk, symbol, WEDNESDAY)
        assert len(bars) > 240 and all(b.time.astimezone(NY).weekday() < 5 for b in bars), symbol
    goog = daily(mk, "GOOG", WEDNESDAY)
    assert goog[-1].time.astimezone(NY).date() == date(2026, 11, 18)
    # GOOG is the real file on dates moved by whole weeks: every bar matches the real row it replays
    whole = mk.bars(mk.instruments[0], WEDNESDAY - timedelta(days=4000), WEDNESDAY, BarSpec(86400), "TRADES",
                    False)
    shifts = {(b.time.astimezone(NY).date() - d.date()).days for b, d in zip(whole[:-1], REAL.index)}
    assert len(shifts) == 1 and shifts.pop() % 7 == 0
    known = REAL.loc["2012-06-01"]                              # a real Friday
    bar = next(b for b, d in zip(whole, REAL.index) if d == pd.Timestamp("2012-06-01"))
    assert bar.time.astimezone(NY).weekday() == 4
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == tuple(known[:5])


def test_exchange_hours_on_a_saturday_are_closed_and_around_the_clock_trades():
    closed = Market(seed=1, speed=0, start=SATURDAY, hours="exchange")
    goog = closed.instruments[0]
    assert daily(closed, "GOOG", SATURDAY)[-1].time.astimezone(NY).date() == date(2027, 3, 12)   # Friday
    a, b = closed.quote(goog), closed.quote(goog, SATURDAY + timedelta(hours=3))
    assert (a.bid, a.ask, a.last, a.volume) == (b.bid, b.ask, b.last, b.volume)      # no ticks
    assert goog.details.tradingHours.startswith("20270313:CLOSED;20270314:CLOSED")
    around = Market(seed=1, speed=0, start=SATURDAY)
    assert daily(around, "GOOG", SATURDAY)[-1].time.astimezone(NY).date() == date(2027, 3, 13)


# --- 3. SCHEDULE ----------------------------------------------------------------------------------
def test_schedule_via_ibapi(ib):
    rid, start = ib.next_req(), ib.mark()
    ib.reqHistoricalData(rid, stock("AAPL"), "20261118 16:00:00 US/Eastern", "1 W", "1 day", "SCHEDULE", 1, 1,
                         False, [])
    got = ib.wait_for("historicalSchedule", lambda e: e[0] == rid, start=start)
    _, first, last, zone, sessions = got.args
    assert zone == "US/Eastern" and sessions
    for s in sessions:
        day = datetime.strptime(s.refDate, "%Y%m%d").date()
        assert day.weekday() < 5 and date(2026, 11, 11) <= day <= date(2026, 11, 18)
        assert (s.startDateTime, s.endDateTime) == (f"{s.refDate}-09:30:00", f"{s.refDate}-16:00:00")
    assert (first, last) == (sessions[0].startDateTime, sessions[-1].endDateTime)
    assert not ib.errors(rid)


def test_schedule_via_ib_async(gw):
    ib_async = pytest.importorskip("ib_async")

    async def main():
        ib = ib_async.IB()
        await ib.connectAsync("127.0.0.1", gw.port, clientId=42, timeout=10)
        try:
            contract = ib_async.Stock("SPY", "SMART", "USD")
            schedule = await asyncio.wait_for(ib.reqHistoricalScheduleAsync(contract, 5, "", True), 10)
            return schedule
        finally:
            ib.disconnect()

    schedule = asyncio.run(main())
    assert schedule.timeZone == "US/Eastern" and 3 <= len(schedule.sessions) <= 5
    assert all(s.startDateTime.endswith("09:30:00") for s in schedule.sessions)


# --- 4. historical ticks --------------------------------------------------------------------------
def ticks_of(ib, contract, start_text, end_text, count, what, event):
    rid, start = ib.next_req(), ib.mark()
    ib.reqHistoricalTicks(rid, contract, start_text, end_text, count, what, 0, True, [])
    got = ib.wait_for(event, lambda e: e[0] == rid, start=start)
    assert got[2] is True                                       # done
    return got[1]


def test_historical_ticks_follow_the_generated_seconds(ib, gw):
    t0 = WEDNESDAY - timedelta(minutes=20)       # 09:40 New York: in the session (exchange hours: none before 09:30)
    trades = ticks_of(ib, stock("AAPL"), t0.strftime("%Y%m%d-%H:%M:%S"), "", 100, "TRADES", "historicalTicksLast")
    first = int(t0.timestamp())
    assert len(trades) == 100 and [t.time for t in trades] == list(range(first, first + 100))
    quote = gw.call(lambda s: s.market.quote(s.market.lookup(stock("AAPL"))[0], t0 + timedelta(seconds=5)))
    assert trades[5].price == quote.last and trades[5].size == Decimal(str(quote.last_size))
    assert trades[0].exchange == "NASDAQ"
    end = WEDNESDAY.strftime("%Y%m%d-%H:%M:%S")
    quotes = ticks_of(ib, stock("AAPL"), "", end, 1000, "BID_ASK", "historicalTicksBidAsk")
    assert 0 < len(quotes) <= 1000 and quotes[-1].time < WEDNESDAY.timestamp()
    assert all(q.priceBid < q.priceAsk for q in quotes)
    mids = ticks_of(ib, eurusd(), "", end, 50, "MIDPOINT", "historicalTicks")
    assert len(mids) == 50 and all(m.size == 0 for m in mids)


@pytest.mark.parametrize(("start", "end", "count", "what", "contract", "code"), [
    ("20261118-14:00:00", "20261118-14:10:00", 10, "TRADES", stock("AAPL"), 321),   # both times
    ("", "", 10, "TRADES", stock("AAPL"), 321),                                      # neither
    ("20261118-14:00:00", "", 1001, "TRADES", stock("AAPL"), 321),                   # over 1000
    ("20261118-14:00:00", "", 10, "BID", stock("AAPL"), 321),                        # not a tick type
    ("2026-11-18 junk", "", 10, "TRADES", stock("AAPL"), 10314),
    ("20261118-14:00:00", "", 10, "TRADES", eurusd(), 162),                          # FX has no trades
])
def test_historical_ticks_refuse_bad_arguments(ib, start, end, count, what, contract, code):
    rid = ib.next_req()
    ib.reqHistoricalTicks(rid, contract, start, end, count, what, 0, True, [])
    ib.wait_error(rid, code)


# --- 6. account updates ---------------------------------------------------------------------------
def test_account_updates_download_once_then_only_changes(gw):
    ib = IBTestClient().start(gw.port, 43)
    try:
        oid = place(ib, stock("AAPL"), make_order("BUY", 10))
        status(ib, oid, "Filled")
        start = ib.mark()
        ib.reqPositions()
        pos = [e for e in ib.collect("position", "positionEnd", start=start) if e[1].symbol == "AAPL"]
        assert pos[0][1].primaryExchange == "" and pos[0][1].symbol == "AAPL"   # POSITION_DATA has no primary
        assert pos[0][1].exchange == "NASDAQ"           # a real gateway writes the listing exchange, not SMART
        start = ib.mark()
        ib.reqAccountUpdates(True, "")
        ib.wait_for("accountDownloadEnd", start=start)
        port = [e for e in ib.events[start:] if e.name == "updatePortfolio"]
        assert port[0][0].primaryExchange == "NASDAQ"
        full = sum(e.name == "updateAccountValue" for e in ib.events[start:])
        # Ten replayed minutes pass: the portfolio is refreshed (IB: about every 3 minutes), the values
        # that moved are re-sent, accountDownloadEnd is not.
        after = ib.mark()
        gw.advance_clock(600)
        ib.wait_for("updatePortfolio", start=after, timeout=10)
        ib.wait_for("updateAccountTime", start=after, timeout=10)
        more = ib.mark()
        place(ib, stock("AAPL"), make_order("BUY", 5))
        ib.wait_for("updatePortfolio", lambda e: e[1] == Decimal(15), start=more, timeout=10)
        names = ib.names(start)
        assert names.count("accountDownloadEnd") == 1
        resent = sum(e.name == "updateAccountValue" for e in ib.events[after:])
        assert 0 < resent < 3 * full
    finally:
        ib.stop()
