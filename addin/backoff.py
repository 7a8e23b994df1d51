"""Backoff delays: how long to wait before the next attempt, shared by the IB reconnect loop and the
pump's retries while Excel is busy.

``iter(Backoff(start, cap))`` yields ``start``, then the previous delay times ``factor`` up to ``cap``,
for ever (the caller decides when to stop). With ``jitter`` j each delay is spread uniformly over
``delay * (1 - j) .. delay * (1 + j)`` so that many clients do not retry in step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays in seconds: ``start``, ``start * factor``, ... capped at ``cap`` (the first delay is
    ``start`` even when it exceeds ``cap``), each times ``1 + uniform(-jitter, jitter)``."""

    start: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __iter__(self) -> Iterator[float]:
        delay = self.start
        while True:
            yield delay + delay * random.uniform(-self.jitter, self.jitter) if self.jitter else delay
            delay = min(delay * self.factor, self.cap)
