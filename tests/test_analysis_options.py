"""The portfolio analysis with options and a second-currency stock, on the paper gateway with real orders:
DU1 holds AAPL, SAP (Xetra, EUR), EUR.USD and a long AAPL call; DU2 holds BTC, an ES future, SPY and a
short AAPL put.

Every figure is checked against an independent computation in the test from what a separate ibapi
client reads: reqAccountUpdates (positions, market values as IB reports them with the multiplier,
NetLiquidation, ExchangeRate EUR), reqContractDetails (underConId of the options), reqHistoricalData
(daily closes; the options have none: their underlying's), and reqMktData on each option for IB's
model greeks (tickOptionComputation, tick 13: delta, gamma, undPrice). The option's VaR scenarios are
the delta-gamma approximation the Summary's Note states, written out here. The gateway's clock is
frozen (speed 0), so quotes, greeks and bars are the same for the report and the test.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from addin.app.runtime import Runtime
from addin.config import Settings
from addin.paper import PaperGateway

from .contracts import btc, contract, eurusd, listed_es, stock
from .ibclient import IBTestClient
from .test_analysis_report import daily_closes, details, summary_of
from .test_portfolio import Trader
from .test_position_greeks import wait_positions

START = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)       # a Tuesday, 11:00 New York, 16:00 Frankfurt
ACCOUNTS = ["DU1", "DU2"]
WINDOW = 252
NAMES = [*ACCOUNTS, "All"]


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, start=START, speed=0, accounts=ACCOUNTS, stream_interval=0.05,
                      account_interval=0.5) as gateway:
        yield gateway


def aapl_options(gw):
    """An at-the-money call and put of AAPL's second listed expiry (chosen from the gateway's own list)."""
    def read(s):
        inst = next(i for i in s.market.instruments if i.symbol == "AAPL" and i.sec_type == "STK")
        oc = s.market.options.classes["AAPL"]
        return s.market.quote(inst).mid, oc.expiries, oc.strikes
    mid, expiries, strikes = gw.call(read)
    strike = min(strikes, key=lambda k: abs(k - mid))
    return [contract("AAPL", "OPT", lastTradeDateOrContractMonth=f"{expiries[1]:%Y%m%d}", strike=strike,
                     right=right, multiplier="100") for right in ("C", "P")]


@pytest.fixture(scope="module")
def rt(gw, tmp_path_factory):
    runtime = Runtime(port=gw.port, client_id=91, settings=Settings(),
                      journal_path=tmp_path_factory.mktemp("analysis_opt") / "journal.sqlite3")
    runtime.connect()
    trader = runtime.trader = Trader(runtime.session)
    call, put = aapl_options(gw)
    trader.fill(stock("AAPL"), 20, account="DU1")
    trader.fill(contract("SAP", currency="EUR"), 10, account="DU1")
    trader.fill(eurusd(), 20_000, account="DU1")
    trader.fill(call, 2, account="DU1")
    trader.fill(btc(), 0.5, account="DU2")
    trader.fill(listed_es(gw)[0].contract(), 1, account="DU2")
    trader.fill(stock("SPY"), 10, account="DU2")
    trader.fill(put, 3, "SELL", account="DU2")
    runtime.options = (call, put)
    yield runtime
    runtime.close()


def greeks_known(frame) -> bool:
    opts = frame[(frame.sec_type == "OPT") & (frame.position != 0)]
    return len(opts) == 2 and not opts[["delta", "gamma", "delta_dollars"]].isna().any().any() and \
        not frame.loc[frame.position != 0, "market_value"].isna().any()


@pytest.fixture(scope="module")
def report(rt):
    wait_positions(rt, greeks_known)          # IB's model greeks of both option lines have arrived
    return rt.analysis(now=START)


@pytest.fixture(scope="module")
def ib(gw):
    client = IBTestClient().start(gw.port, 92)
    yield client
    client.stop()


def account_updates(ib: IBTestClient, account: str) -> tuple[list, dict]:
    start = ib.mark()
    ib.reqAccountUpdates(True, account)
    end = ib.wait_for("accountDownloadEnd", lambda e: e.args[0] == account, start=start)
    ib.reqAccountUpdates(False, account)
    with ib.cond:
        events = ib.events[start:]
        events = events[:next(i for i, e in enumerate(events) if e is end)]
    rows = {e.args[0].conId: (e.args[0], float(e.args[1]), float(e.args[3])) for e in events
            if e.name == "updatePortfolio" and e.args[-1] == account}
    values = {(e.args[0], e.args[2]): e.args[1] for e in events if e.name == "updateAccountValue"}
    return [r for r in rows.values() if r[1] != 0], values


def model_greeks(ib: IBTestClient, con_id: int) -> tuple[float, float, float]:
    """IB's model (tick 13) delta, gamma and undPrice of one option, per contract share."""
    c = details(ib, con_id).contract
    rid = ib.next_req()
    start = ib.mark()
    ib.reqMktData(rid, c, "", False, False, [])
    ev = ib.wait_for("tickOptionComputation", lambda e: e.args[0] == rid and e.args[1] == 13
                     and e.args[4] is not None and e.args[10] is not None, start=start)
    ib.cancelMktData(rid)
    return ev.args[4], ev.args[7], ev.args[10]


