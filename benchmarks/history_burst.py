"""History burst: wall seconds for 100 distinct small-bar requests (60 S of 5-second TRADES bars,
25 per instrument, ends a minute apart) fired at once from 100 threads, against the theoretical
minimum that IB's small-bar pacing rules allow (``addin.market.history.pacing_lower_bound``: exact
windows, zero latency). Both pacing clocks (ibxl's scheduler and the gateway's rule checker) run
``RATE`` times faster so the run takes seconds, not the real ten minutes. The gateway's checker is
the judge: any error 162 or 100 fails the run.

Target (moved here from tests/test_history.py, where a loaded machine made a wall-clock bound flaky):
elapsed <= 1.4 x bound + 2 s, i.e. the scheduler wastes little time beyond the rules.
"""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime, timedelta

from .gateway import GatewayProcess
from .report import Row, judged

RATE = 100.0
SYMBOLS = ("AAPL", "MSFT", "GOOG", "SPY")


def run(quick: bool = False) -> list[Row]:
    from addin.ib.session import Session
    from addin.market.history import History, pacing_lower_bound

    n = 40 if quick else 100
    with GatewayProcess(pacing_clock_rate=RATE) as gw:
        session = Session("127.0.0.1", gw.port, 301)
        session.connect()
        try:
            history = History(session, pacing_clock_rate=RATE)
            # The gateway's clock is the wall clock (speed 1); 200 minutes back every bar is complete.
            base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=200)
            asks = [(SYMBOLS[k % 4], base - timedelta(minutes=k // 4)) for k in range(n)]
            for sym in SYMBOLS:        # qualify outside the small-bar rules, so the burst is only the n
                history.bars(sym, "1800 S", "1 min", "TRADES", use_rth=False, end=base)
            bound = pacing_lower_bound([((s, "TRADES"), "TRADES", (s, e)) for s, e in asks], rate=RATE)
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
                list(pool.map(lambda a: history.bars(a[0], "60 S", "5 secs", "TRADES", use_rth=False, end=a[1]),
                              asks))
            elapsed = time.monotonic() - t0
        finally:
            session.disconnect()
    ok = elapsed <= bound * 1.4 + 2.0
    extra = {"requests": n, "pacing_clock_rate": RATE, "max_scheduler_delay_s": history.stats["max_delay"]}
    return [Row("history_burst", f"{n} small-bar requests at once", "s", elapsed, "pacing rules' lower bound",
                bound, target="<= 1.4 x bound + 2 s", status=judged(ok), extra=extra)]

