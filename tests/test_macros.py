"""addin.app.macros on the template workbook (workbooks/ibxl.xlsx opened with the openpyxl adapter,
saved to a temporary file and read back with openpyxl), against the paper gateway through the real
ibapi client: history into the Bars Table, orders from rows (sent once, bad rows refused with a
reason, nothing half-sent), cancel, kill switch, portfolio, streaming."""

from __future__ import annotations

import os

# xlwings registers its remote engine at import, when a licence key is set (noncommercial is free)
os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import threading
import time
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.app import macros
from addin.app.runtime import Runtime
from addin.config import Settings
from addin.excel.errors import ExcelInputError
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.paper import PaperGateway

TEMPLATE = Path(__file__).resolve().parents[1] / "workbooks" / "ibxl.xlsx"


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


@pytest.fixture
def rt(gw, tmp_path):
    runtime = Runtime(port=gw.port, client_id=61, settings=Settings(), journal_path=tmp_path / "journal.sqlite3")
    runtime.connect()
    yield runtime
    runtime.close()


@pytest.fixture
def book(tmp_path):
    b = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "book.xlsx")
    yield b
    b.close()


def set_orders(book, rows: list[dict]) -> dict[str, int]:
    """Replace the Orders Table's rows (every column: outputs start empty); returns {Ref: row}."""
    columns = book.table("Orders").columns
    book.write_table("Orders", pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns))
    return {r["Ref"]: 2 + i for i, r in enumerate(rows) if r.get("Ref")}


def order(ref, symbol, action, qty, order_type="MKT", limit=None):
    return {"Ref": ref, "Symbol": symbol, "Action": action, "Quantity": qty, "OrderType": order_type,
            "LimitPrice": limit, "TIF": "DAY", "Transmit": True}


def reread(book, tmp_path, name="check.xlsx"):
    return openpyxl.load_workbook(book.save(tmp_path / name))


def order_rows(book) -> dict:
    df = book.read_table("Orders", drop_empty=True)
    return {r["Ref"]: r for _, r in df.iterrows()}


class Statuses:
    """Waits on the OrderDesk's listener (IB's order events) instead of polling."""

    def __init__(self, runtime):
        self.cond = threading.Condition()
        self.last: dict[str, dict] = {}
        runtime.add_order_listener(self.on)

    def on(self, ref, outputs):
        with self.cond:
            self.last[ref] = dict(outputs)
            self.cond.notify_all()

    def wait(self, ref, statuses, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: self.last.get(ref, {}).get("Status") in statuses, timeout), \
                (ref, self.last.get(ref))


def test_pull_history_fills_the_bars_table(book, rt, tmp_path):
    book.write("History", 2, 2, [["AAPL"], ["5 D"], ["1 hour"], ["MIDPOINT"], [True]])
    df = macros.pull_history(book, rt)
    assert len(df) > 10
    ws = reread(book, tmp_path)["History"]
    assert [c.value for c in ws[1][3:11]] == ["Date", "Open", "High", "Low", "Close", "Volume", "WAP", "BarCount"]
    assert ws.cell(2, 4).value == df.index[0].to_pydatetime().replace(tzinfo=None)
    assert ws.cell(2, 8).value == pytest.approx(df["close"].iloc[0])
    assert ws.cell(1 + len(df), 5).value == pytest.approx(df["open"].iloc[-1])
    assert ws.tables["Bars"].ref.endswith(str(1 + len(df)))
    log_rows = book.read_table("LogEntries", drop_empty=True)
    assert log_rows["Message"].str.startswith("history:").any()


def test_pull_history_names_the_bad_cell(book, rt):
    book.write("History", 2, 2, [["AAPL"], ["5 fortnights"]])
    with pytest.raises(ExcelInputError, match="History sheet: duration"):
        macros.pull_history(book, rt)
    book.write("History", 2, 2, [["#N/A"]])
    with pytest.raises(ExcelInputError, match="HistorySymbol"):
        macros.pull_history(book, rt)


