"""The analysis report: every Analysis Table as a frame, per account and for "All".

``build_report(inputs, ...)`` returns ``{Table name: DataFrame}`` with exactly the columns of
``addin.excel.layout.ANALYSIS_COLUMNS`` (Correlation: "Symbol" then one column per holding), amounts
in the base currency. Figures: :mod:`.exposure`, :mod:`.concentration`, :mod:`.risk` (method in the
Summary's Note), P&L from reqPnL / reqPnLSingle, :mod:`.what_if` for the basket, and the recorded
days from :mod:`.pnl_history` (this report's day recorded first, so the Tables include it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

from . import concentration, exposure, risk
from .frames import ALL, Inputs, accounts_of, holdings, total_net_liquidation
from .pnl_history import PNL_COLUMNS, VAR_COLUMNS, PnLRecorder, day_executions, trading_day
from .what_if import apply_basket

SUMMARY_COLUMNS = ["Account", "Measure", "Value", "Note"]
PNL_POSITION_COLUMNS = ["Account", "Symbol", "ConId", "Position", "MarketValue", "DailyPnL", "UnrealizedPnL",
                        "RealizedPnL"]
WHAT_IF_COLUMNS = ["Account", "Measure", "Now", "AfterBasket", "Change"]
WHAT_IF_MEASURES = ["NetLiquidation", "Long", "Short", "Gross", "Net", "Leverage", "LargestWeight", "Herfindahl",
                    "BetaDeltaDollars", "VaR95", "VaR99", "ES95", "ES99"]


def method_note(window_days: int, days_used: int, benchmark: str, as_of: datetime,
                left_out: Sequence[str] = (), options: bool = False) -> str:
    note = (f"one-day historical VaR/ES: today's positions revalued on each of the last {days_used} daily "
            f"returns (window {window_days}, dates all holdings share; losses positive; VaR = loss quantile, "
            f"ES = mean loss at or beyond it); beta to {benchmark}; as of {as_of:%Y-%m-%d %H:%M} UTC")
    if options:
        note += ("; options: delta-gamma on the underlying's returns with IB's model greeks "
                 "(P&L = delta x dS + 0.5 x gamma x dS^2, dS = undPrice x r), beta-weighted by their DeltaDollars")
    return note + (f"; no IB history or greeks, left out: {', '.join(left_out)}" if left_out else "")


class _State:
    """One portfolio state (now, or after the basket): holdings per account and the returns matrix."""

    def __init__(self, inputs: Inputs):
        self.inputs = inputs
        self.accounts = accounts_of(inputs)
        self.holdings = {a: holdings(inputs, a) for a in [*self.accounts, ALL]}
        self.nlv = {a: total_net_liquidation(inputs, a) for a in [*self.accounts, ALL]}
        ids = [int(c) for c in self.holdings[ALL]["risk_con_id"] if c]
        self.returns = risk.daily_returns(inputs.closes, [*ids, inputs.benchmark_con_id], inputs.window_days)
        bench = inputs.closes.get(inputs.benchmark_con_id)
        self.benchmark_price = float(bench.iloc[-1]) if bench is not None and len(bench) else math.nan

    def position_risk(self, account: str) -> pd.DataFrame:
        return risk.position_risk(self.holdings[account], account, self.returns, self.inputs.benchmark_con_id,
                                  self.benchmark_price)

    def measures(self, account: str) -> dict[str, float]:
        h = self.holdings[account]
        out = exposure.summary_measures(h, self.nlv[account])
        out.update(concentration.concentration_measures(h))
        out["BetaDeltaDollars"] = float(self.position_risk(account)["BetaDeltaDollars"].sum()) if len(h) else 0.0
        out.update(risk.var_measures(h, self.returns) if len(self.returns) else
                   {k: math.nan for k in ("VaR95", "ES95", "VaR99", "ES99")})
        return out


def _pnl_sums(inputs: Inputs, account: str) -> dict[str, float]:
    pnl = inputs.pnl if account == ALL else inputs.pnl[inputs.pnl["account"] == account]
    return {name: float(pnl[column].sum(min_count=1))
            for name, column in (("DailyPnL", "daily"), ("UnrealizedPnL", "unrealized"), ("RealizedPnL", "realized"))}


def _position_pnl(inputs: Inputs, h: pd.DataFrame, account: str) -> pd.DataFrame:
    single = inputs.pnl_single
    rows = []
    if account == ALL:
        merged = h.merge(single, on=["account", "con_id"], how="left")
        for cid, part in merged.groupby("con_id", sort=False):
            rows.append((ALL, part["symbol"].iloc[0], int(cid), float(part["position"].sum()), float(part["mv"].sum()),
                         *(float(part[c].sum(min_count=1)) for c in ("daily", "unrealized", "realized"))))
    else:
        merged = h.merge(single, on=["account", "con_id"], how="left")
        for r in merged.itertuples(index=False):
            rows.append((account, r.symbol, int(r.con_id), float(r.position), float(r.mv), float(r.daily),
                         float(r.unrealized), float(r.realized)))
    return pd.DataFrame(rows, columns=PNL_POSITION_COLUMNS)


def build_report(inputs: Inputs, *, basket: pd.DataFrame | None = None, executions: pd.DataFrame | None = None,
                 recorder: PnLRecorder | None = None, now: datetime | None = None,
                 record_var: bool = True) -> dict[str, pd.DataFrame]:
    """Every Analysis Table (module docstring). ``basket``: what_if.BASKET_COLUMNS rows (None or empty:
    the WhatIf Table shows Now = AfterBasket). ``executions``: today's executions (Portfolio.executions)
    for the day's commission and fills. ``recorder``: where this day's P&L and VaR are recorded and the
    PnLByDay and VaRHistory Tables read from (None: those Tables hold only this report's day).
    ``now``: the report's time (aware; default the machine's clock), which fixes its trading date.
    ``record_var``: False for a report on another window or benchmark than the configured ones, whose
    VaR must not replace the day's recorded figure (its P&L is recorded all the same).
    Raises frames.AnalysisError for inputs it cannot use."""
    now = now or datetime.now(UTC)
    day = trading_day(now)
    state = _State(inputs)
    names = [*state.accounts, ALL]
    held = state.holdings[ALL]
    left_out = sorted(set(held[~risk.priced(held, state.returns)]["symbol"]))
    note = method_note(inputs.window_days, len(state.returns), inputs.benchmark_symbol, now.astimezone(UTC),
                       left_out, options=bool(held["sec_type"].map(risk.is_option).any()))

    summary, exposures, concentrations, pnl_rows, risk_rows = [], [], [], [], []
    measures: dict[str, dict[str, float]] = {}
    for account in names:
        h = state.holdings[account]
        m = state.measures(account)
        m.update(_pnl_sums(inputs, account))
        measures[account] = m
        order = ["NetLiquidation", "Long", "Short", "Gross", "Net", "Leverage", "LargestWeight", "Herfindahl",
                 "DailyPnL", "UnrealizedPnL", "RealizedPnL", "BetaDeltaDollars", "VaR95", "VaR99", "ES95", "ES99"]
        for key in order:
            summary.append((account, key, m[key], _NOTES.get(key) or note))
        exposures.append(exposure.exposure_frame(h, account, state.nlv[account]))
        concentrations.append(concentration.concentration_frame(h, account))
        pnl_rows.append(_position_pnl(inputs, h, account))
        risk_rows.append(state.position_risk(account))

    # what-if
    after = _State(apply_basket(inputs, basket)) if basket is not None and len(basket) else state
    what_if = []
    for account in names:
        now_m = state.measures(account)
        after_m = after.measures(account) if account in after.holdings else now_m
        for key in WHAT_IF_MEASURES:
            what_if.append((account, key, now_m[key], after_m[key], after_m[key] - now_m[key]))

    # the recorded days
    fills = day_executions(executions, day)
    if recorder is not None:
        for account in names:
            if account == ALL:
                commission = sum(c for c, _ in fills.values())
                count = sum(n for _, n in fills.values())
            else:
                commission, count = fills.get(account, (0.0, 0))
            m = measures[account]
            recorder.record_pnl(day, account, m["NetLiquidation"], m["DailyPnL"], m["RealizedPnL"], commission,
                                count, now)
            if record_var:
                recorder.record_var(day, account, m, now)
        pnl_days, var_days = recorder.pnl_days(names), recorder.var_days(names)
    else:
        stamp = pd.Timestamp(day)
        pnl_days = pd.DataFrame([(stamp, a, measures[a]["NetLiquidation"], measures[a]["DailyPnL"],
                                  measures[a]["RealizedPnL"], *(fills.get(a, (0.0, 0)) if a != ALL else
                                  (sum(c for c, _ in fills.values()), sum(n for _, n in fills.values()))))
                                 for a in names], columns=PNL_COLUMNS)
        var_days = pd.DataFrame([(stamp, a, *(measures[a][k] for k in VAR_COLUMNS[2:])) for a in names],
                                columns=VAR_COLUMNS)

    symbols = dict(zip(state.holdings[ALL]["con_id"].astype(int), state.holdings[ALL]["symbol"]))
    return {
        "Exposure": pd.concat(exposures, ignore_index=True),
        "Summary": pd.DataFrame(summary, columns=SUMMARY_COLUMNS),
        "Concentration": pd.concat(concentrations, ignore_index=True),
        "PositionPnL": pd.concat(pnl_rows, ignore_index=True),
        "PositionRisk": pd.concat(risk_rows, ignore_index=True),
        "PnLByDay": pnl_days,
        "VaRHistory": var_days,
        "WhatIf": pd.DataFrame(what_if, columns=WHAT_IF_COLUMNS),
        "Correlation": risk.correlation(state.returns, symbols),
    }


_NOTES = {
    "NetLiquidation": "IB's NetLiquidation (base currency)",
    "Long": "sum of positive market values (base currency, IB's ExchangeRate)",
    "Short": "sum of negative market values",
    "Gross": "Long - Short",
    "Net": "Long + Short",
    "Leverage": "Gross / NetLiquidation",
    "LargestWeight": "largest |market value| / Gross of one conId",
    "Herfindahl": "sum of (|market value| / Gross)^2 over conIds",
    "DailyPnL": "reqPnL daily P&L", "UnrealizedPnL": "reqPnL unrealized P&L", "RealizedPnL": "reqPnL realized P&L",
}
