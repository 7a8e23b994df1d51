"""Portfolio greeks end to end: an option order and a stock order from rows of the template's Orders
Table fill at the paper gateway; the Positions Table (refresh_portfolio, saved and read back with
openpyxl) and Runtime.positions() show each position with its delta, gamma, vega, theta and
delta-adjusted exposure, and greek_totals adds them up per underlying and account.

The expected greeks come from a Black-Scholes written here, fed with the gateway's stated model inputs
(docs/paper-market.md: the underlying's mid, rate 4 %, no dividends, T to 16:00 New York on the
expiry in years of 365 days, the smile base + skew x m + smile x m^2) read from its frozen market."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from addin.account.greeks import ALL, greek_totals
from addin.app import macros
from addin.app.runtime import Runtime
from addin.config import Settings
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.paper import PaperGateway
from addin.service.remote import RemoteRuntime
from addin.service.server import embedded_service

from .test_macros import TEMPLATE, set_orders
from .test_orders import ROOMY

START = datetime(2026, 11, 19, 15, 0, tzinfo=timezone.utc)     # Thursday 10:00 New York, frozen
NY = ZoneInfo("America/New_York")
# The gateway's stated model (docs/paper-market.md, "Option quotes"), written out here.
RATE, BASE_VOL, SKEW, SMILE, MIN_VOL = 0.04, 0.28, -0.15, 0.40, 0.05


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as g:
        yield g


@pytest.fixture
def rt(gw, tmp_path):
    risk = replace(ROOMY, allowed_sec_types=ROOMY.allowed_sec_types + ("OPT",))
    runtime = Runtime(port=gw.port, client_id=71, settings=Settings(risk=risk),
                      journal_path=tmp_path / "journal.sqlite3")
    runtime.connect()
    yield runtime
    runtime.close()


def n_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def n_pdf(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def bs_greeks(right, s, k, t, vol, r=RATE):
    """(delta, gamma, vega per 1 % of vol, theta per calendar day), per share, European, no dividends."""
    d1 = (math.log(s / k) + (r + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    gamma = n_pdf(d1) / (s * vol * math.sqrt(t))
    vega = s * n_pdf(d1) * math.sqrt(t) / 100
    decay = -s * n_pdf(d1) * vol / (2 * math.sqrt(t))
    if right == "C":
        delta, theta = n_cdf(d1), decay - r * k * math.exp(-r * t) * n_cdf(d2)
    else:
        delta, theta = n_cdf(d1) - 1, decay + r * k * math.exp(-r * t) * n_cdf(-d2)
    return delta, gamma, vega, theta / 365


def market_inputs(gw):
    """The frozen market: (AAPL's mid, AAPL's last, replay now, AAPL's option class expiries/strikes)."""
    def read(s):
        inst = next(i for i in s.market.instruments if i.symbol == "AAPL" and i.sec_type == "STK")
        q = s.market.quote(inst)
        oc = s.market.options.classes["AAPL"]
        return q.mid, q.last, s.market.now(), oc.expiries, oc.strikes
    return gw.call(read)


def wait_positions(rt, pred, timeout=15.0):
    """rt.positions() once ``pred(frame)`` holds; woken by the session's position and portfolio events."""
    cond = threading.Condition()

    def poke(*_):
        with cond:
            cond.notify_all()
    rt.session.events.position.subscribe(poke)
    rt.session.events.updatePortfolio.subscribe(poke)
    deadline = time.monotonic() + timeout
    while True:
        frame = rt.positions()
        if pred(frame):
            return frame
        left = deadline - time.monotonic()
        assert left > 0, f"positions never matched; last:\n{frame.to_string()}"
        with cond:
            cond.wait(min(left, 1.0))


def test_an_option_row_fills_and_the_position_shows_its_greeks_and_delta_dollars(gw, rt, tmp_path):
    s_mid, s_last, now, expiries, strikes = market_inputs(gw)
    expiry = expiries[1]
    strike = min(strikes, key=lambda k: abs(k - s_mid))
    text = f"AAPL {expiry:%Y%m%d} {strike:g} C"

    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "book.xlsx")
    try:
        set_orders(book, [
            {"Ref": "OPT-1", "Account": "DU1234567", "Symbol": text, "Action": "BUY", "Quantity": 3,
             "OrderType": "MKT", "TIF": "DAY", "Transmit": True},
            {"Ref": "STK-1", "Account": "DU1234567", "Symbol": "AAPL", "Action": "BUY", "Quantity": 100,
             "OrderType": "MKT", "TIF": "DAY", "Transmit": True},
        ])
        out = macros.place_orders(book, rt)
        assert set(out["Status"]) <= {"Filled", "Submitted", "PreSubmitted"}, out[["Ref", "Status", "Message"]]
        details = rt.contracts.qualify(text)
        con_id = details.contract.conId
        frame = wait_positions(rt, lambda f: {con_id, 265598} <= set(f.loc[f["position"] != 0, "con_id"])
                               and not f.loc[f["con_id"] == 265598, "market_price"].isna().any()
                               and not f.loc[f["con_id"] == con_id, "delta"].isna().any())
        macros.refresh_portfolio(book, rt)
        saved = book.save(tmp_path / "saved.xlsx")
    finally:
        book.close()

    # Independently: Black-Scholes on the gateway's stated inputs at its frozen clock.
    t = (datetime.combine(expiry, datetime.min.time().replace(hour=16), NY) - now).total_seconds() / (365 * 86400)
    m = math.log(strike / s_mid)
    vol = max(MIN_VOL, BASE_VOL + SKEW * m + SMILE * m * m)
    delta, gamma, vega, theta = bs_greeks("C", s_mid, strike, t, vol)
    scale = 3 * 100
    want_opt = {"Delta": delta * scale, "Gamma": gamma * scale, "Vega": vega * scale, "Theta": theta * scale,
                "DeltaDollars": delta * scale * s_mid}
    want_stk = {"Delta": 100.0, "Gamma": 0.0, "Vega": 0.0, "Theta": 0.0, "DeltaDollars": 100 * s_last}

    opt = frame.loc[frame["con_id"] == con_id].iloc[0]
    stk = frame.loc[frame["con_id"] == 265598].iloc[0]
    assert (opt["position"], opt["sec_type"], opt["underlying"]) == (3, "OPT", "AAPL")
    assert opt["market_value"] == pytest.approx(3 * 100 * opt["market_price"])     # the multiplier is in
    for col, name in (("delta", "Delta"), ("gamma", "Gamma"), ("vega", "Vega"), ("theta", "Theta"),
                      ("delta_dollars", "DeltaDollars")):
        assert opt[col] == pytest.approx(want_opt[name], rel=1e-6), col
        assert stk[col] == pytest.approx(want_stk[name], rel=1e-9), col
    assert 0.3 < delta < 0.7 and theta < 0                  # an at-the-money call: the test's own sanity

    # The Positions Table as saved: the same figures, as numbers (never formulas).
    ws = openpyxl.load_workbook(saved)["Portfolio"]
    header = [c.value for c in ws[1]]
    rows = {r[header.index("ConId")]: dict(zip(header, r)) for r in ws.iter_rows(min_row=2, values_only=True)
            if r[header.index("ConId")] is not None}
    for cid, want in ((con_id, want_opt), (265598, want_stk)):
        for name, value in want.items():
            cell = rows[cid][name]
            assert isinstance(cell, (int, float)), (name, cell)
            assert cell == pytest.approx(value, rel=1e-6, abs=1e-9), (cid, name)
        assert rows[cid]["Underlying"] == "AAPL"

    # Totals: per underlying (AAPL: the option and the stock) and per account.
    totals = greek_totals(frame).set_index(["account", "underlying"])
    aapl = totals.loc[("DU1234567", "AAPL")]
    assert aapl["delta"] == pytest.approx(delta * scale + 100, rel=1e-6)
    assert aapl["delta_dollars"] == pytest.approx(delta * scale * s_mid + 100 * s_last, rel=1e-6)
    assert aapl["theta"] == pytest.approx(theta * scale, rel=1e-6)
    everything = totals.loc[("DU1234567", ALL)]
    held = frame.loc[frame["account"] == "DU1234567"]
    assert everything["delta_dollars"] == pytest.approx(held["delta_dollars"].sum(), rel=1e-9)

    # Through the ibxl service (what workbooks and IB_POSITIONS use): the same columns and figures.
    with embedded_service(lambda: Runtime("127.0.0.1", gw.port, 72, settings=Settings())) as service:
        remote = RemoteRuntime(service.address, service.authkey, name="greeks test")
        try:
            far = remote.positions()
        finally:
            remote.close()
    far_opt = far.loc[far["con_id"] == con_id].iloc[0]
    assert list(far.columns) == list(frame.columns)
    for col, name in (("delta", "Delta"), ("gamma", "Gamma"), ("theta", "Theta"), ("delta_dollars", "DeltaDollars")):
        assert far_opt[col] == pytest.approx(want_opt[name], rel=1e-6), col


