"""IB's date/time texts: one reader and the writers, for the client and the paper gateway.

The forms IB writes or takes (reqHistoricalData endDateTime, bar dates, execution times,
ExecutionFilter.time, the handshake's connection time, tradingHours):

====================================  ===============================================================
``20240102``                          a date alone: a day label (daily, weekly, monthly bars), read as
                                      00:00 UTC of that date
``1704205800``                        epoch seconds (bar dates with formatDate 2)
``20240102 15:30:00 US/Eastern``      wall time in the named zone (one or more spaces between parts)
``20240102 15:30:00``                 wall time in a zone the reader chooses (``default_zone``)
``20240102-15:30:00``                 UTC (the dash form takes no zone)
``15:30:00 [zone]``                   that time today (``now``) in the zone; endDateTime only
``20240102 15:30`` / ``...-15:30``    seconds left out (ExecutionFilter.time)
``20240102:1530``                     tradingHours / liquidHours stamps, written by
                                      :func:`format_hours_stamp`
====================================  ===============================================================

Zone names are read as IB's Java gateway reads them (:func:`ib_zone`): UTC and GMT (any case) and
"Z", Java's short ids (PST, CST, EST fixed at -05:00, ...), IANA names (exact case), and a few
names a tz database may lack (:data:`ZONE_FALLBACKS`). Any other name is an error
(:class:`UnknownZoneError`): no reader here guesses a zone; callers that want a fallback say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

__all__ = [
    "UTC", "IBTimeError", "UnknownZoneError", "JAVA_SHORT_IDS", "ZONE_FALLBACKS", "ib_zone", "zone_name",
    "IBTime", "read_time", "parse_time", "without_zone", "format_date", "format_utc", "format_zoned", "format_epoch",
    "format_hours_stamp",
]

#: A zone argument: an IB zone name, a tzinfo, or None for this machine's local zone.
Zone = str | tzinfo | None


class IBTimeError(ValueError):
    """A text that is none of IB's date/time forms (or names a day or time that does not exist)."""


class UnknownZoneError(IBTimeError):
    """A zone name IB's gateway would not resolve either; ``zone`` is the name."""

    def __init__(self, zone: str):
        super().__init__(f"unknown time zone {zone!r}")
        self.zone = zone


# --------------------------------------------------------------------------------------------------
# Zones
# --------------------------------------------------------------------------------------------------

#: Java's ZoneId.SHORT_IDS, which IB's (Java) gateway resolves besides IANA names.
JAVA_SHORT_IDS = {
    "ACT": "Australia/Darwin", "AET": "Australia/Sydney", "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo", "AST": "America/Anchorage", "BET": "America/Sao_Paulo", "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare", "CNT": "America/St_Johns", "CST": "America/Chicago", "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa", "ECT": "Europe/Paris", "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata", "JST": "Asia/Tokyo", "MIT": "Pacific/Apia", "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland", "PLT": "Asia/Karachi", "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico", "PST": "America/Los_Angeles", "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh", "EST": "EST", "MST": "MST", "HST": "HST",
}

#: Names TWS writes that a tz database may not hold (older Windows tzdata lacks the US/* and
#: three-letter links; no database has EDT): used only when zoneinfo cannot resolve the name.
ZONE_FALLBACKS: dict[str, tzinfo | str] = {
    "US/Eastern": "America/New_York", "US/Central": "America/Chicago", "US/Pacific": "America/Los_Angeles",
    "EDT": "America/New_York", "MET": "Europe/Berlin",
    "EST": timezone(timedelta(hours=-5), "EST"), "MST": timezone(timedelta(hours=-7), "MST"),
    "HST": timezone(timedelta(hours=-10), "HST"),
}


