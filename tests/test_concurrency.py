"""Eight threads calling quotes, history and account methods at once on one Session get correct
answers: every answer is compared with the paper gateway's own state (its market model and broker,
read in process). The gateway's replay clock is frozen (speed 0) so quotes and account values are
the same however the threads interleave. Real sockets, the real ibapi client, no mocks."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest
from ibapi.order import Order

from addin.account.portfolio import Portfolio
from addin.ib.contracts import ContractBook
from addin.ib.session import Session
from addin.market.history import History
from addin.market.quotes import MarketData
from addin.paper import PaperGateway
from addin.paper.market.market import BarSpec

from .contracts import stock
from .ibclient import IBTestClient

ACCOUNT = "DU1234567"
CON_IDS = {"AAPL": 265598, "MSFT": 272093, "GOOG": 208813720, "SPY": 756733, "EUR/USD": 12087792}
THREADS = 8
ROUNDS = 3
SUMMARY_TAGS = ("NetLiquidation", "TotalCashValue", "GrossPositionValue", "BuyingPower")


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, stream_interval=0.05, account_interval=1.0) as gateway:
        # A position to report: 10 AAPL and 5 MSFT bought by another client at the frozen quotes.
        trader = IBTestClient().start(gateway.port, 90)
        try:
            for symbol, qty in (("AAPL", 10), ("MSFT", 5)):
                o = Order()
                o.action, o.orderType, o.totalQuantity = "BUY", "MKT", Decimal(qty)
                oid = trader.next_order_id()
                trader.placeOrder(oid, stock(symbol), o)
                trader.wait_for("orderStatus", lambda e, oid=oid: e.args[0] == oid and e.args[1] == "Filled")
        finally:
            trader.stop()
        yield gateway


def truth_quote(gw, symbol):
    return gw.call(lambda srv: srv.market.quote(srv.market.by_con_id(CON_IDS[symbol])))


def truth_bars(gw, symbol, start, end):
    bars = gw.call(lambda srv: srv.market.bars(srv.market.by_con_id(CON_IDS[symbol]), start, end,
                                               BarSpec(seconds=60), "MIDPOINT", False))
    return [(pd.Timestamp(b.time), b.open, b.high, b.low, b.close) for b in bars]


def test_eight_threads_on_quotes_history_and_account_get_correct_answers(gw):
    symbols = list(CON_IDS)
    quotes = {s: truth_quote(gw, s) for s in symbols}
    end = gw.call(lambda srv: srv.market.now()).replace(second=0, microsecond=0) - timedelta(hours=2)
    summary_truth = dict((tag, float(v)) for tag, v, _ in
                         gw.call(lambda srv: srv.broker.account_summary(ACCOUNT, set(SUMMARY_TAGS))))
    position_truth = sorted((c.conId, float(pos), round(avg, 6)) for acct, c, pos, avg in
                            gw.call(lambda srv: srv.broker.positions()) if acct == ACCOUNT)
    assert [p[:2] for p in position_truth] == [(265598, 10.0), (272093, 5.0)]

    session = Session(port=gw.port, client_id=61)
    session.connect()
    book = ContractBook(session)
    md = MarketData(session, book)
    history = History(session, book)
    pf = Portfolio(session)
    start = threading.Barrier(THREADS)
    failures: list[str] = []
    answers = {"snapshot": 0, "stream": 0, "bars": 0, "summary": 0, "positions": 0}
    count_lock = threading.Lock()

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(f"{threading.current_thread().name}: {what}")
        with count_lock:
            kind = what.split(" ", 1)[0]
            if kind in answers:
                answers[kind] += 1

    def worker(i: int) -> None:
        try:
            start.wait(10)
            for r in range(ROUNDS):
                sym = symbols[(i + r) % len(symbols)]
                q = quotes[sym]
                snap = md.snapshot(sym)
                check((snap.bid, snap.ask) == (q.bid, q.ask), f"snapshot {sym}: {snap.bid}/{snap.ask} "
                                                            f"!= {q.bid}/{q.ask}")
                key = md.subscribe(sym)
                got = wait_quote(md, key)
                check((got.bid, got.ask) == (q.bid, q.ask), f"stream {sym}: {got.bid}/{got.ask}")
                # Each thread its own window: distinct requests, each checked against the gateway.
                bar_end = end - timedelta(minutes=7 * i + 60 * r)
                df = history.bars(sym, "1800 S", "1 min", "MIDPOINT", use_rth=False, end=bar_end)
                mine = [(t, *row) for t, row in zip(df.index, df[["open", "high", "low", "close"]]
                                                    .itertuples(index=False, name=None))]
                check(mine == truth_bars(gw, sym, bar_end - timedelta(minutes=30), bar_end) and len(mine) == 30,
                      f"bars {sym} ending {bar_end:%H:%M}: {len(mine)} bars differ from the gateway's")
                summary = pf.account_summary(list(SUMMARY_TAGS))
                seen = {t: float(v) for t, v in zip(summary.tag, summary.value)}
                check(seen == summary_truth, f"summary {seen} != {summary_truth}")
                pos = pf.positions()
                rows = sorted((int(c), float(p), round(float(a), 6))
                              for c, p, a in zip(pos.con_id, pos.position, pos.avg_cost))
                check(rows == position_truth, f"positions {rows} != {position_truth}")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(THREADS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a worker hung"
        assert failures == []
        assert answers == {k: THREADS * ROUNDS for k in answers}
        # Shared lines: one per instrument however many threads subscribed.
        assert md.lines_in_use() == len(symbols)
        assert sum(md.users(md.subscribe(s)) - 1 for s in symbols) == THREADS * ROUNDS
        assert session.status.last_error is None or session.status.last_error.code not in (100, 162, 322)
    finally:
        md.close()
        pf.close()
        history.close()
        session.disconnect()


def wait_quote(md: MarketData, key: str, timeout: float = 10.0):
    """The board's quote for ``key`` once it has a bid and an ask (waits on board changes)."""
    deadline = time.monotonic() + timeout
    board = md.board
    while True:
        version = board.version
        q = board.get(key)
        if q is not None and q.bid is not None and q.ask is not None and not q.stale:
            return q
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no quote for {key} within {timeout} s")
        board.wait(version, left)
