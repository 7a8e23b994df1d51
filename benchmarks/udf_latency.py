"""UDF latency: the longest time one worksheet function call held the calling thread (Excel's
calculation thread), with the paper gateway answering every request ``DELAY`` seconds late.

Scenario (full): a sheet of 100 cold IB_QUOTE cells (20 synthetic instruments never asked for before
x 5 fields) and one IB_HISTORY of 5-second bars over 49 hours (IB's step table splits it into 50
paced requests; both pacing clocks run ``RATE`` times faster, as in tests/test_history.py). Excel is
``benchmarks.sinks.FormulaBook``: every cell is evaluated once, one after another as Excel does, then
the recalc-only pump recalculates the cells whose answers came in until every cell shows its number
or table; every evaluation is timed (``time.perf_counter``).

Peer, same run, same gateway, a fresh session (nothing cached either): the same calls through the
blocking path the functions had before: ``WorkbookSide.hold_quotes`` + ``wait_quote`` (up to
``first_quote_wait`` = 2 s for a new line's first price) per cell and a synchronous ``History.bars``.

Quick: 15 cells (3 instruments x 5 fields), a 7-request history, answers 0.3 s late.
Target: < 50 ms.
"""

from __future__ import annotations

import functools
import os
import time

from .gateway import GatewayProcess
from .report import Row, judged
from .sinks import FormulaBook

RATE = 100.0
FIELDS = ("bid", "ask", "last", "bid size", "price")


def _sheet(symbols: list[str], history: tuple) -> tuple[FormulaBook, list[tuple[str, str]]]:
    import udfs
    book = FormulaBook({"Quotes": []})
    cells = []
    for c, field in enumerate(FIELDS):
        for r, symbol in enumerate(symbols):
            address = f"{'BCDEF'[c]}{r + 2}"
            book.put("Quotes", address, f'=IB_QUOTE("{symbol}","{field}")',
                     functools.partial(udfs.IB_QUOTE, symbol, field, caller=("Quotes", address)))
            cells.append(("Quotes", address))
    text, duration, bar_size, what, use_rth = history
    book.put("Quotes", "H2", f'=IB_HISTORY("{text}","{duration}","{bar_size}","{what}",{use_rth})',
             functools.partial(udfs.IB_HISTORY, text, duration, bar_size, what, use_rth, caller=("Quotes", "H2")))
    cells.append(("Quotes", "H2"))
    return book, cells


def _filled(value) -> bool:
    return not (isinstance(value, str) and value.startswith("#IBXL: "))


def _nonblocking(port: int, symbols: list[str], history: tuple) -> dict:
    from addin.app.runtime import Runtime, set_runtime
    from addin.excel.pump import Pump
    rt = Runtime("127.0.0.1", port, 61, max_lines=200, pacing_clock_rate=RATE)
    rt.connect()
    previous = set_runtime(rt)
    try:
        book, cells = _sheet(symbols, history)
        t0 = time.monotonic()
        for sheet, address in cells:                  # Excel's first calculation
            book.evaluate(sheet, address)
        first_pass = book.longest
        pump = Pump(rt.board, book, registry=rt.registry, watchlist=None, orders=None, interval=0.05)
        pump.start()
        try:
            done = pump.wait_for(lambda: all(_filled(book.shown[c]) for c in cells), 120)
        finally:
            pump.stop()
        return {"longest": book.longest, "first_pass_longest": first_pass, "all_filled": done,
                "filled_s": time.monotonic() - t0, "evaluations": sum(book.evaluations.values()),
                "history_rows": len(book.shown[cells[-1]]) - 1 if isinstance(book.shown[cells[-1]], list) else 0}
    finally:
        set_runtime(previous)
        rt.close()


def _blocking(port: int, symbols: list[str], history: tuple) -> dict:
    from addin.app.runtime import Runtime
    rt = Runtime("127.0.0.1", port, 62, max_lines=200, pacing_clock_rate=RATE, first_quote_wait=2.0)
    rt.connect()
    longest, t0 = 0.0, time.monotonic()
    try:
        for c, _field in enumerate(FIELDS):
            for r, symbol in enumerate(symbols):
                s = time.perf_counter()
                [key] = rt.hold_quotes([symbol], (None, "Quotes", f"{'BCDEF'[c]}{r + 2}"))
                rt.wait_quote(key)
                longest = max(longest, time.perf_counter() - s)
        s = time.perf_counter()
        text, duration, bar_size, what, use_rth = history
        rows = len(rt.history.bars(text, duration, bar_size, what, use_rth))
        longest = max(longest, time.perf_counter() - s)
        return {"longest": longest, "total_s": time.monotonic() - t0, "history_rows": rows}
    finally:
        rt.close()


def run(quick: bool = False) -> list[Row]:
    os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")     # udfs imports xlwings
    symbols = [f"SIM{i:04d}" for i in range(1, (4 if quick else 21))]
    delay = 0.3 if quick else 1.0
    # 5-second bars: 49 hours is 50 requests, 6 hours 7 (IB's step table, addin/protocol/historical.py)
    history = ("AAPL", "21600 S" if quick else "176400 S", "5 secs", "MIDPOINT", False)
    with GatewayProcess(synthetic=100, max_lines=400, stream_interval=0.05, account_interval=5.0,
                        pacing_clock_rate=RATE) as gw:
        gw.call("delay_answers", delay)
        ours = _nonblocking(gw.port, symbols, history)
        peer = _blocking(gw.port, [f"SIM{i:04d}" for i in range(41, 41 + len(symbols))], history)
    cells = len(symbols) * len(FIELDS)
    extra = {"quote_cells": cells, "answer_delay_s": delay, "history": " ".join(map(str, history)),
             "all_cells_filled": ours["all_filled"], "seconds_until_all_filled": round(ours["filled_s"], 2),
             "evaluations": ours["evaluations"], "history_rows": ours["history_rows"],
             "first_pass_longest_ms": round(ours["first_pass_longest"] * 1000, 2),
             "peer_total_s": round(peer["total_s"], 2), "peer_history_rows": peer["history_rows"]}
    value = ours["longest"] * 1000
    ok = value < 50 and ours["all_filled"]
    return [Row("udf_latency", f"longest UDF call: {cells} cold IB_QUOTE + {history[1]} IB_HISTORY, IB {delay} s late",
                "ms", value, "blocking UDFs (wait_quote + synchronous History.bars)", peer["longest"] * 1000,
                target="< 50 ms", status=judged(ok),
                note="" if ours["all_filled"] else "not every cell filled in within 120 s", extra=extra)]
