"""Daily closes cached per (conId, day): a report pulls a holding's year of daily bars from IB at most
once a day; every other report that day reads them from the analysis database.

``day`` is the caller's trading date (New York); a day's entry replaces the older ones of that conId."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date

import pandas as pd

from .store import AnalysisStore


class HistoryCache:
    """Daily closes in ``store`` (an AnalysisStore); ``hits`` and ``pulls`` count this object's reads."""

    def __init__(self, store: AnalysisStore):
        self.store = store
        self.hits = 0
        self.pulls = 0

    def get(self, con_id: int, day: date, what: str = "") -> pd.Series | None:
        with self.store.connect() as db:
            row = db.execute("SELECT data FROM closes WHERE con_id=? AND day=? AND what=?",
                             (int(con_id), day.isoformat(), what)).fetchone()
        return None if row is None else _decode(row[0], con_id)

    def put(self, con_id: int, day: date, closes: pd.Series, what: str = "") -> str:
        """Store the day's closes of ``con_id`` (replacing its older days); returns the stored text."""
        data = _encode(closes)
        with self.store.connect() as db:
            db.execute("DELETE FROM closes WHERE con_id=? AND what=? AND day<>?", (int(con_id), what, day.isoformat()))
            db.execute("INSERT OR REPLACE INTO closes VALUES (?,?,?,?)", (int(con_id), day.isoformat(), what, data))
        return data

    def closes(self, con_id: int, day: date, pull: Callable[[], pd.Series], what: str = "") -> pd.Series:
        """The day's closes of ``con_id``: cached, else ``pull()`` (the caller's request to IB), stored."""
        cached = self.get(con_id, day, what)
        if cached is not None:
            self.hits += 1
            return cached
        series = pull()
        self.pulls += 1
        # What was stored, decoded: not read back, since another report on another day (the service's
        # recorder runs on today's date) may replace this conId's entry in between.
        return _decode(self.put(con_id, day, series, what), con_id)


def _encode(closes: pd.Series) -> str:
    idx = pd.DatetimeIndex(closes.index)
    idx = idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx
    return json.dumps([[d.strftime("%Y-%m-%d"), float(v)] for d, v in zip(idx, closes)])


def _decode(text: str, con_id: int) -> pd.Series:
    data = json.loads(text)
    return pd.Series([v for _, v in data], index=pd.DatetimeIndex([d for d, _ in data]), dtype="float64",
                     name=int(con_id))
