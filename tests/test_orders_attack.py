"""Order safety under attack (issue 12), from the outside: real ``ibxl run WORKBOOK --orders`` processes
against a paper gateway in this process, one journal, counted from the gateway's side.

- kill -9 at random points (before any order, or right after the k-th order reached the gateway, plus
  a random few milliseconds), then a rerun on the same workbook and journal: every row, with a Ref or
  without, reaches the gateway exactly once (0 duplicates, 0 lost rows).
- 2 and 4 ``ibxl run --orders`` started together on one workbook, or on copies of it (same Refs, same
  blank rows), one journal, different client ids: every typed Ref reaches the gateway exactly once,
  every blank-Ref row once per workbook, under the Ref saved in that workbook.

Tries: ``IBXL_ATTACK_TRIES`` (default 8 kills; the race runs that many spread over its four cases, at
least 2 each). The random draws are seeded per try, so a failure names a try that can be replayed.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import openpyxl
import pytest
from openpyxl.worksheet.table import Table

from addin.paper import PaperGateway

REPO = Path(__file__).resolve().parents[1]
TRIES = int(os.environ.get("IBXL_ATTACK_TRIES", "8"))
_client_ids = itertools.count(601)
_offsets = itertools.count()       # empty Table rows before a try's rows: its blank-Ref rows are its own
COLUMNS = ["Ref", "Symbol", "Action", "Quantity", "OrderType", "TIF", "Status", "OrderId", "Filled", "Message"]
ROOMY = """[risk]
max_quantity = 10000
max_notional = 10000000
max_position = 1000000
max_open_orders = 10000
max_orders_per_minute = 10000
daily_loss_limit = 100000000
"""


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1"]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A config file with roomy limits and one journal for the whole module."""
    d = tmp_path_factory.mktemp("ibxl")
    (d / "config.toml").write_text(ROOMY)
    return d


