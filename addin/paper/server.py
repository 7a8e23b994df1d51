"""The paper gateway's TWS API server: client registry, request dispatch, contract details.

Runs on one asyncio event loop, so every piece of gateway state (market subscriptions, the broker,
accounts) is touched by one thread only and needs no locks. Services own their concern:
``MarketDataService`` (quotes, tick-by-tick, streaming loop), ``HistoryService`` (bars, pacing),
``PaperOrderService`` (orders, executions) and ``PaperAccountService`` (positions, account values, P&L).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from dataclasses import dataclass
from datetime import datetime

from ibapi.contract import Contract

from ..protocol import errors
from ..protocol.messages import OUT
from .codec import messages, requests, wire
from .market.broker import Broker
from .market.market import Instrument, Market
from .market.options import is_option_query
from .services.account_desk import PaperAccountService
from .services.connection import ClientConnection, ConnectionEvents, ConnectionLimits, request_id
from .services.firehose import Firehose
from .services.historical import HistoryService
from .services.marketdata import MarketDataService
from .services.order_desk import PaperOrderService
from .services.reference import ReferenceService, continuous_future_details

log = logging.getLogger(__name__)

MAX_CLIENTS = 32          # TWS's "maximum API connection threshold": every open socket counts

# TWS's farm notices after START_API: informational, reqId -1.
FARM_NOTICES = (
    (errors.MARKET_DATA_FARM_OK, "Market data farm connection is OK:usfarm"),
    (errors.HMDS_FARM_OK, "HMDS data farm connection is OK:ushmds"),
    (errors.SEC_DEF_FARM_OK, "Sec-def data farm connection is OK:secdefnj"),
)

CONNECTIVITY_TEXT = {
    errors.CONNECTIVITY_LOST: "Connectivity between IB and Trader Workstation has been lost.",
    errors.RESTORED_DATA_LOST: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    errors.RESTORED_DATA_KEPT: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}


@dataclass
class GatewayConfig:
    """Everything that shapes one paper gateway. Units: seconds of real time unless said."""

    host: str = "127.0.0.1"
    port: int = 4002
    accounts: tuple[str, ...] = ("DU1234567",)
    seed: int = 1
    speed: float = 1.0                 # replayed seconds per real second; 0 freezes the clock
    start: datetime | None = None      # replay start (UTC); None = now
    synthetic: int = 0                 # SIM0001.. instruments (up to 2000)
    max_lines: int = 100               # market data lines per client (error 101 beyond)
    max_rate: int = 50                 # client messages per second (error 100 beyond)
    handshake_timeout: float = 10.0    # a socket that has not sent START_API by then is closed
    max_send_buffer: int = 8 * 1024 * 1024   # bytes of unread answers beyond which a client is dropped
    stream_interval: float = 0.1       # how often quotes are re-read and changes sent
    account_interval: float = 3.0      # how often subscribed account values and P&L are re-sent
    starting_cash: float = 1_000_000.0
    allow_remote: bool = False         # bind a non-loopback address only when asked explicitly
    firehose: bool = False             # benchmarks: send quote changes as fast as the socket takes them
    # Historical pacing windows run this many times faster than real time (tests only: 100 makes
    # IB's 10-minute window last 6 s). The rules themselves are unchanged.
    pacing_clock_rate: float = 1.0
    # "around-the-clock" (every replayed day trades all day; the tests' default) or "exchange" (the
    # weekday calendar: weekends and holidays closed; `ibxl paper`'s default). See docs/paper-market.md.
    hours: str = "around-the-clock"


class PaperServer:
    """The gateway itself. Create, then ``await start()`` on an event loop; ``await stop()`` ends it."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.market = Market(seed=config.seed, speed=config.speed, start=config.start,
                             synthetic=config.synthetic, hours=config.hours)
        self.broker = Broker(list(config.accounts), quote=self.market.quote, now=self.market.now,
                             starting_cash=config.starting_cash, instrument=self.market.by_con_id,
                             calendar=self.market.calendar, fx_pairs=self.market.instruments)
        self.connections: set[ClientConnection] = set()
        self.clients: dict[int, ClientConnection] = {}
        # Each service gets only what it uses; the few calls between services are callbacks wired here.
        self.marketdata = MarketDataService(self.market, self.resolve, max_lines=config.max_lines,
                                            stream_interval=config.stream_interval, after_pump=self._after_pump)
        self.history = HistoryService(self.market, self.resolve, pacing_clock_rate=config.pacing_clock_rate)
        self.accounts = PaperAccountService(self.broker, self.market.now, accounts=config.accounts,
                                            account_interval=config.account_interval)
        self.reference = ReferenceService(self.market, config.accounts)
        self.orders = PaperOrderService(self.broker, self.market, self.resolve, clients=self.clients,
                                        on_account_change=self.accounts.on_change)
        self._events = ConnectionEvents(refusing=self.refusing, opened=self.connections.add,
                                        started=self.on_start_api, request=self.dispatch,
                                        closed=self.on_disconnect, error_sent=self._count_error)
        self.errors_sent: collections.Counter[int] = collections.Counter()   # IB error code -> times sent
        self.answer_delay = 0.0
        self.last_firehose: Firehose | None = None      # the running or latest firehose (its stats)
        self._refuse_until = 0.0
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._handlers = self._handler_table()

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        limits = ConnectionLimits(max_rate=self.config.max_rate, handshake_timeout=self.config.handshake_timeout,
                                  max_send_buffer=self.config.max_send_buffer)
        self._server = await loop.create_server(lambda: ClientConnection(self._events, limits), self.config.host,
                                                self.config.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(self.marketdata.run(), name="paper-stream"),
                       asyncio.create_task(self.accounts.run(), name="paper-accounts")]
        if self.config.firehose:
            self.start_firehose()
        log.info("paper gateway listening on %s:%d", self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        self.stop_firehose()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def refusing(self) -> str | None:
        """Why a new socket is closed on accept, or None. Beyond MAX_CLIENTS open sockets (started or
        not) TWS completes no handshake: ibapi reports 502, whose text names "the maximum API
        connection threshold (default 32)"."""
        if asyncio.get_running_loop().time() < self._refuse_until:
            return "fault: refuse connections"
        if len(self.connections) >= MAX_CLIENTS:
            return f"{MAX_CLIENTS} connections already open"
        return None

    # --- connection events ------------------------------------------------------------------------
    def on_start_api(self, conn: ClientConnection, client_id: int, capabilities: str) -> None:
        if client_id in self.clients and self.clients[client_id].state != "closed":
            conn.send_error(-1, errors.CLIENT_ID_IN_USE, "Unable to connect as the client id is already in use. "
                                                         "Retry with a unique client id.")
            conn.close()
            return
        if len(self.clients) >= MAX_CLIENTS:
            log.warning("refusing client %d: %d clients already connected", client_id, MAX_CLIENTS)
            conn.send_error(-1, errors.MAX_RATE_EXCEEDED, f"Max number of API clients ({MAX_CLIENTS}) reached")
            conn.close()
            return
        conn.client_id = client_id
        conn.state = "started"
        self.clients[client_id] = conn
        conn.send(messages.managed_accounts(list(self.config.accounts)))
        conn.send(messages.next_valid_id(self.orders.next_valid_id(client_id)))
        for code, text in FARM_NOTICES:
            conn.send_error(-1, code, text)
        log.info("client %d connected from %s (version %d)", client_id, conn.peer, conn.client_version)

    def _count_error(self, code: int) -> None:
        self.errors_sent[code] += 1

    def on_disconnect(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if conn.client_id is not None and self.clients.get(conn.client_id) is conn:
            del self.clients[conn.client_id]
            log.info("client %d disconnected", conn.client_id)
        self.marketdata.drop_connection(conn)
        self.history.drop_connection(conn)
        self.accounts.drop_connection(conn)

    # --- dispatch ---------------------------------------------------------------------------------
    def _handler_table(self):
        md, hist, od, acct = self.marketdata, self.history, self.orders, self.accounts
        return {
            **self.reference.handlers(),    # reference data, refusals, silent cancels (the entries below win)
            OUT.REQ_MKT_DATA: md.req_mkt_data, OUT.CANCEL_MKT_DATA: md.cancel_mkt_data,
            OUT.REQ_MARKET_DATA_TYPE: md.req_market_data_type,
            OUT.REQ_TICK_BY_TICK_DATA: md.req_tick_by_tick, OUT.CANCEL_TICK_BY_TICK_DATA: md.cancel_tick_by_tick,
            OUT.REQ_REAL_TIME_BARS: md.realtime_bars.req_real_time_bars,
            OUT.CANCEL_REAL_TIME_BARS: md.realtime_bars.cancel_real_time_bars,
            OUT.REQ_MKT_DEPTH: md.depth.req_mkt_depth, OUT.CANCEL_MKT_DEPTH: md.depth.cancel_mkt_depth,
            OUT.REQ_MKT_DEPTH_EXCHANGES: md.depth.req_mkt_depth_exchanges,
            OUT.REQ_HISTORICAL_DATA: hist.req_historical_data, OUT.CANCEL_HISTORICAL_DATA: hist.cancel_historical_data,
            OUT.REQ_HISTORICAL_TICKS: hist.req_historical_ticks,
            OUT.REQ_HEAD_TIMESTAMP: hist.req_head_timestamp,
            OUT.PLACE_ORDER: od.place_order, OUT.CANCEL_ORDER: od.cancel_order, OUT.REQ_GLOBAL_CANCEL: od.global_cancel,
            OUT.REQ_OPEN_ORDERS: od.req_open_orders, OUT.REQ_ALL_OPEN_ORDERS: od.req_all_open_orders,
            OUT.REQ_AUTO_OPEN_ORDERS: od.req_auto_open_orders, OUT.REQ_COMPLETED_ORDERS: od.req_completed_orders,
            OUT.REQ_EXECUTIONS: od.req_executions, OUT.REQ_IDS: od.req_ids,
            OUT.REQ_POSITIONS: acct.req_positions, OUT.CANCEL_POSITIONS: acct.cancel_positions,
            OUT.REQ_ACCOUNT_SUMMARY: acct.req_account_summary, OUT.CANCEL_ACCOUNT_SUMMARY: acct.cancel_account_summary,
            OUT.REQ_ACCT_DATA: acct.req_account_updates,
            OUT.REQ_ACCOUNT_UPDATES_MULTI: acct.req_account_updates_multi,
            OUT.CANCEL_ACCOUNT_UPDATES_MULTI: acct.cancel_account_updates_multi,
            OUT.REQ_POSITIONS_MULTI: acct.req_positions_multi, OUT.CANCEL_POSITIONS_MULTI: acct.cancel_positions_multi,
            OUT.REQ_PNL: acct.req_pnl, OUT.CANCEL_PNL: acct.cancel_pnl,
            OUT.REQ_PNL_SINGLE: acct.req_pnl_single, OUT.CANCEL_PNL_SINGLE: acct.cancel_pnl_single,
            OUT.REQ_CONTRACT_DATA: self.req_contract_details, OUT.REQ_CURRENT_TIME: self.req_current_time,
        }

    def dispatch(self, conn: ClientConnection, msg_id: int, fields: wire.Fields) -> None:
        handler = self._handlers.get(msg_id)
        if handler is None:
            # Nobody serves it: IB's error for it (and a log line), never silence.
            handler = functools.partial(self.reference.unhandled, msg_id)
        if self.answer_delay > 0:
            # Fault: answer late, in arrival order.
            asyncio.get_running_loop().call_later(self.answer_delay, self._run, handler, conn, msg_id, fields)
        else:
            self._run(handler, conn, msg_id, fields)

    def _run(self, handler, conn, msg_id, fields) -> None:
        if conn.state == "closed":
            return
        try:
            handler(conn, fields)
        except wire.ProtocolError as exc:
            # IB answers 320 "Error reading request" and keeps the connection; the error names the
            # request when its id could be read, so that the client's pending request fails at once.
            log.warning("client %s: malformed message %d: %s", conn.client_id, msg_id, exc)
            conn.send_error(request_id(msg_id, fields), errors.REQUEST_READ_ERROR, f"Error reading request: {exc}")
        except Exception:  # a gateway bug must not take the connection down silently
            log.exception("client %s: error handling message %d", conn.client_id, msg_id)
            conn.send_error(request_id(msg_id, fields), errors.REQUEST_READ_ERROR,
                            f"Error reading request: message {msg_id} could not be handled")

    # --- shared helpers ---------------------------------------------------------------------------
    def resolve(self, conn: ClientConnection, req_id: int, contract: Contract) -> Instrument | None:
        """The one instrument a request names, or None after sending IB's error 200."""
        found = self.market.lookup(contract)
        if len(found) == 1:
            return found[0]
        if not found:
            conn.send_error(req_id, errors.NO_SECURITY_DEFINITION, "No security definition has been found for "
                                                                   "the request")
        else:
            conn.send_error(req_id, errors.NO_SECURITY_DEFINITION, f"The contract description specified for "
                                                                   f"{contract.symbol} is ambiguous.")
        return None

    def _after_pump(self, now) -> None:
        """After each streaming step: working orders trade against the new quotes, keepUpToDate bars
        advance."""
        self.orders.on_market()
        self.history.pump(now)

    def broadcast(self, data: bytes) -> None:
        for conn in list(self.clients.values()):
            conn.send(data)

    # --- simple requests --------------------------------------------------------------------------
    def req_contract_details(self, conn: ClientConnection, fields: wire.Fields) -> None:
        req = requests.req_contract_details(fields)
        found = continuous_future_details(self.market, req.contract)     # CONTFUT: the front month
        if found is None and is_option_query(req.contract):
            found = self.market.options.lookup(req.contract)                # OPT: every listed match
        if found is None:
            found = [inst.details for inst in self.market.lookup(req.contract)]
        if not found:
            conn.send_error(req.req_id, errors.NO_SECURITY_DEFINITION,
                            "No security definition has been found for the request")
            return
        for details in found:
            conn.send(messages.contract_data(req.req_id, details))
        conn.send(messages.contract_data_end(req.req_id))

    def req_current_time(self, conn: ClientConnection, fields: wire.Fields) -> None:
        conn.send(messages.current_time(int(self.market.now().timestamp())))

    # --- firehose (benchmarks) ---------------------------------------------------------------------
    def start_firehose(self, rate: float | None = None, count: int | None = None,
                       record: bool = False, end: float | None = None) -> Firehose:
        """Replace the quote stream by a firehose (see ``firehose.py``); a running one is stopped."""
        self.stop_firehose()
        hose = self.marketdata.firehose = self.last_firehose = Firehose(
            self.marketdata, self.market.quote, rate=rate, count=count, record=record,
            **({} if end is None else {"end": end}))
        hose.start()
        return hose

    def stop_firehose(self) -> Firehose | None:
        """Stop the running firehose (the normal quote stream resumes); returns it, or None."""
        hose = self.marketdata.firehose
        if hose is not None:
            hose.stop()
        return hose

    # --- faults -----------------------------------------------------------------------------------
    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()

    def refuse_for(self, seconds: float) -> None:
        self._refuse_until = asyncio.get_running_loop().time() + seconds

    def connectivity(self, code: int) -> None:
        """Send 1100, 1101 or 1102 to every client; 1101 (data lost) also drops market data lines."""
        self.broadcast(messages.error(-1, code, CONNECTIVITY_TEXT[code]))
        if code == errors.RESTORED_DATA_LOST:
            self.marketdata.drop_all_subscriptions()
            self.history.drop_all_subscriptions()