def test_place_orders_sends_each_row_once_and_refuses_bad_rows(book, rt, gw, tmp_path):
    row_of = set_orders(book, [order("OK-1", "AAPL", "BUY", 10), order("SHORT-1", "SPY", "SELL", 3),
                               order("BAD-1", "AAPL", "BUY", "ten")])
    before = len(gw.received_orders())
    out = macros.place_orders(book, rt)
    statuses = dict(zip(out["Ref"], out["Status"]))
    assert statuses["BAD-1"] == "Error" and "Quantity" in out.set_index("Ref").loc["BAD-1", "Message"]
    assert statuses["SHORT-1"] == "Refused"                  # a SELL into a short: allow_short is off
    assert statuses["OK-1"] in ("Submitted", "PreSubmitted", "Filled")
    received = gw.received_orders()[before:]
    assert [o.order.orderRef for o in received] == ["OK-1"]
    rows = order_rows(book)
    assert rows["BAD-1"]["Status"] == "Error" and rows["OK-1"]["OrderId"] is not None
    # again: the placed row is only brought up to date (the errored one, not in the journal, is left
    # alone), and the selected row that was sent is not sent twice
    again = macros.place_orders(book, rt)
    assert list(again.Ref) == ["OK-1"] and list(again.Outcome) == ["unchanged"]
    macros.place_selected_orders(book, rt, rows=[row_of["OK-1"]])
    assert len(gw.received_orders()) == before + 1
    ws = reread(book, tmp_path)["Orders"]
    header = [c.value for c in ws[1]]
    assert ws.cell(row_of["BAD-1"], header.index("Status") + 1).value == "Error"
    assert ws.cell(row_of["OK-1"], header.index("Ref") + 1).value == "OK-1"


def test_selected_rows_come_from_the_workbooks_selection(book, rt):
    set_orders(book, [order("SEL-1", "AAPL", "BUY", 1), order("SEL-2", "MSFT", "BUY", 1)])
    ws = book.workbook["Orders"]
    ws.sheet_view.selection[0].sqref = "C3:D3"
    ws.sheet_view.selection[0].activeCell = "C3"
    out = macros.place_selected_orders(book, rt)
    assert list(out.index) == [3] and out.loc[3, "Ref"] == "SEL-2"
    ws.sheet_view.selection[0].sqref = "A40"
    with pytest.raises(ExcelInputError, match="outside the Orders Table"):
        macros.place_selected_orders(book, rt)


def test_cancel_selected_kill_switch_and_reset(book, rt, gw):
    bid = rt.market.snapshot("AAPL").bid
    limit = round(bid * 0.97, 2)                              # inside the price band, not marketable
    set_orders(book, [order("WORK-1", "AAPL", "BUY", 1, "LMT", limit), order("WORK-2", "AAPL", "BUY", 1, "LMT", limit),
                      order("AFTER-KILL", "AAPL", "BUY", 1), {}])
    statuses = Statuses(rt)
    out = macros.place_selected_orders(book, rt, rows=[2, 3])
    assert set(out["Status"]) <= {"Submitted", "PreSubmitted"}, out
    cancelled = macros.cancel_selected(book, rt, rows=[2])
    statuses.wait("WORK-1", {"Cancelled", "ApiCancelled"})
    assert cancelled.loc["WORK-1", "Status"] in ("Cancelled", "ApiCancelled", "PendingCancel")
    assert macros.kill_switch(book, rt) == ["WORK-2"]
    statuses.wait("WORK-2", {"Cancelled", "ApiCancelled"})
    before = len(gw.received_orders())
    refused = macros.place_selected_orders(book, rt, rows=[4])
    assert refused.loc[4, "Status"] == "Refused" and "kill" in refused.loc[4, "Message"].lower()
    assert len(gw.received_orders()) == before
    macros.reset_kill_switch(book, rt)
    assert not rt.orders.killed
    with pytest.raises(ExcelInputError, match="no Ref"):
        macros.cancel_selected(book, rt, rows=[5])


