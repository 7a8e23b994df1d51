"""Interactive Brokers' rules for historical bar requests (reqHistoricalData), as the paper gateway enforces them.

Pure functions and one small stateful tracker (:class:`HistoryPacer`); no sockets, no market data.
The tables and limits (bar sizes, duration units, the step table, whatToShow names, the pacing
numbers) are IB's and shared with the client: :mod:`addin.protocol.historical`; endDateTime is read
by :mod:`addin.protocol.times`. What this module adds is the gateway's side: IB's grammar, check
order and refusal texts.
Every refusal is a :class:`HistoryError` carrying IB's error code and IB's text, which the socket
server sends as ERR_MSG for the request id.

Where the rules come from
=========================
[IB-LIM]  IB's "Historical Data Limitations" page
          (interactivebrokers.github.io/tws-api/historical_limitations.html, mirrored in IBKR Campus and
          in /work/shared/protocol/TWS-PROTOCOL.md "Limits"), and the older API guide
          (interactivebrokers.com/php/apiUsersGuide/apiguide/api/historical_data_limitations.htm).
[IB-API]  IB's reqHistoricalData reference (old API guide: "If no unit is specified, seconds is used").
[LOG]     Real gateway answers quoted verbatim in public bug reports (GitHub issues / code comments).
[RE]      The "ibx" project, a third-party reimplementation of the gateway whose historical checks are
          reverse-engineered from IB's own gateway (their issues ibx#430/#431); texts from there were
          not seen in a user's log and are marked as such.
[WRITTEN] Written here, in IB's style, where no source gave the text.

Request checks, in the order IB's gateway makes them ([RE] ibx#430) -- :func:`validate_request`
--------------------------------------------------------------------------------------------------
1. endDateTime (:func:`parse_end_datetime`), error 10314. Accepted forms [IB text of 10314, LOG]:
   ""                          now;
   "yyyymmdd hh:mm:ss"         in the gateway's local zone (deprecated: IB also sends warning 2174);
   "yyyymmdd hh:mm:ss <zone>"  e.g. "US/Eastern", "Europe/London", "UTC", "GMT", "EST", "PST";
   "yyyymmdd-hh:mm:ss"         UTC (the dash form takes no zone);
   "hh:mm:ss [<zone>]"         today in that zone ("If no date is specified, current date is assumed").
   A date needs a year 1978..3000 [RE]. Zones are IANA names plus Java's short ids (PST, CST, ...)
   and the few names :func:`addin.protocol.times.ib_zone` adds (Z, EDT, ...).
2. durationStr (:func:`parse_duration`), error 321: "<integer> <unit>", unit S, D, W, M or Y in either
   case [RE]; a bare integer is seconds [IB-API]; S from 30 to 86400 [RE], D up to 365 [LOG], W up to
   52 and M up to 12 [RE]; Y unbounded here.
3. ADJUSTED_LAST takes no endDateTime (321) [IB docs; text RE].
4. barSizeSetting (:func:`parse_bar_size`), error 321: exactly one of IB's legal spellings [LOG]:
   1 secs, 5 secs, 10 secs, 15 secs, 30 secs, 1 min, 2 mins, 3 mins, 5 mins, 10 mins, 15 mins,
   20 mins, 30 mins, 1 hour, 2 hours, 3 hours, 4 hours, 8 hours, 1 day, 1W, 1M -- plus "1 week" and
   "1 month", which IB's own bar-size table and ib_async document. "1 sec" is refused: IB has refused
   it since 2015 ([LOG] rust-ibapi#245, InterReact#16, ib-ruby ib-api#32); so are other casings.
5. ADJUSTED_LAST with bars longer than a day (1 week, 1 month) (321) [RE].
6. whatToShow (:func:`check_what_to_show`), case-insensitive, error 321 [RE]. This gateway builds the
   eight series in :data:`BUILT_WHAT_TO_SHOW` and SCHEDULE (answered with HISTORICAL_SCHEDULE, IB's
   TWS API 10.12 addition); IB's other values (YIELD_*, FEE_RATE, ...) are refused like unknown ones.
7. formatDate 1, 2 or 3 (321) [LOG vnpy#2937, RE].
8. keepUpToDate: no endDateTime, no combo (BAG), only TRADES/MIDPOINT/BID/ASK (321) [RE]; bars of
   5 seconds or more [IB docs: "keepUpToDate ... bar sizes of 5 seconds or greater"; text WRITTEN].
9. Step size (:func:`check_step`), error 162 from the historical data farm (HMDS) [IB-LIM table]:

   duration          allowed bar sizes         duration          allowed bar sizes
   60 S              1 secs - 1 min            1 D               1 min  - 1 day
   120 S             1 secs - 2 mins           2 D               2 mins - 1 day
   1800 S            1 secs - 30 mins          1 W               3 mins - 1 week
   3600 S            5 secs - 1 hour           1 M               30 mins - 1 month
   14400 S           10 secs - 3 hours         1 Y               1 day  - 1 month
   28800 S           30 secs - 8 hours

   IB calls this table an example of one principle: "requests need to be assembled in such a way
   that only a few thousand bars are returned at a time" [IB-LIM, Step Sizes], and its note 1 says
   the limitations for bars of 1 min and larger have been lifted. IB's own samples ask "10 D" of
   "1 min" (historical_bars.html), and "60 D" / "6 M" of "1 hour" or "30 D" of "15 mins" are
   answered by real gateways. So the gateway enforces the table as a rule only for bars under a
   minute (the small bars); a bar of 1 min or more is answered whenever the request holds at most
   :data:`MAX_NOMINAL_BARS` bars (duration / bar size, both nominal) or the table allows it.
   Beyond that: 162 "...:invalid step: <bar seconds>" [bound WRITTEN: IB publishes no number; 15,000
   keeps IB's "10 D" of "1 min" sample and "1 Y" of "1 hour" and bounds the gateway's work].
   A duration between two rows uses the next larger row; one longer than 1 Y uses the 1 Y row
   (clients ask "10 Y" of daily bars). Durations are compared by :meth:`Duration.seconds` (a month
   counts 31 days, so any "N D" that fits a calendar month is on the 1 M row). Only the smaller end
   of a row is enforced by default: a bar size *below* it makes too many bars and IB's farm answers
   162 "...:invalid step: 1" ([LOG] wrighter/ib-scripts#1: "1 D" of "1 secs", localised text; the
   English text as ibx records it). Bars *larger* than a row's upper end are answered by a real
   gateway ([LOG] stoqey/ib#270: "60 S worked for ... update bars from 5 secs through 1 day" on paper
   TWS), so that end is only checked with ``enforce_max=True``.

Per-connection limits -- :class:`HistoryPacer`
----------------------------------------------
* At most 50 historical requests open at once, any bar size [IB-LIM]; the 51st is error 322
  "Error processing request.-'bM' : cause - Only 50 simultaneous API historical data requests
  allowed." [LOG]. A request id that is already open is error 322 "... Duplicate ticker ID for API
  historical data query" [LOG] (IB's error table lists the same text under 386; gateways send 322).
* "Pacing violations for small bars (30 secs or less)" [IB-LIM], each error 162
  "Historical Market Data Service error message:Historical data request pacing violation" [LOG]:
  - no identical request (every parameter the same) within 15 seconds;
  - fewer than 6 requests for the same contract, exchange and tick type (whatToShow) within 2 seconds;
  - at most 60 requests in any 10 minutes;
  - a BID_ASK request counts twice (in both counting rules).
  For 1 min bars and larger these hard limits were lifted [IB-LIM note 1]; the remaining "soft limit"
  has no published numbers and is not enforced.
  Boundaries: a request exactly 15 s after its twin, or exactly 2 s / 600 s after an older request,
  no longer sees that older one. A refused request is not recorded and counts for nothing.
* Cancelling a request that is not open is error 366 "No historical data query found for ticker id:N"
  [LOG].

The error texts
===============
Texts of 321 and 322 start "Error validating request.-'bM' : cause - " / "Error processing
request.-'bM' : cause - ". The quoted two letters differ between TWS builds ('bK', 'bH', 'bS', 'bM',
'yd', ... in logs) and clients do not read them; this gateway always writes 'bM' (seen with 322 in a
log and in ibx's 321 text).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from ...protocol.errors import IMPLIED_TIME_ZONE
from ...protocol.historical import (
    BAR_SIZES,
    BURST_LIMIT,
    BURST_WINDOW,
    DURATION_UNITS,
    IDENTICAL_WINDOW,
    KEEP_UP_TO_DATE_MIN_BAR_SECONDS,
    KEEP_UP_TO_DATE_WHAT_TO_SHOW,
    MAX_DURATION_COUNT,
    MAX_OPEN,
    MIN_DURATION_SECONDS,
    TOTAL_LIMIT,
    TOTAL_WINDOW,
    BarSize,
    Duration,
    lookup_bar_size,
    request_weight,
    step_row,
)
from ...protocol.times import IBTime, IBTimeError, ib_zone, read_time

__all__ = [
    "HistoryError",
    "HistoryRequest",
    "HistoryPacer",
    "BUILT_WHAT_TO_SHOW",
    "HMDS_PREFIX",
    "PACING_VIOLATION",
    "IMPLIED_TZ_WARNING",
    "parse_duration",
    "parse_bar_size",
    "check_step",
    "parse_end_datetime",
    "end_datetime_names_zone",
    "check_what_to_show",
    "validate_request",
    "no_query_error",
]

UTC = UTC

# --------------------------------------------------------------------------------------------------
# Error texts
# --------------------------------------------------------------------------------------------------

#: Prefix of every error 162 (the historical data farm's own refusals). [LOG]
HMDS_PREFIX = "Historical Market Data Service error message:"
#: Error 162 for a pacing violation. [LOG] QuantConnect/Lean#607, backtrader#110, IB API guide.
PACING_VIOLATION = HMDS_PREFIX + "Historical data request pacing violation"

_TOKEN = "bM"  # build-specific in IB's texts; see the module docstring
_VALIDATING = f"Error validating request.-'{_TOKEN}' : cause - "  # error 321 [LOG]
_PROCESSING = f"Error processing request.-'{_TOKEN}' : cause - "  # error 322 [LOG]

# [LOG] rust-ibapi#245 (2025), InterReact#16, ezibpy: the list IB prints ("1 secs, 5 secs, ... 1W, 1M").
_BAR_SIZE_INVALID = "Historical data bar size setting is invalid. Legal ones are: " + ", ".join(BAR_SIZES)
# [LOG] a C# client's comment quoting 321 "...cause - Historical data requested duration is invalid."
_DURATION_INVALID = "Historical data requested duration is invalid."
# [LOG] ib_async#229 (2026): "Error validating request.-'bH' : cause - Historical data requests for
# durations longer than 365 days must be made in years."
_DURATION_DAYS = "Historical data requests for durations longer than 365 days must be made in years."
# [RE] ibx, not seen in a user's log:
_DURATION_MISSING = "Historical data request duration not specified."
_DURATION_FORMAT = "When specifying a unit, historical data request duration format is integer{SPACE}unit (S|D|W|M|Y)."
_DURATION_SECONDS = "Historical data request for greater than 86400 seconds rejected."
_DURATION_WEEKS = "Historical data request for durations longer than 52 weeks must be made in years."
_DURATION_MONTHS = "Historical data request for durations longer than 12 months must be made in years."
_ADJUSTED_END = "End date not supported with adjusted last"  # [RE]
_ADJUSTED_MULTIDAY = "Multi day bar size not supported with adjusted last"  # [RE]
_LIVE_END = "End date not supported with live updates"  # [RE]
_LIVE_COMBO = "Live updates for combos are not supported"  # [RE]
_LIVE_SOURCE = "Source price not supported with live updates"  # [RE]
# [WRITTEN] IB documents the 5-second floor for keepUpToDate but no refusal text was found.
_LIVE_SMALL_BAR = "Live updates are not supported for bar sizes of less than 5 seconds"

# [LOG] ultra1971/backtrader_ib_insync#6 (2023): error 10314, verbatim (note the double spaces).
END_DATETIME_INVALID = (
    "End Date/Time: The date, time, or time-zone entered is invalid. The correct format is "
    "yyyymmdd hh:mm:ss xx/xxxx where yyyymmdd and xx/xxxx are optional. E.g.: 20031126 15:59:00 "
    "US/Eastern  Note that there is a space between the date and time, and between the time and "
    "time-zone.  If no date is specified, current date is assumed. If no time-zone is specified, local "
    "time-zone is assumed(deprecated).  You can also provide yyyymmddd-hh:mm:ss time is in UTC. Note "
    "that there is a dash between the date and time in UTC notation."
)

#: Warning 2174, sent (besides the answer) when an endDateTime names no zone. [LOG] verbatim.
IMPLIED_TZ_WARNING = (
    IMPLIED_TIME_ZONE,
    "Warning: You submitted request with date-time attributes without explicit time zone. Please "
    "switch to use yyyymmdd-hh:mm:ss in UTC or use instrument time zone, like US/Eastern. Implied "
    "time zone functionality will be removed in the next API release",
)


class HistoryError(Exception):
    """A refusal in IB's words: ``code`` is IB's error code, ``text`` IB's message."""

    def __init__(self, code: int, text: str):
        super().__init__(code, text)
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def _e321(cause: str) -> HistoryError:
    return HistoryError(321, _VALIDATING + cause)