@pytest.fixture(scope="module")
def truth(ib, report):
    """Per account the holdings with base-currency values; per conId details, closes and the greeks."""
    out = {"holdings": [], "nlv": {}, "details": {}, "closes": {}, "eur": {}}
    for account in ACCOUNTS:
        rows, values = account_updates(ib, account)
        out["nlv"][account] = float(values[("NetLiquidation", "USD")])
        for c, position, mv in rows:
            rate = 1.0 if c.currency == "USD" else float(values[("ExchangeRate", c.currency)])
            out["holdings"].append({"account": account, "con_id": c.conId, "position": position, "mv": mv * rate,
                                    "rate": rate})
        out["eur"][account] = float(values.get(("ExchangeRate", "EUR"), "nan"))    # DU2 has no EUR ledger
    for cid in {h["con_id"] for h in out["holdings"]}:
        out["details"][cid] = details(ib, cid)
    f = pd.DataFrame(out["holdings"])
    d = out["details"]
    f["symbol"] = [d[c].contract.symbol for c in f.con_id]
    f["sec_type"] = [d[c].contract.secType for c in f.con_id]
    f["currency"] = [d[c].contract.symbol if d[c].contract.secType == "CASH" else d[c].contract.currency
                     for c in f.con_id]
    f["risk_id"] = [d[c].underConId if d[c].contract.secType == "OPT" else c for c in f.con_id]
    greeks = {c: model_greeks(ib, c) for c in f.con_id[f.sec_type == "OPT"]}
    f["delta"] = [greeks[c][0] * p * 100 if c in greeks else np.nan for c, p in zip(f.con_id, f.position)]
    f["gamma"] = [greeks[c][1] * p * 100 if c in greeks else np.nan for c, p in zip(f.con_id, f.position)]
    f["und"] = [greeks[c][2] if c in greeks else np.nan for c in f.con_id]
    spy = next(c for c in f.con_id if d[c].contract.symbol == "SPY")
    for cid in {*f.risk_id}:
        dd = d.get(cid) or details(ib, cid)
        out["closes"][cid] = daily_closes(ib, dd.contract)
    out["frame"], out["spy"] = f, spy
    return out


def scope(truth, account):
    f = truth["frame"]
    return (f, sum(truth["nlv"].values())) if account == "All" else (f[f.account == account], truth["nlv"][account])


def returns_of(truth) -> pd.DataFrame:
    ids = sorted(set(truth["frame"].risk_id) | {truth["spy"]})
    aligned = pd.concat([truth["closes"][c].rename(c) for c in ids], axis=1, join="inner").sort_index()
    return aligned.pct_change().iloc[1:].tail(WINDOW)


