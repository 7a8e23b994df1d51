"""No worksheet function holds Excel's calculation thread: against a paper gateway that answers every
request late (``PaperGateway.delay_answers``), 100 cold IB_QUOTE cells each answer (waiting text)
before IB has answered anything, then fill in through the pump's recalculations; an IB_HISTORY of
50 paced requests answers at once with its progress, then with the whole table, from one request
shared by every cell with its arguments. In process and through the ibxl service (what Excel uses).

"Excel" is ``benchmarks.sinks.FormulaBook``: a workbook whose ``calculate`` calls the cells'
functions, as Excel does when the pump asks it to recalculate them.
"""

from __future__ import annotations

import ast
import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import collections
import contextlib
import itertools
import re
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import udfs
from addin.app.runtime import Runtime, set_runtime
from addin.excel.pump import Pump
from addin.paper import PaperGateway
from addin.protocol.messages import OUT
from benchmarks.sinks import FormulaBook

from .settle import pending, settled

RATE = 100.0                 # pacing clocks on both sides (tests/test_history.py): a 10-minute window is 6 s
DELAY = 2.0                  # seconds the gateway waits before answering any request
# How long one call holds the calculation thread is a figure of ``python -m benchmarks --only udf_latency``
# (target < 50 ms), not a timed assert here: these tests check that no call waited for IB at all.
SYMBOLS = [f"SIM{i:04d}" for i in range(1, 21)]
FIELDS = ["bid", "ask", "last", "bid size", "price"]
HISTORY = ("AAPL", "176400 S", "5 secs", "MIDPOINT", False)     # 49 hours of 5-second bars: 50 requests
_client_ids = itertools.count(71)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=100, max_lines=300, stream_interval=0.05, account_interval=5.0,
                      pacing_clock_rate=RATE) as gateway:
        counts: collections.Counter = collections.Counter()

        def install(server):     # count the history requests the gateway receives (instrumentation)
            inner = server._handlers[OUT.REQ_HISTORICAL_DATA]

            def counted(conn, fields):
                counts["history"] += 1
                return inner(conn, fields)
            server._handlers[OUT.REQ_HISTORICAL_DATA] = counted

        gateway.call(install)
        gateway.received = counts
        yield gateway


@contextlib.contextmanager
def runtime(gw):
    """A fresh in-process Runtime (nothing qualified yet) installed as the process-wide one."""
    rt = Runtime(port=gw.port, client_id=next(_client_ids), max_lines=200, pacing_clock_rate=RATE)
    rt.connect()
    previous = set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(previous)
        rt.close()


@contextlib.contextmanager
def remote_runtime(gw):
    """A RemoteRuntime over a fresh embedded ibxl service (what Excel's UDF server uses), installed as
    the process-wide runtime; the service's own Runtime is fresh too (nothing qualified yet)."""
    from addin.service.remote import RemoteRuntime
    from addin.service.server import embedded_service
    with embedded_service(lambda: Runtime("127.0.0.1", gw.port, next(_client_ids), max_lines=200,
                                          pacing_clock_rate=RATE)) as service:
        rt = RemoteRuntime(service.address, service.authkey, name="test")
        previous = set_runtime(rt)
        try:
            yield rt
        finally:
            set_runtime(previous)
            rt.close()


RUNTIMES = {"in process": runtime, "service": remote_runtime}


@contextlib.contextmanager
def delayed(gw, seconds: float = DELAY):
    gw.delay_answers(seconds)
    try:
        yield
    finally:
        gw.delay_answers(0)


@contextlib.contextmanager
def excel(rt, book: FormulaBook):
    """The recalc-only pump a workbook's formulas get, recalculating ``book``'s cells."""
    pump = Pump(rt.board, book, registry=rt.registry, watchlist=None, orders=None, interval=0.05)
    pump.start()
    try:
        yield pump
    finally:
        pump.stop()


def quote_sheet() -> tuple[FormulaBook, list[tuple[str, str]]]:
    """100 IB_QUOTE cells: a column per field, a row per instrument (20 instruments x 5 fields)."""
    book = FormulaBook({"Quotes": []})
    cells = []
    for c, field in enumerate(FIELDS):
        for r, symbol in enumerate(SYMBOLS):
            address = f"{'BCDEF'[c]}{r + 2}"
            book.put("Quotes", address, f'=IB_QUOTE("{symbol}","{field}")',
                     lambda s=symbol, f=field, a=address: udfs.IB_QUOTE(s, f, caller=("Quotes", "$" + a)))
            cells.append(("Quotes", address))
    return book, cells


