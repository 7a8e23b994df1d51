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
rectangle": checked exactly per flush (each WriteRecord names its flush; the board the pump reads
is wrapped to keep the changes each flush took): the writes of a flush are pairwise disjoint and
share no edge, each carries a changed cell, and every changed cell is inside one (_rectangles_ok).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time
from typing import TypedDict

from .gateway import GatewayProcess, wait_until
from .report import Row, judged, not_measured

PER_LINE = 2.0                       # ticks per second per line offered by the firehose
COLUMNS = ("Bid", "Ask", "Last")
TICK_OF = {"Bid": 1, "Ask": 2, "Last": 4}
_ids = itertools.count(61)


class _PumpRun(TypedDict):
    """One measured window of the pump: latencies in seconds (None without samples)."""
    p50: float | None
    p99: float | None
    max: float | None
    writes: int
    cells: int
    ok: bool
    problems: list[str]
    flushes: int
    samples: int


class _NaiveRun(TypedDict):
    """One measured window of the naive writer: latencies in seconds (None without samples)."""
    p50: float | None
    p99: float | None
    max: float | None
    writes: int
    samples: int


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


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


class RecordingBoard:
    """The QuoteBoard as the pump sees it, keeping what each ``changes_since`` call returned, by the
    flush that will write it (``pump.collecting_for``; a flush may take changes in two steps, its
    preparation and the flush itself): ``changes[k]`` = what flush k had to write, latest wins."""

    def __init__(self, board):
        self.board = board
        self.pump = None
        self.changes: dict[int, dict] = collections.defaultdict(dict)

    def changes_since(self, version: int):
        version, changes = self.board.changes_since(version)
        self.changes[self.pump.collecting_for].update(changes)
        return version, changes

    def __getattr__(self, name):
        return getattr(self.board, name)


def _touch(a: tuple, b: tuple) -> bool:
    """Rectangles (top, left, bottom, right) overlap or share an edge (they are not disjoint and apart)."""
    rows_meet = a[0] <= b[2] + 1 and b[0] <= a[2] + 1
    cols_meet = a[1] <= b[3] + 1 and b[1] <= a[3] + 1
    rows_overlap = a[0] <= b[2] and b[0] <= a[2]
    cols_overlap = a[1] <= b[3] and b[1] <= a[3]
    return (rows_overlap and cols_meet) or (cols_overlap and rows_meet)


