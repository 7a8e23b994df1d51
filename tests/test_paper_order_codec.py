"""The paper gateway's order codec, round-tripped through the REAL clients (no mocks of ibapi/ib_async).

* placeOrder: ibapi's ``EClient.placeOrder`` and ib_async's ``Client.placeOrder`` write the bytes (their
  connection is replaced by a recorder), ``decode_place_order`` reads them back.
* OPEN_ORDER / COMPLETED_ORDER: ``encode_*`` writes them, ibapi's ``Decoder`` and ib_async's ``Decoder``
  read them back (ibapi's reader is also checked to consume exactly every field).
* The real gateway capture ``open_order_1.txt`` decodes and re-encodes field for field.

Attributes the protocol does not carry are listed (with the reason) in the ``*_NOT_CARRIED`` sets below;
every other attribute of Contract / Order / OrderState is compared.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from decimal import Decimal
from pathlib import Path

import pytest
from ib_async import order as ia_order
from ib_async.client import Client as IAClient
from ib_async.contract import ComboLeg as IAComboLeg
from ib_async.contract import Contract as IAContract
from ib_async.contract import DeltaNeutralContract as IADeltaNeutralContract
from ib_async.contract import TagValue as IATagValue
from ib_async.decoder import Decoder as IADecoder
from ibapi import order_condition as oc
from ibapi.client import EClient
from ibapi.const import UNSET_DECIMAL, UNSET_DOUBLE, UNSET_INTEGER
from ibapi.contract import ComboLeg, Contract, DeltaNeutralContract
from ibapi.decoder import Decoder
from ibapi.order import Order, OrderComboLeg
from ibapi.order_state import OrderAllocation, OrderState
from ibapi.softdollartier import SoftDollarTier
from ibapi.tag_value import TagValue
from ibapi.wrapper import EWrapper

from addin.paper.codec import wire
from addin.paper.codec.order_codec import (
    decode_place_order,
    encode_completed_order,
    encode_completed_orders_end,
    encode_open_order,
)
from addin.protocol.framing import frame
from addin.protocol.unset import UNSET_DOUBLE_TEXT

SV = 178

# ------------------------------------------------------------------------------------------------
# What each message does not carry (so is not compared)
# ------------------------------------------------------------------------------------------------

# Never on the wire at server version 178 in any order message (later versions or protobuf only).
_ORDER_NEWER = {
    "customerAccount", "professionalCustomer", "bondAccruedInterest", "includeOvernight",  # 183..189
    "manualOrderIndicator", "submitter",  # 192 / 198
    "hedgeMaxSize", "postOnly", "allowPreOpen", "ignoreOpenAuction", "deactivate", "seekPriceImprovement",
    "whatIfType", "slOrderId", "slOrderType", "ptOrderId", "ptOrderType",  # protobuf only
}
_CONTRACT_NEVER = {"lastTradeDate", "includeExpired", "description", "issuerId"}

PLACE_CONTRACT_NOT_CARRIED = _CONTRACT_NEVER | {"comboLegsDescrip"}  # descriptions come from the server
PLACE_ORDER_NOT_CARRIED = _ORDER_NEWER | {
    "clientId", "permId",  # assigned by the server
    "basisPoints", "basisPointsType",  # EFP attributes the server reports
    "softDollarTier.displayName",  # the server names the tier
    # completed-order attributes the server reports
    "autoCancelDate", "filledQuantity", "refFuturesConId", "shareholder", "routeMarketableToBbo",
    "parentPermId",
    "imbalanceOnly",  # placeOrder sends it from 199
}

OPEN_CONTRACT_NOT_CARRIED = _CONTRACT_NEVER | {"primaryExchange", "secIdType", "secId"}
OPEN_ORDER_NOT_CARRIED = _ORDER_NEWER | {
    "transmit", "overridePercentageConstraints", "scaleTable", "activeStartTime", "activeStopTime", "algoId",
    "orderMiscOptions", "mifid2DecisionMaker", "mifid2DecisionAlgo", "mifid2ExecutionTrader",
    "mifid2ExecutionAlgo", "advancedErrorOverride", "manualOrderTime",
    "extOperator",  # in OPEN_ORDER from 193
    "imbalanceOnly",  # in OPEN_ORDER from 199
    "autoCancelDate", "filledQuantity", "refFuturesConId", "shareholder", "routeMarketableToBbo",
    "parentPermId",  # COMPLETED_ORDER only
}
OPEN_STATE_NOT_CARRIED = {
    "completedTime", "completedStatus",  # COMPLETED_ORDER only
    "marginCurrency", "suggestedSize", "rejectReason", "orderAllocations",  # from 195
    *(f"{w}{s}OutsideRTH" for w in ("initMargin", "maintMargin", "equityWithLoan")
      for s in ("Before", "Change", "After")),
}

COMPLETED_ORDER_NOT_CARRIED = (OPEN_ORDER_NOT_CARRIED - {
    "autoCancelDate", "filledQuantity", "refFuturesConId", "shareholder", "routeMarketableToBbo",
    "parentPermId", "imbalanceOnly",
}) | {
    "orderId", "clientId", "blockOrder", "auctionStrategy", "parentId", "basisPoints", "basisPointsType",
    "optOutSmartRouting", "whatIf", "softDollarTier", "discretionaryUpToLimitPrice", "usePriceMgmtAlgo",
    "duration", "postToAts",
    "deltaNeutralSettlingFirm", "deltaNeutralClearingAccount", "deltaNeutralClearingIntent",
    "deltaNeutralOpenClose",
    "adjustedOrderType", "triggerPrice", "adjustedStopPrice", "adjustedStopLimitPrice",
    "adjustedTrailingAmount", "adjustableTrailingUnit",
}
COMPLETED_STATE_CARRIED = {"status", "completedTime", "completedStatus"}


# ------------------------------------------------------------------------------------------------
# Comparison: objects of either client -> nested plain values
# ------------------------------------------------------------------------------------------------

_UNSETS = (UNSET_DOUBLE, UNSET_INTEGER, UNSET_DECIMAL)


def norm(v):
    """Plain, comparable values: unset numbers and None -> None, numbers -> float, empty lists -> None,
    objects of either client -> dicts (ib_async's conditions renamed to ibapi's attribute names)."""
    if v is None or isinstance(v, bool) or isinstance(v, str):
        return v
    if isinstance(v, (int, float, Decimal)):
        return None if any(v == u for u in _UNSETS) else float(v)
    if isinstance(v, (list, tuple)) and not hasattr(v, "_asdict"):
        return [norm(x) for x in v] or None
    if isinstance(v, ia_order.OrderCondition):
        d = {f.name: norm(getattr(v, f.name)) for f in dataclasses.fields(v)}
        d["isConjunctionConnection"] = d.pop("conjunction") == "a"
        if "exch" in d:
            d["exchange"] = d.pop("exch")
        return d
    if hasattr(v, "_asdict"):
        return {k: norm(x) for k, x in v._asdict().items()}
    if dataclasses.is_dataclass(v):
        return {f.name: norm(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return {k: norm(x) for k, x in vars(v).items()}


def _drop(d: dict, paths) -> dict:
    for p in paths:
        head, _, rest = p.partition(".")
        if head in d:
            if rest and isinstance(d[head], dict):
                _drop(d[head], [rest])
            elif not rest:
                del d[head]
    return d


def differences(expected, actual, skip=(), common_only=False, rename=None) -> list[str]:
    """Attribute paths whose values differ (recursively); ``common_only`` compares only the attribute
    names both objects have (for ibapi <-> ib_async comparisons)."""
    a = _drop(norm(expected), skip)
    b = _drop(norm(actual), skip)
    for old, new in (rename or {}).items():
        if old in b:
            b[new] = b.pop(old)
    out: list[str] = []

    def walk(x, y, path):
        if isinstance(x, dict) and isinstance(y, dict):
            keys = (x.keys() & y.keys()) if common_only else (x.keys() | y.keys())
            for k in sorted(keys):
                walk(x.get(k, "<missing>"), y.get(k, "<missing>"), f"{path}.{k}" if path else k)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{path}[{i}]")
        elif x != y:
            out.append(f"{path}: expected {x!r}, got {y!r}")

    walk(a, b, "")
    return out


def assert_same(expected, actual, skip=(), common_only=False, rename=None, what=""):
    diff = differences(expected, actual, skip, common_only, rename)
    assert not diff, f"{what}: " + "; ".join(diff)


# ------------------------------------------------------------------------------------------------
# The real clients, with their sockets replaced by recorders
# ------------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.sent: list[bytes] = []

    def sendMsg(self, msg: bytes):
        self.sent.append(msg)

    def isConnected(self):
        return True


class _IbapiWrapper(EWrapper):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []
        self.errors: list[tuple] = []

    def openOrder(self, orderId, contract, order, orderState):
        self.calls.append(("openOrder", orderId, contract, order, orderState))

    def completedOrder(self, contract, order, orderState):
        self.calls.append(("completedOrder", contract, order, orderState))

    def completedOrdersEnd(self):
        self.calls.append(("completedOrdersEnd",))

    def error(self, *args):
        self.errors.append(args)


class IbapiCapture(EClient):
    """ibapi's EClient, 'connected' at ``sv`` with a connection that records the frames it sends."""

    def __init__(self, sv: int = SV):
        self.recorder_wrapper = _IbapiWrapper()
        super().__init__(self.recorder_wrapper)
        self.serverVersion_ = sv
        self.conn = _Recorder()
        self.setConnState(EClient.CONNECTED)

    def place(self, order_id, contract, order) -> bytes:
        self.placeOrder(order_id, contract, order)
        assert not self.recorder_wrapper.errors, self.recorder_wrapper.errors
        (msg,) = self.conn.sent
        self.conn.sent.clear()
        return msg


