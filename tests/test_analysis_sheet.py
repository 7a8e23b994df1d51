"""The Analysis sheet (issue 18): ``write_analysis`` writes a report built here by hand (two accounts and All;
3 holdings, then 5, then 2) into a copy of the template, through the openpyxl adapter and through
xlwings' remote engine (its queued actions played onto the file as the Excel client would), and the
saved workbook is read back with openpyxl: every Table's ref covers exactly the written rows (and the
correlation matrix's columns), the values are the report's, every chart's references cover exactly its
Table's rows after each write, the matrix is colour-scaled, no cell of the sheet is a formula (a hostile
symbol ``=HYPERLINK(...)`` stays text), and bad reports are refused naming the Table before anything is
written."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from openpyxl.utils import get_column_letter

from addin.app.analysis_sheet import CLIP, NOTE_NAME, REPORT_NOTE, write_analysis
from addin.excel import layout
from addin.excel.book import BookError, TableGrowthError, parse_range
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.excel.remote_json import apply_actions, book_json
from addin.excel.xlwings_book import XlwingsBook

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")
import xlwings as xw  # noqa: E402  (the remote engine reads the licence key at use)

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = ["DU111111", "DU222222", "All"]
HOSTILE = '=HYPERLINK("http://x","click")'
SYMBOLS = ["AAPL", "SAP.IBIS", "ESZ6.CME", "BTC/USD.PAXOS", HOSTILE]
MEASURES = ["NetLiquidation", "Long", "Short", "Gross", "Net", "Leverage", "LargestWeight", "Herfindahl", "DailyPnL",
            "UnrealizedPnL", "RealizedPnL", "BetaDeltaDollars", "VaR95", "VaR99", "ES95", "ES99"]
VAR_NOTE = "historical, 1 day, 252 bars, as of 2026-11-30"
ANALYSIS_TABLES = [n for n, spec in layout.TABLES.items() if spec[0] == "Analysis"]


def make_report(holdings: int, days: int) -> dict[str, pd.DataFrame]:
    """A report with ANALYSIS_COLUMNS: ``holdings`` symbols (the first of SYMBOLS), ``days`` daily rows per
    account; numbers distinct per cell so a misplaced one shows."""
    syms = SYMBOLS[:holdings]
    rng = np.random.default_rng(holdings * 100 + days)
    exposure = []
    for a, account in enumerate(ACCOUNTS):
        for by, groups in (("SecType", ["STK", "FUT", "CRYPTO"][: max(1, holdings - 2)]),
                           ("Currency", ["USD", "EUR"]), ("Exchange", ["NASDAQ"]), ("Industry", ["Technology"])):
            for g, group in enumerate(groups):
                long_ = 10000.0 * (a + 1) + 1000 * g + holdings
                short = -500.0 * g
                exposure.append([account, by, group, long_, short, long_ - short, long_ + short, 0.1 * (g + 1)])
    summary = [[account, m, 1000.0 + 10 * i + a, VAR_NOTE if m == "VaR95" else None]
               for a, account in enumerate(ACCOUNTS) for i, m in enumerate(MEASURES)]
    conc = [[account, r + 1, s, 5000.0 - 100 * r, 0.3 - 0.05 * r] for account in ACCOUNTS for r, s in enumerate(syms)]
    pos_pnl = [[account, s, 1000 + i, 10 + i, 2000.0 + i, 5.0 * i, -3.0 * i, 1.5 * i]
               for account in ACCOUNTS for i, s in enumerate(syms)]
    pos_risk = [[account, s, 1000 + i, 2000.0 + i, 0.01 * (i + 1), 0.9 + 0.1 * i, 3.0 + i, 1800.0 + i]
                for account in ACCOUNTS for i, s in enumerate(syms)]
    start = dt.date(2026, 11, 2)
    pnl_by_day = [[start + dt.timedelta(days=d), account, 100000.0 + 250 * d + a, 12.5 * d, 3.0 * d, 1.25, d % 3]
                  for d in range(days) for a, account in enumerate(ACCOUNTS)]
    var_history = [[start + dt.timedelta(days=d), account, 900.0 + d + a, 1300.0 + d, 1100.0 + d, 1500.0 + d]
                   for d in range(days) for a, account in enumerate(ACCOUNTS)]
    what_if = [[account, m, 100.0 + i, 110.0 + i, 10.0] for account in ACCOUNTS for i, m in enumerate(MEASURES)]
    matrix = rng.uniform(-1, 1, (holdings, holdings))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    frames = {
        "Exposure": exposure, "Summary": summary, "Concentration": conc, "PositionPnL": pos_pnl,
        "PositionRisk": pos_risk, "PnLByDay": pnl_by_day, "VaRHistory": var_history, "WhatIf": what_if,
    }
    report = {name: pd.DataFrame(rows, columns=layout.ANALYSIS_COLUMNS[name]) for name, rows in frames.items()}
    report["Correlation"] = pd.DataFrame(matrix, columns=syms).assign(Symbol=syms)[["Symbol", *syms]]
    return report


class OpenpyxlHarness:
    name = "openpyxl"

    def __init__(self, path: Path):
        self.path = path

    def write(self, report):
        book = OpenpyxlBook.open(self.path)
        write_analysis(book, report)
        book.save()
        book.close()


class RemoteHarness:
    """xlwings' remote engine: the payload of the file, the adapter queues its actions, which are played
    onto the file as the Excel client would (addin.excel.remote_json)."""

    name = "xlwings-remote"

    def __init__(self, path: Path):
        self.path = path

    def write(self, report):
        book = XlwingsBook(xw.Book(json=book_json(self.path)))
        write_analysis(book, report)
        wb = openpyxl.load_workbook(self.path)
        apply_actions(wb, book.book.json()["actions"])
        wb.save(self.path)


@pytest.fixture(params=[OpenpyxlHarness, RemoteHarness], ids=["openpyxl", "xlwings-remote"])
def harness(request, tmp_path):
    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    return request.param(path)


def expected_tables(report) -> dict[str, pd.DataFrame]:
    """What each Analysis Table must hold, computed here from the report: the report's Tables, and the
    charts' data Tables (Account All; exposure by descending Gross; dated rows oldest first)."""
    out = {name: df for name, df in report.items()}
    exp = report["Exposure"]
    for table, by, label in (("ChartSecType", "SecType", "SecType"), ("ChartCurrency", "Currency", "Currency")):
        rows = exp[(exp.Account == "All") & (exp.By == by)]
        rows = rows.iloc[np.argsort(-rows.Gross.abs().to_numpy(), kind="stable")]
        out[table] = pd.DataFrame({label: rows.Group.to_list(), "Gross": rows.Gross.to_list(),
                                   "Net": rows.Net.to_list()})
    day = report["PnLByDay"][report["PnLByDay"].Account == "All"].sort_values("Date")
    out["ChartEquity"] = pd.DataFrame({"Date": day.Date.to_list(), "NetLiquidation": day.NetLiquidation.to_list()})
    var = report["VaRHistory"][report["VaRHistory"].Account == "All"].sort_values("Date")
    out["ChartVaR"] = pd.DataFrame({"Date": var.Date.to_list(), "VaR95": var.VaR95.to_list(),
                                    "VaR99": var.VaR99.to_list()})
    return out


