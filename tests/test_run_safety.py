"""``ibxl run`` under attack, from the outside: the installed command (or ``run_workbook`` in a child
process that is killed) against a real paper gateway, workbooks read back with openpyxl, orders
counted at the gateway.

- orderRefs written by another API client (``=HYPERLINK(...)``, ``=cmd|...``, ``+1+1``, ``@SUM(1)``,
  ``-2+3``) land as text in every sheet ibxl writes, through the file adapter and through xlwings'
  remote engine;
- user content just below the template's Tables survives a run that would grow them, and each step says
  which cell stopped it;
- a blank-Ref row's assigned Ref is in the saved file before its order leaves: killed (SIGKILL) right
  after the journal write, the transmitting mark or the send, the file already holds the Ref, and the
  rerun sends nothing twice;
- exit codes tell the truth: every row errored, a live-only login, a gateway that never answers and one
  that never completes the handshake all exit non-zero, the silent ones within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from ibapi.order import Order
from openpyxl.utils import get_column_letter

from addin.app.jobs import TEMPLATE
from addin.excel import layout
from addin.paper import PaperGateway

from .contracts import stock
from .ibclient import IBTestClient
from .test_cli_jobs import run_cli, table_rows

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ['=HYPERLINK("http://evil","x")', "=cmd|' /C calc'!A0", "+1+1", "@SUM(1)", "-2+3"]
KILLED = 71
BUY_AAPL = {"Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "MKT", "TIF": "DAY"}


def _fill(client: IBTestClient, symbol: str, ref: str) -> None:
    o = Order()
    o.action, o.orderType, o.totalQuantity, o.orderRef = "BUY", "MKT", Decimal(1), ref
    oid = client.next_order_id()
    client.placeOrder(oid, stock(symbol), o)
    client.wait_for("orderStatus", lambda e: e.args[0] == oid and e.args[1] == "Filled", timeout=20)


@pytest.fixture(scope="module")
def gw():
    """A gateway where another API client bought AAPL under each hostile orderRef, and MSFT."""
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        other = IBTestClient().start(gateway.port, 95)
        try:
            for ref in HOSTILE:
                _fill(other, "AAPL", ref)
            _fill(other, "MSFT", "plain")
        finally:
            other.stop()
        yield gateway


def template_copy(path: Path, rows: list[dict]) -> Path:
    """The template workbook with its Orders rows replaced by ``rows`` (input columns only)."""
    shutil.copyfile(TEMPLATE, path)
    wb = openpyxl.load_workbook(path)
    ws = wb["Orders"]
    header = [c.value for c in ws[1]]
    top, bottom = 2, ws.tables["Orders"].ref.split(":")[1]
    last = int("".join(ch for ch in bottom if ch.isdigit()))
    for r in range(top, last + 1):
        for c in range(1, len(header) + 1):
            ws.cell(row=r, column=c).value = None
    for i, row in enumerate(rows):
        for name, value in row.items():
            ws.cell(row=top + i, column=header.index(name) + 1).value = value
    wb.save(path)
    return path


def env(tmp_path: Path) -> dict:
    return {"IBXL_CONFIG": str(tmp_path / "config.toml")}       # no file: the safe defaults, a fresh journal


# --- text stays text ------------------------------------------------------------------------------------------
def _check_text(path: Path, sheets: list[str]) -> None:
    wb = openpyxl.load_workbook(path)
    seen = []
    for name in sheets:
        for row in wb[name].iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    raise AssertionError(f"{name}!{cell.coordinate} is a formula: {cell.value!r}")
                if cell.value in HOSTILE:
                    assert cell.data_type == "s", (name, cell.coordinate, cell.data_type)
                    seen.append(cell.value)
    executions = [e["OrderRef"] for e in table_rows(wb["Executions"], "Executions")]
    assert set(HOSTILE) <= set(executions), executions
    assert set(seen) == set(HOSTILE)


def test_orderrefs_of_another_client_land_as_text_in_every_sheet_ibxl_writes(gw, tmp_path):
    path = template_copy(tmp_path / "refs.xlsx", [{"Ref": "T-1", **BUY_AAPL}])
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "31", "--orders", "--portfolio",
                env_extra=env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    _check_text(path, ["Orders", "Portfolio", "Executions", "Log"])
    assert table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")[0]["Status"] in ("Filled", "Submitted")


def test_orderrefs_of_another_client_land_as_text_through_the_remote_engine(gw, tmp_path):
    os.environ["XLWINGS_LICENSE_KEY"] = "noncommercial"
    import xlwings as xw

    from addin.app import macros
    from addin.app.runtime import Runtime
    from addin.config import Settings
    from addin.excel.remote_json import apply_actions, book_json
    from addin.excel.xlwings_book import XlwingsBook

    path = tmp_path / "remote.xlsx"
    shutil.copyfile(TEMPLATE, path)
    book = XlwingsBook(xw.Book(json=book_json(path)))
    with Runtime(port=gw.port, client_id=32, settings=Settings(), journal_path=tmp_path / "j.db") as rt:
        counts = macros.refresh_portfolio(book, rt)
    assert counts["Executions"] >= len(HOSTILE)
    wb = openpyxl.load_workbook(path)
    apply_actions(wb, book.book.json()["actions"])
    wb.save(path)
    _check_text(path, ["Portfolio", "Executions", "Log"])


# --- Tables never grow over the user's cells ----------------------------------------------------------------
ACCOUNT_CELL = f"{get_column_letter(layout.TABLES['Account'][2] + 1)}3"     # the Account Table's Tag, row 3
NOTES = {("History", "E3"): "my bars note", ("Portfolio", "B3"): "my positions note",
         ("Portfolio", ACCOUNT_CELL): "my account note", ("Executions", "C3"): "my executions note",
         ("Log", "A3"): "my log note"}


def test_user_content_below_each_template_table_survives_and_each_refusal_is_reported(gw, tmp_path):
    path = tmp_path / "notes.xlsx"
    shutil.copyfile(TEMPLATE, path)
    wb = openpyxl.load_workbook(path)
    refs_before = {t.name: t.ref for ws in wb.worksheets for t in ws.tables.values()}
    for (sheet, cell), text in NOTES.items():
        wb[sheet][cell] = text
    wb.save(path)
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "33", "--history", "--portfolio",
                env_extra=env(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    for step, cell in (("history", "History!E3"), ("portfolio", "Portfolio!B3"),
                       ("portfolio", f"Portfolio!{ACCOUNT_CELL}"), ("portfolio", "Executions!C3"), ("log", "Log!A3")):
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith(f"  [FAILED] {step}")), "")
        assert f"over cell {cell}" in line, (step, cell, out)
    wb = openpyxl.load_workbook(path)
    for (sheet, cell), text in NOTES.items():
        assert wb[sheet][cell].value == text, (sheet, cell)
    assert {t.name: t.ref for ws in wb.worksheets for t in ws.tables.values()} == refs_before
    assert wb["History"]["D2"].value is None                    # nothing of the refused Bars was written
    assert wb["Log"]["D2"].value.startswith("connected to")     # the Log's one body row was written


# --- the assigned Ref is saved before the order leaves ------------------------------------------------------
def _child(port: int, client_id: int, workbook: str, journal: str, kill_at: str | None) -> int:
    from addin.app.jobs import run_workbook
    from addin.config import Settings

    def arm(book, rt) -> None:
        if kill_at:
            rt.orders.add_step_observer(lambda step: step == kill_at and os.kill(os.getpid(), signal.SIGKILL))

    try:
        summary = run_workbook(workbook, port=port, client_id=client_id, orders=True, settings=Settings(),
                               journal_path=journal, prepare_orders=arm, echo=lambda _line: None)
    except Exception as exc:            # e.g. ConcurrentSaveError: said, not a traceback
        print(f"{type(exc).__name__}: {exc}")
        return 1
    return 0 if summary.ok else 1


def _child_cmd(gw, client_id: int, path: Path, journal: Path, kill_at: str | None = None) -> list[str]:
    return [sys.executable, "-m", "tests.test_run_safety", "child", str(gw.port), str(client_id), str(path),
            str(journal), *([kill_at] if kill_at else [])]


def _run_child(gw, client_id: int, path: Path, journal: Path, kill_at: str | None) -> int:
    proc = subprocess.run([sys.executable, "-m", "tests.test_run_safety", "child", str(gw.port), str(client_id),
                           str(path), str(journal), *([kill_at] if kill_at else [])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.returncode


@pytest.mark.parametrize("kill_at", ["after_journal", "after_mark", "after_send"])
def test_a_blank_ref_rows_ref_is_saved_before_its_order_leaves(gw, tmp_path, kill_at):
    path = template_copy(tmp_path / f"{kill_at}.xlsx", [{"Ref": None, **BUY_AAPL},
                                                         {"Ref": f"K-{kill_at}", **BUY_AAPL}])
    journal = tmp_path / "journal.db"
    ids = {40 + 2 * ["after_journal", "after_mark", "after_send"].index(kill_at) + i for i in (0, 1)}
    first, second = sorted(ids)

    assert _run_child(gw, first, path, journal, kill_at) == -signal.SIGKILL
    refs = [row["Ref"] for row in table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")]
    assert refs[0] and refs[0].startswith("X") and refs[1] == f"K-{kill_at}", refs      # durable before the send

    assert _run_child(gw, second, path, journal, None) == 0
    rows = table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")
    assert [row["Ref"] for row in rows] == refs
    received = [o.order.orderRef for o in gw.received_orders() if o.client_id in ids]
    assert sorted(received) == sorted(refs), f"{kill_at}: the gateway received {received}"   # once each
    assert all(row["Status"] in ("Filled", "Submitted", "PreSubmitted") for row in rows), rows   # IB's word


def test_two_runs_at_once_never_send_a_blank_ref_row_under_two_refs(gw, tmp_path):
    """Two ``ibxl run --orders`` started together on one workbook, one journal: the blank-Ref row's Ref
    is claimed by whichever saves it first; the other's save conflicts, so it sends nothing of that row."""
    tries, assigned = 4, []
    for t in range(tries):
        path = template_copy(tmp_path / f"race{t}.xlsx", [{"Ref": None, **BUY_AAPL}])
        ids = (60 + 2 * t, 61 + 2 * t)
        procs = [subprocess.Popen(_child_cmd(gw, cid, path, tmp_path / "race.db"), cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cid in ids]
        outs = [p.communicate(timeout=120) for p in procs]
        codes = [p.returncode for p in procs]
        sent = {o.order.orderRef for o in gw.received_orders() if o.client_id in ids}
        if 0 not in codes:
            # both refused (one lost the save, the other met its claim): fail closed, nothing sent;
            # a rerun sends the row exactly once
            assert sent == set(), (t, sent, outs)
            rerun = 100 + t
            assert subprocess.run(_child_cmd(gw, rerun, path, tmp_path / "race.db"), cwd=REPO, text=True,
                                  capture_output=True, timeout=120).returncode == 0
            ids = (*ids, rerun)
            sent = {o.order.orderRef for o in gw.received_orders() if o.client_id in ids}
            assert len([o for o in gw.received_orders() if o.client_id in ids]) == 1
        saved = table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")[0]["Ref"]
        assert sent == {saved}, (t, sent, saved, outs)          # one Ref for the row, the one in the file
        assigned.append(saved)
    assert len(set(assigned)) == tries


# --- exit codes ----------------------------------------------------------------------------------------------
def test_every_row_errored_exits_non_zero_and_the_log_counts_honestly(gw, tmp_path):
    path = template_copy(tmp_path / "bad.xlsx", [{"Ref": "E-1", **BUY_AAPL, "Quantity": "#N/A"},
                                                 {"Ref": "E-2", **BUY_AAPL, "Quantity": "ten"}])
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "34", "--orders", env_extra=env(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[FAILED] orders: OrdersNotAllPlaced: 2 rows read, 0 sent, 2 errors; row 2 (E-1): Error: Quantity" \
        in r.stdout
    assert "all steps succeeded" not in r.stdout
    log = [e["Message"] for e in table_rows(openpyxl.load_workbook(path)["Log"], "LogEntries")]
    assert "orders: 2 rows read, 0 sent, 2 errors" in log, log
    assert not [o for o in gw.received_orders() if o.client_id == 34]


def test_a_live_only_login_exits_non_zero_and_sends_nothing(tmp_path):
    path = template_copy(tmp_path / "live.xlsx", [{"Ref": "L-1", **BUY_AAPL}])
    with PaperGateway(port=0, accounts=["U7654321"]) as live:
        r = run_cli("run", str(path), "--port", str(live.port), "--client-id", "35", "--orders",
                    env_extra=env(tmp_path))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "1 row read, 0 sent, 1 refused" in r.stdout and "live_account: U7654321 is a live account" in r.stdout
        assert live.received_orders() == []


def test_a_gateway_that_never_answers_is_diagnosed_once_in_seconds(tmp_path):
    path = template_copy(tmp_path / "silent.xlsx", [{"Ref": f"S-{i}", **BUY_AAPL} for i in range(4)])
    with PaperGateway(port=0) as silent:
        silent.delay_answers(3600)
        started = time.monotonic()
        r = run_cli("run", str(path), "--port", str(silent.port), "--client-id", "36", "--orders", "--portfolio",
                    env_extra=env(tmp_path), timeout=120)
        elapsed = time.monotonic() - started
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"connected to 127.0.0.1:{silent.port}, but it does not answer requests" in r.stderr
        assert elapsed < 15, elapsed                      # one diagnosis, not a timeout per row and per step
        assert silent.received_orders() == []


def test_a_server_that_never_completes_the_handshake_fails_in_seconds(tmp_path):
    path = template_copy(tmp_path / "mute.xlsx", [{"Ref": "M-1", **BUY_AAPL}])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept_and_read() -> None:
            conns = []
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                    conns.append(conn)
                except TimeoutError:
                    pass
                for c in conns:
                    c.setblocking(False)
                    try:
                        c.recv(65536)
                    except BlockingIOError:
                        pass
            for c in conns:
                c.close()

        reader = threading.Thread(target=accept_and_read, daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            r = run_cli("run", str(path), "--port", str(port), "--orders", env_extra=env(tmp_path), timeout=120)
        finally:
            stop.set()
            reader.join(5)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"127.0.0.1:{port}: no handshake within" in r.stderr
    assert time.monotonic() - started < 20



if __name__ == "__main__" and len(sys.argv) in (6, 7) and sys.argv[1] == "child":
    sys.exit(_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], (sys.argv[6:] or [None])[0]))
