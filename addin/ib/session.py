"""The background IB session: one ibapi EClient/EWrapper per process, its threads, connect and
reconnect, request ids, futures with timeouts and the outbound pacer.

Threads (all daemon, all ended by ``disconnect``):
- ``ibxl-io``: the pacer. Sends every outbound message first in first out, at most ``rate`` per
  second, evenly spaced (never more than ``rate`` in any one-second window), and expires request
  timeouts.
- ``ibxl-msg``, one per connection: reads the socket, frames and decodes every message and runs our
  callbacks, in arrival order (``addin.ib.fast_reader.FastClient``: no EReader, no queue hop; the hot
  messages decoded directly, the rest by ibapi's Decoder). With ``fast_reader=False`` (or the
  environment variable ``IBXL_FAST_READER=0``) ibapi's own ``EReader`` + ``EClient.run`` pair instead.
- ``ibxl-reconnect``: only while reconnecting after a dropped socket.

Everything else in addin talks to IB through this module: :meth:`Session.submit` a
:class:`Request` (answers arrive by reqId and resolve its future), :meth:`Session.send` a
fire-and-forget message, :attr:`Session.events` (``addin.ib.events``) for callbacks that carry no
reqId (orders, positions, account updates). Nothing else calls ibapi.
"""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ibapi.client import EClient
from ibapi.commission_and_fees_report import CommissionAndFeesReport
from ibapi.common import BarData, HistogramData, TickAttrib, TickAttribBidAsk, TickAttribLast
from ibapi.contract import Contract, ContractDetails, DeltaNeutralContract
from ibapi.execution import Execution
from ibapi.order import Order
from ibapi.order_state import OrderState
from ibapi.wrapper import EWrapper

from ..backoff import Backoff
from ..protocol.errors import (
    CLIENT_ID_IN_USE,
    CONNECT_FAILED,
    CONNECT_FAILURES,
    CONNECTIVITY,
    CONNECTIVITY_LOST,
    NOT_CONNECTED,
    RESTORED_DATA_LOST,
    WARNING_RANGE,
    is_warning,
)
from .events import SessionEvents
from .fast_reader import FastClient, bar_from_row

log = logging.getLogger(__name__)

DEFAULT_RATE = 45          # messages per second; IB's limit is 50
DEFAULT_TIMEOUT = 15.0     # seconds a request may wait for its answer
USE_SESSION_TIMEOUT = object()
NO_TIMEOUT = float("inf")

# Callbacks whose first argument is the reqId of the request they answer.
REQ_ID_CALLBACKS = frozenset({
    "tickPrice", "tickSize", "tickString", "tickGeneric", "tickReqParams", "marketDataType",
    "tickSnapshotEnd", "tickOptionComputation", "tickEFP", "tickByTickAllLast", "tickByTickBidAsk",
    "tickByTickMidPoint", "historicalData", "historicalDataBatch", "historicalDataEnd", "historicalDataUpdate",
    "contractDetails", "contractDetailsEnd", "bondContractDetails", "accountSummary", "accountSummaryEnd",
    "accountUpdateMulti", "accountUpdateMultiEnd", "positionMulti", "positionMultiEnd", "pnl", "pnlSingle",
    "execDetails", "execDetailsEnd", "headTimestamp", "symbolSamples", "realtimeBar", "histogramData",
    "historicalTicks", "historicalTicksBidAsk", "historicalTicksLast", "securityDefinitionOptionParameter",
    "securityDefinitionOptionParameterEnd", "marketRule",
})

# Our reader (addin/ib/fast_reader.py) unless IBXL_FAST_READER=0: the switch back to ibapi's EReader.
FAST_READER = os.environ.get("IBXL_FAST_READER", "1") != "0"


class IBError(Exception):
    """An error IB sent (or the session raised on IB's behalf).

    code: IB's error code (client-side ones: 502 could not connect, 504 not connected, 1100 connection
    lost while waiting, 0 timeout); text: IB's message; request: what was asked, in words; req_id.
    """

    def __init__(self, code: int, text: str, request: str = "", req_id: int = -1):
        self.code, self.text, self.request, self.req_id = code, text, request, req_id
        self.time = datetime.now(timezone.utc)
        super().__init__(f"IB {code}: {text}" + (f" ({request})" if request else ""))


class RequestTimeout(IBError, TimeoutError):
    """No answer within the request's timeout."""

    def __init__(self, request: str, timeout: float, req_id: int = -1):
        super().__init__(0, f"no answer within {timeout:g} s", request, req_id)


@dataclass(frozen=True)
class SessionStatus:
    """A snapshot of the session. ``state``: connecting, connected, reconnecting, disconnected.
    ``paper``: True when every account id starts with "D" (IB's paper accounts), None before the
    account list arrived. ``since``: when ``state`` was entered (UTC)."""

    state: str = "disconnected"
    host: str = ""
    port: int = 0
    client_id: int = 0
    server_version: int | None = None
    accounts: tuple[str, ...] = ()
    paper: bool | None = None
    last_error: IBError | None = None
    since: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    reconnects: int = 0
    farm_notices: tuple[str, ...] = ()


