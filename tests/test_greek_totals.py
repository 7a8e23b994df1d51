"""Greek totals shown: an option and a stock position filled at the paper gateway from Orders rows; the
Portfolio sheet's GreekTotals Table (refresh_portfolio, saved and read back with openpyxl) holds, per
account x underlying and per account ("All"), the sums of the saved Positions rows, computed here; a
total over an unknown greek stays empty (a runtime whose line budget is used up gets no option greeks);
IB_POSITIONS(view="totals") answers the same rows as a dynamic array."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from datetime import datetime, timezone

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import openpyxl
import pytest
from openpyxl.utils.cell import range_boundaries

import udfs
from addin.app import macros
from addin.app.runtime import Runtime, set_runtime
from addin.config import Settings
from addin.excel.layout import GREEK_TOTALS_COLUMNS
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.paper import PaperGateway

from .settle import settled
from .test_macros import TEMPLATE, set_orders
from .test_orders import ROOMY
from .test_position_greeks import market_inputs, wait_positions

START = datetime(2026, 11, 19, 15, 0, tzinfo=timezone.utc)     # Thursday 10:00 New York, frozen
ACCOUNT = "DU1234567"
SUMMED = ["Delta", "Gamma", "Vega", "Theta", "DeltaDollars"]


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as g:
        yield g


@pytest.fixture(scope="module")
def held(gw, tmp_path_factory):
    """Buy 2 AAPL calls near the money and 50 AAPL shares from Orders rows; the option's conId."""
    tmp = tmp_path_factory.mktemp("held")
    risk = replace(ROOMY, allowed_sec_types=ROOMY.allowed_sec_types + ("OPT",))
    rt = Runtime(port=gw.port, client_id=81, settings=Settings(risk=risk), journal_path=tmp / "journal.sqlite3")
    rt.connect()
    s_mid, _, _, expiries, strikes = market_inputs(gw)
    text = f"AAPL {expiries[1]:%Y%m%d} {min(strikes, key=lambda k: abs(k - s_mid)):g} C"
    book = OpenpyxlBook.open(TEMPLATE, out=tmp / "orders.xlsx")
    try:
        set_orders(book, [
            {"Ref": "GT-OPT", "Account": ACCOUNT, "Symbol": text, "Action": "BUY", "Quantity": 2,
             "OrderType": "MKT", "TIF": "DAY", "Transmit": True},
            {"Ref": "GT-STK", "Account": ACCOUNT, "Symbol": "AAPL", "Action": "BUY", "Quantity": 50,
             "OrderType": "MKT", "TIF": "DAY", "Transmit": True},
        ])
        out = macros.place_orders(book, rt)
        assert set(out["Status"]) <= {"Filled", "Submitted", "PreSubmitted"}, out[["Ref", "Status", "Message"]]
    finally:
        book.close()
    con_id = rt.contracts.qualify(text).contract.conId
    yield rt, con_id
    rt.close()


def table_rows(ws, name):
    """(ref, rows as dicts) of the Table ``name`` on ``ws``, blank rows left out."""
    ref = ws.tables[name].ref
    c0, r0, c1, r1 = range_boundaries(ref)
    grid = [[c.value for c in row] for row in ws.iter_rows(min_row=r0, max_row=r1, min_col=c0, max_col=c1)]
    return ref, [dict(zip(grid[0], r)) for r in grid[1:] if any(v is not None for v in r)]


def expected_totals(positions):
    """The totals computed here from saved Positions rows: {(account, underlying): {greek: sum or None}}."""
    groups: dict = {}
    for r in positions:
        for key in ((r["Account"], r["Underlying"]), (r["Account"], "All")):
            groups.setdefault(key, []).append(r)
    out = {}
    for key, rows in groups.items():
        values = {}
        for g in SUMMED:
            cells = [r[g] for r in rows]
            values[g] = None if any(v is None for v in cells) else math.fsum(cells)
        out[key] = values
    return out


