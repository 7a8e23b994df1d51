"""Listed options on the paper gateway, through the wire: reqSecDefOptParams and reqContractDetails of
partial and full option contracts, with the plain ibapi client and with ib_async. Expectations come
from the gateway's own start date (never today's) and from rules written here independently: OCC
symbols, Fridays and third Fridays, the strike grid."""

from __future__ import annotations

import itertools
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract

NY = ZoneInfo("US/Eastern")
AAPL_CON_ID = 265598
_ids = itertools.count(301)


def gateway_date(gateway) -> date:
    """The gateway's start date in New York (its listing day)."""
    return gateway.call(lambda s: s.market.start).astimezone(NY).date()


def underlying_price(gateway, symbol: str) -> float:
    def read(s):
        inst = next(i for i in s.market.instruments if i.symbol == symbol and i.sec_type == "STK")
        return s.market.quote(inst, s.market.start).mid
    return gateway.call(read)


def option(symbol="AAPL", expiry="", strike=0.0, right="", exchange="SMART") -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = symbol, "OPT", exchange, "USD"
    c.lastTradeDateOrContractMonth, c.strike, c.right = expiry, strike, right
    return c


def occ(symbol: str, expiry: str, right: str, strike: float) -> str:
    return f"{symbol.ljust(6)}{expiry[2:]}{right}{int(round(strike * 1000)):08d}"


def expected_fridays(start: date, count: int) -> list[date]:
    """The next ``count`` Fridays from ``start`` (a Friday start counts: the tests run before 16:00 NY
    or after; both are accepted by checking Thursday-or-Friday below)."""
    first = start + timedelta(days=(4 - start.weekday()) % 7)
    return [first + timedelta(days=7 * k) for k in range(count + 1)]


def third_friday(year: int, month: int) -> date:
    d = date(year, month, 15)
    return d + timedelta(days=(4 - d.weekday()) % 7)


def listed(expirations, friday: date) -> bool:
    """A Friday's expiry is listed: on the Friday, or on the Thursday before when the Friday is a holiday."""
    return friday.strftime("%Y%m%d") in expirations or (friday - timedelta(days=1)).strftime("%Y%m%d") in expirations


# --- ibapi ---------------------------------------------------------------------------------------------
def sec_def(ib, symbol="AAPL", con_id=AAPL_CON_ID, exchange=""):
    rid, start = ib.next_req(), ib.mark()
    ib.reqSecDefOptParams(rid, symbol, exchange, "STK", con_id)
    return rid, [e.args for e in ib.collect("securityDefinitionOptionParameter",
                                            "securityDefinitionOptionParameterEnd", rid, start=start)]


def details(ib, contract):
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, contract)
    got = [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]
    return rid, got


