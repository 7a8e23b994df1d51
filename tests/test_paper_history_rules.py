"""IB's historical request rules (addin.paper.market.history_rules): step sizes, bar sizes, durations,
endDateTime, whatToShow, the whole-request check order, and the per-connection pacer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addin.paper.market.history_rules import (
    BUILT_WHAT_TO_SHOW,
    IMPLIED_TZ_WARNING,
    MAX_NOMINAL_BARS,
    HistoryError,
    HistoryPacer,
    check_step,
    check_what_to_show,
    end_datetime_names_zone,
    parse_bar_size,
    parse_duration,
    parse_end_datetime,
    validate_request,
)
from addin.protocol.historical import BAR_SIZES, STEP_TABLE, BarSize, Duration

UTC = timezone.utc
NY = ZoneInfo("US/Eastern")

PACING = "Historical Market Data Service error message:Historical data request pacing violation"
V = "Error validating request.-'bM' : cause - "
BAR_INVALID = V + (
    "Historical data bar size setting is invalid. Legal ones are: 1 secs, 5 secs, 10 secs, 15 secs, "
    "30 secs, 1 min, 2 mins, 3 mins, 5 mins, 10 mins, 15 mins, 20 mins, 30 mins, 1 hour, 2 hours, "
    "3 hours, 4 hours, 8 hours, 1 day, 1W, 1M"
)
END_INVALID = (
    "End Date/Time: The date, time, or time-zone entered is invalid. The correct format is "
    "yyyymmdd hh:mm:ss xx/xxxx where yyyymmdd and xx/xxxx are optional. E.g.: 20031126 15:59:00 "
    "US/Eastern  Note that there is a space between the date and time, and between the time and "
    "time-zone.  If no date is specified, current date is assumed. If no time-zone is specified, local "
    "time-zone is assumed(deprecated).  You can also provide yyyymmddd-hh:mm:ss time is in UTC. Note "
    "that there is a dash between the date and time in UTC notation."
)

BAR_ORDER = list(BAR_SIZES)  # IB's order, "1 secs" .. "1 day", "1W", "1M"


def refused(fn, *args, **kwargs) -> HistoryError:
    with pytest.raises(HistoryError) as info:
        fn(*args, **kwargs)
    return info.value


class FakeClock:
    """A list-backed monotonic clock: tests move time by hand."""

    def __init__(self, start: float = 1000.0):
        self.t = [start]

    def __call__(self) -> float:
        return self.t[0]

    def set(self, t: float) -> None:
        self.t[0] = 1000.0 + t


# ----------------------------------------------------------------------------------------- step


def _neighbour(text: str, offset: int) -> str | None:
    i = BAR_ORDER.index(text) + offset
    return BAR_ORDER[i] if 0 <= i < len(BAR_ORDER) else None


_ROWS = [
    # duration, smallest allowed, largest allowed (IB's table)
    ("60 S", "1 secs", "1 min"),
    ("120 S", "1 secs", "2 mins"),
    ("1800 S", "1 secs", "30 mins"),
    ("3600 S", "5 secs", "1 hour"),
    ("14400 S", "10 secs", "3 hours"),
    ("28800 S", "30 secs", "8 hours"),
    ("1 D", "1 min", "1 day"),
    ("2 D", "2 mins", "1 day"),
    ("1 W", "3 mins", "1W"),
    ("1 M", "30 mins", "1M"),
    ("1 Y", "1 day", "1M"),
]


def test_step_table_matches_ibs():
    assert [(str(d), lo.text, hi.text) for d, lo, hi in STEP_TABLE] == [
        (d, parse_bar_size(lo).text, parse_bar_size(hi).text) for d, lo, hi in _ROWS
    ]


@pytest.mark.parametrize(("duration", "smallest", "largest"), _ROWS)
def test_step_row_allowed_and_first_disallowed(duration, smallest, largest):
    d = parse_duration(duration)
    lo_i, hi_i = BAR_ORDER.index(smallest), BAR_ORDER.index(largest)
    for text in BAR_ORDER[lo_i : hi_i + 1]:
        check_step(d, parse_bar_size(text))
        check_step(d, parse_bar_size(text), enforce_max=True)
    below = _neighbour(smallest, -1)
    if below is not None and not _lifted(d, parse_bar_size(below)):
        bar = parse_bar_size(below)
        err = refused(check_step, d, bar)
        assert err.code == 162
        assert err.text == f"Historical Market Data Service error message:invalid step: {bar.seconds}"
    above = _neighbour(largest, +1)
    if above is not None:
        check_step(d, parse_bar_size(above))  # a real gateway answers larger bars
        assert refused(check_step, d, parse_bar_size(above), enforce_max=True).code == 162


@pytest.mark.parametrize(
    ("duration", "first_refused", "first_allowed"),
    [
        ("30 S", None, "1 secs"),  # below the first row: the 60 S row
        ("90 S", None, "1 secs"),  # -> 120 S row
        ("3000 S", "1 secs", "5 secs"),  # -> 3600 S row
        ("3601 S", "5 secs", "10 secs"),  # -> 14400 S row
        ("28801 S", "30 secs", "1 min"),  # -> 1 D row
        ("86400 S", "30 secs", "1 min"),  # = 1 D
        ("3 D", "2 mins", "3 mins"),  # -> 1 W row
        ("7 D", "2 mins", "3 mins"),  # = 1 W
        ("2 W", "20 mins", "30 mins"),  # -> 1 M row
        ("31 D", "20 mins", "30 mins"),  # a month counts 31 days
        ("32 D", "8 hours", "1 day"),  # -> 1 Y row
        ("365 D", "8 hours", "1 day"),
        ("12 M", "8 hours", "1 day"),  # longer than the last row: the last row
        ("10 Y", "8 hours", "1 day"),
    ],
)
def test_step_between_rows_uses_next_larger_row(duration, first_refused, first_allowed):
    d = parse_duration(duration)
    check_step(d, parse_bar_size(first_allowed))
    if first_refused is not None and not _lifted(d, parse_bar_size(first_refused)):
        assert refused(check_step, d, parse_bar_size(first_refused)).code == 162


def _lifted(duration, bar) -> bool:
    """Bars of 1 min or more below a row's smallest are answered when the request holds at most
    MAX_NOMINAL_BARS bars (IB's table is an example of "a few thousand bars"; its note 1)."""
    return bar.nominal_seconds >= 60 and duration.seconds() <= MAX_NOMINAL_BARS * bar.nominal_seconds


@pytest.mark.parametrize(("duration", "bar", "ok"), [
    ("60 D", "1 hour", True), ("6 M", "1 hour", True), ("30 D", "15 mins", True), ("10 D", "1 min", True),
    ("1 Y", "1 hour", True), ("1 Y", "30 mins", False), ("1 M", "1 min", False), ("2 D", "30 secs", False),
])
def test_published_requests_of_one_minute_bars_and_up_pass_the_step_check(duration, bar, ok):
    d, b = parse_duration(duration), parse_bar_size(bar)
    if ok:
        check_step(d, b)
    else:
        assert refused(check_step, d, b).text.endswith(f"invalid step: {b.seconds}")


# ------------------------------------------------------------------------------------ bar sizes

_BAR_SECONDS = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30, "1 min": 60,
    "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600, "15 mins": 900, "20 mins": 1200,
    "30 mins": 1800, "1 hour": 3600, "2 hours": 7200, "3 hours": 10800, "4 hours": 14400,
    "8 hours": 28800, "1 day": 86400,
}


