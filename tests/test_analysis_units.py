"""The analysis computations on small hand-made frames: the figures' definitions (signs, bounds, the
quantile rule), the per-day close cache and the recorder (one row per date and account, updated in
place; dates in New York), and errors that name what is wrong. No gateway: these are the pure parts;
test_analysis_report checks them on a real portfolio."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from addin.analysis import concentration, exposure, risk
from addin.analysis.frames import ALL, AnalysisError, Inputs, holdings
from addin.analysis.history_cache import HistoryCache
from addin.analysis.pnl_history import PnLRecorder, day_executions, trading_day
from addin.analysis.report import build_report
from addin.analysis.store import AnalysisStore


def inputs(**over) -> Inputs:
    positions = pd.DataFrame([
        ("U1", "AAPL", 1, "STK", "USD", 10.0, 200.0, 2000.0),
        ("U1", "SAP", 2, "STK", "EUR", -5.0, 100.0, -500.0),
        ("U2", "AAPL", 1, "STK", "USD", 5.0, 200.0, 1000.0),
    ], columns=["account", "symbol", "con_id", "sec_type", "currency", "position", "market_price", "market_value"])
    contracts = pd.DataFrame([(1, "AAPL", "STK", "USD", "NASDAQ", "Technology", 1.0),
                              (2, "SAP", "STK", "EUR", "IBIS", "", 1.0),
                              (3, "SPY", "STK", "USD", "ARCA", "", 1.0)],
                             columns=["con_id", "ib_symbol", "sec_type", "currency", "exchange", "industry",
                                      "multiplier"])
    values = pd.DataFrame([("U1", "NetLiquidation", "10000", "USD"), ("U1", "ExchangeRate", "1.1", "EUR"),
                           ("U2", "NetLiquidation", "5000", "USD")], columns=["account", "key", "value", "currency"])
    days = pd.date_range("2025-01-01", periods=40, freq="D")
    rng = np.random.default_rng(7)
    closes = {cid: pd.Series(100 * np.cumprod(1 + rng.normal(0, 0.01, len(days))), index=days) for cid in (1, 2, 3)}
    pnl_single = pd.DataFrame([("U1", 1, 1.0, 2.0, 0.0, 2000.0), ("U1", 2, -1.0, 0.0, 3.0, -550.0),
                               ("U2", 1, 0.5, 1.0, 0.0, 1000.0)],
                              columns=["account", "con_id", "daily", "unrealized", "realized", "value"])
    pnl = pd.DataFrame([("U1", 0.0, 2.0, 3.0), ("U2", 0.5, 1.0, 0.0)],
                       columns=["account", "daily", "unrealized", "realized"])
    base = dict(positions=positions, contracts=contracts, values=values, pnl_single=pnl_single, pnl=pnl,
                closes=closes, benchmark_con_id=3, benchmark_symbol="SPY", window_days=30)
    base.update(over)
    return Inputs(**base)


def test_holdings_convert_with_ibs_exchange_rate_and_all_is_every_account():
    h = holdings(inputs(), "U1").set_index("symbol")
    assert h.mv["SAP"] == pytest.approx(-550.0) and h.industry["SAP"] == "Unclassified"
    assert len(holdings(inputs(), ALL)) == 3


def test_exposure_signs_and_concentration_bounds():
    h = holdings(inputs(), "U1")
    m = exposure.summary_measures(h, 10_000.0)
    assert (m["Long"], m["Short"], m["Gross"], m["Net"]) == pytest.approx((2000, -550, 2550, 1450))
    assert m["Leverage"] == pytest.approx(0.255)
    c = concentration.concentration_measures(h)
    w = np.array([2000, 550]) / 2550
    assert c["LargestWeight"] == pytest.approx(w.max()) and c["Herfindahl"] == pytest.approx((w ** 2).sum())
    assert 1 / 2 <= c["Herfindahl"] <= 1
    # All nets one conId across accounts: AAPL 3000 is one name
    assert concentration.names(holdings(inputs(), ALL)).set_index("symbol").mv["AAPL"] == pytest.approx(3000)


def test_var_es_is_the_loss_quantile_and_the_mean_beyond_it():
    pnl = -np.arange(1, 101, dtype=float)        # losses 1..100
    var, es = risk.var_es(pnl, 0.95)
    assert var == pytest.approx(np.quantile(np.arange(1, 101), 0.95)) == pytest.approx(95.05)
    assert es == pytest.approx(np.mean([96, 97, 98, 99, 100]))
    assert all(np.isnan(risk.var_es(np.array([]), 0.99)))


def test_the_report_names_the_account_or_symbol_it_cannot_use(tmp_path):
    bad = inputs(values=inputs().values[inputs().values.key != "ExchangeRate"])
    with pytest.raises(AnalysisError, match="account U1: no ExchangeRate for EUR \\(SAP\\)"):
        build_report(bad, now=datetime(2026, 3, 10, tzinfo=UTC))
    no_nlv = inputs(values=inputs().values[inputs().values.account != "U2"])
    with pytest.raises(AnalysisError, match="account U2: IB sent no NetLiquidation"):
        build_report(no_nlv, now=datetime(2026, 3, 10, tzinfo=UTC))


def test_close_cache_keeps_one_day_per_con_id(tmp_path):
    cache = HistoryCache(AnalysisStore(tmp_path / "a.sqlite3"))
    s = pd.Series([1.0, 2.0], index=pd.to_datetime(["2026-03-09", "2026-03-10"], utc=True))
    pulls = []
    got = cache.closes(5, date(2026, 3, 10), lambda: pulls.append(1) or s)
    again = cache.closes(5, date(2026, 3, 10), lambda: pulls.append(1) or s)
    assert len(pulls) == 1 and got.tolist() == again.tolist() == [1.0, 2.0]
    cache.closes(5, date(2026, 3, 11), lambda: pulls.append(1) or s)
    assert len(pulls) == 2 and cache.get(5, date(2026, 3, 10)) is None       # the older day replaced


def test_a_report_on_another_day_replacing_the_entry_does_not_cost_the_pulled_closes(tmp_path):
    # The service's recorder reports on today's date while a client asks for another day: both pull the
    # same conId, and each day's put replaces the other's entry. The closes just pulled are the answer.
    store = AnalysisStore(tmp_path / "a.sqlite3")
    mine, recorder = HistoryCache(store), HistoryCache(store)
    s = pd.Series([1.0, 2.0], index=pd.to_datetime(["2026-03-09", "2026-03-10"], utc=True))
    put = mine.put

    def put_then_the_recorder(con_id, day, closes, what=""):
        stored = put(con_id, day, closes, what)
        recorder.closes(con_id, date(2026, 12, 3), lambda: s * 10, what)     # replaces this day's entry
        return stored
    mine.put = put_then_the_recorder
    got = mine.closes(5, date(2026, 3, 10), lambda: s)
    assert got.tolist() == [1.0, 2.0] and mine.get(5, date(2026, 3, 10)) is None


def test_recorder_one_row_per_new_york_date_and_account_updated_in_place(tmp_path):
    rec = PnLRecorder(AnalysisStore(tmp_path / "a.sqlite3"))
    late = datetime(2026, 3, 11, 3, 30, tzinfo=UTC)            # 22:30 on the 10th in New York
    assert trading_day(late) == date(2026, 3, 10)
    rec.record_pnl(trading_day(late), "U1", 100.0, 1.0, 0.0, 2.0, 1, late)
    rec.record_pnl(trading_day(late), "U1", 110.0, 11.0, 0.0, 3.0, 2, late)
    rec.record_pnl(date(2026, 3, 11), "U1", 120.0, 10.0, 0.0, 0.0, 0, late)
    days = rec.pnl_days()
    assert days.Date.dt.strftime("%Y-%m-%d").tolist() == ["2026-03-10", "2026-03-11"]
    assert days.NetLiquidation.tolist() == [110.0, 120.0] and days.Fills.tolist() == [2, 0]
    fills = pd.DataFrame({"account": ["U1", "U1"], "commission": [1.0, 2.0],
                          "time": pd.to_datetime(["2026-03-11 03:00", "2026-03-11 05:00"], utc=True)})
    assert day_executions(fills, date(2026, 3, 10)) == {"U1": (1.0, 1)}    # 05:00 UTC is the 11th in New York


def test_the_what_if_of_a_basket_without_a_recorder(tmp_path):
    from addin.analysis.what_if import BASKET_COLUMNS
    # U1 buys 10 SAP at 99 (EUR; IB's rate 1.1): short 5 becomes long 5 at the mark 100
    basket = pd.DataFrame([("U1", 2, "SAP", "STK", "EUR", 10.0, 99.0, 100.0)], columns=BASKET_COLUMNS)
    out = build_report(inputs(), basket=basket, now=datetime(2026, 3, 10, 15, tzinfo=UTC))
    w = out["WhatIf"].set_index(["Account", "Measure"])
    assert w.AfterBasket[("U1", "Long")] == pytest.approx(2000 + 5 * 100 * 1.1)
    assert w.AfterBasket[("U1", "Short")] == 0 and w.Now[("U1", "Short")] == pytest.approx(-550)
    assert w.Change[("U1", "NetLiquidation")] == pytest.approx(10 * (100 - 99) * 1.1)
    assert w.Change[("U2", "Gross")] == 0
    assert len(out["PnLByDay"]) == 3 and set(out["PnLByDay"].Account) == {"U1", "U2", "All"}
    # U2 holds no EUR: its basket row cannot be valued and says so
    no_rate = pd.DataFrame([("U2", 2, "SAP", "STK", "EUR", 1.0, 99.0, 100.0)], columns=BASKET_COLUMNS)
    with pytest.raises(AnalysisError, match="basket SAP: account U2 has no ExchangeRate for EUR"):
        build_report(inputs(), basket=no_rate, now=datetime(2026, 3, 10, 15, tzinfo=UTC))


def test_a_holding_without_history_is_left_out_of_the_risk_and_named():
    base = inputs()
    closes = {k: v for k, v in base.closes.items() if k != 2}           # no bars for SAP
    out = build_report(inputs(closes=closes), now=datetime(2026, 3, 10, 15, tzinfo=UTC))
    s = out["Summary"].set_index(["Account", "Measure"])
    assert "left out: SAP" in s.Note[("U1", "VaR95")]
    risk_rows = out["PositionRisk"].set_index(["Account", "Symbol"])
    assert np.isnan(risk_rows.Beta[("U1", "SAP")]) and not np.isnan(risk_rows.Beta[("U1", "AAPL")])
    # U1's VaR is AAPL's alone: the same as a report of U1 without the SAP position
    only_aapl = inputs(positions=base.positions[base.positions.symbol != "SAP"])
    again = build_report(only_aapl, now=datetime(2026, 3, 10, 15, tzinfo=UTC))["Summary"]
    assert s.Value[("U1", "VaR95")] == pytest.approx(again.set_index(["Account", "Measure"]).Value[("U1", "VaR95")])


def option_inputs(delta=60.0, gamma=2.0, dollars=12_000.0) -> Inputs:
    """U1 also holds 2 calls on conId 1 (AAPL, undPrice 200 = dollars / delta) with whole-position greeks."""
    base = inputs()
    opt = pd.DataFrame([("U1", "AAPL 20260320 200 C", 9, "OPT", "USD", 2.0, 5.0, 1000.0)],
                       columns=base.positions.columns)
    positions = pd.concat([base.positions, opt], ignore_index=True)
    positions["delta"] = [np.nan, np.nan, np.nan, delta]
    positions["gamma"] = [np.nan, np.nan, np.nan, gamma]
    positions["delta_dollars"] = [2000.0, -500.0, 1000.0, dollars]
    contracts = pd.concat([base.contracts, pd.DataFrame([(9, "AAPL", "OPT", "USD", "", "", 100.0)],
                                                        columns=base.contracts.columns)], ignore_index=True)
    contracts["under_con_id"] = [0, 0, 0, 1]
    return Inputs(**{**base.__dict__, "positions": positions, "contracts": contracts})


def test_an_option_is_exposed_at_its_market_value_and_moved_by_its_underlying_with_delta_gamma():
    inp = option_inputs()
    h = holdings(inp, "U1").set_index("symbol")
    opt = h.loc["AAPL 20260320 200 C"]
    assert (opt.mv, opt.risk_con_id, opt.und_price) == (1000.0, 1, 200.0)
    returns = risk.daily_returns(inp.closes, [1, 2, 3], 30)
    pnl = risk.portfolio_pnl(holdings(inp, "U1"), returns)
    ds = 200.0 * returns[1].to_numpy()
    by_hand = 2000.0 * returns[1] - 550.0 * returns[2] + (60.0 * ds + 0.5 * 2.0 * ds ** 2)
    assert pnl == pytest.approx(by_hand.to_numpy(), rel=1e-12)
    report = build_report(inp, now=datetime(2025, 2, 10, 15, tzinfo=UTC))
    row = report["PositionRisk"].set_index(["Account", "Symbol"]).loc[("U1", "AAPL 20260320 200 C")]
    aapl = report["PositionRisk"].set_index(["Account", "Symbol"]).loc[("U1", "AAPL")]
    assert row.Beta == aapl.Beta and row.DailyVol == aapl.DailyVol
    assert row.BetaDeltaDollars == pytest.approx(aapl.Beta * 12_000.0, rel=1e-12)
    exp = report["Exposure"]
    assert exp[(exp.Account == "U1") & (exp.By == "SecType") & (exp.Group == "OPT")].Long.iloc[0] == 1000.0
    note = report["Summary"].set_index(["Account", "Measure"]).Note[("U1", "VaR95")]
    assert "delta-gamma" in note and "left out" not in note
    assert list(report["Correlation"].Symbol) == ["AAPL", "SAP"]        # no row of its own


def test_an_option_without_ibs_greeks_is_left_out_of_the_var_and_named():
    inp = option_inputs(delta=np.nan, gamma=np.nan, dollars=np.nan)
    without = build_report(inputs(), now=datetime(2025, 2, 10, 15, tzinfo=UTC))
    report = build_report(inp, now=datetime(2025, 2, 10, 15, tzinfo=UTC))
    s, w = (r["Summary"].set_index(["Account", "Measure"]) for r in (report, without))
    assert s.Value[("U1", "VaR95")] == w.Value[("U1", "VaR95")]
    assert "left out: AAPL 20260320 200 C" in s.Note[("U1", "VaR95")]
    assert s.Value[("U1", "Long")] == w.Value[("U1", "Long")] + 1000.0       # its exposure still counts