def no_query_error(req_id: int) -> HistoryError:
    """Error 366 for cancelHistoricalData of a request id that is not open. [LOG]"""
    return HistoryError(366, f"No historical data query found for ticker id:{req_id}")


# --------------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------------

_INT32_MAX = 2**31 - 1
_DURATION_RE = re.compile(f"([0-9]+) ([{DURATION_UNITS}{DURATION_UNITS.lower()}])")
#: The refusal of a count above MAX_DURATION_COUNT, per unit.
_DURATION_TOO_LONG = {"S": _DURATION_SECONDS, "D": _DURATION_DAYS, "W": _DURATION_WEEKS, "M": _DURATION_MONTHS}


def parse_duration(text: str) -> Duration:
    """Parse a durationStr the way IB's gateway does; HistoryError(321) otherwise.

    "60 S", "1 D", "2 W", "6 M", "1 Y"; the unit letter in either case; a bare integer is seconds.
    """
    if text is None or text == "":
        raise _e321(_DURATION_MISSING)
    if text.isascii() and text.isdigit():
        text = text + " S"
    m = _DURATION_RE.fullmatch(text)
    if m is None:
        raise _e321(_DURATION_FORMAT)
    count = int(m.group(1))
    unit = m.group(2).upper()
    if count < 1 or count > _INT32_MAX or (unit == "S" and count < MIN_DURATION_SECONDS):
        raise _e321(_DURATION_INVALID)
    if count > MAX_DURATION_COUNT.get(unit, _INT32_MAX):
        raise _e321(_DURATION_TOO_LONG[unit])
    return Duration(count, unit)


