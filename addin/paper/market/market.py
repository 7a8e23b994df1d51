"""The paper gateway's market model: instruments, the replay clock, live quotes and historical bars.

Pure Python + numpy + pandas, no sockets. Where prices come from (the real files in ``data/``, the
derived instruments, the time shift, the tick generator, how bars are built) is documented in
docs/paper-market.md; the pieces live in ``series.py`` (real series, time units, feeds),
``ticks.py`` (the per-second generator) and ``universe.py`` (contract details, matching).

Units: prices in the contract's currency, on its tick grid; sizes in shares, contracts, currency
units (FX) or coins (crypto); times tz-aware UTC (datetime) or epoch seconds (internally).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pandas as pd
from ibapi.contract import Contract

from . import ticks as tk
from .options import OptionBook, option_underlyings
from .series import DAY, HOUR, MONTH, Feed, unit_of, unit_start, unit_starts
from .sessions import SessionCalendar
from .universe import AROUND_THE_CLOCK, EXCHANGE_HOURS, MAX_SYNTHETIC, Instrument, build_universe, matches

__all__ = ["Bar", "BarSpec", "Instrument", "Market", "Quote", "WHAT_TO_SHOW", "on_tick_grid", "round_to_tick"]

UTC = UTC
WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK")


# --- tick grid helpers (also used by the order engine) ------------------------------------------------
def round_to_tick(price: float, min_tick: float) -> float:
    """The grid price nearest to ``price`` (ties to even), as the float nearest to its decimal value:
    round_to_tick(100.3449, 0.01) == 100.34, round_to_tick(1.082731, 0.00005) == 1.08275."""
    f = Fraction(str(min_tick)).limit_denominator(10**12)
    n = round(price * f.denominator / f.numerator)
    return (n * f.numerator) / f.denominator


def on_tick_grid(price: float, min_tick: float) -> bool:
    """Whether ``price`` is a whole number of ticks (tolerant to float representation only)."""
    f = Fraction(str(min_tick)).limit_denominator(10**12)
    q = price * f.denominator / f.numerator
    return abs(q - round(q)) <= 1e-11 * abs(q) + 1e-8


# --- value types ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quote:
    """The market of one instrument at one replay instant.

    bid/ask/bid_size/ask_size: None for an index; last/last_size: None for FX; volume: cumulative
    volume of the current day so far (None for FX and indexes); open/high/low: the current day's
    (high and low so far); close: the PREVIOUS day's close (IB tick type 9). A "day" is the local
    calendar day of the instrument's time zone (for series with daily bars: the current bar; in a gap
    between replayed days the last day's final values are shown)."""

    time: datetime
    bid: float | None
    ask: float | None
    last: float | None
    bid_size: float | None
    ask_size: float | None
    last_size: float | None
    volume: float | None
    open: float
    high: float
    low: float
    close: float

    @property
    def mid(self) -> float:
        """(bid + ask) / 2 (rounded to 10 decimals, so a midpoint on the grid prints as one), or last
        when there is no bid/ask."""
        if self.bid is not None and self.ask is not None:
            return round((self.bid + self.ask) / 2, 10)
        assert self.last is not None        # an instrument without bid/ask (an index) has trades
        return self.last