@pytest.mark.parametrize(("text", "seconds"), _BAR_SECONDS.items())
def test_legal_bar_sizes(text, seconds):
    bar = parse_bar_size(text)
    assert (bar.seconds, bar.months, bar.text) == (seconds, 0, text)
    assert bar.is_small == (seconds <= 30)


@pytest.mark.parametrize(("text", "other"), [("1W", "1 week"), ("1M", "1 month")])
def test_week_and_month_in_both_spellings(text, other):
    assert parse_bar_size(text) == parse_bar_size(other)
    assert parse_bar_size("1W") == BarSize(seconds=7 * 86400, text="1 week")
    assert parse_bar_size("1M") == BarSize(months=1, text="1 month")
    assert not parse_bar_size(text).is_small and parse_bar_size(text).is_multi_day


@pytest.mark.parametrize(
    "text",
    ["1 sec", "1 mins", "1 Min", "1 MIN", "2 min", "1 hours", "4 mins", "1  min", " 1 min", "1 min ",
     "1w", "1 W", "1m", "1 year", "3 months", "1 days", "60", "", "1 secs\x00"],
)
def test_illegal_bar_sizes(text):
    err = refused(parse_bar_size, text)
    assert (err.code, err.text) == (321, BAR_INVALID)


# ------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "count", "unit", "seconds"),
    [
        ("60 S", 60, "S", 60), ("30 S", 30, "S", 30), ("86400 S", 86400, "S", 86400),
        ("1 D", 1, "D", 86400), ("365 D", 365, "D", 365 * 86400), ("2 W", 2, "W", 14 * 86400),
        ("52 W", 52, "W", 364 * 86400), ("6 M", 6, "M", 6 * 31 * 86400), ("12 M", 12, "M", 372 * 86400),
        ("1 Y", 1, "Y", 365 * 86400), ("10 Y", 10, "Y", 3650 * 86400),
        ("60", 60, "S", 60),  # a bare integer is seconds
        ("1 d", 1, "D", 86400), ("2 w", 2, "W", 14 * 86400), ("1 m", 1, "M", 31 * 86400),
        ("1 y", 1, "Y", 365 * 86400), ("45 s", 45, "S", 45), ("007 D", 7, "D", 7 * 86400),
    ],
)
def test_legal_durations(text, count, unit, seconds):
    d = parse_duration(text)
    assert d == Duration(count, unit)
    assert d.seconds() == seconds


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("", "Historical data request duration not specified."),
        ("1D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("1  D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        (" 1 D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("1 D ", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("1 H", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("1.5 D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("-1 D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("1 day", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("０ D", "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        ("0 D", "Historical data requested duration is invalid."),
        ("29 S", "Historical data requested duration is invalid."),
        ("0", "Historical data requested duration is invalid."),
        ("99999999999 Y", "Historical data requested duration is invalid."),
        ("86401 S", "Historical data request for greater than 86400 seconds rejected."),
        ("366 D", "Historical data requests for durations longer than 365 days must be made in years."),
        ("53 W", "Historical data request for durations longer than 52 weeks must be made in years."),
        ("13 M", "Historical data request for durations longer than 12 months must be made in years."),
    ],
)
def test_illegal_durations(text, cause):
    err = refused(parse_duration, text)
    assert (err.code, err.text) == (321, V + cause)


def test_start_before_is_calendar_aware():
    # months clamp to the target month's length
    assert Duration(1, "M").start_before(datetime(2024, 3, 31, 16, tzinfo=UTC)) == datetime(2024, 2, 29, 16, tzinfo=UTC)
    assert Duration(1, "M").start_before(datetime(2023, 3, 31, tzinfo=UTC)) == datetime(2023, 2, 28, tzinfo=UTC)
    assert Duration(6, "M").start_before(datetime(2024, 1, 15, tzinfo=UTC)) == datetime(2023, 7, 15, tzinfo=UTC)
    assert Duration(1, "Y").start_before(datetime(2024, 2, 29, tzinfo=UTC)) == datetime(2023, 2, 28, tzinfo=UTC)
    assert Duration(12, "M").start_before(datetime(2024, 5, 2, tzinfo=UTC)) == datetime(2023, 5, 2, tzinfo=UTC)
    # days and weeks are calendar days on the wall clock of end's zone: 23 hours across spring-forward
    end = datetime(2024, 3, 10, 12, tzinfo=NY)  # DST began at 02:00 that day
    start = Duration(1, "D").start_before(end)
    assert start == datetime(2024, 3, 9, 12, tzinfo=NY)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=23)
    assert Duration(1, "W").start_before(end) == datetime(2024, 3, 3, 12, tzinfo=NY)
    assert Duration(1, "W").start_before(end).astimezone(UTC) == datetime(2024, 3, 3, 17, tzinfo=UTC)
    # seconds are elapsed time
    assert end.astimezone(UTC) - Duration(86400, "S").start_before(end).astimezone(UTC) == timedelta(days=1)
    # a wall time in the DST gap is normalised (fold=0 reads it as standard time)
    gap = Duration(1, "D").start_before(datetime(2024, 3, 11, 2, 30, tzinfo=NY))
    assert gap.astimezone(UTC) == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)