def refresh_and_read(rt, tmp_path, name):
    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / f"{name}.xlsx")
    try:
        counts = macros.refresh_portfolio(book, rt)
        saved = book.save(tmp_path / f"{name}-saved.xlsx")
    finally:
        book.close()
    ws = openpyxl.load_workbook(saved)["Portfolio"]
    return counts, ws


def test_the_greek_totals_table_adds_up_the_saved_positions_rows(held, tmp_path):
    rt, con_id = held
    wait_positions(rt, lambda f: {con_id, 265598} <= set(f.loc[f["position"] != 0, "con_id"])
                   and not f.loc[f["con_id"].isin([con_id, 265598]), "delta_dollars"].isna().any())
    counts, ws = refresh_and_read(rt, tmp_path, "totals")

    _, positions = table_rows(ws, "Positions")
    totals_ref, totals = table_rows(ws, "GreekTotals")
    assert counts["GreekTotals"] == len(totals)
    assert list(ws.tables["GreekTotals"].column_names) == GREEK_TOTALS_COLUMNS
    want = expected_totals(positions)
    got = {(r["Account"], r["Underlying"]): r for r in totals}
    assert set(got) == set(want)
    for key, values in want.items():
        for g, value in values.items():
            cell = got[key][g]
            if value is None:
                assert cell is None, (key, g, cell)
            else:
                assert isinstance(cell, (int, float)), (key, g, cell)      # a number, never a formula
                assert cell == pytest.approx(value, rel=1e-9, abs=1e-9), (key, g)

    # The AAPL row: the 2 calls' delta (from the option's own Positions row) plus the 50 shares.
    by_con = {r["ConId"]: r for r in positions}
    opt, stk = by_con[con_id], by_con[265598]
    assert (opt["Position"], stk["Position"], stk["Delta"]) == (2, 50, 50)
    assert 0 < opt["Delta"] < 200 and opt["Gamma"] > 0 and opt["Theta"] < 0
    aapl = got[(ACCOUNT, "AAPL")]
    assert aapl["Delta"] == pytest.approx(opt["Delta"] + 50, rel=1e-9)
    assert aapl["Gamma"] == pytest.approx(opt["Gamma"], rel=1e-9)
    # Each account's total row comes after its underlyings' rows.
    accounts = [r["Account"] for r in totals]
    assert [r["Underlying"] for r in totals if r["Account"] == ACCOUNT][-1] == "All"
    assert accounts == sorted(accounts)

    # The Table sits clear of every other Table and of the P&L cells (S..T) of the sheet, in its own columns.
    c0, _, c1, _ = range_boundaries(totals_ref)
    for other in ("Positions", "Account"):
        o0, _, o1, _ = range_boundaries(ws.tables[other].ref)
        assert c0 > o1 or c1 < o0, other
    assert c0 > 20


def test_ib_positions_totals_view_answers_the_same_rows(held):
    rt, con_id = held
    frame = wait_positions(rt, lambda f: not f.loc[f["con_id"] == con_id, "delta"].isna().any())
    previous = set_runtime(rt)
    try:
        rows = settled(lambda: udfs.IB_POSITIONS("totals", caller=("Sheet1", "$A$1")))
        plain = settled(lambda: udfs.IB_POSITIONS(caller=("Sheet1", "$A$20")))
        bad = udfs.IB_POSITIONS("greeks", caller=("Sheet1", "$A$40"))
    finally:
        set_runtime(previous)
    assert rows[0] == [c.lower() if c != "DeltaDollars" else "delta_dollars" for c in GREEK_TOTALS_COLUMNS]
    assert plain[0][:3] == ["account", "symbol", "con_id"]
    assert bad.startswith("#IBXL: view:") and "totals" in bad
    got = {(r[0], r[1]): r for r in rows[1:]}
    held_rows = frame[frame["account"] == ACCOUNT]
    aapl_rows = held_rows[held_rows["underlying"] == "AAPL"]
    assert got[(ACCOUNT, "AAPL")][2] == pytest.approx(math.fsum(aapl_rows["delta"]), rel=1e-9)
    assert got[(ACCOUNT, "All")][6] == pytest.approx(math.fsum(held_rows["delta_dollars"]), rel=1e-9)


