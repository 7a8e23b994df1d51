"""Tick to cell: latency from the gateway's send time of a tick to the end of the write call that
carries its value into a cell, p50/p99/max, at 100, 500 and 1000 subscriptions, for the pump at
its default and its fastest flush interval, against a naive writer that writes each changed cell
with its own call; plus writes per flush and cells per write.

How: a paper gateway in a child process (synthetic universe SIM0001..) with a paced, recorded
firehose (``lines * PER_LINE`` ticks per second over bid/ask/last; each tick's send time in
``perf_counter_ns``, CLOCK_MONOTONIC, the same clock as this process's ``perf_counter``). ibxl's
Session -> MarketData -> QuoteBoard -> Pump -> ``CountingBook`` sink charging COM_CALL_COST
(1 ms, stated) per call, its clock ``time.perf_counter``. A written cell value (sheet row ->
conId, column -> tick type) is matched to the latest send of that (conId, tick type, price) no
later than the write's end; only cells whose value changed count. "One write per changed
rectangle": every write call of the pump carries at least one changed cell and no two writes of
one flush touch (checked from the sink's log).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time

from .gateway import GatewayProcess, wait_until
from .report import Row, judged, not_measured

PER_LINE = 2.0                       # ticks per second per line offered by the firehose
COLUMNS = ("Bid", "Ask", "Last")
TICK_OF = {"Bid": 1, "Ask": 2, "Last": 4}
_ids = itertools.count(61)


class NaiveWriter:
    """The peer: every interval, each changed cell written with its own ``book.write`` call."""

    def __init__(self, board, book, rows_of: dict[str, int], interval: float):
        self.board, self.book, self.rows_of, self.interval = board, book, rows_of, interval
        self._stop = threading.Event()
        self._written: dict[tuple[int, int], float] = {}
        self._thread = threading.Thread(target=self._run, name="naive-writer", daemon=True)
        self.flushes = 0

    def start(self):
        self._version = self.board.version
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _run(self):
        fields = {i + 2: c.lower() for i, c in enumerate(COLUMNS)}
        while not self._stop.wait(self.interval):
            self._version, changed = self.board.changes_since(self._version)
            self.flushes += 1
            for key, q in changed.items():
                row = self.rows_of.get(key)
                if row is None:
                    continue
                for col, name in fields.items():
                    v = getattr(q, name)
                    if v is not None and self._written.get((row, col)) != v:
                        self._written[(row, col)] = v
                        self.book.write("Watchlist", row, col, [[v]])


def _latencies(book, sends, con_of_row: dict[int, int], since: float) -> list[float]:
    """Seconds from send to write end for every changed cell written after ``since``."""
    index: dict[tuple, list[int]] = collections.defaultdict(list)
    for t in sends:
        index[(t.con_id, t.tick_type, t.price)].append(t.t_ns)
    last: dict[tuple[int, int], object] = {}
    out = []
    for name, args, ended in list(book.log):
        if name != "write":
            continue
        sheet, top, left, values = args
        for i, row_values in enumerate(values):
            row = top + i
            con = con_of_row.get(row)
            for j, v in enumerate(row_values):
                col = left + j
                if last.get((row, col)) == v:
                    continue
                last[(row, col)] = v
                if con is None or ended < since or not 2 <= col < 2 + len(COLUMNS):
                    continue
                times = index.get((con, TICK_OF[COLUMNS[col - 2]], v))
                if not times:
                    continue
                k = bisect.bisect_right(times, int(ended * 1e9)) - 1
                if k >= 0:
                    out.append(ended - times[k] / 1e9)
    return out


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _rectangles_ok(book, flush_gap: float) -> tuple[int, int, bool]:
    """(writes, cells, no two writes of one flush overlap or touch) from the sink's log."""
    writes = [(args, ended) for name, args, ended in book.log if name == "write"]
    cells = sum(len(a[3]) * len(a[3][0]) for a, _ in writes if a[3])
    ok = True
    groups: list[list] = []
    for a, ended in writes:
        if groups and ended - groups[-1][-1][1] < flush_gap:
            groups[-1].append((a, ended))
        else:
            groups.append([(a, ended)])
    for g in groups:
        rects = [(a[1], a[2], a[1] + len(a[3]) - 1, a[2] + len(a[3][0]) - 1) for a, _ in g]
        for r1, r2 in itertools.combinations(rects, 2):
            if r1[0] <= r2[2] + 1 and r2[0] <= r1[2] + 1 and r1[1] <= r2[3] + 1 and r2[1] <= r1[3] + 1:
                if not (r1[2] + 1 == r2[0] or r2[2] + 1 == r1[0]) or (r1[1], r1[3]) == (r2[1], r2[3]):
                    ok = False
    return len(writes), cells, ok


