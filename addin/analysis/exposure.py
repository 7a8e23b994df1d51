"""Exposure: long, short, gross and net market value by secType, currency, exchange and industry.

Amounts in the account's base currency (``frames.holdings``). Long is the sum of positive market
values, Short the sum of negative ones (a negative number), Gross = Long - Short, Net = Long + Short,
PctNetLiq = Net / NetLiquidation (a fraction). Leverage = Gross / NetLiquidation."""

from __future__ import annotations

import math

import pandas as pd

from .frames import Inputs, holdings, total_net_liquidation

BY = {"SecType": "sec_type", "Currency": "exposure_currency", "Exchange": "exchange", "Industry": "industry"}
COLUMNS = ["Account", "By", "Group", "Long", "Short", "Gross", "Net", "PctNetLiq"]


def totals(mv: pd.Series) -> tuple[float, float, float, float]:
    """(long, short, gross, net) of market values (short <= 0)."""
    long = float(mv[mv > 0].sum())
    short = float(mv[mv < 0].sum())
    return long, short, long - short, long + short


def exposure_frame(h: pd.DataFrame, account: str, nlv: float) -> pd.DataFrame:
    """Exposure rows of one account's holdings ``h`` (frames.HOLDING_COLUMNS), By in BY order, groups
    sorted by name."""
    rows = []
    for by, column in BY.items():
        for group, part in sorted(h.groupby(column)["mv"], key=lambda g: str(g[0])):
            long, short, gross, net = totals(part)
            rows.append((account, by, str(group), long, short, gross, net, net / nlv if nlv else math.nan))
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_measures(h: pd.DataFrame, nlv: float) -> dict[str, float]:
    """NetLiquidation, Long, Short, Gross, Net and Leverage (Gross / NetLiquidation)."""
    long, short, gross, net = totals(h["mv"])
    return {"NetLiquidation": nlv, "Long": long, "Short": short, "Gross": gross, "Net": net,
            "Leverage": gross / nlv if nlv else math.nan}


def exposure(inputs: Inputs, account: str) -> pd.DataFrame:
    return exposure_frame(holdings(inputs, account), account, total_net_liquidation(inputs, account))