def cold_quotes_answer_at_once_then_fill_in(rt, gw) -> None:
    book, cells = quote_sheet()
    with delayed(gw):
        t0 = time.monotonic()
        took = []
        for sheet, address in cells:                       # Excel's first calculation, one cell after another
            s = time.perf_counter()
            book.evaluate(sheet, address)
            took.append(time.perf_counter() - s)
        elapsed = time.monotonic() - t0
        # all of them were over before IB could have answered anything
        assert elapsed < DELAY, f"100 calls took {elapsed:.2f} s (longest {max(took) * 1000:.1f} ms)"
        first = [book.shown[c] for c in cells]
        assert all(isinstance(v, str) and v.startswith("#IBXL: waiting for the first quote of SIM") for v in first)
        assert len(rt.registry.cells()) == 100           # every cell waits for its recalculation
        with excel(rt, book) as pump:
            filled = pump.wait_for(lambda: all(isinstance(book.shown[c], float) for c in cells), 30)
    assert filled, [book.shown[c] for c in cells if not isinstance(book.shown[c], float)][:5]
    # each cell was recalculated by the pump (first "waiting", then its number), never waited in a call
    assert all(book.evaluations[c] >= 2 for c in cells)
    assert book.calls_of("calculate") and all(sheet == "Quotes" for sheet, _ in book.calls_of("calculate"))


def test_100_cold_quotes_answer_in_under_50ms_then_fill_in(gw):
    with runtime(gw) as rt:
        cold_quotes_answer_at_once_then_fill_in(rt, gw)


def test_100_cold_quotes_through_the_ibxl_service(gw):
    with remote_runtime(gw) as rt:
        cold_quotes_answer_at_once_then_fill_in(rt, gw)


def test_a_first_quote_that_lands_before_the_cell_is_registered_is_not_lost(gw):
    """Both races, with the pump running: the subscription ends (and the pump flushes past its end)
    before the cell is registered under it, and the first quote lands (and is flushed) before the
    cell is registered under its line. Registration is held back (our side, not IB's) until each
    has happened; the cell must still end with its number."""
    with runtime(gw) as rt:
        book = FormulaBook({"Quotes": []})
        book.put("Quotes", "B2", '=IB_QUOTE("SIM0050","bid")',
                 lambda: udfs.IB_QUOTE("SIM0050", "bid", caller=("Quotes", "$B$2")))
        register = rt.registry.register
        with delayed(gw, 0.2), excel(rt, book) as pump:
            def late_register(sheet, address, keys, book=None):
                keys = list(keys)
                if any(k.startswith("@ibxl ") for k in keys):
                    assert rt.requests.wait_idle(10)           # the subscription ended and touched its key
                elif keys:
                    assert rt.board.wait_priced(keys[0], 10)   # the first quote is on the board
                assert pump.wait_flushes(pump.stats.flushes + 2, 10)   # ... and the pump has moved past it
                return register(sheet, address, keys, book=book)
            rt.registry.register = late_register          # type: ignore[method-assign]
            first = book.evaluate("Quotes", "B2")
            assert pump.wait_for(lambda: isinstance(book.shown[("Quotes", "B2")], float), 15), (first, book.shown)