class Request:
    """One reqId's life: how to start it, what to do with each answer, how it ends.

    start(client, req_id): sends the request (called on the pacer thread; again after a reconnect
    for subscriptions). end: callback name(s) that complete it; the future's result is then
    ``self.rows`` (a list of ``(callback_name, args)``) unless ``on_event`` called ``finish``.
    on_event(request, name, args): called on ibapi's message thread for every answer; return True
    to keep the row in ``rows``. cancel(client, req_id): sent by ``Session.cancel``.
    subscription: stays registered after it completes and is re-sent after a reconnect or 1101.
    restore(request): called before a subscription is re-sent (reset partial state).
    timeout: seconds to wait for the first ``end`` (default: the session's request_timeout;
    ``NO_TIMEOUT`` for none).
    batch: on_event gets one ``("historicalDataBatch", (reqId, rows))`` per HISTORICAL_DATA message
    instead of one ``("historicalData", (reqId, BarData))`` per bar; rows are tuples ``(date: str,
    open, high, low, close: float, volume, wap: Decimal, barCount: int)`` (ibapi's BarData fields,
    in that order). Only with the fast reader; otherwise on_event gets the per-bar callbacks.
    """

    def __init__(self, description: str, start: Callable[[EClient, int], None], *,
                 end: str | tuple[str, ...] | None = None,
                 on_event: Callable[["Request", str, tuple], bool | None] | None = None,
                 cancel: Callable[[EClient, int], None] | None = None,
                 subscription: bool = False,
                 restore: Callable[["Request"], None] | None = None,
                 timeout: float | None | object = None, batch: bool = False):
        self.description = description
        self.start = start
        self.end = (end,) if isinstance(end, str) else tuple(end or ())
        self.on_event = on_event
        self.cancel_fn = cancel
        self.subscription = subscription
        self.restore = restore
        self.timeout = USE_SESSION_TIMEOUT if timeout is None else timeout
        self.batch = batch
        self.req_id = -1
        self.rows: list[tuple[str, tuple]] = []
        self.notices: list[IBError] = []
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.active = True
        # Optional per-tick fast path for streaming market data (see _Wrapper.price_size_tick):
        # on_tick(tickType, price, sizeTickType, size) with ibapi's raw values.
        self.on_tick: Callable[[int, float, int, Any], None] | None = None

    def finish(self, value: Any = None) -> None:
        if not self.future.done():
            self.future.set_result(self.rows if value is None else value)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def result(self, timeout: float | None = None):
        """The answer; raises the IBError the request got, or RequestTimeout."""
        try:
            return self.future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise RequestTimeout(self.description, timeout or 0, self.req_id) from None

    def _handle(self, name: str, args: tuple) -> None:
        on_event = self.on_event
        if on_event is None or on_event(self, name, args) is not False:
            self.rows.append((name, args))
        if name in self.end:
            self.finish()

    def __repr__(self):
        return f"<Request {self.req_id} {self.description}>"


