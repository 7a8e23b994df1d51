"""addin.service: one service process owns the IB connection; client processes share it.

Real processes, a real paper gateway, the real socket: the service is ``python -m addin.service``
and every client is its own Python process (standing in for workbooks' UDF servers and ``ibxl run``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from addin.paper import PaperGateway
from addin.service import protocol
from addin.service.client import ServiceClient, TradingClient
from addin.service.paths import KeyFileError, load_or_create_key

ROOT = Path(__file__).resolve().parents[1]
SERVICE_CLIENT_ID = 41


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def gw():
    with PaperGateway(port=0, synthetic=100, max_lines=200, stream_interval=0.05, account_interval=5.0) as g:
        yield g


@pytest.fixture(scope="module")
def home():
    folder = Path(tempfile.mkdtemp(prefix="ibxl-svc-", dir="/tmp"))       # short: socket paths are limited
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _env(home: Path) -> dict:
    return {**os.environ, "IBXL_SERVICE_DIR": str(home), "IBXL_CONFIG": str(home / "config.toml"),
            "IBXL_JOURNAL": str(home / "journal.sqlite3"), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def service(gw, home):
    """The service process, connected to the gateway with one client id; risk limits wide enough for
    the order test's 50 orders."""
    (home / "config.toml").write_text("[risk]\nmax_orders_per_minute = 1000\nmax_open_orders = 1000\n"
                                      "max_position = 100000.0\n")
    log = open(home / "service.log", "wb")          # a file, not a pipe: nobody reads a pipe, it would fill
    proc = subprocess.Popen([sys.executable, "-m", "addin.service", "--port", str(gw.port),
                             "--client-id", str(SERVICE_CLIENT_ID)], env=_env(home), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    sock = home / "service.sock"
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 30, "the service's socket")
        assert proc.poll() is None, (home / "service.log").read_text()
        proc.address, proc.key = sock, load_or_create_key(home / "service.key", create=False)
        wait_until(lambda: SERVICE_CLIENT_ID in gw.call(lambda s: set(s.clients)), 15, "the service's IB session")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def client(service, cls=ServiceClient, **kw):
    return cls(service.address, service.key, name="test", **kw)


CLIENT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from addin.service.client import ServiceClient
    address, key, what = sys.argv[1], sys.argv[2].encode(), json.loads(sys.argv[3])
    c = ServiceClient(address, key, name="child")
    out = {}
    if "quote" in what:
        q = c.quote(what["quote"], timeout=5)
        out["bid"], out["ask"] = q.bid, q.ask
    if "subscribe" in what:
        out["keys"] = c.subscribe(what["subscribe"])
    print(json.dumps(out), flush=True)
    sys.stdin.read()                       # hold the connection (and the lines) until told to go
