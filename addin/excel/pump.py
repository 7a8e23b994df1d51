"""The streaming pump: QuoteBoard changes and order outputs -> workbook cells, one write per rectangle.

The pump thread flushes on a fixed cadence: flush k starts at bind + k * interval (default 250 ms,
at least 50 ms), whatever the flushes cost, so a tick waits at most one interval for its flush. A
flush

1. takes ``board.changes_since(v)`` (only the keys that changed since its last flush: cost is the
   number of changed keys, not the number of rows); the thread has already taken and converted
   most of them a short lead before (:meth:`Pump.prepare`), so the flush itself converts only what
   changed in the last moments and its writes end soon after its scheduled time;
2. maps each changed key to its Watchlist rows (a key may sit on several rows) and the columns the
   Watchlist has (by header text: a Watchlist with only some of the standard columns gets only
   those; one with only a Symbol column gets the standard columns added); cells whose value did not
   change are skipped;
3. adds the order outputs the OrderDesk reported since (``on_order``) to their Orders rows (by Ref);
4. merges the changed cells into rectangles (contiguous column runs per row; adjacent rows with the
   same run merge; with ``fill_gaps`` each changed row writes the whole block of pump-owned columns
   it touches, so a block of changed rows is one rectangle whatever moved in it) and writes each
   rectangle with ONE ``book.write`` call (with ``bridge_rows``, rectangles a few unchanged rows
   apart are joined: one call that rewrites those rows' current values beats two calls);
5. asks the recalc registry for the formula cells whose quotes changed, or whose background request
   ended (``RecalcRegistry.touched_since``), and makes ONE ``book.calculate(sheet, addresses)`` call
   for them (one per sheet that has any; a call Excel refuses is made again by the next flush, so a
   cell waiting for its first quote or a finished request is never forgotten).

Slow writes never build a queue: the pump holds a version number, not a list of updates, so a
flush that overran its slot is followed at once by one that takes every change since (and the
cadence restarts from then instead of bursting to catch up). Each write is reported to ``on_write``
as a :class:`WriteRecord` naming its flush: the writes of one flush are pairwise disjoint and share
no edge (benchmarks/tick_to_cell.py checks exactly that, and that every changed cell is written).
A failed write keeps its cells pending for the next flush (bounded by the number of cells).

Windows / COM (DESIGN.md): the pump runs in the xlwings UDF server; its thread calls
``pythoncom.CoInitialize``, opens its own Book by full name (``book_factory``, see
:func:`com_book_factory`: xlwings objects never cross threads) and wraps it in :class:`ComRetry`,
which retries "call was rejected by callee" (RPC_E_CALL_REJECTED, the user is editing a cell) with
bounded backoff instead of dropping the update; xlwings' own retry loop, which would spin on the
rejection without sleeping, is bounded to one attempt first (:func:`bound_xlwings_com_retries`).

Cell values: prices and sizes as floats (the contract's currency; shares / contracts), times as
naive UTC datetimes (Excel has no time zones), missing values as empty cells.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..backoff import Backoff
from .book import parse_range
from .errors import error_text
from .layout import WATCHLIST_COLUMNS

log = logging.getLogger(__name__)

__all__ = ["Pump", "PumpStats", "WriteRecord", "Region", "ComRetry", "com_book_factory", "bound_xlwings_com_retries",
           "find_region",
           "merge_rectangles", "is_call_rejected", "quote_cell_values", "STANDARD_COLUMNS", "WATCH_FIELDS",
           "ORDER_OUTPUT_COLUMNS", "DEFAULT_INTERVAL", "MIN_INTERVAL", "RPC_E_CALL_REJECTED"]

DEFAULT_INTERVAL = 0.25      # seconds between flushes
MIN_INTERVAL = 0.05
MAX_COLUMNS = 64             # header cells read when a Watchlist is a plain sheet (no Table)
MAX_ROWS = 2000              # symbol cells read below it
RPC_E_CALL_REJECTED = -2147418111      # 0x80010001 "Call was rejected by callee."
RPC_E_SERVERCALL_RETRYLATER = -2147417846  # 0x8001010A "The message filter indicated that the application is busy."

# Watchlist headers (normalised: lower case, no spaces/underscores/dots, % -> pct) -> BoardQuote fields.
WATCH_FIELDS = {
    "bid": "bid", "ask": "ask", "last": "last", "bidsize": "bid_size", "asksize": "ask_size",
    "lastsize": "last_size", "volume": "volume", "open": "open", "high": "high", "low": "low",
    "close": "close", "change": "change",
    # a fraction (0.0123 = 1.23 %), as BoardQuote.change_pct; the template formats ChangePct as a percentage
    "changepct": "change_pct", "chgpct": "change_pct", "pctchange": "change_pct",
    "mid": "mid", "spread": "spread", "updated": "updated", "lasttime": "last_time",
    # DataType / Status show what IB sends ("live", "delayed", ...) or why nothing streams (the
    # line's error, "stale", "waiting"): see quote_status.
    "datatype": "status", "status": "status",
    # options (IB's tickOptionComputation): the model's values and the bid's / ask's greeks
    "iv": "iv", "delta": "delta", "gamma": "gamma", "vega": "vega", "theta": "theta", "undprice": "und_price",
    "modelprice": "model_price", "openinterest": "open_interest",
    **{f"{side}{g}": f"{side}_{g}" for side in ("bid", "ask") for g in ("iv", "delta", "gamma", "vega", "theta")},
}
STANDARD_COLUMNS = tuple(WATCHLIST_COLUMNS[1:])     # the template's Watchlist columns after Symbol
ORDER_OUTPUT_COLUMNS = ("Status", "OrderId", "PermId", "Filled", "Remaining", "AvgFillPrice", "Commission",
                        "Message", "Updated")
_MISSING = object()


def _norm(header: Any) -> str:
    text = "" if header is None else str(header)
    return text.strip().lower().replace("%", "pct").replace(" ", "").replace("_", "").replace(".", "")


def excel_value(v: Any) -> Any:
    """A Python value as a cell takes it: aware datetimes -> naive UTC, Decimals -> float."""
    if isinstance(v, datetime):
        return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
    if v is not None and type(v).__name__ == "Decimal":
        return float(v)
    return v


def quote_status(q) -> str:
    """The DataType / Status cell of a quote: its error ("#IB 354: ..."), "stale", "waiting"
    before the first tick, else the market data type IB sends ("live", "delayed", ...)."""
    if q.error:
        return "#" + q.error if q.error.startswith("IB ") else q.error
    if q.updated is None:
        return "waiting"
    if q.stale:
        return "stale"
    return q.data_type or "live"


def quote_cell_values(q, fields: list[str]) -> list[Any]:
    """The cell values of ``q`` for BoardQuote field names (plus "status")."""
    out: list[Any] = []
    for f in fields:
        if f == "status":
            out.append(quote_status(q))
        else:
            v = getattr(q, f)
            out.append(v if v is None or type(v) is float else excel_value(v))   # prices: as they are
    return out


# --- layout ---------------------------------------------------------------------------------------------
@dataclass
class Region:
    """Where a keyed list sits: the header row, the key column, the rows (``{row: key text}``) and
    the pump-owned columns (``{column number: field}``). ``table``: the Excel Table's name, if any."""
    sheet: str
    header_row: int
    first_col: int
    headers: list[str]
    key_col: int
    rows: dict[int, str]
    owned: dict[int, str] = field(default_factory=dict)
    table: str | None = None

    def blocks(self) -> list[tuple[int, int]]:
        """Contiguous runs of owned columns: ``[(first, last), ...]``."""
        out: list[tuple[int, int]] = []
        for c in sorted(self.owned):
            if out and out[-1][1] == c - 1:
                out[-1] = (out[-1][0], c)
            else:
                out.append((c, c))
        return out


