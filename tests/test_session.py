"""The background IB session against the paper gateway: lifecycle, leaks, errors, pacer, timeouts,
reconnects. Real sockets, the real ibapi client, no mocks."""

from __future__ import annotations

import inspect
import os
import threading
import time

import pytest
from ibapi.contract import Contract
from ibapi.wrapper import EWrapper

from addin.ib.events import SessionEvents
from addin.ib.session import IBError, Request, RequestTimeout, Session, _Wrapper
from addin.paper import PaperGateway


def aapl() -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "AAPL", "STK", "SMART", "USD"
    return c


def details_request(contract=None, **kw) -> Request:
    c = contract or aapl()
    return Request(f"contract details {c.symbol}", lambda cl, rid: cl.reqContractDetails(rid, c),
                   end="contractDetailsEnd", **kw)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05) as gateway:
        yield gateway


def test_connect_status_disconnect(gw):
    s = Session(port=gw.port, client_id=41)
    try:
        st = s.connect()
        assert (st.state, st.server_version, st.accounts, st.paper) == ("connected", 178, ("DU1234567",), True)
        # the farm notices may follow the handshake
        assert s.wait_status(lambda st: any(n.startswith("2104") for n in st.farm_notices), 10)
        rows = s.submit(details_request()).result(10)
        assert [a[1].contract.conId for n, a in rows if n == "contractDetails"] == [265598]
    finally:
        s.disconnect()
    assert s.status.state == "disconnected"
    with pytest.raises(IBError) as err:
        s.submit(details_request())
    assert err.value.code == 504


def test_nothing_leaks_over_100_connect_disconnect_cycles(gw):
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = open_fds()
    for _ in range(100):
        s = Session(port=gw.port, client_id=42)
        s.connect()
        s.disconnect()
    left = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    assert left == []
    assert open_fds() <= fds_before + 1
    # the gateway notices the last close on its own event loop, a moment after disconnect returns
    deadline = time.monotonic() + 10
    while gw.call(lambda srv: 42 in srv.clients) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.call(lambda srv: 42 not in srv.clients)


def test_client_id_in_use_is_a_clear_error(gw):
    first = Session(port=gw.port, client_id=43)
    first.connect()
    try:
        second = Session(port=gw.port, client_id=43)
        with pytest.raises(IBError) as err:
            second.connect(timeout=5)
        assert err.value.code == 326 and "client id 43" in str(err.value)
        assert second.status.state == "disconnected"
    finally:
        first.disconnect()


def test_nothing_listening_is_502():
    with PaperGateway(port=0) as g:
        port = g.port
    s = Session(port=port, client_id=1)
    t0 = time.monotonic()
    with pytest.raises(IBError) as err:
        s.connect(timeout=5)
    assert err.value.code == 502 and time.monotonic() - t0 < 5
    assert [t for t in threading.enumerate() if t.name.startswith("ibxl")] == []


def test_ib_errors_reach_the_request_with_code_text_and_request(gw):
    with Session(port=gw.port, client_id=44) as s:
        c = aapl()
        c.symbol = "ZZZZ"
        with pytest.raises(IBError) as err:
            s.submit(details_request(c)).result(10)
        assert err.value.code == 200 and "ZZZZ" in err.value.request and err.value.text


def test_pacer_never_sends_more_than_the_rate_in_any_second(gw):
    with Session(port=gw.port, client_id=45, rate=45) as s:
        sent = []
        done = threading.Event()
        n = 120

        def send(client):
            sent.append(time.monotonic())
            client.reqCurrentTime()
            if len(sent) == n:
                done.set()

        for _ in range(n):
            s.send(send)
        assert done.wait(10)
        worst = max(sum(1 for t in sent if a <= t < a + 1.0) for a in sent)
        assert worst <= 45
        assert sent[-1] - sent[0] >= (n - 45) / 45 - 0.1   # FIFO at the rate, not faster
        s.submit(details_request()).result(10)
        assert s.status.last_error is None or s.status.last_error.code != 100