# --------------------------------------------------------------------------------------------------
# Bar sizes
# --------------------------------------------------------------------------------------------------


def parse_bar_size(text: str) -> BarSize:
    """Parse a barSizeSetting; exact spelling as IB requires (or "1 week", "1 month"), else
    HistoryError(321)."""
    bar = lookup_bar_size(text)
    if bar is None:
        raise _e321(_BAR_SIZE_INVALID)
    return bar


# --------------------------------------------------------------------------------------------------
# Step sizes
# --------------------------------------------------------------------------------------------------


#: Bars of this many seconds or more are not held to the step table's smaller end (IB-LIM note 1).
_LIFTED_BAR_SECONDS = 60
#: The most bars (duration / bar size, nominal) a request of 1 min bars or larger may ask for.
MAX_NOMINAL_BARS = 15_000


def check_step(duration: Duration, bar: BarSize, *, enforce_max: bool = False) -> None:
    """IB's step sizes: HistoryError(162) when ``bar`` is too small for ``duration``.

    Bars under 1 min: the row is the first whose duration is at least ``duration`` (the last row for
    anything longer). Bars of 1 min or more: also allowed when the request holds at most
    :data:`MAX_NOMINAL_BARS` bars ("60 D" or "6 M" of "1 hour", "30 D" of "15 mins").
    With ``enforce_max`` a bar larger than the row allows is refused too (IB answers those; see the
    module docstring).
    """
    _, smallest, largest = step_row(duration)
    size = bar.nominal_seconds
    too_fine = size < smallest.nominal_seconds
    if too_fine and size >= _LIFTED_BAR_SECONDS:
        # 1 min and larger: IB's table is an example, the rule is "a few thousand bars" (docstring)
        too_fine = duration.seconds() > MAX_NOMINAL_BARS * size
    if too_fine or (enforce_max and size > largest.nominal_seconds):
        # [LOG, localised] "...:invalid step: 1" for "1 D" of "1 secs"; the number is taken to be
        # the bar's length in seconds.
        raise HistoryError(162, f"{HMDS_PREFIX}invalid step: {size}")