def orders_workbook(path: Path, rows: list[dict], offset: int = 0) -> Path:
    """An Orders Table with ``offset`` empty rows, then these rows (missing columns blank). A
    blank-Ref row is known by its worksheet row and content: the offset keeps each try's rows apart
    (the same content at the same row would rightly be refused as "possibly already sent")."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    ws.append(COLUMNS)
    for _ in range(offset):
        ws.append([None] * len(COLUMNS))
    for r in rows:
        ws.append([r.get(c) for c in COLUMNS])
    ws.add_table(Table(displayName="Orders", ref=f"A1:{openpyxl.utils.get_column_letter(len(COLUMNS))}"
                                                 f"{offset + len(rows) + 1}"))
    wb.save(path)
    return path


def try_rows(tag: str) -> list[dict]:
    """Two rows with a Ref and two blank-Ref rows (small: hundreds of tries stay within margin)."""
    return [{"Ref": f"{tag}-A", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
            {"Ref": None, "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
            {"Ref": f"{tag}-B", "Symbol": "SPY", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
            {"Ref": None, "Symbol": "AAPL", "Action": "BUY", "Quantity": 2, "OrderType": "MKT"}]


def ibxl_run(gw, workbook: Path, client_id: int, home: Path) -> subprocess.Popen:
    """``ibxl run WORKBOOK --orders`` (this checkout's code) against the gateway, journal in ``home``."""
    env = dict(os.environ, PYTHONPATH=str(REPO), IBXL_CONFIG=str(home / "config.toml"),
               IBXL_JOURNAL=str(home / "journal.sqlite3"))
    return subprocess.Popen([sys.executable, "-m", "addin.app.cli", "run", str(workbook), "--port", str(gw.port),
                             "--client-id", str(client_id), "--orders"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err[-3000:]
    return out + err


def run_to_end(gw, workbook: Path, client_id: int, home: Path) -> str:
    """Run until it completes; a client id the gateway still holds for a killed process is retried
    once the gateway has let it go."""
    for _ in range(40):
        text = finish(ibxl_run(gw, workbook, client_id, home))
        if "client id" not in text.lower() or "in use" not in text.lower():
            return text
        threading.Event().wait(0.25)          # the gateway has not seen the killed socket close yet
    raise AssertionError(f"client id {client_id} stayed in use: {text[-2000:]}")


def wait_until(predicate, timeout: float) -> bool:
    done = threading.Event()
    end = threading.Event()
    timer = threading.Timer(timeout, end.set)
    timer.start()
    try:
        while not end.is_set():
            if predicate():
                done.set()
                break
            end.wait(0.002)
    finally:
        timer.cancel()
    return done.is_set()


def ref_key(ref) -> str:
    """A Ref as IB's users mean it: trimmed, any case."""
    return str(ref).strip().upper()


def received(gw, client_ids: set[int]) -> list:
    return [r for r in gw.received_orders() if r.client_id in client_ids]


def sends_per_row(gw, rows: list[dict], client_ids: set[int]) -> list[int]:
    """How many orders the gateway received for each row: by orderRef (any case) for a row with a
    Ref, by its content (symbol, action, quantity) for a blank-Ref row."""
    got = received(gw, client_ids)
    by_ref = Counter(ref_key(r.order.orderRef) for r in got)
    by_content = Counter((r.contract.symbol, r.order.action, float(r.order.totalQuantity)) for r in got)
    return [by_ref[ref_key(row["Ref"])] if row["Ref"] else
            by_content[(row["Symbol"], row["Action"], float(row["Quantity"]))] for row in rows]


def saved_rows(path: Path) -> list[dict]:
    ws = openpyxl.load_workbook(path)["Orders"]
    header = [c.value for c in ws[1]]
    rows = [dict(zip(header, (c.value for c in row))) for row in ws.iter_rows(min_row=2)]
    return [r for r in rows if r.get("Symbol")]


# --- kill -9 at random points, then a rerun ---------------------------------------------------------------
def test_kill_9_at_random_points_then_a_rerun_sends_every_row_exactly_once(gw, home, tmp_path):
    report = []
    for t in range(TRIES):
        rnd = random.Random(1200 + t)
        rows = try_rows(f"K{t}")
        path = orders_workbook(tmp_path / f"kill{t}.xlsx", rows, next(_offsets))
        client_id = next(_client_ids)
        before = len(gw.received_orders())
        proc = ibxl_run(gw, path, client_id, home)
        k = rnd.randint(0, len(rows))              # kill after the k-th order reached the gateway (0: any time)
        if k:
            wait_until(lambda k=k, c=client_id, p=proc: len(received(gw, {c})) >= k or p.poll() is not None, 60)
            threading.Event().wait(rnd.uniform(0, 0.03))
        else:
            threading.Event().wait(rnd.uniform(0.3, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        at_kill = len(gw.received_orders()) - before
        run_to_end(gw, path, client_id, home)
        counts = sends_per_row(gw, rows, {client_id})
        report.append((t, k, at_kill, counts))
        assert all(n <= 1 for n in counts), f"try {t}: duplicates {counts} ({report})"
        assert all(n == 1 for n in counts), f"try {t}: lost rows {counts}: {saved_rows(path)}"
        for row in saved_rows(path):               # every row says what happened to it
            assert row["Status"], (t, row)


# --- concurrent runs on one workbook or on copies -------------------------------------------------------------
RACES = [(2, "same"), (2, "copies"), (4, "same"), (4, "copies")]


@pytest.mark.parametrize("processes,mode", RACES)
def test_concurrent_runs_one_journal_send_every_row_exactly_once(gw, home, tmp_path, processes, mode):
    tries = max(2, TRIES // len(RACES)) if "IBXL_ATTACK_TRIES" not in os.environ else TRIES
    for t in range(tries):
        tag = f"C{processes}{mode[0]}{t}"
        rows, offset = try_rows(tag), next(_offsets)
        first = orders_workbook(tmp_path / f"{tag}-0.xlsx", rows, offset)
        paths = [first] * processes if mode == "same" else \
            [orders_workbook(tmp_path / f"{tag}-{i}.xlsx", rows, offset) for i in range(processes)]
        client_ids = [next(_client_ids) for _ in range(processes)]
        procs = [ibxl_run(gw, p, c, home) for p, c in zip(paths, client_ids)]
        outputs = [finish(p) for p in procs]
        counts = sends_per_row(gw, rows, set(client_ids))
        said = "\n".join(o[-1500:] for o in outputs)
        # a typed Ref is one order wherever it is; a blank-Ref row is one order per workbook (a copy
        # under another name is another workbook: its own row, its own Ref)
        expected = [1 if row["Ref"] or mode == "same" else processes for row in rows]
        assert all(n <= e for n, e in zip(counts, expected)), f"{tag}: duplicates {counts}\n{said}"
        assert counts == expected, f"{tag}: lost rows {counts}\n{said}"
        by_ref = Counter(ref_key(r.order.orderRef) for r in received(gw, set(client_ids)))
        saved = {ref_key(row["Ref"]) for p in set(paths) for row in saved_rows(p)}
        assert set(by_ref) == saved and set(by_ref.values()) == {1}, (tag, by_ref, saved)
