"""Run the paper gateway: embedded on a background thread (``PaperGateway``) or as a child process
(``PaperProcess``), on a free loopback port by default, with a fault API for tests.

    with PaperGateway(port=0) as gw:          # in-process, port chosen by the OS
        client.connect("127.0.0.1", gw.port, clientId=1)
        gw.drop_connections()                 # fault: every socket closes at once
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import fields as dc_fields
from datetime import datetime
from typing import TypeVar

from .server import CONNECTIVITY_TEXT, GatewayConfig, PaperServer

T = TypeVar("T")


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (names are resolved)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except socket.gaierror:
            return False


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless asked explicitly: the gateway has no authentication."""
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"refusing to listen on {host!r}: the paper gateway binds loopback only "
                         f"(127.0.0.1, ::1) unless allow_remote / --allow-remote is given")


class PaperGateway:
    """A paper gateway on its own event-loop thread. Thread-safe: every method may be called from
    any thread; state is touched only on the gateway's loop.

    Keyword arguments are :class:`GatewayConfig` fields (host, port, accounts, seed, speed, start,
    synthetic, max_lines, max_rate, stream_interval, account_interval, starting_cash, allow_remote,
    firehose). ``port=0`` picks a free port; read it from ``.port`` after ``start()``.
    Raises ValueError for a non-loopback host without allow_remote, OSError when the port is taken.
    """

    def __init__(self, config: GatewayConfig | None = None, **kwargs):
        names = {f.name for f in dc_fields(GatewayConfig)}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"unknown gateway settings: {sorted(unknown)}")
        if "port" not in kwargs and config is None:
            kwargs["port"] = 0
        if "accounts" in kwargs:
            kwargs["accounts"] = tuple(kwargs["accounts"])
        self.config = config or GatewayConfig(**kwargs)
        check_bind(self.config.host, self.config.allow_remote)
        self.server: PaperServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        """The listening port (the one the OS chose for ``port=0``); RuntimeError before ``start()``."""
        if self._port is None:
            raise RuntimeError("paper gateway is not running")
        return self._port

    def start(self, timeout: float = 15.0) -> "PaperGateway":
        ready = threading.Event()
        failure: list[BaseException] = []

        def main():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.server = PaperServer(self.config)
                self._port = loop.run_until_complete(self.server.start())
            except BaseException as exc:  # report start failures to the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.server.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="paper-gateway", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"paper gateway did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            raise failure[0]
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Close every connection and the listening socket; returns when the thread has ended."""
        if self._thread is None or self._loop is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("paper gateway thread did not stop")
        self._thread = None

    def __enter__(self) -> "PaperGateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def call(self, fn: Callable[[PaperServer], T], timeout: float = 10.0) -> T:
        """Run ``fn(server)`` on the gateway's loop and return its result (for faults and inspection)."""
        if self._loop is None or self.server is None:
            raise RuntimeError("paper gateway is not running")

        async def run():
            return fn(self.server)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    # --- faults -----------------------------------------------------------------------------------
    def drop_connections(self) -> None:
        """Every client socket closes at once, as when the network drops. Orders and positions stay."""
        self.call(lambda s: s.drop_all())

    def refuse_connections(self, seconds: float) -> None:
        """New connections are closed on accept for ``seconds`` (TWS restarting)."""
        self.call(lambda s: s.refuse_for(seconds))

    def connectivity(self, code: int) -> None:
        """Send 1100 (lost), 1101 (restored, data lost: market data lines are dropped) or 1102
        (restored, data kept) to every connected client."""
        if code not in CONNECTIVITY_TEXT:
            raise ValueError(f"connectivity code must be one of {sorted(CONNECTIVITY_TEXT)}, got {code}")
        self.call(lambda s: s.connectivity(code))

    def delay_answers(self, seconds: float) -> None:
        """Answer every request ``seconds`` late (0 to stop)."""
        self.call(lambda s: setattr(s, "answer_delay", float(seconds)))

    def reject_next_order(self, reason: str = "paper gateway fault injection") -> None:
        """The next order placed by any client is rejected with error 201 and ``reason``."""
        self.call(lambda s: s.broker.reject_next(reason))

    def advance_clock(self, seconds: float) -> datetime:
        """Move the replay clock ``seconds`` forward, then let working orders trade, run the auctions
        passed and expire GTD orders at the new time at once (not at the next streaming step).
        Returns the new replay time (UTC)."""
        def step(s: PaperServer) -> datetime:
            now = s.market.advance(seconds)
            s.orders.on_market()
            return now
        return self.call(step)

    # --- firehose (benchmarks) ---------------------------------------------------------------------
    def firehose(self, rate: float | None = None, count: int | None = None, record: bool = False,
                 end: float | None = None) -> None:
        """Replace the quote stream by synthetic TICK_PRICE ticks to every live line (see
        ``addin.paper.services.firehose``). rate: ticks per second over all lines (None: as fast as the
        sockets take them); count: stop after this many, then the newest line gets one bid at
        ``end`` (default ``END_PRICE``) and the replayed quotes stay paused until
        :meth:`firehose_stop`; record: keep each tick's send time for :meth:`sent_ticks`. Raises
        ValueError for rate <= 0 or count < 0."""
        self.call(lambda s: s.start_firehose(rate=rate, count=count, record=record, end=end) and None)

    def firehose_stop(self) -> dict:
        """Stop the firehose (the replayed quote stream resumes); returns :meth:`firehose_stats`."""
        return self.call(lambda s: (s.stop_firehose() or s.last_firehose or _NoHose).stats())

    def firehose_stats(self) -> dict:
        """Of the latest firehose: ``sent`` (ticks), ``seconds``, ``rate`` (ticks/s), ``running``."""
        return self.call(lambda s: (s.last_firehose or _NoHose).stats())

    def sent_ticks(self, clear: bool = True) -> list:
        """The recorded firehose ticks (``firehose.SentTick``: t_ns perf_counter_ns, con_id, req_id,
        tick_type, price), oldest first; ``clear`` empties the side table."""
        def take(s):
            hose = s.last_firehose
            if hose is None:
                return []
            out = list(hose.log)
            if clear:
                hose.log.clear()
            return out
        return self.call(take, timeout=60.0)

    # --- inspection -------------------------------------------------------------------------------
    def received_orders(self):
        """Every placeOrder the gateway received, in order (list of ``ReceivedOrder``)."""
        return self.call(lambda s: list(s.orders.received))


