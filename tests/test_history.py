"""addin.market.history against the real paper gateway: bars equal the gateway's own bars, long ranges are
stitched with no gap or duplicate, a burst of 100 small-bar requests keeps IB's pacing rules (the
gateway's rule checker is the judge) and finishes close to the theoretical lower bound,
keepUpToDate updates, the progress callback, and clear errors for bad fields.

Both the gateway and the scheduler run their pacing clocks 100 times faster than IB
(``pacing_clock_rate=100``: the 10-minute window lasts 6 s); the rules themselves are unchanged.
Real sockets, the real ibapi client, no mocks of the IB side; every wait is on an event."""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import threading
import time
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from addin.ib.session import IBError, Session
from addin.market.history import History, pacing_lower_bound
from addin.paper import PaperGateway
from addin.paper.market.history_rules import PACING_VIOLATION
from addin.paper.market.market import BarSpec

from .contracts import stock
from .ibclient import IBTestClient

RATE = 100.0                      # pacing clocks, both sides
CON_IDS = {"AAPL": 265598, "MSFT": 272093, "GOOG": 208813720, "SPY": 756733}
_client_ids = itertools.count(301)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=5.0, pacing_clock_rate=RATE) as gateway:
        yield gateway


@pytest.fixture
def session(gw):
    """A fresh session per test: its own pacing scheduler and its own pacing counts at the gateway."""
    s = Session(port=gw.port, client_id=next(_client_ids))
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def history(session):
    with History(session, pacing_clock_rate=RATE) as h:
        yield h


def gateway_now(gw) -> datetime:
    return gw.call(lambda srv: srv.market.now())


def past_end(gw, minutes_back: int = 60) -> datetime:
    """A whole minute safely in the past, so every bar before it is complete at the gateway."""
    return gateway_now(gw).replace(second=0, microsecond=0) - timedelta(minutes=minutes_back)


def gateway_bars(gw, symbol: str, start: datetime, end: datetime, seconds: int, what: str,
                 use_rth: bool) -> pd.DataFrame:
    """The gateway's own bars (its market model, in process) for bars starting in [start, end),
    written as the frame History documents: -1 volume/wap as NaN."""
    bars = gw.call(lambda srv: srv.market.bars(srv.market.by_con_id(CON_IDS[symbol]), start, end,
                                               BarSpec(seconds=seconds), what, use_rth))
    index = pd.DatetimeIndex([pd.Timestamp(b.time) for b in bars], name="time").as_unit("ns")
    frame = pd.DataFrame({
        "open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
        "close": [b.close for b in bars],
        "volume": [math.nan if b.volume == -1 else float(b.volume) for b in bars],
        "wap": [math.nan if b.wap == -1 else float(b.wap) for b in bars],
        "bar_count": np.array([b.count for b in bars], dtype="int64"),
    }, index=index)
    return frame


def barrier(session: Session, timeout: float = 10.0) -> None:
    """A round trip (reqCurrentTime): everything sent before it has been handled by the gateway."""
    got = threading.Event()
    fn = lambda *args: got.set()  # noqa: E731
    session.events.currentTime.subscribe(fn)
    try:
        session.send(lambda client: client.reqCurrentTime())
        assert got.wait(timeout), "no currentTime answer"
    finally:
        session.events.currentTime.unsubscribe(fn)


def check_frame_shape(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "wap", "bar_count"]
    assert str(df.index.tz) == "UTC" and df.index.name == "time"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert df["bar_count"].dtype == "int64"


# --- equality with the gateway ----------------------------------------------------------------------
@pytest.mark.parametrize("what", ["TRADES", "MIDPOINT"])
def test_one_request_equals_the_gateways_bars(gw, history, what):
    end = past_end(gw)
    df = history.bars("AAPL", "3600 S", "1 min", what, use_rth=False, end=end)
    expected = gateway_bars(gw, "AAPL", end - timedelta(hours=1), end, 60, what, False)
    check_frame_shape(df)
    assert len(df) == 60
    pd.testing.assert_frame_equal(df, expected, check_exact=False, rtol=1e-12)
    if what == "MIDPOINT":       # IB sends -1 for volume and WAP of MIDPOINT bars
        assert df["volume"].isna().all() and df["wap"].isna().all() and (df["bar_count"] == -1).all()


def test_a_contract_gives_the_same_bars_as_its_cell_text(gw, history):
    end = past_end(gw, 90)
    by_text = history.bars("MSFT", "1800 S", "1 min", "TRADES", use_rth=False, end=end)
    by_contract = history.bars(stock("MSFT"), "1800 S", "1 min", "TRADES", use_rth=False, end=end)
    pd.testing.assert_frame_equal(by_text, by_contract)
    assert len(by_text) == 30


