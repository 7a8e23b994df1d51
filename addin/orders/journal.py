"""The order journal: SQLite in WAL mode, one record per order intent written *before* it is sent,
then every transmission, status, fill and commission. It is what makes "never sent twice" hold across
clicks, crashes and reconnects (with IB's own record, which the desk checks too: see
:mod:`addin.orders.desk`).

Tables: ``intents`` (one row per Ref: the order fields as JSON, account, symbol, conId, the order ids,
its state and latest status, and the ``owner`` that claimed it), ``transmissions`` (every placeOrder /
modify / cancel handed to IB, with time; a place's and a modify's ``detail`` hold the fields sent),
``statuses`` (every status change), ``fills`` (one per execId, unique), ``commissions`` (one per
execId), ``row_refs`` (the Ref assigned to a blank-Ref row, by the row's identity:
:func:`addin.orders.refs.row_identity`), ``meta`` (the kill switch, the processes that have the file
open).

Refs compare trimmed and case-insensitively (:func:`addin.orders.refs.ref_key`): every lookup is
``ref = ? COLLATE NOCASE`` on an index of that collation (Refs are ASCII, which NOCASE folds).

The state machine of an intent (``state`` column)::

    intent_written --claim (owner only)--> transmitting --IB answers--> working | filled | cancelled | rejected
          |                                   |
          |                                   +--reconcile finds no trace at IB--> not_received
          +--(crash before sending: nothing was sent)

``intent_written`` and ``not_received`` mean IB never got the order: placing the row again sends it
(with a new order id). ``rejected`` (IB refused it) may be placed again after the row is fixed.
``transmitting``, ``working``, ``filled`` and ``cancelled`` block the Ref for good: it is never sent
again.

Claims across processes: :meth:`Journal.record_intents` writes a Ref's legs with the caller's owner
token (the last writer of an ``intent_written`` Ref owns it: nothing was sent under it), and
:meth:`Journal.claim` moves them to ``transmitting`` in one ``BEGIN IMMEDIATE`` transaction only if
they are all still ``intent_written`` and owned by the caller. Of several processes racing for one Ref,
exactly one claim succeeds; the others get :class:`ClaimLostError` and send nothing.

Faults: the file is checked when opened (``PRAGMA quick_check``, the expected tables and columns, and
place transmissions whose intent was deleted); a fault, or a write that fails later, raises
:class:`JournalError` naming the file and what to do. A lock held by another process longer than
``busy_timeout`` (5 s) raises :class:`JournalBusyError` naming the ibxl processes that have it open.
Old journals are migrated in place (an ``owner`` column, ``row_refs``, NOCASE indexes) in one transaction.

Durability: every change is its own transaction, committed before the caller goes on. What ibxl decides
(intents, claims, transmissions, states it sets, the kill switch) is ``synchronous=FULL``: the intent is
on disk before placeOrder leaves the process. What IB reports (statuses, ids, fills, commissions) is
``synchronous=NORMAL``: safe against a process crash, and after a power cut the last few may be
missing, which leaves a Ref at a state that blocks at least as much as the truth (``transmitting``
blocks) until the next reconcile reads them back from IB.

Thread-safe (one connection behind a lock); several processes may share the file (WAL, busy timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .refs import Owner

__all__ = ["Journal", "JournalError", "JournalBusyError", "DuplicateRefError", "ClaimLostError", "STATES",
           "RESENDABLE_STATES", "BLOCKING_STATES", "TERMINAL_STATES", "state_of_status"]

STATES = ("intent_written", "transmitting", "working", "filled", "cancelled", "rejected", "not_received")
RESENDABLE_STATES = frozenset({"intent_written", "not_received", "rejected"})
BLOCKING_STATES = frozenset({"transmitting", "working", "filled", "cancelled"})
TERMINAL_STATES = frozenset({"filled", "cancelled"})
BUSY_TIMEOUT = 5.0

_TABLES = {
    "intents": "ref TEXT PRIMARY KEY, parent_ref TEXT, created TEXT NOT NULL, updated TEXT NOT NULL, "
               "account TEXT, symbol TEXT, con_id INTEGER, fields TEXT NOT NULL, client_id INTEGER, "
               "order_id INTEGER, perm_id INTEGER, state TEXT NOT NULL, status TEXT, filled REAL, remaining REAL, "
               "avg_fill_price REAL, message TEXT, attempts INTEGER NOT NULL DEFAULT 1, owner TEXT",
    "transmissions": "id INTEGER PRIMARY KEY, ref TEXT NOT NULL, kind TEXT NOT NULL, client_id INTEGER, "
                     "order_id INTEGER, time TEXT NOT NULL, epoch REAL NOT NULL, detail TEXT",
    "statuses": "id INTEGER PRIMARY KEY, ref TEXT NOT NULL, time TEXT NOT NULL, status TEXT, filled REAL, "
                "remaining REAL, avg_fill_price REAL, perm_id INTEGER, message TEXT",
    "fills": "exec_id TEXT PRIMARY KEY, ref TEXT NOT NULL, order_id INTEGER, perm_id INTEGER, time TEXT, side TEXT, "
             "shares REAL, price REAL",
    "commissions": "exec_id TEXT PRIMARY KEY, amount REAL, currency TEXT, realized_pnl REAL",
    "row_refs": "identity TEXT PRIMARY KEY, ref TEXT NOT NULL, created TEXT NOT NULL",
    "meta": "key TEXT PRIMARY KEY, value TEXT",
}
# Columns added after the first release: an older journal gets them by ALTER TABLE.
_ADDED_COLUMNS = {("intents", "owner"): "TEXT"}
_INDEXES = {
    "intents_order": "intents(client_id, order_id)",
    "intents_perm": "intents(perm_id)",
    "intents_ref_key": "intents(ref COLLATE NOCASE)",
    "transmissions_epoch": "transmissions(epoch)",
    "transmissions_ref_key": "transmissions(ref COLLATE NOCASE)",
    "statuses_ref_key": "statuses(ref COLLATE NOCASE)",
    "fills_ref_key": "fills(ref COLLATE NOCASE)",
}
_DAMAGED_ADVICE = ("move it aside (rename it) and place again: ibxl starts a new journal and refuses every Ref "
                   "IB already knows; no order is sent until then")

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


class _Rows(list):
    """A query's rows, all fetched: read like the cursor they came from."""

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list:
        return list(self)


