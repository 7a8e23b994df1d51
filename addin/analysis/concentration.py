"""Concentration: the largest positions by weight, the largest single-name weight and the
Herfindahl index.

A single name is one conId (for "All", every account's positions in it netted). Weight = market
value / gross market value (signed; the ranking and the measures use its absolute value), so the
weights' absolute values sum to 1 and Herfindahl = sum of weight^2 is between 1/n and 1."""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = ["Account", "Rank", "Symbol", "MarketValue", "Weight"]
TOP = 10


def names(h: pd.DataFrame) -> pd.DataFrame:
    """One row per conId: symbol, mv (base currency, netted across accounts), weight."""
    by = h.groupby("con_id", sort=True).agg(symbol=("symbol", "first"), mv=("mv", "sum")).reset_index()
    gross = float(by["mv"].abs().sum())
    by["weight"] = by["mv"] / gross if gross else math.nan
    return by


def concentration_frame(h: pd.DataFrame, account: str, top: int = TOP) -> pd.DataFrame:
    n = names(h)
    n = n.assign(key=n["weight"].abs()).sort_values(["key", "symbol"], ascending=[False, True]).head(top)
    rows = [(account, rank, r.symbol, float(r.mv), float(r.weight))
            for rank, r in enumerate(n.itertuples(index=False), start=1)]
    return pd.DataFrame(rows, columns=COLUMNS)


def concentration_measures(h: pd.DataFrame) -> dict[str, float]:
    """LargestWeight (max |weight|) and Herfindahl (sum of weight^2); NaN without holdings."""
    n = names(h)
    if n.empty:
        return {"LargestWeight": math.nan, "Herfindahl": math.nan}
    w = n["weight"].abs()
    return {"LargestWeight": float(w.max()), "Herfindahl": float((w ** 2).sum())}