def test_a_long_range_is_split_and_stitched_with_no_gap_or_duplicate(gw, history):
    end = past_end(gw)
    calls: list[tuple[int, int, str]] = []
    caller = threading.current_thread().name
    df = history.bars("AAPL", "3 D", "1 min", "TRADES", use_rth=False, end=end,
                      progress=lambda done, total: calls.append((done, total, threading.current_thread().name)))
    total = calls[0][1]
    assert total >= 3                                  # 1 min bars: at most 1 D per request
    assert [(d, t) for d, t, _ in calls] == [(k, total) for k in range(total + 1)]
    assert {name for _, _, name in calls} == {caller}  # the callback runs on the caller's thread
    expected = gateway_bars(gw, "AAPL", end - timedelta(days=3), end, 60, "TRADES", False)
    check_frame_shape(df)
    assert len(df) == len(expected) == 3 * 1440        # the paper market trades round the clock
    pd.testing.assert_frame_equal(df, expected, check_exact=False, rtol=1e-12)
    steps = df.index.to_series().diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(minutes=1)]    # no gap, no duplicate


def test_small_bars_over_several_requests_are_stitched_exactly(gw, history):
    end = past_end(gw, 30)
    calls = []
    df = history.bars("SPY", "5400 S", "1 secs", "TRADES", use_rth=False, end=end,
                      progress=lambda done, total: calls.append(total))
    assert calls[0] == 4                               # 1 secs bars: 1800 S per request
    expected = gateway_bars(gw, "SPY", end - timedelta(seconds=5400), end, 1, "TRADES", False)
    check_frame_shape(df)
    assert len(expected) > 1000
    pd.testing.assert_frame_equal(df, expected, check_exact=False, rtol=1e-12)


# --- pacing -------------------------------------------------------------------------------------------
def test_the_gateway_judges_pacing_an_identical_request_within_15_s_is_162(gw):
    """The judge is live: a raw ibapi client that repeats a small-bar request at once gets IB's 162."""
    client = IBTestClient().start(gw.port, next(_client_ids))
    try:
        c = stock("AAPL")
        end = past_end(gw).strftime("%Y%m%d-%H:%M:%S")
        first, second = client.next_req(), client.next_req()
        client.reqHistoricalData(first, c, end, "60 S", "5 secs", "TRADES", 0, 2, False, [])
        client.wait_for("historicalDataEnd", lambda e: e.args[0] == first)
        client.reqHistoricalData(second, c, end, "60 S", "5 secs", "TRADES", 0, 2, False, [])
        err = client.wait_error(second, 162)
        assert err.args[3] == PACING_VIOLATION
    finally:
        client.stop()


def test_an_identical_small_bar_request_is_answered_without_asking_again(gw, history):
    end = past_end(gw)
    a = history.bars("AAPL", "60 S", "5 secs", "TRADES", use_rth=False, end=end)
    b = history.bars("AAPL", "60 S", "5 secs", "TRADES", use_rth=False, end=end)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 12
    assert (history.stats["sent"], history.stats["cached"]) == (1, 1)


