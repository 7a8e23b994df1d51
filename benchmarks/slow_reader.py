"""Slow reader: the paper gateway's memory and its latency for other clients while one client keeps
requesting history and never reads the answers (issue 14's robustness case).

The gateway is ``ibxl paper`` in its own process (``python -m addin.paper``, the command's own
entry point), so its resident memory (/proc/<pid>/status VmRSS) is the gateway's alone. A raw socket
speaks the API by hand: handshake, START_API, then reqHistoricalData (AAPL, 1 day of 1-minute bars,
about 110 KB of answer each) at ``rate`` a second, and never reads. Meanwhile an ibxl Session sends
reqCurrentTime every 50 ms and times each answer. The peer is the same Session's round trip with no
slow reader (measured first, in the same run). Figures: the gateway's RSS growth, the round trip's
p50 and p99, and whether the slow reader was dropped (its socket closed by the gateway).
"""

from __future__ import annotations

import itertools
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

from .gateway import rss_bytes, wait_until
from .report import Row, judged

MB = 1024 * 1024
_ids = itertools.count(91)


def _frame(*fields) -> bytes:
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack("!I", len(body)) + body


def _history_request(req_id: int) -> bytes:
    return _frame(20, req_id, 0, "AAPL", "STK", "", "", "", "", "SMART", "", "USD", "", "", 0, "", "1 min", "1 D",
                  0, "TRADES", 1, 0, "")


class _SlowReader(threading.Thread):
    """Sends history requests at ``rate``/s and never reads; notes when the gateway closes it."""

    def __init__(self, port: int, rate: float, stop: threading.Event):
        super().__init__(name="slow-reader", daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        text = b"v157..178"
        self.sock.sendall(b"API\0" + struct.pack("!I", len(text)) + text + _frame(71, 2, next(_ids) + 500, ""))
        self.rate, self.stop, self.sent = rate, stop, 0
        self.dropped_after: float | None = None
        self.started_at = time.monotonic()

    def run(self) -> None:
        tick = threading.Event()          # never set: its wait() is the send cadence
        while not self.stop.is_set():
            try:
                self.sock.sendall(_history_request(1000 + self.sent))
            except OSError:               # reset or closed by the gateway: it dropped us
                self.dropped_after = time.monotonic() - self.started_at
                return
            self.sent += 1
            tick.wait(1 / self.rate)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _round_trips(session, seconds: float) -> list[float]:
    """reqCurrentTime every 50 ms for ``seconds``; each answer's round trip in ms (a missing answer
    counts as 5000 ms)."""
    got = threading.Event()
    session.events.currentTime.subscribe(lambda _t: got.set())
    out: list[float] = []
    end = time.monotonic() + seconds
    cadence = threading.Event()
    while time.monotonic() < end:
        got.clear()
        t0 = time.perf_counter()
        session.send(lambda c: c.reqCurrentTime())
        answered = got.wait(5.0)
        out.append((time.perf_counter() - t0) * 1000 if answered else 5000.0)
        cadence.wait(0.05)
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(quick: bool = False, seconds: float | None = None) -> list[Row]:
    from addin.ib.session import Session

    duration = seconds if seconds is not None else (3.0 if quick else 30.0)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "addin.paper", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        session = Session("127.0.0.1", port, next(_ids))
        wait_until(lambda: _connects(session), 30, "ibxl paper to accept a connection", 0.1)
        alone = _round_trips(session, min(5.0, duration / 3))
        before = rss_bytes(proc.pid) / MB
        stop = threading.Event()
        reader = _SlowReader(port, rate=40.0, stop=stop)
        reader.start()
        loaded = _round_trips(session, duration)
        after = rss_bytes(proc.pid) / MB
        stop.set()
        reader.join(5)
        reader.close()
        session.disconnect()
    finally:
        proc.terminate()
        proc.wait(10)
    cfg = {"seconds": duration, "requests_sent": reader.sent, "dropped_after_s": reader.dropped_after,
           "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1)}
    growth = after - before
    return [
        Row("slow_reader", f"gateway RSS growth, {duration:g} s of a non-reading client requesting history", "MB",
            growth, "RSS before it", before, target="bounded (< 50 MB)", status=judged(growth < 50), extra=cfg),
        Row("slow_reader", "another client's reqCurrentTime p50 meanwhile", "ms", _pct(loaded, 0.5),
            "same, no slow reader", _pct(alone, 0.5), extra=cfg),
        Row("slow_reader", "another client's reqCurrentTime p99 meanwhile", "ms", _pct(loaded, 0.99),
            "same, no slow reader", _pct(alone, 0.99), target="< 500 ms", status=judged(_pct(loaded, 0.99) < 500),
            extra=cfg),
        Row("slow_reader", "slow reader dropped by the gateway after (the run length: not dropped)", "s",
            reader.dropped_after if reader.dropped_after is not None else duration, "run length", duration,
            note="" if reader.dropped_after is not None else "not dropped within the run", extra=cfg),
        Row("slow_reader", "round trips measured meanwhile", "count", float(len(loaded)), "at 50 ms cadence",
            duration / 0.05, better="higher", note=f"mean {statistics.fmean(loaded):.1f} ms", extra=cfg),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connects(session) -> bool:
    try:
        session.connect(timeout=2)
        return True
    except Exception:
        return False
