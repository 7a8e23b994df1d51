"""ServiceServer: the one Runtime of this OS user, served to many local clients.

A thread accepts connections (each authenticated by ``multiprocessing.connection``'s HMAC challenge
with the user's key); each connection gets a reader thread, a small pool that answers its requests
(up to CALLS_PER_CLIENT at once, so a UDF waiting for history does not hold up the quotes of the
same workbook; one calling thread's requests stay in order because the client waits for each reply)
and a pusher thread that sends the quote changes of the lines it holds.

Lines are reference-counted per client on top of MarketData's own count: each client's ``held``
counts its subscribes per key; when the connection ends (``unsubscribe`` not called, the process
killed, the socket closed) every line it held is released at once, so its share of the line budget
comes back within the time the OS takes to report the closed socket (immediately on a local socket).

Disconnect is explicit: after ``disconnect`` every method that needs IB answers error code
``disconnected`` until ``connect``; nothing reconnects on its own (the Session's automatic reconnect
after a dropped gateway is unaffected, it is not a user's disconnect).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import protocol, transport
from .protocol import ServiceError

log = logging.getLogger(__name__)

__all__ = ["ServiceServer", "embedded_service", "READ_METHODS", "TRADING_METHODS"]

READ_METHODS = ("status", "connect", "disconnect", "subscribe", "unsubscribe", "quote", "quotes", "history",
                "contract", "positions", "account", "pnl", "order", "executions", "analysis", "option_expiries",
                "option_strikes", "option_chain")
TRADING_METHODS = ("configure_orders", "place_orders", "modify", "cancel", "cancel_all", "kill", "reset_kill",
                   "killed", "order_table", "audit", "shutdown")
CAPABILITIES = ("read", "trading")
CALLS_PER_CLIENT = 8             # requests of one connection answered at once
PUSH_WAIT = 0.5                  # seconds a pusher sleeps on the board before checking it should stop
PUSH_GAP = 0.005                 # seconds between two quote pushes to one client: changes in between merge
CALLBACK_TIMEOUT = 120.0         # seconds the client has to write and save the Refs place_orders assigned
RECORD_INTERVAL = 3600.0         # seconds between the analysis reports the service records once one was asked for


def quote_record(q) -> dict | None:
    """A BoardQuote as the protocol's quote object (its fields by name; times as datetimes)."""
    return None if q is None else {f.name: getattr(q, f.name) for f in dataclasses.fields(q)}


class _CallbackAnswer:
    """A callback's answer: set by the connection's reader, awaited by the request's thread."""

    def __init__(self):
        self.event = threading.Event()
        self.reply: dict | None = None


class _Client:
    """One connection: who it is, what it may do, and the lines it holds."""

    def __init__(self, number: int, channel: transport.Channel):
        self.number = number
        self.channel = channel
        self.name, self.pid = "?", 0
        self.capabilities: frozenset[str] = frozenset()
        self.held: collections.Counter[str] = collections.Counter()    # key -> subscribes by this client
        self.quote_texts: dict[str, str] = {}                          # text held by quote/quotes -> key
        self.fresh: set[str] = set()                                   # keys to push even if unchanged
        self.lock = threading.Lock()
        self.first_hold = threading.Lock()                             # one quote text held once, not twice
        self.gone = threading.Event()
        self.orders: dict[str, dict] = {}                              # Ref -> outputs not yet pushed
        self.orders_changed = threading.Event()
        self.callbacks: dict[int, _CallbackAnswer] = {}                        # callback id -> its answer, once it came
        self.calls = concurrent.futures.ThreadPoolExecutor(CALLS_PER_CLIENT, f"ibxl-service-call-{number}")

    def describe(self) -> dict:
        with self.lock:
            lines = len(self.held)
        return {"client": self.number, "name": self.name, "pid": self.pid,
                "capabilities": sorted(self.capabilities), "lines": lines}