def scenario_pnl(f: pd.DataFrame, returns: pd.DataFrame) -> np.ndarray:
    """Linear: mv x r. Options: delta x dS + 0.5 x gamma x dS^2, dS = undPrice x r(underlying), USD."""
    pnl = np.zeros(len(returns))
    for r in f.itertuples():
        ret = returns[r.risk_id].to_numpy()
        if r.sec_type == "OPT":
            ds = r.und * ret
            pnl += r.rate * (r.delta * ds + 0.5 * r.gamma * ds ** 2)
        else:
            pnl += r.mv * ret
    return pnl


# --- the figures ----------------------------------------------------------------------------------------
def test_the_portfolio_holds_both_currencies_options_a_future_and_crypto(truth):
    f = truth["frame"]
    assert set(f.sec_type) == {"STK", "CASH", "FUT", "CRYPTO", "OPT"}
    assert set(f[f.sec_type == "STK"].currency) == {"USD", "EUR"}
    opts = f[f.sec_type == "OPT"].set_index("account")
    assert opts.position["DU1"] == 2 and opts.position["DU2"] == -3
    assert opts.delta["DU1"] > 0 and opts.delta["DU2"] > 0          # a long call and a short put: both long delta


def test_each_exposure_figure_equals_an_independent_computation(report, truth):
    exp = report["Exposure"]
    seen = 0
    for account in NAMES:
        f, nlv = scope(truth, account)
        for by, column in (("SecType", "sec_type"), ("Currency", "currency")):
            mine = exp[(exp.Account == account) & (exp.By == by)].set_index("Group")
            assert sorted(mine.index) == sorted(set(f[column])), (account, by)
            for group, part in f.groupby(column):
                long, short = part.mv[part.mv > 0].sum(), part.mv[part.mv < 0].sum()
                row = mine.loc[group]
                assert (row.Long, row.Short) == (pytest.approx(long, rel=1e-9, abs=1e-6),
                                                 pytest.approx(short, rel=1e-9, abs=1e-6)), (account, by, group)
                assert row.Gross == pytest.approx(long - short, rel=1e-9, abs=1e-6)
                assert row.Net == pytest.approx(long + short, rel=1e-9, abs=1e-6)
                assert row.PctNetLiq == pytest.approx((long + short) / nlv, rel=1e-9, abs=1e-12)
                seen += 1
    assert seen == 17     # DU1: 3 secTypes + 2 currencies, DU2: 4 + 1, All: 5 + 2
    du1 = exp[(exp.Account == "DU1") & (exp.By == "Currency")].set_index("Group")
    f1 = truth["frame"][truth["frame"].account == "DU1"]
    eur = f1[f1.currency == "EUR"]
    # EUR: the SAP shares and the EUR.USD cash position, converted with IB's ExchangeRate
    assert du1.Long["EUR"] == pytest.approx(eur.mv.sum(), rel=1e-9)
    assert set(eur.symbol) == {"SAP", "EUR"}
    assert eur[eur.symbol == "SAP"].rate.iloc[0] == truth["eur"]["DU1"] > 1     # EUR.USD is valued in USD already
    opt = exp[(exp.By == "SecType") & (exp.Group == "OPT")].set_index("Account")
    assert opt.Long["DU1"] > 0 and opt.Short["DU2"] < 0 and opt.Net["All"] == pytest.approx(
        opt.Long["DU1"] + opt.Short["DU2"], rel=1e-12)


