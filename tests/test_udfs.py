"""udfs: the worksheet functions, called as xlwings calls them (plain Python calls with Excel's kinds of
arguments) against a Runtime connected to the paper gateway through the real ibapi client. Errors come
back as text with IB's code; no function can place, modify or cancel an order (the gateway counts
every order message it receives while every UDF runs with every argument combination).

No function waits for IB (tests/test_udfs_nonblocking.py times that): a first call may answer
"#IBXL: waiting ..." / "#IBXL: loading ..." while its request runs in the background. ``settled``
(tests/settle.py) evaluates as the pump would have Excel do: again after the background requests
ended and the board changed, until the answer is no longer a waiting text."""

from __future__ import annotations

import os

# xlwings registers its remote engine at import, when a licence key is set (noncommercial is free)
os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import itertools
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

import udfs
from addin.app.runtime import READ_ONLY_METHODS, ReadOnlyRuntime, Runtime, set_runtime
from addin.excel.pump import Pump
from addin.paper import PaperGateway
from benchmarks.sinks import CountingBook
from udfs import functions

from .contracts import listed_es
from .gateway_wire import count_messages
from .settle import pending, settled

ORDER_MESSAGES = {3: "placeOrder", 4: "cancelOrder", 58: "reqGlobalCancel"}


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        gateway.order_messages = count_messages(gateway, ORDER_MESSAGES)
        yield gateway


@pytest.fixture(scope="module")
def rt(gw):
    runtime = Runtime(port=gw.port, client_id=51, first_quote_wait=5.0)
    runtime.connect()
    previous = set_runtime(runtime)
    yield runtime
    set_runtime(previous)
    runtime.close()


def test_ib_quote_returns_the_boards_values_and_registers_its_cell(rt):
    bid = settled(lambda: udfs.IB_QUOTE("AAPL", "bid", caller=("Quotes", "$B$2")))
    assert isinstance(bid, float) and bid > 0
    q = rt.market.board.wait_priced("AAPL.NASDAQ", 10)
    assert q.bid is not None and q.ask > q.bid
    size = settled(lambda: udfs.IB_QUOTE("AAPL", "Bid Size", caller=("Quotes", "$C$2")))
    assert isinstance(size, float) and size > 0
    assert isinstance(settled(lambda: udfs.IB_QUOTE("EUR/USD")), float)   # price: mid when nothing trades
    assert isinstance(udfs.IB_QUOTE("AAPL", "updated"), datetime)
    assert udfs.IB_QUOTE("AAPL", "updated").tzinfo is None         # naive UTC for Excel
    assert rt.registry.changed(["AAPL.NASDAQ"]) == {"Quotes": ["B2", "C2"]}


def test_quote_errors_are_text_with_ibs_code(rt):
    assert settled(lambda: udfs.IB_QUOTE("ZZZZ")).startswith("#IB 200: No security definition")
    assert "ZZZZ" in udfs.IB_QUOTE("ZZZZ")
    assert udfs.IB_QUOTE("AAPL", "colour").startswith("#IBXL: field: 'colour' is not one of")
    assert udfs.IB_QUOTE("#N/A") == "#IBXL: symbol: the cell holds the error #N/A"
    assert udfs.IB_QUOTE(None).startswith("#IBXL: symbol: empty")
    grammar = settled(lambda: udfs.IB_QUOTE("AAPL 2026 C"))
    assert grammar.startswith("#IBXL: ") and not pending(grammar)    # the grammar's own error, no IB code


def test_ib_quotes_is_two_dimensional_with_errors_in_their_rows(rt):
    out = settled(lambda: udfs.IB_QUOTES([["AAPL"], ["ZZZZ"], ["EUR/USD"]], "bid, ask,last", caller=("Quotes", "$E$2")))
    assert len(out) == 3 and all(len(r) == 3 for r in out)
    assert all(isinstance(v, float) for v in out[0])
    assert all(v.startswith("#IB 200:") for v in out[1])
    assert isinstance(out[2][0], float) and out[2][2] is None      # FX has no last trade
    assert settled(lambda: udfs.IB_QUOTES("MSFT")) and len(udfs.IB_QUOTES("MSFT")[0]) == 3
    # A field's first tick may come after the line is priced (volume follows bid and ask): the UDF shows
    # what the board holds, blank until then. Wait on the board for it, then the UDF returns it.
    settled(lambda: udfs.IB_QUOTES(["AAPL", "MSFT"], [["bid", "volume"]]))
    board, deadline = rt.market.board, time.monotonic() + 10
    while (board.get("MSFT.NASDAQ") is None or board.get("MSFT.NASDAQ").volume is None) and time.monotonic() < deadline:
        board.wait(board.version, deadline - time.monotonic())
    assert udfs.IB_QUOTES(["AAPL", "MSFT"], [["bid", "volume"]])[1][1] > 0
    assert rt.registry.changed(["EUR/USD"]) == {"Quotes": ["E2"]}