def test_totals_never_hide_an_unknown_and_a_put_short_delta_is_negative():
    import pandas as pd
    frame = pd.DataFrame([
        {"account": "DU1", "underlying": "AAPL", "delta": -40.0, "gamma": 2.0, "vega": 30.0, "theta": -5.0,
         "delta_dollars": -9_000.0},
        {"account": "DU1", "underlying": "AAPL", "delta": 100.0, "gamma": 0.0, "vega": 0.0, "theta": 0.0,
         "delta_dollars": 22_500.0},
        {"account": "DU1", "underlying": "MSFT", "delta": float("nan"), "gamma": float("nan"), "vega": float("nan"),
         "theta": float("nan"), "delta_dollars": float("nan")},
    ])
    t = greek_totals(frame).set_index(["account", "underlying"])
    assert t.loc[("DU1", "AAPL"), "delta_dollars"] == 13_500.0 and t.loc[("DU1", "AAPL"), "delta"] == 60.0
    assert math.isnan(t.loc[("DU1", "MSFT"), "delta"]) and math.isnan(t.loc[("DU1", ALL), "delta_dollars"])
    assert list(greek_totals(frame.iloc[:0]).columns) == ["account", "underlying", "delta", "gamma", "vega", "theta",
                                                          "delta_dollars"]