def _same(got, want) -> bool:
    if want is None or (isinstance(want, float) and np.isnan(want)):
        return got is None
    if isinstance(want, dt.date) and not isinstance(want, dt.datetime):
        return isinstance(got, dt.datetime) and got.date() == want and got.time() == dt.time(0)
    if isinstance(want, (float, np.floating)) and not isinstance(want, bool):
        return isinstance(got, (int, float)) and abs(got - float(want)) < 1e-12
    return got == want


def check_sheet(path: Path, report, charts_follow: bool = True) -> None:
    """The saved Analysis sheet against ``report``. ``charts_follow``: the charts' references were
    re-pointed in the file (the openpyxl adapter does it; in live Excel, Excel extends a chart over a
    resized Table's column itself, which the remote engine's replay here does not play)."""
    wb = openpyxl.load_workbook(path)
    ws = wb["Analysis"]
    want = expected_tables(report)
    tables = ws.tables
    assert set(tables) == set(ANALYSIS_TABLES)
    for name, df in want.items():
        _, top, left, columns = layout.TABLES[name]
        columns = list(df.columns) if name == "Correlation" else columns
        bottom, right = top + max(len(df), 1), left + len(columns) - 1
        assert tables[name].ref == f"{get_column_letter(left)}{top}:{get_column_letter(right)}{bottom}", name
        assert [c.name for c in tables[name].tableColumns] == columns, name
        assert [ws.cell(row=top, column=left + j).value for j in range(len(columns))] == columns, name
        for i, row in enumerate(df[columns].itertuples(index=False), start=top + 1):
            for j, value in enumerate(row):
                got = ws.cell(row=i, column=left + j).value
                assert _same(got, value), (name, i, columns[j], got, value)
        # nothing left of a longer or wider earlier write: the row below and the column right are empty
        assert all(ws.cell(row=r, column=c).value is None
                   for r in range(bottom + 1, bottom + 40) for c in range(left, right + 1)), name
        beyond = right + (4 if name == "Correlation" else 2)
        clipped = range(top + 1, top + 1 + len(df)) if name == "Summary" else range(0)   # the Notes stop there
        assert all(ws.cell(row=r, column=c).value == (CLIP if r in clipped else None)
                   for r in range(top, bottom + 40) for c in range(right + 1, beyond)), name
    # no formula anywhere on the sheet; the hostile symbol is text wherever it was written
    formulas = [c.coordinate for row in ws.iter_rows() for c in row if c.data_type == "f"]
    assert formulas == []
    # every chart plots whole body columns of one chart data Table, exactly its rows
    charts = ws._charts
    assert [type(c).__name__ for c in charts] == ["BarChart", "BarChart", "LineChart", "LineChart"]
    for chart, table in zip(charts, ["ChartSecType", "ChartCurrency", "ChartEquity", "ChartVaR"]):
        _, top, left, columns = layout.TABLES[table]
        bottom = top + max(len(want[table]), 1)
        if not charts_follow:            # still bound to the Table's first body row and its columns
            bottom = parse_range(chart.series[0].val.numRef.f.split("!")[1])[2]
        vals = [parse_range(s.val.numRef.f.split("!")[1]) for s in chart.series]
        assert vals == [(top + 1, left + j, bottom, left + j) for j in range(1, len(columns))], table
        for s in chart.series:
            cat = s.cat.numRef or s.cat.strRef
            assert parse_range(cat.f.split("!")[1]) == (top + 1, left, bottom, left), table
    # the correlation matrix is colour-scaled over every cell it holds
    _, top, left, _ = layout.TABLES["Correlation"]
    n = len(report["Correlation"].columns) - 1
    scales = [(str(cf.sqref), r) for cf in ws.conditional_formatting for r in cf.rules if r.type == "colorScale"]
    assert len(scales) == 1
    r0, c0, r1, c1 = parse_range(scales[0][0])
    assert (r0, c0) == (top + 1, left + 1) and r1 >= top + n and c1 >= left + n
    assert [(v.type, float(v.val)) for v in scales[0][1].colorScale.cfvo] == [("num", -1.0), ("num", 0.0), ("num", 1.0)]


