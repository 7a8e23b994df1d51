"""addin.excel.pump: QuoteBoard changes -> Watchlist cells in one write per rectangle, order outputs
-> Orders rows, one recalculation call for the formula cells whose quotes changed, slow writes
merged instead of queued, COM "call was rejected by callee" retried. Books: the in-memory
CountingBook (a Book that counts calls), the openpyxl adapter written to a file and read back, and
the real paper gateway feeding the board through the real ibapi client."""

from __future__ import annotations

import threading

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addin.app.runtime import Runtime
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.pump import (
    RPC_E_CALL_REJECTED,
    STANDARD_COLUMNS,
    ComRetry,
    Pump,
    bound_xlwings_com_retries,
    is_call_rejected,
    merge_rectangles,
)
from addin.excel.recalc import RecalcRegistry
from addin.market.quotes import QuoteBoard
from addin.paper import PaperGateway
from benchmarks.sinks import CountingBook

HEADER = ["Symbol"] + list(STANDARD_COLUMNS)


def watchlist_book(symbols, header=HEADER, cost=0.0, table=True) -> CountingBook:
    book = CountingBook({"Watchlist": []}, cost=cost)
    rows = [[s] + [None] * (len(header) - 1) for s in symbols]
    if table:
        book.add_table("Watchlist", "Watchlist", 1, 1, header, rows)
    else:
        book._put("Watchlist", 1, 1, [header] + rows)
    return book


def board_with(symbols) -> QuoteBoard:
    board = QuoteBoard()
    for i, s in enumerate(symbols):
        board.update(s, bid=100.0 + i, ask=100.5 + i, last=100.25 + i, volume=1000.0)
    return board


class ComError(Exception):
    """What pywin32 raises: args = (hresult, text, excepinfo, argerror)."""

    def __init__(self, hresult, text="Call was rejected by callee."):
        super().__init__(hresult, text, None, None)
        self.hresult = hresult


# --- rectangles ---------------------------------------------------------------------------------------
def test_merge_rectangles_exact_runs_and_vertical_merge():
    cells = {(2, 2), (2, 3), (3, 2), (3, 3), (2, 5), (4, 5), (5, 5)}
    assert merge_rectangles(cells) == [(2, 2, 3, 3), (2, 5, 2, 5), (4, 5, 5, 5)]


def test_merge_rectangles_with_owned_blocks_takes_whole_blocks():
    # rows 2..4 changed different columns inside block B..F: one rectangle; column H is its own block
    cells = {(2, 2), (3, 4), (4, 6), (4, 8)}
    assert merge_rectangles(cells, blocks=[(2, 6), (8, 8)]) == [(2, 2, 4, 6), (4, 8, 4, 8)]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.tuples(st.integers(1, 30), st.integers(1, 12)), max_size=120))
def test_merge_rectangles_cover_exactly_without_overlap(cells):
    rects = merge_rectangles(cells)
    covered = [(r, c) for top, left, bottom, right in rects
               for r in range(top, bottom + 1) for c in range(left, right + 1)]
    assert len(covered) == len(set(covered)) == len(cells)
    assert set(covered) == cells
    # never more rectangles than row runs (merging only ever reduces the count)
    runs = sum(1 for (r, c) in cells if (r, c - 1) not in cells)
    assert len(rects) <= runs


# --- one write per changed rectangle ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 10, 200])
def test_one_write_per_flush_whatever_the_number_of_changed_cells(n):
    symbols = [f"SYM{i:03d}" for i in range(n)]
    board = board_with(symbols)
    book = watchlist_book(symbols)
    pump = Pump(board, book)
    pump.bind()
    book.reset_counts()
    for i, s in enumerate(symbols):          # every quote moves: n rows x several columns change
        board.update(s, bid=200.0 + i, ask=201.0 + i, volume=2000.0 + i)
    assert pump.flush() == 1
    assert book.counts["write"] == 1
    sheet, top, left, values = book.calls_of("write")[0]
    assert (sheet, top, left) == ("Watchlist", 2, 2) and len(values) == n
    assert book.value("Watchlist", f"B{n + 1}") == 200.0 + n - 1
    assert book.value("Watchlist", f"H{n + 1}") == 2000.0 + n - 1     # Volume
    assert pump.flush() == 0 and book.counts["write"] == 1           # nothing changed: no call