class JournalError(RuntimeError):
    """The journal file cannot be trusted or written (damaged, not an ibxl journal, a write failed).
    The message names the file and what to do; no order may be sent while it stands."""

    def __init__(self, path: Path | str, reason: str, advice: str = _DAMAGED_ADVICE):
        self.path, self.reason, self.advice = Path(path), reason, advice
        super().__init__(f"order journal {path}: {reason}; {advice}")


class JournalBusyError(JournalError):
    """Another process held the journal's write lock longer than the busy timeout."""


class DuplicateRefError(ValueError):
    """The Ref is already working or done (``state`` says which): it is never sent twice."""

    def __init__(self, ref: str, state: str, message: str | None = None):
        self.ref, self.state = ref, state
        super().__init__(message or f"duplicate_ref: {ref} was already sent ({state}); it is never sent twice")


class ClaimLostError(DuplicateRefError):
    """Another ibxl process owns the Ref's claim (``holder``: its Owner, None when unknown)."""

    def __init__(self, ref: str, state: str, holder: Owner | None):
        self.holder = holder
        who = f" ({holder.describe()})" if holder is not None else ""
        super().__init__(ref, state, f"duplicate_ref: {ref} is being sent by another ibxl{who}; not sent by this one")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _key(ref: Any) -> str:
    return str(ref).strip()


