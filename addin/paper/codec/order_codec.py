"""The order messages of the TWS API, as the paper gateway speaks them.

* :func:`decode_place_order` reads a client's PLACE_ORDER (3) request: the mirror image of
  ``ibapi.client.EClient.placeOrder`` (ib_async's ``Client.placeOrder`` writes the same fields).
* :func:`encode_open_order` writes OPEN_ORDER (5): the mirror image of ibapi's
  ``Decoder.processOpenOrder`` + ``orderdecoder.OrderDecoder`` (ib_async's ``Decoder.openOrder`` reads
  the same fields).
* :func:`encode_completed_order` / :func:`encode_completed_orders_end` write COMPLETED_ORDER (101) and
  COMPLETED_ORDERS_END (102), mirroring ``Decoder.processCompletedOrderMsg``.

Each function reads top to bottom like the client code it mirrors, and honours that code's
server-version thresholds (``ibapi.server_versions``) for any version from 145 (the first without a
message version field, ``MIN_SERVER_VER_ORDER_CONTAINER``) to 200 (the last before protobuf). Thresholds
below 145 are always met in that range; they are named in comments, not tested. The gateway
serves 178; the real capture ``open_order_1.txt`` was recorded below 177 (it still carries faProfile).

How unset values are written (the way a real gateway writes them, see captures/open_order_1.txt):

* numbers the clients read *with* unset handling (ibapi ``decode(..., SHOW_UNSET)``) are written empty
  when unset; displaySize and the scale level sizes get the literal ``2147483647`` as a real gateway does;
* numbers the clients read *without* unset handling (triggerPrice, the second trailStopPrice,
  lmtPriceOffset, the adjusted* prices, cashQty, volatilityType, referencePriceType, ...) are written as the
  literals ``1.7976931348623157E308`` / ``2147483647`` when unset, so they decode as unset, not as 0;
* an unset contract strike is written ``0`` (a real gateway writes 0 for a stock; both clients read 0.0).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ibapi import order_condition as oc
from ibapi.contract import ComboLeg, Contract, DeltaNeutralContract
from ibapi.order import COMPETE_AGAINST_BEST_OFFSET_UP_TO_MID, Order, OrderComboLeg
from ibapi.order_state import OrderState
from ibapi.server_versions import (
    MIN_SERVER_VER_ADVANCED_ORDER_REJECT,  # 166
    MIN_SERVER_VER_AUTO_CANCEL_PARENT,  # 162
    MIN_SERVER_VER_BOND_ACCRUED_INTEREST,  # 185
    MIN_SERVER_VER_CME_TAGGING_FIELDS,  # 192
    MIN_SERVER_VER_CME_TAGGING_FIELDS_IN_OPEN_ORDER,  # 193
    MIN_SERVER_VER_CUSTOMER_ACCOUNT,  # 183
    MIN_SERVER_VER_D_PEG_ORDERS,  # 148
    MIN_SERVER_VER_DURATION,  # 158
    MIN_SERVER_VER_FA_PROFILE_DESUPPORT,  # 177
    MIN_SERVER_VER_FULL_ORDER_PREVIEW_FIELDS,  # 195
    MIN_SERVER_VER_IMBALANCE_ONLY,  # 199
    MIN_SERVER_VER_INCLUDE_OVERNIGHT,  # 189
    MIN_SERVER_VER_MANUAL_ORDER_TIME,  # 169
    MIN_SERVER_VER_ORDER_CONTAINER,  # 145
    MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS,  # 170
    MIN_SERVER_VER_POST_TO_ATS,  # 160
    MIN_SERVER_VER_PRICE_MGMT_ALGO,  # 151
    MIN_SERVER_VER_PROFESSIONAL_CUSTOMER,  # 184
    MIN_SERVER_VER_PROTOBUF,  # 201
    MIN_SERVER_VER_RFQ_FIELDS,  # 187
    MIN_SERVER_VER_SUBMITTER,  # 198
    MIN_SERVER_VER_UNDO_RFQ_FIELDS,  # 190
)
from ibapi.softdollartier import SoftDollarTier
from ibapi.tag_value import TagValue
from ibapi.utils import isPegBenchOrder, isPegBestOrder, isPegMidOrder

from ...protocol.messages import IN
from ...protocol.unset import UNSET_DECIMAL, UNSET_DECIMAL_TEXTS, UNSET_DOUBLE, UNSET_INTEGER, is_unset
from . import wire
from .wire import ProtocolError

__all__ = [
    "decode_place_order",
    "encode_open_order",
    "encode_completed_order",
    "encode_completed_orders_end",
    "MIN_CODEC_SERVER_VERSION",
    "MAX_CODEC_SERVER_VERSION",
]


MIN_CODEC_SERVER_VERSION = MIN_SERVER_VER_ORDER_CONTAINER  # 145: below it every message has a version field
MAX_CODEC_SERVER_VERSION = MIN_SERVER_VER_PROTOBUF - 1  # 200: from 201 on message ids are raw ints



def _check_version(server_version: int, error=ValueError) -> int:
    if not MIN_CODEC_SERVER_VERSION <= server_version <= MAX_CODEC_SERVER_VERSION:
        raise error(
            f"order messages at server version {server_version} are not supported "
            f"(supported: {MIN_CODEC_SERVER_VERSION}..{MAX_CODEC_SERVER_VERSION})"
        )
    return server_version


# =====================================================================================================
# PLACE_ORDER (3): client -> server
# =====================================================================================================


def _next_decimal(f: wire.Fields, name: str) -> Decimal:
    """A Decimal field as the client wrote it. Out-of-bounds values (NaN, Infinity, 1E+999999, -1)
    are kept, not refused: the broker rejects them with 201 naming the order (``order_values``);
    only a signalling NaN is read as a quiet one, so that comparing it cannot raise."""
    text = f.next_decimal_str(name)
    if text == "" or text in UNSET_DECIMAL_TEXTS or text.lower() == repr(UNSET_DOUBLE):
        return UNSET_DECIMAL
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ProtocolError(f"{name}: expected a quantity, got {_clipped(text)!r}") from None
    return Decimal("NaN") if value.is_snan() else value


def _clipped(text: str, limit: int = 40) -> str:
    """A bad field's text for an error message (a field can be megabytes long)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _next_count(f: wire.Fields, name: str, fields_per_item: int) -> int:
    """A list length; it must be non-negative and leave room for its items."""
    n = f.next_int(name, default=0)
    if n < 0 or n * fields_per_item > f.remaining():
        raise ProtocolError(f"{name}: {n} items do not fit in the {f.remaining()} fields left")
    return n


