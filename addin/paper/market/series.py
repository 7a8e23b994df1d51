"""Replayed price series: the real bars in ``data/``, the time units they live on, and *feeds*: the
stated, deterministic transformations that turn one real series into one instrument's bars.

Time units. A real series is indexed by integer units: ``D`` local calendar days (date ordinals in
the instrument's time zone), ``H`` UTC hours since the epoch, ``M`` local calendar months
(year * 12 + month - 1; the file's month-END labels become the month they close). A feed shifts its
series by a whole number of units so that the bar the instrument shows as its latest contains the
gateway's start time. Bars keep their real gaps (weekends, holidays), just on shifted dates.

Chaining. After the last real bar the series starts again from its first bar, every price multiplied
by ``growth = last close / first open`` per pass, so the price is continuous (the first open of pass
k+1 equals the last close of pass k). Chained bar ``m`` is real bar ``m % N`` in pass ``m // N``,
placed ``m // N`` periods later (a period is the real span plus one unit). A feed's *rotation* r
makes chained bar r its first bar: the instrument shows N bars, r..r+N-1, the last of which holds
the start time. Rotation 0 replays the file itself.

Prices of chained bar m: ``round_to_tick(scale * growth ** (m // N) * real_price)``; volume:
``round(real_volume * volume_factor)`` units, at least one unit per second of the bar (so every
second has a trade). All prices are handled in integer ticks (see :class:`TickGrid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from fractions import Fraction
from functools import cache, lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from . import ticks as tk

DAY, HOUR, MONTH = "D", "H", "M"
NATIVE_SECONDS = {DAY: 86400, HOUR: 3600, MONTH: 2592000}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

SERIES_FILES = {
    "GOOG_1d": ("GOOG_1d_2004-2013.csv", DAY),
    "EURUSD_1h": ("EURUSD_1h_2017-2018.csv", HOUR),
    "BTCUSD_1M": ("BTCUSD_1M_2012-2024.csv", MONTH),
}


# --- the tick grid ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TickGrid:
    """A minimum tick as an exact fraction num/den (0.01 = 1/100, 0.00005 = 1/20000, 0.25 = 1/4).

    A price of t ticks is ``(t * num) / den``: one correctly rounded division, so the float is the
    one nearest to the decimal price (100.34 prints as 100.34, never 100.34000000000001)."""

    num: int
    den: int

    @classmethod
    def of(cls, tick: float) -> "TickGrid":
        f = Fraction(str(tick)).limit_denominator(10**12)
        if f <= 0:
            raise ValueError(f"minTick must be positive, got {tick!r}")
        return cls(f.numerator, f.denominator)

    @property
    def size(self) -> float:
        return self.num / self.den

    def ticks(self, price) -> np.ndarray:
        """Nearest tick counts (int64) of prices (float or array)."""
        return np.rint(np.asarray(price, dtype=np.float64) * self.den / self.num).astype(np.int64)

    def price(self, ticks) -> np.ndarray:
        """Prices (float64) of tick counts."""
        return (np.asarray(ticks, dtype=np.int64) * self.num) / self.den


# --- real series ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RealSeries:
    """One real data file. unit: int64 (N,) time units (see module doc); o, h, l, c, v: float64 (N,)."""

    name: str
    kind: str
    unit: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray

    @property
    def n(self) -> int:
        return len(self.unit)

    @property
    def period(self) -> int:
        """Units from the first bar of one pass to the first bar of the next."""
        return int(self.unit[-1] - self.unit[0] + 1)

    @property
    def growth(self) -> float:
        """Price factor per pass: last close / first open (keeps the chained price continuous)."""
        return float(self.c[-1] / self.o[0])


@cache
def load_series(name: str) -> RealSeries:
    """Read ``data/<file>`` (first column timestamps, then Open, High, Low, Close, Volume)."""
    filename, kind = SERIES_FILES[name]
    with resources.files(__package__).joinpath("data", filename).open("r") as fh:
        df = pd.read_csv(fh, index_col=0, parse_dates=True)
    stamps = df.index
    if kind == DAY:
        unit = np.array([d.toordinal() for d in stamps.date], dtype=np.int64)
    elif kind == HOUR:  # naive timestamps are UTC
        unit = (stamps.as_unit("s").asi8 // 3600).astype(np.int64)
    else:  # month-end labels: the month that bar covers
        unit = (stamps.year * 12 + stamps.month - 1).to_numpy(dtype=np.int64)
    if (np.diff(unit) <= 0).any():
        raise ValueError(f"{filename}: timestamps must be strictly increasing")
    cols = [df[c].to_numpy(dtype=np.float64) for c in ("Open", "High", "Low", "Close", "Volume")]
    return RealSeries(name, kind, unit, *cols)


# --- time units -------------------------------------------------------------------------------------
def unit_of(kind: str, tz: ZoneInfo, epoch: float) -> int:
    """The unit holding an instant (epoch seconds)."""
    if kind == HOUR:
        return int(epoch // 3600)
    local = datetime.fromtimestamp(epoch, tz)
    return local.date().toordinal() if kind == DAY else local.year * 12 + local.month - 1


@lru_cache(maxsize=1 << 16)
def unit_start(kind: str, tz: ZoneInfo, unit: int) -> int:
    """Epoch seconds at which a unit starts (local midnight for D and M)."""
    if kind == HOUR:
        return unit * 3600
    if kind == DAY:
        day = date.fromordinal(unit)
    else:
        day = date(unit // 12, unit % 12 + 1, 1)
    return int(datetime.combine(day, dtime(), tzinfo=tz).timestamp())


def unit_starts(kind: str, tz: ZoneInfo, units: np.ndarray) -> np.ndarray:
    """Vectorised :func:`unit_start`: int64 array of epoch seconds."""
    units = np.asarray(units, dtype=np.int64)
    if kind == HOUR:
        return units * 3600
    if len(units) <= 64:
        return np.array([unit_start(kind, tz, int(u)) for u in units], dtype=np.int64)
    if kind == DAY:
        days = (units - _EPOCH_ORDINAL).astype("datetime64[D]")
    else:
        days = np.array([f"{u // 12:04d}-{u % 12 + 1:02d}-01" for u in units], dtype="datetime64[D]")
    local = pd.DatetimeIndex(days).tz_localize(tz, nonexistent="shift_forward", ambiguous=False)
    return local.as_unit("s").asi8.astype(np.int64)


def day_offsets(tz: ZoneInfo, start: int, end: int) -> np.ndarray:
    """Seconds from ``start`` to each local midnight in (start, end), with 0 first and end-start last:
    the calendar days of a monthly bar."""
    first = unit_of(DAY, tz, start)
    last = unit_of(DAY, tz, end - 1)
    mids = unit_starts(DAY, tz, np.arange(first, last + 2, dtype=np.int64)) - start
    inner = mids[(mids > 0) & (mids < end - start)]
    return np.concatenate([[0], inner, [end - start]]).astype(np.int64)


# --- feeds ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Feed:
    """One instrument's replayed bars: a real series, chained, rotated, scaled and shifted.

    series: the real data; tz: the instrument's time zone (day and month boundaries); grid: its tick;
    scale: price factor; rotation: first chained bar; key: uint64 random stream (seed + path name;
    instruments that must move together share it); spread: bid/ask spread in ticks (even, so the
    midpoint is on the grid); volume_factor: volume units per real volume unit (0: no volume);
    shift: replay unit - chained unit (set by :meth:`anchor`)."""

    series: RealSeries
    tz: ZoneInfo
    grid: TickGrid
    scale: float
    rotation: int
    key: int
    spread: int
    volume_factor: float
    shift: int = 0
    latest: int = -1
    period: int = 0
    _days: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.period = self.period or self.series.period
        self.latest = self.latest if self.latest >= 0 else self.last

    @property
    def kind(self) -> str:
        return self.series.kind

    @property
    def last(self) -> int:
        """Chained index of the bar that holds the start time."""
        return self.rotation + self.series.n - 1

    def anchor(self, start_epoch: float, *, weekdays: bool = False, weekend_open: bool = True) -> "Feed":
        """Shift so that the latest bar shown holds ``start_epoch``.

        Default (``weekdays=False``, daily series shifted by whole days): bar :attr:`last`, the
        file's last bar, is the day holding the start; the real weekdays move with the shift.

        ``weekdays=True`` (daily series only): the shift is a whole number of weeks, so a real
        Monday is replayed on a Monday and real holidays stay gaps; each pass of the chain is a
        whole number of weeks long (:attr:`period`). The latest bar (:attr:`latest`) is the most
        recent real bar, at or before :attr:`last`, with the start's weekday, moved onto the
        start's date. On a Saturday or Sunday: with ``weekend_open`` (the paper market trades
        around the clock) the start day still gets a bar by the default rule; without it (exchange
        hours) the latest bar is the Friday before, and the start lies in a gap (no trading)."""
        start_unit = unit_of(self.kind, self.tz, start_epoch)
        if not weekdays or self.kind != DAY:
            self.shift = start_unit - int(self.chained_units(np.array([self.last]))[0])
            return self
        weekday = (start_unit - 1) % 7          # ordinal 1 (0001-01-01) is a Monday
        if weekday >= 5 and weekend_open:
            self.shift = start_unit - int(self.chained_units(np.array([self.last]))[0])
            return self
        self.period = -(-self.series.period // 7) * 7
        wanted = min(weekday, 4)
        target = start_unit - (weekday - wanted)
        m = np.arange(max(self.rotation, self.last - 40), self.last + 1, dtype=np.int64)
        cu = self.chained_units(m)
        same = m[(cu - 1) % 7 == wanted]
        self.latest = int(same[-1]) if len(same) else self.last
        self.shift = target - int(self.chained_units(np.array([self.latest]))[0])
        if not len(same):       # no such weekday in the last 40 bars (never for real stock data)
            self.shift -= self.shift % 7
        return self

    # chained bars -> real bars
    def split(self, m) -> tuple[np.ndarray, np.ndarray]:
        m = np.asarray(m, dtype=np.int64)
        return m % self.series.n, m // self.series.n

    def chained_units(self, m) -> np.ndarray:
        i, k = self.split(m)
        return self.series.unit[i] + k * self.period

    def units(self, m) -> np.ndarray:
        """Replay units of chained bars."""
        return self.chained_units(m) + self.shift

    def bounds(self, m) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) epoch seconds (int64 arrays) of chained bars."""
        u = self.units(m)
        return unit_starts(self.kind, self.tz, u), unit_starts(self.kind, self.tz, u + 1)

    def ohlc(self, m) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Prices of chained bars in ticks: (O, H, L, C) int64 arrays."""
        i, k = self.split(m)
        f = self.scale * self.series.growth ** k
        s, ticks = self.series, self.grid.ticks
        return ticks(f * s.o[i]), ticks(f * s.h[i]), ticks(f * s.l[i]), ticks(f * s.c[i])

    def volume(self, m, n) -> np.ndarray:
        """Volume units of chained bars (int64), at least ``n`` (one unit per second)."""
        i, _ = self.split(m)
        if not self.volume_factor:
            return np.zeros(np.shape(i), dtype=np.int64)
        return np.maximum(np.rint(self.series.v[i] * self.volume_factor).astype(np.int64), n)

    def bar_key(self, m) -> np.ndarray:
        return tk.mix(self.key, m)

    # replay time -> chained bars
    def locate(self, epoch: float) -> tuple[int, bool]:
        """The chained bar holding ``epoch`` (inside=True) or, in a gap, the last bar before it
        (inside=False). Before the instrument's first bar: (rotation, False)."""
        cu = unit_of(self.kind, self.tz, epoch) - self.shift
        m, inside = self._at_unit(cu)
        if m < self.rotation:
            return self.rotation, False
        return m, inside

    def _at_unit(self, cu: int) -> tuple[int, bool]:
        s = self.series
        k = (cu - int(s.unit[0])) // self.period
        off = cu - k * self.period
        i = int(np.searchsorted(s.unit, off, side="right")) - 1
        return k * s.n + i, bool(s.unit[i] == off)

    def between(self, e0: float, e1: float) -> np.ndarray:
        """Chained bars (int64, ascending) whose span meets [e0, e1), from the feed's first bar on."""
        if e1 <= e0:
            return np.zeros(0, dtype=np.int64)
        m0, inside0 = self._at_unit(unit_of(self.kind, self.tz, e0) - self.shift)
        m1, _ = self._at_unit(unit_of(self.kind, self.tz, e1 - 1e-6) - self.shift)
        first = max(m0 if inside0 else m0 + 1, self.rotation)
        return np.arange(first, m1 + 1, dtype=np.int64)

    def open_on(self, units: np.ndarray) -> np.ndarray:
        """Whether a bar exists at each replay unit (bool array): used for trading-hours strings."""
        found = [self._at_unit(int(u) - self.shift) for u in units]
        return np.array([inside and m >= self.rotation for m, inside in found], dtype=bool)

    # leaves (bars whose seconds are generated directly)
    def leaf(self, m) -> tk.Leaf:
        """Leaves of D/H chained bars (arrays)."""
        start, end = self.bounds(m)
        o, h, l, c = self.ohlc(m)
        return tk.Leaf.make(end - start, o, h, l, c, self.bar_key(m))

    def days(self, m: int) -> tuple[np.ndarray, tk.Leaf]:
        """For a monthly bar: (offsets of its local days from the bar start, their leaves). Cached."""
        got = self._days.get(m)
        if got is None:
            start, end = (int(x[0]) for x in self.bounds(np.array([m])))
            offsets = day_offsets(self.tz, start, end)
            o, h, l, c = (int(x[0]) for x in self.ohlc(np.array([m])))
            got = (offsets, tk.split_days(o, h, l, c, int(self.bar_key(np.array([m]))[0]), offsets))
            if len(self._days) > 64:
                self._days.clear()
            self._days[m] = got
        return got