class _Wrapper(EWrapper):
    """ibapi's callbacks, written out: each one goes to ``Session._dispatch`` as ``(name, args)``
    (request routing by reqId, then ``session.events``). The market data ticks take a shorter way
    (below). One per connection: callbacks from an older connection's threads are recognised by
    their generation and ignored."""

    def __init__(self, session: "Session", generation: int):
        super().__init__()
        self._session = session
        self._generation = generation
        self._dispatch = session._dispatch

    # --- market data, called per tick: straight to the subscription of their reqId (what
    # ``Session._dispatch`` does for them, without its generic checks); anything else (no such
    # request, a one-shot snapshot, an old connection) through ``_dispatch``. Written out four
    # times, not shared, so that a tick costs no extra call.
    def tickPrice(self, reqId: int, tickType: int, price: float, attrib: TickAttrib) -> None:
        session = self._session
        request = session._requests.get(reqId)
        if request is None or not request.subscription or self._generation != session._generation:
            session._dispatch("tickPrice", (reqId, tickType, price, attrib), self._generation)
            return
        try:
            request._handle("tickPrice", (reqId, tickType, price, attrib))
        except Exception:
            log.exception("handling %s for %s failed", "tickPrice", request)

    def tickSize(self, reqId: int, tickType: int, size: Decimal) -> None:
        session = self._session
        request = session._requests.get(reqId)
        if request is None or not request.subscription or self._generation != session._generation:
            session._dispatch("tickSize", (reqId, tickType, size), self._generation)
            return
        try:
            request._handle("tickSize", (reqId, tickType, size))
        except Exception:
            log.exception("handling %s for %s failed", "tickSize", request)

    def tickString(self, reqId: int, tickType: int, value: str) -> None:
        session = self._session
        request = session._requests.get(reqId)
        if request is None or not request.subscription or self._generation != session._generation:
            session._dispatch("tickString", (reqId, tickType, value), self._generation)
            return
        try:
            request._handle("tickString", (reqId, tickType, value))
        except Exception:
            log.exception("handling %s for %s failed", "tickString", request)

    def tickGeneric(self, reqId: int, tickType: int, value: float) -> None:
        session = self._session
        request = session._requests.get(reqId)
        if request is None or not request.subscription or self._generation != session._generation:
            session._dispatch("tickGeneric", (reqId, tickType, value), self._generation)
            return
        try:
            request._handle("tickGeneric", (reqId, tickType, value))
        except Exception:
            log.exception("handling %s for %s failed", "tickGeneric", request)

    # --- the fast reader's extensions (addin/ib/fast_reader.py) -----------------------------------
    def price_size_tick(self, reqId: int, tickType: int, price: float, sizeTickType: int, size: Any) -> bool:
        """A whole TICK_PRICE (price and its size) for a subscription with an ``on_tick``: one call
        instead of ibapi's tickPrice + tickSize. False: the decoder makes ibapi's calls instead."""
        session = self._session
        request = session._requests.get(reqId)
        if request is None or request.on_tick is None or self._generation != session._generation:
            return False
        try:
            request.on_tick(tickType, price, sizeTickType, size)
        except Exception:
            log.exception("handling a tick for %s failed", request)
        return True

    def historicalDataBatch(self, reqId: int, rows: list[tuple]) -> None:
        """All bars of one HISTORICAL_DATA message (see ``Request.batch``)."""
        self._dispatch("historicalDataBatch", (reqId, rows), self._generation)

    # --- every other callback, in alphabetical order ----------------------------------------------
    def accountDownloadEnd(self, accountName: str) -> None:
        self._dispatch("accountDownloadEnd", (accountName,), self._generation)

    def accountSummary(self, reqId: int, account: str, tag: str, value: str, currency: str) -> None:
        self._dispatch("accountSummary", (reqId, account, tag, value, currency), self._generation)

    def accountSummaryEnd(self, reqId: int) -> None:
        self._dispatch("accountSummaryEnd", (reqId,), self._generation)

    def accountUpdateMulti(self, reqId: int, account: str, modelCode: str, key: str, value: str,
                           currency: str) -> None:
        self._dispatch("accountUpdateMulti", (reqId, account, modelCode, key, value, currency), self._generation)

    def accountUpdateMultiEnd(self, reqId: int) -> None:
        self._dispatch("accountUpdateMultiEnd", (reqId,), self._generation)

    def bondContractDetails(self, reqId: int, contractDetails: ContractDetails) -> None:
        self._dispatch("bondContractDetails", (reqId, contractDetails), self._generation)

    def commissionAndFeesReport(self, commissionAndFeesReport: CommissionAndFeesReport) -> None:
        self._dispatch("commissionAndFeesReport", (commissionAndFeesReport,), self._generation)

    def completedOrder(self, contract: Contract, order: Order, orderState: OrderState) -> None:
        self._dispatch("completedOrder", (contract, order, orderState), self._generation)

    def completedOrdersEnd(self) -> None:
        self._dispatch("completedOrdersEnd", (), self._generation)

    def connectAck(self) -> None:
        self._dispatch("connectAck", (), self._generation)

    def connectionClosed(self) -> None:
        self._dispatch("connectionClosed", (), self._generation)

    def contractDetails(self, reqId: int, contractDetails: ContractDetails) -> None:
        self._dispatch("contractDetails", (reqId, contractDetails), self._generation)

    def contractDetailsEnd(self, reqId: int) -> None:
        self._dispatch("contractDetailsEnd", (reqId,), self._generation)

    def currentTime(self, time: int) -> None:
        self._dispatch("currentTime", (time,), self._generation)

    def currentTimeInMillis(self, timeInMillis: int) -> None:
        self._dispatch("currentTimeInMillis", (timeInMillis,), self._generation)

    def deltaNeutralValidation(self, reqId: int, deltaNeutralContract: DeltaNeutralContract) -> None:
        self._dispatch("deltaNeutralValidation", (reqId, deltaNeutralContract), self._generation)

    def displayGroupList(self, reqId: int, groups: str) -> None:
        self._dispatch("displayGroupList", (reqId, groups), self._generation)

    def displayGroupUpdated(self, reqId: int, contractInfo: str) -> None:
        self._dispatch("displayGroupUpdated", (reqId, contractInfo), self._generation)

    def error(self, reqId: int, errorTime: int, errorCode: int, errorString: str,
              advancedOrderRejectJson: str = "") -> None:
        args = (reqId, errorTime, errorCode, errorString, advancedOrderRejectJson)
        self._dispatch("error", args, self._generation)

    def execDetails(self, reqId: int, contract: Contract, execution: Execution) -> None:
        self._dispatch("execDetails", (reqId, contract, execution), self._generation)

    def execDetailsEnd(self, reqId: int) -> None:
        self._dispatch("execDetailsEnd", (reqId,), self._generation)

    def familyCodes(self, familyCodes: list) -> None:
        self._dispatch("familyCodes", (familyCodes,), self._generation)

    def fundamentalData(self, reqId: int, data: str) -> None:
        self._dispatch("fundamentalData", (reqId, data), self._generation)

    def headTimestamp(self, reqId: int, headTimestamp: str) -> None:
        self._dispatch("headTimestamp", (reqId, headTimestamp), self._generation)

    def histogramData(self, reqId: int, items: HistogramData) -> None:
        self._dispatch("histogramData", (reqId, items), self._generation)

    def historicalData(self, reqId: int, bar: BarData) -> None:
        self._dispatch("historicalData", (reqId, bar), self._generation)

    def historicalDataEnd(self, reqId: int, start: str, end: str) -> None:
        self._dispatch("historicalDataEnd", (reqId, start, end), self._generation)

    def historicalDataUpdate(self, reqId: int, bar: BarData) -> None:
        self._dispatch("historicalDataUpdate", (reqId, bar), self._generation)

    def historicalNews(self, requestId: int, time: str, providerCode: str, articleId: str, headline: str) -> None:
        self._dispatch("historicalNews", (requestId, time, providerCode, articleId, headline), self._generation)

    def historicalNewsEnd(self, requestId: int, hasMore: bool) -> None:
        self._dispatch("historicalNewsEnd", (requestId, hasMore), self._generation)

    def historicalSchedule(self, reqId: int, startDateTime: str, endDateTime: str, timeZone: str,
                           sessions: list) -> None:
        args = (reqId, startDateTime, endDateTime, timeZone, sessions)
        self._dispatch("historicalSchedule", args, self._generation)

    def historicalTicks(self, reqId: int, ticks: list, done: bool) -> None:
        self._dispatch("historicalTicks", (reqId, ticks, done), self._generation)

    def historicalTicksBidAsk(self, reqId: int, ticks: list, done: bool) -> None:
        self._dispatch("historicalTicksBidAsk", (reqId, ticks, done), self._generation)

    def historicalTicksLast(self, reqId: int, ticks: list, done: bool) -> None:
        self._dispatch("historicalTicksLast", (reqId, ticks, done), self._generation)

    def managedAccounts(self, accountsList: str) -> None:
        self._dispatch("managedAccounts", (accountsList,), self._generation)

    def marketDataType(self, reqId: int, marketDataType: int) -> None:
        self._dispatch("marketDataType", (reqId, marketDataType), self._generation)

    def marketRule(self, marketRuleId: int, priceIncrements: list) -> None:
        self._dispatch("marketRule", (marketRuleId, priceIncrements), self._generation)

    def mktDepthExchanges(self, depthMktDataDescriptions: list) -> None:
        self._dispatch("mktDepthExchanges", (depthMktDataDescriptions,), self._generation)

    def newsArticle(self, requestId: int, articleType: int, articleText: str) -> None:
        self._dispatch("newsArticle", (requestId, articleType, articleText), self._generation)

    def newsProviders(self, newsProviders: list) -> None:
        self._dispatch("newsProviders", (newsProviders,), self._generation)

    def nextValidId(self, orderId: int) -> None:
        self._dispatch("nextValidId", (orderId,), self._generation)

    def openOrder(self, orderId: int, contract: Contract, order: Order, orderState: OrderState) -> None:
        self._dispatch("openOrder", (orderId, contract, order, orderState), self._generation)

    def openOrderEnd(self) -> None:
        self._dispatch("openOrderEnd", (), self._generation)

    def orderBound(self, permId: int, clientId: int, orderId: int) -> None:
        self._dispatch("orderBound", (permId, clientId, orderId), self._generation)

    def orderStatus(self, orderId: int, status: str, filled: Decimal, remaining: Decimal, avgFillPrice: float,
                    permId: int, parentId: int, lastFillPrice: float, clientId: int, whyHeld: str,
                    mktCapPrice: float) -> None:
        args = (orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice, clientId,
                whyHeld, mktCapPrice)
        self._dispatch("orderStatus", args, self._generation)

    def pnl(self, reqId: int, dailyPnL: float, unrealizedPnL: float, realizedPnL: float) -> None:
        self._dispatch("pnl", (reqId, dailyPnL, unrealizedPnL, realizedPnL), self._generation)

    def pnlSingle(self, reqId: int, pos: Decimal, dailyPnL: float, unrealizedPnL: float, realizedPnL: float,
                  value: float) -> None:
        self._dispatch("pnlSingle", (reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value), self._generation)

    def position(self, account: str, contract: Contract, position: Decimal, avgCost: float) -> None:
        self._dispatch("position", (account, contract, position, avgCost), self._generation)

    def positionEnd(self) -> None:
        self._dispatch("positionEnd", (), self._generation)

    def positionMulti(self, reqId: int, account: str, modelCode: str, contract: Contract, pos: Decimal,
                      avgCost: float) -> None:
        self._dispatch("positionMulti", (reqId, account, modelCode, contract, pos, avgCost), self._generation)

    def positionMultiEnd(self, reqId: int) -> None:
        self._dispatch("positionMultiEnd", (reqId,), self._generation)

    def realtimeBar(self, reqId: int, time: int, open_: float, high: float, low: float, close: float,
                    volume: Decimal, wap: Decimal, count: int) -> None:
        self._dispatch("realtimeBar", (reqId, time, open_, high, low, close, volume, wap, count), self._generation)

    def receiveFA(self, faData: int, cxml: str) -> None:
        self._dispatch("receiveFA", (faData, cxml), self._generation)

    def replaceFAEnd(self, reqId: int, text: str) -> None:
        self._dispatch("replaceFAEnd", (reqId, text), self._generation)

    def rerouteMktDataReq(self, reqId: int, conId: int, exchange: str) -> None:
        self._dispatch("rerouteMktDataReq", (reqId, conId, exchange), self._generation)

    def rerouteMktDepthReq(self, reqId: int, conId: int, exchange: str) -> None:
        self._dispatch("rerouteMktDepthReq", (reqId, conId, exchange), self._generation)

    def scannerData(self, reqId: int, rank: int, contractDetails: ContractDetails, distance: str, benchmark: str,
                    projection: str, legsStr: str) -> None:
        args = (reqId, rank, contractDetails, distance, benchmark, projection, legsStr)
        self._dispatch("scannerData", args, self._generation)

    def scannerDataEnd(self, reqId: int) -> None:
        self._dispatch("scannerDataEnd", (reqId,), self._generation)

    def scannerParameters(self, xml: str) -> None:
        self._dispatch("scannerParameters", (xml,), self._generation)

    def securityDefinitionOptionParameter(self, reqId: int, exchange: str, underlyingConId: int, tradingClass: str,
                                          multiplier: str, expirations: set, strikes: set) -> None:
        args = (reqId, exchange, underlyingConId, tradingClass, multiplier, expirations, strikes)
        self._dispatch("securityDefinitionOptionParameter", args, self._generation)

    def securityDefinitionOptionParameterEnd(self, reqId: int) -> None:
        self._dispatch("securityDefinitionOptionParameterEnd", (reqId,), self._generation)

    def smartComponents(self, reqId: int, smartComponentMap: dict) -> None:
        self._dispatch("smartComponents", (reqId, smartComponentMap), self._generation)

    def softDollarTiers(self, reqId: int, tiers: list) -> None:
        self._dispatch("softDollarTiers", (reqId, tiers), self._generation)

    def symbolSamples(self, reqId: int, contractDescriptions: list) -> None:
        self._dispatch("symbolSamples", (reqId, contractDescriptions), self._generation)

    def tickByTickAllLast(self, reqId: int, tickType: int, time: int, price: float, size: Decimal,
                          tickAttribLast: TickAttribLast, exchange: str, specialConditions: str) -> None:
        args = (reqId, tickType, time, price, size, tickAttribLast, exchange, specialConditions)
        self._dispatch("tickByTickAllLast", args, self._generation)

    def tickByTickBidAsk(self, reqId: int, time: int, bidPrice: float, askPrice: float, bidSize: Decimal,
                         askSize: Decimal, tickAttribBidAsk: TickAttribBidAsk) -> None:
        args = (reqId, time, bidPrice, askPrice, bidSize, askSize, tickAttribBidAsk)
        self._dispatch("tickByTickBidAsk", args, self._generation)

    def tickByTickMidPoint(self, reqId: int, time: int, midPoint: float) -> None:
        self._dispatch("tickByTickMidPoint", (reqId, time, midPoint), self._generation)

    def tickEFP(self, reqId: int, tickType: int, basisPoints: float, formattedBasisPoints: str,
                totalDividends: float, holdDays: int, futureLastTradeDate: str, dividendImpact: float,
                dividendsToLastTradeDate: float) -> None:
        args = (reqId, tickType, basisPoints, formattedBasisPoints, totalDividends, holdDays, futureLastTradeDate,
                dividendImpact, dividendsToLastTradeDate)
        self._dispatch("tickEFP", args, self._generation)

    def tickNews(self, tickerId: int, timeStamp: int, providerCode: str, articleId: str, headline: str,
                 extraData: str) -> None:
        args = (tickerId, timeStamp, providerCode, articleId, headline, extraData)
        self._dispatch("tickNews", args, self._generation)

    def tickOptionComputation(self, reqId: int, tickType: int, tickAttrib: int, impliedVol: float, delta: float,
                              optPrice: float, pvDividend: float, gamma: float, vega: float, theta: float,
                              undPrice: float) -> None:
        # an option line streams these several times a second: straight to its subscription, as tickPrice
        args = (reqId, tickType, tickAttrib, impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice)
        session = self._session
        request = session._requests.get(reqId)
        if request is None or not request.subscription or self._generation != session._generation:
            session._dispatch("tickOptionComputation", args, self._generation)
            return
        try:
            request._handle("tickOptionComputation", args)
        except Exception:
            log.exception("handling %s for %s failed", "tickOptionComputation", request)

    def tickReqParams(self, tickerId: int, minTick: float, bboExchange: str, snapshotPermissions: int) -> None:
        self._dispatch("tickReqParams", (tickerId, minTick, bboExchange, snapshotPermissions), self._generation)

    def tickSnapshotEnd(self, reqId: int) -> None:
        self._dispatch("tickSnapshotEnd", (reqId,), self._generation)

    def updateAccountTime(self, timeStamp: str) -> None:
        self._dispatch("updateAccountTime", (timeStamp,), self._generation)

    def updateAccountValue(self, key: str, val: str, currency: str, accountName: str) -> None:
        self._dispatch("updateAccountValue", (key, val, currency, accountName), self._generation)

    def updateMktDepth(self, reqId: int, position: int, operation: int, side: int, price: float,
                       size: Decimal) -> None:
        self._dispatch("updateMktDepth", (reqId, position, operation, side, price, size), self._generation)

    def updateMktDepthL2(self, reqId: int, position: int, marketMaker: str, operation: int, side: int,
                         price: float, size: Decimal, isSmartDepth: bool) -> None:
        args = (reqId, position, marketMaker, operation, side, price, size, isSmartDepth)
        self._dispatch("updateMktDepthL2", args, self._generation)

    def updateNewsBulletin(self, msgId: int, msgType: int, newsMessage: str, originExch: str) -> None:
        self._dispatch("updateNewsBulletin", (msgId, msgType, newsMessage, originExch), self._generation)

    def updatePortfolio(self, contract: Contract, position: Decimal, marketPrice: float, marketValue: float,
                        averageCost: float, unrealizedPNL: float, realizedPNL: float, accountName: str) -> None:
        args = (contract, position, marketPrice, marketValue, averageCost, unrealizedPNL, realizedPNL, accountName)
        self._dispatch("updatePortfolio", args, self._generation)

    def userInfo(self, reqId: int, whiteBrandingId: str) -> None:
        self._dispatch("userInfo", (reqId, whiteBrandingId), self._generation)

    def verifyAndAuthCompleted(self, isSuccessful: bool, errorText: str) -> None:
        self._dispatch("verifyAndAuthCompleted", (isSuccessful, errorText), self._generation)

    def verifyAndAuthMessageAPI(self, apiData: str, xyzChallange: str) -> None:
        self._dispatch("verifyAndAuthMessageAPI", (apiData, xyzChallange), self._generation)

    def verifyCompleted(self, isSuccessful: bool, errorText: str) -> None:
        self._dispatch("verifyCompleted", (isSuccessful, errorText), self._generation)

    def verifyMessageAPI(self, apiData: str) -> None:
        self._dispatch("verifyMessageAPI", (apiData,), self._generation)

    def winError(self, text: str, lastError: int) -> None:
        self._dispatch("winError", (text, lastError), self._generation)

    def wshEventData(self, reqId: int, dataJson: str) -> None:
        self._dispatch("wshEventData", (reqId, dataJson), self._generation)

    def wshMetaData(self, reqId: int, dataJson: str) -> None:
        self._dispatch("wshMetaData", (reqId, dataJson), self._generation)