class IbAsyncCapture(IAClient):
    """ib_async's Client at ``sv``; its sendMsg records what its ``send`` serialised."""

    def __init__(self, sv: int = SV):
        super().__init__(wrapper=object())
        self._serverVersion = sv
        self.connState = IAClient.CONNECTED
        self.sent: list[bytes] = []

    def sendMsg(self, msg: str):
        self.sent.append(self._prefix(msg.encode()))

    def place(self, order_id, contract, order) -> bytes:
        self.placeOrder(order_id, contract, order)
        (msg,) = self.sent
        self.sent.clear()
        return msg


def decode_request(frame_bytes: bytes, sv: int = SV):
    assert int.from_bytes(frame_bytes[:4], "big") == len(frame_bytes) - 4
    f = wire.Fields(frame_bytes[4:])
    assert f.next_int("msgId") == 3
    return decode_place_order(f, sv)


class _CountingFields:
    """The field iterator ibapi's Decoder reads from, remembering how far it read."""

    def __init__(self, items):
        self.items, self.pos = list(items), 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= len(self.items):
            raise StopIteration
        self.pos += 1
        return self.items[self.pos - 1]


@functools.cache
def _ibapi_decoder(sv: int) -> Decoder:
    return Decoder(_IbapiWrapper(), sv)


def payload_fields(frame_bytes: bytes) -> list[bytes]:
    assert int.from_bytes(frame_bytes[:4], "big") == len(frame_bytes) - 4
    body = frame_bytes[4:]
    assert body.endswith(b"\0")
    return body.split(b"\0")[:-1]


