"""Commissions at the paper gateway: IB's *fixed* pricing plan, simplified.

| secType           | rate                                   | minimum per order | maximum per order   |
| ----------------- | -------------------------------------- | ----------------- | ------------------- |
| STK (stocks, ETF) | USD 0.005 per share                    | USD 1.00          | 1% of trade value   |
| FUT, FOP          | USD 0.85 per contract                  | -                 | -                   |
| OPT               | USD 0.65 per contract                  | USD 1.00          | -                   |
| CASH (IDEALPRO)   | 0.2 basis points of the trade value    | USD 2.00          | -                   |
| CRYPTO (PAXOS)    | 0.18% of the trade value               | USD 1.75          | -                   |
| anything else     | the stock rule                         |                   |                     |

Simplifications (stated, deliberate):
- Every commission is charged in USD, whatever the contract's currency; the trade value is converted
  to USD with the rate the caller supplies (the broker uses its current FX marks).
- Exchange, regulatory, clearing and pass-through fees are not modelled (IB's fixed plan bundles most
  of them for stocks; for futures IB adds exchange fees on top of the 0.85).
- The minimum and maximum apply per order; the paper broker fills an order in one execution, so per
  order and per execution are the same thing. When the 1% cap is below the USD 1.00 minimum (very
  cheap shares) the cap wins, as at IB.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

COMMISSION_CURRENCY = "USD"


@dataclass(frozen=True)
class Rule:
    """One line of the table above. Units: USD; ``per_unit`` per share/contract, ``of_value`` a
    fraction of the trade value in USD."""

    per_unit: float = 0.0
    of_value: float = 0.0
    minimum: float = 0.0
    max_of_value: float | None = None


STOCK = Rule(per_unit=0.005, minimum=1.00, max_of_value=0.01)
RULES: dict[str, Rule] = {
    "STK": STOCK,
    "FUT": Rule(per_unit=0.85),
    "FOP": Rule(per_unit=0.85),
    "OPT": Rule(per_unit=0.65, minimum=1.00),
    "CASH": Rule(of_value=0.00002, minimum=2.00),
    "CRYPTO": Rule(of_value=0.0018, minimum=1.75),
}


def commission(sec_type: str, quantity: float | Decimal, price: float, multiplier: float = 1.0,
               usd_rate: float = 1.0) -> float:
    """Commission in USD for one order filled in full.

    ``quantity`` in shares/contracts/units of the base currency (its absolute value is used),
    ``price`` in the contract's currency per unit, ``multiplier`` the contract multiplier (1 for
    stocks, FX and crypto), ``usd_rate`` USD per one unit of the contract's currency.
    """
    rule = RULES.get(sec_type, STOCK)
    units = abs(float(quantity))
    value_usd = units * abs(float(price)) * float(multiplier) * float(usd_rate)
    fee = units * rule.per_unit + value_usd * rule.of_value
    fee = max(fee, rule.minimum)
    if rule.max_of_value is not None:
        fee = min(fee, value_usd * rule.max_of_value)
    # Round away float noise (0.005 * 333 = 1.6650000000000003), not cents: IB reports fractions of a cent.
    return round(fee, 8)
