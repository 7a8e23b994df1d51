"""The ibxl service: tick to cell through it, and its CPU and memory with four clients, each next to
the in-process figure measured in the same run against the same gateway stream.

Tick to cell: the paper gateway (child process, recorded firehose of ``lines * PER_LINE`` ticks per
second) -> the service (``python -m addin.service``, its own process) -> pushes -> a RemoteRuntime's
board in this process -> Pump -> the CountingBook sink (1 ms per COM call, stated), latency from the
gateway's send time of a tick to the end of the write carrying its value (``tick_to_cell``'s method
and checks). The peer: the same Pump fed by an in-process Session and MarketData. Target for the
service path at 1000 subscriptions: p99 <= flush interval + 20 ms (the in-process target).

CPU and memory: four client processes (standing in for three workbooks and ``ibxl run``) each hold the
same subscriptions through the service while the firehose runs; figures are the service process's CPU
seconds per wall second and its resident memory (VmRSS, peak VmHWM), from /proc. The peer: one process
holding the same lines with an in-process Runtime, measured the same way over the same window.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from .gateway import GatewayProcess, rss_bytes, wait_until
from .report import Row, judged
from .tick_to_cell import PER_LINE, pump_window

ROOT = Path(__file__).resolve().parents[1]
_ids = itertools.count(81)

# A client process: hold ``texts`` (one per line of stdin's first line, JSON) and wait for stdin to close.
HOLDER = textwrap.dedent("""
    import json, sys
    mode, address, key, port, client_id = sys.argv[1:6]
    texts = json.loads(sys.stdin.readline())
    if mode == "service":
        from addin.service.remote import RemoteRuntime
        rt = RemoteRuntime(address, key.encode(), name="bench client")
    else:
        from addin.app.runtime import Runtime
        rt = Runtime(port=int(port), client_id=int(client_id), max_lines=len(texts) + 10)
        rt.connect()
    keys = rt.hold_quotes(texts)
    print("ready", flush=True)
    sys.stdin.read()
    rt.close()