def ibapi_decode(frame_bytes: bytes, sv: int = SV) -> tuple:
    """Decode one server frame the way ibapi's EClient.run does (msg id split off, rest to interpret)
    and check the decoder consumed exactly every field."""
    fields = payload_fields(frame_bytes)
    dec = _ibapi_decoder(sv)
    dec.wrapper = w = _IbapiWrapper()
    it = _CountingFields(fields[1:])
    dec.interpret(it, int(fields[0]))
    assert not w.errors, w.errors
    assert it.pos == len(it.items), f"ibapi read {it.pos} of {len(it.items)} fields"
    (call,) = w.calls
    return call


class _IAWrapper:
    def __init__(self):
        self.calls = []

    def openOrder(self, orderId, contract, order, orderState):
        self.calls.append(("openOrder", orderId, contract, order, orderState))

    def completedOrder(self, contract, order, orderState):
        self.calls.append(("completedOrder", contract, order, orderState))

    def completedOrdersEnd(self):
        self.calls.append(("completedOrdersEnd",))


def ib_async_decode(frame_bytes: bytes, sv: int = SV) -> tuple:
    """Decode one server frame the way ib_async's Client._onSocketHasData does."""
    msg = frame_bytes[4:].decode(errors="backslashreplace")
    fields = msg.split("\0")
    fields.pop()
    w = _IAWrapper()
    IADecoder(w, sv).interpret(fields)  # logs and swallows exceptions: the call must have happened
    assert len(w.calls) == 1, f"ib_async did not decode {fields[0]}: {fields}"
    return w.calls[0]


# ------------------------------------------------------------------------------------------------
# Orders to send (ibapi objects)
# ------------------------------------------------------------------------------------------------


def stock(symbol="SPY", con_id=756733, exchange="SMART") -> Contract:
    c = Contract()
    c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange = con_id, symbol, "STK", exchange, "ARCA"
    c.currency, c.localSymbol, c.tradingClass, c.strike = "USD", symbol, symbol, 0.0
    return c


def option() -> Contract:
    c = Contract()
    c.conId, c.symbol, c.secType, c.lastTradeDateOrContractMonth = 654321, "SPY", "OPT", "20240621"
    c.strike, c.right, c.multiplier, c.exchange, c.currency = 400.0, "C", "100", "SMART", "USD"
    c.localSymbol, c.tradingClass = "SPY   240621C00400000", "SPY"
    return c


def combo() -> Contract:
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency, c.strike = "SPY", "BAG", "SMART", "USD", 0.0
    for con_id, ratio, action in ((654321, 1, "BUY"), (654322, 2, "SELL")):
        leg = ComboLeg()
        leg.conId, leg.ratio, leg.action, leg.exchange = con_id, ratio, action, "SMART"
        leg.openClose, leg.shortSaleSlot, leg.designatedLocation, leg.exemptCode = 1, 0, "", -1
        c.comboLegs.append(leg)
    return c


def order(action: str, qty, order_type: str, **attrs) -> Order:
    o = Order()
    o.action, o.totalQuantity, o.orderType = action, Decimal(qty), order_type
    for k, v in attrs.items():
        assert hasattr(o, k), k
        setattr(o, k, v)
    return o


def _conditions():
    return [
        oc.PriceCondition(oc.PriceCondition.TriggerMethodEnum.Last, 756733, "SMART", True, 401.5),
        oc.TimeCondition(False, "20240102 15:30:00 US/Eastern").Or(),
        oc.MarginCondition(True, 30),
        oc.ExecutionCondition("STK", "SMART", "AAPL"),
        oc.VolumeCondition(756733, "SMART", True, 100000),
        oc.PercentChangeCondition(756733, "SMART", False, 2.5),
    ]


