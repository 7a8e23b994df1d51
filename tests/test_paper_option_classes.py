"""The paper gateway's option classes through the wire: quarterly expiries (SPY's quarter-ends, the
stocks' quarterly third Fridays), SPX/SPXW (European, cash-settled, AM/PM, a dividend yield) and the
ES futures options (FOP on CME, Black-76 on the future). Two frozen gateway clocks: a Tuesday morning
and a quarter-end after the close. Calendars and models are written here independently: the
exchange holidays are the published 2026/2027 NYSE lists, the pricing a Black-Scholes-Merton of the
test's own, implied vols by scipy's brentq."""

from __future__ import annotations

import itertools
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract

UTC, NY, CHI = ZoneInfo("UTC"), ZoneInfo("US/Eastern"), ZoneInfo("US/Central")
START = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)          # Tuesday 11:00 New York
QUARTER_END_CLOSED = datetime(2026, 3, 31, 20, 30, tzinfo=UTC)   # Tuesday 16:30 New York: 0331 has expired
RATE, SPX_YIELD = 0.04, 0.013                              # stated in docs/paper-market.md
YEAR = 365 * 86400
SPX_CON_ID, SPY_CON_ID, AAPL_CON_ID = 416904, 756733, 265598
#: NYSE full closures as published (Saturday Juneteenth 2027 observed Friday 18th, etc.).
HOLIDAYS = {date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 4, 3), date(2026, 5, 25),
            date(2026, 6, 19), date(2026, 7, 3), date(2026, 9, 7), date(2026, 11, 26), date(2026, 12, 25),
            date(2027, 1, 1), date(2027, 1, 18), date(2027, 2, 15), date(2027, 3, 26), date(2027, 5, 31),
            date(2027, 6, 18), date(2027, 7, 5), date(2027, 9, 6), date(2027, 11, 25), date(2027, 12, 24)}
_ids = itertools.count(701)


def business(d: date) -> bool:
    return d.weekday() < 5 and d not in HOLIDAYS


def back_to_business(d: date) -> date:
    while not business(d):
        d -= timedelta(days=1)
    return d


def third_friday(y: int, m: int) -> date:
    d = date(y, m, 15)
    return back_to_business(d + timedelta(days=(4 - d.weekday()) % 7))


