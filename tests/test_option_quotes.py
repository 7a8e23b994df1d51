"""Option greeks on the QuoteBoard: IB's tickOptionComputation (bid 10, ask 11, model 13) read from a real
paper gateway socket into BoardQuote's iv / delta / gamma / vega / theta / und_price / model_price and the
bid_ / ask_ variants, shown by IB_QUOTE and by a Watchlist's Delta / IV columns. The option is chosen
from what the gateway lists (reqSecDefOptParams on a plain ibapi client: never today's date), and the
delta is checked against Black-Scholes computed here from the line's own iv and underlying price."""

from __future__ import annotations

import math
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import udfs
from addin.app.runtime import Runtime, set_runtime
from addin.excel.pump import Pump
from addin.market.quote_fields import QUOTE_FIELDS, field_attr
from addin.market.quotes import decode_tick
from addin.paper import PaperGateway
from addin.paper.codec.requests import req_mkt_data
from addin.paper.codec.wire import Fields
from addin.protocol.unset import UNSET_DOUBLE
from benchmarks.sinks import CountingBook

from .ibclient import IBTestClient
from .settle import settled

NY = ZoneInfo("US/Eastern")
RATE = 0.04          # the paper model's stated rate (docs/paper-market.md "Option quotes")


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=1.0) as gateway:
        seen: list = []

        def install(server):     # record each reqMktData as the gateway decodes it (instrumentation)
            inner = server._handlers[1]

            def recorded(conn, fields):
                copy = Fields.__new__(Fields)
                copy.items, copy.pos = fields.items, fields.pos
                try:
                    seen.append(req_mkt_data(copy))
                except Exception:
                    pass
                return inner(conn, fields)
            server._handlers[1] = recorded

        gateway.call(install)
        gateway.mkt_data = seen
        yield gateway


@pytest.fixture(scope="module")
def listing(gw):
    """(expiries, strikes, AAPL's mid at the gateway's start) from the gateway over the wire."""
    ib = IBTestClient().start(gw.port, 71)
    try:
        rid, start = ib.next_req(), ib.mark()
        ib.reqSecDefOptParams(rid, "AAPL", "", "STK", 265598)
        rows = [e.args for e in ib.collect("securityDefinitionOptionParameter",
                                           "securityDefinitionOptionParameterEnd", rid, start=start)]
    finally:
        ib.stop()
    smart = next(r for r in rows if r[1] == "SMART")
    mid = gw.call(lambda s: s.market.quote(next(i for i in s.market.instruments
                                                 if i.symbol == "AAPL" and i.sec_type == "STK")).mid)
    return sorted(smart[5]), sorted(smart[6]), mid


@pytest.fixture(scope="module")
def rt(gw):
    runtime = Runtime(port=gw.port, client_id=72, first_quote_wait=5.0)
    runtime.connect()
    previous = set_runtime(runtime)
    yield runtime
    set_runtime(previous)
    runtime.close()


