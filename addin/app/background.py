"""Requests that run off Excel's calculation thread: a worksheet function starts one, answers at once
with progress text, and its cell is recalculated when the answer is in.

A request is keyed by its arguments (a hashable tuple such as ``("history", "AAPL", "1 M", ...)``):
every cell asking with the same arguments shares one :class:`Handle`, and one request reaches IB.
Each handle has a ``key`` (``"@ibxl <n>"``, never a board key): a formula cell waiting for it
registers under that key in the RecalcRegistry, and when the request ends the handle's key is
touched (``RecalcRegistry.touch``), so the pump recalculates those cells (see addin/excel/pump.py).

Two kinds:

- kept (``fresh=False``: history, contract details): the finished answer is kept per argument set
  (the ``keep`` argument sets used last, holding at most ``keep_cells`` table cells in all: a
  month of 5-second bars around the clock is ~4 million) and every later evaluation returns it
  without asking IB again;
  an error is kept ``error_ttl`` seconds, then the next evaluation asks again;
- fresh (``fresh=True``: positions, account values, P&L, order state): every evaluation asks again
  (unless a request with the same arguments is in flight) and waits ``inline_wait`` seconds for it;
  meanwhile the last answer for those arguments is shown, and its cells are recalculated only when
  the new answer differs from it (no recalculation loop when nothing changes).

Work runs on a pool of ``workers`` daemon threads (a qualification or a paced history request
mostly waits on IB, so many may wait at once). ``inline_wait`` is short on purpose: Excel calls
the functions of a sheet one after another, so a 2 ms wait per cold cell already costs 2 s for
1000 cells. Thread-safe.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Handle", "BackgroundRequests", "PSEUDO_PREFIX"]

PSEUDO_PREFIX = "@ibxl "          # a handle's registry key; no instrument text starts with "@"
_ids = itertools.count(1)


class Handle:
    """One request in the background. ``key``: its registry key; ``args``: what it was asked with;
    ``what``: words for its progress text ("AAPL history"). Once ``done`` is set, ``result`` holds
    the answer or ``error`` the exception it raised. ``progress``: ``(done, total)`` requests so far
    when the work reports it. ``previous``: the last finished handle of the same arguments (fresh
    requests show its answer while they run)."""

    def __init__(self, args: Hashable, what: str, previous: "Handle | None" = None):
        self.key = f"{PSEUDO_PREFIX}{next(_ids)}"
        self.args = args
        self.what = what
        self.previous = previous
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.progress: tuple[int, int] | None = None
        self.kept = True
        self.started = time.monotonic()
        self.finished: float | None = None

    def report(self, done: int, total: int) -> None:
        """Progress callback: ``done`` of ``total`` requests answered (History.bars' ``progress``)."""
        self.progress = (int(done), int(total))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ended (True) or ``timeout`` seconds passed (False)."""
        return self.done.wait(timeout)

    def text(self) -> str:
        """The cell text while it runs: ``#IBXL: loading AAPL history (12/50 requests)``."""
        if self.progress and self.progress[1] > 1:
            return f"#IBXL: loading {self.what} ({self.progress[0]}/{self.progress[1]} requests)"
        return f"#IBXL: loading {self.what} ..."

    def __repr__(self) -> str:
        state = "error" if self.error is not None else "done" if self.done.is_set() else "running"
        return f"Handle({self.key!r}, {self.args!r}, {state})"


def _same(a: Handle, b: Handle) -> bool:
    """Whether two finished handles answered the same (DataFrames compared by content)."""
    if (a.error is None) != (b.error is None):
        return False
    if a.error is not None:
        return str(a.error) == str(b.error)
    x, y = a.result, b.result
    if hasattr(x, "equals") and type(x) is type(y):
        try:
            return bool(x.equals(y))
        except Exception:
            return False
    try:
        return bool(x == y)
    except Exception:
        return False


def _cells(handle: Handle) -> int:
    """How many cells a kept answer fills (a table's rows x columns; anything else 1)."""
    r = handle.result
    if isinstance(r, list) and r and isinstance(r[0], list):
        return len(r) * len(r[0])
    return 1


class BackgroundRequests:
    """The requests of one runtime. ``touch(keys)``: called with ``[handle.key]`` when a request ended
    and its cells must be recalculated (``RecalcRegistry.touch``). ``started``: requests run so
    far (a test counts that one argument set asked IB once)."""

    def __init__(self, touch: Callable[[list[str]], Any], *, workers: int = 32, inline_wait: float = 0.002,
                 error_ttl: float = 30.0, keep: int = 256, keep_cells: int = 10_000_000):
        self._touch = touch
        self.inline_wait = inline_wait
        self.error_ttl = error_ttl
        self._keep, self._keep_cells = keep, keep_cells
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle_workers = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: dict[Hashable, Handle] = {}
        self._finished: collections.OrderedDict[Hashable, Handle] = collections.OrderedDict()
        self.started = 0
        self.closed = False

    def get(self, args: Hashable, work: Callable[[Handle], Any], what: str, *, fresh: bool = False,
            keep_result: bool = True, wait: bool = True) -> Handle:
        """The handle for ``args``: a kept answer, the request in flight, or a new one running
        ``work(handle)`` (its return value is the answer; it may call ``handle.report``). Waits up
        to ``inline_wait`` seconds for a new request, so that a quick answer needs no second
        evaluation (``wait=False``: not even that). Never blocks longer. ``keep_result=False``:
        only an error is kept (the caller keeps the answer itself, e.g. a subscription's key).
        Raises RuntimeError after :meth:`close`."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the runtime is closed")
            running = self._running.get(args)
            if running is not None:
                return running
            last = self._finished.get(args)
            if last is not None and not fresh:
                if last.error is None or time.monotonic() - (last.finished or 0) < self.error_ttl:
                    self._finished.move_to_end(args)
                    return last
            handle = Handle(args, what, previous=last if fresh else None)
            handle.kept = keep_result
            self._running[args] = handle
            self.started += 1
            if self._idle_workers == 0 and len(self._threads) < self._workers:
                thread = threading.Thread(target=self._worker, name=f"ibxl-udf-{len(self._threads) + 1}",
                                          daemon=True)   # daemon: a long history request never holds up exit
                self._threads.append(thread)
                thread.start()
            else:
                self._idle_workers -= 1 if self._idle_workers else 0
        self._jobs.put((handle, work))
        if wait:
            handle.wait(self.inline_wait)
        return handle

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(*job)
            with self._lock:
                self._idle_workers += 1

    def _run(self, handle: Handle, work: Callable[[Handle], Any]) -> None:
        try:
            handle.result = work(handle)
        except BaseException as exc:          # shown in the cell as text
            handle.error = exc
        handle.finished = time.monotonic()
        with self._lock:
            self._running.pop(handle.args, None)
            if handle.kept or handle.error is not None:
                self._finished[handle.args] = handle
                self._finished.move_to_end(handle.args)
            else:
                self._finished.pop(handle.args, None)
            while len(self._finished) > 1 and (len(self._finished) > self._keep or
                                               sum(map(_cells, self._finished.values())) > self._keep_cells):
                self._finished.popitem(last=False)      # the least recently used first
            handle.done.set()             # under the lock: wait_idle sees done and not running together
            self._idle.notify_all()
        if handle.previous is None or not _same(handle, handle.previous):
            try:
                self._touch([handle.key])
            except Exception:
                log.exception("recalculation request for %s failed", handle)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight (True) or ``timeout`` seconds pass (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def forget(self) -> None:
        """Drop every kept answer (the next evaluations ask again)."""
        with self._lock:
            self._finished.clear()

    def close(self) -> None:
        """Refuse new requests; the running ones end on their own (daemon threads)."""
        with self._lock:
            self.closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._jobs.put(None)
