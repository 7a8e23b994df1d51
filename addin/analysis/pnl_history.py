"""The P&L recorder: one row per (date, account) of NetLiquidation, DailyPnL, RealizedPnL and the day's
executions (commission, fills), and one of the day's VaR and ES, updated in place each time a report
is built, so the equity curve and the VaR history grow every day ibxl runs.

Dates are trading dates in New York (``trading_day``), the zone IB's US accounts report in."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pandas as pd

from .store import AnalysisStore

NEW_YORK = ZoneInfo("America/New_York")
PNL_COLUMNS = ["Date", "Account", "NetLiquidation", "DailyPnL", "RealizedPnL", "Commission", "Fills"]
VAR_COLUMNS = ["Date", "Account", "VaR95", "VaR99", "ES95", "ES99"]


def trading_day(now: datetime) -> date:
    """The New York date of ``now`` (aware; naive is taken as UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(NEW_YORK).date()


def _real(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def day_executions(executions: pd.DataFrame, day: date) -> dict[str, tuple[float, int]]:
    """Account -> (commission, fills) of the executions whose time falls on ``day`` in New York
    (Portfolio.executions columns: account, time (UTC), commission)."""
    if executions is None or executions.empty:
        return {}
    times = pd.to_datetime(executions["time"], utc=True).dt.tz_convert(NEW_YORK).dt.date
    today = executions[times == day]
    out = {}
    for account, part in today.groupby("account"):
        out[str(account)] = (float(part["commission"].fillna(0.0).sum()), int(len(part)))
    return out


class PnLRecorder:
    """Records and reads the P&L and VaR days in an AnalysisStore."""

    def __init__(self, store: AnalysisStore):
        self.store = store

    def record_pnl(self, day: date, account: str, net_liquidation: float, daily_pnl: float, realized_pnl: float,
                   commission: float, fills: int, now: datetime) -> None:
        with self.store.connect() as db:
            db.execute("INSERT OR REPLACE INTO pnl_days VALUES (?,?,?,?,?,?,?,?)",
                       (day.isoformat(), account, _real(net_liquidation), _real(daily_pnl), _real(realized_pnl),
                        _real(commission), int(fills), now.isoformat()))

    def record_var(self, day: date, account: str, figures: dict[str, float], now: datetime) -> None:
        with self.store.connect() as db:
            db.execute("INSERT OR REPLACE INTO var_days VALUES (?,?,?,?,?,?,?)",
                       (day.isoformat(), account, *(_real(figures.get(k)) for k in ("VaR95", "VaR99", "ES95", "ES99")),
                        now.isoformat()))

    def pnl_days(self, accounts: list[str] | None = None) -> pd.DataFrame:
        """The PnLByDay Table: Date (datetime, the New York date at midnight), Account, NetLiquidation,
        DailyPnL, RealizedPnL, Commission (base currency), Fills (count); by date then account."""
        return self._read("SELECT day, account, net_liquidation, daily_pnl, realized_pnl, commission, fills "
                          "FROM pnl_days", PNL_COLUMNS, accounts)

    def var_days(self, accounts: list[str] | None = None) -> pd.DataFrame:
        """The VaRHistory Table: Date, Account, VaR95, VaR99, ES95, ES99 (base currency, losses positive)."""
        return self._read("SELECT day, account, var95, var99, es95, es99 FROM var_days", VAR_COLUMNS, accounts)

    def _read(self, sql: str, columns: list[str], accounts: list[str] | None) -> pd.DataFrame:
        with self.store.connect() as db:
            rows = db.execute(sql + " ORDER BY day, account").fetchall()
        df = pd.DataFrame(rows, columns=columns)
        if accounts is not None:
            df = df[df["Account"].isin(accounts)].reset_index(drop=True)
        df["Date"] = pd.to_datetime(df["Date"])
        for c in columns[2:]:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("int64" if c == "Fills" else "float64")
        return df
