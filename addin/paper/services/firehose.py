"""Firehose mode of the paper gateway (benchmarks): quote ticks to every live market data line, as
fast as each client's socket takes them, or at a fixed rate, with an optional side table of send
times for latency measurements.

What is sent: TICK_PRICE messages (``tickPrice`` + ``tickSize`` at the client), round-robin over the
live (not delayed) reqMktData lines of every connection, in the order bid, ask, last per line. Prices
are synthetic saw-tooths on the instrument's tick grid, anchored at its current replayed quote:
bid = anchor + (k mod 64) ticks, ask = anchor + (k mod 64 + 65) ticks, last = anchor + (k mod 64 +
32) ticks, where k counts that line's ticks of that field. So a (conId, tick type, price) triple
repeats only every 64 ticks of that line's field, which is what lets a benchmark match a written cell
value to the tick that carried it. Frames are encoded once per line and reused, so the gateway's
cost per tick is a list append; the normal quote stream is paused while a firehose runs (quotes
and fills of the replay would otherwise interleave with the synthetic prices).

Flow control: ``ClientConnection.pause_writing`` / ``resume_writing`` (asyncio's high-water mark of
the socket's send buffer). Unpaced, the firehose sends a batch, lets the loop flush it, and waits
while any client's buffer is above the mark: it never queues more than a batch beyond what the
sockets take, so the rate measured at the client is the client's ingest rate.

End marker: with ``count``, after ``count`` ticks the newest line (the last subscribed) gets one
more bid tick at ``end`` (default :data:`END_PRICE`) and the firehose stops: a client has processed every tick once
that line shows the bid (one connection's messages arrive in order). The replayed quotes stay paused until ``stop``, so
the marker is not overwritten.

Send times: with ``record``, every tick appends a :class:`SentTick` (``time.perf_counter_ns()``:
CLOCK_MONOTONIC on Linux, comparable across processes on one machine) to a bounded side table.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ibapi.ticktype import TickTypeEnum

from ..codec import messages

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Instrument, Quote
    from .marketdata import MarketDataService, Subscription

CYCLE = 64                    # ticks per saw-tooth period of one field of one line
END_PRICE = 0.0001            # the end marker's default bid (no instrument of the paper market trades there)
BATCH = 512                   # ticks queued per loop turn when unpaced
RECORD_LIMIT = 2_000_000      # side-table rows kept (oldest dropped first)
# (tick type, saw-tooth offset in ticks)
_FIELDS = ((TickTypeEnum.BID, 0), (TickTypeEnum.ASK, CYCLE + 1), (TickTypeEnum.LAST, CYCLE // 2))


@dataclass(frozen=True, slots=True)
class SentTick:
    """One firehose tick as sent: ``t_ns`` (perf_counter_ns at the gateway when queued for the
    socket; the socket write follows in the same event-loop turn), ``con_id``, ``req_id`` (the
    client's tickerId), ``tick_type`` (1 bid, 2 ask, 4 last) and ``price``."""

    t_ns: int
    con_id: int
    req_id: int
    tick_type: int
    price: float


class _Line:
    """Pre-encoded frames of one subscription: ``frames[f][i]`` carries ``prices[f][i]``."""

    __slots__ = ("sub", "frames", "prices", "pos")

    def __init__(self, sub: "Subscription", anchor: float):
        tick = sub.inst.min_tick or 0.01
        self.sub = sub
        self.prices = [[round(anchor + (off + i) * tick, 10) for i in range(CYCLE)] for _, off in _FIELDS]
        self.frames = [[messages.tick_price(sub.req_id, tt, p, 100, 1 if tt != TickTypeEnum.LAST else 0)
                        for p in prices]
                       for (tt, _), prices in zip(_FIELDS, self.prices)]
        self.pos = 0          # ticks sent on this line

    def next(self) -> tuple[bytes, int, float]:
        f, i = self.pos % 3, (self.pos // 3) % CYCLE
        self.pos += 1
        return self.frames[f][i], _FIELDS[f][0], self.prices[f][i]


def _report_failure(task: asyncio.Task) -> None:
    """A firehose that dies would silently leave the replayed stream paused: say why, loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the paper gateway's firehose failed", exc_info=task.exception())


class Firehose:
    """One firehose run on the gateway's loop over ``marketdata``'s lines (it pauses their replayed
    stream while it runs), anchored at ``quote(instrument)``. rate: ticks per second over all lines
    (None: as fast as the sockets take them); count: stop after this many ticks and send the end
    marker (None: until stopped); record: keep a :class:`SentTick` per tick."""

    def __init__(self, marketdata: "MarketDataService", quote: "Callable[[Instrument], Quote]",
                 rate: float | None = None, count: int | None = None, record: bool = False,
                 end: float = END_PRICE):
        if rate is not None and rate <= 0:
            raise ValueError(f"firehose rate must be > 0 ticks per second, got {rate}")
        if count is not None and count < 0:
            raise ValueError(f"firehose count must be >= 0, got {count}")
        self.marketdata, self.quote = marketdata, quote
        self.rate, self.count, self.record, self.end = rate, count, record, end
        self.sent = 0
        self.started = time.perf_counter()
        self.ended: float | None = None
        self.log: collections.deque[SentTick] = collections.deque(maxlen=RECORD_LIMIT)
        # Encoded frames per line, kept across runs (a benchmark may start many short ones).
        self._lines: dict[tuple[int, int], _Line] = marketdata.firehose_lines
        self._task: asyncio.Task | None = None

    # --- control (on the gateway's loop) ----------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="paper-firehose")
        self._task.add_done_callback(_report_failure)

    def stop(self) -> None:
        """End the run and give the lines back to the replayed quote stream."""
        if self._task is not None:
            self._task.cancel()
        self._finish()
        if self.marketdata.firehose is self:
            self.marketdata.firehose = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stats(self) -> dict:
        """sent (ticks), seconds (since start, or start to end), rate (ticks per second), running."""
        end = self.ended if self.ended is not None else time.perf_counter()
        seconds = end - self.started
        return {"sent": self.sent, "seconds": seconds, "rate": self.sent / seconds if seconds > 0 else 0.0,
                "running": self.running}

    def _finish(self) -> None:
        if self.ended is None:
            self.ended = time.perf_counter()

    # --- the loop ---------------------------------------------------------------------------------
    def _current_lines(self) -> list[_Line]:
        subs = self.marketdata.subs
        for key in [k for k in self._lines if k not in subs]:
            del self._lines[key]
        lines = []
        for key, sub in subs.items():
            if sub.delayed or sub.conn.state == "closed":
                continue
            line = self._lines.get(key)
            if line is None or line.sub is not sub:
                q = self.quote(sub.inst)
                anchor = next((p for p in (q.bid, q.last, q.ask) if p is not None and math.isfinite(p)), 100.0)
                line = self._lines[key] = _Line(sub, anchor)
            lines.append(line)
        return lines

    async def _run(self) -> None:
        try:
            turn = 0
            lines: list[_Line] = []
            while self.count is None or self.sent < self.count:
                if turn % 64 == 0 or not lines:         # pick up new and cancelled lines now and then
                    lines = self._current_lines()
                turn += 1
                if not lines:
                    await asyncio.sleep(0.005)
                    continue
                n = BATCH
                if self.rate is not None:
                    due = int((time.perf_counter() - self.started) * self.rate) - self.sent
                    n = min(due, BATCH * 8)
                if self.count is not None:
                    n = min(n, self.count - self.sent)
                if n > 0 and not self._send(lines, n):
                    lines = []                          # every line closed: re-read them
                await asyncio.sleep(0 if self.rate is None else 0.001)   # the connections flush here
                for conn in {line.sub.conn for line in lines}:
                    await conn.drained()
            if lines:                                   # the end marker, on the newest line
                last = lines[-1].sub
                last.conn.send(messages.tick_price(last.req_id, TickTypeEnum.BID, self.end, 1, 1))
        finally:
            self._finish()

    def _send(self, lines: list[_Line], n: int) -> int:
        """Queue ``n`` ticks round-robin; returns how many went out (closed connections skipped)."""
        record = self.log.append if self.record else None
        clock = time.perf_counter_ns
        k = len(lines)
        start = self.sent
        for j in range(start, start + n):
            line = lines[j % k]
            sub = line.sub
            if sub.conn.state == "closed":
                continue
            frame, tick_type, price = line.next()
            sub.conn.send(frame)
            self.sent += 1
            if record is not None:
                record(SentTick(clock(), sub.inst.con_id, sub.req_id, tick_type, price))
        return self.sent - start