def _find_table(book, name: str):
    for tname, info in book.tables().items():
        if tname.lower() == name.lower():
            return info
    return None


def find_region(book, name: str, key_header: str) -> Region | None:
    """The Table named ``name`` (any case), else the sheet ``name`` with its header in row 1; None when
    neither exists. Raises ExcelInputError when it has no ``key_header`` column."""
    from .errors import ExcelInputError
    info = _find_table(book, name)
    headers: list[str]
    if info is not None:
        headers = [str(h) if h is not None else "" for h in info.columns]
        keys = [_norm(h) for h in headers]
        if _norm(key_header) not in keys:
            raise ExcelInputError(f"Table {info.name} on sheet {info.sheet}: no {key_header} column "
                                  f"(headers: {', '.join(headers)})")
        key_col = info.first_col + keys.index(_norm(key_header))
        df = book.read_table(info.name)
        col = df.columns[keys.index(_norm(key_header))]   # the index holds worksheet row numbers
        rows = {int(r): str(v).strip() for r, v in df[col].items() if _present(v)}
        return Region(info.sheet, info.first_row, info.first_col, headers, key_col, rows, table=info.name)
    sheet = next((s for s in book.sheet_names() if s.lower() == name.lower()), None)
    if sheet is None:
        return None
    header = book.read(sheet, 1, 1, 1, MAX_COLUMNS)[0]
    headers = []
    for h in header:
        if not _present(h):
            break
        headers.append(str(h))
    keys = [_norm(h) for h in headers]
    if _norm(key_header) not in keys:
        raise ExcelInputError(f"sheet {sheet}: no {key_header} column in row 1 "
                              f"(found: {', '.join(headers) or 'nothing'})")
    key_col = 1 + keys.index(_norm(key_header))
    column = book.read(sheet, 2, key_col, MAX_ROWS + 1, key_col)
    rows = {2 + i: str(r[0]).strip() for i, r in enumerate(column) if _present(r[0])}
    return Region(sheet, 1, 1, headers, key_col, rows)