# ------------------------------------------------------------------------------------ endDateTime

NOW = datetime(2024, 1, 3, 3, 0, tzinfo=UTC)  # 2024-01-02 22:00 in New York


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", NOW),
        ("   ", NOW),
        ("20240102 10:00:00 US/Eastern", datetime(2024, 1, 2, 15, tzinfo=UTC)),
        ("20240702 10:00:00 US/Eastern", datetime(2024, 7, 2, 14, tzinfo=UTC)),
        ("20240102 10:00:00 America/New_York", datetime(2024, 1, 2, 15, tzinfo=UTC)),
        ("20240702 10:00:00 Europe/London", datetime(2024, 7, 2, 9, tzinfo=UTC)),
        ("20240102 10:00:00 UTC", datetime(2024, 1, 2, 10, tzinfo=UTC)),
        ("20240102 10:00:00 GMT", datetime(2024, 1, 2, 10, tzinfo=UTC)),
        ("20240702 10:00:00 EST", datetime(2024, 7, 2, 15, tzinfo=UTC)),  # EST is fixed -5
        ("20240702 10:00:00 PST", datetime(2024, 7, 2, 17, tzinfo=UTC)),  # Java short id
        ("20240102-10:00:00", datetime(2024, 1, 2, 10, tzinfo=UTC)),  # dash form is UTC
        ("20240102 10:00:00", datetime(2024, 1, 2, 15, tzinfo=UTC)),  # gateway zone (US/Eastern)
        ("20240102 9:05:00 US/Eastern", datetime(2024, 1, 2, 14, 5, tzinfo=UTC)),
        ("10:00:00 US/Eastern", datetime(2024, 1, 2, 15, tzinfo=UTC)),  # today *in New York*
        ("10:00:00 UTC", datetime(2024, 1, 3, 10, tzinfo=UTC)),
        ("20240102  10:00:00  UTC", datetime(2024, 1, 2, 10, tzinfo=UTC)),
        ("20240102 23:59:59 UTC", datetime(2024, 1, 2, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_end_datetime_forms(text, expected):
    got = parse_end_datetime(text, NOW)
    assert got == expected
    assert got.tzinfo == UTC


def test_end_datetime_default_zone_and_naive_now():
    assert parse_end_datetime("20240102 10:00:00", NOW, default_tz="UTC") == datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert (parse_end_datetime("20240102 10:00:00", NOW, default_tz="Europe/Zurich")
            == datetime(2024, 1, 2, 9, tzinfo=UTC))
    assert parse_end_datetime("", datetime(2024, 1, 3, 3)) == NOW


def test_ib_async_formats_parse():
    from ib_async import util

    t = datetime(2024, 7, 2, 10, 0, tzinfo=NY)
    assert parse_end_datetime(util.formatIBDatetime(t), NOW) == t.astimezone(UTC)
    assert parse_end_datetime(util.formatIBDatetime(None), NOW) == NOW


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02 10:00:00", "20240102 10:00", "20240102", "20241302 10:00:00", "20240230 10:00:00",
        "20240102 24:00:00", "20240102 10:60:00", "20240102 10:00:00 Mars/Olympus", "20240102 10:00:00 us/eastern",
        "20240102-10:00:00 UTC", "20240102-10:00", "19000101 10:00:00", "30010101 10:00:00", "abc",
        "20240102 10:00:00 US/Eastern 5", "20240102 10:00:00 ../../etc/passwd", "UTC", "2024010 10:00:00",
        "20240102 10:00:00 /etc/localtime",
    ],
)
def test_end_datetime_junk_is_10314(text):
    err = refused(parse_end_datetime, text, NOW)
    assert (err.code, err.text) == (10314, END_INVALID)


