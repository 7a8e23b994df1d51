"""The official ibapi client against the paper gateway: connection, contract details, quotes,
delayed data, history, limits and faults. Real sockets, real ibapi, no mocks."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from addin.paper import PaperGateway

from .contracts import btc, contract, eurusd, listed_es, spx, stock
from .ibclient import IBTestClient

DATA = Path(__file__).resolve().parents[1] / "addin" / "paper" / "market" / "data"


def snapshot(ib, c, timeout=10):
    """tickPrice values by tick type from one snapshot request."""
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, c, "", True, False, [])
    ib.wait_for("tickSnapshotEnd", lambda e: e[0] == rid, timeout, start)
    return {e[1]: e[2] for e in ib.events[start:] if e.name == "tickPrice" and e[0] == rid}


# --- connection ----------------------------------------------------------------------------------
def test_handshake_sends_accounts_next_id_and_farm_notices(ib):
    assert ib.serverVersion() == 178
    assert ib.wait_for("managedAccounts")[0] == "DU1234567"
    assert ib.wait_for("nextValidId")[0] >= 1
    for code in (2104, 2106, 2158):             # the farm notices may follow nextValidId
        ib.wait_for("error", lambda e, c=code: e[0] == -1 and e[2] == c)


def test_client_id_in_use_gets_326_and_is_closed(gateway, ib):
    second = IBTestClient()
    second.connect("127.0.0.1", gateway.port, ib.clientId)
    import threading
    t = threading.Thread(target=second.run, daemon=True)
    t.start()
    err = second.wait_for("error", lambda e: e[2] == 326)
    assert str(ib.clientId) in err[3] or "client id is already in use" in err[3]
    second.wait_for("connectionClosed")
    t.join(10)
    assert ib.isConnected()


def test_client_that_needs_a_newer_server_is_refused():
    with PaperGateway(port=0) as gw, socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        text = b"v179..225"
        s.sendall(b"API\0" + struct.pack("!I", len(text)) + text)
        assert s.recv(100) == b""  # closed without a version reply


def test_version_is_negotiated_down_to_178():
    with PaperGateway(port=0) as gw, socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        text = b"v100..225"
        s.sendall(b"API\0" + struct.pack("!I", len(text)) + text)
        size = struct.unpack("!I", s.recv(4))[0]
        fields = s.recv(size).split(b"\0")
        assert fields[0] == b"178"


def test_non_loopback_bind_is_refused_unless_asked():
    with pytest.raises(ValueError, match="loopback"):
        PaperGateway(host="0.0.0.0", port=0)


def test_current_time_is_the_replay_clock(ib):
    ib.reqCurrentTime()
    t = ib.wait_for("currentTime")[0]
    assert abs(t - time.time()) < 60


# --- contract details ----------------------------------------------------------------------------
def details(ib, c):
    rid, start = ib.next_req(), ib.mark()
    ib.reqContractDetails(rid, c)
    return [e[1] for e in ib.collect("contractDetails", "contractDetailsEnd", rid, start=start)]


def test_contract_details_of_the_builtin_universe(ib, gateway):
    goog = details(ib, stock("GOOG"))
    assert len(goog) == 1 and goog[0].contract.conId == 208813720 and goog[0].minTick == 0.01
    assert goog[0].timeZoneId and goog[0].tradingHours and goog[0].liquidHours and goog[0].longName
    assert "LMT" in goog[0].orderTypes.split(",")
    fx = details(ib, eurusd())[0]
    assert (fx.contract.conId, fx.minTick, fx.contract.localSymbol) == (12087792, 0.00005, "EUR.USD")
    front = listed_es(gateway)[0]
    fut = details(ib, front.contract())[0]
    assert fut.contract.multiplier == "50" and fut.minTick == 0.25 and fut.contract.conId == front.con_id
    assert fut.contract.lastTradeDateOrContractMonth == front.last_trade_date
    assert details(ib, spx())[0].contract.secType == "IND"
    assert details(ib, btc())[0].contract.exchange == "PAXOS"
    for sym in ("AAPL", "MSFT", "SPY"):
        assert len(details(ib, stock(sym))) == 1
    by_id = details(ib, contract("", "", "", "", conId=265598))
    assert by_id[0].contract.symbol == "AAPL"


def test_unknown_contract_gets_200(ib):
    rid = ib.next_req()
    ib.reqContractDetails(rid, stock("ZZZZ"))
    assert "No security definition" in ib.wait_error(rid, 200)[3]


# --- market data ---------------------------------------------------------------------------------
def test_streaming_quotes_tick_and_cancel(ib):
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, stock("AAPL"), "", False, False, [])
    params = ib.wait_for("tickReqParams", lambda e: e[0] == rid, start=start)
    assert params[1] == 0.01
    assert ib.wait_for("marketDataType", lambda e: e[0] == rid, start=start)[1] == 1
    for tick_type in (1, 2, 4, 6, 7, 9, 14):
        ib.wait_for("tickPrice", lambda e, tick_type=tick_type: e[0] == rid and e[1] == tick_type, start=start)
    ib.wait_for("tickSize", lambda e: e[0] == rid and e[1] == 8, start=start)
    prices = {e[1]: e[2] for e in ib.events[start:] if e.name == "tickPrice" and e[0] == rid}
    assert prices[1] < prices[2] and prices[1] <= prices[4] <= prices[2]
    assert all(abs(round(p / 0.01) * 0.01 - p) < 1e-9 for p in prices.values())
    # It keeps ticking: a later bid/ask/last change arrives.
    first = ib.mark()
    ib.wait_for("tickPrice", lambda e: e[0] == rid and e[1] in (1, 2, 4), timeout=15, start=first)
    ib.cancelMktData(rid)
    ib.cancelMktData(rid)  # second cancel: the id is unknown now
    assert ib.wait_error(rid, 300)


def test_snapshot_fx_has_bid_ask_but_no_last(ib):
    prices = snapshot(ib, eurusd())
    assert 1 in prices and 2 in prices and 4 not in prices
    assert 0.5 < prices[1] < 2.0


def test_index_has_last_but_no_bid_ask(ib):
    prices = snapshot(ib, spx())
    assert 4 in prices and 1 not in prices


def test_delayed_data_after_10167(ib):
    ib.reqMarketDataType(3)
    rid, start = ib.next_req(), ib.mark()
    ib.reqMktData(rid, stock("MSFT"), "", False, False, [])
    ib.wait_error(rid, 10167)
    assert ib.wait_for("marketDataType", lambda e: e[0] == rid, start=start)[1] == 3
    for tick_type in (66, 67, 68):
        ib.wait_for("tickPrice", lambda e, tick_type=tick_type: e[0] == rid and e[1] == tick_type, start=start)
    assert not [e for e in ib.events[start:] if e.name == "tickPrice" and e[0] == rid and e[1] in (1, 2, 4)]
    ib.cancelMktData(rid)
    ib.reqMarketDataType(1)


def test_market_data_line_limit_gives_101():
    with PaperGateway(port=0, max_rate=100_000) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            for i in range(100):
                ib.reqMktData(i + 1, stock("AAPL"), "", False, False, [])
            ib.wait_for("tickReqParams", lambda e: e[0] == 100)
            ib.reqMktData(101, stock("AAPL"), "", False, False, [])
            assert "Max number of tickers" in ib.wait_error(101, 101)[3]
            assert not ib.errors(100) and not [e for e in ib.errors() if e[2] == 101 and e[0] != 101]
        finally:
            ib.stop()


def test_tick_by_tick_bid_ask(ib):
    rid, start = ib.next_req(), ib.mark()
    ib.reqTickByTickData(rid, stock("AAPL"), "BidAsk", 0, False)
    ev = ib.wait_for("tickByTickBidAsk", lambda e: e[0] == rid, start=start)
    assert ev[2] < ev[3]
    ib.cancelTickByTickData(rid)


# --- historical data -----------------------------------------------------------------------------
def bars(ib, c, duration, bar_size, what="TRADES", end="", rth=0, keep=False, timeout=20):
    rid, start = ib.next_req(), ib.mark()
    ib.reqHistoricalData(rid, c, end, duration, bar_size, what, rth, 1, keep, [])
    return rid, [e[1] for e in ib.collect("historicalData", "historicalDataEnd", rid, timeout, start)]


def test_goog_daily_trades_bars_are_the_real_file(ib, gateway):
    def ny_day():
        return gateway.call(lambda s: s.market.now()).astimezone(ZoneInfo("America/New_York")).strftime("%Y%m%d")

    before = ny_day()
    _, got = bars(ib, stock("GOOG"), "10 Y", "1 day")
    after = ny_day()
    real = pd.read_csv(DATA / "GOOG_1d_2004-2013.csv", index_col=0)
    assert len(got) == len(real)
    for bar, (_, row) in zip(got[:-1], real.iloc[:-1].iterrows()):
        assert (bar.open, bar.high, bar.low, bar.close) == (row.Open, row.High, row.Low, row.Close)
    last, row = got[-1], real.iloc[-1]
    assert last.open == row.Open and row.Low <= last.low <= last.high <= row.High  # today's bar, in progress
    # today's bar is the gateway's today in New York (read around the request: midnight may pass)
    assert last.date.split()[0] in (before, after)


def test_intraday_midpoint_bars_for_fx_on_the_tick_grid(ib):
    _, got = bars(ib, eurusd(), "3600 S", "1 min", "MIDPOINT")
    assert 1 <= len(got) <= 60
    for b in got:
        assert b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close)


def test_trades_not_available_for_fx(ib):
    rid = ib.next_req()
    ib.reqHistoricalData(rid, eurusd(), "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
    assert ib.wait_error(rid, 162)


def test_step_size_violation_gets_an_error(ib):
    rid = ib.next_req()
    ib.reqHistoricalData(rid, stock("AAPL"), "", "1 W", "1 secs", "TRADES", 0, 1, False, [])
    ev = ib.wait_for("error", lambda e: e[0] == rid)
    assert ev[2] in (162, 321)


def test_keep_up_to_date_streams_updates_until_cancelled(ib):
    rid, got = bars(ib, stock("AAPL"), "300 S", "5 secs", keep=True)
    assert got
    start = ib.mark()
    upd = ib.wait_for("historicalDataUpdate", lambda e: e[0] == rid, timeout=15, start=start)
    assert upd[1].low <= upd[1].close <= upd[1].high
    ib.cancelHistoricalData(rid)


def test_small_bar_pacing_violation_gets_162():
    with PaperGateway(port=0) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            for i in range(6):  # six distinct small-bar requests for one contract within 2 s
                ib.reqHistoricalData(i + 1, stock("SPY"), "", f"{60 + i} S", "1 secs", "TRADES", 0, 1, False, [])
            assert "pacing violation" in ib.wait_error(6, 162)[3]
            assert not ib.errors(5)
            ib.reqHistoricalData(7, stock("MSFT"), "", "60 S", "1 secs", "TRADES", 0, 1, False, [])
            ib.wait_for("historicalDataEnd", lambda e: e[0] == 7)
            ib.reqHistoricalData(8, stock("MSFT"), "", "60 S", "1 secs", "TRADES", 0, 1, False, [])
            assert ib.wait_error(8, 162)  # identical request within 15 s
        finally:
            ib.stop()


# --- limits and faults ---------------------------------------------------------------------------
def test_more_than_50_messages_a_second_gets_100():
    """IB's 50 messages a second, as a token bucket (docs/paper-gateway.md): a burst of 50 passes, the
    allowance refills at 50 a second while the burst is read, and the rest of a flood is refused."""
    with PaperGateway(port=0) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            start = ib.mark()
            for _ in range(200):
                ib.reqCurrentTime()
            ib.wait_for("error", lambda e: e[2] == 100, start=start)
            assert "Max rate of messages per second" in ib.errors()[-1][3]

            def fates() -> tuple[int, int]:     # every request is answered or refused, once
                events = ib.events[start:]
                return (sum(e.name == "currentTime" for e in events),
                        sum(e.name == "error" and e[2] == 100 for e in events))
            with ib.cond:
                assert ib.cond.wait_for(lambda: sum(fates()) >= 200, 10), fates()
        finally:
            ib.stop()
        answered, refused = fates()
        assert 50 <= answered <= 100 and answered + refused == 200, (answered, refused)   # the burst + refill


def test_drop_connections_and_refuse_then_accept_again():
    with PaperGateway(port=0) as gw:
        ib = IBTestClient().start(gw.port, 1)
        gw.drop_connections()
        ib.wait_for("connectionClosed")
        ib.stop()
        gw.refuse_connections(30)
        refused = IBTestClient()
        refused.connect("127.0.0.1", gw.port, 2)
        assert refused.serverVersion() is None or not refused.isConnected()
        refused.disconnect()
        gw.refuse_connections(0)
        again = IBTestClient().start(gw.port, 1)
        again.stop()


def test_connectivity_notices_1100_1101_1102(ib, gateway):
    start = ib.mark()
    for code in (1100, 1102, 1100, 1101):
        gateway.connectivity(code)
    for code in (1100, 1101, 1102):
        ib.wait_for("error", lambda e, code=code: e[2] == code and e[0] == -1, start=start)


def test_1101_drops_market_data_lines_and_1102_keeps_them(gateway, ib):
    rid = ib.next_req()
    ib.reqMktData(rid, stock("AAPL"), "", False, False, [])
    ib.wait_for("tickPrice", lambda e: e[0] == rid)
    gateway.connectivity(1102)
    lines = gateway.call(lambda s: s.marketdata.lines_in_use(s.clients[ib.clientId]))
    assert lines == 1
    gateway.connectivity(1101)
    assert gateway.call(lambda s: s.marketdata.lines_in_use(s.clients[ib.clientId])) == 0


def test_delayed_answers():
    with PaperGateway(port=0) as gw:
        ib = IBTestClient().start(gw.port, 1)
        try:
            gw.delay_answers(0.5)
            t0 = time.monotonic()
            ib.reqCurrentTime()
            ib.wait_for("currentTime")
            assert time.monotonic() - t0 >= 0.5
        finally:
            ib.stop()
