"""The SQLite journal: WAL mode, the intent state machine, duplicate Refs, unique execIds, persistence
across processes (a real second process opens the same file)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from addin.orders.journal import DuplicateRefError, Journal, state_of_status

FIELDS = {"ref": "R1", "action": "BUY", "quantity": 10.0, "order_type": "LMT", "limit_price": 199.5}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "sub" / "journal.db")
    yield j
    j.close()


def intent(j, ref="R1", **kw):
    return j.record_intent(ref, dict(FIELDS, ref=ref), account="DU1", symbol="AAPL.NASDAQ", con_id=265598, **kw)


def test_wal_mode_and_the_tables(journal):
    db = sqlite3.connect(journal.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"intents", "transmissions", "statuses", "fills", "commissions", "meta"} <= tables


def test_the_state_machine_from_intent_to_fill(journal):
    rec = intent(journal)
    assert rec["state"] == "intent_written" and rec["fields"] == FIELDS and rec["remaining"] == 10.0
    journal.mark_transmitting("R1", client_id=7, order_id=42)
    assert journal.get("R1")["state"] == "transmitting" and journal.by_order_id(7, 42) == "R1"
    assert journal.record_status("R1", "Submitted", 0, 10, None, perm_id=9001)
    assert not journal.record_status("R1", "Submitted", 0, 10, None, perm_id=9001)      # no change, no record
    assert journal.by_perm_id(9001) == "R1" and journal.get("R1")["state"] == "working"
    assert journal.record_fill("E1", "R1", order_id=42, perm_id=9001, time_text="t", side="BOT", shares=10, price=199.4)
    assert not journal.record_fill("E1", "R1", order_id=42, perm_id=9001, time_text="t", side="BOT", shares=10,
                                   price=199.4)                                           # execId is unique
    assert journal.commission("R1") is None
    journal.record_commission("E1", 1.0, "USD", None)
    journal.record_status("R1", "Filled", 10, 0, 199.4)
    rec = journal.get("R1")
    assert (rec["state"], rec["status"], rec["filled"], rec["remaining"], rec["avg_fill_price"]) == \
        ("filled", "Filled", 10, 0, 199.4)
    assert journal.commission("R1") == 1.0 and journal.ref_of_exec("E1") == "R1"
    assert [s["status"] for s in journal.statuses("R1")] == ["Submitted", "Filled"]
    # a late or replayed event never takes a done order back to working
    assert not journal.record_status("R1", "Submitted", 0, 10)
    assert not journal.record_status("R1", "Cancelled")
    assert journal.get("R1")["state"] == "filled"


def test_a_ref_is_never_written_twice_once_sent(journal):
    intent(journal)
    intent(journal)                                   # still intent_written: nothing was sent, may be rewritten
    assert journal.get("R1")["attempts"] == 2
    journal.mark_transmitting("R1", 7, 42)
    for state in ("transmitting", "working", "filled", "cancelled"):
        journal.set_state("R1", state)
        with pytest.raises(DuplicateRefError, match=f"duplicate_ref: R1 was already sent \\({state}\\)"):
            intent(journal)
    for state in ("not_received", "rejected"):
        journal.set_state("R1", state, "why")
        assert intent(journal)["state"] == "intent_written"


def test_status_words_map_to_states():
    assert [state_of_status(s) for s in ("PreSubmitted", "Submitted", "Filled", "Cancelled", "ApiCancelled",
                                         "Inactive", "Unknown")] == \
        ["working", "working", "filled", "cancelled", "cancelled", "rejected", None]


def test_orders_per_minute_count_and_kill_switch(journal):
    assert journal.placed_since(time.time() - 60) == 0
    for i in range(3):
        intent(journal, f"R{i}")
        journal.mark_transmitting(f"R{i}", 7, 100 + i)
    journal.mark_transmitting("R0", 7, 100, kind="cancel")
    assert journal.placed_since(time.time() - 60) == 3 and journal.placed_since(time.time() + 1) == 0
    assert [t["kind"] for t in journal.transmissions("R0")] == ["place", "cancel"]
    assert journal.kill_switch is False
    journal.set_kill_switch(True)
    assert journal.kill_switch is True


def test_the_journal_survives_the_process_and_is_shared_between_processes(tmp_path):
    path = tmp_path / "j.db"
    code = ("import sys; from addin.orders.journal import Journal; j = Journal(sys.argv[1]); "
            "j.record_intent('P1', {'quantity': 1}, account='DU1', symbol='AAPL', con_id=1); "
            "j.mark_transmitting('P1', 3, 9); j.set_kill_switch(True); import os; os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    j = Journal(path)
    try:
        rec = j.get("P1")
        assert rec["state"] == "transmitting" and rec["order_id"] == 9 and j.kill_switch
        with pytest.raises(DuplicateRefError):
            j.record_intent("P1", {"quantity": 1}, account="DU1", symbol="AAPL", con_id=1)
    finally:
        j.close()


def test_concurrent_writers_from_threads(journal):
    errors = []

    def work(k):
        try:
            for i in range(25):
                intent(journal, f"T{k}-{i}")
                journal.mark_transmitting(f"T{k}-{i}", k, i)
                journal.record_status(f"T{k}-{i}", "Submitted", 0, 10)
        except Exception as exc:         # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(journal.intents(("working",))) == 100
