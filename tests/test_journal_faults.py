"""The journal lost, emptied, replaced, corrupted or locked between two runs (issue 12): IB is the
authority, so nothing is sent again, and a journal that cannot be trusted refuses every row with a
message naming the file. Real desks over a real socket to the paper gateway; what reached the gateway
is counted on its side. Also: the claim is a compare-and-set between two journal connections (two
processes' view), Refs compare in any case, and an old journal is migrated in place."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest

from addin.orders.journal import ClaimLostError, Journal, JournalError
from addin.orders.refs import Owner
from addin.paper import PaperGateway

from .test_orders import Rig


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1"]) as gateway:
        yield gateway


@pytest.fixture
def rig(gw, tmp_path):
    r = Rig(gw, tmp_path)
    yield r
    r.close()


def rows(*refs: str) -> pd.DataFrame:
    return pd.DataFrame([{"Ref": ref, "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                          "OrderType": "MKT"} for ref in refs])


def gone(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def empty_intents(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("DELETE FROM intents")
    db.commit()
    db.close()


def empty_all(path: Path) -> None:
    db = sqlite3.connect(path)
    for table in ("intents", "transmissions", "statuses", "fills", "commissions", "row_refs"):
        db.execute(f"DELETE FROM {table}")
    db.commit()
    db.close()


DAMAGE = {"deleted": gone, "emptied_intents": empty_intents, "emptied_all": empty_all, "replaced": None}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_lost_emptied_or_replaced_journal_never_causes_a_resend(rig, tmp_path, damage):
    journal = tmp_path / "journal.db"
    refs = [f"LJ-{damage}-1", f"LJ-{damage}-2"]
    desk = rig.desk(journal="journal.db")
    first = desk.place(rows(*refs))
    assert set(first.Status) <= {"Submitted", "Filled"}, first.Message.tolist()     # IB took both
    desk.close()
    rig.desks.remove(desk)
    if damage == "replaced":                 # another journal, with its own history, in its place
        other = Rig(rig.gw, tmp_path / "other")
        try:
            other.desk(journal="other.db").place(rows(f"LJ-{damage}-OTHER"))
        finally:
            other.close()
        gone(journal)
        (tmp_path / "other" / "other.db").rename(journal)
    else:
        DAMAGE[damage](journal)
    sent = len(rig.received())
    again = rig.desk(journal="journal.db").place(rows(refs[0], refs[1].lower()))   # any case is the same Ref
    assert len(rig.received()) == sent, [r.order.orderRef for r in rig.received()]
    for message in again.Message:
        if damage == "emptied_intents":      # a journal missing the intents of orders it sent is damaged
            assert str(journal) in message and "move it aside" in message, message
        else:
            assert message.startswith("duplicate_ref:") and "is known at IB (permId" in message, message
    if damage != "emptied_intents":          # what IB knows is written back: the rows show the truth
        assert set(again.Status) <= {"Submitted", "Filled"} and all(p > 0 for p in again.PermId), again


def many_intents(path: Path, n: int = 3000) -> None:
    with Journal(path) as j:
        for i in range(n):
            ref = f"Z-{i:05d}"
            j.record_intent(ref, {"ref": ref, "action": "BUY", "quantity": 1.0, "order_type": "MKT"},
                            account="DU1", symbol="AAPL", con_id=265598)
            j.mark_transmitting(ref, 7, 10_000 + i)
            j.record_status(ref, "Filled", 1, 0, 200.0, perm_id=50_000 + i)


def test_a_journal_zeroed_4kb_in_the_middle_is_detected_and_every_row_refused(rig, tmp_path):
    journal = tmp_path / "journal.db"
    many_intents(journal)
    size = journal.stat().st_size
    assert size > 64 * 1024 and not Path(str(journal) + "-wal").exists()
    with open(journal, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\0" * 4096)
    with pytest.raises(JournalError, match="damaged") as caught:
        Journal(journal)
    assert str(journal) in str(caught.value)
    out = rig.desk(journal="journal.db").place(pd.concat([rows("ZERO-1", "ZERO-2"),
                                                          pd.DataFrame([{"Ref": None, "Symbol": "AAPL",
                                                                         "Action": "BUY", "Quantity": 1,
                                                                         "OrderType": "MKT"}])],
                                                         ignore_index=True))
    assert list(out.Status) == ["Error"] * 3
    assert all(str(journal) in m and "move it aside" in m for m in out.Message), out.Message.tolist()
    assert rig.received() == []


def test_a_file_that_is_not_a_journal_refuses_every_row(rig, tmp_path):
    (tmp_path / "journal.db").write_bytes(b"these are my notes, not a database" * 200)
    out = rig.desk(journal="journal.db").place(rows("NOTDB-1"))
    assert out.Status[0] == "Error" and str(tmp_path / "journal.db") in out.Message[0], out.Message[0]
    assert rig.received() == []


def test_a_locked_journal_is_reported_as_locked_then_used_once_free(rig, tmp_path):
    desk = rig.desk(journal="journal.db")
    holder = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")                 # another program holds the write lock
    try:
        out = desk.place(rows("LOCK-1"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.Status[0] == "Error" and "locked by another process for more than 5 s" in out.Message[0], out.Message[0]
    assert str(tmp_path / "journal.db") in out.Message[0] and rig.received() == []
    out = desk.place(rows("LOCK-1"))                  # the lock is gone: the journal is opened again
    assert out.Status[0] in ("Submitted", "Filled"), out.Message[0]
    assert [r.order.orderRef for r in rig.received()] == ["LOCK-1"]


# --- the journal alone --------------------------------------------------------------------------------------
def test_the_claim_is_a_compare_and_set_between_two_processes_views(tmp_path):
    """Two connections (as two processes have): both write the intent, only the last writer may send."""
    a_owner, b_owner = Owner("here", 101, 1, "a"), Owner("here", 202, 2, "b")
    fields = {"ref": "CAS-1", "action": "BUY", "quantity": 1.0}
    with Journal(tmp_path / "j.db") as a, Journal(tmp_path / "j.db") as b:
        a.record_intents([("CAS-1", fields, None)], account="DU1", symbol="AAPL", con_id=1, owner=a_owner)
        b.record_intents([("cas-1", fields, None)], account="DU1", symbol="AAPL", con_id=1, owner=b_owner)
        with pytest.raises(ClaimLostError, match=r"being sent by another ibxl \(pid 202 on here, client id 2\)"):
            a.claim([("CAS-1", 11)], 1, a_owner)
        b.claim([("cas-1", 12)], 2, b_owner)
        with pytest.raises(ClaimLostError):         # transmitting, owned by b
            a.record_intents([("CAS-1", fields, None)], account="DU1", symbol="AAPL", con_id=1, owner=a_owner)
        assert a.get(" cas-1 ")["state"] == "transmitting" and a.get("CAS-1")["order_id"] == 12
        assert [t["client_id"] for t in a.transmissions("Cas-1")] == [2]


OLD_SCHEMA = """
CREATE TABLE intents (ref TEXT PRIMARY KEY, parent_ref TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
    account TEXT, symbol TEXT, con_id INTEGER, fields TEXT NOT NULL, client_id INTEGER, order_id INTEGER,
    perm_id INTEGER, state TEXT NOT NULL, status TEXT, filled REAL, remaining REAL, avg_fill_price REAL,
    message TEXT, attempts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE transmissions (id INTEGER PRIMARY KEY, ref TEXT NOT NULL, kind TEXT NOT NULL, client_id INTEGER,
    order_id INTEGER, time TEXT NOT NULL, epoch REAL NOT NULL, detail TEXT);
CREATE TABLE statuses (id INTEGER PRIMARY KEY, ref TEXT NOT NULL, time TEXT NOT NULL, status TEXT, filled REAL,
    remaining REAL, avg_fill_price REAL, perm_id INTEGER, message TEXT);
CREATE TABLE fills (exec_id TEXT PRIMARY KEY, ref TEXT NOT NULL, order_id INTEGER, perm_id INTEGER, time TEXT,
    side TEXT, shares REAL, price REAL);
CREATE TABLE commissions (exec_id TEXT PRIMARY KEY, amount REAL, currency TEXT, realized_pnl REAL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
"""


def test_an_old_journal_is_migrated_in_place_and_its_refs_still_block_in_any_case(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO intents (ref, created, updated, fields, state, status) VALUES "
               "('CASEREF', 't', 't', ?, 'filled', 'Filled')", (json.dumps({"ref": "CASEREF"}),))
    db.execute("INSERT INTO transmissions (ref, kind, time, epoch) VALUES ('CASEREF', 'place', 't', 0)")
    db.commit()
    db.close()
    with Journal(path) as j:
        assert j.get("caseref")["state"] == "filled"
        with pytest.raises(ValueError, match="duplicate_ref: CASEREF was already sent"):
            j.record_intent(" caseref ", {"quantity": 1}, account="DU1", symbol="AAPL", con_id=1,
                            owner=Owner.new(1))
    cols = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(intents)")}
    assert "owner" in cols and os.path.getsize(path) > 0


def test_reads_and_writes_from_several_threads_and_processes_never_see_a_busy_journal(tmp_path):
    """IB's answers are recorded on the session's reader thread while the desk reads on another, and
    another ibxl commits to the same file: no write may fail as "locked" (SQLite answers a write on a
    connection whose query is still stepping with an instant SQLITE_BUSY; ibxl once lost fills so)."""
    fields = {"ref": "X", "action": "BUY", "quantity": 1.0}
    ours, other = Journal(tmp_path / "j.db"), Journal(tmp_path / "j.db")
    for n, journal in enumerate((ours, other)):
        journal.record_intents([(f"BUSY-{n}", {**fields, "ref": f"BUSY-{n}"}, None)], account="DU1", symbol="AAPL",
                               con_id=1, owner=Owner("here", 300 + n, n, "x"))
    errors: list[BaseException] = []

    def guarded(fn) -> None:
        try:
            fn()
        except JournalError as exc:
            errors.append(exc)

    def our_reader_thread() -> None:          # the session's reader: IB's fills for our order
        for k in range(300):
            ours.record_fill(f"0.{k}", "BUSY-0", order_id=k, perm_id=k, time_text="", side="BOT", shares=1.0,
                             price=1.0)

    def other_process() -> None:              # another ibxl's connection committing to the same file
        for k in range(300):
            other.set_ids("BUSY-1", order_id=k, perm_id=k, client_id=1)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in (our_reader_thread, other_process)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):      # the desk reading meanwhile, on our connection
            ours.intents()
            ours.get("BUSY-0")
            ours.fills("BUSY-0")
        assert errors == []
        assert len(ours.fills("BUSY-0")) == 300
    finally:
        for t in threads:
            t.join(60)
        ours.close()
        other.close()
