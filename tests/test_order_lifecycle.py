"""The whole order lifecycle from rows (issue 13), from the outside: the template workbook opened with
the openpyxl adapter, rows edited as a trader would, *Place orders* run again (addin.app.macros), and
what reached the paper gateway counted on the gateway's side (its record of every placeOrder and its
own table of working orders), the rows read back from the saved file with openpyxl.

- modify: price and quantity of a resting LMT, the stop of a STP, a bracket child's price and the
  bracket's quantity: one order at the gateway (same order id), holding the new values;
- a change IB cannot make (the side) is refused with its reason, the order untouched;
- a staged row (Transmit FALSE) released by setting Transmit TRUE: one order, same permId;
- TrailPercent typed as 1.5% in a percent-formatted cell reaches IB as 1.5;
- every drop-down value (order types and TIFs) placed once and answered;
- orders that finished while ibxl was away: after reconnecting no cell shows an unset sentinel and
  every row shows IB's final state.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from ibapi.order import Order

from addin.app import macros
from addin.app.runtime import Runtime
from addin.config import Settings
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.orders.rows import OrderIntent, parse_row
from addin.paper import PaperGateway
from addin.protocol import orders as vocabulary

from .ibclient import IBTestClient
from .test_macros import set_orders

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "workbooks" / "ibxl.xlsx"
ROOMY = replace(Settings().risk, max_quantity=1_000, max_notional=2_000_000, max_position=100_000,
                max_open_orders=1_000, max_orders_per_minute=1_000, daily_loss_limit=1_000_000)
CLIENT_ID = 71


# --- the vocabulary: drop-downs, parser and README agree ------------------------------------------
def _dropdowns() -> dict[str, set[str]]:
    ws = openpyxl.load_workbook(TEMPLATE)["Orders"]
    header = [c.value for c in ws[1]]
    out: dict[str, set[str]] = {}
    for dv in ws.data_validations.dataValidation:
        if dv.type != "list":
            continue
        column = header[openpyxl.utils.column_index_from_string(str(dv.sqref).split(":")[0].rstrip("0123456789")) - 1]
        out[column] = set(dv.formula1.strip('"').split(","))
    return out


def _minimal_row(order_type: str, tif: str = "DAY") -> dict:
    kind = vocabulary.order_type(order_type)
    row = {"Ref": "V", "Account": "DU1", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": order_type,
           "TIF": tif}
    for col in vocabulary.PRICE_COLUMNS:
        if kind.need(col) == vocabulary.REQUIRED:
            row[col] = 1.0
    if kind.trail:
        row["TrailAmount"] = 1.0
    if tif == "GTD":
        row["GoodTillDate"] = datetime(2030, 1, 2, 21, 0)
    return row


def test_every_dropdown_value_parses_and_every_parsed_value_is_offered():
    offered = _dropdowns()
    assert offered["OrderType"] == set(vocabulary.ORDER_TYPE_CODES)
    assert offered["TIF"] == set(vocabulary.TIF_CODES)
    for code in offered["OrderType"]:
        parsed = parse_row(_minimal_row(code))
        assert isinstance(parsed, OrderIntent) and parsed.order_type == code, parsed
    for tif in offered["TIF"]:
        parsed = parse_row(_minimal_row("LMT", tif))
        assert isinstance(parsed, OrderIntent) and parsed.tif == tif, parsed
    assert parse_row(_minimal_row("LMT", "GTD")).good_till == "20300102-21:00:00"
    # nothing outside the drop-downs parses
    for bad_type in ("TRAIL LMTX", "PEG MID", "VWAP"):
        assert not isinstance(parse_row({**_minimal_row("MKT"), "OrderType": bad_type}), OrderIntent)
    for bad_tif in ("GTX", "AUC", "MOO"):
        assert not isinstance(parse_row({**_minimal_row("LMT"), "TIF": bad_tif}), OrderIntent)


def test_the_readme_lists_the_vocabulary_as_the_code_has_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert vocabulary.markdown() in readme


def test_tif_and_type_rules_name_the_cell():
    opg = str(parse_row(_minimal_row("STP", "OPG")))
    assert opg == "TIF: OPG (the opening auction) takes MKT or LMT orders, got STP"
    no_date = {**_minimal_row("LMT", "GTD"), "GoodTillDate": None}
    assert str(parse_row(no_date)).startswith("GoodTillDate: GTD needs a GoodTillDate")
    stray = {**_minimal_row("LMT"), "GoodTillDate": datetime(2030, 1, 1)}
    assert str(parse_row(stray)).startswith("GoodTillDate: must be blank unless TIF is GTD")
    zoned = parse_row({**_minimal_row("LMT", "GTD"), "GoodTillDate": "20300102 16:00:00 US/Eastern"})
    assert zoned.good_till == "20300102-21:00:00"
    assert str(parse_row({**_minimal_row("TRAIL LIMIT"), "Offset": None})) == "Offset: TRAIL LIMIT needs a Offset, " \
                                                                                "got a blank cell"


# --- rows against the paper gateway ---------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


@pytest.fixture
def rt(gw, tmp_path):
    runtime = Runtime(port=gw.port, client_id=CLIENT_ID, settings=Settings(risk=ROOMY),
                      journal_path=tmp_path / "journal.sqlite3")
    runtime.connect()
    yield runtime
    runtime.close()


@pytest.fixture
def book(tmp_path):
    b = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "book.xlsx")
    yield b
    b.close()


def edit(book, row: int, **cells) -> None:
    """What a trader does: type new values into some input cells of a row."""
    info = book.table("Orders")
    for column, value in cells.items():
        book.write(info.sheet, row, info.column(column), [[value]])


def saved_rows(book, tmp_path) -> dict[str, dict]:
    """The Orders rows as the saved file holds them, by Ref."""
    ws = openpyxl.load_workbook(book.save(tmp_path / "check.xlsx"))["Orders"]
    header = [c.value for c in ws[1]]
    rows = {}
    for values in ws.iter_rows(min_row=2, values_only=True):
        rec = dict(zip(header, values))
        if rec.get("Ref"):
            rows[rec["Ref"]] = rec
    return rows


def received(gw, ref: str) -> list:
    return [r for r in gw.received_orders() if r.order.orderRef == ref]


def working(gw, ref: str) -> list:
    """The gateway's own working orders with this orderRef: (contract, order, state)."""
    return [w for w in gw.call(lambda s: s.broker.open_orders()) if w[1].orderRef == ref]


