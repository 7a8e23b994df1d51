"""addin.app.doctor (``ibxl check``) against the real paper gateway, a closed port, a taken client id, and
plain socket servers that listen but do not speak the TWS API (silent, closing, HTTP, junk).
Real sockets and the real ibapi client; no mocks; every wait has a timeout, no sleeps."""

from __future__ import annotations

import socket
import threading

import pytest

from addin.app.doctor import FAILED, OK, SKIPPED, STEP_NAMES, diagnose, render, run_check
from addin.ib.session import IBError, Session
from addin.paper import PaperGateway


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, stream_interval=0.05, account_interval=5.0) as gateway:
        yield gateway


def statuses(dx) -> list[str]:
    return [s.status for s in dx.steps]


def closed_port() -> int:
    """A loopback port nothing listens on: bound by the OS, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """A plain TCP server on a free loopback port that does one thing with every connection:
    "silent" (accepts and says nothing), "close" (closes at once), "http" (answers an HTTP 400 to
    whatever arrives), "junk" (answers bytes that are no TWS API message)."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        for c in self.conns:
            c.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.behaviour == "close":
                conn.close()
                continue
            self.conns.append(conn)
            if self.behaviour in ("http", "junk"):
                conn.settimeout(5)
                try:
                    if conn.recv(1024):
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                     if self.behaviour == "http" else b"\x00\x00\x00\x05\xff\xfe\x01\x02\x03")
                except OSError:
                    pass


def test_the_paper_gateway_passes_every_step(gw):
    dx = diagnose("127.0.0.1", gw.port, 1, timeout=5)
    assert [s.name for s in dx.steps] == STEP_NAMES
    assert statuses(dx) == [OK] * 5, render(dx)
    assert (dx.ok, dx.exit_code) == (True, 0)
    assert dx.server_version == 178
    assert (dx.accounts, dx.paper, dx.data_type) == (("DU1234567",), True, "live")
    assert "paper account DU1234567" in dx.step("accounts").finding
    assert "live (type 1)" in dx.step("market data").finding
    text = render(dx)
    assert text.splitlines()[0] == f"ibxl check: 127.0.0.1:{gw.port} as client id 1"
    assert "all good" in text.splitlines()[-1] and "FAIL" not in text
    # Nothing left behind: every session thread the doctor started has ended.
    assert [t.name for t in threading.enumerate() if t.name.startswith("ibxl")] == []


def test_a_closed_port_says_nothing_listens_and_how_to_turn_the_api_on():
    port = closed_port()
    dx = diagnose("127.0.0.1", port, 1, timeout=3)
    assert statuses(dx) == [FAILED] + [SKIPPED] * 4
    step = dx.step("listening")
    assert f"nothing listens at 127.0.0.1:{port}" in step.finding
    for words in ("Enable ActiveX and Socket Clients", "7497", "7496", "4002", "4001", "Trusted IPs"):
        assert words in step.fix
    assert dx.exit_code == 1
    text = render(dx)
    assert "[FAIL] listening" in text and "fix: start TWS or IB Gateway" in text
    assert text.splitlines()[-1].startswith("1 problem (listening)")


def test_a_taken_client_id_is_named_and_a_free_one_suggested(gw):
    holders = [Session(port=gw.port, client_id=cid) for cid in (5, 6)]
    for s in holders:
        s.connect()
    try:
        dx = diagnose("127.0.0.1", gw.port, 5, timeout=5)
        assert statuses(dx) == [OK, OK, FAILED, SKIPPED, SKIPPED], render(dx)
        step = dx.step("client id")
        assert "client id 5 is in use by another program" in step.finding and "326" in step.finding
        assert step.fix.startswith("pass --client-id 7 ")       # 6 is taken too: 7 was tried and is free
        assert dx.exit_code == 1
        again = diagnose("127.0.0.1", gw.port, 7, timeout=5)   # the suggestion works
        assert again.ok, render(again)
        assert all(s.connected for s in holders)                # the holders were not disturbed
    finally:
        for s in holders:
            s.disconnect()


def test_live_accounts_are_reported_as_live():
    with PaperGateway(port=0, accounts=["U7654321"], stream_interval=0.05) as live:
        dx = diagnose("127.0.0.1", live.port, 1, timeout=5)
    assert dx.paper is False and dx.accounts == ("U7654321",)
    finding = dx.step("accounts").finding
    assert dx.step("accounts").status == OK
    assert finding.startswith("LIVE account U7654321") and "allow_live = true" in finding


def test_delayed_quotes_are_a_problem_with_the_subscription_fix(gw):
    dx = diagnose("127.0.0.1", gw.port, 2, timeout=5, data_type=3)
    step = dx.step("market data")
    assert step.status == FAILED and dx.data_type == "delayed"
    assert "quotes arrive as delayed (type 3)" in step.finding
    assert step.fix.startswith("quotes arrive as delayed (type 3): there is no live market data subscription")
    assert "Market Data Subscriptions" in step.fix
    assert statuses(dx)[:4] == [OK] * 4 and dx.exit_code == 1


def test_an_unknown_instrument_fails_only_the_market_data_step(gw):
    dx = diagnose("127.0.0.1", gw.port, 3, timeout=5, instrument="ZZZZQ")
    assert statuses(dx) == [OK, OK, OK, OK, FAILED]
    assert "'ZZZZQ'" in dx.step("market data").finding


@pytest.mark.parametrize("behaviour, finding", [
    ("silent", "accepts connections but sent nothing back to the TWS API handshake within 1 s"),
    ("close", "accepted the connection and closed it without answering the TWS API handshake"),
    ("http", "a web server answers at"),
    ("junk", "answered the handshake with bytes that are not the TWS API"),
])
def test_a_port_that_does_not_speak_the_api_is_told_apart(behaviour, finding):
    with FakeServer(behaviour) as server:
        dx = diagnose("127.0.0.1", server.port, 1, timeout=1)
        assert server.accepted >= 2          # the TCP check and the handshake both reached it
    assert statuses(dx) == [OK, FAILED, SKIPPED, SKIPPED, SKIPPED], render(dx)
    step = dx.step("api")
    assert finding in step.finding
    assert "Trusted IPs" in step.fix or "--port" in step.fix
    assert dx.server_version is None and dx.exit_code == 1


def test_run_check_prints_the_report_and_returns_the_exit_code(gw):
    out: list[str] = []
    assert run_check("127.0.0.1", gw.port, 4, timeout=5, echo=out.append) == 0
    assert out and "all good" in out[0]
    out.clear()
    assert run_check("127.0.0.1", closed_port(), 4, timeout=2, echo=out.append) == 1
    assert "[FAIL] listening" in out[0]


@pytest.mark.parametrize("kwargs, field", [({"port": 0}, "port"), ({"port": 70000}, "port"),
                                           ({"client_id": -1}, "client_id"), ({"data_type": 7}, "data_type")])
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"host": "127.0.0.1", "port": 4002, "client_id": 1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        diagnose(**args)


def test_a_taken_client_id_is_always_326_never_a_bare_502(gw):
    """The doctor's diagnosis rests on Session reporting IB's 326. The gateway sends 326 and closes
    at once; the session must still read the 326 (regression: about 1 in 6 came out as 502)."""
    with Session(port=gw.port, client_id=8):
        codes = []
        for _ in range(30):
            s = Session(port=gw.port, client_id=8, reconnect=False)
            try:
                s.connect(timeout=5)
            except IBError as exc:
                codes.append(exc.code)
            finally:
                s.disconnect()
    assert codes == [326] * 30