_BY_REF = "ref = ? COLLATE NOCASE"
# Of an old journal's rows that differ only in case, the one that blocks the most speaks for the Ref.
_BEST = ("ORDER BY CASE WHEN state IN ('transmitting','working','filled','cancelled') THEN 0 ELSE 1 END, "
         "updated DESC LIMIT 1")


class Journal:
    """The journal file at ``path`` (created with its folders when missing; ``":memory:"`` for a
    throwaway one). Raises JournalError when the file is damaged or not a journal, JournalBusyError
    when another process holds its lock longer than ``busy_timeout`` seconds."""

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT):
        self.memory = str(path) == ":memory:"
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._holder_key = f"holder:{socket.gethostname()}:{os.getpid()}:{id(self)}"
        if not self.memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._fault(exc) from None
        try:
            self._open()
        except JournalError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            error = self._fault(exc)
            self._db.close()
            raise error from None

    def _open(self) -> None:
        self._db.row_factory = sqlite3.Row
        if not self.memory:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":                      # pragma: no cover - e.g. a network drive
                raise JournalError(self.path, f"SQLite refused WAL mode ({mode})",
                                   "keep the journal on a local disk ($IBXL_JOURNAL)")
        self._db.execute("PRAGMA synchronous=FULL")
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise JournalError(self.path, "damaged (SQLite's integrity check: " + "; ".join(problems) + ")")
        self._migrate()
        self._verify()
        self._db.execute("PRAGMA busy_timeout=200")      # best effort, briefly: names this process to others
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (self._holder_key, json.dumps([socket.gethostname(), os.getpid(), _now()])))
        self._db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _migrate(self) -> None:
        """Create what is missing (a new file, or one from an older ibxl) in one transaction."""
        def columns(table: str) -> set[str]:
            return {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
        names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table','index')")}
        missing_cols = [(t, c) for (t, c) in _ADDED_COLUMNS if t in names and c not in columns(t)]
        if set(_TABLES) <= names and set(_INDEXES) <= names and not missing_cols:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, cols in _TABLES.items():
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
            for table, col in missing_cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {_ADDED_COLUMNS[(table, col)]}")
            for name, on in _INDEXES.items():
                self._db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _verify(self) -> None:
        """Every table with every column this version reads, and no sent order whose intent is gone."""
        for table, spec in _TABLES.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            want = {part.split()[0] for part in spec.split(", ")}
            if not want <= have:
                raise JournalError(self.path, f"not an ibxl order journal (table {table} lacks "
                                              f"{', '.join(sorted(want - have))})")
        orphans = self._db.execute(
            "SELECT COUNT(*), MIN(t.ref) FROM transmissions t WHERE t.kind='place' AND NOT EXISTS "
            "(SELECT 1 FROM intents i WHERE i.ref = t.ref COLLATE NOCASE)").fetchone()
        if orphans[0]:
            raise JournalError(self.path, f"{orphans[0]} orders it recorded as sent (e.g. {orphans[1]}) have no "
                                          f"intent: intents were deleted or the file was edited")

    def _fault(self, exc: BaseException) -> JournalError:
        """The JournalError for a SQLite error: busy (with the holders), or damaged."""
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return JournalBusyError(self.path, f"locked by another process for more than {self.busy_timeout:g} s"
                                               f"{self._holders()} (SQLite: {text})",
                                    "close the program holding it (a database browser?) or wait for the other "
                                    "ibxl to finish, then place again; nothing was sent")
        return JournalError(self.path, f"damaged or unwritable (SQLite: {text})")

    def _holders(self) -> str:
        """`` (open in ibxl pid P on HOST, ...)`` from meta, live processes other than this one."""
        try:
            rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'holder:%'").fetchall()
        except sqlite3.Error:
            return ""
        found = []
        for row in rows:
            if row[0] == self._holder_key:
                continue
            try:
                host, pid, _ = json.loads(row[1])
            except (ValueError, TypeError):
                continue
            owner = Owner(str(host), int(pid), 0, "")
            if not owner.gone() and (host, pid) != (socket.gethostname(), os.getpid()):
                found.append(f"pid {pid}" + ("" if host == socket.gethostname() else f" on {host}"))
        return f" (also open in ibxl {', '.join(sorted(set(found)))})" if found else ""

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA busy_timeout=200")
                self._db.execute("DELETE FROM meta WHERE key=?", (self._holder_key,))
            self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------------
    def _tx(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """Run one statement under the lock: a query returns its rows (``_Rows``), a write its cursor."""
        with self._lock:
            try:
                if sql.lstrip()[:6].upper() in ("SELECT", "PRAGMA"):
                    # fetched under the lock: a statement left stepping holds a read snapshot, and another
                    # thread's write on this connection would then get an instant SQLITE_BUSY
                    return _Rows(self._db.execute(sql, tuple(args)).fetchall())
                if self._db.in_transaction:
                    return self._db.execute(sql, tuple(args))
            except sqlite3.Error as exc:
                raise self._fault(exc) from None
            # A write outside a transaction gets its own BEGIN IMMEDIATE: in autocommit SQLite takes a
            # read snapshot first, and when another process commits before the upgrade to a write it
            # answers SQLITE_BUSY at once, without waiting the busy timeout.
            with self._write() as db:
                return db.execute(sql, tuple(args))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the lock; SQLite errors become JournalError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._fault(exc) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._fault(exc) from None
                raise

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Under the lock, commits without fsync: for what IB reports (module docstring)."""
        with self._lock:
            self._tx("PRAGMA synchronous=NORMAL")
            try:
                yield
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA synchronous=FULL")

    def _row(self, ref: str) -> sqlite3.Row | None:
        return self._tx(f"SELECT rowid AS rid, * FROM intents WHERE {_BY_REF} {_BEST}", (_key(ref),)).fetchone()

    # --- intents ------------------------------------------------------------------------------------
    def record_intent(self, ref: str, fields: dict[str, Any], *, account: str, symbol: str, con_id: int,
                      parent_ref: str | None = None, owner: Owner | None = None) -> dict:
        """Write one intent (state intent_written) before anything is sent; returns the record. See
        :meth:`record_intents`."""
        self.record_intents([(ref, fields, parent_ref)], account=account, symbol=symbol, con_id=con_id, owner=owner)
        return self.intent(ref)

    def record_intents(self, legs: list[tuple[str, dict[str, Any], str | None]], *, account: str, symbol: str,
                       con_id: int, owner: Owner | None = None) -> None:
        """Write the intents of one order's legs ``[(ref, fields, parent_ref)]`` (state intent_written,
        owned by ``owner``) in one transaction, before anything is sent. Raises DuplicateRefError when a
        leg's Ref is transmitting, working, filled or cancelled (ClaimLostError when another live ibxl
        holds it transmitting); then nothing is written. A Ref in a resendable state (intent_written,
        not_received, rejected) is overwritten (attempts + 1, the new owner: nothing was sent under it);
        its stored spelling is kept."""
        now = _now()
        with self._write() as db:
            found = [(ref, fields, parent, self._row(ref)) for ref, fields, parent in legs]
            for _ref, _, _, row in found:
                if row is not None and row["state"] in BLOCKING_STATES:
                    holder = Owner.parse(row["owner"])
                    if row["state"] == "transmitting" and holder is not None and \
                            (owner is None or holder.token != owner.token) and not holder.gone():
                        raise ClaimLostError(row["ref"], row["state"], holder)
                    raise DuplicateRefError(row["ref"], row["state"])
            token = owner.token if owner is not None else None
            for ref, fields, parent, row in found:
                values = (parent, now, now, account, symbol, con_id, json.dumps(fields, default=str),
                          float(fields.get("quantity") or 0), token)
                if row is None:
                    db.execute("INSERT INTO intents (parent_ref, created, updated, account, symbol, con_id, fields, "
                               "remaining, owner, ref, state, filled, attempts) "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,'intent_written',0,1)", (*values, _key(ref)))
                else:
                    db.execute("UPDATE intents SET parent_ref=?, created=?, updated=?, account=?, symbol=?, con_id=?, "
                               "fields=?, remaining=?, owner=?, client_id=NULL, order_id=NULL, perm_id=NULL, "
                               "state='intent_written', status=NULL, filled=0, avg_fill_price=NULL, message=NULL, "
                               "attempts=attempts+1 WHERE rowid=?", (*values, row["rid"]))

    def claim(self, legs: list[tuple[str, int]], client_id: int, owner: Owner) -> None:
        """Move an order's legs ``[(ref, order_id)]`` from intent_written to transmitting, recording the
        place transmissions, in one transaction, only if every leg is still intent_written and owned
        by ``owner`` (the compare-and-set that lets exactly one process send a Ref). Raises
        ClaimLostError (another owner took it) or DuplicateRefError (it is already sent); then nothing
        changed and nothing may be sent."""
        now, epoch = _now(), time.time()
        with self._write() as db:
            rows = [(ref, oid, self._row(ref)) for ref, oid in legs]
            for ref, _, row in rows:
                if row is None:
                    raise ClaimLostError(ref, "missing", None)
                if row["state"] == "intent_written" and row["owner"] == owner.token:
                    continue
                holder = Owner.parse(row["owner"])
                if row["state"] in ("intent_written", "transmitting") and holder is not None \
                        and holder.token != owner.token:
                    raise ClaimLostError(row["ref"], row["state"], holder)
                raise DuplicateRefError(row["ref"], row["state"])
            for _ref, oid, row in rows:
                assert row is not None                   # checked above
                # the fields as sent: a later modify rewrites the intent's, the audit shows both
                db.execute("INSERT INTO transmissions (ref, kind, client_id, order_id, time, epoch, detail) "
                           "VALUES (?,?,?,?,?,?,?)", (row["ref"], "place", client_id, oid, now, epoch, row["fields"]))
                db.execute("UPDATE intents SET state='transmitting', client_id=?, order_id=?, status='Transmitted', "
                           "updated=? WHERE rowid=?", (client_id, oid, now, row["rid"]))

    def mark_transmitting(self, ref: str, client_id: int, order_id: int, kind: str = "place",
                          detail: dict | None = None) -> None:
        """Record that ``kind`` (place, modify, cancel, global_cancel) is about to leave for IB. For
        place the intent goes to transmitting with its order id (unconditionally: the desk uses
        :meth:`claim`, which checks the owner)."""
        now = _now()
        with self._write() as db:
            db.execute("INSERT INTO transmissions (ref, kind, client_id, order_id, time, epoch, detail) "
                       "VALUES (?,?,?,?,?,?,?)", (_key(ref), kind, client_id, order_id, now, time.time(),
                                                  json.dumps(detail or {}, default=str)))
            if kind == "place":
                db.execute(f"UPDATE intents SET state='transmitting', client_id=?, order_id=?, "
                           f"status='Transmitted', updated=? WHERE {_BY_REF}", (client_id, order_id, now, _key(ref)))

    def adopt(self, ref: str, *, state: str, status: str | None, perm_id: int | None, client_id: int | None,
              order_id: int | None, message: str) -> None:
        """Write what IB knows of a Ref into the journal (IB is the authority on what was sent): a Ref
        the journal lacks gets a record in ``state``; one it holds in a resendable or transmitting
        state takes IB's state and ids. A Ref already working or done here is left as it is."""
        assert state in STATES, state
        now = _now()
        with self._write() as db:
            row = self._row(ref)
            if row is None:
                db.execute("INSERT INTO intents (ref, created, updated, fields, client_id, order_id, perm_id, state, "
                           "status, filled, message, attempts) VALUES (?,?,?,?,?,?,?,?,?,NULL,?,0)",
                           (_key(ref), now, now, json.dumps({"ref": _key(ref), "source": "IB"}), client_id, order_id,
                            perm_id or None, state, status, message))
            elif row["state"] in RESENDABLE_STATES or row["state"] == "transmitting":
                db.execute("UPDATE intents SET state=?, status=COALESCE(?, status), perm_id=COALESCE(?, perm_id), "
                           "client_id=COALESCE(?, client_id), order_id=COALESCE(?, order_id), message=?, updated=? "
                           "WHERE rowid=?", (state, status, perm_id or None, client_id, order_id, message, now,
                                             row["rid"]))

    def set_state(self, ref: str, state: str, message: str | None = None, status: str | None = None) -> None:
        """Force a state (reconcile: not_received; IB's rejection: rejected) with a message."""
        assert state in STATES, state
        self._tx(f"UPDATE intents SET state=?, message=COALESCE(?, message), status=COALESCE(?, status), updated=? "
                 f"WHERE {_BY_REF}", (state, message, status, _now(), _key(ref)))

    def update_fields(self, ref: str, fields: dict[str, Any]) -> None:
        """A modify: the order fields now working at IB."""
        self._tx(f"UPDATE intents SET fields=?, updated=? WHERE {_BY_REF}",
                 (json.dumps(fields, default=str), _now(), _key(ref)))

    def note(self, ref: str, message: str) -> None:
        """Set the Ref's Message (what ibxl last did with it: a modification IB confirmed, ...)."""
        self._tx(f"UPDATE intents SET message=?, updated=? WHERE {_BY_REF}", (message, _now(), _key(ref)))

    def hold(self, ref: str, fields: dict[str, Any]) -> bool:
        """What IB's openOrder shows the Ref holds (``amend.held_fields``); written only when it differs
        from the journal's fields. True when it changed them."""
        with self._reported():
            row = self._row(ref)
            if row is None:
                return False
            text = json.dumps(fields, default=str)
            if json.loads(row["fields"] or "{}") == json.loads(text):
                return False
            self._tx("UPDATE intents SET fields=? WHERE rowid=?", (text, row["rid"]))
            return True

    def set_ids(self, ref: str, *, order_id: int | None = None, perm_id: int | None = None,
                client_id: int | None = None) -> None:
        with self._reported():
            self._tx(f"UPDATE intents SET order_id=COALESCE(?, order_id), perm_id=COALESCE(NULLIF(?, 0), perm_id), "
                     f"client_id=COALESCE(?, client_id) WHERE {_BY_REF}", (order_id, perm_id, client_id, _key(ref)))

    def record_status(self, ref: str, status: str, filled: float | None = None, remaining: float | None = None,
                      avg_fill_price: float | None = None, perm_id: int | None = None,
                      message: str | None = None) -> bool:
        """An IB status for the Ref. Returns True when something changed. A terminal state (filled,
        cancelled) never goes back to working (late or replayed events)."""
        with self._reported():
            row = self._row(ref)
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
            with self._write() as db:
                db.execute("INSERT INTO statuses (ref, time, status, filled, remaining, avg_fill_price, "
                           "perm_id, message) VALUES (?,?,?,?,?,?,?,?)", (row["ref"], now, *new, perm_id, message))
                db.execute("UPDATE intents SET status=?, filled=?, remaining=?, avg_fill_price=?, state=?, "
                           "perm_id=COALESCE(NULLIF(?, 0), perm_id), message=COALESCE(?, message), updated=? "
                           "WHERE rowid=?", (*new, state, perm_id, message, now, row["rid"]))
            return True

    # --- blank-Ref rows ---------------------------------------------------------------------------------
    def row_ref(self, identity: str, ref: str) -> str:
        """The Ref recorded for a blank-Ref row's ``identity`` (:func:`addin.orders.refs.row_identity`),
        recording ``ref`` for it when there is none, or when IB rejected the recorded one (the row is
        sent again under a new Ref, as a row with a typed Ref would be). Atomic: processes asking at
        once get the same Ref."""
        with self._write() as db:
            row = db.execute("SELECT ref FROM row_refs WHERE identity=?", (identity,)).fetchone()
            if row is not None:
                rec = self._row(row["ref"])
                if rec is None or rec["state"] != "rejected":
                    return str(row["ref"])
            db.execute("INSERT OR REPLACE INTO row_refs (identity, ref, created) VALUES (?,?,?)",
                       (identity, _key(ref), _now()))
            return _key(ref)

    # --- fills ----------------------------------------------------------------------------------------
    def record_fill(self, exec_id: str, ref: str, *, order_id: int, perm_id: int, time_text: str, side: str,
                    shares: float, price: float) -> bool:
        """One execution (execId unique: a replayed one is ignored). True when it was new."""
        with self._reported():
            cur = self._tx("INSERT OR IGNORE INTO fills (exec_id, ref, order_id, perm_id, time, side, shares, price) "
                           "VALUES (?,?,?,?,?,?,?,?)",
                           (exec_id, _key(ref), order_id, perm_id, time_text, side, shares, price))
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
                        "LEFT JOIN commissions c ON c.exec_id = f.exec_id WHERE f.ref = ? COLLATE NOCASE "
                        "ORDER BY f.time, f.exec_id", (_key(ref),)).fetchall()
        return [dict(r) for r in rows]

    def commission(self, ref: str) -> float | None:
        """Total commission of the Ref's executions (None when no report arrived)."""
        row = self._tx("SELECT SUM(c.amount) AS total, COUNT(c.exec_id) AS n FROM fills f JOIN commissions c "
                       "ON c.exec_id = f.exec_id WHERE f.ref = ? COLLATE NOCASE", (_key(ref),)).fetchone()
        return row["total"] if row["n"] else None

    # --- queries --------------------------------------------------------------------------------------
    def get(self, ref: str) -> dict | None:
        """The intent record (columns of ``intents``; ``fields`` decoded), or None. Case-insensitive."""
        row = self._row(ref)
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
            rows = self._tx(f"SELECT * FROM transmissions WHERE {_BY_REF} ORDER BY id", (_key(ref),)).fetchall()
        return [dict(r) for r in rows]

    def placed_since(self, epoch: float) -> int:
        """Orders (place transmissions) handed to IB since ``epoch`` (Unix seconds)."""
        return self._tx("SELECT COUNT(*) FROM transmissions WHERE kind='place' AND epoch>=?", (epoch,)).fetchone()[0]

    def statuses(self, ref: str | None = None) -> list[dict]:
        """The status rows of the Ref (of every Ref when None), in the order they were recorded."""
        if ref is None:
            return [dict(r) for r in self._tx("SELECT * FROM statuses ORDER BY id").fetchall()]
        return [dict(r) for r in self._tx(f"SELECT * FROM statuses WHERE {_BY_REF} ORDER BY id",
                                          (_key(ref),)).fetchall()]

    def fills_recorded(self, ref: str | None = None) -> list[dict]:
        """The executions of the Ref (of every Ref when None) in the order they were recorded, each with
        its commission report (``commission``, ``commission_currency``, ``realized_pnl``: None until IB's
        report arrives). ``time`` is IB's execution time text, as received."""
        sql = ("SELECT f.*, c.amount AS commission, c.currency AS commission_currency, c.realized_pnl "
               "FROM fills f LEFT JOIN commissions c ON c.exec_id = f.exec_id")
        if ref is None:
            return [dict(r) for r in self._tx(sql + " ORDER BY f.rowid").fetchall()]
        return [dict(r) for r in self._tx(sql + " WHERE f.ref = ? COLLATE NOCASE ORDER BY f.rowid",
                                          (_key(ref),)).fetchall()]

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
    d.pop("rid", None)
    d["fields"] = json.loads(d["fields"]) if d.get("fields") else {}
    return d
