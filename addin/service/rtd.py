"""The RTD server: Excel's IRtdServer contract in plain Python, a read-only client of the ibxl service.

``=RTD("ibxl.rtd",,"AAPL","bid")`` asks Excel's RTD machinery for topic strings ``("AAPL", "bid")``:
an instrument text and a field name as IB_QUOTE accepts them (``addin.market.quote_fields``). Excel
creates the COM object (``addin.service.rtd_com``, Windows only), which forwards every call to an
:class:`RtdServer`:

- ``ServerStart(callback)`` -> 1. Opens the service connection (on a worker thread: Excel's thread
  never waits for the service or for IB) and starts the watcher thread.
- ``ConnectData(topic_id, strings, get_new_values)`` -> the topic's value now: the current value when
  the service's board already has the instrument, else ``"#IBXL: waiting ..."``. Each distinct
  instrument text is subscribed once at the service, on the worker thread, however many topics
  (fields, cells) use it.
- The watcher wakes on every quote push of the service, and calls ``callback.UpdateNotify()`` when a
  connected topic's value changed since the last RefreshData, at most once per ``refresh_interval``
  seconds (Excel throttles its RefreshData calls too: 2 s by default, ``Application.RTD.ThrottleInterval``).
- ``RefreshData()`` -> ``(count, [[topic ids], [values]])``: exactly the topics whose value changed
  since Excel last got one, with their current values.
- ``DisconnectData(topic_id)``: the last topic of an instrument releases its line at the service.
- ``Heartbeat()`` -> 1 while the service connection lives (0 once it failed or ended).
- ``ServerTerminate()``: releases every line, closes the connection, stops the threads.

Values are what a cell holds: a float, a bool, text, or "" for a field IB has not sent. Times (updated,
last time) are Excel serial dates in UTC (days since 1899-12-30; format the cell as a date). Errors are
text: ``#IB <code>: <IB's text>`` (unknown instrument, line refused), ``#IBXL: <why>`` (bad field,
``disconnected (press Connect)`` after the user's Disconnect, the service gone). RTD values are
values: Excel never evaluates an RTD string as a formula, so text from IB starting with "=" shows as
that text.

Threads: Excel calls the IRtdServer methods on its COM thread; the watcher and the worker run on
their own. Topic state is guarded by one lock; no service call and no callback runs under it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..backoff import Backoff
from ..excel.errors import error_text
from ..market.quote_fields import QuoteFailed, QuoteWaiting, field_attr, quote_value
from ..protocol import errors as ib_errors
from . import protocol
from .client import ServiceClient
from .protocol import ServiceError

log = logging.getLogger(__name__)

__all__ = ["RtdServer", "DEFAULT_REFRESH_INTERVAL", "WAITING", "DISCONNECTED_TEXT", "excel_serial"]

DEFAULT_REFRESH_INTERVAL = 0.25     # s between two UpdateNotify calls at most (Excel's own throttle: 2 s)
RENOTIFY_AFTER = 5.0                # s: notify again when Excel has not called RefreshData since
RETRY = Backoff(0.5, 5.0)          # s before re-subscribing an instrument the service could not reach IB for
_TRANSIENT = ib_errors.CONNECT_FAILURES | {ib_errors.CONNECTIVITY_LOST}
SUBSCRIBERS = 4                     # subscribe requests in flight at once (the service answers 8 per client)
WAITING = "#IBXL: waiting"
DISCONNECTED_TEXT = "#IBXL: disconnected (press Connect)"
_EXCEL_EPOCH = datetime(1899, 12, 30)


def excel_serial(t: datetime) -> float:
    """A naive (UTC) datetime as an Excel serial date: days since 1899-12-30, the fraction the time."""
    return (t - _EXCEL_EPOCH).total_seconds() / 86400.0


def cell_value(value: Any) -> Any:
    """A quote_value result as an RTD value: None -> "", datetime -> Excel serial, int -> float."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return excel_serial(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass(eq=False)
class _Topic:
    id: int
    text: str                     # the instrument text as typed (stripped)
    attr: str | None              # BoardQuote attribute; None when the field was refused
    error: str | None = None      # the topic's own error (a bad field)
    sent: Any = None              # the value Excel holds (from ConnectData or the latest RefreshData)


@dataclass(eq=False)
class _Instrument:
    """One instrument text held at the service for the topics that use it."""
    text: str
    topics: set[int] = field(default_factory=set)
    key: str | None = None        # the service's board key, once subscribed
    error: str | None = None      # why it could not be subscribed (cell text)
    requested: bool = False       # a subscribe is queued or done
    attempts: int = 0             # subscribes refused because IB was not connected (for the backoff)


