"""Market data requests a real TWS answers, at the paper gateway: real-time bars, market depth (and its
exchanges), tick-by-tick and reqMktData's generic ticks, through the official ibapi client and through
ib_async. The replay clock is frozen (speed 0) at a fixed instant and moved by the tests, so every
stream is driven by advance_clock, never by waiting, and nothing depends on today's date.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from ibapi.ticktype import TickTypeEnum as T

from addin.paper import PaperGateway
from addin.paper.market.market import BarSpec
from addin.paper.services.generic_ticks import refusal

from .contracts import btc, contract, eurusd, stock
from .ibclient import IBTestClient

START = datetime(2026, 11, 18, 15, 0, 2, tzinfo=UTC)    # a Wednesday, 10:00:02 in New York
AAPL = stock("AAPL")
SPX = contract("SPX", "IND", "CBOE")
_client_ids = itertools.count(70)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.02) as gateway:
        yield gateway


@pytest.fixture
def ib(gw):
    client = IBTestClient().start(gw.port, next(_client_ids))
    yield client
    client.stop()


def events(ib, name, req_id, start=0):
    with ib.cond:
        return [e for e in ib.events[start:] if e.name == name and e.args[0] == req_id]


def wait_count(ib, name, req_id, count, start=0, timeout=10.0):
    """Wait until ``count`` events ``name`` for ``req_id`` arrived (from index ``start``); return them."""
    ib.wait_for(name, lambda e: len(events(ib, name, req_id, start)) >= count, timeout, start)
    return events(ib, name, req_id, start)


def quiet(gw, ib):
    """Run one streaming step on the gateway's loop now, then a round trip: everything the step sent
    has been read by the client when this returns (no waiting on the loop's own cadence)."""
    gw.call(lambda s: s.marketdata.pump())
    mark = ib.mark()
    ib.reqCurrentTime()
    ib.wait_for("currentTime", start=mark)


def quote(gw, symbol="AAPL"):
    def read(server):
        inst = server.market.lookup(stock(symbol))[0]
        return server.market.quote(inst)
    return gw.call(read)


# --- real-time bars --------------------------------------------------------------------------------
def test_realtime_bars_every_five_seconds_agree_with_history_and_stop_on_cancel(gw, ib):
    rid = ib.next_req()
    ib.reqRealTimeBars(rid, AAPL, 5, "TRADES", False, [])
    quiet(gw, ib)
    assert events(ib, "realtimeBar", rid) == []            # nothing before a bar completes
    gw.advance_clock(5)
    [bar] = wait_count(ib, "realtimeBar", rid, 1)
    t = bar[1]
    assert t % 5 == 0 and t <= gw.call(lambda s: s.market.epoch()) - 5
    gw.advance_clock(15)
    bars = wait_count(ib, "realtimeBar", rid, 4)
    assert [b[1] for b in bars] == [t, t + 5, t + 10, t + 15]
    # the same bars as reqHistoricalData "5 secs" (built from the same generated seconds)
    hist = gw.call(lambda s: s.market.bars(s.market.lookup(AAPL)[0], datetime.fromtimestamp(t, UTC),
                                           datetime.fromtimestamp(t + 20, UTC), BarSpec(seconds=5), "TRADES",
                                           False))
    assert [(b[2], b[3], b[4], b[5], float(b[6])) for b in bars] == \
        [(h.open, h.high, h.low, h.close, h.volume) for h in hist]
    assert all(float(b[6]) > 0 and b[8] > 0 for b in bars)
    ib.cancelRealTimeBars(rid)
    quiet(gw, ib)
    mark = ib.mark()
    gw.advance_clock(10)
    quiet(gw, ib)
    assert events(ib, "realtimeBar", rid, mark) == []


def test_realtime_bars_midpoint_for_fx_and_ib_errors(gw, ib):
    rid = ib.next_req()
    ib.reqRealTimeBars(rid, eurusd(), 5, "MIDPOINT", False, [])
    quiet(gw, ib)
    gw.advance_clock(5)
    [bar] = wait_count(ib, "realtimeBar", rid, 1)
    assert bar[3] >= bar[4] and bar[8] == -1
    ib.cancelRealTimeBars(rid)
    bad_size, fx_trades = ib.next_req(), ib.next_req()
    ib.reqRealTimeBars(bad_size, AAPL, 30, "TRADES", False, [])
    ib.reqRealTimeBars(fx_trades, eurusd(), 5, "TRADES", False, [])
    assert "'bT'" in ib.wait_error(bad_size, 321)[3]
    assert "TRADES" in ib.wait_error(fx_trades, 321)[3]


# --- market depth ----------------------------------------------------------------------------------
def book(ib, req_id, name="updateMktDepth", start=0):
    """Replay updateMktDepth(L2) events into the book the client holds: side -> rows (price, size)."""
    sides: dict[int, list] = {0: [], 1: []}
    for e in events(ib, name, req_id, start):
        if name == "updateMktDepth":
            _, pos, op, side, price, size = e.args
        else:
            _, pos, _mm, op, side, price, size, _smart = e.args
        rows = sides[side]
        if op == 0:
            rows.insert(pos, (price, float(size)))
        elif op == 1:
            rows[pos] = (price, float(size))
        else:
            del rows[pos]
    return sides


def test_depth_level_one_is_the_quote_and_the_book_follows_the_clock(gw, ib):
    rid = ib.next_req()
    ib.reqMktDepth(rid, AAPL, 5, False, [])
    quiet(gw, ib)
    q = quote(gw)
    held = book(ib, rid)
    assert held[1][0] == (q.bid, q.bid_size) and held[0][0] == (q.ask, q.ask_size)
    assert 1 <= len(held[1]) <= 5 and 1 <= len(held[0]) <= 5
    bids, asks = [p for p, _ in held[1]], [p for p, _ in held[0]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    ops = set()
    for _ in range(12):
        gw.advance_clock(7)
        quiet(gw, ib)
        q = quote(gw)
        held = book(ib, rid)
        assert held[1][0] == (q.bid, q.bid_size) and held[0][0] == (q.ask, q.ask_size)
        ops |= {e[2] for e in events(ib, "updateMktDepth", rid)}
    assert ops == {0, 1, 2}                                   # insert, update and delete all happen
    ib.cancelMktDepth(rid, False)
    quiet(gw, ib)
    mark = ib.mark()
    gw.advance_clock(30)
    quiet(gw, ib)
    assert events(ib, "updateMktDepth", rid, mark) == []


def test_smart_depth_names_exchanges_and_three_requests_at_most(gw, ib):
    rids = [ib.next_req() for _ in range(4)]
    ib.reqMktDepth(rids[0], AAPL, 3, True, [])
    ib.reqMktDepth(rids[1], eurusd(), 10, False, [])
    ib.reqMktDepth(rids[2], btc(), 1, False, [])
    ib.reqMktDepth(rids[3], stock("MSFT"), 5, False, [])
    err = ib.wait_error(rids[3], 309)
    assert err[3] == "Max number (3) of market depth requests has been reached"
    quiet(gw, ib)
    l2 = events(ib, "updateMktDepthL2", rids[0])
    assert l2 and {e[2] for e in l2} <= {"NASDAQ", "ARCA", "BATS", "EDGX", "IEX"} and all(e[7] for e in l2)
    assert max(e[1] for e in l2) <= 2                        # numRows 3
    assert {e[1] for e in events(ib, "updateMktDepth", rids[2])} == {0}   # numRows 1: the quote only
    for rid in rids[:3]:
        ib.cancelMktDepth(rid, rid == rids[0])
    spx = ib.next_req()
    ib.reqMktDepth(spx, SPX, 5, False, [])
    assert ib.wait_error(spx, 10092)


def test_depth_exchanges(ib):
    ib.reqMktDepthExchanges()
    rows = ib.wait_for("mktDepthExchanges")[0]
    assert {(d.exchange, d.secType) for d in rows} >= {("NASDAQ", "STK"), ("CME", "FUT"), ("IDEALPRO", "CASH"),
                                                       ("PAXOS", "CRYPTO")}
    assert all(d.serviceDataType in ("Deep", "Deep2") for d in rows)


# --- tick-by-tick ----------------------------------------------------------------------------------
def test_tick_by_tick_all_kinds_follow_the_quotes(gw, ib):
    last, all_last, bid_ask, mid = (ib.next_req() for _ in range(4))
    ib.reqTickByTickData(last, AAPL, "Last", 0, False)
    ib.reqTickByTickData(all_last, AAPL, "AllLast", 0, False)
    ib.reqTickByTickData(bid_ask, AAPL, "BidAsk", 0, True)
    ib.reqTickByTickData(mid, eurusd(), "MidPoint", 0, False)
    quiet(gw, ib)
    q = quote(gw)
    [first] = events(ib, "tickByTickBidAsk", bid_ask)
    assert (first[2], first[3], float(first[4]), float(first[5])) == (q.bid, q.ask, q.bid_size, q.ask_size)
    assert events(ib, "tickByTickAllLast", last)[0][3] == q.last
    gw.advance_clock(10)
    trades = wait_count(ib, "tickByTickAllLast", last, 11)
    assert [e[2] for e in trades] == list(range(trades[0][2], trades[0][2] + 11))   # a trade every second
    assert trades[-1][3] == quote(gw).last and trades[-1][6] == "NASDAQ"
    assert {e[1] for e in wait_count(ib, "tickByTickAllLast", all_last, 11)} == {2}
    quiet(gw, ib)
    bid_asks = events(ib, "tickByTickBidAsk", bid_ask)
    pairs = [(e[2], e[3]) for e in bid_asks]
    assert all(a != b for a, b in zip(pairs, pairs[1:]))      # ignoreSize: only price changes are ticks
    assert pairs[-1] == (quote(gw).bid, quote(gw).ask)
    fx = gw.call(lambda s: s.market.quote(s.market.lookup(eurusd())[0]))
    assert events(ib, "tickByTickMidPoint", mid)[-1][2] == fx.mid
    for rid in (last, all_last, bid_ask, mid):
        ib.cancelTickByTickData(rid)
    quiet(gw, ib)
    mark = ib.mark()
    gw.advance_clock(10)
    quiet(gw, ib)
    assert [n for n in ib.names(mark) if n.startswith("tickByTick")] == []


def test_tick_by_tick_history_first_and_refusals(gw, ib):
    rid, ba, fx_last, spx = (ib.next_req() for _ in range(4))
    ib.reqTickByTickData(rid, AAPL, "Last", 5, False)
    ib.reqTickByTickData(ba, AAPL, "BidAsk", 3, False)
    hist = ib.wait_for("historicalTicksLast", lambda e: e[0] == rid)
    assert len(hist[1]) == 5 and hist[2] is True
    now = int(gw.call(lambda s: s.market.epoch()))
    assert [t.time for t in hist[1]] == list(range(now - 5, now))
    assert len(ib.wait_for("historicalTicksBidAsk", lambda e: e[0] == ba)[1]) == 3
    ib.reqTickByTickData(fx_last, eurusd(), "Last", 0, False)
    ib.reqTickByTickData(spx, SPX, "MidPoint", 0, False)
    assert ib.wait_error(fx_last, 10189) and ib.wait_error(spx, 10189)
    ib.cancelTickByTickData(rid)
    ib.cancelTickByTickData(ba)


# --- generic ticks ---------------------------------------------------------------------------------
def test_generic_ticks_for_a_stock(gw, ib):
    rid = ib.next_req()
    ib.reqMktData(rid, AAPL, "233,236,456,100,101,104,106", False, False, [])
    quiet(gw, ib)
    q = quote(gw)
    strings = {e[1]: e[2] for e in events(ib, "tickString", rid)}
    price, size, ms, volume, vwap, single = strings[T.RT_VOLUME].split(";")
    assert (float(price), float(volume), single) == (q.last, q.volume, "true")
    assert int(ms) == int(q.time.timestamp()) * 1000
    assert float(vwap) == pytest.approx((q.high + q.low + q.last) / 3)
    assert strings[T.IB_DIVIDENDS] == "1,1.04,20270211,0.26"     # the next ex-date of Feb/May/Aug/Nov 11
    generic = {e[1]: e[2] for e in events(ib, "tickGeneric", rid)}
    sizes = {e[1]: float(e[2]) for e in events(ib, "tickSize", rid)}
    assert generic[T.SHORTABLE] == 3.0 and sizes[T.SHORTABLE_SHARES] == 120_000_000
    assert sizes[T.OPTION_CALL_OPEN_INTEREST] == 4_600_000 and sizes[T.OPTION_PUT_OPEN_INTEREST] == 3_900_000
    local = q.time.astimezone(ZoneInfo("America/New_York"))   # the part of the New York day gone by
    assert sizes[T.OPTION_CALL_VOLUME] == int(1_150_000 * (local.hour * 60 + local.minute) / 1440)
    assert 0.05 < generic[T.OPTION_HISTORICAL_VOL] < 1.5
    assert generic[T.OPTION_IMPLIED_VOL] == pytest.approx(generic[T.OPTION_HISTORICAL_VOL] * 1.15, rel=1e-4)
    mark = ib.mark()
    gw.advance_clock(3)
    quiet(gw, ib)
    assert len([e for e in events(ib, "tickString", rid, mark) if e[1] == T.RT_VOLUME]) == 1
    ib.cancelMktData(rid)


def test_generic_ticks_not_applicable_send_nothing_and_bad_lists_get_321(gw, ib):
    fx, spx, bad, fx_div, snap = (ib.next_req() for _ in range(5))
    ib.reqMktData(fx, eurusd(), "236,100,101,104,106", False, False, [])
    ib.reqMktData(spx, SPX, "236,456,104", False, False, [])
    ib.reqMktData(bad, AAPL, "233,999", False, False, [])
    ib.reqMktData(fx_div, eurusd(), "456", False, False, [])
    ib.reqMktData(snap, AAPL, "233", True, False, [])
    err = ib.wait_error(bad, 321)
    assert err[3] == refusal("233,999", "STK")
    assert err[3].startswith("Error validating request.-'bQ' : cause - Incorrect generic tick list of 233,999.  "
                             "Legal ones for (STK) are: 100(Option Volume),101(Option Open Interest),")
    assert "(CASH)" in ib.wait_error(fx_div, 321)[3]
    assert ib.wait_error(snap, 321)
    quiet(gw, ib)
    assert ib.errors(fx) == [] and ib.errors(spx) == []
    assert events(ib, "tickPrice", fx) and events(ib, "tickGeneric", fx) == []
    assert {e[1] for e in events(ib, "tickGeneric", spx)} == {T.OPTION_HISTORICAL_VOL}
    assert events(ib, "tickPrice", bad) == []
    assert [e for e in events(ib, "tickString", spx) if e[1] == T.IB_DIVIDENDS] == []     # an index: none
    ib.cancelMktData(fx)
    ib.cancelMktData(spx)


# --- ib_async --------------------------------------------------------------------------------------
def test_ib_async_reads_every_request(gw):
    ib_async = pytest.importorskip("ib_async")
    ib = ib_async.IB()
    ib.connect("127.0.0.1", gw.port, clientId=next(_client_ids) + 100, timeout=10)
    try:
        aapl = ib_async.Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(aapl)

        def until(cond, what):
            deadline = time.monotonic() + 10
            while not cond():
                assert time.monotonic() < deadline, what() if callable(what) else what
                ib.waitOnUpdate(timeout=deadline - time.monotonic())

        # ib_async empties a Ticker's tickByTicks at each new batch of messages (and the depth, the
        # tick-by-tick and the quote lines share one Ticker): collect them as they come
        seen: list = []
        ib.pendingTickersEvent += lambda tickers: seen.extend(t for tk in tickers for t in tk.tickByTicks)
        bars = ib.reqRealTimeBars(aapl, 5, "TRADES", False)
        depth = ib.reqMktDepth(aapl, 5)
        ib.reqTickByTickData(aapl, "BidAsk")
        ticker = ib.reqMktData(aapl, "233,236,456,104")
        until(lambda: depth.domBids and depth.domAsks and seen and ticker.dividends
              and ticker.shortableShares == 120_000_000 and ticker.rtTime,
              lambda: f"the first answers: depth {bool(depth.domBids)}/{bool(depth.domAsks)}, tick-by-tick "
                      f"{len(seen)}, dividends {ticker.dividends}, shortable {ticker.shortableShares}, "
                      f"rtTime {ticker.rtTime}")
        q = quote(gw)
        assert (depth.domBids[0].price, depth.domBids[0].size) == (q.bid, q.bid_size)
        assert (depth.domAsks[0].price, depth.domAsks[0].size) == (q.ask, q.ask_size)
        assert ticker.dividends.nextAmount == 0.26 and ticker.histVolatility > 0
        gw.advance_clock(5)
        until(lambda: len(bars) >= 1, "a real-time bar")
        assert bars[0].time.timestamp() % 5 == 0 and bars[0].volume > 0
        exchanges = ib.reqMktDepthExchanges()
        assert any(d.exchange == "NASDAQ" for d in exchanges)
        ib.cancelRealTimeBars(bars)
        ib.cancelMktDepth(aapl)
        gw.advance_clock(10)
        gw.call(lambda s: s.marketdata.pump())
        ib.reqCurrentTime()                 # a round trip: whatever the step sent has been read
        assert len(bars) == 1
    finally:
        ib.disconnect()
