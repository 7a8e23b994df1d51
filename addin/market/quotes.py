"""Market data: shared reqMktData lines and the QuoteBoard the Excel pump reads.

Where the data comes from: IB's ``reqMktData`` stream (TWS, IB Gateway or the paper gateway) through
the one :class:`~addin.ib.session.Session`. Every tickPrice / tickSize / tickString / marketDataType
callback for a line lands, on ibapi's message thread, in :meth:`QuoteBoard.update`; readers (the pump,
UDFs) take immutable :class:`BoardQuote` objects from the board.

Units everywhere in this module: prices in the contract's currency (per share, per unit of the
pair's base currency, per index point, per contract unit for futures: IB's quoted price, not times
the multiplier); sizes in shares, contracts, units of the base currency or coins, as IB sends them
(float, so fractional crypto sizes survive); times are timezone-aware UTC.

Decisions (see the docstrings for details):

- One line per conId. ``subscribe`` on an instrument that already has a line only counts one more
  user; ``unsubscribe`` of the last user sends ``cancelMktData``. Keys are canonical instrument text
  (``addin.ib.contracts.format_contract``), so "AAPL" and "conid:265598" share a key and a line.
- The line budget (``max_lines``, default 100 = IB's default allowance) is checked before anything
  is sent; snapshots in flight count too, as they do at IB.
- ``set_market_data_type`` applies to new lines and re-subscribes the existing ones (cancel, then a
  new reqMktData), so every cell shows the same kind of data. It is re-sent after every reconnect,
  before the lines are restored (a new connection starts at live).
- Lines survive reconnects and 1101 (the session re-sends them); the board keeps the last values,
  flags them ``stale`` while the line is down, and clears the flag with the first tick that follows.
  1102 (data kept) clears the flag at once.
- An IB error on a line (200 no such instrument, 354 not subscribed, 101 too many lines, ...) is
  written into the quote's ``error`` and frees the line (IB has dropped it). The users stay: a later
  ``subscribe`` of that instrument retries when the error may pass (101, 100, 10090, 10197, 354 after
  a type change), ``set_market_data_type`` retries every failed line.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ibapi.contract import Contract

from ..ib.contracts import ContractBook, format_contract
from ..ib.session import NO_TIMEOUT, IBError, Request, Session
from ..protocol import errors
from ..protocol.ticks import (
    DELAYED_TYPES,
    MARKET_DATA_TYPE_CODES,
    MARKET_DATA_TYPES,
    OPTION_FIELDS,
    PRICE_TICKS,
    SIZE_TICKS,
    TIME_TICKS,
    option_fields,
)
from ..protocol.unset import UNSET_DECIMAL, UNSET_DOUBLE

log = logging.getLogger(__name__)

__all__ = ["BoardQuote", "QuoteBoard", "MarketData", "MarketDataError", "DEFAULT_MAX_LINES"]

DEFAULT_MAX_LINES = 100            # IB's default allowance of simultaneous market data lines

OPTION_SEC_TYPES = ("OPT", "FOP")
OPEN_INTEREST_GENERIC = "101"      # reqMktData genericTickList: option open interest
MAX_PACING_RETRIES = 5             # automatic re-requests of a line IB refused with error 100
_DELAYED_NAMES = tuple(MARKET_DATA_TYPES[t] for t in sorted(DELAYED_TYPES))   # "delayed", "delayed-frozen"


class MarketDataError(IBError):
    """A market data request refused by this module before anything was sent (e.g. the line
    budget is used up: code 101, IB's own code for "Max number of tickers has been reached")."""


# --- quotes -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BoardQuote:
    """The latest market data of one instrument, as last received from IB (what the QuoteBoard holds per key).

    Prices (bid, ask, last, open, high, low, close, change, mid, spread) are in the contract's
    currency, None until IB sent one (IB's "no price", -1, is also None). ``close`` is the previous
    session's close; ``open``, ``high``, ``low`` and ``volume`` are today's. Sizes (bid_size,
    ask_size, last_size, volume) are in shares / contracts / base-currency units / coins as IB sends
    them. ``change`` = last - close (mid - close for instruments without trades, e.g. FX);
    ``change_pct`` = change / close as a fraction (0.0123 = 1.23 %: Excel's convention, shown as a
    percentage by a cell formatted ``0.00%``; the same unit in the Watchlist, IB_QUOTE and IB_QUOTES);
    ``mid`` = (bid + ask) / 2; ``spread`` = ask - bid. ``updated``: UTC time this process received the
    latest tick (None before any);
    ``last_time``: UTC time of the last trade as IB reports it (tick 45/88), None if not sent.
    ``data_type``: "live", "frozen", "delayed" or "delayed-frozen": what IB actually sent (its
    marketDataType callback, or the 10167 notice), which may differ from what was asked.
    ``error``: "IB <code>: <text>" when the line failed (it is then no longer streaming), else None.
    ``notice``: IB's latest informational message for the line (e.g. 10167), else None.
    ``stale``: True while the line is not streaming (connection lost, 1100/1101 before the first
    tick after the restore, failed, or no longer subscribed): the values are the last ones received.
    ``symbol``: the canonical instrument text (the board key).

    Options (IB's tickOptionComputation; None for other instruments and while IB has not computed
    them: its -1 / -2 / UNSET_DOUBLE): ``iv`` (implied volatility, a fraction per year: 0.25 = 25 %),
    ``delta``, ``gamma``, ``vega`` (per 1 volatility point), ``theta`` (per calendar day),
    ``model_price`` (IB's model price of one option, not times the multiplier) from the model
    computation (tick 13, delayed 83); ``bid_iv`` ... ``bid_theta`` and ``ask_iv`` ... ``ask_theta``
    the same from the bid (10 / 80) and the ask (11 / 81); ``und_price`` the underlying's price the
    latest computation used. ``open_interest``: contracts (ticks 27 / 28, generic tick 101).
    """

    symbol: str
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last_size: float | None = None
    volume: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    change: float | None = None
    change_pct: float | None = None
    mid: float | None = None
    spread: float | None = None
    updated: datetime | None = None
    last_time: datetime | None = None
    data_type: str | None = None
    error: str | None = None
    notice: str | None = None
    stale: bool = False
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    und_price: float | None = None
    model_price: float | None = None
    bid_iv: float | None = None
    bid_delta: float | None = None
    bid_gamma: float | None = None
    bid_vega: float | None = None
    bid_theta: float | None = None
    ask_iv: float | None = None
    ask_delta: float | None = None
    ask_gamma: float | None = None
    ask_vega: float | None = None
    ask_theta: float | None = None
    open_interest: float | None = None

    @property
    def priced(self) -> bool:
        """Both sides of the book, or a last: enough to show a price and to value an order. A new
        line's first tick often carries one side only (IB sends bid and ask as separate messages)."""
        return (self.bid is not None and self.ask is not None) or self.last is not None


_RAW_FIELDS = frozenset({"bid", "ask", "last", "bid_size", "ask_size", "last_size", "volume", "open",
                         "high", "low", "close", "updated", "last_time", "data_type", "error", "notice",
                         "stale", "open_interest", *OPTION_FIELDS})
_TIME_FIELDS = ("updated", "last_time")


def _build_quote(symbol: str, raw: dict[str, Any]) -> BoardQuote:
    """A BoardQuote from raw fields (times as epoch seconds); derived fields computed here, not per tick."""
    bid, ask, last, close = raw.get("bid"), raw.get("ask"), raw.get("last"), raw.get("close")
    mid = spread = None
    if bid is not None and ask is not None:
        mid = round((bid + ask) / 2, 10)
        spread = round(ask - bid, 10)
    ref = last if last is not None else mid
    change = change_pct = None
    if ref is not None and close is not None:
        change = round(ref - close, 10)
        if close:
            change_pct = change / close
    values = {k: v for k, v in raw.items() if k in _RAW_FIELDS}
    for name in _TIME_FIELDS:
        t = values.get(name)
        if t is not None and not isinstance(t, datetime):
            values[name] = datetime.fromtimestamp(t, timezone.utc)
    return BoardQuote(symbol=symbol, change=change, change_pct=change_pct, mid=mid, spread=spread, **values)


def decode_tick(name: str, args: tuple) -> dict[str, Any] | None:
    """BoardQuote fields carried by one ibapi market data callback ``name(*args)``, or None when it
    carries none (tickReqParams, tickGeneric, ...). Delayed tick types (66-76, 88) give the same
    fields as the live ones; tickOptionComputation gives the option fields (``option_fields``)."""
    if name == "tickPrice":
        field = PRICE_TICKS.get(args[1])
        if field is None:
            return None
        price = args[2]
        if price == -1 or price >= UNSET_DOUBLE or (isinstance(price, float) and math.isnan(price)):
            price = None
        return {field: price}
    if name == "tickSize":
        field = SIZE_TICKS.get(args[1])
        if field is None:
            return None
        size = args[2]
        return {field: None if size is None or size == UNSET_DECIMAL else float(size)}
    if name == "tickString":
        field = TIME_TICKS.get(args[1])
        if field is None:
            return None
        try:
            return {field: float(args[2])}
        except (TypeError, ValueError):
            return None
    if name == "marketDataType":
        return {"data_type": MARKET_DATA_TYPES.get(args[1], str(args[1]))}
    if name == "tickOptionComputation":
        return option_fields(args[1], args[3:11])
    return None


# --- the board ----------------------------------------------------------------------------------------
class QuoteBoard:
    """Thread-safe store of the latest BoardQuote per key (canonical instrument text), with versions.

    Every change bumps one board-wide counter, the *version*; each key remembers the version of its
    latest change, and keys are kept ordered by it (an OrderedDict moved to the end on every change).
    So ``changes_since(v)`` walks back from the newest change and stops at the first key not newer
    than ``v``: its cost is the number of changed keys, not the number of keys.

    Writers call :meth:`update` (on ibapi's message thread, once per tick: a dict update under a lock;
    the BoardQuote itself is built lazily when read) or :meth:`mark`. Readers call :meth:`get`,
    :meth:`changes_since`, :meth:`keys` from any thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters = 0
        self._raw: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, BoardQuote] = {}
        self._order: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._version = 0
        self.last_scan = 0          # keys examined by the latest changes_since (for tests and stats)

    @property
    def version(self) -> int:
        """The version of the latest change (0 for an empty board). Monotonic."""
        return self._version

    def update(self, key: str, **fields) -> int:
        """Record a tick: set ``fields`` (BoardQuote field names; times as epoch seconds or datetimes) for
        ``key``, stamp ``updated`` with now and clear ``stale`` (unless given). Returns the new
        version. Unknown field names raise TypeError."""
        fields.setdefault("updated", time.time())
        fields.setdefault("stale", False)
        return self._apply(key, fields)

    def set_ticks(self, key: str, field: str | None, value: Any, field2: str | None, value2: Any) -> int:
        """:meth:`update` of up to two known market data fields (names from PRICE_TICKS / SIZE_TICKS,
        not checked) in one version, without building keyword dicts: the per-tick path (a price and
        its size). A None field name is skipped. Returns the new version."""
        now = time.time()
        with self._lock:
            raw = self._raw.get(key)
            if raw is None:
                self._raw[key] = raw = {}
            if field is not None:
                raw[field] = value
            if field2 is not None:
                raw[field2] = value2
            raw["updated"] = now
            raw["stale"] = False
            return self._changed_locked(key)

    def mark(self, key: str, **fields) -> int:
        """Set state fields (``stale``, ``error``, ``notice``, ``data_type``, ...) without touching
        ``updated``: for changes that are not market data. Returns the new version."""
        return self._apply(key, fields)

    def _apply(self, key: str, fields: dict[str, Any]) -> int:
        if not fields.keys() <= _RAW_FIELDS:
            raise TypeError(f"unknown BoardQuote fields {sorted(set(fields) - _RAW_FIELDS)}")
        with self._lock:
            raw = self._raw.get(key)
            if raw is None:
                self._raw[key] = raw = {}
            raw.update(fields)
            return self._changed_locked(key)

    def _changed_locked(self, key: str) -> int:
        """Under the lock: ``key`` changed. New version, moved to the end of the change order."""
        self._cache.pop(key, None)
        self._version = version = self._version + 1
        order = self._order
        order[key] = version
        order.move_to_end(key)
        if self._waiters:
            self._changed.notify_all()
        return version

    def wait(self, version: int, timeout: float | None = None) -> bool:
        """Block until the board's version is past ``version`` (True) or ``timeout`` seconds pass
        (False). For the pump and for tests: wake on the next change instead of polling."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._waiters += 1
            try:
                while self._version <= version:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._changed.wait(left)
                return True
            finally:
                self._waiters -= 1

    def wait_priced(self, key: str, timeout: float) -> BoardQuote | None:
        """The BoardQuote of ``key`` once priced (``BoardQuote.priced``) or failed, waiting up to
        ``timeout`` seconds; after that, whatever the board holds (None when nothing arrived)."""
        deadline = time.monotonic() + timeout
        while True:
            version = self.version
            q = self.get(key)
            if q is not None and (q.priced or q.error):
                return q
            left = deadline - time.monotonic()
            if left <= 0:
                return q
            self.wait(version, left)

    def mark_many(self, keys: Iterable[str], **fields) -> None:
        """:meth:`mark` for several keys (those not on the board are skipped)."""
        with self._lock:
            present = [k for k in keys if k in self._raw]
        for k in present:
            self._apply(k, dict(fields))

    def _quote(self, key: str) -> BoardQuote:
        q = self._cache.get(key)
        if q is None:
            q = self._cache[key] = _build_quote(key, self._raw[key])
        return q

    def get(self, key: str) -> BoardQuote | None:
        """The latest BoardQuote of ``key``, or None if the board has never seen it."""
        with self._lock:
            if key not in self._raw:
                return None
            return self._quote(key)

    def field(self, key: str, name: str) -> Any:
        """One raw field of ``key`` (e.g. "bid"), or None: a cheap read for polling (no BoardQuote built,
        no lock: one dict lookup is atomic)."""
        raw = self._raw.get(key)
        return None if raw is None else raw.get(name)

    def changes_since(self, version: int) -> tuple[int, dict[str, BoardQuote]]:
        """``(current_version, {key: BoardQuote})`` for every key changed after ``version``; pass the
        returned version next time to get only what changed since. Cost: proportional to the number
        of changed keys (``last_scan`` holds how many keys were examined)."""
        out: dict[str, BoardQuote] = {}
        steps = 0
        with self._lock:
            for key, ver in reversed(self._order.items()):
                steps += 1
                if ver <= version:
                    break
                out[key] = self._quote(key)
            self.last_scan = steps
            return self._version, out

    def raw_changes_since(self, version: int, keys: Container[str] | None = None) -> tuple[int, dict[str, dict]]:
        """:meth:`changes_since` without building BoardQuotes: ``{key: a copy of its raw fields}`` (the
        fields :meth:`mark` takes; times as epoch seconds), only for ``keys`` when given. For relaying
        a board to another process's board (the ibxl service's pushes)."""
        out: dict[str, dict] = {}
        with self._lock:
            for key, ver in reversed(self._order.items()):
                if ver <= version:
                    break
                if keys is None or key in keys:
                    out[key] = dict(self._raw[key])
            return self._version, out

    def raw(self, key: str) -> dict | None:
        """A copy of ``key``'s raw fields (see :meth:`raw_changes_since`), None when never seen."""
        with self._lock:
            raw = self._raw.get(key)
            return None if raw is None else dict(raw)

    def keys(self) -> list[str]:
        """Every key on the board, oldest change first."""
        with self._lock:
            return list(self._order)

    def discard(self, key: str) -> None:
        """Forget ``key`` (not reported by changes_since)."""
        with self._lock:
            self._raw.pop(key, None)
            self._cache.pop(key, None)
            self._order.pop(key, None)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._raw

    def __len__(self) -> int:
        with self._lock:
            return len(self._raw)


class _Feeder:
    """MarketData's outbound work (reqMktData, cancelMktData, reqMarketDataType), handed to the
    session one message at a time, evenly spaced (``interval`` seconds apart) and in order.

    Why: the session's pacer keeps at most ``rate`` messages in any one-second window, but lets
    them out in bursts (45 back to back, then a pause). IB, and the paper gateway, count arrivals;
    a receiver that reads one burst a little late and the next one on time sees more than 50 in
    a second and answers error 100. Spaced messages leave (50 - 45) / 45 = 11 % of slack for jitter.
    A job may carry a ``not_before`` time (monotonic seconds) for delayed retries.
    """

    def __init__(self, interval: float, name: str = "ibxl-md-feeder"):
        self.interval = interval
        self.name = name
        self._jobs: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = True
        self._next = 0.0

    def put(self, job: Callable[[], None], not_before: float = 0.0) -> None:
        with self._cond:
            if not self._running:
                return
            heapq.heappush(self._jobs, (not_before, next(self._seq), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def stop(self, timeout: float = 5.0) -> None:
        """Run what is due now (cancels must still go out), then end the thread."""
        with self._cond:
            self._running = False
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if not self._jobs:
                        if not self._running:
                            return
                        self._cond.wait()
                        continue
                    first = self._jobs[0][0]
                    if not self._running and first > now:
                        self._jobs.clear()           # stopping: drop delayed retries, keep the rest
                        return
                    due = max(first, self._next)
                    if due <= now:
                        job = heapq.heappop(self._jobs)[2]
                        break
                    self._cond.wait(due - now)
            try:
                job()
            except Exception:
                log.exception("market data job failed")
            self._next = time.monotonic() + self.interval


class _QuoteLine:
    """One instrument's subscription: its users and (while streaming) its session Request."""

    __slots__ = ("key", "contract", "users", "request", "error_code", "retries")

    def __init__(self, key: str, contract: Contract):
        self.key = key
        self.contract = contract
        self.users = 0
        self.request: Request | None = None      # set when queued; sent once request.req_id >= 0
        self.error_code: int | None = None
        self.retries = 0


# --- market data ------------------------------------------------------------------------------------
class MarketData:
    """Market data lines through one Session, written into a QuoteBoard.

    session: a connected (or reconnecting) :class:`~addin.ib.session.Session`. contracts: a
    ``ContractBook`` for instrument text (created from ``addin.ib.contracts`` on first use when None).
    board: where quotes go (a new QuoteBoard when None). max_lines: the line budget: at most this
    many simultaneous lines (streaming plus snapshots in flight); IB's default allowance is 100.
    generic_ticks: IB's genericTickList for every streaming line ("" by default); an option's line
    adds 101 (open interest).

    Outbound messages (reqMktData, cancelMktData, reqMarketDataType) leave evenly spaced at the
    session's rate (see ``_Feeder``): ``subscribe`` returns at once, and 500 new lines take about
    500 / 45 = 11 s to reach IB. Thread-safe: every method may be called from any thread.
    """

    def __init__(self, session: Session, contracts=None, board: QuoteBoard | None = None,
                 max_lines: int = DEFAULT_MAX_LINES, generic_ticks: str = ""):
        if int(max_lines) < 1:
            raise ValueError(f"max_lines must be at least 1, got {max_lines}")
        self.session = session
        self.contracts = contracts
        self.board = board if board is not None else QuoteBoard()
        self.max_lines = int(max_lines)
        self.generic_ticks = generic_ticks
        self._lock = threading.RLock()
        self._lines: dict[str, _QuoteLine] = {}
        self._by_con_id: dict[int, str] = {}
        self._streaming = 0                   # lines holding (or about to hold) a line at IB
        self._snapshots = 0                   # snapshots in flight
        self._type = 1
        self._type_queued = False             # market data type already queued in this restore round
        self._feeder = _Feeder(1.0 / session.rate)
        self.requests_sent = 0                # reqMktData handed to the session (streaming and snapshot)
        self.cancels_sent = 0
        self.retries = 0                      # lines re-requested after IB's error 100
        session.events.connectionClosed.subscribe(self._on_connection_closed)
        session.events.connectivity.subscribe(self._on_connectivity)
        session.add_restore_hook(self._on_restored)

    # --- public API -----------------------------------------------------------------------------------
    def subscribe(self, instrument: str | Contract) -> str:
        """Start (or share) the streaming line of ``instrument`` and return its key (canonical text).

        instrument: cell text ("AAPL", "EUR/USD", "conid:265598"; resolved through the ContractBook)
        or a qualified ibapi Contract (conId set). Every call adds one user; call :meth:`unsubscribe`
        once per subscribe. Instruments with the same conId share one line (one reqMktData).
        The key is on the board at once (``stale`` until the first tick); quotes follow as ticks
        arrive. A line that failed earlier is retried when its error may pass (see the module doc).

        Raises MarketDataError (code 101) when a new line would exceed ``max_lines`` (nothing is
        sent); ``addin.ib.contracts.InstrumentError`` / ValueError for text that names no instrument
        or a Contract without conId; IBError 504 when the session is disconnected.
        """
        contract, key = self._resolve(instrument)
        with self._lock:
            key = self._by_con_id.get(contract.conId, key)
            line = self._lines.get(key)
            retryable = line is not None and line.error_code in errors.MARKET_DATA_RETRYABLE
            if line is not None and (line.request is not None or not retryable):
                line.users += 1
                return key
            self._check_connected(key)
            self._check_budget(key)
            if line is None:
                line = self._lines[key] = _QuoteLine(key, contract)
                self._by_con_id[contract.conId] = key
            line.users += 1
            line.retries = 0
            self._start_line(line)
            return key

    def unsubscribe(self, key: str | Contract) -> int:
        """Drop one user of the line ``key`` (as returned by :meth:`subscribe`; instrument text or a
        Contract also work). The last user's unsubscribe sends cancelMktData and frees the line; the
        board keeps the last values, flagged stale. Returns the users left. Raises KeyError for an
        instrument that is not subscribed."""
        with self._lock:
            line = self._find(key)
        if line is None and isinstance(key, str) and key.strip():
            try:                                   # other text for a subscribed instrument (no lock:
                key = self._resolve(key)[0]        # resolving may wait for IB)
            except (ValueError, IBError):
                pass
        with self._lock:
            line = self._find(key)
            if line is None:
                raise KeyError(f"{key!r} is not subscribed to market data")
            line.users -= 1
            if line.users > 0:
                return line.users
            del self._lines[line.key]
            self._by_con_id.pop(line.contract.conId, None)
            self._stop_line(line)
        self.board.mark(line.key, stale=True)
        return 0

    def snapshot(self, instrument: str | Contract, timeout: float | None = None) -> BoardQuote:
        """One snapshot (reqMktData with snapshot=True) of ``instrument``, waited for until IB's
        tickSnapshotEnd. Uses the current market data type; does not touch the board. Counts
        against ``max_lines`` while in flight; goes straight to the session (not behind queued
        subscriptions). timeout: seconds (default: the session's request timeout).

        Returns a BoardQuote (``stale`` False, ``updated`` = the last tick's arrival). Raises
        MarketDataError (budget), RequestTimeout, the IBError IB sent (200, 354, ...),
        InstrumentError/ValueError for bad instruments, IBError 504 when not connected."""
        contract, key = self._resolve(instrument)
        raw: dict[str, Any] = {}

        def on_event(request, name, args):
            fields = decode_tick(name, args)
            if fields is not None:
                raw.update(fields)
                raw["updated"] = time.time()
            elif name == "notice":
                raw["notice"] = f"IB {args[1]}: {args[2]}"
                if args[1] == errors.DELAYED_DATA_NOTICE and raw.get("data_type") not in _DELAYED_NAMES:
                    raw["data_type"] = "delayed"
            return False

        def start(client, rid):
            client.reqMktData(rid, contract, "", True, False, [])

        request = Request(f"market data snapshot {key}", start, end="tickSnapshotEnd", on_event=on_event,
                          timeout=timeout)
        with self._lock:
            self._check_budget(key)
            self._snapshots += 1
        try:
            self.session.submit(request)
            with self._lock:
                self.requests_sent += 1
            wait = request.timeout if isinstance(request.timeout, (int, float)) else None
            request.result(None if wait in (None, NO_TIMEOUT) else wait + 5.0)
        finally:
            with self._lock:
                self._snapshots -= 1
        return _build_quote(key, raw)

    def set_market_data_type(self, data_type: str | int, resubscribe: bool = True) -> None:
        """Ask IB for ``data_type``: "live" (1), "frozen" (2: the last values when the market is
        closed), "delayed" (3: 15-20 minutes late, free, when not subscribed) or "delayed-frozen" (4).
        IB applies it to requests made after it, so with ``resubscribe`` (default) every existing
        line is cancelled and requested again (2 messages per line, spaced: 500 lines take 22 s),
        and failed lines are retried. What IB actually sends shows in each quote's ``data_type``.
        Remembered and re-sent after every reconnect. Raises ValueError for an unknown type."""
        code = self._type_code(data_type)
        with self._lock:
            self._type = code
            self._feeder.put(lambda: self._send_type(code))
            if not resubscribe:
                return
            for line in list(self._lines.values()):
                if line.request is not None:
                    self._stop_line(line)
                elif self._streaming + self._snapshots >= self.max_lines:
                    continue                    # a failed line stays failed when the budget is full
                line.retries = 0
                self._start_line(line)

    @property
    def market_data_type(self) -> str:
        """The type last asked for ("live", "frozen", "delayed", "delayed-frozen")."""
        return MARKET_DATA_TYPES[self._type]

    def lines_in_use(self) -> int:
        """Lines this process holds (or is about to hold) at IB: streaming lines, including those
        still queued for sending, plus snapshots in flight. Failed lines do not count (IB dropped
        them)."""
        with self._lock:
            return self._streaming + self._snapshots

    def pending(self) -> int:
        """Messages queued here and not yet handed to the session (subscriptions being sent)."""
        return self._feeder.pending()

    def users(self, key: str) -> int:
        """How many subscribes hold ``key`` (0 when not subscribed)."""
        with self._lock:
            line = self._lines.get(key)
            return line.users if line is not None else 0

    def subscriptions(self) -> dict[str, int]:
        """Every subscribed key and its number of users."""
        with self._lock:
            return {k: line.users for k, line in self._lines.items()}

    def get(self, key: str) -> BoardQuote | None:
        """The board's latest BoardQuote for ``key``."""
        return self.board.get(key)

    def close(self, timeout: float | None = None) -> None:
        """Cancel every line (the cancels go out spaced, like the requests: allow ~N/45 s) and detach
        from the session. The board keeps its values, flagged stale. ``timeout``: how long to wait for
        the cancels to be handed to the session (default: as long as they take at the rate, + 5 s)."""
        with self._lock:
            lines = list(self._lines.values())
            self._lines.clear()
            self._by_con_id.clear()
            for line in lines:
                self._stop_line(line)
        self.board.mark_many((line.key for line in lines), stale=True)
        if timeout is None:
            timeout = self._feeder.pending() * self._feeder.interval + 5.0
        self._feeder.stop(timeout)
        self.session.events.connectionClosed.unsubscribe(self._on_connection_closed)
        self.session.events.connectivity.unsubscribe(self._on_connectivity)
        self.session.remove_restore_hook(self._on_restored)

    # --- lines (the caller holds the lock) ------------------------------------------------------------
    def _check_connected(self, key: str) -> None:
        state = self.session.status.state
        if state not in ("connected", "reconnecting"):
            raise IBError(errors.NOT_CONNECTED, f"Not connected ({state})", f"market data {key}")

    def _check_budget(self, key: str) -> None:
        used = self._streaming + self._snapshots
        if used >= self.max_lines:
            raise MarketDataError(
                errors.MAX_TICKERS,
                f"market data line budget reached: {used} of {self.max_lines} lines in use, none left "
                     f"for {key}. Unsubscribe instruments you no longer show, or raise the budget "
                     f"(MarketData(max_lines=...), the market_data_lines setting) up to what your IB "
                     f"account allows (100 lines by default; more with quote booster packs)",
                f"market data {key}")

    def _start_line(self, line: _QuoteLine, not_before: float = 0.0) -> None:
        """Queue a streaming request for ``line``; it counts against the budget from now on."""
        request = self._stream_request(line)
        line.request = request
        line.error_code = None
        self._streaming += 1
        if line.key in self.board:
            self.board.mark(line.key, error=None, notice=None, stale=True)
        else:
            self.board.mark(line.key, stale=True)   # on the board at once: "waiting for data"
        self._feeder.put(lambda: self._submit(line, request), not_before)

    def _submit(self, line: _QuoteLine, request: Request) -> None:
        """Feeder thread: hand the request to the session, unless it was superseded meanwhile."""
        with self._lock:
            if line.request is not request:
                return
            try:
                self.session.submit(request)
                self.requests_sent += 1
                return
            except IBError as exc:
                error = exc
        self._line_error(line, request, error.code, error.text)

    def _stop_line(self, line: _QuoteLine) -> None:
        request, line.request = line.request, None
        if request is None:
            return
        self._streaming -= 1
        if request.req_id < 0:
            return                                 # still queued: never sent, nothing to cancel
        self.cancels_sent += 1
        self._feeder.put(lambda: self.session.cancel(request))

    def _send_type(self, code: int) -> None:
        if self.session.connected:                 # otherwise the restore round sends it
            self.session.send(lambda client: client.reqMarketDataType(code))

    def _stream_request(self, line: _QuoteLine) -> Request:
        key, contract, generic = line.key, line.contract, self.generic_ticks
        if contract.secType in OPTION_SEC_TYPES and OPEN_INTEREST_GENERIC not in generic.split(","):
            # an option's open interest comes only with generic tick 101 (IB: ticks 27 / 28; never on a
            # snapshot, which refuses generic ticks)
            generic = ",".join(t for t in (generic, OPEN_INTEREST_GENERIC) if t)
        update, mark = self.board.update, self.board.mark

        def start(client, rid):
            client.reqMktData(rid, contract, generic, False, False, [])

        def cancel(client, rid):
            client.cancelMktData(rid)

        set_ticks = self.board.set_ticks

        def on_tick(tick_type, price, size_type, size):
            # A price and/or its size straight onto the board: decode_tick's rules, inlined. Called
            # for a whole TICK_PRICE by the session's fast path, and by on_event for single ticks.
            if line.request is None or line.request.on_tick is not on_tick:
                return                            # unsubscribed; its cancel is on the way
            field = PRICE_TICKS.get(tick_type)
            if field is not None and (price == -1 or price >= UNSET_DOUBLE or price != price):   # NaN
                price = None
            field2 = SIZE_TICKS.get(size_type)
            if field2 is not None:
                size = None if size is None or size == UNSET_DECIMAL else float(size)
            if field is not None or field2 is not None:
                set_ticks(key, field, price, field2, size)

        def on_event(request, name, args):
            if line.request is not request:
                if name == "error":
                    self._line_error(line, request, args[1], args[2])
                return False                      # unsubscribed; its cancel is on the way
            if name == "tickPrice":               # ibapi's reader, or a tick the fast path left
                on_tick(args[1], args[2], None, None)
                return False
            if name == "tickSize":
                on_tick(None, None, args[1], args[2])
                return False
            fields = decode_tick(name, args)
            if fields is not None:
                update(key, **fields)
            elif name == "notice":
                self._line_notice(key, args[1], args[2])
            elif name == "error":
                self._line_error(line, request, args[1], args[2])
            return False                          # never keep rows: a line streams for hours

        def restore(request):
            if line.request is request:
                mark(key, stale=True)
            self._queue_type_once()

        request = Request(f"market data {key}", start, on_event=on_event, cancel=cancel, subscription=True,
                          restore=restore, timeout=NO_TIMEOUT)
        request.on_tick = on_tick
        return request

    def _line_notice(self, key: str, code: int, text: str) -> None:
        fields: dict[str, Any] = {"notice": f"IB {code}: {text}"}
        if code == errors.DELAYED_DATA_NOTICE:
            q = self.board.get(key)
            if q is None or q.data_type not in _DELAYED_NAMES:
                fields["data_type"] = "delayed"
        self.board.mark(key, **fields)

    def _line_error(self, line: _QuoteLine, request: Request, code: int, text: str) -> None:
        """IB failed the line (the session has already unregistered the request)."""
        with self._lock:
            if line.request is not request:
                return                            # an older request of this line
            line.request = None
            self._streaming -= 1
            line.error_code = code
            retry = (code == errors.MAX_RATE_EXCEEDED and line.retries < MAX_PACING_RETRIES
                     and self._lines.get(line.key) is line)
            if retry:
                # IB refused the message for pacing (another burst on the connection): ask again in a
                # second, spaced like everything else. The quote keeps its last values meanwhile.
                line.retries += 1
                self.retries += 1
                self._start_line(line, not_before=time.monotonic() + 1.0)
        if retry:
            log.info("market data for %s: IB %d (%s); retrying", line.key, code, text)
            return
        self.board.mark(line.key, error=f"IB {code}: {text}", stale=True)
        log.warning("market data for %s failed: IB %d: %s", line.key, code, text)

    # --- reconnects (session callbacks) -------------------------------------------------------------
    def _keys(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def _on_connection_closed(self, *args) -> None:
        self.board.mark_many(self._keys(), stale=True)

    def _on_connectivity(self, code: int, text: str) -> None:
        if code in errors.DATA_INTERRUPTED:
            self.board.mark_many(self._keys(), stale=True)
        elif code == errors.RESTORED_DATA_KEPT:
            with self._lock:
                streaming = [k for k, line in self._lines.items() if line.request is not None]
            self.board.mark_many(streaming, stale=False)

    def _queue_type_once(self) -> None:
        """Before the first restored line of a round: re-send the market data type (not live).
        Sent straight to the session: it must precede the lines the session is about to re-send."""
        with self._lock:
            if self._type != 1 and not self._type_queued:
                self._type_queued = True
                code = self._type
                self.session.send(lambda client: client.reqMarketDataType(code))

    def _on_restored(self) -> None:
        """After every restore round (the lines are already queued)."""
        with self._lock:
            if self._type != 1 and not self._type_queued:
                code = self._type
                self.session.send(lambda client: client.reqMarketDataType(code))
            self._type_queued = False

    # --- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _type_code(data_type: str | int) -> int:
        if isinstance(data_type, int) and not isinstance(data_type, bool) and data_type in MARKET_DATA_TYPES:
            return data_type
        if isinstance(data_type, str):
            code = MARKET_DATA_TYPE_CODES.get(data_type.strip().lower().replace("_", "-").replace(" ", "-"))
            if code is not None:
                return code
        raise ValueError(f"market data type must be one of 'live', 'frozen', 'delayed', 'delayed-frozen' "
                         f"(or 1..4), got {data_type!r}")

    def _resolve(self, instrument: str | Contract) -> tuple[Contract, str]:
        if isinstance(instrument, Contract):
            if not instrument.conId:
                raise ValueError(f"instrument: a qualified Contract (conId set) is needed, got {instrument}")
            return instrument, format_contract(instrument)
        if isinstance(instrument, str):
            if not instrument.strip():
                raise ValueError("instrument: expected instrument text such as 'AAPL' or 'EUR/USD', got ''")
            book = self._book()
            contract = book.contract(instrument.strip())
            return contract, format_contract(contract)
        raise TypeError(f"instrument: expected text or an ibapi Contract, got {type(instrument).__name__}")

    def _book(self):
        if self.contracts is None:
            with self._lock:
                if self.contracts is None:
                    self.contracts = ContractBook(self.session)
        return self.contracts

    def _find(self, key: str | Contract) -> _QuoteLine | None:
        """The line of a key or of a Contract's conId (caller holds the lock)."""
        if isinstance(key, Contract):
            k = self._by_con_id.get(key.conId)
            return self._lines.get(k) if k is not None else None
        return self._lines.get(key)
