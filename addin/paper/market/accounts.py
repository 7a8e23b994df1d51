"""Paper accounts: a per-currency cash ledger, positions with IB-style average cost, realized and
unrealized P&L, a simple margin model and the rows IB sends for account values and summaries.

Accounting model (documented simplifications):
- Base currency USD. Cash is a ledger per currency; FX trades move two currencies (buying 20,000
  EUR.USD at 1.1 adds EUR 20,000 and takes USD 22,000 + commission). Non-USD balances are valued with
  the current mark of a known FX pair (EUR.USD -> EUR rate = its mark; USD.JPY -> JPY rate = 1/mark);
  a currency with no known pair is valued at 1.0 (no such instrument in the replayed market).
- Stocks, ETFs, crypto and options settle in full: a buy takes ``qty * price * multiplier`` from cash
  and the position counts its market value in NetLiquidation. Futures do not: only commissions and
  the realized P&L of closing trades touch cash, and the open position counts its unrealized P&L
  (no daily variation settlement). FX pairs are held in the cash ledger; their position rows exist for
  average cost and P&L only, so they are not counted twice.
- Average cost, as IB reports it: per unit *including the multiplier* (an ES future bought at 5000.25
  has avgCost 250012.5 + commission) and *including the commission* of the opening trades, for every
  security type. Realized P&L uses the average-cost method (as IB's API figures do, not FIFO tax lots):
  closing k of q units releases k/q of the cost basis; realized = proceeds - released cost - closing
  commission, i.e. net of both commissions. Unrealized = market value - remaining cost basis, also net.
  Consequently NetLiquidation = starting cash + realized + unrealized (all net); gross figures (without
  commissions) are kept too, and NetLiquidation = starting cash + gross realized + gross unrealized
  - commissions paid.
- Mark price: last trade, else the bid/ask midpoint (FX has no last), else the average price.
- Daily P&L is P&L since the gateway started (the broker keeps no history of previous days).
- Margin (all in USD of the position's absolute market value unless said): stocks and anything not
  listed Reg-T 50% initial / 25% maintenance; FX 5% / 5%; crypto 100% / 100% (no leverage); options
  100% / 100% of the premium (long); futures a fixed amount per contract for the ones in
  ``FUTURES_MARGIN`` (ES USD 24,000 / 21,800), else 10% / 8% of the notional.
  EquityWithLoanValue = NetLiquidation; AvailableFunds = ELV - initial margin; ExcessLiquidity = ELV -
  maintenance margin; BuyingPower = 4 x AvailableFunds (floored at 0), the Reg-T intraday figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from ibapi.account_summary_tags import AccountSummaryTags
from ibapi.contract import Contract

if TYPE_CHECKING:  # pragma: no cover
    from .market import Instrument

BASE = "USD"
ZERO = Decimal(0)

# Margin model: fraction of the absolute market value (USD), (initial, maintenance).
MARGIN_RATES: dict[str, tuple[float, float]] = {
    "STK": (0.50, 0.25),
    "CASH": (0.05, 0.05),
    "CRYPTO": (1.00, 1.00),
    "OPT": (1.00, 1.00),
    "FUT": (0.10, 0.08),
    "FOP": (1.00, 1.00),     # premium-style, as CME's equity-index options: margined like OPT here
}
DEFAULT_MARGIN = MARGIN_RATES["STK"]
# Futures with a fixed per-contract margin (USD initial, USD maintenance), by symbol.
FUTURES_MARGIN: dict[str, tuple[float, float]] = {"ES": (24_000.0, 21_800.0), "MES": (2_400.0, 2_180.0)}
FUTURES_STYLE = ("FUT",)            # no cash outlay; open P&L counts in NetLiquidation (FOPs pay their premium)
REG_T_LEVERAGE = 4.0                # BuyingPower = 4 x AvailableFunds

# Summary tags whose value has no currency (IB sends an empty currency for these).
DAY_TRADES_TAGS = ["DayTradesRemaining"] + [f"DayTradesRemainingT+{n}" for n in range(1, 5)]
UNITLESS_TAGS = {"AccountType", "Cushion", "Leverage", "HighestSeverity", "LookAheadNextChange", *DAY_TRADES_TAGS}


def _summary_tag_order() -> list[str]:
    """ibapi's AccountSummaryTags in IB's order, plus the spellings ib_async asks for: IB's own tag names
    are RegTEquity/RegTMargin (ibapi's Python list writes ReqT...), and DayTradesRemainingT+1..T+4."""
    order = []
    for tag in AccountSummaryTags.AllTags.split(","):
        order.append(tag)
        if tag == "ReqTMargin":
            order += ["RegTEquity", "RegTMargin"]
        if tag == "DayTradesRemaining":
            order += DAY_TRADES_TAGS[1:]
    return order


SUMMARY_TAG_ORDER = _summary_tag_order()


class Marks(Protocol):
    """Where valuations come from (the broker implements it over the market's quotes)."""

    def mark(self, inst: "Instrument") -> float | None:
        """Mark price in the contract's currency per unit (no multiplier), None when unknown."""

    def rate(self, currency: str) -> float:
        """USD per one unit of ``currency``."""


@dataclass
class Position:
    """One instrument in one account. Money in the contract's currency, including the multiplier.

    ``cost`` is the signed cost basis of the open quantity including the opening commissions
    (positive for a long, negative for a short); ``gross_cost`` the same without commissions.
    """

    inst: "Instrument"
    contract: Contract
    qty: Decimal = ZERO
    cost: float = 0.0
    gross_cost: float = 0.0
    realized: float = 0.0
    realized_gross: float = 0.0

    @property
    def sec_type(self) -> str:
        return self.contract.secType

    @property
    def currency(self) -> str:
        return self.contract.currency or BASE

    @property
    def multiplier(self) -> float:
        return float(getattr(self.inst, "multiplier", 1.0) or 1.0)

    @property
    def avg_cost(self) -> float:
        """IB's averageCost: per unit, times the multiplier, commissions included."""
        return self.cost / float(self.qty) if self.qty else 0.0

    def price(self, marks: Marks) -> float:
        """Mark price per unit; the average price when the market has none (so unrealized is ~0)."""
        mark = marks.mark(self.inst)
        if mark is not None:
            return mark
        if self.qty:
            return self.gross_cost / (float(self.qty) * self.multiplier)
        return 0.0

    def market_value(self, marks: Marks) -> float:
        return float(self.qty) * self.price(marks) * self.multiplier

    def unrealized(self, marks: Marks) -> float:
        """Net of the opening commissions (IB's figure)."""
        return self.market_value(marks) - self.cost if self.qty else 0.0

    def unrealized_gross(self, marks: Marks) -> float:
        return self.market_value(marks) - self.gross_cost if self.qty else 0.0

    def apply(self, delta: Decimal, price: float, commission: float) -> tuple[float | None, float]:
        """Book a fill of ``delta`` units (signed: + bought) at ``price`` with ``commission`` (both in
        the contract's currency). Returns (net realized P&L of the closing part or None when the fill
        only opened or added, gross realized P&L of the closing part)."""
        mult = self.multiplier
        closing = ZERO
        if self.qty and (self.qty > 0) != (delta > 0):
            closing = min(abs(delta), abs(self.qty)) * (1 if delta > 0 else -1)
        opening = delta - closing
        close_share = float(abs(closing) / abs(delta))
        realized = None
        realized_gross = 0.0
        if closing:
            part = float(abs(closing) / abs(self.qty))
            released, released_gross = self.cost * part, self.gross_cost * part
            proceeds = float(-closing) * price * mult   # value of the closed units at the trade price
            realized = proceeds - released - commission * close_share
            realized_gross = proceeds - released_gross
            self.cost -= released
            self.gross_cost -= released_gross
            self.qty += closing
            self.realized += realized
            self.realized_gross += realized_gross
            if not self.qty:  # no residue of float rounding on a flat position
                self.cost = self.gross_cost = 0.0
        if opening:
            self.cost += float(opening) * price * mult + commission * (1.0 - close_share)
            self.gross_cost += float(opening) * price * mult
            self.qty += opening
        return realized, realized_gross


@dataclass
class Snapshot:
    """An account's figures at one moment, in USD unless the name says otherwise."""

    cash: dict[str, float]            # ledger, per currency, in that currency
    rates: dict[str, float]           # USD per unit, per ledger currency
    total_cash: float
    net_liquidation: float
    gross_position_value: float
    stock_market_value: float
    futures_pnl: float
    init_margin: float
    maint_margin: float
    unrealized: float
    realized: float
    commissions: float

    @property
    def equity_with_loan(self) -> float:
        return self.net_liquidation

    @property
    def available_funds(self) -> float:
        return self.equity_with_loan - self.init_margin

    @property
    def excess_liquidity(self) -> float:
        return self.equity_with_loan - self.maint_margin

    @property
    def buying_power(self) -> float:
        return max(0.0, REG_T_LEVERAGE * self.available_funds)


def position_margin(pos: Position, marks: Marks) -> tuple[float, float]:
    """(initial, maintenance) margin of one position in USD; see the module docstring."""
    if not pos.qty:
        return 0.0, 0.0
    if pos.sec_type in FUTURES_STYLE and pos.contract.symbol in FUTURES_MARGIN:
        init, maint = FUTURES_MARGIN[pos.contract.symbol]
        n = float(abs(pos.qty))
        return init * n, maint * n
    value = abs(pos.market_value(marks)) * marks.rate(pos.currency)
    init_rate, maint_rate = MARGIN_RATES.get(pos.sec_type, DEFAULT_MARGIN)
    return value * init_rate, value * maint_rate


@dataclass
class Account:
    """One paper account ("DU..."). Positions survive client disconnects: they belong to the gateway."""

    account_id: str
    starting_cash: float = 1_000_000.0
    cash: dict[str, float] = field(default_factory=dict)
    positions: dict[int, Position] = field(default_factory=dict)
    commissions: float = 0.0          # USD paid since start

    def __post_init__(self):
        self.cash.setdefault(BASE, float(self.starting_cash))

    # --- fills ----------------------------------------------------------------------------------
    def apply_fill(self, inst: "Instrument", contract: Contract, delta: Decimal, price: float,
                   commission_usd: float, marks: Marks) -> float | None:
        """Book one execution: ``delta`` units (signed, + bought) at ``price`` (contract currency per
        unit), ``commission_usd`` charged in USD. Returns the net realized P&L of the closing part in
        the contract's currency (None when the fill only opens or adds), for the commission report."""
        pos = self.positions.get(inst.con_id)
        if pos is None:
            pos = self.positions[inst.con_id] = Position(inst, contract)
        ccy = pos.currency
        commission_ccy = commission_usd / marks.rate(ccy)
        realized, realized_gross = pos.apply(delta, price, commission_ccy)
        self._move_cash(pos, delta, price, realized_gross)
        self.cash[BASE] = self.cash.get(BASE, 0.0) - commission_usd
        self.commissions += commission_usd
        return realized

    def _move_cash(self, pos: Position, delta: Decimal, price: float, realized_gross: float) -> None:
        ccy = pos.currency
        if pos.sec_type == "CASH":
            # EUR.USD: the base currency is the symbol, the price is in the quote currency.
            base = pos.contract.symbol
            self.cash[base] = self.cash.get(base, 0.0) + float(delta)
            self.cash[ccy] = self.cash.get(ccy, 0.0) - float(delta) * price
        elif pos.sec_type in FUTURES_STYLE:
            # Futures cost nothing up front; closing trades settle their P&L in cash.
            self.cash[ccy] = self.cash.get(ccy, 0.0) + realized_gross
        else:
            self.cash[ccy] = self.cash.get(ccy, 0.0) - float(delta) * price * pos.multiplier

    # --- valuation ------------------------------------------------------------------------------
    def nlv_contribution(self, pos: Position, marks: Marks) -> float:
        """What a position adds to NetLiquidation beyond the cash ledger, in USD."""
        if pos.sec_type == "CASH":
            return 0.0
        rate = marks.rate(pos.currency)
        if pos.sec_type in FUTURES_STYLE:
            return pos.unrealized_gross(marks) * rate
        return pos.market_value(marks) * rate

    def snapshot(self, marks: Marks) -> Snapshot:
        rates = {ccy: marks.rate(ccy) for ccy in self.cash}
        total_cash = sum(amount * rates[ccy] for ccy, amount in self.cash.items())
        nlv = total_cash
        gpv = stock_value = futures_pnl = init = maint = unrealized = realized = 0.0
        for pos in self.positions.values():
            rate = marks.rate(pos.currency)
            nlv += self.nlv_contribution(pos, marks)
            unrealized += pos.unrealized(marks) * rate
            realized += pos.realized * rate
            if pos.sec_type in FUTURES_STYLE:
                futures_pnl += pos.unrealized_gross(marks) * rate
            elif pos.sec_type != "CASH":
                gpv += abs(pos.market_value(marks)) * rate
                if pos.sec_type == "STK":
                    stock_value += pos.market_value(marks) * rate
            i, m = position_margin(pos, marks)
            init += i
            maint += m
        return Snapshot(dict(self.cash), rates, total_cash, nlv, gpv, stock_value, futures_pnl,
                        init, maint, unrealized, realized, self.commissions)

    def pnl(self, marks: Marks) -> tuple[float, float, float]:
        """(daily, unrealized, realized) in USD, net of commissions; daily = since the gateway started."""
        unrealized = sum(p.unrealized(marks) * marks.rate(p.currency) for p in self.positions.values())
        realized = sum(p.realized * marks.rate(p.currency) for p in self.positions.values())
        return unrealized + realized, unrealized, realized

    def pnl_single(self, con_id: int, marks: Marks) -> tuple[Decimal, float, float, float, float]:
        """(position, daily, unrealized, realized, market value) for one instrument, in USD."""
        pos = self.positions.get(con_id)
        if pos is None:
            return ZERO, 0.0, 0.0, 0.0, 0.0
        rate = marks.rate(pos.currency)
        unrealized, realized = pos.unrealized(marks) * rate, pos.realized * rate
        return pos.qty, unrealized + realized, unrealized, realized, pos.market_value(marks) * rate

    def portfolio(self, marks: Marks) -> list[tuple[Contract, Decimal, float, float, float, float, float]]:
        """updatePortfolio rows: (contract, position, marketPrice, marketValue, averageCost,
        unrealizedPNL, realizedPNL), in the contract's currency. Flat positions stay listed (with 0)
        so that subscribers learn that a position was closed."""
        rows = []
        for pos in self.positions.values():
            price = pos.price(marks)
            rows.append((pos.contract, pos.qty, price, pos.market_value(marks), pos.avg_cost,
                         pos.unrealized(marks), pos.realized))
        return rows


# --- IB's rows -------------------------------------------------------------------------------------
def money(v: float) -> str:
    return f"{v:.2f}"


def account_values(account: Account, marks: Marks) -> list[tuple[str, str, str]]:
    """reqAccountUpdates rows (key, value, currency), in the shape TWS sends them: per-currency rows
    for the ledger currencies plus BASE rows, then the account-wide USD figures."""
    s = account.snapshot(marks)
    rows: list[tuple[str, str, str]] = [
        ("AccountCode", account.account_id, ""),
        ("AccountType", "INDIVIDUAL", ""),
        ("AccountReady", "true", ""),
    ]
    pnl_by_ccy = _pnl_by_currency(account, marks)
    for ccy in _ledger_currencies(s):
        amount = s.cash.get(ccy, 0.0)
        unrealized, realized = pnl_by_ccy.get(ccy, (0.0, 0.0))
        rows += [
            ("Currency", ccy, ccy),
            ("ExchangeRate", f"{s.rates.get(ccy, 1.0):.6f}", ccy),
            ("CashBalance", money(amount), ccy),
            ("TotalCashBalance", money(amount), ccy),
            ("NetLiquidationByCurrency", money(amount + _positions_value_in(account, marks, ccy)), ccy),
            ("UnrealizedPnL", money(unrealized), ccy),
            ("RealizedPnL", money(realized), ccy),
        ]
    rows += [
        ("Currency", "BASE", "BASE"),
        ("ExchangeRate", "1.00", "BASE"),
        ("CashBalance", money(s.total_cash), "BASE"),
        ("TotalCashBalance", money(s.total_cash), "BASE"),
        ("NetLiquidationByCurrency", money(s.net_liquidation), "BASE"),
        ("UnrealizedPnL", money(s.unrealized), "BASE"),
        ("RealizedPnL", money(s.realized), "BASE"),
        ("StockMarketValue", money(s.stock_market_value), "BASE"),
        ("FuturesPNL", money(s.futures_pnl), "BASE"),
    ]
    # The account-wide figures, under IB's key names (RegT..., not ibapi's ReqT... spelling).
    rows += [(tag, value, ccy) for tag, value, ccy in _summary_values(account, s)
             if tag not in ("AccountType", "ReqTEquity", "ReqTMargin")]
    return rows


def account_summary(account: Account, tags: set[str], marks: Marks) -> list[tuple[str, str, str]]:
    """reqAccountSummary rows (tag, value, currency) for the requested tags, in IB's tag order.
    ``$LEDGER`` (BASE), ``$LEDGER:ALL`` (every currency and BASE) and ``$LEDGER:EUR`` are understood."""
    s = account.snapshot(marks)
    wanted = {t.strip() for t in tags}
    rows = [r for r in _summary_values(account, s) if r[0] in wanted]
    for tag in sorted(t for t in wanted if t.upper().startswith("$LEDGER")):
        rows += _ledger_rows(account, s, marks, tag)
    return rows


def _summary_values(account: Account, s: Snapshot) -> list[tuple[str, str, str]]:
    nlv = s.net_liquidation
    values = {
        "AccountType": "INDIVIDUAL",
        "NetLiquidation": money(nlv),
        "TotalCashValue": money(s.total_cash),
        "SettledCash": money(s.total_cash),
        "AccruedCash": money(0.0),
        "BuyingPower": money(s.buying_power),
        "EquityWithLoanValue": money(s.equity_with_loan),
        "PreviousDayEquityWithLoanValue": money(account.starting_cash),
        "GrossPositionValue": money(s.gross_position_value),
        "ReqTEquity": money(s.equity_with_loan),
        "ReqTMargin": money(s.init_margin),
        "RegTEquity": money(s.equity_with_loan),
        "RegTMargin": money(s.init_margin),
        "SMA": money(max(0.0, s.available_funds)),
        "InitMarginReq": money(s.init_margin),
        "MaintMarginReq": money(s.maint_margin),
        "AvailableFunds": money(s.available_funds),
        "ExcessLiquidity": money(s.excess_liquidity),
        "Cushion": f"{(s.excess_liquidity / nlv) if nlv else 0.0:.6f}",
        "FullInitMarginReq": money(s.init_margin),
        "FullMaintMarginReq": money(s.maint_margin),
        "FullAvailableFunds": money(s.available_funds),
        "FullExcessLiquidity": money(s.excess_liquidity),
        "LookAheadNextChange": "0",
        "LookAheadInitMarginReq": money(s.init_margin),
        "LookAheadMaintMarginReq": money(s.maint_margin),
        "LookAheadAvailableFunds": money(s.available_funds),
        "LookAheadExcessLiquidity": money(s.excess_liquidity),
        "HighestSeverity": "0",
        **{tag: "-1" for tag in DAY_TRADES_TAGS},      # -1: no pattern-day-trader limit
        "Leverage": f"{(s.gross_position_value / nlv) if nlv else 0.0:.2f}",
    }
    return [(tag, values[tag], "" if tag in UNITLESS_TAGS else BASE) for tag in SUMMARY_TAG_ORDER]


def _ledger_currencies(s: Snapshot) -> list[str]:
    """USD first, then the other currencies the account ever held, alphabetically."""
    return [BASE] + sorted(c for c in s.cash if c != BASE)


def _pnl_by_currency(account: Account, marks: Marks) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for pos in account.positions.values():
        u, r = out.get(pos.currency, (0.0, 0.0))
        out[pos.currency] = (u + pos.unrealized(marks), r + pos.realized)
    return out


def _positions_value_in(account: Account, marks: Marks, ccy: str) -> float:
    return sum(account.nlv_contribution(p, marks) / marks.rate(ccy)
               for p in account.positions.values() if p.currency == ccy)


def _ledger_rows(account: Account, s: Snapshot, marks: Marks, tag: str) -> list[tuple[str, str, str]]:
    _, _, which = tag.partition(":")
    which = which.upper()
    currencies = _ledger_currencies(s) if which == "ALL" else ([which] if which else [])
    pnl = _pnl_by_currency(account, marks)
    rows = []
    for ccy in currencies:
        amount = s.cash.get(ccy, 0.0)
        unrealized, realized = pnl.get(ccy, (0.0, 0.0))
        rows += [("Currency", ccy, ccy), ("ExchangeRate", f"{s.rates.get(ccy, marks.rate(ccy)):.6f}", ccy),
                 ("CashBalance", money(amount), ccy), ("TotalCashValue", money(amount), ccy),
                 ("NetLiquidationByCurrency", money(amount + _positions_value_in(account, marks, ccy)), ccy),
                 ("UnrealizedPnL", money(unrealized), ccy), ("RealizedPnL", money(realized), ccy)]
    if which in ("", "ALL"):
        rows += [("Currency", "BASE", "BASE"), ("ExchangeRate", "1.00", "BASE"),
                 ("CashBalance", money(s.total_cash), "BASE"), ("TotalCashValue", money(s.total_cash), "BASE"),
                 ("NetLiquidationByCurrency", money(s.net_liquidation), "BASE"),
                 ("UnrealizedPnL", money(s.unrealized), "BASE"), ("RealizedPnL", money(s.realized), "BASE")]
    return rows