def place_cases() -> list[tuple[str, Contract, Order]]:
    """(name, contract, order) covering order types, TIFs and the optional message parts."""
    spy = stock
    ugly = dict(  # every plain scalar placeOrder carries, set away from its default
        tif="GTD", goodAfterTime="20240102 09:30:00 US/Eastern", goodTillDate="20240103 16:00:00 US/Eastern",
        ocaGroup="", account="DU1234567", openClose="C", origin=0, orderRef="ref;x=1", blockOrder=True,
        sweepToFill=True, displaySize=100, triggerMethod=2, hidden=True, discretionaryAmt=0.05,
        faGroup="G1", faMethod="EqualQuantity", faPercentage="", modelCode="M1", shortSaleSlot=2,
        designatedLocation="LOC", exemptCode=3, rule80A="A", settlingFirm="FIRM", allOrNone=True, minQty=10,
        percentOffset=0.01, auctionStrategy=1, startingPrice=1.5, stockRefPrice=400.0, delta=0.5,
        stockRangeLower=390.0, stockRangeUpper=410.0, overridePercentageConstraints=True,
        clearingAccount="CA", clearingIntent="IB", notHeld=True, solicited=True, randomizeSize=True,
        randomizePrice=True, optOutSmartRouting=True, algoId="A1", extOperator="OP",
        softDollarTier=SoftDollarTier("tierName", "tierVal", ""), cashQty=5000.0,
        mifid2DecisionMaker="DM", mifid2DecisionAlgo="DA", mifid2ExecutionTrader="ET",
        mifid2ExecutionAlgo="EA", dontUseAutoPriceForHedge=True, isOmsContainer=True,
        discretionaryUpToLimitPrice=True, usePriceMgmtAlgo=True, duration=60, postToAts=1,
        autoCancelParent=True, advancedErrorOverride="8229", manualOrderTime="20240102 10:00:00",
        adjustedOrderType="STP LMT", triggerPrice=395.0, lmtPriceOffset=0.25, adjustedStopPrice=394.0,
        adjustedStopLimitPrice=393.5, adjustedTrailingAmount=1.0, adjustableTrailingUnit=1,
        orderMiscOptions=[TagValue("opt1", "v1"), TagValue("opt2", "v2")], scaleTable="1/2",
        activeStartTime="20240102 09:30:00", activeStopTime="20240102 16:00:00",
    )
    return [
        ("mkt_day", spy(), order("BUY", 100, "MKT", tif="DAY")),
        ("lmt_gtc_outside_rth", spy(), order("SELL", 50, "LMT", lmtPrice=401.25, tif="GTC", outsideRth=True)),
        ("lmt_ioc", spy(), order("BUY", 1, "LMT", lmtPrice=400.0, tif="IOC")),
        ("lmt_fok", spy(), order("BUY", 2, "LMT", lmtPrice=400.0, tif="FOK")),
        ("stp", spy(), order("SELL", 10, "STP", auxPrice=390.0, tif="DAY")),
        ("stp_lmt", spy(), order("BUY", 10, "STP LMT", lmtPrice=411.0, auxPrice=410.5)),
        ("trail_amount", spy(), order("SELL", 100, "TRAIL", auxPrice=2.5, trailStopPrice=397.5)),
        ("trail_percent", spy(), order("SELL", 100, "TRAIL", trailingPercent=1.5, trailStopPrice=394.0)),
        ("trail_limit", spy(), order("SELL", 5, "TRAIL LIMIT", auxPrice=1.0, trailStopPrice=398.0,
                                     lmtPriceOffset=0.1)),
        ("moc", spy(), order("BUY", 100, "MOC")),
        ("loc", spy(), order("SELL", 100, "LOC", lmtPrice=405.0)),
        ("bracket_parent", spy(), order("BUY", 100, "LMT", lmtPrice=400.0, transmit=False)),
        ("bracket_child", spy(), order("SELL", 100, "STP", auxPrice=390.0, parentId=41, transmit=False)),
        ("oca", spy(), order("SELL", 100, "LMT", lmtPrice=420.0, ocaGroup="OCA-1", ocaType=1)),
        ("what_if", spy(), order("BUY", 100, "LMT", lmtPrice=400.0, whatIf=True)),
        ("ref_account_fraction", spy(), order("BUY", "0.5", "MKT", orderRef="my-ref:7", account="DU7654321")),
        ("algo", spy(), order("BUY", 100, "LMT", lmtPrice=400.0, algoStrategy="Adaptive",
                               algoParams=[TagValue("adaptivePriority", "Urgent")])),
        ("algo_no_params", spy(), order("BUY", 100, "MKT", algoStrategy="Vwap")),
        ("bag", combo(), order("BUY", 1, "LMT", lmtPrice=-1.25,
                               orderComboLegs=[_combo_price(1.5), _combo_price(UNSET_DOUBLE)],
                               smartComboRoutingParams=[TagValue("NonGuaranteed", "1")])),
        ("conditions", spy(), order("BUY", 100, "LMT", lmtPrice=400.0, conditions=_conditions(),
                                    conditionsIgnoreRth=True, conditionsCancelOrder=True)),
        ("vol_delta_neutral", _with_dnc(option()), order(
            "BUY", 1, "VOL", volatility=25.0, volatilityType=2, deltaNeutralOrderType="LMT",
            deltaNeutralAuxPrice=1.0, deltaNeutralConId=756733, deltaNeutralSettlingFirm="SF",
            deltaNeutralClearingAccount="DCA", deltaNeutralClearingIntent="Away", deltaNeutralOpenClose="O",
            deltaNeutralShortSale=True, deltaNeutralShortSaleSlot=1, deltaNeutralDesignatedLocation="DL",
            continuousUpdate=True, referencePriceType=1)),
        ("scale", spy(), order("BUY", 1000, "LMT", lmtPrice=400.0, scaleInitLevelSize=100,
                               scaleSubsLevelSize=50, scalePriceIncrement=0.05, scalePriceAdjustValue=0.01,
                               scalePriceAdjustInterval=60, scaleProfitOffset=0.5, scaleAutoReset=True,
                               scaleInitPosition=0, scaleInitFillQty=0, scaleRandomPercent=True)),
        ("hedge", spy(), order("BUY", 100, "LMT", lmtPrice=400.0, hedgeType="B", hedgeParam="beta=1.2")),
        ("peg_bench", spy(), order("BUY", 100, "PEG BENCH", referenceContractId=12345,
                                   isPeggedChangeAmountDecrease=True, peggedChangeAmount=0.5,
                                   referenceChangeAmount=0.25, referenceExchangeId="NYSE")),
        ("peg_mid_ibkrats", spy(exchange="IBKRATS"), order("BUY", 100, "PEG MID", minTradeQty=10,
                                                           midOffsetAtWhole=0.01, midOffsetAtHalf=0.005)),
        ("peg_best_up_to_mid", spy(exchange="IBKRATS"), order(
            "BUY", 100, "PEG BEST", minTradeQty=5, minCompeteSize=100, competeAgainstBestOffset=math.inf,
            midOffsetAtWhole=0.02, midOffsetAtHalf=0.01)),
        ("peg_best_offset", spy(exchange="IBKRATS"), order("SELL", 100, "PEG BEST", minTradeQty=5,
                                                           minCompeteSize=100, competeAgainstBestOffset=0.02)),
        ("cash_qty", _with_sec_id(spy()), order("BUY", UNSET_DECIMAL, "MKT", cashQty=1000.0)),
        ("every_scalar", _with_sec_id(spy()), order("SELL", 300, "REL", lmtPrice=401.0, auxPrice=0.01,
                                                    **ugly)),
    ]


def _combo_price(p):
    leg = OrderComboLeg()
    leg.price = p
    return leg


def _with_dnc(c: Contract) -> Contract:
    dnc = DeltaNeutralContract()
    dnc.conId, dnc.delta, dnc.price = 756733, 0.5, 400.25
    c.deltaNeutralContract = dnc
    return c