def quote(rt, symbol: str):
    q = rt.market.snapshot(symbol)
    assert q.bid and q.ask, q
    return q


def lmt(ref, symbol, qty, price, **more) -> dict:
    return {"Ref": ref, "Symbol": symbol, "Action": "BUY", "Quantity": qty, "OrderType": "LMT",
            "LimitPrice": price, "TIF": "DAY", "Transmit": True, **more}


def test_modify_price_and_quantity_of_a_resting_lmt_and_the_stop_of_a_stp(book, rt, gw, tmp_path):
    q = quote(rt, "SPY")
    low, stop = round(q.bid * 0.97, 2), round(q.ask * 1.03, 2)
    rows = set_orders(book, [lmt("LC-LMT", "SPY", 1, low),
                             {"Ref": "LC-STP", "Symbol": "SPY", "Action": "BUY", "Quantity": 1, "OrderType": "STP",
                              "StopPrice": stop, "TIF": "GTC", "Transmit": True}])
    first = macros.place_orders(book, rt)
    assert list(first.Outcome) == ["sent", "sent"], first.to_dict("records")

    edit(book, rows["LC-LMT"], LimitPrice=round(low + 0.5, 2), Quantity=5)
    edit(book, rows["LC-STP"], StopPrice=round(stop + 0.25, 2))
    second = macros.place_orders(book, rt).set_index("Ref")
    assert list(second.Outcome) == ["modified", "modified"], second.to_dict("records")

    for ref in ("LC-LMT", "LC-STP"):
        sent = received(gw, ref)
        assert len(sent) == 2 and sent[0].order_id == sent[1].order_id       # placeOrder again, same id
        assert len(working(gw, ref)) == 1                                     # one order at the gateway
    (_, order, _), = working(gw, "LC-LMT")
    assert (order.lmtPrice, float(order.totalQuantity)) == (round(low + 0.5, 2), 5.0)
    (_, order, _), = working(gw, "LC-STP")
    assert order.auxPrice == round(stop + 0.25, 2)

    saved = saved_rows(book, tmp_path)
    assert saved["LC-LMT"]["Status"] == "Submitted" and saved["LC-LMT"]["Remaining"] == 5
    assert saved["LC-LMT"]["Message"].startswith("modified: ") and "LimitPrice" in saved["LC-LMT"]["Message"]
    # run again unchanged: nothing more reaches IB
    third = macros.place_orders(book, rt)
    assert list(third.Outcome) == ["unchanged", "unchanged"]
    assert len(received(gw, "LC-LMT")) == 2 and len(received(gw, "LC-STP")) == 2


