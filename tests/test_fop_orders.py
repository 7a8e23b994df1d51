"""Future options (FOP) in the cell grammar against the paper gateway: ES options are listed by
IB_CHAIN("ES") with readable texts (IB's localSymbol, e.g. ``ESZ6 C5900 CME``) that round-trip
(format -> parse -> qualify: the same conId, multiplier 50, the class's tradingClass), and an FOP order
from a row of the template's Orders Table fills once [risk] allowed_sec_types includes FOP (and is
refused, nothing sent, while it does not). The reference listing is read with a plain ibapi client."""

from __future__ import annotations

import collections
import os
import re
import time
from dataclasses import replace
from datetime import datetime, timezone

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import pytest

import udfs
from addin.app import macros
from addin.app.runtime import Runtime, set_runtime
from addin.config import Settings
from addin.excel.layout import OPTIONS_COLUMNS
from addin.excel.openpyxl_book import OpenpyxlBook
from addin.ib.contracts import format_contract, parse
from addin.paper import PaperGateway

from .ibclient import IBTestClient
from .settle import settled
from .test_macros import TEMPLATE, set_orders
from .test_orders import ROOMY
from .test_position_greeks import wait_positions

START = datetime(2026, 11, 19, 15, 0, tzinfo=timezone.utc)     # Thursday 10:00 New York, frozen
ACCOUNT = "DU1234567"


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as gateway:
        counts: collections.Counter = collections.Counter()

        def install(server):     # count placeOrder messages at the gateway (instrumentation, not a mock)
            inner = server._handlers[3]

            def counted(conn, fields):
                counts["placeOrder"] += 1
                return inner(conn, fields)
            server._handlers[3] = counted
        gateway.call(install)
        gateway.counts = counts
        yield gateway


def runtime(gw, tmp_path, client_id, sec_types):
    risk = replace(ROOMY, allowed_sec_types=sec_types)
    rt = Runtime(port=gw.port, client_id=client_id, settings=Settings(risk=risk),
                 journal_path=tmp_path / f"journal{client_id}.sqlite3", first_quote_wait=5.0)
    rt.chains.today = lambda: START.date()          # the gateway's day (New York), never today's
    rt.connect()
    return rt


@pytest.fixture(scope="module")
def es_wire(gw):
    """{tradingClass: expiries} of reqSecDefOptParams for the front ES future, with its conId."""
    front = gw.call(lambda s: min((i for i in s.market.instruments if i.symbol == "ES" and i.sec_type == "FUT"),
                                  key=lambda i: i.contract.lastTradeDateOrContractMonth))
    ib = IBTestClient().start(gw.port, 95)
    try:
        rid, start = ib.next_req(), ib.mark()
        ib.reqSecDefOptParams(rid, "ES", "CME", "FUT", front.con_id)
        rows = [e.args for e in ib.collect("securityDefinitionOptionParameter",
                                           "securityDefinitionOptionParameterEnd", rid, start=start)]
    finally:
        ib.stop()
    return {r[3]: sorted(r[5]) for r in rows}