def _with_sec_id(c: Contract) -> Contract:
    c.secIdType, c.secId = "ISIN", "US78462F1030"
    return c


PLACE_NAMES = [name for name, _, _ in place_cases()]


def _case(name):
    return next((c, o) for n, c, o in place_cases() if n == name)


# ------------------------------------------------------------------------------------------------
# placeOrder
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLACE_NAMES)
def test_place_order_from_ibapi(name):
    contract, order_ = _case(name)
    order_.orderId = 17
    msg = IbapiCapture().place(17, contract, order_)
    order_id, got_contract, got_order = decode_request(msg)
    assert order_id == 17
    assert_same(contract, got_contract, PLACE_CONTRACT_NOT_CARRIED, what="contract")
    assert_same(order_, got_order, PLACE_ORDER_NOT_CARRIED, what="order")


# attributes ibapi refuses to send below these server versions (they go back to Order() defaults)
_INTRODUCED_AT = {
    "duration": 158, "postToAts": 160, "autoCancelParent": 162, "advancedErrorOverride": 166,
    "manualOrderTime": 169, "minTradeQty": 170, "minCompeteSize": 170, "competeAgainstBestOffset": 170,
    "midOffsetAtWhole": 170, "midOffsetAtHalf": 170,
}


@pytest.mark.parametrize("sv", [157, 165, 176, 188, 200])
@pytest.mark.parametrize("name", ["every_scalar", "bag", "conditions", "peg_best_up_to_mid", "vol_delta_neutral"])
def test_place_order_from_ibapi_other_versions(name, sv):
    """The field layout follows the negotiated version (faProfile < 177, RFQ placeholders 187..189, ...)."""
    contract, order_ = _case(name)
    defaults = Order()
    for attr, version in _INTRODUCED_AT.items():
        if sv < version:
            setattr(order_, attr, getattr(defaults, attr))
    order_.orderId = 3
    msg = IbapiCapture(sv).place(3, contract, order_)
    order_id, got_contract, got_order = decode_request(msg, sv)
    assert order_id == 3
    assert_same(contract, got_contract, PLACE_CONTRACT_NOT_CARRIED, what="contract")
    assert_same(order_, got_order, PLACE_ORDER_NOT_CARRIED, what="order")


def _ia_contract(c: Contract) -> IAContract:
    ia = IAContract(**{k: v for k, v in vars(c).items()
                       if k not in ("comboLegs", "deltaNeutralContract", "lastTradeDate")})
    ia.strike = 0.0 if c.strike == UNSET_DOUBLE else c.strike
    ia.comboLegs = [IAComboLeg(**vars(leg)) for leg in c.comboLegs]
    if c.deltaNeutralContract:
        ia.deltaNeutralContract = IADeltaNeutralContract(**vars(c.deltaNeutralContract))
    return ia


_IA_CONDITION = {oc.OrderCondition.Price: ia_order.PriceCondition, oc.OrderCondition.Time: ia_order.TimeCondition,
                 oc.OrderCondition.Margin: ia_order.MarginCondition,
                 oc.OrderCondition.Execution: ia_order.ExecutionCondition,
                 oc.OrderCondition.Volume: ia_order.VolumeCondition,
                 oc.OrderCondition.PercentChange: ia_order.PercentChangeCondition}


def _ia_condition(cond):
    d = {k: v for k, v in vars(cond).items() if k not in ("isConjunctionConnection",)}
    d["conjunction"] = "a" if cond.isConjunctionConnection else "o"
    if "exchange" in d:
        d["exch"] = d.pop("exchange")
    return _IA_CONDITION[cond.type()](**d)


def _ia_order(o: Order) -> ia_order.Order:
    """The same order as ib_async's Order (ib_async floats for quantities; its own condition classes)."""
    names = {f.name for f in dataclasses.fields(ia_order.Order)}
    ia = ia_order.Order(**{k: v for k, v in vars(o).items() if k in names})
    ia.totalQuantity = 0.0 if o.totalQuantity == UNSET_DECIMAL else float(o.totalQuantity)
    ia.usePriceMgmtAlgo = bool(o.usePriceMgmtAlgo)
    ia.softDollarTier = ia_order.SoftDollarTier(o.softDollarTier.name, o.softDollarTier.val, "")
    ia.conditions = [_ia_condition(cond) for cond in o.conditions]
    for attr in ("algoParams", "smartComboRoutingParams", "orderMiscOptions"):
        setattr(ia, attr, [IATagValue(tv.tag, tv.value) for tv in getattr(o, attr) or []])
    ia.orderComboLegs = [ia_order.OrderComboLeg(leg.price) for leg in o.orderComboLegs or []]
    return ia


@pytest.mark.parametrize("name", PLACE_NAMES)
def test_place_order_from_ib_async(name):
    contract, order_ = _case(name)
    ia_c, ia_o = _ia_contract(contract), _ia_order(order_)
    msg = IbAsyncCapture().place(23, ia_c, ia_o)  # note: ib_async blanks `volatility` of non-VOL orders
    order_id, got_contract, got_order = decode_request(msg)
    assert order_id == 23
    assert_same(ia_c, got_contract, PLACE_CONTRACT_NOT_CARRIED, common_only=True, what="contract")
    skip = set(PLACE_ORDER_NOT_CARRIED) | {"orderId"}
    if order_.totalQuantity == UNSET_DECIMAL:  # ib_async has no unset quantity: it sends 0.0
        assert got_order.totalQuantity == 0
        skip.add("totalQuantity")
    assert_same(ia_o, got_order, skip, common_only=True, what="order")
    # and both clients' bytes decode to the same order
    ib_contract, ib_order = _case(name)
    _, c2, o2 = decode_request(IbapiCapture().place(23, ib_contract, ib_order))
    if ib_order.orderType != "VOL":
        o2.volatility = UNSET_DOUBLE
    assert_same(c2, got_contract, what="contract ibapi vs ib_async")
    assert_same(o2, got_order, {"totalQuantity", "usePriceMgmtAlgo"}, what="order ibapi vs ib_async")


