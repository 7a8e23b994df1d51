"""Parsing the Orders table as Excel delivers it: a real workbook written with openpyxl (numbers, text,
blanks, formulas' error values, booleans) read back with pandas.read_excel and with openpyxl."""

from __future__ import annotations

import openpyxl
import pandas as pd

from addin.orders.rows import (
    ORDER_INPUT_COLUMNS,
    ORDER_OUTPUT_COLUMNS,
    OrderIntent,
    RowError,
    new_ref,
    parse_row,
    parse_rows,
)


def test_columns_are_in_the_documented_order():
    assert ORDER_INPUT_COLUMNS == ("Ref", "Account", "Symbol", "Action", "Quantity", "OrderType", "LimitPrice",
                                   "StopPrice", "TrailAmount", "TrailPercent", "Offset", "TIF", "GoodTillDate",
                                   "OutsideRTH", "TakeProfit", "StopLoss", "OCAGroup", "Transmit")
    assert ORDER_OUTPUT_COLUMNS == ("Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice",
                                    "Commission", "Message", "Updated")


def workbook(tmp_path, header, rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Orders"
    ws.append(header)
    for r in rows:
        ws.append(r)
    path = tmp_path / "orders.xlsx"
    wb.save(path)
    return path


HEADER = [" ref", "ACCOUNT", "Symbol ", "action", "Quantity", "OrderType", "LimitPrice", "StopPrice", "TIF",
          "OutsideRTH", "TakeProfit", "StopLoss", "Transmit"]


def test_rows_as_excel_delivers_them(tmp_path):
    path = workbook(tmp_path, HEADER, [
        ["A1", "du1", " aapl ", "buy", 100, "lmt", 189.5, None, "gtc", "TRUE", None, None, None],
        [17, None, "EUR/USD", " SELL ", "20,000", "MKT", None, None, None, False, None, None, "FALSE"],
        [None, "DU1", "ESZ6.CME", "Buy", "2", "LMT", 5900, None, None, None, 6000, 5850, True],
        ["A4", "DU1", "AAPL", "BUY", " 1.5e2 ", "STP LMT", "190", "189.95", "ioc", 1, None, None, 0],
    ])
    for frame in (pd.read_excel(path, engine="openpyxl"),
                  pd.DataFrame(list(openpyxl.load_workbook(path).active.iter_rows(min_row=2, values_only=True)),
                               columns=HEADER)):
        parsed = parse_rows(frame)
        assert all(isinstance(p, OrderIntent) for p in parsed.values()), parsed
        a, b, c, d = parsed.values()
        assert (a.ref, a.account, a.symbol, a.action, a.quantity, a.order_type, a.limit_price, a.tif,
                a.outside_rth, a.transmit) == ("A1", "DU1", "aapl", "BUY", 100.0, "LMT", 189.5, "GTC", True, True)
        assert (b.ref, b.account, b.quantity, b.action, b.tif, b.outside_rth, b.transmit) == \
            ("17", "", 20_000.0, "SELL", "DAY", False, False)
        assert c.ref == "" and c.is_bracket and (c.take_profit, c.stop_loss) == (6000.0, 5850.0)
        assert (d.quantity, d.limit_price, d.stop_price, d.tif, d.outside_rth, d.transmit) == \
            (150.0, 190.0, 189.95, "IOC", True, False)


def test_error_values_and_junk_name_the_column_and_what_was_expected(tmp_path):
    path = workbook(tmp_path, HEADER, [
        ["B1", "DU1", "AAPL", "BUY", "#N/A", "MKT", None, None, None, None, None, None, None],
        ["B2", "DU1", "#REF!", "BUY", 1, "MKT", None, None, None, None, None, None, None],
        ["B3", "DU1", "AAPL", "HOLD", 1, "MKT", None, None, None, None, None, None, None],
        ["B4", "DU1", "AAPL", "BUY", "ten", "MKT", None, None, None, None, None, None, None],
        ["B5", "DU1", "AAPL", "BUY", -5, "MKT", None, None, None, None, None, None, None],
        ["B6", "DU1", "AAPL", "BUY", 1, "LIMIT ORDER", None, None, None, None, None, None, None],
        ["B7", "DU1", "AAPL", "BUY", 1, "LMT", None, None, None, None, None, None, None],
        ["B8", "DU1", "AAPL", "BUY", 1, "MKT", 100, None, None, None, None, None, None],
        ["B9", "DU1", "AAPL", "BUY", 1, "MKT", None, None, "WEEK", None, None, None, None],
        ["B10", "DU1", "AAPL", "BUY", 1, "MKT", None, None, None, "maybe", None, None, None],
        ["B11", "DU1", "AAPL", "BUY", 1, "LMT", 100, None, None, None, 90, None, None],
        ["B12", "DU1", "AAPL", "SELL", 1, "LMT", 100, None, None, None, None, 95, None],
        ["B13", "DU1", "AAPL", "BUY", 1, "MOC", None, None, "GTC", None, None, None, None],
        ["B1", "DU1", "AAPL", "BUY", 1, "MKT", None, None, None, None, None, None, None],
        ["B15.TP", "DU1", "AAPL", "BUY", 1, "MKT", None, None, None, None, None, None, None],
        ["B16", "DU 1!", "AAPL", "BUY", 1, "MKT", None, None, None, None, None, None, None],
        ["B17", "DU1", "AAPL 2026 C", "BUY", 1, "MKT", None, None, None, None, None, None, None],
        ["B18", "DU1", "AAPL", "BUY", float("inf"), "MKT", None, None, None, None, None, None, None],
    ])
    # Read with openpyxl: it keeps error cells as their text ("#N/A"); pandas.read_excel turns them into
    # NaN, which would read as a blank cell (see the addin.orders.rows docstring).
    ws = openpyxl.load_workbook(path).active
    parsed = list(parse_rows(pd.DataFrame(list(ws.iter_rows(min_row=2, values_only=True)), columns=HEADER)).values())
    expected = [
        # rows 0 and 13 share the Ref B1: both are refused, each naming the other (issue 12)
        ("Ref", "'B1' is also the Ref of row 13"), ("Symbol", "the cell holds the Excel error #REF!"),
        ("Action", "expected BUY or SELL, got 'HOLD'"), ("Quantity", "expected a positive number"),
        ("Quantity", "expected a positive number of shares/contracts, got -5"), ("OrderType", "expected one of MKT"),
        ("LimitPrice", "LMT needs a LimitPrice"), ("LimitPrice", "must be blank for MKT"),
        ("TIF", "expected one of DAY"),
        ("OutsideRTH", "expected TRUE or FALSE"), ("TakeProfit", "must be above it"), ("StopLoss", "must be above it"),
        ("TIF", "MOC orders are DAY orders"), ("Ref", "'B1' is also the Ref of row 0"),
        ("Ref", "reserved for bracket children"),
        ("Account", "expected an IB account id"), ("Symbol", "AAPL 2026 C"), ("Quantity", "expected a positive number"),
    ]
    assert len(parsed) == len(expected)
    for got, (column, words) in zip(parsed, expected):
        assert isinstance(got, RowError), got
        assert got.column == column and words in str(got), (got, column, words)
        assert str(got).startswith(column + ": ")


def test_blank_rows_are_skipped_and_a_table_without_required_columns_says_so():
    df = pd.DataFrame({"Ref": ["A", None], "Symbol": ["AAPL", float("nan")], "Action": ["BUY", "  "]})
    parsed = parse_rows(df)
    assert list(parsed) == [0]
    assert parsed[0].column == "Quantity" and "no Quantity column" in parsed[0].message


def test_trail_needs_exactly_one_of_amount_or_percent():
    base = {"Ref": "T", "Symbol": "AAPL", "Action": "SELL", "Quantity": 1, "OrderType": "TRAIL"}
    assert isinstance(parse_row(base), RowError)
    assert isinstance(parse_row({**base, "TrailAmount": 1, "TrailPercent": 2}), RowError)
    ok = parse_row({**base, "TrailPercent": "1.5", "StopPrice": 180})
    assert isinstance(ok, OrderIntent) and ok.trail_percent == 1.5 and ok.stop_price == 180
    assert "TrailPercent" in str(parse_row({**base, "TrailPercent": 150}))
    assert str(parse_row({**base, "OrderType": "LMT", "LimitPrice": 1, "TrailAmount": 1})).startswith("TrailAmount:")


def test_an_order_names_its_futures_month_the_front_month_rolls():
    base = {"Ref": "F", "Symbol": "ES.CME", "Action": "BUY", "Quantity": 1, "OrderType": "MKT"}
    err = parse_row(base)
    assert isinstance(err, RowError) and err.column == "Symbol"
    assert str(err).startswith("Symbol: 'ES.CME' is a future without a contract month, which means the front month")
    assert "ES YYYYMM CME" in str(err)
    for text in ("ES 202703 CME", "ESH7.CME", "es 20270319 cme"):
        assert isinstance(parse_row({**base, "Symbol": text}), OrderIntent), text


def test_new_refs_are_unique_and_valid():
    refs = {new_ref() for _ in range(1000)}
    assert len(refs) == 1000
    for r in list(refs)[:20]:
        assert isinstance(parse_row({"Ref": r, "Symbol": "AAPL", "Action": "BUY", "Quantity": 1,
                                     "OrderType": "MKT"}), OrderIntent)


def test_com_error_codes_and_numpy_values():
    import numpy as np
    row = {"Ref": "N", "Symbol": "AAPL", "Action": "BUY", "Quantity": np.float64(3.0), "OrderType": "LMT",
           "LimitPrice": np.int64(190), "OutsideRTH": np.bool_(True)}
    ok = parse_row(row)
    assert isinstance(ok, OrderIntent) and ok.quantity == 3.0 and ok.limit_price == 190.0 and ok.outside_rth
    bad = parse_row({**row, "LimitPrice": -2146826246})     # #N/A as a COM error code
    assert isinstance(bad, RowError) and bad.column == "LimitPrice" and "Excel error" in bad.message
