"""IB's rules for historical bars (reqHistoricalData): the barSizeSetting spellings, durationStr
units and their limits, the step-size table, the whatToShow names and the pacing limits.

The one source of these tables for both sides: the client (``addin.market.history``) splits and
paces its requests by them, the paper gateway (``addin.paper.market.history_rules``) refuses
requests by them with IB's error texts. How each side reads the texts (a lenient cell grammar, IB's
exact grammar) and what it does with a refusal stays with that side.

Where the rules come from: IB's "Historical Data Limitations" page
(interactivebrokers.github.io/tws-api/historical_limitations.html; /work/shared/protocol/TWS-PROTOCOL.md
"Limits") and IB's own refusal texts (see the gateway module's docstring for the sources).

Time semantics (one for both sides): seconds ("S") are elapsed time; days and weeks are calendar
days and months and years calendar months, counted on the wall clock of a zone the caller chooses
(:meth:`Duration.start_before` counts on the zone of the ``end`` it is given). IB counts on its login
zone's calendar; the paper gateway does the same in its local zone, the client counts on UTC's
(where a day is always 24 hours) and overlaps its requests enough to cover the difference.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

__all__ = [
    "DAY", "BarSize", "BAR_SIZES", "BAR_SIZE_ALIASES", "lookup_bar_size",
    "Duration", "DURATION_UNITS", "UNIT_SECONDS", "UNIT_WORDS", "MIN_DURATION_SECONDS", "MAX_DURATION_COUNT",
    "StepRow", "STEP_TABLE", "step_row", "largest_duration",
    "WHAT_TO_SHOW", "KEEP_UP_TO_DATE_WHAT_TO_SHOW", "KEEP_UP_TO_DATE_MIN_BAR_SECONDS",
    "MAX_OPEN", "SMALL_BAR_SECONDS", "IDENTICAL_WINDOW", "BURST_WINDOW", "BURST_LIMIT", "TOTAL_WINDOW",
    "TOTAL_LIMIT", "request_weight",
]

DAY = 86_400  # seconds

# --------------------------------------------------------------------------------------------------
# Pacing and open requests
# --------------------------------------------------------------------------------------------------

MAX_OPEN = 50                 # historical requests open at once, any bar size (error 322 beyond)
SMALL_BAR_SECONDS = 30        # bars this long or shorter are "small bars": the pacing rules below apply
IDENTICAL_WINDOW = 15.0       # s: no identical small-bar request within this
BURST_WINDOW = 2.0            # s: fewer than BURST_LIMIT requests per contract, exchange, whatToShow within this
BURST_LIMIT = 6
TOTAL_WINDOW = 600.0          # s: at most TOTAL_LIMIT small-bar requests within this
TOTAL_LIMIT = 60
# A violation is error 162 "...pacing violation". For 1 min bars and larger these limits were lifted.


def request_weight(what_to_show: str) -> int:
    """How many requests one counts as in the pacing rules: BID_ASK counts twice."""
    return 2 if (what_to_show or "").upper() == "BID_ASK" else 1


# --------------------------------------------------------------------------------------------------
# Bar sizes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarSize:
    """A barSizeSetting: ``text`` as IB spells it, ``seconds`` for bars up to a week, ``months`` for
    monthly bars. Two bar sizes are equal when their lengths are ("1W" == "1 week")."""

    text: str = field(compare=False)
    seconds: int = 0
    months: int = 0

    @property
    def nominal_seconds(self) -> int:
        """Length used to compare bar sizes (a month counts 31 days, as in IB's step table)."""
        return self.seconds or self.months * 31 * DAY

    @property
    def is_small(self) -> bool:
        """30 secs or less: IB's small-bar pacing rules apply."""
        return 0 < self.seconds <= SMALL_BAR_SECONDS

    @property
    def is_daily_or_longer(self) -> bool:
        """1 day, 1 week or 1 month: IB dates these bars with a date only."""
        return self.seconds >= DAY or self.months > 0

    @property
    def is_multi_day(self) -> bool:
        """1 week or 1 month."""
        return self.seconds > DAY or self.months > 0

    def __str__(self) -> str:
        return self.text


#: IB's legal barSizeSetting spellings, in IB's order (the order IB lists them in error 321).
BAR_SIZES: dict[str, BarSize] = {t: BarSize(t, s) for t, s in [
    ("1 secs", 1), ("5 secs", 5), ("10 secs", 10), ("15 secs", 15), ("30 secs", 30),
    ("1 min", 60), ("2 mins", 120), ("3 mins", 180), ("5 mins", 300), ("10 mins", 600),
    ("15 mins", 900), ("20 mins", 1200), ("30 mins", 1800), ("1 hour", 3600), ("2 hours", 7200),
    ("3 hours", 10800), ("4 hours", 14400), ("8 hours", 28800), ("1 day", DAY), ("1W", 7 * DAY)]}
BAR_SIZES["1M"] = BarSize("1M", months=1)
#: Spellings IB's bar-size documentation (and ib_async) use besides the legal list.
BAR_SIZE_ALIASES = {"1 week": "1W", "1 month": "1M"}


def lookup_bar_size(text: str) -> BarSize | None:
    """The bar size of exactly IB's spelling (or an alias); None for anything else ("1 sec", "1 W")."""
    return BAR_SIZES.get(BAR_SIZE_ALIASES.get(text, text))


# --------------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------------

DURATION_UNITS = "SDWMY"
#: Nominal unit lengths in seconds, as IB's step table compares durations. A month counts 31 days
#: (the longest month, so an "N D" that fits a calendar month compares as no longer than "1 M"); a
#: year 365 days (IB: "durations longer than 365 days must be made in years").
UNIT_SECONDS = {"S": 1, "D": DAY, "W": 7 * DAY, "M": 31 * DAY, "Y": 365 * DAY}
UNIT_WORDS = {"S": "seconds", "D": "days", "W": "weeks", "M": "months", "Y": "years"}
MIN_DURATION_SECONDS = 30
#: The largest count IB takes per unit in one durationStr (error 321 beyond); years are unbounded.
MAX_DURATION_COUNT = {"S": 86_400, "D": 365, "W": 52, "M": 12}


def _months_before(end: datetime, months: int) -> datetime:
    """``end`` moved back by whole calendar months, the day clamped to the target month's length."""
    index = end.year * 12 + (end.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    day = min(end.day, calendar.monthrange(year, month)[1])
    return end.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class Duration:
    """A durationStr: ``count`` of ``unit`` (S seconds, D days, W weeks, M months, Y years)."""

    count: int
    unit: str

    @property
    def text(self) -> str:
        """As IB takes it: "<count> <unit>"."""
        return f"{self.count} {self.unit}"

    def seconds(self) -> int:
        """Nominal length in seconds (:data:`UNIT_SECONDS`): how IB's step table compares durations."""
        return self.count * UNIT_SECONDS[self.unit]

    def ib_legal(self) -> bool:
        """Whether IB takes this in one durationStr (S 30..86400, D <= 365, W <= 52, M <= 12)."""
        limit = MAX_DURATION_COUNT.get(self.unit)
        return (self.unit != "S" or self.count >= MIN_DURATION_SECONDS) and (limit is None or self.count <= limit)

    def start_before(self, end: datetime) -> datetime:
        """Where a request of this duration ending at ``end`` starts.

        Seconds are elapsed time. Days and weeks are calendar days and months and years calendar
        months (Mar 31 - 1 M = Feb 28/29, Feb 29 - 1 Y = Feb 28), counted on the wall clock of
        ``end``'s own zone: pass ``end`` in the zone whose calendar should count (in UTC a day is
        always 24 hours). The result is in ``end``'s zone; a wall time that falls into a DST gap is
        read with fold=0.
        """
        if self.unit == "S":
            if end.tzinfo is None:
                return end - timedelta(seconds=self.count)
            return (end.astimezone(UTC) - timedelta(seconds=self.count)).astimezone(end.tzinfo)
        if self.unit == "D":
            start = end - timedelta(days=self.count)  # aware arithmetic is wall-clock arithmetic
        elif self.unit == "W":
            start = end - timedelta(weeks=self.count)
        elif self.unit == "M":
            start = _months_before(end, self.count)
        else:
            start = _months_before(end, 12 * self.count)
        if start.tzinfo is not None:
            start = start.astimezone(UTC).astimezone(start.tzinfo)  # normalise gap times
        return start

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------------
# Step sizes
# --------------------------------------------------------------------------------------------------


class StepRow(NamedTuple):
    """One row of IB's step-size table: the bar sizes IB serves for a duration up to ``duration``."""

    duration: Duration
    smallest: BarSize
    largest: BarSize


_B = BAR_SIZES
#: IB's step-size table, shortest duration first. A duration between two rows takes the next larger
#: row, one longer than the last row the last row (durations compared by Duration.seconds()).
STEP_TABLE: tuple[StepRow, ...] = (
    StepRow(Duration(60, "S"), _B["1 secs"], _B["1 min"]),
    StepRow(Duration(120, "S"), _B["1 secs"], _B["2 mins"]),
    StepRow(Duration(1800, "S"), _B["1 secs"], _B["30 mins"]),
    StepRow(Duration(3600, "S"), _B["5 secs"], _B["1 hour"]),
    StepRow(Duration(14400, "S"), _B["10 secs"], _B["3 hours"]),
    StepRow(Duration(28800, "S"), _B["30 secs"], _B["8 hours"]),
    StepRow(Duration(1, "D"), _B["1 min"], _B["1 day"]),
    StepRow(Duration(2, "D"), _B["2 mins"], _B["1 day"]),
    StepRow(Duration(1, "W"), _B["3 mins"], _B["1W"]),
    StepRow(Duration(1, "M"), _B["30 mins"], _B["1M"]),
    StepRow(Duration(1, "Y"), _B["1 day"], _B["1M"]),
)


def step_row(duration: Duration) -> StepRow:
    """The row of :data:`STEP_TABLE` that rules ``duration``."""
    length = duration.seconds()
    for row in STEP_TABLE:
        if length <= row.duration.seconds():
            return row
    return STEP_TABLE[-1]


def largest_duration(bar: BarSize) -> Duration:
    """The longest duration of a step-table row that allows ``bar`` (its smallest bar is no larger):
    "1 secs" -> 1800 S, "1 min" -> 1 D, "30 mins" -> 1 M, "1 day" -> 1 Y."""
    return [row.duration for row in STEP_TABLE if row.smallest.nominal_seconds <= bar.nominal_seconds][-1]


# --------------------------------------------------------------------------------------------------
# whatToShow
# --------------------------------------------------------------------------------------------------

#: IB's whatToShow values that give bars (IB's list without SCHEDULE, which answers with a schedule).
WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST", "HISTORICAL_VOLATILITY",
                "OPTION_IMPLIED_VOLATILITY", "REBATE_RATE", "FEE_RATE", "YIELD_BID", "YIELD_ASK",
                "YIELD_BID_ASK", "YIELD_LAST", "AGGTRADES")
#: whatToShow values IB streams with keepUpToDate.
KEEP_UP_TO_DATE_WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK")
#: keepUpToDate needs bars of at least this many seconds ("bar sizes of 5 seconds or greater").
KEEP_UP_TO_DATE_MIN_BAR_SECONDS = 5