""")


def spawn_client(service, home, what: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, str(service.address), service.key.decode(),
                             json.dumps(what)], env=_env(home), cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def first_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


def gateway_lines(gw) -> int:
    return gw.call(lambda s: s.marketdata.lines_in_use(s.clients[SERVICE_CLIENT_ID])
                   if SERVICE_CLIENT_ID in s.clients else -1)


# --- protocol ----------------------------------------------------------------------------------------------
def test_protocol_round_trip_carries_datetimes_and_tables():
    from datetime import UTC, datetime

    import pandas as pd
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    msg = protocol.decode(protocol.encode(protocol.reply_ok(3, {"t": when, "f": frame})))
    assert msg["result"]["t"] == when
    assert msg["result"]["f"].equals(frame)
    with pytest.raises(protocol.VersionMismatch, match="v1, the other v2"):
        protocol.parse_request({"v": 2, "id": 1, "method": "status", "params": {}})


def test_key_file_is_owner_only_and_a_world_readable_one_is_refused(tmp_path):
    key = load_or_create_key(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "k") == key
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(tmp_path / "k")


# --- the service -------------------------------------------------------------------------------------------
def test_two_client_processes_share_one_ib_connection_and_one_line(gw, service, home):
    base = gateway_lines(gw)                       # lines held by other tests (an order desk keeps some)
    kids = [spawn_client(service, home, {"quote": "SIM0077"}) for _ in range(2)]
    try:
        quotes = [first_line(k) for k in kids]
        assert all(q["bid"] is not None and q["ask"] is not None for q in quotes)
        assert gw.call(lambda s: sorted(s.clients)) == [SERVICE_CLIENT_ID]       # ONE API connection
        assert gateway_lines(gw) == base + 1                                     # one line for both
        with client(service) as c:
            st = c.status()
        assert st["state"] == "connected" and st["client_id"] == SERVICE_CLIENT_ID
        assert sorted(x["lines"] for x in st["clients"] if x["name"] == "child") == [1, 1]
    finally:
        for k in kids:
            k.communicate("", timeout=10)
    wait_until(lambda: gateway_lines(gw) == base, 10, "the line released when both clients left")


def test_one_client_calls_from_many_threads_at_once(gw, service):
    import concurrent.futures
    texts = [f"SIM{k:04d}" for k in range(60, 68)]
    with client(service) as c, concurrent.futures.ThreadPoolExecutor(8) as pool:
        base = gateway_lines(gw)
        quotes = list(pool.map(lambda t: c.quote(t, timeout=5), texts + texts))   # each text asked twice
        assert all(q.bid is not None for q in quotes)
        assert gateway_lines(gw) == base + 8                                      # held once per text
        assert sorted(x["lines"] for x in c.status()["clients"] if x["name"] == "test") == [8]
    wait_until(lambda: gateway_lines(gw) == base, 10, "the lines released on close")


def test_the_udf_reader_over_the_service_holds_quotes_per_cell(gw, service):
    from addin.app.runtime import READ_ONLY_METHODS
    from addin.service.remote import RemoteRuntime
    with RemoteRuntime(service.address, service.key, name="test") as rt:
        reader = rt.readonly()
        assert all(callable(getattr(reader, name)) for name in READ_ONLY_METHODS)
        [mine] = [x for x in rt.status()["clients"] if x["name"] == "test (formulas)"]
        assert mine["capabilities"] == ["read"]
        assert rt._trading is None                          # formulas never open the trading connection
        cell = ("book.xlsx", "Sheet1", "A1")
        base = gateway_lines(gw)
        [key] = reader.hold_quotes(["SIM0081"], cell)
        assert reader.wait_quote(key, 5).bid is not None
        assert reader.hold_quotes(["SIM0081"], cell) == [key] and gateway_lines(gw) == base + 1
        [other] = reader.hold_quotes(["SIM0082"], cell)          # the cell now shows another instrument
        wait_until(lambda: gateway_lines(gw) == base + 1, 5, "SIM0081 released, SIM0082 held")
        assert reader.wait_quote(other, 5).bid is not None
        assert reader.describe("AAPL") == "AAPL.NASDAQ"
        assert reader.qualify("AAPL").contract.conId == 265598
        assert reader.account().startswith("D")


def test_a_service_client_has_no_order_methods_and_the_service_refuses_them(service):
    with client(service) as c:
        for name in ("place_orders", "modify", "cancel", "kill", "shutdown"):
            assert not hasattr(c, name)
        with pytest.raises(protocol.ServiceError) as info:
            c._call("place_orders", rows=[], source="sneaky")
        assert info.value.code == protocol.NOT_PERMITTED
    with client(service, TradingClient) as t:
        assert callable(t.place_orders)


ORDER_SCRIPT = textwrap.dedent("""
    import json, sys
    from addin.service.client import TradingClient
    address, key, prefix, count, account, symbol = sys.argv[1:7]
    with TradingClient(address, key.encode(), name=prefix) as t:
        price = round(t.quote(symbol, timeout=5).bid * 0.97, 2)       # below the market: stays working
        statuses = {}
        for i in range(int(count)):
            ref = f"{prefix}-{i}"
            out = t.place_orders([{"Ref": ref, "Account": account, "Symbol": symbol, "Action": "BUY",
                                   "Quantity": 1, "OrderType": "LMT", "LimitPrice": price}], source=prefix)
            statuses[ref] = [out.loc[0, "Status"], out.loc[0, "Message"]]
    print(json.dumps(statuses), flush=True)