@pytest.mark.parametrize("where", list(RUNTIMES))
def test_a_50_request_history_answers_at_once_with_progress_then_the_table(gw, where):
    with RUNTIMES[where](gw) as rt:
        book = FormulaBook({"History": []})
        for address in ("A1", "K1"):                           # two cells, the same arguments
            book.put("History", address, '=IB_HISTORY("AAPL","176400 S","5 secs","MIDPOINT",FALSE)',
                     lambda a=address: udfs.IB_HISTORY(*HISTORY, caller=("History", a)))
        before, started = gw.received["history"], rt.requests.started
        with delayed(gw, 0.2):
            t = time.perf_counter()
            first = book.evaluate("History", "A1")
            took = time.perf_counter() - t
            assert took < DELAY and first == "#IBXL: loading AAPL history ..."      # before any IB answer
            assert book.evaluate("History", "K1") == first        # shares the request
            handle = next(h for h in rt.requests._running.values() if h.args[0] == "history")
            seen = set()
            while not handle.wait(0.05):                            # what a recalculation would show meanwhile
                shown = udfs.IB_HISTORY(*HISTORY)
                if isinstance(shown, str):                          # (not the table, if it ended just now)
                    seen.add(shown)
            with excel(rt, book) as pump:
                assert pump.wait_for(lambda: all(isinstance(book.shown[("History", a)], list) for a in ("A1", "K1")),
                                     15)
        assert any(re.fullmatch(r"#IBXL: loading AAPL history \(\d+/50 requests\)", s) for s in seen), seen
        assert handle.progress == (50, 50)
        table = book.shown[("History", "A1")]
        assert table[0] == ["Date", "Open", "High", "Low", "Close", "Volume", "WAP", "BarCount"]
        assert len(table) > 20_000 and all(table[i][0] < table[i + 1][0] for i in range(1, len(table) - 1))
        assert book.shown[("History", "K1")] == table
        assert rt.requests.started == started + 1 and gw.received["history"] - before == 50
        # later recalculations answer from the kept table; other arguments are a new request
        assert udfs.IB_HISTORY(*HISTORY) == table and gw.received["history"] - before == 50
        assert udfs.IB_HISTORY("AAPL", "2 D", "1 hour").startswith("#IBXL: loading AAPL history")
        assert rt.requests.started == started + 2


def test_every_function_answers_at_once_while_ib_answers_late_then_fills_in(gw):
    calls = {
        "IB_CONTRACT": lambda: udfs.IB_CONTRACT("SIM0090", "conId", caller=("Sheet1", "A1")),
        "IB_CONTRACT all": lambda: udfs.IB_CONTRACT("SIM0091", "all", caller=("Sheet1", "A2")),
        "IB_QUOTES": lambda: udfs.IB_QUOTES([["SIM0092"], ["SIM0093"]], "bid,ask", caller=("Sheet1", "A3")),
        "IB_POSITIONS": lambda: udfs.IB_POSITIONS(caller=("Sheet1", "A4")),
        "IB_ACCOUNT": lambda: udfs.IB_ACCOUNT("NetLiquidation", caller=("Sheet1", "A5")),
        "IB_PNL": lambda: udfs.IB_PNL(caller=("Sheet1", "A6")),
        "IB_ORDER": lambda: udfs.IB_ORDER("no-such-ref", caller=("Sheet1", "A7")),
        "IB_STATUS": lambda: udfs.IB_STATUS(caller=("Sheet1", "A8")),
        "IB_CHAIN": lambda: udfs.IB_CHAIN("AAPL", "next", 4, caller=("Sheet1", "A9")),
        "IB_EXPIRIES": lambda: udfs.IB_EXPIRIES("AAPL", caller=("Sheet1", "A10")),
        "IB_STRIKES": lambda: udfs.IB_STRIKES("AAPL", "next", caller=("Sheet1", "A11")),
    }
    with runtime(gw) as rt, delayed(gw):
        first, took = {}, {}
        for name, call in calls.items():
            t = time.perf_counter()
            first[name] = call()
            took[name] = time.perf_counter() - t
        assert sum(took.values()) < DELAY, took           # all over before IB's first answer
        # those that need IB are still waiting for it (its first answer is a second away)
        for name in ("IB_CONTRACT", "IB_CONTRACT all", "IB_QUOTES", "IB_POSITIONS", "IB_ACCOUNT", "IB_PNL",
                     "IB_ORDER", "IB_CHAIN", "IB_EXPIRIES", "IB_STRIKES"):
            assert pending(first[name]), (name, first[name])
        settled_ = {name: settled(call, rt, timeout=20) for name, call in calls.items()}
    assert isinstance(settled_["IB_CONTRACT"], int) and settled_["IB_CONTRACT"] > 0
    assert settled_["IB_CONTRACT all"][0] == ["field", "value"] and ["symbol", "SIM0091"] in settled_["IB_CONTRACT all"]
    assert all(isinstance(v, float) or v is None for row in settled_["IB_QUOTES"] for v in row)
    assert settled_["IB_POSITIONS"][0][:3] == ["account", "symbol", "con_id"]
    assert settled_["IB_ACCOUNT"] == pytest.approx(1_000_000.0, rel=0.01)
    assert settled_["IB_PNL"][0] == ["account", "daily", "unrealized", "realized"]
    assert settled_["IB_ORDER"].startswith("#IBXL: no order with Ref 'no-such-ref'")
    assert settled_["IB_STATUS"].startswith("connected 127.0.0.1:")
    assert settled_["IB_CHAIN"][0][10] == "Strike" and len(settled_["IB_CHAIN"]) == 5
    assert all(isinstance(r[0], datetime) for r in settled_["IB_EXPIRIES"])
    assert all(isinstance(r[0], float) for r in settled_["IB_STRIKES"])