def test_a_change_ib_cannot_make_is_refused_and_the_order_stays(book, rt, gw, tmp_path):
    q = quote(rt, "MSFT")
    low = round(q.bid * 0.97, 2)
    rows = set_orders(book, [lmt("LC-SIDE", "MSFT", 2, low)])
    macros.place_orders(book, rt)
    edit(book, rows["LC-SIDE"], Action="SELL", LimitPrice=round(low + 1, 2))
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["not modified"]
    saved = saved_rows(book, tmp_path)["LC-SIDE"]
    assert saved["Message"] == ("not modified: Action: IB cannot change an order's side (BUY -> SELL); LC-SIDE is "
                                "left as it is: cancel it and place a new row")
    assert saved["Status"] == "Submitted"
    assert len(received(gw, "LC-SIDE")) == 1
    (_, order, _), = working(gw, "LC-SIDE")
    assert (order.action, order.lmtPrice, float(order.totalQuantity)) == ("BUY", low, 2.0)
    log = book.read_table("LogEntries", drop_empty=True)
    assert log.Message.iloc[-1] == "orders: 1 row read, 0 sent, 1 not modified"


def test_bracket_child_price_and_the_brackets_quantity_follow_the_row(book, rt, gw, tmp_path):
    q = quote(rt, "AAPL")
    entry = round(q.bid * 0.97, 2)
    tp, sl = round(entry * 1.02, 2), round(entry * 0.98, 2)
    rows = set_orders(book, [lmt("LC-BR", "AAPL", 2, entry, TakeProfit=tp, StopLoss=sl)])
    assert list(macros.place_orders(book, rt).Outcome) == ["sent"]
    edit(book, rows["LC-BR"], TakeProfit=round(tp + 0.5, 2))
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["modified"], list(out.Message)
    assert [len(received(gw, r)) for r in ("LC-BR", "LC-BR.TP", "LC-BR.SL")] == [1, 2, 1]
    (_, child, _), = working(gw, "LC-BR.TP")
    assert child.lmtPrice == round(tp + 0.5, 2) and child.parentId == received(gw, "LC-BR")[0].order_id

    edit(book, rows["LC-BR"], Quantity=3)
    assert list(macros.place_orders(book, rt).Outcome) == ["modified"]
    for ref in ("LC-BR", "LC-BR.TP", "LC-BR.SL"):
        (_, o, _), = working(gw, ref)
        assert float(o.totalQuantity) == 3.0, ref
    assert saved_rows(book, tmp_path)["LC-BR"]["Message"] == "modified: Quantity 2 -> 3"
    edit(book, rows["LC-BR"], TakeProfit=None)          # a child cannot be removed by blanking its cell
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["not modified"] and "cancel LC-BR.TP instead" in out.Message.iloc[0]


def test_a_staged_row_is_released_as_the_same_order(book, rt, gw, tmp_path):
    q = quote(rt, "GOOG")
    rows = set_orders(book, [lmt("LC-HOLD", "GOOG", 1, round(q.bid * 0.98, 2), Transmit=False)])
    first = macros.place_orders(book, rt)
    assert list(first.Status) == ["PreSubmitted"]
    (_, held, _), = working(gw, "LC-HOLD")
    edit(book, rows["LC-HOLD"], Transmit=True)
    second = macros.place_orders(book, rt)
    assert list(second.Outcome) == ["released"], second.to_dict("records")
    sent = received(gw, "LC-HOLD")
    assert [r.order.transmit for r in sent] == [False, True] and sent[0].order_id == sent[1].order_id
    (_, live, state), = working(gw, "LC-HOLD")
    assert live.permId == held.permId and state.status == "Submitted"
    saved = saved_rows(book, tmp_path)["LC-HOLD"]
    assert saved["Status"] == "Submitted" and saved["Message"] == "released: transmitted to IB"
    edit(book, rows["LC-HOLD"], Transmit=False)         # a transmitted order cannot be held back
    assert list(macros.place_orders(book, rt).Outcome) == ["not modified"]