def test_quote_formula_cells_are_recalculated_by_the_pump(rt):
    book = CountingBook({"Quotes": []})
    book.set_formula("Quotes", "B2", '=IB_QUOTE("AAPL","bid")')
    book.set_formula("Quotes", "C2", '=IB_QUOTE("AAPL","Bid Size")')
    book.set_formula("Quotes", "E2", '=IB_QUOTES(A2:A4,"bid,ask,last")')
    pump = Pump(rt.market.board, book, registry=rt.registry, watchlist=None, orders=None, interval=0.05)
    pump.start()
    try:
        assert pump.wait_for(lambda: any({"B2", "C2"} <= set(args[1]) for args in book.calls_of("calculate")), 10)
    finally:
        pump.stop()
    # every calculate call is one call for the sheet's changed cells, never the whole workbook
    assert all(args[0] == "Quotes" and set(args[1]) <= {"B2", "C2", "E2"} for args in book.calls_of("calculate"))


def test_ib_history_has_a_header_row(rt):
    out = settled(lambda: udfs.IB_HISTORY("AAPL", "2 D", "1 hour", "TRADES", True))
    assert out[0] == ["Date", "Open", "High", "Low", "Close", "Volume", "WAP", "BarCount"]   # as the README shows
    assert len(out) > 5 and isinstance(out[1][0], datetime) and out[1][0].tzinfo is None
    assert all(out[i][0] < out[i + 1][0] for i in range(1, len(out) - 1))
    assert udfs.IB_HISTORY("AAPL", "1 D", "7 min").startswith("#IBXL: bar_size")
    assert udfs.IB_HISTORY("AAPL", use_rth="maybe").startswith("#IBXL: use_rth")
    assert settled(lambda: udfs.IB_HISTORY("ZZZZ")).startswith("#IB 200:")


def test_ib_contract(rt, gw):
    assert settled(lambda: udfs.IB_CONTRACT("AAPL")) == "AAPL.NASDAQ"
    assert settled(lambda: udfs.IB_CONTRACT("AAPL", "conId")) == 265598
    front = listed_es(gw)[0]
    assert settled(lambda: udfs.IB_CONTRACT(f"es {front.last_trade_date[:6]} cme")) == front.text
    assert settled(lambda: udfs.IB_CONTRACT("ES.CME")) == front.text          # no month: the front month
    assert settled(lambda: udfs.IB_CONTRACT(front.text, "multiplier")) == "50"
    table = settled(lambda: udfs.IB_CONTRACT("EUR/USD", "all"))
    assert table[0] == ["field", "value"] and ["sectype", "CASH"] in table
    assert udfs.IB_CONTRACT("AAPL", "nonsense").startswith("#IBXL: field:")
    assert settled(lambda: udfs.IB_CONTRACT("ZZZZ")).startswith("#IB 200:")


def test_portfolio_functions(rt):
    pos = settled(udfs.IB_POSITIONS)
    assert pos[0][:3] == ["account", "symbol", "con_id"]
    assert settled(lambda: udfs.IB_ACCOUNT("NetLiquidation")) == pytest.approx(1_000_000.0, rel=0.01)
    assert udfs.IB_ACCOUNT("netliquidation") == udfs.IB_ACCOUNT("NetLiquidation")
    assert udfs.IB_ACCOUNT("NoSuchTag").startswith("#IBXL: tag: 'NoSuchTag' is not in the account summary")
    table = udfs.IB_ACCOUNT()
    assert table[0] == ["account", "tag", "value", "currency"] and len(table) > 5
    pnl = settled(udfs.IB_PNL)
    assert pnl[0] == ["account", "daily", "unrealized", "realized"] and pnl[1][0] == rt.account()
    assert settled(lambda: udfs.IB_ORDER("no-such-ref")).startswith("#IBXL: no order with Ref 'no-such-ref'")
    status = settled(udfs.IB_STATUS)
    assert status.startswith(f"connected 127.0.0.1:{rt.session.port} client 51; paper DU")