# --------------------------------------------------------------------------------------------------
# endDateTime
# --------------------------------------------------------------------------------------------------

_FIRST_YEAR, _LAST_YEAR = 1978, 3000  # [RE] the years IB's gateway reads


def _bad_end() -> HistoryError:
    return HistoryError(10314, END_DATETIME_INVALID)


def _zone(name: str) -> tzinfo:
    try:
        return ib_zone(name)
    except IBTimeError:
        raise _bad_end() from None


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _read_end(text: str) -> IBTime:
    """The parts of a non-empty endDateTime; 10314 for a form IB does not take here (a date alone,
    epoch seconds, no seconds, a year outside 1978..3000, junk)."""
    try:
        t = read_time(text)
    except IBTimeError:
        raise _bad_end() from None
    if t.clock is None or not t.has_seconds or (t.day is not None and not _FIRST_YEAR <= t.day.year <= _LAST_YEAR):
        raise _bad_end()
    return t


def end_datetime_names_zone(text: str) -> bool:
    """Whether a (valid) endDateTime states its zone; if not, IB also sends :data:`IMPLIED_TZ_WARNING`.
    The empty text (now) and the dash form (UTC) state it."""
    text = (text or "").strip()
    return not text or _read_end(text).names_zone


def parse_end_datetime(text: str, now: datetime, default_tz: str = "US/Eastern") -> datetime:
    """The instant an endDateTime names, tz-aware in UTC; HistoryError(10314) when IB cannot read it.

    ``now`` is the gateway's current time (aware; naive is taken as UTC) and is returned for "".
    ``default_tz`` is the gateway's local zone, used when the text names none.
    """
    text = (text or "").strip()
    if not text:
        return _as_utc(now)
    end = _read_end(text)
    return end.instant(_zone(end.zone or default_tz), _as_utc(now))