def test_ib_chain_es_lists_es_options_with_texts_that_round_trip(gw, tmp_path, es_wire):
    rt = runtime(gw, tmp_path, 91, ("STK", "OPT", "FOP"))
    previous = set_runtime(rt)
    try:
        value = settled(lambda: udfs.IB_CHAIN("ES", "next", 4, caller=("Options", "$A$1")), rt, timeout=15)
        assert value[0] == OPTIONS_COLUMNS and len(value) == 5, value
        col = {h: i for i, h in enumerate(value[0])}
        deadline = time.monotonic() + 10
        while any(r[col["Data"]] != "streaming" or r[col["CallDelta"]] is None for r in value[1:]):
            assert time.monotonic() < deadline, value
            version = rt.board.version
            rt.board.wait(version, 0.5)
            value = udfs.IB_CHAIN("ES", "next", 4, caller=("Options", "$A$1"))
        deltas = [r[col["CallDelta"]] for r in value[1:]]
        assert all(0 < d < 1 for d in deltas) and deltas == sorted(deltas, reverse=True)
        plan = rt.option_chain("ES", "next", 4)
    finally:
        set_runtime(previous)
    nearest = min(e for v in es_wire.values() for e in v)
    want_class = next(k for k, v in es_wire.items() if nearest in v)
    assert set(plan["Expiry"]) == {nearest}
    for text in list(plan["CallSymbol"]) + list(plan["PutSymbol"]):
        spec = parse(text)
        assert spec.sec_type == "FOP" and not text.startswith("conid:"), text
        d = rt.contracts.qualify(text)
        c = d.contract
        assert (c.secType, c.multiplier, c.tradingClass, c.exchange) == ("FOP", "50", want_class, "CME")
        assert c.lastTradeDateOrContractMonth[:8] == nearest and text == f"{c.localSymbol} CME"
        assert format_contract(d) == text
    rt.close()
    # format -> parse -> the same conId, on a runtime that cached nothing (IB answers the texts)
    fresh = Runtime(port=gw.port, client_id=92)
    fresh.connect()
    try:
        for text in plan["CallSymbol"]:
            con_id = rt.contracts.cached(text).contract.conId
            assert fresh.contracts.qualify(text).contract.conId == con_id
            assert fresh.contracts.qualify(text.removesuffix(" CME")).contract.conId == con_id
    finally:
        fresh.close()


def test_an_fop_order_from_a_row_fills_only_when_fop_is_allowed(gw, tmp_path, es_wire):
    quarterly = es_wire["ES"][0]
    rt = runtime(gw, tmp_path, 93, ("STK", "OPT"))                     # FOP not allowed: refused, nothing sent
    plan = rt.option_chain("ES", f"{quarterly} ES", 1)
    text = plan["CallSymbol"].iloc[0]
    assert re.fullmatch(r"ES[HMUZ]\d C\d+ CME", text), text                # the quarterly class ES
    row = {"Ref": "FOP-1", "Account": ACCOUNT, "Symbol": text, "Action": "BUY", "Quantity": 2,
           "OrderType": "MKT", "TIF": "DAY", "Transmit": True}
    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "refused.xlsx")
    before = gw.counts["placeOrder"]
    try:
        set_orders(book, [row])
        out = macros.place_orders(book, rt)
    finally:
        book.close()
        rt.close()
    assert list(out["Status"]) == ["Refused"] and "FOP" in out["Message"].iloc[0], out[["Status", "Message"]]
    assert gw.counts["placeOrder"] == before

    rt = runtime(gw, tmp_path, 94, ("STK", "OPT", "FOP"))
    book = OpenpyxlBook.open(TEMPLATE, out=tmp_path / "placed.xlsx")
    try:
        set_orders(book, [row])
        out = macros.place_orders(book, rt)
        assert set(out["Status"]) <= {"Filled", "Submitted", "PreSubmitted"}, out[["Ref", "Status", "Message"]]
        assert gw.counts["placeOrder"] == before + 1
        con_id = rt.contracts.qualify(text).contract.conId
        frame = wait_positions(rt, lambda f: con_id in set(f.loc[f["position"] != 0, "con_id"])
                               and not f.loc[f["con_id"] == con_id, ["market_price", "delta"]].isna().any(axis=None))
    finally:
        book.close()
        rt.close()
    pos = frame.loc[frame["con_id"] == con_id].iloc[0]
    assert (pos["position"], pos["sec_type"], pos["underlying"]) == (2, "FOP", "ES")
    assert pos["market_value"] == pytest.approx(2 * 50 * pos["market_price"])     # the multiplier, 50
    # an option's greeks (IB's model), not a future's delta of 1: a call's delta per contract in (0, 1)
    assert 0 < pos["delta"] / (2 * 50) < 1 and pos["gamma"] > 0 and pos["theta"] < 0
    future = gw.call(lambda s: s.market.quote(next(i for i in s.market.instruments if i.con_id == es_front(s))).mid)
    assert pos["delta_dollars"] / pos["delta"] == pytest.approx(future, rel=0.01)  # x the future's price


def es_front(s) -> int:
    """The conId of the ES future the quarterly option of December 2026 is on (the front month here)."""
    return min((i for i in s.market.instruments if i.symbol == "ES" and i.sec_type == "FUT"),
               key=lambda i: i.contract.lastTradeDateOrContractMonth).con_id
