"""addin.protocol.times: each of IB's date/time forms read, the writers read back (round trips), zone
names as IB's gateway resolves them, and an unknown zone as an explicit error."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addin.protocol.times import (
    IBTime,
    IBTimeError,
    UnknownZoneError,
    format_date,
    format_epoch,
    format_hours_stamp,
    format_utc,
    format_zoned,
    ib_zone,
    parse_time,
    read_time,
    without_zone,
)

NY = ZoneInfo("America/New_York")
NOW = datetime(2024, 1, 3, 3, 0, tzinfo=UTC)  # 2024-01-02 22:00 in New York

# Whole seconds, years a gateway reads, aware in UTC.
instants = st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2999, 12, 31)).map(
    lambda t: t.replace(microsecond=0, tzinfo=UTC))
ZONES = ["US/Eastern", "America/New_York", "Europe/London", "Asia/Tokyo", "UTC", "GMT", "EST", "PST", "MET"]


@pytest.mark.parametrize(("text", "expected"), [
    ("20240102", datetime(2024, 1, 2, tzinfo=UTC)),                         # a date alone: 00:00 UTC
    ("1704205800", datetime(2024, 1, 2, 14, 30, tzinfo=UTC)),               # epoch seconds (formatDate 2)
    ("20240102 15:30:00 US/Eastern", datetime(2024, 1, 2, 20, 30, tzinfo=UTC)),
    ("20240702 15:30:00 US/Eastern", datetime(2024, 7, 2, 19, 30, tzinfo=UTC)),  # summer time
    ("20240102  15:30:00  UTC", datetime(2024, 1, 2, 15, 30, tzinfo=UTC)),     # two spaces
    ("20240102 15:30:00", datetime(2024, 1, 2, 15, 30, tzinfo=UTC)),           # default zone: UTC
    ("20240102-15:30:00", datetime(2024, 1, 2, 15, 30, tzinfo=UTC)),           # dash form: UTC
    ("20240102-15:30", datetime(2024, 1, 2, 15, 30, tzinfo=UTC)),              # seconds left out
    ("20240102 9:05:00 US/Eastern", datetime(2024, 1, 2, 14, 5, tzinfo=UTC)),
])
def test_each_form(text, expected):
    got = parse_time(text)
    assert got == expected and got.utcoffset() == timedelta(0)


def test_parts_of_the_forms():
    assert read_time("20240102") == IBTime(day=date(2024, 1, 2))
    assert read_time("1704205800") == IBTime(epoch=1704205800)
    dash = read_time("20240102-15:30:00")
    assert (dash.zone, dash.names_zone, dash.has_seconds) == ("UTC", True, True)
    assert not read_time("20240102 15:30").has_seconds
    assert not read_time("20240102 15:30:00").names_zone
    assert read_time("15:30:00 US/Eastern").day is None


def test_default_zone_and_a_time_of_day_alone():
    assert parse_time("20240102 10:00:00", "US/Eastern") == datetime(2024, 1, 2, 15, tzinfo=UTC)
    assert parse_time("20240102 10:00:00", NY) == datetime(2024, 1, 2, 15, tzinfo=UTC)
    local = datetime(2024, 1, 2, 10).astimezone().astimezone(UTC)  # None: this machine's zone
    assert parse_time("20240102 10:00:00", None) == local
    assert parse_time("10:00:00 US/Eastern", now=NOW) == datetime(2024, 1, 2, 15, tzinfo=UTC)  # today in NY
    assert parse_time("10:00:00 UTC", now=NOW) == datetime(2024, 1, 3, 10, tzinfo=UTC)
    with pytest.raises(IBTimeError):
        parse_time("10:00:00 UTC")  # no today to put it on


@pytest.mark.parametrize("text", [
    "", "   ", "abc", "2024-01-02 10:00:00", "20241302 10:00:00", "20240230", "20240102 24:00:00",
    "20240102 10:60:00", "20240102-10:00:00 UTC", "20240102 10:00:00 US/Eastern 5", "UTC", "2024010 10:00:00",
])
def test_junk_is_refused(text):
    with pytest.raises(IBTimeError):
        parse_time(text)


@pytest.mark.parametrize("name", ["Mars/Olympus", "us/eastern", "../../etc/passwd", "/etc/localtime", "XYZ"])
def test_an_unknown_zone_is_an_explicit_error(name):
    with pytest.raises(UnknownZoneError) as info:
        parse_time(f"20240102 10:00:00 {name}")
    assert info.value.zone == name
    with pytest.raises(UnknownZoneError):
        ib_zone(name)
    # a caller that wants a fallback says so: the wall time in its own default zone
    assert without_zone(read_time(f"20240102 10:00:00 {name}")).instant(UTC) == datetime(2024, 1, 2, 10, tzinfo=UTC)


def test_zone_names_as_ibs_gateway_reads_them():
    july = datetime(2024, 7, 2, 12)
    assert ib_zone("utc") is UTC and ib_zone("GMT") is UTC and ib_zone("Z") is UTC
    assert july.replace(tzinfo=ib_zone("EST")).utcoffset() == timedelta(hours=-5)  # EST is fixed -5
    assert july.replace(tzinfo=ib_zone("PST")).utcoffset() == timedelta(hours=-7)  # Java: Los Angeles
    assert july.replace(tzinfo=ib_zone("CST")).utcoffset() == timedelta(hours=-5)  # Java: Chicago
    assert july.replace(tzinfo=ib_zone("EDT")).utcoffset() == timedelta(hours=-4)  # fallback: New York
    assert july.replace(tzinfo=ib_zone("MET")).utcoffset() == timedelta(hours=2)
    assert ib_zone("US/Eastern") == ZoneInfo("US/Eastern")


@given(instants)
def test_dash_form_round_trip(t):
    assert parse_time(format_utc(t)) == t
    assert parse_time(format_utc(t.replace(tzinfo=None))) == t  # naive is UTC


@given(instants, st.sampled_from(ZONES))
def test_zoned_form_round_trip(t, zone):
    text = format_zoned(t, zone)
    assert text.endswith(f" {zone}")
    assert parse_time(text) == t or _in_fall_back_hour(t, zone)


def _in_fall_back_hour(t: datetime, zone: str) -> bool:
    """The wall time of the repeated hour names two instants; the text cannot tell them apart."""
    local = t.astimezone(ib_zone(zone))
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


@given(instants)
def test_epoch_round_trip(t):
    assert parse_time(format_epoch(t)) == t
    assert format_epoch(t.astimezone(NY).replace(tzinfo=None), NY) == format_epoch(t) or _in_fall_back_hour(
        t, "America/New_York")


@given(st.dates(min_value=date(1980, 1, 1), max_value=date(2999, 12, 31)))
def test_date_round_trip(d):
    assert parse_time(format_date(d)) == datetime(d.year, d.month, d.day, tzinfo=UTC)


def test_writers():
    t = datetime(2024, 1, 2, 20, 30, 5, tzinfo=UTC)
    assert format_utc(t) == "20240102-20:30:05"
    assert format_zoned(t, "US/Eastern") == "20240102 15:30:05 US/Eastern"
    assert format_zoned(datetime(2024, 1, 2, 15, 30, 5), "US/Eastern") == "20240102 15:30:05 US/Eastern"  # naive
    assert format_zoned(t, NY) == "20240102 15:30:05 America/New_York"
    assert format_zoned(t, timezone(timedelta(0), "UTC")) == "20240102 20:30:05 UTC"
    assert format_epoch(t) == "1704227405"
    assert format_date(t.astimezone(NY)) == "20240102"
    assert format_hours_stamp(t.astimezone(NY)) == "20240102:1530"
