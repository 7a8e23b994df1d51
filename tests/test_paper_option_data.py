"""Option market data at the paper gateway beyond bid/ask: the trade process (last, size, time, the
day's volume, tickOptionComputation 12), delayed data (66-76 and 80-83 instead of 1-8 and 10-13, the
market 15 minutes late) and the generic ticks 100, 101, 104, 106 on an option line.

The trade process is re-implemented here from its documented rules (splitmix64 draws per conId and
minute, docs/paper-market.md "Option trades"); prices by a Black-Scholes of the test's own; the clock
is frozen (and moved only by ``market.advance``), so nothing depends on today."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract

UTC, NY = ZoneInfo("UTC"), ZoneInfo("US/Eastern")
START = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)        # Tuesday 11:00 New York
RATE, YEAR, DELAY = 0.04, 365 * 86400, timedelta(minutes=15)
AAPL_CON_ID, SEED = 265598, 1
# the stated trade process (docs/paper-market.md)
TRADE_RATE, WIDTH, MAX_SIZE, OI_ATM, OI_WIDTH, LOOK_BACK = 0.25, 0.06, 20, 20_000, 0.12, 5 * 86400
_ids = itertools.count(801)
M64 = (1 << 64) - 1


def splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def draw(con_id: int, minute: int, stream: int) -> float:
    key = splitmix(((SEED * 1_000_003 + con_id) * 8 + stream) & M64)
    return (splitmix(minute ^ key) >> 11) / float(1 << 53)


def my_trades(con_id: int, strike: float, ref: float, first: int, end: int) -> list[tuple[int, int, bool]]:
    """(second, size, at the ask) of every trade in [first, end)."""
    p = TRADE_RATE * math.exp(-(math.log(strike / ref) / WIDTH) ** 2)
    out = []
    for minute in range(first // 60, (end - 1) // 60 + 1):
        if draw(con_id, minute, 0) < p:
            second = minute * 60 + int(draw(con_id, minute, 1) * 60)
            if first <= second < end:
                out.append((second, 1 + int(draw(con_id, minute, 2) * MAX_SIZE), draw(con_id, minute, 3) < 0.5))
    return out


def ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def bs(right, s, k, t, vol, r=RATE):
    d1 = (math.log(s / k) + (r + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if right == "C":
        return s * ncdf(d1) - k * math.exp(-r * t) * ncdf(d2)
    return k * math.exp(-r * t) * ncdf(-d2) - s * ncdf(-d1)


def brent_iv(right, price, s, k, t) -> float:
    from scipy.optimize import brentq

    return brentq(lambda v: bs(right, s, k, t, v) - price, 1e-4, 5.0, xtol=1e-10)


def smile(k: float, s: float) -> float:                 # stated: AAPL base 0.28, skew -0.15, smile 0.40
    m = math.log(k / s)
    return max(0.05, 0.28 - 0.15 * m + 0.40 * m * m)


def my_quote(right, s, k, t) -> tuple[float, float]:
    """The stated quote rule: model -+ max(tick, 2 %), down/up to the 0.01/0.05 grid."""
    price = bs(right, s, k, t, smile(k, s))
    tick = 0.01 if price < 3 else 0.05
    half = max(tick, 0.02 * price)

    def grid(x, up):
        step = 0.01 if x < 3 else 0.05
        n = x / step
        return round((math.ceil(n - 1e-9) if up else math.floor(n + 1e-9)) * step, 2)

    return max(0.0, grid(price - half, False)), max(grid(price + half, True), 0.01)


# --- fixtures ---------------------------------------------------------------------------------------
def _gateway():
    from addin.paper import PaperGateway

    return PaperGateway(port=0, speed=0, start=START, stream_interval=0.05)


@pytest.fixture(scope="module")
def frozen():
    with _gateway() as gw:
        yield gw


@pytest.fixture
def fib(frozen):
    from .ibclient import IBTestClient

    client = IBTestClient().start(frozen.port, next(_ids))
    yield client
    client.stop()


def aapl_mid(gw, at: datetime) -> float:
    def read(s):
        inst = s.market.by_con_id(AAPL_CON_ID)
        return s.market.quote(inst, at).mid
    return gw.call(read)


def chain(ib):
    rid, start = ib.next_req(), ib.mark()
    ib.reqSecDefOptParams(rid, "AAPL", "", "STK", AAPL_CON_ID)
    row = ib.collect("securityDefinitionOptionParameter", "securityDefinitionOptionParameterEnd", rid, start=start)[0]
    return sorted(row.args[5]), sorted(row.args[6])


def option_details(ib, expiry, strike, right):
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "AAPL", "OPT", "SMART", "USD"
    c.lastTradeDateOrContractMonth, c.strike, c.right = expiry, strike, right
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, c)
    (d,) = [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]
    return d


def subscribe(ib, con_id: int, generic: str = "", snapshot: bool = False) -> tuple[int, int]:
    c = Contract()
    c.conId, c.exchange = con_id, "SMART"
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, c, generic, snapshot, False, [])
    return rid, start


def line_events(ib, rid: int, start: int, name: str) -> dict:
    with ib.cond:
        return {e.args[1]: e.args for e in ib.events[start:] if e.name == name and e.args[0] == rid}


def years(expiry: str, now: datetime) -> float:
    end = datetime.combine(datetime.strptime(expiry, "%Y%m%d").date(), datetime.min.time().replace(hour=16), NY)
    return (end - now).total_seconds() / YEAR


def day_start(now: datetime) -> int:
    return int(now.astimezone(NY).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())


# --- trades on a live line ----------------------------------------------------------------------------
def test_live_line_prints_the_last_trade_volume_and_tick_12(fib, frozen):
    expiries, strikes = chain(fib)
    ref = aapl_mid(frozen, START)
    expiry = expiries[2]
    strike = min(strikes, key=lambda k: abs(k - ref))
    d = option_details(fib, expiry, strike, "C")
    con_id = d.contract.conId
    now = int(START.timestamp())
    trades = my_trades(con_id, strike, ref, now + 1 - LOOK_BACK, now + 1)
    assert trades                                                          # at the money: it trades
    second, size, at_ask = trades[-1]
    volume = sum(t[1] for t in trades if t[0] >= day_start(START))
    rid, start = subscribe(fib, con_id)
    fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid and e.args[1] == 12, start=start)
    prices, sizes = line_events(fib, rid, start, "tickPrice"), line_events(fib, rid, start, "tickSize")
    strings = line_events(fib, rid, start, "tickString")
    assert strings[45][2] == str(second) and sizes[5][2] == size and sizes[8][2] == volume
    s_then = aapl_mid(frozen, datetime.fromtimestamp(second, UTC))
    bid, ask = my_quote("C", s_then, strike, years(expiry, datetime.fromtimestamp(second, UTC)))
    assert prices[4][2] == pytest.approx(ask if at_ask or bid <= 0 else bid, abs=1e-9)
    comp = line_events(fib, rid, start, "tickOptionComputation")
    assert set(comp) == {10, 11, 12, 13}
    _, _, _, vol, delta, opt_price, _, gamma, vega, _, und = comp[12]
    assert opt_price == prices[4][2] and und == aapl_mid(frozen, START)
    assert abs(brent_iv("C", opt_price, und, strike, years(expiry, START)) - vol) < 1e-4
    assert 0 < delta < 1 and gamma > 0 and vega > 0
    fib.cancelMktData(rid)


def test_quiet_option_has_no_last_and_no_tick_12(fib, frozen):
    expiries, strikes = chain(fib)
    ref = aapl_mid(frozen, START)
    d = option_details(fib, expiries[1], strikes[0], "P")                     # 25 % out of the money
    now = int(START.timestamp())
    assert my_trades(d.contract.conId, strikes[0], ref, now + 1 - LOOK_BACK, now + 1) == []
    rid, start = subscribe(fib, d.contract.conId, snapshot=True)
    fib.wait_for("tickSnapshotEnd", lambda e: e.args[0] == rid, start=start)
    assert 4 not in line_events(fib, rid, start, "tickPrice")
    assert 12 not in line_events(fib, rid, start, "tickOptionComputation")
    assert line_events(fib, rid, start, "tickSize")[8][2] == 0


def test_a_trade_arrives_when_the_clock_passes_it():
    from .ibclient import IBTestClient

    with _gateway() as gw:
        ib = IBTestClient().start(gw.port, next(_ids))
        try:
            expiries, strikes = chain(ib)
            ref = aapl_mid(gw, START)
            strike = min(strikes, key=lambda k: abs(k - ref))
            d = option_details(ib, expiries[0], strike, "P")
            now = int(START.timestamp())
            trades = my_trades(d.contract.conId, strike, ref, day_start(START), now + 3601)
            before = sum(t[1] for t in trades if t[0] <= now)
            upcoming = [t for t in trades if t[0] > now]
            assert upcoming                                              # the next hour has trades
            second, size, _ = upcoming[0]
            rid, start = subscribe(ib, d.contract.conId)
            ib.wait_for("tickSize", lambda e: e.args[0] == rid and e.args[1] == 8, start=start)
            assert line_events(ib, rid, start, "tickSize")[8][2] == before
            mark = ib.mark()
            gw.call(lambda s: s.market.advance(second - now))
            ib.wait_for("tickString", lambda e: e.args[0] == rid and e.args[1] == 45 and e.args[2] == str(second),
                        start=mark)
            vol = ib.wait_for("tickSize", lambda e: e.args[0] == rid and e.args[1] == 8, start=mark)
            assert vol.args[2] == before + size
        finally:
            ib.stop()


# --- delayed data -------------------------------------------------------------------------------------
def test_delayed_line_sends_delayed_ids_and_the_market_15_minutes_late(fib, frozen):
    expiries, strikes = chain(fib)
    expiry = expiries[3]
    strike = min(strikes, key=lambda k: abs(k - aapl_mid(frozen, START)))     # at the money: it has traded
    d = option_details(fib, expiry, strike, "C")
    fib.reqMarketDataType(3)
    rid, start = subscribe(fib, d.contract.conId)
    fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid and e.args[1] == 83, start=start)
    fib.wait_error(rid, 10167)
    assert fib.wait_for("marketDataType", lambda e: e.args[0] == rid, start=start).args[1] == 3
    prices = line_events(fib, rid, start, "tickPrice")
    comp = line_events(fib, rid, start, "tickOptionComputation")
    assert {66, 67} <= set(prices) and not {1, 2, 4} & set(prices)
    assert {80, 81, 83} <= set(comp) and not {10, 11, 12, 13} & set(comp)
    sizes = line_events(fib, rid, start, "tickSize")
    assert {69, 70, 74} <= set(sizes) and not {0, 3, 8} & set(sizes)
    then = START - DELAY
    _, _, _, vol, _, model, _, _, _, _, und = comp[83]
    assert und == aapl_mid(frozen, then) != aapl_mid(frozen, START)
    t = years(expiry, then)
    assert abs(model - bs("C", und, strike, t, smile(strike, und))) < 1e-9
    assert abs(brent_iv("C", model, und, strike, t) - vol) < 1e-4
    assert (prices[66][2], prices[67][2]) == pytest.approx(my_quote("C", und, strike, t), abs=1e-9)
    strings = line_events(fib, rid, start, "tickString")
    trades = my_trades(d.contract.conId, strike, aapl_mid(frozen, START), int(then.timestamp()) + 1 - LOOK_BACK,
                       int(then.timestamp()) + 1)
    second, size, _ = trades[-1]                          # the last trade up to 15 minutes ago
    assert strings[88][2] == str(second) and sizes[71][2] == size and not {45} & set(strings)
    assert sizes[74][2] == sum(t[1] for t in trades if t[0] >= day_start(then))
    assert 82 in comp and comp[82][5] == prices[68][2]
    fib.cancelMktData(rid)
    fib.reqMarketDataType(1)


def test_ib_async_delayed_frozen_option_ticker(frozen):
    ib_async = pytest.importorskip("ib_async")
    ib = ib_async.IB()
    ib.connect("127.0.0.1", frozen.port, clientId=next(_ids), timeout=10)
    try:
        ref = aapl_mid(frozen, START)
        (stock,) = ib.qualifyContracts(ib_async.Stock("AAPL", "SMART", "USD"))
        smart = next(c for c in ib.reqSecDefOptParams("AAPL", "", "STK", stock.conId) if c.exchange == "SMART")
        strike = min(smart.strikes, key=lambda k: abs(k - ref))
        (opt,) = ib.qualifyContracts(ib_async.Option("AAPL", sorted(smart.expirations)[1], strike, "C", "SMART"))
        ib.reqMarketDataType(4)
        ticker = ib.reqMktData(opt)
        deadline = datetime.now().timestamp() + 10
        while (ticker.modelGreeks is None or ticker.lastGreeks is None) and datetime.now().timestamp() < deadline:
            ib.waitOnUpdate(timeout=1)
        assert ticker.marketDataType == 4
        g, last = ticker.modelGreeks, ticker.lastGreeks
        assert g is not None and last is not None and 0 < g.delta < 1 and g.undPrice == aapl_mid(frozen, START - DELAY)
        assert last.optPrice == ticker.last and ticker.volume > 0 and ticker.bid < ticker.ask
        ib.cancelMktData(opt)
    finally:
        ib.disconnect()


# --- generic ticks ------------------------------------------------------------------------------------
def test_generic_ticks_on_an_option_line(fib, frozen):
    expiries, strikes = chain(fib)
    ref = aapl_mid(frozen, START)
    strike = min(strikes, key=lambda k: abs(k - ref))
    got = {}
    for right in ("C", "P"):
        d = option_details(fib, expiries[2], strike, right)
        rid, start = subscribe(fib, d.contract.conId, "100,101,104,106")
        fib.wait_for("tickGeneric", lambda e, r=rid: e.args[0] == r and e.args[1] == 24, start=start)
        fib.wait_for("tickGeneric", lambda e, r=rid: e.args[0] == r and e.args[1] == 23, start=start)
        sizes, generic = line_events(fib, rid, start, "tickSize"), line_events(fib, rid, start, "tickGeneric")
        comp = line_events(fib, rid, start, "tickOptionComputation")
        volume_tick, oi_tick, other = (29, 27, {30, 28}) if right == "C" else (30, 28, {29, 27})
        assert sizes[volume_tick][2] == sizes[8][2] and not other & set(sizes)
        u = draw(d.contract.conId, 0, 7)
        expected_oi = round(OI_ATM * math.exp(-(math.log(strike / ref) / OI_WIDTH) ** 2) * (0.5 + u))
        assert sizes[oi_tick][2] == expected_oi
        assert generic[24][2] == pytest.approx(comp[13][3], abs=1e-6)          # the option's model vol
        assert generic[24][2] == pytest.approx(smile(strike, aapl_mid(frozen, START)), abs=1e-6)
        got[right] = generic[23][2]
        fib.cancelMktData(rid)
    stock = Contract()
    stock.conId, stock.exchange = AAPL_CON_ID, "SMART"
    rid, start = fib.next_req(), fib.mark()
    fib.reqMktData(rid, stock, "104", False, False, [])
    hv = fib.wait_for("tickGeneric", lambda e: e.args[0] == rid and e.args[1] == 23, start=start).args[2]
    fib.cancelMktData(rid)
    assert got["C"] == got["P"] == hv > 0                                   # the underlying's 30-day vol
    d = option_details(fib, expiries[2], strike, "C")
    rid, start = subscribe(fib, d.contract.conId, "233,236,456")               # accepted, nothing sent
    fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid and e.args[1] == 13, start=start)
    assert not line_events(fib, rid, start, "tickString").keys() - {45}
    assert not line_events(fib, rid, start, "tickGeneric") and not fib.errors(rid)
    fib.cancelMktData(rid)
    rid, _ = subscribe(fib, d.contract.conId, "100", snapshot=True)
    assert fib.wait_error(rid, 321)
    rid, _ = subscribe(fib, d.contract.conId, "999")
    assert fib.wait_error(rid, 321)


def test_with_exchange_hours_only_trades_inside_the_sessions_count():
    """hours="exchange": the day's volume counts only the trades from 09:30 New York on; the last trade
    of a line read at 09:00 is the previous session's (09:30-16:00 on a weekday)."""
    from addin.paper import PaperGateway

    from .ibclient import IBTestClient

    early = START.replace(hour=13)                               # 09:00 New York: before the open
    for start, expect_today in ((START, True), (early, False)):
        with PaperGateway(port=0, speed=0, start=start, stream_interval=0.05, hours="exchange") as gw:
            ib = IBTestClient().start(gw.port, next(_ids))
            try:
                expiries, strikes = chain(ib)
                ref = aapl_mid(gw, start)
                strike = min(strikes, key=lambda k: abs(k - ref))
                d = option_details(ib, expiries[2], strike, "C")
                now = int(start.timestamp())
                opened = int(start.astimezone(NY).replace(hour=9, minute=30, second=0).timestamp())
                today = [t for t in my_trades(d.contract.conId, strike, ref, day_start(start), now + 1)
                         if t[0] >= opened]
                assert bool(today) == expect_today
                rid, begin = subscribe(ib, d.contract.conId, snapshot=True)
                ib.wait_for("tickSnapshotEnd", lambda e, r=rid: e.args[0] == r, start=begin)
                sizes, strings = line_events(ib, rid, begin, "tickSize"), line_events(ib, rid, begin, "tickString")
                assert sizes[8][2] == sum(t[1] for t in today)
                last = datetime.fromtimestamp(int(strings[45][2]), NY)
                assert last.weekday() < 5 and (9, 30) <= (last.hour, last.minute) < (16, 0)
                if not expect_today:
                    assert last.date() < start.astimezone(NY).date()
            finally:
                ib.stop()