def test_ib_errors_come_back_as_text_once_the_request_ends(gw):
    with runtime(gw) as rt:
        assert udfs.IB_CONTRACT("ZZZZ", caller=("Sheet1", "A1")).startswith("#IBXL: loading ZZZZ contract")
        assert rt.requests.wait_idle(10)
        assert udfs.IB_CONTRACT("ZZZZ").startswith("#IB 200: ")
        assert udfs.IB_HISTORY("ZZZZ", "1 D", "1 hour").startswith("#IBXL: loading")
        assert rt.requests.wait_idle(10)
        assert udfs.IB_HISTORY("ZZZZ", "1 D", "1 hour").startswith("#IB 200: ")


def test_every_worksheet_function_skips_the_insert_function_dialog():
    # xlwings' classic decorator records call_in_wizard only on Windows; read the decorators themselves
    nodes = [node for path in sorted(Path(udfs.__file__).parent.glob("*.py"))
             for node in ast.parse(path.read_text(encoding="utf-8")).body]
    decorated = {}
    for node in nodes:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and ast.unparse(d.func) == "xw.func":
                    decorated[node.name] = {k.arg: ast.literal_eval(k.value) for k in d.keywords
                                            if k.arg == "call_in_wizard"}
    assert set(decorated) == set(udfs.__all__) - {"QUOTE_FIELDS"}
    assert all(kw == {"call_in_wizard": False} for kw in decorated.values()), decorated


def test_background_requests_share_keep_and_recalculate_only_on_a_new_answer():
    from addin.app.background import BackgroundRequests
    touched: list[str] = []
    reqs = BackgroundRequests(touched.extend, inline_wait=0.0)
    gate, reported, calls = threading.Event(), threading.Event(), []

    def slow(handle):
        calls.append(handle.key)
        handle.report(1, 2)
        reported.set()
        assert gate.wait(5)
        return [["table"]]
    first = reqs.get(("history", "AAPL"), slow, "AAPL history")
    assert reqs.get(("history", "AAPL"), slow, "AAPL history") is first         # shared while it runs
    assert reported.wait(5) and first.text() == "#IBXL: loading AAPL history (1/2 requests)"
    gate.set()
    assert first.wait(5) and reqs.wait_idle(5) and touched == [first.key]
    assert reqs.get(("history", "AAPL"), slow, "AAPL history") is first and len(calls) == 1   # kept
    # fresh: asked again each time; cells recalculated only when the answer differs
    value = {"v": 1}
    a = reqs.get(("pnl",), lambda h: value["v"], "P&L", fresh=True)
    assert a.wait(5) and reqs.wait_idle(5) and touched[-1] == a.key
    b = reqs.get(("pnl",), lambda h: value["v"], "P&L", fresh=True)
    assert b is not a and b.previous is a and b.wait(5) and reqs.wait_idle(5) and b.key not in touched
    value["v"] = 2
    c = reqs.get(("pnl",), lambda h: value["v"], "P&L", fresh=True)
    assert c.wait(5) and reqs.wait_idle(5) and touched[-1] == c.key and c.result == 2
    # an error is kept error_ttl seconds, then asked again
    def fail(h):
        raise ValueError("no")
    e = reqs.get(("contract", "X"), fail, "X contract")
    assert e.wait(5) and reqs.wait_idle(5) and isinstance(e.error, ValueError)
    assert reqs.get(("contract", "X"), fail, "X contract") is e
    reqs.error_ttl = 0.0
    assert reqs.get(("contract", "X"), fail, "X contract") is not e
    reqs.close()
    with pytest.raises(RuntimeError):
        reqs.get(("contract", "Y"), fail, "Y contract")