def test_implied_zone_warning():
    assert IMPLIED_TZ_WARNING[0] == 2174
    assert IMPLIED_TZ_WARNING[1].startswith("Warning: You submitted request with date-time attributes")
    assert not end_datetime_names_zone("20240102 10:00:00")
    assert not end_datetime_names_zone("10:00:00")
    for text in ["", "20240102-10:00:00", "20240102 10:00:00 UTC", "10:00:00 US/Eastern"]:
        assert end_datetime_names_zone(text)


# ------------------------------------------------------------------------------------ whatToShow


@pytest.mark.parametrize("text", sorted(BUILT_WHAT_TO_SHOW))
def test_what_to_show_known(text):
    assert check_what_to_show(text) == text
    assert check_what_to_show(text.lower()) == text


@pytest.mark.parametrize("text", ["", "TRADE", "bidask", "YIELD_BID"])
def test_what_to_show_unknown(text):
    err = refused(check_what_to_show, text)
    assert (err.code, err.text) == (321, V + f"What to show value of {text} rejected.")


# ------------------------------------------------------------------------------- whole request


def test_validate_request_success():
    req = validate_request("20240102 16:00:00 US/Eastern", "2 D", "5 mins", "midpoint", now=NOW)
    assert req.end == datetime(2024, 1, 2, 21, tzinfo=UTC)
    assert req.start == datetime(2023, 12, 31, 21, tzinfo=UTC)
    assert (req.duration, req.bar.text, req.what_to_show) == (Duration(2, "D"), "5 mins", "MIDPOINT")
    assert req.end_given and not req.implied_tz
    now_req = validate_request("", "1 M", "1 day", "TRADES", now=NOW, keep_up_to_date=True, format_date=2)
    assert (now_req.end, now_req.start, now_req.end_given) == (NOW, datetime(2023, 12, 3, 3, tzinfo=UTC), False)
    assert validate_request("20240102 10:00:00", "1 D", "1 hour", "BID", now=NOW).implied_tz


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "cause"),
    [
        # the end date is checked first, then the duration, then the bar size, then whatToShow
        (("junk", "junk", "junk", "junk"), {}, 10314, None),
        (("", "junk", "junk", "junk"), {}, 321,
         "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."),
        (("", "1 D", "junk", "junk"), {}, 321, BAR_INVALID[len(V):]),
        (("", "1 D", "1 min", "junk"), {}, 321, "What to show value of junk rejected."),
        (("20240102 10:00:00 UTC", "1 D", "1 min", "ADJUSTED_LAST"), {}, 321,
         "End date not supported with adjusted last"),
        (("", "1 Y", "1W", "ADJUSTED_LAST"), {}, 321, "Multi day bar size not supported with adjusted last"),
        (("", "1 D", "1 min", "TRADES"), {"format_date": 0}, 321, "Date formatting selection of 0 rejected."),
        (("20240102 10:00:00 UTC", "1 D", "1 min", "TRADES"), {"keep_up_to_date": True}, 321,
         "End date not supported with live updates"),
        (("", "1 D", "1 min", "TRADES"), {"keep_up_to_date": True, "sec_type": "BAG"}, 321,
         "Live updates for combos are not supported"),
        (("", "1 D", "1 min", "BID_ASK"), {"keep_up_to_date": True}, 321,
         "Source price not supported with live updates"),
        (("", "60 S", "1 secs", "TRADES"), {"keep_up_to_date": True}, 321,
         "Live updates are not supported for bar sizes of less than 5 seconds"),
        # the data farm's step check comes last
        (("", "1 D", "1 secs", "TRADES"), {}, 162, None),
        (("", "60 S", "1 hour", "TRADES"), {"enforce_max_bar": True}, 162, None),
    ],
)
def test_validate_request_refusals_in_ibs_order(args, kwargs, code, cause):
    err = refused(validate_request, *args, now=NOW, **kwargs)
    assert err.code == code
    if cause is not None:
        assert err.text == V + cause