def test_exact_mode_writes_one_call_per_maximal_rectangle():
    symbols = [f"SYM{i}" for i in range(6)]
    board = board_with(symbols)
    book = watchlist_book(symbols, header=["Symbol", "Bid", "Ask", "Last"])
    pump = Pump(board, book, fill_gaps=False)
    pump.bind()
    book.reset_counts()
    for s in ("SYM0", "SYM1", "SYM2"):       # rows 2-4: bid and ask -> one 3x2 rectangle
        board.update(s, bid=1.0, ask=2.0)
    board.update("SYM5", last=9.0)           # row 7: last only -> one 1x1 rectangle
    assert pump.flush() == 2
    writes = sorted(book.calls_of("write"), key=lambda w: w[1])
    assert writes[0] == ("Watchlist", 2, 2, [[1.0, 2.0]] * 3)
    assert writes[1] == ("Watchlist", 7, 4, [[9.0]])


def test_only_cells_whose_value_changed_are_written():
    symbols = ["AAPL", "MSFT", "SPY"]
    board = board_with(symbols)
    book = watchlist_book(symbols, header=["Symbol", "Bid", "Ask", "Last", "Volume"])   # no Updated column
    pump = Pump(board, book, fill_gaps=False)
    pump.bind()
    book.reset_counts()
    version = board.version
    for i, s in enumerate(symbols):          # every quote "changes" to the values it already has
        board.update(s, bid=100.0 + i, ask=100.5 + i, last=100.25 + i, volume=1000.0)
    assert board.version > version and pump.flush() == 0 and book.counts["write"] == 0
    board.update("MSFT", bid=42.0, ask=101.5)             # one value moved, one did not
    assert pump.flush() == 1
    [(sheet, top, left, values)] = book.calls_of("write")
    assert (sheet, top, left, values) == ("Watchlist", 3, 2, [[42.0]])



@pytest.mark.parametrize("bridge_rows, writes", [(0, 2), (8, 1)])
def test_a_key_on_several_rows_is_written_to_each(bridge_rows, writes):
    book = watchlist_book(["AAPL", "MSFT", "AAPL"], header=["Symbol", "Bid"])
    board = board_with(["AAPL", "MSFT"])
    pump = Pump(board, book, bridge_rows=bridge_rows)
    pump.bind()
    book.reset_counts()
    board.update("AAPL", bid=5.0)
    # rows 2 and 4: two rectangles, or one when row 3 (known, unchanged) is bridged
    assert pump.flush() == writes == book.counts["write"]
    assert book.value("Watchlist", "B2") == book.value("Watchlist", "B4") == 5.0
    assert book.value("Watchlist", "B3") == 101.0


def test_bridging_stops_at_long_gaps():
    symbols = [f"SYM{i:02d}" for i in range(30)]
    board = board_with(symbols)
    book = watchlist_book(symbols)
    pump = Pump(board, book, bridge_rows=3)
    pump.bind()
    book.reset_counts()
    for i in (0, 2, 5, 20):                  # rows 2, 4, 7 bridge (gaps 1 and 2); row 22 is 14 rows away
        board.update(symbols[i], bid=-1.0)
    assert pump.flush() == 2
    assert sorted((w[1], len(w[3])) for w in book.calls_of("write")) == [(2, 6), (22, 1)]