@pytest.mark.parametrize(("holdings", "days"), [((3, 5, 2), (4, 30, 3))], ids=["3-5-2 holdings"])
def test_written_tables_charts_and_matrix_follow_the_report(harness, holdings, days):
    for h, d in zip(holdings, days):
        report = make_report(h, d)
        harness.write(report)
        check_sheet(harness.path, report, charts_follow=harness.name == "openpyxl")
    wb = openpyxl.load_workbook(harness.path)
    note = wb.defined_names[NOTE_NAME]
    sheet, address = next(iter(note.destinations))
    assert wb[sheet][address.replace("$", "")].value == REPORT_NOTE.format(note=VAR_NOTE)


def test_an_empty_report_leaves_each_table_one_empty_row(harness):
    harness.write(make_report(5, 30))
    empty = {name: df.iloc[0:0] for name, df in make_report(0, 0).items()}
    assert list(empty["Correlation"].columns) == ["Symbol"]
    harness.write(empty)
    check_sheet(harness.path, empty, charts_follow=harness.name == "openpyxl")
    ws = openpyxl.load_workbook(harness.path)["Analysis"]
    for name in ANALYSIS_TABLES:
        _, top, left, columns = layout.TABLES[name]
        assert [ws.cell(row=top + 1, column=left + j).value for j in range(len(columns))] == [None] * len(columns)