def test_a_request_without_answer_times_out(gw):
    with Session(port=gw.port, client_id=46) as s:
        gw.delay_answers(3)
        try:
            req = s.submit(details_request(timeout=0.3))
            with pytest.raises(RequestTimeout):
                req.result(5)
        finally:
            gw.delay_answers(0)


def test_requests_in_flight_fail_when_the_connection_drops(gw):
    with Session(port=gw.port, client_id=47) as s:
        gw.delay_answers(5)
        try:
            req = s.submit(details_request(timeout=30))
            gw.drop_connections()
            with pytest.raises(IBError) as err:
                req.result(5)
            assert err.value.code == 1100 and "lost" in err.value.text
        finally:
            gw.delay_answers(0)
        assert s.wait_for_state("connected", 10)
        assert s.submit(details_request()).result(10)


def _quote_subscription(s, lines):
    def on_event(req, name, args):
        if name == "tickPrice":
            lines.set()
            req.finish()
        return False

    return s.submit(Request("quote AAPL", lambda cl, rid: cl.reqMktData(rid, aapl(), "", False, False, []),
                            on_event=on_event, subscription=True,
                            cancel=lambda cl, rid: cl.cancelMktData(rid)))


def test_reconnect_with_backoff_restores_subscriptions(gw):
    with Session(port=gw.port, client_id=48) as s:
        ticked = threading.Event()
        _quote_subscription(s, ticked)
        assert ticked.wait(10)
        gw.refuse_connections(1.0)
        gw.drop_connections()
        ticked.clear()
        assert s.wait_for_state("reconnecting", 5)
        assert s.wait_for_state("connected", 15)
        assert ticked.wait(10)          # the market data line was re-requested
        assert s.status.reconnects >= 1


def test_1101_restores_and_1102_keeps(gw):
    with Session(port=gw.port, client_id=49) as s:
        ticked = threading.Event()
        _quote_subscription(s, ticked)
        assert ticked.wait(10)
        lines = lambda: gw.call(lambda srv: srv.marketdata.lines_in_use(srv.clients[49]))  # noqa: E731
        gw.connectivity(1100)
        assert s.wait_for_state("reconnecting", 5)
        gw.connectivity(1102)
        assert s.wait_for_state("connected", 5)
        assert lines() == 1                       # kept: nothing was re-sent
        gw.connectivity(1101)                     # the gateway drops its lines; the session re-sends
        assert s.wait_status(lambda st: st.state == "connected" and st.last_error is not None
                             and st.last_error.code == 1101, 5)
        ticked.clear()
        assert ticked.wait(10)                    # ticks again: only a re-request can do that
        assert lines() == 1


def test_rate_is_capped_at_ibs_limit():
    with pytest.raises(ValueError):
        Session(rate=60)


def test_subscribing_to_a_misspelt_event_fails_loudly():
    events = Session().events
    with pytest.raises(AttributeError, match="openOrdr"):
        events.openOrdr.subscribe(lambda *args: None)
    events.openOrder.subscribe(print)          # the right name is an attribute
    events.openOrder.unsubscribe(print)


def test_every_ewrapper_callback_is_written_out_and_has_an_event():
    callbacks = {name for name, _ in inspect.getmembers(EWrapper, inspect.isfunction)
                 if not name.startswith("_") and not name.endswith("ProtoBuf") and name != "logAnswer"}
    assert callbacks - set(_Wrapper.__dict__) == set()        # none left to EWrapper's logging default
    assert set(SessionEvents().by_callback) == callbacks | {"notice", "connectivity"}


def test_an_event_reaches_every_listener_even_after_one_raises(gw):
    s = Session(port=gw.port, client_id=50)
    got: list[int] = []

    def broken(t: int) -> None:
        raise RuntimeError("a listener's own bug")

    s.events.currentTime.subscribe(broken)
    s.events.currentTime.subscribe(got.append)
    try:
        s.connect()
        s.send(lambda client: client.reqCurrentTime())
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) == 1 and isinstance(got[0], int)
    finally:
        s.disconnect()
