"""Every order type and time in force the Orders sheet offers (addin/protocol/orders.py), placed through
the official ibapi client at a paper gateway: real sockets, real ibapi, the gateway's own replay.

The gateway's replay clock is frozen (speed 0) at a fixed instant and moved only by the tests
(``PaperGateway.advance_clock``), so each test reads the replay's future quotes first and knows exactly
which prices its orders will meet. Nothing depends on today's date or the time of day.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ibapi.order import Order
from ibapi.order_cancel import OrderCancel

from addin.paper import PaperGateway
from addin.protocol.orders import OPG_TYPES, ORDER_TYPES, TIF_CODES

from .contracts import eurusd, stock
from .ibclient import IBTestClient

START = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)   # a Wednesday, 10:00 in New York
AAPL = stock("AAPL")
WORKING = ("PreSubmitted", "Submitted")
SCAN_SECONDS = 3 * 3600
_client_ids = itertools.count(40)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=1.0) as gateway:
        yield gateway


@pytest.fixture
def ib(gw):
    client = IBTestClient().start(gw.port, next(_client_ids))   # a fresh id: the last one may still be closing
    yield client
    client.stop()


# --- helpers -------------------------------------------------------------------------------------
def make_order(action, qty, order_type="MKT", tif="DAY", **fields) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType, o.tif = action, Decimal(qty), order_type, tif
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def place(ib, o, contract=AAPL) -> int:
    oid = ib.next_order_id()
    o.orderId = oid
    ib.placeOrder(oid, contract, o)
    return oid


def answer(ib, oid, start=0, timeout=10.0):
    """The first answer to order ``oid``: ('status', orderStatus event) or ('error', error event)."""
    got = _first(ib, lambda ev: (ev.name == "orderStatus" and ev[0] == oid)
                 or (ev.name == "error" and ev[0] == oid), start, timeout)
    return ("status" if got.name == "orderStatus" else "error"), got


def _first(ib, pred, start, timeout):
    """The first event from ``start`` on that satisfies ``pred`` (any callback name)."""
    deadline = time.monotonic() + timeout
    with ib.cond:
        while True:
            for ev in ib.events[start:]:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout} s; last events: {ib.names(start)[-10:]}")
            ib.cond.wait(left)


def status(ib, oid, wanted, start=0, timeout=10.0):
    return ib.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == wanted, timeout, start)


def quote_at(gw, seconds_ahead: float = 0.0, contract=AAPL):
    """The replay's AAPL quote ``seconds_ahead`` of the gateway's frozen clock."""
    def read(s):
        [inst] = s.market.lookup(contract)
        return s.market.quote(inst, s.market.now() + timedelta(seconds=seconds_ahead))
    return gw.call(read)


def first_cross(gw, below: bool) -> tuple[int, float]:
    """(seconds ahead, last price) of the first replay second whose last trade is below (above) the
    last trade now: a level the market has not touched yet and will touch then."""
    def scan(s):
        [inst] = s.market.lookup(AAPL)
        now = s.market.now()
        base = s.market.quote(inst, now).last
        for k in range(1, SCAN_SECONDS):
            last = s.market.quote(inst, now + timedelta(seconds=k)).last
            if (last < base) if below else (last > base):
                return k, last
        raise AssertionError("the replay did not move within the scan")
    return gw.call(scan)


def gateway_orders(gw, client_id, oid):
    """The gateway's own view: every order (working or finished) with this id."""
    def look(s):
        rows = s.broker.open_orders(client_id) + s.broker.completed_orders()
        return [o for _, o, _ in rows if o.clientId == client_id and o.orderId == oid]
    return gw.call(look)


def cancel_if_working(ib, oid, kind, event, start):
    if kind == "status" and event[1] in WORKING:
        ib.cancelOrder(oid, OrderCancel())
        status(ib, oid, "Cancelled", start)


