"""Orders as TWS treats them, at the paper gateway, through the official ibapi client and ib_async:
order conditions (held PreSubmitted until met, or cancelling a working order once met; echoed in
OPEN_ORDER), OCA late joiners (cancelled or reduced at once) and absurd order values (201 at once,
never stored, the event loop never stalled).

The replay clock is frozen (speed 0) at a fixed instant and moved only by the tests
(``PaperGateway.advance_clock``): each test reads the replay's future quotes first, so it knows the
second at which a condition becomes true. Nothing depends on today's date or the time of day.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from ibapi import order_condition as oc
from ibapi.execution import ExecutionFilter
from ibapi.order import Order

from addin.paper import PaperGateway

from .contracts import stock
from .ibclient import IBTestClient

START = datetime(2026, 11, 18, 15, 0, tzinfo=timezone.utc)   # a Wednesday, 10:00 in New York
NEW_YORK = ZoneInfo("America/New_York")
AAPL = stock("AAPL")
AAPL_CON_ID = 265598
SCAN_SECONDS = 3 * 3600
_client_ids = itertools.count(70)
_groups = itertools.count(1)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, speed=0, start=START, stream_interval=0.05, account_interval=0.2) as gateway:
        yield gateway


@pytest.fixture
def ib(gw):
    client = IBTestClient().start(gw.port, next(_client_ids))
    yield client
    client.stop()


# --- helpers -------------------------------------------------------------------------------------------
def make_order(action, qty, order_type="MKT", **fields) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType = action, Decimal(qty) if isinstance(qty, (int, str)) else qty, order_type
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def place(ib, o, contract=AAPL) -> int:
    oid = ib.next_order_id()
    o.orderId = oid
    ib.placeOrder(oid, contract, o)
    return oid


def status(ib, oid, wanted, start=0, timeout=10.0):
    return ib.wait_for("orderStatus", lambda e: e[0] == oid and e[1] == wanted, timeout, start)


def sync(ib) -> None:
    """A reqCurrentTime round trip: every message the gateway sent before its answer has arrived."""
    mark = ib.mark()
    ib.reqCurrentTime()
    ib.wait_for("currentTime", start=mark)


def statuses(ib, oid, start=0) -> list[str]:
    with ib.cond:
        return [e[1] for e in ib.events[start:] if e.name == "orderStatus" and e[0] == oid]


def now(gw) -> datetime:
    return gw.call(lambda s: s.market.now())


def quote_at(gw, seconds_ahead: float = 0.0):
    def read(s):
        [inst] = s.market.lookup(AAPL)
        return s.market.quote(inst, s.market.now() + timedelta(seconds=seconds_ahead))
    return gw.call(read)


def first_second(gw, rises) -> tuple[int, object, object]:
    """(k, quote now, quote k seconds ahead) for the first replay second k at which ``rises(q0, qk)``."""
    def scan(s):
        [inst] = s.market.lookup(AAPL)
        t0 = s.market.now()
        q0 = s.market.quote(inst, t0)
        for k in range(1, SCAN_SECONDS):
            qk = s.market.quote(inst, t0 + timedelta(seconds=k))
            if rises(q0, qk):
                return k, q0, qk
        raise AssertionError("the replay did not move within the scan")
    return gw.call(scan)


def ny_text(t: datetime) -> str:
    """A TimeCondition time as IB's samples write it: 'yyyyMMdd HH:mm:ss US/Eastern'."""
    return t.astimezone(NEW_YORK).strftime("%Y%m%d %H:%M:%S US/Eastern")


def time_condition(t: datetime, is_more=True) -> oc.TimeCondition:
    return oc.TimeCondition(is_more, ny_text(t))


def price_condition(price: float, is_more=True, method=0) -> oc.PriceCondition:
    return oc.PriceCondition(method, AAPL_CON_ID, "SMART", is_more, price)


