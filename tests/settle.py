"""Evaluating worksheet functions until they settle, as the pump's recalculations do in Excel.

No function waits for IB: a first call may answer "#IBXL: waiting ..." / "#IBXL: loading ..." while
its request runs in the background. Tests (and the workbook processes they start) evaluate again
after each background request ended and each board change, until no cell is waiting. Waits on
events (the runtime's requests, the QuoteBoard's version), never on sleeps.
"""

from __future__ import annotations

import time

PENDING = ("#IBXL: waiting", "#IBXL: loading")


def pending(value) -> bool:
    """Whether a cell (or any cell of an array) still shows a waiting / loading text."""
    if isinstance(value, list):
        return any(pending(v) for v in value)
    return isinstance(value, str) and value.startswith(PENDING)


def settled(call, rt=None, timeout: float = 10.0):
    """``call()`` re-evaluated after each background request ended and each board change, until no
    cell of its answer is waiting (or ``timeout`` seconds passed: the last answer is returned).
    ``rt``: the runtime (default the process-wide one)."""
    if rt is None:
        from addin.app.runtime import get_runtime
        rt = get_runtime(connect=False)
    deadline = time.monotonic() + timeout
    while True:
        version = rt.board.version
        value = call()
        if not pending(value) or time.monotonic() > deadline:
            return value
        if rt.requests.in_flight():
            rt.requests.wait_idle(max(0.0, deadline - time.monotonic()))
        else:
            rt.board.wait(version, min(0.5, max(0.0, deadline - time.monotonic())))   # at once when it changed