def _next_tag_values(f: wire.Fields, name: str) -> list[TagValue] | None:
    """``count, (tag, value) * count``; None when empty (ibapi's default for these lists)."""
    n = _next_count(f, f"{name}.count", 2)
    items = [TagValue(f.next_str(f"{name}[{i}].tag"), f.next_str(f"{name}[{i}].value")) for i in range(n)]
    return items or None


def _parse_misc_options(text: str) -> list[TagValue] | None:
    """orderMiscOptions travel as one field ``tag=value;tag=value;`` (TagValue.__str__)."""
    items = []
    for part in text.split(";"):
        if part:
            tag, _, value = part.partition("=")
            items.append(TagValue(tag, value))
    return items or None


def _next_condition(f: wire.Fields, i: int) -> oc.OrderCondition:
    """One order condition: type, then ``OrderCondition.make_fields`` of that type."""
    name = f"conditions[{i}]"
    cond_type = f.next_int(f"{name}.type")
    cond = oc.Create(cond_type)
    if cond is None:
        raise ProtocolError(f"{name}.type: unknown order condition type {cond_type}")
    conjunction = f.next_str(f"{name}.conjunction").strip().lower()
    if conjunction not in ("a", "o"):
        raise ProtocolError(f"{name}.conjunction: expected 'a' or 'o', got {conjunction!r}")
    cond.isConjunctionConnection = conjunction == "a"
    if isinstance(cond, oc.ExecutionCondition):
        cond.secType = f.next_str(f"{name}.secType")
        cond.exchange = f.next_str(f"{name}.exchange")
        cond.symbol = f.next_str(f"{name}.symbol")
        return cond
    # OperatorCondition: isMore, value as text
    cond.isMore = f.next_bool(f"{name}.isMore")
    if isinstance(cond, oc.TimeCondition):
        cond.time = f.next_str(f"{name}.time")
    elif isinstance(cond, oc.VolumeCondition):
        cond.volume = f.next_int(f"{name}.volume")
    elif isinstance(cond, oc.PriceCondition):
        cond.price = f.next_float(f"{name}.price")
    elif isinstance(cond, oc.MarginCondition):
        cond.percent = f.next_float(f"{name}.percent")
    elif isinstance(cond, oc.PercentChangeCondition):
        cond.changePercent = f.next_float(f"{name}.changePercent")
    if isinstance(cond, oc.ContractCondition):
        cond.conId = f.next_int(f"{name}.conId")
        cond.exchange = f.next_str(f"{name}.exchange")
    if isinstance(cond, oc.PriceCondition):
        cond.triggerMethod = f.next_int(f"{name}.triggerMethod")
    return cond


