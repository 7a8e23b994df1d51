"""The report's inputs as plain frames, and the per-account base-currency view of the positions.

Every amount here is in the account's base currency once :func:`holdings` has converted it with IB's
ExchangeRate account values. "All" is every account together (their base currencies are taken to
be one: IB reports a family of accounts in one base currency)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ALL = "All"
UNCLASSIFIED = "Unclassified"

# Inputs (what addin.app.analysis_data gathers from IB):
POSITION_INPUT = ["account", "symbol", "con_id", "sec_type", "currency", "position", "market_price",
                  "market_value"]
# Optional position columns: IB's model greeks of the whole position (addin.account.greeks, contract currency).
GREEK_INPUT = ["delta", "gamma", "delta_dollars"]
CONTRACT_INPUT = ["con_id", "ib_symbol", "sec_type", "currency", "exchange", "industry", "multiplier"]
# Optional contract column: IB's underConId (an option's underlying; 0 or absent otherwise).
UNDER_INPUT = "under_con_id"
OPTION_TYPES = ("OPT", "FOP")
VALUE_INPUT = ["account", "key", "value", "currency"]
PNL_SINGLE_INPUT = ["account", "con_id", "daily", "unrealized", "realized", "value"]
PNL_INPUT = ["account", "daily", "unrealized", "realized"]


class AnalysisError(ValueError):
    """An input the report cannot use (the message names the account, field or conId)."""


@dataclass
class Inputs:
    """What the report is computed from.

    positions: POSITION_INPUT columns (Portfolio.positions: market_value in the contract's currency,
    position in shares / contracts / units), and for options GREEK_INPUT (Runtime.positions: IB's
    model delta and gamma of the whole position in underlying units, delta_dollars = delta x IB's
    undPrice, contract currency; without them an option's risk is left out, named in the Note).
    contracts: CONTRACT_INPUT (+ UNDER_INPUT for options), one row per conId held or in the
    basket (exchange: primaryExchange, else exchange; industry: contract details' industry, else
    category, "" when IB has none). values: VALUE_INPUT (reqAccountUpdatesMulti: NetLiquidation,
    ExchangeRate per currency). pnl_single: PNL_SINGLE_INPUT (reqPnLSingle, base currency). pnl:
    PNL_INPUT (reqPnL, base currency). closes: conId -> daily closes (Series indexed by bar date).
    benchmark: conId and symbol of the benchmark. window_days: returns used by the risk figures."""

    positions: pd.DataFrame
    contracts: pd.DataFrame
    values: pd.DataFrame
    pnl_single: pd.DataFrame
    pnl: pd.DataFrame
    closes: dict[int, pd.Series] = field(default_factory=dict)
    benchmark_con_id: int = 0
    benchmark_symbol: str = "SPY"
    window_days: int = 252


def accounts_of(inputs: Inputs) -> list[str]:
    """The accounts with values or positions, sorted (never "All")."""
    names = set(inputs.values["account"]) | set(inputs.positions["account"])
    return sorted(a for a in names if a and a != ALL)


def _number(value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f


def base_currency(values: pd.DataFrame, account: str) -> str:
    """The account's base currency: the currency of its NetLiquidation value."""
    rows = values[(values["account"] == account) & (values["key"] == "NetLiquidation")]
    rows = rows[~rows["currency"].isin(["", "BASE"])]
    if rows.empty:
        raise AnalysisError(f"account {account}: IB sent no NetLiquidation value (account values)")
    return str(rows.iloc[0]["currency"])


def net_liquidation(values: pd.DataFrame, account: str) -> float:
    """The account's NetLiquidation in its base currency."""
    ccy = base_currency(values, account)
    rows = values[(values["account"] == account) & (values["key"] == "NetLiquidation") &
                  (values["currency"] == ccy)]
    return _number(rows.iloc[0]["value"])


def exchange_rates(values: pd.DataFrame, account: str) -> dict[str, float]:
    """Units of the base currency per unit of each currency (IB's ExchangeRate values; base -> 1)."""
    rows = values[(values["account"] == account) & (values["key"] == "ExchangeRate")]
    rates = {str(c): _number(v) for c, v in zip(rows["currency"], rows["value"]) if c and c != "BASE"}
    rates[base_currency(values, account)] = 1.0
    return rates


def exposure_currency(sec_type: str, ib_symbol: str, currency: str) -> str:
    """The currency a position exposes the account to: a CASH pair's base currency (EUR of EUR.USD),
    else the contract's currency."""
    return ib_symbol if sec_type == "CASH" and ib_symbol else currency


def holdings(inputs: Inputs, account: str) -> pd.DataFrame:
    """The account's positions (or every account's for "All") in its base currency.

    Columns: account, symbol, con_id, sec_type, position, multiplier, market_price (contract currency),
    mv (market value in the base currency: market_value x ExchangeRate of the contract's currency),
    rate, exposure_currency, exchange, industry; for the risk side risk_con_id (whose daily returns
    move the position: its own conId, an option's underConId), and for options delta, gamma (whole
    position, per 1.00 of the underlying) and und_price (IB's undPrice = delta_dollars / delta; contract
    currency), NaN for other instruments. Raises AnalysisError naming the account and symbol
    when IB sent no market value or no exchange rate for the position's currency."""
    if account == ALL:
        parts = [holdings(inputs, a) for a in accounts_of(inputs)]
        parts = [p for p in parts if not p.empty]
        return pd.concat(parts, ignore_index=True) if parts else _empty_holdings()
    pos = inputs.positions[(inputs.positions["account"] == account) & (inputs.positions["position"] != 0)]
    if pos.empty:
        return _empty_holdings()
    rates = exchange_rates(inputs.values, account)
    info = inputs.contracts.drop_duplicates("con_id").set_index("con_id")
    rows = []
    for r in pos.itertuples(index=False):
        if r.con_id not in info.index:
            raise AnalysisError(f"account {account}: no contract details for {r.symbol} (conId {r.con_id})")
        c = info.loc[r.con_id]
        rate = rates.get(r.currency, math.nan)
        if math.isnan(rate):
            raise AnalysisError(f"account {account}: no ExchangeRate for {r.currency} ({r.symbol})")
        if math.isnan(r.market_value):
            raise AnalysisError(f"account {account}: no market value for {r.symbol} (conId {r.con_id})")
        industry = str(c["industry"] or "") or UNCLASSIFIED
        risk_id, delta, gamma, und = int(r.con_id), math.nan, math.nan, math.nan
        if r.sec_type in OPTION_TYPES:
            under = _number(c.get(UNDER_INPUT, 0)) if UNDER_INPUT in info.columns else math.nan
            risk_id = int(under) if under == under and under else 0       # no underConId: no returns
            delta, gamma = _number(getattr(r, "delta", math.nan)), _number(getattr(r, "gamma", math.nan))
            dollars = _number(getattr(r, "delta_dollars", math.nan))
            und = dollars / delta if delta else math.nan
        rows.append((account, r.symbol, int(r.con_id), r.sec_type, float(r.position), float(c["multiplier"] or 1.0),
                     float(r.market_price), float(r.market_value) * rate, rate,
                     exposure_currency(r.sec_type, str(c["ib_symbol"]), r.currency), str(c["exchange"] or ""),
                     industry, risk_id, delta, gamma, und))
    return pd.DataFrame(rows, columns=HOLDING_COLUMNS)


HOLDING_COLUMNS = ["account", "symbol", "con_id", "sec_type", "position", "multiplier", "market_price", "mv",
                   "rate", "exposure_currency", "exchange", "industry", "risk_con_id", "delta", "gamma", "und_price"]
_FLOAT_HOLDINGS = ("position", "multiplier", "market_price", "mv", "rate", "delta", "gamma", "und_price")


def _empty_holdings() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in _FLOAT_HOLDINGS else object) for c in HOLDING_COLUMNS})


def total_net_liquidation(inputs: Inputs, account: str) -> float:
    if account == ALL:
        return float(np.nansum([net_liquidation(inputs.values, a) for a in accounts_of(inputs)]))
    return net_liquidation(inputs.values, account)