# --- every type and TIF is answered --------------------------------------------------------------------
def _priced(order_type: str, bid: float, ask: float) -> dict:
    """Prices that leave a buy of ``order_type`` resting (or filling where it must: MKT, MIDPRICE)."""
    low, high = round(bid * 0.9, 2), round(ask * 1.1, 2)
    return {"MKT": {}, "LMT": dict(lmtPrice=low), "STP": dict(auxPrice=high),
            "STP LMT": dict(auxPrice=high, lmtPrice=high),
            "TRAIL": dict(auxPrice=5.00), "TRAIL LIMIT": dict(auxPrice=5.00, lmtPriceOffset=0.50),
            "MOC": {}, "LOC": dict(lmtPrice=low), "MIT": dict(auxPrice=low),
            "LIT": dict(auxPrice=low, lmtPrice=low), "REL": dict(auxPrice=0.0),
            "MIDPRICE": {}}[order_type]


EXPECTED = {"MKT": "Filled", "MIDPRICE": "Filled"}      # every other buy above rests


def test_every_order_type_is_answered(gw, ib):
    q = quote_at(gw)
    assert {t.code for t in ORDER_TYPES} == set(EXPECTED) | {"LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT",
                                                             "MOC", "LOC", "MIT", "LIT", "REL"}
    for t in ORDER_TYPES:
        start = ib.mark()
        oid = place(ib, make_order("BUY", 1, t.code, **_priced(t.code, q.bid, q.ask)))
        kind, event = answer(ib, oid, start)
        assert kind == "status", (t.code, event.args)
        final = status(ib, oid, EXPECTED.get(t.code, "Submitted"), start)
        cancel_if_working(ib, oid, kind, final, start)


@pytest.mark.parametrize("tif", TIF_CODES)
def test_every_time_in_force_is_answered(gw, ib, tif):
    q = quote_at(gw)
    fields = dict(lmtPrice=round(q.bid * 0.9, 2))
    if tif == "GTD":
        fields["goodTillDate"] = (START + timedelta(days=30)).strftime("%Y%m%d %H:%M:%S UTC")
    start = ib.mark()
    oid = place(ib, make_order("BUY", 1, "LMT", tif=tif, **fields))
    kind, event = answer(ib, oid, start)
    assert kind == "status"
    final = "Cancelled" if tif in ("IOC", "FOK") else "Submitted"     # a limit far below the market
    event = status(ib, oid, final, start)
    if final == "Cancelled":
        assert "could not be filled immediately" in ib.wait_error(oid, 202)[3]
    cancel_if_working(ib, oid, kind, event, start)


def test_what_the_gateway_cannot_serve_gets_ibs_error(gw, ib):
    cases = [(make_order("BUY", 20000, "MKT", tif="OPG"), eurusd(), 201),       # FX: no opening auction
             (make_order("BUY", 1, "STP", tif="OPG", auxPrice=1000.0), AAPL, 111),
             (make_order("BUY", 1, "MOC", tif="GTC"), AAPL, 113),
             (make_order("BUY", 1, "PEG MID"), AAPL, 387),
             (make_order("BUY", 1, "LMT", tif="GTD", lmtPrice=1.0), AAPL, 201)]      # no goodTillDate
    assert "STP" not in OPG_TYPES
    for order, contract, code in cases:
        start = ib.mark()
        oid = place(ib, order, contract)
        kind, event = answer(ib, oid, start)
        assert (kind, event[2]) == ("error", code), event.args