def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float) and v != v:
        return False
    return str(v).strip() != ""


# --- rectangles -----------------------------------------------------------------------------------------
def merge_rectangles(cells: Iterable[tuple[int, int]],
                     blocks: list[tuple[int, int]] | None = None) -> list[tuple[int, int, int, int]]:
    """Cover ``cells`` ((row, col) pairs) with rectangles ``(top, left, bottom, right)``.

    Each row's cells form contiguous column runs; with ``blocks`` (column runs the caller owns,
    whose every cell it can fill) a row instead takes every block it touches whole. Then adjacent
    rows with the same run merge into one rectangle. Sorted by (left, top)."""
    by_row: dict[int, list[int]] = collections.defaultdict(list)
    for r, c in cells:
        by_row[r].append(c)
    block_of = {c: b for b in blocks for c in range(b[0], b[1] + 1)} if blocks else {}
    spans: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for r, cols in by_row.items():
        if block_of:
            outside = []
            touched = set()
            for c in cols:
                b = block_of.get(c)
                if b is None:
                    outside.append(c)
                else:
                    touched.add(b)
            for b in touched:
                spans[b].append(r)
            if not outside:
                continue
            cols = outside
        for run in _runs(sorted(set(cols))):
            spans[run].append(r)
    rects = [(top, left, bottom, right) for (left, right), rows in spans.items()
             for top, bottom in _runs(sorted(rows))]
    rects.sort(key=lambda t: (t[1], t[0]))
    return rects


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive integers in sorted ``values``; a repeat starts a new run."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


# --- COM ------------------------------------------------------------------------------------------------
def is_call_rejected(exc: BaseException) -> bool:
    """True when Excel refused a COM call because it is busy (RPC_E_CALL_REJECTED, the user is
    editing a cell; or RPC_E_SERVERCALL_RETRYLATER): worth retrying, not an error."""
    codes = (RPC_E_CALL_REJECTED, RPC_E_SERVERCALL_RETRYLATER)
    seen = 0
    link: BaseException | None = exc
    while link is not None and seen < 5:
        if getattr(link, "hresult", None) in codes or (link.args and link.args[0] in codes):
            return True
        link = link.__cause__ or link.__context__
        seen += 1
    return False


class ComRetry:
    """A Book whose calls are retried while Excel answers "call was rejected by callee".

    ``attempts`` calls at most, sleeping ``first_delay`` seconds doubling up to ``max_delay``
    between them (bounded: with the defaults about 2.5 s in all); then the last error is raised (the
    pump keeps the cells pending and writes them with the next flush). Other errors raise at once.
    ``retries``: how many retries so far.
    """

    def __init__(self, book, *, attempts: int = 10, first_delay: float = 0.01, max_delay: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep):
        self.book = book
        self.attempts, self.first_delay, self.max_delay = attempts, first_delay, max_delay
        self.sleep = sleep
        self.retries = 0

    def __getattr__(self, name: str):
        target = getattr(self.book, name)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            delays = iter(Backoff(self.first_delay, self.max_delay))
            for attempt in range(1, self.attempts + 1):
                try:
                    return target(*args, **kwargs)
                except Exception as exc:
                    if attempt == self.attempts or not is_call_rejected(exc):
                        raise
                    self.retries += 1
                    self.sleep(next(delays))   # Excel is busy (a cell edit): wait and ask again
        return call