def quarter_end(y: int, m: int) -> date:
    return back_to_business(date(y + m // 12, m % 12 + 1, 1) - timedelta(days=1))


def ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


# --- gateways and clients ------------------------------------------------------------------------
def _gateway(start):
    from addin.paper import PaperGateway

    return PaperGateway(port=0, speed=0, start=start, stream_interval=0.05)


@pytest.fixture(scope="module")
def morning():
    with _gateway(START) as gw:
        yield gw


@pytest.fixture(scope="module")
def closed():
    with _gateway(QUARTER_END_CLOSED) as gw:
        yield gw


def _client(gw):
    from .ibclient import IBTestClient

    return IBTestClient().start(gw.port, next(_ids))


@pytest.fixture
def fib(morning):
    client = _client(morning)
    yield client
    client.stop()


def sec_def(ib, symbol, con_id, sec_type="STK", exchange=""):
    rid, start = ib.next_req(), ib.mark()
    ib.reqSecDefOptParams(rid, symbol, exchange, sec_type, con_id)
    return [e.args[1:] for e in ib.collect("securityDefinitionOptionParameter",
                                           "securityDefinitionOptionParameterEnd", rid, start=start)]


def details(ib, contract):
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, contract)
    return [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def contract(symbol, sec_type="OPT", exchange="SMART", expiry="", strike=0.0, right="", trading_class=""):
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, sec_type, exchange, "USD"
    c.lastTradeDateOrContractMonth, c.strike, c.right, c.tradingClass = expiry, strike, right, trading_class
    return c


def snapshot(ib, con_id: int, exchange="SMART") -> dict:
    c = Contract()
    c.conId, c.exchange = con_id, exchange
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, c, "", True, False, [])
    ib.wait_for("tickSnapshotEnd", lambda e: e.args[0] == rid, start=start)
    with ib.cond:
        events = [e for e in ib.events[start:] if e.args and e.args[0] == rid]
    prices = {e.args[1]: e.args[2] for e in events if e.name == "tickPrice"}
    # args: reqId, tickType, tickAttrib, impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice
    comps = {e.args[1]: e.args for e in events if e.name == "tickOptionComputation"}
    return {"bid": prices.get(1), "ask": prices.get(2), "comp": comps, "params": next(
        (e.args for e in events if e.name == "tickReqParams"), None)}


def market_rule(ib, rule_id: int):
    start = ib.mark()
    ib.reqMarketRule(rule_id)
    ev = ib.wait_for("marketRule", lambda e: e.args[0] == rule_id, start=start)
    return [(i.lowEdge, i.increment) for i in ev.args[1]]


# --- an independent model -------------------------------------------------------------------------
def ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def bsm(right, s, k, t, vol, r=RATE, q=0.0):
    d1 = (math.log(s / k) + (r - q + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if right == "C":
        return s * math.exp(-q * t) * ncdf(d1) - k * math.exp(-r * t) * ncdf(d2)
    return k * math.exp(-r * t) * ncdf(-d2) - s * math.exp(-q * t) * ncdf(-d1)


def black76(right, f, k, t, vol, r=RATE):
    d1 = (math.log(f / k) + vol * vol / 2 * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    sign = 1 if right == "C" else -1
    return math.exp(-r * t) * sign * (f * ncdf(sign * d1) - k * ncdf(sign * d2))


def brent(price_at, price: float) -> float:
    from scipy.optimize import brentq

    return brentq(lambda v: price_at(v) - price, 1e-4, 5.0, xtol=1e-10)


def years_to(moment: datetime, start: datetime = START) -> float:
    return (moment - start).total_seconds() / YEAR


def grid_ok(price: float, rule) -> bool:
    tick = [inc for low, inc in rule if price >= low - 1e-9][-1]
    return abs(price / tick - round(price / tick)) < 1e-6


# --- 2. quarterly expiries -------------------------------------------------------------------------
def test_spy_lists_quarter_ends_and_stocks_their_quarterly_third_fridays(fib):
    (spy,) = {tuple(r[4]) for r in sec_def(fib, "SPY", SPY_CON_ID)}
    spy = set(spy)
    ends = [quarter_end(2026, m) for m in (3, 6, 9, 12)]
    assert ends == [date(2026, 3, 31), date(2026, 6, 30), date(2026, 9, 30), date(2026, 12, 31)]
    assert {ymd(d) for d in ends} <= spy
    (aapl,) = {tuple(r[4]) for r in sec_def(fib, "AAPL", AAPL_CON_ID)}
    aapl = set(aapl)
    quarterlies = [third_friday(2026, 6), third_friday(2026, 9), third_friday(2026, 12), third_friday(2027, 3)]
    assert quarterlies[0] == date(2026, 6, 18)               # Juneteenth Friday: the Thursday before
    assert {ymd(d) for d in quarterlies} <= aapl
    assert ymd(date(2026, 3, 31)) not in aapl                # no quarter-end class on a stock
    assert ymd(date(2026, 4, 2)) in aapl and ymd(date(2026, 4, 3)) not in aapl   # Good Friday's weekly
    months = {e[:6] for e in aapl}
    assert all(e > "20260310" for e in aapl) and "202701" not in months
    assert max(aapl) == "20270319"                                               # beyond 12 months: none
    # merged: one sorted list without duplicates, on every exchange row alike
    for symbol, con_id in (("SPY", SPY_CON_ID), ("AAPL", AAPL_CON_ID)):
        rows = sec_def(fib, symbol, con_id)
        assert len({tuple(r[4]) for r in rows}) == 1 and len(set(rows[0][4])) == len(rows[0][4])
    (quarter,) = details(fib, contract("SPY", expiry="20260331", strike=600.0, right="P"))
    assert quarter.contract.localSymbol == "SPY   260331P00600000" and quarter.realExpirationDate == "20260331"


def test_no_expired_expiry_after_the_quarter_end_close(closed):
    ib = _client(closed)
    try:
        (spy,) = {tuple(r[4]) for r in sec_def(ib, "SPY", SPY_CON_ID)}
        assert "20260331" not in spy and min(spy) > "20260331"
        assert {ymd(quarter_end(y, m)) for y, m in ((2026, 6), (2026, 9), (2026, 12), (2027, 3))} <= set(spy)
        rows = sec_def(ib, "SPX", SPX_CON_ID, "IND")
        spxw = next(r[4] for r in rows if r[2] == "SPXW")
        assert "20260331" not in spxw
        dailies = [d for d in (date(2026, 3, 31) + timedelta(days=k) for k in range(1, 20)) if business(d)][:10]
        assert date(2026, 4, 3) not in dailies and {ymd(d) for d in dailies} <= set(spxw)
        rid = ib.next_req()
        ib.reqContractDetails(rid, contract("SPY", expiry="20260331", strike=600.0, right="C"))
        assert ib.wait_error(rid, 200)
    finally:
        ib.stop()


# --- 3. SPX / SPXW -----------------------------------------------------------------------------------
def test_spx_classes_chain_and_details(fib):
    rows = sec_def(fib, "SPX", SPX_CON_ID, "IND")
    assert sorted((r[0], r[2]) for r in rows) == [("CBOE", "SPX"), ("CBOE", "SPXW"), ("SMART", "SPX"),
                                                   ("SMART", "SPXW")]
    assert all(r[1] == SPX_CON_ID and r[3] == "100" for r in rows)
    spx = next(r for r in rows if r[2] == "SPX")
    spxw = next(r for r in rows if r[2] == "SPXW")
    monthlies = [third_friday(2026, m) for m in range(3, 9)]
    assert sorted(spx[4]) == [ymd(d) for d in monthlies]
    dailies = [d for d in (date(2026, 3, 10) + timedelta(days=k) for k in range(20)) if business(d)][:10]
    assert {ymd(d) for d in dailies + monthlies} | {"20260331", "20260630"} <= set(spxw[4])
    strikes = sorted(spx[5])
    assert all(k % 5 == 0 for k in strikes) and {round(b - a, 6) for a, b in zip(strikes, strikes[1:])} == {5.0}
    assert market_rule(fib, int(details(fib, contract("SPX", expiry="20260417", strike=strikes[0],
                                                        right="C"))[0].marketRuleIds.split(",")[0])) == \
        [(0.0, 0.05), (3.0, 0.10)]
    k = strikes[len(strikes) // 2]
    both = details(fib, contract("SPX", expiry="20260320", strike=k, right="C"))
    assert sorted(d.contract.tradingClass for d in both) == ["SPX", "SPXW"]     # AM and PM on one Friday
    assert len({d.contract.conId for d in both}) == 2
    (am,) = details(fib, contract("SPX", expiry="20260320", strike=k, right="C", trading_class="SPX"))
    c = am.contract
    assert (c.secType, c.exchange, c.multiplier, c.localSymbol) == ("OPT", "SMART", "100",
                                                                    f"SPX   260320C0{int(k * 1000):07d}")
    assert (am.minTick, am.underConId, am.underSecType, am.validExchanges) == (0.05, SPX_CON_ID, "IND", "SMART,CBOE")
    (pm,) = details(fib, contract("SPX", exchange="CBOE", expiry="20260320", strike=k, right="C",
                                  trading_class="SPXW"))
    assert pm.contract.localSymbol.startswith("SPXW  260320C")
    (again,) = details(fib, _by_id(pm.contract.conId))
    assert again.contract.tradingClass == "SPXW"


def _by_id(con_id: int) -> Contract:
    c = Contract()
    c.conId = con_id
    return c


@pytest.mark.parametrize("trading_class, expiry, moment", [
    ("SPX", "20260417", datetime(2026, 4, 17, 8, 30, tzinfo=CHI)),     # AM: at the open of the Friday
    ("SPXW", "20260331", datetime(2026, 3, 31, 15, 0, tzinfo=CHI)),    # PM: at the close
])
def test_spx_put_call_parity_and_model(fib, trading_class, expiry, moment):
    t = years_to(moment)
    rows = {r[2]: r for r in sec_def(fib, "SPX", SPX_CON_ID, "IND")}
    strikes = sorted(rows[trading_class][5])
    rule = [(0.0, 0.05), (3.0, 0.10)]
    for k in strikes[len(strikes) // 2 - 4: len(strikes) // 2 + 5: 2]:
        (call,) = details(fib, contract("SPX", expiry=expiry, strike=k, right="C", trading_class=trading_class))
        (put,) = details(fib, contract("SPX", expiry=expiry, strike=k, right="P", trading_class=trading_class))
        c, p = snapshot(fib, call.contract.conId), snapshot(fib, put.contract.conId)
        _, _, _, c_vol, c_delta, c_price, c_div, c_gamma, c_vega, _, s = c["comp"][13]
        _, _, _, p_vol, p_delta, p_price, p_div, _, _, _, s_p = p["comp"][13]
        assert s == s_p
        forward_gap = s * math.exp(-SPX_YIELD * t) - k * math.exp(-RATE * t)
        assert abs((c_price - p_price) - forward_gap) < 1e-6                 # parity on the model prices
        c_mid, p_mid = (c["bid"] + c["ask"]) / 2, (p["bid"] + p["ask"]) / 2
        assert abs((c_mid - p_mid) - forward_gap) <= 0.10 + 1e-9              # ... and on the quotes: a tick
        assert c_div == p_div and abs(c_div - s * (1 - math.exp(-SPX_YIELD * t))) < 1e-6
        assert abs(c_price - bsm("C", s, k, t, c_vol, q=SPX_YIELD)) < 1e-6
        assert abs(brent(lambda v, s=s, k=k: bsm("P", s, k, t, v, q=SPX_YIELD), p_price) - p_vol) < 1e-4
        assert abs(c_delta - p_delta - math.exp(-SPX_YIELD * t)) < 1e-9      # e^-qT N(d1) - e^-qT (N(d1) - 1)
        assert 0 < c_delta < 1 and c_gamma > 0 and c_vega > 0
        for q in (c, p):
            assert q["bid"] < q["ask"] and grid_ok(q["bid"], rule) and grid_ok(q["ask"], rule)
            assert q["params"][1] == 0.05


def test_spx_ib_async_qualifies_by_trading_class(morning):
    ib_async = pytest.importorskip("ib_async")
    ib = ib_async.IB()
    ib.connect("127.0.0.1", morning.port, clientId=next(_ids), timeout=10)
    try:
        (index,) = ib.qualifyContracts(ib_async.Index("SPX", "CBOE", "USD"))
        chains = ib.reqSecDefOptParams("SPX", "", "IND", index.conId)
        assert {(c.exchange, c.tradingClass) for c in chains} >= {("SMART", "SPX"), ("SMART", "SPXW")}
        weekly = next(c for c in chains if (c.exchange, c.tradingClass) == ("SMART", "SPXW"))
        k = sorted(weekly.strikes)[len(weekly.strikes) // 2]
        (opt,) = ib.qualifyContracts(ib_async.Option("SPX", "20260313", k, "P", "SMART", tradingClass="SPXW"))
        assert opt.conId > 0 and opt.localSymbol.startswith("SPXW  260313P") and opt.multiplier == "100"
    finally:
        ib.disconnect()


# --- 4. ES futures options ---------------------------------------------------------------------------
def es_futures(ib) -> list:
    return sorted(details(ib, contract("ES", "FUT", "CME")), key=lambda d: d.contract.lastTradeDateOrContractMonth)


def test_es_options_chain_and_details(fib):
    front, second = es_futures(fib)
    assert front.contract.lastTradeDateOrContractMonth == "20260320"
    rows = sec_def(fib, "ES", front.contract.conId, "FUT")
    by_class = {r[2]: r for r in rows}
    assert [r[0] for r in rows] == ["CME"] * len(rows) and set(by_class) == {"ES", "EW2"}
    assert all(r[1] == front.contract.conId and r[3] == "50" for r in rows)
    assert sorted(by_class["ES"][4]) == ["20260320"] and sorted(by_class["EW2"][4]) == ["20260313"]
    later = {r[2]: sorted(r[4]) for r in sec_def(fib, "ES", second.contract.conId, "FUT")}
    # the next Fridays after the March quarterly ride on June: 03-27 (4th Friday), 04-02 (Good Friday moved), ...
    assert later["ES"] == ["20260619"] and later["EW4"] == ["20260327"] and later["EW1"] == ["20260402"]
    strikes = sorted(by_class["ES"][5])
    assert {round(b - a, 6) for a, b in zip(strikes, strikes[1:])} == {5.0}
    every = details(fib, contract("ES", "FOP", "CME", expiry="20260313", right="C"))
    assert [d.contract.strike for d in every] == strikes
    d = every[len(every) // 2]
    c = d.contract
    assert (c.secType, c.exchange, c.multiplier, c.tradingClass) == ("FOP", "CME", "50", "EW2")
    assert c.localSymbol == f"EW2H6 C{c.strike:g}" and d.underConId == front.contract.conId
    assert (d.underSecType, d.contractMonth, d.minTick) == ("FUT", "202603", 0.05)
    assert market_rule(fib, int(d.marketRuleIds.split(",")[0])) == [(0.0, 0.05), (5.0, 0.25)]
    by_local = Contract()
    by_local.secType, by_local.symbol, by_local.exchange, by_local.localSymbol = "FOP", "ES", "CME", c.localSymbol
    assert [x.contract.conId for x in details(fib, by_local)] == [c.conId]
    rid = fib.next_req()
    fib.reqContractDetails(rid, contract("ES", "FOP", "SMART", expiry="20260313", right="C"))   # FOP: CME only
    assert fib.wait_error(rid, 200)


@pytest.mark.parametrize("trading_class, expiry, moment", [
    ("ES", "20260320", datetime(2026, 3, 20, 8, 30, tzinfo=CHI)),     # quarterly: AM, with the future
    ("EW2", "20260313", datetime(2026, 3, 13, 15, 0, tzinfo=CHI)),    # weekly: PM
])
def test_es_options_are_black_76_on_the_future(fib, trading_class, expiry, moment):
    front = es_futures(fib)[0]
    f_snap = snapshot(fib, front.contract.conId, "CME")
    future_mid = (f_snap["bid"] + f_snap["ask"]) / 2
    t = years_to(moment)
    strikes = sorted(next(r for r in sec_def(fib, "ES", front.contract.conId, "FUT") if r[2] == trading_class)[5])
    rule = [(0.0, 0.05), (5.0, 0.25)]
    deltas = []
    for k in strikes[len(strikes) // 2 - 3: len(strikes) // 2 + 4]:
        call, put = (details(fib, contract("ES", "FOP", "CME", expiry, k, r))[0] for r in ("C", "P"))
        c, p = snapshot(fib, call.contract.conId, "CME"), snapshot(fib, put.contract.conId, "CME")
        _, _, _, c_vol, c_delta, c_price, c_div, c_gamma, c_vega, _, f = c["comp"][13]
        _, _, _, p_vol, p_delta, p_price, _, _, _, _, _ = p["comp"][13]
        assert f == future_mid and c_div == 0.0
        assert abs((c_price - p_price) - math.exp(-RATE * t) * (f - k)) < 1e-6    # Black-76 parity
        assert abs(c_price - black76("C", f, k, t, c_vol)) < 1e-6
        assert abs(brent(lambda v, f=f, k=k: black76("P", f, k, t, v), p_price) - p_vol) < 1e-4
        assert abs(c_delta - p_delta - math.exp(-RATE * t)) < 1e-9
        assert c_gamma > 0 and c_vega > 0
        for q in (c, p):
            assert q["bid"] < q["ask"] and grid_ok(q["bid"], rule) and grid_ok(q["ask"], rule)
        deltas.append(c_delta)
    assert all(a > b for a, b in zip(deltas, deltas[1:]))


def test_spx_am_stops_listing_after_thursdays_close_while_spxw_and_es_still_list_friday():
    thursday_close = datetime(2026, 3, 19, 20, 30, tzinfo=UTC)     # 15:30 Chicago, the day before 0320
    with _gateway(thursday_close) as gw:
        ib = _client(gw)
        try:
            rows = {r[2]: set(r[4]) for r in sec_def(ib, "SPX", SPX_CON_ID, "IND") if r[0] == "SMART"}
            assert "20260320" not in rows["SPX"] and "20260320" in rows["SPXW"]
            assert "20260319" not in rows["SPXW"]                       # PM dailies end at 15:00 Chicago
            front = es_futures(ib)[0]
            assert front.contract.lastTradeDateOrContractMonth == "20260320"
            es = {r[2]: sorted(r[4]) for r in sec_def(ib, "ES", front.contract.conId, "FUT")}
            assert es["ES"] == ["20260320"]                             # AM with the future: Friday 08:30
        finally:
            ib.stop()


def test_option_computations_use_the_class_model(fib):
    """calculateOptionPrice / calculateImpliedVolatility (tick 53): SPX with its dividend yield, ES
    options by Black-76."""
    cases = [(contract("SPX", expiry="20260417", strike=5900.0, right="C", trading_class="SPX"),
              datetime(2026, 4, 17, 8, 30, tzinfo=CHI), 6000.0,
              lambda s, k, t, v: bsm("C", s, k, t, v, q=SPX_YIELD), SPX_YIELD),
             (contract("ES", "FOP", "CME", "20260320", 5900.0, "P"), datetime(2026, 3, 20, 8, 30, tzinfo=CHI),
              5950.0, lambda f, k, t, v: black76("P", f, k, t, v), None)]
    for c, moment, und, model, q in cases:
        (d,) = details(fib, c)
        t = years_to(moment)
        rid, start = fib.next_req(), fib.mark()
        fib.calculateOptionPrice(rid, d.contract, 0.2, und, [])
        ev = fib.wait_for("tickOptionComputation", lambda e, r=rid: e.args[0] == r, start=start)
        assert ev.args[1] == 53 and abs(ev.args[5] - model(und, 5900.0, t, 0.2)) < 1e-9
        assert abs(ev.args[6] - (und * (1 - math.exp(-q * t)) if q else 0.0)) < 1e-9     # pvDividend
        rid, start = fib.next_req(), fib.mark()
        fib.calculateImpliedVolatility(rid, d.contract, ev.args[5], und, [])
        iv = fib.wait_for("tickOptionComputation", lambda e, r=rid: e.args[0] == r, start=start)
        assert abs(iv.args[3] - 0.2) < 1e-4


def test_spx_market_data_without_trading_class_on_a_shared_friday_is_ambiguous(fib):
    rid = fib.next_req()
    fib.reqMktData(rid, contract("SPX", expiry="20260320", strike=5900.0, right="C"), "", True, False, [])
    assert "ambiguous" in fib.wait_error(rid, 200).args[3]


def test_an_observed_holiday_moves_the_weekly_to_thursday():
    """Independence Day 2026 is a Saturday, observed Friday 07-03: that week's options expire 07-02."""
    with _gateway(datetime(2026, 6, 29, 15, 0, tzinfo=UTC)) as gw:
        ib = _client(gw)
        try:
            (aapl,) = {tuple(r[4]) for r in sec_def(ib, "AAPL", AAPL_CON_ID)}
            assert "20260702" in aapl and "20260703" not in aapl
            front = es_futures(ib)[0]
            weekly = {r[2]: sorted(r[4]) for r in sec_def(ib, "ES", front.contract.conId, "FUT")}
            assert weekly["EW1"] == ["20260702"] and weekly["EW2"] == ["20260710"]   # the Friday's week kept
        finally:
            ib.stop()