def test_partial_columns_only_and_user_columns_untouched():
    header = ["Symbol", "Bid", "My note", "Last"]
    book = watchlist_book(["AAPL", "MSFT"], header=header, table=False)
    book._put("Watchlist", 2, 3, [["keep me"], ["mine"]])
    board = board_with(["AAPL", "MSFT"])
    pump = Pump(board, book)
    pump.bind()
    assert pump.watchlist.owned == {2: "bid", 4: "last"}
    book.reset_counts()
    board.update("AAPL", bid=1.0, last=2.0, ask=3.0)
    board.update("MSFT", bid=1.5, last=2.5)
    assert pump.flush() == 2                 # column B block and column D block; C is the user's
    assert book.read("Watchlist", 2, 1, 3, 5) == [["AAPL", 1.0, "keep me", 2.0, None],
                                                  ["MSFT", 1.5, "mine", 2.5, None]]


@pytest.mark.parametrize("table", [True, False])
def test_watchlist_with_only_symbol_gets_the_standard_columns(table):
    book = watchlist_book(["AAPL"], header=["Symbol"], table=table)
    board = board_with(["AAPL"])
    Pump(board, book).bind()
    assert book.read("Watchlist", 1, 1, 1, len(HEADER)) == [HEADER]
    if table:
        assert book.table("Watchlist").columns == HEADER
    assert book.value("Watchlist", "B2") == 100.0 and book.value("Watchlist", "P2") == "live"


def test_unknown_symbol_row_shows_the_error_and_others_stream():
    book = watchlist_book(["AAPL", "ZZZZ"])
    board = board_with(["AAPL"])

    def resolve(text):
        if text == "ZZZZ":
            raise ValueError('"ZZZZ": no such instrument')
        return text

    pump = Pump(board, book, resolve=resolve)
    pump.bind()
    assert book.value("Watchlist", "P3") == '#IBXL: "ZZZZ": no such instrument'
    assert book.value("Watchlist", "B2") == 100.0 and book.value("Watchlist", "B3") is None


# --- orders -------------------------------------------------------------------------------------------
def test_order_outputs_reach_their_rows_in_one_write_per_rectangle():
    book = CountingBook({"Orders": []})
    cols = ["Ref", "Symbol", "Action", "Quantity", "Status", "OrderId", "PermId", "Filled", "Remaining",
            "AvgFillPrice", "Commission", "Message", "Updated"]
    book.add_table("Orders", "Orders", 1, 1, cols, [["r1", "AAPL", "BUY", 10], ["r2", "MSFT", "SELL", 5]])
    pump = Pump(QuoteBoard(), book, watchlist=None)
    pump.bind()
    book.reset_counts()
    pump.on_order("r1", {"Status": "Submitted", "OrderId": 7, "PermId": 70, "Filled": 0, "Remaining": 10})
    pump.on_order("r1", {"Status": "Filled", "Filled": 10, "Remaining": 0, "AvgFillPrice": 229.4})
    pump.on_order("r2", {"Status": "Submitted", "OrderId": 8, "Filled": 0, "Remaining": 5})
    assert pump.flush() == 1                 # both rows, the output block E..M
    assert book.read("Orders", 2, 5, 3, 10) == [["Filled", 7, 70, 10, 0, 229.4], ["Submitted", 8, None, 0, 5, None]]
    # a row added after binding is found by its Ref
    book._put("Orders", 4, 1, [["r3", "SPY", "BUY", 1]])
    book.resize_table("Orders", 4)
    pump.on_order("r3", {"Status": "PreSubmitted"})
    pump.flush()
    assert book.value("Orders", "E4") == "PreSubmitted"