def test_trail_percent_typed_as_a_percentage_reaches_ib_as_shown(book, rt, gw, tmp_path):
    rows = set_orders(book, [
        {"Ref": "LC-TP-PCT", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "TRAIL",
         "TrailPercent": 0.015, "TIF": "GTC", "Transmit": True},
        {"Ref": "LC-TP-NUM", "Symbol": "AAPL", "Action": "BUY", "Quantity": 1, "OrderType": "TRAIL",
         "TrailPercent": 1.5, "TIF": "GTC", "Transmit": True}])
    info = book.table("Orders")
    # typing 1.5% into a cell makes Excel store 0.015 and format it as a percentage
    book.workbook["Orders"].cell(rows["LC-TP-PCT"], info.column("TrailPercent")).number_format = "0.00%"
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["sent", "sent"], out.to_dict("records")
    assert [received(gw, ref)[0].order.trailingPercent for ref in ("LC-TP-PCT", "LC-TP-NUM")] == [1.5, 1.5]


def _every_value_rows(q, aapl) -> list[dict]:
    bid, ask = q.bid, q.ask
    r = lambda x: round(x, 2)                                   # noqa: E731 - SPY's tick is 0.01
    base = {"Symbol": "SPY", "Action": "BUY", "Quantity": 1, "TIF": "DAY", "Transmit": True}
    prices = {"MKT": {}, "LMT": {"LimitPrice": r(bid * 0.98)},
              "STP": {"StopPrice": r(ask * 1.02)}, "STP LMT": {"StopPrice": r(ask * 1.02), "LimitPrice": r(ask * 1.03)},
              "TRAIL": {"TrailAmount": 1.0}, "TRAIL LIMIT": {"TrailAmount": 1.0, "Offset": 0.1},
              "MOC": {}, "LOC": {"LimitPrice": r(bid * 0.98)},
              "MIT": {"StopPrice": r(bid * 0.98)}, "LIT": {"StopPrice": r(bid * 0.98), "LimitPrice": r(bid * 0.98)},
              "REL": {"Offset": 0.01, "LimitPrice": r(ask * 1.01)}, "MIDPRICE": {"LimitPrice": r(ask * 1.01)}}
    rows = [{**base, "Ref": f"EV-{code.replace(' ', '-')}", "OrderType": code, **prices[code]}
            for code in vocabulary.ORDER_TYPE_CODES]
    for tif in vocabulary.TIF_CODES:
        row = {**base, "Ref": f"EV-TIF-{tif}", "Symbol": "AAPL", "OrderType": "LMT",
               "LimitPrice": round(aapl.bid * 0.98, 2), "TIF": tif}
        if tif == "GTD":
            row["GoodTillDate"] = (datetime.now(UTC) + timedelta(days=30)).replace(tzinfo=None, microsecond=0)
        rows.append(row)
    return rows


def loosen_config(book, **values) -> None:
    """The template's Config Table tightens the risk limits (10 orders a minute); a workbook may set
    its own values there (still never looser than the config file's)."""
    config = book.read_table("Config", drop_empty=True)
    info = book.table("Config")
    for row, key in config["Key"].items():
        if key in values:
            book.write(info.sheet, int(row), info.column("Value"), [[values[key]]])


