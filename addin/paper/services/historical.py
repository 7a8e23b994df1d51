"""Historical data at the paper gateway: reqHistoricalData with IB's validation and pacing rules,
keepUpToDate streaming (HISTORICAL_DATA_UPDATE), whatToShow=SCHEDULE (HISTORICAL_SCHEDULE),
reqHistoricalTicks (HISTORICAL_TICKS / _BID_ASK / _LAST) and cancelHistoricalData.

The bars come from the market model (real bars resampled; finer bars from the same tick generator
as the live quotes). The rules (step sizes, 50 open requests, small-bar pacing) live in
``history_rules`` and are enforced per client connection, as IB does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ...protocol.errors import HISTORICAL_DATA_ERROR
from ..codec import history_codec, messages, requests
from ..market import history_rules, history_ticks
from ..market.history_rules import HistoryError
from ..market.market import BarSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Bar, Instrument
    from .connection import ClientConnection

log = logging.getLogger(__name__)


@dataclass
class KeepUpToDateBars:
    """A keepUpToDate request: the client gets the bar in progress whenever it changes."""

    conn: "ClientConnection"
    req_id: int
    inst: "Instrument"
    spec: BarSpec
    what: str
    use_rth: bool
    format_date: int
    last: tuple = ()


class HistoryService:
    """reqHistoricalData, cancelHistoricalData, reqHeadTimestamp and keepUpToDate streaming.

    market: the replayed bars and clock; resolve(conn, req_id, contract): the one instrument a
    request names, or None once IB's error went out; pacing_clock_rate: how many times faster than
    real time the pacing windows run (tests)."""

    def __init__(self, market, resolve, *, pacing_clock_rate: float = 1.0):
        self.market = market
        self.resolve = resolve
        self.pacing_clock_rate = pacing_clock_rate
        self.pacers: dict[int, history_rules.HistoryPacer] = {}
        self.live: dict[tuple[int, int], KeepUpToDateBars] = {}

    def _pacer(self, conn) -> history_rules.HistoryPacer:
        pacer = self.pacers.get(id(conn))
        if pacer is None:
            rate = self.pacing_clock_rate
            pacer = self.pacers[id(conn)] = history_rules.HistoryPacer(clock=lambda: time.monotonic() * rate)
        return pacer

    def req_historical_data(self, conn, fields) -> None:
        req = requests.req_historical_data(fields)
        market = self.market
        now = market.now()
        try:
            checked = history_rules.validate_request(
                req.end_date_time, req.duration, req.bar_size, req.what_to_show, now=now,
                keep_up_to_date=req.keep_up_to_date, sec_type=req.contract.secType, format_date=req.format_date)
        except HistoryError as exc:
            conn.send_error(req.req_id, exc.code, exc.text)
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        what, bar = checked.what_to_show, checked.bar
        identity = (inst.con_id, req.end_date_time, req.bar_size, req.duration, req.use_rth, what,
                    req.format_date, req.keep_up_to_date)
        try:
            self._pacer(conn).admit(req.req_id, (inst.con_id, inst.contract.exchange, what), bar, what, identity)
        except HistoryError as exc:
            conn.send_error(req.req_id, exc.code, exc.text)
            return
        if checked.implied_tz:
            conn.send_error(req.req_id, *history_rules.IMPLIED_TZ_WARNING)
        spec = BarSpec(seconds=bar.seconds, months=bar.months)
        end = min(checked.end, now)
        if what == "SCHEDULE":
            self._send_schedule(conn, req.req_id, inst, checked.start, checked.end, bool(req.use_rth))
            return
        try:
            bars = market.bars(inst, checked.start, end, spec, what, bool(req.use_rth))
        except ValueError as exc:
            self._pacer(conn).done(req.req_id)
            conn.send_error(req.req_id, HISTORICAL_DATA_ERROR, f"Historical Market Data Service error message:{exc}")
            return
        conn.send(messages.historical_data(req.req_id, checked.start, end, bars, req.format_date,
                                           daily=spec.months > 0 or spec.seconds >= 86400))
        if req.keep_up_to_date:
            self.live[(id(conn), req.req_id)] = KeepUpToDateBars(conn, req.req_id, inst, spec, what,
                                                         bool(req.use_rth), req.format_date,
                                                         _bar_key(bars[-1]) if bars else ())
        else:
            self._pacer(conn).done(req.req_id)

    def _send_schedule(self, conn, req_id: int, inst, start, end, use_rth: bool) -> None:
        """whatToShow=SCHEDULE: the sessions of every replayed day in [start, end) (the instrument's
        trading days; its liquid hours with useRTH), in its own zone, as HISTORICAL_SCHEDULE."""
        zone = inst.details.timeZoneId
        tz = ZoneInfo(zone)
        sessions = self.market.sessions(inst, start, end, use_rth)
        stamp = lambda epoch: datetime.fromtimestamp(epoch, tz).strftime("%Y%m%d-%H:%M:%S")  # noqa: E731
        rows = [(stamp(s0), stamp(s1), date.fromordinal(day).strftime("%Y%m%d")) for s0, s1, day in sessions]
        first = rows[0][0] if rows else stamp(start.timestamp())
        last = rows[-1][1] if rows else stamp(end.timestamp())
        self._pacer(conn).done(req_id)
        conn.send(history_codec.historical_schedule(req_id, first, last, zone, rows))

    def req_historical_ticks(self, conn, fields) -> None:
        """reqHistoricalTicks: TRADES, BID_ASK or MIDPOINT ticks from the generated seconds (the same
        seconds the quotes and the fine bars come from), at most 1000, ``done`` always True."""
        req = history_codec.req_historical_ticks(fields)
        try:
            checked = history_ticks.validate(req.start, req.end, req.number_of_ticks, req.what_to_show,
                                             now=self.market.now())
        except HistoryError as exc:
            conn.send_error(req.req_id, exc.code, exc.text)
            return
        inst = self.resolve(conn, req.req_id, req.contract)
        if inst is None:
            return
        try:
            ticks = history_ticks.collect(self.market, inst, checked, use_rth=bool(req.use_rth),
                                          ignore_size=req.ignore_size)
        except HistoryError as exc:
            conn.send_error(req.req_id, exc.code, exc.text)
            return
        build = {"TRADES": history_codec.historical_ticks_last, "BID_ASK": history_codec.historical_ticks_bid_ask,
                 "MIDPOINT": history_codec.historical_ticks}[checked.what_to_show]
        conn.send(build(req.req_id, ticks, True))

    def cancel_historical_data(self, conn, fields) -> None:
        fields.next_int("version")
        req_id = fields.next_int("reqId")
        self.live.pop((id(conn), req_id), None)
        try:
            self._pacer(conn).cancel(req_id)
        except HistoryError as exc:
            conn.send_error(req_id, exc.code, exc.text)

    def req_head_timestamp(self, conn, fields) -> None:
        req_id = fields.next_int("reqId")
        conn.send_error(req_id, HISTORICAL_DATA_ERROR, "Historical Market Data Service error message:"
                                     "head timestamp is not offered by the paper gateway")

    def pump(self, now) -> None:
        """Send the bar in progress of every keepUpToDate request whose values changed."""
        market = self.market
        for live in list(self.live.values()):
            span = timedelta(days=31) if live.spec.months else timedelta(seconds=live.spec.seconds)
            bars = market.bars(live.inst, now - span, now, live.spec, live.what, live.use_rth)
            if not bars:
                continue
            key = _bar_key(bars[-1])
            if key != live.last:
                live.last = key
                live.conn.send(messages.historical_data_update(live.req_id, bars[-1], live.format_date,
                                                               daily=live.spec.months > 0
                                                               or live.spec.seconds >= 86400))

    def drop_connection(self, conn) -> None:
        self.pacers.pop(id(conn), None)
        for key in [k for k, v in self.live.items() if v.conn is conn]:
            del self.live[key]

    def drop_all_subscriptions(self) -> None:
        for live in list(self.live.values()):
            self._pacer(live.conn).done(live.req_id)
        self.live.clear()


def _bar_key(bar: "Bar") -> tuple:
    return (bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume)