# --- recalculation of formula cells -------------------------------------------------------------------
def test_one_calculate_call_for_the_registered_cells_whose_quotes_changed():
    symbols = ["AAPL", "MSFT", "SPY"]
    board = board_with(symbols)
    book = watchlist_book(symbols)
    book.add_sheet("Sheet1")
    registry = RecalcRegistry()
    for addr, key in [("$B$2", "AAPL"), ("$B$3", "MSFT"), ("$B$4", "SPY"), ("C9", "AAPL")]:
        registry.register("Sheet1", addr, [key])
        book.set_formula("Sheet1", addr, f'=IB_QUOTE("{key}")')
    pump = Pump(board, book, registry=registry)
    pump.bind()
    book.reset_counts()
    before = (pump.stats.calculates, pump.stats.recalc_cells)
    board.update("AAPL", bid=1.0)
    board.update("MSFT", bid=2.0)
    pump.flush()
    assert book.calls_of("calculate") == [("Sheet1", ["B2", "B3", "C9"])]
    assert (pump.stats.calculates - before[0], pump.stats.recalc_cells - before[1]) == (1, 3)
    book.reset_counts()
    pump.flush()
    assert book.counts["calculate"] == 0     # nothing changed, nothing recalculated


def test_pruned_formula_cells_are_no_longer_recalculated():
    board = board_with(["AAPL"])
    book = CountingBook({"Sheet1": []})
    registry = RecalcRegistry()
    registry.register("Sheet1", "A1", ["AAPL"])
    registry.register("Sheet1", "A2", ["AAPL"])
    book.set_formula("Sheet1", "A1", '=IB_QUOTE("AAPL","bid")')
    book.set_formula("Sheet1", "A2", None)   # the user typed a number over it
    pump = Pump(board, book, registry=registry, watchlist=None, orders=None, prune_every=0.0)
    pump.bind()
    book.reset_counts()
    board.update("AAPL", bid=3.0)
    pump.flush()
    assert book.calls_of("calculate") == [("Sheet1", ["A1"])]
    assert registry.cells() == [(None, "Sheet1", "A1")]


# --- slow writes merge, never queue -------------------------------------------------------------------
def test_slow_writes_merge_into_the_next_flush_instead_of_queueing():
    symbols = [f"SYM{i}" for i in range(20)]
    board = board_with(symbols)
    book = watchlist_book(symbols, cost=0.03)   # each call costs 30 ms, more than half the interval
    pump = Pump(board, book, interval=0.05)
    pump.start()
    try:
        assert pump.wait_flushes(1, 10)
        stop = threading.Event()
        produced = [0]

        def ticker():                          # ticks much faster than the pump can write
            i = 0
            while not stop.is_set() and i < 5000:
                s = symbols[i % len(symbols)]
                board.update(s, bid=float(i))
                produced[0] = i
                i += 1
                if i % 500 == 0:
                    pump.wait_flushes(pump.stats.flushes + 1, 5)

        t = threading.Thread(target=ticker)
        t.start()
        t.join(30)
        stop.set()
        final = {s: board.get(s).bid for s in symbols}
        assert pump.wait_for(lambda: all(book.value("Watchlist", f"B{2 + i}") == final[s]
                                         for i, s in enumerate(symbols)), 10)
    finally:
        pump.stop()
    # 5000 ticks, yet at most one write per flush (all rows are one rectangle): merged, not queued
    assert pump.stats.writes <= pump.stats.flushes
    assert pump.stats.writes < 500
    assert book.counts["write"] == pump.stats.writes


# --- COM: call was rejected by callee -------------------------------------------------------------------
def test_com_retry_retries_rejected_calls_with_bounded_backoff():
    book = CountingBook({"Sheet1": []})
    book.fail(3, lambda: ComError(RPC_E_CALL_REJECTED))
    delays = []
    com = ComRetry(book, attempts=5, first_delay=0.01, max_delay=0.02, sleep=delays.append)
    com.write("Sheet1", 1, 1, [[1.0]])
    assert book.value("Sheet1", "A1") == 1.0
    assert delays == [0.01, 0.02, 0.02] and com.retries == 3
    assert book.counts["write"] == 4


