"""Reference values the paper market states rather than replays: dividends, shortable shares and the
option activity of an underlying (reqMktData generic ticks 456, 236, 100 and 101).

The replayed price files carry none of these, so each instrument gets fixed, plausible numbers
(about what IB showed for the real stock in 2025), written down here and in docs/paper-market.md.
Only the next ex-dividend date moves: it is the next date of the stated quarterly schedule on or after
the replay day, so it never lies in the past. Historical and implied volatility (104, 106) are not
stated: ``addin.paper.services.generic_ticks`` computes them from the replayed daily closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Dividends:
    """IB's dividend tick (59): the sum of the past 12 months, the expected sum of the next 12, and the
    next payment. ``ex_months``/``ex_day``: the quarterly schedule of ex-dates (day of month)."""

    past12: float
    next12: float
    next_amount: float
    ex_months: tuple[int, ...]
    ex_day: int

    def next_date(self, today: date) -> date:
        """The first ex-date of the schedule on or after ``today``."""
        for year in (today.year, today.year + 1):
            for month in self.ex_months:
                d = date(year, month, self.ex_day)
                if d >= today:
                    return d
        raise AssertionError("a quarterly schedule always has a date within a year")

    def tick_value(self, today: date) -> str:
        """The tick-59 string ``past12,next12,yyyymmdd,nextAmount`` (IB's layout)."""
        return f"{self.past12:g},{self.next12:g},{self.next_date(today):%Y%m%d},{self.next_amount:g}"


#: Tick 59 for instruments that pay none (the SIM... stocks): zeros and no date, as IB sends them.
NO_DIVIDENDS = "0,0,,0"


@dataclass(frozen=True)
class OptionActivity:
    """Options on the instrument: a full day's call and put volume (contracts; the ticks show the part of
    it the local day has gone through) and the open interest (contracts, fixed)."""

    call_volume: int
    put_volume: int
    call_open_interest: int
    put_open_interest: int


#: by symbol
DIVIDENDS = {
    "GOOG": Dividends(0.80, 0.84, 0.21, (3, 6, 9, 12), 9),
    "AAPL": Dividends(1.00, 1.04, 0.26, (2, 5, 8, 11), 11),
    "MSFT": Dividends(3.32, 3.64, 0.91, (2, 5, 8, 11), 20),
    "SPY": Dividends(6.96, 7.20, 1.80, (3, 6, 9, 12), 20),
}

#: Shortable shares (tick 89) by symbol; stocks not listed (SIM...) get DEFAULT_SHORTABLE_SHARES.
SHORTABLE_SHARES = {"GOOG": 45_000_000, "AAPL": 120_000_000, "MSFT": 60_000_000, "SPY": 25_000_000}
DEFAULT_SHORTABLE_SHARES = 2_000_000
#: Tick 46: > 2.5 means at least 1000 shares can be borrowed (IB: 3.0 easy, 2.0 locate, 1.0 none).
SHORTABLE = 3.0

OPTIONS = {
    "GOOG": OptionActivity(310_000, 190_000, 2_400_000, 1_900_000),
    "AAPL": OptionActivity(1_150_000, 820_000, 4_600_000, 3_900_000),
    "MSFT": OptionActivity(520_000, 360_000, 2_100_000, 1_700_000),
    "SPY": OptionActivity(4_200_000, 5_600_000, 9_800_000, 13_500_000),
    "SPX": OptionActivity(1_400_000, 1_900_000, 7_200_000, 10_400_000),
}
DEFAULT_OPTIONS = OptionActivity(12_000, 8_000, 150_000, 110_000)

#: Implied volatility (tick 24) = the 30-day historical volatility (tick 23) times this: options
#: usually price a little more volatility than the recent past showed.
IMPLIED_OVER_HISTORICAL = 1.15
