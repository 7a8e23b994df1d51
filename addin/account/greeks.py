"""Portfolio greeks: per position delta, gamma, vega, theta and delta-adjusted exposure, and their totals
per underlying and per account.

Where the numbers come from:

* positions: ``Portfolio.positions()`` (reqPositions + reqAccountUpdates' updatePortfolio);
* an option's greeks: IB's model computation (tickOptionComputation, tick 13; delayed 83) as the
  QuoteBoard holds it (``BoardQuote.delta``, ``gamma``, ``vega``, ``theta``, ``und_price``), on one
  streaming line per option held that :class:`PositionGreeks` opens and keeps (it counts toward the
  line budget; released when the option is no longer held, or by :meth:`PositionGreeks.close`);
* the multiplier of options and futures: IB's contract details (``ContractBook.details_by_con_id``).

Every figure is for the whole position, so that they add up (columns, snake case; the sheets show
them as Underlying, Delta, Gamma, Vega, Theta, DeltaDollars):

* ``underlying``: the underlying's symbol (an option's ``symbol``, a future option's too: ES; any other
  instrument's own). Options are OPT and FOP (a future option's delta is to its future, whose price is
  IB's undPrice);
* ``delta``: share-equivalents of the underlying, delta x position x multiplier (a stock, future, FX
  pair or coin: delta 1, so position x multiplier);
* ``gamma``: gamma x position x multiplier (change of ``delta`` for a 1.00 move of the underlying);
* ``vega``: vega x position x multiplier (contract currency for one volatility point, IB's unit);
* ``theta``: theta x position x multiplier (contract currency per calendar day);
* ``delta_dollars``: delta-adjusted exposure, ``delta`` x the underlying's price (an option: IB's
  undPrice of the model computation; any other instrument: its market price from updatePortfolio), in
  the contract's currency. So a stock is position x price, an option delta x position x multiplier x
  underlying price.

Non-option instruments have gamma, vega and theta 0. NaN where a number is not known: an option whose
line IB has not computed yet (a new line is waited for up to ``first_wait`` seconds, once), no line
left in the budget, an account other than the portfolio account (no market price).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
import pandas as pd

from ..ib.session import IBError

log = logging.getLogger(__name__)

__all__ = ["GREEK_COLUMNS", "TOTAL_COLUMNS", "PositionGreeks", "greek_totals", "ALL"]

GREEK_COLUMNS = ["underlying", "delta", "gamma", "vega", "theta", "delta_dollars"]
TOTAL_COLUMNS = ["account", "underlying", "delta", "gamma", "vega", "theta", "delta_dollars"]
ALL = "All"                     # the per-account total's ``underlying``
OPTION_TYPES = ("OPT", "FOP")   # options on stocks and indices, options on futures: IB's model greeks
_SUMMED = ["delta", "gamma", "vega", "theta", "delta_dollars"]
NAN = math.nan


class PositionGreeks:
    """Adds the greek columns to a positions frame. ``market``: MarketData (its board and lines);
    ``contracts``: ContractBook (details by conId). Thread-safe."""

    def __init__(self, market, contracts, first_wait: float = 2.0):
        self.market = market
        self.contracts = contracts
        self.first_wait = first_wait
        self._lock = threading.Lock()
        self._lines: dict[int, str] = {}           # option conId -> board key of the line opened for it
        self._waited: set[int] = set()

    def add(self, positions: pd.DataFrame) -> pd.DataFrame:
        """``positions`` (``Portfolio.positions()``'s columns) with GREEK_COLUMNS appended (module
        docstring). Opens a line per option held that has none yet, releases those no longer held."""
        out = positions.copy()
        rows = [self._row(r) for r in positions.itertuples(index=False)]
        for i, col in enumerate(GREEK_COLUMNS):
            values = [r[i] for r in rows]
            out[col] = pd.Series(values, index=out.index, dtype=object if col == "underlying" else "float64")
        held = {int(r.con_id) for r in positions.itertuples(index=False)
                if r.sec_type in OPTION_TYPES and r.position != 0}
        self._release(set(self._lines) - held)
        return out

    def close(self) -> None:
        """Release every line opened for greeks."""
        self._release(set(self._lines))

    # --- one position ---------------------------------------------------------------------------------
    def _row(self, r) -> tuple:
        position = float(r.position)
        if r.sec_type in OPTION_TYPES:
            return self._option_row(r, position)
        mult = self._multiplier(int(r.con_id)) if r.sec_type == "FUT" else 1.0
        delta = position * mult
        price = _number(r.market_price)
        return (r.symbol, delta, 0.0, 0.0, 0.0, delta * price if price is not None else NAN)

    def _option_row(self, r, position: float) -> tuple:
        con_id = int(r.con_id)
        details = self._details(con_id)
        if details is None:
            return (r.symbol, NAN, NAN, NAN, NAN, NAN)
        c = details.contract
        mult = _number(c.multiplier) or 1.0
        q = self._greeks_quote(con_id, details) if position else None
        scale = position * mult
        if q is None:
            return (c.symbol, NAN, NAN, NAN, NAN, NAN) if position else (c.symbol, 0.0, 0.0, 0.0, 0.0, 0.0)
        delta, gamma, vega, theta = (_scaled(getattr(q, g), scale) for g in ("delta", "gamma", "vega", "theta"))
        und = _number(q.und_price)
        return (c.symbol, delta, gamma, vega, theta, delta * und if und is not None else NAN)

    def _details(self, con_id: int):
        try:
            return self.contracts.details_by_con_id(con_id)
        except (IBError, ValueError) as exc:
            log.info("no contract details for conId %s: %s", con_id, exc)
            return None

    def _multiplier(self, con_id: int) -> float:
        details = self._details(con_id)
        return (_number(details.contract.multiplier) or 1.0) if details is not None else NAN

    def _greeks_quote(self, con_id: int, details):
        """The board's quote of the option once IB's model greeks are on it (waiting for a new line's
        first computation up to ``first_wait`` s, once); None without a line or greeks."""
        key = self._line(con_id, details)
        if key is None:
            return None
        board = self.market.board
        deadline = time.monotonic() + (0.0 if con_id in self._waited else self.first_wait)
        self._waited.add(con_id)
        while True:
            version = board.version
            q = board.get(key)
            if q is not None and q.delta is not None:
                return q
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            board.wait(version, left)

    def _line(self, con_id: int, details) -> str | None:
        with self._lock:
            key = self._lines.get(con_id)
            if key is not None:
                return key
            try:
                key = self.market.subscribe(details.contract)
            except (IBError, ValueError) as exc:         # the line budget (101), not connected, ...
                log.info("no quote line for the greeks of conId %s: %s", con_id, exc)
                return None
            self._lines[con_id] = key
            return key

    def _release(self, con_ids: set[int]) -> None:
        for con_id in con_ids:
            with self._lock:
                key = self._lines.pop(con_id, None)
                self._waited.discard(con_id)
            if key is None:
                continue
            try:
                self.market.unsubscribe(key)
            except KeyError:
                pass


def greek_totals(positions: pd.DataFrame) -> pd.DataFrame:
    """Totals of a positions frame with GREEK_COLUMNS: one row per (account, underlying), then one per
    account with underlying ``ALL``; columns TOTAL_COLUMNS, sorted by account. A total over a NaN is
    NaN (an unknown is never summed as 0)."""
    if positions.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("account", "underlying") else "float64")
                             for c in TOTAL_COLUMNS})
    rows = []
    for account, acct_rows in positions.groupby("account", sort=True):
        for underlying, group in acct_rows.groupby("underlying", sort=True):
            rows.append([account, underlying] + [_sum(group[c]) for c in _SUMMED])
        rows.append([account, ALL] + [_sum(acct_rows[c]) for c in _SUMMED])
    return pd.DataFrame(rows, columns=TOTAL_COLUMNS)


def _sum(values: pd.Series) -> float:
    arr = values.to_numpy(dtype="float64")
    return float(np.sum(arr)) if len(arr) else 0.0


def _scaled(value, scale: float) -> float:
    v = _number(value)
    return v * scale if v is not None else NAN


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and abs(v) < 1e30 else None
