"""The Options sheet: the template's parameters, Chain Table and in-the-money shading; the chain painted
and streamed on the pump (``start_streaming``), repainted by ``refresh_options``, turned into an Orders
row by ``option_to_order`` (never sent), and filled by ``ibxl demo``. Workbooks are real files written
through the openpyxl adapter and read back with openpyxl; expectations come from the gateway (its
listing over the wire, AAPL's price) and the lines it holds, not from what our code reports."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import openpyxl
import pytest

from addin.app import macros, options_sheet
from addin.app.jobs import TEMPLATE, format_summary, run_demo
from addin.app.runtime import Runtime
from addin.excel import layout
from addin.excel.errors import ExcelInputError
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.paper import PaperGateway

from .gateway_wire import aapl_listing, count_messages, stock_mid

COUNTED = {3: "placeOrder", 1: "reqMktData"}


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        gateway.counts = count_messages(gateway, COUNTED)
        yield gateway


@pytest.fixture(scope="module")
def strikes(gw):
    return aapl_listing(gw.port, 91)


def aapl_mid(gw) -> float:
    return stock_mid(gw, "AAPL")


def option_lines(gw) -> int:
    return gw.call(lambda s: len(s.marketdata.option_lines))


def lines_become(gw, n: int, timeout: float = 10.0) -> None:
    """Wait (polling the gateway, as tests/test_service.py does) until it holds ``n`` option lines: the
    product's reqMktData / cancelMktData leave spaced at the session's rate."""
    deadline = time.monotonic() + timeout
    while option_lines(gw) != n:
        assert time.monotonic() < deadline, f"the gateway holds {option_lines(gw)} option lines, not {n}"
        time.sleep(0.05)


def named(wb, name):
    dest = next(iter(wb.defined_names[name].destinations))
    return wb[dest[0]][dest[1].replace("$", "")]


def chain_rows(path: Path) -> tuple[list[str], list[list], openpyxl.Workbook]:
    wb = openpyxl.load_workbook(path)
    ws = wb["Options"]
    table = ws.tables["Chain"]
    rows = [[c for c in r] for r in ws[table.ref]]
    return [c.value for c in rows[0]], rows[1:], wb


# --- the template ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ibxl.xlsx", "ibxl.xlsm"])
def test_the_template_has_the_options_sheet(name):
    wb = openpyxl.load_workbook(TEMPLATE.with_name(name))
    ws = wb["Options"]
    params = ("OptionsUnderlying", "OptionsExpiry", "OptionsStrikes")
    assert [named(wb, n).value for n in params] == ["AAPL", "next", 10]
    assert named(wb, "OptionsUnderPrice").value is None and named(wb, "OptionsStatus").value is None
    table = ws.tables["Chain"]
    header_row = layout.TABLES["Chain"][1]
    assert [c.value for c in ws[header_row]][:len(layout.OPTIONS_COLUMNS)] == layout.OPTIONS_COLUMNS
    assert table.ref.startswith(f"A{header_row}:")
    col = {h: openpyxl.utils.get_column_letter(i + 1) for i, h in enumerate(layout.OPTIONS_COLUMNS)}
    assert ws.column_dimensions[col["CallIV"]].number_format == "0.00%"
    assert ws.column_dimensions[col["PutDelta"]].number_format == "0.0000"
    assert ws.column_dimensions[col["Strike"]].number_format == layout.NUMBER_FORMATS["price"]
    # in-the-money shading: calls (left of Strike) where Strike < price, puts (right) where Strike > price
    rules = {str(cf.sqref): r.formula[0] for cf in ws.conditional_formatting for r in cf.rules
             if "OptionsUnderPrice" in r.formula[0]}
    strike = f"${col['Strike']}{header_row + 1}"
    assert rules[f"A{header_row + 1}:{col['CallTheta']}1048576"].endswith(f"{strike}<OptionsUnderPrice)")
    assert rules[f"{col['PutBid']}{header_row + 1}:{col['PutTheta']}1048576"].endswith(f"{strike}>OptionsUnderPrice)")


# --- streaming, refreshing, ordering ---------------------------------------------------------------------
@pytest.fixture
def book(tmp_path):
    path = tmp_path / "options.xlsx"
    shutil.copyfile(TEMPLATE, path)
    return OpenpyxlBook.open(path)


@pytest.fixture(scope="module")
def rt(gw):
    runtime = Runtime(port=gw.port, client_id=92)
    runtime.connect()
    yield runtime
    runtime.close()


def test_streaming_paints_a_live_chain_of_aapl_and_saves_numbers(rt, gw, book, strikes):
    lines_before, orders_before = option_lines(gw), gw.counts["placeOrder"]
    pump = macros.start_streaming(book, rt, run=False)
    try:
        sheet = options_sheet.sheet_of(macros.book_id(book))
        assert sheet in pump.painters
        deadline = time.monotonic() + 15
        painted = sheet.paints
        while True:                                                     # ticks move the quotes: more paints
            version = rt.board.version
            pump.flush()
            table = book.read_table("Chain")
            if sheet.paints >= painted + 2 and (table["Data"] == "streaming").all() \
                    and table["CallDelta"].notna().all():
                break
            assert time.monotonic() < deadline, table
            rt.board.wait(version, 0.5)
        assert option_lines(gw) == lines_before + 20                   # 10 strikes x call and put, at the gateway
    finally:
        rt.stop_pump(macros.book_id(book))
    lines_become(gw, lines_before)                                      # the pump's stop released the chain
    saved = book.save()
    header, rows, wb = chain_rows(saved)
    col = {h: i for i, h in enumerate(header)}
    assert len(rows) == 10
    strikes_shown = [r[col["Strike"]].value for r in rows]
    mid = sheet.plan["UnderPrice"].iloc[0]            # the price the chain was centred on
    assert strikes_shown == sorted(strikes_shown) and min(strikes_shown) < mid < max(strikes_shown)
    assert set(strikes_shown) == set(sorted(strikes[1], key=lambda k: (abs(k - mid), k))[:10])
    mid = aapl_mid(gw)
    for r in rows:
        assert all(c.data_type != "f" for c in r)                      # values, never formulas
        assert 0 < r[col["CallDelta"]].value < 1 and -1 < r[col["PutDelta"]].value < 0
        assert r[col["CallBid"]].value <= r[col["CallAsk"]].value and r[col["Data"]].value == "streaming"
        assert r[col["CallIV"]].number_format == "0.00%"
    price = named(wb, "OptionsUnderPrice").value
    assert isinstance(price, float) and abs(price - mid) / mid < 0.02
    assert named(wb, "OptionsStatus").value.startswith("AAPL")
    assert gw.counts["placeOrder"] == orders_before


def test_refresh_options_follows_the_parameters_and_names_a_bad_cell(rt, gw, book, strikes):
    expiries, listed = strikes
    book.write("Options", 2, 2, [[expiries[2][:4] + "-" + expiries[2][4:6] + "-" + expiries[2][6:]]])
    book.write("Options", 3, 2, [["215-235"]])
    lines_before = option_lines(gw)
    # not streaming: one snapshot per option, no line held
    sheet = macros.refresh_options(book, rt)
    want = [k for k in listed if 215 <= k <= 235]
    table = book.read_table("Chain")
    assert list(table["Strike"]) == want and len(sheet.plan) == len(want)
    assert set(table["Data"]) == {"snapshot"} and (table["CallBid"] <= table["CallAsk"]).all()
    assert set(sheet.plan["Expiry"]) == {expiries[2]} and option_lines(gw) == lines_before
    assert "one snapshot each" in book.read("Options", 5, 2, 5, 2)[0][0]
    # streaming: the chain's lines are held, and a refresh gives the old chain's back
    macros.start_streaming(book, rt, run=False)
    lines_become(gw, lines_before + 2 * len(want))
    book.write("Options", 3, 2, [[4]])
    macros.refresh_options(book, rt)
    lines_become(gw, lines_before + 8)
    assert len(book.read_table("Chain", drop_empty=True)) == 4
    book.write("Options", 2, 2, [["soon"]])
    with pytest.raises(ExcelInputError, match=r"^Options!OptionsExpiry: 'soon' is not a date"):
        macros.refresh_options(book, rt)
    assert book.read("Options", 5, 2, 5, 2)[0][0].startswith("#IBXL: Options!OptionsExpiry: ")
    book.write("Options", 1, 2, [["ZZZZ"]])
    book.write("Options", 2, 2, [["next"]])
    with pytest.raises(ExcelInputError, match=r"^Options!OptionsUnderlying: "):
        macros.refresh_options(book, rt)
    rt.stop_pump(macros.book_id(book))
    lines_become(gw, lines_before)


def test_option_to_order_fills_an_orders_row_priced_at_the_mid_and_sends_nothing(rt, gw, book):
    sheet = macros.refresh_options(book, rt)
    try:
        info = book.table("Chain")
        orders_before = gw.counts["placeOrder"]
        deadline = time.monotonic() + 10
        while True:                                                      # a row priced on both sides
            version = rt.board.version
            sheet.paint(book)
            table = book.read_table("Chain")
            ready = table[table["CallBid"].gt(0) & table["PutBid"].gt(0)]
            if len(ready):
                break
            assert time.monotonic() < deadline, table
            rt.board.wait(version, 0.5)
        row = int(ready.index[0])
        values = table.loc[row]
        expiry = sheet.plan["Expiry"].iloc[0]
        call_col = info.first_col + info.columns.index("CallAsk")
        put_col = info.first_col + info.columns.index("PutTheta")
        written = macros.option_to_order(book, rt, cell=(row, call_col))
        written_put = macros.option_to_order(book, rt, cell=(row, put_col))
        orders = book.read_table("Orders").loc[[written, written_put]]
        call, put = orders.iloc[0], orders.iloc[1]
        assert call["Symbol"] == f"AAPL {expiry} {values['Strike']:g} C" and put["Symbol"].endswith(" P")
        assert call["Ref"] == "OPT-1" and put["Ref"] == "OPT-2" and written_put == written + 1
        # the mid, on the option's 0.01 grid: within half a tick of the unrounded mid
        for order, side in ((call, "Call"), (put, "Put")):
            mid = (values[f"{side}Bid"] + values[f"{side}Ask"]) / 2
            assert abs(order["LimitPrice"] - mid) <= 0.005 + 1e-9, (side, order["LimitPrice"], mid)
            assert abs(order["LimitPrice"] * 100 - round(order["LimitPrice"] * 100)) < 1e-6
        assert (call["Action"], call["Quantity"], call["OrderType"], call["Transmit"]) == ("BUY", 1, "LMT", False)
        strike_col = info.first_col + info.columns.index("Strike")
        where = f"Options!{openpyxl.utils.get_column_letter(strike_col)}{row}"
        with pytest.raises(ExcelInputError, match=rf"^{where} is the Strike"):
            macros.option_to_order(book, rt, cell=(row, strike_col))
        with pytest.raises(ExcelInputError, match=r"is not in the Chain Table"):
            macros.option_to_order(book, rt, cell=(2, 2))
        assert gw.counts["placeOrder"] == orders_before                 # nothing reached the gateway
        saved = book.save()
        ws = openpyxl.load_workbook(saved)["Orders"]
        header = [c.value for c in ws[1]]
        assert ws.cell(row=written, column=header.index("Transmit") + 1).value is False
    finally:
        sheet.close()


def test_ibxl_demo_fills_the_options_sheet(gw, tmp_path):
    summary = run_demo(tmp_path / "demo.xlsx", seconds=2.0, echo=lambda line: None, gateway=gw)
    header, rows, wb = chain_rows(summary.workbook)
    col = {h: i for i, h in enumerate(header)}
    assert len(rows) == 10 and all(r[col["Data"]].value == "streaming" for r in rows)
    assert all(isinstance(r[col["CallDelta"]].value, float) for r in rows)
    assert isinstance(named(wb, "OptionsUnderPrice").value, float)
    assert len(summary.options) == 10 and "Options (the Chain on the Options sheet):" in format_summary(summary)