# ------------------------------------------------------------------------------------ the pacer

SMALL = parse_bar_size("5 secs")
LARGE = parse_bar_size("1 min")


def _admit(pacer, rid, *, key=("AAPL", "SMART", "TRADES"), bar=SMALL, what="TRADES", ident=None):
    pacer.admit(rid, key, bar, what, ident if ident is not None else ("req", rid))
    pacer.done(rid)


def test_identical_request_within_15_seconds():
    clock = FakeClock()
    p = HistoryPacer(clock)
    same = ("AAPL", "", "60 S", "5 secs", "TRADES", 1)
    _admit(p, 1, ident=same)
    clock.set(14.999)
    err = refused(p.admit, 2, ("AAPL", "SMART", "TRADES"), SMALL, "TRADES", same)
    assert (err.code, err.text) == (162, PACING)
    assert p.open_count() == 0
    _admit(p, 3, ident=("different",))  # a different request is fine meanwhile
    clock.set(15.0)
    _admit(p, 4, ident=same)


def test_six_same_key_requests_within_2_seconds():
    clock = FakeClock()
    p = HistoryPacer(clock)
    for i in range(5):
        clock.set(i * 0.1)
        _admit(p, i)
    clock.set(1.999)
    assert refused(p.admit, 10, ("AAPL", "SMART", "TRADES"), SMALL, "TRADES", ("x",)).text == PACING
    _admit(p, 11, key=("AAPL", "SMART", "MIDPOINT"))  # another tick type is another key
    _admit(p, 12, key=("MSFT", "SMART", "TRADES"))  # another contract too
    _admit(p, 13, key=("AAPL", "ISLAND", "TRADES"))  # and another exchange
    clock.set(2.0)  # the request at 0.0 has left the window
    _admit(p, 14)
    assert refused(p.admit, 15, ("AAPL", "SMART", "TRADES"), SMALL, "TRADES", ("y",)).code == 162
    clock.set(2.1)
    _admit(p, 16)