class ServiceServer:
    """Owns ONE Runtime (built by ``runtime_factory()``, a ``addin.app.runtime.Runtime``) and serves it on
    the Unix socket ``address`` to clients that know ``authkey`` (bytes).

    autoconnect: connect to IB when started (a failure is logged and shown by ``status``; a client's
    ``connect`` tries again). Use :meth:`start` / :meth:`stop`, or :meth:`serve_forever`.
    """

    def __init__(self, runtime_factory: Callable[[], Any], address: str | os.PathLike, authkey: bytes, *,
                 autoconnect: bool = True, record_interval: float = RECORD_INTERVAL):
        self.runtime_factory = runtime_factory
        # Once a client has asked for the analysis, the service rebuilds it every record_interval seconds,
        # so the recorded P&L and VaR days grow while the service runs (addin.analysis.pnl_history).
        self.record_interval = record_interval
        self.analysis_asked = False
        self.records = 0                            # reports recorded by the service on its own
        self._recorded = threading.Condition()
        self.address = str(address)
        self.authkey = authkey
        self.autoconnect = autoconnect
        self.runtime: Any = None
        self.user_disconnected = False
        self.started = time.time()
        self._listener: Any = None
        self._clients: dict[int, _Client] = {}
        self._numbers = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._orders_lock = threading.Lock()        # a workbook's Config applies to its own place/modify only
        self._request = threading.local()           # the request a pool thread answers (for callbacks)
        self._callback_ids = iter(range(1, 1 << 62))

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "ServiceServer":
        """Build the Runtime, connect it (``autoconnect``), listen. Raises OSError when another service
        listens on the address."""
        self._listener = transport.listen(self.address, self.authkey)
        self.runtime = self.runtime_factory()
        self.runtime.add_order_listener(self._on_order)
        if self.autoconnect:
            try:
                self.runtime.connect()
            except Exception as exc:                 # the service still serves: status shows why
                log.warning("could not connect at start: %s", exc)
        self._spawn(self._accept_loop, "ibxl-service-accept")
        self._spawn(self._record_loop, "ibxl-service-analysis")
        return self

    def _record_loop(self) -> None:
        """Every ``record_interval`` seconds (a schedule, not a wait for anything), once the analysis was
        asked for: rebuild it, which records the day's P&L and VaR. Its feeds stay watched and its daily
        closes are cached per day, so this sends IB nothing new within a day."""
        while not self._stopped.wait(self.record_interval):
            if not self.analysis_asked or self.user_disconnected or not self.runtime.session.connected:
                continue
            try:
                self.runtime.analysis()
            except Exception as exc:                  # the service goes on; the next turn tries again
                if self._stopped.is_set():            # cut short by the service stopping: not a failure
                    return
                log.warning("recording the analysis failed: %s", exc)
                continue
            with self._recorded:
                self.records += 1
                self._recorded.notify_all()

    def wait_records(self, count: int, timeout: float) -> bool:
        """Wait until the service has recorded ``count`` analysis reports on its own (tests)."""
        with self._recorded:
            return self._recorded.wait_for(lambda: self.records >= count, timeout)

    def serve_forever(self) -> None:
        """:meth:`start` (unless started) and block until :meth:`stop` (e.g. a client's ``shutdown``)."""
        if self._listener is None:
            self.start()
        self._stopped.wait()
        self._finish()

    def stop(self) -> None:
        """End every connection, close the Runtime (lines cancelled, journal closed), remove the socket."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._finish()

    _finished = False

    def _finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            clients = list(self._clients.values())
        transport.wake(self.address)                   # accept() does not return on close: give it a peer
        try:
            self._listener.close()
        except OSError:
            pass
        for c in clients:
            c.channel.close()
            c.gone.set()
            c.orders_changed.set()
            c.calls.shutdown(wait=False, cancel_futures=True)
        if self.runtime is not None:
            self.runtime.close()
        if not transport.is_pipe(self.address):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + 2 * PUSH_WAIT
        for t in threads:                               # every thread ends: a stopped service leaves none
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "ServiceServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, fn, name, *args) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return t

    # --- connections -----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):
                if self._stopped.is_set():
                    return
                log.exception("accepting a connection")
                continue
            if self._stopped.is_set():
                conn.close()
                return
            client = _Client(next(self._numbers), transport.Channel(conn))
            self._spawn(self._serve_client, f"ibxl-service-client-{client.number}", client)

    def _serve_client(self, client: _Client) -> None:
        try:
            transport.authenticate(client.channel.conn, self.authkey, server=True)
        except transport.AuthenticationError as exc:
            log.warning("refused a connection: %s", exc)
            client.calls.shutdown(wait=False)
            return
        with self._lock:
            if self._finished:
                client.channel.close()
                return
            self._clients[client.number] = client
        try:
            self._handshake(client)
            self._spawn(self._push_loop, f"ibxl-service-push-{client.number}", client)
            if "trading" in client.capabilities:
                self._spawn(self._order_push_loop, f"ibxl-service-orders-{client.number}", client)
            while not self._stopped.is_set():
                message = client.channel.recv()
                if message.get("v") != protocol.VERSION:      # a clear error, then the connection closes
                    self._answer(client, message)
                    break
                if "callback" in message:
                    self._callback_answered(client, message)
                    continue
                client.calls.submit(self._answer, client, message)
        except (EOFError, OSError):
            pass                                        # the client went away (closed, crashed, killed)
        except ServiceError as exc:                     # a bad handshake or another schema version
            self._try_send(client, protocol.reply_error(None, exc.code, exc.message))
        except Exception:
            log.exception("client %s", client.number)
        finally:
            self._drop(client)
            client.channel.release()

    def _handshake(self, client: _Client) -> None:
        id, method, params = protocol.parse_request(client.channel.recv())
        if method != "hello":
            raise protocol.MalformedMessage("the first request must be hello")
        wanted = params.get("capabilities") or ["read"]
        unknown = set(wanted) - set(CAPABILITIES)
        if unknown:
            raise protocol.MalformedMessage(f"unknown capabilities {sorted(unknown)}")
        client.name, client.pid = str(params.get("name", "?")), int(params.get("pid", 0))
        client.capabilities = frozenset(wanted) | {"read"}
        client.channel.send(protocol.reply_ok(id, {"version": protocol.VERSION, "pid": os.getpid(),
                                                   "capabilities": sorted(client.capabilities),
                                                   "user_disconnected": self.user_disconnected}))

    def _answer(self, client: _Client, message: dict) -> None:
        id = message.get("id") if isinstance(message.get("id"), int) else None
        try:
            id, method, params = protocol.parse_request(message)
            self._request.id = id
            result = self._call(client, method, params)
            reply = protocol.reply_ok(id, result)
        except ServiceError as exc:
            reply = protocol.reply_error(id, exc.code, exc.message, exc.ib_code)
        except KeyError as exc:
            reply = protocol.reply_error(id, protocol.NOT_FOUND, str(exc.args[0]) if exc.args else "not found")
        except Exception as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, int):
                reply = protocol.reply_error(id, protocol.IB_ERROR, getattr(exc, "text", None) or str(exc), code)
            else:
                reply = protocol.reply_error(id, protocol.FAILED, str(exc) or type(exc).__name__)
        try:
            self._send_reply(client, reply)
        except (OSError, EOFError):
            pass                                        # the client went away meanwhile

    def _send_reply(self, client: _Client, reply: dict) -> None:
        try:
            client.channel.send(reply)
        except TypeError as exc:                        # a result the schema cannot carry: say so
            client.channel.send(protocol.reply_error(reply.get("id"), protocol.FAILED, str(exc)))

    def _try_send(self, client: _Client, message: dict) -> None:
        try:
            client.channel.send(message)
        except (OSError, EOFError):
            pass

    def _drop(self, client: _Client) -> None:
        """The connection ended: release every line it held (once per subscribe)."""
        client.gone.set()
        client.orders_changed.set()
        with client.lock:
            waiting, client.callbacks = list(client.callbacks.values()), {}
        for pending in waiting:                         # a callback waiting on a dead client fails now
            pending.event.set()
        client.channel.close()
        client.calls.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._clients.pop(client.number, None)
        with client.lock:
            held, client.held = client.held, collections.Counter()
            client.quote_texts.clear()
        if self.runtime is None:
            return
        market = self.runtime.market
        for key, count in held.items():
            for _ in range(count):
                try:
                    market.unsubscribe(key)
                except (KeyError, Exception):
                    log.debug("releasing %s", key, exc_info=True)
        if held:
            log.info("client %s (%s, pid %s) gone: released %d lines", client.number, client.name,
                     client.pid, len(held))

    # --- pushes ----------------------------------------------------------------------------------------
    def _push_loop(self, client: _Client) -> None:
        """Send ``quotes`` pushes: the held keys changed since the last push (merged: a slow client gets
        the latest values, never a backlog), at most one per PUSH_GAP (a busy stream costs one message
        per client per gap, not one per tick)."""
        board = self.runtime.market.board
        version = board.version
        while not client.gone.is_set() and not self._stopped.is_set():
            board.wait(version, PUSH_WAIT)
            with client.lock:
                fresh, client.fresh = client.fresh, set()
                held = set(client.held)
            version, data = board.raw_changes_since(version, held)
            for k in fresh - data.keys():
                if k in held:
                    data[k] = board.raw(k)
            if data:
                try:
                    client.channel.send(protocol.push("quotes", version, data))
                except (OSError, EOFError, ValueError):
                    return
                client.gone.wait(PUSH_GAP)

    def _on_order(self, ref: str, outputs: dict) -> None:
        """The desk's listener (IB's message thread: only queue, never send here)."""
        with self._lock:
            clients = [c for c in self._clients.values() if "trading" in c.capabilities]
        for c in clients:
            with c.lock:
                c.orders[ref] = dict(outputs)
            c.orders_changed.set()

    def _order_push_loop(self, client: _Client) -> None:
        """Send ``orders`` pushes to a trading client: the outputs changed since the last one, merged by Ref."""
        sequence = 0
        while True:
            client.orders_changed.wait()
            if client.gone.is_set() or self._stopped.is_set():
                return
            client.orders_changed.clear()
            with client.lock:
                data, client.orders = client.orders, {}
            if data:
                sequence += 1
                try:
                    client.channel.send(protocol.push("orders", sequence, data))
                except (OSError, EOFError, ValueError):
                    return

    def _ask(self, client: _Client, method: str, params: dict, timeout: float = CALLBACK_TIMEOUT) -> None:
        """Send a callback for the request this thread answers and wait for the client's answer.
        Raises ServiceError when the client refuses, does not answer in time, or is gone."""
        cid = next(self._callback_ids)
        pending = _CallbackAnswer()
        with client.lock:
            if client.gone.is_set():
                raise ServiceError(protocol.FAILED, "the client is gone")
            client.callbacks[cid] = pending
        try:
            client.channel.send(protocol.callback(cid, self._request.id, method, params))
            if not pending.event.wait(timeout):
                raise ServiceError(protocol.FAILED, f"the client did not answer {method} within {timeout:g} s")
        except (OSError, EOFError) as exc:
            raise ServiceError(protocol.FAILED, f"the client is gone: {exc}") from None
        finally:
            with client.lock:
                client.callbacks.pop(cid, None)
        reply = pending.reply
        if reply is None:
            raise ServiceError(protocol.FAILED, "the client went away before answering")
        if not reply.get("ok"):
            raise protocol.error_of(reply)

    def _callback_answered(self, client: _Client, message: dict) -> None:
        cid = message.get("callback")
        with client.lock:
            pending = client.callbacks.get(cid) if isinstance(cid, int) else None
        if pending is not None:
            pending.reply = message
            pending.event.set()

    # --- methods ---------------------------------------------------------------------------------------
    def _call(self, client: _Client, method: str, params: dict) -> Any:
        if method in TRADING_METHODS:
            if "trading" not in client.capabilities:
                raise ServiceError(protocol.NOT_PERMITTED, f"{method} needs the trading capability "
                                                           f"(a TradingClient); this connection is read-only")
        elif method not in READ_METHODS:
            raise ServiceError(protocol.UNKNOWN_METHOD, f"unknown method {method!r}")
        try:
            return getattr(self, "m_" + method)(client, **params)
        except TypeError as exc:
            if "m_" + method in str(exc):
                raise ServiceError(protocol.BAD_REQUEST, f"{method}: {exc}") from None
            raise

    def _need_ib(self) -> None:
        if self.user_disconnected:
            raise ServiceError(protocol.DISCONNECTED, "disconnected (press Connect)")

    def m_status(self, client) -> dict:
        """The session (Runtime.status), whether the user disconnected, the clients and their lines,
        the history pacer's counters (``history``: History.stats) and ``open_orders`` (the desk's
        working orders; None before the desk exists)."""
        with self._lock:
            clients = [c.describe() for c in self._clients.values()]
        out = dict(self.runtime.status())
        out.update({"user_disconnected": self.user_disconnected, "clients": clients, "service_pid": os.getpid(),
                    "uptime": round(time.time() - self.started, 1), "history": self.runtime.history.stats,
                    "open_orders": self._open_orders()})
        return out

    def _open_orders(self) -> int | None:
        desk = self.runtime._orders             # not the property: status must not create the desk
        if desk is None:
            return None
        from ..orders.facts import WORKING_STATUSES
        return int(desk.table()["Status"].isin(WORKING_STATUSES).sum())

    def m_connect(self, client, timeout: float = 10.0) -> dict:
        self._set_user_disconnected(False)
        self.runtime.connect(timeout)
        return self.m_status(client)

    def m_disconnect(self, client) -> dict:
        self._set_user_disconnected(True)
        self.runtime.disconnect()
        return self.m_status(client)

    def _set_user_disconnected(self, value: bool) -> None:
        """Every client learns it at once (topic ``session``): a formula cell then says "disconnected"
        instead of showing its last price as if it were live."""
        self.user_disconnected = value
        with self._lock:
            clients = list(self._clients.values())
        for c in clients:
            self._try_send(c, protocol.push("session", 0, {"user_disconnected": value}))

    def _hold(self, client: _Client, text: str) -> str:
        key = self.runtime.market.subscribe(text)
        with client.lock:
            gone = client.gone.is_set()
            if not gone:
                client.held[key] += 1
                client.fresh.add(key)
        if gone:                                        # dropped meanwhile: do not leak the line
            self.runtime.market.unsubscribe(key)
        return key

    def m_subscribe(self, client, texts: list[str]) -> list[str]:
        """Hold one more line user per text, for this client; returns the keys. Quote changes of held
        keys are pushed (topic ``quotes``)."""
        self._need_ib()
        return [self._hold(client, str(t)) for t in texts]

    def m_unsubscribe(self, client, keys: list[str]) -> None:
        """Drop one of this client's users per key (keys it does not hold are ignored)."""
        for key in keys:
            with client.lock:
                if client.held[key] <= 0:
                    continue
                client.held[key] -= 1
                if client.held[key] == 0:
                    del client.held[key]
                    client.quote_texts = {t: k for t, k in client.quote_texts.items() if k != key}
            self.runtime.market.unsubscribe(key)

    def _quote_of(self, client, text: str, timeout: float | None) -> dict:
        with client.first_hold:
            with client.lock:
                key = client.quote_texts.get(text)
            if key is None:
                key = self._hold(client, text)
                with client.lock:
                    client.quote_texts[text] = key
        return quote_record(self.runtime.wait_quote(key, timeout)) or {"symbol": key}

    def m_quote(self, client, text: str, timeout: float | None = None) -> dict:
        """The quote of ``text`` (fields of BoardQuote), waiting up to ``timeout`` s (default the Runtime's
        first_quote_wait) for the first price. The line stays held by this client (one user however
        often it is asked) until ``unsubscribe`` or the client goes."""
        self._need_ib()
        return self._quote_of(client, str(text), timeout)

    def m_quotes(self, client, texts: list[str], timeout: float | None = None) -> list[dict]:
        """:meth:`m_quote` for each text; an instrument that fails gives ``{"symbol": text, "error": msg}``."""
        self._need_ib()
        out = []
        for text in texts:
            try:
                out.append(self._quote_of(client, str(text), timeout))
            except Exception as exc:
                out.append({"symbol": str(text), "error": str(exc)})
        return out

    def m_history(self, client, text: str, duration: str = "1 D", bar_size: str = "1 min",
                  what_to_show: str = "TRADES", use_rth: bool = True, end=None, timeout: float | None = None,
                  progress: bool = False):
        """Bars (History.bars) as a table. ``end``: a datetime (UTC) or None for now. ``progress``: send
        the client a ``progress`` callback (``{"done", "total"}`` requests) as IB's answers arrive
        (a client that does not answer it does not stop the bars)."""
        self._need_ib()
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        if progress:
            def report(done: int, total: int) -> None:
                try:
                    self._ask(client, "progress", {"done": done, "total": total})
                except ServiceError as exc:
                    log.debug("history progress to client %s: %s", client.number, exc)
            kwargs["progress"] = report
        return self.runtime.history.bars(text, duration, bar_size, what_to_show, use_rth, end, **kwargs)

    def m_contract(self, client, text: str) -> dict:
        """``{"text": canonical text, "contract": {ibapi Contract fields}, "details": {ContractDetails fields}}``."""
        self._need_ib()
        details = self.runtime.contracts.qualify(text)
        plain = (str, int, float, bool, type(None))
        contract = {k: v for k, v in vars(details.contract).items() if isinstance(v, plain)}
        extra = {k: v for k, v in vars(details).items() if k != "contract" and isinstance(v, plain)}
        return {"text": self.runtime.contracts.describe(details), "contract": contract, "details": extra}

    def m_positions(self, client):
        self._need_ib()
        return self.runtime.positions()

    def m_account(self, client):
        """The account summary table; its ``account`` id is the first managed account (``status``)."""
        self._need_ib()
        return self.runtime.account_summary()

    def m_pnl(self, client, account: str | None = None):
        self._need_ib()
        return self.runtime.pnl(account)

    def m_order(self, client, ref: str) -> dict:
        return self.runtime.order(ref)

    def m_executions(self, client):
        self._need_ib()
        return self.runtime.executions()

    def m_analysis(self, client, pending: list[dict] | None = None, now=None, benchmark: str | None = None,
                   window_days: int | None = None) -> dict:
        """The analysis report (``Runtime.analysis``): ``{Table name: table}``. From now on the service
        also rebuilds it every ``record_interval`` seconds (the recorded days grow while it runs)."""
        self._need_ib()
        self.analysis_asked = True
        return self.runtime.analysis(pending, now=now, benchmark=benchmark, window_days=window_days)

    def m_option_expiries(self, client, underlying: str) -> list[str]:
        """Runtime.option_expiries: YYYYMMDD texts ("YYYYMMDD CLASS" where several classes list)."""
        self._need_ib()
        return self.runtime.option_expiries(str(underlying))

    def m_option_strikes(self, client, underlying: str, expiry=None) -> list[float]:
        self._need_ib()
        return self.runtime.option_strikes(str(underlying), expiry)

    def m_option_chain(self, client, underlying: str, expiry=None, strikes=None, stream: bool = True):
        """Runtime.option_chain's plan as a table; the budget is the service's (every client's lines)."""
        self._need_ib()
        return self.runtime.option_chain(str(underlying), expiry, strikes, bool(stream))

    # --- trading (TradingClient only) ------------------------------------------------------------------
    def m_configure_orders(self, client, config: dict | None) -> list[str]:
        """Apply a workbook's Config (tightening the user's limits) to the desk; returns the warnings for
        the keys ignored (``Runtime.configure_orders``)."""
        with self._orders_lock:
            return self.runtime.configure_orders(config)

    def m_place_orders(self, client, rows: list[dict], labels: list | None = None, followed: list | None = None,
                       source: str = "", config: dict | None = None, write_refs: bool = False) -> Any:
        """Place Orders Table rows (records; ``labels``: their index labels, the worksheet row numbers)
        through the one desk (``OrderDesk.place``) under the caller's workbook ``config`` (None: the
        user's settings as they stand). ``write_refs``: the client writes the Refs assigned to blank-Ref
        rows into its workbook (a ``write_refs`` callback, ``{"assigned": [[label, Ref], ...]}``) before
        any of those rows is sent; a client that refuses or fails sends none of them. ``followed``:
        labels of rows placed before. Returns the desk's result table (indexed by label, with Outcome).
        ``source`` names the caller (workbook and Table) and is part of each row's identity."""
        self._need_ib()
        import pandas as pd
        frame = pd.DataFrame.from_records(rows, index=labels if labels is not None else None)
        callback = None
        if write_refs:
            def callback(assigned: dict) -> None:
                self._ask(client, "write_refs", {"assigned": [[label, ref] for label, ref in assigned.items()]})
        log.info("place %d rows from %s (client %s)", len(rows), source or client.name, client.number)
        with self._orders_lock:
            if config is not None:
                self.runtime.configure_orders(config)
            return self.runtime.orders.place(frame, write_refs=callback, source=source, followed=followed or ())

    def m_modify(self, client, row: dict, config: dict | None = None) -> dict:
        self._need_ib()
        with self._orders_lock:
            if config is not None:
                self.runtime.configure_orders(config)
            return self.runtime.orders.modify(row)

    def m_cancel(self, client, refs: list[str] | str):
        """``OrderDesk.cancel``: the outputs by Ref with Outcome."""
        self._need_ib()
        return self.runtime.orders.cancel(refs)

    def m_cancel_all(self, client) -> None:
        """reqGlobalCancel through the desk."""
        self._need_ib()
        self.runtime.orders.cancel_all()

    def m_killed(self, client) -> bool:
        return bool(self.runtime.orders.killed)

    def m_order_table(self, client):
        """Every order the journal holds, indexed by Ref (``OrderDesk.table``)."""
        return self.runtime.orders.table()

    def m_audit(self, client):
        """The journal's audit trail (``addin.orders.audit.audit_frame``), Time in UTC. Raises the desk's
        journal fault when the journal cannot be read (an empty audit would mislead)."""
        return self.runtime.orders.audit("UTC")

    def m_kill(self, client) -> list[str]:
        """The kill switch: cancel this desk's working orders and refuse new ones until reset_kill."""
        return self.runtime.orders.kill()

    def m_reset_kill(self, client) -> None:
        self.runtime.orders.reset_kill()

    def m_shutdown(self, client) -> None:
        """Stop the service after this reply (lines cancelled, journal closed)."""
        threading.Timer(0.1, self.stop).start()


def default_address() -> Path | str:
    from .paths import socket_path
    return socket_path()


@contextlib.contextmanager
def embedded_service(runtime_factory: Callable[[], Any], **options):
    """A ServiceServer in this process on its own address and one-off key (a temporary folder, or a
    one-off pipe name on Windows), started and stopped around the block: ``ibxl demo`` and tests run
    the client path without touching the user's service. ``options``: more ServiceServer keyword
    arguments. Yields the started server (``address``, ``authkey``)."""
    import secrets
    import shutil
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="ibxl-"))          # short: socket paths are limited to ~100 bytes
    try:
        os.chmod(folder, 0o700)
        address: Path | str = folder / "service.sock"
        if os.name == "nt":
            address = f"{transport.PIPE_PREFIX}ibxl-embedded-{secrets.token_hex(8)}"
        with ServiceServer(runtime_factory, address, secrets.token_hex(32).encode(), **options) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)