def test_place_order_from_ib_async_other_version():
    contract, order_ = _case("every_scalar")
    msg = IbAsyncCapture(176).place(5, _ia_contract(contract), _ia_order(order_))  # with faProfile
    _, _, got = decode_request(msg, 176)
    assert got.faGroup == "G1" and got.modelCode == "M1" and got.manualOrderTime == "20240102 10:00:00"


# --- malformed placeOrder --------------------------------------------------------------------------


def _ibapi_fields(name="every_scalar") -> list[str]:
    contract, order_ = _case(name)
    return IbapiCapture().place(9, contract, order_)[4:].decode().split("\0")[:-1]


def _decode_text_fields(items: list[str]):
    return decode_request(wire.frame(*items))


def test_place_order_truncated_names_the_field():
    items = _ibapi_fields()
    for cut in (2, 20, 60, len(items) - 1):
        with pytest.raises(wire.ProtocolError, match="ended before"):
            _decode_text_fields(items[:cut])
    with pytest.raises(wire.ProtocolError, match="ended before contract.secType"):
        _decode_text_fields(items[:4])


def test_place_order_bad_values_name_the_field():
    items = _ibapi_fields()
    bad = list(items)
    bad[1] = "x9"
    with pytest.raises(wire.ProtocolError, match="orderId"):
        _decode_text_fields(bad)
    qty_at = items.index("SELL") + 1  # action, totalQuantity, orderType, lmtPrice
    bad = list(items)
    bad[qty_at] = "lots"
    with pytest.raises(wire.ProtocolError, match="totalQuantity"):
        _decode_text_fields(bad)
    bad = list(items)
    bad[qty_at + 2] = "cheap"
    with pytest.raises(wire.ProtocolError, match="lmtPrice"):
        _decode_text_fields(bad)
    with pytest.raises(wire.ProtocolError, match="unexpected field"):
        _decode_text_fields(items + ["extra"])


def test_place_order_bad_lists_name_the_field():
    items = _ibapi_fields("bag")
    count_at = items.index("BAG") + 31  # secType .. hidden, then the combo leg count
    assert items[count_at] == "2"
    bad = list(items)
    bad[count_at] = "1000000"
    with pytest.raises(wire.ProtocolError, match="comboLegs.count"):
        _decode_text_fields(bad)
    bad[count_at] = "-1"
    with pytest.raises(wire.ProtocolError, match="comboLegs.count"):
        _decode_text_fields(bad)

    items = _ibapi_fields("conditions")
    at = items.index("a")  # first condition's conjunction; the type is before it
    assert items[at - 1] == "1"
    bad = list(items)
    bad[at - 1] = "2"  # no such condition type
    with pytest.raises(wire.ProtocolError, match=r"conditions\[0\].type"):
        _decode_text_fields(bad)
    bad = list(items)
    bad[at] = "x"
    with pytest.raises(wire.ProtocolError, match=r"conditions\[0\].conjunction"):
        _decode_text_fields(bad)


def test_unsupported_server_version():
    with pytest.raises(ValueError):
        encode_open_order(1, stock(), order("BUY", 1, "MKT"), OrderState(), server_version=201)
    with pytest.raises(wire.ProtocolError, match="server version 100"):
        decode_place_order(wire.Fields(b"1\0"), 100)


# ------------------------------------------------------------------------------------------------
# OPEN_ORDER
# ------------------------------------------------------------------------------------------------


def _server_side(o: Order, order_id: int) -> Order:
    o.orderId, o.clientId, o.permId = order_id, 7, 1351823328 + order_id
    if o.softDollarTier.name:
        o.softDollarTier.displayName = "Tier display"
    return o


def _state(status="Submitted", what_if=False) -> OrderState:
    st = OrderState()
    st.status = status
    if what_if:
        st.initMarginBefore, st.maintMarginBefore, st.equityWithLoanBefore = "1000.5", "900.25", "100000.0"
        st.initMarginChange, st.maintMarginChange, st.equityWithLoanChange = "8000.0", "7000.0", "-3.5"
        st.initMarginAfter, st.maintMarginAfter, st.equityWithLoanAfter = "9000.5", "7900.25", "99996.5"
        st.commissionAndFees, st.minCommissionAndFees, st.maxCommissionAndFees = 1.0, 1.0, 2.5
        st.commissionAndFeesCurrency = "USD"
        st.warningText = "Margin may be insufficient"
    return st


def _open_expected(c: Contract, o: Order):
    """What OPEN_ORDER can carry of these objects: an unset strike becomes 0 (as from a real gateway),
    usePriceMgmtAlgo None becomes False."""
    if c.strike == UNSET_DOUBLE:
        c.strike = 0.0
    o.usePriceMgmtAlgo = bool(o.usePriceMgmtAlgo)
    return c, o


_IA_STATE_NAMES = {"commission": "commissionAndFees", "minCommission": "minCommissionAndFees",
                   "maxCommission": "maxCommissionAndFees", "commissionCurrency": "commissionAndFeesCurrency"}


