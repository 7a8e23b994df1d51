"""What-if: the portfolio after a basket of pending orders fills, without sending anything.

A basket row is (account, con_id, symbol, sec_type, currency, quantity signed: + buys, fill price:
the limit price, or the quote's mid for a market order, mark: the price IB would value the position at
(the quote's last, else its mid)). The position changes by the quantity; its market value becomes the
new quantity x mark x multiplier (an existing position keeps IB's mark); NetLiquidation changes by
quantity x multiplier x (mark - fill price) in the base currency (the cash paid against the value
bought). Commissions are not known before the fill and are left out. An option already held keeps
IB's greeks per contract (its whole-position delta, gamma and delta_dollars scale with the quantity);
an option new to the portfolio has no IB greeks yet, so the what-if VaR leaves it out (the Note names
it) while its exposure counts."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from .frames import GREEK_INPUT, AnalysisError, Inputs, exchange_rates, net_liquidation

BASKET_COLUMNS = ["account", "con_id", "symbol", "sec_type", "currency", "quantity", "price", "mark"]


def apply_basket(inputs: Inputs, basket: pd.DataFrame) -> Inputs:
    """``inputs`` with ``basket`` (BASKET_COLUMNS) filled. Raises AnalysisError naming the row's symbol
    for an unknown account or conId."""
    positions = inputs.positions.copy()
    values = inputs.values.copy()
    values["value"] = values["value"].astype(object)       # IB's text or numbers; the new NLV is a number
    info = inputs.contracts.drop_duplicates("con_id").set_index("con_id")
    nlv_change: dict[str, float] = {}
    for r in basket.itertuples(index=False):
        if r.con_id not in info.index:
            raise AnalysisError(f"basket {r.symbol}: no contract details (conId {r.con_id})")
        mult = float(info.loc[r.con_id, "multiplier"] or 1.0)
        rates = exchange_rates(values, r.account)
        rate = rates.get(r.currency, math.nan)
        if math.isnan(rate):
            raise AnalysisError(f"basket {r.symbol}: account {r.account} has no ExchangeRate for {r.currency}")
        hit = (positions["account"] == r.account) & (positions["con_id"] == r.con_id)
        if hit.any():
            i = positions.index[hit][0]
            old = float(positions.at[i, "position"])
            mark = float(positions.at[i, "market_price"]) if old else float(r.mark)
            new = old + float(r.quantity)
            positions.at[i, "position"] = new
            positions.at[i, "market_price"] = mark
            positions.at[i, "market_value"] = new * mark * mult
            for greek in GREEK_INPUT:
                if greek in positions.columns and old:
                    positions.at[i, greek] = float(positions.at[i, greek]) * new / old
        else:
            mark = float(r.mark)
            row = {"account": r.account, "symbol": r.symbol, "con_id": int(r.con_id), "sec_type": r.sec_type,
                   "currency": r.currency, "position": float(r.quantity), "market_price": mark,
                   "market_value": float(r.quantity) * mark * mult}
            positions = pd.concat([positions, pd.DataFrame([row])], ignore_index=True)
        change = float(r.quantity) * mult * (mark - float(r.price)) * rate
        nlv_change[r.account] = nlv_change.get(r.account, 0.0) + change
    for account, change in nlv_change.items():
        nlv = net_liquidation(values, account)
        hit = (values["account"] == account) & (values["key"] == "NetLiquidation") & \
              ~values["currency"].isin(["", "BASE"])
        values.loc[hit, "value"] = nlv + change
    return replace(inputs, positions=positions, values=values)