def test_every_dropdown_value_is_placed_once_and_answered(book, rt, gw, tmp_path):
    loosen_config(book, max_orders_per_minute=100, max_open_orders=100, max_notional=100_000)
    rows = _every_value_rows(quote(rt, "SPY"), quote(rt, "AAPL"))
    assert {r["OrderType"] for r in rows} == set(_dropdowns()["OrderType"])
    assert {r["TIF"] for r in rows} == set(_dropdowns()["TIF"])
    set_orders(book, rows)
    out = macros.place_orders(book, rt).set_index("Ref")
    assert set(out.Outcome) == {"sent"}, out[out.Outcome != "sent"][["Outcome", "Message"]].to_dict("index")
    for row in rows:
        assert len(received(gw, row["Ref"])) == 1, row["Ref"]
    # every one answered by IB and taken: working or filled (the paper gateway serves the whole vocabulary)
    saved = saved_rows(book, tmp_path)
    statuses = {row["Ref"]: saved[row["Ref"]]["Status"] for row in rows}
    for tif in ("IOC", "FOK"):               # a limit under the bid cannot fill at once: IB cancels it
        assert statuses.pop(f"EV-TIF-{tif}") == "Cancelled"
        assert saved[f"EV-TIF-{tif}"]["Message"].startswith("IB 202: Order Canceled")
    assert set(statuses.values()) <= {"Submitted", "PreSubmitted", "Filled"}, str(
        {ref: (st, saved[ref]["Message"]) for ref, st in statuses.items() if st not in ("Submitted", "Filled")})
    assert statuses["EV-MKT"] == "Filled" and statuses["EV-LMT"] == "Submitted"
    # placed again: each is unchanged, nothing more reaches IB
    again = macros.place_orders(book, rt)
    assert set(again.Outcome) <= {"unchanged"}
    assert all(len(received(gw, row["Ref"])) == 1 for row in rows)
    resting = [row["Ref"] for row in rows if saved[row["Ref"]]["Status"] in ("Submitted", "PreSubmitted")]
    left = rt.orders.cancel(resting)
    assert set(left.Outcome) <= {"cancelled"}           # the module's gateway is left with no working order


