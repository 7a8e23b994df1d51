"""The one process-wide runtime: the IB session and everything built on it, shared by UDFs, macros,
the pump(s) and ``ibxl run``.

``get_runtime()`` creates it lazily (thread-safe; connection settings from ``addin.config`` when
that module is present, else the environment: IBXL_HOST, IBXL_PORT, IBXL_CLIENT_ID, defaults
127.0.0.1:4002 client 1) and connects; ``shutdown_runtime()`` ends it. Tests and the CLI construct
one explicitly: ``Runtime(host, port, client_id)``.

A Runtime owns: ``session`` (Session), ``contracts`` (ContractBook), ``market`` (MarketData and its
QuoteBoard), ``history`` (History), ``portfolio`` (Portfolio), ``registry`` (the formula
RecalcRegistry), the pumps (one per workbook) and, created on first use, ``orders`` (the OrderDesk,
``addin.orders.desk``). UDFs never see the Runtime: they get ``runtime.readonly()``, a facade with only
reading methods (no session, no OrderDesk, nothing that can place, modify or cancel an order).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..account.greeks import PositionGreeks
from ..account.portfolio import Portfolio
from ..ib.contracts import ContractBook
from ..ib.session import IBError, Session
from ..market.chain import OptionChains
from ..market.history import History
from ..market.quotes import MarketData
from ..protocol.errors import NOT_CONNECTED
from .workbook_side import WorkbookSide

log = logging.getLogger(__name__)

__all__ = ["UserDisconnected", "Runtime", "ReadOnlyRuntime", "get_runtime", "shutdown_runtime", "set_runtime",
           "use_service", "READ_ONLY_METHODS"]


DISCONNECTED_TEXT = "disconnected (press Connect)"


class UserDisconnected(ConnectionError):
    """The user pressed Disconnect: nothing reconnects until Connect."""

    def __init__(self, message: str = DISCONNECTED_TEXT):
        super().__init__(message)

    def cell_text(self) -> str:
        return f"#IBXL: {self}"


class Runtime(WorkbookSide):
    """Session, contracts, market data, history, portfolio, orders, formula registry and pumps.

    host, port, client_id: where TWS / IB Gateway / the paper gateway listens. market_data_type:
    "live", "frozen", "delayed" or "delayed-frozen" (None: leave IB's default, live). max_lines:
    market data line budget. settings: an ``addin.config.Settings`` for the OrderDesk (None: loaded
    with ``addin.config.load_settings()`` when the desk is first needed). journal_path: the order
    journal's SQLite file (None: the OrderDesk's default). first_quote_wait: seconds
    :meth:`wait_quote` waits for the first tick of a new line (worksheet functions never wait).
    pacing_clock_rate: the history pacing clock's speed (1.0 for IB; tests run the paper gateway's
    faster, see ``addin.market.history.PacingScheduler``). session_options: more ``Session`` keyword
    arguments.
    Nothing connects until :meth:`connect`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4002, client_id: int = 1, *,
                 market_data_type: str | None = None, max_lines: int = 100, settings=None,
                 journal_path=None, first_quote_wait: float = 2.0, pacing_clock_rate: float = 1.0,
                 **session_options):
        super().__init__(first_quote_wait)
        self.session = Session(host, port, client_id, **session_options)
        self.contracts = ContractBook(self.session)
        self.market = MarketData(self.session, self.contracts, max_lines=max_lines)
        self.board = self.market.board
        self.history = History(self.session, self.contracts, pacing_clock_rate=pacing_clock_rate)
        self.chains = OptionChains(self.session, self.contracts, self.market)
        self.portfolio = Portfolio(self.session)
        self.greeks = PositionGreeks(self.market, self.contracts)
        self.market_data_type = market_data_type
        self.settings = settings
        self.journal_path = journal_path
        self._lock = threading.RLock()
        self._orders = None
        self._order_settings = None                    # settings tightened by the workbook
        self._order_listeners: list[Callable[[str, dict], None]] = [self._orders_changed]
        self.user_disconnected = False                 # Disconnect pressed: nothing reconnects until Connect
        self._watches: dict[str, Any] = {}
        self._readonly: ReadOnlyRuntime | None = None
        self.closed = False

    # --- connection -------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0):
        """Connect (no-op when connected); ends a user's :meth:`disconnect`. Returns the SessionStatus.
        Raises IBError (502 could not connect, 326 client id in use, ...)."""
        self.user_disconnected = False
        if self.session.connected:
            return self.session.status
        status = self.session.connect(timeout)
        if self.market_data_type:
            self.market.set_market_data_type(self.market_data_type)
        return status

    def disconnect(self) -> None:
        """Disconnect the session (lines, watches and pumps stay set up; ``connect`` restores). Until
        :meth:`connect`, ``get_runtime()`` does not reconnect on its own."""
        self.user_disconnected = True
        self.session.disconnect()

    def status(self) -> dict:
        """``{state, host, port, client_id, accounts, paper, server_version, lines, pumps, formula_cells,
        last_error}``: the session's state in words and numbers."""
        st = self.session.status
        return {"state": st.state, "host": st.host, "port": st.port, "client_id": st.client_id,
                "accounts": ",".join(st.accounts), "paper": st.paper, "server_version": st.server_version,
                "lines": self.market.lines_in_use(), "pumps": len(self._pumps), "formula_cells": len(self.registry),
                "last_error": str(st.last_error) if st.last_error else ""}

    def account(self) -> str:
        """The first managed account id. Raises IBError 504 when none is known (not connected)."""
        accounts = self.session.status.accounts
        if not accounts:
            raise IBError(NOT_CONNECTED, "Not connected: no managed accounts yet")
        return accounts[0]

    def _subscribe(self, text: str) -> str:
        return self.market.subscribe(text)

    def _check_not_disconnected(self) -> None:
        if self.user_disconnected:
            raise UserDisconnected()

    def _unsubscribe(self, key: str) -> None:
        try:
            self.market.unsubscribe(key)
        except KeyError:
            pass

    # --- portfolio reads (kept live once asked for) ---------------------------------------------------
    def _watch(self, name: str, start: Callable[[], Any]) -> None:
        with self._lock:
            if name in self._watches:
                return
            self._watches[name] = start()

    def positions(self):
        """Positions DataFrame: ``Portfolio.positions``' columns, kept live after the first call (the other
        accounts' reqPnLSingle and account values too, which fill their prices, values and weights), and
        the greeks of ``addin.account.greeks`` (underlying, delta, gamma, vega, theta, delta_dollars: per
        position, from IB's model greeks on a line per option held, which stays open while it is held).
        Raises what ``Portfolio.positions`` raises."""
        self._watch("positions", self.portfolio.watch_positions)
        df = self.portfolio.positions()
        portfolio_account = self.portfolio._portfolio_account()
        others = df[(df["account"] != portfolio_account) & (df["position"] != 0)]
        for account, con_id in zip(others["account"], others["con_id"]):
            self._watch(f"values {account}", lambda a=account: self.portfolio.watch_account_values(a))
            self._watch(f"pnl_single {account} {con_id}",
                        lambda a=account, c=int(con_id): self.portfolio.watch_pnl_single(a, c))
        return self.greeks.add(df)

    def analysis(self, pending: list[dict] | None = None, now=None, benchmark: str | None = None,
                 window_days: int | None = None) -> dict:
        """The portfolio analysis report, ``{Table name: DataFrame}`` with the columns of
        ``addin.excel.layout.ANALYSIS_COLUMNS`` (``addin.app.analysis_data.analysis_report``): exposure,
        concentration, per-position P&L and risk, correlation, recorded P&L and VaR days, and the what-if
        of ``pending`` (Orders Table rows as dicts; rows with a Status are ignored). Amounts in the base
        currency. Raises AnalysisError (a ValueError naming the account, row or conId), IBError,
        RequestTimeout."""
        from .analysis_data import analysis_report
        return analysis_report(self, pending, now=now, benchmark=benchmark, window_days=window_days)

    def account_summary(self):
        """Account summary DataFrame (``Portfolio.account_summary``), kept live after the first call."""
        self._watch("summary", self.portfolio.watch_account_summary)
        return self.portfolio.account_summary()

    def pnl(self, account: str | None = None):
        """P&L DataFrame of ``account`` (default the first managed account), kept live."""
        account = account or self.account()
        self._watch(f"pnl {account}", lambda: self.portfolio.watch_pnl(account))
        return self.portfolio.pnl(account)

    # --- options (addin.market.chain) ---------------------------------------------------------------
    def option_expiries(self, underlying: str) -> list[str]:
        """The expiries IB lists on ``underlying`` from today (New York) on, YYYYMMDD ascending
        (reqSecDefOptParams, cached for the day); where IB lists several trading classes (SPX and SPXW,
        ES and EW1..EW5) each text is "YYYYMMDD CLASS", one per class listing that date. Raises ValueError
        naming ``underlying`` when IB knows no such instrument (with IB's code) or lists no options on it,
        IBError for IB's other refusals."""
        return self.chains.expiries(underlying)

    def option_strikes(self, underlying: str, expiry=None) -> list[float]:
        """The strikes listed on ``underlying``'s expiry ``expiry`` (a date, next, monthly, +30d; see
        ``addin.market.chain``), ascending. Raises as :meth:`option_expiries`, ValueError naming ``expiry``."""
        return self.chains.strikes(underlying, expiry)

    def option_chain(self, underlying: str, expiry=None, strikes=None, stream: bool = True):
        """The plan of a chain (``addin.market.chain.PLAN_COLUMNS``: one row per strike, the options'
        texts, which rows stream within half the free lines (``stream`` False: none, every row a
        snapshot), the snapshot rows' values). Hold the streaming texts (``chain.plan_texts``) and show
        it with ``chain.chain_table``. Raises ValueError naming ``expiry`` / ``strikes`` /
        ``underlying``, IBError for IB's refusals."""
        return self.chains.plan(underlying, expiry, strikes, stream=stream)

    def executions(self):
        return self.portfolio.executions()

    def account_values(self):
        return self.portfolio.account_values()

    def open_orders(self):
        return self.portfolio.open_orders()

    # --- orders --------------------------------------------------------------------------------------
    @property
    def orders(self):
        """The OrderDesk (``addin.orders.desk``), created on first use with the settings (tightened by
        the workbook's Config, see :meth:`configure_orders`) and the journal (``journal_path``,
        default ``journal.sqlite3`` next to the user's config file). Raises RuntimeError when
        addin.orders.desk is not installed, ConfigError for a bad config file."""
        with self._lock:
            if self._orders is None:
                self._orders = self._new_desk(self._order_settings or self._base_settings())
            return self._orders

    def _base_settings(self):
        if self.settings is None:
            from ..config import load_settings
            self.settings = load_settings()
        return self.settings

    def _new_desk(self, settings):
        try:
            from ..orders.desk import OrderDesk
        except ImportError as exc:
            raise RuntimeError(f"order entry is not available: {exc}") from exc
        path = self.journal_path
        if path is None:
            from ..config import journal_path
            path = journal_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
        desk = OrderDesk(self.session, self.contracts, self.market, self.portfolio, settings, path)
        for fn in self._order_listeners:
            desk.add_listener(fn)
        return desk

    def add_order_listener(self, fn: Callable[[str, dict], None]) -> None:
        """``fn(ref, outputs)`` on every order status, fill or commission change (the OrderDesk's
        listener; kept when the desk is re-created by :meth:`configure_orders`)."""
        with self._lock:
            self._order_listeners.append(fn)
            desk = self._orders
        if desk is not None:
            desk.add_listener(fn)

    def configure_orders(self, workbook_config: dict | None) -> list[str]:
        """Apply a workbook Config sheet (``{key: value}``) to the order limits: the user's settings
        tightened by it (never loosened, ``Settings.tighten``). When the result differs from what
        the desk runs with, the desk is re-created with it (the journal carries every order over).
        Returns the warnings for the keys ignored."""
        settings, warnings = self._base_settings().tighten(workbook_config or {})
        with self._lock:
            current = self._orders.settings if self._orders is not None else self._order_settings
            if settings != current:
                self._order_settings = settings
                old, self._orders = self._orders, None
                if old is not None:
                    old.close()
        return warnings

    def order(self, ref: str) -> dict:
        """One order row's outputs by Ref: from the OrderDesk when it exists, else from IB's open
        orders (``order_ref``). Raises KeyError for an unknown Ref."""
        with self._lock:
            desk = self._orders
        if desk is not None:
            return desk.order(ref)
        df = self.portfolio.open_orders()
        hit = df[df["order_ref"] == ref]
        if hit.empty:
            raise KeyError(f"no order with Ref {ref!r} (not placed from this workbook session, or not working)")
        row = hit.iloc[-1]
        return {"Ref": ref, "Status": row["status"], "OrderId": int(row["order_id"]), "PermId": int(row["perm_id"]),
                "Filled": float(row["filled"]), "Remaining": float(row["remaining"]),
                "AvgFillPrice": float(row["avg_fill_price"])}

    # --- facade and lifecycle -----------------------------------------------------------------------
    def readonly(self) -> "ReadOnlyRuntime":
        """The facade UDFs get: reading methods only."""
        with self._lock:
            if self._readonly is None:
                self._readonly = ReadOnlyRuntime(self)
            return self._readonly

    def close(self) -> None:
        """Stop the pumps, close the OrderDesk, market data, history, portfolio; disconnect."""
        if self.closed:
            return
        self.closed = True
        self.requests.close()
        self.stop_pump()
        with self._lock:
            desk, self._orders = self._orders, None
        if desk is not None:
            try:
                desk.close()
            except Exception:
                log.exception("closing the order desk")
        try:
            self.greeks.close()
        except Exception:
            log.exception("closing the greeks' quote lines")
        for part in (self.history, self.portfolio):
            try:
                part.close()
            except Exception:
                log.exception("closing %s", type(part).__name__)
        try:
            self.market.close(timeout=2.0)
        except Exception:
            log.exception("closing market data")
        self.session.disconnect()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# What a worksheet function may do: read. Nothing here reaches the session or the OrderDesk. (``request``
