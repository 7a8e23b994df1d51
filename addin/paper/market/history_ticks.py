"""reqHistoricalTicks at the paper gateway: IB's argument checks and the ticks, taken from the same
generated seconds the quotes and the fine bars come from (``Market.traded_seconds``).

Rules [IB's reqHistoricalTicks reference]: exactly one of startDateTime and endDateTime is given
(the other empty); numberOfTicks is at most 1000; whatToShow TRADES, BID_ASK or MIDPOINT. From a
start the first ``numberOfTicks`` ticks at or after it are sent, before an end the last ones before
it; never a tick after the replay clock. Ticks: TRADES one per generated second that traded
(HISTORICAL_TICKS_LAST, exchange = the primary exchange), BID_ASK one per second whose bid, ask or
sizes changed (only prices with ignoreSize), MIDPOINT one per second whose midpoint changed (size 0).
The answer is one message with done=True. Pacing of historical ticks is not enforced.

Refusal texts: 10314 for an unreadable time (as reqHistoricalData); 162 for a whatToShow the
instrument has no data for (FX TRADES, an index's BID_ASK/MIDPOINT), as for bars. IB documents
the other rules but no refusal text: the 321 texts below are WRITTEN in IB's style from the
reference's own sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from .history_rules import HMDS_PREFIX, HistoryError, parse_end_datetime
from .market import Market
from .market import check_what_to_show as instrument_has

MAX_TICKS = 1000
TICK_TYPES = ("TRADES", "BID_ASK", "MIDPOINT")
_VALIDATING = "Error validating request.-'bM' : cause - "
ONE_OF_START_END = _VALIDATING + "Exactly one of start time and end time has to be defined."  # WRITTEN
TICK_COUNT = _VALIDATING + f"Number of ticks must be between 1 and {MAX_TICKS}."  # WRITTEN
_LONGEST_SEARCH = timedelta(days=14)   # how far from the given time ticks are looked for (a long weekend fits)


@dataclass(frozen=True)
class TicksRequest:
    """A reqHistoricalTicks that passed the checks: ``start`` or ``end`` (UTC) is set, not both."""

    start: datetime | None
    end: datetime | None
    count: int
    what_to_show: str


def validate(start_text: str, end_text: str, count: int, what_to_show: str, *, now: datetime) -> TicksRequest:
    """IB's checks of reqHistoricalTicks, first failure raised as HistoryError (321 / 10314)."""
    what = (what_to_show or "").strip().upper()
    if what not in TICK_TYPES:
        # the text IB's gateway uses for a whatToShow it rejects ([RE], as for bars)
        raise HistoryError(321, f"{_VALIDATING}What to show value of {what_to_show} rejected.")
    start_text, end_text = (start_text or "").strip(), (end_text or "").strip()
    if bool(start_text) == bool(end_text):
        raise HistoryError(321, ONE_OF_START_END)
    if not 1 <= count <= MAX_TICKS:
        raise HistoryError(321, TICK_COUNT)
    start = parse_end_datetime(start_text, now) if start_text else None
    end = parse_end_datetime(end_text, now) if end_text else None
    return TicksRequest(start, end, count, what)


def collect(market: Market, inst, req: TicksRequest, *, use_rth: bool = False, ignore_size: bool = False) -> list:
    """The ticks of a checked request, oldest first, as tuples for ``history_codec``: TRADES
    (epoch, 0, price, size, exchange, ""), BID_ASK (epoch, 0, bid, ask, bid size, ask size),
    MIDPOINT (epoch, price, 0). HistoryError(162) when the instrument has no such data."""
    try:
        instrument_has(inst, "TRADES" if req.what_to_show == "TRADES" else "MIDPOINT")
    except ValueError as exc:
        raise HistoryError(162, f"{HMDS_PREFIX}{exc}") from None
    now = market.now()
    span = timedelta(seconds=max(4 * req.count, 600))
    while True:
        if req.start is not None:
            e0, e1 = req.start, min(req.start + span, now)
        else:
            assert req.end is not None
            e1 = min(req.end, now)
            e0 = e1 - span
        ticks = _ticks(market, inst, e0, e1, req.what_to_show, use_rth, ignore_size) if e1 > e0 else []
        reached = (e1 >= now) if req.start is not None else False
        if len(ticks) >= req.count or reached or span >= _LONGEST_SEARCH:
            return ticks[:req.count] if req.start is not None else ticks[-req.count:]
        span *= 4


def _ticks(market: Market, inst, e0: datetime, e1: datetime, what: str, use_rth: bool, ignore_size: bool) -> list:
    df = market.traded_seconds(inst, e0, e1)
    if use_rth and inst.liquid is not None and len(df):
        local = df.index.tz_convert(inst.tz)
        sod = local.hour * 3600 + local.minute * 60 + local.second
        df = df[(sod >= inst.liquid[0]) & (sod < inst.liquid[1])]
    if not len(df):
        return []
    epochs = pd.DatetimeIndex(df.index).as_unit("s").asi8.tolist()
    if what == "TRADES":
        size = df["last_size"].to_numpy()
        last = df["last"].to_numpy()
        if np.isnan(size).all():        # an index: no sizes, a tick per price change
            keep = _changed(last)
            size = np.zeros(len(last))
        else:
            keep = size > 0
        exchange = inst.contract.primaryExchange or inst.contract.exchange
        return [(t, 0, p, s, exchange, "") for t, p, s, k in zip(epochs, last.tolist(), size.tolist(), keep) if k]
    bid, ask = df["bid"].to_numpy(), df["ask"].to_numpy()
    if what == "MIDPOINT":
        mid = np.round((bid + ask) / 2, 10)
        return [(t, m, 0) for t, m, k in zip(epochs, mid.tolist(), _changed(mid)) if k]
    bid_size, ask_size = df["bid_size"].to_numpy(), df["ask_size"].to_numpy()
    keep = _changed(bid, ask) if ignore_size else _changed(bid, ask, bid_size, ask_size)
    rows = zip(epochs, bid.tolist(), ask.tolist(), bid_size.tolist(), ask_size.tolist(), keep)
    return [(t, 0, b, a, _clean(bs), _clean(az)) for t, b, a, bs, az, k in rows if k]


def _changed(*cols: np.ndarray) -> np.ndarray:
    """True where any column differs from the row before (the first row counts as a change)."""
    out = np.zeros(len(cols[0]), dtype=bool)
    out[0] = True
    for c in cols:
        out[1:] |= c[1:] != c[:-1]
    return out


def _clean(size: float) -> float:
    return 0.0 if size is None or (isinstance(size, float) and math.isnan(size)) else size


__all__ = ["MAX_TICKS", "TICK_TYPES", "TicksRequest", "validate", "collect"]