# --- orders that finished while ibxl was away -----------------------------------------------------
def _numbers(rows: dict[str, dict]) -> list[float]:
    return [v for rec in rows.values() for v in rec.values()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_after_reconnecting_rows_show_ibs_final_state_and_no_unset_numbers(gw, tmp_path):
    journal = tmp_path / "journal.sqlite3"
    path = tmp_path / "away.xlsx"
    book = OpenpyxlBook.open(TEMPLATE, out=path)
    rt = Runtime(port=gw.port, client_id=CLIENT_ID + 1, settings=Settings(risk=ROOMY), journal_path=journal)
    rt.connect()
    q = quote(rt, "MSFT")
    low = round(q.bid * 0.97, 2)
    set_orders(book, [lmt("AW-FILL", "MSFT", 3, low), lmt("AW-CANCEL", "MSFT", 2, low),
                      lmt("AW-REST", "MSFT", 1, low)])
    out = macros.place_orders(book, rt)
    assert list(out.Status) == ["Submitted"] * 3, out.to_dict("records")
    ids = dict(zip(out.Ref, out.OrderId))
    book.save()
    book.close()
    rt.close()                                                   # ibxl goes away

    # while it is away the same client id (TWS, another tool) fills one and cancels one
    other = IBTestClient().start(gw.port, client_id=CLIENT_ID + 1)
    try:
        filled = Order()
        filled.action, filled.orderType, filled.totalQuantity = "BUY", "LMT", 3
        filled.lmtPrice, filled.orderRef, filled.account = round(q.ask * 1.02, 2), "AW-FILL", ""
        contract = received(gw, "AW-FILL")[0].contract
        mark = other.mark()
        other.placeOrder(int(ids["AW-FILL"]), contract, filled)
        other.wait_for("orderStatus", lambda e: e[0] == int(ids["AW-FILL"]) and e[1] == "Filled", start=mark)
        other.cancelOrder(int(ids["AW-CANCEL"]), _order_cancel())
        other.wait_for("orderStatus", lambda e: e[0] == int(ids["AW-CANCEL"]) and e[1] == "Cancelled", start=mark)
    finally:
        other.stop()
    gone = threading.Event()          # the gateway frees the client id on its own loop, a moment later
    for _ in range(1000):
        if gw.call(lambda srv: CLIENT_ID + 1 not in srv.clients):
            gone.set()
            break
        gone.wait(0.01)
    assert gone.is_set(), "the gateway kept client id 72 after its connection closed"

    # ibxl comes back: a new process on the same journal and workbook
    book = OpenpyxlBook.open(path)
    rt = Runtime(port=gw.port, client_id=CLIENT_ID + 1, settings=Settings(risk=ROOMY), journal_path=journal)
    try:
        rt.connect()
        again = macros.place_orders(book, rt).set_index("Ref")
        assert set(again.Outcome) == {"unchanged"}, again.to_dict("index")
        rows = saved_rows(book, tmp_path)
    finally:
        book.close()
        rt.close()
    assert all(math.isfinite(v) and abs(v) < 1e30 for v in _numbers(rows)), rows
    assert (rows["AW-FILL"]["Status"], rows["AW-FILL"]["Filled"], rows["AW-FILL"]["Remaining"]) == ("Filled", 3, 0)
    assert rows["AW-FILL"]["AvgFillPrice"] is not None and rows["AW-FILL"]["AvgFillPrice"] > 0
    assert rows["AW-CANCEL"]["Status"] == "Cancelled"
    assert rows["AW-REST"]["Status"] == "Submitted"


def _order_cancel():
    from ibapi.order_cancel import OrderCancel
    return OrderCancel()



def test_refreshing_the_portfolio_or_streaming_brings_every_row_to_the_journals_truth(book, rt, gw, tmp_path):
    q = quote(rt, "AAPL")
    set_orders(book, [lmt("RF-1", "AAPL", 1, round(q.bid * 0.97, 2)), lmt("RF-2", "AAPL", 1, round(q.bid * 0.96, 2))])
    assert list(macros.place_orders(book, rt).Status) == ["Submitted", "Submitted"]
    desk = rt.orders
    done = threading.Event()
    desk.add_listener(lambda ref, outputs: done.set() if ref == "RF-2" and outputs["Status"] == "Cancelled" else None)
    desk.cancel(["RF-1"])                     # straight through the desk: the rows are not written
    desk.cancel_all()
    assert done.wait(10)
    assert saved_rows(book, tmp_path)["RF-1"]["Status"] == "Submitted"     # stale until a refresh
    counts = macros.refresh_portfolio(book, rt)
    assert counts["Orders"] == 2
    saved = saved_rows(book, tmp_path)
    assert (saved["RF-1"]["Status"], saved["RF-2"]["Status"]) == ("Cancelled", "Cancelled")
    # a streaming start paints every row from the journal too
    edit(book, 2, Status="Submitted")
    pump = macros.start_streaming(book, rt, run=False)
    try:
        pump.flush()
    finally:
        rt.stop_pump(macros.book_id(book))
    assert saved_rows(book, tmp_path)["RF-1"]["Status"] == "Cancelled"


# --- hostile cells in the new columns ----------------------------------------------------------------
@pytest.mark.parametrize("column, value, words", [
    ("GoodTillDate", 46000.0, "got the number 46,000 (format the cell as a date)"),
    ("GoodTillDate", "1234567890", "expected a date and time (UTC)"),              # IB's reader: epoch seconds
    ("GoodTillDate", "#VALUE!", "the cell holds the Excel error #VALUE!"),
    ("GoodTillDate", "\uff12\uff10\uff13\uff10-01-01", "expected a date and time (UTC)"),  # full-width digits
    ("GoodTillDate", "20300101 16:00:00 Mars/Base", "expected a date and time (UTC)"),
    ("TIF", "\uff27\uff34\uff24", "expected one of DAY"),                          # full-width GTD
    ("Offset", "1e999", "expected a positive price distance"),
    ("Offset", -0.5, "expected a positive price distance"),
    ("TrailPercent", 1e-298, "at least 0.01"),
    ("TrailPercent", float("inf"), "between 0 and 100"),
])
def test_hostile_cells_in_the_new_columns_name_the_column(column, value, words):
    row = {**_minimal_row("TRAIL LIMIT", "GTD"), "Offset": 0.1}
    if column == "TrailPercent":
        row.pop("TrailAmount")
    got = parse_row({**row, column: value})
    assert not isinstance(got, OrderIntent), got
    assert got.column == column and words in str(got), str(got)


def test_a_gtd_date_in_the_past_or_a_distance_as_big_as_the_price_never_reaches_ib(book, rt, gw, tmp_path):
    q = quote(rt, "SPY")
    past = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None, microsecond=0)
    set_orders(book, [lmt("HX-PAST", "SPY", 1, round(q.bid * 0.97, 2), TIF="GTD", GoodTillDate=past),
                      {"Ref": "HX-TRAIL", "Symbol": "SPY", "Action": "BUY", "Quantity": 1, "OrderType": "TRAIL",
                       "TrailAmount": round(q.ask * 2, 2), "TIF": "GTC", "Transmit": True},
                      {"Ref": "HX-OFF", "Symbol": "SPY", "Action": "BUY", "Quantity": 1, "OrderType": "TRAIL LIMIT",
                       "TrailAmount": 1.0, "Offset": 1e-300, "TIF": "GTC", "Transmit": True}])
    out = macros.place_orders(book, rt).set_index("Ref")
    assert list(out.Outcome) == ["refused", "refused", "refused"], out.Message.to_dict()
    assert out.Message["HX-PAST"].startswith("good_till: GoodTillDate ") and "is not in the future" in \
        out.Message["HX-PAST"]
    assert out.Message["HX-TRAIL"].startswith("price_band: TrailAmount ")
    assert out.Message["HX-OFF"].startswith("tick_grid: Offset 1e-300 is not a multiple of the tick")
    assert not any(received(gw, ref) for ref in out.index)


