"""Clients of the ibxl service.

:class:`ServiceClient` reads: status, quotes (pushed into a local QuoteBoard mirror), history,
contracts, positions, account, P&L, order state; plus connect / disconnect. It has no order
methods, and its connection is opened read-only, so the service refuses order methods on it too:
the UDF facade gets one of these. :class:`TradingClient` adds placing, modifying and cancelling
orders, the kill switch and shutdown (macros, ``ibxl run``, the CLI).

A method call sends one request and waits for its reply (``timeout`` s, default 60); an error reply
raises :class:`~addin.service.protocol.ServiceError` (``code``, ``message``, ``ib_code``). Calls are
thread-safe; one background thread reads replies and pushes.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Iterable
from typing import Any

from ..market.quotes import _RAW_FIELDS, BoardQuote, QuoteBoard
from . import paths, protocol, transport
from .protocol import ServiceError

log = logging.getLogger(__name__)

__all__ = ["ServiceClient", "TradingClient", "ServiceGone"]

DEFAULT_TIMEOUT = 60.0


class ServiceGone(ServiceError, ConnectionError):
    """The connection to the service ended (service stopped or crashed)."""

    def __init__(self, why: str = "the ibxl service closed the connection"):
        super().__init__("gone", why)


class _Pending:
    """One request in flight: its reply, and the callbacks the service sends while it runs (answered on
    the calling thread: a workbook's COM objects belong to the thread that called)."""

    __slots__ = ("inbox",)

    def __init__(self):
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()     # callback messages, then the reply (None: gone)


class ServiceClient:
    """A read-only connection to the service at ``address`` (default: the user's socket,
    ``paths.socket_path()``) with ``authkey`` (default: the user's key file, never created here).

    Raises FileNotFoundError / ConnectionRefusedError when no service listens,
    ``multiprocessing.AuthenticationError`` for a wrong key, ServiceError ``version_mismatch`` for a
    service of another protocol version. ``board``: a QuoteBoard mirroring the pushed quotes of the
    lines this client holds (for a pump in this process).
    """

    capabilities: tuple[str, ...] = ("read",)

    def __init__(self, address: str | os.PathLike | None = None, authkey: bytes | None = None, *,
                 name: str = "", timeout: float = DEFAULT_TIMEOUT):
        address = address if address is not None else paths.socket_path()
        authkey = authkey if authkey is not None else paths.load_or_create_key(create=False)
        self.timeout = timeout
        self.board = QuoteBoard()
        self.push_version = 0                       # the service's board version of the latest push
        self._channel = transport.Channel(transport.dial(address, authkey))
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._gone_reason = ""
        self._order_listeners: list = []
        self._reader = threading.Thread(target=self._read_loop, name="ibxl-service-reader", daemon=True)
        self._reader.start()
        hello = self._call("hello", capabilities=list(self.capabilities), name=name or f"pid {os.getpid()}",
                           pid=os.getpid())
        self.service_pid = hello["pid"]
        self.user_disconnected = bool(hello.get("user_disconnected"))   # kept current by ``session`` pushes

    # --- plumbing --------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                message = self._channel.recv()
                if "topic" in message:
                    self._on_push(message)
                    continue
                id = message.get("id")
                if "callback" in message:
                    with self._lock:
                        pending = self._pending.get(id) if isinstance(id, int) else None
                    if pending is None:
                        self._channel.send(protocol.callback_reply(message["callback"], "no request of this "
                                                                                        "client is waiting"))
                    else:
                        pending.inbox.put(message)
                    continue
                if id is None and not message.get("ok", True):      # an error about the connection itself
                    self._gone_reason = protocol.error_of(message).message
                    continue
                with self._lock:
                    pending = self._pending.pop(id, None) if isinstance(id, int) else None
                if pending is not None:
                    pending.inbox.put(message)
        except (EOFError, OSError, ServiceError):
            pass
        finally:
            self._channel.release()
            with self._lock:
                self._closed = True
                waiting, self._pending = list(self._pending.values()), {}
            for p in waiting:
                p.inbox.put(None)                        # gone

    def _on_push(self, message: dict) -> None:
        if message.get("v") != protocol.VERSION:
            return
        if message.get("topic") == "session":
            self.user_disconnected = bool((message.get("data") or {}).get("user_disconnected"))
            return
        if message.get("topic") == "orders":
            for ref, outputs in (message.get("data") or {}).items():
                for fn in list(self._order_listeners):
                    try:
                        fn(ref, outputs)
                    except Exception:
                        log.exception("order listener %r", fn)
            return
        if message.get("topic") != "quotes":
            return
        self.push_version = message.get("version", self.push_version)
        for key, record in (message.get("data") or {}).items():
            if record:
                self.board.mark(key, **{k: v for k, v in record.items() if k in _RAW_FIELDS})

    def _call(self, method: str, _timeout: float | None = None, _callbacks: dict | None = None, **params) -> Any:
        """Send a request, answer the service's callbacks for it (``_callbacks``: method -> fn(**params)),
        return its result. The timeout counts from the request or the latest callback."""
        pending = _Pending()
        with self._lock:
            if self._closed:
                raise ServiceGone(self._gone_reason or "the connection to the ibxl service is closed")
            id = next(self._ids)
            self._pending[id] = pending
        try:
            self._channel.send(protocol.request(id, method, params))
        except (OSError, EOFError) as exc:
            with self._lock:
                self._pending.pop(id, None)
            raise ServiceGone(f"the ibxl service is gone: {exc}") from None
        timeout = _timeout or self.timeout
        try:
            while True:
                try:
                    reply = pending.inbox.get(timeout=timeout)
                except queue.Empty:
                    raise ServiceError(protocol.FAILED, f"no answer from the ibxl service to {method} within "
                                                        f"{timeout:g} s") from None
                if reply is not None and "callback" in reply:
                    self._answer_callback(reply, _callbacks or {})
                    continue
                break
        finally:
            with self._lock:
                self._pending.pop(id, None)
        if reply is None:
            raise ServiceGone(self._gone_reason or "the ibxl service closed the connection")
        if not reply.get("ok"):
            raise protocol.error_of(reply)
        return reply.get("result")

    def _answer_callback(self, message: dict, handlers: dict) -> None:
        handler = handlers.get(message.get("method"))
        error = None
        if handler is None:
            error = f"this call has no {message.get('method')!r} callback"
        else:
            try:
                handler(**(message.get("params") or {}))
            except Exception as exc:              # the service refuses the rows: nothing of them is sent
                error = f"{type(exc).__name__}: {exc}"
        try:
            self._channel.send(protocol.callback_reply(message["callback"], error))
        except (OSError, EOFError):
            pass                                  # gone: the pending call learns it from the reader

    @property
    def closed(self) -> bool:
        """True once the connection ended (closed here, or the service went)."""
        return self._closed

    def close(self) -> None:
        """Close the connection (the service releases this client's lines)."""
        self._channel.close()
        self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading API -----------------------------------------------------------------------------------
    def status(self) -> dict:
        """The service's Runtime.status() plus ``user_disconnected``, ``clients`` (list of ``{client,
        name, pid, capabilities, lines}``), ``service_pid``, ``uptime`` (s)."""
        return self._call("status")

    def connect(self, timeout: float = 10.0) -> dict:
        """Connect the service to IB (ends a user's disconnect). Returns status. Raises ServiceError
        ib_error (502, 326, ...)."""
        status = self._call("connect", _timeout=timeout + 5, timeout=timeout)
        self.user_disconnected = False
        return status

    def disconnect(self) -> dict:
        """Disconnect the service from IB for every client, until someone calls :meth:`connect`."""
        status = self._call("disconnect")
        self.user_disconnected = True
        return status

    def subscribe(self, texts: Iterable[str]) -> list[str]:
        """Hold a line per instrument text (one more user each); returns the board keys. Their quotes
        are pushed into :attr:`board`."""
        return self._call("subscribe", texts=list(texts))

    def unsubscribe(self, keys: Iterable[str]) -> None:
        """Drop one of this client's users per key."""
        self._call("unsubscribe", keys=list(keys))

    def quote(self, text: str, timeout: float | None = None) -> BoardQuote:
        """The BoardQuote of ``text``, waiting up to ``timeout`` s for its first price (the line stays
        held by this client). Raises ServiceError (``disconnected``, ``ib_error`` 200 ...)."""
        return BoardQuote(**self._call("quote", text=text, timeout=timeout))

    def quotes(self, texts: Iterable[str], timeout: float | None = None) -> list[BoardQuote]:
        """:meth:`quote` for several texts; a failed one has ``error`` set."""
        return [BoardQuote(**r) for r in self._call("quotes", texts=list(texts), timeout=timeout)]

    def history(self, text: str, duration: str = "1 D", bar_size: str = "1 min", what_to_show: str = "TRADES",
                use_rth: bool = True, end=None, timeout: float | None = None, progress=None):
        """Bars as a pandas DataFrame (History.bars' columns). ``progress(done, total)``: called on this
        thread as the service's requests to IB are answered (History.bars' progress); each call also
        restarts the reply timeout, so a long paced history is not cut off while it advances."""
        params = dict(text=text, duration=duration, bar_size=bar_size, what_to_show=what_to_show, use_rth=use_rth,
                      end=end, timeout=timeout)
        if progress is None:
            return self._call("history", _timeout=(timeout or self.timeout) + 5, **params)
        return self._call("history", _timeout=(timeout or self.timeout) + 5,
                          _callbacks={"progress": lambda done, total: progress(done, total)}, progress=True, **params)

    def contract(self, text: str) -> dict:
        """``{"text", "contract": {...}, "details": {...}}`` (ibapi field names)."""
        return self._call("contract", text=text)

    def positions(self):
        return self._call("positions")

    def account(self):
        """The account summary DataFrame."""
        return self._call("account")

    def pnl(self, account: str | None = None):
        return self._call("pnl", account=account)

    def order(self, ref: str) -> dict:
        """One order's outputs by Ref. Raises ServiceError ``not_found``."""
        return self._call("order", ref=ref)

    def executions(self):
        """Today's executions table (``Portfolio.executions``)."""
        return self._call("executions")

    def analysis(self, pending: list[dict] | None = None, now=None, benchmark: str | None = None,
                 window_days: int | None = None, timeout: float = 300.0) -> dict:
        """The analysis report (``Runtime.analysis``), ``{Table name: DataFrame}``. ``timeout``: seconds
        for the whole report (a first report of the day pulls a year of daily bars per holding)."""
        return self._call("analysis", _timeout=timeout, pending=pending, now=now, benchmark=benchmark,
                          window_days=window_days)


class TradingClient(ServiceClient):
    """A ServiceClient whose connection may place, modify and cancel orders and use the kill switch
    (for macros, ``ibxl run`` and the CLI; never handed to a UDF)."""

    capabilities: tuple[str, ...] = ("read", "trading")

    def add_order_listener(self, fn) -> None:
        """``fn(ref, outputs)`` for every ``orders`` push (the desk's status, fill and commission changes;
        called on this client's reader thread: keep it quick)."""
        self._order_listeners.append(fn)

    def remove_order_listener(self, fn) -> None:
        if fn in self._order_listeners:
            self._order_listeners.remove(fn)

    def configure_orders(self, config: dict | None) -> list[str]:
        """The warnings for the workbook Config keys the user's settings ignore (the limits are applied
        again with each place/modify that passes the config)."""
        return self._call("configure_orders", config=config)

    def place_orders(self, rows, *, source: str = "", followed=(), config: dict | None = None,
                     write_refs=None, timeout: float | None = None):
        """Place Orders Table rows (a DataFrame, its index the row labels, or a list of records) through
        the service's one order desk. ``source`` names the caller (workbook and Table); ``followed``:
        labels of rows placed before; ``config``: the workbook's Config (limits tightened for this call);
        ``write_refs({label: Ref})`` runs on this thread before any of those rows is sent (if it raises,
        they are not sent). Returns the desk's result DataFrame (indexed by label, with Outcome)."""
        if hasattr(rows, "to_dict"):
            labels = [_plain(label) for label in rows.index]
            records = rows.to_dict(orient="records")
        else:
            records, labels = list(rows), None
        callbacks = {}
        if write_refs is not None:
            callbacks["write_refs"] = lambda assigned: write_refs({_plain(label): ref for label, ref in assigned})
        return self._call("place_orders", _timeout=timeout, _callbacks=callbacks, rows=records, labels=labels,
                         followed=[_plain(label) for label in followed], source=source, config=config,
                         write_refs=write_refs is not None)

    def modify(self, row, config: dict | None = None) -> dict:
        return self._call("modify", row=dict(row), config=config)

    def cancel(self, refs):
        """``OrderDesk.cancel``: a table indexed by Ref with Outcome."""
        return self._call("cancel", refs=refs if isinstance(refs, str) else list(refs))

    def cancel_all(self) -> None:
        """reqGlobalCancel through the desk."""
        self._call("cancel_all")

    def kill(self) -> list[str]:
        return self._call("kill")

    def reset_kill(self) -> None:
        self._call("reset_kill")

    def killed(self) -> bool:
        return self._call("killed")

    def order_table(self):
        """Every order the service's journal holds, indexed by Ref (``OrderDesk.table``)."""
        return self._call("order_table")

    def audit(self):
        """The journal's audit trail (``addin.orders.audit.audit_frame``), Time in UTC."""
        return self._call("audit")

    def shutdown(self) -> None:
        """Stop the service (its lines cancelled, journal closed)."""
        self._call("shutdown")


def _plain(label):
    """A row label as JSON carries it (numpy integers -> int)."""
    return label.item() if hasattr(label, "item") else label