def open_order(ib, oid, start=0):
    return ib.wait_for("openOrder", lambda e: e[0] == oid, start=start)[2]


def gateway_order_ids(gw, client_id: int) -> set[int]:
    """The ids of every order (working or finished) the gateway keeps for this client."""
    def look(s):
        rows = s.broker.open_orders(None) + s.broker.completed_orders()
        return {o.orderId for _, o, _ in rows if o.clientId == client_id}
    return gw.call(look)


# --- conditions ----------------------------------------------------------------------------------------
def test_time_condition_holds_the_order_presubmitted_until_the_replay_clock_passes_it(gw, ib):
    at = now(gw) + timedelta(hours=1)
    start = ib.mark()
    oid = place(ib, make_order("BUY", 1, conditions=[time_condition(at)]))
    status(ib, oid, "PreSubmitted", start)
    shown = open_order(ib, oid, start)
    [cond] = shown.conditions                                   # echoed as ibapi decodes it
    assert isinstance(cond, oc.TimeCondition)
    assert (cond.time, cond.isMore, cond.isConjunctionConnection) == (ny_text(at), True, True)
    assert (shown.conditionsCancelOrder, shown.conditionsIgnoreRth) == (False, False)

    gw.advance_clock(3599)
    sync(ib)
    assert statuses(ib, oid, start) == ["PreSubmitted"]         # one second early: still held
    gw.advance_clock(1)
    filled = status(ib, oid, "Filled", start)
    assert filled[4] == pytest.approx(quote_at(gw).ask)         # a market buy at the ask, now
    assert statuses(ib, oid, start) == ["PreSubmitted", "Submitted", "Filled"]


def test_price_conditions_trigger_when_the_replay_touches_the_level_and_or_as_ib_joins_them(gw, ib):
    k, q0, qk = first_second(gw, lambda q0, qk: qk.last > q0.last)
    level = (q0.last + qk.last) / 2                  # above every last before second k, reached at k
    later = now(gw) + timedelta(hours=2)
    start = ib.mark()
    alone = place(ib, make_order("BUY", 1, conditions=[price_condition(level)]))
    either = place(ib, make_order("BUY", 1, conditions=[time_condition(later).Or(), price_condition(level)]))
    both = place(ib, make_order("BUY", 1, conditions=[time_condition(later).And(), price_condition(level)]))
    for oid in (alone, either, both):
        status(ib, oid, "PreSubmitted", start)
    assert [c.isConjunctionConnection for c in open_order(ib, either, start).conditions] == [False, True]

    gw.advance_clock(k - 1)
    sync(ib)
    assert all(statuses(ib, oid, start) == ["PreSubmitted"] for oid in (alone, either, both))
    gw.advance_clock(1)
    status(ib, alone, "Filled", start)
    status(ib, either, "Filled", start)              # time OR price: the price is enough
    sync(ib)
    assert statuses(ib, both, start) == ["PreSubmitted"]     # time AND price: still waits for the time


def test_price_condition_with_ib_async_and_its_trigger_methods(gw):
    ib_async = pytest.importorskip("ib_async")
    k, q0, qk = first_second(gw, lambda q0, qk: qk.bid < q0.bid)
    level = (q0.bid + qk.bid) / 2                     # the bid falls below it at second k
    client = ib_async.IB()
    client.connect("127.0.0.1", gw.port, clientId=next(_client_ids), timeout=10)
    try:
        [aapl] = client.qualifyContracts(ib_async.Stock("AAPL", "SMART", "USD"))
        cond = ib_async.PriceCondition(isMore=False, price=level, conId=aapl.conId, exch="SMART",
                                       triggerMethod=4)                      # bid/ask: "less" watches the bid
        trade = client.placeOrder(aapl, ib_async.MarketOrder("SELL", 1, conditions=[cond]))
        _wait(client, lambda: trade.orderStatus.status == "PreSubmitted")
        gw.advance_clock(k - 1)
        assert client.reqCurrentTime() and trade.orderStatus.status == "PreSubmitted"
        gw.advance_clock(1)
        _wait(client, lambda: trade.orderStatus.status == "Filled")
        assert trade.fills[0].execution.price == pytest.approx(qk.bid)
        [echoed] = trade.order.conditions
        assert (echoed.isMore, echoed.price, echoed.triggerMethod) == (False, level, 4)
    finally:
        client.disconnect()