@pytest.mark.parametrize("name", PLACE_NAMES)
def test_open_order_through_both_clients(name):
    contract, order_ = _case(name)
    _server_side(order_, 31)
    state = _state("PreSubmitted", what_if=order_.whatIf)
    msg = encode_open_order(31, contract, order_, state)
    assert payload_fields(msg)[0] == b"5"
    contract, order_ = _open_expected(contract, order_)

    _, order_id, c, o, st = ibapi_decode(msg)
    assert order_id == 31
    assert_same(contract, c, OPEN_CONTRACT_NOT_CARRIED, what="ibapi contract")
    assert_same(order_, o, OPEN_ORDER_NOT_CARRIED, what="ibapi order")
    assert_same(state, st, OPEN_STATE_NOT_CARRIED, what="ibapi state")

    _, order_id, c, o, st = ib_async_decode(msg)
    assert order_id == 31
    skip = set(OPEN_ORDER_NOT_CARRIED)
    if order_.totalQuantity == UNSET_DECIMAL:  # ib_async reads an unset quantity as 0.0
        assert o.totalQuantity == 0.0
        skip.add("totalQuantity")
    assert_same(contract, c, OPEN_CONTRACT_NOT_CARRIED, common_only=True, what="ib_async contract")
    assert_same(order_, o, skip, common_only=True, what="ib_async order")
    assert_same(state, st, OPEN_STATE_NOT_CARRIED, common_only=True, rename=_IA_STATE_NAMES,
                what="ib_async state")


def test_open_order_unset_doubles_are_written_as_the_literal():
    """Doubles ibapi reads without unset handling stay unset (not 0.0) in both clients."""
    c = Contract()
    c.symbol, c.secType, c.exchange, c.currency = "EUR", "CASH", "IDEALPRO", "USD"  # strike left unset
    o = order("BUY", 20000, "MKT")
    msg = encode_open_order(1, c, o, _state())
    fields = payload_fields(msg)
    assert fields.count(UNSET_DOUBLE_TEXT.encode()) == 7  # trigger, trailStop, lmtOffset, 3 adjusted, cashQty
    _, _, c1, o1, st1 = ibapi_decode(msg)
    _, _, c2, o2, st2 = ib_async_decode(msg)
    assert c1.strike == 0.0 and c2.strike == 0.0
    for attr in ("triggerPrice", "trailStopPrice", "lmtPriceOffset", "adjustedStopPrice", "adjustedStopLimitPrice",
                 "adjustedTrailingAmount", "cashQty", "lmtPrice", "auxPrice", "percentOffset"):
        assert getattr(o1, attr) == UNSET_DOUBLE, attr
        assert getattr(o2, attr) == UNSET_DOUBLE, attr
    assert o1.volatilityType == UNSET_INTEGER and o1.referencePriceType == UNSET_INTEGER
    assert st1.commissionAndFees == UNSET_DOUBLE and st2.commission == UNSET_DOUBLE
    assert len(fields) == 127  # a plain order at 178, message id included


def test_open_order_accepts_ib_async_style_commission_names():
    st = OrderState()
    st.status, st.commission, st.minCommission, st.maxCommission = "PreSubmitted", 1.25, 1.0, 3.0
    st.commissionCurrency = "USD"
    msg = encode_open_order(2, stock(), order("BUY", 1, "MKT"), st)
    *_, got = ibapi_decode(msg)
    assert (got.commissionAndFees, got.minCommissionAndFees, got.maxCommissionAndFees) == (1.25, 1.0, 3.0)
    assert got.commissionAndFeesCurrency == "USD"


# --- the real capture ----------------------------------------------------------------------------

# captures/open_order_1.txt, embedded so the test also runs from a clean clone (the file is compared
# with this copy when /work/shared is present).
CAPTURE_TEXT = (
    r"5\x00190\x00756733\x00SPY\x00STK\x00\x000\x00?\x00\x00SMART\x00USD\x00SPY\x00SPY\x00BUY\x001000\x00MKT"
    r"\x000.0\x000.0\x00IOC\x00\x00DU1234567\x00\x000\x00O-20231203-1921-001-000-2:190\x002\x001351823328"
    r"\x000\x000\x000\x00\x001351823328.0/DU1234567/100\x00\x00\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00"
    r"-1\x000\x00\x00\x00\x00\x00\x002147483647\x000\x000\x000\x00\x003\x000\x000\x00\x000\x000\x00\x000"
    r"\x00None\x00\x000\x00\x00\x00\x00?\x000\x000\x00\x000\x000\x00\x00\x00\x00\x00\x000\x000\x000"
    r"\x002147483647\x002147483647\x00\x00\x000\x00\x00IB\x000\x000\x00\x000\x000\x00PendingCancel"
    + r"\x001.7976931348623157E308" * 9
    + r"\x00\x00\x00\x00\x00\x000\x000\x000\x00None"
    + r"\x001.7976931348623157E308" * 6
    + r"\x000\x00\x00\x00\x000\x001\x000\x000\x000\x00\x00\x000\x00\x00\x00\x00\x00\x00"
)
CAPTURE_FILE = Path(__file__).resolve().parent / "data" / "captures" / "open_order_1.txt"
CAPTURE_SV = 176  # it still carries faProfile (dropped at 177); ibapi reads all 135 fields only at < 177
SHARES_ALLOCATION = 30  # field index (message id = 0): deprecated, ibapi discards what a real gateway puts here


def _capture_payload() -> bytes:
    assert CAPTURE_FILE.read_text().strip() == CAPTURE_TEXT
    return CAPTURE_TEXT.encode().decode("unicode_escape").encode("latin-1")


def _same_field(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)  # "0" vs "0.0"
    except ValueError:
        return False


