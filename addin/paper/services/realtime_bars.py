"""Real-time bars at the paper gateway: reqRealTimeBars / cancelRealTimeBars.

A bar covers 5 seconds of the replay clock, aligned to multiples of 5 s, and goes out once the replay
clock has passed its end: the first bar is the one in progress at the request (IB sends no bar before
one completes). The bars are the paper market's own 5-second bars (``Market.bars``), built from the
same generated seconds as the quotes, so they agree with reqMktData and with reqHistoricalData "5 secs".
TRADES bars carry volume, wap and count; MIDPOINT/BID/ASK bars -1 there, as the historical bars do.
useRTH=True sends bars inside the liquid hours only. When the replay clock jumps (advance_clock), every
bar it jumped over is sent, oldest first (at most the last MAX_CATCH_UP).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ...protocol import errors
from ..codec import messages, requests
from ..market.market import BarSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Instrument, Market
    from .connection import ClientConnection

BAR_SECONDS = 5
WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK")
MAX_CATCH_UP = 720              # bars sent after one clock jump (one hour of replay)
_SPEC = BarSpec(seconds=BAR_SECONDS)


def _invalid(detail: str) -> str:
    """IB's 321 wording for a refused real-time bars request ('bT' is that request's letter in IB's
    validation messages, e.g. "Error validating request.-'bT' : cause - Please enter exchange")."""
    return f"Error validating request.-'bT' : cause - {detail}"


@dataclass
class RealTimeBars:
    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    what: str
    use_rth: bool
    next_start: int                 # epoch of the next bar to send


class RealTimeBarsService:
    """reqRealTimeBars for every connection. ``market``: the replayed market; ``resolve``: as for the
    other services (the one instrument, or None after IB's 200)."""

    def __init__(self, market: "Market", resolve):
        self.market = market
        self.resolve = resolve
        self.subs: dict[tuple[int, int], RealTimeBars] = {}

    def req_real_time_bars(self, conn, fields) -> None:
        req = requests.req_real_time_bars(fields)
        key = (id(conn), req.req_id)
        if key in self.subs:
            conn.send_duplicate_id(req.req_id)
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        what = req.what_to_show.strip().upper()
        if req.bar_size != BAR_SECONDS:
            conn.send_error(req.req_id, errors.VALIDATION_ERROR,
                            _invalid(f"Invalid bar size {req.bar_size}: real-time bars are 5 seconds"))
            return
        if what not in WHAT_TO_SHOW:
            conn.send_error(req.req_id, errors.VALIDATION_ERROR,
                            _invalid(f"Invalid whatToShow {req.what_to_show!r}: legal ones are "
                                     f"{', '.join(WHAT_TO_SHOW)}"))
            return
        if what == "TRADES" and not inst.has_trades or what != "TRADES" and not inst.has_quotes:
            have = "MIDPOINT, BID or ASK" if inst.has_quotes else "TRADES"
            conn.send_error(req.req_id, errors.VALIDATION_ERROR,
                            _invalid(f"No {what} data for {inst.contract.localSymbol or inst.symbol} "
                                     f"({inst.sec_type}): use {have}"))
            return
        start = int(self.market.epoch()) // BAR_SECONDS * BAR_SECONDS
        self.subs[key] = RealTimeBars(conn, req.req_id, inst, what, req.use_rth, start)

    def cancel_real_time_bars(self, conn, fields) -> None:
        req = requests.cancel_real_time_bars(fields)
        self.subs.pop((id(conn), req.req_id), None)

    def pump(self, epoch: float) -> None:
        """Send every bar that ended at or before ``epoch`` (replay seconds) and was not sent yet."""
        done_before = int(epoch) // BAR_SECONDS * BAR_SECONDS       # start of the bar in progress
        for sub in list(self.subs.values()):
            if sub.next_start >= done_before:
                continue
            first = max(sub.next_start, done_before - MAX_CATCH_UP * BAR_SECONDS)
            bars = self.market.bars(sub.inst, datetime.fromtimestamp(first, UTC),
                                    datetime.fromtimestamp(done_before, UTC), _SPEC, sub.what, sub.use_rth)
            for bar in bars:
                sub.conn.send(messages.realtime_bar(sub.req_id, bar.time, bar.open, bar.high, bar.low, bar.close,
                                                    bar.volume, bar.wap, bar.count))
            sub.next_start = done_before

    def drop_connection(self, conn) -> None:
        for key in [k for k, s in self.subs.items() if s.conn is conn]:
            del self.subs[key]

    def drop_all(self) -> None:
        self.subs.clear()
