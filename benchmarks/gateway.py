"""The paper gateway in a child process for benchmarks, driven over a pipe.

Why a child process: the machine has 2 cores and CPython one GIL per process. With the gateway in
the benchmark's own process its encoding and socket writes would compete with the client under
test for the GIL, and the client's CPU time (``time.process_time``) would include the gateway's.
In a child, the client's figures are the client's alone, and the gateway runs on the other core.

    with GatewayProcess(synthetic=1000, max_lines=2000) as gw:
        contracts = gw.contracts(100)            # qualified ibapi Contracts (conId set)
        gw.call("firehose", count=100_000)       # any PaperGateway method, by name
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time

from ibapi.contract import Contract


def _serve(conn, config: dict) -> None:
    """Child process: run a PaperGateway and answer ``(method, args, kwargs)`` requests."""
    from addin.paper import PaperGateway

    gw = PaperGateway(**config).start()
    conn.send(gw.port)
    while True:
        try:
            name, args, kwargs = conn.recv()
        except EOFError:
            break
        if name == "__stop__":
            break
        value: object
        try:
            if name == "__contracts__":
                value = gw.call(functools.partial(_sim_contracts, n=args[0]))
            elif name == "__lines__":
                value = gw.call(lambda s: len(s.marketdata.subs))
            else:
                value = getattr(gw, name)(*args, **kwargs)
            conn.send((True, value))
        except BaseException as exc:  # report to the parent, keep serving
            conn.send((False, repr(exc)))
    gw.stop()
    conn.send((True, None))


def _sim_contracts(server, n: int) -> list[Contract]:
    """The first ``n`` synthetic instruments (SIM0001..) as qualified Contracts."""
    sims = [inst for inst in server.market.instruments if inst.symbol.startswith("SIM")]
    if len(sims) < n:
        raise ValueError(f"the gateway has {len(sims)} synthetic instruments, {n} asked for")
    out = []
    for inst in sims[:n]:
        c = inst.contract
        q = Contract()
        q.conId, q.symbol, q.secType, q.exchange, q.currency = c.conId, c.symbol, c.secType, "SMART", c.currency
        q.primaryExchange = c.primaryExchange
        out.append(q)
    return out


class GatewayProcess:
    """A :class:`addin.paper.PaperGateway` in a spawned child process. Keyword arguments are
    GatewayConfig fields. ``port`` after start; ``call(name, ...)`` runs a PaperGateway method in
    the child and returns its (picklable) result; raises RuntimeError with the child's error."""

    def __init__(self, **config):
        config.setdefault("port", 0)
        self.config = config
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, config), name="paper-gateway", daemon=True)
        self._port: int | None = None
        self.pid: int | None = None

    @property
    def port(self) -> int:
        """The gateway's listening port; RuntimeError before ``start``."""
        if self._port is None:
            raise RuntimeError("paper gateway process not started")
        return self._port

    def start(self, timeout: float = 60.0) -> "GatewayProcess":
        self.proc.start()
        if not self._conn.poll(timeout):
            self.proc.kill()
            raise TimeoutError(f"paper gateway process did not start within {timeout} s")
        self._port = self._conn.recv()
        self.pid = self.proc.pid
        return self

    def call(self, name: str, *args, timeout: float = 120.0, **kwargs):
        self._conn.send((name, args, kwargs))
        if not self._conn.poll(timeout):
            raise TimeoutError(f"paper gateway process did not answer {name} within {timeout} s")
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"paper gateway {name} failed: {value}")
        return value

    def contracts(self, n: int) -> list[Contract]:
        return self.call("__contracts__", n)

    def lines(self) -> int:
        """Live reqMktData lines at the gateway, over every client."""
        return self.call("__lines__")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.is_alive():
            try:
                self._conn.send(("__stop__", (), {}))
                if self._conn.poll(timeout):
                    self._conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size in bytes, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc status")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.002):
    """Poll ``predicate`` (cheap reads of state another thread or process updates) until true.
    Benchmarks poll at a fixed small interval instead of hooking the measured path, so the code
    under test carries no instrumentation; the interval bounds the timing error."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
