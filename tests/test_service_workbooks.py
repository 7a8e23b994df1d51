"""Workbooks on the ibxl service: the real UDFs, macros and ``ibxl run`` in their own processes, with
no runtime handed to them: each finds (or starts) the user's service the way Excel's UDF servers do.

Counted from the outside: the paper gateway's connections, lines, the orders it received and the error
codes it sent; the saved workbooks read back with openpyxl.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from addin.excel.openpyxl_book import OpenpyxlBook
from addin.paper import PaperGateway
from addin.service.client import ServiceClient, TradingClient
from addin.service.paths import load_or_create_key

from .contracts import stock
from .settle import settled
from .test_service import wait_until

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "workbooks" / "ibxl.xlsx"
CLIENT_ID = 43                      # the service's, from the config file below


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=60, max_lines=200, stream_interval=0.05, account_interval=5.0) as g:
        yield g


@pytest.fixture(scope="module")
def home(gw):
    """The user's ibxl folder: config (the gateway, client id 43, wide risk limits), key, socket, journal.
    Stopping the module ends the service the first workbook started."""
    folder = Path(tempfile.mkdtemp(prefix="ibxl-wb-", dir="/tmp"))          # short: socket paths are limited
    (folder / "config.toml").write_text(
        f"[connection]\nport = {gw.port}\nclient_id = {CLIENT_ID}\n\n"
        "[risk]\nmax_orders_per_minute = 1000\nmax_open_orders = 1000\nmax_position = 100000.0\n")
    yield folder
    pid = folder / "service.pid"
    if pid.exists():
        try:
            os.kill(int(pid.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        wait_until(lambda: not (folder / "service.sock").exists(), 15, "the service to stop")
    shutil.rmtree(folder, ignore_errors=True)


def env(home: Path) -> dict:
    return {**os.environ, "IBXL_SERVICE_DIR": str(home), "IBXL_CONFIG": str(home / "config.toml"),
            "IBXL_JOURNAL": str(home / "journal.sqlite3"), "IBXL_SERVICE": "1", "PYTHONPATH": str(ROOT)}


def key(home: Path) -> bytes:
    return load_or_create_key(home / "service.key", create=False)


def order_book(path: Path, symbol: str, count: int, price: float) -> Path:
    """A copy of the template whose Orders Table holds ``count`` blank-Ref LMT buys of ``symbol``."""
    book = OpenpyxlBook.open(TEMPLATE, out=path)
    columns = book.table("Orders").columns
    row = {"Symbol": symbol, "Action": "BUY", "Quantity": 1, "OrderType": "LMT", "LimitPrice": price, "TIF": "DAY",
           "Transmit": True}
    book.write_table("Orders", pd.DataFrame([{c: row.get(c) for c in columns} for _ in range(count)],
                                            columns=columns))
    config = book.read_table("Config", drop_empty=True)       # the template's 10 a minute / 20 open: 50 here
    wide = {"max_open_orders": 1000, "max_orders_per_minute": 1000, "max_position": 100000}
    config["Value"] = [wide.get(k, v) for k, v in zip(config["Key"], config["Value"])]
    book.write_table("Config", config)
    book.save()
    book.close()
    return path


def refs_in(path: Path) -> list[str]:
    """The Ref column of the saved Orders Table, read back with openpyxl."""
    ws = openpyxl.load_workbook(path)["Orders"]
    header = [c.value for c in ws[1]]
    col = header.index("Ref")
    return [r[col] for r in ws.iter_rows(min_row=2, values_only=True) if r[col]]


# One workbook's UDF server: formulas first (which start the service when none runs), then, on "go",
# the Place orders button.
WORKBOOK = textwrap.dedent("""
    import json, sys
    from udfs import functions as f
    from addin.app import macros
    from addin.app.runtime import get_runtime
    from addin.excel.openpyxl_book import OpenpyxlBook
    path, symbol = sys.argv[1], sys.argv[2]
    from tests.settle import settled      # functions answer at once; evaluate until they filled in
    cells = settled(lambda: [f.IB_QUOTE(s, "bid", caller=(path, "Sheet1", f"A{i + 1}"))
                             for i, s in enumerate(("SIM0001", symbol))], timeout=30)
    bars = settled(lambda: [f.IB_HISTORY("AAPL", f"{300 * k} S", "5 secs", "TRADES", False) for k in range(1, 5)],
                   timeout=60)
    print(json.dumps({"cells": cells, "bars": [len(b) - 1 if isinstance(b, list) else b for b in bars],
                      "runtime": type(get_runtime()).__name__}), flush=True)
    sys.stdin.readline()
    book = OpenpyxlBook.open(path)
    out = macros.place_orders(book)
    book.save()
    print(json.dumps({"status": list(out["Status"]), "refs": list(out["Ref"])}), flush=True)