def test_a_burst_of_100_small_bar_requests_keeps_every_rule_and_is_close_to_the_lower_bound(gw, session):
    history = History(session, pacing_clock_rate=RATE)
    base = past_end(gw, 200)
    symbols = ["AAPL", "MSFT", "GOOG", "SPY"]
    # 100 distinct requests, 25 per instrument: 60 S of 5 secs bars ending a minute apart.
    asks = [(symbols[k % 4], base - timedelta(minutes=k // 4)) for k in range(100)]
    notices: list[tuple] = []
    session.events.error.subscribe(lambda *args: notices.append(args))
    # Qualify first (1 min bars: outside the small-bar rules), so the burst is only the 100.
    for sym in symbols:
        history.bars(sym, "1800 S", "1 min", "TRADES", use_rth=False, end=base)
    history_before = history.stats["sent"]

    def fetch(sym_end):
        sym, end = sym_end
        return history.bars(sym, "60 S", "5 secs", "TRADES", use_rth=False, end=end)

    bound = pacing_lower_bound([((s, "TRADES"), "TRADES", (s, e)) for s, e in asks], rate=RATE)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(fetch, asks))          # any IBError (162, 100, 322) is raised here
    elapsed = time.monotonic() - t0
    assert history.stats["sent"] - history_before == 100
    for (_, end), df in zip(asks, results):
        assert len(df) == 12 and df.index[-1] == pd.Timestamp(end) - pd.Timedelta(seconds=5)
    spot = asks[37]
    pd.testing.assert_frame_equal(
        results[37], gateway_bars(gw, spot[0], spot[1] - timedelta(seconds=60), spot[1], 5, "TRADES", False),
        check_exact=False, rtol=1e-12)
    codes = [a[2] for a in notices]
    assert 162 not in codes and 100 not in codes
    assert session.status.last_error is None or session.status.last_error.code not in (100, 162)
    # 64 small-bar requests within one (scaled) 10-minute window are impossible: the bound is past it.
    assert bound > 600 / RATE
    print(f"\n100-request small-bar burst: {elapsed:.2f} s, lower bound {bound:.2f} s "
          f"(pacing clock x{RATE:g}), max scheduler delay {history.stats['max_delay']:.2f} s")
    assert elapsed >= bound - 0.5                      # cannot beat the rules (start offset < 0.5 s)
    # How close to the bound it finishes is a speed figure: `python -m benchmarks` measures it, since
    # a loaded machine (or a shifted clock) stretches wall time here without any rule being broken.


# --- keepUpToDate -------------------------------------------------------------------------------------
def test_keep_up_to_date_loads_the_bars_then_delivers_updates(gw, history):
    frames: list[pd.DataFrame] = []
    cond = threading.Condition()

    def on_update(frame):
        with cond:
            frames.append(frame)
            cond.notify_all()

    with history.stream("AAPL", "600 S", "5 secs", "TRADES", use_rth=False, on_update=on_update) as live:
        loaded = live.df
        check_frame_shape(loaded)
        assert len(loaded) >= 100
        last_loaded = loaded.index[-1]
        with cond:       # a bar after the loaded ones: the stream moved on with the replay
            assert cond.wait_for(lambda: any(f.index[-1] > last_loaded for f in frames[1:]), 15)
        assert live.updates >= 1 and live.reloads == 1 and live.error is None
        updates = frames[1:]
        assert all(len(f) == 1 for f in updates)
        assert all(f.index[0] >= last_loaded for f in updates)
        now = live.df
        check_frame_shape(now)
        assert now.index[-1] > last_loaded
        # Every bar before the one in progress when the stream started is the gateway's complete bar.
        complete = loaded.iloc[:-1]
        expected = gateway_bars(gw, "AAPL", complete.index[0].to_pydatetime(),
                                last_loaded.to_pydatetime(), 5, "TRADES", False)
        pd.testing.assert_frame_equal(now.loc[complete.index], expected, check_exact=False, rtol=1e-12)
    assert live.closed
    with cond:
        seen = len(frames)
    # Closed: once a round trip shows the cancel arrived, the gateway streams nothing to this client.
    barrier(history.session)
    cid = history.session.client_id
    assert gw.call(lambda srv: [k for k, v in srv.history.live.items() if v.conn is srv.clients.get(cid)]) == []
    assert len(frames) == seen


# --- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"duration": "1 X"}, "duration"),
    ({"duration": "#N/A"}, "duration"),
    ({"duration": "10 S"}, "duration"),
    ({"bar_size": "1 sec"}, "bar_size"),
    ({"bar_size": "7 mins"}, "bar_size"),
    ({"what_to_show": "PRICE"}, "what_to_show"),
    ({"end": datetime(2026, 1, 5, 15, 0)}, "end"),
    ({"end": "20260105 15:00:00"}, "end"),
])
def test_bad_fields_are_errors_naming_the_field_and_nothing_is_sent(gw, history, kwargs, field):
    args = {"duration": "1 D", "bar_size": "1 min", "what_to_show": "TRADES", **kwargs}
    with pytest.raises(ValueError) as err:
        history.bars("AAPL", **args)
    assert str(err.value).startswith(f"{field}:")
    assert history.stats["sent"] == 0


def test_a_stream_refuses_what_it_cannot_stream(history):
    with pytest.raises(ValueError, match=r"^bar_size:"):
        history.stream("AAPL", "60 S", "1 secs")
    with pytest.raises(ValueError, match=r"^what_to_show:"):
        history.stream("AAPL", "1 D", "1 min", "BID_ASK")
    with pytest.raises(ValueError, match=r"^duration:"):
        history.stream("AAPL", "3 D", "1 min")
    assert history.stats["sent"] == 0


def test_an_unknown_instrument_is_an_error_and_no_bars_are_asked(gw, history):
    from addin.ib.contracts import InstrumentError
    with pytest.raises((InstrumentError, IBError)) as err:
        history.bars("ZZZZQ", "1 D", "1 min")
    assert "ZZZZQ" in str(err.value)
    assert history.stats["sent"] == 0


def test_a_stream_survives_a_dropped_connection_and_reloads(gw, history):
    cond = threading.Condition()
    seen: list[pd.DataFrame] = []

    def on_update(frame):
        with cond:
            seen.append(frame)
            cond.notify_all()

    session = history.session
    with history.stream("MSFT", "300 S", "5 secs", "MIDPOINT", use_rth=False, on_update=on_update) as live:
        assert live.reloads == 1
        gw.drop_connections()
        assert session.wait_status(lambda st: st.reconnects >= 1 and st.state == "connected", 15)
        with cond:      # re-requested after the reconnect: a second full load, then updates again
            assert cond.wait_for(lambda: live.reloads == 2, 15)
            mark = len(seen)
            assert cond.wait_for(lambda: len(seen) > mark, 15)
        assert live.error is None
        df = live.df
        check_frame_shape(df)
        assert len(df) >= 60