class _Pacer:
    """FIFO outbound queue and request deadlines, served by one thread.

    Two rules for every message: at most ``rate`` in any one-second window, and an even spacing of
    1/rate between sends. The spacing keeps a burst from reaching IB as one clump that a late read on
    IB's side would count into the same second. A job may carry several messages (a bracket's legs,
    sent back to back); they count as that many. One job runs at a time, in queue order."""

    def __init__(self, session: "Session", rate: int):
        self.session = session
        self.rate = rate
        self.gap = 1.0 / rate
        self.queue: collections.deque[tuple[Callable[[EClient], None], int]] = collections.deque()
        self.sent: collections.deque[float] = collections.deque()   # send times in the last second
        self.last_send = float("-inf")
        self.busy = False                   # a job is being sent (by the thread or inline)
        self.deadlines: list[tuple[float, int, Request]] = []
        self.cond = threading.Condition()
        self.running = True
        self.counter = itertools.count()
        self.thread = threading.Thread(target=self._run, name="ibxl-io", daemon=True)
        self.thread.start()

    def put(self, fn: Callable[[EClient], None], messages: int = 1, inline: bool = False) -> None:
        """Queue ``fn`` (``messages`` outbound messages). ``inline``: when nothing is queued or being
        sent and the rules allow it now, send on the caller's thread instead of handing over to the
        pacer thread (which may wait for the GIL behind a busy decoder): the order path uses it."""
        with self.cond:
            if inline and not self.queue and not self.busy:
                now = time.monotonic()
                self._expire_window(now)
                if self._ready_at(now, messages) <= now:
                    self._record(now, messages)
                    self.busy = True
                else:
                    inline = False
            else:
                inline = False
            if not inline:
                self.queue.append((fn, messages))
                self.cond.notify()
                return
        try:
            self.session._send_now(fn)
        finally:
            with self.cond:
                self.busy = False
                self.cond.notify()

    def _expire_window(self, now: float) -> None:
        while self.sent and now - self.sent[0] >= 1.0:
            self.sent.popleft()

    def _ready_at(self, now: float, messages: int) -> float:
        over = len(self.sent) + messages - self.rate
        window = self.sent[over - 1] + 1.0 if over > 0 and over <= len(self.sent) else now
        return max(window, self.last_send + self.gap)

    def _record(self, now: float, messages: int) -> None:
        self.sent.extend([now] * messages)
        self.last_send = now + (messages - 1) * self.gap    # keep the spacing after a multi-message job

    def watch(self, request: Request) -> None:
        if not isinstance(request.timeout, (int, float)) or request.timeout == NO_TIMEOUT:
            return
        with self.cond:
            heapq.heappush(self.deadlines, (time.monotonic() + request.timeout, next(self.counter), request))
            self.cond.notify()

    def record_direct_send(self) -> None:
        """Messages ibapi sends by itself (handshake, START_API) count against the window too."""
        with self.cond:
            self._record(time.monotonic(), 1)

    def clear(self) -> list[Callable]:
        with self.cond:
            dropped = [fn for fn, _ in self.queue]
            self.queue.clear()
            return dropped

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join(10)

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.running:
                    return
                now = time.monotonic()
                self._expire_window(now)
                expired = []
                while self.deadlines and self.deadlines[0][0] <= now:
                    expired.append(heapq.heappop(self.deadlines)[2])
                job = None
                wait = None
                if self.queue and not self.busy:
                    fn, messages = self.queue[0]
                    ready_at = self._ready_at(now, messages)
                    if ready_at <= now:
                        self.queue.popleft()
                        self._record(now, messages)
                        self.busy = True
                        job = fn
                    else:
                        wait = ready_at - now
                if job is None and not expired:
                    if self.deadlines:
                        until = self.deadlines[0][0] - now
                        wait = until if wait is None else min(wait, until)
                    self.cond.wait(wait)
                    continue
            for request in expired:
                if not request.future.done() and request.active:
                    self.session._expire(request)
            if job is not None:
                try:
                    self.session._send_now(job)
                finally:
                    with self.cond:
                        self.busy = False


