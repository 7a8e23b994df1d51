"""The analysis database: one SQLite file (``analysis.sqlite3`` beside the order journal) holding the
daily-close cache (history_cache) and the recorded P&L and VaR days (pnl_history).

Each call opens its own short-lived connection (WAL, busy timeout), so the store is safe to use from
any thread and from several processes."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS closes (con_id INTEGER NOT NULL, day TEXT NOT NULL, what TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (con_id, day, what));
CREATE TABLE IF NOT EXISTS pnl_days (day TEXT NOT NULL, account TEXT NOT NULL, net_liquidation REAL,
    daily_pnl REAL, realized_pnl REAL, commission REAL, fills INTEGER, updated TEXT NOT NULL,
    PRIMARY KEY (day, account));
CREATE TABLE IF NOT EXISTS var_days (day TEXT NOT NULL, account TEXT NOT NULL, var95 REAL, var99 REAL,
    es95 REAL, es99 REAL, updated TEXT NOT NULL, PRIMARY KEY (day, account));
"""


class AnalysisStore:
    """The analysis SQLite file at ``path`` (its folder is created)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def connect(self):
        db = sqlite3.connect(self.path, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:                      # one transaction: committed, or rolled back on an error
                yield db
        finally:
            db.close()
