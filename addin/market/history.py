"""Historical bars from IB as pandas DataFrames: IB's pacing kept, long ranges split and stitched,
keepUpToDate streams that survive reconnects.

Where the data comes from: IB's ``reqHistoricalData`` (TWS, IB Gateway or the paper gateway), sent
through the process's one :class:`addin.ib.session.Session`. Nothing here calls ibapi directly except
inside the ``start``/``cancel`` functions the session runs on its pacer thread.

Shapes and units
----------------
Every frame is indexed by bar start: a tz-aware UTC ``DatetimeIndex`` named ``time``, sorted, unique.
Columns: ``open``, ``high``, ``low``, ``close``, ``wap`` (float64, the contract's currency),
``volume`` (float64: shares, contracts, currency units or coins as IB counts them) and ``bar_count``
(int64, trades in the bar). Where IB sends -1 (MIDPOINT, BID, ASK bars have no volume or WAP)
``volume`` and ``wap`` are NaN and ``bar_count`` is -1. Intraday bars are requested with
formatDate 2 (epoch seconds: no zone ambiguity). Bars of a day or longer carry only IB's date
(the trading day, the first day of the week or month): their index is that date at 00:00 UTC.

IB's rules this module keeps (tables and limits from :mod:`addin.protocol.historical`)
------------------------------------------------------------------------------------
* Step sizes: IB answers one request with a limited number of bars; per bar size the longest
  duration one request may ask for is (from IB's table): 1 secs 1800 S, 5 secs 3600 S, 10/15 secs
  14400 S, 30 secs 28800 S, 1 min 1 D, 2 mins 2 D, 3-20 mins 1 W, 30 mins-8 hours 1 M (asked as
  28 D here), 1 day and longer: any number of years. A longer range is split into consecutive
  requests with an explicit endDateTime (UTC dash form ``yyyymmdd-hh:mm:ss``) that overlap by at
  least one bar, then stitched: concatenated, de-duplicated on the index (a bar seen twice is taken
  from the later request, which holds it whole), sorted and cut to ``[end - duration, end)``.
* At most 50 historical requests open at once (IB's error 322 beyond).
* Small bars (30 secs or less): no identical request within 15 s, fewer than 6 requests for the same
  contract and whatToShow within 2 s, at most 60 in any 10 minutes, BID_ASK counting twice (IB's
  error 162 "pacing violation" otherwise).
* At most 45 messages per second: the session's pacer sends every message.

The rules are kept by one :class:`PacingScheduler` per session, shared by every :class:`History`
on that session. It delays requests (never fails them) until IB would accept them. Its clock is
conservative: IB counts a request from the moment it admits it, which is somewhere between our
send and the arrival of its answer, so a window is counted from the answer's arrival (a request
still unanswered counts as just sent), plus 1 % of the window as a safety margin. An identical
small-bar request within the 15 s window is never sent again: the caller gets the first one's
result (or IB's error), shared with a request still in flight. ``pacing_clock_rate`` scales every
window (tests run the paper gateway and the scheduler 100 times faster; 1.0 is real IB). Every
historical request of a session must go through this module for the counts to be right.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import itertools
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from ibapi.contract import Contract

from ..ib.session import IBError, Request, Session
from ..protocol.errors import CONNECTIVITY_LOST, NO_SECURITY_DEFINITION, NOT_CONNECTED, RESTORED_DATA_LOST
from ..protocol.historical import (
    BAR_SIZES,
    BURST_LIMIT,
    BURST_WINDOW,
    DAY,
    DURATION_UNITS,
    IDENTICAL_WINDOW,
    KEEP_UP_TO_DATE_MIN_BAR_SECONDS,
    KEEP_UP_TO_DATE_WHAT_TO_SHOW,
    MAX_DURATION_COUNT,
    MAX_OPEN,
    MIN_DURATION_SECONDS,
    TOTAL_LIMIT,
    TOTAL_WINDOW,
    UNIT_SECONDS,
    UNIT_WORDS,
    WHAT_TO_SHOW,
    BarSize,
    Duration,
    largest_duration,
    lookup_bar_size,
    request_weight,
    step_row,
)
from ..protocol.times import format_utc, parse_time

log = logging.getLogger(__name__)

__all__ = [
    "History", "LiveBars", "PacingScheduler", "COLUMNS", "parse_bar_size", "parse_duration", "bars_frame",
    "empty_frame", "plan_chunks", "pacing_lower_bound",
]

UTC = UTC
COLUMNS = ("open", "high", "low", "close", "volume", "wap", "bar_count")
DEFAULT_TIMEOUT = 60.0          # seconds an IB answer may take once the request is sent
#: Zone of "yyyymmdd hh:mm:ss" bar times without a zone (only from servers that ignore formatDate 2).
DEFAULT_TWS_ZONE = "US/Eastern"
SAFETY = 0.01                   # every pacing window is kept 1 % longer than IB's (+1 ms)

_DST_SLACK = 3600   # a "N D" request may be an hour shorter than N * 24 h across a clock change
_CLOCK_SLACK = 1    # s: the anchor time is IB's, in whole seconds


def parse_bar_size(text: str, field: str = "bar_size") -> BarSize:
    """IB's barSizeSetting (exact spelling: "1 secs", "5 secs", ... "1 min", "2 mins", ... "1 hour",
    "2 hours", ... "1 day", "1W", "1M"; "1 week" and "1 month" are read as "1W" and "1M").
    Raises ValueError naming ``field`` and listing the legal values."""
    if isinstance(text, str):
        bar = lookup_bar_size(text.strip())
        if bar is not None:
            return bar
    raise ValueError(f"{field}: {text!r} is not one of IB's bar sizes; legal ones are: {', '.join(BAR_SIZES)}")


_DURATION_RE = re.compile(rf"\s*(\d+)\s*([{DURATION_UNITS}{DURATION_UNITS.lower()}])\s*")


def parse_duration(text: str, field: str = "duration") -> Duration:
    """A durationStr: "<integer> <unit>", unit S (seconds), D (days), W (weeks), M (months) or
    Y (years), either case, e.g. "1 D", "3600 S", "2 Y". Longer than IB allows in one request is
    fine (the range is split). Raises ValueError naming ``field`` and the legal form."""
    m = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{field}: {text!r} is not a duration; expected '<integer> <unit>' with unit "
                         f"S (seconds), D (days), W (weeks), M (months) or Y (years), e.g. '1 D', "
                         f"'3600 S', '2 Y'")
    count, unit = int(m.group(1)), m.group(2).upper()
    if count < 1:
        raise ValueError(f"{field}: {text!r} must be at least 1 {UNIT_WORDS[unit]}")
    if unit == "S" and count < MIN_DURATION_SECONDS:
        raise ValueError(f"{field}: {text!r} is shorter than IB's minimum of {MIN_DURATION_SECONDS} S")
    return Duration(count, unit)


def check_what_to_show(text: str, field: str = "what_to_show", legal: Sequence[str] = WHAT_TO_SHOW) -> str:
    """whatToShow upper-cased; ValueError naming ``field`` and the legal values otherwise."""
    upper = text.strip().upper() if isinstance(text, str) else None
    if upper not in legal:
        raise ValueError(f"{field}: {text!r} is not one of: {', '.join(legal)}")
    return upper


def fits_one_request(duration: Duration, bar: BarSize) -> bool:
    """Whether IB answers ``duration`` of ``bar`` bars in one request: the text is legal and IB's
    step-size table allows the bar size for that duration."""
    return duration.ib_legal() and bar.nominal_seconds >= step_row(duration).smallest.nominal_seconds


def _chunk_duration(bar: BarSize) -> Duration:
    """The longest request for intraday ``bar`` bars (IB's step table), as a text of fixed length:
    seconds while IB takes them (1 D is asked as 86400 S), a week as 7 D and "1 M" as 28 D, so
    that every request has the same length whatever the month."""
    longest = largest_duration(bar)
    if longest.seconds() <= MAX_DURATION_COUNT["S"]:
        return Duration(longest.seconds(), "S")
    if longest.unit == "W":
        return Duration(7 * longest.count, "D")
    if longest.unit == "M":
        return Duration(28 * longest.count, "D")
    return longest


def _ib_end_text(end: datetime | None) -> str:
    """IB's endDateTime for ``end`` (tz-aware): UTC dash form "yyyymmdd-hh:mm:ss"; "" for None (now)."""
    return "" if end is None else format_utc(end)


@dataclass(frozen=True)
class Chunk:
    """One reqHistoricalData of a plan: ``end_text`` ("" = now) and ``duration_text`` as sent."""

    end_text: str
    duration_text: str
    end: datetime | None = None


@dataclass(frozen=True)
class Plan:
    """The requests for one ``bars`` call, oldest first; ``start``/``end``: the cut applied to the
    stitched bars (None: none, the request is sent as the caller wrote it)."""

    chunks: tuple[Chunk, ...]
    start: datetime | None = None
    end: datetime | None = None


def plan_chunks(duration: Duration, bar: BarSize, end: datetime | None,
                anchor: Callable[[], datetime] | None = None) -> Plan:
    """How to ask IB for ``duration`` of ``bar`` bars ending at ``end`` (None: now).

    One request when IB allows it (sent exactly as asked). Daily and longer bars whose duration text
    IB refuses (e.g. "400 D") become one request in whole years, cut to the range. Otherwise the
    range ``[duration.start_before(end), end)`` is covered by requests of the longest duration IB
    allows for the bar size, consecutive, each overlapping the next by at least one bar (plus an
    hour for "N D" requests, which are calendar days on IB's side, plus a second for clock rounding).
    ``anchor()`` gives IB's current time when ``end`` is None and the range must be split.
    """
    if fits_one_request(duration, bar):
        return Plan((Chunk(_ib_end_text(end), duration.text, end),))
    if end is None:
        end = anchor() if anchor is not None else datetime.now(UTC)
    end = end.astimezone(UTC).replace(microsecond=0)
    start = duration.start_before(end)  # on UTC's calendar: D and W are elapsed days
    if bar.is_daily_or_longer:
        years = max(1, math.ceil((end - start).total_seconds() / UNIT_SECONDS["Y"] - 1e-9))
        day_start = datetime(start.year, start.month, start.day, tzinfo=UTC)
        return Plan((Chunk(_ib_end_text(end), f"{years} Y", end),), day_start, None)
    longest = _chunk_duration(bar)
    count, unit, length = longest.count, longest.unit, longest.seconds()
    overlap = bar.seconds + _CLOCK_SLACK + (_DST_SLACK if unit == "D" else 0)
    spacing = length - overlap
    span = (end - start).total_seconds()
    n = 1 if span <= length else 1 + math.ceil((span - length) / spacing)
    chunks = []
    for k in range(n - 1, -1, -1):
        chunk_end = end - timedelta(seconds=k * spacing)
        text = f"{count} {unit}"
        if k == n - 1:  # the oldest: only as long as needed
            need = (chunk_end - start).total_seconds()
            if need <= MAX_DURATION_COUNT["S"]:
                text = f"{max(MIN_DURATION_SECONDS, math.ceil(need))} S"
            else:
                text = f"{min(count, math.ceil((need + _DST_SLACK) / DAY))} D"
        chunks.append(Chunk(_ib_end_text(chunk_end), text, chunk_end))
    return Plan(tuple(chunks), start, end)


# --- bar times and frames --------------------------------------------------------------------------

def _parse_times(dates: Sequence[str]) -> pd.DatetimeIndex:
    s = pd.Series(dates, dtype=object).astype(str).str.strip()
    if len(s) and s.str.isdigit().all():
        lengths = s.str.len()
        if (lengths == 8).all():
            return pd.DatetimeIndex(pd.to_datetime(s, format="%Y%m%d", utc=True), name="time")
        if (lengths > 8).all():
            return pd.DatetimeIndex(pd.to_datetime(s.astype("int64"), unit="s", utc=True), name="time")
    # Other forms (dash UTC, "yyyymmdd hh:mm:ss [zone]" from servers that ignore formatDate 2).
    return pd.DatetimeIndex([pd.Timestamp(parse_time(x, DEFAULT_TWS_ZONE)) for x in s], name="time")


def empty_frame() -> pd.DataFrame:
    """The frame of no bars: the columns, an empty tz-aware UTC index named "time"."""
    index = pd.DatetimeIndex([], tz=UTC, name="time").as_unit("ns")
    frame = pd.DataFrame({c: pd.Series([], dtype="float64") for c in COLUMNS[:-1]}, index=index)
    frame["bar_count"] = pd.Series([], dtype="int64", index=index)
    return frame


def bars_frame(rows: Sequence[tuple]) -> pd.DataFrame:
    """A frame from raw bars ``(date, open, high, low, close, volume, wap, barCount)`` as ibapi gives
    them (date text, Decimal volume/wap). Unsorted and possibly duplicated as given; see module doc."""
    if not rows:
        return empty_frame()
    dates, o, h, lo, c, v, w, n = zip(*rows)
    index = _parse_times(dates).as_unit("ns")
    volume = np.array([float(x) for x in v], dtype="float64")
    wap = np.array([float(x) for x in w], dtype="float64")
    volume[volume == -1] = np.nan
    wap[wap == -1] = np.nan
    return pd.DataFrame({
        "open": np.asarray(o, dtype="float64"), "high": np.asarray(h, dtype="float64"),
        "low": np.asarray(lo, dtype="float64"), "close": np.asarray(c, dtype="float64"),
        "volume": volume, "wap": wap, "bar_count": np.asarray(n, dtype="int64"),
    }, index=index)


def _stitch(frames: Iterable[pd.DataFrame], start: datetime | None = None,
            end: datetime | None = None) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    df = pd.concat(frames) if len(frames) > 1 else frames[0].copy()
    df = df[~df.index.duplicated(keep="last")].sort_index(kind="stable")
    if start is not None:
        df = df[df.index >= pd.Timestamp(start)]
    if end is not None:
        df = df[df.index < pd.Timestamp(end)]
    return df


def _bar_tuple(bar) -> tuple:
    return (bar.date, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.wap, bar.barCount)


# --- the pacing scheduler --------------------------------------------------------------------------

@dataclass
class _Record:
    """A small-bar request sent: ``done`` is when its answer arrived (None: still unanswered)."""

    key: Hashable
    identity: Hashable
    weight: int
    done: float | None = None


@dataclass
class _Answer:
    """What one reqHistoricalData gave: raw bars and IB's start/end texts."""

    bars: list
    start: str = ""
    end: str = ""


class _Job:
    """One historical request waiting for, or holding, its turn."""

    _ids = itertools.count(1)

    def __init__(self, *, key: Hashable, identity: Hashable, small: bool, weight: int, description: str,
                 send: Callable[["_Job"], None], timeout: float, stream: bool = False,
                 holds_slot: bool = True):
        self.id = next(self._ids)
        self.key, self.identity, self.small, self.weight = key, identity, small, weight
        self.description = description
        self.send = send                    # releases it (runs on the scheduler thread)
        self.timeout = timeout
        self.stream = stream
        self.holds_slot = holds_slot        # counts against the 50 open requests while released
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.state = "pending"              # pending, released, done, cancelled
        self.open = False
        self.record: _Record | None = None
        self.waiters = 1
        self.joined: "_Job | None" = None   # the identical job this one shares
        self.queued_at = time.monotonic()
        self.hold_since: float | None = None


class PacingScheduler:
    """IB's historical-data rules for one session (module docstring); one per session, shared.

    ``rate``: how many times faster than real time the pacing windows run (1.0 for IB; the paper
    gateway's ``pacing_clock_rate`` in tests). Thread-safe. Its thread runs only while requests wait.
    """

    def __init__(self, session: Session, rate: float = 1.0):
        if not rate > 0:
            raise ValueError(f"pacing_clock_rate must be > 0, got {rate!r}")
        self._session_ref = weakref.ref(session)
        self.rate = float(rate)
        self.identical_window = self._window(IDENTICAL_WINDOW)
        self.burst_window = self._window(BURST_WINDOW)
        self.total_window = self._window(TOTAL_WINDOW)
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._by_identity: dict[Hashable, _Job] = {}       # pending or in flight, for joining
        self._cache: dict[Hashable, tuple[float, bool, Any]] = {}   # identity -> (done, ok, value)
        self._records: collections.deque[_Record] = collections.deque()
        self._open = 0
        self._thread: threading.Thread | None = None
        self._stats: collections.Counter[str] = collections.Counter()
        self._max_open = 0
        self._max_delay = 0.0

    def _window(self, seconds: float) -> float:
        return seconds * (1 + SAFETY) / self.rate + 0.001

    # --- public -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters: ``sent`` requests released to the session, ``shared`` callers served by a
        request already pending or in flight, ``cached`` served from an identical request's result
        within 15 s, ``max_open`` requests open at once, ``max_delay`` longest wait (s) for a turn,
        ``open`` and ``pending`` now."""
        with self._cond:
            return {"sent": self._stats["sent"], "shared": self._stats["shared"],
                    "cached": self._stats["cached"], "max_open": self._max_open,
                    "max_delay": self._max_delay, "open": self._open, "pending": len(self._pending)}

    def submit(self, job: _Job, share: bool = True) -> concurrent.futures.Future:
        """Queue ``job``; its future resolves with the request's outcome. With ``share`` an
        identical request pending or in flight is joined, and an identical small-bar request
        answered less than 15 s ago (scaled) gives its result without sending anything."""
        with self._cond:
            if share:
                twin = self._by_identity.get(job.identity)
                if twin is not None and twin.state in ("pending", "released") and not twin.stream:
                    twin.waiters += 1
                    self._stats["shared"] += 1
                    job.state = "done"
                    job.joined = twin
                    return twin.future
                hit = self._cache.get(job.identity)
                if hit is not None and time.monotonic() < hit[0] + self.identical_window:
                    self._stats["cached"] += 1
                    job.state = "done"
                    if hit[1]:
                        job.future.set_result(hit[2])
                    else:
                        job.future.set_exception(hit[2])
                    return job.future
                self._by_identity[job.identity] = job
            self._pending.append(job)
            self._ensure_thread()
            self._cond.notify_all()
        return job.future

    def discard(self, job: _Job) -> None:
        """A caller no longer wants ``job`` (or the identical job it shares): dropped if still
        pending and nobody else waits on it. A job already sent runs to its end."""
        job = job.joined or job
        with self._cond:
            job.waiters -= 1
            if job.state == "pending" and job.waiters <= 0:
                job.state = "cancelled"
                self._pending.remove(job)
                if self._by_identity.get(job.identity) is job:
                    del self._by_identity[job.identity]
                self._cond.notify_all()
        if job.state == "cancelled" and not job.future.done():
            job.future.cancel()

    # --- bookkeeping called by History / LiveBars -------------------------------------------------
    def answered(self, job: _Job, ok: bool, value: Any, *, close: bool, cacheable: bool = True) -> None:
        """``job``'s answer (or error) arrived: its pacing window starts now; ``close`` frees its
        open slot (one-shot requests, failed streams)."""
        with self._cond:
            now = time.monotonic()
            if job.record is not None and job.record.done is None:
                job.record.done = now
            if close:
                self._close_locked(job)
            if self._by_identity.get(job.identity) is job:
                del self._by_identity[job.identity]
            if job.small and cacheable and not job.stream:
                self._cache[job.identity] = (now, ok, value)
            self._cond.notify_all()

    def closed(self, job: _Job) -> None:
        """A stream was cancelled: its slot is free; if it never went out it never will."""
        with self._cond:
            if job.state == "pending":
                job.state = "cancelled"
                self._pending.remove(job)
            if job.record is not None and job.record.done is None:
                job.record.done = time.monotonic()
            self._close_locked(job)
            if self._by_identity.get(job.identity) is job:
                del self._by_identity[job.identity]
            self._cond.notify_all()

    def _close_locked(self, job: _Job) -> None:
        if job.open:
            job.open = False
            self._open -= 1
        if job.state in ("pending", "released"):
            job.state = "done"

    # --- the thread -------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ibxl-history", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready, failed, wake = self._pick(now)
                if not ready and not failed:
                    if not self._pending:
                        self._thread = None
                        return
                    timeout = 1.0 if wake is None else max(0.0, min(wake - now, 1.0))
                    self._cond.wait(timeout)
                    continue
            for job, exc in failed:
                if not job.future.done():
                    job.future.set_exception(exc)
            for job in ready:
                try:
                    job.send(job)
                except BaseException as exc:  # not connected: undo the bookkeeping, fail the callers
                    with self._cond:
                        if job.record is not None and job.record in self._records:
                            self._records.remove(job.record)
                        self._close_locked(job)
                        if self._by_identity.get(job.identity) is job:
                            del self._by_identity[job.identity]
                        self._cond.notify_all()
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _pick(self, now: float) -> tuple[list[_Job], list[tuple[_Job, BaseException]], float | None]:
        """Under the lock: the jobs IB would accept now (bookkept as sent), jobs to fail, and when
        to look again (None: on the next answer)."""
        records = self._records
        while records and records[0].done is not None and now >= records[0].done + self.total_window:
            records.popleft()
        for ident in [i for i, (t, _, _) in self._cache.items() if now >= t + self.identical_window]:
            del self._cache[ident]
        if not self._pending:
            return [], [], None
        session = self._session_ref()
        state = session.status.state if session is not None else "disconnected"
        if state != "connected":
            failed: list[tuple[_Job, BaseException]] = []
            for job in list(self._pending):
                if job.hold_since is None:
                    job.hold_since = now
                if state == "disconnected" or now - job.hold_since > job.timeout:
                    failed.append((job, IBError(NOT_CONNECTED, f"Not connected ({state})", job.description)))
                    self._pending.remove(job)
                    job.state = "done"
                    if self._by_identity.get(job.identity) is job:
                        del self._by_identity[job.identity]
            return [], failed, now + 0.05
        ready: list[_Job] = []
        wake: float | None = None
        total_blocked = False

        def later(t: float | None) -> None:
            nonlocal wake
            if t is not None and (wake is None or t < wake):
                wake = t

        for job in list(self._pending):
            job.hold_since = None
            if job.holds_slot and self._open >= MAX_OPEN:
                break                                  # FIFO: wait for an answer
            if job.small:
                if total_blocked:
                    continue
                blocked, at, total = self._small_bar_check(job, now)
                if blocked:
                    later(at)
                    if total:
                        total_blocked = True          # keep order among small bars (BID_ASK weighs 2)
                    continue
                job.record = _Record(job.key, job.identity, job.weight)
                records.append(job.record)
            self._pending.remove(job)
            job.state = "released"
            if job.holds_slot:
                job.open = True
                self._open += 1
                self._max_open = max(self._max_open, self._open)
            self._stats["sent"] += 1
            self._max_delay = max(self._max_delay, now - job.queued_at)
            ready.append(job)
        return ready, [], wake

    def _small_bar_check(self, job: _Job, now: float) -> tuple[bool, float | None, bool]:
        """(blocked, when it may pass (None: after an answer), blocked by the 10-minute count)."""
        total = job.weight
        burst = job.weight
        burst_expiry: list[float | None] = []
        total_expiry: list[float | None] = []
        for r in self._records:
            if r.done is not None and now >= r.done + self.total_window:
                continue
            if r.identity == job.identity and (r.done is None or now < r.done + self.identical_window):
                return True, (None if r.done is None else r.done + self.identical_window), False
            total += r.weight
            total_expiry.append(None if r.done is None else r.done + self.total_window)
            if r.key == job.key and (r.done is None or now < r.done + self.burst_window):
                burst += r.weight
                burst_expiry.append(None if r.done is None else r.done + self.burst_window)
        if total > TOTAL_LIMIT:
            known = [t for t in total_expiry if t is not None]
            return True, (min(known) if known else None), True
        if burst >= BURST_LIMIT:
            known = [t for t in burst_expiry if t is not None]
            return True, (min(known) if known else None), False
        return False, None, False


_SCHEDULERS: "weakref.WeakKeyDictionary[Session, PacingScheduler]" = weakref.WeakKeyDictionary()
_SCHEDULERS_LOCK = threading.Lock()


def scheduler_for(session: Session, rate: float = 1.0) -> PacingScheduler:
    """The session's one :class:`PacingScheduler` (created on first use with ``rate``).
    Raises ValueError when it exists with a different rate."""
    with _SCHEDULERS_LOCK:
        sched = _SCHEDULERS.get(session)
        if sched is None:
            sched = _SCHEDULERS[session] = PacingScheduler(session, rate)
        elif sched.rate != float(rate):
            raise ValueError(f"pacing_clock_rate: this session's scheduler runs at {sched.rate:g}, "
                             f"not {rate:g} (one rate per session)")
        return sched


def pacing_lower_bound(requests: Sequence[tuple[Hashable, str, Hashable]], rate: float = 1.0,
                       msg_rate: int = 45) -> float:
    """The earliest time (s after the first send) at which the last of ``requests`` can reach IB
    without breaking a rule: each request ``(key, what_to_show, identity)`` is a small-bar request
    sent in the order given as early as IB's small-bar rules (exact windows, no safety margin) and
    ``msg_rate`` messages per second allow, with zero latency. Identical requests count once
    (served from the first). The theoretical minimum for a burst."""
    times: list[tuple[float, Hashable, int]] = []
    seen: dict[Hashable, float] = {}
    w_total, w_burst = TOTAL_WINDOW / rate, BURST_WINDOW / rate
    for key, what, identity in requests:
        if identity in seen:
            continue
        weight = request_weight(what)
        t = times[-1][0] if times else 0.0
        if len(times) >= msg_rate:
            t = max(t, times[-msg_rate][0] + 1.0)
        cum = weight
        for tj, _, wj in reversed(times):
            cum += wj
            if cum > TOTAL_LIMIT:
                t = max(t, tj + w_total)
                break
        cum = weight
        for tj, kj, wj in reversed(times):
            if kj == key:
                cum += wj
                if cum >= BURST_LIMIT:
                    t = max(t, tj + w_burst)
                    break
        times.append((t, key, weight))
        seen[identity] = t
    return times[-1][0] if times else 0.0


# --- contracts --------------------------------------------------------------------------------------

def _contract_words(c: Contract) -> str:
    parts = [c.symbol or f"conId {c.conId}", c.secType, c.lastTradeDateOrContractMonth,
             (f"{c.strike:g}" if c.strike not in (0, 0.0, None, "") and isinstance(c.strike, float) else ""),
             c.right, c.exchange, c.currency]
    text = " ".join(str(p) for p in parts if p)
    return text + (f" (conId {c.conId})" if c.conId and c.symbol else "")


def _contract_key(c: Contract) -> tuple:
    return (c.conId, c.symbol, c.secType, c.lastTradeDateOrContractMonth, str(c.strike), c.right,
            c.multiplier, c.exchange, c.primaryExchange, c.currency, c.localSymbol, c.tradingClass)


# --- History ----------------------------------------------------------------------------------------

class History:
    """Historical bars and keepUpToDate streams for one :class:`Session`.

    ``contracts``: an ``addin.ib.contracts.ContractBook`` (or anything with ``.contract(text) ->
    qualified ibapi Contract``) used for instruments given as cell text; when None one is made on
    the first text. An ibapi ``Contract`` may always be passed directly; one without a conId is
    qualified once with reqContractDetails (cached) so that IB's per-contract pacing counts are
    kept per real contract. ``pacing_clock_rate``: see :class:`PacingScheduler` (1.0 for IB).
    """

    def __init__(self, session: Session, contracts=None, pacing_clock_rate: float = 1.0):
        self.session = session
        self.contracts = contracts
        self.scheduler = scheduler_for(session, pacing_clock_rate)
        self._lock = threading.Lock()
        self._qualified: dict[tuple, Contract] = {}
        self._streams: list[LiveBars] = []

    @property
    def stats(self) -> dict:
        """The session scheduler's counters (:meth:`PacingScheduler.stats`)."""
        return self.scheduler.stats()

    # --- public -----------------------------------------------------------------------------------
    def bars(self, instrument, duration: str = "1 D", bar_size: str = "1 min", what_to_show: str = "TRADES",
             use_rth: bool = True, end: datetime | None = None,
             progress: Callable[[int, int], None] | None = None,
             timeout: float = DEFAULT_TIMEOUT) -> pd.DataFrame:
        """Bars of ``instrument`` over ``duration`` ending at ``end``, as IB's historical data farm
        serves them (reqHistoricalData, formatDate 2).

        instrument: cell text ("AAPL", "EUR/USD", ...; through ``contracts``) or an ibapi Contract.
        duration: "<n> <unit>" (S, D, W, M, Y). Within IB's per-request limit it goes to IB as
        written (IB's calendar and sessions decide where it starts); a longer one is the range
        ``[end - duration, end)`` (S/D/W elapsed time, M/Y calendar months in UTC), split into
        requests and stitched (module docstring). bar_size: IB's spelling ("1 secs" ... "1M").
        what_to_show: TRADES, MIDPOINT, BID, ASK, BID_ASK, ... use_rth: regular trading hours only.
        end: tz-aware datetime; None = now (IB's clock; the bar in progress is partial).
        progress: called on this thread as ``progress(done_requests, total_requests)``, first with
        0, then after each request answered. timeout: seconds each IB answer may take once sent
        (waiting for a pacing turn does not count: it can last up to IB's 10-minute window).

        Returns a DataFrame indexed by bar start (tz-aware UTC DatetimeIndex "time"), columns open,
        high, low, close (float, the contract's currency), volume (float, NaN where IB sends -1),
        wap (float, NaN likewise), bar_count (int, -1 where IB sends none); empty when IB has no
        bars in the range. A fresh copy: callers may modify it.

        Raises ValueError (a bad duration, bar_size, what_to_show or end, naming the field and the
        legal values), InstrumentError (text that names no instrument, from ``contracts``), IBError
        with IB's code and the request in words (162 no data / HMDS error, 321 invalid request,
        200 unknown contract, 504 not connected, 1100 connection lost), RequestTimeout.
        """
        self._not_on_message_thread()
        dur = parse_duration(duration)
        bar = parse_bar_size(bar_size)
        what = check_what_to_show(what_to_show)
        if end is not None:
            if not isinstance(end, datetime):
                raise ValueError(f"end: expected a tz-aware datetime or None, got {end!r}")
            if end.tzinfo is None or end.tzinfo.utcoffset(end) is None:
                raise ValueError(f"end: {end!r} has no time zone; pass a tz-aware datetime (UTC)")
        if what == "ADJUSTED_LAST" and (end is not None or not fits_one_request(dur, bar)):
            raise ValueError("what_to_show: ADJUSTED_LAST takes no end (IB refuses an endDateTime with "
                             "it), so the range must fit one request and end must be None")
        contract = self._contract(instrument)
        plan = plan_chunks(dur, bar, end, anchor=lambda: self._ib_now(timeout))
        jobs = [self._bars_job(contract, chunk, bar, what, use_rth, timeout) for chunk in plan.chunks]
        total = len(jobs)
        if progress is not None:
            progress(0, total)
        futures = {}
        answers: dict[int, _Answer] = {}       # by chunk index: every one is waited for
        try:
            for i, job in enumerate(jobs):
                futures[self.scheduler.submit(job)] = i
            done_count = 0
            waiting = set(futures)
            while waiting:
                finished, waiting = concurrent.futures.wait(waiting, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in finished:
                    answers[futures[fut]] = fut.result()      # raises the request's IBError
                    done_count += 1
                    if progress is not None:
                        progress(done_count, total)
        except BaseException:
            for job in jobs:
                if not (job.joined or job).future.done():
                    self.scheduler.discard(job)
            raise
        frames = [bars_frame(answers[i].bars) for i in range(total)]
        return _stitch(frames, plan.start, plan.end)

    def stream(self, instrument, duration: str = "1 D", bar_size: str = "1 min", what_to_show: str = "TRADES",
               use_rth: bool = True, on_update: Callable[[pd.DataFrame], None] | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> "LiveBars":
        """A keepUpToDate stream: the last ``duration`` of bars, then IB's updates of the bar in
        progress (reqHistoricalData keepUpToDate=True). Returns once the first bars arrived.

        bar_size: 5 secs or more (IB streams nothing smaller); what_to_show: TRADES, MIDPOINT, BID
        or ASK; duration must fit one IB request. ``on_update(frame)`` runs on ibapi's message
        thread (keep it quick): with every bar after the first load and after each reload (a
        reconnect), then with a one-row frame per update (the bar in progress replaced, or a new
        bar appended). ``LiveBars.df`` is always the whole current frame (same shape as ``bars``).
        Restored after a reconnect or IB's 1101: re-requested (paced) and merged. ``close()`` ends it.

        Raises ValueError for bad fields, IBError (IB's code, the request in words) or
        RequestTimeout when the first answer fails; the stream is then closed.
        """
        self._not_on_message_thread()
        dur = parse_duration(duration)
        bar = parse_bar_size(bar_size)
        what = check_what_to_show(what_to_show, legal=KEEP_UP_TO_DATE_WHAT_TO_SHOW)
        if 0 < bar.seconds < KEEP_UP_TO_DATE_MIN_BAR_SECONDS:
            raise ValueError(f"bar_size: {bar_size!r} is too small to stream; keepUpToDate needs 5 secs or more")
        if not fits_one_request(dur, bar):
            raise ValueError(f"duration: {duration!r} of {bar.text} bars is longer than one IB request "
                             f"allows; a stream cannot be split (use bars() for the history)")
        contract = self._contract(instrument)
        live = LiveBars(self, contract, dur, bar, what, use_rth, on_update, timeout)
        with self._lock:
            self._streams.append(live)
        live._start()
        return live

    def close(self) -> None:
        """Close every stream this History opened."""
        with self._lock:
            streams, self._streams = list(self._streams), []
        for live in streams:
            live.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    @staticmethod
    def _not_on_message_thread() -> None:
        if threading.current_thread().name == "ibxl-msg":
            raise RuntimeError("History calls wait for IB's answers and cannot run on ibapi's message "
                               "thread (e.g. inside an on_update callback)")

    def _describe(self, contract: Contract) -> str:
        """The contract in words: the cell grammar (addin.ib.contracts.format_contract) when it can
        write it, else symbol, secType, exchange, currency and conId."""
        try:
            from ..ib.contracts import format_contract
            return f"{format_contract(contract)} ({_contract_words(contract)})"
        except Exception:  # contracts module absent, or a contract the grammar cannot write
            return _contract_words(contract)

    def _contract(self, instrument) -> Contract:
        if isinstance(instrument, Contract):
            if instrument.conId:
                return copy.copy(instrument)
            return self._qualify(instrument)
        if isinstance(instrument, str):
            if self.contracts is None:
                try:
                    from ..ib.contracts import ContractBook
                except ImportError as exc:  # pragma: no cover - contracts module absent
                    raise TypeError("instrument: cell text needs addin.ib.contracts; pass an ibapi Contract") from exc
                with self._lock:
                    if self.contracts is None:
                        self.contracts = ContractBook(self.session)
            return self.contracts.contract(instrument)
        raise TypeError(f"instrument: expected cell text or an ibapi Contract, got {type(instrument).__name__}")

    def _qualify(self, contract: Contract) -> Contract:
        """``contract`` with its conId, from reqContractDetails (cached per contract fields)."""
        key = _contract_key(contract)
        with self._lock:
            hit = self._qualified.get(key)
        if hit is not None:
            return copy.copy(hit)
        if self.contracts is not None:
            qualified = self.contracts.contract(contract)
        else:
            words = _contract_words(contract)
            request = Request(f"contract details for {words}",
                              lambda client, rid: client.reqContractDetails(rid, contract), end="contractDetailsEnd")
            rows = self.session.submit(request).result(self.session.request_timeout + 1)
            found = [args[1] for name, args in rows if name == "contractDetails"]
            if len(found) != 1:
                names = ", ".join(_contract_words(d.contract) for d in found)
                raise IBError(NO_SECURITY_DEFINITION, f"The contract description specified for {words} is ambiguous: "
                                   f"{len(found)} contracts match ({names})", request.description)
            qualified = copy.copy(contract)
            qualified.conId = found[0].contract.conId
        with self._lock:
            self._qualified[key] = qualified
        return copy.copy(qualified)

    def _ib_now(self, timeout: float) -> datetime:
        """IB's clock (reqCurrentTime, whole seconds); the local clock if no answer comes."""
        got = threading.Event()
        box: list[int] = []

        def on_time(t):
            box.append(t)
            got.set()

        self.session.events.currentTime.subscribe(on_time)
        try:
            self.session.send(lambda client: client.reqCurrentTime())
            if got.wait(min(timeout, 10.0)) and box:
                return datetime.fromtimestamp(int(box[0]), UTC)
        finally:
            self.session.events.currentTime.unsubscribe(on_time)
        log.warning("no answer to reqCurrentTime; splitting the range on the local clock")
        return datetime.now(UTC).replace(microsecond=0)

    def _words(self, contract: Contract, duration: str, bar: BarSize, what: str, use_rth: bool,
               end_text: str, live: bool = False) -> str:
        return (f"{'keepUpToDate ' if live else ''}historical bars {self._describe(contract)}: {duration} of "
                f"{bar.text} {what}, useRTH={int(bool(use_rth))}, end {end_text or 'now'}")

    def _bars_job(self, contract: Contract, chunk: Chunk, bar: BarSize, what: str, use_rth: bool,
                  timeout: float) -> _Job:
        rth = int(bool(use_rth))
        description = self._words(contract, chunk.duration_text, bar, what, use_rth, chunk.end_text)
        identity = (contract.conId, contract.exchange, chunk.end_text, bar.text, chunk.duration_text, rth,
                    what, 2, False)
        session = self.session
        scheduler = self.scheduler

        def send(job: _Job) -> None:
            bars: list = []

            def on_event(request: Request, name: str, args: tuple):
                if name == "historicalDataBatch":       # the fast reader: one call per message
                    bars.extend(args[1])
                elif name == "historicalData":
                    bars.append(_bar_tuple(args[1]))
                elif name == "historicalDataEnd":
                    request.finish(_Answer(bars, args[1], args[2]))
                return False

            request = Request(description,
                              lambda client, rid: client.reqHistoricalData(
                                  rid, contract, chunk.end_text, chunk.duration_text, bar.text, what, rth, 2,
                                  False, []),
                              end="historicalDataEnd", on_event=on_event, batch=True,
                              cancel=lambda client, rid: client.cancelHistoricalData(rid), timeout=timeout)

            def done(fut: concurrent.futures.Future) -> None:
                exc = fut.exception()
                if exc is None:
                    scheduler.answered(job, True, fut.result(), close=True)
                    job.future.set_result(fut.result())
                else:
                    cacheable = isinstance(exc, IBError) and exc.code not in (
                        0, NOT_CONNECTED, CONNECTIVITY_LOST, RESTORED_DATA_LOST)
                    scheduler.answered(job, False, exc, close=True, cacheable=cacheable)
                    job.future.set_exception(exc)

            request.future.add_done_callback(done)
            session.submit(request)

        return _Job(key=(contract.conId, what), identity=identity, small=bar.is_small,
                    weight=request_weight(what), description=description, send=send, timeout=timeout)


class LiveBars:
    """A keepUpToDate stream made by :meth:`History.stream`.

    ``df``: the current bars (DataFrame as :meth:`History.bars` returns, a fresh copy per read).
    ``updates``: updates received; ``reloads``: initial loads (1 + one per restore); ``error``: the
    IBError that ended the stream (None while it runs); ``closed``. ``close()`` cancels it.
    """

    def __init__(self, history: History, contract: Contract, duration: Duration, bar: BarSize, what: str,
                 use_rth: bool, on_update: Callable[[pd.DataFrame], None] | None, timeout: float):
        self.history = history
        self.contract = contract
        self.duration, self.bar, self.what_to_show, self.use_rth = duration, bar, what, bool(use_rth)
        self.on_update = on_update
        self.timeout = timeout
        self.updates = 0
        self.reloads = 0
        self.error: IBError | None = None
        self.closed = False
        self.description = history._words(contract, duration.text, bar, what, use_rth, "", live=True)
        self._lock = threading.Lock()
        self._rows: dict[pd.Timestamp, tuple] = {}
        self._frame: pd.DataFrame | None = None
        self._loading: list = []
        self._restoring = False
        self._loaded = threading.Event()
        self._restore_job: _Job | None = None
        self._identity = (contract.conId, contract.exchange, "", bar.text, duration.text, int(self.use_rth),
                          what, 2, True)
        self._job = self._new_job(self._send_first, holds_slot=True)
        self._request: Request | None = None

    def __repr__(self):
        return f"<LiveBars {self.description}: {len(self._rows)} bars, {self.updates} updates>"

    # --- public -----------------------------------------------------------------------------------
    @property
    def df(self) -> pd.DataFrame:
        with self._lock:
            if self._frame is None:
                rows = sorted(self._rows.items())
                if rows:
                    index = pd.DatetimeIndex([t for t, _ in rows], name="time").as_unit("ns")
                    values = [v for _, v in rows]
                    frame = pd.DataFrame(values, index=index, columns=list(COLUMNS))
                    frame["bar_count"] = frame["bar_count"].astype("int64")
                    self._frame = frame
                else:
                    self._frame = empty_frame()
            return self._frame.copy()

    def close(self) -> None:
        """Cancel the stream (cancelHistoricalData); no ``on_update`` call follows. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            restore_job, self._restore_job = self._restore_job, None
        if self._request is not None:
            self.history.session.cancel(self._request)
        self.history.scheduler.closed(self._job)
        if restore_job is not None:
            self.history.scheduler.closed(restore_job)
        self._loaded.set()

    def __enter__(self) -> "LiveBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    def _new_job(self, send: Callable[[_Job], None], holds_slot: bool) -> _Job:
        return _Job(key=(self.contract.conId, self.what_to_show), identity=self._identity, small=self.bar.is_small,
                    weight=1, description=self.description, send=send, timeout=self.timeout, stream=True,
                    holds_slot=holds_slot)

    def _send_args(self, client, rid: int) -> None:
        client.reqHistoricalData(rid, self.contract, "", self.duration.text, self.bar.text, self.what_to_show,
                                 int(self.use_rth), 2, True, [])

    def _start(self) -> None:
        """Queue the request and wait for the first bars (the job's future is set on the first
        historicalDataEnd, on IB's error, or by the session's timeout once sent)."""
        fut = self.history.scheduler.submit(self._job, share=False)
        try:
            fut.result()
        except BaseException:
            self.close()
            raise

    def _send_first(self, job: _Job) -> None:
        request = Request(self.description, self._start_fn, end="historicalDataEnd", on_event=self._on_event,
                          cancel=lambda client, rid: client.cancelHistoricalData(rid), subscription=True,
                          restore=self._on_restore, timeout=self.timeout)
        self._request = request

        def done(fut: concurrent.futures.Future) -> None:
            exc = fut.exception()
            if exc is not None:  # timeout or error before the first bars
                self.history.scheduler.answered(job, False, exc, close=True, cacheable=False)
                if not job.future.done():
                    job.future.set_exception(exc)

        request.future.add_done_callback(done)
        self.history.session.submit(request)

    def _start_fn(self, client, rid: int) -> None:
        """Runs on the session's pacer thread: the first time it sends; after a reconnect the
        re-request waits for its pacing turn in the scheduler instead."""
        with self._lock:
            restoring = self._restoring and not self.closed
        if not restoring:
            self._send_args(client, rid)
            return
        session = self.history.session

        def send_restore(job: _Job) -> None:
            session.send(lambda cl: self._send_args(cl, rid))

        job = self._new_job(send_restore, holds_slot=False)
        with self._lock:
            if self.closed:
                return
            self._restore_job = job
        self.history.scheduler.submit(job, share=False)

    def _on_restore(self, request: Request) -> None:
        with self._lock:
            self._restoring = True
            self._loading = []

    def _on_event(self, request: Request, name: str, args: tuple):
        if name == "historicalData":
            self._loading.append(_bar_tuple(args[1]))
        elif name == "historicalDataEnd":
            self._loaded_bars()
        elif name == "historicalDataUpdate":
            self._update(args[1])
        elif name == "error":
            code, text = args[1], args[2]
            err = IBError(code, text, self.description, args[0])
            with self._lock:
                self.error = err
                job = self._restore_job or self._job
            self.history.scheduler.answered(self._job, False, err, close=True, cacheable=False)
            if job is not self._job:
                self.history.scheduler.closed(job)
            if not self._job.future.done():
                self._job.future.set_exception(err)
        return False

    def _loaded_bars(self) -> None:
        frame = bars_frame(self._loading)
        self._loading = []
        with self._lock:
            if self.closed:
                return
            for t, row in zip(frame.index, frame.itertuples(index=False, name=None)):
                self._rows[t] = row
            self._frame = None
            self.reloads += 1
            job = self._restore_job or self._job
            self._restore_job = None
            self._restoring = False
        self.history.scheduler.answered(job, True, None, close=False)
        if not self._job.future.done():
            self._job.future.set_result(None)
        self._notify(self.df)

    def _update(self, bar) -> None:
        frame = bars_frame([_bar_tuple(bar)])
        t = frame.index[0]
        row = next(frame.itertuples(index=False, name=None))
        with self._lock:
            if self.closed or self._restoring:
                return
            self._rows[t] = row
            self._frame = None
            self.updates += 1
        self._notify(frame)

    def _notify(self, frame: pd.DataFrame) -> None:
        if self.on_update is None or self.closed:
            return
        try:
            self.on_update(frame)
        except Exception:
            log.exception("on_update of %s failed", self.description)