""")


def test_orders_from_four_client_processes_reach_the_gateway_once_each(gw, service, home):
    with client(service) as c:
        account = c.status()["accounts"].split(",")[0]
    # 50 tries; one instrument per process: IB (and the paper gateway) reject a 21st working order on
    # one side of one contract
    counts = {"P0": 13, "P1": 13, "P2": 12, "P3": 12}
    symbols = dict(zip(counts, ("AAPL", "MSFT", "GOOG", "SPY")))
    kids = [subprocess.Popen([sys.executable, "-c", ORDER_SCRIPT, str(service.address), service.key.decode(),
                              prefix, str(n), account, symbols[prefix]], env=_env(home), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for prefix, n in counts.items()]
    results = {}
    for k in kids:
        out, err = k.communicate(timeout=120)
        assert k.returncode == 0, err
        results.update(json.loads(out))
    assert len(results) == 50
    not_submitted = {r: v for r, v in results.items() if v[0] != "Submitted"}
    assert not_submitted == {}
    received = [r.order.orderRef for r in gw.received_orders() if r.client_id == SERVICE_CLIENT_ID
                and r.order.orderRef[:2] in counts]
    assert sorted(received) == sorted(results)                          # each exactly once
    assert gw.call(lambda s: sorted(s.clients)) == [SERVICE_CLIENT_ID]
    with client(service, TradingClient) as t:
        t.cancel(list(results))


def test_a_wrong_key_is_refused(service):
    from multiprocessing import AuthenticationError
    with pytest.raises(AuthenticationError):
        ServiceClient(service.address, b"0" * 64)
    with client(service) as c:                      # and the service lives on
        assert c.status()["state"] == "connected"


OTHER_USER_SCRIPT = textwrap.dedent("""
    import sys
    from multiprocessing.connection import Client
    address, key_file, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    for what, attempt in (("key", lambda: open(key_file).read()),
                          ("connect", lambda: Client(address, family="AF_UNIX", authkey=key))):
        try:
            attempt()
            print(what, "allowed")
        except PermissionError:
            print(what, "refused")
