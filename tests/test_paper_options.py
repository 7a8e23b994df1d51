"""Listed options on the paper gateway, through the wire: reqSecDefOptParams and reqContractDetails of
partial and full option contracts, with the plain ibapi client and with ib_async. Expectations come
from the gateway's own start date (never today's) and from rules written here independently: OCC
symbols, Fridays and third Fridays, the strike grid."""

from __future__ import annotations

import itertools
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