def test_an_unknown_greek_keeps_the_total_empty(gw, held, tmp_path):
    """A runtime whose one market data line is taken cannot open the option's greeks line (IB's 101):
    the option's greeks are unknown, so the AAPL and account totals are empty, not the stock's alone."""
    _, con_id = held
    rt = Runtime(port=gw.port, client_id=82, max_lines=1, settings=Settings())
    rt.connect()
    try:
        rt.market.subscribe(rt.contracts.qualify("MSFT").contract)       # the only line
        wait_positions(rt, lambda f: con_id in set(f["con_id"])
                       and not f.loc[f["con_id"] == 265598, "delta_dollars"].isna().any())
        _, ws = refresh_and_read(rt, tmp_path, "unknown")
    finally:
        rt.close()
    _, positions = table_rows(ws, "Positions")
    _, totals = table_rows(ws, "GreekTotals")
    by_con = {r["ConId"]: r for r in positions}
    assert by_con[con_id]["Delta"] is None and by_con[265598]["Delta"] == 50      # unknown vs known
    got = {(r["Account"], r["Underlying"]): r for r in totals}
    for key in ((ACCOUNT, "AAPL"), (ACCOUNT, "All")):
        assert all(got[key][g] is None for g in ("Delta", "Gamma", "Vega", "Theta", "DeltaDollars")), got[key]


def test_a_users_cell_below_the_totals_is_kept_and_the_refusal_named(held, tmp_path):
    """The GreekTotals Table never grows over a user's cell: it is left as it was, the other Tables are
    written, and TableGrowthError names the cell."""
    from addin.excel.book import TableGrowthError
    rt, con_id = held
    wait_positions(rt, lambda f: not f.loc[f["con_id"] == con_id, "delta"].isna().any())
    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "note.xlsx")
    try:
        info = book.table("GreekTotals")
        note_row = info.first_row + 2               # the second body row: two totals rows need it
        book.write("Portfolio", note_row, info.first_col, [["my note"]])
        with pytest.raises(TableGrowthError) as err:
            macros.refresh_portfolio(book, rt)
        saved = book.save(tmp_path / "note-saved.xlsx")
    finally:
        book.close()
    assert "GreekTotals" in str(err.value) and err.value.sheet == "Portfolio"
    ws = openpyxl.load_workbook(saved)["Portfolio"]
    assert ws.cell(row=note_row, column=info.first_col).value == "my note"
    _, positions = table_rows(ws, "Positions")
    assert con_id in {r["ConId"] for r in positions}          # the Positions Table was still written


def test_ibxl_demo_fills_the_greek_totals_from_its_positions(tmp_path):
    """``ibxl demo`` (run_demo: the job's refresh_portfolio) leaves GreekTotals equal to the sums of its
    saved Positions rows."""
    from addin.app.jobs import run_demo
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        summary = run_demo(tmp_path / "demo.xlsx", seconds=2.0, echo=lambda line: None, gateway=gateway)
    assert summary.ok, summary.steps
    ws = openpyxl.load_workbook(tmp_path / "demo.xlsx")["Portfolio"]
    _, positions = table_rows(ws, "Positions")
    _, totals = table_rows(ws, "GreekTotals")
    assert positions and totals
    want = expected_totals(positions)
    got = {(r["Account"], r["Underlying"]): r for r in totals}
    assert set(got) == set(want)
    for key, values in want.items():
        for g, value in values.items():
            assert (got[key][g] is None) if value is None else got[key][g] == pytest.approx(value, rel=1e-9)