def test_com_retry_gives_up_after_the_attempts_and_passes_other_errors_at_once():
    book = CountingBook({"Sheet1": []})
    book.fail(10, lambda: ComError(RPC_E_CALL_REJECTED))
    com = ComRetry(book, attempts=3, sleep=lambda s: None)
    with pytest.raises(ComError):
        com.write("Sheet1", 1, 1, [[1.0]])
    assert book.counts["write"] == 3
    other = CountingBook({"Sheet1": []})
    other.fail(1, lambda: ComError(-2147352567, "Exception occurred."))
    with pytest.raises(ComError):
        ComRetry(other, sleep=lambda s: None).write("Sheet1", 1, 1, [[1.0]])
    assert other.counts["write"] == 1
    assert is_call_rejected(ComError(RPC_E_CALL_REJECTED)) and not is_call_rejected(ValueError("x"))


def _xlwings_com_wrapper():
    """xlwings' own COMRetryMethodWrapper and N_COM_ATTEMPTS, taken from the installed
    ``xlwings/_xlwindows.py`` (it imports pywin32, so the module cannot load here) and run with
    stand-ins for the pywin32 names it uses: a rejected call raises ``com_error`` with hresult
    RPC_E_CALL_REJECTED, as pywin32 does."""
    import ast
    import types
    from pathlib import Path

    import xlwings
    source = (Path(xlwings.__file__).parent / "_xlwindows.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    keep = [n for n in tree.body if (isinstance(n, ast.ClassDef) and n.name == "COMRetryMethodWrapper") or
            (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "N_COM_ATTEMPTS" for t in n.targets))]
    assert len(keep) == 2, "xlwings' COM retry wrapper moved: re-check bound_xlwings_com_retries"
    module = types.ModuleType("xlwings_com_retry")
    stub = type("Stub", (), {})
    module.__dict__.update(pywintypes=types.SimpleNamespace(com_error=ComError), CDispatch=stub,
                           CoClassBaseClass=stub, DispatchBaseClass=stub, types=types)
    exec(compile(ast.Module(body=keep, type_ignores=[]), "xlwings/_xlwindows.py", "exec"), module.__dict__)
    return module


def test_xlwings_spins_on_a_rejected_call_and_the_bound_hands_it_to_com_retry():
    xl = _xlwings_com_wrapper()
    assert xl.N_COM_ATTEMPTS == 0                           # xlwings' default: retry for ever
    calls = []

    def busy(n):                     # Excel rejects the first n calls
        def call():
            calls.append(1)
            if len(calls) <= n:
                raise ComError(RPC_E_CALL_REJECTED)
            return "done"
        return call
    # As installed: 2000 rejections are retried back to back inside xlwings, no sleep in between.
    assert xl.COMRetryMethodWrapper(busy(2000))() == "done" and len(calls) == 2001
    # Bounded: xlwings makes each call once; ComRetry sleeps between its bounded attempts.
    assert bound_xlwings_com_retries(xl) and xl.N_COM_ATTEMPTS == 1
    assert not bound_xlwings_com_retries(xl)                # a value already set is left alone
    calls.clear()
    book = CountingBook({"Sheet1": []})
    wrapped = xl.COMRetryMethodWrapper(busy(3))
    book.write = lambda *a: wrapped()                       # type: ignore[method-assign]
    delays: list[float] = []
    com = ComRetry(book, attempts=10, first_delay=0.01, max_delay=0.5, sleep=delays.append)
    assert com.write("Sheet1", 1, 1, [[1.0]]) == "done"
    assert len(calls) == 4 and delays == [0.01, 0.02, 0.04]
    assert bound_xlwings_com_retries() is False             # not Windows: nothing to bound


def test_a_touched_cell_is_recalculated_and_a_refused_recalculation_is_made_next_flush():
    board = board_with(["AAPL"])
    book = CountingBook({"Sheet1": []})
    registry = RecalcRegistry()
    registry.register("Sheet1", "B2", ["@ibxl 7"])            # a cell waiting for a background request
    book.set_formula("Sheet1", "B2", '=IB_HISTORY("AAPL")')
    pump = Pump(board, ComRetry(book, attempts=2, sleep=lambda s: None), registry=registry, watchlist=None,
                orders=None)
    pump.bind()
    pump.flush()
    book.reset_counts()
    registry.touch(["@ibxl 7"])                                # the request ended
    book.fail(2, lambda: ComError(RPC_E_CALL_REJECTED), call="calculate")   # Excel busy past the retries
    pump.flush()
    assert book.counts["calculate"] == 2 and pump.stats.calculates == 0
    pump.flush()                                               # nothing new: the refused call is made again
    assert book.calls_of("calculate")[-1] == ("Sheet1", ["B2"]) and pump.stats.calculates == 1
    pump.flush()
    assert book.counts["calculate"] == 3                       # and only once