def test_sixty_requests_in_ten_minutes():
    clock = FakeClock()
    p = HistoryPacer(clock)
    for i in range(60):
        clock.set(i * 10.0)
        _admit(p, i, key=("SYM", i % 7, "TRADES"))
    clock.set(599.999)
    last = ("the 61st",)
    err = refused(p.admit, 100, ("OTHER", "SMART", "TRADES"), SMALL, "TRADES", last)
    assert (err.code, err.text) == (162, PACING)
    _admit(p, 101, bar=LARGE)  # 1 min bars are not paced
    clock.set(600.0)  # the first request is ten minutes old
    _admit(p, 102, key=("OTHER", "SMART", "TRADES"), ident=last)  # the refused one was not recorded
    assert refused(p.admit, 103, ("X", "SMART", "TRADES"), SMALL, "TRADES", ("z",)).code == 162
    clock.set(610.0)
    _admit(p, 104, key=("X", "SMART", "TRADES"))


def test_bid_ask_counts_twice():
    clock = FakeClock()
    p = HistoryPacer(clock)
    key = ("AAPL", "SMART", "BID_ASK")
    _admit(p, 1, key=key, what="BID_ASK")
    _admit(p, 2, key=key, what="BID_ASK")
    # 2 + 2 + 2 = 6 within 2 s
    assert refused(p.admit, 3, key, SMALL, "BID_ASK", ("3",)).text == PACING
    _admit(p, 4, key=key, what="BID_ASK", bar=LARGE)  # not paced at all
    clock.set(2.0)
    # ten minutes: 30 BID_ASK requests make 60
    p = HistoryPacer(clock)
    for i in range(30):
        clock.set(i * 10.0)
        _admit(p, i, key=("S", i, "BID_ASK"), what="BID_ASK")
    clock.set(300.0)
    assert refused(p.admit, 99, ("T", 0, "TRADES"), SMALL, "TRADES", ("t",)).code == 162
    # 29 BID_ASK + 1 TRADES leave room for one TRADES but not for one BID_ASK
    p = HistoryPacer(clock)
    for i in range(29):
        clock.set(i * 10.0)
        _admit(p, i, key=("S", i, "BID_ASK"), what="BID_ASK")
    clock.set(295.0)
    _admit(p, 50, key=("T", 0, "TRADES"))
    clock.set(296.0)
    assert refused(p.admit, 51, ("U", 0, "BID_ASK"), SMALL, "BID_ASK", ("u",)).code == 162
    _admit(p, 52, key=("U", 1, "TRADES"))


def test_large_bars_are_not_paced():
    p = HistoryPacer(FakeClock())
    same = ("same",)
    for i in range(200):
        _admit(p, i, bar=LARGE, ident=same)
    for text in ["1 min", "1 hour", "1 day", "1W", "1M"]:
        _admit(p, 1000 + BAR_ORDER.index(text), bar=parse_bar_size(text), ident=same)