def test_hostile_symbols_stay_text_and_the_workbook_reads_back(tmp_path):
    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    report = make_report(5, 3)
    OpenpyxlHarness(path).write(report)
    ws = openpyxl.load_workbook(path)["Analysis"]
    hostile = [c for row in ws.iter_rows() for c in row if c.value == HOSTILE]
    # Concentration, PositionPnL, PositionRisk: 3 accounts each; Correlation: its row and its header
    assert len(hostile) == 3 * 3 + 2 and all(c.data_type == "s" for c in hostile)
    book = OpenpyxlBook.open(path, read_only=True)         # the Tables read back through ibxl, headers included
    assert list(book.read_table("Correlation").columns) == ["Symbol", *SYMBOLS]


def test_formats_of_the_template(tmp_path):
    ws = openpyxl.load_workbook(ROOT / "workbooks" / "ibxl.xlsx")["Analysis"]
    fmt = {h: ws.column_dimensions[get_column_letter(layout.TABLES["Exposure"][2] + j)].number_format
           for j, h in enumerate(layout.ANALYSIS_COLUMNS["Exposure"])}
    assert fmt["Gross"] == "#,##0.00" and fmt["PctNetLiq"] == "0.00%"
    value = get_column_letter(layout.TABLES["Summary"][2] + 2)
    rules = {r.dxf.numFmt.formatCode: r.formula[0] for cf in ws.conditional_formatting for r in cf.rules
             if str(cf.sqref) == f"{value}5:{value}1048576"}
    assert '="Leverage"' in rules["0.00##"] and '="Herfindahl"' in rules["0.00##"]    # leverage 0.0046 reads so
    assert '="LargestWeight"' in rules["0.00%"]
    beta = layout.TABLES["PositionRisk"][2] + layout.ANALYSIS_COLUMNS["PositionRisk"].index("Beta")
    assert ws.column_dimensions[get_column_letter(beta)].number_format == "0.00##"
    assert ws.column_dimensions[get_column_letter(layout.TABLES["Correlation"][2] + 7)].number_format == "0.00"


def test_exposure_bars_start_at_zero_in_a_file(tmp_path):
    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    OpenpyxlHarness(path).write(make_report(3, 4))
    ws = openpyxl.load_workbook(path)["Analysis"]
    bars = [c for c in ws._charts if type(c).__name__ == "BarChart"]
    assert len(bars) == 2 and all(c.y_axis.scaling.min <= 0 for c in bars)


# -- refusals: naming the Table, before anything is written --------------------------------------------------

def _tables_of(path: Path) -> dict[str, str]:
    return {t.name: t.ref for t in openpyxl.load_workbook(path)["Analysis"].tables.values()}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(Exposure=r["Exposure"].drop(columns=["PctNetLiq"])), r"'Exposure'.*PctNetLiq"),
    (lambda r: r.update(Risk=r["Summary"]), r"'Risk' is not an Analysis Table"),
    (lambda r: r.update(Correlation=r["Correlation"].set_axis(["Symbol", "AAPL", "aapl", "X", "Y"], axis=1)),
     r"'Correlation' needs one column per holding"),
    (lambda r: r.update(Summary=r["Summary"].to_dict()), r"'Summary' must be a pandas DataFrame"),
], ids=["missing column", "unknown table", "duplicate holding", "not a frame"])
def test_a_bad_report_is_refused_naming_the_table(tmp_path, mutate, message):
    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    report = make_report(4, 3)
    mutate(report)
    book = OpenpyxlBook.open(path)
    with pytest.raises(BookError, match=message):
        write_analysis(book, report)
    book.save()
    assert _tables_of(path) == _tables_of(ROOT / "workbooks" / "ibxl.xlsx")


@pytest.mark.parametrize("where", ["below Exposure", "right of Correlation"])
def test_a_table_never_grows_over_a_users_cell(tmp_path, where):
    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    wb = openpyxl.load_workbook(path)
    table = "Exposure" if where == "below Exposure" else "Correlation"
    _, top, left, _ = layout.TABLES[table]
    cell = (top + 5, left + 1) if table == "Exposure" else (top + 1, left + 3)
    wb["Analysis"].cell(*cell, value="mine")
    wb.save(path)
    before = _tables_of(path)
    book = OpenpyxlBook.open(path)
    with pytest.raises(TableGrowthError) as err:
        write_analysis(book, make_report(4, 3))
    assert err.value.cell == f"{get_column_letter(cell[1])}{cell[0]}" and table in str(err.value)
    book.save()
    assert _tables_of(path) == before
    assert openpyxl.load_workbook(path)["Analysis"].cell(*cell).value == "mine"