class RtdServer:
    """Excel's IRtdServer, over a :class:`~addin.service.client.ServiceClient`.

    ``connect``: a zero-argument callable returning a connected ServiceClient (default: the user's
    service through ``addin.service.launcher.connect``, which starts one when none runs); or give
    ``address`` and ``authkey`` of a running service. ``refresh_interval``: the least time in seconds
    between two UpdateNotify calls. ``start_service``: let the default connect start the user's service.
    """

    def __init__(self, address: Any = None, authkey: bytes | None = None, *,
                 connect: Callable[[], ServiceClient] | None = None,
                 refresh_interval: float = DEFAULT_REFRESH_INTERVAL, start_service: bool = True,
                 name: str = "ibxl RTD"):
        if connect is None:
            if address is not None:
                def connect():
                    return ServiceClient(address, authkey, name=name)
            else:
                def connect():
                    from .launcher import connect as launch
                    return launch(ServiceClient, name=name, start=start_service)
        self._connect = connect
        self.refresh_interval = float(refresh_interval)
        self.client: ServiceClient | None = None
        self._lock = threading.Lock()
        self._topics: dict[int, _Topic] = {}
        self._instruments: dict[str, _Instrument] = {}
        self._by_key: dict[str, set[str]] = {}         # board key -> instrument texts subscribed to it
        self._version = 0                              # the client board's version last scanned
        self._dirty: set[int] = set()           # topics whose value may differ from what Excel holds
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connected = threading.Event()     # set once the connection attempt ended (either way)
        self._failure: str | None = None        # why there is no service connection (cell text)
        self._callback: Any = None
        self._notified = False                  # UpdateNotify sent, RefreshData not called since
        self._last_notify = float("-inf")
        self._user_disconnected = False
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self.notifications = 0                  # UpdateNotify calls made (stats)
        self.alive = 0

    # --- IRtdServer ------------------------------------------------------------------------------------
    def ServerStart(self, callback: Any) -> int:
        """Keep ``callback`` (Excel's IRTDUpdateEvent), start connecting and watching. Returns 1."""
        if callback is None:
            raise ValueError("ServerStart: Excel gave no callback object")
        self._callback = callback
        self._stop.clear()
        self.alive = 1
        self._pool = ThreadPoolExecutor(SUBSCRIBERS, thread_name_prefix="ibxl-rtd-subscribe")
        self._threads = [threading.Thread(target=self._work, name="ibxl-rtd-lines", daemon=True),
                         threading.Thread(target=self._watch, name="ibxl-rtd-watch", daemon=True)]
        for t in self._threads:
            t.start()
        return 1

    def ConnectData(self, topic_id: int, strings: Sequence[Any], get_new_values: Any = True) -> Any:
        """A new topic ``topic_id`` for ``strings`` = (instrument text, field; field default "price").
        Returns its value now (never waits for the service or IB)."""
        topic_id = int(topic_id)
        parts = [str(s).strip() for s in (strings or ()) if s is not None]
        text = parts[0] if parts else ""
        attr, error = None, None
        if not text:
            error = "#IBXL: RTD topic: no instrument given (=RTD(\"ibxl.rtd\",,\"AAPL\",\"bid\"))"
        else:
            try:
                attr = field_attr(parts[1] if len(parts) > 1 else None, what="RTD field")
            except ValueError as exc:
                error = error_text(exc)
            if len(parts) > 2:
                error = f"#IBXL: RTD topic: expected an instrument and a field, got {len(parts)} strings"
        topic = _Topic(topic_id, text, attr, error)
        if topic_id in self._topics:                    # an id Excel reuses: the old topic goes first
            self.DisconnectData(topic_id)
        with self._lock:
            self._topics[topic_id] = topic
            if error is None:
                inst = self._instruments.get(text)
                if inst is None:
                    inst = self._instruments[text] = _Instrument(text)
                inst.topics.add(topic_id)
                if not inst.requested:
                    inst.requested = True
                    self._jobs.put(("subscribe", text))
            topic.sent = value = self._value_locked(topic)
        return value

    def RefreshData(self) -> tuple[int, list[list[Any]]]:
        """``(count, [[topic ids], [values]])``: the topics whose value changed since Excel last got one."""
        with self._lock:
            self._scan_locked()                 # pushes since the watcher last looked count too
            ids, values = [], []
            for tid in sorted(self._dirty):
                topic = self._topics.get(tid)
                if topic is None:
                    continue
                value = self._value_locked(topic)
                if not _same(value, topic.sent):
                    topic.sent = value
                    ids.append(tid)
                    values.append(value)
            self._dirty.clear()
            self._notified = False
        return len(ids), [ids, values]

    def DisconnectData(self, topic_id: int) -> None:
        """Forget the topic; the last topic of an instrument releases its line at the service."""
        with self._lock:
            topic = self._topics.pop(int(topic_id), None)
            self._dirty.discard(int(topic_id))
            if topic is None:
                return
            inst = self._instruments.get(topic.text)
            if inst is None:
                return
            inst.topics.discard(topic.id)
            if inst.topics:
                return
            del self._instruments[topic.text]
            key = inst.key
            if key is not None:
                self._by_key[key].discard(topic.text)
                if not self._by_key[key]:
                    del self._by_key[key]
        if key is not None:
            self._jobs.put(("unsubscribe", key))

    def Heartbeat(self) -> int:
        """1 while the service connection lives (or is being opened), else 0."""
        if not self.alive or self._failure is not None:
            return 0
        client = self.client
        return 0 if client is not None and client.closed else 1

    def ServerTerminate(self) -> None:
        """Release every line, close the service connection, stop the threads."""
        self.alive = 0
        self._stop.set()
        self._jobs.put(("stop", None))
        for t in self._threads:
            t.join(10)
        if self._pool is not None:          # a subscribe still in flight releases its own line
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            keys = [i.key for i in self._instruments.values() if i.key is not None]
            self._instruments.clear()
            self._by_key.clear()
            self._topics.clear()
            self._dirty.clear()
            client, self.client = self.client, None
        if client is not None:
            try:
                if keys and not client.closed:
                    client.unsubscribe(keys)
            except (ServiceError, OSError) as exc:
                log.warning("RTD: releasing %d lines at the service failed: %s", len(keys), exc)
            finally:
                client.close()

    def key_of(self, text: str) -> str | None:
        """The service's board key (canonical instrument text) of a topic's instrument text, once
        subscribed; None before that or when it failed."""
        with self._lock:
            inst = self._instruments.get(str(text).strip())
            return None if inst is None else inst.key

    # --- values ----------------------------------------------------------------------------------------
    def _value_locked(self, topic: _Topic) -> Any:
        """The topic's current cell value (under the lock)."""
        if topic.error is not None:
            return topic.error
        if self._failure is not None:
            return self._failure
        client = self.client
        if client is not None and client.closed:
            return "#IBXL: the ibxl service closed the connection"
        if self._user_disconnected:
            return DISCONNECTED_TEXT
        inst = self._instruments.get(topic.text)
        if inst is not None and inst.error is not None:
            return inst.error
        if inst is None or inst.key is None or client is None or topic.attr is None:
            return WAITING
        q = client.board.get(inst.key)
        if q is None:
            return WAITING
        try:
            return cell_value(quote_value(q, topic.attr))
        except QuoteFailed as exc:
            return f"#{exc}"
        except QuoteWaiting:
            return WAITING

    def _scan_locked(self) -> None:
        """Mark the topics the service's pushes changed since the last scan (quotes on the client's
        board, the user's Disconnect / Connect, the connection's end)."""
        client = self.client
        if client is None:
            return
        self._version, changed = client.board.changes_since(self._version)
        flag = client.user_disconnected
        flipped = flag != self._user_disconnected
        if flipped or client.closed:
            self._user_disconnected = flag
            self._mark_locked(list(self._topics))
        if flipped and not flag and not client.closed:
            self._jobs.put(("retry", None))          # texts the service refused while disconnected
        for key in changed:
            for text in self._by_key.get(key, ()):
                self._mark_locked(self._instruments[text].topics)

    def _mark_locked(self, topic_ids) -> bool:
        """Topics whose value may have changed: dirty when it differs from what Excel holds. True if any."""
        any_dirty = False
        for tid in topic_ids:
            topic = self._topics.get(tid)
            if topic is not None and not _same(self._value_locked(topic), topic.sent):
                self._dirty.add(tid)
                any_dirty = True
        return any_dirty

    # --- threads ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        """The worker: open the connection, then subscribe (through the pool) / unsubscribe as topics come
        and go."""
        try:
            client = self._connect()
        except Exception as exc:
            with self._lock:
                why = exc.cell_text() if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
                self._failure = f"#IBXL: no ibxl service ({why.removeprefix('#IBXL: ')}); see ibxl service status"
                self._mark_locked(list(self._topics))
            self._connected.set()
            log.error("RTD: cannot reach the ibxl service: %s", exc)
            return
        if self._stop.is_set():                          # terminated while connecting
            client.close()
            self._connected.set()
            return
        with self._lock:
            self.client = client
            self._user_disconnected = client.user_disconnected
            self._mark_locked(list(self._topics))
        self._connected.set()
        while True:
            kind, arg = self._jobs.get()
            if kind == "stop" or self._stop.is_set():
                return
            if kind == "subscribe":
                self._submit(client, arg)                # resolving an instrument waits for IB
            elif kind == "unsubscribe":
                try:
                    client.unsubscribe([arg])
                except (ServiceError, OSError) as exc:
                    log.warning("RTD: unsubscribe %s failed: %s", arg, exc)
            elif kind == "retry":               # after the user's Connect: the texts refused meanwhile
                with self._lock:
                    texts = [t for t, i in self._instruments.items() if i.key is None and i.error is None]
                for text in texts:
                    self._submit(client, text)

    def _submit(self, client: ServiceClient, text: str) -> None:
        try:
            if self._pool is not None:
                self._pool.submit(self._subscribe, client, text)
        except RuntimeError:                             # the pool shut down: ServerTerminate runs
            pass

    def _subscribe(self, client: ServiceClient, text: str) -> None:
        with self._lock:
            if text not in self._instruments:
                return                                   # every topic went before its turn
        key = error = None
        try:
            key = client.subscribe([text])[0]
        except ServiceError as exc:
            if exc.code == protocol.DISCONNECTED:        # the user's Disconnect: retried after Connect
                return
            if exc.ib_code in _TRANSIENT:                # IB (re)connecting: try again shortly
                self._retry_later(text)
                return
            error = error_text(exc)
        except Exception as exc:
            error = error_text(exc)
        with self._lock:
            inst = self._instruments.get(text)
            if inst is None or (key is not None and inst.key is not None):
                release = key                            # gone meanwhile, or held already: one user each
            else:
                release = None
                inst.key, inst.error, inst.attempts = key, error, 0
                if key is not None:
                    self._by_key.setdefault(key, set()).add(text)
                self._mark_locked(inst.topics)
        if release is not None:
            try:
                client.unsubscribe([release])
            except (ServiceError, OSError):
                pass

    def _retry_later(self, text: str) -> None:
        with self._lock:
            inst = self._instruments.get(text)
            if inst is None:
                return
            inst.attempts += 1
            attempts = inst.attempts
        delays = iter(RETRY)
        delay = next(delays)
        for _ in range(attempts - 1):
            delay = next(delays)
        if not self._stop.wait(delay):                   # a pool thread waits; Excel's never does
            self._jobs.put(("subscribe", text))

    def _watch(self) -> None:
        """The watcher: wake on the client's board (quote pushes) and on the service's session pushes,
        find the topics whose value changed, and call UpdateNotify at most once per refresh_interval."""
        callback = None
        try:
            callback = self._thread_callback(self._callback)
            while not self._connected.wait(0.1):
                if self._stop.is_set():
                    return
            version = -1
            while not self._stop.is_set():
                client = self.client
                if client is None:                       # the connection failed: topics say so
                    if self._due():
                        self._notify(callback)
                    self._stop.wait(self.refresh_interval)
                    continue
                board = client.board
                with self._lock:
                    since = time.monotonic() - self._last_notify
                    if not self._dirty:
                        wait = self.refresh_interval
                    elif not self._notified:           # a change to tell: when the interval has passed
                        wait = max(0.0, self.refresh_interval - since)
                    else:                               # told: Excel's RefreshData is next (or a reminder)
                        wait = max(0.001, min(self.refresh_interval, RENOTIFY_AFTER - since))
                if wait > 0:
                    board.wait(version, wait)
                if self._stop.is_set():
                    return
                with self._lock:
                    self._scan_locked()
                    version = self._version
                if self._due():
                    self._notify(callback)
        except Exception:
            log.exception("RTD watcher stopped")
        finally:
            self._thread_done()

    def _due(self) -> bool:
        """Claim a notification: a topic changed, the interval since the last passed, and Excel has not
        been told already (unless it ignored that for RENOTIFY_AFTER s)."""
        now = time.monotonic()
        with self._lock:
            if not self._dirty or now - self._last_notify < self.refresh_interval:
                return False
            if self._notified and now - self._last_notify < RENOTIFY_AFTER:
                return False
            self._notified = True
            self._last_notify = now
            return True

    def _notify(self, callback: Any) -> None:
        self.notifications += 1
        try:
            callback.UpdateNotify()
        except Exception as exc:                     # Excel closing, or busy: the next change tries again
            log.warning("RTD: UpdateNotify failed: %s", exc)

    # COM hooks (``rtd_com`` overrides them): the callback object as the watcher thread may call it.
    def _thread_callback(self, callback: Any) -> Any:
        """The callback object usable on the watcher thread (plain Python: the object itself)."""
        return callback

    def _thread_done(self) -> None:
        """The watcher thread ends (COM: uninitialise)."""


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
