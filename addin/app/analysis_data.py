"""Wiring for the analysis report: gathers the frames ``addin.analysis`` computes from (positions,
account values, reqPnL and reqPnLSingle, contract details, daily bars, executions, the pending rows of
the Orders Table) through a Runtime, and builds the report.

Daily bars come from the Runtime's History (IB's pacing), through the per-day close cache in the
analysis database (``analysis.sqlite3`` beside the order journal), so a second report on the same New
York day sends no history request. The P&L and VaR of the day are recorded in the same database."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.frames import GREEK_INPUT, OPTION_TYPES, POSITION_INPUT, UNDER_INPUT, AnalysisError, Inputs
from ..analysis.history_cache import HistoryCache
from ..analysis.pnl_history import PnLRecorder, trading_day
from ..analysis.report import build_report
from ..analysis.store import AnalysisStore
from ..analysis.what_if import BASKET_COLUMNS
from ..cells import is_blank, number
from ..ib.contracts import InstrumentError
from ..ib.session import IBError

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.sqlite3"
SIDE = {"BUY": 1.0, "SELL": -1.0}


def analysis_path(journal_path: str | Path | None) -> Path:
    """``analysis.sqlite3`` beside the order journal (``journal_path``, else the user's default journal:
    ``$IBXL_JOURNAL`` or ``~/.ibxl/journal.sqlite3``)."""
    if journal_path is None:
        from ..config import journal_path as default_journal
        journal_path = default_journal()
    return Path(journal_path).parent / ANALYSIS_FILE


def _text(v: Any) -> str:
    return "" if is_blank(v) else str(v).strip()


def _contract_row(rt, con_id: int) -> dict:
    d = rt.contracts.qualify(f"conid:{con_id}")
    c = d.contract
    mult = number(c.multiplier or 1, "multiplier") if _text(c.multiplier) else 1.0
    under = int(d.underConId or 0) if c.secType in OPTION_TYPES else 0
    return {"con_id": int(con_id), "ib_symbol": c.symbol, "sec_type": c.secType, "currency": c.currency,
            "exchange": c.primaryExchange or c.exchange, "industry": d.industry or d.category or "",
            "multiplier": float(mult or 1.0), UNDER_INPUT: under}


def _duration(window_days: int) -> str:
    return f"{max(1, math.ceil((window_days + 5) / 250))} Y"


def _pull(rt, con_id: int, sec_type: str, window_days: int):
    what = "MIDPOINT" if sec_type == "CASH" else "TRADES"

    def pull() -> pd.Series:
        bars = rt.history.bars(f"conid:{con_id}", duration=_duration(window_days), bar_size="1 day",
                               what_to_show=what, use_rth=True)
        return bars["close"]
    return pull, what


def pending_basket(rt, rows: list[dict] | None, accounts: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """The pending Orders rows (no Status yet) as what_if.BASKET_COLUMNS, and the contract rows of their
    instruments. Fill price: LimitPrice, or the quote's mid for a MKT order; mark: the quote's last,
    else its mid. Account blank: the first managed account. A row that cannot be read or priced (bad
    Action or Quantity, unknown instrument, no quote) is left out of the what-if and logged with its
    Ref and reason: the placing step refuses such rows too."""
    out, contracts = [], []
    for row in rows or []:
        if _text(row.get("Status")) or not _text(row.get("Symbol")):
            continue
        try:
            basket_row, contract = _basket_row(rt, row, accounts)
        except Exception as exc:          # one bad row must not cost the whole report
            log.warning("what-if: Orders row %s left out: %s", _text(row.get("Ref")) or _text(row.get("Symbol")), exc)
            continue
        out.append(basket_row)
        contracts.append(contract)
    return pd.DataFrame(out, columns=BASKET_COLUMNS), contracts


def _basket_row(rt, row: dict, accounts: list[str]) -> tuple[tuple, dict]:
    """One pending Orders row as a basket row and its contract row. Raises AnalysisError naming the Ref."""
    ref = _text(row.get("Ref")) or _text(row.get("Symbol"))
    action = _text(row.get("Action")).upper()
    if action not in SIDE:
        raise AnalysisError(f"Orders row {ref}: Action {row.get('Action')!r} is not BUY or SELL")
    qty = number(row.get("Quantity"), "Quantity")
    if qty is None or qty <= 0:
        raise AnalysisError(f"Orders row {ref}: Quantity must be a positive number")
    details = rt.contracts.qualify(_text(row["Symbol"]))
    cid = int(details.contract.conId)
    quote = rt.market.snapshot(_text(row["Symbol"]))
    mid = quote.mid if quote.mid is not None else quote.last
    mark = quote.last if quote.last is not None else mid
    kind = _text(row.get("OrderType")).upper() or "LMT"
    limit = number(row.get("LimitPrice"), "LimitPrice")
    price = mid if kind == "MKT" or limit is None else limit
    if price is None or mark is None:
        raise AnalysisError(f"Orders row {ref}: no quote for {row['Symbol']} to price the what-if")
    account = _text(row.get("Account")) or accounts[0]
    return ((account, cid, rt.contracts.describe(details), details.contract.secType, details.contract.currency,
             SIDE[action] * qty, float(price), float(mark)), _contract_row(rt, cid))


def gather(rt, *, benchmark: str, window_days: int, day, cache: HistoryCache,
           pending: list[dict] | None = None) -> tuple[Inputs, pd.DataFrame, pd.DataFrame]:
    """(Inputs, basket, executions) read through ``rt`` (a Runtime). Keeps the feeds it reads watched
    (positions, account values, reqPnL and reqPnLSingle per account and holding), so the next report
    reads them from the live cache."""
    positions = rt.positions()
    pf = rt.portfolio
    rt._watch("analysis values", pf.watch_account_values)
    values = pf.account_values()
    accounts = sorted(set(values["account"]) | set(positions["account"]))
    pnl_rows, single_rows = [], []
    for account in accounts:
        p = rt.pnl(account).iloc[0]
        pnl_rows.append((account, p["daily"], p["unrealized"], p["realized"]))
    held = positions[positions["position"] != 0]
    for r in held.itertuples(index=False):
        rt._watch(f"pnl_single {r.account} {r.con_id}",
                  lambda a=r.account, c=int(r.con_id): pf.watch_pnl_single(a, c))
        s = pf.pnl_single(r.account, int(r.con_id)).iloc[0]
        single_rows.append((r.account, int(r.con_id), s["daily"], s["unrealized"], s["realized"], s["value"]))
    basket, basket_contracts = pending_basket(rt, pending, accounts)
    bench = rt.contracts.qualify(benchmark).contract
    ids = dict.fromkeys([*map(int, held["con_id"]), *map(int, basket["con_id"]), int(bench.conId)])
    contracts = {c["con_id"]: c for c in basket_contracts}
    for cid in ids:
        if cid not in contracts:
            contracts[cid] = _contract_row(rt, cid)
    # options have no daily bars (IB serves none that a VaR could use): their underlyings' bars move them
    unders = [c[UNDER_INPUT] for c in contracts.values() if c["sec_type"] in OPTION_TYPES and c[UNDER_INPUT]]
    for cid in unders:
        if cid not in contracts:
            contracts[cid] = _contract_row(rt, cid)
    closes = {}
    for cid in dict.fromkeys([*ids, *unders]):
        if contracts[cid]["sec_type"] in OPTION_TYPES:
            continue
        pull, what = _pull(rt, cid, contracts[cid]["sec_type"], window_days)
        try:
            closes[cid] = cache.closes(cid, day, pull, what)
        except (IBError, InstrumentError) as exc:    # one holding without history: its risk left out, named
            if cid == int(bench.conId):
                raise
            log.warning("analysis: no daily bars for conId %s: %s", cid, exc)
    inputs = Inputs(
        positions=positions[POSITION_INPUT + [c for c in GREEK_INPUT if c in positions.columns]].copy(),
        contracts=pd.DataFrame(list(contracts.values())),
        values=values[["account", "key", "value", "currency"]].copy(),
        pnl_single=pd.DataFrame(single_rows, columns=["account", "con_id", "daily", "unrealized", "realized",
                                                      "value"]),
        pnl=pd.DataFrame(pnl_rows, columns=["account", "daily", "unrealized", "realized"]),
        closes=closes, benchmark_con_id=int(bench.conId), benchmark_symbol=benchmark, window_days=window_days)
    return inputs, basket, pf.executions()


def analysis_report(rt, pending: list[dict] | None = None, *, now: datetime | None = None,
                    benchmark: str | None = None, window_days: int | None = None,
                    store_path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The report (``addin.analysis.report.build_report``) of the accounts ``rt`` (a Runtime) manages.
    ``pending``: Orders Table rows (dicts by column name) for the what-if; only rows with no Status are
    used. ``benchmark`` / ``window_days``: default the config's ``[analysis]``. ``now``: the report's
    time (default the clock). ``store_path``: the analysis database (default beside the journal). The
    day's VaR is recorded only by a report on the configured benchmark and window.
    Raises AnalysisError, IBError, RequestTimeout, InstrumentError (an unknown benchmark)."""
    settings = rt._base_settings().analysis
    benchmark = benchmark or settings.benchmark
    window_days = int(window_days or settings.window_days)
    configured = (benchmark, window_days) == (settings.benchmark, settings.window_days)
    now = now or datetime.now(UTC)
    store = AnalysisStore(store_path or analysis_path(rt.journal_path))
    cache = HistoryCache(store)
    inputs, basket, executions = gather(rt, benchmark=benchmark, window_days=window_days, day=trading_day(now),
                                        cache=cache, pending=pending)
    return build_report(inputs, basket=basket, executions=executions, recorder=PnLRecorder(store), now=now,
                        record_var=configured)