# --------------------------------------------------------------------------------------------------
# whatToShow
# --------------------------------------------------------------------------------------------------

#: The series this gateway builds, a part of IB's WHAT_TO_SHOW (the rest is refused like unknown values).
BUILT_WHAT_TO_SHOW = frozenset({"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST",
                                "HISTORICAL_VOLATILITY", "OPTION_IMPLIED_VOLATILITY", "SCHEDULE"})


def check_what_to_show(text: str) -> str:
    """whatToShow upper-cased; HistoryError(321) for one this gateway does not build."""
    upper = (text or "").upper()
    if upper not in BUILT_WHAT_TO_SHOW:
        # [RE] ibx's text for historical bars. A real log for reqRealTimeBars reads
        # "...cause - What to show field is missing or incorrect." (atreyu-backtrader-api#5).
        raise _e321(f"What to show value of {text} rejected.")
    return upper


# --------------------------------------------------------------------------------------------------
# The whole request
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRequest:
    """A reqHistoricalData that passed every check."""

    end: datetime  # UTC; ``now`` for an empty endDateTime
    start: datetime  # UTC; end moved back by the duration on the calendar of ``default_tz``
    duration: Duration
    bar: BarSize
    what_to_show: str  # upper-cased
    end_given: bool  # False for an empty endDateTime
    implied_tz: bool  # endDateTime named no zone: send IMPLIED_TZ_WARNING too