def test_refresh_portfolio_after_a_fill(book, rt, tmp_path):
    set_orders(book, [order("FILL-1", "AAPL", "BUY", 10)])
    statuses = Statuses(rt)
    out = macros.place_selected_orders(book, rt, rows=[2])
    statuses.wait(out.loc[2, "Ref"], {"Filled"})
    counts = macros.refresh_portfolio(book, rt)
    assert counts["Positions"] >= 1 and counts["Account"] > 5 and counts["Executions"] >= 1
    wb = reread(book, tmp_path)
    ws = wb["Portfolio"]
    header = [c.value for c in ws[1]][:12]
    positions = [[c.value for c in row][:12] for row in ws.iter_rows(min_row=2, max_row=1 + counts["Positions"])]
    aapl = next(p for p in positions if p[header.index("Symbol")] == "AAPL")
    assert aapl[header.index("Position")] >= 10
    assert isinstance(ws["T2"].value, (int, float))           # PnLDaily (a whole number reads back as int)
    ex = wb["Executions"]
    assert "FILL-1" in [ex.cell(r, 12).value for r in range(2, 2 + counts["Executions"])]   # OrderRef


def test_streaming_into_the_template_watchlist(book, rt, tmp_path):
    pump = macros.start_streaming(book, rt, interval=0.05)
    try:
        board = rt.market.board

        def filled():
            rows = book.read("Watchlist", 2, 1, 6, 16)
            return all(type(r[1]) in (int, float) and r[15] == "live" for r in rows)   # 230.00 reads back as int

        assert pump.wait_for(filled, 15)
        assert board.get("AAPL.NASDAQ") is not None
    finally:
        assert macros.stop_streaming(book, rt)
    ws = reread(book, tmp_path)["Watchlist"]
    assert [ws.cell(r, 1).value for r in range(2, 7)] == ["AAPL", "MSFT", "GOOG", "SPY", "EUR/USD"]
    assert all(type(ws.cell(r, 2).value) in (int, float) for r in range(2, 7))
    assert rt.market.subscriptions() == {}
    messages = list(book.read_table("LogEntries", drop_empty=True)["Message"])
    assert any(m.startswith("streaming started") for m in messages) and "streaming stopped" in messages


def test_macros_through_the_xlwings_adapter_on_the_remote_engine(rt, tmp_path, monkeypatch):
    """The same macros on xlwings' real Book API (remote engine): pull_history and one pump flush
    queue their writes as actions; replayed onto the file they read back as written."""
    import xlwings as xw

    from addin.excel.remote_json import apply_actions, book_json
    from addin.excel.xlwings_book import XlwingsBook

    if "remote" not in [e.name for e in xw.engines]:     # xlwings was imported before the key was set
        from xlwings.main import Engine
        from xlwings.pro import _xlremote
        xw.engines.add(Engine(impl=_xlremote.engine))
    src = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "src.xlsx")
    src.write("History", 2, 2, [["MSFT"], ["3 D"], ["1 hour"], ["TRADES"], [True]])
    src.save()
    book = XlwingsBook(xw.Book(json=book_json(tmp_path / "src.xlsx")))
    df = macros.pull_history(book, rt)
    pump = macros.start_streaming(book, rt, run=False)     # bound and painted once, on this thread
    try:
        board = rt.market.board
        keys = list(pump._rows_of)
        deadline = time.monotonic() + 15
        while not all((q := board.get(k)) is not None and q.updated is not None for k in keys):
            assert time.monotonic() < deadline, "no first tick for every Watchlist instrument"
            board.wait(board.version, 1.0)                     # woken by the next tick
        writes_before = pump.stats.writes
        pump.flush()                                           # whatever changed: one call
        assert pump.stats.writes - writes_before == 1
        actions = book.book.json()["actions"]
        watchlist_writes = [a for a in actions if a["func"] == "setValues" and a["sheet_position"] == 1]
        assert len(watchlist_writes) == pump.stats.writes      # one setValues action per pump write
    finally:
        macros.stop_streaming(book, rt)
    wb = openpyxl.load_workbook(tmp_path / "src.xlsx")
    apply_actions(wb, actions)
    hist = wb["History"]
    assert hist.cell(1 + len(df), 8).value == pytest.approx(df["close"].iloc[-1])
    watch = wb["Watchlist"]
    assert not pump.row_errors
    assert all(type(watch.cell(r, 2).value) in (int, float) for r in range(2, 7))