""")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to act as another OS user")
def test_another_os_user_can_neither_read_the_key_nor_connect_even_knowing_the_key(service, home):
    # the folder opened to everyone (as ~/.ibxl may be) and the key given on the command line: the
    # files' own permissions must stop the other user
    python = "/usr/bin/python3"                  # the test's own interpreter may sit in a folder only we can read
    if not os.access(python, os.X_OK):
        pytest.skip("no system python3 for the other user")
    os.chmod(home, 0o755)
    try:
        done = subprocess.run([python, "-I", "-c", OTHER_USER_SCRIPT, str(service.address),
                               str(home / "service.key"), service.key.decode()], user=65534, group=65534,
                              capture_output=True, text=True, timeout=30, cwd="/")
    finally:
        os.chmod(home, 0o700)
    assert done.stdout.split("\n")[:2] == ["key refused", "connect refused"], done.stdout + done.stderr


def test_another_schema_version_gets_a_clear_error(service):
    from addin.service import transport
    ch = transport.Channel(transport.dial(service.address, service.key))
    try:
        ch.send({"v": 99, "id": 1, "method": "hello", "params": {}})
        reply = ch.recv()
        assert reply["ok"] is False and reply["error"]["code"] == protocol.VERSION_MISMATCH
        assert "v1" in reply["error"]["message"] and "v99" in reply["error"]["message"]
    finally:
        ch.close()


def test_the_socket_is_owner_only_and_no_tcp_port_is_open(service):
    mode = stat.S_IMODE(os.stat(service.address).st_mode)
    assert mode & 0o077 == 0, oct(mode)
    inodes = set()
    for fd in os.listdir(f"/proc/{service.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{service.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{service.pid}/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:            # 0A: LISTEN, owned by the service
                listening.append(row)
    assert listening == []
    assert inodes                                                  # it does hold sockets: the Unix one, IB's


def test_a_killed_client_releases_its_lines_while_another_keeps_ticking(gw, service, home):
    sims = [f"SIM{k:04d}" for k in range(1, 51)]
    victim = spawn_client(service, home, {"subscribe": sims})
    with client(service) as survivor:
        survivor.quote("MSFT", timeout=5)
        base = gateway_lines(gw)                   # MSFT, and lines other tests' order desk keeps for risk
        assert len(first_line(victim)["keys"]) == 50
        wait_until(lambda: gateway_lines(gw) == base + 50, 10, "50 more lines at the gateway")
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        t0 = time.monotonic()
        wait_until(lambda: gateway_lines(gw) == base, 10, "the killed client's 50 lines released")
        assert time.monotonic() - t0 < 10
        version = survivor.push_version
        wait_until(lambda: survivor.push_version > version, 5, "MSFT still pushed to the survivor")
        assert survivor.board.get(survivor.quote("MSFT").symbol).bid is not None
    victim.stdout.close(), victim.stderr.close(), victim.stdin.close()


def test_disconnect_sticks_until_connect_which_restores_the_lines(gw, service):
    with client(service) as c:
        c.subscribe(["SIM0090", "SIM0091"])
        held = gateway_lines(gw)
        c.disconnect()
        assert SERVICE_CLIENT_ID not in gw.call(lambda s: set(s.clients))
        try:
            for _ in range(100):
                with pytest.raises(protocol.ServiceError, match=r"disconnected \(press Connect\)"):
                    c.quote("AAPL")
            assert c.status()["user_disconnected"] is True
        finally:
            st = c.connect()
        assert st["state"] == "connected"
        assert c.quote("AAPL", timeout=5).bid is not None
        wait_until(lambda: gateway_lines(gw) >= held, 10, "the held lines restored at the gateway")
        version = c.push_version
        wait_until(lambda: c.push_version > version and not c.board.get("SIM0090.NASDAQ").stale, 10,
                   "SIM0090 ticking again after Connect")


def test_cli_starts_a_detached_service_reports_it_and_stops_it(gw):
    folder = Path(tempfile.mkdtemp(prefix="ibxl-cli-", dir="/tmp"))
    env = _env(folder)

    def ibxl(*args):
        return subprocess.run([sys.executable, "-m", "addin.app.cli", "service", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    try:
        started = ibxl("start", "--port", str(gw.port), "--client-id", "42")
        assert started.returncode == 0 and "ibxl service started" in started.stdout, started.stderr
        assert stat.S_IMODE((folder / "service.key").stat().st_mode) == 0o600
        status = ibxl("status")
        assert status.returncode == 0 and "connected" in status.stdout and "client id 42" in status.stdout
        assert "lines in use: 0" in status.stdout and "open orders: -" in status.stdout
        assert "history pacing: 0 open" in status.stdout
        assert "already running" in ibxl("start").stdout
        assert "stopped" in ibxl("stop").stdout
        wait_until(lambda: 42 not in gw.call(lambda s: set(s.clients)), 10, "the service's IB session closed")
        assert ibxl("status").returncode == 1
        assert not (folder / "service.sock").exists()
    finally:
        ibxl("stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_a_silent_peer_holds_up_no_one_and_a_silent_service_does_not_hang_a_client(service, tmp_path):
    import socket as sockets

    from addin.service import transport
    silent = sockets.socket(sockets.AF_UNIX)
    silent.connect(str(service.address))                 # connects, never answers the key challenge
    try:
        t0 = time.monotonic()
        with client(service) as c:                          # another client is served meanwhile
            assert c.status()["state"] == "connected"
        assert time.monotonic() - t0 < 2
        silent.settimeout(transport.AUTH_TIMEOUT + 5)
        while silent.recv(4096):                            # the challenge, then EOF: the service hung up
            pass
        assert time.monotonic() - t0 < transport.AUTH_TIMEOUT + 3
    finally:
        silent.close()
    mute = sockets.socket(sockets.AF_UNIX)                  # a "service" that accepts and never speaks
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(transport.AuthenticationError, match="within 0.5 s"):
            transport.dial(tmp_path / "mute.sock", service.key, timeout=0.5)
        assert time.monotonic() - t0 < 2
    finally:
        mute.close()