class Session:
    """The one background IB client. Thread-safe: every public method may be called from any thread.

    Connects to TWS, IB Gateway or the paper gateway at ``host:port`` as ``client_id``. ``rate`` is
    the outbound message budget per second (default 45; IB allows 50). ``reconnect`` turns automatic
    reconnection on (backoff from ``backoff_min`` doubling to ``backoff_max`` seconds, with jitter).
    ``fast_reader``: read the socket with ``addin.ib.fast_reader.FastClient`` (default: True unless the
    environment sets ``IBXL_FAST_READER=0``) or with ibapi's EReader (False).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4002, client_id: int = 1, *,
                 rate: int = DEFAULT_RATE, reconnect: bool = True, backoff_min: float = 0.2,
                 backoff_max: float = 2.0, request_timeout: float = DEFAULT_TIMEOUT,
                 fast_reader: bool | None = None):
        if not 1 <= rate <= 50:
            raise ValueError(f"rate must be 1..50 messages per second (IB's limit is 50), got {rate}")
        self.host, self.port, self.client_id = host, port, client_id
        self.rate = rate
        self.auto_reconnect = reconnect
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.request_timeout = request_timeout
        self.fast_reader = FAST_READER if fast_reader is None else fast_reader
        self._lock = threading.RLock()
        self._client: EClient | None = None
        self._msg_thread: threading.Thread | None = None
        self._pacer: _Pacer | None = None
        self._requests: dict[int, Request] = {}
        self.events = SessionEvents()   # callbacks no request took: session.events.openOrder.subscribe(fn)
        self._restore_hooks: list[Callable[[], None]] = []
        self._ids = itertools.count(1)
        self._next_order_id = 0
        self._status = SessionStatus(host=host, port=port, client_id=client_id)
        self._status_cond = threading.Condition(self._lock)
        self._handshake: dict[str, Any] = {}
        self._ready = threading.Event()
        self._closing = False
        self._reconnect_thread: threading.Thread | None = None
        self._stop_reconnect = threading.Event()
        self._generation = 0

    # --- status -----------------------------------------------------------------------------------
    @property
    def status(self) -> SessionStatus:
        with self._lock:
            return self._status

    def _set_status(self, **changes) -> None:
        with self._lock:
            if "state" in changes and changes["state"] != self._status.state:
                changes.setdefault("since", datetime.now(timezone.utc))
            self._status = replace(self._status, **changes)
            self._status_cond.notify_all()

    def wait_for_state(self, state: str, timeout: float) -> bool:
        """Block until the session is in ``state`` (True) or ``timeout`` seconds pass (False)."""
        return self.wait_status(lambda st: st.state == state, timeout)

    def wait_status(self, predicate: Callable[[SessionStatus], bool], timeout: float) -> bool:
        """Block until ``predicate(status)`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self._status):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._status_cond.wait(left)
            return True

    @property
    def connected(self) -> bool:
        return self.status.state == "connected"

    # --- lifecycle --------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> SessionStatus:
        """Connect and wait for the next valid order id and the account list.

        Raises IBError 326 when the client id is in use, IBError 502 when nothing listens at
        host:port or the handshake does not complete within ``timeout`` seconds.
        """
        with self._lock:
            if self._status.state in ("connected", "connecting"):
                return self._status
            self._closing = False
            self._stop_reconnect.clear()
            if self._pacer is None:
                self._pacer = _Pacer(self, self.rate)
        self._set_status(state="connecting", last_error=None)
        try:
            self._open(timeout)
        except BaseException:
            self._teardown_connection()
            self._set_status(state="disconnected")
            self._stop_pacer()
            raise
        return self.status

    def _open(self, timeout: float) -> None:
        """One connection attempt: socket, handshake, START_API, then nextValidId + managedAccounts."""
        self._ready.clear()
        self._handshake = {}
        with self._lock:
            self._generation += 1
            client = (FastClient if self.fast_reader else EClient)(_Wrapper(self, self._generation))
            self._client = client
        done = threading.Event()
        failure: list[BaseException] = []

        def handshake():
            try:
                client.connect(self.host, self.port, self.client_id)
            except BaseException as exc:  # pragma: no cover - ibapi reports errors via error()
                failure.append(exc)
            finally:
                done.set()

        t = threading.Thread(target=handshake, name="ibxl-connect", daemon=True)
        t.start()
        if not done.wait(timeout):
            _shutdown_socket(client)
            t.join(5)
            raise IBError(CONNECT_FAILED, f"Couldn't connect to TWS at {self.host}:{self.port}: no handshake "
                                          f"within {timeout:g} s")
        t.join()
        if not client.isConnected():
            # Closed right after the handshake (TWS sends 326 and closes): its last messages may
            # still sit undecoded in ibapi's queue, as the message thread is not started yet. Read
            # them here so the real reason is reported instead of a bare 502.
            reader = getattr(client, "reader", None)
            if reader is not None and reader.is_alive():
                reader.join(2)
            if not client.msg_queue.empty():
                client.run()
            err = self._handshake.get("error")
            if isinstance(err, IBError) and err.code == CLIENT_ID_IN_USE:
                raise err
            raise IBError(CONNECT_FAILED, f"Couldn't connect to TWS at {self.host}:{self.port}. Confirm that "
                                          f"API connections are enabled and the port is right.")
        if self._pacer:
            self._pacer.record_direct_send()
            self._pacer.record_direct_send()
        self._msg_thread = threading.Thread(target=self._run_messages, args=(client,), name="ibxl-msg",
                                            daemon=True)
        self._msg_thread.start()
        if not self._ready.wait(timeout):
            err = self._handshake.get("error")
            _shutdown_socket(client)
            if isinstance(err, IBError):
                raise err
            raise IBError(CONNECT_FAILED, f"connected to {self.host}:{self.port} but no account list and "
                                          f"order id arrived within {timeout:g} s")
        err = self._handshake.get("error")
        if isinstance(err, IBError) and err.code == CLIENT_ID_IN_USE:
            raise err
        accounts = tuple(a for a in self._handshake.get("accounts", "").split(",") if a)
        self._set_status(state="connected", server_version=client.serverVersion(), accounts=accounts,
                         paper=all(a.startswith("D") for a in accounts) if accounts else None)
        log.info("connected to %s:%d as client %d (server %s, accounts %s)", self.host, self.port,
                 self.client_id, client.serverVersion(), ",".join(accounts))

    def _run_messages(self, client: EClient) -> None:
        """The message loop (FastClient's reader or ibapi's decoder loop). After a disconnect ibapi's
        run() can still decode a queued message with serverVersion() None and raise: that is the end
        of the connection, not an error."""
        try:
            client.run()
        except Exception:
            if client.isConnected():
                log.exception("ibapi's message loop failed")
            else:
                log.debug("ibapi's message loop ended with the connection", exc_info=True)

    def disconnect(self) -> None:
        """Close the connection and end every thread this session started. Live subscriptions and
        requests in flight fail with IBError 504. Idempotent."""
        with self._lock:
            self._closing = True
        self._stop_reconnect.set()
        rt = self._reconnect_thread
        if rt is not None and rt is not threading.current_thread():
            rt.join(15)
        self._teardown_connection()
        self._stop_pacer()
        with self._lock:
            pending = list(self._requests.values())
            self._requests.clear()
        for request in pending:
            request.active = False
            request.fail(IBError(NOT_CONNECTED, "Not connected: the session was disconnected",
                                 request.description, request.req_id))
        self._set_status(state="disconnected")

    def _stop_pacer(self) -> None:
        with self._lock:
            pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.stop()

    def _teardown_connection(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            msg_thread, self._msg_thread = self._msg_thread, None
        if client is None:
            return
        _shutdown_socket(client)
        reader = getattr(client, "reader", None)
        try:
            client.disconnect()
        except Exception:  # pragma: no cover - ibapi logs its own socket errors
            log.debug("ibapi disconnect raised", exc_info=True)
        for t in (msg_thread, reader):
            if t is not None and t is not threading.current_thread() and t.is_alive():
                t.join(10)

    def __enter__(self) -> "Session":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # --- reconnect --------------------------------------------------------------------------------
    def _connection_lost(self, generation: int) -> None:
        with self._lock:
            if self._closing or generation != self._generation:
                return
            if self._status.state != "connected":
                # Closed during a handshake: let the connecting thread fail at once.
                self._handshake.setdefault("error", IBError(CONNECT_FAILED,
                                                            "connection closed during the handshake"))
                self._ready.set()
                return
            in_flight = [r for r in self._requests.values() if not r.subscription]
            for r in in_flight:
                del self._requests[r.req_id]
        for r in in_flight:
            r.active = False
            r.fail(IBError(CONNECTIVITY_LOST, f"connection to {self.host}:{self.port} lost before the answer",
                           r.description, r.req_id))
        if self._pacer:
            self._pacer.clear()
        if not self.auto_reconnect:
            self._set_status(state="disconnected")
            return
        self._set_status(state="reconnecting")
        t = threading.Thread(target=self._reconnect_loop, name="ibxl-reconnect", daemon=True)
        with self._lock:
            self._reconnect_thread = t
        t.start()

    def _reconnect_loop(self) -> None:
        delays = iter(Backoff(self.backoff_min, self.backoff_max, jitter=0.2))
        attempt = 0
        while not self._stop_reconnect.is_set():
            attempt += 1
            self._teardown_connection()
            try:
                self._open(timeout=max(5.0, self.backoff_max))
            except IBError as exc:
                self._set_status(state="reconnecting", last_error=exc)
                if exc.code == CLIENT_ID_IN_USE:
                    log.warning("reconnect: %s", exc)
                if self._stop_reconnect.wait(next(delays)):
                    break
                continue
            with self._lock:
                self._status = replace(self._status, reconnects=self._status.reconnects + 1)
            log.info("reconnected after %d attempt(s); restoring subscriptions", attempt)
            self._restore_subscriptions()
            break
        with self._lock:
            self._reconnect_thread = None

    def _restore_subscriptions(self) -> None:
        with self._lock:
            subs = [r for r in self._requests.values() if r.subscription and r.active]
            hooks = list(self._restore_hooks)
        for r in subs:
            if r.restore is not None:
                r.restore(r)
            self._queue_start(r)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("restore hook failed")

    # --- requests ---------------------------------------------------------------------------------
    def new_req_id(self) -> int:
        with self._lock:
            return next(self._ids) + 10_000_000   # far from order ids, which IB counts from nextValidId

    def submit(self, request: Request) -> Request:
        """Register ``request`` under a new reqId and queue its start message. Raises IBError 504
        when not connected (a subscription is accepted while reconnecting and sent once back)."""
        with self._lock:
            state = self._status.state
            if state != "connected" and not (request.subscription and state == "reconnecting"):
                raise IBError(NOT_CONNECTED, f"Not connected ({state})", request.description)
            request.req_id = self.new_req_id()
            if request.timeout is USE_SESSION_TIMEOUT:
                request.timeout = self.request_timeout
            self._requests[request.req_id] = request
        if state == "connected":
            self._queue_start(request)
        if self._pacer:
            self._pacer.watch(request)
        return request

    def _queue_start(self, request: Request) -> None:
        rid = request.req_id
        self.send(lambda client: request.start(client, rid))

    def cancel(self, request: Request) -> None:
        """Stop a request or subscription: unregister it and send its cancel message (if any)."""
        with self._lock:
            self._requests.pop(request.req_id, None)
            connected = self._status.state == "connected"
        request.active = False
        cancel_fn = request.cancel_fn
        if cancel_fn is not None and connected:
            rid = request.req_id
            self.send(lambda client: cancel_fn(client, rid))

    def send(self, fn: Callable[[EClient], None], *, messages: int = 1, urgent: bool = False) -> None:
        """Queue outbound messages: ``fn(client)`` sends ``messages`` of them, on the pacer thread in
        FIFO order. ``urgent``: send on the calling thread when nothing is waiting and the rate allows
        (no thread hand-over; for orders). ``fn`` must then take no lock the caller holds."""
        pacer = self._pacer
        if pacer is None:
            raise IBError(NOT_CONNECTED, "Not connected")
        pacer.put(fn, messages, inline=urgent)

    def _send_now(self, fn: Callable[[EClient], None]) -> None:
        client = self._client
        if client is None or not client.isConnected():
            return
        try:
            fn(client)
        except Exception:
            log.exception("sending a message failed")

    def _expire(self, request: Request) -> None:
        with self._lock:
            if not request.subscription:
                self._requests.pop(request.req_id, None)
        # only watched requests expire, and the pacer watches only those with a number of seconds
        timeout = request.timeout if isinstance(request.timeout, (int, float)) else 0.0
        if request.subscription:
            # A subscription that never answered: fail its first-answer future, keep it registered.
            request.fail(RequestTimeout(request.description, timeout, request.req_id))
            return
        request.active = False
        request.fail(RequestTimeout(request.description, timeout, request.req_id))
        cancel_fn = request.cancel_fn
        if cancel_fn is not None and self.connected:
            rid = request.req_id
            self.send(lambda client: cancel_fn(client, rid))

    # --- order ids --------------------------------------------------------------------------------
    def next_order_id(self) -> int:
        """A fresh order id (IB's nextValidId, then counted up locally)."""
        with self._lock:
            if self._next_order_id <= 0:
                raise IBError(NOT_CONNECTED, "Not connected: no order id received yet")
            oid = self._next_order_id
            self._next_order_id += 1
            return oid

    # --- restore hooks (listeners: ``self.events``) ------------------------------------------------
    def add_restore_hook(self, fn: Callable[[], None]) -> None:
        """``fn()`` runs after every reconnect and after 1101, to re-send listener-based subscriptions."""
        with self._lock:
            self._restore_hooks.append(fn)

    def remove_restore_hook(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._restore_hooks:
                self._restore_hooks.remove(fn)

    # --- callbacks (ibapi's message thread) -------------------------------------------------------
    def _dispatch(self, name: str, args: tuple, generation: int) -> None:
        if generation != self._generation:
            return  # a callback from a connection that has been replaced
        if name == "historicalDataBatch":
            req_id, rows = args
            request = self._requests.get(req_id)
            if request is None or not request.batch:
                for row in rows:   # a consumer of per-bar callbacks: give it ibapi's BarData
                    self._dispatch("historicalData", (req_id, bar_from_row(row)), generation)
                return
        if name == "error":
            self._on_error(*args)
            return
        if name in REQ_ID_CALLBACKS and args:
            request = self._requests.get(args[0])
            if request is not None:
                try:
                    request._handle(name, args)
                except Exception:
                    log.exception("handling %s for %s failed", name, request)
                if request.future.done() and not request.subscription:
                    with self._lock:
                        if self._requests.get(request.req_id) is request:
                            del self._requests[request.req_id]
                return
        if name == "nextValidId":
            with self._lock:
                self._next_order_id = max(self._next_order_id, args[0])
            self._handshake["next_id"] = args[0]
            self._check_ready()
        elif name == "managedAccounts":
            self._handshake["accounts"] = args[0]
            self._check_ready()
        elif name == "connectionClosed":
            self._connection_lost(self._generation)
        event = self.events.by_callback.get(name)   # None: historicalDataBatch whose request just ended
        if event is not None and event.listeners:
            event.emit(*args)

    def _check_ready(self) -> None:
        if "next_id" in self._handshake and "accounts" in self._handshake:
            self._ready.set()

    def _on_error(self, req_id: int, error_time: int, code: int, text: str, advanced: str = "", *rest) -> None:
        request = self._requests.get(req_id) if req_id is not None and req_id >= 0 else None
        description = request.description if request else ""
        err = IBError(code, text, description, req_id)
        if code == CLIENT_ID_IN_USE:
            err = IBError(code, f"client id {self.client_id} is already in use at {self.host}:{self.port}: "
                                f"{text}", "connect", req_id)
            self._handshake["error"] = err
            self._set_status(last_error=err)
            self._ready.set()
            return
        if code in CONNECTIVITY:
            self._on_connectivity(code, err)
            return
        if is_warning(code):
            if request is not None:
                request.notices.append(err)
                if request.on_event is not None:
                    request.on_event(request, "notice", (req_id, code, text))
            elif code in WARNING_RANGE:
                with self._lock:
                    notices = self._status.farm_notices[-9:] + (f"{code}: {text}",)
                self._set_status(farm_notices=notices)
            log.info("IB notice %d: %s%s", code, text, f" ({description})" if description else "")
            self.events.notice.emit(req_id, code, text)
            return
        if request is not None:
            with self._lock:
                self._requests.pop(req_id, None)
            request.active = False
            if request.on_event is not None:
                request.on_event(request, "error", (req_id, code, text))
            request.fail(err)
            return
        if code in CONNECT_FAILURES and self._status.state == "connecting":
            self._handshake["error"] = err
        log.warning("IB error %d: %s (reqId %s)", code, text, req_id)
        self._set_status(last_error=err)
        self.events.error.emit(req_id, code, text, advanced)

    def _on_connectivity(self, code: int, err: IBError) -> None:
        log.warning("IB %d: %s", code, err.text)
        if code == CONNECTIVITY_LOST:
            self._set_status(state="reconnecting", last_error=err)
        elif code == RESTORED_DATA_LOST:
            self._set_status(state="connected", last_error=err)
            self._restore_subscriptions()
        else:
            self._set_status(state="connected", last_error=err)
        self.events.connectivity.emit(code, err.text)


def _shutdown_socket(client: EClient) -> None:
    """Wake ibapi's reader at once (it would otherwise sit in recv for up to a second)."""
    conn = getattr(client, "conn", None)
    sock = getattr(conn, "socket", None) if conn is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
