"""The analysis worksheet functions, the service's analysis method and ``ibxl run --analysis`` on a
portfolio built on the paper gateway (test_analysis_report's two accounts). The figures themselves are
checked against independent computations in test_analysis_report; here: the functions answer without
waiting on IB and then show the report's figures, the service answers the same report as the
in-process runtime, and the job writes the report into the saved workbook (read back with openpyxl)."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

import udfs
from addin.analysis.pnl_history import PnLRecorder, trading_day
from addin.analysis.store import AnalysisStore
from addin.app.jobs import TEMPLATE, run_workbook
from addin.app.runtime import Runtime, set_runtime
from addin.config import Settings
from addin.excel.book import parse_range
from addin.excel.layout import ANALYSIS_COLUMNS
from addin.paper import PaperGateway

from .settle import pending, settled
from .test_analysis_report import ACCOUNTS, START, build_portfolio
from .test_portfolio import Trader


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, start=START, speed=0, accounts=ACCOUNTS, stream_interval=0.05,
                      account_interval=0.5) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def rt(gw, tmp_path_factory):
    runtime = Runtime(port=gw.port, client_id=91, settings=Settings(),
                      journal_path=tmp_path_factory.mktemp("udfs") / "journal.sqlite3")
    runtime.connect()
    build_portfolio(Trader(runtime.session), gw)
    previous = set_runtime(runtime)
    yield runtime
    set_runtime(previous)
    runtime.close()


@pytest.fixture(scope="module")
def report(rt):
    return rt.analysis(now=START)


def test_analysis_functions_answer_at_once_then_show_the_reports_figures(rt, report):
    first = udfs.IB_EXPOSURE("Currency", caller=("Analysis", "$A$1"))
    assert pending(first) or isinstance(first, list)             # never waits for the report
    exposure = settled(lambda: udfs.IB_EXPOSURE("currency"), rt, timeout=60)
    assert exposure[0] == ANALYSIS_COLUMNS["Exposure"]
    rows = pd.DataFrame(exposure[1:], columns=exposure[0])
    assert set(rows.By) == {"Currency"} and set(rows.Account) == {"DU1", "DU2", "All"}
    mine = report["Exposure"][report["Exposure"].By == "Currency"]
    assert rows.Long.tolist() == pytest.approx(mine.Long.tolist(), rel=1e-9)
    everything = settled(lambda: udfs.IB_EXPOSURE(), rt)
    assert len(everything) == 1 + len(report["Exposure"])

    var = settled(lambda: udfs.IB_RISK("var95"), rt)
    expected = report["Summary"][report["Summary"].Measure == "VaR95"]
    assert var[0] == ["Account", "Value"]
    assert [r[0] for r in var[1:]] == expected.Account.tolist()
    assert [r[1] for r in var[1:]] == pytest.approx(expected.Value.tolist(), rel=1e-9)
    summary = settled(lambda: udfs.IB_RISK(), rt)
    assert summary[0] == ANALYSIS_COLUMNS["Summary"] and len(summary) == 1 + 3 * 16
    short = settled(lambda: udfs.IB_RISK("VaR99", 60), rt, timeout=60)          # another window: its own report
    assert short[1][1] != pytest.approx(report["Summary"].set_index(["Account", "Measure"]).Value[("DU1", "VaR99")])
    # ...whose VaR does not replace the day's recorded one (the configured window's)
    recorded = rt.analysis(window_days=60)["VaRHistory"]
    today = recorded[recorded.Date == recorded.Date.max()].set_index("Account")     # the clock's day, not START's
    assert today.VaR95["DU1"] == pytest.approx(var[1][1], rel=1e-9)                 # the 252-day figure

    pnl = settled(lambda: udfs.IB_PNL_BY_POSITION(), rt)
    assert pnl[0] == ANALYSIS_COLUMNS["PositionPnL"] and len(pnl) == 1 + len(report["PositionPnL"])
    assert all(v is not None for row in pnl[1:] for v in row)                    # no blank for either account
    corr = settled(lambda: udfs.IB_CORRELATION(), rt)
    assert corr[0][0] == "Symbol" and corr[0][1:] == [r[0] for r in corr[1:]]
    assert all(corr[i][i] == pytest.approx(1.0) for i in range(1, len(corr)))


def test_analysis_functions_name_a_bad_argument(rt):
    assert udfs.IB_EXPOSURE("Sector").startswith("#IBXL") and "SecType, Currency, Exchange, Industry" in \
        udfs.IB_EXPOSURE("Sector")
    assert "window" in udfs.IB_RISK("VaR95", "abc") and "window" in udfs.IB_RISK("VaR95", 5)
    bad = settled(lambda: udfs.IB_RISK("Sharpe"), rt)
    assert bad.startswith("#IBXL") and "VaR95" in bad


def test_the_service_answers_the_same_report_and_records_while_it_runs(gw, rt, tmp_path):
    from addin.service.remote import RemoteRuntime
    from addin.service.server import embedded_service
    with embedded_service(lambda: Runtime("127.0.0.1", gw.port, 92, settings=Settings(),
                                          journal_path=tmp_path / "journal.sqlite3"), record_interval=0.2) as service:
        assert not service.wait_records(1, 1.0)                # nothing recorded before anyone asked
        with RemoteRuntime(service.address, service.authkey, name="test") as remote:
            served = remote.analysis(now=START)
            report = rt.analysis(now=START)                    # in process, on the same gateway, right after
            assert set(served) == set(report)
            for name in ("Summary", "Exposure", "PositionRisk", "WhatIf"):
                mine, theirs = report[name], served[name]
                differ = ~np.isclose(mine.select_dtypes("number"), theirs.select_dtypes("number"), rtol=1e-9)
                rows = differ.any(axis=1)
                assert not differ.any(), (name, mine[rows].to_string(), theirs[rows].to_string())
                pd.testing.assert_frame_equal(theirs, mine, check_dtype=False, rtol=1e-9)
            assert served["Correlation"].columns.tolist() == report["Correlation"].columns.tolist()
            facade = remote.readonly()
            assert facade.analysis(now=START)["Summary"].Value.tolist() == pytest.approx(
                report["Summary"].Value.tolist(), rel=1e-9)
        # asked once: the service records on its own, on the machine's clock's New York day
        before = trading_day(datetime.now(UTC))
        assert service.wait_records(2, 60)
        days = PnLRecorder(AnalysisStore(tmp_path / "analysis.sqlite3")).pnl_days()
        today = {before, trading_day(datetime.now(UTC))}
        recorded = days[days.Date.dt.date.isin(today)]
        assert sorted(recorded.Account) == ["All", "DU1", "DU2"]           # one row each, updated in place
        assert today <= set(days.Date.dt.date) <= today | {trading_day(START)}


def test_ibxl_run_analysis_writes_the_report_into_the_workbook(gw, rt, tmp_path):
    path = tmp_path / "book.xlsx"
    shutil.copy(TEMPLATE, path)
    summary = run_workbook(path, port=gw.port, client_id=93, analysis=True, settings=Settings(),
                           journal_path=tmp_path / "journal.sqlite3", echo=lambda _: None)
    assert [(s.name, s.ok) for s in summary.steps] == [("analysis", True)], summary.steps
    assert (tmp_path / "analysis.sqlite3").exists()                 # beside the journal
    assert len(summary.analysis["PositionPnL"]) == 12                 # 6 holdings in DU1 and DU2, and All's
    ws = openpyxl.load_workbook(path)["Analysis"]
    grid = [[c.value for c in row] for row in ws.iter_rows()]
    for name in ANALYSIS_COLUMNS:             # the template's Analysis Tables (workbooks/build.py)
        df = summary.analysis[name]
        cols = list(df.columns)
        top, left, bottom, right = parse_range(ws.tables[name].ref)
        top, left = top - 1, left - 1          # grid indices
        assert (bottom - top - 1, right - left) == (max(len(df), 1), len(cols)), name
        assert grid[top][left:left + len(cols)] == cols
        body = [row[left:left + len(cols)] for row in grid[top + 1:top + 1 + len(df)]]
        for got, want in zip(body, df.itertuples(index=False, name=None)):
            for g, w in zip(got, want):
                if isinstance(w, float):
                    assert g == pytest.approx(w, rel=1e-12, abs=1e-12) if w == w else g is None
                elif isinstance(w, pd.Timestamp):
                    assert g == w.to_pydatetime()
                else:
                    assert g == w and not (isinstance(g, str) and g.startswith("="))
    nlv = summary.analysis["Summary"].set_index(["Account", "Measure"]).Value
    assert nlv[("All", "NetLiquidation")] == pytest.approx(nlv[("DU1", "NetLiquidation")] +
                                                           nlv[("DU2", "NetLiquidation")])


def test_the_ibxl_run_analysis_command(gw, rt, tmp_path):
    from .test_cli_jobs import run_cli
    path = tmp_path / "book.xlsx"
    shutil.copy(TEMPLATE, path)
    env = {"IBXL_CONFIG": str(tmp_path / "config.toml"), "IBXL_SERVICE": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}      # this checkout, not an installed copy
    r = run_cli("run", str(path), "--port", str(gw.port), "--client-id", "94", "--analysis", env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ok] analysis" in r.stdout and "(All)" in r.stdout
    assert (tmp_path / "analysis.sqlite3").exists()          # beside the journal, beside the config file
    ws = openpyxl.load_workbook(path)["Analysis"]
    top, left, bottom, right = parse_range(ws.tables["Exposure"].ref)
    rows = [[c.value for c in row] for row in ws.iter_rows(min_row=top, max_row=bottom, min_col=left, max_col=right)]
    assert rows[0] == ANALYSIS_COLUMNS["Exposure"]
    assert {r[0] for r in rows[1:]} == {"DU1", "DU2", "All"}            # every account and All, no blank
