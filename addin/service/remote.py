"""RemoteRuntime: a workbook's (or ``ibxl run``'s) runtime when the user's ibxl service owns the IB
connection. It offers what macros, ``ibxl run`` and the UDFs use of ``addin.app.runtime.Runtime``,
so they run unchanged on either.

What stays in this process (``addin.app.workbook_side``): the formula cells, the lines they hold and
this workbook's pumps, painting from a QuoteBoard the service's pushes keep current. What the service
does: everything that talks to IB (session, contracts, market data lines and their budget, history
and its pacing, portfolio) and the one order desk with its risk view, journal and kill switch.

Two connections: ``reader``, opened read-only (quotes, formulas, reads: the connection behind a UDF,
which the service refuses any order method), and ``trading``, opened on the first order method a
macro or ``ibxl run`` calls. Order output changes arrive as pushes and reach the pumps and the
listeners of :attr:`orders`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

from ..app.workbook_side import WorkbookSide
from ..market.quotes import BoardQuote
from .client import ServiceClient, ServiceGone, TradingClient
from .protocol import DISCONNECTED, IB_ERROR, ServiceError

log = logging.getLogger(__name__)

__all__ = ["RemoteRuntime", "RemoteDesk"]


class _Market:
    """``rt.market`` over the service: the pushed board, one line per subscribe, a quote snapshot."""

    def __init__(self, rt: "RemoteRuntime"):
        self._rt = rt
        self.board = rt.board

    def subscribe(self, text: str) -> str:
        return self._rt._subscribe(text)

    def unsubscribe(self, key: str) -> None:
        self._rt._unsubscribe(key)

    def snapshot(self, text: str, timeout: float | None = None) -> BoardQuote:
        """The quote of ``text`` once priced (the line stays held by this process's reader)."""
        return self._rt.reader.quote(text, timeout)

    def lines_in_use(self) -> int:
        return int(self._rt.reader.status()["lines"])


class _Contracts:
    """``rt.contracts`` over the service: qualify -> an object shaped like ibapi's ContractDetails."""

    def __init__(self, client: ServiceClient):
        self._client = client

    def qualify(self, text: str):
        answer = self._client.contract(text)
        return SimpleNamespace(contract=SimpleNamespace(**answer["contract"]), **answer["details"])

    def describe(self, text: str) -> str:
        return self._client.contract(text)["text"]


class _History:
    """``rt.history`` over the service (its one pacer counts every client's requests)."""

    def __init__(self, client: ServiceClient):
        self._client = client

    def bars(self, instrument, duration: str = "1 D", bar_size: str = "1 min", what_to_show: str = "TRADES",
             use_rth: bool = True, end=None, timeout: float | None = None, progress=None, **_):
        """History.bars through the service; ``progress(done, total)`` as the service reports it."""
        return self._client.history(str(instrument), duration, bar_size, what_to_show, use_rth, end, timeout,
                                    progress=progress)

    @property
    def stats(self) -> dict:
        return self._client.status()["history"]


class RemoteDesk:
    """``rt.orders`` over the service: the service's one OrderDesk, with this workbook's Config applied
    to each place and modify. Same methods and results as ``addin.orders.desk.OrderDesk`` for what
    the macros and ``ibxl run`` use."""

    fault = None                     # the service raises its desk's journal fault with the call instead

    def __init__(self, rt: "RemoteRuntime"):
        self._rt = rt

    @property
    def _client(self) -> TradingClient:
        return self._rt.trading

    def place(self, rows, write_refs: Callable[[dict[Any, str]], None] | None = None, source: str = "",
              followed: Iterable = ()):
        return self._client.place_orders(rows, source=source, followed=list(followed), config=self._rt._config,
                                         write_refs=write_refs)

    def modify(self, row) -> dict:
        return self._client.modify(row, config=self._rt._config)

    def cancel(self, refs):
        return self._client.cancel(refs)

    def cancel_all(self) -> None:
        self._client.cancel_all()

    def kill(self) -> list[str]:
        return self._client.kill()

    def reset_kill(self) -> None:
        self._client.reset_kill()

    @property
    def killed(self) -> bool:
        return self._client.killed()

    def order(self, ref: str) -> dict:
        return self._rt.order(ref)

    def table(self):
        return self._client.order_table()

    def audit(self, tz=None):
        """The audit trail with Time in ``tz`` (the service sends it in UTC)."""
        import pandas as pd

        from ..orders.audit import resolve_zone
        zone = resolve_zone(tz)
        df = self._client.audit()
        df["Time"] = pd.to_datetime(df["Time"], utc=True).dt.tz_convert(zone)
        for column in ("OrderId", "PermId"):
            if column in df.columns:
                df[column] = df[column].astype("Int64")
        return df

    def add_listener(self, fn: Callable[[str, dict], None]) -> None:
        self._client.add_order_listener(fn)

    def remove_listener(self, fn: Callable[[str, dict], None]) -> None:
        self._client.remove_order_listener(fn)


def _plain(value):
    """A date argument as the protocol carries it (a date becomes its YYYYMMDD text; datetimes travel)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    return value


class RemoteRuntime(WorkbookSide):
    """The runtime of a process whose IB session lives in the ibxl service at ``address`` (default the
    user's), authenticated with ``authkey`` (default the user's key file). ``name`` says who this is
    in ``ibxl service status`` (a workbook's name, ``ibxl run``). Raises as ServiceClient when no
    service answers (``addin.service.launcher.remote_runtime`` starts one first)."""

    def __init__(self, address=None, authkey: bytes | None = None, *, name: str = "", first_quote_wait: float = 2.0):
        super().__init__(first_quote_wait)
        self._address, self._authkey, self._name = address, authkey, name or "workbook"
        self.reader = ServiceClient(address, authkey, name=f"{self._name} (formulas)")
        self.board = self.reader.board
        self.market = _Market(self)
        self.contracts = _Contracts(self.reader)
        self.history = _History(self.reader)
        self._trading: TradingClient | None = None
        self._config: dict | None = None
        self._lock = threading.RLock()
        self._desk = RemoteDesk(self)
        self.closed = False

    # --- lines (WorkbookSide) ------------------------------------------------------------------------
    def _subscribe(self, text: str) -> str:
        return self.reader.subscribe([text])[0]

    def _subscribe_many(self, texts: list[str]) -> list[str]:
        return self.reader.subscribe(texts) if texts else []

    def _check_not_disconnected(self) -> None:
        if self.reader.user_disconnected:
            raise ServiceError(DISCONNECTED, "disconnected (press Connect)")

    def _unsubscribe(self, key: str) -> None:
        try:
            self.reader.unsubscribe([key])
        except ServiceGone:
            pass                                   # the service released every line of this connection

    # --- connection ----------------------------------------------------------------------------------
    @property
    def trading(self) -> TradingClient:
        """The trading connection, opened on first use; order pushes feed this process's pumps."""
        with self._lock:
            if self._trading is None:
                self._trading = TradingClient(self._address, self._authkey, name=f"{self._name} (orders)")
                self._trading.add_order_listener(self._orders_changed)
            return self._trading

    def connect(self, timeout: float = 10.0) -> dict:
        """Connect the service to IB (ends a user's disconnect, for every client). Returns its status."""
        return self.reader.connect(timeout)

    def disconnect(self) -> None:
        """Disconnect the service from IB, for every client, until someone connects it."""
        self.reader.disconnect()

    @property
    def user_disconnected(self) -> bool:
        """Whether a user disconnected the service (kept current by its pushes: no round trip)."""
        return self.reader.user_disconnected

    def status(self) -> dict:
        """The service's status; ``pumps`` and ``formula_cells`` are this process's."""
        out = dict(self.reader.status())
        out.update(pumps=len(self._pumps), formula_cells=len(self.registry))
        return out

    def account(self) -> str:
        """The first managed account id. Raises ServiceError (IB 504) when none is known."""
        st = self.reader.status()
        if st["user_disconnected"]:
            raise ServiceError(DISCONNECTED, "disconnected (press Connect)")
        if not st["accounts"]:
            raise ServiceError(IB_ERROR, "Not connected: no managed accounts yet", 504)
        return st["accounts"].split(",")[0]

    # --- reads ---------------------------------------------------------------------------------------
    def positions(self):
        return self.reader.positions()

    def account_summary(self):
        return self.reader.account()

    def pnl(self, account: str | None = None):
        return self.reader.pnl(account)

    def executions(self):
        return self.reader.executions()

    def option_expiries(self, underlying: str) -> list[str]:
        """Runtime.option_expiries, answered by the service."""
        return self.reader._call("option_expiries", underlying=underlying)

    def option_strikes(self, underlying: str, expiry=None) -> list[float]:
        """Runtime.option_strikes, answered by the service."""
        return self.reader._call("option_strikes", underlying=underlying, expiry=_plain(expiry))

    def option_chain(self, underlying: str, expiry=None, strikes=None, stream: bool = True):
        """Runtime.option_chain, answered by the service (its line budget is every client's)."""
        return self.reader._call("option_chain", _timeout=120.0, underlying=underlying, expiry=_plain(expiry),
                                 strikes=strikes, stream=stream)

    def analysis(self, pending: list[dict] | None = None, now=None, benchmark: str | None = None,
                 window_days: int | None = None) -> dict:
        """The analysis report computed by the service (``Runtime.analysis``)."""
        return self.reader.analysis(pending, now=now, benchmark=benchmark, window_days=window_days)

    def order(self, ref: str) -> dict:
        """One order row's outputs by Ref. Raises KeyError for an unknown Ref."""
        try:
            return self.reader.order(ref)
        except ServiceError as exc:
            if exc.code == "not_found":
                raise KeyError(exc.message) from None
            raise

    # --- orders --------------------------------------------------------------------------------------
    @property
    def orders(self) -> RemoteDesk:
        return self._desk

    def configure_orders(self, workbook_config: dict | None) -> list[str]:
        """Apply this workbook's Config to its orders (tightening the service's limits for its calls);
        returns the warnings for the keys ignored."""
        self._config = dict(workbook_config or {})
        return self.trading.configure_orders(self._config)

    def add_order_listener(self, fn: Callable[[str, dict], None]) -> None:
        self._desk.add_listener(fn)

    # --- facade and lifecycle ------------------------------------------------------------------------
    def readonly(self):
        """The UDFs' facade (``ReadOnlyRuntime``): every method answered over the read-only connection."""
        from ..app.runtime import ReadOnlyRuntime
        with self._lock:
            if getattr(self, "_readonly", None) is None:
                self._readonly = ReadOnlyRuntime(self)
            return self._readonly

    def close(self) -> None:
        """Stop this process's pumps, release its lines, close both connections (the service and its
        IB session go on)."""
        if self.closed:
            return
        self.closed = True
        self.requests.close()
        self.stop_pump()
        self._release_all_cells()
        for client in (self._trading, self.reader):
            if client is not None:
                try:
                    client.close()
                except Exception:
                    log.debug("closing a service connection", exc_info=True)

    def __enter__(self) -> "RemoteRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
