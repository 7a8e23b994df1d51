"""The session's typed events: one :class:`Event` per ibapi EWrapper callback, plus the session's own
``notice`` and ``connectivity``, as attributes of :class:`SessionEvents` (``session.events``).

Subscribing is checked by name: ``session.events.openOrder.subscribe(fn)`` is an attribute that mypy
and an IDE resolve, and a misspelt event raises AttributeError at once instead of never firing.
An event fires for every callback that :meth:`addin.ib.session.Session._dispatch` does not answer to
a registered request (by reqId), with the callback's arguments in ibapi's order (the comment on each
line names them). Listeners run on the session's message thread, in subscription order: keep them
quick. A listener that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Generic, ParamSpec

from ibapi.commission_and_fees_report import CommissionAndFeesReport
from ibapi.common import BarData, HistogramData, TickAttrib, TickAttribBidAsk, TickAttribLast
from ibapi.contract import Contract, ContractDetails, DeltaNeutralContract
from ibapi.execution import Execution
from ibapi.order import Order
from ibapi.order_state import OrderState

log = logging.getLogger(__name__)

__all__ = ["Event", "SessionEvents"]

P = ParamSpec("P")


class Event(Generic[P]):
    """The listeners of one callback. ``P``: the callback's arguments (what a listener receives).

    Thread-safe: subscribe and unsubscribe from any thread; ``emit`` reads a snapshot without a lock,
    so a listener may (un)subscribe while the event fires."""

    __slots__ = ("name", "listeners", "_lock")

    def __init__(self, name: str, lock: threading.Lock) -> None:
        self.name = name
        self.listeners: tuple[Callable[P, object], ...] = ()   # a snapshot, replaced on every change
        self._lock = lock

    def subscribe(self, fn: Callable[P, object]) -> None:
        """Call ``fn(*args)`` every time the event fires (once per subscribe)."""
        with self._lock:
            self.listeners = self.listeners + (fn,)

    def unsubscribe(self, fn: Callable[P, object]) -> None:
        """Undo one :meth:`subscribe` of ``fn``; nothing when it is not subscribed."""
        with self._lock:
            listeners = list(self.listeners)
            if fn in listeners:
                listeners.remove(fn)
                self.listeners = tuple(listeners)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every listener with these arguments (the session does this)."""
        for fn in self.listeners:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("listener for %s failed", self.name)

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self.listeners)} listener(s)>"