def test_pump_keeps_cells_of_a_rejected_write_and_writes_them_next_flush():
    board = board_with(["AAPL"])
    book = watchlist_book(["AAPL"], header=["Symbol", "Bid"])
    pump = Pump(board, ComRetry(book, attempts=2, sleep=lambda s: None))
    pump.bind()
    book.fail(2, lambda: ComError(RPC_E_CALL_REJECTED))   # Excel busy for longer than the retries
    board.update("AAPL", bid=7.0)
    assert pump.flush() == 0 and pump.stats.write_errors == 1
    assert book.value("Watchlist", "B2") == 100.0
    assert pump.flush() == 1                 # nothing new on the board, the pending cell still goes
    assert book.value("Watchlist", "B2") == 7.0


# --- real books and the real gateway ------------------------------------------------------------------
def test_openpyxl_book_streams_and_reads_back(tmp_path):
    book = OpenpyxlBook.new()
    book.add_sheet("Watchlist")
    book.add_table("Watchlist", "Watchlist", 1, 1, ["Symbol", "Bid", "Ask", "Updated", "Status"])
    book.write("Watchlist", 2, 1, [["AAPL"], ["MSFT"]])
    book.resize_table("Watchlist", 3)
    board = board_with(["AAPL", "MSFT"])
    pump = Pump(board, book)
    pump.bind()
    calls = book.calls
    board.update("AAPL", bid=1.25, ask=1.5)
    board.update("MSFT", bid=2.25)
    assert pump.flush() == 1 and book.calls == calls + 1
    path = book.save(tmp_path / "stream.xlsx")
    ws = openpyxl.load_workbook(path)["Watchlist"]
    assert [ws.cell(2, c).value for c in (1, 2, 3, 5)] == ["AAPL", 1.25, 1.5, "live"]
    assert [ws.cell(3, c).value for c in (1, 2, 3, 5)] == ["MSFT", 2.25, 101.5, "live"]
    updated = board.get("AAPL").updated.replace(tzinfo=None)        # naive UTC in the cell
    assert abs((ws.cell(2, 4).value - updated).total_seconds()) < 0.002


def test_paper_gateway_ticks_reach_the_watchlist_through_the_pump_thread():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=5.0) as gw, \
            Runtime(port=gw.port, client_id=41) as rt:
        rt.connect()
        book = watchlist_book(["AAPL", "EUR/USD", "ZZZZ", "AAPL"], header=["Symbol", "Bid", "Ask", "Status"])
        records = []
        pump = rt.start_pump(book, book_id="paper", interval=0.05, on_write=records.append)
        assert pump.wait_flushes(1, 10)          # bound (symbols subscribed) on the pump thread
        assert rt.market.subscriptions() == {"AAPL.NASDAQ": 2, "EUR/USD": 1}

        def shows_board():
            rows = book.read("Watchlist", 2, 1, 5, 4)
            a, e = rt.market.board.get("AAPL.NASDAQ"), rt.market.board.get("EUR/USD")
            return (a is not None and e is not None and a.bid is not None and e.bid is not None
                    and rows[0][1] == rows[3][1] and rows[0][3] == "live" and rows[1][3] == "live")

        assert pump.wait_for(shows_board, 15)
        assert book.value("Watchlist", "D4").startswith("#IB 200:")
        assert records and all(r.ended >= r.started for r in records)
        rt.stop_pump("paper")
        assert rt.market.subscriptions() == {}