# runs the caller's work in the background: a UDF's work only ever holds this facade.)
READ_ONLY_METHODS = ("hold_quotes", "hold_quotes_soon", "quote", "request", "wait_quote", "qualify", "describe",
                     "bars", "positions", "account_summary", "pnl", "order", "status", "account", "analysis",
                     "option_expiries", "option_strikes", "option_chain")


class ReadOnlyRuntime:
    """The UDFs' view of the Runtime: the methods in READ_ONLY_METHODS and nothing else (no session,
    no OrderDesk, no pump, no way to reach them through an attribute). Immutable."""

    __slots__ = READ_ONLY_METHODS

    def __init__(self, runtime: Runtime):
        def wrap(fn):
            def reader(*args, **kwargs):
                return fn(*args, **kwargs)
            reader.__doc__ = fn.__doc__
            return reader
        sources = {"qualify": runtime.contracts.qualify, "describe": runtime.contracts.describe,
                   "bars": runtime.history.bars}
        for name in READ_ONLY_METHODS:
            object.__setattr__(self, name, wrap(sources.get(name) or getattr(runtime, name)))

    def __setattr__(self, name, value):
        raise AttributeError("the read-only runtime cannot be changed")


# --- the process-wide instance ------------------------------------------------------------------------
_instance: Runtime | None = None
_instance_lock = threading.Lock()


