"""IB's API message rate for one client: at most ``limit`` (50) messages a second, beyond it error 100.

How it is measured. IB documents the figure ("50 messages per second", error 100 "Max rate of
messages per second has been exceeded"), not the meter. The gateway measures it as a token bucket:
``limit`` messages may arrive back to back, and the allowance refills at ``limit`` per second. So
a sustained rate above 50/s is refused, exactly as documented, while arrival jitter is not: IB's
own pacers (ib_async's 45 per any 1-second window, sent as bursts of 45) reach the gateway a
little bunched whenever one burst is read late and the next on time. A sliding window of exactly
one second counts both bursts (up to 90) and refuses a client that kept the rule; the bucket
absorbs up to 0.2 s of such jitter for a 45/s pacer. A flood (200 messages in one write) is refused beyond the first 50.
"""

from __future__ import annotations

import collections

# How many arrival times are kept to report "rec=" (messages received in the last second) in the
# error text; beyond it the figure is reported as this cap (a flood needs no exact count).
_RECENT_CAP = 10_000


class MessageRate:
    """The rate meter of one connection. Times are monotonic seconds, passed in by the caller."""

    __slots__ = ("limit", "tokens", "last", "recent", "refused")

    def __init__(self, limit: int):
        self.limit = limit
        self.tokens = float(limit)     # a new client may send a full burst at once
        self.last: float | None = None
        self.recent: collections.deque[float] = collections.deque()
        self.refused = 0               # messages refused with error 100 so far

    def _refill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(float(self.limit), self.tokens + (now - self.last) * self.limit)
        self.last = now

    def admit(self, now: float) -> bool:
        """Count one message arriving at ``now``; False when it exceeds the rate (refuse it)."""
        self._refill(now)
        recent = self.recent
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) < _RECENT_CAP:
            recent.append(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused += 1
        return False

    def wait(self, now: float) -> float:
        """Seconds until one more message would be admitted (0 when it would be now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.limit

    def received_last_second(self) -> int:
        """Messages received in the second before the latest ``admit`` (the "rec=" of error 100)."""
        return len(self.recent)