# --- triggers against the replay ----------------------------------------------------------------------
def test_mit_lit_and_trail_limit_trigger_when_the_replay_touches_them(gw, ib):
    down_in, low = first_cross(gw, below=True)
    up_in, high = first_cross(gw, below=False)
    start = ib.mark()
    mit = place(ib, make_order("BUY", 1, "MIT", auxPrice=low))
    trail = place(ib, make_order("SELL", 1, "TRAIL LIMIT", auxPrice=5.00, trailStopPrice=low,
                                 lmtPriceOffset=1.00))
    lit = place(ib, make_order("SELL", 1, "LIT", auxPrice=high, lmtPrice=round(high - 1.00, 2)))
    for oid in (mit, trail, lit):
        status(ib, oid, "Submitted", start)
    shown = ib.wait_for("openOrder", lambda e: e[0] == trail, start=start)[2]
    assert (shown.trailStopPrice, shown.lmtPrice) == (low, round(low - 1.00, 2))

    first, second = sorted([(down_in, "down"), (up_in, "up")])
    gw.advance_clock(first[0])
    moved = {"down": (mit, trail), "up": (lit,)}
    seen = quote_at(gw)
    for oid in moved[first[1]]:
        st = status(ib, oid, "Filled", start)
        expected = seen.ask if oid == mit else seen.bid           # MIT buys at the ask, the limits sell at the bid
        assert st[4] == pytest.approx(expected)
    for oid in moved[second[1]]:
        assert gateway_orders(gw, ib.clientId, oid)[0].filledQuantity == 0     # not touched yet
    gw.advance_clock(second[0] - first[0])
    for oid in moved[second[1]]:
        status(ib, oid, "Filled", start)


def test_gtd_order_is_cancelled_when_the_replay_clock_reaches_its_date(gw, ib):
    now = gw.call(lambda s: s.market.now())
    until = (now + timedelta(seconds=120)).strftime("%Y%m%d-%H:%M:%S")
    start = ib.mark()
    oid = place(ib, make_order("BUY", 1, "LMT", tif="GTD", goodTillDate=until,
                               lmtPrice=round(quote_at(gw).bid * 0.9, 2)))
    status(ib, oid, "Submitted", start)
    gw.advance_clock(119)
    assert [o.orderId for _, o, _ in gw.call(lambda s: s.broker.open_orders(ib.clientId))] == [oid]
    gw.advance_clock(1)
    status(ib, oid, "Cancelled", start)
    assert ib.wait_error(oid, 202)[3] == f"Order Canceled - reason:good till date {until} reached"


def test_auctions_fill_moc_at_the_close_and_opg_at_the_next_open_with_their_average_price(gw, ib):
    start = ib.mark()
    moc = place(ib, make_order("BUY", 2, "MOC"))
    opg = place(ib, make_order("BUY", 3, "MKT", tif="OPG"))
    for oid in (moc, opg):
        status(ib, oid, "Submitted", start)
    now = gw.call(lambda s: s.market.now())
    close = datetime(2026, 11, 18, 21, 0, 1, tzinfo=timezone.utc)   # 16:00:01 New York
    assert now < close
    gw.advance_clock((close - now).total_seconds())
    st = status(ib, moc, "Filled", start)
    assert st[4] == pytest.approx(quote_at(gw).last) and st[2] == Decimal(2)
    assert gateway_orders(gw, ib.clientId, opg)[0].filledQuantity == 0          # waits for the open
    opening = datetime(2026, 11, 19, 14, 30, 1, tzinfo=timezone.utc)            # 09:30:01 New York
    gw.advance_clock((opening - close).total_seconds())
    st = status(ib, opg, "Filled", start)
    assert st[4] == pytest.approx(quote_at(gw).last) and st[2] == Decimal(3)


