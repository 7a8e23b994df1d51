"""US exchange holidays and the expiry dates the paper option classes list (docs/paper-market.md,
"Options"): weeklies, third-Friday monthlies, quarterlies, SPXW dailies.

Holidays are the NYSE/CBOE full closures: New Year's Day (a Saturday one is not moved), Martin Luther
King Day, Presidents' Day, Good Friday, Memorial Day, Juneteenth, Independence Day, Labor Day,
Thanksgiving and Christmas; a fixed-date holiday on a Saturday is observed the Friday before, on a
Sunday the Monday after. An expiry that falls on a holiday moves to the business day before, as the
OCC moves it.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

QUARTER_MONTHS = (3, 6, 9, 12)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th ``weekday`` (Monday 0) of a month; n = -1: the last."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def holidays(year: int) -> frozenset[date]:
    """The exchange's full-day closures of ``year`` (see the module docstring)."""
    out = {_nth_weekday(year, 1, 0, 3), _nth_weekday(year, 2, 0, 3), easter(year) - timedelta(days=2),
           _nth_weekday(year, 5, 0, -1), _nth_weekday(year, 9, 0, 1), _nth_weekday(year, 11, 3, 4)}
    for month, day in ((1, 1), (6, 19), (7, 4), (12, 25)):
        d = date(year, month, day)
        if d.weekday() == 5 and (month, day) != (1, 1):
            d -= timedelta(days=1)
        elif d.weekday() == 6:
            d += timedelta(days=1)
        out.add(d)
    return frozenset(out)


def is_business_day(d: date) -> bool:
    return d.weekday() < 5 and d not in holidays(d.year)


def on_business_day(d: date) -> date:
    """``d``, or the business day before it when the exchange is closed that day."""
    while not is_business_day(d):
        d -= timedelta(days=1)
    return d


def business_days(first: date, count: int) -> list[date]:
    """The first ``count`` business days from ``first`` (included when it is one)."""
    out: list[date] = []
    d = first
    while len(out) < count:
        if is_business_day(d):
            out.append(d)
        d += timedelta(days=1)
    return out


def fridays(first: date, count: int) -> list[date]:
    """The ``count`` Fridays from ``first`` (included when a Friday), each moved off a holiday."""
    friday = first + timedelta(days=(4 - first.weekday()) % 7)
    return [on_business_day(friday + timedelta(days=7 * k)) for k in range(count)]


def third_friday(year: int, month: int) -> date:
    return _nth_weekday(year, month, 4, 3)


def months_from(first: date, count: int, only: tuple[int, ...] | None = None) -> list[tuple[int, int]]:
    """(year, month) of ``count`` months from ``first``'s month on (``only``: just those months)."""
    out: list[tuple[int, int]] = []
    year, month = first.year, first.month
    while len(out) < count:
        if only is None or month in only:
            out.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def monthly(year: int, month: int) -> date:
    """A month's standard expiry: its third Friday (the Thursday before when that is a holiday)."""
    return on_business_day(third_friday(year, month))


def quarter_end(year: int, month: int) -> date:
    """A quarter's end-of-quarter expiry: the last business day of its last month."""
    return on_business_day(date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1))


__all__ = ["QUARTER_MONTHS", "holidays", "is_business_day", "on_business_day", "business_days", "fridays",
           "third_friday", "months_from", "monthly", "quarter_end", "easter"]