def _zoneinfo(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except Exception:  # not found, malformed key ("../x", "/etc/localtime"), a directory, ...
        return None


def ib_zone(name: str) -> tzinfo:
    """The zone an IB zone name means (see the module docstring); UnknownZoneError otherwise."""
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    found = _zoneinfo(JAVA_SHORT_IDS.get(name, name))
    if found is not None:
        return found
    fallback = ZONE_FALLBACKS.get(name)
    if isinstance(fallback, str):
        fallback = _zoneinfo(fallback)
    if fallback is None:
        raise UnknownZoneError(name)
    return fallback


def zone_name(zone: str | tzinfo) -> str:
    """The name to write after a time: a ZoneInfo's key, a name as given, else str(tzinfo)."""
    return zone.key if isinstance(zone, ZoneInfo) else str(zone)


def _resolve(zone: Zone) -> tzinfo | None:
    return ib_zone(zone) if isinstance(zone, str) else zone


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

_DATE_RE = re.compile(r"[0-9]{8}")
_CLOCK_RE = re.compile(r"([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2}))?")


@dataclass(frozen=True)
class IBTime:
    """What an IB date/time text says, before a zone is applied (:func:`read_time` makes it).

    ``day``: the date (None when the text is a time of day alone, or epoch seconds); ``clock``: the
    time of day (None for a date alone or epoch seconds); ``has_seconds``: the text wrote seconds;
    ``zone``: the zone name written ("UTC" for the dash form; None when the text names none);
    ``epoch``: epoch seconds (formatDate 2), else None.
    """

    day: date | None = None
    clock: time | None = None
    has_seconds: bool = True
    zone: str | None = None
    epoch: int | None = None

    @property
    def names_zone(self) -> bool:
        """Whether the text fixes the instant by itself (a zone, the dash form or epoch seconds)."""
        return self.zone is not None or self.epoch is not None

    def instant(self, default_zone: Zone = UTC, now: datetime | None = None) -> datetime:
        """The instant, tz-aware in UTC. ``default_zone`` is the zone of a text that names none (an
        IB name, a tzinfo, or None for this machine's local zone); ``now`` (aware) gives the date
        of a time of day alone. A date alone is 00:00 UTC of that date. Raises UnknownZoneError
        for a zone IB would not resolve, IBTimeError for a time of day without ``now``."""
        if self.epoch is not None:
            return datetime.fromtimestamp(self.epoch, UTC)
        if self.clock is None:
            assert self.day is not None
            return datetime.combine(self.day, time(), UTC)
        tz = ib_zone(self.zone) if self.zone is not None else _resolve(default_zone)
        day = self.day
        if day is None:
            if now is None:
                raise IBTimeError("a time of day alone needs today's date")
            day = now.astimezone(tz).date()
        wall = datetime.combine(day, self.clock)
        if tz is None:
            return wall.astimezone().astimezone(UTC)  # this machine's local time
        return wall.replace(tzinfo=tz).astimezone(UTC)


def _date(text: str) -> date:
    if not _DATE_RE.fullmatch(text):
        raise IBTimeError(f"not a yyyymmdd date: {text!r}")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise IBTimeError(f"no such date: {text!r}") from None


def _clock(text: str) -> tuple[time, bool]:
    m = _CLOCK_RE.fullmatch(text)
    if m is None:
        raise IBTimeError(f"not a hh:mm:ss time: {text!r}")
    h, mi = int(m.group(1)), int(m.group(2))
    s = int(m.group(3)) if m.group(3) is not None else 0
    if h > 23 or mi > 59 or s > 59:
        raise IBTimeError(f"no such time: {text!r}")
    return time(h, mi, s), m.group(3) is not None


def read_time(text: str) -> IBTime:
    """The parts of an IB date/time text, any form of the module docstring; IBTimeError otherwise
    (empty text included: what "" means, e.g. "now", is the caller's)."""
    s = (text or "").strip()
    words = s.split()
    if len(words) == 1 and s.isascii() and s.isdigit():
        return IBTime(day=_date(s)) if len(s) == 8 else IBTime(epoch=int(s))
    if len(words) == 1 and "-" in s:  # yyyymmdd-hh:mm:ss, UTC
        date_text, _, clock_text = s.partition("-")
        clock, has_seconds = _clock(clock_text)
        return IBTime(_date(date_text), clock, has_seconds, "UTC")
    day = _date(words.pop(0)) if words and _DATE_RE.fullmatch(words[0]) else None
    if not words or len(words) > 2:
        raise IBTimeError(f"not an IB date/time: {text!r}")
    clock, has_seconds = _clock(words[0])
    return IBTime(day, clock, has_seconds, words[1] if len(words) == 2 else None)


def parse_time(text: str, default_zone: Zone = UTC, now: datetime | None = None) -> datetime:
    """An IB date/time text as a tz-aware UTC datetime: :func:`read_time`, then
    :meth:`IBTime.instant`. Raises IBTimeError (UnknownZoneError for an unknown zone name)."""
    return read_time(text).instant(default_zone, now)


def without_zone(t: IBTime) -> IBTime:
    """``t`` as if its text had named no zone (for callers that read an unknown zone as their default)."""
    return replace(t, zone=None)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _aware(t: datetime, zone: tzinfo) -> datetime:
    return t.replace(tzinfo=zone) if t.tzinfo is None else t


def format_date(d: date) -> str:
    """"yyyymmdd" (a datetime's own calendar date, no zone conversion)."""
    return f"{d:%Y%m%d}"


def format_utc(t: datetime) -> str:
    """The dash form "yyyymmdd-hh:mm:ss" in UTC; a naive ``t`` is taken as UTC."""
    return f"{_aware(t, UTC).astimezone(UTC):%Y%m%d-%H:%M:%S}"


def format_zoned(t: datetime, zone: str | tzinfo) -> str:
    """"yyyymmdd hh:mm:ss <zone>": ``t`` converted to ``zone`` (an IB name or a tzinfo), the name
    written as given (:func:`zone_name`); a naive ``t`` is taken as wall time in ``zone``."""
    tz = _resolve(zone)
    assert tz is not None
    return f"{_aware(t, tz).astimezone(tz):%Y%m%d %H:%M:%S} {zone_name(zone)}"


def format_epoch(t: datetime, zone: str | tzinfo = UTC) -> str:
    """Epoch seconds (formatDate 2), whole; a naive ``t`` is taken as wall time in ``zone``."""
    tz = _resolve(zone)
    assert tz is not None
    return str(int(_aware(t, tz).timestamp()))


def format_hours_stamp(t: datetime) -> str:
    """A tradingHours / liquidHours stamp "yyyymmdd:hhmm" of ``t``'s own wall clock."""
    return f"{t:%Y%m%d:%H%M}"