def test_udfs_carry_excel_help_text():
    # xlwings' decorators record help text only where a UDF runtime exists (Windows COM, or the
    # xlwings server); on Linux the server flavour is the real one, so read the metadata there.
    script = ("import json, udfs\n"
              "print(json.dumps({n: {'doc': getattr(udfs, n).__xlfunc__['ret']['doc'],\n"
              "                      'args': {a['name']: a['doc'] for a in getattr(udfs, n).__xlfunc__['args']}}\n"
              "                  for n in udfs.__all__}))")
    env = dict(os.environ, XLWINGS_ON_SERVER="true", XLWINGS_LICENSE_KEY="noncommercial")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert set(info) == set(udfs.__all__)
    for name, meta in info.items():
        assert 20 < len(meta["doc"].split("\n")[0]) <= 255, name          # Excel's description limit
        for arg, doc in meta["args"].items():
            if arg != "caller":
                assert not doc.startswith("Positional argument") and len(doc) <= 255, (name, arg)
    # Excel sees the five arguments; xlwings fills the reserved last one, caller, with the calling cell
    assert list(info["IB_HISTORY"]["args"]) == ["symbol", "duration", "bar_size", "what_to_show", "use_rth",
                                                "caller"]


def test_no_udf_can_place_modify_or_cancel_an_order(gw, rt):
    # The facade UDFs get has reading methods only, and cannot be given more.
    facade = rt.readonly()
    assert isinstance(facade, ReadOnlyRuntime)
    public = {n for n in dir(facade) if not n.startswith("__")}
    assert public == set(READ_ONLY_METHODS)
    for bad in ("orders", "session", "place", "cancel", "cancel_all", "kill", "modify", "market", "start_pump"):
        assert not hasattr(facade, bad)
    with pytest.raises(AttributeError):
        facade.orders = object()
    # Every UDF with every combination of arguments sends no order message to the gateway.
    before = dict(gw.order_messages)
    orders_before = len(gw.received_orders())
    symbols = ["AAPL", "ZZZZ", "#N/A", None, 265598, "conid:265598", "EUR/USD", ""]
    fields = [None, "bid", "all", "Status", "nonsense", "NetLiquidation"]
    for sym, field in itertools.product(symbols, fields):
        udfs.IB_QUOTE(sym, field)
        udfs.IB_QUOTES([sym, "MSFT"], field)
        udfs.IB_CONTRACT(sym, field)
        udfs.IB_ORDER(sym, field)
        udfs.IB_ACCOUNT(field)
    for sym in symbols[:3]:
        udfs.IB_HISTORY(sym, "1 D", "1 hour", "MIDPOINT", False)
    udfs.IB_POSITIONS(), udfs.IB_PNL(), udfs.IB_STATUS()
    rt.session.send(lambda c: c.reqCurrentTime())      # a round trip: everything sent has arrived
    rt.portfolio.open_orders()
    assert dict(gw.order_messages) == before and len(gw.received_orders()) == orders_before
    # and the module reaches IB only through the facade
    assert "OrderDesk" not in vars(functions) and "Session" not in vars(functions)


def test_the_process_wide_runtime_is_created_once_from_the_users_config(gw, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from addin.app.runtime import get_runtime, shutdown_runtime
    config = tmp_path / "config.toml"
    config.write_text(f"[connection]\nhost = \"127.0.0.1\"\nport = {gw.port}\nclient_id = 52\nservice = false\n",
                      encoding="utf-8")
    monkeypatch.setenv("IBXL_CONFIG", str(config))
    previous = set_runtime(None)
    try:
        with ThreadPoolExecutor(8) as pool:          # Excel calls UDFs from several threads at once
            made = list(pool.map(lambda _: get_runtime(), range(8)))
        assert len({id(r) for r in made}) == 1
        assert settled(udfs.IB_STATUS).startswith(f"connected 127.0.0.1:{gw.port} client 52;")
        shutdown_runtime()
        assert made[0].closed and made[0].session.status.state == "disconnected"
    finally:
        shutdown_runtime()
        set_runtime(previous)


def test_after_disconnect_formulas_say_so_until_connect_in_process_too(rt):
    from addin.app.macros import _connected
    from addin.app.runtime import UserDisconnected
    assert isinstance(settled(lambda: udfs.IB_QUOTE("MSFT", "bid", caller=("Quotes", "$C$9"))), float)
    rt.disconnect()
    try:
        answers = [udfs.IB_QUOTE("MSFT", "bid", caller=("Quotes", "$C$9")) for _ in range(20)]
        answers.append(udfs.IB_HISTORY("AAPL", "1 D", "1 hour"))
        assert answers == ["#IBXL: disconnected (press Connect)"] * 21
        assert not rt.session.connected                     # no formula reconnected
        with pytest.raises(UserDisconnected):
            _connected(rt)                                  # nor a button other than Connect
    finally:
        rt.connect()
    assert isinstance(settled(lambda: udfs.IB_QUOTE("MSFT", "bid", caller=("Quotes", "$C$9"))), float)
