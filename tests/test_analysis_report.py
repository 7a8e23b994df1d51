"""The portfolio analysis report on a portfolio built on the paper gateway with real orders: two
accounts, stocks (AAPL, MSFT short, SPY), a second currency (an EUR.USD cash position: EUR exposure),
an ES future and BTC. The EUR stock (SAP) and options are in test_analysis_options.py's portfolio.

Every figure is checked against an independent computation in the test from what a separate ibapi
client reads (reqAccountUpdates per account: positions, market values, NetLiquidation, ExchangeRate;
reqContractDetails; reqHistoricalData; reqPnLSingle; reqExecutions). The gateway's clock is frozen at
a fixed start (speed 0), so prices and bars are the same for the report and the test; the report's
``now`` is passed in, so nothing depends on today's date.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from ibapi.contract import Contract
from ibapi.execution import ExecutionFilter

from addin.analysis.pnl_history import trading_day
from addin.app.runtime import Runtime
from addin.config import Settings
from addin.excel.layout import ANALYSIS_COLUMNS
from addin.paper import PaperGateway
from addin.protocol.messages import OUT

from .contracts import btc, eurusd, listed_es, stock
from .ibclient import IBTestClient
from .test_portfolio import Trader

START = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)       # a Tuesday, 11:00 in New York
ACCOUNTS = ["DU1", "DU2"]
WINDOW = 252
YEARS = "2 Y"                # the report pulls ceil((window + 5) / 250) years of daily bars
MEASURES = ["NetLiquidation", "Long", "Short", "Gross", "Net", "Leverage", "LargestWeight", "Herfindahl", "DailyPnL",
            "UnrealizedPnL", "RealizedPnL", "BetaDeltaDollars", "VaR95", "VaR99", "ES95", "ES99"]


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, start=START, speed=0, accounts=ACCOUNTS, stream_interval=0.05,
                      account_interval=0.5) as gateway:
        counts: collections.Counter = collections.Counter()

        def install(server):     # count the history requests the gateway receives (instrumentation)
            inner = server._handlers[OUT.REQ_HISTORICAL_DATA]

            def counted(conn, fields):
                counts["history"] += 1
                return inner(conn, fields)
            server._handlers[OUT.REQ_HISTORICAL_DATA] = counted

        gateway.call(install)
        gateway.received = counts
        yield gateway


def build_portfolio(trader: Trader, gw) -> None:
    trader.fill(stock("AAPL"), 20, account="DU1")
    trader.fill(stock("MSFT"), 10, "SELL", account="DU1")
    trader.fill(eurusd(), 20_000, account="DU1")
    trader.fill(btc(), 0.5, account="DU2")
    trader.fill(listed_es(gw)[0].contract(), 1, account="DU2")
    trader.fill(stock("SPY"), 10, account="DU2")


@pytest.fixture(scope="module")
def rt(gw, tmp_path_factory):
    runtime = Runtime(port=gw.port, client_id=81, settings=Settings(),
                      journal_path=tmp_path_factory.mktemp("analysis") / "journal.sqlite3")
    runtime.connect()
    runtime.trader = Trader(runtime.session)
    build_portfolio(runtime.trader, gw)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def ib(gw):
    client = IBTestClient().start(gw.port, 82)
    yield client
    client.stop()


@pytest.fixture(scope="module")
def report(rt):
    return rt.analysis(now=START)


# --- what a separate ibapi client reads ------------------------------------------------------------------
def account_updates(ib: IBTestClient, account: str) -> tuple[list, dict]:
    """(updatePortfolio rows (contract, position, marketValue) of non-flat positions, {(key, ccy): value})."""
    start = ib.mark()
    ib.reqAccountUpdates(True, account)
    end = ib.wait_for("accountDownloadEnd", lambda e: e.args[0] == account, start=start)
    ib.reqAccountUpdates(False, account)
    with ib.cond:                 # by identity: an earlier accountDownloadEnd of the account compares equal
        events = ib.events[start:]
        events = events[:next(i for i, e in enumerate(events) if e is end)]
    rows = {e.args[0].conId: (e.args[0], float(e.args[1]), float(e.args[3])) for e in events
            if e.name == "updatePortfolio" and e.args[-1] == account}
    values = {(e.args[0], e.args[2]): e.args[1] for e in events
              if e.name == "updateAccountValue" and e.args[-1] == account}
    return [r for r in rows.values() if r[1] != 0], values


def details(ib: IBTestClient, con_id: int):
    c = Contract()
    c.conId = con_id
    rid = ib.next_req()
    start = ib.mark()
    ib.reqContractDetails(rid, c)
    [d] = [e.args[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]
    return d


def daily_closes(ib: IBTestClient, contract: Contract) -> pd.Series:
    rid = ib.next_req()
    start = ib.mark()
    what = "MIDPOINT" if contract.secType == "CASH" else "TRADES"
    ib.reqHistoricalData(rid, contract, "", YEARS, "1 day", what, 1, 1, False, [])
    bars = [e.args[1] for e in ib.collect("historicalData", "historicalDataEnd", rid, timeout=30, start=start)]
    return pd.Series([b.close for b in bars], index=pd.to_datetime([b.date[:8] for b in bars]), name=contract.conId)


@pytest.fixture(scope="module")
def truth(ib, report):
    """The independent view: per account its holdings with base-currency values, NetLiquidation, and per
    conId the contract details and daily closes."""
    out = {"holdings": [], "nlv": {}, "details": {}, "closes": {}}
    for account in ACCOUNTS:
        rows, values = account_updates(ib, account)
        base = next(ccy for (key, ccy) in values if key == "NetLiquidation" and ccy not in ("", "BASE"))
        out["nlv"][account] = float(values[("NetLiquidation", base)])
        for contract, position, mv in rows:
            rate = 1.0 if contract.currency == base else float(values[("ExchangeRate", contract.currency)])
            out["holdings"].append({"account": account, "con_id": contract.conId, "position": position,
                                    "mv": mv * rate, "contract": contract})
    ids = {h["con_id"] for h in out["holdings"]}
    for cid in ids:
        out["details"][cid] = details(ib, cid)
    for cid, d in out["details"].items():
        out["closes"][cid] = daily_closes(ib, d.contract)
    spy_id = next(cid for cid, d in out["details"].items() if d.contract.symbol == "SPY")
    out["spy"] = spy_id
    frame = pd.DataFrame(out["holdings"])
    frame["sec_type"] = [out["details"][c].contract.secType for c in frame.con_id]
    frame["currency"] = [d.contract.symbol if d.contract.secType == "CASH" else d.contract.currency
                         for d in (out["details"][c] for c in frame.con_id)]
    frame["exchange"] = [out["details"][c].contract.primaryExchange or out["details"][c].contract.exchange
                         for c in frame.con_id]
    frame["industry"] = [out["details"][c].industry or out["details"][c].category or "Unclassified"
                         for c in frame.con_id]
    out["frame"] = frame
    return out


def scope(truth, account: str) -> tuple[pd.DataFrame, float]:
    f = truth["frame"]
    if account == "All":
        return f, sum(truth["nlv"].values())
    return f[f.account == account], truth["nlv"][account]


def summary_of(report, account: str) -> dict:
    s = report["Summary"]
    s = s[s.Account == account]
    return dict(zip(s.Measure, s.Value))


# --- the figures ----------------------------------------------------------------------------------------------
def test_the_report_has_exactly_the_contracts_columns(report):
    for name, columns in ANALYSIS_COLUMNS.items():
        if name == "Correlation":
            assert list(report[name].columns[:1]) == ["Symbol"]
        else:
            assert list(report[name].columns) == columns, name


def test_each_exposure_figure_equals_an_independent_computation(report, truth):
    exp = report["Exposure"]
    keys = {"SecType": "sec_type", "Currency": "currency", "Exchange": "exchange", "Industry": "industry"}
    seen = 0
    for account in [*ACCOUNTS, "All"]:
        f, nlv = scope(truth, account)
        for by, column in keys.items():
            mine = exp[(exp.Account == account) & (exp.By == by)].set_index("Group")
            assert sorted(mine.index) == sorted(set(f[column])), (account, by)
            for group, part in f.groupby(column):
                long, short = part.mv[part.mv > 0].sum(), part.mv[part.mv < 0].sum()
                row = mine.loc[group]
                assert row.Long == pytest.approx(long, rel=1e-9, abs=1e-6)
                assert row.Short == pytest.approx(short, rel=1e-9, abs=1e-6)
                assert row.Gross == pytest.approx(long - short, rel=1e-9, abs=1e-6)
                assert row.Net == pytest.approx(long + short, rel=1e-9, abs=1e-6)
                assert row.PctNetLiq == pytest.approx((long + short) / nlv, rel=1e-9, abs=1e-12)
                seen += 1
    assert seen == 29                   # 8 groups for DU1, 8 for DU2, 13 for All
    # the second currency is there: EUR from the EUR.USD position, next to USD
    assert set(exp[(exp.Account == "DU1") & (exp.By == "Currency")].Group) == {"EUR", "USD"}
    assert set(exp[(exp.Account == "All") & (exp.By == "SecType")].Group) == {"STK", "CASH", "FUT", "CRYPTO"}


def test_leverage_and_concentration_equal_an_independent_computation(report, truth):
    for account in [*ACCOUNTS, "All"]:
        f, nlv = scope(truth, account)
        s = summary_of(report, account)
        by_name = f.groupby("con_id").mv.sum()
        gross = f.mv[f.mv > 0].sum() - f.mv[f.mv < 0].sum()
        weights = by_name.abs() / by_name.abs().sum()
        assert s["NetLiquidation"] == pytest.approx(nlv, rel=1e-12)
        assert s["Gross"] == pytest.approx(gross, rel=1e-9)
        assert s["Leverage"] == pytest.approx(gross / nlv, rel=1e-9)
        assert s["LargestWeight"] == pytest.approx(weights.max(), rel=1e-9)
        assert s["Herfindahl"] == pytest.approx((weights ** 2).sum(), rel=1e-9)
        top = report["Concentration"][report["Concentration"].Account == account]
        assert list(top.Rank) == list(range(1, len(by_name) + 1))
        assert top.Weight.abs().iloc[0] == pytest.approx(weights.max(), rel=1e-9)
        assert top.Weight.abs().is_monotonic_decreasing


def independent_var(truth, account: str) -> dict:
    f, _ = scope(truth, account)
    all_ids = sorted(set(truth["frame"].con_id) | {truth["spy"]})     # the report aligns every holding's dates
    aligned = pd.concat([truth["closes"][c].rename(c) for c in all_ids], axis=1, join="inner").sort_index()
    returns = aligned.pct_change().iloc[1:].tail(WINDOW)
    mv = f.groupby("con_id").mv.sum()
    losses = -(returns[list(mv.index)].to_numpy() @ mv.to_numpy())
    out = {}
    for level in (95, 99):
        var = np.quantile(losses, level / 100)
        out[f"VaR{level}"], out[f"ES{level}"] = var, losses[losses >= var].mean()
    return out, returns


def test_var_and_es_equal_an_independent_computation_from_the_same_bars(report, truth):
    for account in [*ACCOUNTS, "All"]:
        expected, returns = independent_var(truth, account)
        s = summary_of(report, account)
        assert len(returns) > 60             # the dates every holding has bars for (EUR.USD: 251 bars)
        for key, value in expected.items():
            assert s[key] == pytest.approx(value, rel=1e-9), (account, key)
        assert 0 < s["VaR95"] <= s["VaR99"] and s["VaR95"] <= s["ES95"] and s["VaR99"] <= s["ES99"]
    note = report["Summary"].set_index(["Account", "Measure"]).Note
    assert "historical" in note[("All", "VaR95")] and f"last {len(returns)} daily returns" in note[("All", "VaR95")]


def test_beta_of_spy_to_spy_is_one_and_the_correlation_matrix_is_symmetric(report, truth):
    risk = report["PositionRisk"]
    spy = risk[risk.Symbol == "SPY"]
    assert len(spy) == 2                                  # DU2 and All
    assert spy.Beta.tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert spy.BetaDeltaShares.tolist() == pytest.approx([10.0, 10.0], rel=1e-9)   # 10 SPY held
    # an independent beta and volatility of AAPL from the test's own bars
    _, returns = independent_var(truth, "All")
    aapl = next(c for c, d in truth["details"].items() if d.contract.symbol == "AAPL")
    r, b = returns[aapl], returns[truth["spy"]]
    row = risk[(risk.Account == "DU1") & (risk.ConId == aapl)].iloc[0]
    assert row.Beta == pytest.approx(np.cov(r, b, ddof=1)[0, 1] / b.var(ddof=1), rel=1e-9)
    assert row.DailyVol == pytest.approx(r.std(ddof=1), rel=1e-9)
    corr = report["Correlation"].set_index("Symbol")
    m = corr.to_numpy(dtype=float)
    assert list(corr.index) == list(corr.columns) and len(corr) == 6
    assert np.array_equal(m, m.T) and np.allclose(np.diag(m), 1.0) and np.all(np.abs(m) <= 1 + 1e-12)
    assert corr.loc["AAPL", "MSFT"] == pytest.approx(np.corrcoef(returns[aapl], returns[
        next(c for c, d in truth["details"].items() if d.contract.symbol == "MSFT")])[0, 1], rel=1e-9)


def test_two_accounts_every_figure_is_present_for_each_and_for_all(report):
    for account in [*ACCOUNTS, "All"]:
        s = report["Summary"][report["Summary"].Account == account]
        assert list(s.Measure) == MEASURES
        assert not s.Value.isna().any(), s[s.Value.isna()]
        for name in ("Exposure", "Concentration", "PositionPnL", "PositionRisk", "WhatIf", "PnLByDay", "VaRHistory"):
            part = report[name][report[name].Account == account]
            assert len(part), (name, account)
            assert not part.isna().any().any(), (name, account, part[part.isna().any(axis=1)])


def test_position_pnl_equals_reqpnlsingle_read_over_ibapi(report, ib, truth):
    pnl = report["PositionPnL"]
    for h in truth["holdings"]:
        rid = ib.next_req()
        start = ib.mark()
        ib.reqPnLSingle(rid, h["account"], "", h["con_id"])
        ev = ib.wait_for("pnlSingle", lambda e, rid=rid: e.args[0] == rid, start=start)
        ib.cancelPnLSingle(rid)
        _, pos, daily, unrealized, realized, value = ev.args[:6]
        row = pnl[(pnl.Account == h["account"]) & (pnl.ConId == h["con_id"])].iloc[0]
        assert row.Position == pytest.approx(float(pos))
        assert row.DailyPnL == pytest.approx(daily, abs=1e-6)
        assert row.UnrealizedPnL == pytest.approx(unrealized, abs=1e-6)
        assert row.RealizedPnL == pytest.approx(realized, abs=1e-6)
        assert row.MarketValue == pytest.approx(value, rel=1e-9)
    total = pnl[pnl.Account == "All"]
    assert total.DailyPnL.sum() == pytest.approx(pnl[pnl.Account != "All"].DailyPnL.sum(), abs=1e-9)


def test_the_day_is_recorded_once_and_a_second_report_that_day_pulls_no_history(gw, rt, report, ib):
    before = gw.received["history"]
    again = rt.analysis(now=START + timedelta(hours=3))
    assert gw.received["history"] == before              # every close from the per-day cache
    day = pd.Timestamp(trading_day(START))
    rows = again["PnLByDay"]
    assert sorted(rows.Account) == ["All", "DU1", "DU2"] and set(rows.Date) == {day}   # updated in place
    # the day's fills and commissions, against reqExecutions over ibapi
    rid = ib.next_req()
    start = ib.mark()
    ib.reqExecutions(rid, ExecutionFilter())
    ib.wait_for("execDetailsEnd", lambda e: e.args[0] == rid, start=start)
    with ib.cond:
        fills = [e.args[2] for e in ib.events[start:] if e.name == "execDetails" and e.args[0] == rid]
        commissions = {e.args[0].execId: e.args[0].commissionAndFees for e in ib.events
                       if e.name == "commissionAndFeesReport"}
    by_account = rows.set_index("Account")
    for account in ACCOUNTS:
        mine = [f for f in fills if f.acctNumber == account]
        assert by_account.Fills[account] == len(mine) == 3
        assert by_account.Commission[account] == pytest.approx(sum(commissions[f.execId] for f in mine), rel=1e-9)
    assert by_account.Fills["All"] == 6
    assert set(again["VaRHistory"].Date) == {day}
    # the next New York day pulls each holding's bars once more, and adds a row per account
    next_day = rt.analysis(now=START + timedelta(days=1))
    held = len({*report["PositionRisk"].ConId})
    assert gw.received["history"] - before == held + (0 if "SPY" in set(report["PositionRisk"].Symbol) else 1)
    assert len(next_day["PnLByDay"]) == 6 and len(next_day["VaRHistory"]) == 6


def test_what_if_figures_equal_the_figures_after_the_basket_fills(gw, rt):
    basket = [
        {"Ref": "W1", "Account": "DU1", "Symbol": "MSFT", "Action": "BUY", "Quantity": 4, "OrderType": "MKT"},
        {"Ref": "W2", "Account": "DU2", "Symbol": "GOOG", "Action": "BUY", "Quantity": 5, "OrderType": "MKT"},
        {"Ref": "W3", "Account": "DU1", "Symbol": "AAPL", "Action": "SELL", "Quantity": 5, "OrderType": "MKT"},
        {"Ref": "DONE", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 99, "OrderType": "MKT",
         "Status": "Filled"},                                    # already sent: not part of the basket
    ]
    before = rt.analysis(basket, now=START)
    what_if = before["WhatIf"].set_index(["Account", "Measure"])
    assert (what_if.Change != 0).any()
    trader = rt.trader
    trader.fill(stock("MSFT"), 4, "BUY", account="DU1")
    trader.fill(stock("GOOG"), 5, "BUY", account="DU2")
    trader.fill(stock("AAPL"), 5, "SELL", account="DU1")
    pf = rt.portfolio
    expected = {("DU1", "MSFT"): -6.0, ("DU1", "AAPL"): 15.0, ("DU2", "GOOG"): 5.0}

    def valued_after_the_fills() -> bool:   # reqPositions has the new quantities, and IB's values agree with them
        p = pf.positions().set_index(["account", "symbol"])
        return all(key in p.index and p.position[key] == qty and
                   abs(p.market_value[key] - qty * p.market_price[key]) < 1e-6 for key, qty in expected.items())
    assert pf.wait_until(valued_after_the_fills, 10)
    after = rt.analysis(now=START)
    for account in [*ACCOUNTS, "All"]:
        s = summary_of(after, account)
        for measure in what_if.loc[account].index:
            expected = what_if.loc[(account, measure), "AfterBasket"]
            # NetLiquidation differs by the commissions and the half spread the market orders paid
            tol = dict(rel=1e-4) if measure == "NetLiquidation" else dict(rel=1e-9, abs=1e-9)
            if measure in ("Leverage", "PctNetLiq"):
                tol = dict(rel=1e-4)
            assert s[measure] == pytest.approx(expected, **tol), (account, measure)
