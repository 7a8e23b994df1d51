"""The paper gateway's option model checked from outside: ib_async sees IB-shaped chains, contract
details and greeks; the quotes obey the model's laws (delta in (0, 1) and falling with the strike,
gamma and vega positive) and their implied vols are recovered by a Black-Scholes written here and
scipy's brentq, never by the gateway's own code. A frozen gateway clock makes T exact."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from ibapi.contract import Contract

NY = ZoneInfo("US/Eastern")
START = datetime(2026, 3, 10, 15, 0, tzinfo=ZoneInfo("UTC"))      # a Tuesday, 11:00 New York
RATE = 0.04                                                       # the stated rate (docs/paper-market.md)
YEAR = 365 * 86400
_ids = itertools.count(601)


@pytest.fixture(scope="module")
def frozen():
    from addin.paper import PaperGateway

    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05) as gw:
        yield gw


@pytest.fixture
def fib(frozen):
    from .ibclient import IBTestClient

    client = IBTestClient().start(frozen.port, next(_ids))
    yield client
    client.stop()


@pytest.fixture
def aib(frozen):
    ib_async = pytest.importorskip("ib_async")
    client = ib_async.IB()
    client.connect("127.0.0.1", frozen.port, clientId=next(_ids), timeout=10)
    yield client
    client.disconnect()


# --- an independent model -------------------------------------------------------------------------
def ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def bs(right: str, s: float, k: float, t: float, vol: float, r: float = RATE, q: float = 0.0) -> float:
    """European Black-Scholes-Merton with continuous dividend yield q."""
    d1 = (math.log(s / k) + (r - q + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if right == "C":
        return s * math.exp(-q * t) * ncdf(d1) - k * math.exp(-r * t) * ncdf(d2)
    return k * math.exp(-r * t) * ncdf(-d2) - s * math.exp(-q * t) * ncdf(-d1)


def brent_iv(right: str, price: float, s: float, k: float, t: float, r: float = RATE, q: float = 0.0) -> float:
    from scipy.optimize import brentq

    return brentq(lambda v: bs(right, s, k, t, v, r, q) - price, 1e-4, 5.0, xtol=1e-10)


def years(expiry: str, at: time, tz=NY) -> float:
    end = datetime.combine(datetime.strptime(expiry, "%Y%m%d").date(), at, tz)
    return (end - START).total_seconds() / YEAR


# --- wire helpers ------------------------------------------------------------------------------------
def sec_def(ib, symbol, con_id, sec_type="STK"):
    rid, start = ib.next_req(), ib.mark()
    ib.reqSecDefOptParams(rid, symbol, "", sec_type, con_id)
    return [e.args for e in ib.collect("securityDefinitionOptionParameter", "securityDefinitionOptionParameterEnd",
                                       rid, start=start)]


def details(ib, contract):
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, contract)
    return [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def option(symbol, expiry="", strike=0.0, right="", sec_type="OPT", exchange="SMART", trading_class=""):
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
    return {"bid": prices.get(1), "ask": prices.get(2), "comp": comps}


# --- (a) ib_async sees IB's shapes -----------------------------------------------------------------
def test_ib_async_chain_partial_contracts_and_model_greeks(aib):
    from ib_async import Option, OptionComputation, Stock

    (stock,) = aib.qualifyContracts(Stock("MSFT", "SMART", "USD"))
    chains = aib.reqSecDefOptParams("MSFT", "", "STK", stock.conId)
    assert len({c.exchange for c in chains}) == len(chains) >= 2
    smart = next(c for c in chains if c.exchange == "SMART")
    assert (smart.tradingClass, smart.multiplier, int(smart.underlyingConId)) == ("MSFT", "100", stock.conId)
    assert smart.expirations == sorted(smart.expirations) and smart.strikes == sorted(smart.strikes)
    assert all(isinstance(k, float) for k in smart.strikes)
    expiry = smart.expirations[2]
    every_strike = aib.reqContractDetails(Option("MSFT", expiry, 0.0, "C", "SMART"))
    assert [cd.contract.strike for cd in every_strike] == list(smart.strikes)
    for cd in every_strike:
        c = cd.contract
        assert (c.secType, c.right, c.multiplier, c.tradingClass, c.lastTradeDateOrContractMonth) == \
            ("OPT", "C", "100", "MSFT", expiry)
        assert cd.underConId == stock.conId and cd.minTick > 0 and cd.marketRuleIds
    strike = smart.strikes[len(smart.strikes) // 2]
    every_expiry = aib.reqContractDetails(Option("MSFT", "", strike, "P", "SMART"))
    assert [cd.contract.lastTradeDateOrContractMonth for cd in every_expiry] == list(smart.expirations)
    assert {cd.contract.strike for cd in every_expiry} == {strike}
    (opt,) = aib.qualifyContracts(Option("MSFT", expiry, strike, "C", "SMART"))
    ticker = aib.reqMktData(opt)
    deadline = datetime.now().timestamp() + 10
    while (ticker.modelGreeks is None or ticker.askGreeks is None) and datetime.now().timestamp() < deadline:
        aib.waitOnUpdate(timeout=1)
    for g in (ticker.modelGreeks, ticker.askGreeks):
        assert isinstance(g, OptionComputation)
        assert g.impliedVol is not None and 0 < g.impliedVol < 2
        assert 0 < g.delta < 1 and g.gamma > 0 and g.vega > 0 and g.theta < 0
        assert g.pvDividend == 0.0 and g.optPrice > 0 and g.undPrice > 0
    assert ticker.bid < ticker.modelGreeks.optPrice < ticker.ask
    assert ticker.askGreeks.optPrice == ticker.ask and ticker.bidGreeks.optPrice == ticker.bid
    aib.cancelMktData(opt)


# --- (b) the quotes obey the model's laws ------------------------------------------------------------
@pytest.mark.parametrize("symbol, con_id", [("AAPL", 265598), ("SPY", 756733)])
def test_greeks_are_sane_and_iv_is_recovered_independently(fib, symbol, con_id):
    rows = sec_def(fib, symbol, con_id)
    smart = next(r for r in rows if r[1] == "SMART")
    expiry, strikes = sorted(smart[5])[3], sorted(smart[6])
    t = years(expiry, time(16, 0))
    calls = {d.contract.strike: d.contract.conId for d in details(fib, option(symbol, expiry, right="C"))}
    puts = {d.contract.strike: d.contract.conId for d in details(fib, option(symbol, expiry, right="P"))}
    middle = strikes[len(strikes) // 2 - 5: len(strikes) // 2 + 6]
    deltas = []
    for k in middle:
        c, p = snapshot(fib, calls[k]), snapshot(fib, puts[k])
        _, _, _, c_vol, c_delta, c_price, _, c_gamma, c_vega, _, s = c["comp"][13]
        _, _, _, p_vol, p_delta, p_price, _, p_gamma, p_vega, _, _ = p["comp"][13]
        assert 0 < c_delta < 1 and -1 < p_delta < 0
        assert c_gamma > 0 and c_vega > 0 and p_gamma > 0 and p_vega > 0
        assert abs(c_delta - p_delta - 1) < 1e-9                          # no dividends: N(d1) - (N(d1) - 1)
        assert abs(brent_iv("C", c_price, s, k, t) - c_vol) < 1e-4
        assert abs(brent_iv("P", p_price, s, k, t) - p_vol) < 1e-4
        for side, tick in (("bid", 10), ("ask", 11)):
            price, vol = c[side], c["comp"][tick][3]
            if price and price > max(s - k * math.exp(-RATE * t), 0) + 1e-9:
                assert abs(brent_iv("C", price, s, k, t) - vol) < 1e-4    # the bid's and the ask's vols too
        deltas.append(c_delta)
    assert all(a > b for a, b in zip(deltas, deltas[1:]))               # call delta falls with the strike