def test_the_log_counts_each_kind_of_outcome_exactly(book, rt, gw, tmp_path):
    q = quote(rt, "MSFT")
    low = round(q.bid * 0.97, 2)
    rows = set_orders(book, [lmt("LG-MOD", "MSFT", 1, low), lmt("LG-SAME", "MSFT", 1, low),
                             lmt("LG-SIDE", "MSFT", 1, low)])
    macros.place_orders(book, rt)
    edit(book, rows["LG-MOD"], LimitPrice=round(low - 0.25, 2))
    edit(book, rows["LG-SIDE"], Action="SELL")
    more = book.read_table("Orders", drop_empty=True)
    assert len(more) == 3
    info = book.table("Orders")
    book.write_table("Orders", pd.concat([more, pd.DataFrame([
        {c: None for c in info.columns} | {"Ref": "LG-NEW", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1,
                                           "OrderType": "LMT", "LimitPrice": low, "TIF": "DAY"},
        {c: None for c in info.columns} | {"Ref": "LG-BAD", "Symbol": "MSFT", "Action": "BUY", "Quantity": "ten",
                                           "OrderType": "MKT"},
        {c: None for c in info.columns} | {"Ref": "LG-FAR", "Symbol": "MSFT", "Action": "BUY", "Quantity": 1,
                                           "OrderType": "LMT", "LimitPrice": round(q.bid * 0.5, 2)}])],
        ignore_index=True))
    out = macros.place_orders(book, rt)
    assert dict(zip(out.Ref, out.Outcome)) == {"LG-MOD": "modified", "LG-SAME": "unchanged", "LG-SIDE": "not modified",
                                               "LG-NEW": "sent", "LG-BAD": "error", "LG-FAR": "refused"}
    log = book.read_table("LogEntries", drop_empty=True)
    assert log.Message.iloc[-1] == ("orders: 6 rows read, 1 sent, 1 modified, 1 unchanged, 1 not modified, "
                                    "1 refused, 1 error")
    assert [len(received(gw, r)) for r in ("LG-MOD", "LG-SAME", "LG-SIDE", "LG-NEW", "LG-BAD", "LG-FAR")] == \
        [2, 1, 1, 1, 0, 0]