def use_service(settings=None) -> bool:
    """Whether this process's runtime is a client of the user's ibxl service: ``$IBXL_SERVICE`` (0/1)
    when set, else the config file's ``[connection] service`` (default true)."""
    env = os.environ.get("IBXL_SERVICE", "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    if settings is None:
        from ..config import load_settings
        settings = load_settings()
    return bool(settings.connection.service)


def _new_runtime():
    """The process-wide runtime: a RemoteRuntime of the user's ibxl service (started when none runs),
    or an in-process Runtime when the service is turned off."""
    options = _default_connection()
    if use_service(options.get("settings")):
        from ..service.launcher import remote_runtime
        return remote_runtime(name=_process_name())
    return Runtime(**options)


def _process_name() -> str:
    """Who this process is, for ``ibxl service status``: the workbook xlwings started it for, if any."""
    args = " ".join(sys.argv[1:])
    return f"pid {os.getpid()}" + (f" {args[:80]}" if args else "")


def _default_connection() -> dict:
    try:
        from ..config import load_settings
    except ImportError:
        return {"host": os.environ.get("IBXL_HOST", "127.0.0.1"), "port": int(os.environ.get("IBXL_PORT", "4002")),
                "client_id": int(os.environ.get("IBXL_CLIENT_ID", "1"))}
    s = load_settings()
    c = s.connection
    return {"host": c.host, "port": int(c.port), "client_id": int(c.client_id),
            "market_data_type": getattr(c, "market_data_type", None), "settings": s}


def get_runtime(connect: bool = True):
    """The process-wide runtime, created on first use (thread-safe): a ``RemoteRuntime`` over the user's
    ibxl service (:func:`use_service`), else a Runtime of this process, connected when ``connect``.
    Raises IBError when it cannot connect (the Runtime stays, a later call tries again),
    UserDisconnected after the user's Disconnect (until Connect)."""
    global _instance
    with _instance_lock:
        if _instance is None or _instance.closed:
            _instance = _new_runtime()
        rt = _instance
    if not isinstance(rt, Runtime):
        return rt                    # the service connects itself; a user's disconnect is its answer
    if connect and not rt.session.connected:
        if rt.user_disconnected:
            raise UserDisconnected()
        with _instance_lock:
            if not rt.session.connected and rt.session.status.state != "reconnecting":
                rt.connect()
    return rt


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install ``runtime`` as the process-wide one (tests, ``ibxl run``); returns the previous one."""
    global _instance
    with _instance_lock:
        previous, _instance = _instance, runtime
    return previous


def shutdown_runtime() -> None:
    """Close the process-wide Runtime, if any."""
    global _instance
    with _instance_lock:
        rt, _instance = _instance, None
    if rt is not None:
        rt.close()