def validate_request(
    end_text: str,
    duration_text: str,
    bar_text: str,
    what_to_show: str,
    *,
    now: datetime,
    keep_up_to_date: bool = False,
    sec_type: str = "",
    format_date: int | None = None,
    default_tz: str = "US/Eastern",
    enforce_max_bar: bool = False,
) -> HistoryRequest:
    """Every check of a reqHistoricalData, in IB's order (module docstring); the first failure raises.

    The 321/10314 checks are the gateway's own and come first; the step check (162) is the data
    farm's and comes last. Pacing and open-request limits are :class:`HistoryPacer`'s.
    """
    end = parse_end_datetime(end_text, now, default_tz)
    end_given = bool((end_text or "").strip())
    duration = parse_duration(duration_text)
    adjusted = (what_to_show or "").upper() == "ADJUSTED_LAST"
    if adjusted and end_given:
        raise _e321(_ADJUSTED_END)
    bar = parse_bar_size(bar_text)
    if adjusted and bar.is_multi_day:
        raise _e321(_ADJUSTED_MULTIDAY)
    what = check_what_to_show(what_to_show)
    if format_date is not None and format_date not in (1, 2, 3):
        # [LOG] vnpy#2937 "Date formatting selection of 0 rejected"; full stop as ibx writes it.
        raise _e321(f"Date formatting selection of {format_date} rejected.")
    if keep_up_to_date:
        if end_given:
            raise _e321(_LIVE_END)
        if (sec_type or "").strip().upper() == "BAG":
            raise _e321(_LIVE_COMBO)
        if what not in KEEP_UP_TO_DATE_WHAT_TO_SHOW:
            raise _e321(_LIVE_SOURCE)
        if 0 < bar.seconds < KEEP_UP_TO_DATE_MIN_BAR_SECONDS:
            raise _e321(_LIVE_SMALL_BAR)
    check_step(duration, bar, enforce_max=enforce_max_bar)
    start = duration.start_before(end.astimezone(_zone(default_tz))).astimezone(UTC)
    return HistoryRequest(
        end=end,
        start=start,
        duration=duration,
        bar=bar,
        what_to_show=what,
        end_given=end_given,
        implied_tz=not end_datetime_names_zone(end_text),
    )


# --------------------------------------------------------------------------------------------------
# Pacing and open requests
# --------------------------------------------------------------------------------------------------

_OPEN_LIMIT_TEXT = _PROCESSING + "Only 50 simultaneous API historical data requests allowed."  # [LOG]
_DUPLICATE_ID_TEXT = _PROCESSING + "Duplicate ticker ID for API historical data query"  # [LOG]


@dataclass(frozen=True)
class _Paced:
    at: float
    key: Hashable
    identity: Hashable
    weight: int


class HistoryPacer:
    """IB's rules per client connection. open requests: at most 50 outstanding at any time (all bar sizes).
    For bar sizes of 30 seconds or less ("small bars"): no identical request within 15 s; fewer than 6
    requests for the same contract, exchange and tick type within 2 s; at most 60 requests in any 10 minutes;
    a BID_ASK request counts twice. Time comes from an injectable monotonic clock (real seconds, not replay).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_open: int = MAX_OPEN):
        self._clock = clock
        self._max_open = max_open
        self._open: set[int] = set()
        self._paced: deque[_Paced] = deque()  # admitted small-bar requests of the last 600 s, oldest first

    def admit(self, req_id: int, key: tuple, bar: BarSize, what_to_show: str, identity: tuple) -> None:
        """Admit a request or raise; a refused request is not recorded.

        ``key`` = (conId or symbol, exchange, whatToShow); ``identity`` = every request parameter.
        Raises HistoryError(322) for an id already open or a 51st open request (the gateway's own
        checks, made first), HistoryError(162, PACING_VIOLATION) for a small-bar pacing violation.
        """
        if req_id in self._open:
            raise HistoryError(322, _DUPLICATE_ID_TEXT)
        if len(self._open) >= self._max_open:
            raise HistoryError(322, _OPEN_LIMIT_TEXT)
        if bar.is_small:
            now = self._clock()
            paced = self._paced
            while paced and now - paced[0].at >= TOTAL_WINDOW:
                paced.popleft()
            weight = request_weight(what_to_show)
            total = weight
            burst = weight
            for p in paced:
                total += p.weight
                age = now - p.at
                if age < IDENTICAL_WINDOW and p.identity == identity:
                    raise HistoryError(162, PACING_VIOLATION)
                if age < BURST_WINDOW and p.key == key:
                    burst += p.weight
            if burst >= BURST_LIMIT or total > TOTAL_LIMIT:
                raise HistoryError(162, PACING_VIOLATION)
            paced.append(_Paced(now, key, identity, weight))
        self._open.add(req_id)

    def done(self, req_id: int) -> None:
        """Request answered (or failed, or cancelled): no longer open. Unknown ids are ignored.
        A keepUpToDate request stays open until cancelled, so do not call this after its first answer."""
        self._open.discard(req_id)

    def cancel(self, req_id: int) -> None:
        """cancelHistoricalData: closes an open request, HistoryError(366) when none is open."""
        if req_id not in self._open:
            raise no_query_error(req_id)
        self._open.discard(req_id)

    def open_count(self) -> int:
        return len(self._open)

    def is_open(self, req_id: int) -> bool:
        return req_id in self._open
