"""Crash safety: the client process is killed at each step between the journal write and IB's
acknowledgement, then restarted on the same workbook and journal. Every order must exist at the
gateway exactly once and every row must show its true state.

The paper gateway runs in this (the parent) process, so its orders survive the child. The child is
this module run as a script (``python -m tests.test_orders_crash child ...``): it reads the workbook
with pandas, places its rows through a real OrderDesk over a real socket, writes assigned Refs and the
outputs back with openpyxl. A step name after its arguments makes it ``os._exit`` when the first order
reaches that step (a step observer on the desk: ``OrderDesk.add_step_observer``, ``ORDER_STEPS``).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.config import Settings
from addin.orders.desk import MODIFY_STEPS, ORDER_STEPS, OUTPUT_FRAME_COLUMNS
from addin.orders.rows import ORDER_INPUT_COLUMNS, ORDER_OUTPUT_COLUMNS

from .test_orders import write_refs

REPO = Path(__file__).resolve().parents[1]
CRASH_EXIT = 70
_client_ids = itertools.count(401)


# --- the child ---------------------------------------------------------------------------------------------
def _child(port: int, client_id: int, workbook: str, journal: str, crash_at: str | None) -> int:
    from addin.account.portfolio import Portfolio
    from addin.ib.contracts import ContractBook
    from addin.ib.session import IBError, Session
    from addin.market.quotes import MarketData
    from addin.orders.desk import OrderDesk

    session = Session(port=port, client_id=client_id, backoff_min=0.05, backoff_max=0.5)
    for attempt in range(20):           # the killed predecessor's socket may not be closed at the gateway yet
        try:
            session.connect(timeout=5)
            break
        except IBError as exc:
            if exc.code != 326 or attempt == 19:
                raise
            session = Session(port=port, client_id=client_id, backoff_min=0.05, backoff_max=0.5)
    risk = replace(Settings().risk, max_quantity=1_000, max_notional=2_000_000, max_position=100_000,
                   max_open_orders=1_000, max_orders_per_minute=1_000, daily_loss_limit=1_000_000)
    contracts = ContractBook(session)
    desk = OrderDesk(session, contracts, MarketData(session, contracts), Portfolio(session), Settings(risk=risk),
                     journal)
    if crash_at:                         # die there, as a killed process would: no cleanup, no flush
        desk.add_step_observer(lambda step: step == crash_at and os._exit(CRASH_EXIT))
    path = Path(workbook)
    desk.place(pd.read_excel(path, sheet_name="Orders", engine="openpyxl"), write_refs=write_refs(path))
    desk.reconcile()                     # a round trip: every answer to what was sent is in the journal
    sheet = pd.read_excel(path, sheet_name="Orders", engine="openpyxl")
    wb = openpyxl.load_workbook(path)
    ws = wb["Orders"]
    header = [c.value for c in ws[1]]
    for label, ref in sheet["Ref"].items():
        outputs = desk.order(str(ref))
        for name in ORDER_OUTPUT_COLUMNS:
            v = outputs[name]
            v = v.replace(tzinfo=None) if hasattr(v, "tzinfo") and v is not None else v
            ws.cell(row=int(label) + 2, column=header.index(name) + 1, value=v)
    wb.save(path)
    desk.close()
    session.disconnect()
    return 0


# --- the parent --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    from addin.paper import PaperGateway
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0, accounts=["DU1"]) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def watcher(gw):
    """The parent's own view of the gateway: a session and portfolio (open orders, executions)."""
    from addin.account.portfolio import Portfolio
    from addin.ib.session import Session
    s = Session(port=gw.port, client_id=499)
    s.connect()
    pf = Portfolio(s)
    yield s, pf
    pf.close()
    s.disconnect()


def _spy_bid(session) -> float:
    from addin.market.quotes import MarketData
    md = MarketData(session)
    try:
        return md.snapshot("SPY").bid
    finally:
        md.close()


