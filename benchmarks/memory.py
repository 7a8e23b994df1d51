"""Memory: resident memory of the ibxl process with 1000 subscriptions streaming (Session ->
MarketData -> QuoteBoard -> Pump -> CountingBook sink), and its growth over a 10-minute run.

The gateway runs in a child process, so the figure is the client's alone (``/proc/self``
VmRSS). Growth = RSS at the end minus RSS after a warm-up minute (caches, the first pump paint and
allocator pools settle there); the peer is the same process's RSS before the first subscription
(the baseline the growth is set against). The stream is the gateway's normal replay (every
``stream_interval``), the load a workbook sees all day.
"""

from __future__ import annotations

import itertools
import time

from .gateway import GatewayProcess, rss_bytes, wait_until
from .report import Row, judged

MB = 1024 * 1024
_ids = itertools.count(81)


def run(quick: bool = False, seconds: float | None = None) -> list[Row]:
    from addin.excel.pump import Pump
    from addin.ib.session import Session
    from addin.market.quotes import MarketData
    from benchmarks.sinks import CountingBook

    lines = 50 if quick else 1000
    duration = seconds if seconds is not None else (6.0 if quick else 600.0)
    warmup = min(60.0, duration / 6)
    samples: list[tuple[float, float]] = []
    with GatewayProcess(synthetic=lines, max_lines=lines + 10, max_rate=100_000, stream_interval=0.1) as gw:
        contracts = gw.contracts(lines)
        before = rss_bytes() / MB
        session = Session("127.0.0.1", gw.port, next(_ids), rate=45)
        session.connect()
        md = MarketData(session, max_lines=lines + 10)
        pump = None
        try:
            keys = [md.subscribe(c) for c in contracts]
            wait_until(lambda: gw.lines() >= lines, 120, f"{lines} lines", 0.1)
            book = CountingBook({"Watchlist": [["Symbol", "Bid", "Ask", "Last", "BidSize", "AskSize", "Volume",
                                                "Updated"]] + [[k] for k in keys]})
            pump = Pump(md.board, book, resolve=lambda t: t, orders=None)
            pump.start()
            t0 = time.monotonic()
            while True:
                now = time.monotonic() - t0
                samples.append((now, rss_bytes() / MB))
                book.log.clear()              # the sink's own call log is the benchmark's, not ibxl's
                if now >= duration:
                    break
                time.sleep(min(5.0, max(0.5, duration / 60)))
            writes = pump.stats.writes
        finally:
            if pump is not None:
                pump.stop()
            md.close(timeout=0)
            session.disconnect()
    start = next(r for t, r in samples if t >= warmup)
    end = samples[-1][1]
    growth = end - start
    cfg = {"lines": lines, "seconds": duration, "warmup_s": warmup, "pump_writes": writes,
           "samples": [(round(t, 1), round(r, 1)) for t, r in samples]}
    return [
        Row("memory", f"resident memory, {lines} subscriptions streaming", "MB", end,
            "same process before subscribing", before, extra=cfg),
        Row("memory", f"RSS growth over {duration / 60:g} min (after {warmup:.0f} s warm-up)", "MB", growth,
            "RSS after warm-up", start, target="< 10 MB in 10 min" if not quick else "",
            status=judged(growth < 10) if not quick else "info", extra=cfg),
    ]