def run(quick: bool = False) -> list[Row]:
    try:
        from addin.excel.pump import DEFAULT_INTERVAL, MIN_INTERVAL, Pump
        from addin.excel.sinks import COM_CALL_COST, CountingBook
    except ImportError as exc:
        return [not_measured("tick_to_cell", "tick-to-cell p99", "ms", "naive writer", f"module missing: {exc}")]
    from addin.quotes import MarketData
    from addin.session import Session

    sizes = (20,) if quick else (100, 500, 1000)
    window = 1.5 if quick else 3.0
    rows: list[Row] = []
    with GatewayProcess(synthetic=max(sizes), max_lines=max(sizes) + 10, max_rate=100_000) as gw:
        contracts = gw.contracts(max(sizes))
        session = Session("127.0.0.1", gw.port, next(_ids), rate=45)
        session.connect()
        md = MarketData(session, max_lines=max(sizes) + 10)
        keys: list[str] = []
        try:
            for n in sizes:
                keys += [md.subscribe(c) for c in contracts[len(keys):n]]
                wait_until(lambda: gw.lines() >= n, 120, f"{n} lines", 0.05)
                con_of_row = {r + 2: contracts[r].conId for r in range(n)}
                rows_of = {keys[r]: r + 2 for r in range(n)}
                for interval in (DEFAULT_INTERVAL, MIN_INTERVAL):
                    for writer in ("pump", "naive"):
                        book = CountingBook({"Watchlist": [["Symbol", *COLUMNS]] + [[k] for k in keys[:n]]},
                                            cost=COM_CALL_COST, clock=time.perf_counter)
                        gw.call("firehose", rate=n * PER_LINE, record=True)
                        if writer == "pump":
                            w = Pump(md.board, book, interval=interval, resolve=lambda t: t, orders=None)
                            w.start()
                        else:
                            w = NaiveWriter(md.board, book, rows_of, interval).start()
                        since = time.perf_counter() + 0.5        # skip the first paint
                        time.sleep(window + 0.5)                  # the measured window (wall time)
                        w.stop()
                        sends = gw.call("sent_ticks")
                        gw.call("firehose_stop")
                        lat = _latencies(book, sends, con_of_row, since)
                        p50, p99, mx = _pct(lat, 50), _pct(lat, 99), max(lat) if lat else None
                        if writer == "pump":
                            writes, cells, ok = _rectangles_ok(book, interval / 2)
                            flushes = max(1, w.stats.busy_flushes)
                            pump = dict(p50=p50, p99=p99, max=mx, writes=writes, cells=cells, ok=ok,
                                        flushes=flushes, samples=len(lat))
                        else:
                            naive = dict(p50=p50, p99=p99, max=mx, writes=book.counts["write"], samples=len(lat))
                    tag = f"{n} subs, {interval * 1000:.0f} ms flush"
                    ms = lambda v: None if v is None else v * 1000
                    limit = interval + 0.020
                    extra = {"subscriptions": n, "interval_s": interval, "com_cost_s": COM_CALL_COST,
                             "offered_ticks_per_s": n * PER_LINE, "pump": pump, "naive": naive}
                    rows.append(Row("tick_to_cell", f"p50 latency, {tag}", "ms", ms(pump["p50"]), "naive writer",
                                    ms(naive["p50"]), extra=extra))
                    rows.append(Row("tick_to_cell", f"p99 latency, {tag}", "ms", ms(pump["p99"]), "naive writer",
                                    ms(naive["p99"]),
                                    target=f"<= {limit * 1000:.0f} ms" if n == max(sizes) else "",
                                    status=(judged(pump["p99"] is not None and pump["p99"] <= limit)
                                            if n == max(sizes) else "info"), extra=extra))
                    rows.append(Row("tick_to_cell", f"max latency, {tag}", "ms", ms(pump["max"]), "naive writer",
                                    ms(naive["max"]), extra=extra))
                    rows.append(Row("tick_to_cell", f"writes per flush, {tag}", "writes",
                                    pump["writes"] / pump["flushes"], "naive writer",
                                    naive["writes"] / pump["flushes"], extra=extra))
                    rows.append(Row("tick_to_cell", f"cells per write, {tag}", "cells",
                                    pump["cells"] / max(1, pump["writes"]), "naive writer", 1.0, better="higher",
                                    target="one write per changed rectangle", status=judged(pump["ok"]),
                                    extra=extra))
        finally:
            md.close(timeout=0)
            session.disconnect()
    return rows