# --- modifications ------------------------------------------------------------------------------------
def test_modify_price_and_quantity_of_a_resting_limit(gw, ib):
    q = quote_at(gw)
    o = make_order("BUY", 5, "LMT", tif="GTC", lmtPrice=round(q.bid * 0.8, 2))
    start = ib.mark()
    oid = place(ib, o)
    perm = status(ib, oid, "Submitted", start)[5]
    o.lmtPrice, o.totalQuantity = round(q.bid * 0.7, 2), Decimal(7)
    mark = ib.mark()
    ib.placeOrder(oid, AAPL, o)
    shown = ib.wait_for("openOrder", lambda e: e[0] == oid, start=mark)[2]
    assert (shown.lmtPrice, shown.totalQuantity, shown.permId) == (round(q.bid * 0.7, 2), Decimal(7), perm)
    [at_gateway] = gateway_orders(gw, ib.clientId, oid)
    assert (at_gateway.lmtPrice, at_gateway.totalQuantity) == (round(q.bid * 0.7, 2), Decimal(7))
    ib.cancelOrder(oid, OrderCancel())
    status(ib, oid, "Cancelled", mark)
    again = ib.mark()
    ib.placeOrder(oid, AAPL, o)                                 # a cancelled order cannot come back
    assert ib.wait_error(oid, 10148, timeout=10)
    assert not [e for e in ib.events[again:] if e.name == "orderStatus" and e[0] == oid]


def test_modify_of_a_filled_order_is_104(gw, ib):
    start = ib.mark()
    oid = place(ib, make_order("BUY", 1))
    status(ib, oid, "Filled", start)
    ib.placeOrder(oid, AAPL, make_order("BUY", 2))
    assert ib.wait_error(oid, 104)[3] == "Can't modify a filled order."
    assert gateway_orders(gw, ib.clientId, oid)[0].totalQuantity == Decimal(1)


def test_releasing_a_held_order_sends_the_same_order(gw, ib):
    q = quote_at(gw)
    o = make_order("BUY", 1, "LMT", lmtPrice=round(q.bid * 0.9, 2), transmit=False)
    start = ib.mark()
    oid = place(ib, o)
    perm = status(ib, oid, "PreSubmitted", start)[5]
    o.transmit = True
    ib.placeOrder(oid, AAPL, o)
    assert status(ib, oid, "Submitted", start)[5] == perm
    [one] = gateway_orders(gw, ib.clientId, oid)
    assert one.permId == perm
    ib.cancelOrder(oid, OrderCancel())
    status(ib, oid, "Cancelled", start)


# --- reconnect ----------------------------------------------------------------------------------------
def test_completed_orders_after_a_reconnect_carry_the_true_filled_quantity(gw):
    client_id = 39
    away = IBTestClient().start(gw.port, client_id)
    down_in, low = first_cross(gw, below=True)
    start = away.mark()
    filled_later = place(away, make_order("BUY", 4, "MIT", auxPrice=low))
    cancelled = place(away, make_order("BUY", 2, "LMT", lmtPrice=round(low * 0.8, 2)))
    for oid in (filled_later, cancelled):
        status(away, oid, "Submitted", start)
    away.cancelOrder(cancelled, OrderCancel())
    status(away, cancelled, "Cancelled", start)
    gw.drop_connections()                           # the client goes away...
    away.wait_for("connectionClosed")
    away.stop()
    assert client_id not in gw.call(lambda s: set(s.clients))
    gw.advance_clock(down_in)                       # the MIT fills while its client is away

    back = IBTestClient().start(gw.port, client_id)
    try:
        start = back.mark()
        back.reqCompletedOrders(False)
        rows = back.collect("completedOrder", "completedOrdersEnd", start=start)
        mine = {e[1].permId: e[1] for e in rows}
        perms = {oid: gateway_orders(gw, client_id, oid)[0].permId for oid in (filled_later, cancelled)}
        filled, gone = mine[perms[filled_later]], mine[perms[cancelled]]
        assert (filled.filledQuantity, filled.totalQuantity) == (Decimal(4), Decimal(4))
        assert (gone.filledQuantity, gone.totalQuantity) == (Decimal(0), Decimal(2))
        assert all(e[1].filledQuantity < Decimal("1e30") for e in rows)
        start = back.mark()
        back.reqAllOpenOrders()
        back.wait_for("openOrderEnd", start=start)
    finally:
        back.stop()
