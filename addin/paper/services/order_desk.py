"""Orders at the paper gateway: decodes order requests, hands them to the broker and routes the
broker's events (open order, status, execution, commission, errors) back to the owning client.

Orders belong to the gateway, not to a socket: a client that drops and reconnects with the same
clientId finds its working orders, as at a real broker. Events for a client that is not connected
are not queued (TWS does not queue them either); the client asks again with reqOpenOrders,
reqCompletedOrders and reqExecutions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ibapi.contract import Contract
from ibapi.order import Order

from ...protocol import errors
from ..codec import messages, requests
from ..codec.order_codec import (
    decode_place_order,
    encode_completed_order,
    encode_completed_orders_end,
    encode_open_order,
)
from ..market import broker as brk
from ..market.option_instruments import OptionInstrument
from ..market.options import is_option_query

if TYPE_CHECKING:  # pragma: no cover
    from ..market.market import Instrument, Market
    from .connection import ClientConnection

    Resolve = Callable[[ClientConnection, int, Contract], "Instrument | None"]

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
OPEN_AUCTION = time(9, 30)
CLOSE_AUCTION = time(16, 0)
AUCTION_SEC_TYPES = brk.AUCTION_SEC_TYPES


def _crossed(before: datetime, now: datetime, at: time) -> bool:
    """True when ``at`` New York time (the US open or close) lies in (before, now]."""
    local = now.astimezone(NEW_YORK)
    for day in (local.date(), local.date() - timedelta(days=1)):
        moment = datetime.combine(day, at, NEW_YORK)
        if before < moment <= now:
            return True
    return False


@dataclass(frozen=True)
class ReceivedOrder:
    """What the gateway received in one placeOrder message (for tests: the gateway's side of the story)."""

    client_id: int
    order_id: int
    contract: Contract
    order: Order


class PaperOrderService:
    """placeOrder, cancels, open/completed orders, executions and order ids; routes the broker's events.

    broker: the orders, fills and accounts; market: the clock and instruments (the closing auction);
    resolve(conn, req_id, contract): the one instrument an order names, or None once IB's error went
    out; clients: the connected clients by clientId (the server's live registry: events go to the
    owner's current connection); on_account_change(account): a fill changed that account."""

    def __init__(self, broker: brk.Broker, market: "Market", resolve: "Resolve", *,
                 clients: "dict[int, ClientConnection]", on_account_change: Callable[[str], None]):
        self.broker = broker
        self.market = market
        self.resolve = resolve
        self.clients = clients
        self.on_account_change = on_account_change
        self.received: list[ReceivedOrder] = []
        self._next_ids: dict[int, int] = {}
        self._last_market: datetime | None = None
        self._options: dict[int, OptionInstrument] = {}    # conId -> the option instrument orders name

    def next_valid_id(self, client_id: int) -> int:
        nxt = max(self._next_ids.get(client_id, 1), self.broker.max_order_id(client_id) + 1)
        self._next_ids[client_id] = nxt
        return nxt

    # --- requests ---------------------------------------------------------------------------------
    def place_order(self, conn, fields) -> None:
        start = fields.pos
        try:
            order_id, contract, order = decode_place_order(fields, conn.client_version)
        except Exception as exc:   # noqa: BLE001 - any field the codec cannot read (ProtocolError, overflow)
            self._unreadable_order(conn, fields, start, exc)
            return
        self.received.append(ReceivedOrder(conn.client_id, order_id, contract, order))
        self._next_ids[conn.client_id] = max(self._next_ids.get(conn.client_id, 1), order_id + 1)
        inst = self._option(conn, order_id, contract) if is_option_query(contract) else \
            self.resolve(conn, order_id, contract)
        if inst is None:
            return
        self.route(self.broker.place(conn.client_id, order_id, inst, contract, order))

    def _option(self, conn, order_id: int, contract: Contract) -> "OptionInstrument | None":
        """The one listed option an order names (by conId, or a full contract: symbol, expiry, strike,
        right), or None after IB's error 200 (not listed, or a partial contract naming several)."""
        found = self.market.options.lookup(contract)
        if len(found) != 1:
            text = ("No security definition has been found for the request" if not found else
                    f"The contract description specified for {contract.symbol} is ambiguous.")
            conn.send_error(order_id, errors.NO_SECURITY_DEFINITION, text)
            return None
        details = found[0]
        inst = self._options.get(details.contract.conId)
        if inst is None:
            underlying = self.market.by_con_id(details.underConId)
            assert underlying is not None        # every option class is built on a universe instrument
            inst = self._options[details.contract.conId] = OptionInstrument(details, underlying, self.market.quote)
        return inst

    def _unreadable_order(self, conn, fields, start: int, exc: Exception) -> None:
        """A placeOrder the gateway cannot decode: 201 naming the order's id (its first field) so the
        client's order ends, as IB rejects an order it cannot accept; the connection stays up. Without
        a readable id, IB's 320 "Error reading request" with id -1."""
        reason = _clipped(str(exc) or type(exc).__name__)
        log.warning("client %s: unreadable placeOrder: %s", conn.client_id, reason)
        order_id = _leading_int(fields.items[start] if start < len(fields.items) else "")
        if order_id is None:
            conn.send_error(-1, errors.REQUEST_READ_ERROR, f"Error reading request: {reason}")
            return
        self._next_ids[conn.client_id] = max(self._next_ids.get(conn.client_id, 1), order_id + 1)
        conn.send_error(order_id, errors.ORDER_REJECTED,
                        f"{brk.TEXT_201}The order message could not be read: {reason}")

    def cancel_order(self, conn, fields) -> None:
        req = requests.cancel_order(fields)
        self.route(self.broker.cancel(conn.client_id, req.order_id, req.manual_order_cancel_time))

    def global_cancel(self, conn, fields) -> None:
        self.route(self.broker.global_cancel())

    def req_open_orders(self, conn, fields) -> None:
        self._send_open_orders(conn, self.broker.open_orders(conn.client_id))

    def req_all_open_orders(self, conn, fields) -> None:
        self._send_open_orders(conn, self.broker.open_orders(None))

    def req_auto_open_orders(self, conn, fields) -> None:
        fields.next_int("version")
        fields.next_bool("autoBind")
        if conn.client_id != 0:
            conn.send_error(-1, errors.AUTO_BIND_NOT_ALLOWED, "Only the default client (client id 0) can auto bind "
                                                              "orders.")
            return
        self._send_open_orders(conn, self.broker.open_orders(conn.client_id))

    def _send_open_orders(self, conn, rows) -> None:
        for contract, order, state in rows:
            conn.send(encode_open_order(order.orderId, contract, order, state, conn.client_version))
            status = self.broker.status_of(order.clientId, order.orderId)
            if status is not None:
                conn.send(_status_message(status))
        conn.send(messages.open_order_end())

    def req_completed_orders(self, conn, fields) -> None:
        for contract, order, state in self.broker.completed_orders():
            conn.send(encode_completed_order(contract, order, state, conn.client_version))
        conn.send(encode_completed_orders_end())

    def req_executions(self, conn, fields) -> None:
        req = requests.req_executions(fields)
        for contract, execution, report in self.broker.executions(conn.client_id, req.filter):
            conn.send(messages.execution_data(req.req_id, contract, execution))
            if report is not None:
                conn.send(messages.commission_report(report))
        conn.send(messages.execution_data_end(req.req_id))

    def req_ids(self, conn, fields) -> None:
        conn.send(messages.next_valid_id(self.next_valid_id(conn.client_id)))

    # --- market and events ------------------------------------------------------------------------
    def on_market(self) -> None:
        """Expire GTD orders and let working orders trade against the current quotes; run the opening
        auction (OPG) when the replay clock passes 09:30 New York time, the closing auction (MOC/LOC)
        when it passes 16:00."""
        now = self.market.now()
        events = list(self.broker.on_market())
        if self._last_market is not None:
            for at, auction in ((OPEN_AUCTION, self.broker.on_open), (CLOSE_AUCTION, self.broker.on_close)):
                if _crossed(self._last_market, now, at):
                    for inst in self.market.instruments:
                        if inst.contract.secType in AUCTION_SEC_TYPES:
                            events += auction(inst.con_id)
        self._last_market = now
        self.route(events)

    def route(self, events) -> None:
        """Send each broker event to the client that owns the order, in the broker's order."""
        clients = self.clients
        for ev in events:
            if isinstance(ev, brk.AccountChanged):
                self.on_account_change(ev.account)
                continue
            conn = clients.get(ev.client_id)
            if conn is None:
                continue
            if isinstance(ev, brk.OpenOrderEvent):
                conn.send(encode_open_order(ev.order_id, ev.contract, ev.order, ev.state, conn.client_version))
            elif isinstance(ev, brk.OrderStatusEvent):
                conn.send(_status_message(ev))
            elif isinstance(ev, brk.ExecutionEvent):
                conn.send(messages.execution_data(-1, ev.contract, ev.execution))
            elif isinstance(ev, brk.CommissionEvent):
                conn.send(messages.commission_report(ev.report))
            elif isinstance(ev, brk.ErrorEvent):
                conn.send_error(ev.req_id, ev.code, ev.text)


def _clipped(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _leading_int(text: str) -> int | None:
    """An order id field: a plain integer of at most 10 digits, else None."""
    text = text.strip()
    digits = text[1:] if text.startswith("-") else text
    return int(text) if digits.isdigit() and len(digits) <= 10 else None


def _status_message(ev) -> bytes:
    return messages.order_status(ev.order_id, ev.status, ev.filled, ev.remaining, ev.avg_fill_price,
                                 ev.perm_id, ev.parent_id, ev.last_fill_price, ev.client_id,
                                 ev.why_held, ev.mkt_cap_price)
