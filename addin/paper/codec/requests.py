"""Client -> server requests of the TWS API at server version 178 (everything but placeOrder).

Each decoder takes a :class:`~addin.paper.codec.wire.Fields` positioned after the message id and returns a
small dataclass (contracts and filters as ibapi objects). Each reads top to bottom like the
``ibapi.client.EClient`` method that writes the request at server version 178; ib_async 2.1.0's
``Client`` writes the same fields in the same order (it differs only in spelling: strike ``0.0`` where
ibapi leaves an unset strike empty, ``"0"``/``"1"`` for bools, ``""`` for unset numbers).

Leading "version" fields are read and ignored: both clients write fixed values, and a real gateway
does not reject other ones. A message that ends early raises :class:`~addin.paper.codec.wire.ProtocolError`
naming the missing field. Fields after the last one we know are ignored.

placeOrder lives in :mod:`addin.paper.codec.order_codec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibapi.contract import ComboLeg, Contract, DeltaNeutralContract
from ibapi.execution import ExecutionFilter

from ...protocol.unset import UNSET_DOUBLE
from .wire import Fields

# --- request records -----------------------------------------------------------------------------

@dataclass
class MktDataRequest:
    req_id: int
    contract: Contract
    generic_tick_list: str
    snapshot: bool
    regulatory_snapshot: bool
    mkt_data_options: str = ""  # "tag=value;..." ("for internal use only"; both clients send "")


@dataclass
class ContractDetailsRequest:
    req_id: int
    contract: Contract  # includeExpired, secIdType, secId, issuerId set from the request


@dataclass
class HistoricalDataRequest:
    req_id: int
    contract: Contract
    include_expired: bool
    end_date_time: str
    bar_size: str
    duration: str
    use_rth: int
    what_to_show: str
    format_date: int
    keep_up_to_date: bool
    chart_options: str = ""  # "tag=value;..."


@dataclass
class HeadTimestampRequest:
    req_id: int
    contract: Contract
    include_expired: bool
    use_rth: int
    what_to_show: str
    format_date: int


@dataclass
class ExecutionsRequest:
    req_id: int
    filter: ExecutionFilter


@dataclass
class TickByTickRequest:
    req_id: int
    contract: Contract
    tick_type: str  # "Last", "AllLast", "BidAsk", "MidPoint"
    number_of_ticks: int
    ignore_size: bool


@dataclass
class AccountSummaryRequest:
    req_id: int
    group: str
    tags: str  # comma-separated


@dataclass
class AccountUpdatesRequest:
    subscribe: bool
    account: str


@dataclass
class AccountUpdatesMultiRequest:
    req_id: int
    account: str
    model_code: str
    ledger_and_nlv: bool


@dataclass
class PositionsMultiRequest:
    req_id: int
    account: str
    model_code: str


@dataclass
class PnLRequest:
    req_id: int
    account: str
    model_code: str


@dataclass
class PnLSingleRequest:
    req_id: int
    account: str
    model_code: str
    con_id: int


@dataclass
class MarketDataTypeRequest:
    market_data_type: int  # 1 live, 2 frozen, 3 delayed, 4 delayed frozen


@dataclass
class CancelRequest:
    """Every cancel that names one request: cancelMktData, cancelHistoricalData, cancelTickByTickData,
    cancelAccountSummary, cancelPositionsMulti, cancelAccountUpdatesMulti, cancelPnL, cancelPnLSingle,
    cancelHeadTimeStamp."""

    req_id: int


@dataclass
class IdsRequest:
    num_ids: int


@dataclass
class CancelOrderRequest:
    order_id: int
    manual_order_cancel_time: str = ""


@dataclass
class AutoOpenOrdersRequest:
    auto_bind: bool


@dataclass
class CompletedOrdersRequest:
    api_only: bool


@dataclass
class StartApiRequest:
    client_id: int
    optional_capabilities: str = ""


# --- shared pieces -------------------------------------------------------------------------------

def _version(fields: Fields) -> None:
    fields.next_str("version")


def _contract(fields: Fields) -> Contract:
    """conId, symbol, secType, lastTradeDateOrContractMonth, strike, right, multiplier, exchange,
    primaryExchange, currency, localSymbol, tradingClass: the block reqMktData, reqContractDetails,
    reqHistoricalData, reqHeadTimeStamp and reqTickByTickData all write.

    An empty strike (ibapi's unset strike) becomes ibapi's Contract default, the unset double;
    ib_async writes ``0.0``.
    """
    c = Contract()
    c.conId = fields.next_int("conId", default=0)
    c.symbol = fields.next_str("symbol")
    c.secType = fields.next_str("secType")
    c.lastTradeDateOrContractMonth = fields.next_str("lastTradeDateOrContractMonth")
    c.strike = fields.next_float("strike", default=UNSET_DOUBLE)
    c.right = fields.next_str("right")
    c.multiplier = fields.next_str("multiplier")
    c.exchange = fields.next_str("exchange")
    c.primaryExchange = fields.next_str("primaryExchange")
    c.currency = fields.next_str("currency")
    c.localSymbol = fields.next_str("localSymbol")
    c.tradingClass = fields.next_str("tradingClass")
    return c


def _combo_legs(fields: Fields, contract: Contract) -> None:
    """A BAG contract's legs: count, then conId, ratio, action, exchange per leg."""
    count = fields.next_int("comboLegsCount", default=0)
    contract.comboLegs = []
    for _ in range(max(count, 0)):
        leg = ComboLeg()
        leg.conId = fields.next_int("comboLeg.conId", default=0)
        leg.ratio = fields.next_int("comboLeg.ratio", default=0)
        leg.action = fields.next_str("comboLeg.action")
        leg.exchange = fields.next_str("comboLeg.exchange")
        contract.comboLegs.append(leg)


# --- market data ---------------------------------------------------------------------------------

def req_mkt_data(fields: Fields) -> MktDataRequest:
    """REQ_MKT_DATA (1), version 11 (EClient.reqMktData)."""
    _version(fields)
    req_id = fields.next_int("reqId")
    contract = _contract(fields)  # conId from 47, tradingClass from 68
    if contract.secType == "BAG":
        _combo_legs(fields, contract)
    if fields.next_bool("deltaNeutralContract"):  # 40 MIN_SERVER_VER_DELTA_NEUTRAL
        dnc = DeltaNeutralContract()
        dnc.conId = fields.next_int("deltaNeutral.conId", default=0)
        dnc.delta = fields.next_float("deltaNeutral.delta", default=0.0)
        dnc.price = fields.next_float("deltaNeutral.price", default=0.0)
        contract.deltaNeutralContract = dnc
    generic_tick_list = fields.next_str("genericTickList")
    snapshot = fields.next_bool("snapshot")
    regulatory_snapshot = fields.next_bool("regulatorySnapshot")  # 114 MIN_SERVER_VER_REQ_SMART_COMPONENTS
    options = fields.next_str("mktDataOptions") if fields.remaining() else ""  # 70 MIN_SERVER_VER_LINKING
    return MktDataRequest(req_id, contract, generic_tick_list, snapshot, regulatory_snapshot, options)


def cancel_mkt_data(fields: Fields) -> CancelRequest:
    """CANCEL_MKT_DATA (2): version 2, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_market_data_type(fields: Fields) -> MarketDataTypeRequest:
    """REQ_MARKET_DATA_TYPE (59): version 1, marketDataType."""
    _version(fields)
    return MarketDataTypeRequest(fields.next_int("marketDataType"))


def req_tick_by_tick(fields: Fields) -> TickByTickRequest:
    """REQ_TICK_BY_TICK_DATA (97): no version field."""
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    tick_type = fields.next_str("tickType")
    # numberOfTicks and ignoreSize from 140 (MIN_SERVER_VER_TICK_BY_TICK_IGNORE_SIZE)
    number_of_ticks = fields.next_int("numberOfTicks", default=0)
    ignore_size = fields.next_bool("ignoreSize")
    return TickByTickRequest(req_id, contract, tick_type, number_of_ticks, ignore_size)


def cancel_tick_by_tick(fields: Fields) -> CancelRequest:
    """CANCEL_TICK_BY_TICK_DATA (98): reqId, no version field."""
    return CancelRequest(fields.next_int("reqId"))


# --- contract details ----------------------------------------------------------------------------

def req_contract_details(fields: Fields) -> ContractDetailsRequest:
    """REQ_CONTRACT_DATA (9), version 8 (EClient.reqContractDetails)."""
    _version(fields)
    req_id = fields.next_int("reqId")  # 40 MIN_SERVER_VER_CONTRACT_DATA_CHAIN
    contract = _contract(fields)  # exchange + primaryExchange separately from 75 (PRIMARYEXCH)
    contract.includeExpired = fields.next_bool("includeExpired")
    contract.secIdType = fields.next_str("secIdType")  # 45 MIN_SERVER_VER_SEC_ID_TYPE
    contract.secId = fields.next_str("secId")
    contract.issuerId = fields.next_str("issuerId")  # 176 MIN_SERVER_VER_BOND_ISSUERID
    return ContractDetailsRequest(req_id, contract)


# --- historical data -----------------------------------------------------------------------------

def req_historical_data(fields: Fields) -> HistoricalDataRequest:
    """REQ_HISTORICAL_DATA (20): no version field from 124 (MIN_SERVER_VER_SYNT_REALTIME_BARS)."""
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    include_expired = fields.next_bool("includeExpired")
    contract.includeExpired = include_expired
    end_date_time = fields.next_str("endDateTime")
    bar_size = fields.next_str("barSizeSetting")
    duration = fields.next_str("durationStr")
    use_rth = fields.next_int("useRTH", default=0)
    what_to_show = fields.next_str("whatToShow")
    format_date = fields.next_int("formatDate", default=1)
    if contract.secType == "BAG":
        _combo_legs(fields, contract)
    keep_up_to_date = fields.next_bool("keepUpToDate")  # 124
    chart_options = fields.next_str("chartOptions") if fields.remaining() else ""  # 70 LINKING
    return HistoricalDataRequest(req_id, contract, include_expired, end_date_time, bar_size, duration,
                                 use_rth, what_to_show, format_date, keep_up_to_date, chart_options)


def cancel_historical_data(fields: Fields) -> CancelRequest:
    """CANCEL_HISTORICAL_DATA (25): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_head_timestamp(fields: Fields) -> HeadTimestampRequest:
    """REQ_HEAD_TIMESTAMP (87): no version field."""
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    include_expired = fields.next_bool("includeExpired")
    contract.includeExpired = include_expired
    use_rth = fields.next_int("useRTH", default=0)
    what_to_show = fields.next_str("whatToShow")
    format_date = fields.next_int("formatDate", default=1)
    return HeadTimestampRequest(req_id, contract, include_expired, use_rth, what_to_show, format_date)


def cancel_head_timestamp(fields: Fields) -> CancelRequest:
    """CANCEL_HEAD_TIMESTAMP (90): reqId, no version field."""
    return CancelRequest(fields.next_int("reqId"))


# --- orders and executions -----------------------------------------------------------------------

def req_executions(fields: Fields) -> ExecutionsRequest:
    """REQ_EXECUTIONS (7), version 3. lastNDays / specificDates only from 200: not at 178."""
    _version(fields)
    req_id = fields.next_int("reqId")  # 42 MIN_SERVER_VER_EXECUTION_DATA_CHAIN
    f = ExecutionFilter()
    f.clientId = fields.next_int("clientId", default=0)
    f.acctCode = fields.next_str("acctCode")
    f.time = fields.next_str("time")
    f.symbol = fields.next_str("symbol")
    f.secType = fields.next_str("secType")
    f.exchange = fields.next_str("exchange")
    f.side = fields.next_str("side")
    return ExecutionsRequest(req_id, f)


def req_ids(fields: Fields) -> IdsRequest:
    """REQ_IDS (8): version 1, numIds."""
    _version(fields)
    return IdsRequest(fields.next_int("numIds", default=1))


def cancel_order(fields: Fields) -> CancelOrderRequest:
    """CANCEL_ORDER (4): version 1 (until 192), orderId, manualOrderCancelTime (from 169).
    The RFQ fields (187..189) and CME tagging fields (192) are not written at 178."""
    _version(fields)
    order_id = fields.next_int("orderId")
    manual_time = fields.next_str("manualOrderCancelTime") if fields.remaining() else ""
    return CancelOrderRequest(order_id, manual_time)


def req_auto_open_orders(fields: Fields) -> AutoOpenOrdersRequest:
    """REQ_AUTO_OPEN_ORDERS (15): version 1, autoBind."""
    _version(fields)
    return AutoOpenOrdersRequest(fields.next_bool("autoBind"))


def req_completed_orders(fields: Fields) -> CompletedOrdersRequest:
    """REQ_COMPLETED_ORDERS (99): apiOnly, no version field."""
    return CompletedOrdersRequest(fields.next_bool("apiOnly"))


# --- accounts and positions ----------------------------------------------------------------------

def req_account_summary(fields: Fields) -> AccountSummaryRequest:
    """REQ_ACCOUNT_SUMMARY (62): version 1, reqId, groupName, tags."""
    _version(fields)
    return AccountSummaryRequest(fields.next_int("reqId"), fields.next_str("groupName"),
                                 fields.next_str("tags"))


def cancel_account_summary(fields: Fields) -> CancelRequest:
    """CANCEL_ACCOUNT_SUMMARY (63): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_account_updates(fields: Fields) -> AccountUpdatesRequest:
    """REQ_ACCT_DATA (6): version 2, subscribe, acctCode."""
    _version(fields)
    return AccountUpdatesRequest(fields.next_bool("subscribe"), fields.next_str("acctCode"))


def req_account_updates_multi(fields: Fields) -> AccountUpdatesMultiRequest:
    """REQ_ACCOUNT_UPDATES_MULTI (76): version 1, reqId, account, modelCode, ledgerAndNLV."""
    _version(fields)
    return AccountUpdatesMultiRequest(fields.next_int("reqId"), fields.next_str("account"),
                                      fields.next_str("modelCode"), fields.next_bool("ledgerAndNLV"))


def cancel_account_updates_multi(fields: Fields) -> CancelRequest:
    """CANCEL_ACCOUNT_UPDATES_MULTI (77): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_positions_multi(fields: Fields) -> PositionsMultiRequest:
    """REQ_POSITIONS_MULTI (74): version 1, reqId, account, modelCode."""
    _version(fields)
    return PositionsMultiRequest(fields.next_int("reqId"), fields.next_str("account"),
                                 fields.next_str("modelCode"))


def cancel_positions_multi(fields: Fields) -> CancelRequest:
    """CANCEL_POSITIONS_MULTI (75): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_pnl(fields: Fields) -> PnLRequest:
    """REQ_PNL (92): reqId, account, modelCode; no version field."""
    return PnLRequest(fields.next_int("reqId"), fields.next_str("account"), fields.next_str("modelCode"))


def cancel_pnl(fields: Fields) -> CancelRequest:
    """CANCEL_PNL (93): reqId."""
    return CancelRequest(fields.next_int("reqId"))


def req_pnl_single(fields: Fields) -> PnLSingleRequest:
    """REQ_PNL_SINGLE (94): reqId, account, modelCode, conId; no version field."""
    return PnLSingleRequest(fields.next_int("reqId"), fields.next_str("account"),
                            fields.next_str("modelCode"), fields.next_int("conId", default=0))


def cancel_pnl_single(fields: Fields) -> CancelRequest:
    """CANCEL_PNL_SINGLE (95): reqId."""
    return CancelRequest(fields.next_int("reqId"))


# --- session -------------------------------------------------------------------------------------

def start_api(fields: Fields) -> StartApiRequest:
    """START_API (71): version 2, clientId, optionalCapabilities (from 72)."""
    _version(fields)
    client_id = fields.next_int("clientId", default=0)
    capabilities = fields.next_str("optionalCapabilities") if fields.remaining() else ""
    return StartApiRequest(client_id, capabilities)


__all__ = [
    "MktDataRequest", "ContractDetailsRequest", "HistoricalDataRequest", "HeadTimestampRequest",
    "ExecutionsRequest", "TickByTickRequest", "AccountSummaryRequest", "AccountUpdatesRequest",
    "AccountUpdatesMultiRequest", "PositionsMultiRequest", "PnLRequest", "PnLSingleRequest",
    "MarketDataTypeRequest", "CancelRequest", "IdsRequest", "CancelOrderRequest",
    "AutoOpenOrdersRequest", "CompletedOrdersRequest", "StartApiRequest",
    "req_mkt_data", "cancel_mkt_data", "req_market_data_type", "req_tick_by_tick", "cancel_tick_by_tick",
    "req_contract_details", "req_historical_data", "cancel_historical_data", "req_head_timestamp",
    "cancel_head_timestamp", "req_executions", "req_ids", "cancel_order", "req_auto_open_orders",
    "req_completed_orders", "req_account_summary", "cancel_account_summary", "req_account_updates",
    "req_account_updates_multi", "cancel_account_updates_multi", "req_positions_multi",
    "cancel_positions_multi", "req_pnl", "cancel_pnl", "req_pnl_single", "cancel_pnl_single",
    "start_api",
]


# --- reference data (appended for addin/paper/services/reference.py) ------------------------------

@dataclass
class MatchingSymbolsRequest:
    req_id: int
    pattern: str


@dataclass
class ScannerSubscriptionRequest:
    req_id: int
    number_of_rows: int            # -1 (or the unset int) when not given
    instrument: str                # "STK", ...
    location_code: str             # "STK.US.MAJOR", ...
    scan_code: str                 # "TOP_PERC_GAIN", ...
    above_price: float             # the unset double when not given
    below_price: float
    above_volume: int              # the unset int when not given
    stock_type_filter: str
    filter_options: str = ""       # "tag=value;..."


@dataclass
class SmartComponentsRequest:
    req_id: int
    bbo_exchange: str


@dataclass
class SecDefOptParamsRequest:
    req_id: int
    underlying_symbol: str
    fut_fop_exchange: str
    underlying_sec_type: str
    underlying_con_id: int


@dataclass
class OptionComputationRequest:
    """calculateImpliedVolatility (value = the option price) or calculateOptionPrice (the volatility)."""

    req_id: int
    contract: Contract
    value: float
    under_price: float


def req_matching_symbols(fields: Fields) -> MatchingSymbolsRequest:
    """REQ_MATCHING_SYMBOLS (81): reqId, pattern; no version field."""
    return MatchingSymbolsRequest(fields.next_int("reqId"), fields.next_str("pattern"))


def req_market_rule(fields: Fields) -> int:
    """REQ_MARKET_RULE (91): marketRuleId; no version field."""
    return fields.next_int("marketRuleId")


def req_scanner_subscription(fields: Fields) -> ScannerSubscriptionRequest:
    """REQ_SCANNER_SUBSCRIPTION (22): no version field from 143 (MIN_SERVER_VER_SCANNER_GENERIC_OPTS);
    reqId, then the ScannerSubscription fields in EClient.reqScannerSubscription's order, then the
    filter options (143) and the subscription options (70)."""
    req_id = fields.next_int("reqId")
    rows = fields.next_int("numberOfRows", default=-1)
    instrument = fields.next_str("instrument")
    location = fields.next_str("locationCode")
    scan_code = fields.next_str("scanCode")
    above_price = fields.next_float("abovePrice")
    below_price = fields.next_float("belowPrice")
    above_volume = fields.next_int("aboveVolume")
    for name in ("marketCapAbove", "marketCapBelow", "moodyRatingAbove", "moodyRatingBelow", "spRatingAbove",
                 "spRatingBelow", "maturityDateAbove", "maturityDateBelow", "couponRateAbove", "couponRateBelow",
                 "excludeConvertible", "averageOptionVolumeAbove", "scannerSettingPairs"):
        fields.next_str(name)
    stock_type_filter = fields.next_str("stockTypeFilter")
    filter_options = fields.next_str("scannerSubscriptionFilterOptions") if fields.remaining() else ""
    return ScannerSubscriptionRequest(req_id, rows, instrument, location, scan_code, above_price, below_price,
                                      above_volume, stock_type_filter, filter_options)


def cancel_scanner_subscription(fields: Fields) -> CancelRequest:
    """CANCEL_SCANNER_SUBSCRIPTION (23): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_smart_components(fields: Fields) -> SmartComponentsRequest:
    """REQ_SMART_COMPONENTS (83): reqId, bboExchange; no version field."""
    return SmartComponentsRequest(fields.next_int("reqId"), fields.next_str("bboExchange"))


def req_sec_def_opt_params(fields: Fields) -> SecDefOptParamsRequest:
    """REQ_SEC_DEF_OPT_PARAMS (78): reqId, underlyingSymbol, futFopExchange, underlyingSecType,
    underlyingConId; no version field."""
    return SecDefOptParamsRequest(fields.next_int("reqId"), fields.next_str("underlyingSymbol"),
                                  fields.next_str("futFopExchange"), fields.next_str("underlyingSecType"),
                                  fields.next_int("underlyingConId", default=0))


def req_option_computation(fields: Fields) -> OptionComputationRequest:
    """REQ_CALC_IMPLIED_VOLAT (54) and REQ_CALC_OPTION_PRICE (55), version 3: reqId, the contract block
    (conId .. tradingClass), optionPrice or volatility, underPrice, then the options text (70)."""
    _version(fields)
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    value = fields.next_float("optionPrice/volatility", default=0.0)
    under_price = fields.next_float("underPrice", default=0.0)
    return OptionComputationRequest(req_id, contract, value, under_price)


def req_id_at(fields: Fields, index: int) -> int:
    """The request id ``index`` fields after the message id, or -1 (IB's "no request") when the message
    is shorter or the field is not a number: how a refusal names the request it answers."""
    items = fields.items
    if index + 1 >= len(items):
        return -1
    try:
        return int(items[index + 1])
    except ValueError:
        return -1


__all__ += [
    "MatchingSymbolsRequest", "ScannerSubscriptionRequest", "SmartComponentsRequest", "SecDefOptParamsRequest",
    "OptionComputationRequest", "req_matching_symbols", "req_market_rule", "req_scanner_subscription",
    "cancel_scanner_subscription", "req_smart_components", "req_sec_def_opt_params", "req_option_computation",
    "req_id_at",
]


# --- real-time bars and market depth -------------------------------------------------------------

@dataclass
class RealTimeBarsRequest:
    req_id: int
    contract: Contract
    bar_size: int          # seconds; IB serves 5 only
    what_to_show: str      # TRADES, MIDPOINT, BID, ASK
    use_rth: bool
    options: str = ""      # "tag=value;..." (internal use; both clients send "")


@dataclass
class MktDepthRequest:
    req_id: int
    contract: Contract
    num_rows: int
    is_smart_depth: bool
    options: str = ""


def req_real_time_bars(fields: Fields) -> RealTimeBarsRequest:
    """REQ_REAL_TIME_BARS (50): version 3, reqId, contract (conId .. tradingClass), barSize, whatToShow,
    useRTH, realTimeBarsOptions (EClient.reqRealTimeBars)."""
    _version(fields)
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    bar_size = fields.next_int("barSize", default=0)
    what = fields.next_str("whatToShow")
    use_rth = fields.next_bool("useRTH")
    options = fields.next_str("realTimeBarsOptions") if fields.remaining() else ""
    return RealTimeBarsRequest(req_id, contract, bar_size, what, use_rth, options)


def cancel_real_time_bars(fields: Fields) -> CancelRequest:
    """CANCEL_REAL_TIME_BARS (51): version 1, reqId."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))


def req_mkt_depth(fields: Fields) -> MktDepthRequest:
    """REQ_MKT_DEPTH (10): version 5, reqId, contract (conId .. tradingClass, primaryExchange from 149),
    numRows, isSmartDepth (146), mktDepthOptions (EClient.reqMktDepth)."""
    _version(fields)
    req_id = fields.next_int("reqId")
    contract = _contract(fields)
    num_rows = fields.next_int("numRows", default=0)
    smart = fields.next_bool("isSmartDepth") if fields.remaining() else False
    options = fields.next_str("mktDepthOptions") if fields.remaining() else ""
    return MktDepthRequest(req_id, contract, num_rows, smart, options)


def cancel_mkt_depth(fields: Fields) -> CancelRequest:
    """CANCEL_MKT_DEPTH (11): version 1, reqId, isSmartDepth (146; the gateway knows it from the request)."""
    _version(fields)
    return CancelRequest(fields.next_int("reqId"))