def test_fifty_open_requests_and_done():
    p = HistoryPacer(FakeClock())
    for i in range(50):
        p.admit(i, ("S", i, "TRADES"), LARGE, "TRADES", (i,))
    assert p.open_count() == 50
    err = refused(p.admit, 50, ("S", 50, "TRADES"), LARGE, "TRADES", (50,))
    assert (err.code, err.text) == (
        322, "Error processing request.-'bM' : cause - Only 50 simultaneous API historical data requests allowed."
    )
    assert p.open_count() == 50
    p.done(7)
    p.done(7)  # twice is harmless
    p.done(12345)  # so is an unknown id
    assert p.open_count() == 49
    p.admit(50, ("S", 50, "TRADES"), LARGE, "TRADES", (50,))
    assert p.open_count() == 50 and p.is_open(50) and not p.is_open(7)


def test_open_limit_counts_small_bars_and_is_checked_before_pacing():
    clock = FakeClock()
    p = HistoryPacer(clock, max_open=3)
    same = ("same",)
    p.admit(1, ("A", "", "TRADES"), SMALL, "TRADES", same)
    p.admit(2, ("B", "", "TRADES"), SMALL, "TRADES", ("b",))
    p.admit(3, ("C", "", "TRADES"), LARGE, "TRADES", ("c",))
    # full and a pacing violation at once: the gateway's own 322 comes first
    assert refused(p.admit, 4, ("A", "", "TRADES"), SMALL, "TRADES", same).code == 322
    p.done(3)
    assert refused(p.admit, 4, ("A", "", "TRADES"), SMALL, "TRADES", same).code == 162
    assert p.open_count() == 2  # the refused request did not open


def test_duplicate_id_and_cancel():
    p = HistoryPacer(FakeClock())
    p.admit(5, ("A", "", "TRADES"), LARGE, "TRADES", ("a",))
    err = refused(p.admit, 5, ("B", "", "TRADES"), LARGE, "TRADES", ("b",))
    assert (err.code, err.text) == (
        322, "Error processing request.-'bM' : cause - Duplicate ticker ID for API historical data query"
    )
    p.cancel(5)  # e.g. a keepUpToDate request, open until cancelled
    assert p.open_count() == 0
    err = refused(p.cancel, 5)
    assert (err.code, err.text) == (366, "No historical data query found for ticker id:5")
    p.admit(5, ("B", "", "TRADES"), LARGE, "TRADES", ("b",))  # the id is free again


_keys = st.sampled_from([("A", "SMART", "TRADES"), ("A", "SMART", "BID_ASK"), ("B", "SMART", "TRADES")])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=40.0, allow_nan=False),  # seconds since the previous try
            _keys,
            st.booleans(),  # small bar?
            st.integers(0, 3),  # identity variant
        ),
        max_size=250,
    )
)
def test_pacer_never_admits_a_violation(tries):
    clock = FakeClock()
    p = HistoryPacer(clock)
    t = 0.0
    admitted = []  # (time, key, weight, identity) of small-bar requests
    for rid, (dt, key, small, variant) in enumerate(tries):
        t += dt
        clock.set(t)
        what = key[2]
        bar = SMALL if small else LARGE
        try:
            p.admit(rid, key, bar, what, (key, variant))
        except HistoryError as err:
            assert err.code == 162
            continue
        p.done(rid)
        if small:
            admitted.append((clock(), key, 2 if what == "BID_ASK" else 1, (key, variant)))
    for i, (ti, key, _, ident) in enumerate(admitted):
        earlier = admitted[:i]
        burst = sum(w for tj, k, w, _ in admitted[: i + 1] if k == key and ti - tj < 2.0)
        total = sum(w for tj, _, w, _ in admitted[: i + 1] if ti - tj < 600.0)
        assert burst < 6  # fewer than 6 same-key requests (BID_ASK counting twice) in any 2 s
        assert total <= 60  # at most 60 in any 10 minutes
        assert not any(d == ident and ti - tj < 15.0 for tj, _, _, d in earlier)
    assert p.open_count() == 0
