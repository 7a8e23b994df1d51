"""History to sheet: seconds from the request to the last row written, for 10k and 100k bars
(decode, DataFrame, conversion to cell values, one block write), ibxl's ``History.bars`` against
ib_async's ``reqHistoricalData`` + ``util.df`` path for the same bars.

Bars: BTC (crypto, trades around the clock) 1-minute MIDPOINT bars, so 10k and 100k bars are
7 and 70 requests of IB's 1-day step. Both clients pace their requests at 45 messages per second
(ibxl's pacer spaces them evenly, ib_async lets 45 out at once then waits); the gateway itself adds
no delay (no answer_delay; the small-bar pacing rules do not apply to 1-minute bars). The row
is written to a ``CountingBook`` sink (1 ms per call, one call for the whole block). Figures: total
wall seconds, and "excluding pacing" = total minus the pacer's floor ((requests - 1) / 45 s for
ibxl, the same floor for both clients since each sends at 45 a second).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, timedelta

from .gateway import GatewayProcess
from .report import Row, judged

_ids = itertools.count(101)
RATE = 45


def _values(df) -> list[list]:
    """DataFrame -> rows of cell values (naive UTC datetimes, floats), header first: ibxl's
    column-wise conversion (``addin.excel.book.frame_columns``, numpy), the same for both clients."""
    from addin.excel.book import column_cells, frame_columns

    cols = [c for c in ("open", "high", "low", "close", "volume") if c in df.columns]
    columns = [column_cells(df.index), *frame_columns(df, cols)]
    return [["time", *cols]] + [list(row) for row in zip(*columns)]


def _write(values) -> float:
    from benchmarks.sinks import COM_CALL_COST, CountingBook

    book = CountingBook({"History": [[""]]}, cost=COM_CALL_COST)
    book.write("History", 1, 1, values)
    return time.perf_counter()


def run_ibxl(port: int, minutes: int) -> tuple[float, int, int]:
    from addin.ib.contracts import ContractBook
    from addin.ib.session import Session
    from addin.market.history import History

    session = Session("127.0.0.1", port, next(_ids), rate=RATE)
    session.connect()
    try:
        contracts = ContractBook(session)
        history = History(session, contracts)
        contract = contracts.contract("BTC/USD.PAXOS")
        requests = []
        t0 = time.perf_counter()
        df = history.bars(contract, f"{minutes * 60} S" if minutes < 1440 else f"{minutes // 1440} D",
                          "1 min", "MIDPOINT", use_rth=False, progress=lambda d, n: requests.append(n))
        t1 = _write(_values(df))
        return t1 - t0, len(df), requests[0] if requests else 1
    finally:
        session.disconnect()


def run_ib_async(port: int, minutes: int, end) -> tuple[float, int, int]:
    from ib_async import IB, Crypto, util
    from ib_async.ib import StartupFetch

    asyncio.set_event_loop(asyncio.new_event_loop())
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=next(_ids), fetchFields=StartupFetch(0))
    try:
        contract = Crypto("BTC", "PAXOS", "USD")
        ib.qualifyContracts(contract)
        days = max(1, minutes // 1440)
        t0 = time.perf_counter()

        async def fetch():
            jobs = [ib.reqHistoricalDataAsync(contract, end - timedelta(days=k), "1 D", "1 min", "MIDPOINT",
                                              useRTH=False, formatDate=2) for k in range(days)]
            return await asyncio.gather(*jobs)

        chunks = ib.run(fetch())
        bars = [b for chunk in reversed(chunks) for b in chunk]
        df = util.df(bars).drop_duplicates("date").set_index("date").sort_index()
        t1 = _write(_values(df))
        return t1 - t0, len(df), days
    finally:
        ib.disconnect()
        asyncio.get_event_loop().close()


def run(quick: bool = False) -> list[Row]:
    sizes = (2_000,) if quick else (10_000, 100_000)
    rows = []
    with GatewayProcess(max_rate=100_000) as gw:
        for bars in sizes:
            minutes = -(-bars // 1440) * 1440 if bars >= 1440 else bars
            ours, n_ours, requests = run_ibxl(gw.port, minutes)
            from datetime import datetime
            theirs, n_theirs, _ = run_ib_async(gw.port, minutes, datetime.now(UTC))
            floor = (requests - 1) / RATE
            extra = {"bars_ibxl": n_ours, "bars_ib_async": n_theirs, "requests": requests, "pacing_floor_s": floor}
            rows.append(Row("history_to_sheet", f"{bars:,} bars to a sheet, total", "s", ours, "ib_async util.df",
                            theirs, extra=extra))
            ok = ours - floor < 2.0
            rows.append(Row("history_to_sheet", f"{bars:,} bars to a sheet, excluding pacing", "s", ours - floor,
                            "ib_async util.df", theirs - floor,
                            target="< 2 s" if bars >= 100_000 else "",
                            status=judged(ok) if bars >= 100_000 else "info", extra=extra))
    return rows