class SessionEvents:
    """Every event of one Session, by ibapi's callback name (see the module doc). ``by_callback``:
    the same events by name, for the session's dispatch."""

    # The session's own events.
    error: Event[[int, int, str, str]]      # reqId (an order id, or -1), errorCode, errorString,
    # advancedOrderRejectJson: IB errors no registered request took; notices and 1100/1101/1102 not
    notice: Event[[int, int, str]]          # reqId, code, text: farm notices (2100-2199), warnings
    connectivity: Event[[int, str]]         # code (1100 lost, 1101 restored data lost, 1102 kept), text

    # ibapi's EWrapper callbacks, in alphabetical order (tests/test_session.py checks they are all here).
    accountDownloadEnd: Event[[str]]                                    # accountName
    accountSummary: Event[[int, str, str, str, str]]                    # reqId, account, tag, value, currency
    accountSummaryEnd: Event[[int]]                                     # reqId
    accountUpdateMulti: Event[[int, str, str, str, str, str]]
    # reqId, account, modelCode, key, value, currency
    accountUpdateMultiEnd: Event[[int]]                                 # reqId
    bondContractDetails: Event[[int, ContractDetails]]                  # reqId, contractDetails
    commissionAndFeesReport: Event[[CommissionAndFeesReport]]           # commissionAndFeesReport
    completedOrder: Event[[Contract, Order, OrderState]]                # contract, order, orderState
    completedOrdersEnd: Event[[]]
    connectAck: Event[[]]
    connectionClosed: Event[[]]
    contractDetails: Event[[int, ContractDetails]]                      # reqId, contractDetails
    contractDetailsEnd: Event[[int]]                                    # reqId
    currentTime: Event[[int]]                                           # time (epoch seconds)
    currentTimeInMillis: Event[[int]]                                   # timeInMillis
    deltaNeutralValidation: Event[[int, DeltaNeutralContract]]          # reqId, deltaNeutralContract
    displayGroupList: Event[[int, str]]                                 # reqId, groups
    displayGroupUpdated: Event[[int, str]]                              # reqId, contractInfo
    execDetails: Event[[int, Contract, Execution]]                      # reqId, contract, execution
    execDetailsEnd: Event[[int]]                                        # reqId
    familyCodes: Event[[list]]                                          # familyCodes
    fundamentalData: Event[[int, str]]                                  # reqId, data
    headTimestamp: Event[[int, str]]                                    # reqId, headTimestamp
    histogramData: Event[[int, HistogramData]]                          # reqId, items
    historicalData: Event[[int, BarData]]                               # reqId, bar
    historicalDataEnd: Event[[int, str, str]]                           # reqId, start, end
    historicalDataUpdate: Event[[int, BarData]]                         # reqId, bar
    historicalNews: Event[[int, str, str, str, str]]
    # requestId, time, providerCode, articleId, headline
    historicalNewsEnd: Event[[int, bool]]                               # requestId, hasMore
    historicalSchedule: Event[[int, str, str, str, list]]
    # reqId, startDateTime, endDateTime, timeZone, sessions
    historicalTicks: Event[[int, list, bool]]                           # reqId, ticks, done
    historicalTicksBidAsk: Event[[int, list, bool]]                     # reqId, ticks, done
    historicalTicksLast: Event[[int, list, bool]]                       # reqId, ticks, done
    managedAccounts: Event[[str]]                                       # accountsList (comma-separated)
    marketDataType: Event[[int, int]]                                   # reqId, marketDataType
    marketRule: Event[[int, list]]                                      # marketRuleId, priceIncrements
    mktDepthExchanges: Event[[list]]                                    # depthMktDataDescriptions
    newsArticle: Event[[int, int, str]]                                 # requestId, articleType, articleText
    newsProviders: Event[[list]]                                        # newsProviders
    nextValidId: Event[[int]]                                           # orderId
    openOrder: Event[[int, Contract, Order, OrderState]]                # orderId, contract, order, orderState
    openOrderEnd: Event[[]]
    orderBound: Event[[int, int, int]]                                  # permId, clientId, orderId
    orderStatus: Event[[int, str, Decimal, Decimal, float, int, int, float, int, str, float]]
    # orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice, clientId,
    # whyHeld, mktCapPrice
    pnl: Event[[int, float, float, float]]                              # reqId, dailyPnL, unrealizedPnL, realizedPnL
    pnlSingle: Event[[int, Decimal, float, float, float, float]]
    # reqId, pos, dailyPnL, unrealizedPnL, realizedPnL, value
    position: Event[[str, Contract, Decimal, float]]                    # account, contract, position, avgCost
    positionEnd: Event[[]]
    positionMulti: Event[[int, str, str, Contract, Decimal, float]]
    # reqId, account, modelCode, contract, pos, avgCost
    positionMultiEnd: Event[[int]]                                      # reqId
    realtimeBar: Event[[int, int, float, float, float, float, Decimal, Decimal, int]]
    # reqId, time, open_, high, low, close, volume, wap, count
    receiveFA: Event[[int, str]]                                        # faData, cxml
    replaceFAEnd: Event[[int, str]]                                     # reqId, text
    rerouteMktDataReq: Event[[int, int, str]]                           # reqId, conId, exchange
    rerouteMktDepthReq: Event[[int, int, str]]                          # reqId, conId, exchange
    scannerData: Event[[int, int, ContractDetails, str, str, str, str]]
    # reqId, rank, contractDetails, distance, benchmark, projection, legsStr
    scannerDataEnd: Event[[int]]                                        # reqId
    scannerParameters: Event[[str]]                                     # xml
    securityDefinitionOptionParameter: Event[[int, str, int, str, str, set, set]]
    # reqId, exchange, underlyingConId, tradingClass, multiplier, expirations, strikes
    securityDefinitionOptionParameterEnd: Event[[int]]                  # reqId
    smartComponents: Event[[int, dict]]                                 # reqId, smartComponentMap
    softDollarTiers: Event[[int, list]]                                 # reqId, tiers
    symbolSamples: Event[[int, list]]                                   # reqId, contractDescriptions
    tickByTickAllLast: Event[[int, int, int, float, Decimal, TickAttribLast, str, str]]
    # reqId, tickType, time, price, size, tickAttribLast, exchange, specialConditions
    tickByTickBidAsk: Event[[int, int, float, float, Decimal, Decimal, TickAttribBidAsk]]
    # reqId, time, bidPrice, askPrice, bidSize, askSize, tickAttribBidAsk
    tickByTickMidPoint: Event[[int, int, float]]                        # reqId, time, midPoint
    tickEFP: Event[[int, int, float, str, float, int, str, float, float]]
    # reqId, tickType, basisPoints, formattedBasisPoints, totalDividends, holdDays, futureLastTradeDate,
    # dividendImpact, dividendsToLastTradeDate
    tickGeneric: Event[[int, int, float]]                               # reqId, tickType, value
    tickNews: Event[[int, int, str, str, str, str]]
    # tickerId, timeStamp, providerCode, articleId, headline, extraData
    tickOptionComputation: Event[[int, int, int, float, float, float, float, float, float, float, float]]
    # reqId, tickType, tickAttrib, impliedVol, delta, optPrice, pvDividend, gamma, vega, theta, undPrice
    tickPrice: Event[[int, int, float, TickAttrib]]                     # reqId, tickType, price, attrib
    tickReqParams: Event[[int, float, str, int]]
    # tickerId, minTick, bboExchange, snapshotPermissions
    tickSize: Event[[int, int, Decimal]]                                # reqId, tickType, size
    tickSnapshotEnd: Event[[int]]                                       # reqId
    tickString: Event[[int, int, str]]                                  # reqId, tickType, value
    updateAccountTime: Event[[str]]                                     # timeStamp
    updateAccountValue: Event[[str, str, str, str]]                     # key, val, currency, accountName
    updateMktDepth: Event[[int, int, int, int, float, Decimal]]
    # reqId, position, operation, side, price, size
    updateMktDepthL2: Event[[int, int, str, int, int, float, Decimal, bool]]
    # reqId, position, marketMaker, operation, side, price, size, isSmartDepth
    updateNewsBulletin: Event[[int, int, str, str]]                     # msgId, msgType, newsMessage, originExch
    updatePortfolio: Event[[Contract, Decimal, float, float, float, float, float, str]]
    # contract, position, marketPrice, marketValue, averageCost, unrealizedPNL, realizedPNL, accountName
    userInfo: Event[[int, str]]                                         # reqId, whiteBrandingId
    verifyAndAuthCompleted: Event[[bool, str]]                          # isSuccessful, errorText
    verifyAndAuthMessageAPI: Event[[str, str]]                          # apiData, xyzChallange
    verifyCompleted: Event[[bool, str]]                                 # isSuccessful, errorText
    verifyMessageAPI: Event[[str]]                                      # apiData
    winError: Event[[str, int]]                                         # text, lastError
    wshEventData: Event[[int, str]]                                     # reqId, dataJson
    wshMetaData: Event[[int, str]]                                      # reqId, dataJson

    def __init__(self) -> None:
        lock = threading.Lock()
        # One Event per name annotated above: the annotations are the list of events.
        self.by_callback: dict[str, Event] = {name: Event(name, lock) for name in _EVENT_NAMES}
        for name, event in self.by_callback.items():
            setattr(self, name, event)


_EVENT_NAMES = tuple(SessionEvents.__annotations__)