def decode_place_order(
    fields: wire.Fields, server_version: int = wire.SERVER_VERSION
) -> tuple[int, Contract, Order]:
    """Read a PLACE_ORDER request; ``fields`` is positioned just after the message id (3).

    Mirrors ``EClient.placeOrder`` for ``server_version`` (the version the client negotiated). Returns
    ``(orderId, contract, order)``; ``order.orderId`` is set to the request's id as well. Raises
    :class:`wire.ProtocolError` naming the field when the message is malformed, too short or too long
    (and when ``server_version`` is outside 145..200).
    """
    sv = _check_version(server_version, ProtocolError)
    f = fields
    c = Contract()
    o = Order()

    # (no VERSION field from MIN_SERVER_VER_ORDER_CONTAINER = 145 on)
    order_id = f.next_int("orderId")
    o.orderId = order_id

    # contract fields
    c.conId = f.next_int("contract.conId")
    c.symbol = f.next_str("contract.symbol")
    c.secType = f.next_str("contract.secType")
    c.lastTradeDateOrContractMonth = f.next_str("contract.lastTradeDateOrContractMonth")
    c.strike = f.next_float("contract.strike")
    c.right = f.next_str("contract.right")
    c.multiplier = f.next_str("contract.multiplier")
    c.exchange = f.next_str("contract.exchange")
    c.primaryExchange = f.next_str("contract.primaryExchange")
    c.currency = f.next_str("contract.currency")
    c.localSymbol = f.next_str("contract.localSymbol")
    c.tradingClass = f.next_str("contract.tradingClass")  # MIN_SERVER_VER_TRADING_CLASS 68
    c.secIdType = f.next_str("contract.secIdType")  # MIN_SERVER_VER_SEC_ID_TYPE 45
    c.secId = f.next_str("contract.secId")

    # main order fields
    o.action = f.next_str("action")
    o.totalQuantity = _next_decimal(f, "totalQuantity")  # Decimal text since FRACTIONAL_POSITIONS 101
    o.orderType = f.next_str("orderType")
    o.lmtPrice = f.next_float("lmtPrice")
    o.auxPrice = f.next_float("auxPrice")

    # extended order fields
    o.tif = f.next_str("tif")
    o.ocaGroup = f.next_str("ocaGroup")
    o.account = f.next_str("account")
    o.openClose = f.next_str("openClose")
    o.origin = f.next_int("origin")
    o.orderRef = f.next_str("orderRef")
    o.transmit = f.next_bool("transmit")
    o.parentId = f.next_int("parentId")
    o.blockOrder = f.next_bool("blockOrder")
    o.sweepToFill = f.next_bool("sweepToFill")
    o.displaySize = f.next_int("displaySize")
    o.triggerMethod = f.next_int("triggerMethod")
    o.outsideRth = f.next_bool("outsideRth")
    o.hidden = f.next_bool("hidden")

    if c.secType == "BAG":
        # combo legs
        c.comboLegs = []
        for i in range(_next_count(f, "comboLegs.count", 8)):
            leg = ComboLeg()
            leg.conId = f.next_int(f"comboLegs[{i}].conId")
            leg.ratio = f.next_int(f"comboLegs[{i}].ratio")
            leg.action = f.next_str(f"comboLegs[{i}].action")
            leg.exchange = f.next_str(f"comboLegs[{i}].exchange")
            leg.openClose = f.next_int(f"comboLegs[{i}].openClose")
            leg.shortSaleSlot = f.next_int(f"comboLegs[{i}].shortSaleSlot")
            leg.designatedLocation = f.next_str(f"comboLegs[{i}].designatedLocation")
            leg.exemptCode = f.next_int(f"comboLegs[{i}].exemptCode")
            c.comboLegs.append(leg)
        # order combo legs (per-leg prices)
        order_legs = []
        for i in range(_next_count(f, "orderComboLegs.count", 1)):
            leg = OrderComboLeg()
            leg.price = f.next_float(f"orderComboLegs[{i}].price")
            order_legs.append(leg)
        o.orderComboLegs = order_legs or None
        # smart combo routing params
        o.smartComboRoutingParams = _next_tag_values(f, "smartComboRoutingParams")

    f.next_str("sharesAllocation")  # deprecated, always empty
    o.discretionaryAmt = f.next_float("discretionaryAmt")
    o.goodAfterTime = f.next_str("goodAfterTime")
    o.goodTillDate = f.next_str("goodTillDate")
    o.faGroup = f.next_str("faGroup")
    o.faMethod = f.next_str("faMethod")
    o.faPercentage = f.next_str("faPercentage")
    if sv < MIN_SERVER_VER_FA_PROFILE_DESUPPORT:  # 177
        f.next_str("faProfile")  # deprecated
    o.modelCode = f.next_str("modelCode")  # MIN_SERVER_VER_MODELS_SUPPORT 103

    # institutional short sale slot data
    o.shortSaleSlot = f.next_int("shortSaleSlot")
    o.designatedLocation = f.next_str("designatedLocation")
    o.exemptCode = f.next_int("exemptCode")  # MIN_SERVER_VER_SSHORTX_OLD 51

    o.ocaType = f.next_int("ocaType")
    o.rule80A = f.next_str("rule80A")
    o.settlingFirm = f.next_str("settlingFirm")
    o.allOrNone = f.next_bool("allOrNone")
    o.minQty = f.next_int("minQty")
    o.percentOffset = f.next_float("percentOffset")
    f.next_bool("eTradeOnly")  # deprecated, always false
    f.next_bool("firmQuoteOnly")  # deprecated, always false
    f.next_float("nbboPriceCap")  # deprecated, always unset
    o.auctionStrategy = f.next_int("auctionStrategy")
    o.startingPrice = f.next_float("startingPrice")
    o.stockRefPrice = f.next_float("stockRefPrice")
    o.delta = f.next_float("delta")
    o.stockRangeLower = f.next_float("stockRangeLower")
    o.stockRangeUpper = f.next_float("stockRangeUpper")
    o.overridePercentageConstraints = f.next_bool("overridePercentageConstraints")

    # volatility orders
    o.volatility = f.next_float("volatility")
    o.volatilityType = f.next_int("volatilityType")
    o.deltaNeutralOrderType = f.next_str("deltaNeutralOrderType")
    o.deltaNeutralAuxPrice = f.next_float("deltaNeutralAuxPrice")
    if o.deltaNeutralOrderType:  # DELTA_NEUTRAL_CONID 58 + DELTA_NEUTRAL_OPEN_CLOSE 66
        o.deltaNeutralConId = f.next_int("deltaNeutralConId")
        o.deltaNeutralSettlingFirm = f.next_str("deltaNeutralSettlingFirm")
        o.deltaNeutralClearingAccount = f.next_str("deltaNeutralClearingAccount")
        o.deltaNeutralClearingIntent = f.next_str("deltaNeutralClearingIntent")
        o.deltaNeutralOpenClose = f.next_str("deltaNeutralOpenClose")
        o.deltaNeutralShortSale = f.next_bool("deltaNeutralShortSale")
        o.deltaNeutralShortSaleSlot = f.next_int("deltaNeutralShortSaleSlot")
        o.deltaNeutralDesignatedLocation = f.next_str("deltaNeutralDesignatedLocation")
    o.continuousUpdate = f.next_bool("continuousUpdate")
    o.referencePriceType = f.next_int("referencePriceType")

    # trailing orders
    o.trailStopPrice = f.next_float("trailStopPrice")
    o.trailingPercent = f.next_float("trailingPercent")  # MIN_SERVER_VER_TRAILING_PERCENT 62

    # scale orders
    o.scaleInitLevelSize = f.next_int("scaleInitLevelSize")
    o.scaleSubsLevelSize = f.next_int("scaleSubsLevelSize")
    o.scalePriceIncrement = f.next_float("scalePriceIncrement")
    if o.scalePriceIncrement != UNSET_DOUBLE and o.scalePriceIncrement > 0.0:  # SCALE_ORDERS3 60
        o.scalePriceAdjustValue = f.next_float("scalePriceAdjustValue")
        o.scalePriceAdjustInterval = f.next_int("scalePriceAdjustInterval")
        o.scaleProfitOffset = f.next_float("scaleProfitOffset")
        o.scaleAutoReset = f.next_bool("scaleAutoReset")
        o.scaleInitPosition = f.next_int("scaleInitPosition")
        o.scaleInitFillQty = f.next_int("scaleInitFillQty")
        o.scaleRandomPercent = f.next_bool("scaleRandomPercent")
    o.scaleTable = f.next_str("scaleTable")  # MIN_SERVER_VER_SCALE_TABLE 69
    o.activeStartTime = f.next_str("activeStartTime")
    o.activeStopTime = f.next_str("activeStopTime")

    # hedge orders (MIN_SERVER_VER_HEDGE_ORDERS 54)
    o.hedgeType = f.next_str("hedgeType")
    if o.hedgeType:
        o.hedgeParam = f.next_str("hedgeParam")

    o.optOutSmartRouting = f.next_bool("optOutSmartRouting")  # 56
    o.clearingAccount = f.next_str("clearingAccount")  # PTA_ORDERS 39
    o.clearingIntent = f.next_str("clearingIntent")
    o.notHeld = f.next_bool("notHeld")  # 44

    # delta neutral contract (MIN_SERVER_VER_DELTA_NEUTRAL 40)
    if f.next_bool("deltaNeutralContract.present"):
        dnc = DeltaNeutralContract()
        dnc.conId = f.next_int("deltaNeutralContract.conId")
        dnc.delta = f.next_float("deltaNeutralContract.delta")
        dnc.price = f.next_float("deltaNeutralContract.price")
        c.deltaNeutralContract = dnc

    # algo orders (ALGO_ORDERS 41, ALGO_ID 71)
    o.algoStrategy = f.next_str("algoStrategy")
    if o.algoStrategy:
        o.algoParams = _next_tag_values(f, "algoParams")
    o.algoId = f.next_str("algoId")

    o.whatIf = f.next_bool("whatIf")
    o.orderMiscOptions = _parse_misc_options(f.next_str("orderMiscOptions"))  # LINKING 70
    o.solicited = f.next_bool("solicited")  # ORDER_SOLICITED 73
    o.randomizeSize = f.next_bool("randomizeSize")  # RANDOMIZE_SIZE_AND_PRICE 76
    o.randomizePrice = f.next_bool("randomizePrice")

    # pegged to benchmark orders, conditions, adjusted orders (MIN_SERVER_VER_PEGGED_TO_BENCHMARK 102)
    if isPegBenchOrder(o.orderType):
        o.referenceContractId = f.next_int("referenceContractId")
        o.isPeggedChangeAmountDecrease = f.next_bool("isPeggedChangeAmountDecrease")
        o.peggedChangeAmount = f.next_float("peggedChangeAmount")
        o.referenceChangeAmount = f.next_float("referenceChangeAmount")
        o.referenceExchangeId = f.next_str("referenceExchangeId")

    # conditions (each at least type + conjunction)
    n_conditions = _next_count(f, "conditions.count", 2)
    if n_conditions:
        o.conditions = [_next_condition(f, i) for i in range(n_conditions)]
        o.conditionsIgnoreRth = f.next_bool("conditionsIgnoreRth")
        o.conditionsCancelOrder = f.next_bool("conditionsCancelOrder")

    # adjusted orders
    o.adjustedOrderType = f.next_str("adjustedOrderType")
    o.triggerPrice = f.next_float("triggerPrice")
    o.lmtPriceOffset = f.next_float("lmtPriceOffset")
    o.adjustedStopPrice = f.next_float("adjustedStopPrice")
    o.adjustedStopLimitPrice = f.next_float("adjustedStopLimitPrice")
    o.adjustedTrailingAmount = f.next_float("adjustedTrailingAmount")
    o.adjustableTrailingUnit = f.next_int("adjustableTrailingUnit")

    o.extOperator = f.next_str("extOperator")  # EXT_OPERATOR 105
    o.softDollarTier = SoftDollarTier(f.next_str("softDollarTier.name"), f.next_str("softDollarTier.val"), "")  # 106
    o.cashQty = f.next_float("cashQty")  # CASH_QTY 111
    o.mifid2DecisionMaker = f.next_str("mifid2DecisionMaker")
    o.mifid2DecisionAlgo = f.next_str("mifid2DecisionAlgo")
    o.mifid2ExecutionTrader = f.next_str("mifid2ExecutionTrader")  # DECISION_MAKER 138, MIFID_EXECUTION 139
    o.mifid2ExecutionAlgo = f.next_str("mifid2ExecutionAlgo")
    o.dontUseAutoPriceForHedge = f.next_bool("dontUseAutoPriceForHedge")  # AUTO_PRICE_FOR_HEDGE 141
    o.isOmsContainer = f.next_bool("isOmsContainer")  # MIN_SERVER_VER_ORDER_CONTAINER 145
    if sv >= MIN_SERVER_VER_D_PEG_ORDERS:  # 148
        o.discretionaryUpToLimitPrice = f.next_bool("discretionaryUpToLimitPrice")
    if sv >= MIN_SERVER_VER_PRICE_MGMT_ALGO:  # 151: empty = None (let TWS decide)
        v = f.next_int("usePriceMgmtAlgo")
        o.usePriceMgmtAlgo = None if v == UNSET_INTEGER else bool(v)
    if sv >= MIN_SERVER_VER_DURATION:  # 158
        o.duration = f.next_int("duration")
    if sv >= MIN_SERVER_VER_POST_TO_ATS:  # 160
        o.postToAts = f.next_int("postToAts")
    if sv >= MIN_SERVER_VER_AUTO_CANCEL_PARENT:  # 162
        o.autoCancelParent = f.next_bool("autoCancelParent")
    if sv >= MIN_SERVER_VER_ADVANCED_ORDER_REJECT:  # 166
        o.advancedErrorOverride = f.next_str("advancedErrorOverride")
    if sv >= MIN_SERVER_VER_MANUAL_ORDER_TIME:  # 169
        o.manualOrderTime = f.next_str("manualOrderTime")
    if sv >= MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS:  # 170
        send_mid_offsets = False
        if c.exchange == "IBKRATS":
            o.minTradeQty = f.next_int("minTradeQty")
        if isPegBestOrder(o.orderType):
            o.minCompeteSize = f.next_int("minCompeteSize")
            o.competeAgainstBestOffset = f.next_float("competeAgainstBestOffset")
            send_mid_offsets = o.competeAgainstBestOffset == COMPETE_AGAINST_BEST_OFFSET_UP_TO_MID
        elif isPegMidOrder(o.orderType):
            send_mid_offsets = True
        if send_mid_offsets:
            o.midOffsetAtWhole = f.next_float("midOffsetAtWhole")
            o.midOffsetAtHalf = f.next_float("midOffsetAtHalf")
    if sv >= MIN_SERVER_VER_CUSTOMER_ACCOUNT:  # 183
        o.customerAccount = f.next_str("customerAccount")
    if sv >= MIN_SERVER_VER_PROFESSIONAL_CUSTOMER:  # 184
        o.professionalCustomer = f.next_bool("professionalCustomer")
    if MIN_SERVER_VER_RFQ_FIELDS <= sv < MIN_SERVER_VER_UNDO_RFQ_FIELDS:  # 187..189: two placeholders
        f.next_str("externalUserId")
        f.next_str("manualOrderIndicator(rfq)")
    if sv >= MIN_SERVER_VER_INCLUDE_OVERNIGHT:  # 189
        o.includeOvernight = f.next_bool("includeOvernight")
    if sv >= MIN_SERVER_VER_CME_TAGGING_FIELDS:  # 192
        o.manualOrderIndicator = f.next_int("manualOrderIndicator")
    if sv >= MIN_SERVER_VER_IMBALANCE_ONLY:  # 199
        o.imbalanceOnly = f.next_bool("imbalanceOnly")

    if f.remaining():
        raise ProtocolError(
            f"placeOrder: {f.remaining()} unexpected field(s) after the last one of server version {sv}"
        )
    return order_id, c, o


