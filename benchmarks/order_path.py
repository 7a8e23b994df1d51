"""Order path: per-order latency from an Orders row to placeOrder on the wire (parse, qualify
from cache, risk, journal, send), p50/p99, and a 100-row basket's wall time and its highest
messages-per-second in any one-second window.

How: the paper gateway in a child process; ibxl's OrderDesk over one Session. "On the wire" is
the moment ibapi's connection hands the placeOrder frame to the socket: the harness wraps the
session's ``conn.sendMsg`` to stamp every outbound message (``perf_counter``). Single orders are
placed one row per ``place`` call, each once the previous one is on the wire (so no order waits
for the pacer behind another). Peer for latency: a bare ibapi ``EClient.placeOrder`` of the same
order (build Order + encode + send). Peer for the basket: the pacing floor (100 / 45 s) and IB's
limit (50 messages per second; target: never above 45).
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from addin.protocol.framing import frame_message_id
from addin.protocol.messages import OUT

from .gateway import GatewayProcess, wait_until
from .report import Row, judged, not_measured

if TYPE_CHECKING:
    import pandas as pd

_ids = itertools.count(121)


def _stamp_wire(client, log: list) -> None:
    """Record (perf_counter, message id) for every message ibapi sends on this client."""
    conn = client.conn
    send = conn.sendMsg

    def stamped(msg):
        n = send(msg)
        log.append((time.perf_counter(), frame_message_id(msg)))
        return n

    conn.sendMsg = stamped


SYMBOLS = ("AAPL", "MSFT", "GOOG", "SPY")   # IB allows 20 working orders per side per contract


def _rows(n: int, start: int, quotes: dict):
    """Limit orders resting 1 % away from the market (buys below the bid, sells above the ask),
    spread over SYMBOLS and both sides so no contract holds more than IB's 20 per side."""
    import pandas as pd

    rows = []
    for i in range(start, start + n):
        sym, buy = SYMBOLS[i % len(SYMBOLS)], (i // len(SYMBOLS)) % 2 == 0
        bid, ask = quotes[sym]
        rows.append({"Ref": f"B{i}", "Account": "DU1234567", "Symbol": sym, "Action": "BUY" if buy else "SELL",
                     "Quantity": 1, "OrderType": "LMT", "LimitPrice": round(bid * 0.99 if buy else ask * 1.01, 2),
                     "TIF": "DAY", "Transmit": True})
    return pd.DataFrame(rows)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def run(quick: bool = False) -> list[Row]:
    try:
        from addin.config import Settings
        from addin.orders.desk import OrderDesk
    except ImportError as exc:
        return [not_measured("order_path", "row to wire p99", "ms", "bare ibapi placeOrder", f"module missing: {exc}")]
    from ibapi.order import Order

    from addin.account.portfolio import Portfolio
    from addin.ib.contracts import ContractBook
    from addin.ib.session import Session
    from addin.market.quotes import MarketData

    singles = 10 if quick else 40
    basket = 20 if quick else 100
    roomy = replace(Settings().risk, max_quantity=1_000, max_notional=2_000_000, max_position=100_000,
                    max_open_orders=10_000, max_orders_per_minute=10_000, daily_loss_limit=1_000_000,
                    allow_short=True)
    with GatewayProcess(max_rate=100_000) as gw, tempfile.TemporaryDirectory() as tmp:
        session = Session("127.0.0.1", gw.port, next(_ids), rate=45)
        session.connect()
        wire: list[tuple[float, int]] = []
        _stamp_wire(session._client, wire)
        contracts = ContractBook(session)
        market, portfolio = MarketData(session, contracts), Portfolio(session)
        desk = OrderDesk(session, contracts, market, portfolio, Settings(risk=roomy), Path(tmp) / "journal.db")
        try:
            quotes: dict[str, tuple[float, float]] = {}
            for sym in SYMBOLS:
                q = market.snapshot(sym)
                bid, ask = q.bid or q.last, q.ask or q.last
                if bid is None or ask is None:
                    raise RuntimeError(f"the paper gateway quoted no price for {sym}")
                quotes[sym] = (bid, ask)
            price = round(quotes["AAPL"][0] * 0.99, 2)

            def rows(n: int, start: int) -> pd.DataFrame:
                return _rows(n, start, quotes)

            desk.place(rows(len(SYMBOLS) * 2, 0))    # warm: qualify the symbols, open the journal
            wait_until(lambda: any(m == OUT.PLACE_ORDER for _, m in wire), 10, "the warm-up order on the wire")
            lat = []
            for i in range(singles):
                row = rows(1, 8 + i)                  # the row as read from the sheet: the input
                before = len(wire)
                t0 = time.perf_counter()
                desk.place(row)
                sent = wait_until(
                    lambda before=before: next((t for t, m in wire[before:] if m == OUT.PLACE_ORDER), None),
                    10, "placeOrder")
                lat.append(sent - t0)
                trail = [(m, round((t - t0) * 1000, 1)) for t, m in wire[before:] if t <= sent]
                time.sleep(1.0 / 45)                  # let the pacer's spacing pass: no queueing
            before = len(wire)
            t0 = time.perf_counter()
            desk.place(rows(basket, 8 + singles))
            wait_until(lambda: sum(1 for _, m in wire[before:] if m == OUT.PLACE_ORDER) >= basket, 60,
                       "the basket on the wire")
            times = [t for t, _ in wire[before:]]
            wall = max(t for t, m in wire[before:] if m == OUT.PLACE_ORDER) - t0
            peak = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
        finally:
            desk.close()
            portfolio.close()
            market.close(timeout=0)
            session.disconnect()

        # Peer: a bare ibapi client placing the same order (qualified contract, Order built, sent).
        from ibapi.client import EClient
        from ibapi.wrapper import EWrapper

        client = EClient(EWrapper())
        client.connect("127.0.0.1", gw.port, next(_ids))
        thread = threading.Thread(target=client.run, daemon=True)
        thread.start()
        bare_wire: list[tuple[float, int]] = []
        try:
            wait_until(lambda: client.isConnected() and client.serverVersion(), 10, "bare connection")
            _stamp_wire(client, bare_wire)
            from ibapi.contract import Contract
            bare = []
            for i in range(singles):
                t0 = time.perf_counter()
                con = Contract()
                con.conId, con.symbol, con.secType, con.exchange, con.currency = 265598, "AAPL", "STK", "SMART", "USD"
                o = Order()
                o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.tif = "BUY", 1, "LMT", price, "DAY"
                o.account, o.orderRef = "DU1234567", f"bare{i}"
                client.placeOrder(900_000 + i, con, o)
                bare.append(bare_wire[-1][0] - t0)
                time.sleep(1.0 / 45)
        finally:
            client.disconnect()
    ms = 1000.0
    # What an order waits for: the messages (id, ms after the row) sent before its placeOrder.
    cfg = {"singles": singles, "basket": basket, "messages_before_placeOrder": trail}
    why = f"messages sent before placeOrder (id, ms): {trail}"
    return [
        Row("order_path", "row to placeOrder on the wire, p50", "ms", _pct(lat, 50) * ms, "bare ibapi placeOrder",
            _pct(bare, 50) * ms, extra=cfg),
        Row("order_path", "row to placeOrder on the wire, p99", "ms", _pct(lat, 99) * ms, "bare ibapi placeOrder",
            _pct(bare, 99) * ms, target="< 5 ms", status=judged(_pct(lat, 99) < 0.005), note=why, extra=cfg),
        Row("order_path", f"{basket}-row basket wall time", "s", wall, "pacing floor (n/45)", basket / 45, extra=cfg),
        Row("order_path", f"{basket}-row basket, most messages in any 1 s", "msgs", peak, "IB's limit", 50,
            target="<= 45", status=judged(peak <= 45), extra=cfg),
    ]
