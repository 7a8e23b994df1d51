"""The paper gateway's firehose mode (benchmarks): synthetic TICK_PRICE ticks to every live line,
counted runs with an end marker, paced runs, the send-time side table, flow control and the
normal stream pausing while it runs. Real sockets, the real ibapi client."""

from __future__ import annotations

import itertools

import pytest
from ibapi.contract import Contract

from addin.paper import PaperGateway
from addin.paper.server import GatewayConfig
from addin.paper.services.firehose import CYCLE, END_PRICE

from .ibclient import IBTestClient
from .test_quotes import wait_until

_ids = itertools.count(701)


def sim(k: int) -> Contract:
    c = Contract()
    c.conId, c.symbol, c.secType, c.exchange, c.currency = 900_000_000 + k, f"SIM{k:04d}", "STK", "SMART", "USD"
    return c


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=5, stream_interval=0.05, max_lines=20) as gateway:
        yield gateway


@pytest.fixture
def client(gw):
    c = IBTestClient().start(gw.port, next(_ids))
    yield c
    c.stop()
    gw.firehose_stop()


def lines_of_others(gw, client_id: int) -> int:
    return gw.call(lambda s: sum(1 for sub in s.marketdata.subs.values() if sub.conn.client_id != client_id))


def subscribe(gw, client, n: int) -> None:
    # Earlier tests' clients may still be closing at the gateway: their lines must be gone first,
    # or the firehose would share its ticks with them.
    wait_until(lambda: lines_of_others(gw, client.clientId) == 0, 10, "earlier clients' lines to close")
    for k in range(1, n + 1):
        client.reqMktData(k, sim(k), "", False, False, [])
    for k in range(1, n + 1):
        client.wait_for("tickPrice", lambda e, k=k: e.args[0] == k)


def test_counted_firehose_sends_exactly_count_ticks_then_the_end_marker_on_the_newest_line(gw, client):
    subscribe(gw, client, 3)
    gw.sent_ticks()                                       # clear
    start = client.mark()
    gw.firehose(count=3000, record=True)
    end = client.wait_for("tickPrice", lambda e: e.args[2] == END_PRICE, timeout=30, start=start)
    assert end.args[0] == 3 and end.args[1] == 1           # bid of the last-subscribed line
    sent = gw.sent_ticks()
    assert len(sent) == 3000
    with client.cond:
        stop = client.events.index(end)
        received = [e for e in client.events[start:stop] if e.name == "tickPrice"]
    # The replayed stream may get a tick or two out between the mark and the firehose taking over;
    # everything after them is the firehose, tick for tick as it recorded them, up to the end marker.
    ticks = received[-3000:]
    assert [(e.args[0], e.args[1], e.args[2]) for e in ticks] == [(t.req_id, t.tick_type, t.price) for t in sent]
    assert len(received) - 3000 < 30
    per_line = {k: sum(1 for e in ticks if e.args[0] == k) for k in (1, 2, 3)}
    assert per_line == {1: 1000, 2: 1000, 3: 1000}       # round-robin
    kinds = [e.args[1] for e in ticks if e.args[0] == 1][:6]
    assert kinds == [1, 2, 4, 1, 2, 4]                    # bid, ask, last in turn
    bids = [e.args[2] for e in ticks if e.args[0] == 1 and e.args[1] == 1][:CYCLE]
    assert len(set(bids)) == CYCLE                        # a saw-tooth: no repeat within a period
    asks = [e.args[2] for e in ticks if e.args[0] == 1 and e.args[1] == 2][:CYCLE]
    assert min(asks) > max(bids)
    stats = gw.firehose_stats()
    assert stats["sent"] == 3000 and not stats["running"]


def test_the_replayed_stream_stays_paused_after_a_counted_run_until_stop(gw, client):
    subscribe(gw, client, 1)
    gw.firehose(count=10)
    end = client.wait_for("tickPrice", lambda e: e.args[2] == END_PRICE, timeout=10)
    # A stream step while the firehose holds the lines; read, step and read again in one turn of the
    # gateway's loop, so its own periodic steps cannot interleave.
    before, _, after_step = gw.call(lambda s: (s.marketdata.pumps, s.marketdata.pump(), s.marketdata.pumps))
    assert after_step == before + 1
    after = client.mark()
    gw.call(lambda s: s.marketdata.pump())
    assert client.names(after).count("tickPrice") == 0    # nothing overwrote the marker
    assert end.args[0] == 1
    gw.firehose_stop()
    client.wait_for("tickPrice", lambda e: e.args[2] != END_PRICE, timeout=10, start=after)


def test_recorded_ticks_carry_send_times_and_match_what_the_client_got(gw, client):
    subscribe(gw, client, 2)
    gw.sent_ticks()                                       # clear
    start = client.mark()
    gw.firehose(count=200, record=True, end=0.0002)
    client.wait_for("tickPrice", lambda e: e.args[2] == 0.0002, timeout=10, start=start)
    sent = gw.sent_ticks()
    assert len(sent) == 200
    assert all(a.t_ns <= b.t_ns for a, b in zip(sent, sent[1:]))
    assert {t.con_id for t in sent} == {900_000_001, 900_000_002}
    with client.cond:
        got = [(e.args[0], e.args[1], e.args[2]) for e in client.events[start:] if e.name == "tickPrice"
               and e.args[2] != 0.0002]
    # the replayed stream may have sent a tick or two before the firehose took over
    assert got[-200:] == [(t.req_id, t.tick_type, t.price) for t in sent]
    assert gw.sent_ticks() == []                          # cleared by the read


def test_paced_firehose_keeps_its_rate(gw, client):
    subscribe(gw, client, 2)
    start = client.mark()
    gw.firehose(rate=2000, count=1000)
    client.wait_for("tickPrice", lambda e: e.args[2] == END_PRICE, timeout=10, start=start)
    stats = gw.firehose_stats()
    assert stats["sent"] == 1000
    assert 0.4 <= stats["seconds"] <= 2.0                 # 1000 ticks at 2000/s: half a second, not a burst


def test_bad_settings_are_refused(gw):
    with pytest.raises(ValueError, match="rate"):
        gw.call(lambda s: s.start_firehose(rate=0))
    with pytest.raises(ValueError, match="count"):
        gw.call(lambda s: s.start_firehose(count=-1))


def test_config_firehose_streams_endlessly_with_flow_control():
    with PaperGateway(GatewayConfig(port=0, synthetic=2, firehose=True)) as gw:
        c = IBTestClient().start(gw.port, next(_ids))
        try:
            c.reqMktData(1, sim(1), "", False, False, [])
            c.wait_for("tickPrice", lambda e: e.args[0] == 1)
            before = gw.firehose_stats()["sent"]
            c.wait_for("tickPrice", lambda e: e.args[0] == 1, start=c.mark() + 5000, timeout=30)
            stats = gw.firehose_stats()
            assert stats["running"] and stats["sent"] > before
            # flow control: the gateway never holds much more than the socket's buffers in its queue
            backlog = gw.call(lambda s: max(conn.transport.get_write_buffer_size() for conn in s.connections))
            assert backlog < 4 * 1024 * 1024
        finally:
            c.stop()