def bound_xlwings_com_retries(module: Any = None) -> bool:
    """Make xlwings hand a rejected COM call to :class:`ComRetry` instead of spinning on it.

    xlwings (0.37.8, ``xlwings/_xlwindows.py``) wraps every COM object in ``COMRetryObjectWrapper`` /
    ``COMRetryMethodWrapper``, which retry a call Excel rejects (RPC_E_CALL_REJECTED: the user is
    editing a cell) in a ``while True`` loop with no sleep, for ever while the module's
    ``N_COM_ATTEMPTS`` is 0 (its default): the pump thread would burn a core for as long as the
    user types, and ComRetry's backoff would never see the rejection. With ``N_COM_ATTEMPTS = 1``
    each xlwings call is made once and the rejection reaches ComRetry, which sleeps between
    bounded attempts. The setting is the module's, so it holds for every xlwings call of this
    process: the UDF server's other calls to Excel (xlwings reading the caller cell while Excel
    waits on the function) are nested calls Excel takes while it waits, not ones it rejects.

    ``module``: the module to set (default ``xlwings._xlwindows``, Windows only). Returns whether
    it changed anything (a value set by the user is left alone)."""
    if module is None:
        if sys.platform != "win32":
            return False
        import xlwings._xlwindows as module
    if getattr(module, "N_COM_ATTEMPTS", None) == 0:
        module.N_COM_ATTEMPTS = 1
        return True
    return False


def com_book_factory(fullname: str) -> Callable[[], Any]:
    """A factory, run on the pump thread, that opens the workbook ``fullname`` through xlwings (its
    own COM objects for this thread) and wraps it in the xlwings Book adapter and ComRetry (after
    :func:`bound_xlwings_com_retries`: rejected calls back off instead of spinning in xlwings)."""
    def open_book():
        import xlwings as xw

        from .xlwings_book import XlwingsBook  # the Book adapter (addin/excel/xlwings_book.py)
        bound_xlwings_com_retries()
        return ComRetry(XlwingsBook(xw.Book(fullname)))
    return open_book


# --- the pump -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteRecord:
    """One write call: where, what size, which board keys / order refs it carried, and when it began
    and ended (``time.time()`` seconds, comparable with ``BoardQuote.updated``: tick-to-cell latency of a
    value = ``ended - quote.updated.timestamp()``). ``flush``: the number of the flush it belongs to
    (``PumpStats.flushes`` at that flush; the first paint is flush 1): the writes of one flush are
    pairwise disjoint and never adjacent along a shared edge (they would have been one rectangle)."""
    sheet: str
    top: int
    left: int
    rows: int
    cols: int
    keys: tuple
    started: float
    ended: float
    flush: int = 0


@dataclass
class PumpStats:
    """Counters since start: flushes (every cycle), busy_flushes (cycles that wrote or recalculated),
    writes (book.write calls), cells (cells written), calculates (book.calculate calls),
    recalc_cells, write_errors, last_flush (seconds the latest busy flush took), write_latencies
    (seconds per write call, the latest 10,000)."""
    flushes: int = 0
    busy_flushes: int = 0
    writes: int = 0
    cells: int = 0
    calculates: int = 0
    recalc_cells: int = 0
    write_errors: int = 0
    last_flush: float = 0.0
    write_latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))