def _run_child(gw, client_id: int, workbook: Path, journal: Path, crash_at: str | None) -> int:
    proc = subprocess.run([sys.executable, "-m", "tests.test_orders_crash", "child", str(gw.port), str(client_id),
                           str(workbook), str(journal), *([crash_at] if crash_at else [])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, CRASH_EXIT), proc.stderr[-3000:]
    return proc.returncode


def _sheet(tmp_path: Path, step: str) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    header = list(ORDER_INPUT_COLUMNS) + list(ORDER_OUTPUT_COLUMNS)
    ws.append(header)
    rows = [
        {"Ref": f"{step}-mkt", "Symbol": "AAPL", "Action": "BUY", "Quantity": 2, "OrderType": "MKT"},
        {"Ref": None, "Symbol": "MSFT", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"},
        {"Ref": f"{step}-lmt", "Symbol": "SPY", "Action": "BUY", "Quantity": 3, "OrderType": "LMT",
         "LimitPrice": None},
    ]
    for r in rows:
        ws.append([r.get(c) for c in header])
    path = tmp_path / f"{step}.xlsx"
    wb.save(path)
    return path


@pytest.mark.parametrize("step", ORDER_STEPS)
def test_killed_at_each_step_then_restarted_every_order_exists_once_and_rows_show_the_truth(gw, watcher, tmp_path,
                                                                                           step):
    session, portfolio = watcher
    bid = _spy_bid(session)
    path = _sheet(tmp_path, step)
    wb = openpyxl.load_workbook(path)                       # a resting limit: 3% under the bid, on the grid
    ws = wb["Orders"]
    ws.cell(row=4, column=ORDER_INPUT_COLUMNS.index("LimitPrice") + 1, value=round(bid * 0.97, 2))
    wb.save(path)
    client_id, journal = next(_client_ids), tmp_path / "journal.db"

    assert _run_child(gw, client_id, path, journal, crash_at=step) == CRASH_EXIT
    assert _run_child(gw, client_id, path, journal, crash_at=None) == 0

    sheet = pd.read_excel(path, sheet_name="Orders", engine="openpyxl")
    refs = list(sheet.Ref.astype(str))
    assert refs[0] == f"{step}-mkt" and refs[1].startswith("X") and refs[2] == f"{step}-lmt"
    received = [r.order.orderRef for r in gw.received_orders() if r.client_id == client_id]
    assert sorted(received) == sorted(refs), f"{step}: the gateway received {received}"

    open_orders = portfolio.open_orders()
    fills = portfolio.executions(client_id=client_id)
    truth = {}
    for ref in refs:
        working = open_orders[open_orders.order_ref == ref]
        done = fills[fills.order_ref == ref]
        truth[ref] = working.status.iloc[0] if len(working) else "Filled" if len(done) else "missing"
    assert truth == {refs[0]: "Filled", refs[1]: "Filled", refs[2]: "Submitted"}, step
    assert dict(zip(refs, sheet.Status)) == truth, sheet[list(OUTPUT_FRAME_COLUMNS)].to_dict("records")
    for ref, row in zip(refs, sheet.itertuples()):
        expected = fills[fills.order_ref == ref]
        assert row.Filled == expected.shares.sum()
        assert row.PermId > 0 and row.OrderId > 0


@pytest.mark.parametrize("step", MODIFY_STEPS)
def test_killed_while_modifying_then_restarted_the_order_exists_once_with_the_new_price(gw, watcher, tmp_path, step):
    """The row's LimitPrice is edited and the process dies as the modification leaves; run again, the
    same order (same id, same permId) holds the new price, and no second order was ever placed."""
    session, portfolio = watcher
    bid = _spy_bid(session)
    path = tmp_path / f"{step}.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    header = list(ORDER_INPUT_COLUMNS) + list(ORDER_OUTPUT_COLUMNS)
    ws.append(header)
    ref = f"{step}-mod"
    row = {"Ref": ref, "Symbol": "SPY", "Action": "BUY", "Quantity": 2, "OrderType": "LMT",
           "LimitPrice": round(bid * 0.97, 2)}
    ws.append([row.get(c) for c in header])
    wb.save(path)
    client_id, journal = next(_client_ids), tmp_path / "journal.db"
    assert _run_child(gw, client_id, path, journal, crash_at=None) == 0
    new_price = round(bid * 0.96, 2)
    wb = openpyxl.load_workbook(path)
    wb["Orders"].cell(row=2, column=header.index("LimitPrice") + 1, value=new_price)
    wb.save(path)

    assert _run_child(gw, client_id, path, journal, crash_at=step) == CRASH_EXIT
    assert _run_child(gw, client_id, path, journal, crash_at=None) == 0

    sent = [r for r in gw.received_orders() if r.order.orderRef == ref]
    assert len({r.order_id for r in sent}) == 1 and 2 <= len(sent) <= 3, [(r.order_id, r.order.lmtPrice) for r in sent]
    at_ib = [o for o in gw.call(lambda s: s.broker.open_orders()) if o[1].orderRef == ref]
    assert len(at_ib) == 1 and at_ib[0][1].lmtPrice == new_price
    sheet = pd.read_excel(path, sheet_name="Orders", engine="openpyxl")
    assert sheet.Status[0] == "Submitted" and sheet.Remaining[0] == 2


if __name__ == "__main__" and len(sys.argv) in (6, 7) and sys.argv[1] == "child":
    sys.exit(_child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], (sys.argv[6:] or [None])[0]))