def _rectangles_ok(book, records, changes: dict[int, dict], row_of: dict[str, int]) -> tuple[int, int, list[str]]:
    """(writes, cells, problems) of the pump's flushes, checked exactly from the sink's log, the
    pump's WriteRecords (each names its flush) and the changes each flush took from the board:

    - the sink's writes are the pump's, one to one;
    - per flush, writes are pairwise disjoint and share no edge on a sheet (else one rectangle);
    - every write carries at least one cell whose value changed;
    - after the first paint, every cell whose quote value differs from what the sheet showed is
      inside a write of that flush, with the quote's value.
    An empty ``problems`` list means "exactly one write per changed rectangle"."""
    writes = [args for name, args, _ in book.log if name == "write"]
    problems: list[str] = []
    if len(writes) != len(records) or any(
            (a[0], a[1], a[2], len(a[3]), len(a[3][0])) != (r.sheet, r.top, r.left, r.rows, r.cols)
            for a, r in zip(writes, records)):
        problems.append(f"sink writes ({len(writes)}) are not the pump's ({len(records)})")
        return len(writes), 0, problems
    cells = sum(r.rows * r.cols for r in records)
    by_flush: dict[int, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(records):
        by_flush[r.flush].append(i)
    shown: dict[tuple[int, int], object] = {}          # the Watchlist as the sink holds it
    # flush 1 is the first paint (bind, every key); flush k >= 2 took changes[k] from the board
    for flush in range(1, max(max(changes, default=1), max(by_flush, default=1)) + 1):
        idx = by_flush.get(flush, [])
        rects = [(records[i].sheet, records[i].top, records[i].left, records[i].top + records[i].rows - 1,
                  records[i].left + records[i].cols - 1) for i in idx]
        for x, y in itertools.combinations(rects, 2):
            if x[0] == y[0] and _touch(x[1:], y[1:]):
                problems.append(f"flush {flush}: writes {x[1:]} and {y[1:]} overlap or touch")
        written: dict[tuple[int, int], object] = {}
        for i in idx:
            _, top, left, values = writes[i]
            cells_of = {(top + a, left + b): v for a, row in enumerate(values) for b, v in enumerate(row)}
            if all(shown.get(k) == v for k, v in cells_of.items()):
                problems.append(f"flush {flush}: write at R{top}C{left} changes nothing")
            written.update(cells_of)
        if flush >= 2:
            for key, q in changes.get(flush, {}).items():
                row = row_of.get(key)
                for j, name in enumerate(COLUMNS):
                    v = getattr(q, name.lower())
                    if row is None or v == shown.get((row, 2 + j)):
                        continue
                    if written.get((row, 2 + j), object()) != v:
                        problems.append(f"flush {flush}: changed cell R{row}C{2 + j} ({v}) not written")
        shown.update(written)
    return len(writes), cells, problems


def pump_window(gw, source_board, keys: list[str], con_of_row: dict[int, int], interval: float,
                window: float) -> _PumpRun:
    """One measured window of a Pump painting ``keys`` (Watchlist rows 2..) from ``source_board`` (the
    QuoteBoard of an in-process MarketData, or a service client's pushed board) while the gateway's
    recorded firehose offers ``len(keys) * PER_LINE`` ticks per second."""
    from addin.excel.pump import Pump, WriteRecord
    from benchmarks.sinks import COM_CALL_COST, CountingBook
    rows_of = {k: r + 2 for r, k in enumerate(keys)}
    book = CountingBook({"Watchlist": [["Symbol", *COLUMNS]] + [[k] for k in keys]},
                        cost=COM_CALL_COST, clock=time.perf_counter)
    gw.call("firehose", rate=len(keys) * PER_LINE, record=True)
    board = RecordingBoard(source_board)
    records: list[WriteRecord] = []
    w = board.pump = Pump(board, book, interval=interval, resolve=lambda t: t, orders=None, on_write=records.append)
    w.start()
    since = time.perf_counter() + 0.5        # skip the first paint
    time.sleep(window + 0.5)                  # the measured window (wall time)
    w.stop()
    sends = gw.call("sent_ticks")
    gw.call("firehose_stop")
    lat = _latencies(book, sends, con_of_row, since)
    writes, cells, problems = _rectangles_ok(book, records, board.changes, rows_of)
    return _PumpRun(p50=_pct(lat, 50), p99=_pct(lat, 99), max=max(lat) if lat else None, writes=writes, cells=cells,
                    ok=not problems, problems=problems[:5], flushes=max(1, w.stats.busy_flushes), samples=len(lat))


def run(quick: bool = False) -> list[Row]:
    try:
        from addin.excel.pump import DEFAULT_INTERVAL, MIN_INTERVAL
        from benchmarks.sinks import COM_CALL_COST, CountingBook
    except ImportError as exc:
        return [not_measured("tick_to_cell", "tick-to-cell p99", "ms", "naive writer", f"module missing: {exc}")]
    from addin.ib.session import Session
    from addin.market.quotes import MarketData

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
                wait_until(lambda n=n: gw.lines() >= n, 120, f"{n} lines", 0.05)
                con_of_row = {r + 2: contracts[r].conId for r in range(n)}
                rows_of = {keys[r]: r + 2 for r in range(n)}
                for interval in (DEFAULT_INTERVAL, MIN_INTERVAL):
                    pump = pump_window(gw, md.board, keys[:n], con_of_row, interval, window)
                    book = CountingBook({"Watchlist": [["Symbol", *COLUMNS]] + [[k] for k in keys[:n]]},
                                        cost=COM_CALL_COST, clock=time.perf_counter)
                    gw.call("firehose", rate=n * PER_LINE, record=True)
                    w = NaiveWriter(md.board, book, rows_of, interval).start()
                    since = time.perf_counter() + 0.5        # skip the first paint
                    time.sleep(window + 0.5)                  # the measured window (wall time)
                    w.stop()
                    sends = gw.call("sent_ticks")
                    gw.call("firehose_stop")
                    lat = _latencies(book, sends, con_of_row, since)
                    naive = _NaiveRun(p50=_pct(lat, 50), p99=_pct(lat, 99), max=max(lat) if lat else None,
                                      writes=book.counts["write"], samples=len(lat))
                    tag = f"{n} subs, {interval * 1000:.0f} ms flush"
                    limit = interval + 0.020
                    extra = {"subscriptions": n, "interval_s": interval, "com_cost_s": COM_CALL_COST,
                             "offered_ticks_per_s": n * PER_LINE, "pump": pump, "naive": naive}
                    rows.append(Row("tick_to_cell", f"p50 latency, {tag}", "ms", _ms(pump["p50"]), "naive writer",
                                    _ms(naive["p50"]), extra=extra))
                    rows.append(Row("tick_to_cell", f"p99 latency, {tag}", "ms", _ms(pump["p99"]), "naive writer",
                                    _ms(naive["p99"]),
                                    target=f"<= {limit * 1000:.0f} ms" if n == max(sizes) else "",
                                    status=(judged(pump["p99"] is not None and pump["p99"] <= limit)
                                            if n == max(sizes) else "info"), extra=extra))
                    rows.append(Row("tick_to_cell", f"max latency, {tag}", "ms", _ms(pump["max"]), "naive writer",
                                    _ms(naive["max"]), extra=extra))
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