def test_capture_reencodes_field_for_field():
    payload = _capture_payload()
    cap_fields = payload.split(b"\0")[:-1]
    assert len(cap_fields) == 136
    _, order_id, c, o, st = ibapi_decode(frame(payload), CAPTURE_SV)
    assert (order_id, c.symbol, o.orderType, o.tif, st.status) == (190, "SPY", "MKT", "IOC", "PendingCancel")
    assert o.deltaNeutralOrderType == "None"  # a real gateway's way of writing "no delta-neutral order"

    ours = encode_open_order(order_id, c, o, st, server_version=CAPTURE_SV)
    our_fields = payload_fields(ours)
    assert len(our_fields) == len(cap_fields) == 136
    differing = [i for i, (a, b) in enumerate(zip(cap_fields, our_fields)) if not _same_field(a, b)]
    assert differing == [SHARES_ALLOCATION], [(i, cap_fields[i], our_fields[i]) for i in differing]

    # decoding our encoding gives the same objects, in both clients
    _, order_id2, c2, o2, st2 = ibapi_decode(ours, CAPTURE_SV)
    assert order_id2 == 190
    assert_same(c, c2, what="contract")
    assert_same(o, o2, what="order")
    assert_same(st, st2, what="state")
    ia_capture = ib_async_decode(frame(payload), CAPTURE_SV)
    ia_ours = ib_async_decode(ours, CAPTURE_SV)
    for a, b in zip(ia_capture[1:], ia_ours[1:]):
        assert_same(a, b, what="ib_async")


def test_capture_objects_at_server_version_178():
    """The same order written at 178: one field fewer (faProfile is gone), same values in both clients."""
    payload = _capture_payload()
    _, order_id, c, o, st = ibapi_decode(frame(payload), CAPTURE_SV)
    ours = encode_open_order(order_id, c, o, st)
    assert len(payload_fields(ours)) == 135
    _, _, c2, o2, st2 = ibapi_decode(ours)
    assert_same(c, c2, what="contract")
    assert_same(o, o2, what="order")
    assert_same(st, st2, what="state")
    _, _, c3, o3, st3 = ib_async_decode(ours)
    ia_capture = ib_async_decode(frame(payload), CAPTURE_SV)
    assert_same(ia_capture[2], c3, what="ib_async contract")
    assert_same(ia_capture[3], o3, what="ib_async order")
    assert_same(ia_capture[4], st3, what="ib_async state")


# ------------------------------------------------------------------------------------------------
# COMPLETED_ORDER
# ------------------------------------------------------------------------------------------------


def _completed(o: Order) -> Order:
    """The attributes only COMPLETED_ORDER reports."""
    o.permId, o.autoCancelDate, o.refFuturesConId = 987654321, "20240105", 4242
    o.filledQuantity = Decimal(7) if o.totalQuantity == UNSET_DECIMAL else o.totalQuantity
    o.shareholder, o.imbalanceOnly, o.routeMarketableToBbo, o.parentPermId = "SH", True, True, 123
    return o


def _completed_state(status="Filled") -> OrderState:
    st = OrderState()
    st.status, st.completedTime, st.completedStatus = status, "20240102 10:00:05 America/New_York", status
    return st


@pytest.mark.parametrize("name", PLACE_NAMES)
def test_completed_order_through_both_clients(name):
    contract, order_ = _case(name)
    _completed(order_)
    state = _completed_state("Cancelled" if name == "oca" else "Filled")
    msg = encode_completed_order(contract, order_, state)
    assert payload_fields(msg)[0] == b"101"
    contract, order_ = _open_expected(contract, order_)
    state_skip = set(vars(OrderState())) - COMPLETED_STATE_CARRIED

    _, c, o, st = ibapi_decode(msg)
    assert_same(contract, c, OPEN_CONTRACT_NOT_CARRIED, what="ibapi contract")
    assert_same(order_, o, COMPLETED_ORDER_NOT_CARRIED, what="ibapi order")
    assert_same(state, st, state_skip, what="ibapi state")

    _, c, o, st = ib_async_decode(msg)
    skip = set(COMPLETED_ORDER_NOT_CARRIED)
    if order_.totalQuantity == UNSET_DECIMAL:
        skip.add("totalQuantity")
    assert_same(contract, c, OPEN_CONTRACT_NOT_CARRIED, common_only=True, what="ib_async contract")
    assert_same(order_, o, skip, common_only=True, what="ib_async order")
    assert_same(state, st, state_skip, common_only=True, rename=_IA_STATE_NAMES, what="ib_async state")


def test_completed_orders_end():
    msg = encode_completed_orders_end()
    assert payload_fields(msg) == [b"102"]
    assert ibapi_decode(msg) == ("completedOrdersEnd",)
    assert ib_async_decode(msg) == ("completedOrdersEnd",)


# ------------------------------------------------------------------------------------------------
# Other server versions: ibapi reads exactly what we write, and re-encoding is stable
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sv", [157, 176, 188, 195, 200])
def test_other_versions_round_trip_in_ibapi(sv):
    for name, contract, order_ in place_cases():
        _server_side(order_, 8)
        state = _state(what_if=order_.whatIf)
        if sv >= 195:
            state.marginCurrency, state.initMarginAfterOutsideRTH, state.suggestedSize = "USD", 9100.0, Decimal(90)
            state.rejectReason = "none"
            alloc = OrderAllocation()
            alloc.account, alloc.position, alloc.positionDesired, alloc.isMonetary = "DU1", Decimal(1), Decimal(2), True
            state.orderAllocations = [alloc]
        msg = encode_open_order(8, contract, order_, state, server_version=sv)
        _, _, c, o, st = ibapi_decode(msg, sv)
        assert_same_fields(encode_open_order(8, c, o, st, server_version=sv), msg, name)
        if sv >= 195:
            assert st.suggestedSize == Decimal(90) and st.orderAllocations[0].positionDesired == Decimal(2)

        _completed(order_)
        msg = encode_completed_order(contract, order_, _completed_state(), server_version=sv)
        _, c, o, st = ibapi_decode(msg, sv)
        assert_same_fields(encode_completed_order(c, o, st, server_version=sv), msg, name)


def assert_same_fields(ours: bytes, expected: bytes, what: str):
    a, b = payload_fields(ours), payload_fields(expected)
    assert len(a) == len(b), what
    differing = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if not _same_field(x, y)]
    assert not differing, f"{what}: {differing}"