def _option(listing, right: str, offset: int = 0) -> tuple[str, str, float]:
    expiries, strikes, mid = listing
    expiry = expiries[len(expiries) // 2]                         # a month or more out: greeks well away from 0/1
    strike = min(strikes, key=lambda k: abs(k - mid))
    strike = strikes[strikes.index(strike) + offset]
    return f"AAPL {expiry} {strike:g} {right}", expiry, strike


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _bs_delta(right: str, s: float, k: float, t: float, vol: float) -> float:
    d1 = (math.log(s / k) + (RATE + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))
    return _ncdf(d1) if right == "C" else _ncdf(d1) - 1.0


def _years(gw, expiry: str) -> float:
    now = gw.call(lambda s: s.market.now())
    end = datetime.strptime(expiry + " 16:00", "%Y%m%d %H:%M").replace(tzinfo=NY)
    return (end - now).total_seconds() / (365 * 86400)


def _wait_greeks(rt, key: str):
    """The board's quote of ``key`` once its model computation is in (waits on board versions)."""
    end = time.monotonic() + 10.0
    while True:
        version = rt.board.version
        q = rt.board.get(key)
        if q is not None and q.delta is not None and q.iv is not None and q.bid_iv is not None:
            return q
        assert time.monotonic() < end, f"no option computation for {key}: {q}"
        rt.board.wait(version, 0.5)


def test_ib_quote_shows_an_aapl_calls_delta_and_the_board_holds_every_greek(rt, gw, listing):
    text, expiry, strike = _option(listing, "C")
    delta = settled(lambda: udfs.IB_QUOTE(text, "delta", caller=("Quotes", "$B$2")))
    assert isinstance(delta, float) and 0 < delta < 1, delta
    [key] = rt.hold_quotes([text])
    q = _wait_greeks(rt, key)
    assert 0 < q.delta < 1 and q.gamma > 0 and q.vega > 0 and q.theta < 0
    assert 0.05 < q.iv < 2 and q.und_price > 0
    assert q.bid <= q.model_price <= q.ask
    assert q.bid_iv < q.ask_iv                                    # a higher price needs a higher vol
    # the model's delta is Black-Scholes of its own iv and underlying price (computed here)
    expected = _bs_delta("C", q.und_price, strike, _years(gw, expiry), q.iv)
    assert abs(q.delta - expected) < 0.01, (q.delta, expected)
    # every option field name reaches the board's value through IB_QUOTE
    for name in ("iv", "gamma", "vega", "theta", "und price", "model price", "bid iv", "ask delta", "Bid Theta"):
        value = settled(lambda n=name: udfs.IB_QUOTE(text, n))
        assert isinstance(value, float), (name, value)
        assert value == pytest.approx(getattr(rt.board.get(q.symbol), field_attr(name)), rel=0.2), name


def test_a_puts_delta_is_negative_and_a_stock_has_no_greeks(rt, listing):
    text, _, _ = _option(listing, "P", offset=2)                  # above the money: a put in the money
    delta = settled(lambda: udfs.IB_QUOTE(text, "delta"))
    assert isinstance(delta, float) and -1 < delta < -0.5, delta
    assert settled(lambda: udfs.IB_QUOTE("AAPL", "bid")) > 0
    assert udfs.IB_QUOTE("AAPL", "delta") is None                 # no computation: empty, not a number
    assert udfs.IB_QUOTE(text, "not a field").startswith("#IBXL") and "delta" in udfs.IB_QUOTE(text, "x")


def test_the_watchlist_fills_its_option_columns(rt, listing):
    text, _, _ = _option(listing, "C", offset=-1)
    headers = ["Symbol", "Bid", "Ask", "IV", "Delta", "Gamma", "Theta", "Vega", "UndPrice", "ModelPrice",
               "Bid IV", "Ask IV"]
    book = CountingBook({"Watchlist": [headers, [text]]})
    pump = Pump(rt.board, book, resolve=rt.market.subscribe, release=rt.market.unsubscribe, orders=None)
    pump.bind()
    try:
        q = _wait_greeks(rt, rt.hold_quotes([text])[0])
        pump.flush()
        row = book.read("Watchlist", 2, 1, 2, len(headers))[0]
        assert row[0] == text and 0 < row[4] < 1 and row[5] > 0 and row[6] < 0 and row[7] > 0, row
        assert 0 < row[3] < 2 and row[8] > 0 and row[9] > 0 and row[10] <= row[11], row
        assert q.delta is not None
    finally:
        pump.stop()


def test_ibs_unset_values_are_empty_not_numbers():
    # impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice: IB's "not computed" values
    unset = (-1.0, -2.0, -1.0, -1.0, -2.0, -2.0, -2.0, -1.0)
    fields = decode_tick("tickOptionComputation", (5, 13, 0, *unset))
    assert fields == {"iv": None, "delta": None, "model_price": None, "gamma": None, "vega": None, "theta": None}
    fields = decode_tick("tickOptionComputation", (5, 10, 0, UNSET_DOUBLE, None, None, None, UNSET_DOUBLE,
                                                   float("nan"), UNSET_DOUBLE, 231.5))
    assert fields == {"bid_iv": None, "bid_delta": None, "bid_gamma": None, "bid_vega": None, "bid_theta": None,
                      "und_price": 231.5}
    # a deep in-the-money put's delta of -1 is a value, not IB's -2; the delayed model (83) fills the same fields
    fields = decode_tick("tickOptionComputation", (5, 83, 0, 0.3, -1.0, 12.5, 0.0, 0.001, 0.02, -0.03, 200.0))
    assert fields["delta"] == -1.0 and fields["model_price"] == 12.5 and fields["iv"] == 0.3
    ask = (5, 11, 0, 0.3, 0.5, 2.0, 0.0, 0.01, 0.1, -0.1, 1.0)
    assert decode_tick("tickOptionComputation", ask)["ask_delta"] == 0.5
    assert decode_tick("tickOptionComputation", (5, 12, *ask[2:])) is None       # the last's: no field
    assert {"bidiv", "askdelta", "iv", "undprice", "modelprice"} <= set(QUOTE_FIELDS)


def test_an_option_line_asks_for_open_interest_and_a_stock_line_does_not(rt, gw, listing):
    text, _, strike = _option(listing, "C", offset=3)
    [key] = rt.hold_quotes([text])
    _wait_greeks(rt, key)
    sent = [r for r in gw.mkt_data if r.contract.secType == "OPT" and r.contract.strike == strike
            and r.contract.right in ("C", "CALL") and not r.snapshot]
    assert sent and all(r.generic_tick_list == "101" for r in sent)          # generic tick 101: ticks 27 / 28
    stocks = [r for r in gw.mkt_data if r.contract.secType == "STK" and not r.snapshot]
    assert stocks and all(r.generic_tick_list == "" for r in stocks)
