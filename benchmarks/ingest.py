"""Tick ingest: ticks per second and CPU seconds per million ticks, from the socket to where each
client keeps its quotes, for ibxl (Session -> MarketData -> QuoteBoard), a bare ibapi EWrapper that
does nothing, and ib_async's Ticker path (Wrapper.tickPrice -> Ticker, pendingTickersEvent).

How: one paper gateway in a child process (its work runs on the other core and is not in our CPU
time) streams firehose ticks to ``lines`` lines of one client at a time: TICK_PRICE messages
round-robin, in bursts of CHUNK ticks sent as fast as the socket takes them, each followed by an
end-marker bid on the last line; the next burst starts once the client shows the marker. Per
client: wall seconds and ``time.process_time`` (every thread of this process: for ibapi clients
its reader and decoder threads) over ``count`` ticks. A "tick" is one TICK_PRICE message, which
ibapi and ib_async both turn into a price and a size update.

Why bursts and not one endless stream: ibapi's EReader reads everything the socket holds in 4 KiB
pieces joined with ``allbuf += buf`` and then slices the whole remaining buffer once per message
(``comm.read_msg``): quadratic in the bytes pending. Offered more than it decodes, the kernel
buffer grows to megabytes, the reader holds the GIL copying them, and ibapi clients (bare and
ibxl) stall to a few thousand ticks per second, at random. A burst of 500 ticks (~20 KB) keeps
that copying under ~5 % of the decode time, so the figure is the client's sustained rate.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from ibapi.client import EClient
from ibapi.wrapper import EWrapper

from .gateway import GatewayProcess, wait_until
from .report import Row, judged

_ids = itertools.count(41)
CHUNK = 500                 # ticks per firehose burst (see the module doc: why bursts)
ENDS = (0.0001, 0.0002)     # end-marker bids, alternating so each burst's marker is new


class _Bare(EWrapper):
    """ibapi's EWrapper doing nothing per tick but a float compare to spot the end marker."""

    def __init__(self):
        super().__init__()
        self.last_req = -1
        self.last_bid = None

    def tickPrice(self, reqId, tickType, price, attrib):
        if reqId == self.last_req and tickType == 1:
            self.last_bid = price

    def tickSize(self, reqId, tickType, size):
        pass

    def tickString(self, reqId, tickType, value):
        pass

    def tickReqParams(self, *args):
        pass

    def marketDataType(self, *args):
        pass

    def error(self, *args, **kwargs):
        pass


