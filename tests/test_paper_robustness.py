"""The paper gateway's wire robustness, from the outside: IB's message rate as paced clients meet it,
a bounded send buffer for clients that stop reading, the connection limit and handshake timeout
for sockets that never start the API, malformed numbers answered with error 320, and one client's
requests not starving the others. Raw sockets play the hostile clients; ibapi and ib_async the
well-behaved ones."""

from __future__ import annotations

import itertools
import logging
import socket
import struct
import threading
import time

import pytest

from addin.paper import PaperGateway
from addin.protocol.framing import Framer

from .ibclient import IBTestClient

ib_async = pytest.importorskip("ib_async")

_ids = itertools.count(601)
SEND_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, max_send_buffer=SEND_LIMIT) as gateway:
        yield gateway


# --- a raw TWS API client ----------------------------------------------------------------------------
def frame(*fields) -> bytes:
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack("!I", len(body)) + body


class Raw:
    """A socket speaking the TWS API by hand: ``messages`` holds each decoded answer's fields."""

    def __init__(self, port: int, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.framer = Framer()
        self.messages: list[list[str]] = []

    def hello(self, options: str = "") -> Raw:
        """API\\0 and the version range; returns once the server's version reply is read."""
        text = ("v157..178 " + options).strip().encode()
        self.sock.sendall(b"API\0" + struct.pack("!I", len(text)) + text)
        self.read_until(lambda: len(self.messages) >= 1)
        self.messages.clear()
        return self

    def start(self, client_id) -> Raw:
        self.sock.sendall(frame(71, 2, client_id, ""))
        return self

    def started(self, client_id: int) -> Raw:
        self.hello().start(client_id)
        self.read_until(lambda: any(m[0] == "9" for m in self.messages))   # nextValidId
        return self

    def read_until(self, cond, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("closed by the gateway")
            self.framer.feed(data)
            self.messages.extend(m.decode("latin-1").split("\0")[:-1] for m in self.framer.messages())

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the gateway closes the socket (reads and drops anything before)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        return True

    def errors(self, code: int) -> list[list[str]]:
        return [m for m in self.messages if m[0] == "4" and m[3] == str(code)]

    def close(self) -> None:
        self.sock.close()


def history_request(req_id: int) -> bytes:
    """reqHistoricalData: AAPL, 1 day of 1-minute TRADES bars (about 110 KB of answer)."""
    return frame(20, req_id, 0, "AAPL", "STK", "", "", "", "", "SMART", "", "USD", "", "",
                 0, "", "1 min", "1 D", 0, "TRADES", 1, 0, "")


def wait_until(cond, timeout: float = 10.0, what: str = "condition"):
    """Poll ``cond`` (a read of gateway state) until true; raises on timeout."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(0.02)
    return value


# --- the message rate ------------------------------------------------------------------------------
def test_ib_async_paced_requests_never_earn_error_100(gw):
    """Three ib_async clients at once, each with its default pacing (45 a second), each sending 300
    requests as fast as it lets them: every one is answered, none refused."""
    clients = []
    for _ in range(3):
        ib = ib_async.IB()
        ib.connect("127.0.0.1", gw.port, clientId=next(_ids), timeout=10)
        ib.answers, ib.refused = [0], []
        ib.errorEvent += lambda req_id, code, text, contract, ib=ib: ib.refused.append(code)
        ib.wrapper.currentTime = lambda t, ib=ib: ib.answers.__setitem__(0, ib.answers[0] + 1)
        clients.append(ib)
    try:
        assert all(ib.client.MaxRequests == 45 and ib.client.RequestsInterval == 1 for ib in clients)
        for ib in clients:
            for _ in range(300):
                ib.client.reqCurrentTime()
        deadline = time.monotonic() + 30
        while any(ib.answers[0] < 300 and 100 not in ib.refused for ib in clients):
            assert time.monotonic() < deadline, [ib.answers[0] for ib in clients]
            clients[0].waitOnUpdate(timeout=1)
        assert [ib.answers[0] for ib in clients] == [300, 300, 300]
        assert [ib.refused.count(100) for ib in clients] == [0, 0, 0]
    finally:
        for ib in clients:
            ib.disconnect()


def test_a_flood_in_one_write_earns_error_100(gw):
    raw = Raw(gw.port).started(next(_ids))
    raw.messages.clear()
    raw.sock.sendall(b"".join(frame(49, 1) for _ in range(200)))
    raw.read_until(lambda: len([m for m in raw.messages if m[0] in ("49", "4")]) >= 200)
    answered = [m for m in raw.messages if m[0] == "49"]
    refused = raw.errors(100)
    assert len(answered) + len(refused) == 200
    assert 50 <= len(answered) <= 55            # a full allowance, plus what refills meanwhile
    assert refused[0][2] == "-1" and refused[0][4].startswith(
        "Max rate of messages per second has been exceeded:max=50 rec=")
    raw.close()


def test_paceapi_client_is_paced_not_refused(gw):
    """ibapi's documented pacing: with the +PACEAPI connect option TWS queues what exceeds the rate."""
    client = IBTestClient()
    client.setConnectOptions("+PACEAPI")
    client.start(gw.port, next(_ids))
    try:
        start = client.mark()
        began = time.monotonic()
        for _ in range(120):
            client.reqCurrentTime()
        client.wait_for("currentTime", lambda e: len(
            [x for x in client.events[start:] if x.name == "currentTime"]) >= 120, timeout=15, start=start)
        took = time.monotonic() - began
        assert not [e for e in client.errors() if e.args[2] == 100]
        assert took >= (120 - 50) / 50 * 0.9      # paced at 50 a second after the first 50
    finally:
        client.stop()


# --- a client that stops reading -------------------------------------------------------------------
def test_client_that_stops_reading_is_dropped_and_others_are_served(gw):
    reader = IBTestClient().start(gw.port, next(_ids))
    cid = next(_ids)
    stalled = Raw(gw.port, rcvbuf=4096).started(cid)     # from here on it never reads
    conn = gw.call(lambda s: s.clients[cid])
    try:
        for batch in range(10):
            stalled.sock.sendall(b"".join(history_request(1000 + 40 * batch + i) for i in range(40)))
            mark = reader.mark()
            reader.reqCurrentTime()
            reader.wait_for("currentTime", start=mark)
            if wait_ok(lambda: gw.call(lambda s: conn.state == "closed"), 3.0):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass                                     # dropped while we were still writing
    assert gw.call(lambda s: (conn.state, conn.dropped_behind)) == ("closed", True)
    assert 0 < gw.call(lambda s: conn.peak_buffered) <= SEND_LIMIT
    assert cid not in gw.call(lambda s: list(s.clients))
    mark = reader.mark()
    reader.reqCurrentTime()
    reader.wait_for("currentTime", start=mark)
    stalled.close()
    reader.stop()


def wait_ok(cond, timeout: float) -> bool:
    try:
        wait_until(cond, timeout)
        return True
    except TimeoutError:
        return False


def test_one_clients_requests_do_not_starve_another(gw):
    """45 history requests in one write (about 2 s of work) are handled a few at a time: another
    client's reqCurrentTime, sent after them, is answered before the last of them."""
    flood = Raw(gw.port).started(next(_ids))
    flood.messages.clear()
    other = IBTestClient().start(gw.port, next(_ids))
    times: dict[str, float] = {}

    def read_flood():
        flood.read_until(lambda: len([m for m in flood.messages if m[0] == "17"]) >= 45, timeout=60)
        times["flood_done"] = time.monotonic()

    t = threading.Thread(target=read_flood)
    try:
        flood.sock.sendall(b"".join(history_request(2000 + i) for i in range(45)))
        t.start()
        mark = other.mark()
        other.reqCurrentTime()
        other.wait_for("currentTime", start=mark, timeout=30)
        times["other"] = time.monotonic()
        t.join(60)
        assert times["other"] < times["flood_done"]
    finally:
        flood.close()
        other.stop()


# --- sockets that never start the API ----------------------------------------------------------------
def test_unstarted_sockets_count_toward_32_and_time_out():
    with PaperGateway(port=0, handshake_timeout=1.0) as gateway:
        talkers = [Raw(gateway.port).hello() for _ in range(30)]     # version exchanged, no START_API
        silent = [Raw(gateway.port) for _ in range(10)]              # nothing at all
        wait_until(lambda: gateway.call(lambda s: len(s.connections)) == 32, what="32 open sockets")
        # Beyond TWS's threshold the socket is closed before the version reply: ibapi gives up
        # ("Disconnected; resetting connection"), as its error 502 text tells users to check.
        refused = IBTestClient()
        with pytest.raises(ConnectionError):
            refused.start(gateway.port, 1, timeout=5)
        assert not refused.isConnected()
        for raw in talkers + silent:                                 # the handshake timeout closes them
            assert raw.closed_by_peer(timeout=10)
            raw.close()
        wait_until(lambda: gateway.call(lambda s: len(s.connections)) == 0, what="sockets closed")
        client = IBTestClient().start(gateway.port, 2)
        assert client.isConnected()
        client.stop()


@pytest.mark.parametrize("stage", ["version", "start"])
def test_huge_frame_before_start_api_is_refused_unread(gw, stage):
    raw = Raw(gw.port)
    if stage == "version":
        raw.sock.sendall(b"API\0" + struct.pack("!I", 16 * 1024 * 1024 - 1) + b"v157..178")
    else:
        raw.hello()
        raw.sock.sendall(struct.pack("!I", 16 * 1024 * 1024 - 1) + b"71\0" + b"2\0")
    assert raw.closed_by_peer(timeout=5)         # without waiting for the 16 MB it announced
    raw.close()


# --- malformed numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("client_id", ["NaN", "5" * 5000, "1.5", "99999999999"])
def test_unreadable_client_id_is_answered_with_320(gw, client_id, caplog):
    caplog.set_level(logging.WARNING)
    raw = Raw(gw.port).hello().start(client_id)
    raw.read_until(lambda: raw.errors(320))
    (err,) = raw.errors(320)
    assert err[2] == "-1" and err[4].startswith("Error reading request: clientId")
    assert raw.closed_by_peer(timeout=5)
    assert not [r for r in caplog.records if r.exc_info]      # no traceback anywhere
    raw.close()


def test_junk_numbers_in_requests_are_answered_and_the_connection_stays(gw, caplog):
    caplog.set_level(logging.WARNING)
    raw = Raw(gw.port).started(next(_ids))
    raw.messages.clear()
    contract = [0, "AAPL", "STK", "", "", "", "", "SMART", "", "USD", "", ""]
    raw.sock.sendall(frame(1, 11, 7, "abc", *contract[1:], 0, "", 0, 0, "")      # reqMktData, conId "abc"
                     + frame(1, 11, 8, *contract[:4], "NaN", *contract[5:], 0, "", 0, 0, "")  # strike NaN
                     + frame(20, "9" * 5000, *contract, 0, "", "1 min", "1 D", 0, "TRADES", 1, 0, "")
                     + frame("zz", 1)                                                   # message id junk
                     + frame(49, 1))
    raw.read_until(lambda: any(m[0] == "49" for m in raw.messages))
    errs = raw.errors(320)
    assert [e[2] for e in errs] == ["7", "8", "-1", "-1"]
    assert "conId" in errs[0][4] and "strike" in errs[1][4] and "reqId" in errs[2][4]
    assert not [r for r in caplog.records if r.exc_info]
    raw.close()