""")


def test_workbooks_and_ibxl_run_share_one_connection_and_place_each_order_once(gw, home, tmp_path):
    assert not (home / "service.sock").exists()
    base_errors = gw.call(lambda s: dict(s.errors_sent))
    symbols = {"wb1": ("AAPL", 13), "wb2": ("MSFT", 13), "wb3": ("SPY", 12), "run": ("GOOG", 12)}    # 50 orders
    prices = {sym: round(gw.call(lambda s, sym=sym: s.market.quote(s.market.lookup(stock(sym))[0]).bid) * 0.97, 2)
              for sym, _ in symbols.values()}
    books = {name: order_book(tmp_path / f"{name}.xlsx", sym, n, prices[sym]) for name, (sym, n) in symbols.items()}
    kids = {name: subprocess.Popen([sys.executable, "-c", WORKBOOK, str(books[name]), symbols[name][0]], env=env(home),
                                   cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            for name in ("wb1", "wb2", "wb3")}                  # three UDF servers start at once: one service
    try:
        first = {}
        for name, kid in kids.items():
            line = kid.stdout.readline()
            assert line, kid.stderr.read()
            first[name] = json.loads(line)
        for got in first.values():
            assert got["runtime"] == "RemoteRuntime"
            assert all(isinstance(v, float) for v in got["cells"]), got
            assert all(isinstance(n, int) and n > 0 for n in got["bars"]), got      # no "#IB 162"
        assert gw.call(lambda s: sorted(s.clients)) == [CLIENT_ID]                 # ONE API connection
        with ServiceClient(home / "service.sock", key(home)) as c:
            st = c.status()
            assert st["client_id"] == CLIENT_ID and len([x for x in st["clients"] if "formulas" in x["name"]]) == 3
            assert st["lines"] == 4          # SIM0001 in every workbook: one line; AAPL, MSFT, SPY one each
        for kid in kids.values():            # the three Place-orders buttons and ibxl run, at once
            kid.stdin.write("go\n")
            kid.stdin.flush()
        run = subprocess.run([sys.executable, "-m", "addin.app.cli", "run", str(books["run"]), "--orders"],
                             env=env(home), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert "through the ibxl service" in run.stdout, run.stdout + run.stderr
        placed = {}
        for name, kid in kids.items():
            out, err = kid.communicate(timeout=120)
            assert kid.returncode == 0, err
            placed[name] = json.loads(out.splitlines()[-1])
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        for kid in kids.values():
            if kid.poll() is None:
                kid.kill()
    for name, got in placed.items():
        assert got["status"] == ["Submitted"] * symbols[name][1], got
    saved = {name: refs_in(path) for name, path in books.items()}        # written back before anything was sent
    assert sum(len(r) for r in saved.values()) == 50 and len(set().union(*saved.values())) == 50
    received = [r.order.orderRef for r in gw.received_orders() if r.client_id == CLIENT_ID]
    assert sorted(received) == sorted(set().union(*saved.values()))        # each exactly once, nothing else
    errors = gw.call(lambda s: dict(s.errors_sent))
    assert errors.get(326, 0) == base_errors.get(326, 0) and errors.get(162, 0) == base_errors.get(162, 0)
    assert gw.call(lambda s: sorted(s.clients)) == [CLIENT_ID]
    with TradingClient(home / "service.sock", key(home)) as t:
        t.cancel(sorted(received))


def test_disconnect_sticks_across_100_udf_calls_and_connect_restores_every_line(gw, home, tmp_path):
    from addin.app import macros
    from addin.app.runtime import get_runtime, set_runtime, shutdown_runtime
    from udfs import functions as f
    saved_env = {k: os.environ.get(k) for k in ("IBXL_SERVICE_DIR", "IBXL_CONFIG", "IBXL_JOURNAL", "IBXL_SERVICE")}
    os.environ.update({k: v for k, v in env(home).items() if k in saved_env})
    previous = set_runtime(None)
    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "d.xlsx")
    try:
        texts = [f"SIM{k:04d}" for k in range(20, 30)]
        cells = [("d.xlsx", "Sheet1", f"B{i + 1}") for i in range(len(texts))]
        quotes = settled(lambda: [f.IB_QUOTE(t, "bid", caller=c) for t, c in zip(texts, cells)])
        assert all(isinstance(q, float) for q in quotes), quotes
        rt = get_runtime()
        assert type(rt).__name__ == "RemoteRuntime"
        lines = rt.status()["lines"]
        macros.disconnect(book)
        wait_until(lambda: CLIENT_ID not in gw.call(lambda s: set(s.clients)), 10, "the service off the gateway")
        answers = []
        for i in range(100):                              # formulas recalculating while disconnected
            t, c = texts[i % len(texts)], cells[i % len(cells)]
            answers.append(f.IB_QUOTE(t, "bid", caller=c) if i % 4 else f.IB_HISTORY("AAPL", "1 D", "1 hour"))
        assert answers == ["#IBXL: disconnected (press Connect)"] * 100
        assert CLIENT_ID not in gw.call(lambda s: set(s.clients))        # nothing reconnected
        with pytest.raises(Exception, match="disconnected"):
            macros.place_orders(book)                      # a button other than Connect does not reconnect
        assert CLIENT_ID not in gw.call(lambda s: set(s.clients))
        macros.connect(book)
        assert CLIENT_ID in gw.call(lambda s: set(s.clients))
        wait_until(lambda: rt.status()["lines"] == lines, 10, "every line restored")
        wait_until(lambda: all(isinstance(f.IB_QUOTE(t, "bid", caller=c), float) for t, c in zip(texts, cells)),
                   10, "the formulas ticking again")
    finally:
        book.close()
        shutdown_runtime()
        set_runtime(previous)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def working_refs(gw) -> set[str]:
    return set(gw.call(lambda s: [order.orderRef for _, order, _ in s.broker.open_orders()]))


# A workbook that placed an order and shows 50 quotes, then waits to be killed.
VICTIM = textwrap.dedent("""
    import sys
    from udfs import functions as f
    from addin.app.runtime import get_runtime
    ref, price = sys.argv[1], float(sys.argv[2])
    from tests.settle import settled      # functions answer at once; evaluate until they filled in
    cells = settled(lambda: [f.IB_QUOTE(f"SIM{k:04d}", "bid", caller=("victim.xlsx", "Sheet1", f"A{k}"))
                             for k in range(1, 51)], timeout=30)
    out = get_runtime().orders.place([{"Ref": ref, "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                                       "OrderType": "LMT", "LimitPrice": price}], source="victim")
    print(out.loc[0, "Status"], sum(isinstance(c, float) for c in cells), flush=True)
    sys.stdin.read()
""")


def test_a_workbook_killed_mid_session_leaves_its_order_working_and_frees_its_lines(gw, home):
    price = round(gw.call(lambda s: s.market.quote(s.market.lookup(stock("AAPL"))[0]).bid) * 0.97, 2)
    with ServiceClient(home / "service.sock", key(home)) as survivor:     # another workbook, ticking
        survivor.quote("MSFT", timeout=5)
        base = survivor.status()["lines"]
        victim = subprocess.Popen([sys.executable, "-c", VICTIM, "VICTIM-1", str(price)], env=env(home), cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = victim.stdout.readline()
        assert line.split() == ["Submitted", "50"], victim.stderr.read()
        assert survivor.status()["lines"] == base + 50
        service_pid = survivor.service_pid
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        wait_until(lambda: survivor.status()["lines"] == base, 10, "the killed workbook's 50 lines released")
        assert survivor.service_pid == service_pid and survivor.status()["state"] == "connected"
        version = survivor.push_version
        wait_until(lambda: survivor.push_version > version, 5, "MSFT still pushed to the other workbook")
        assert "VICTIM-1" in working_refs(gw)                              # its order works on at IB
    victim.stdout.close(), victim.stderr.close(), victim.stdin.close()
    with TradingClient(home / "service.sock", key(home)) as t:
        t.cancel(["VICTIM-1"])


def test_two_workbooks_share_one_risk_view(gw, home):
    """Each workbook's Config allows a position of 3; each order alone passes; together they would
    exceed it, so the second is refused, whichever workbook sends it."""
    price = round(gw.call(lambda s: s.market.quote(s.market.lookup(stock("MSFT"))[0]).bid) * 0.97, 2)
    config = {"max_position": 3}
    row = {"Symbol": "MSFT", "Action": "BUY", "Quantity": 2, "OrderType": "LMT", "LimitPrice": price}
    with TradingClient(home / "service.sock", key(home), name="book A") as a, \
            TradingClient(home / "service.sock", key(home), name="book B") as b:
        first = a.place_orders([{**row, "Ref": "RISK-A"}], source="A.xlsx!Orders", config=config)
        second = b.place_orders([{**row, "Ref": "RISK-B"}], source="B.xlsx!Orders", config=config)
        assert first.loc[0, "Status"] == "Submitted"
        assert second.loc[0, "Status"] == "Refused" and second.loc[0, "Message"].startswith("max_position")
        a.cancel(["RISK-A"])
    assert "RISK-B" not in {r.order.orderRef for r in gw.received_orders()}


def test_a_dropped_gateway_connection_is_restored_without_connect(gw, home):
    with ServiceClient(home / "service.sock", key(home)) as c:
        c.quote("SIM0040", timeout=5)
        before = gw.call(lambda s: id(s.clients[CLIENT_ID]))
        gw.drop_connections()
        # the reconnect may be quicker than any poll of the service's state: the gateway sees a new socket
        wait_until(lambda: gw.call(lambda s: CLIENT_ID in s.clients and id(s.clients[CLIENT_ID]) != before), 30,
                   "the service's automatic reconnect (a new connection at the gateway)")
        wait_until(lambda: c.status()["state"] == "connected", 15, "the service connected again")
        assert c.status()["user_disconnected"] is False
        version = c.push_version
        wait_until(lambda: c.push_version > version and not c.board.get(c.quote("SIM0040").symbol).stale, 15,
                   "SIM0040 ticking again")