def test_var_es_and_beta_delta_with_options_equal_an_independent_computation(report, truth):
    returns = returns_of(truth)
    b = returns[truth["spy"]]
    spy_price = truth["closes"][truth["spy"]].iloc[-1]
    assert len(returns) > 60
    for account in NAMES:
        f, _ = scope(truth, account)
        losses = -scenario_pnl(f, returns)
        s = summary_of(report, account)
        for level in (95, 99):
            var = np.quantile(losses, level / 100)
            assert s[f"VaR{level}"] == pytest.approx(var, rel=1e-9), (account, level)
            assert s[f"ES{level}"] == pytest.approx(losses[losses >= var].mean(), rel=1e-9), (account, level)
        beta = {c: np.cov(returns[c], b, ddof=1)[0, 1] / b.var(ddof=1) for c in set(f.risk_id)}
        exposure = np.where(f.sec_type == "OPT", f.delta * f.und * f.rate, f.mv)
        dollars = sum(beta[c] * x for c, x in zip(f.risk_id, exposure))
        assert s["BetaDeltaDollars"] == pytest.approx(dollars, rel=1e-9), account
    risk = report["PositionRisk"]
    for r in truth["frame"][truth["frame"].sec_type == "OPT"].itertuples():
        row = risk[(risk.Account == r.account) & (risk.ConId == r.con_id)].iloc[0]
        beta = np.cov(returns[r.risk_id], b, ddof=1)[0, 1] / b.var(ddof=1)
        assert row.MarketValue == pytest.approx(r.mv, rel=1e-9)
        assert row.Beta == pytest.approx(beta, rel=1e-9)
        assert row.DailyVol == pytest.approx(returns[r.risk_id].std(ddof=1), rel=1e-9)
        assert row.BetaDeltaDollars == pytest.approx(beta * r.delta * r.und, rel=1e-9)
        assert row.BetaDeltaShares == pytest.approx(beta * r.delta * r.und / spy_price, rel=1e-9)
    note = report["Summary"].set_index(["Account", "Measure"]).Note[("All", "VaR95")]
    assert "delta-gamma" in note and "left out" not in note
    corr = report["Correlation"].set_index("Symbol")
    m = corr.to_numpy(dtype=float)
    assert np.array_equal(m, m.T) and np.allclose(np.diag(m), 1.0)
    assert "SAP@EUR" in corr.index and len(corr) == 6    # the options are moved by AAPL: no rows of their own


def test_the_gateway_serves_no_daily_bars_for_an_option(ib, rt):
    rid = ib.next_req()
    start = ib.mark()
    ib.reqHistoricalData(rid, rt.options[0], "", "1 M", "1 day", "TRADES", 1, 1, False, [])
    err = ib.wait_for("error", lambda e: e.args[0] == rid, start=start)
    assert not [e for e in ib.events[start:] if e.name == "historicalData" and e.args[0] == rid], err


def test_two_accounts_every_figure_is_present_for_each_and_for_all(report):
    for account in NAMES:
        s = report["Summary"][report["Summary"].Account == account]
        assert len(s) == 16 and not s.Value.isna().any(), s[s.Value.isna()]
        for name in ("Exposure", "Concentration", "PositionPnL", "PositionRisk", "WhatIf"):
            part = report[name][report[name].Account == account]
            assert len(part) and not part.isna().any().any(), (name, account)


def test_what_if_with_an_option_and_the_eur_stock_equals_the_figures_after_the_fills(gw, rt, report):
    call, _ = rt.options
    text = f"AAPL {call.lastTradeDateOrContractMonth} {call.strike:g} C"
    basket = [
        {"Ref": "W1", "Account": "DU1", "Symbol": text, "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
        {"Ref": "W2", "Account": "DU1", "Symbol": "SAP.IBIS@EUR", "Action": "BUY", "Quantity": 5, "OrderType": "MKT"},
    ]
    before = rt.analysis(basket, now=START)
    what_if = before["WhatIf"].set_index(["Account", "Measure"])
    assert (what_if.loc["DU1"].Change != 0).sum() >= 10
    rt.trader.fill(call, 1, account="DU1")
    rt.trader.fill(contract("SAP", currency="EUR"), 5, account="DU1")
    wait_positions(rt, lambda f: greeks_known(f) and set(
        f[(f.account == "DU1") & f.sec_type.isin(["OPT", "STK"]) & f.symbol.str.startswith(("AAPL ", "SAP"))]
        .position) >= {3.0, 15.0})
    after = rt.analysis(now=START)
    for account in NAMES:
        s = summary_of(after, account)
        for measure in what_if.loc[account].index:
            want = what_if.loc[(account, measure), "AfterBasket"]
            # NetLiquidation (and Leverage) differ by the commissions and the half spread the orders paid
            tol = dict(rel=1e-4) if measure in ("NetLiquidation", "Leverage") else dict(rel=1e-9, abs=1e-9)
            assert s[measure] == pytest.approx(want, **tol), (account, measure)