def test_another_client_may_not_modify_the_order_and_sends_nothing(book, rt, gw, tmp_path):
    q = quote(rt, "GOOG")
    low = round(q.bid * 0.97, 2)
    rows = set_orders(book, [lmt("OC-1", "GOOG", 1, low)])
    macros.place_orders(book, rt)
    edit(book, rows["OC-1"], LimitPrice=round(low - 0.5, 2))
    other = Runtime(port=gw.port, client_id=CLIENT_ID + 5, settings=Settings(risk=ROOMY),
                    journal_path=rt.journal_path)
    try:
        other.connect()
        out = macros.place_orders(book, other)
    finally:
        other.close()
    assert list(out.Outcome) == ["not modified"]
    assert out.Message.iloc[0] == (f"not modified: OC-1 was placed by client {CLIENT_ID}; IB lets only that client "
                                   f"modify it (this is client {CLIENT_ID + 5}); nothing was sent")
    assert len(received(gw, "OC-1")) == 1


def test_a_price_band_typed_as_a_percentage_in_config_is_read_as_it_shows(book, rt, gw):
    config = book.read_table("Config", drop_empty=True)
    row = int(config.index[config["Key"] == "price_band_pct"][0])
    info = book.table("Config")
    book.write(info.sheet, row, info.column("Value"), [[0.02]])          # typed as 2%
    book.workbook["Config"].cell(row, info.column("Value")).number_format = "0%"
    assert macros._read_config(book)["price_band_pct"] == 2.0
    q = quote(rt, "AAPL")
    set_orders(book, [lmt("PB-3", "AAPL", 1, round(q.bid * 0.97, 2)), lmt("PB-1", "AAPL", 1, round(q.bid * 0.99, 2))])
    out = macros.place_orders(book, rt).set_index("Ref")
    assert out.Outcome["PB-3"] == "refused" and "(band 2%)" in out.Message["PB-3"], out.Message["PB-3"]
    assert out.Outcome["PB-1"] == "sent"


def test_after_the_entry_fills_its_take_profit_and_stop_loss_can_still_be_modified(book, rt, gw, tmp_path):
    q = quote(rt, "SPY")
    entry = round(q.ask * 1.002, 2)                      # marketable: the entry fills at once
    tp, sl = round(q.ask * 1.02, 2), round(q.bid * 0.98, 2)
    rows = set_orders(book, [lmt("AF-BR", "SPY", 2, entry, TakeProfit=tp, StopLoss=sl)])
    done = threading.Event()
    desk = macros._desk(book, rt)                        # the desk with the workbook's Config, as placing uses
    desk.add_listener(lambda ref, out: done.set() if ref == "AF-BR" and out["Status"] == "Filled" else None)
    macros.place_orders(book, rt)
    assert done.wait(10), {k: v for k, v in rt.orders.order("AF-BR").items() if k in ("Status", "Message", "State")}
    edit(book, rows["AF-BR"], StopLoss=round(sl - 0.5, 2))
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["modified"], list(out.Message)
    (_, child, _), = working(gw, "AF-BR.SL")
    assert child.auxPrice == round(sl - 0.5, 2)
    assert [len(received(gw, r)) for r in ("AF-BR", "AF-BR.TP", "AF-BR.SL")] == [1, 1, 2]
    edit(book, rows["AF-BR"], LimitPrice=round(entry - 0.5, 2))    # the filled entry cannot change
    out = macros.place_orders(book, rt)
    assert list(out.Outcome) == ["not modified"] and "AF-BR is Filled: it can no longer change" in out.Message.iloc[0]
    rt.orders.cancel(["AF-BR.TP"])                         # leave the module's gateway without working orders


def test_the_audit_names_every_field_a_modification_changed(book, rt, gw, tmp_path):
    from addin.orders.audit import audit_frame
    q = quote(rt, "MSFT")
    low = round(q.bid * 0.97, 2)
    rows = set_orders(book, [lmt("AU-TIF", "MSFT", 1, low)])
    macros.place_orders(book, rt)
    edit(book, rows["AU-TIF"], TIF="GTC", OutsideRTH=True)
    assert list(macros.place_orders(book, rt).Outcome) == ["modified"]
    (_, order, _), = working(gw, "AU-TIF")
    assert (order.tif, order.outsideRth) == ("GTC", True)
    trail = audit_frame(rt.orders.journal, ref="AU-TIF", tz="UTC")
    modify = trail[trail.Event == "modify"].Detail.iloc[0]
    assert "TIF DAY -> GTC" in modify and "OutsideRTH" in modify, modify
    rt.orders.cancel(["AU-TIF"])