# -- the Refresh analysis button on a portfolio built on the paper gateway ------------------------------------

@pytest.fixture(scope="module")
def paper_rt(tmp_path_factory):
    from addin.app.runtime import Runtime
    from addin.config import Settings
    from addin.paper import PaperGateway

    from .test_analysis_report import ACCOUNTS as PAPER_ACCOUNTS
    from .test_analysis_report import START, build_portfolio
    from .test_portfolio import Trader

    with PaperGateway(port=0, start=START, speed=0, accounts=PAPER_ACCOUNTS, stream_interval=0.05,
                      account_interval=0.5) as gw:
        runtime = Runtime(port=gw.port, client_id=97, settings=Settings(),
                          journal_path=tmp_path_factory.mktemp("sheet") / "journal.sqlite3")
        runtime.connect()
        build_portfolio(Trader(runtime.session), gw)
        yield runtime
        runtime.close()


def _table_frame(ws, name: str) -> pd.DataFrame:
    top, left, bottom, right = parse_range(ws.tables[name].ref)
    rows = [[ws.cell(row=r, column=c).value for c in range(left, right + 1)] for r in range(top, bottom + 1)]
    return pd.DataFrame(rows[1:], columns=rows[0])


@pytest.mark.parametrize("adapter", ["openpyxl", "xlwings-remote"])
def test_refresh_analysis_fills_the_sheet_from_the_paper_gateway(paper_rt, tmp_path, adapter):
    from addin.app import macros

    path = tmp_path / "analysis.xlsx"
    shutil.copy(ROOT / "workbooks" / "ibxl.xlsx", path)
    if adapter == "openpyxl":
        book = OpenpyxlBook.open(path)
        counts = macros.refresh_analysis(book, paper_rt)
        book.save()
    else:
        book = XlwingsBook(xw.Book(json=book_json(path)))
        counts = macros.refresh_analysis(book, paper_rt)
        wb = openpyxl.load_workbook(path)
        apply_actions(wb, book.book.json()["actions"])
        wb.save(path)
    wb = openpyxl.load_workbook(path)
    ws = wb["Analysis"]
    assert [c.coordinate for row in ws.iter_rows() for c in row if c.data_type == "f"] == []
    for name, n in counts.items():                      # every Table holds what the macro says it wrote
        top, _, bottom, _ = parse_range(ws.tables[name].ref)
        assert bottom - top == max(n, 1), name
    # 6 holdings (AAPL, MSFT, EUR.USD in DU1; BTC, ES, SPY in DU2): one row each per account and for All
    pnl = _table_frame(ws, "PositionPnL")
    assert len(pnl) == 12 and set(pnl.Account) == {"DU1", "DU2", "All"}
    summary = _table_frame(ws, "Summary").set_index(["Account", "Measure"]).Value
    exposure = _table_frame(ws, "Exposure")
    for chart, by in (("ChartSecType", "SecType"), ("ChartCurrency", "Currency")):
        data = _table_frame(ws, chart)
        rows = exposure[(exposure.Account == "All") & (exposure.By == by)]
        assert sorted(data.iloc[:, 0]) == sorted(rows.Group) and len(data) >= 2, chart
        # asset classes (and currencies) partition the portfolio: their Gross and Net add up to All's
        assert data.Gross.sum() == pytest.approx(summary[("All", "Gross")], rel=1e-9), chart
        assert data.Net.sum() == pytest.approx(summary[("All", "Net")], rel=1e-9), chart
        assert list(data.Gross) == sorted(data.Gross, key=abs, reverse=True)
    matrix = _table_frame(ws, "Correlation").set_index("Symbol")
    assert list(matrix.index) == list(matrix.columns) and len(matrix) >= 2
    values = matrix.to_numpy(dtype=float)
    assert np.allclose(values, values.T) and np.allclose(np.diag(values), 1.0)
    if adapter == "openpyxl":
        for chart, table in zip(ws._charts, ["ChartSecType", "ChartCurrency", "ChartEquity", "ChartVaR"]):
            _, _, bottom, _ = parse_range(ws.tables[table].ref)
            assert all(s.val.numRef.f.endswith(f"${bottom}") for s in chart.series), table
    log = _table_frame(wb["Log"], "LogEntries")
    assert log.Message.str.startswith("analysis refreshed: 12 position rows").any()