def _measure(gw: GatewayProcess, count: int, shows, pause=lambda: time.sleep(0.0002)) -> tuple[float, float]:
    """Send ``count`` ticks in bursts of CHUNK, each started when the client has shown the last
    one's end marker (``shows(end)``; ``pause()`` between checks). Returns (wall s, CPU s)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(max(1, count // CHUNK)):
        end = ENDS[i % 2]
        gw.call("firehose", count=CHUNK, end=end)
        deadline = time.monotonic() + 60
        while not shows(end):
            if time.monotonic() > deadline:
                raise TimeoutError("the client never showed the firehose's end marker")
            pause()
    t1, cpu1 = time.perf_counter(), time.process_time()
    gw.call("firehose_stop")
    return t1 - t0, cpu1 - cpu0


def run_bare(gw: GatewayProcess, contracts, count: int) -> tuple[float, float]:
    wrapper = _Bare()
    client = EClient(wrapper)
    client.connect("127.0.0.1", gw.port, next(_ids))
    thread = threading.Thread(target=client.run, name="bare-ibapi", daemon=True)
    thread.start()
    try:
        wait_until(lambda: client.isConnected() and client.serverVersion(), 10, "bare ibapi connection")
        for i, c in enumerate(contracts, start=1):
            client.reqMktData(i, c, "", False, False, [])
        wrapper.last_req = len(contracts)
        wait_until(lambda: gw.lines() >= len(contracts), 60, "bare ibapi lines", 0.05)
        return _measure(gw, count, lambda end: wrapper.last_bid == end)
    finally:
        client.disconnect()          # ibapi's run() may raise on its way out after this; harmless
        thread.join(5)


def run_ibxl(gw: GatewayProcess, contracts, count: int) -> tuple[float, float]:
    from addin.ib.session import Session
    from addin.market.quotes import MarketData

    session = Session("127.0.0.1", gw.port, next(_ids), rate=45)
    session.connect()
    md = MarketData(session, max_lines=len(contracts) + 10)
    try:
        keys = [md.subscribe(c) for c in contracts]
        wait_until(lambda: gw.lines() >= len(contracts), 120, "ibxl lines", 0.05)
        board, last = md.board, keys[-1]

        def shows(end):                   # as cheap as the peers' checks: one field, no BoardQuote built
            return board.field(last, "bid") == end

        return _measure(gw, count, shows)
    finally:
        md.close(timeout=0)
        session.disconnect()


def run_ib_async(gw: GatewayProcess, contracts, count: int) -> tuple[float, float]:
    from ib_async import IB, Contract
    from ib_async.ib import StartupFetch

    asyncio.set_event_loop(asyncio.new_event_loop())
    ib = IB()
    ib.connect("127.0.0.1", gw.port, clientId=next(_ids), fetchFields=StartupFetch(0))
    try:
        tickers = [ib.reqMktData(Contract(conId=c.conId, symbol=c.symbol, secType=c.secType,
                                          exchange=c.exchange, currency=c.currency)) for c in contracts]
        while gw.lines() < len(contracts):   # ib_async's throttle sends on the loop: run it
            ib.sleep(0.05)
        last = tickers[-1]
        return _measure(gw, count, lambda end: last.bid == end, pause=lambda: ib.sleep(0.0002))
    finally:
        ib.disconnect()
        asyncio.get_event_loop().close()


def profile_ibxl(gw: GatewayProcess, contracts, count: int, top: int = 12) -> list[str]:
    """Where ibxl's ingest time goes: cProfile in every thread the ibxl client starts (reader,
    decoder, pacer), over ``count`` firehose ticks; the ``top`` functions by own time, as
    "share% function (file:line)" of the total profiled time."""
    import cProfile
    import pstats
    import sys

    profilers: list[cProfile.Profile] = []

    def hook(frame, event, arg):          # first event in a new thread: profile that thread
        sys.setprofile(None)
        prof = cProfile.Profile()
        profilers.append(prof)
        prof.enable()

    threading.setprofile(hook)
    try:
        run_ibxl(gw, contracts, count)
    finally:
        threading.setprofile(None)
        for prof in profilers:
            try:
                prof.disable()
            except Exception:
                pass
    stats = None
    for prof in profilers:
        try:
            prof.create_stats()
        except Exception:
            continue
        if prof.stats:
            stats = pstats.Stats(prof) if stats is None else stats.add(prof) or stats
    if stats is None:
        return []
    # Blocking calls (lock waits, recv, sleeps) are idle time, not work: left out of the shares.
    idle = ("acquire", "recv", "wait", "sleep", "select", "poll")
    # typeshed's pstats.Stats does not declare the .stats table that load_stats sets
    table = stats.stats  # type: ignore[attr-defined]
    work = {k: v for k, v in table.items() if not any(w in k[2] for w in idle)}
    total = sum(v[2] for v in work.values()) or 1.0
    rows = sorted(work.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [f"{100 * v[2] / total:.0f}% {name} ({file.rsplit('/', 2)[-1] if '/' in file else file}:{line})"
            for (file, line, name), v in rows]


def run(quick: bool = False) -> list[Row]:
    lines = 20 if quick else 100
    count = 10_000 if quick else 200_000
    results = {}
    with GatewayProcess(synthetic=lines, max_lines=lines + 10, max_rate=100_000, stream_interval=0.25) as gw:
        contracts = gw.contracts(lines)
        for name, fn in (("bare ibapi", run_bare), ("ibxl", run_ibxl), ("ib_async", run_ib_async)):
            wait_until(lambda: gw.lines() == 0, 30, "the previous client's lines to close", 0.05)
            seconds, cpu = fn(gw, contracts, count)
            results[name] = (count / seconds, cpu / count * 1e6, seconds)
        profile: list[str] = []
        if results["ibxl"][0] < results["ib_async"][0]:
            wait_until(lambda: gw.lines() == 0, 30, "the previous client's lines to close", 0.05)
            profile = profile_ibxl(gw, contracts, min(count, 20_000))
    ibxl, bare, ib_async = results["ibxl"], results["bare ibapi"], results["ib_async"]
    cfg = {"lines": lines, "ticks": count, "burst": CHUNK}
    why = ("ibxl decodes with addin/ib/fast_reader.py; what is left per tick is CPython's per-message cost from "
           "the socket reader to the QuoteBoard (ib_async: one asyncio loop). Profile of ibxl: "
           + "; ".join(profile[:6])) if profile else ""
    return [
        Row("ingest", "ticks per second, socket to QuoteBoard", "ticks/s", ibxl[0], "ib_async Ticker", ib_async[0],
            better="higher", target=">= ib_async", status=judged(ibxl[0] >= ib_async[0]), note=why,
            extra=dict(cfg, profile=profile)),
        Row("ingest", "ticks per second, socket to QuoteBoard", "ticks/s", ibxl[0], "bare ibapi EWrapper", bare[0],
            better="higher", extra=cfg),
        Row("ingest", "CPU per million ticks", "CPU s", ibxl[1], "ib_async Ticker", ib_async[1], extra=cfg),
        Row("ingest", "CPU per million ticks", "CPU s", ibxl[1], "bare ibapi EWrapper", bare[1], extra=cfg),
    ]
