"""Hostile sheets never produce an invalid transmission (issue 12).

Unit checks of each defence (error values in any input column, ASCII-only tokens, duplicate Refs,
minSize / sizeIncrement, Tables whose definition disagrees with their cells, hidden rows), then a
property-based test: workbooks written with openpyxl holding hostile Orders rows, run by ``ibxl run
--orders`` (``run_workbook``, in process) against a paper gateway, counting what reached the gateway
(``gw.received_orders()``) against an independent check of every row written here.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.table import Table, TableColumn

from addin.app.jobs import run_workbook
from addin.cells import COM_ERROR_CODES, ERROR_VALUES
from addin.config import Settings
from addin.excel import layout
from addin.excel.book import BookError
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.orders.risk import OrderFacts, RiskLimits, evaluate
from addin.orders.rows import ORDER_INPUT_COLUMNS, ORDER_OUTPUT_COLUMNS, OrderIntent, RowError, parse_row, parse_rows
from addin.paper import PaperGateway

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)      # the frozen gateway's clock (a Monday, 10:00 NY)
COLUMNS = list(ORDER_INPUT_COLUMNS) + list(ORDER_OUTPUT_COLUMNS)
GOOD = {"Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}
ERRORS = sorted(ERROR_VALUES)


# --- 1. Excel error values, in every input column ------------------------------------------------------------
@pytest.mark.parametrize("column", ORDER_INPUT_COLUMNS)
def test_every_error_value_in_every_input_column_refuses_the_row_naming_that_column(column):
    variants = [e for err in ERRORS for e in (err, err.lower(), f"  {err.title()} ")] + list(COM_ERROR_CODES)
    for value in variants:
        # Action is blank too: the error column is named first, whatever else the row gets wrong
        for row in ({**GOOD, "Ref": "E1", column: value}, {**GOOD, "Ref": "E1", "Action": None, column: value}):
            if column == "Action" and row["Action"] is None:
                continue
            got = parse_row(row, 0)
            assert isinstance(got, RowError), (column, value, got)
            assert got.column == column and "Excel error" in got.message, (column, value, got)


def test_an_error_value_in_oca_group_never_becomes_an_oca_group():
    got = parse_row({**GOOD, "OCAGroup": "#DATA!"}, 0)
    assert isinstance(got, RowError) and str(got) == "OCAGroup: the cell holds the Excel error #DATA!; expected a value"


# --- 2. tokens are ASCII ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [
    ("Action", "ſell"), ("Action", "ſELL"), ("Action", "ＢＵＹ"), ("Action", "bυy"), ("Action", "BUY\u200b"),
    ("TIF", "ıoc"), ("TIF", "gtс"), ("TIF", "ＤＡＹ"), ("OrderType", "lımıt"), ("OrderType", "ｍｋｔ"),
    ("OrderType", "МКТ"), ("Account", "dſ1"), ("Account", "ＤＵ1"), ("Symbol", "ſpy"), ("Symbol", "ıbm"),
    ("Symbol", "ａａｐｌ"), ("Quantity", "１０"), ("Quantity", "١٠"), ("Transmit", "yeſ"),
])
def test_unicode_look_alikes_are_refused_not_folded(column, value):
    row = {**GOOD, "Ref": "U1", "TIF": "DAY", column: value}
    got = parse_row(row, 0)
    assert isinstance(got, RowError) and got.column == column, (value, got)


def test_ascii_words_in_any_case_still_read():
    got = parse_row({**GOOD, "Action": " sell ", "TIF": "ioc", "OrderType": "mkt", "Account": "du1"}, 0)
    assert isinstance(got, OrderIntent) and (got.action, got.tif, got.order_type, got.account) == \
        ("SELL", "IOC", "MKT", "DU1")


def test_a_header_with_a_look_alike_letter_is_not_that_column():
    df = pd.DataFrame([["K1", "AAPL", "BUY", 1, "MKT", 5.0]],
                      columns=["Ref", "Symbol", "Action", "Quantity", "OrderType", "Ta\u212aeProfit"])  # Kelvin sign
    got = parse_rows(df)[0]
    assert isinstance(got, OrderIntent) and got.take_profit is None


# --- 4. duplicate Refs refuse every row holding them ------------------------------------------------------------
def test_duplicate_refs_refuse_both_rows_naming_each_other_trimmed_and_in_any_case():
    df = pd.DataFrame([{**GOOD, "Ref": "CASEREF"}, {**GOOD, "Ref": "OTHER"}, {**GOOD, "Ref": " caseref "},
                       {**GOOD, "Ref": "CaseRef", "Quantity": "#N/A"}], index=[5, 6, 7, 8])
    out = parse_rows(df)
    assert isinstance(out[6], OrderIntent)
    for row, others in ((5, "7, 8"), (7, "5, 8"), (8, "5, 7")):
        assert isinstance(out[row], RowError) and out[row].column == "Ref", out[row]
        assert f"is also the Ref of row {others}" in out[row].message, out[row]


# --- 3. minSize and sizeIncrement ------------------------------------------------------------------------------
LIMITS = RiskLimits.from_settings(Settings())


def _facts(min_size: str | None, step: str | None, **kw) -> OrderFacts:
    return OrderFacts(account="DU1", sec_type="STK", ib_symbol="AAPL", min_tick=0.01, bid=229.0, ask=229.02,
                      last=229.01, quote_time=NOW, now=NOW, min_size=None if min_size is None else Decimal(min_size),
                      size_increment=None if step is None else Decimal(step), **kw)


@pytest.mark.parametrize("quantity, min_size, step, rule", [
    (1e-300, "0.0001", "0.0001", "min_size"), (1e-9, "0.0001", "0.0001", "min_size"),
    (5e-324, "0.0001", "0.0001", "min_size"), (0.00015, "0.0001", "0.0001", "size_increment"),
    (0.5, "1", "1", "min_size"), (0.5, None, None, "min_size"), (1.5, None, None, "size_increment"),
    (1e-9, None, None, "min_size"),
    (2.5, "1", "1", "size_increment"), (3, "5", "5", "min_size"), (7, "5", "5", "size_increment"),
    (0.3, "0.1", "0.1", None), (0.0002, "0.0001", "0.0001", None), (10, "5", "5", None), (2, None, None, None),
])
def test_quantities_below_min_size_or_off_the_size_increment_are_refused(quantity, min_size, step, rule):
    intent = OrderIntent(row=0, ref="S1", account="DU1", symbol="AAPL", action="BUY", quantity=quantity,
                         order_type="MKT")
    result = evaluate(intent, _facts(min_size, step), LIMITS)
    got = {c.rule for c in result.refusals} & {"min_size", "size_increment"}
    assert got == ({rule} if rule else set()), result.message
    if rule:
        assert any(c.message.startswith(rule + ": quantity ") for c in result.refusals)


def test_huge_quantities_are_refused_by_max_quantity_and_notional_without_overflow():
    for q in (1e308, 1.7976931348623157e308, 1e300):
        intent = OrderIntent(row=0, ref="H", account="DU1", symbol="AAPL", action="BUY", quantity=q, order_type="LMT",
                             limit_price=229.0)
        result = evaluate(intent, _facts("0.0001", "0.0001"), LIMITS)
        rules = {c.rule for c in result.refusals}
        assert {"max_quantity", "max_notional", "max_position"} <= rules, result.message


# --- 5. Tables whose definition disagrees with their cells ------------------------------------------------------
def orders_workbook(path: Path, rows: list[dict], *, names: list[str] | None = None, ref: str | None = None,
                    merge: str | None = None, hidden: tuple[int, ...] = (), header_row_count: int | None = None
                    ) -> Path:
    """An Orders sheet with the header in row 1 and ``rows`` below, as an Excel Table. ``names``: the
    Table's column names (default: the header cells); ``ref``: its range; ``merge``: cells to merge;
    ``hidden``: worksheet rows a filter hides."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    ws.append(COLUMNS)
    for r in rows:
        ws.append([r.get(c) for c in COLUMNS])
    last = max(len(rows) + 1, 2)
    table = Table(displayName="Orders", ref=ref or f"A1:{get_column_letter(len(COLUMNS))}{last}",
                  tableColumns=[TableColumn(id=i + 1, name=n) for i, n in enumerate(names or COLUMNS)])
    if header_row_count is not None:
        table.headerRowCount = header_row_count
    ws.add_table(table)
    if merge:
        ws.merge_cells(merge)
    for r in hidden:
        ws.row_dimensions[r].hidden = True
    wb.save(path)
    return path