class _NoHose:
    @staticmethod
    def stats() -> dict:
        return {"sent": 0, "seconds": 0.0, "rate": 0.0, "running": False}


_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class PaperProcess:
    """The paper gateway in a child process (``python -m addin.paper``), for tests that need to kill
    a process or keep the gateway out of the test's interpreter. ``args`` are ``ibxl paper`` options."""

    def __init__(self, *args: str, port: int = 0, timeout: float = 30.0):
        cmd = [sys.executable, "-m", "addin.paper", "--port", str(port), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.output: list[str] = []
        self.port = self._read_port(timeout)
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_port(self, timeout: float) -> int:
        found: list[int] = []
        done = threading.Event()

        def reader():
            for line in self.proc.stdout:
                self.output.append(line)
                m = _LISTENING.search(line)
                if m:
                    found.append(int(m.group(2)))
                    break
            done.set()

        threading.Thread(target=reader, daemon=True).start()
        if not done.wait(timeout) or not found:
            self.kill()
            raise RuntimeError("paper gateway process did not report its port:\n" + "".join(self.output))
        return found[0]

    def _drain(self) -> None:
        assert self.proc.stdout is not None     # Popen(stdout=PIPE)
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, timeout: float = 15.0) -> int:
        """Interrupt (as Ctrl-C would) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "PaperProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