""")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _Service:
    """``python -m addin.service`` on a temporary folder (socket, key, log), connected to the gateway."""

    def __init__(self, port: int, client_id: int, max_lines: int):
        self.folder = Path(tempfile.mkdtemp(prefix="ibxl-bench-", dir="/tmp"))
        env = {**os.environ, "IBXL_SERVICE_DIR": str(self.folder), "IBXL_CONFIG": str(self.folder / "config.toml"),
               "IBXL_JOURNAL": str(self.folder / "journal.sqlite3"), "PYTHONPATH": str(ROOT)}
        self.env = env
        self.log = open(self.folder / "service.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "addin.service", "--port", str(port), "--client-id",
                                      str(client_id), "--max-lines", str(max_lines)], env=env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.address = self.folder / "service.sock"
        wait_until(lambda: (self.folder / "service.pid").exists() or self.proc.poll() is not None, 60,
                   "the service", 0.05)
        if self.proc.poll() is not None:
            raise RuntimeError((self.folder / "service.log").read_text())
        self.key = (self.folder / "service.key").read_text().strip()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _holders(mode: str, count: int, texts: list[str], service: _Service | None, port: int, env: dict):
    import json
    kids = []
    for _ in range(count):
        kid = subprocess.Popen([sys.executable, "-c", HOLDER, mode, str(service.address if service else ""),
                                service.key if service else "", str(port), str(next(_ids))], env=env, cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert kid.stdin is not None and kid.stdout is not None
        kid.stdin.write(json.dumps(texts) + "\n")
        kid.stdin.flush()
        kids.append(kid)
    for kid in kids:
        if kid.stdout is None or kid.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a {mode} client did not get its lines")
    return kids


def _release(kids) -> None:
    for kid in kids:
        kid.stdin.close()
    for kid in kids:
        try:
            kid.wait(20)
        except subprocess.TimeoutExpired:
            kid.kill()


def _load(gw, pid: int, n: int, window: float) -> dict:
    """CPU seconds per wall second and memory of ``pid`` over ``window`` s of the firehose."""
    gw.call("firehose", rate=n * PER_LINE)
    time.sleep(0.5)                                       # warm: the stream is flowing
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(window)                                    # the measured window (wall time)
    cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    gw.call("firehose_stop")
    return {"cpu": cpu, "rss": rss_bytes(pid), "peak": _peak_rss(pid)}


def run(quick: bool = False) -> list[Row]:
    from addin.excel.pump import DEFAULT_INTERVAL, MIN_INTERVAL
    from addin.ib.session import Session
    from addin.market.quotes import MarketData
    from addin.service.remote import RemoteRuntime

    n = 100 if quick else 1000
    window = 1.0 if quick else 3.0
    load_window = 1.0 if quick else 5.0
    rows: list[Row] = []
    with GatewayProcess(synthetic=n, max_lines=n + 10, max_rate=100_000) as gw:
        contracts = gw.contracts(n)
        texts = [c.symbol for c in contracts]
        con_of_row = {r + 2: contracts[r].conId for r in range(n)}
        service = _Service(gw.port, next(_ids), n + 10)
        try:
            # --- tick to cell: through the service, then in-process (each path alone on the stream) ----
            intervals = (DEFAULT_INTERVAL, MIN_INTERVAL)
            via: dict[float, Any] = {}
            local: dict[float, Any] = {}
            with RemoteRuntime(service.address, service.key.encode(), name="bench") as remote:
                remote_keys = remote.hold_quotes(texts)
                wait_until(lambda: gw.lines() >= n, 120, f"{n} lines", 0.05)
                for interval in intervals:
                    via[interval] = pump_window(gw, remote.board, remote_keys, con_of_row, interval, window)
            wait_until(lambda: gw.lines() == 0, 60, "the service's lines released", 0.05)
            session = Session("127.0.0.1", gw.port, next(_ids), rate=45)
            session.connect()
            md = MarketData(session, max_lines=n + 10)
            try:
                local_keys = [md.subscribe(c) for c in contracts]
                wait_until(lambda: gw.lines() >= n, 120, f"{n} lines", 0.05)
                for interval in intervals:
                    local[interval] = pump_window(gw, md.board, local_keys, con_of_row, interval, window)
            finally:
                md.close(timeout=0)
                session.disconnect()
            for interval in intervals:
                limit = interval + 0.020
                tag = f"{n} subs, {interval * 1000:.0f} ms flush"
                v, w = via[interval], local[interval]
                extra = {"subscriptions": n, "interval_s": interval, "service": v, "in_process": w}
                rows.append(Row("service", f"tick-to-cell p50 through the service, {tag}", "ms", _ms(v["p50"]),
                                "in-process pump", _ms(w["p50"]), extra=extra))
                rows.append(Row("service", f"tick-to-cell p99 through the service, {tag}", "ms", _ms(v["p99"]),
                                "in-process pump", _ms(w["p99"]), target=f"<= {limit * 1000:.0f} ms",
                                status=judged(v["p99"] is not None and v["p99"] <= limit and v["ok"]),
                                note="" if v["ok"] else "; ".join(v["problems"]), extra=extra))
            wait_until(lambda: gw.lines() == 0, 60, "the benchmark's lines released", 0.05)
            # --- CPU and memory: the service with four clients, one in-process runtime ---------------
            kids = _holders("service", 4, texts, service, gw.port, service.env)
            try:
                wait_until(lambda: gw.lines() >= n, 120, f"{n} lines", 0.05)
                through = _load(gw, service.proc.pid, n, load_window)
            finally:
                _release(kids)
            wait_until(lambda: gw.lines() == 0, 60, "the clients' lines released", 0.05)
            [alone] = _holders("local", 1, texts, None, gw.port, service.env)
            try:
                wait_until(lambda: gw.lines() >= n, 120, f"{n} lines", 0.05)
                peer = _load(gw, alone.pid, n, load_window)
            finally:
                _release([alone])
        finally:
            service.close()
    extra = {"subscriptions": n, "clients": 4, "offered_ticks_per_s": n * PER_LINE, "window_s": load_window,
             "service": through, "in_process": peer}
    rows.append(Row("service", f"service CPU, 4 clients x {n} subs", "cores", through["cpu"],
                    "one in-process runtime", peer["cpu"], extra=extra,
                    note="the service pushes every change to each of the 4 clients"))
    rows.append(Row("service", f"service memory (RSS), 4 clients x {n} subs", "MB", through["rss"] / 2**20,
                    "one in-process runtime", peer["rss"] / 2**20, extra=extra))
    rows.append(Row("service", f"service peak memory (VmHWM), 4 clients x {n} subs", "MB", through["peak"] / 2**20,
                    "one in-process runtime", peer["peak"] / 2**20, extra=extra))
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