class Pump:
    """Streams QuoteBoard changes into a workbook's Watchlist and order outputs into its Orders rows.

    board: the QuoteBoard. book: a Book (``addin.excel.book`` interface), or None with
    ``book_factory`` (called on the pump thread: the COM path). interval: seconds between flushes
    (MIN_INTERVAL..; ValueError below). registry: a RecalcRegistry (formula cells to recalc) or
    None. book_name: the workbook's full name for the registry (None: every registered cell).
    resolve(text) -> board key: subscribes a Watchlist symbol (MarketData.subscribe); release(key):
    undoes it at stop (MarketData.unsubscribe). watchlist / orders: Table or sheet names (None:
    none). fill_gaps: see the module docstring. bridge_rows (with fill_gaps): rectangles of the
    same columns separated by at most this many already-written rows become one write (those rows
    are rewritten with the values they show; 0: never). on_write(WriteRecord): called after each
    write call (for benchmarks). prune_every: seconds between registry prunes.

    Use ``start()`` / ``stop()`` for the thread, or ``bind()`` + ``flush()`` synchronously.
    """

    def __init__(self, board, book=None, *, interval: float = DEFAULT_INTERVAL, registry=None,
                 book_name: str | None = None, resolve: Callable[[str], str] | None = None,
                 release: Callable[[str], Any] | None = None, watchlist: str | None = "Watchlist",
                 orders: str | None = "Orders", book_factory: Callable[[], Any] | None = None,
                 fill_gaps: bool = True, bridge_rows: int = 8,
                 on_write: Callable[[WriteRecord], None] | None = None, prune_every: float = 5.0):
        if book is None and book_factory is None:
            raise ValueError("Pump needs a book or a book_factory")
        if not interval >= MIN_INTERVAL:
            raise ValueError(f"interval: at least {MIN_INTERVAL} s, got {interval!r}")
        self.board, self.book, self.book_factory = board, book, book_factory
        self.interval = float(interval)
        self.registry, self.book_name = registry, book_name
        self.resolve, self.release = resolve, release
        self.watchlist_name, self.orders_name = watchlist, orders
        self.fill_gaps, self.bridge_rows = fill_gaps, bridge_rows
        self.on_write, self.prune_every = on_write, prune_every
        self.stats = PumpStats()
        self.watchlist: Region | None = None
        self.orders: Region | None = None
        self.row_errors: dict[int, str] = {}           # Watchlist row -> why its symbol does not stream
        self._fields: dict[int, str] = {}              # Watchlist column -> BoardQuote field
        self._rows_of: dict[str, list[int]] = {}       # board key -> Watchlist rows
        self._held: list[str] = []                     # keys resolved (released at stop)
        self._order_cols: dict[int, str] = {}          # Orders column -> normalised output name
        self._ref_rows: dict[str, list[int]] = {}
        self._version = 0
        self._touch_version = 0                               # RecalcRegistry.touched_since cursor
        self._calc_retry: dict[str, set[str]] = {}            # sheet -> cells whose recalculation failed
        self._written: dict[tuple[str, int, int], Any] = {}   # last value written per cell
        self._pending: dict[tuple[str, int, int], Any] = {}   # cells whose write failed
        self._pending_keys: dict[tuple[str, int, int], Any] = {}
        self._staged: dict[tuple[str, int, int], Any] = {}    # collected by prepare(), not yet written
        self._staged_keys: dict[tuple[str, int, int], Any] = {}
        self._staged_changed: dict[str, None] = {}            # board keys changed since the last flush
        self._prepare_cost = 0.0                              # seconds the latest prepare() took
        self.collecting_for = 0        # the flush number the board changes being taken will be written by
        self._orders_in: dict[str, dict] = {}                 # ref -> outputs not yet written
        self._orders_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = time.monotonic()
        self.error: BaseException | None = None        # why the thread ended, if it failed
        # More sheets painted on this cadence (the Options chain: addin.app.options_sheet): each is called
        # painter(book, changed board keys) after the flush's writes and returns its write calls; its
        # close(), if any, is called when the pump stops.
        self.painters: list[Callable[[Any, list[str]], int]] = []

    # --- set-up ---------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Read the Watchlist and Orders layout from the book, subscribe the Watchlist symbols
        (``resolve``) and paint every mapped cell once. Raises ExcelInputError for a Watchlist
        without a Symbol column or an Orders list without Ref."""
        book = self.book
        if self.watchlist_name:
            self.watchlist = find_region(book, self.watchlist_name, "Symbol")
        if self.watchlist is not None:
            self._bind_watchlist(self.watchlist)
        if self.orders_name:
            self.orders = find_region(book, self.orders_name, "Ref")
        if self.orders is not None:
            self._bind_orders(self.orders)
        self.flush(full=True)

    def _bind_watchlist(self, region: Region) -> None:
        book = self.book
        mapped = {region.first_col + i: WATCH_FIELDS[_norm(h)] for i, h in enumerate(region.headers)
                  if _norm(h) in WATCH_FIELDS}
        if not mapped:     # only Symbol (and columns of the user's own): add the standard columns
            start = region.first_col + len(region.headers)
            if region.table is not None:
                book.add_table_columns(region.table, list(STANDARD_COLUMNS))   # header write + resize
            else:
                book.write(region.sheet, region.header_row, start, [list(STANDARD_COLUMNS)])
            region.headers = region.headers + list(STANDARD_COLUMNS)
            mapped = {start + i: WATCH_FIELDS[_norm(h)] for i, h in enumerate(STANDARD_COLUMNS)}
        region.owned = mapped
        self._fields = mapped
        status_col = next((c for c, f in mapped.items() if f == "status"), None)
        for row, text in sorted(region.rows.items()):
            try:
                key = self.resolve(text) if self.resolve else text
            except Exception as exc:          # one bad symbol must not stop the others
                self.row_errors[row] = error_text(exc)
                if status_col is not None:
                    self._pending[(region.sheet, row, status_col)] = self.row_errors[row]
                continue
            self._held.append(key)
            self._rows_of.setdefault(key, []).append(row)

    def _bind_orders(self, region: Region) -> None:
        names = {_norm(c): c for c in ORDER_OUTPUT_COLUMNS}
        region.owned = {region.first_col + i: _norm(h) for i, h in enumerate(region.headers) if _norm(h) in names}
        self._order_cols = region.owned
        self._ref_rows = {}
        for row, ref in region.rows.items():
            self._ref_rows.setdefault(ref, []).append(row)

    # --- order outputs --------------------------------------------------------------------------------
    def on_order(self, ref: str, outputs: dict) -> None:
        """OrderDesk listener: ``outputs`` (Status, OrderId, ...) of the row ``ref``. Any thread;
        merged with what is not yet written (latest value per column wins)."""
        with self._orders_lock:
            self._orders_in.setdefault(str(ref), {}).update({_norm(k): v for k, v in outputs.items()})

    # --- flushing -------------------------------------------------------------------------------------
    def flush(self, full: bool = False) -> int:
        """One flush (see the module docstring); ``full`` repaints every mapped cell. Returns the
        number of write calls made. Not re-entrant: concurrent callers take turns."""
        with self._flush_lock:
            return self._flush(full)

    def prepare(self) -> None:
        """Take the board's changes so far and turn them into staged cell values, without writing.
        The pump thread calls it shortly before each scheduled flush, so the flush itself only
        converts what changed in the last moments: a tick's wait for its cell is then about one
        interval, not one interval plus the conversion of every change. Thread-safe."""
        with self._flush_lock:
            self.collecting_for = self.stats.flushes + 1
            self._collect(False)

    def _collect(self, full: bool) -> None:
        if full:
            version = self.board.version
            changes = {k: q for k in self._rows_of if (q := self.board.get(k)) is not None}
        else:
            version, changes = self.board.changes_since(self._version)
        self._version = version
        self._staged_changed.update(dict.fromkeys(changes))
        wl = self.watchlist
        if wl is None or not changes:
            return
        fields = list(self._fields.values())
        cols = list(self._fields)
        sheet, written, rows_of = wl.sheet, self._written, self._rows_of
        staged, keys_at = self._staged, self._staged_keys
        for key, q in changes.items():
            rows = rows_of.get(key)
            if not rows:
                continue
            values = quote_cell_values(q, fields)
            for r in rows:
                for c, v in zip(cols, values):
                    cell = (sheet, r, c)
                    if full or written.get(cell, _MISSING) != v:
                        staged[cell] = v
                        keys_at[cell] = key
                    elif cell in staged:          # staged earlier, since changed back to what is shown
                        del staged[cell]
                        keys_at.pop(cell, None)

    def _flush(self, full: bool) -> int:
        t0 = time.perf_counter()
        self.stats.flushes += 1
        self.collecting_for = self.stats.flushes
        self._collect(full)
        cells: dict[tuple[str, int, int], Any] = self._pending
        keys_at: dict[tuple[str, int, int], Any] = self._pending_keys
        cells.update(self._staged)            # failed writes first, newer values over them
        keys_at.update(self._staged_keys)
        changed = list(self._staged_changed)
        if self.registry is not None:        # background requests that ended (addin/app/background.py)
            self._touch_version, touched = self.registry.touched_since(self._touch_version)
            changed.extend(touched)
        self._pending, self._pending_keys = {}, {}
        self._staged, self._staged_keys, self._staged_changed = {}, {}, {}
        self._collect_orders(cells, keys_at)
        writes = self._write_cells(cells, keys_at)
        for painter in list(self.painters):
            try:
                writes += painter(self.book, changed) or 0
            except Exception:
                log.exception("pump painter %r failed", painter)
        calcs = self._recalc(changed) if changed or self._calc_retry else 0
        if writes or calcs:
            self.stats.busy_flushes += 1
            self.stats.last_flush = time.perf_counter() - t0
        with self._cond:
            self._cond.notify_all()
        return writes

    def _collect_orders(self, cells: dict, keys_at: dict) -> None:
        with self._orders_lock:
            incoming, self._orders_in = self._orders_in, {}
        if not incoming or self.orders is None or not self.orders_name:
            return
        if any(ref not in self._ref_rows for ref in incoming):
            fresh = find_region(self.book, self.orders_name, "Ref")   # rows were added since bind
            if fresh is not None:
                self.orders = fresh
                self._bind_orders(fresh)
        sheet = self.orders.sheet
        for ref, outputs in incoming.items():
            rows = self._ref_rows.get(ref)
            if not rows:
                log.info("order %s is not on the %s list; its status is not shown", ref, self.orders_name)
                continue
            for c, name in self._order_cols.items():
                if name in outputs:
                    v = excel_value(outputs[name])
                    for r in rows:
                        if self._written.get((sheet, r, c), _MISSING) != v:
                            cells[(sheet, r, c)] = v
                            keys_at[(sheet, r, c)] = ref

    def _write_cells(self, cells: dict, keys_at: dict) -> int:
        by_sheet: dict[str, dict[tuple[int, int], Any]] = collections.defaultdict(dict)
        for (sheet, r, c), v in cells.items():
            by_sheet[sheet][(r, c)] = v
        writes = 0
        flush_no = self.stats.flushes
        written = self._written
        for sheet, sheet_cells in by_sheet.items():
            region = self._region_of(sheet)
            blocks = region.blocks() if (self.fill_gaps and region is not None) else None
            rects = merge_rectangles(sheet_cells, blocks)
            if blocks and self.bridge_rows:
                rects = self._bridge(sheet, rects)
            for top, left, bottom, right in rects:
                span = range(left, right + 1)
                addresses = [(sheet, r, c) for r in range(top, bottom + 1) for c in span]
                flat = [sheet_cells[(r, c)] if (r, c) in sheet_cells else written.get(a)
                        for a, (_, r, c) in zip(addresses, addresses)]
                width = right - left + 1
                values = [flat[i:i + width] for i in range(0, len(flat), width)]
                # the board keys / order refs carried, once each, in cell order (dict: ordered set)
                keys = tuple(dict.fromkeys(k for a in addresses if (k := keys_at.get(a)) is not None))
                started = time.time()
                w0 = time.perf_counter()
                try:
                    self.book.write(sheet, top, left, values)
                except Exception as exc:
                    # Keep them for the next flush (bounded by the number of cells), never drop them.
                    self.stats.write_errors += 1
                    log.warning("write of %s rows x %s columns at %s!R%sC%s failed (%s); retrying next flush",
                                bottom - top + 1, width, sheet, top, left, exc)
                    self._pending.update(zip(addresses, flat))
                    self._pending_keys.update((a, keys_at[a]) for a in addresses if a in keys_at)
                    continue
                ended = time.time()
                self.stats.write_latencies.append(time.perf_counter() - w0)
                writes += 1
                self.stats.writes += 1
                self.stats.cells += len(flat)
                written.update(zip(addresses, flat))
                if self.on_write is not None:
                    self.on_write(WriteRecord(sheet, top, left, bottom - top + 1, width, keys, started, ended,
                                              flush_no))
        return writes

    def _bridge(self, sheet: str, rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        """Join rectangles of the same columns separated by at most ``bridge_rows`` rows whose
        cells the pump wrote before (their current values are known): one call instead of two,
        for a few unchanged rows rewritten with the values they already show."""
        out: list[tuple[int, int, int, int]] = []
        for rect in sorted(rects, key=lambda t: (t[1], t[3], t[0])):
            if out:
                top, left, bottom, right = out[-1]
                gap = range(bottom + 1, rect[0])
                if (rect[1], rect[3]) == (left, right) and len(gap) <= self.bridge_rows and all(
                        (sheet, r, c) in self._written for r in gap for c in range(left, right + 1)):
                    out[-1] = (top, left, rect[2], right)
                    continue
            out.append(rect)
        return out

    def _region_of(self, sheet: str) -> Region | None:
        for region in (self.watchlist, self.orders):
            if region is not None and region.sheet == sheet:
                return region
        return None

    def _recalc(self, keys) -> int:
        if self.registry is None:
            return 0
        calls = 0
        now = time.monotonic()
        if self.prune_every is not None and now - self._last_prune >= self.prune_every:
            self._last_prune = now
            try:
                self.registry.prune(self.book, self.book_name)
            except Exception as exc:
                log.warning("pruning the formula registry failed: %s", exc)
        targets = self.registry.changed(keys, self.book_name)
        retry, self._calc_retry = self._calc_retry, {}
        for sheet, cells in retry.items():        # a recalculation Excel refused last time is not dropped
            merged = set(targets.get(sheet, ())) | cells
            targets[sheet] = sorted(merged, key=lambda a: parse_range(a)[:2])
        for sheet, addresses in targets.items():
            try:
                self.book.calculate(sheet, addresses)
            except Exception as exc:
                log.warning("recalculating %d formula cells on %s failed: %s; retrying next flush",
                            len(addresses), sheet, exc)
                self._calc_retry[sheet] = set(addresses)
                continue
            calls += 1
            self.stats.calculates += 1
            self.stats.recalc_cells += len(addresses)
        return calls

    # --- the thread -----------------------------------------------------------------------------------
    def start(self) -> "Pump":
        """Start the pump thread (binds the layout on it, then flushes every ``interval``)."""
        if self._thread is not None:
            raise RuntimeError("pump already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ibxl-pump", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_flushes(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` flushes have run (True) or ``timeout`` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.stats.flushes >= n or self.error is not None, timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after some flush (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate() or self.error is not None, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (after its current flush) and release the Watchlist's market data lines."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._release()

    def _release(self) -> None:
        painters, self.painters = self.painters, []
        for painter in painters:
            close = getattr(painter, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    log.debug("closing %r: %s", painter, exc)
        held, self._held = self._held, []
        if self.release is not None:
            for key in held:
                try:
                    self.release(key)
                except Exception as exc:
                    log.debug("releasing %s: %s", key, exc)

    def _run(self) -> None:
        com = sys.platform == "win32"
        if com:
            import pythoncom
            pythoncom.CoInitialize()
        try:
            if self.book_factory is not None:
                self.book = self.book_factory()
            self.bind()
            # A fixed cadence: flush k starts at bind + k * interval, so a tick waits at most one
            # interval for its flush whatever the flushes cost. A flush that overruns its slot is
            # followed at once by one that takes every change since (nothing queues), and the
            # schedule restarts from then instead of bursting to catch up.
            # Each flush is prepared (the bulk of the conversion, see prepare) a lead ahead of its
            # time: twice what the latest preparation took, at most a quarter of the interval.
            due = time.monotonic() + self.interval
            while True:
                lead = min(self.interval / 4, max(0.002, 2 * self._prepare_cost))
                if self._stop.wait(max(0.0, due - lead - time.monotonic())):
                    break
                p0 = time.monotonic()
                try:
                    self.prepare()
                except Exception:
                    log.exception("pump flush failed (preparing)")
                self._prepare_cost = time.monotonic() - p0
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                try:
                    self.flush()
                except Exception:
                    log.exception("pump flush failed")
                due += self.interval
                now = time.monotonic()
                if due < now:
                    due = now
        except BaseException as exc:
            self.error = exc
            log.exception("pump stopped")
            with self._cond:
                self._cond.notify_all()
        finally:
            if com:
                pythoncom.CoUninitialize()