def test_sec_def_opt_params_is_ib_shaped(ib, gateway):
    _, rows = sec_def(ib)
    today = gateway_date(gateway)
    assert rows and {r[1] for r in rows} >= {"SMART", "CBOE"}
    assert len({r[1] for r in rows}) == len(rows)                   # one row per exchange
    for _, _exchange, under, trading_class, multiplier, expirations, strikes in rows:
        assert (under, trading_class, multiplier) == (AAPL_CON_ID, "AAPL", "100")
        assert expirations == rows[0][5] and strikes == rows[0][6]
    expirations, strikes = rows[0][5], sorted(rows[0][6])
    days = [datetime.strptime(e, "%Y%m%d").date() for e in expirations]
    assert all(len(e) == 8 and e.isdigit() for e in expirations)
    assert all(d >= today and d.weekday() in (3, 4) for d in days)    # Fridays (Thursday before a holiday)
    fridays = expected_fridays(today, 5)
    assert sum(listed(expirations, f) for f in fridays[:6]) >= 5      # the weeklies of the next five weeks
    months = [(today.year + (today.month - 1 + k) // 12, (today.month - 1 + k) % 12 + 1) for k in range(1, 6)]
    assert all(listed(expirations, third_friday(y, m)) for y, m in months)   # the monthlies
    assert max(days) - today >= timedelta(days=150)
    price = underlying_price(gateway, "AAPL")
    assert strikes[0] < price < strikes[-1]
    steps = {round(b - a, 6) for a, b in zip(strikes, strikes[1:])}
    assert steps == {2.5}                                           # AAPL near 230: the 2.5 grid


def test_sec_def_opt_params_one_exchange_no_options_and_unknown(ib, gateway):
    _, rows = sec_def(ib, exchange="CBOE")
    assert [r[1] for r in rows] == ["CBOE"]
    goog = gateway.call(lambda s: next(i.con_id for i in s.market.instruments if i.symbol == "GOOG"))
    _, rows = sec_def(ib, "GOOG", goog)
    assert rows == []                                               # no option class: the end alone
    rid = ib.next_req()
    ib.reqSecDefOptParams(rid, "ZZZZ", "", "STK", 123)
    assert ib.wait_error(rid, 200)


def test_partial_contract_lists_every_strike_of_an_expiry(ib, gateway):
    _, rows = sec_def(ib)
    expiry, strikes = sorted(rows[0][5])[2], sorted(rows[0][6])
    _, got = details(ib, option(expiry=expiry, right="C"))
    assert sorted(d.contract.strike for d in got) == strikes
    con_ids = [d.contract.conId for d in got]
    assert len(set(con_ids)) == len(got) and all(c > 0 for c in con_ids)
    for d in got:
        c = d.contract
        assert (c.symbol, c.secType, c.right, c.exchange, c.currency, c.multiplier) == \
            ("AAPL", "OPT", "C", "SMART", "USD", "100")
        assert c.lastTradeDateOrContractMonth == expiry and c.tradingClass == "AAPL"
        assert c.localSymbol == occ("AAPL", expiry, "C", c.strike)
        assert d.minTick == 0.01 and d.underConId == AAPL_CON_ID and d.underSymbol == "AAPL"
    _, both = details(ib, option(expiry=expiry))                   # no right: calls and puts
    assert len(both) == 2 * len(strikes) and len({d.contract.conId for d in both}) == len(both)


def test_partial_contract_lists_every_expiry_of_a_strike(ib, gateway):
    _, rows = sec_def(ib)
    strike = sorted(rows[0][6])[len(rows[0][6]) // 2]
    _, got = details(ib, option(strike=strike, right="P"))
    assert sorted(d.contract.lastTradeDateOrContractMonth for d in got) == sorted(rows[0][5])
    assert all(d.contract.localSymbol[12] == "P" for d in got)


def test_full_contract_qualifies_to_one_and_again_by_con_id_and_local_symbol(ib, gateway):
    _, rows = sec_def(ib)
    expiry, strike = sorted(rows[0][5])[0], sorted(rows[0][6])[3]
    _, got = details(ib, option(expiry=expiry, strike=strike, right="C"))
    assert len(got) == 1
    by_id = Contract()
    by_id.conId = got[0].contract.conId
    _, again = details(ib, by_id)
    assert [d.contract.localSymbol for d in again] == [got[0].contract.localSymbol]
    by_local = Contract()
    by_local.secType, by_local.localSymbol = "OPT", got[0].contract.localSymbol
    _, third = details(ib, by_local)
    assert [d.contract.conId for d in third] == [got[0].contract.conId]


@pytest.mark.parametrize("expiry, strike, right", [
    ("20991218", 0.0, "C"),          # an expiry not listed
    ("", 231.3, "C"),                # a strike off the grid
    ("", 0.0, "X"),                  # no such right
])
def test_nonsense_gets_200(ib, gateway, expiry, strike, right):
    rid = ib.next_req()
    ib.reqContractDetails(rid, option(expiry=expiry, strike=strike, right=right))
    assert ib.wait_error(rid, 200)


# --- ib_async ------------------------------------------------------------------------------------------
@pytest.fixture
def aib(gateway):
    ib_async = pytest.importorskip("ib_async")
    client = ib_async.IB()
    client.connect("127.0.0.1", gateway.port, clientId=next(_ids), timeout=10)
    yield client
    client.disconnect()


def test_ib_async_chain_and_qualify(aib, gateway):
    from ib_async import Option, Stock

    (stock,) = aib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
    chains = aib.reqSecDefOptParams(stock.symbol, "", stock.secType, stock.conId)
    smart = next(c for c in chains if c.exchange == "SMART")
    assert smart.tradingClass == "AAPL" and smart.multiplier == "100"
    assert int(smart.underlyingConId) == stock.conId          # ib_async keeps it as text
    today = gateway_date(gateway)
    assert all(datetime.strptime(e, "%Y%m%d").date() >= today for e in smart.expirations)
    expiry = sorted(smart.expirations)[1]
    cds = aib.reqContractDetails(Option("AAPL", expiry, 0.0, "P", "SMART"))
    assert sorted(cd.contract.strike for cd in cds) == sorted(smart.strikes)
    assert len({cd.contract.conId for cd in cds}) == len(cds)
    assert all(cd.contract.localSymbol == occ("AAPL", expiry, "P", cd.contract.strike) for cd in cds)
    strike = sorted(smart.strikes)[5]
    (opt,) = aib.qualifyContracts(Option("AAPL", expiry, strike, "C", "SMART"))
    assert opt.conId > 0 and opt.localSymbol == occ("AAPL", expiry, "C", strike) and opt.multiplier == "100"
    assert aib.qualifyContracts(Option("AAPL", expiry, strike + 0.3, "C", "SMART")) in ([], [None])
    ticker = aib.reqMktData(opt)
    deadline = datetime.now().timestamp() + 10
    while ticker.modelGreeks is None and datetime.now().timestamp() < deadline:
        aib.waitOnUpdate(timeout=1)
    g = ticker.modelGreeks
    assert g is not None and 0 < g.delta < 1 and g.gamma > 0 and g.vega > 0 and g.impliedVol > 0
    assert g.undPrice > 0 and g.optPrice > 0 and ticker.bid < ticker.ask
    aib.cancelMktData(opt)


# --- option quotes (a frozen clock, so the test knows the model's time exactly) -------------------------
QUOTE_START = datetime(2026, 3, 10, 15, 0, tzinfo=ZoneInfo("UTC"))     # a Tuesday, 11:00 New York
RATE = 0.04                                                            # the stated rate (docs/paper-market.md)


@pytest.fixture(scope="module")
def frozen():
    from addin.paper import PaperGateway

    with PaperGateway(port=0, speed=0, start=QUOTE_START, stream_interval=0.05) as gw:
        yield gw


@pytest.fixture
def fib(frozen):
    from .ibclient import IBTestClient

    client = IBTestClient().start(frozen.port, next(_ids))
    yield client
    client.stop()


def _ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def my_black_scholes(right: str, s: float, k: float, t: float, vol: float) -> float:
    """An independent European Black-Scholes (no dividends)."""
    d1 = (math.log(s / k) + (RATE + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if right == "C":
        return s * _ncdf(d1) - k * math.exp(-RATE * t) * _ncdf(d2)
    return k * math.exp(-RATE * t) * _ncdf(-d2) - s * _ncdf(-d1)


def my_implied_vol(right, price, s, k, t) -> float:
    lo, hi = 1e-4, 5.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if my_black_scholes(right, s, k, t, mid) < price else (lo, mid)
    return (lo + hi) / 2


def snapshot(ib, con_id: int) -> dict:
    c = Contract()
    c.conId, c.exchange = con_id, "SMART"
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, c, "", True, False, [])
    ib.wait_for("tickSnapshotEnd", lambda e: e.args[0] == rid, start=start)
    with ib.cond:
        events = [e for e in ib.events[start:] if e.args and e.args[0] == rid]
    prices = {e.args[1]: e.args[2] for e in events if e.name == "tickPrice"}
    comps = {e.args[1]: e.args for e in events if e.name == "tickOptionComputation"}
    return {"bid": prices[1], "ask": prices[2], "comp": comps}


def on_option_grid(price: float) -> bool:
    tick = 0.01 if price < 3 else 0.05
    return abs(price / tick - round(price / tick)) < 1e-6


def test_option_quotes_and_greeks_follow_black_scholes(fib, frozen):
    _, rows = sec_def(fib)
    expiry = sorted(rows[0][5])[4]
    strikes = sorted(rows[0][6])
    t_end = datetime.combine(datetime.strptime(expiry, "%Y%m%d").date(), datetime.min.time().replace(hour=16),
                             NY)
    t = (t_end - QUOTE_START).total_seconds() / (365 * 86400)
    calls = {d.contract.strike: d.contract.conId for d in details(fib, option(expiry=expiry, right="C"))[1]}
    puts = {d.contract.strike: d.contract.conId for d in details(fib, option(expiry=expiry, right="P"))[1]}
    middle = strikes[len(strikes) // 2 - 4: len(strikes) // 2 + 5]
    deltas = []
    for k in middle:
        c, p = snapshot(fib, calls[k]), snapshot(fib, puts[k])
        for q in (c, p):
            assert 0 <= q["bid"] < q["ask"] and on_option_grid(q["bid"]) and on_option_grid(q["ask"])
            assert set(q["comp"]) >= {10, 11, 13}
        # args: reqId, tickType, tickAttrib, impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice
        _, _, _, c_vol, c_delta, c_price, c_div, c_gamma, c_vega, c_theta, s = c["comp"][13]
        _, _, _, p_vol, p_delta, p_price, _, _, _, _, s_p = p["comp"][13]
        assert s == s_p and c_div == 0.0
        assert c["bid"] <= c_price + 0.05 and c_price - 0.05 <= c["ask"]
        assert abs((c_price - p_price) - (s - k * math.exp(-RATE * t))) < 0.01     # put-call parity
        assert abs(my_implied_vol("C", c_price, s, k, t) - c_vol) < 1e-4
        assert abs(my_implied_vol("P", p_price, s, k, t) - p_vol) < 1e-4
        assert 0 < c_delta < 1 and -1 < p_delta < 0 and c_gamma > 0 and c_vega > 0 and c_theta < 0
        deltas.append(c_delta)
    assert deltas == sorted(deltas, reverse=True) and len(set(deltas)) == len(deltas)   # decreasing in strike


def test_option_line_streams_and_unknown_option_gets_200(fib, frozen):
    _, rows = sec_def(fib)
    expiry, strike = sorted(rows[0][5])[0], sorted(rows[0][6])[10]
    (d,) = details(fib, option(expiry=expiry, strike=strike, right="C"))[1]
    rid, start = fib.next_req(), fib.mark()
    fib.reqMktData(rid, d.contract, "", False, False, [])
    fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid and e.args[1] == 13, start=start)
    assert frozen.call(lambda s: len(s.marketdata.option_lines)) == 1
    fib.cancelMktData(rid)
    bad = Contract()
    bad.conId = d.contract.conId + 2 * 8192            # the same strike a day later: a Saturday, not listed
    rid = fib.next_req()
    fib.reqMktData(rid, bad, "", True, False, [])
    assert fib.wait_error(rid, 200)


def test_calculate_implied_volatility_and_option_price(fib, frozen):
    _, rows = sec_def(fib)
    expiry, strike = sorted(rows[0][5])[3], sorted(rows[0][6])[len(rows[0][6]) // 2]
    (d,) = details(fib, option(expiry=expiry, strike=strike, right="P"))[1]
    t_end = datetime.combine(datetime.strptime(expiry, "%Y%m%d").date(), datetime.min.time().replace(hour=16),
                             NY)
    t = (t_end - QUOTE_START).total_seconds() / (365 * 86400)
    und = 230.0
    rid, start = fib.next_req(), fib.mark()
    fib.calculateOptionPrice(rid, d.contract, 0.3, und, [])
    ev = fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid, start=start)
    assert ev.args[1] == 53 and ev.args[3] == 0.3 and ev.args[10] == und
    assert abs(ev.args[5] - my_black_scholes("P", und, strike, t, 0.3)) < 1e-9
    rid, start = fib.next_req(), fib.mark()
    fib.calculateImpliedVolatility(rid, d.contract, ev.args[5], und, [])
    iv = fib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid, start=start)
    assert iv.args[1] == 53 and abs(iv.args[3] - 0.3) < 1e-4 and iv.args[4] < 0
