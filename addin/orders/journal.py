"""The order journal: SQLite in WAL mode, one record per order intent written *before* it is sent,
then every transmission, status, fill and commission. It is what makes "never sent twice" hold across
clicks, crashes and reconnects.

Tables: ``intents`` (one row per Ref: the order fields as JSON, account, symbol, conId, the order ids,
its state and latest status), ``transmissions`` (every placeOrder / modify / cancel handed to IB, with
time), ``statuses`` (every status change), ``fills`` (one per execId, unique), ``commissions`` (one per
execId), ``meta`` (the kill switch).

The state machine of an intent (``state`` column)::

    intent_written --mark_transmitting--> transmitting --IB answers--> working | filled | cancelled | rejected
          |                                   |
          |                                   +--reconcile finds no trace at IB--> not_received
          +--(crash before sending: nothing was sent)

``intent_written`` and ``not_received`` mean IB never got the order: placing the row again sends it
(with a new order id). ``rejected`` (IB refused it) may be placed again after the row is fixed.
``transmitting``, ``working``, ``filled`` and ``cancelled`` block the Ref for good: it is never sent
again. Durability: every change is its own transaction, committed before the caller goes on. What
ibxl decides (intents, transmissions, states it sets, the kill switch) is ``synchronous=FULL``: the
intent is on disk before placeOrder leaves the process. What IB reports (statuses, ids, fills,
commissions) is ``synchronous=NORMAL``: safe against a process crash, and after a power cut the last
few may be missing, which leaves a Ref at a state that blocks at least as much as the truth
(``transmitting`` blocks) until the next reconcile reads them back from IB. That keeps IB's event
stream from holding the journal through an fsync while an order waits to be written.

Thread-safe (one connection behind a lock); several processes may share the file (WAL, busy timeout).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["Journal", "DuplicateRefError", "STATES", "RESENDABLE_STATES", "BLOCKING_STATES", "TERMINAL_STATES",
           "state_of_status"]

STATES = ("intent_written", "transmitting", "working", "filled", "cancelled", "rejected", "not_received")
RESENDABLE_STATES = frozenset({"intent_written", "not_received", "rejected"})
BLOCKING_STATES = frozenset({"transmitting", "working", "filled", "cancelled"})
TERMINAL_STATES = frozenset({"filled", "cancelled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    ref TEXT PRIMARY KEY, parent_ref TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
    account TEXT, symbol TEXT, con_id INTEGER, fields TEXT NOT NULL,
    client_id INTEGER, order_id INTEGER, perm_id INTEGER,
    state TEXT NOT NULL, status TEXT, filled REAL, remaining REAL, avg_fill_price REAL,
    message TEXT, attempts INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS intents_order ON intents(client_id, order_id);
CREATE INDEX IF NOT EXISTS intents_perm ON intents(perm_id);
CREATE TABLE IF NOT EXISTS transmissions (
    id INTEGER PRIMARY KEY, ref TEXT NOT NULL, kind TEXT NOT NULL, client_id INTEGER, order_id INTEGER,
    time TEXT NOT NULL, epoch REAL NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS transmissions_epoch ON transmissions(epoch);
CREATE TABLE IF NOT EXISTS statuses (
    id INTEGER PRIMARY KEY, ref TEXT NOT NULL, time TEXT NOT NULL, status TEXT, filled REAL, remaining REAL,
    avg_fill_price REAL, perm_id INTEGER, message TEXT);
CREATE TABLE IF NOT EXISTS fills (
    exec_id TEXT PRIMARY KEY, ref TEXT NOT NULL, order_id INTEGER, perm_id INTEGER, time TEXT, side TEXT,
    shares REAL, price REAL);
CREATE TABLE IF NOT EXISTS commissions (
    exec_id TEXT PRIMARY KEY, amount REAL, currency TEXT, realized_pnl REAL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_WORKING = {"PendingSubmit", "PreSubmitted", "Submitted", "ApiPending", "PendingCancel"}


def state_of_status(status: str) -> str | None:
    """The journal state for an IB order status (None for a status that changes nothing)."""
    if status in _WORKING:
        return "working"
    if status == "Filled":
        return "filled"
    if status in ("Cancelled", "ApiCancelled"):
        return "cancelled"
    if status == "Inactive":
        return "rejected"
    return None


class DuplicateRefError(ValueError):
    """The Ref is already working or done (``state`` says which): it is never sent twice."""

    def __init__(self, ref: str, state: str):
        self.ref, self.state = ref, state
        super().__init__(f"duplicate_ref: {ref} was already sent ({state}); it is never sent twice")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Journal:
    """The journal file at ``path`` (created with its folders when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":                      # pragma: no cover - e.g. a network drive
            raise sqlite3.OperationalError(f"{self.path}: SQLite refused WAL mode ({mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(args))

    @contextlib.contextmanager
    def _reported(self):
        """Under the lock, commits without fsync: for what IB reports (module docstring)."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                yield
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    # --- intents ------------------------------------------------------------------------------------
    def record_intent(self, ref: str, fields: dict[str, Any], *, account: str, symbol: str, con_id: int,
                      parent_ref: str | None = None) -> dict:
        """Write the intent (state intent_written) before anything is sent; returns the record.
        Raises DuplicateRefError when the Ref is transmitting, working, filled or cancelled. A Ref in
        a resendable state (intent_written, not_received, rejected) is overwritten (attempts + 1)."""
        now = _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT state, attempts FROM intents WHERE ref=?", (ref,)).fetchone()
                if row is not None and row["state"] in BLOCKING_STATES:
                    raise DuplicateRefError(ref, row["state"])
                attempts = (row["attempts"] + 1) if row is not None else 1
                self._db.execute(
                    "INSERT OR REPLACE INTO intents (ref, parent_ref, created, updated, account, symbol, con_id, "
                    "fields, client_id, order_id, perm_id, state, status, filled, remaining, avg_fill_price, "
                    "message, attempts) VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL,'intent_written',NULL,0,?,NULL,NULL,?)",
                    (ref, parent_ref, now, now, account, symbol, con_id, json.dumps(fields, default=str),
                     float(fields.get("quantity") or 0), attempts))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.intent(ref)

    def mark_transmitting(self, ref: str, client_id: int, order_id: int, kind: str = "place",
                          detail: dict | None = None) -> None:
        """Record that ``kind`` (place, modify, cancel, global_cancel) is about to leave for IB. For
        place the intent goes intent_written -> transmitting with its order id."""
        now = _now()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO transmissions (ref, kind, client_id, order_id, time, epoch, detail) "
                                 "VALUES (?,?,?,?,?,?,?)", (ref, kind, client_id, order_id, now, time.time(),
                                                             json.dumps(detail or {}, default=str)))
                if kind == "place":
                    self._db.execute("UPDATE intents SET state='transmitting', client_id=?, order_id=?, "
                                     "status='Transmitted', updated=? WHERE ref=?", (client_id, order_id, now, ref))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def set_state(self, ref: str, state: str, message: str | None = None, status: str | None = None) -> None:
        """Force a state (reconcile: not_received; IB's rejection: rejected) with a message."""
        assert state in STATES, state
        self._tx("UPDATE intents SET state=?, message=COALESCE(?, message), status=COALESCE(?, status), updated=? "
                 "WHERE ref=?", (state, message, status, _now(), ref))

    def update_fields(self, ref: str, fields: dict[str, Any]) -> None:
        """A modify: the order fields now working at IB."""
        self._tx("UPDATE intents SET fields=?, updated=? WHERE ref=?", (json.dumps(fields, default=str), _now(), ref))

    def set_ids(self, ref: str, *, order_id: int | None = None, perm_id: int | None = None,
                client_id: int | None = None) -> None:
        with self._reported():
            self._tx("UPDATE intents SET order_id=COALESCE(?, order_id), perm_id=COALESCE(NULLIF(?, 0), perm_id), "
                     "client_id=COALESCE(?, client_id) WHERE ref=?", (order_id, perm_id, client_id, ref))

    def record_status(self, ref: str, status: str, filled: float | None = None, remaining: float | None = None,
                      avg_fill_price: float | None = None, perm_id: int | None = None,
                      message: str | None = None) -> bool:
        """An IB status for the Ref. Returns True when something changed. A terminal state (filled,
        cancelled) never goes back to working (late or replayed events)."""
        with self._reported():
            row = self._db.execute("SELECT * FROM intents WHERE ref=?", (ref,)).fetchone()
            if row is None:
                return False
            state = state_of_status(status) or row["state"]
            if row["state"] in TERMINAL_STATES and state not in TERMINAL_STATES:
                return False
            if row["state"] == "filled" and state == "cancelled":
                return False
            new = (status, filled if filled is not None else row["filled"],
                   remaining if remaining is not None else row["remaining"],
                   avg_fill_price if avg_fill_price is not None else row["avg_fill_price"])
            old = (row["status"], row["filled"], row["remaining"], row["avg_fill_price"])
            if new == old and state == row["state"] and (message is None or message == row["message"]) \
                    and (not perm_id or perm_id == row["perm_id"]):
                return False
            now = _now()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO statuses (ref, time, status, filled, remaining, avg_fill_price, "
                                 "perm_id, message) VALUES (?,?,?,?,?,?,?,?)", (ref, now, *new, perm_id, message))
                self._db.execute("UPDATE intents SET status=?, filled=?, remaining=?, avg_fill_price=?, state=?, "
                                 "perm_id=COALESCE(NULLIF(?, 0), perm_id), message=COALESCE(?, message), updated=? "
                                 "WHERE ref=?", (*new, state, perm_id, message, now, ref))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return True

    # --- fills ----------------------------------------------------------------------------------------
    def record_fill(self, exec_id: str, ref: str, *, order_id: int, perm_id: int, time_text: str, side: str,
                    shares: float, price: float) -> bool:
        """One execution (execId unique: a replayed one is ignored). True when it was new."""
        with self._reported():
            cur = self._tx("INSERT OR IGNORE INTO fills (exec_id, ref, order_id, perm_id, time, side, shares, price) "
                           "VALUES (?,?,?,?,?,?,?,?)",
                           (exec_id, ref, order_id, perm_id, time_text, side, shares, price))
            return cur.rowcount > 0

    def record_commission(self, exec_id: str, amount: float, currency: str, realized_pnl: float | None) -> bool:
        """IB's commission report for an execution. True when it changed the record."""
        with self._reported():
            cur = self._tx("INSERT OR REPLACE INTO commissions (exec_id, amount, currency, realized_pnl) "
                           "VALUES (?,?,?,?)", (exec_id, amount, currency, realized_pnl))
            return cur.rowcount > 0

    def ref_of_exec(self, exec_id: str) -> str | None:
        row = self._tx("SELECT ref FROM fills WHERE exec_id=?", (exec_id,)).fetchone()
        return row["ref"] if row else None

    def fills(self, ref: str) -> list[dict]:
        """Executions of the Ref with their commission (None until IB's report), oldest first."""
        rows = self._tx("SELECT f.*, c.amount AS commission, c.currency AS commission_currency FROM fills f "
                        "LEFT JOIN commissions c ON c.exec_id = f.exec_id WHERE f.ref=? ORDER BY f.time, f.exec_id",
                        (ref,)).fetchall()
        return [dict(r) for r in rows]

    def commission(self, ref: str) -> float | None:
        """Total commission of the Ref's executions (None when no report arrived)."""
        row = self._tx("SELECT SUM(c.amount) AS total, COUNT(c.exec_id) AS n FROM fills f JOIN commissions c "
                       "ON c.exec_id = f.exec_id WHERE f.ref=?", (ref,)).fetchone()
        return row["total"] if row["n"] else None

    # --- queries --------------------------------------------------------------------------------------
    def get(self, ref: str) -> dict | None:
        """The intent record (columns of ``intents``; ``fields`` decoded), or None."""
        row = self._tx("SELECT * FROM intents WHERE ref=?", (ref,)).fetchone()
        return _record(row) if row else None

    def intent(self, ref: str) -> dict:
        """The intent record of a Ref the journal holds (as ``get``; intents are never deleted, so a
        Ref read back from the journal or just recorded has one). Raises KeyError when it has none."""
        rec = self.get(ref)
        if rec is None:
            raise KeyError(ref)
        return rec

    def intents(self, states: Iterable[str] | None = None) -> list[dict]:
        """Every intent (in the given states), oldest first."""
        if states is None:
            rows = self._tx("SELECT * FROM intents ORDER BY created, ref").fetchall()
        else:
            st = list(states)
            rows = self._tx(f"SELECT * FROM intents WHERE state IN ({','.join('?' * len(st))}) ORDER BY created, ref",
                            st).fetchall()
        return [_record(r) for r in rows]

    def by_order_id(self, client_id: int, order_id: int) -> str | None:
        row = self._tx("SELECT ref FROM intents WHERE client_id=? AND order_id=? ORDER BY updated DESC LIMIT 1",
                       (client_id, order_id)).fetchone()
        return row["ref"] if row else None

    def by_perm_id(self, perm_id: int) -> str | None:
        if not perm_id:
            return None
        row = self._tx("SELECT ref FROM intents WHERE perm_id=?", (perm_id,)).fetchone()
        return row["ref"] if row else None

    def transmissions(self, ref: str | None = None) -> list[dict]:
        if ref is None:
            rows = self._tx("SELECT * FROM transmissions ORDER BY id").fetchall()
        else:
            rows = self._tx("SELECT * FROM transmissions WHERE ref=? ORDER BY id", (ref,)).fetchall()
        return [dict(r) for r in rows]

    def placed_since(self, epoch: float) -> int:
        """Orders (place transmissions) handed to IB since ``epoch`` (Unix seconds)."""
        return self._tx("SELECT COUNT(*) FROM transmissions WHERE kind='place' AND epoch>=?", (epoch,)).fetchone()[0]

    def statuses(self, ref: str) -> list[dict]:
        return [dict(r) for r in self._tx("SELECT * FROM statuses WHERE ref=? ORDER BY id", (ref,)).fetchall()]

    # --- kill switch ----------------------------------------------------------------------------------
    @property
    def kill_switch(self) -> bool:
        """Engaged (persisted: survives restarts until reset)."""
        row = self._tx("SELECT value FROM meta WHERE key='kill_switch'").fetchone()
        return bool(row) and row["value"] == "1"

    def set_kill_switch(self, engaged: bool) -> None:
        self._tx("INSERT OR REPLACE INTO meta (key, value) VALUES ('kill_switch', ?)", ("1" if engaged else "0",))


def _record(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["fields"] = json.loads(d["fields"]) if d.get("fields") else {}
    return d