def _swapped(a: str, b: str) -> list[str]:
    names = list(COLUMNS)
    i, j = names.index(a), names.index(b)
    names[i], names[j] = names[j], names[i]
    return names


@pytest.mark.parametrize("kind, words", [
    ("renamed", "header cell Orders!E1 holds 'Quantity' but the Table names that column 'LimitPrice'"),
    ("merged", "cells Orders!G2:H2 are merged inside the Table"),
    ("off_header", "header cell Orders!A2 holds 'T1' but the Table names that column 'Ref'"),
    ("no_header", "has no header row"),
    ("narrow", f"the Table defines {len(layout.ORDERS_COLUMNS)} columns but its range is "
               f"{len(layout.ORDERS_COLUMNS) - 1} columns wide"),
])
def test_a_table_that_is_not_what_its_cells_show_is_refused_naming_the_cell(tmp_path, kind, words):
    rows = [{"Ref": "T1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 228, "OrderType": "LMT", "LimitPrice": 2}]
    path = tmp_path / f"{kind}.xlsx"
    if kind == "renamed":
        orders_workbook(path, rows, names=_swapped("Quantity", "LimitPrice"))
    elif kind == "merged":
        orders_workbook(path, rows, merge="G2:H2")
    elif kind == "off_header":
        orders_workbook(path, rows + [dict(rows[0], Ref="T2")], ref=f"A2:{get_column_letter(len(COLUMNS))}3")
    elif kind == "no_header":
        orders_workbook(path, rows, header_row_count=0)
    else:
        orders_workbook(path, rows, ref=f"A1:{get_column_letter(len(COLUMNS) - 1)}2")
    book = OpenpyxlBook.open(path, read_only=True)
    with pytest.raises(BookError) as err:
        book.read_table("Orders")
    assert words in str(err.value) and "Orders" in str(err.value), str(err.value)


def test_the_remote_engine_refuses_a_table_without_its_header_row(tmp_path):
    import xlwings as xw

    from addin.excel.remote_json import book_json
    from addin.excel.xlwings_book import XlwingsBook
    path = orders_workbook(tmp_path / "remote.xlsx", [{"Ref": "R1", **GOOD}])
    assert len(XlwingsBook(xw.Book(json=book_json(path))).read_table("Orders")) == 1
    payload = book_json(path)
    payload["sheets"][0]["tables"][0]["show_headers"] = False
    right = get_column_letter(len(COLUMNS))
    with pytest.raises(BookError, match=rf"has no header row \(its first row Orders!A1:{right}1 is data\)"):
        XlwingsBook(xw.Book(json=payload)).read_table("Orders")
    payload = book_json(path)
    payload["sheets"][0]["tables"][0]["header_row_range_address"] = f"A2:{right}2"
    with pytest.raises(BookError, match=f"its header row is Orders!A2:{right}2, not the first row"):
        XlwingsBook(xw.Book(json=payload)).read_table("Orders")


# --- the real path: ibxl run --orders against a paper gateway ------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=NOW, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


RISK = replace(Settings().risk, max_quantity=20_000, max_notional=400_000, max_position=10_000_000, allow_short=True,
               max_open_orders=10_000, max_orders_per_minute=10_000, daily_loss_limit=10_000_000, ack_timeout=5.0)
_client_ids = itertools.count(300)


def run_orders(gw, path: Path, tmp_path: Path):
    lines: list[str] = []
    summary = run_workbook(path, port=gw.port, client_id=next(_client_ids), orders=True, settings=Settings(risk=RISK),
                           journal_path=tmp_path / "journal.sqlite3", settle_timeout=10.0, echo=lines.append)
    return summary, lines


def saved_rows(path: Path) -> dict[int, dict]:
    ws = openpyxl.load_workbook(path)["Orders"]
    header = [c.value for c in ws[1]]
    return {r: dict(zip(header, (c.value for c in ws[r]))) for r in range(2, ws.max_row + 1)}


def test_hidden_rows_are_not_placed_and_say_so(gw, tmp_path):
    rows = [{"Ref": f"HID-{k}", **GOOD} for k in range(4)]
    path = orders_workbook(tmp_path / "hidden.xlsx", rows, hidden=(3, 5))
    before = len(gw.received_orders())
    summary, lines = run_orders(gw, path, tmp_path)
    assert sorted(o.order.orderRef for o in gw.received_orders()[before:]) == ["HID-0", "HID-2"], lines
    saved = saved_rows(path)
    for r in (3, 5):
        assert saved[r]["Status"] is None and saved[r]["Message"].startswith("not placed: the row is hidden")
    for r in (2, 4):
        assert saved[r]["Status"] in ("Submitted", "Filled"), saved[r]     # confirmed by IB; the fill may follow


def test_a_renamed_table_sends_nothing_and_names_the_cell(gw, tmp_path):
    rows = [{"Ref": "REN-1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 228, "OrderType": "LMT", "LimitPrice": 2}]
    path = orders_workbook(tmp_path / "renamed.xlsx", rows, names=_swapped("Quantity", "LimitPrice"))
    before = len(gw.received_orders())
    summary, lines = run_orders(gw, path, tmp_path)
    assert gw.received_orders()[before:] == []
    step = next(s for s in summary.steps if s.name == "orders")
    assert not step.ok and "header cell Orders!E1 holds 'Quantity'" in step.detail, step


def test_tiny_quantities_never_reach_the_gateway(gw, tmp_path):
    rows = [{"Ref": "TINY-1", **GOOD, "Quantity": 1e-300}, {"Ref": "TINY-2", **GOOD, "Quantity": 1e-9},
            {"Ref": "TINY-3", **GOOD, "Quantity": "1e-9"}, {"Ref": "TINY-4", **GOOD, "Quantity": 1e308},
            {"Ref": "TINY-5", "Symbol": "ES 202612 CME", "Action": "BUY", "Quantity": 0.5, "OrderType": "MKT"}]
    path = orders_workbook(tmp_path / "tiny.xlsx", rows)
    before = len(gw.received_orders())
    summary, lines = run_orders(gw, path, tmp_path)
    assert gw.received_orders()[before:] == [], lines
    saved = saved_rows(path)
    assert [saved[r]["Status"] for r in range(2, 7)] == ["Refused"] * 5
    assert saved[2]["Message"].startswith("min_size: quantity 1e-300 is below the minimum size 0.0001 of AAPL")
    assert "max_quantity" in saved[5]["Message"]
    assert "min_size: quantity 0.5 is below the minimum size 1 of ES" in saved[6]["Message"]


# --- 7. property: hostile sheets, counted at the gateway -------------------------------------------------------------
# symbol text -> (IB symbol, minSize, sizeIncrement, minTick, reference price) as the frozen gateway has them
MARKET = {"AAPL": ("AAPL", "0.0001", "0.0001", 0.01, 229.38), "ES 202612 CME": ("ES", "1", "1", 0.25, 6001.0),
          "EUR/USD": ("EUR", "0.01", "0.01", 0.00005, 1.22915),
          "BTC/USD.PAXOS": ("BTC", "0.0001", "0.0001", 0.25, 94766.0)}
GOOD_QTY = {"AAPL": [1, 2, 3.0, "2", 0.5], "ES 202612 CME": [1, 1.0], "EUR/USD": [1000, " 1,000 ", 20000],
            "BTC/USD.PAXOS": [0.001, 0.01]}
HOSTILE_QTY = [1e-300, 1e-9, 5e-324, 1e308, -0.0, 0, -1, "1e-300", "1e-9", "-0", "nan", "inf", "-inf", "1e999",
               "１", "١", "0x10", "1_0", "1,0", "", "  ", 0.00015, 0.333333]
LOOK_ALIKES = {"Action": ["ſell", "ſELL", "ＢＵＹ", "ｓｅｌｌ", "bυy", "BUY\u200b", "SELL\u00ad"],
               "TIF": ["ıoc", "ＩＯＣ", "gtс", "DAY\u200b"], "OrderType": ["ｍｋｔ", "МКТ", "lımıt", "MKT\u200b"],
               "Account": ["dſ1", "ＤＵ1"], "Symbol": ["ſpy", "ıbm", "ＡＡＰＬ", "AAPL\u200b"]}
ASCII_TOKENS = {"Action": ("BUY", "SELL"), "OrderType": ("MKT", "LMT"), "TIF": ("DAY", "GTC", "IOC")}


def _error_text(draw) -> str:
    err = draw(st.sampled_from(ERRORS))
    return draw(st.sampled_from([err, err.lower(), f" {err} ", err.title()]))


@st.composite
def hostile_row(draw, ref: str):
    symbol = draw(st.sampled_from(list(MARKET)))
    _, _, _, tick, price = MARKET[symbol]
    order_type = draw(st.sampled_from(["MKT", "MKT", "LMT"]))
    row: dict = {"Ref": draw(st.sampled_from([ref, ref.lower(), f" {ref} ", None])),
                 "Symbol": symbol, "Action": draw(st.sampled_from(["BUY", "buy", " Sell ", "SELL"])),
                 "Quantity": draw(st.sampled_from(GOOD_QTY[symbol])), "OrderType": order_type,
                 "TIF": draw(st.sampled_from([None, "DAY", "gtc", "IOC"]))}
    if order_type == "LMT":
        row["LimitPrice"] = float(Fraction(round(price * 0.99 / tick)) * Fraction(repr(tick)))
    if draw(st.integers(0, 4)) == 0:
        row["OCAGroup"] = draw(st.sampled_from(["G1", " grp-2 "]))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        kind = draw(st.sampled_from(["error", "error", "look_alike", "quantity", "quantity"]))
        if kind == "error":
            row[draw(st.sampled_from(list(ORDER_INPUT_COLUMNS)))] = _error_text(draw)
        elif kind == "look_alike":
            column = draw(st.sampled_from(list(LOOK_ALIKES)))
            row[column] = draw(st.sampled_from(LOOK_ALIKES[column]))
        else:
            row["Quantity"] = draw(st.sampled_from(HOSTILE_QTY))
    return row


@st.composite
def hostile_sheet(draw, sheet_no: int):
    n = draw(st.integers(2, 6))
    refs = [f"P{sheet_no}-{k}" for k in range(n)]
    # one row in five takes another row's Ref (a duplicate), one in six is hidden by a filter
    rows = [draw(hostile_row(refs[draw(st.integers(0, n - 1))] if draw(st.integers(0, 4)) == 4 else refs[k]))
            for k in range(n)]
    shape = draw(st.sampled_from(["plain"] * 6 + ["renamed", "merged", "off_header"]))
    hidden = tuple(r for r in range(2, n + 2) if draw(st.integers(0, 5)) == 5)
    return rows, shape, hidden


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _independent_quantity(v) -> float | None:
    """The Quantity as a careful trader reads it: a finite, positive number of ASCII digits."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str) and re.fullmatch(r"\s*(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][+-]?\d+)?\s*", v):
        x = float(v.replace(",", ""))
    else:
        return None
    return x if math.isfinite(x) and x > 0 else None


def row_is_valid(row: dict, sheet_refs: list[str]) -> str:
    """Why a row must not be sent ("" when it may be): written from the issue's rules, not from rows.py."""
    for c in ORDER_INPUT_COLUMNS:
        v = row.get(c)
        if isinstance(v, str) and v.strip().upper() in ERROR_VALUES:
            return f"{c} holds an Excel error"
        if isinstance(v, str) and not v.isascii():
            return f"{c} holds a non-ASCII character"
    ref = str(row.get("Ref") or "").strip().upper()
    if ref and sum(1 for r in sheet_refs if r == ref) > 1:
        return "duplicate Ref"
    symbol = str(row.get("Symbol") or "").strip()
    if symbol not in MARKET:
        return "unknown symbol"
    _, min_size, step, _, _ = MARKET[symbol]
    q = _independent_quantity(row.get("Quantity"))
    if q is None:
        return "no quantity"
    if Fraction(repr(q)) < Fraction(min_size) or (Fraction(repr(q)) / Fraction(step)).denominator != 1:
        return "quantity off IB's size rules"
    for c, words in ASCII_TOKENS.items():
        v = row.get(c)
        if not (c == "TIF" and _blank(v)) and str(v).strip().upper() not in words:
            return f"{c} is not one of {words}"
    return ""


_sheets = itertools.count()
TALLY = dict.fromkeys(("sheets", "rows", "sent", "refused", "hidden", "broken_tables"), 0)


@hsettings(max_examples=60, derandomize=True, database=None, deadline=None,
           phases=[Phase.explicit, Phase.generate],            # no shrinking against a stateful gateway
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_sheets_never_transmit_an_invalid_order_and_every_row_gets_an_answer(gw, tmp_path, data):
    sheet_no = next(_sheets)
    rows, shape, hidden = data.draw(hostile_sheet(sheet_no))
    path = tmp_path / f"hostile-{sheet_no}.xlsx"
    n = len(rows)
    right = get_column_letter(len(COLUMNS))
    kwargs: dict = {"hidden": hidden}
    if shape == "renamed":
        kwargs["names"] = _swapped("Quantity", "LimitPrice")
    elif shape == "merged":
        kwargs["merge"] = f"B{n + 1}:C{n + 1}"
    elif shape == "off_header":
        kwargs["ref"] = f"A2:{right}{n + 1}"
    orders_workbook(path, rows, **kwargs)
    original = saved_rows(path)
    before = len(gw.received_orders())
    summary, lines = run_orders(gw, path, tmp_path)
    received = [o for o in gw.received_orders()[before:]]

    step = next(s for s in summary.steps if s.name == "orders")
    if shape != "plain":                          # the Table is not what it shows: nothing, and the cell named
        TALLY["broken_tables"] += 1
        assert received == [], (shape, [o.order.orderRef for o in received])
        assert not step.ok and re.search(r"Orders!\$?[A-Z]+\$?\d+", step.detail), step
        assert step.detail.startswith("BookError: "), step
        return
    # a hostile row is a row answer, not a crash: the step fails only by naming the rows not placed
    assert step.ok or step.detail.startswith("OrdersNotAllPlaced: "), (step, lines)
    assert not any("Traceback" in line for line in lines), lines
    saved = saved_rows(path)
    sheet_refs = [str(row.get("Ref") or "").strip().upper() for r, row in original.items() if r not in hidden]
    for r, row in saved.items():
        if r in hidden:
            assert _blank(row["Status"]) and str(row["Message"]).startswith("not placed: the row is hidden"), row
        else:
            assert not _blank(row["Status"]), row
            if row["Status"] in ("Error", "Refused"):
                assert not _blank(row["Message"]), row

    by_ref = {str(row["Ref"]).strip().upper(): r for r, row in saved.items() if not _blank(row["Ref"])}
    for got in received:
        o = got.order
        r = by_ref.get(o.orderRef.upper())
        assert r is not None, f"{o.orderRef} matches no row of the sheet"
        source = original[r]
        why = row_is_valid(source, sheet_refs)
        assert not why, f"row {r} was sent as {o.orderRef} but {why}: {source}"
        assert r not in hidden, f"row {r} is hidden but was sent"
        assert o.action == str(source["Action"]).strip().upper()
        assert float(o.totalQuantity) == _independent_quantity(source["Quantity"])
        assert o.orderType == str(source["OrderType"]).strip().upper()
        if not _blank(source.get("OCAGroup")):
            assert o.ocaGroup == " ".join(str(source["OCAGroup"]).split())
    assert len({o.order.orderRef for o in received}) == len(received), "an order was sent twice"
    TALLY["sheets"] += 1
    TALLY["rows"] += n
    TALLY["sent"] += len(received)
    TALLY["hidden"] += len(hidden)
    TALLY["refused"] += sum(1 for row in saved.values() if row["Status"] in ("Error", "Refused"))


def test_the_hostile_sheets_exercised_sends_refusals_hidden_rows_and_broken_tables():
    """Runs after the property test (file order): it must have sent valid orders and refused the rest."""
    if not TALLY["sheets"]:
        pytest.skip("the property test did not run in this session")
    print("hostile sheets:", TALLY)
    assert TALLY["sent"] >= 20 and TALLY["refused"] >= 40, TALLY
    assert TALLY["hidden"] >= 5 and TALLY["broken_tables"] >= 5, TALLY
