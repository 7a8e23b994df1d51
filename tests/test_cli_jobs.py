"""The main job as a user runs it: ``ibxl demo``, ``ibxl run`` on a workbook it has never seen, and
``ibxl check`` — the installed console script against a real paper gateway, and the output workbooks
read back with openpyxl and checked against the gateway's own state."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta, timezone
from pathlib import Path

import openpyxl
import pytest
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.table import Table

from addin.app.jobs import format_summary, run_demo
from addin.paper import PaperGateway
from addin.paper.market.market import BarSpec, on_tick_grid

from .ibclient import IBTestClient
from .test_paper_cli import ibxl_command

GOOD = {"DEMO-001", "DEMO-002", "DEMO-003", "DEMO-004", "DEMO-005", "DEMO-006", "DEMO-007"}


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


def table_rows(ws, name: str) -> list[dict]:
    """A Table's body as dicts keyed by header (empty rows dropped)."""
    ref = ws.tables[name].ref
    rows = list(ws[ref])
    header = [c.value for c in rows[0]]
    out = []
    for row in rows[1:]:
        values = [c.value for c in row]
        if any(v not in (None, "") for v in values):
            out.append(dict(zip(header, values)))
    return out


def run_cli(*args: str, env_extra: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(ibxl_command() + list(args), capture_output=True, text=True, timeout=timeout, env=env)


# --- ibxl demo ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(gw, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.xlsx"
    lines: list[str] = []
    summary = run_demo(out, seconds=2.0, echo=lines.append, gateway=gw)
    return summary, openpyxl.load_workbook(out), lines


def test_demo_succeeds_and_saves(demo):
    summary, wb, lines = demo
    assert summary.ok, summary.steps
    assert [s.name for s in summary.steps] == ["stream", "history", "orders", "audit", "portfolio", "analysis",
                                               "samples"]
    assert len(summary.verdicts) == 12 and all(v.ok for v in summary.verdicts), summary.verdicts
    assert any(line.startswith("saved ") for line in lines)
    assert {"Watchlist", "History", "Orders", "Portfolio", "Executions"} <= set(wb.sheetnames)


def test_demo_buys_a_listed_option_and_shows_its_greeks(demo):
    """DEMO-007's contract is chosen at run time (a listed AAPL call a week or more ahead, the strike
    nearest the money): it fills, and its position shows IB's delta for the whole position (between 0 and
    contracts x multiplier shares)."""
    _, wb, _ = demo
    row = next(r for r in table_rows(wb["Orders"], "Orders") if r["Ref"] == "DEMO-007")
    words = row["Symbol"].split()
    assert row["Status"] == "Filled" and words[0] == "AAPL" and words[3] == "C" and len(words[1]) == 8
    pos = next(r for r in table_rows(wb["Portfolio"], "Positions") if r["Symbol"] == row["Symbol"])
    assert pos["SecType"] == "OPT" and pos["Position"] == 2 and pos["Underlying"] == "AAPL"
    assert 0 < pos["Delta"] < 2 * 100 and pos["MarketValue"] == pytest.approx(2 * 100 * pos["MarketPrice"])


def test_demo_analysis_sheet_shows_the_positions(demo):
    """The Analysis sheet's per-position P&L holds, for All, exactly the instruments of the Positions
    Table; the correlation matrix has one row and one column per holding."""
    _, wb, _ = demo
    positions = {r["Symbol"] for r in table_rows(wb["Portfolio"], "Positions") if r["Position"]}
    pnl = table_rows(wb["Analysis"], "PositionPnL")
    assert positions and {r["Symbol"] for r in pnl if r["Account"] == "All"} == positions
    matrix = table_rows(wb["Analysis"], "Correlation")
    assert len(matrix) == len(wb["Analysis"].tables["Correlation"].tableColumns) - 1 >= 1


def test_demo_audit_table_tells_each_good_orders_story_newest_first(demo):
    """The run rewrote the Audit Table after placing: every sent order's intent, placeOrder and IB's
    statuses; the filled market order's fill and commission; nothing of the refused rows."""
    summary, wb, _ = demo
    rows = table_rows(wb["Audit"], "Audit")
    assert len(rows) == len(summary.audit) and rows
    # newest first by this machine's clock; a fill shows IB's execution time (whole seconds, IB's clock:
    # the paper gateway stamps a fill with its replay second), so it is checked against its own second
    ours = [r["Time"] for r in rows if r["Time"] is not None and r["Event"] not in ("fill", "commission")]
    assert ours == sorted(ours, reverse=True)
    for i, r in enumerate(rows):
        if r["Event"] == "fill":                          # after its order was sent, within IB's second
            placed = next(x["Time"] for x in rows[i:] if x["Ref"] == r["Ref"] and x["Event"] == "place")
            assert r["Time"] is not None and r["Time"] >= placed.replace(microsecond=0) - timedelta(seconds=1)
    events = {ref: [r["Event"] for r in reversed(rows) if r["Ref"] == ref] for ref in GOOD}
    for ref, seen in events.items():
        assert seen[:2] == ["intent", "place"] and "status" in seen, (ref, seen)
    assert {"fill", "commission"} <= set(events["DEMO-001"])
    assert not any(str(r["Ref"]).startswith("BAD-") for r in rows)
    fill = next(r for r in rows if r["Ref"] == "DEMO-001" and r["Event"] == "fill")
    assert fill["Detail"].startswith("BOT 10 @ ") and fill["Quantity"] == 10


def test_demo_watchlist_quotes_are_on_the_tick_grid_inside_the_real_range(gw, demo):
    _, wb, _ = demo
    quotes = table_rows(wb["Watchlist"], "Watchlist")
    assert len(quotes) >= 8
    now = gw.call(lambda s: s.market.now())
    for q in quotes:
        con_id = gw.call(lambda s, sym=q["Symbol"]: _con_id_of(s, sym))
        inst = gw.call(lambda s, con_id=con_id: s.market.by_con_id(con_id))
        bars = gw.call(lambda s, inst=inst: s.market.bars(inst, now - timedelta(days=365 * 15),
                                                          now + timedelta(seconds=1), BarSpec(seconds=86400),
                                                          "TRADES" if inst.sec_type != "CASH" else "MIDPOINT",
                                                          False))
        low, high = min(b.low for b in bars), max(b.high for b in bars)
        numbers = [q[f] for f in ("Bid", "Ask", "Last") if q.get(f) is not None]
        assert numbers, f"{q['Symbol']}: no prices streamed"
        for v in numbers:
            assert isinstance(v, (int, float)), (q["Symbol"], v)
            assert on_tick_grid(v, inst.min_tick), (q["Symbol"], v, inst.min_tick)
            spread = 10 * inst.min_tick       # bid/ask sit a spread around the replayed trades
            assert low - spread <= v <= high + spread, (q["Symbol"], v, low, high)
        assert q["DataType"] == "live"


def _con_id_of(server, symbol: str) -> int:
    from addin.ib.contracts import parse
    contract = parse(symbol).to_contract()
    found = server.market.lookup(contract)
    if contract.secType == "FUT" and not contract.lastTradeDateOrContractMonth:     # ES.CME: the front month
        found = [min(found, key=lambda i: i.contract.lastTradeDateOrContractMonth)]
    assert len(found) == 1, (symbol, found)
    return found[0].con_id


def test_demo_history_equals_the_gateways_bars(gw, demo):
    _, wb, _ = demo
    bars = table_rows(wb["History"], "Bars")
    assert len(bars) > 200
    goog = gw.call(lambda s: s.market.by_con_id(208813720))
    first = bars[0]["Date"].replace(tzinfo=timezone.utc)
    # Up to the last bar pulled: a new day may have begun at the gateway since (the demo can run across
    # midnight in New York).
    end = bars[-1]["Date"].replace(tzinfo=timezone.utc) + timedelta(days=1)     # its day, in UTC terms
    theirs = gw.call(lambda s: s.market.bars(goog, first, end, BarSpec(seconds=86400), "TRADES", True))
    # The price chart plots every bar (the template's chart covered one empty row).
    series = wb["History"]._charts[0].series[0]
    assert series.val.numRef.f.endswith(f"$2:$H${len(bars) + 1}"), series.val.numRef.f
    assert series.cat.numRef.f.endswith(f"$2:$D${len(bars) + 1}"), series.cat.numRef.f
    # The bar in progress moves with the replay: compare the complete ones.
    assert len(theirs) == len(bars)
    for mine, ref in zip(bars[:-1], theirs[:-1]):
        assert mine["Date"].date() == ref.time.date()
        assert (mine["Open"], mine["High"], mine["Low"], mine["Close"]) == (ref.open, ref.high, ref.low, ref.close)


def test_demo_orders_good_rows_reach_the_gateway_bad_rows_carry_reasons(gw, demo):
    _, wb, _ = demo
    rows = {r["Ref"]: r for r in table_rows(wb["Orders"], "Orders")}
    for ref in GOOD:
        r = rows[ref]
        assert r["Status"] in ("Filled", "Submitted", "PreSubmitted"), r
        assert isinstance(r["OrderId"], int) and isinstance(r["PermId"], int) and r["PermId"] > 0, r
    assert rows["DEMO-001"]["Status"] == "Filled" and rows["DEMO-001"]["Filled"] == 10
    assert rows["DEMO-001"]["Commission"] > 0 and rows["DEMO-001"]["AvgFillPrice"] > 0
    bad = {ref: r for ref, r in rows.items() if ref.startswith("BAD-")}
    assert len(bad) == 5
    for r in bad.values():
        assert r["Status"] in ("Refused", "Error"), r
        assert r["Message"] and r["OrderId"] is None, r
    assert bad["BAD-QUANTITY-TOO-BIG"]["Message"].startswith("max_quantity")
    assert bad["BAD-PRICE-FAR-OFF"]["Message"].startswith("price_band")
    assert bad["BAD-OFF-TICK-GRID"]["Message"].startswith("tick_grid")
    assert bad["BAD-TEXT-QUANTITY"]["Message"].startswith("Quantity")
    assert bad["BAD-UNKNOWN-SYMBOL"]["Message"].startswith("Symbol") and "ZZZZ" in bad["BAD-UNKNOWN-SYMBOL"]["Message"]
    # The gateway's side: exactly the good rows (the bracket as entry + two children), once each.
    refs = [o.order.orderRef for o in gw.received_orders() if o.order.orderRef.startswith(("DEMO", "BAD"))]
    assert sorted(refs) == sorted(GOOD | {"DEMO-004.TP", "DEMO-004.SL"})


def test_demo_prices_come_from_the_quote_at_placement_and_sit_on_the_tick_grid(gw, demo):
    """The sample rows carry no fixed prices: each is written from the quote when placed, so the
    verdicts hold at any hour. Checked against the orders the gateway received."""
    _, wb, _ = demo
    rows = {r["Ref"]: r for r in table_rows(wb["Orders"], "Orders")}
    got = {o.order.orderRef: o.order for o in gw.received_orders() if o.order.orderRef.startswith("DEMO")}
    entry, tp, sl = rows["DEMO-004"]["LimitPrice"], rows["DEMO-004"]["TakeProfit"], rows["DEMO-004"]["StopLoss"]
    assert (got["DEMO-004"].lmtPrice, got["DEMO-004.TP"].lmtPrice, got["DEMO-004.SL"].auxPrice) == (entry, tp, sl)
    assert tp == pytest.approx(entry * 1.03, abs=0.01) and sl == pytest.approx(entry * 0.97, abs=0.01)
    assert got["DEMO-002"].lmtPrice == rows["DEMO-002"]["LimitPrice"] and got["DEMO-003"].auxPrice == rows[
        "DEMO-003"]["StopPrice"]
    for price in (entry, tp, sl, rows["DEMO-002"]["LimitPrice"], rows["DEMO-003"]["StopPrice"]):
        assert on_tick_grid(price, 0.01), price
    assert not on_tick_grid(rows["BAD-OFF-TICK-GRID"]["LimitPrice"], 0.01)


def test_demo_fails_when_a_good_row_is_refused(tmp_path):
    """A good sample row that does not reach IB makes the demo fail, with a line that names it."""
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        gateway.reject_next_order("no trading permission (fault injected by the test)")
        lines: list[str] = []
        summary = run_demo(tmp_path / "demo.xlsx", seconds=0.5, echo=lines.append, gateway=gateway)
    assert not summary.ok
    failed = [v for v in summary.verdicts if not v.ok]
    assert [v.ref for v in failed] == ["DEMO-001"] and "a good row must reach IB" in failed[0].line
    assert any(line.startswith("  samples: FAILED: DEMO-001") for line in lines), lines
    assert "some steps FAILED" in format_summary(summary) and "[FAILED] DEMO-001" in format_summary(summary)


def test_demo_positions_and_account_are_consistent_with_the_fills(demo):
    _, wb, _ = demo
    rows = {r["Ref"]: r for r in table_rows(wb["Orders"], "Orders")}
    # DEMO-001 (MKT) fills; DEMO-004's entry at the ask fills too unless the ask moved up first.
    fills = [rows[ref] for ref in ("DEMO-001", "DEMO-004") if rows[ref]["Status"] == "Filled"]
    assert rows["DEMO-001"] in fills
    positions = {r["Symbol"]: r for r in table_rows(wb["Portfolio"], "Positions")}
    aapl = positions["AAPL"]
    shares = sum(f["Filled"] for f in fills)
    assert aapl["Position"] == shares == 10 * len(fills)
    # IB's average cost includes the commission.
    cost = sum(f["AvgFillPrice"] * f["Filled"] + f["Commission"] for f in fills)
    assert aapl["AvgCost"] == pytest.approx(cost / shares, abs=1e-6)
    account = {(r["Tag"], r["Currency"]): r["Value"] for r in table_rows(wb["Portfolio"], "Account")}
    assert any(tag == "NetLiquidation" for tag, _ in account)
    execs = table_rows(wb["Executions"], "Executions")
    assert any(e.get("Symbol") == "AAPL" and e.get("Shares") == 10 for e in execs), execs


def test_ibxl_demo_console_script(tmp_path):
    """As a new user runs it: the installed command, its own embedded gateway, exit 0, a summary."""
    out = tmp_path / "mine.xlsx"
    r = run_cli("demo", "--out", str(out), "--seconds", "1", env_extra={"IBXL_CONFIG": str(tmp_path / "none.toml")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all steps succeeded" in r.stdout and "Orders:" in r.stdout and "max_quantity" in r.stdout
    assert openpyxl.load_workbook(out)["Orders"].tables["Orders"]


# --- ibxl run on a workbook it has never seen ---------------------------------------------------------
def user_workbook(path: Path) -> dict:
    """A user's own workbook: a Notes sheet with formulas and formats, a Watchlist Table with only
    Symbol and Last, off at D3, and an Orders Table with a good row and a bad one."""
    wb = openpyxl.Workbook()
    notes = wb.active
    notes.title = "Notes"
    notes["A1"] = "My trading notes"
    notes["A1"].font = Font(bold=True, size=14)
    notes["A2"] = 3
    notes["B2"] = "=A2*2"
    notes["C2"] = 0.25
    notes["C2"].number_format = "0.0%"
    notes["C2"].fill = PatternFill("solid", fgColor="FFFF00")
    ws = wb.create_sheet("Watchlist")
    ws["D3"], ws["E3"] = "Symbol", "Last"
    ws["D4"], ws["D5"] = "AAPL", "EUR/USD"
    ws.add_table(Table(displayName="Watchlist", ref="D3:E5"))
    ws["A1"] = "=SUM(1,2)"
    orders = wb.create_sheet("Orders")
    cols = ["Ref", "Account", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "TIF", "Status",
            "OrderId", "Filled", "Message"]
    orders.append(cols)
    orders.append(["U-1", None, "MSFT", "buy", 2.0, "mkt", None, "DAY"])
    orders.append([None, None, "AAPL", "BUY", "#N/A", "MKT", None, "DAY"])
    orders.add_table(Table(displayName="Orders", ref=f"A1:{openpyxl.utils.get_column_letter(len(cols))}3"))
    wb.save(path)
    return {"notes": [(c.coordinate, c.value, c.number_format, c.font.b, c.fill.fgColor.rgb)
                      for row in notes.iter_rows() for c in row]}


def test_ibxl_run_on_a_users_workbook_does_its_jobs_and_leaves_the_rest(gw, tmp_path):
    path = tmp_path / "user.xlsx"
    before = user_workbook(path)
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "77", "--stream", "1", "--orders",
                "--portfolio", env_extra={"IBXL_CONFIG": str(tmp_path / "config.toml")})
    # The row with #N/A errored, so the orders step fails and the exit code says so (issue 12: it was 0).
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[FAILED] orders: OrdersNotAllPlaced: 2 rows read, 1 sent, 1 error; row 3: Error: Quantity" in r.stdout
    assert "[ok] stream" in r.stdout and "[ok] portfolio" in r.stdout
    assert "audit" not in r.stdout                      # no Audit Table: left alone, no step
    wb = openpyxl.load_workbook(path)
    notes = wb["Notes"]
    assert [(c.coordinate, c.value, c.number_format, c.font.b, c.fill.fgColor.rgb)
            for row in notes.iter_rows() for c in row] == before["notes"]
    assert wb["Watchlist"]["A1"].value == "=SUM(1,2)"
    quotes = table_rows(wb["Watchlist"], "Watchlist")
    assert [q["Symbol"] for q in quotes] == ["AAPL", "EUR/USD"]
    assert type(quotes[0]["Last"]) in (int, float)    # a whole price (230.00) reads back as int
    assert wb["Watchlist"].tables["Watchlist"].ref == "D3:E5"       # the user's columns, no more
    rows = table_rows(wb["Orders"], "Orders")
    assert rows[0]["Ref"] == "U-1" and rows[0]["Status"] == "Filled" and rows[0]["Filled"] == 2
    assert rows[1]["Status"] == "Error" and rows[1]["Message"].startswith("Quantity")
    assert [o.order.orderRef for o in gw.received_orders() if o.client_id == 77] == ["U-1"]
    assert "Audit" not in wb.sheetnames
    # Placing the same workbook again sends nothing new.
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "77", "--orders",
                env_extra={"IBXL_CONFIG": str(tmp_path / "config.toml")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert [o.order.orderRef for o in gw.received_orders() if o.client_id == 77] == ["U-1"]


def test_ibxl_run_refuses_a_locked_workbook_before_sending_anything(gw, tmp_path):
    path = tmp_path / "locked.xlsx"
    user_workbook(path)
    (tmp_path / "~$locked.xlsx").write_bytes(b"owner")
    sent = len(gw.received_orders())
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "78", "--orders",
                env_extra={"IBXL_CONFIG": str(tmp_path / "config.toml")})
    assert r.returncode != 0 and "open" in (r.stderr + r.stdout).lower()
    assert len(gw.received_orders()) == sent


# --- ibxl check -----------------------------------------------------------------------------------------
def test_ibxl_check_against_the_gateway_a_closed_port_and_a_taken_client_id(gw):
    r = run_cli("check", "--port", str(gw.port), "--client-id", "90", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DU1234567" in r.stdout and "paper" in r.stdout.lower()

    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    r = run_cli("check", "--port", str(closed), timeout=60)
    assert r.returncode == 1 and "nothing listens" in r.stdout and "Enable ActiveX and Socket Clients" in r.stdout

    holder = IBTestClient().start(gw.port, 91)
    try:
        r = run_cli("check", "--port", str(gw.port), "--client-id", "91", timeout=60)
    finally:
        holder.stop()
    assert r.returncode == 1 and "in use" in r.stdout and "--client-id" in r.stdout


def test_ibxl_run_history_over_several_requests_shows_progress_and_stitches(gw, tmp_path):
    from addin.app.jobs import TEMPLATE
    path = tmp_path / "hist.xlsx"
    wb = openpyxl.load_workbook(TEMPLATE)
    names = wb.defined_names
    for name, value in (("HistorySymbol", "AAPL"), ("HistoryDuration", "3 D"), ("HistoryBarSize", "1 min"),
                        ("HistoryUseRTH", False)):
        sheet, coord = next(names[name].destinations)
        wb[sheet][coord.replace("$", "")] = value
    wb.save(path)
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "79", "--history",
                env_extra={"IBXL_CONFIG": str(tmp_path / "config.toml")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "history requests" in r.stdout            # the progress bar of a multi-request pull
    bars = table_rows(openpyxl.load_workbook(path)["History"], "Bars")
    dates = [b["Date"] for b in bars]
    assert len(dates) == len(set(dates)) and dates == sorted(dates)
    assert len(bars) == 3 * 24 * 60 and all(b - a == timedelta(minutes=1) for a, b in zip(dates, dates[1:]))


def test_ibxl_run_cancel_by_ref_writes_the_cancelled_state_into_the_row(gw, tmp_path):
    path = tmp_path / "cancel.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    ws.append(["Ref", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice", "TIF", "Status", "Message"])
    ws.append(["C-1", "MSFT", "BUY", 1, "LMT", 405.0, "GTC"])          # rests: 3% under the market
    ws.add_table(Table(displayName="Orders", ref="A1:I2"))
    wb.save(path)
    env = {"IBXL_CONFIG": str(tmp_path / "config.toml")}
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "80", "--orders", env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")[0]["Status"] == "Submitted"
    assert "C-1" in gw.call(lambda s: [order.orderRef for _, order, _ in s.broker.open_orders()])
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "80", "--cancel", "C-1", env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    row = table_rows(openpyxl.load_workbook(path)["Orders"], "Orders")[0]
    assert row["Status"] == "Cancelled", row
    open_refs = gw.call(lambda s: [order.orderRef for _, order, _ in s.broker.open_orders()])
    assert "C-1" not in open_refs
