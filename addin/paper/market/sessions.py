"""Intraday sessions of the exchange-hours paper market (``Market(hours="exchange")``).

In exchange mode an instrument trades only inside its sessions, on days that have a replayed bar:

======== =========================================== ==========================================
kind     sessions (instrument's time zone)           daily close (DAY orders end)
======== =========================================== ==========================================
STK      09:30-16:00 New York (the liquid hours;     16:00 New York
         no pre/post-market)
IND      08:30-15:00 Chicago (the liquid hours)      15:00 Chicago
FUT      00:00-16:00 and 17:00-24:00 Chicago (CME's  16:00 Chicago
         daily break 16:00-17:00; no evening session
         on Fridays; the Sunday 17:00 open is not
         modelled: Sunday has no bar, so the week
         starts Monday 00:00)
CASH,    no gating: every replayed hour (FX) or day  none
CRYPTO   (crypto) trades, as in around-the-clock
======== =========================================== ==========================================

Outside its sessions an instrument's quote stays at the last second of its latest session (the
close): no ticks, no trades, no volume. Times are epoch seconds (float or int) throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .series import DAY, unit_of, unit_start

if TYPE_CHECKING:  # pragma: no cover
    from .universe import Instrument

HOUR_S = 3600
LOOK_BACK_DAYS = 16     # long enough to cross any weekend plus the longest run of real holidays
FUTURES_BREAK = (16 * HOUR_S, 17 * HOUR_S)


class SessionCalendar:
    """Sessions of the instruments of one exchange-hours market. Per-day sessions are cached (the
    calendar is fixed at the gateway's start, like the feeds)."""

    def __init__(self) -> None:
        self._days: dict[tuple[int, int], list[tuple[int, int]]] = {}
        # per conId, the last stretch asked about: (from, to, frozen at or None while trading), so a
        # stream asking every step for thousands of instruments costs a comparison each
        self._stretch: dict[int, tuple[float, float, float | None]] = {}

    @staticmethod
    def gated(inst: "Instrument") -> bool:
        """Whether the instrument has intraday sessions (stocks, indexes, futures with daily bars)."""
        return inst.sec_type in ("STK", "IND", "FUT") and inst.feed.kind == DAY and inst.liquid is not None

    def day_sessions(self, inst: "Instrument", day: int) -> list[tuple[int, int]]:
        """(start, end) epochs of the sessions of local day ordinal ``day``: none when the day has no
        replayed bar (weekend, holiday)."""
        key = (inst.con_id, day)
        got = self._days.get(key)
        if got is None:
            got = self._days[key] = self._compute(inst, day)
        return got

    def _compute(self, inst: "Instrument", day: int) -> list[tuple[int, int]]:
        if not bool(inst.feed.open_on(np.array([day], dtype=np.int64))[0]):
            return []
        tz = inst.tz
        d0, d1 = unit_start(DAY, tz, day), unit_start(DAY, tz, day + 1)
        if inst.sec_type == "FUT":
            out = [(d0, d0 + FUTURES_BREAK[0])]
            if (day - 1) % 7 < 4:            # ordinal 1 is a Monday: an evening session Monday .. Thursday
                out.append((d0 + FUTURES_BREAK[1], d1))
            return out
        assert inst.liquid is not None
        return [(d0 + inst.liquid[0], d0 + inst.liquid[1])]

    def close_offset(self, inst: "Instrument") -> int:
        """Seconds after local midnight of the daily close (the end of a DAY order)."""
        if inst.sec_type == "FUT":
            return FUTURES_BREAK[0]
        assert inst.liquid is not None
        return inst.liquid[1]

    def is_open(self, inst: "Instrument", epoch: float) -> bool:
        """Whether the instrument trades at ``epoch`` (always True for an ungated instrument)."""
        if not self.gated(inst):
            return True
        day = unit_of(DAY, inst.tz, epoch)
        return any(a <= epoch < b for a, b in self.day_sessions(inst, day))

    def traded_epoch(self, inst: "Instrument", epoch: float) -> float:
        """``epoch`` itself inside a session; outside, the last second of the latest session before it
        (the close the quote stays at). ``epoch`` when no session lies within LOOK_BACK_DAYS."""
        if not self.gated(inst):
            return epoch
        got = self._stretch.get(inst.con_id)
        if got is None or not got[0] <= epoch < got[1]:
            got = self._stretch[inst.con_id] = self._stretch_at(inst, epoch)
        return epoch if got[2] is None else got[2]

    def _stretch_at(self, inst: "Instrument", epoch: float) -> tuple[float, float, float | None]:
        """The session holding ``epoch`` (from, to, None), or the closed stretch around it: from the
        last session's end to the next one's start, frozen at the last session's last second."""
        day = unit_of(DAY, inst.tz, epoch)
        last = next(((a, b) for d in range(day, day - LOOK_BACK_DAYS, -1)
                     for a, b in reversed(self.day_sessions(inst, d)) if a <= epoch), None)
        if last is None:
            return epoch, epoch + 1, None
        a, b = last
        if epoch < b:
            return float(a), float(b), None
        nxt = next((s0 for d in range(day, day + LOOK_BACK_DAYS)
                    for s0, _ in self.day_sessions(inst, d) if s0 > epoch), None)
        return float(b), float(nxt) if nxt is not None else epoch + 1, float(b - 1)

    def open_mask(self, inst: "Instrument", seconds: np.ndarray) -> np.ndarray:
        """Per epoch second of ``seconds`` (sorted): whether the instrument trades in it."""
        if not self.gated(inst) or len(seconds) == 0:
            return np.ones(len(seconds), dtype=bool)
        mask = np.zeros(len(seconds), dtype=bool)
        tz = inst.tz
        for day in range(unit_of(DAY, tz, float(seconds[0])), unit_of(DAY, tz, float(seconds[-1])) + 1):
            for a, b in self.day_sessions(inst, day):
                mask |= (seconds >= a) & (seconds < b)
        return mask

    def close_after(self, inst: "Instrument", epoch: float) -> float | None:
        """The first daily close after ``epoch`` on a day that trades (None for an ungated instrument):
        when a DAY order placed at ``epoch`` ends."""
        if not self.gated(inst):
            return None
        tz = inst.tz
        day = unit_of(DAY, tz, epoch)
        for d in range(day, day + LOOK_BACK_DAYS):
            if self.day_sessions(inst, d):
                close = unit_start(DAY, tz, d) + self.close_offset(inst)
                if close > epoch:
                    return float(close)
        return None
