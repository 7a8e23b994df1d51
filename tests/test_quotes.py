"""addin.market.quotes: the QuoteBoard (versions, changes_since, thread safety) and MarketData lines against
the real paper gateway (reference counting, budget, errors, delayed data, snapshots, reconnects,
1101/1102, 500 instruments under the pacer). Real sockets, real ibapi, no mocks of the IB side."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import random
import threading
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ibapi.contract import Contract

from addin.ib.session import IBError, Session
from addin.market.quotes import BoardQuote, MarketData, MarketDataError, QuoteBoard, decode_tick
from addin.paper import PaperGateway
from addin.protocol.ticks import MARKET_DATA_TYPES

from .contracts import stock

CON_IDS = {"AAPL": 265598, "MSFT": 272093, "GOOG": 208813720, "SPY": 756733}
SIM_BASE = 900_000_000
_client_ids = itertools.count(201)


def qualified(symbol: str) -> Contract:
    """A qualified stock Contract (conId set), as addin.ib.contracts will hand out."""
    c = stock(symbol)
    c.conId = CON_IDS[symbol] if symbol in CON_IDS else SIM_BASE + int(symbol[3:])
    c.primaryExchange = "ARCA" if symbol == "SPY" else "NASDAQ"
    return c


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll a condition held by another process-like party (the gateway) until true or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_board(board: QuoteBoard, predicate, timeout: float, what: str):
    """Wait for ``predicate()`` to hold, re-checking on every board change (no polling)."""
    deadline = time.monotonic() + timeout
    while True:
        version = board.version
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        board.wait(version, left)


def streaming(q: BoardQuote | None) -> bool:
    return q is not None and not q.stale and q.error is None and q.bid is not None and q.ask is not None


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=600, max_lines=600, stream_interval=0.05,
                      account_interval=5.0) as gateway:
        counts: collections.Counter = collections.Counter()

        def install(server):     # count reqMktData per client id at the gateway (instrumentation)
            inner = server._handlers[1]

            def counted(conn, fields):
                counts[conn.client_id] += 1
                return inner(conn, fields)
            server._handlers[1] = counted

        gateway.call(install)
        gateway.reqmktdata = counts
        yield gateway


@pytest.fixture
def session(gw):
    s = Session(port=gw.port, client_id=next(_client_ids), backoff_min=0.1, backoff_max=1.0)
    s.connect()
    yield s
    s.disconnect()


@pytest.fixture
def md(session):
    m = MarketData(session, max_lines=600)
    yield m
    m.close()


def gateway_lines(gw, client_id: int) -> int:
    return gw.call(lambda s: s.marketdata.lines_in_use(s.clients[client_id]) if client_id in s.clients else -1)


def gateway_errors(session: Session) -> list:
    errors: list = []
    session.events.error.subscribe(lambda *args: errors.append(args))
    return errors


# --- the board (no IB) -------------------------------------------------------------------------------
def test_quote_fields_are_derived_when_read():
    board = QuoteBoard()
    board.update("AAPL", bid=229.5, ask=229.7, last=229.6, close=225.0, bid_size=300.0, data_type="live")
    q = board.get("AAPL")
    assert q.symbol == "AAPL" and q.mid == 229.6 and q.spread == pytest.approx(0.2)
    assert q.change == pytest.approx(4.6) and q.change_pct == pytest.approx(4.6 / 225.0)   # a fraction
    assert q.updated.tzinfo is timezone.utc and abs((datetime.now(timezone.utc) - q.updated).total_seconds()) < 5
    assert not q.stale and q.error is None
    board.update("EUR/USD", bid=1.1, ask=1.1002, close=1.09)          # no trades: change from mid
    assert board.get("EUR/USD").change == pytest.approx(0.0101)
    with pytest.raises(TypeError):
        board.update("AAPL", colour="red")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bid = 1.0                                                   # frozen


def test_delayed_tick_types_map_onto_the_live_fields():
    live = {1: "bid", 2: "ask", 4: "last", 6: "high", 7: "low", 9: "close", 14: "open"}
    delayed = {66: "bid", 67: "ask", 68: "last", 72: "high", 73: "low", 75: "close", 76: "open"}
    for tick, field in {**live, **delayed}.items():
        assert decode_tick("tickPrice", (1, tick, 12.5, None)) == {field: 12.5}
    for tick, field in {0: "bid_size", 3: "ask_size", 5: "last_size", 8: "volume", 69: "bid_size",
                        70: "ask_size", 71: "last_size", 74: "volume"}.items():
        from decimal import Decimal
        assert decode_tick("tickSize", (1, tick, Decimal("300"))) == {field: 300.0}
    assert decode_tick("tickPrice", (1, 1, -1.0, None)) == {"bid": None}     # IB's "no price"
    assert decode_tick("tickString", (1, 88, "1700000000")) == {"last_time": 1700000000.0}
    assert decode_tick("marketDataType", (1, 3)) == {"data_type": "delayed"}
    assert decode_tick("tickGeneric", (1, 49, 0.0)) is None
    assert set(MARKET_DATA_TYPES.values()) == {"live", "frozen", "delayed", "delayed-frozen"}


def test_changes_since_returns_exactly_what_changed_after_a_version():
    board = QuoteBoard()
    assert board.version == 0 and board.changes_since(0) == (0, {})
    board.update("A", bid=1.0)
    board.update("B", bid=2.0)
    board.update("C", bid=3.0)
    v, changed = board.changes_since(0)
    assert v == 3 and set(changed) == {"A", "B", "C"}
    board.update("B", bid=2.5)
    board.update("A", ask=1.5)
    v2, changed = board.changes_since(v)
    assert v2 == 5 and set(changed) == {"A", "B"} and changed["B"].bid == 2.5 and changed["A"].ask == 1.5
    assert board.changes_since(v2) == (5, {})
    assert board.changes_since(-1)[1].keys() == {"A", "B", "C"}
    before = board.get("C").updated
    board.mark("C", stale=True)                                   # state, not data: updated unchanged
    v3, changed = board.changes_since(v2)
    assert set(changed) == {"C"} and changed["C"].stale and changed["C"].updated == before
    assert board.keys() == ["B", "A", "C"] and len(board) == 3 and "A" in board and board.get("Z") is None


def test_changes_since_costs_the_number_of_changes_not_of_keys():
    def measure(n_keys: int) -> tuple[int, float]:
        board = QuoteBoard()
        for i in range(n_keys):
            board.update(f"K{i}", bid=float(i))
        keys = [f"K{i}" for i in random.Random(1).sample(range(n_keys), 10)]
        best = float("inf")
        for _ in range(200):
            v = board.version
            for k in keys:
                board.update(k, bid=1.0)
            t = time.perf_counter()
            _, changed = board.changes_since(v)
            best = min(best, time.perf_counter() - t)
            assert set(changed) == set(keys)
        return board.last_scan, best

    scan_small, t_small = measure(100)
    scan_big, t_big = measure(100_000)
    print(f"\nchanges_since of 10 changes: {t_small * 1e6:.1f} us with 100 keys, {t_big * 1e6:.1f} us "
          f"with 100,000 keys (ratio {t_big / t_small:.2f}); keys examined {scan_small} vs {scan_big}")
    assert scan_small == scan_big == 11                           # 10 changed + the one that stops the walk
    assert t_big / t_small < 10


def test_board_is_consistent_under_a_writer_and_readers():
    """One writer (as ibapi's message thread) writes increasing values; readers following versions
    never see a key go backwards, never miss the final value, and versions never decrease."""
    board = QuoteBoard()
    keys = [f"K{i}" for i in range(200)]
    n_writes = 60_000
    done = threading.Event()
    failures: list[str] = []

    def writer():
        rng = random.Random(7)
        for i in range(1, n_writes + 1):
            board.update(rng.choice(keys), last=float(i), volume=float(i))
        done.set()

    def reader():
        seen: dict[str, float] = {}
        version = 0
        while True:
            finished = done.is_set()
            v, changed = board.changes_since(version)
            if v < version:
                failures.append(f"version went back {version} -> {v}")
            for k, q in changed.items():
                if q.last != q.volume:
                    failures.append(f"torn quote {k}: {q.last} / {q.volume}")
                if k in seen and q.last < seen[k]:
                    failures.append(f"{k} went back {seen[k]} -> {q.last}")
                seen[k] = q.last
            version = v
            if finished:
                break
        final = {k: board.get(k).last for k in board.keys()}
        if seen != final:
            failures.append("a reader following changes_since missed the final values")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    w = threading.Thread(target=writer)
    for t in readers + [w]:
        t.start()
    for t in [w] + readers:
        t.join(60)
    assert not failures, failures[:5]
    assert board.version == n_writes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("w"), st.integers(0, 9)), st.just(("r", 0))), max_size=60))
def test_changes_since_matches_a_model(ops):
    """Against a plain model: after any interleaving of writes and reads, changes_since(v) is exactly
    the set of keys written after v, with their latest values."""
    board = QuoteBoard()
    written: list[str] = []                    # key per version
    last_seen_version = 0
    for i, (op, k) in enumerate(ops):
        if op == "w":
            board.update(f"K{k}", last=float(i))
            written.append(f"K{k}")
        else:
            v, changed = board.changes_since(last_seen_version)
            assert v == len(written)
            assert set(changed) == set(written[last_seen_version:])
            for key, q in changed.items():
                assert q.last == board.get(key).last
            last_seen_version = v


# --- market data lines against the paper gateway --------------------------------------------------------
def test_ten_subscribes_share_one_line_and_the_last_unsubscribe_cancels_it(gw, session, md):
    cid = session.client_id
    aapl = qualified("AAPL")
    keys = {md.subscribe(aapl) for _ in range(10)}
    assert len(keys) == 1
    key = keys.pop()
    alias = Contract()
    alias.conId = 265598                                          # same conId, other spelling: same line
    assert md.subscribe(alias) == key
    wait_board(md.board, lambda: streaming(md.get(key)), 10, "AAPL quote")
    assert gateway_lines(gw, cid) == 1 and gw.reqmktdata[cid] == 1 and md.lines_in_use() == 1
    assert md.users(key) == 11 and md.requests_sent == 1
    for _ in range(10):
        md.unsubscribe(key)
    assert md.lines_in_use() == 1 and md.cancels_sent == 0
    assert md.unsubscribe(alias) == 0
    assert md.lines_in_use() == 0 and md.subscriptions() == {}
    wait_until(lambda: gateway_lines(gw, cid) == 0, 10, "the gateway to drop the line")
    assert gw.reqmktdata[cid] == 1 and md.cancels_sent == 1
    assert md.get(key).stale and md.get(key).bid is not None      # last values kept, flagged
    with pytest.raises(KeyError):
        md.unsubscribe(key)
    q = md.get(key)
    assert q.symbol == key and q.data_type == "live" and q.volume > 0 and q.last_time.tzinfo is timezone.utc


def test_line_budget_is_enforced_before_anything_is_sent(gw, session):
    md = MarketData(session, max_lines=3)
    try:
        keys = [md.subscribe(qualified(s)) for s in ("AAPL", "MSFT", "GOOG")]
        wait_until(lambda: gateway_lines(gw, session.client_id) == 3, 10, "3 lines at the gateway")
        with pytest.raises(MarketDataError) as info:
            md.subscribe(qualified("SPY"))
        assert info.value.code == 101
        message = str(info.value)
        assert "3 of 3" in message and "max_lines" in message and "SPY" in message
        assert md.pending() == 0 and md.requests_sent == 3 and md.lines_in_use() == 3   # nothing queued
        assert "SPY" not in " ".join(md.board.keys())
        with pytest.raises(MarketDataError):
            md.snapshot(qualified("SPY"))
        assert md.subscribe(qualified("AAPL")) == keys[0]        # sharing an existing line is free
        md.unsubscribe(keys[1])
        spy = md.subscribe(qualified("SPY"))                      # a freed line is reusable
        wait_board(md.board, lambda: streaming(md.get(spy)), 10, "SPY streaming")
        wait_until(lambda: gateway_lines(gw, session.client_id) == 3, 10, "3 lines at the gateway")
        assert gw.reqmktdata[session.client_id] == 4 and md.lines_in_use() == 3
    finally:
        md.close()


def test_ib_errors_land_in_the_quote_and_release_the_line(gw, session, md):
    bogus = stock("NOPE")
    bogus.conId = 12345
    key = md.subscribe(bogus)
    q = wait_board(md.board, lambda: md.get(key).error and md.get(key), 10, "error 200")
    assert q.error.startswith("IB 200:") and q.stale
    assert md.lines_in_use() == 0 and md.users(key) == 1
    assert md.subscribe(bogus) == key and md.lines_in_use() == 0   # not retried: 200 does not pass
    assert gw.reqmktdata[session.client_id] == 1


def test_error_101_from_ib_frees_the_line_and_a_later_subscribe_retries():
    with PaperGateway(port=0, max_lines=2, stream_interval=0.05) as small:
        with Session(port=small.port, client_id=5) as s:
            md = MarketData(s, max_lines=10)                      # our budget is looser than IB's
            a, b = md.subscribe(qualified("AAPL")), md.subscribe(qualified("MSFT"))
            c = md.subscribe(qualified("GOOG"))
            q = wait_board(md.board, lambda: md.get(c).error and md.get(c), 10, "error 101")
            assert q.error.startswith("IB 101:") and md.lines_in_use() == 2
            md.unsubscribe(a)
            wait_until(lambda: small.call(lambda srv: srv.marketdata.lines_in_use(srv.clients[5])) == 1,
                       10, "the gateway to free a line")
            assert md.subscribe(qualified("GOOG")) == c and md.users(c) == 2   # 101 may pass: retried
            q = wait_board(md.board, lambda: streaming(md.get(c)) and md.get(c), 10, "GOOG streaming")
            assert q.error is None and md.lines_in_use() == 2
            assert streaming(md.get(b))
            md.close()


def test_snapshot_waits_for_snapshot_end_and_holds_no_line(gw, session, md):
    q = md.snapshot(qualified("MSFT"), timeout=10)
    assert q.bid is not None and q.ask is not None and q.close is not None and q.data_type == "live"
    assert q.bid <= q.ask and q.mid == pytest.approx((q.bid + q.ask) / 2)
    assert md.lines_in_use() == 0 and gateway_lines(gw, session.client_id) == 0
    assert md.board.get(q.symbol) is None                         # snapshots do not touch the board
    bogus = stock("NOPE")
    bogus.conId = 54321
    with pytest.raises(IBError) as info:
        md.snapshot(bogus, timeout=10)
    assert info.value.code == 200 and md.lines_in_use() == 0


def test_delayed_data_type_comes_from_the_10167_notice_and_survives_a_reconnect(gw, session, md):
    cid = session.client_id
    msft = md.subscribe(qualified("MSFT"))                       # live first
    wait_board(md.board, lambda: streaming(md.get(msft)), 10, "MSFT live")
    assert md.get(msft).data_type == "live"
    md.set_market_data_type("delayed")                            # re-subscribes MSFT
    aapl = md.subscribe(qualified("AAPL"))
    for key in (msft, aapl):
        q = wait_board(md.board, lambda key=key: md.get(key).data_type == "delayed" and streaming(md.get(key))
                       and md.get(key), 10, f"{key} delayed")
        assert q.notice.startswith("IB 10167:")
    assert md.market_data_type == "delayed" and md.lines_in_use() == 2
    wait_until(lambda: gateway_lines(gw, cid) == 2, 10, "2 lines at the gateway")
    assert gw.call(lambda s: {sub.delayed for sub in s.marketdata.subs.values() if sub.conn.client_id == cid}) == {True}

    # A new connection starts at live: the type is re-sent before the lines are restored.
    t_drop = datetime.now(timezone.utc)
    gw.drop_connections()
    assert session.wait_status(lambda st: st.reconnects >= 1 and st.state == "connected", 15)
    for key in (msft, aapl):
        wait_board(md.board, lambda key=key: streaming(md.get(key)) and md.get(key).updated > t_drop, 10,
                   f"{key} after the reconnect")
        assert md.get(key).data_type == "delayed"
    assert gw.call(lambda s: s.clients[cid].market_data_type) == 3
    assert gw.call(lambda s: {sub.delayed for sub in s.marketdata.subs.values() if sub.conn.client_id == cid}) == {True}

    md.set_market_data_type(1)                                    # back to live
    wait_board(md.board, lambda: all(md.get(k).data_type == "live" and streaming(md.get(k)) for k in (msft, aapl)),
               10, "live again")
    with pytest.raises(ValueError, match="delayed-frozen"):
        md.set_market_data_type("realtime")


def test_50_quotes_resume_within_10_s_of_the_gateway_accepting_connections_again(gw, session, md):
    cid = session.client_id
    keys = [md.subscribe(qualified(f"SIM{k:04d}")) for k in range(1, 51)]
    wait_board(md.board, lambda: all(streaming(md.get(k)) for k in keys), 15, "50 quotes streaming")
    before = {k: md.get(k) for k in keys}

    gw.refuse_connections(2)
    refusing_ends = time.monotonic() + 2.0
    t_drop = datetime.now(timezone.utc)
    gw.drop_connections()
    wait_board(md.board, lambda: all(md.get(k).stale for k in keys), 5, "quotes flagged stale")
    assert all(md.get(k).bid == before[k].bid for k in keys)      # last values kept while down

    wait_board(md.board, lambda: all(streaming(md.get(k)) and md.get(k).updated > t_drop for k in keys),
               20, "every quote updating again")
    resumed = time.monotonic() - refusing_ends
    print(f"\n50 quotes resumed {resumed:.2f} s after the gateway accepted connections again "
          f"(session reconnects: {session.status.reconnects})")
    assert resumed < 10
    assert session.status.reconnects >= 1 and md.lines_in_use() == 50
    wait_until(lambda: gateway_lines(gw, cid) == 50, 10, "50 lines at the gateway")


def test_1101_restores_the_lines_and_1102_keeps_them(gw, session, md):
    cid = session.client_id
    keys = [md.subscribe(qualified(f"SIM{k:04d}")) for k in range(101, 106)]
    wait_board(md.board, lambda: all(streaming(md.get(k)) for k in keys), 10, "5 quotes streaming")
    assert gw.reqmktdata[cid] == 5

    seen = threading.Event()
    session.events.connectivity.subscribe(lambda code, text: code == 1102 and seen.set())
    gw.connectivity(1102)                                         # data kept: nothing re-sent
    assert seen.wait(10)
    mark = md.board.version
    wait_board(md.board, lambda: md.board.version > mark + 20, 10, "ticks after 1102")
    assert gw.reqmktdata[cid] == 5 and gateway_lines(gw, cid) == 5
    assert all(streaming(md.get(k)) for k in keys)

    t = datetime.now(timezone.utc)
    gw.connectivity(1101)                                         # data lost: the gateway dropped the lines
    wait_until(lambda: gw.reqmktdata[cid] == 10, 10, "5 lines re-requested")
    wait_board(md.board, lambda: all(streaming(md.get(k)) and md.get(k).updated > t for k in keys), 10,
               "quotes after 1101")
    assert gateway_lines(gw, cid) == 5 and md.lines_in_use() == 5 and session.status.reconnects == 0


def test_500_instruments_at_once_stay_under_the_pacing_limit(gw, session):
    cid = session.client_id
    errors = gateway_errors(session)
    md = MarketData(session, max_lines=600)
    try:
        t0 = time.monotonic()
        keys = [md.subscribe(qualified(f"SIM{k:04d}")) for k in range(1, 501)]
        queued = time.monotonic() - t0
        wait_board(md.board, lambda: all(streaming(md.get(k)) for k in keys), 40, "500 quotes")
        took = time.monotonic() - t0
        print(f"\n500 subscriptions queued in {queued * 1000:.0f} ms; every quote arrived after {took:.1f} s "
              f"({500 / took:.1f} lines/s through the {session.rate}/s pacer)")
        assert len(set(keys)) == 500
        assert not [e for e in errors if e[1] == 100], errors[:3]
        assert all(md.get(k).error is None for k in keys)
        assert gateway_lines(gw, cid) == 500 and md.lines_in_use() == 500 and gw.reqmktdata[cid] == 500
        assert took > 500 / 50                                     # paced, not burst
    finally:
        md.close()
    wait_until(lambda: gateway_lines(gw, cid) == 0, 20, "500 cancels")
    assert not [e for e in errors if e[1] == 100]