def _wait(client, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("ib_async: condition not met in time")
        client.waitOnUpdate(timeout=left)


def test_volume_percent_change_execution_and_margin_conditions(gw, ib):
    start = ib.mark()
    # margin cushion of a fresh paper account is far above 50%: met at once, the order fills
    margin = place(ib, make_order("BUY", 1, conditions=[oc.MarginCondition(True, 50)]))
    status(ib, margin, "Filled", start)
    # execution of MSFT in this account since the order was placed
    on_msft = place(ib, make_order("BUY", 1, conditions=[oc.ExecutionCondition("STK", "SMART", "MSFT")]))
    status(ib, on_msft, "PreSubmitted", start)
    status(ib, place(ib, make_order("BUY", 1), stock("MSFT")), "Filled", start)
    assert gw.advance_clock(0)
    status(ib, on_msft, "Filled", start)

    def change(q):
        return (q.last - q.close) / q.close * 100.0
    level_volume = math.floor(quote_at(gw).volume) + 1
    kv, _, _ = first_second(gw, lambda q0, qk: qk.volume >= level_volume)
    kp, q0, qk = first_second(gw, lambda q0, qk: change(qk) > change(q0))
    level_change = (change(q0) + change(qk)) / 2
    volume = place(ib, make_order("BUY", 1, conditions=[oc.VolumeCondition(AAPL_CON_ID, "SMART", True,
                                                                           level_volume)]))
    pct = place(ib, make_order("BUY", 1, conditions=[oc.PercentChangeCondition(AAPL_CON_ID, "SMART", True,
                                                                               level_change)]))
    status(ib, volume, "PreSubmitted", start)
    status(ib, pct, "PreSubmitted", start)
    first, second = sorted([(kv, volume), (kp, pct)])
    gw.advance_clock(first[0])
    status(ib, first[1], "Filled", start)
    if second[0] > first[0]:
        sync(ib)
        assert "Filled" not in statuses(ib, second[1], start)
        gw.advance_clock(second[0] - first[0])
    status(ib, second[1], "Filled", start)


def test_conditions_cancel_order_cancels_a_working_order_once_met(gw, ib):
    at = now(gw) + timedelta(minutes=1)
    low = round(quote_at(gw).bid * 0.5, 2)
    start = ib.mark()
    oid = place(ib, make_order("BUY", 1, "LMT", lmtPrice=low, conditions=[time_condition(at)],
                               conditionsCancelOrder=True, conditionsIgnoreRth=True))
    status(ib, oid, "Submitted", start)                         # working at once: it rests
    shown = open_order(ib, oid, start)
    assert (shown.conditionsCancelOrder, shown.conditionsIgnoreRth) == (True, True)
    gw.advance_clock(59)
    sync(ib)
    assert statuses(ib, oid, start) == ["Submitted"]
    gw.advance_clock(1)
    status(ib, oid, "Cancelled", start)
    assert ib.wait_error(oid, 202)[3] == "Order Canceled - reason:order conditions met"


def test_a_condition_the_gateway_cannot_evaluate_is_rejected_with_201(gw, ib):
    start = ib.mark()
    unknown = place(ib, make_order("BUY", 1, conditions=[oc.PriceCondition(0, 999999999, "SMART", True, 1.0)]))
    bad_time = place(ib, make_order("BUY", 1, conditions=[oc.TimeCondition(True, "tomorrow")]))
    for oid in (unknown, bad_time):
        assert ib.wait_error(oid, 201)[3].startswith("Order rejected - reason:")
    sync(ib)
    assert not statuses(ib, unknown, start) and not statuses(ib, bad_time, start)


# --- OCA late joiners ----------------------------------------------------------------------------------
def _filled_group(ib, oca_type: int, start: int) -> str:
    group = f"late-{next(_groups)}"
    status(ib, place(ib, make_order("BUY", 1, ocaGroup=group, ocaType=oca_type)), "Filled", start)
    return group


def test_oca_type_1_late_joiner_is_cancelled_at_once(gw, ib):
    start = ib.mark()
    group = _filled_group(ib, 1, start)
    low = round(quote_at(gw).bid * 0.5, 2)
    oid = place(ib, make_order("BUY", 1, "LMT", lmtPrice=low, ocaGroup=group, ocaType=1))
    status(ib, oid, "Cancelled", start)
    assert ib.wait_error(oid, 202)[3] == f"Order Canceled - reason:OCA group {group} already filled"
    assert "Submitted" not in statuses(ib, oid, start)


@pytest.mark.parametrize("oca_type", [2, 3])
def test_oca_type_2_and_3_late_joiners_are_reduced_by_the_filled_quantity(gw, ib, oca_type):
    start = ib.mark()
    group = _filled_group(ib, oca_type, start)
    low = round(quote_at(gw).bid * 0.5, 2)
    bigger = place(ib, make_order("BUY", 3, "LMT", lmtPrice=low, ocaGroup=group, ocaType=oca_type))
    st = status(ib, bigger, "Submitted", start)
    assert st[3] == Decimal(2)                                  # remaining: 3 less the 1 filled
    assert open_order(ib, bigger, start).totalQuantity == Decimal(2)
    same = place(ib, make_order("BUY", 1, "LMT", lmtPrice=low, ocaGroup=group, ocaType=oca_type))
    status(ib, same, "Cancelled", start)                        # nothing left of it
    ib.wait_error(same, 202)


def test_a_held_oca_member_reduced_by_a_fill_is_not_reduced_again_when_it_goes_live(gw, ib):
    group = f"held-{next(_groups)}"
    low = round(quote_at(gw).bid * 0.5, 2)
    start = ib.mark()
    held = make_order("BUY", 3, "LMT", lmtPrice=low, ocaGroup=group, ocaType=2, transmit=False)
    oid = place(ib, held)
    status(ib, oid, "PreSubmitted", start)
    status(ib, place(ib, make_order("BUY", 1, ocaGroup=group, ocaType=2)), "Filled", start)
    assert ib.wait_for("orderStatus", lambda e: e[0] == oid and e[3] == Decimal(2), start=start)
    mark = ib.mark()
    held.transmit, held.totalQuantity = True, Decimal(2)
    ib.placeOrder(oid, AAPL, held)
    assert status(ib, oid, "Submitted", mark)[3] == Decimal(2)


# --- absurd values -------------------------------------------------------------------------------------
ABSURD_QUANTITIES = ["1E+999999", "1E+5000", "1e308", "NaN", "Infinity", "-1", "0.000000001"]
ABSURD_PRICES = [("LMT", "lmtPrice", math.nan), ("LMT", "lmtPrice", math.inf), ("LMT", "lmtPrice", -5.0),
                 ("LMT", "lmtPrice", 1e308), ("STP", "auxPrice", math.nan), ("LMT", "lmtPrice", 1e12)]


def _absurd_orders():
    for q in ABSURD_QUANTITIES:
        yield f"quantity {q}", make_order("BUY", Decimal(q))
    for ot, field, value in ABSURD_PRICES:
        yield f"{field} {value}", make_order("BUY", 1, ot, **{field: value})
    yield "volume condition 1E+999999", make_order(
        "BUY", 1, conditions=[oc.VolumeCondition(AAPL_CON_ID, "SMART", True, "1E+999999")])
    yield "volume condition 'x' (unreadable)", make_order(
        "BUY", 1, conditions=[oc.VolumeCondition(AAPL_CON_ID, "SMART", True, "x")])


def test_absurd_values_are_rejected_with_201_at_once_and_never_stall_or_poison_the_gateway(gw, ib):
    status(ib, place(ib, make_order("BUY", 1)), "Filled")       # a position and an execution to inspect
    other = IBTestClient().start(gw.port, next(_client_ids))
    try:
        worst = 0.0
        rejected = []
        for what, order in _absurd_orders():
            mark, other_mark = ib.mark(), other.mark()
            t0 = time.monotonic()
            oid = place(ib, order)
            other.reqCurrentTime()                               # queued behind the order on the same loop
            err = ib.wait_for("error", lambda e, oid=oid: e[0] == oid, timeout=5, start=mark)
            other.wait_for("currentTime", start=other_mark, timeout=5)
            worst = max(worst, time.monotonic() - t0)
            assert err[2] == 201, (what, err.args)
            assert err[3].startswith("Order rejected - reason:") and len(err[3]) < 300, what
            assert not statuses(ib, oid, mark), what
            rejected.append(oid)
        assert worst < 1.0
        assert not set(rejected) & gateway_order_ids(gw, ib.clientId)        # never stored
        for client in (ib, other):
            _assert_finite_books(client)
    finally:
        other.stop()


def _assert_finite_books(client) -> None:
    mark = client.mark()
    client.reqPositions()
    positions = client.collect("position", "positionEnd", start=mark)
    assert positions and all(abs(p[2]) < 1e9 and math.isfinite(p[3]) for p in positions)
    req = client.next_req()
    client.reqExecutions(req, ExecutionFilter())
    executions = client.collect("execDetails", "execDetailsEnd", req_id=req, start=mark)
    assert executions and all(0 < e[2].shares < 1e9 and math.isfinite(e[2].price) for e in executions)
    reports = [e for e in client.events[mark:] if e.name == "commissionAndFeesReport"]
    assert all(math.isfinite(r[0].commissionAndFees) for r in reports)
    account = client.wait_for("managedAccounts")[0].split(",")[0]
    client.reqAccountUpdates(True, account)
    client.wait_for("accountDownloadEnd", start=mark)
    values = [e for e in client.events[mark:] if e.name == "updateAccountValue"]
    numbers = [float(v[1]) for v in values if _is_number(v[1])]
    assert numbers and all(math.isfinite(x) and abs(x) < 1e15 for x in numbers)
    portfolio = [e for e in client.events[mark:] if e.name == "updatePortfolio"]
    assert all(abs(p[1]) < 1e9 and all(math.isfinite(x) for x in p[2:7]) for p in portfolio)
    client.reqAccountUpdates(False, account)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_event_loop_answers_during_a_burst_of_absurd_orders(gw, ib):
    """One client fires absurd quantities as fast as it can while another keeps asking the time:
    every time request is answered within a second."""
    other = IBTestClient().start(gw.port, next(_client_ids))
    stop = threading.Event()
    slowest = [0.0]

    def ask_times():
        while not stop.is_set():
            mark = other.mark()
            t0 = time.monotonic()
            other.reqCurrentTime()
            other.wait_for("currentTime", start=mark, timeout=5)
            slowest[0] = max(slowest[0], time.monotonic() - t0)

    asker = threading.Thread(target=ask_times, daemon=True)
    asker.start()
    try:
        mark = ib.mark()
        ids = [place(ib, make_order("BUY", Decimal(q))) for q in ["1E+999999", "1E+5000"] * 10]
        for oid in ids:
            ib.wait_error(oid, 201, timeout=5)
        assert not statuses(ib, ids[-1], mark)
    finally:
        stop.set()
        asker.join(10)
        other.stop()
    assert slowest[0] < 1.0