@dataclass(frozen=True)
class Bar:
    """One historical bar. time: bar start, tz-aware UTC. volume, wap and count are -1 where IB sends
    -1 (MIDPOINT, BID, ASK, BID_ASK), 0 for an index's TRADES (no volume)."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


@dataclass(frozen=True)
class BarSpec:
    """A bar size: ``seconds`` for sizes up to one week (1, 5, ... 86400, 604800), or ``months``."""

    seconds: int = 0
    months: int = 0

    def __post_init__(self):
        if (self.seconds > 0) == (self.months > 0) or self.seconds < 0 or self.months < 0:
            raise ValueError(f"a bar size needs seconds > 0 or months > 0 (not both), got {self}")


# --- the market -------------------------------------------------------------------------------------
class Market:
    """The replayed market. Deterministic for a (seed, start, synthetic) triple.

    seed: random stream of the tick generator; speed: replayed seconds per real second (0 freezes);
    start: replay time at construction (default now, UTC; naive means UTC); synthetic: how many
    SIM0001.. instruments to add (0..2000); clock: monotonic seconds (inject one for tests); hours:
    ``"around-the-clock"`` (default: every replayed day trades, the start day always does) or
    ``"exchange"`` (the weekday calendar: real weekdays kept, no bars on weekends and holidays, and
    intraday sessions: see ``sessions.py``; ``calendar`` is then the SessionCalendar, else None).
    Raises ValueError for synthetic out of range, a negative speed or unknown hours."""

    def __init__(self, seed: int = 1, speed: float = 1.0, start: datetime | None = None,
                 synthetic: int = 0, clock: Callable[[], float] = time.monotonic,
                 hours: str = AROUND_THE_CLOCK):
        if speed < 0:
            raise ValueError(f"speed must be >= 0 replayed seconds per real second, got {speed}")
        if not 0 <= synthetic <= MAX_SYNTHETIC:
            raise ValueError(f"synthetic must be between 0 and {MAX_SYNTHETIC}, got {synthetic}")
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.seed, self.speed, self.synthetic = seed, float(speed), synthetic
        self.start = start.astimezone(UTC)
        self._clock = clock
        self._t0 = clock()
        self._start_epoch = self.start.timestamp()
        self.hours = hours
        self.instruments: list[Instrument] = build_universe(seed, self._start_epoch, synthetic, hours)
        self._by_id = {inst.con_id: inst for inst in self.instruments}
        # Exchange hours: quotes stand still outside each instrument's sessions (sessions.py).
        self.calendar: SessionCalendar | None = SessionCalendar() if hours == EXCHANGE_HOURS else None
        # Listed options (options.py): strikes around each underlying's price at the start.
        underlyings = option_underlyings(self.instruments)
        prices = {inst.con_id: q.mid for inst, q in zip(underlyings, self.quotes(underlyings, self.start))}
        self.options = OptionBook.build(self.instruments, prices, self._start_epoch)

    # --- clock ---------------------------------------------------------------------------------------
    def epoch(self) -> float:
        """Current replay time in epoch seconds: start + speed * real seconds since construction."""
        return self._start_epoch + self.speed * (self._clock() - self._t0)

    def now(self) -> datetime:
        """Current replay time, tz-aware UTC."""
        return datetime.fromtimestamp(self.epoch(), UTC)

    def advance(self, seconds: float) -> datetime:
        """Move the replay clock ``seconds`` forward at once (tests: with speed 0 the replay time moves
        only this way, so a test decides exactly which quotes the orders see). Returns the new replay
        time. Raises ValueError for a negative step: the replay never goes back."""
        if seconds < 0:
            raise ValueError(f"the replay clock only moves forward, got {seconds} s")
        self._start_epoch += seconds
        return self.now()

    # --- instruments ---------------------------------------------------------------------------------
    def by_con_id(self, con_id: int) -> Instrument | None:
        return self._by_id.get(int(con_id or 0))

    def lookup(self, contract: Contract) -> list[Instrument]:
        """All instruments a (partial) Contract can mean, IB-style: a non-zero conId decides alone;
        otherwise see ``universe.matches``. Empty list: unknown; more than one: ambiguous."""
        if contract.conId:
            inst = self.by_con_id(contract.conId)
            return [inst] if inst is not None else []
        return [inst for inst in self.instruments if matches(inst, contract)]

    # --- quotes --------------------------------------------------------------------------------------
    def quote(self, inst: Instrument, at: datetime | None = None) -> Quote:
        """The quote of one instrument at ``at`` (default now())."""
        return self.quotes([inst], at)[0]

    def quotes(self, insts: Sequence[Instrument], at: datetime | None = None) -> list[Quote]:
        """Quotes of many instruments at one instant, in the order given. Instruments replaying daily
        or hourly bars are computed together with numpy; monthly ones (BTC) one by one. With exchange
        hours, an instrument outside its sessions shows the quote of its latest session's last second
        (``Quote.time`` stays ``at``)."""
        epoch = _epoch(at) if at is not None else self.epoch()
        when = datetime.fromtimestamp(epoch, UTC)
        at_pos: dict[int, Quote] = {}
        groups: dict[tuple, list[int]] = {}
        cal = self.calendar
        for pos, inst in enumerate(insts):
            f = inst.feed
            traded = cal.traded_epoch(inst, epoch) if cal is not None else epoch
            key = (f.series.name, str(f.tz), traded) if f.kind != MONTH else ("M", pos, traded)
            groups.setdefault(key, []).append(pos)
        for key, positions in groups.items():
            members, traded = [insts[p] for p in positions], key[-1]
            if members[0].feed.kind == MONTH:
                got = [_quote_monthly(members[0], traded, when)]
            else:
                got = _quotes_leaves(members, traded, when)
            for p, q in zip(positions, got):
                at_pos[p] = q
        return [at_pos[p] for p in range(len(insts))]

    # --- historical bars -----------------------------------------------------------------------------
    def bars(self, inst: Instrument, start: datetime, end: datetime, bar_size: BarSpec, what_to_show: str,
             use_rth: bool) -> list[Bar]:
        """Bars whose start lies in [start, end) and not after now(), oldest first; the bar holding
        now() covers only up to now. Bars at or coarser than the real series' own bars are the real
        bars (resampled); finer ones are aggregated from the tick generator, so they agree with the
        quotes and, summed up, with the real bars. useRTH keeps intraday bars to liquid hours.

        Raises ValueError (text fit for IB's error 162) for a whatToShow the instrument does not have."""
        what = check_what_to_show(inst, what_to_show)
        now = self.epoch()
        e0, e1 = _epoch(start), min(_epoch(end), math.floor(now) + 1.0)
        starts, ends = _grid(inst, bar_size, e0, e1, use_rth)
        if len(starts) == 0:
            return []
        ends = np.minimum(ends, math.floor(now) + 1)
        if _is_coarse(inst, bar_size, use_rth):
            agg = _coarse(inst, starts, ends, now, what)
        else:
            agg = _fine(inst, starts, ends, what)
        return _to_bars(inst, agg, what)

    def tick_path(self, inst: Instrument, start: datetime, end: datetime) -> pd.DataFrame:
        """The generated market second by second over [start, end): the model itself, not limited
        to now(); row t equals ``quote(inst, t)``. DataFrame indexed by second (tz-aware UTC), columns
        bid, ask, last, last_size, volume (cumulative for the day), bid_size, ask_size; NaN where the
        instrument has no such value. Seconds in a gap between replayed bars repeat the final state of
        the bar before (as quotes do). With exchange hours, seconds outside the instrument's sessions
        repeat the session's last second, with last_size 0 (no trade)."""
        e0, e1 = math.floor(_epoch(start)), math.ceil(_epoch(end))
        index = pd.date_range(pd.Timestamp(e0, unit="s", tz=UTC), periods=max(e1 - e0, 0), freq="s")
        cols = ["bid", "ask", "last", "last_size", "volume", "bid_size", "ask_size"]
        cal = self.calendar
        if cal is not None and cal.gated(inst):
            return self._gated_path(cal, inst, e0, e1, index, cols)
        first = e0
        m, inside = inst.feed.locate(e0)
        if not inside:  # start in a gap: begin with the last second of the bar before it
            bar_end = int(inst.feed.bounds(np.array([m]))[1][0])
            first = min(e0, bar_end - 1)
        frames = [_tape_frame(inst, tape) for tape in _tapes(inst, first, e1, session=True)]
        if not frames:
            return pd.DataFrame(index=index, columns=cols, dtype=float)
        df = pd.concat(frames)
        df = df[~df.index.duplicated()]
        df = df.reindex(df.index.union(index)).ffill().reindex(index)
        return df[cols]

    def _gated_path(self, cal: SessionCalendar, inst: Instrument, e0: int, e1: int, index: pd.DatetimeIndex,
                    cols: list[str]) -> pd.DataFrame:
        """tick_path with exchange hours: the generated seconds inside sessions; every other second
        repeats the session's last second before it, without a trade."""
        seconds = np.arange(e0, e1, dtype=np.int64)
        is_open = cal.open_mask(inst, seconds)
        frames = [_tape_frame(inst, tape) for tape in _tapes(inst, e0, e1, session=True)]
        df = pd.concat(frames) if frames else pd.DataFrame(columns=cols, dtype=float)
        df = df[~df.index.duplicated()].reindex(index)[cols]
        df.loc[~is_open, :] = np.nan
        if len(index) and not is_open[0]:      # begin at the close the quote stands at
            q = self.quote(inst, index[0].to_pydatetime())
            df.iloc[0] = [q.bid, q.ask, q.last, q.last_size, q.volume, q.bid_size, q.ask_size]
        df = df.astype(float).ffill()
        df.loc[~is_open, "last_size"] = np.where(df.loc[~is_open, "last"].isna(), np.nan, 0.0)
        return df


    def traded_seconds(self, inst: Instrument, start: datetime, end: datetime) -> pd.DataFrame:
        """The generated seconds of [start, end) that lie inside replayed bars (none in gaps: weekends,
        holidays; with exchange hours none outside the instrument's sessions either, as its quotes),
        not limited to now(): the source of historical ticks. Same columns as :meth:`tick_path`,
        indexed by second (tz-aware UTC)."""
        e0, e1 = math.floor(_epoch(start)), math.ceil(_epoch(end))
        frames = [_tape_frame(inst, tape) for tape in _tapes(inst, e0, e1, session=True)]
        cols = ["bid", "ask", "last", "last_size", "volume", "bid_size", "ask_size"]
        if not frames:
            return pd.DataFrame(columns=cols, dtype=float, index=pd.DatetimeIndex([], tz=UTC))
        df = pd.concat(frames)
        df = df[~df.index.duplicated()][cols]
        if self.calendar is not None and self.calendar.gated(inst):
            df = df[self.calendar.open_mask(inst, pd.DatetimeIndex(df.index).as_unit("s").asi8)]
        return df

    def sessions(self, inst: Instrument, start: datetime, end: datetime, use_rth: bool) -> list[tuple[int, int, int]]:
        """Trading sessions meeting [start, end): (start epoch, end epoch, local date ordinal) per
        local day that has a replayed bar. A session is the whole replayed day (the paper market
        trades around the clock on a bar's day; with exchange hours the day's sessions, see
        ``sessions.py``), or with ``use_rth`` its liquid hours (stocks 09:30-16:00 New York; ES and
        SPX 08:30-15:00 Chicago; FX and crypto: the whole day)."""
        tz, feed = inst.tz, inst.feed
        first, last = unit_of(DAY, tz, _epoch(start)), unit_of(DAY, tz, _epoch(end) - 1e-6)
        days = np.arange(first, last + 1, dtype=np.int64)
        bounds = unit_starts(DAY, tz, np.arange(first, last + 2, dtype=np.int64))
        out = []
        for j, day in enumerate(days.tolist()):
            d0, d1 = int(bounds[j]), int(bounds[j + 1])
            if feed.kind == DAY:
                if not feed.open_on(np.array([day]))[0]:
                    continue
            elif not len(feed.between(d0, d1)):
                continue
            if use_rth and inst.liquid:
                spans = [(d0 + inst.liquid[0], d0 + inst.liquid[1])]
            elif self.calendar is not None and self.calendar.gated(inst):
                spans = self.calendar.day_sessions(inst, day)     # exchange hours: the sessions it trades in
            else:
                spans = [(d0, d1)]
            out += [(s0, s1, day) for s0, s1 in spans if s1 > _epoch(start) and s0 < _epoch(end)]
        return out


def _epoch(when: datetime) -> float:
    """Epoch seconds of a datetime; a naive one is taken as UTC (never as the machine's zone)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


# --- whatToShow -------------------------------------------------------------------------------------
def check_what_to_show(inst: Instrument, what: str) -> str:
    """Normalise and check a whatToShow for an instrument. Raises ValueError with IB-like text."""
    w = (what or "").strip().upper()
    c = inst.contract
    name = f"{c.localSymbol or c.symbol}/{c.secType}@{c.exchange}"
    if w not in WHAT_TO_SHOW:
        raise ValueError(f"No historical market data for {name} {what}: the paper gateway offers "
                         f"{', '.join(WHAT_TO_SHOW)}")
    if w == "TRADES" and not inst.has_trades:
        raise ValueError(f"No historical market data for {name} TRADES: FX has no trades, "
                         f"use MIDPOINT, BID, ASK or BID_ASK")
    if w != "TRADES" and not inst.has_quotes:
        raise ValueError(f"No historical market data for {name} {w}: an index has no bid/ask, use TRADES")
    return w


# --- quotes: internals ------------------------------------------------------------------------------
def _grid_arrays(feeds: Sequence[Feed]):
    num = np.array([f.grid.num for f in feeds], dtype=np.int64)
    den = np.array([f.grid.den for f in feeds], dtype=np.int64)
    return num, den


def _locate_many(feeds: Sequence[Feed], epoch: float):
    """For feeds sharing one series and time zone: chained bar at ``epoch`` (m), whether epoch is
    inside it, and its (start, end) epochs. Before a feed's first bar: its first bar at second 0."""
    f0 = feeds[0]
    s = f0.series
    shift = np.array([f.shift for f in feeds], dtype=np.int64)
    rotation = np.array([f.rotation for f in feeds], dtype=np.int64)
    cu = unit_of(f0.kind, f0.tz, epoch) - shift
    k = (cu - s.unit[0]) // f0.period
    off = cu - k * f0.period
    i = np.searchsorted(s.unit, off, side="right") - 1
    m = k * s.n + i
    inside = s.unit[i] == off
    before = m < rotation
    m = np.where(before, rotation, m)
    units = s.unit[m % s.n] + (m // s.n) * f0.period + shift
    uniq, inv = np.unique(units, return_inverse=True)
    start = unit_starts(f0.kind, f0.tz, uniq)[inv]
    end = unit_starts(f0.kind, f0.tz, uniq + 1)[inv]
    return m, inside & ~before, before, start, end


def _prices(feeds: Sequence[Feed], m: np.ndarray, num: np.ndarray, den: np.ndarray):
    """(O, H, L, C) ticks of chained bar m[j] of feed j (vectorised ``Feed.ohlc``)."""
    s = feeds[0].series
    i, k = m % s.n, m // s.n
    factor = np.array([f.scale for f in feeds]) * s.growth ** k
    return tuple(np.rint(factor * col[i] * den / num).astype(np.int64) for col in (s.o, s.h, s.l, s.c))


def _quotes_leaves(insts: Sequence[Instrument], epoch: float, when: datetime) -> list[Quote]:
    """Quotes for instruments whose real bars are leaves (daily or hourly), one series + time zone."""
    feeds = [inst.feed for inst in insts]
    s = feeds[0].series
    num, den = _grid_arrays(feeds)
    m, inside, before, start, end = _locate_many(feeds, epoch)
    n = end - start
    sec = np.where(inside, np.floor(epoch - start).astype(np.int64), np.where(before, 0, n - 1))
    sec = np.clip(sec, 0, n - 1)
    o, h, l, c = _prices(feeds, m, num, den)
    keys = tk.mix(np.array([f.key for f in feeds], dtype=np.uint64), m)
    path = tk.path_at(tk.Leaf.make(n, o, h, l, c, keys), sec)
    rotation = np.array([f.rotation for f in feeds], dtype=np.int64)
    prev_close = np.where(m > rotation, _prices(feeds, np.maximum(m - 1, rotation), num, den)[3], o)
    vf = np.array([f.volume_factor for f in feeds])
    V = np.where(vf > 0, np.maximum(np.rint(s.v[m % s.n] * vf).astype(np.int64), n), 0)
    cum = tk.cum_volume(V, n, sec + 1)
    day = dict(open=o.copy(), high=path.hi.copy(), low=path.lo.copy(), close=prev_close, volume=cum.copy())
    if s.kind == HOUR:
        for j, inst in enumerate(insts):
            _hour_session(inst.feed, int(m[j]), day, j, path)
    return _assemble(insts, when, path, cum - tk.cum_volume(V, n, sec), day, keys, sec)


def _hour_session(feed: Feed, m: int, day: dict, j: int, path: tk.Path) -> None:
    """Day fields for an hourly series: the local day of bar m, from its earlier bars + bar m so far."""
    bar_start = int(feed.bounds(np.array([m]))[0][0])
    day_start = unit_start(DAY, feed.tz, unit_of(DAY, feed.tz, bar_start))
    earlier = feed.between(day_start, bar_start)
    first = m
    if len(earlier):
        o, h, l, _ = feed.ohlc(earlier)
        b0, b1 = feed.bounds(earlier)
        day["open"][j] = o[0]
        day["high"][j] = max(int(h.max()), int(path.hi[j]))
        day["low"][j] = min(int(l.min()), int(path.lo[j]))
        day["volume"][j] += int(feed.volume(earlier, b1 - b0).sum())
        first = int(earlier[0])
    day["close"][j] = feed.ohlc(np.array([first - 1]))[3][0] if first > feed.rotation else day["open"][j]


def _quote_monthly(inst: Instrument, epoch: float, when: datetime) -> Quote:
    """Quote of an instrument replaying monthly bars: the day leaf holding ``epoch``."""
    feed = inst.feed
    m, inside = feed.locate(epoch)
    start, end = (int(x[0]) for x in feed.bounds(np.array([m])))
    n = end - start
    sec = min(max(int(math.floor(epoch - start)) if inside else n - 1, 0), n - 1)
    if not inside and m == feed.rotation and epoch < start:
        sec = 0
    offsets, days = feed.days(m)
    j = int(np.searchsorted(offsets, sec, side="right")) - 1
    leaf = days.take([j])
    path = tk.path_at(leaf, np.array([sec - offsets[j]]))
    if j > 0:
        prev_close = int(days.c[j - 1])
    elif m > feed.rotation:
        prev_close = int(feed.ohlc(np.array([m - 1]))[3][0])
    else:
        prev_close = int(days.o[0])
    V = int(feed.volume(np.array([m]), n)[0])
    cum = tk.cum_volume(V, n, np.array([sec + 1, sec, offsets[j]]))
    day = dict(open=days.o[[j]], high=path.hi, low=path.lo, close=np.array([prev_close]),
               volume=np.array([cum[0] - cum[2]]))
    return _assemble([inst], when, path, np.array([cum[0] - cum[1]]), day, leaf.key,
                     np.array([sec - offsets[j]]))[0]


def _assemble(insts: Sequence[Instrument], when: datetime, path: tk.Path, size: np.ndarray, day: dict,
              keys: np.ndarray, sec: np.ndarray) -> list[Quote]:
    """Quotes from vectorised state (ticks and volume units, one element per instrument)."""
    sp = np.array([inst.feed.spread for inst in insts], dtype=np.int64)
    traded = np.array([inst.has_trades for inst in insts])
    # Traded: the trade is at the bid or the ask. FX: the generated path is the midpoint.
    bid = np.where(traded, np.where(path.at_bid, path.price, path.price - sp), path.price - sp // 2)
    bs, as_ = tk.book_draws(keys, sec)   # raw draws, mapped to sizes per instrument below
    cols = [x.tolist() for x in (path.price, bid, bid + sp, bs, as_, size, day["volume"], day["open"],
                                 day["high"], day["low"], day["close"])]
    out = []
    for j, inst in enumerate(insts):
        price, b, a, b_draw, a_draw, sz, vol, op, hi, lo, cl = (col[j] for col in cols)
        g, book = inst.feed.grid, inst.book
        num, den = g.num, g.den
        bid_px = ask_px = bid_size = ask_size = last = last_size = volume = None
        if inst.has_quotes:
            span = book.hi - book.lo + 1
            bid_px, ask_px = (b * num) / den, (a * num) / den
            bid_size = round((book.lo + b_draw % span) * book.lot, book.decimals)
            ask_size = round((book.lo + a_draw % span) * book.lot, book.decimals)
        if inst.has_trades:
            last = (price * num) / den
            if book.volume_unit:
                last_size = round(sz * book.volume_unit, 8)
                volume = round(vol * book.volume_unit, 8)
        out.append(Quote(when, bid_px, ask_px, last, bid_size, ask_size, last_size, volume,
                         (op * num) / den, (hi * num) / den, (lo * num) / den, (cl * num) / den))
    return out


# --- bars: the grid ---------------------------------------------------------------------------------
def _grid(inst: Instrument, spec: BarSpec, e0: float, e1: float, use_rth: bool):
    """(starts, ends) epoch arrays of the bars whose start lies in [e0, e1), aligned like IB's: to local
    midnight for intraday sizes (clipped to liquid hours with useRTH), local days, weeks starting
    Monday, calendar months."""
    tz = inst.tz
    if e1 <= e0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if spec.months:
        u0 = unit_of(MONTH, tz, e0) - 1
        u = np.arange(u0, unit_of(MONTH, tz, e1) + 1, dtype=np.int64)
        u = u[u % spec.months == 0]
        starts, ends = unit_starts(MONTH, tz, u), unit_starts(MONTH, tz, u + spec.months)
    elif spec.seconds >= 86400:
        step = spec.seconds // 86400
        days = np.arange(unit_of(DAY, tz, e0) - step, unit_of(DAY, tz, e1) + 1, dtype=np.int64)
        # weeks start on Monday (ordinal 1 is a Monday), other multi-day sizes on ordinal multiples
        first = days[((days - 1) % 7 == 0) if step == 7 else (days % step == 0)]
        starts, ends = unit_starts(DAY, tz, first), unit_starts(DAY, tz, first + step)
    else:
        days = np.arange(unit_of(DAY, tz, e0), unit_of(DAY, tz, e1) + 2, dtype=np.int64)
        starts, ends = _intraday_grid(inst, unit_starts(DAY, tz, days), spec.seconds, use_rth, e0, e1)
    keep = (starts >= e0) & (starts < e1)
    return starts[keep], ends[keep]


def _intraday_grid(inst: Instrument, day_starts: np.ndarray, size: int, use_rth: bool, e0: float, e1: float):
    """Bars of ``size`` seconds aligned to each local midnight (a day's last bar may be shorter; with
    useRTH clipped to the liquid hours), only those starting in [e0, e1)."""
    if use_rth and inst.liquid is not None:
        lo, hi = inst.liquid
    else:
        lo, hi = 0, None
    starts, ends = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for ds, de in zip(day_starts[:-1].tolist(), day_starts[1:].tolist()):
        w0, w1 = ds + lo, (de if hi is None else min(ds + hi, de))
        w0, top = max(w0, ds), min(w1, math.ceil(e1))
        if top <= w0 or w1 <= e0:
            continue
        k0 = max((w0 - ds) // size, (math.floor(e0) - ds) // size)
        k1 = -(-(top - ds) // size)
        grid = ds + size * np.arange(k0, k1, dtype=np.int64)
        starts.append(np.maximum(grid, w0))
        ends.append(np.minimum(grid + size, w1))
    return np.concatenate(starts), np.concatenate(ends)


def _is_coarse(inst: Instrument, spec: BarSpec, use_rth: bool) -> bool:
    """Whether bars of this size are unions of whole leaves: real daily / hourly bars, or the days of
    a monthly bar (then they are built in closed form, not from seconds)."""
    kind = inst.feed.kind
    if spec.months:
        return True
    if kind == DAY:
        return spec.seconds >= 86400
    if kind == HOUR:
        return spec.seconds % 3600 == 0 and not (use_rth and inst.liquid is not None and spec.seconds < 86400)
    return spec.seconds >= 86400  # monthly series: whole days are leaves


# --- bars: from real bars ---------------------------------------------------------------------------
@dataclass
class _Agg:
    """Aggregated bars: start epochs; o/h/l/c in ticks (float ticks for BID_ASK's averages); volume in
    units; count; wap, avg_bid, avg_ask in float ticks."""

    start: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    volume: np.ndarray
    count: np.ndarray
    wap: np.ndarray
    avg_bid: np.ndarray
    avg_ask: np.ndarray


def _coarse(inst: Instrument, starts: np.ndarray, ends: np.ndarray, now: float, what: str) -> _Agg:
    """Bars that are unions of whole leaves (real daily/hourly bars, or the days of a monthly bar):
    each leaf's values in closed form (a complete leaf: its OHLC; the leaf in progress: open,
    envelope high/low and the price at now), then grouped into the bars."""
    t0, leaf, s_end, volume = _leaf_table(inst, float(starts[0]), float(ends[-1]), now)
    if len(t0) == 0:
        return _empty_agg()
    per = _leaf_values(inst, leaf, s_end, volume, what)
    g = np.searchsorted(starts, t0, side="right") - 1
    ok = (g >= 0) & (t0 < ends[np.maximum(g, 0)])
    agg = _group(starts, g[ok], {k: v[ok] for k, v in per.items()})
    if what == "BID_ASK":
        agg.o, agg.c = agg.avg_bid, agg.avg_ask
    return agg


def _leaf_table(inst: Instrument, e0: float, e1: float, now: float):
    """Leaves meeting [e0, e1) that have started by ``now``: (start epochs, Leaf batch, last second
    counted (now's second for the leaf in progress), volume units traded up to it)."""
    feed = inst.feed
    m = feed.between(e0, e1)
    b0, b1 = feed.bounds(m)
    keep = b0 <= now
    m, b0, b1 = m[keep], b0[keep], b1[keep]
    n = b1 - b0
    V = feed.volume(m, n) if inst.book.volume_unit else np.zeros(len(m), dtype=np.int64)
    if feed.kind != MONTH:
        leaf = feed.leaf(m) if len(m) else None
        s_end = np.minimum(np.floor(now - b0).astype(np.int64), n - 1)
        return b0, leaf, s_end, tk.cum_volume(V, n, s_end + 1)
    starts: list[np.ndarray] = []
    leaves: list[tk.Leaf] = []
    offs: list[np.ndarray] = []
    bar_parts: list[np.ndarray] = []
    for i, mm in enumerate(m.tolist()):
        offsets, days = feed.days(mm)
        ls = b0[i] + offsets[:-1]
        pick = np.flatnonzero((ls < e1) & (ls + days.n > e0) & (ls <= now))
        starts.append(ls[pick])
        leaves.append(days.take(pick))
        offs.append(offsets[pick])
        bar_parts.append(np.full(len(pick), i))
    if not starts:
        return np.zeros(0, dtype=np.int64), None, None, None
    t0, off, bar = np.concatenate(starts), np.concatenate(offs), np.concatenate(bar_parts)
    leaf = tk.Leaf(*(np.concatenate([getattr(x, f) for x in leaves]) for f in tk.Leaf.FIELDS))
    s_end = np.minimum(np.floor(now - t0).astype(np.int64), leaf.n - 1)
    volume = tk.cum_volume(V[bar], n[bar], off + s_end + 1) - tk.cum_volume(V[bar], n[bar], off)
    return t0, leaf, s_end, volume


def _leaf_values(inst: Instrument, leaf: tk.Leaf, s_end: np.ndarray, volume: np.ndarray, what: str) -> dict:
    """Per leaf, up to second s_end: o, h, l, c (ticks) for ``what``, volume, count (trades = seconds),
    wap (typical price), avg_bid/avg_ask (polyline mean -/+ half the spread; float ticks)."""
    path = tk.path_at(leaf, s_end)
    hi, lo, price = path.hi, path.lo, path.price
    out = dict(volume=volume, count=s_end + 1, seconds=s_end + 1, wap=(hi + lo + price) / 3.0)
    out.update(_shift_quotes(inst, leaf.o, hi, lo, price, path.at_bid, tk.base_mean(leaf, s_end), s_end >= 1,
                             what))
    return out


def _shift_quotes(inst, o, hi, lo, price, at_bid, avg, after_first, what) -> dict:
    """o/h/l/c/avg_bid/avg_ask of a real bar (prefix) for ``what``, from its trade-price extremes.

    Traded instruments: second 0 and new highs trade at the bid, second 1 and new lows at the ask
    (ticks.py), so max bid = high, min ask = low, max ask = high + sp, min bid = low - sp (from second
    1 on), and the open's bid is the open. FX: bid/ask are the midpoint -/+ sp/2 at every second."""
    sp = inst.feed.spread
    if what == "TRADES" or not inst.has_quotes:
        return dict(o=o, h=hi, l=lo, c=price, avg_bid=avg, avg_ask=avg)
    if not inst.has_trades:  # FX
        half = sp // 2
        shift = {"MIDPOINT": 0, "BID": -half, "ASK": half, "BID_ASK": 0}[what]
        res = dict(o=o + shift, h=hi + shift, l=lo + shift, c=price + shift, avg_bid=avg - half,
                   avg_ask=avg + half)
        if what == "BID_ASK":
            res.update(h=hi + half, l=lo - half)
        return res
    bid_c = np.where(at_bid, price, price - sp)
    low_first = lambda low, first: np.where(after_first, low, first)  # noqa: E731  (prefix of 1 second)
    if what == "BID":
        return dict(o=o, h=hi, l=low_first(lo - sp, o), c=bid_c, avg_bid=avg, avg_ask=avg)
    if what == "ASK":
        return dict(o=o + sp, h=hi + sp, l=low_first(lo, o + sp), c=bid_c + sp, avg_bid=avg, avg_ask=avg)
    if what == "MIDPOINT":
        half = sp // 2
        return dict(o=o + half, h=hi + half, l=low_first(lo - half, o + half), c=bid_c + half,
                    avg_bid=avg, avg_ask=avg)
    # BID_ASK: time-average bid, max ask, min bid, time-average ask (averages: polyline -/+ sp/2)
    return dict(o=o, h=hi + sp, l=low_first(lo - sp, o), c=bid_c + sp, avg_bid=avg - sp / 2.0,
                avg_ask=avg + sp / 2.0)


def _group(starts: np.ndarray, g: np.ndarray, per: dict) -> _Agg:
    """Reduce per-part values (sorted by group index g) into one bar per group."""
    if len(g) == 0:
        return _empty_agg()
    first, last = _runs_of(g)
    vol = np.add.reduceat(per["volume"], first)
    secs = np.add.reduceat(per["seconds"].astype(np.float64), first)
    wsum = np.add.reduceat(per["wap"] * per["volume"], first)
    plain = np.add.reduceat(per["wap"] * per["seconds"], first) / secs
    return _Agg(starts[g[first]], per["o"][first], np.maximum.reduceat(per["h"], first),
                np.minimum.reduceat(per["l"], first), per["c"][last], vol,
                np.add.reduceat(per["count"], first), np.where(vol > 0, wsum / np.maximum(vol, 1), plain),
                np.add.reduceat(per["avg_bid"] * per["seconds"], first) / secs,
                np.add.reduceat(per["avg_ask"] * per["seconds"], first) / secs)


def _empty_agg() -> _Agg:
    z = np.zeros(0, dtype=np.int64)
    return _Agg(z, z, z, z, z, z, z, z.astype(float), z.astype(float), z.astype(float))


# --- bars: from the tick generator ------------------------------------------------------------------
@dataclass
class _Tape:
    """Consecutive generated seconds of one leaf. t: epoch seconds; price/bid/ask: ticks; size: volume
    units traded in the second; cum: the day's cumulative volume units after it (when asked)."""

    t: np.ndarray
    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    size: np.ndarray
    cum: np.ndarray | None
    key: int
    s: np.ndarray


def _fine(inst: Instrument, starts: np.ndarray, ends: np.ndarray, what: str) -> _Agg:
    """Bars finer than the leaves: generate the seconds inside the bar windows and reduce them."""
    reduced = [_reduce_tape(tape, starts, ends, what)
               for tape in _tapes(inst, int(starts[0]), int(ends[-1]), windows=(starts, ends))]
    parts = [p for p in reduced if p is not None]
    if not parts:
        return _empty_agg()
    p = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
    # Windows never straddle two leaves (both align to local days / hours), but merge to be safe.
    first, last = _runs_of(p["g"])
    vol = np.add.reduceat(p["volume"], first)
    secs = np.add.reduceat(p["seconds"], first)
    agg = _Agg(starts[p["g"][first]], p["o"][first], np.maximum.reduceat(p["h"], first),
               np.minimum.reduceat(p["l"], first), p["c"][last], vol, np.add.reduceat(p["count"], first),
               np.add.reduceat(p["wapsum"], first) / np.maximum(vol, 1),
               np.add.reduceat(p["bidsum"], first) / secs, np.add.reduceat(p["asksum"], first) / secs)
    if what == "BID_ASK":
        agg.o, agg.c = agg.avg_bid, agg.avg_ask
    return agg


def _runs_of(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each run of equal values in a sorted group-index array."""
    cut = np.flatnonzero(np.diff(g)) + 1
    return np.concatenate([[0], cut]), np.concatenate([cut, [len(g)]]) - 1


def _reduce_tape(tape: "_Tape", starts: np.ndarray, ends: np.ndarray, what: str) -> dict | None:
    """One leaf's seconds reduced per bar window: o/h/l/c of the series ``what`` shows (BID_ASK: max
    ask and min bid; its averages come from bidsum/asksum), volume, trade count, sum of price * size."""
    g = np.searchsorted(starts, tape.t, side="right") - 1
    ok = (g >= 0) & (tape.t < ends[np.maximum(g, 0)])
    if not ok.any():
        return None
    g, bid, ask, price, size = g[ok], tape.bid[ok], tape.ask[ok], tape.price[ok], tape.size[ok]
    shown = {"TRADES": price, "BID": bid, "ASK": ask, "BID_ASK": ask, "MIDPOINT": (bid + ask) // 2}[what]
    low = bid if what == "BID_ASK" else shown
    first, last = _runs_of(g)
    return dict(g=g[first], o=shown[first], h=np.maximum.reduceat(shown, first),
                l=np.minimum.reduceat(low, first), c=shown[last], volume=np.add.reduceat(size, first),
                count=np.add.reduceat((size > 0).astype(np.int64), first),
                wapsum=np.add.reduceat(price.astype(np.float64) * size, first),
                seconds=np.diff(np.append(first, len(g))).astype(np.float64),
                bidsum=np.add.reduceat(bid.astype(np.float64), first),
                asksum=np.add.reduceat(ask.astype(np.float64), first))


def _windows_runs(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """Merge adjacent/overlapping windows into runs of consecutive seconds."""
    runs: list[list[int]] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        if runs and s <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e])
    return [(s, e) for s, e in runs]


def _leaf_spans(inst: Instrument, e0: int, e1: int):
    """Yield (leaf (1,), leaf start epoch, volume info) for every leaf meeting [e0, e1).
    volume info: (V units of the real bar, its seconds, offset of the leaf in it)."""
    feed = inst.feed
    m = feed.between(e0, e1)
    if len(m) == 0:
        return
    b0, b1 = feed.bounds(m)
    n = b1 - b0
    V = feed.volume(m, n) if inst.book.volume_unit else np.zeros(len(m), dtype=np.int64)
    if feed.kind == MONTH:
        for mm, start, nn, vv in zip(m.tolist(), b0.tolist(), n.tolist(), V.tolist()):
            offsets, days = feed.days(mm)
            for j in range(len(offsets) - 1):
                ls = start + int(offsets[j])
                if ls < e1 and ls + int(days.n[j]) > e0:
                    yield days.take([j]), ls, (vv, nn, int(offsets[j]), mm)
    else:
        leaves = feed.leaf(m)
        for idx in range(len(m)):
            yield leaves.take([idx]), int(b0[idx]), (int(V[idx]), int(n[idx]), 0, int(m[idx]))


def _tapes(inst: Instrument, e0: int, e1: int, windows=None, session: bool = False):
    """Generated seconds over [e0, e1) leaf by leaf (only inside ``windows`` runs when given)."""
    runs = _windows_runs(*windows) if windows is not None else [(e0, e1)]
    sp = inst.feed.spread
    for leaf, ls, (V, n_bar, off, m) in _leaf_spans(inst, e0, e1):
        le = ls + int(leaf.n[0])
        for r0, r1 in runs:
            a, b = max(r0, ls), min(r1, le)
            if a >= b:
                continue
            s0, s1 = a - ls, b - ls
            path = tk.path_range(leaf, s0, s1)
            if inst.has_trades or not inst.has_quotes:
                bid = np.where(path.at_bid, path.price, path.price - sp)
            else:
                bid = path.price - sp // 2
            k = np.arange(off + s0, off + s1 + 1, dtype=np.int64)
            cumk = tk.cum_volume(V, n_bar, k)
            cum = None
            if session:
                cum = cumk[1:] - _session_base(inst, m, ls, off, V, n_bar)
            yield _Tape(np.arange(a, b, dtype=np.int64), path.price, bid, bid + sp, np.diff(cumk), cum,
                        int(leaf.key[0]), np.arange(s0, s1, dtype=np.int64))


def _session_base(inst: Instrument, m: int, leaf_start: int, off: int, V: int, n_bar: int) -> int:
    """Volume units to subtract from the bar's cumulative volume to get the day's (negative: add)."""
    feed = inst.feed
    if feed.kind == MONTH:
        return int(tk.cum_volume(V, n_bar, np.array([off]))[0])
    if feed.kind == HOUR:
        day_start = unit_start(DAY, feed.tz, unit_of(DAY, feed.tz, leaf_start))
        earlier = feed.between(day_start, leaf_start)
        if len(earlier) and inst.book.volume_unit:
            b0, b1 = feed.bounds(earlier)
            return -int(feed.volume(earlier, b1 - b0).sum())
    return 0


def _tape_frame(inst: Instrument, tape: _Tape) -> pd.DataFrame:
    grid, book = inst.feed.grid, inst.book
    idx = pd.to_datetime(tape.t, unit="s", utc=True)
    nan = np.full(len(tape.t), np.nan)
    cols: dict[str, np.ndarray] = {}
    if inst.has_quotes:
        bs, as_ = tk.book_draws(tape.key, tape.s)
        cols.update(bid=grid.price(tape.bid), ask=grid.price(tape.ask), bid_size=book.size(bs),
                    ask_size=book.size(as_))
    else:
        cols.update(bid=nan, ask=nan, bid_size=nan, ask_size=nan)
    if inst.has_trades:
        cols["last"] = grid.price(tape.price)
        unit = book.volume_unit
        if unit:
            assert tape.cum is not None     # frames are built from session tapes: cumulative volume asked
            cols["last_size"], cols["volume"] = np.round(tape.size * unit, 8), np.round(tape.cum * unit, 8)
        else:
            cols["last_size"] = cols["volume"] = nan
    else:
        cols.update(last=nan, last_size=nan, volume=nan)
    return pd.DataFrame(cols, index=idx)


# --- bars: output -----------------------------------------------------------------------------------
def _to_bars(inst: Instrument, agg: _Agg, what: str) -> list[Bar]:
    grid, unit = inst.feed.grid, inst.book.volume_unit
    g = grid.num / grid.den
    if what == "BID_ASK":
        o = np.round(np.asarray(agg.o, dtype=np.float64) * grid.num / grid.den, 10).tolist()
        c = np.round(np.asarray(agg.c, dtype=np.float64) * grid.num / grid.den, 10).tolist()
    else:
        o, c = grid.price(agg.o).tolist(), grid.price(agg.c).tolist()
    h, l = grid.price(agg.h).tolist(), grid.price(agg.l).tolist()
    times = [datetime.fromtimestamp(t, UTC) for t in agg.start.tolist()]
    if what != "TRADES":
        return [Bar(t, oo, hh, ll, cc, -1.0, -1.0, -1) for t, oo, hh, ll, cc in zip(times, o, h, l, c)]
    if not unit:  # an index: no volume
        return [Bar(t, oo, hh, ll, cc, 0.0, 0.0, 0) for t, oo, hh, ll, cc in zip(times, o, h, l, c)]
    vol = np.round(agg.volume * unit, 8).tolist()
    wap = np.round(agg.wap * g, 8).tolist()
    return [Bar(t, oo, hh, ll, cc, v, w, int(n)) for t, oo, hh, ll, cc, v, w, n
            in zip(times, o, h, l, c, vol, wap, agg.count.tolist())]