# =====================================================================================================
# OPEN_ORDER (5) and COMPLETED_ORDER (101): server -> client
# =====================================================================================================


def _opt(v):
    """A number the clients read with unset handling: empty when unset (as a real gateway writes it)."""
    return "" if is_unset(v) else v


def _num(v):
    """A number the clients read without unset handling: unset is written as its literal
    (2147483647 / 1.7976931348623157E308), which both clients read back as unset instead of 0."""
    if v is not None and v == UNSET_DECIMAL:
        return UNSET_DOUBLE
    return v


def _int(v):
    """An int field (ibapi reads it with int()): a float holding an integer is written without '.0'."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, Decimal) and v.is_finite() and v == v.to_integral_value():
        return int(v)
    return v


def _opt_int(v):
    return "" if is_unset(v) else _int(v)


def _flag(v) -> bool:
    return bool(v)


def _text(v) -> str:
    return "" if v is None else str(v)


def _qty(v) -> str:
    """A Decimal quantity (totalQuantity, filledQuantity, suggestedSize): empty when unset."""
    if is_unset(v):
        return ""
    if isinstance(v, Decimal):
        return format(v, "f")
    return wire.fmt(v)


def _state_value(state, name: str, old_name: str):
    """ibapi >= 10.30 calls the commission fields ``commissionAndFees*``; ib_async and older ibapi call
    them ``commission*``. Accept either (the new name wins when both are set)."""
    v = getattr(state, name, None)
    if is_unset(v):
        old = getattr(state, old_name, None)
        if old is not None:
            v = old
    return UNSET_DOUBLE if v is None else v


def _strike(v):
    """A real gateway writes 0 for a contract without a strike; both clients read it as 0.0."""
    return 0 if is_unset(v) else v


def _contract_fields(c: Contract) -> list:
    # OrderDecoder.decodeContractFields (no primaryExchange; multiplier/tradingClass since version 32)
    return [
        _int(c.conId),
        c.symbol,
        c.secType,
        c.lastTradeDateOrContractMonth,
        _strike(c.strike),
        c.right,
        c.multiplier,
        c.exchange,
        c.currency,
        c.localSymbol,
        c.tradingClass,
    ]


def _fa_params(o: Order, sv: int) -> list:
    # OrderDecoder.decodeFAParams, then decodeModelCode (MIN_SERVER_VER_MODELS_SUPPORT 103)
    out = [o.faGroup, o.faMethod, o.faPercentage]
    if sv < MIN_SERVER_VER_FA_PROFILE_DESUPPORT:  # 177
        out.append(_text(getattr(o, "faProfile", "")))
    out.append(o.modelCode)
    return out


def _box_and_peg_to_stk_params(o: Order) -> list:
    # OrderDecoder.decodeBoxOrderParams + decodePegToStkOrVolOrderParams
    return [_opt(o.startingPrice), _opt(o.stockRefPrice), _opt(o.delta), _opt(o.stockRangeLower),
            _opt(o.stockRangeUpper)]


def _vol_order_params(o: Order, open_order_attribs: bool) -> list:
    # OrderDecoder.decodeVolOrderParams: the delta-neutral block follows any non-empty order type
    # (a real gateway writes the text "None" here, which makes the clients read the block too)
    out = [_opt(o.volatility), _int(o.volatilityType), o.deltaNeutralOrderType, _opt(o.deltaNeutralAuxPrice)]
    if o.deltaNeutralOrderType:
        out.append(_int(o.deltaNeutralConId))
        if open_order_attribs:
            out += [o.deltaNeutralSettlingFirm, o.deltaNeutralClearingAccount, o.deltaNeutralClearingIntent,
                    o.deltaNeutralOpenClose]
        out += [_flag(o.deltaNeutralShortSale), _int(o.deltaNeutralShortSaleSlot), o.deltaNeutralDesignatedLocation]
    out += [_flag(o.continuousUpdate), _int(o.referencePriceType)]
    return out


def _combo_legs(c: Contract, o: Order) -> list:
    # OrderDecoder.decodeComboLegs: description, contract legs, order legs (per-leg prices)
    legs = c.comboLegs or []
    out = [_text(c.comboLegsDescrip), len(legs)]
    for leg in legs:
        out += [_int(leg.conId), _int(leg.ratio), leg.action, leg.exchange, _int(leg.openClose),
                _int(leg.shortSaleSlot), leg.designatedLocation, _int(leg.exemptCode)]
    order_legs = o.orderComboLegs or []
    out.append(len(order_legs))
    out += [_opt(leg.price) for leg in order_legs]
    return out


def _tag_values(items) -> list:
    items = items or []
    out = [len(items)]
    for tv in items:
        out += [tv.tag, tv.value]
    return out


def _scale_params(o: Order) -> list:
    # OrderDecoder.decodeScaleOrderParams (version >= 20); a real gateway writes unset level sizes
    # as the literal 2147483647
    out = [_int(o.scaleInitLevelSize), _int(o.scaleSubsLevelSize), _opt(o.scalePriceIncrement)]
    inc = o.scalePriceIncrement
    if inc is not None and inc != UNSET_DOUBLE and inc > 0.0:
        out += [_opt(o.scalePriceAdjustValue), _opt_int(o.scalePriceAdjustInterval), _opt(o.scaleProfitOffset),
                _flag(o.scaleAutoReset), _opt_int(o.scaleInitPosition), _opt_int(o.scaleInitFillQty),
                _flag(o.scaleRandomPercent)]
    return out


def _hedge_params(o: Order) -> list:
    # OrderDecoder.decodeHedgeParams
    return [o.hedgeType, o.hedgeParam] if o.hedgeType else [o.hedgeType]


def _delta_neutral_contract(c: Contract) -> list:
    # OrderDecoder.decodeDeltaNeutral
    dnc = c.deltaNeutralContract
    if not dnc:
        return [False]
    return [True, _int(dnc.conId), _num(dnc.delta), _num(dnc.price)]


def _algo_params(o: Order) -> list:
    # OrderDecoder.decodeAlgoParams: the parameter count follows a non-empty strategy only
    if not o.algoStrategy:
        return [o.algoStrategy]
    return [o.algoStrategy] + _tag_values(o.algoParams)


def _peg_to_bench_params(o: Order) -> list:
    # OrderDecoder.decodePegToBenchParams (MIN_SERVER_VER_PEGGED_TO_BENCHMARK 102)
    if not isPegBenchOrder(o.orderType):
        return []
    return [_int(o.referenceContractId), _flag(o.isPeggedChangeAmountDecrease), _num(o.peggedChangeAmount),
            _num(o.referenceChangeAmount), o.referenceExchangeId]


def _condition_value(cond) -> str:
    """OperatorCondition.valueToString, with numbers written so that both clients parse them
    (ib_async reads margin percent and volume with int())."""
    if isinstance(cond, oc.TimeCondition):
        return _text(cond.time)
    if isinstance(cond, (oc.MarginCondition, oc.VolumeCondition)):
        v = cond.percent if isinstance(cond, oc.MarginCondition) else cond.volume
        return wire.fmt(_int(v))
    v = cond.price if isinstance(cond, oc.PriceCondition) else cond.changePercent
    return wire.fmt(float(v))


def _conditions(o: Order) -> list:
    # OrderDecoder.decodeConditions: count, then per condition its type and OrderCondition fields
    conds = o.conditions or []
    out: list = [len(conds)]
    for cond in conds:
        out += [cond.type(), "a" if cond.isConjunctionConnection else "o"]
        if isinstance(cond, oc.ExecutionCondition):
            out += [cond.secType, cond.exchange, cond.symbol]
            continue
        out += [_flag(cond.isMore), _condition_value(cond)]
        if isinstance(cond, oc.ContractCondition):
            out += [_int(cond.conId), cond.exchange]
        if isinstance(cond, oc.PriceCondition):
            out.append(_int(cond.triggerMethod))
    if conds:
        out += [_flag(o.conditionsIgnoreRth), _flag(o.conditionsCancelOrder)]
    return out


def _peg_best_peg_mid(o: Order, sv: int) -> list:
    # OrderDecoder.decodePegBestPegMidOrderAttributes (MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS 170)
    if sv < MIN_SERVER_VER_PEGBEST_PEGMID_OFFSETS:
        return []
    return [_opt_int(o.minTradeQty), _opt_int(o.minCompeteSize), _opt(o.competeAgainstBestOffset),
            _opt(o.midOffsetAtWhole), _opt(o.midOffsetAtHalf)]


def _what_if_info_and_commission(o: Order, st: OrderState, sv: int) -> list:
    # OrderDecoder.decodeWhatIfInfoAndCommissionAndFees
    out = [_flag(o.whatIf), st.status]
    # margins are text, written as given (a real gateway writes 1.7976931348623157E308 when there is no
    # what-if answer; an unset float is written that way too). Before/Change since
    # MIN_SERVER_VER_WHAT_IF_EXT_FIELDS (142), i.e. always in the versions this codec supports.
    for side in ("Before", "Change", "After"):
        for what in ("initMargin", "maintMargin", "equityWithLoan"):
            out.append(wire.fmt(getattr(st, f"{what}{side}", "")))
    out += [
        _opt(_state_value(st, "commissionAndFees", "commission")),
        _opt(_state_value(st, "minCommissionAndFees", "minCommission")),
        _opt(_state_value(st, "maxCommissionAndFees", "maxCommission")),
        _text(getattr(st, "commissionAndFeesCurrency", "") or getattr(st, "commissionCurrency", "")),
    ]
    if sv >= MIN_SERVER_VER_FULL_ORDER_PREVIEW_FIELDS:  # 195
        out.append(_text(getattr(st, "marginCurrency", "")))
        for side in ("Before", "Change", "After"):
            for what in ("initMargin", "maintMargin", "equityWithLoan"):
                out.append(_opt(getattr(st, f"{what}{side}OutsideRTH", UNSET_DOUBLE)))
        out += [_qty(getattr(st, "suggestedSize", UNSET_DECIMAL)), _text(getattr(st, "rejectReason", ""))]
        allocations = getattr(st, "orderAllocations", None) or []
        out.append(len(allocations))
        for a in allocations:
            out += [a.account, _qty(a.position), _qty(a.positionDesired), _qty(a.positionAfter),
                    _qty(a.desiredAllocQty), _qty(a.allowedAllocQty), _flag(a.isMonetary)]
    out.append(_text(st.warningText))
    return out


def encode_open_order(
    order_id: int, contract: Contract, order: Order, state: OrderState, server_version: int = wire.SERVER_VERSION
) -> bytes:
    """A complete OPEN_ORDER (5) frame; reads like ``Decoder.processOpenOrder`` for ``server_version``."""
    sv = _check_version(server_version)
    c, o, st = contract, order, state
    f: list = [IN.OPEN_ORDER]  # no version field from MIN_SERVER_VER_ORDER_CONTAINER (145) on

    f.append(_int(order_id))  # decodeOrderId
    f += _contract_fields(c)  # decodeContractFields

    f += [
        o.action,  # decodeAction
        _qty(o.totalQuantity),  # decodeTotalQuantity
        o.orderType,  # decodeOrderType
        _opt(o.lmtPrice),  # decodeLmtPrice
        _opt(o.auxPrice),  # decodeAuxPrice
        o.tif,  # decodeTIF
        o.ocaGroup,  # decodeOcaGroup
        o.account,  # decodeAccount
        o.openClose,  # decodeOpenClose
        _int(o.origin),  # decodeOrigin
        o.orderRef,  # decodeOrderRef
        _int(o.clientId),  # decodeClientId
        _int(o.permId),  # decodePermId
        _flag(o.outsideRth),  # decodeOutsideRth
        _flag(o.hidden),  # decodeHidden
        _num(o.discretionaryAmt),  # decodeDiscretionaryAmt
        o.goodAfterTime,  # decodeGoodAfterTime
        "",  # skipSharesAllocation (deprecated)
    ]
    f += _fa_params(o, sv)  # decodeFAParams + decodeModelCode
    f += [
        o.goodTillDate,  # decodeGoodTillDate
        o.rule80A,  # decodeRule80A
        _opt(o.percentOffset),  # decodePercentOffset
        o.settlingFirm,  # decodeSettlingFirm
        _int(o.shortSaleSlot),  # decodeShortSaleParams: slot, location, exemptCode
        o.designatedLocation,
        _int(o.exemptCode),
        _int(o.auctionStrategy),  # decodeAuctionStrategy
    ]
    f += _box_and_peg_to_stk_params(o)
    f += [
        _int(o.displaySize),  # decodeDisplaySize (a real gateway writes unset as 2147483647)
        _flag(o.blockOrder),  # decodeBlockOrder
        _flag(o.sweepToFill),  # decodeSweepToFill
        _flag(o.allOrNone),  # decodeAllOrNone
        _opt_int(o.minQty),  # decodeMinQty
        _int(o.ocaType),  # decodeOcaType
        False,  # skipETradeOnly
        False,  # skipFirmQuoteOnly
        "",  # skipNbboPriceCap
        _int(o.parentId),  # decodeParentId
        _int(o.triggerMethod),  # decodeTriggerMethod
    ]
    f += _vol_order_params(o, open_order_attribs=True)
    f += [_opt(o.trailStopPrice), _opt(o.trailingPercent)]  # decodeTrailParams
    f += [_opt(o.basisPoints), _opt_int(o.basisPointsType)]  # decodeBasisPoints
    f += _combo_legs(c, o)
    f += _tag_values(o.smartComboRoutingParams)  # decodeSmartComboRoutingParams
    f += _scale_params(o)
    f += _hedge_params(o)
    f.append(_flag(o.optOutSmartRouting))  # decodeOptOutSmartRouting
    f += [o.clearingAccount, o.clearingIntent]  # decodeClearingParams
    f.append(_flag(o.notHeld))  # decodeNotHeld
    f += _delta_neutral_contract(c)
    f += _algo_params(o)
    f.append(_flag(o.solicited))  # decodeSolicited
    f += _what_if_info_and_commission(o, st, sv)
    f += [_flag(o.randomizeSize), _flag(o.randomizePrice)]  # decodeVolRandomizeFlags
    f += _peg_to_bench_params(o)
    f += _conditions(o)
    f += [
        o.adjustedOrderType,  # decodeAdjustedOrderParams: read without unset handling
        _num(o.triggerPrice),
        _num(o.trailStopPrice),  # decodeStopPriceAndLmtPriceOffset
        _num(o.lmtPriceOffset),
        _num(o.adjustedStopPrice),
        _num(o.adjustedStopLimitPrice),
        _num(o.adjustedTrailingAmount),
        _int(o.adjustableTrailingUnit),
    ]
    tier = o.softDollarTier or SoftDollarTier()
    f += [tier.name, tier.val, tier.displayName]  # decodeSoftDollarTier (106)
    f.append(_num(o.cashQty))  # decodeCashQty (111), read without unset handling
    f.append(_flag(o.dontUseAutoPriceForHedge))  # decodeDontUseAutoPriceForHedge (141)
    f.append(_flag(o.isOmsContainer))  # decodeIsOmsContainers (145)
    if sv >= MIN_SERVER_VER_D_PEG_ORDERS:  # 148
        f.append(_flag(o.discretionaryUpToLimitPrice))
    if sv >= MIN_SERVER_VER_PRICE_MGMT_ALGO:  # 151
        f.append(_flag(o.usePriceMgmtAlgo))
    if sv >= MIN_SERVER_VER_DURATION:  # 158
        f.append(_opt_int(o.duration))
    if sv >= MIN_SERVER_VER_POST_TO_ATS:  # 160
        f.append(_opt_int(o.postToAts))
    if sv >= MIN_SERVER_VER_AUTO_CANCEL_PARENT:  # 162
        f.append(_flag(o.autoCancelParent))
    f += _peg_best_peg_mid(o, sv)  # 170
    if sv >= MIN_SERVER_VER_CUSTOMER_ACCOUNT:  # 183
        f.append(o.customerAccount)
    if sv >= MIN_SERVER_VER_PROFESSIONAL_CUSTOMER:  # 184
        f.append(_flag(o.professionalCustomer))
    if sv >= MIN_SERVER_VER_BOND_ACCRUED_INTEREST:  # 185
        f.append(o.bondAccruedInterest)
    if sv >= MIN_SERVER_VER_INCLUDE_OVERNIGHT:  # 189
        f.append(_flag(o.includeOvernight))
    if sv >= MIN_SERVER_VER_CME_TAGGING_FIELDS_IN_OPEN_ORDER:  # 193
        f += [o.extOperator, _opt_int(o.manualOrderIndicator)]
    if sv >= MIN_SERVER_VER_SUBMITTER:  # 198
        f.append(o.submitter)
    if sv >= MIN_SERVER_VER_IMBALANCE_ONLY:  # 199
        f.append(_flag(o.imbalanceOnly))
    return wire.frame(*f)


def encode_completed_order(
    contract: Contract, order: Order, state: OrderState, server_version: int = wire.SERVER_VERSION
) -> bytes:
    """A complete COMPLETED_ORDER (101) frame; reads like ``Decoder.processCompletedOrderMsg``.

    There is no order id and no client id; the state carries status, completedTime and completedStatus.
    (ibapi decodes this message with version = UNSET, so every "version >= n" branch is taken.)
    """
    sv = _check_version(server_version)
    c, o, st = contract, order, state
    f: list = [IN.COMPLETED_ORDER]

    f += _contract_fields(c)  # decodeContractFields
    f += [
        o.action,  # decodeAction
        _qty(o.totalQuantity),  # decodeTotalQuantity
        o.orderType,  # decodeOrderType
        _opt(o.lmtPrice),  # decodeLmtPrice
        _opt(o.auxPrice),  # decodeAuxPrice
        o.tif,  # decodeTIF
        o.ocaGroup,  # decodeOcaGroup
        o.account,  # decodeAccount
        o.openClose,  # decodeOpenClose
        _int(o.origin),  # decodeOrigin
        o.orderRef,  # decodeOrderRef
        _int(o.permId),  # decodePermId
        _flag(o.outsideRth),  # decodeOutsideRth
        _flag(o.hidden),  # decodeHidden
        _num(o.discretionaryAmt),  # decodeDiscretionaryAmt
        o.goodAfterTime,  # decodeGoodAfterTime
    ]
    f += _fa_params(o, sv)  # decodeFAParams + decodeModelCode
    f += [
        o.goodTillDate,  # decodeGoodTillDate
        o.rule80A,  # decodeRule80A
        _opt(o.percentOffset),  # decodePercentOffset
        o.settlingFirm,  # decodeSettlingFirm
        _int(o.shortSaleSlot),  # decodeShortSaleParams
        o.designatedLocation,
        _int(o.exemptCode),
    ]
    f += _box_and_peg_to_stk_params(o)
    f += [
        _int(o.displaySize),  # decodeDisplaySize
        _flag(o.sweepToFill),  # decodeSweepToFill
        _flag(o.allOrNone),  # decodeAllOrNone
        _opt_int(o.minQty),  # decodeMinQty
        _int(o.ocaType),  # decodeOcaType
        _int(o.triggerMethod),  # decodeTriggerMethod
    ]
    f += _vol_order_params(o, open_order_attribs=False)
    f += [_opt(o.trailStopPrice), _opt(o.trailingPercent)]  # decodeTrailParams
    f += _combo_legs(c, o)
    f += _tag_values(o.smartComboRoutingParams)  # decodeSmartComboRoutingParams
    f += _scale_params(o)
    f += _hedge_params(o)
    f += [o.clearingAccount, o.clearingIntent]  # decodeClearingParams
    f.append(_flag(o.notHeld))  # decodeNotHeld
    f += _delta_neutral_contract(c)
    f += _algo_params(o)
    f.append(_flag(o.solicited))  # decodeSolicited
    f.append(st.status)  # decodeOrderStatus
    f += [_flag(o.randomizeSize), _flag(o.randomizePrice)]  # decodeVolRandomizeFlags
    f += _peg_to_bench_params(o)
    f += _conditions(o)
    f += [_num(o.trailStopPrice), _num(o.lmtPriceOffset)]  # decodeStopPriceAndLmtPriceOffset
    f.append(_num(o.cashQty))  # decodeCashQty
    f.append(_flag(o.dontUseAutoPriceForHedge))  # decodeDontUseAutoPriceForHedge
    f.append(_flag(o.isOmsContainer))  # decodeIsOmsContainers
    f += [
        o.autoCancelDate,  # decodeAutoCancelDate
        _qty(o.filledQuantity),  # decodeFilledQuantity
        _int(o.refFuturesConId),  # decodeRefFuturesConId
        _flag(o.autoCancelParent),  # decodeAutoCancelParent
        o.shareholder,  # decodeShareholder
        _flag(o.imbalanceOnly),  # decodeImbalanceOnly
        _flag(o.routeMarketableToBbo),  # decodeRouteMarketableToBbo
        _int(o.parentPermId),  # decodeParentPermId
        _text(st.completedTime),  # decodeCompletedTime
        _text(st.completedStatus),  # decodeCompletedStatus
    ]
    f += _peg_best_peg_mid(o, sv)  # 170
    if sv >= MIN_SERVER_VER_CUSTOMER_ACCOUNT:  # 183
        f.append(o.customerAccount)
    if sv >= MIN_SERVER_VER_PROFESSIONAL_CUSTOMER:  # 184
        f.append(_flag(o.professionalCustomer))
    if sv >= MIN_SERVER_VER_SUBMITTER:  # 198
        f.append(o.submitter)
    return wire.frame(*f)


def encode_completed_orders_end() -> bytes:
    """COMPLETED_ORDERS_END (102): the message id alone (no version field)."""
    return wire.frame(IN.COMPLETED_ORDERS_END)
