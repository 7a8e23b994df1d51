"""Risk from daily history: each position's daily volatility and beta to the benchmark, beta-weighted
delta, the holdings' correlation matrix, and one-day historical VaR and expected shortfall.

Method (also the Summary's Note): the daily closes of every holding and of the benchmark are aligned
on the dates they all have (an inner join of the bar dates), simple returns r = close / previous
close - 1 are taken, and the last ``window_days`` of them are used. DailyVol is the standard deviation
of a position's returns (ddof=1, a fraction per day); Beta = cov(r, r_benchmark) / var(r_benchmark)
(ddof=1 both); BetaDeltaDollars = Beta x market value (base currency); BetaDeltaShares =
BetaDeltaDollars / the benchmark's last close. VaR and ES: today's positions revalued on each past
day's returns, P&L_t = sum_i mv_i x r_i,t, loss_t = -P&L_t (losses positive); VaR_a is the a-quantile
of the losses (numpy's default linear interpolation), ES_a the mean of the losses at or above VaR_a.

Options (OPT, FOP) have no daily bars of their own: they are moved by their underlying's returns r_u
with IB's model greeks of the whole position (delta-gamma): P&L_t = rate x (delta x dS_t + 0.5 x gamma
x dS_t^2), dS_t = S x r_u,t, S = IB's undPrice, delta in underlying units (delta x position x
multiplier), gamma its change per 1.00 of the underlying. An option's DailyVol and Beta are its
underlying's; BetaDeltaDollars = Beta x delta x S x rate (its DeltaDollars in the base currency);
options are not rows of the correlation matrix (their underlying's returns are).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .frames import OPTION_TYPES

LEVELS = (0.95, 0.99)
POSITION_COLUMNS = ["Account", "Symbol", "ConId", "MarketValue", "DailyVol", "Beta", "BetaDeltaShares",
                    "BetaDeltaDollars"]


def daily_returns(closes: dict[int, pd.Series], con_ids: list[int], window_days: int) -> pd.DataFrame:
    """Simple daily returns of ``con_ids`` (columns), on the dates every one has, the last
    ``window_days`` rows. A conId without closes (IB had no history for it) has no column: its risk
    figures are NaN and the VaR leaves it out (the Summary's Note names it)."""
    series = []
    for cid in dict.fromkeys(con_ids):
        s = closes.get(cid)
        if s is None or s.empty:
            continue
        s = s.astype("float64")
        s.index = pd.DatetimeIndex(s.index).normalize()
        series.append(s[~s.index.duplicated(keep="last")].rename(cid))
    if not series:
        return pd.DataFrame(dtype="float64")
    aligned = pd.concat(series, axis=1, join="inner").sort_index()
    return aligned.pct_change().iloc[1:].tail(window_days)


def var_es(pnl: np.ndarray, level: float) -> tuple[float, float]:
    """(VaR, ES) at ``level`` of daily P&L scenarios; losses positive. NaN without scenarios."""
    if len(pnl) == 0:
        return math.nan, math.nan
    losses = -np.asarray(pnl, dtype="float64")
    var = float(np.quantile(losses, level))
    tail = losses[losses >= var]
    return var, float(tail.mean()) if len(tail) else var


def is_option(sec_type) -> bool:
    return sec_type in OPTION_TYPES


def priced(h: pd.DataFrame, returns: pd.DataFrame) -> pd.Series:
    """Per holding row: whether the VaR can move it (its risk conId has returns; an option also needs
    IB's delta, gamma and undPrice)."""
    has = h["risk_con_id"].isin(returns.columns)
    greeks = h[["delta", "gamma", "und_price"]].notna().all(axis=1)
    return has & (greeks | ~h["sec_type"].map(is_option).astype(bool))


def portfolio_pnl(h: pd.DataFrame, returns: pd.DataFrame) -> np.ndarray:
    """P&L (base currency) of today's holdings ``h`` (frames.holdings) on each day of ``returns``:
    mv x r for a linear position, the delta-gamma P&L on the underlying's returns for an option
    (module docstring). Holdings ``priced`` leaves out add nothing."""
    pnl = np.zeros(len(returns))
    for r in h[priced(h, returns)].itertuples(index=False):
        ret = returns[r.risk_con_id].to_numpy()
        if is_option(r.sec_type):
            ds = r.und_price * ret
            pnl += r.rate * (r.delta * ds + 0.5 * r.gamma * ds * ds)
        else:
            pnl += r.mv * ret
    return pnl


def var_measures(h: pd.DataFrame, returns: pd.DataFrame) -> dict[str, float]:
    """VaR95, ES95, VaR99, ES99 of the holdings ``h`` over ``returns`` (losses positive)."""
    pnl = portfolio_pnl(h, returns)
    out = {}
    for level in LEVELS:
        var, es = var_es(pnl, level)
        pct = int(round(level * 100))
        out[f"VaR{pct}"], out[f"ES{pct}"] = var, es
    return out


def position_risk(h: pd.DataFrame, account: str, returns: pd.DataFrame, benchmark: int,
                  benchmark_price: float) -> pd.DataFrame:
    """PositionRisk rows of the holdings ``h`` (one per account and conId as ``h`` has them)."""
    rows = []
    rb = returns[benchmark] if benchmark in returns else pd.Series(dtype="float64")
    var_b = float(rb.var(ddof=1)) if len(rb) > 1 else math.nan
    for r in h.itertuples(index=False):
        ri = returns[r.risk_con_id] if r.risk_con_id in returns else pd.Series(dtype="float64")
        vol = float(ri.std(ddof=1)) if len(ri) > 1 else math.nan
        beta = float(np.cov(ri, rb, ddof=1)[0, 1] / var_b) if len(ri) > 1 and var_b else math.nan
        exposure = r.delta * r.und_price * r.rate if is_option(r.sec_type) else r.mv
        dollars = beta * exposure
        rows.append((account, r.symbol, int(r.con_id), float(r.mv), vol, beta,
                     dollars / benchmark_price if benchmark_price else math.nan, dollars))
    return pd.DataFrame(rows, columns=POSITION_COLUMNS)


def correlation(returns: pd.DataFrame, symbols: dict[int, str]) -> pd.DataFrame:
    """The holdings' correlation matrix as the Correlation Table: "Symbol", then one column per
    holding (in ``symbols`` order); unit diagonal, symmetric."""
    ids = [c for c in symbols if c in returns]
    if not ids:
        return pd.DataFrame(columns=["Symbol"])
    corr = np.corrcoef(returns[ids].to_numpy(), rowvar=False) if len(returns) > 1 else \
        np.full((len(ids), len(ids)), np.nan)
    corr = np.atleast_2d(corr)
    corr = (corr + corr.T) / 2                       # exactly symmetric
    np.fill_diagonal(corr, 1.0)
    labels = [symbols[c] for c in ids]
    out = pd.DataFrame(corr, columns=labels)
    out.insert(0, "Symbol", labels)
    return out
